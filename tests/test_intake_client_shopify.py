"""The intake's Shopify client against the Admin GraphQL simulator on loopback, and the
simulator's orders and webhooks behaving as Shopify documents them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from relay.intake.clients import ShopRefused, ShopUnreadable
from relay.intake.clients.shopify import Client, Settings, updated_since
from relay.intake.identity import order_event_id
from relay.intake.order import Order
from relay.intake.outcome import Gone
from relay.intake.shopify import map_body
from relay.intake.source import Polled
from tests.sims import Catcher
from tests.sims.shopify import TOKEN, ShopifySim
from tests.support import write_secret

MakeClient = Callable[..., Client]
T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "fixtures" / "shopify"


@pytest.fixture
async def shop() -> AsyncIterator[ShopifySim]:
    # A fast-refilling bucket: the client paces itself to what the shop reports, and tests
    # need not wait out a real plan's 50 points a second.
    async with ShopifySim(restore_rate=100_000.0) as running:
        at(running, T0)
        yield running


@pytest.fixture
async def catcher() -> AsyncIterator[Catcher]:
    async with Catcher() as running:
        yield running


@pytest.fixture
async def make_client(tmp_path: Path, shop: ShopifySim) -> AsyncIterator[MakeClient]:
    write_secret(tmp_path / "token", TOKEN)
    made: list[Client] = []

    def make(**overrides: Any) -> Client:
        settings = {
            "type": "shopify",
            "name": "shopify-main",
            "shop_url": shop.url,
            "api_version": shop.api_version,
            "access_token_file": tmp_path / "token",
            "backoff": "10ms",
            "timeout": "2s",
        }
        made.append(Client(Settings.model_validate(settings | overrides)))
        return made[-1]

    yield make
    for client in made:
        await client.close()


def at(shop: ShopifySim, moment: datetime) -> None:
    shop.order_clock = lambda: moment.timestamp()


async def polled(client: Client, since: datetime) -> list[Polled]:
    return [item async for item in client.changed_since(since)]


def refs(items: list[Polled]) -> list[str]:
    return [item.mapped.order_ref for item in items if isinstance(item.mapped, Order)]


def fixture(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / f"{name}.webhook.json").read_text())["body"]
    return body


# --- polls ------------------------------------------------------------------------------


async def test_a_poll_reads_every_page_oldest_first(
    shop: ShopifySim, make_client: MakeClient
) -> None:
    placed = []
    for n in range(120):
        at(shop, T0 + timedelta(seconds=120 - n))  # made newest first: the poll must sort
        placed.append(str(shop.add_order()))
    items = await polled(make_client(), T0)
    assert refs(items) == placed[::-1]
    assert shop.calls["Orders"] == 3  # 50 + 50 + 20


async def test_the_bound_is_inclusive_at_whole_seconds(
    shop: ShopifySim, make_client: MakeClient
) -> None:
    for offset in (-1, 0, 1):
        at(shop, T0 + timedelta(seconds=offset))
        shop.add_order()
    items = await polled(make_client(), T0 + timedelta(microseconds=400_000))
    assert [item.version for item in items] == [T0, T0 + timedelta(seconds=1)]
    assert updated_since(T0) == "updated_at:>='2026-11-23T12:00:00Z'"


async def test_several_changes_in_one_second_share_the_version(
    shop: ShopifySim, make_client: MakeClient
) -> None:
    order_id = shop.add_order()
    shop.update_order(order_id, financial_status="pending")
    shop.update_order(order_id, financial_status="paid", note="second change")
    [item] = await polled(make_client(), T0)
    assert item.version == T0
    assert isinstance(item.mapped, Order) and item.mapped.note == "second change"


async def test_a_webhook_body_and_the_poll_of_one_state_are_one_event(
    shop: ShopifySim, make_client: MakeClient
) -> None:
    body = fixture("paid_taxes_included_discount")
    shop.add_order(body, updated_at=body["updated_at"])
    [item] = await polled(make_client(), datetime(2026, 11, 23, tzinfo=UTC))
    webhook = map_body("shopify-main", json.dumps(body).encode())
    assert isinstance(item.mapped, Order) and isinstance(webhook, Order)
    assert order_event_id(item.mapped) == order_event_id(webhook)


async def test_read_order_and_a_deleted_one(shop: ShopifySim, make_client: MakeClient) -> None:
    client = make_client()
    order_id = shop.add_order()
    mapped = await client.read_order(str(order_id))
    assert isinstance(mapped, Order) and mapped.order_ref == str(order_id)
    shop.delete_order(order_id)
    assert isinstance(await client.read_order(str(order_id)), Gone)


# --- the shop failing -------------------------------------------------------------------


async def test_429_and_5xx_are_retried(shop: ShopifySim, make_client: MakeClient) -> None:
    order_id = shop.add_order()
    client = make_client()
    await client.hooks("https://intake.example/v1/webhooks/shopify-main")  # learns the bucket
    shop.fail_next.extend([429, 503, 502])
    assert refs(await polled(client, T0)) == [str(order_id)]
    assert shop.fail_next == []


async def test_a_throttled_call_waits_for_the_bucket_and_goes_again(
    make_client: MakeClient, shop: ShopifySim
) -> None:
    shop.add_order()
    shop.bucket, shop.restore_rate = 0.0, 100_000.0  # empty, but refilled at once
    assert len(await polled(make_client(), T0)) == 1
    assert shop.throttled == 1


async def test_a_shop_that_keeps_failing_is_unreadable_for_now(
    shop: ShopifySim, make_client: MakeClient
) -> None:
    client = make_client(max_retries=2)
    await client.hooks("https://intake.example/v1/webhooks/shopify-main")  # learns the bucket
    shop.fail_next.extend([503] * 3)
    with pytest.raises(ShopUnreadable, match=r"shopify shopify-main: .*HTTP 503") as raised:
        await polled(client, T0)
    assert raised.value.retryable


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("<html>Bad gateway</html>", "Orders answered no JSON object"),
        ('{"data": {"orders": []}}', "orders is a list, not an object"),
        ('{"data": {"orders": {"edges": [{"node": {"id": 1}}]}}}', "has no readable updatedAt"),
        ('{"errors": [{"message": "boom", "extensions": {"code": "X"}}]}', "Orders failed: boom"),
    ],
)
async def test_garbage_is_a_clear_error(
    shop: ShopifySim, make_client: MakeClient, body: str, says: str
) -> None:
    shop.raw_next.append(body)
    with pytest.raises(ShopUnreadable, match=says) as raised:
        await polled(make_client(), T0)
    assert str(raised.value).startswith("shopify shopify-main: ")


async def test_a_refused_token_is_not_retryable(shop: ShopifySim, make_client: MakeClient) -> None:
    shop.token = "shpat_other"
    with pytest.raises(ShopRefused, match="access token was refused") as raised:
        await polled(make_client(), T0)
    assert not raised.value.retryable


# --- hooks --------------------------------------------------------------------------------


async def test_register_hooks_is_idempotent(
    shop: ShopifySim, make_client: MakeClient, catcher: Catcher
) -> None:
    client = make_client()
    shop.subscribe("ORDERS_CREATE", "https://elsewhere.example/hooks")
    assert {state.status for state in await client.hooks(catcher.url)} == {"missing"}
    states = await client.register_hooks(catcher.url, "unused")
    topics = ["orders/create", "orders/updated", "orders/cancelled", "refunds/create"]
    assert [(state.topic, state.status) for state in states] == [(t, "active") for t in topics]
    assert shop.calls["WebhookSubscriptionCreate"] == 4
    assert await client.register_hooks(catcher.url, "unused") == states
    assert shop.calls["WebhookSubscriptionCreate"] == 4  # nothing new
    assert len(shop.subscriptions) == 5


# --- deliveries ---------------------------------------------------------------------------


async def test_a_delivery_is_signed_with_the_client_secret(
    shop: ShopifySim, catcher: Catcher
) -> None:
    subscription = shop.subscribe("ORDERS_CREATE", catcher.url)
    order_id = shop.add_order()
    await shop.settled()
    [caught] = catcher.caught
    expected = hmac.new(shop.client_secret.encode(), caught.body, hashlib.sha256).digest()
    assert caught.headers["X-Shopify-Hmac-Sha256"] == base64.b64encode(expected).decode()
    assert caught.headers["X-Shopify-Topic"] == "orders/create"
    assert caught.headers["X-Shopify-Shop-Domain"] == shop.shop_domain
    assert caught.headers["X-Shopify-API-Version"] == shop.api_version
    assert caught.headers["X-Shopify-Event-Id"] and caught.headers["X-Shopify-Webhook-Id"]
    assert datetime.fromisoformat(caught.headers["X-Shopify-Triggered-At"]).tzinfo is not None
    assert subscription.startswith("gid://shopify/WebhookSubscription/")
    mapped = map_body("shopify-main", caught.body)
    assert isinstance(mapped, Order) and mapped.order_ref == str(order_id)


async def test_a_retry_carries_the_original_payload_and_event_id(
    shop: ShopifySim, catcher: Catcher
) -> None:
    shop.subscribe("ORDERS_UPDATED", catcher.url)
    order_id = shop.add_order()
    catcher.answer_next(500)
    shop.update_order(order_id, note="first")
    await shop.settled()
    at(shop, T0 + timedelta(seconds=5))
    shop.update_order(order_id, note="second")  # a newer event, delivered at once
    await shop.settled()
    await shop.retry_now()
    failed, newer, retried = catcher.caught
    assert (failed.status, newer.status, retried.status) == (500, 200, 200)
    assert retried.body == failed.body and json.loads(retried.body)["note"] == "first"
    for header in ("X-Shopify-Event-Id", "X-Shopify-Webhook-Id", "X-Shopify-Triggered-At"):
        assert retried.headers[header] == failed.headers[header]
    assert newer.headers["X-Shopify-Event-Id"] != failed.headers["X-Shopify-Event-Id"]


async def test_the_retry_schedule_gives_up_after_eight_retries(
    shop: ShopifySim, catcher: Catcher
) -> None:
    shop.subscribe("ORDERS_CREATE", catcher.url)
    shop.retry_schedule = [0.0] * 8  # 4 hours compressed to nothing
    catcher.status = 503
    shop.add_order()
    await shop.settled()
    assert len(catcher.caught) == 9  # the delivery and 8 retries
    assert len({c.headers["X-Shopify-Event-Id"] for c in catcher.caught}) == 1


async def test_cancel_and_refund_fire_their_topics(shop: ShopifySim, catcher: Catcher) -> None:
    for topic in ("ORDERS_CANCELLED", "ORDERS_UPDATED", "REFUNDS_CREATE"):
        shop.subscribe(topic, catcher.url)
    order_id = shop.add_order()
    shop.cancel_order(order_id)
    shop.refund_order(order_id)
    await shop.settled()
    topics = sorted(c.headers["X-Shopify-Topic"] for c in catcher.caught)
    assert topics == sorted(
        ["orders/cancelled", "orders/updated", "refunds/create", "orders/updated"]
    )
    cancelled = next(
        c for c in catcher.caught if c.headers["X-Shopify-Topic"] == "orders/cancelled"
    )
    mapped = map_body("shopify-main", cancelled.body)
    assert isinstance(mapped, Order) and mapped.status == "cancelled"


async def test_drop_and_duplicate(shop: ShopifySim, catcher: Catcher) -> None:
    shop.subscribe("ORDERS_CREATE", catcher.url)
    shop.drop_next()
    shop.add_order()
    await shop.settled()
    shop.duplicate_next()
    shop.add_order()
    await shop.settled()
    assert len(catcher.caught) == 2
    assert catcher.caught[0].body == catcher.caught[1].body
    assert [d.sent for d in shop.deliveries] == [False, True, True]
