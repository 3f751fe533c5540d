"""The webhook sink against a receiver that checks its signature and fails on demand."""

from __future__ import annotations

import email.utils
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from relay.envelope import parse
from relay.model import Status
from relay.settings import SecretMissing
from relay.sinks.base import SinkUnavailable
from relay.sinks.http import retry_after
from relay.sinks.webhook import Settings, WebhookSink
from tests.sims import event, sink_maker
from tests.sims.webhook import WebhookReceiver
from tests.support import write_secret

SECRET = b"s3cret-shared-with-the-receiver"
STOCK = event("stock", {"sku": "SKU-1", "warehouse": "MAD", "on_hand": 12})
PRICE = event("price", {"sku": "SKU-1", "price": "19.90"})
ORDER_STATUS = event("order_status", {"order": "A-1", "status": "shipped"}, subject="A-1")

MakeSink = Callable[..., WebhookSink]


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(SECRET) as running:
        yield running


@pytest.fixture
async def make_sink(tmp_path: Path, receiver: WebhookReceiver) -> AsyncIterator[MakeSink]:
    write_secret(tmp_path / "secret", SECRET + b"\n")
    async with sink_maker(
        WebhookSink,
        Settings,
        type="webhook",
        name="hook",
        url=receiver.url,
        secret_file=tmp_path / "secret",
        backoff="10ms",
        timeout="2s",
    ) as make:
        yield make


async def test_events_arrive_as_received_and_signed(
    receiver: WebhookReceiver, make_sink: MakeSink
) -> None:
    assert parse("", STOCK.raw) == STOCK  # what is forwarded is a contract envelope
    results = await make_sink().apply([STOCK, PRICE, ORDER_STATUS])
    assert [result.status for result in results] == [Status.APPLIED] * 3
    # The receiver accepted them, so each signature matched the exact bytes it got.
    assert sorted(receiver.bodies) == sorted([STOCK.raw, PRICE.raw, ORDER_STATUS.raw])
    assert {body["id"] for body in receiver.received} == {STOCK.id, PRICE.id, ORDER_STATUS.id}


async def test_a_wrong_secret_stops_the_sink_without_dead_letters(
    receiver: WebhookReceiver, make_sink: MakeSink, tmp_path: Path
) -> None:
    write_secret(tmp_path / "wrong", "not-the-receivers-secret\n")
    with pytest.raises(SinkUnavailable, match="HTTP 401") as raised:
        await make_sink(secret_file=tmp_path / "wrong").apply([STOCK])
    assert "not-the-receivers-secret" not in str(raised.value)
    assert receiver.received == []
    assert [hit.status for hit in receiver.hits] == [401]  # no point retrying a bad key


async def test_a_server_error_is_retried_until_it_passes(
    receiver: WebhookReceiver, make_sink: MakeSink
) -> None:
    receiver.fail_next(2, 500)
    assert (await make_sink().apply([STOCK]))[0].status is Status.APPLIED
    assert [hit.status for hit in receiver.hits] == [500, 500, 204]


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_in_seconds_is_waited_out(
    receiver: WebhookReceiver, make_sink: MakeSink, status: int
) -> None:
    receiver.fail_next(1, status, retry_after="1")
    assert (await make_sink().apply([STOCK]))[0].status is Status.APPLIED
    throttled, accepted = receiver.hits
    assert (throttled.status, accepted.status) == (status, 204)
    assert accepted.at - throttled.at >= 1.0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_700_000_000.0
    assert retry_after("7", now) == 7.0
    assert retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == 30.0
    assert retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


async def test_a_hung_receiver_times_out_and_is_tried_again(
    receiver: WebhookReceiver, make_sink: MakeSink
) -> None:
    receiver.fail_next(1, 0)
    assert (await make_sink(timeout="200ms").apply([STOCK]))[0].status is Status.APPLIED
    assert [hit.status for hit in receiver.hits] == [0, 204]


async def test_a_receiver_failing_for_good_makes_the_sink_unavailable(
    receiver: WebhookReceiver, make_sink: MakeSink
) -> None:
    receiver.fail_next(10, 503, retry_after="0")
    with pytest.raises(SinkUnavailable, match="HTTP 503"):
        await make_sink(max_retries=3).apply([STOCK])
    assert len(receiver.hits) == 4


async def test_a_long_retry_after_goes_to_the_consumer(
    receiver: WebhookReceiver, make_sink: MakeSink
) -> None:
    receiver.fail_next(1, 429, retry_after="3600")
    with pytest.raises(SinkUnavailable) as raised:
        await make_sink().apply([STOCK])
    assert raised.value.retry_after == 3600.0
    assert len(receiver.hits) == 1


async def test_a_refused_event_is_dead_and_the_rest_goes_on(
    receiver: WebhookReceiver, make_sink: MakeSink
) -> None:
    receiver.fail_next(1, 400, body='{"error": "unknown warehouse MAD"}')
    results = await make_sink(concurrency=1).apply([STOCK, PRICE])
    assert results[0].status is Status.DEAD
    assert "stock SKU-1/MAD" in results[0].reason
    assert "HTTP 400" in results[0].reason and "unknown warehouse MAD" in results[0].reason
    assert results[1].status is Status.APPLIED
    assert receiver.bodies == [PRICE.raw]


async def test_an_unreachable_receiver_makes_the_sink_unavailable(
    receiver: WebhookReceiver, make_sink: MakeSink
) -> None:
    sink = make_sink(max_retries=1)
    await receiver.__aexit__(None, None, None)
    with pytest.raises(SinkUnavailable, match="cannot connect"):
        await sink.apply([STOCK])


async def test_entities_not_configured_are_skipped_without_a_request(
    receiver: WebhookReceiver, make_sink: MakeSink
) -> None:
    results = await make_sink(entities=["order_status"]).apply([STOCK, ORDER_STATUS])
    assert [result.status for result in results] == [Status.SKIPPED, Status.APPLIED]
    assert receiver.bodies == [ORDER_STATUS.raw]


async def test_posts_for_distinct_keys_overlap_up_to_the_concurrency(
    receiver: WebhookReceiver, make_sink: MakeSink
) -> None:
    receiver.delay = 0.2
    events = [
        event("stock", {"sku": f"SKU-{n}", "warehouse": "MAD", "on_hand": n}) for n in range(8)
    ]
    results = await make_sink(concurrency=3).apply(events)
    assert all(result.status is Status.APPLIED for result in results)
    assert receiver.most_in_flight == 3


def test_settings_name_what_is_wrong(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base: dict[str, Any] = {
        "type": "webhook",
        "name": "hook",
        "url": "https://hooks.example.com/in",
    }
    with pytest.raises(ValidationError, match="secret_file or secret_env"):
        Settings(**base)
    with pytest.raises(ValidationError, match="use https"):
        Settings(**base | {"url": "http://hooks.example.com/in", "secret_env": "HOOK_KEY"})
    Settings(
        **base
        | {"url": "http://hooks.example.com/in", "secret_env": "HOOK_KEY", "allow_insecure": True}
    )
    with pytest.raises(ValidationError, match="unknown entities"):
        Settings(**base | {"secret_env": "HOOK_KEY", "entities": ["stock", "stonks"]})
    monkeypatch.delenv("HOOK_KEY", raising=False)
    with pytest.raises(SecretMissing, match="secret_env: environment variable HOOK_KEY"):
        WebhookSink(Settings(**base | {"secret_env": "HOOK_KEY"}))
    assert Settings(**base | {"secret_env": "HOOK_KEY"}).entities == [
        "product",
        "price",
        "stock",
        "promotion",
        "order_status",
        "invoice",
        "customer",
    ]
