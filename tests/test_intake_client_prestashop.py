"""The intake's PrestaShop client against the PrestaShop simulator on loopback, and the
simulator's order resources behaving as DESIGN.md says a real 8.2 does (inclusive
shop-local bounds, the silent wrong answers to a malformed bound)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from relay.intake.clients import ShopRefused, ShopUnreadable
from relay.intake.clients.prestashop import Client, Settings, date_filter
from relay.intake.order import Order
from relay.intake.outcome import Gone, Unmappable
from relay.intake.source import Polled
from tests.sims.prestashop import PrestaShopSim

MakeClient = Callable[..., Client]
T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)  # 13:00:00 in Madrid
MADRID = ZoneInfo("Europe/Madrid")


@pytest.fixture
async def shop() -> AsyncIterator[PrestaShopSim]:
    async with PrestaShopSim() as running:
        yield running


@pytest.fixture
async def make_client(
    shop: PrestaShopSim, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[MakeClient]:
    monkeypatch.setenv("PS_KEY", shop.key)
    made: list[Client] = []

    def make(**overrides: Any) -> Client:
        settings = {
            "type": "prestashop",
            "name": "ps-es",
            "url": shop.url,
            "api_key_env": "PS_KEY",
            "requests_per_second": 1000.0,
            "backoff": "10ms",
            "timeout": "2s",
        }
        client = Client(Settings.model_validate(settings | overrides), clock=lambda: shop.now)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def polled(client: Client, since: datetime) -> list[Polled]:
    return [item async for item in client.changed_since(since)]


def refs(items: list[Polled]) -> list[str]:
    return [item.mapped.order_ref for item in items if isinstance(item.mapped, Order)]


async def raw_orders(shop: PrestaShopSim, **query: str) -> Any:
    """What the sim answers a hand-made orders query (the client never sends these)."""
    key = base64.b64encode(f"{shop.key}:".encode()).decode()
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{shop.url}/api/orders",
            params={"output_format": "JSON", **query},
            headers={"Authorization": f"Basic {key}"},
        ) as answer,
    ):
        return await answer.json(content_type=None)


def ids(body: Any) -> list[int]:
    return [] if body == [] else [row["id"] for row in body["orders"]]


async def test_an_order_arrives_by_poll_alone_in_shop_local_time(
    shop: PrestaShopSim, make_client: MakeClient
) -> None:
    client = make_client()
    assert await polled(client, T0) == []
    ref = shop.place_order([("MUG", 2, "10.00"), ("TEE-M", 1, "18.00")], state=2)
    assert shop.date_upd(ref) == "2026-11-23 13:00:00"  # Madrid, +01:00
    (item,) = await polled(client, T0)
    assert item.version == T0
    order = item.mapped
    assert isinstance(order, Order)
    assert (order.order_ref, order.number, order.payment_status) == (str(ref), "REF000001", "paid")
    # 20.00 + 18.00 ex tax, 24.20 + 21.78 incl.; shipping 5.00 incl. = 4.13 + 0.87: 50.98.
    assert order.to_data()["totals"]["total"] == "50.98"
    assert order.payment.transaction_ref == "TX-REF000001"
    assert order.billing_address is not None and order.billing_address.country == "ES"
    assert await client.hooks("https://intake.example/v1/webhooks/ps-es") == []
    assert await client.register_hooks("https://intake.example/v1/webhooks/ps-es", "s") == []


async def test_about_nine_calls_for_an_order_and_never_the_password(
    shop: PrestaShopSim, make_client: MakeClient
) -> None:
    ref = shop.place_order()
    client = make_client()
    order = await client.read_order(str(ref))
    assert isinstance(order, Order)
    resources = [line.split("?")[0].split()[1] for line in shop.requests]
    # The order, the lookups once (configurations + 6 tables), its 5 related resources.
    assert resources == [
        f"/api/orders/{ref}",
        "/api/configurations",
        "/api/order_states",
        "/api/currencies",
        "/api/taxes",
        "/api/countries",
        "/api/states",
        "/api/carriers",
        "/api/order_details",
        "/api/customers",
        "/api/addresses",
        "/api/order_payments",
        "/api/order_carriers",
    ]
    customers = next(line for line in shop.requests if "/api/customers" in line)
    assert "display=%5Bid,email,firstname,lastname,company,is_guest%5D" in customers
    shop.requests.clear()
    await client.read_order(str(ref))
    assert len(shop.requests) == 6  # lookups kept
    assert "passwd" not in repr(order) and "d41d8cd98f00b204" not in repr(order)


async def test_both_bounds_are_inclusive_and_pages_are_read_to_the_end(
    shop: PrestaShopSim, make_client: MakeClient
) -> None:
    placed = []
    for _ in range(5):
        placed.append(shop.place_order())
        shop.tick()
    # Stamps 13:00:00 .. 13:00:04 local; now is 13:00:05.
    client = make_client(page_size=2)
    got = await polled(client, T0 + timedelta(seconds=1))
    assert refs(got) == [str(ref) for ref in placed[1:]]
    limits = [line for line in shop.requests if line.startswith("GET /api/orders?")]
    assert [line.split("limit=")[1].split("&")[0] for line in limits] == ["0,2", "2,2", "4,2"]
    # The upper bound is now in shop time, inclusive: an order stamped at now comes back.
    last = shop.place_order()
    assert refs(await polled(client, shop.now))[-1:] == [str(last)]
    assert shop.date_upd(last) == "2026-11-23 13:00:05"


async def test_a_state_change_moves_date_upd_a_message_or_tracking_does_not(
    shop: PrestaShopSim, make_client: MakeClient
) -> None:
    ref = shop.place_order(state=10)
    shop.tick(60)
    shop.add_message(ref, "ERP order SO2611-0001")
    shop.set_tracking(ref, "1Z999")
    client = make_client()
    assert await polled(client, T0 + timedelta(seconds=1)) == []
    shop.change_state(ref, 2)
    (item,) = await polled(client, T0 + timedelta(seconds=1))
    assert item.version == T0 + timedelta(seconds=60)
    assert isinstance(item.mapped, Order) and item.mapped.payment_status == "paid"


async def test_several_versions_within_one_second_share_date_upd(
    shop: PrestaShopSim, make_client: MakeClient
) -> None:
    ref = shop.place_order(state=10)
    shop.change_state(ref, 2)  # same second: the same date_upd
    (item,) = await polled(make_client(), T0)
    assert item.version == T0
    assert isinstance(item.mapped, Order) and item.mapped.payment_status == "paid"


async def test_a_shop_in_madrid_in_summer_and_the_night_the_clocks_go_back(
    shop: PrestaShopSim, make_client: MakeClient
) -> None:
    shop.now = datetime(2026, 7, 1, 8, 0, 5, tzinfo=UTC)
    ref = shop.place_order()
    assert shop.date_upd(ref) == "2026-07-01 10:00:05"  # +02:00
    (item,) = await polled(make_client(), datetime(2026, 7, 1, 8, 0, 5, tzinfo=UTC))
    assert item.version == datetime(2026, 7, 1, 8, 0, 5, tzinfo=UTC)
    # 25 October 2026: 03:00 CEST becomes 02:00 CET. since 00:40 UTC is 02:40 CEST; an
    # order at 01:10 UTC is stamped 02:10 CET, a wall time before 02:40: the lower bound
    # is taken an hour earlier so it is not missed.
    since = datetime(2026, 10, 25, 0, 40, tzinfo=UTC)
    now = datetime(2026, 10, 25, 1, 20, tzinfo=UTC)
    assert date_filter(since, now, MADRID) == "[2026-10-25 01:40:00,2026-10-25 02:20:00]"
    shop.now = datetime(2026, 10, 25, 1, 10, tzinfo=UTC)
    late = shop.place_order()
    assert shop.date_upd(late) == "2026-10-25 02:10:00"
    shop.now = now
    assert str(late) in refs(await polled(make_client(), since))


def test_date_filter_is_whole_seconds_and_nothing_after_now() -> None:
    since = datetime(2026, 11, 23, 12, 0, 0, 900_000, tzinfo=UTC)
    assert date_filter(since, since + timedelta(hours=1), MADRID) == (
        "[2026-11-23 13:00:00,2026-11-23 14:00:00]"
    )
    assert date_filter(since + timedelta(seconds=2), since, MADRID) is None
    with pytest.raises(ValueError, match="malformed date_upd filter"):
        date_filter(datetime(12, 1, 1, tzinfo=UTC), T0, ZoneInfo("UTC"))


async def test_the_sims_silent_wrong_answers_to_a_malformed_bound(shop: PrestaShopSim) -> None:
    first = shop.place_order()
    shop.tick()
    second = shop.place_order()
    shop.tick()
    third = shop.place_order()
    good = {"display": "[id]", "date": "1", "sort": "[date_upd_ASC,id_ASC]"}
    window = "[2026-11-23 13:00:01,2026-11-23 13:00:02]"
    assert ids(await raw_orders(shop, **good, **{"filter[date_upd]": window})) == [second, third]
    # An ISO T: an equality on the lower bound.
    iso = "[2026-11-23T13:00:00,2026-11-23T13:00:02]"
    assert ids(await raw_orders(shop, **good, **{"filter[date_upd]": iso})) == [first]
    # Anything after the closing ]: no filter at all.
    trailing = window + "Z"
    assert ids(await raw_orders(shop, **good, **{"filter[date_upd]": trailing})) == [
        first,
        second,
        third,
    ]
    # Without date=1 a date filter matches nothing; a page past the end is [].
    no_date = {key: value for key, value in good.items() if key != "date"}
    assert await raw_orders(shop, **no_date, **{"filter[date_upd]": window}) == []
    assert await raw_orders(shop, **good, limit="10,5") == []
    assert ids(
        await raw_orders(shop, **good, **{"filter[date_upd]": ">[2026-11-23 13:00:01]"})
    ) == [third]


async def test_a_deleted_order_vanishes_and_a_reread_is_gone(
    shop: PrestaShopSim, make_client: MakeClient
) -> None:
    ref = shop.place_order()
    key = base64.b64encode(f"{shop.key}:".encode()).decode()
    async with (
        aiohttp.ClientSession() as session,
        session.delete(
            f"{shop.url}/api/orders/{ref}", headers={"Authorization": f"Basic {key}"}
        ) as answer,
    ):
        assert answer.status == 200
    client = make_client()
    assert await polled(client, T0) == []
    assert await client.read_order(str(ref)) == Gone(
        "prestashop_not_found", f"order {ref} is not in the shop"
    )
    assert await client.read_order("1 OR 1") == Unmappable(
        "not a PrestaShop order: '1 OR 1' is not an id", "1 OR 1"
    )


async def test_an_order_history_post_moves_date_upd_and_json_is_a_500(
    shop: PrestaShopSim,
) -> None:
    ref = shop.place_order(state=10)
    shop.tick(30)
    key = base64.b64encode(f"{shop.key}:".encode()).decode()
    xml = (
        f"<prestashop><order_history><id_order>{ref}</id_order><id_order_state>2"
        "</id_order_state></order_history></prestashop>"
    )
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {key}"}) as session:
        async with session.post(f"{shop.url}/api/order_histories", data=xml) as answer:
            assert answer.status == 201
        async with session.post(
            f"{shop.url}/api/order_histories", json={"id_order": ref}
        ) as answer:
            assert answer.status == 500
    assert shop.date_upd(ref) == "2026-11-23 13:00:30"
    assert shop.tables["orders"][ref]["current_state"] == "2"


async def test_429_and_5xx_are_retried(shop: PrestaShopSim, make_client: MakeClient) -> None:
    shop.place_order()
    shop.fail(429, retry_after="0")
    shop.fail(503)
    shop.fail(500)
    assert len(await polled(make_client(), T0)) == 1
    assert shop.injected == []


async def test_failures_past_the_retries_are_shop_unreadable(
    shop: PrestaShopSim, make_client: MakeClient
) -> None:
    shop.fail(502, times=3)
    with pytest.raises(ShopUnreadable, match="prestashop ps-es: HTTP 502") as caught:
        await polled(make_client(max_retries=2), T0)
    assert caught.value.retryable


async def test_a_resource_the_key_may_not_use(shop: PrestaShopSim, make_client: MakeClient) -> None:
    shop.place_order()
    shop.forbidden.add("order_payments")
    with pytest.raises(ShopRefused, match="the Webservice key may not read order_payments"):
        await polled(make_client(), T0)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("<html>maintenance</html>", "configurations is not JSON"),
        ('{"configurations": {"name": "x"}}', "configurations is not a Webservice answer"),
        ('"hello"', "configurations is not a Webservice answer: configurations is not an object"),
    ],
)
async def test_garbage_is_shop_unreadable_naming_shop_and_resource(
    shop: PrestaShopSim, make_client: MakeClient, body: str, words: str
) -> None:
    shop.garbage.append(body)
    with pytest.raises(ShopUnreadable, match="prestashop ps-es: ") as caught:
        await polled(make_client(), T0)
    assert words in str(caught.value)


async def test_garbage_in_the_order_list(shop: PrestaShopSim, make_client: MakeClient) -> None:
    client = make_client()
    await client.lookups()
    row = '{"id": 3, "date_upd": "yesterday", "current_state": "2", "id_currency": "1"}'
    shop.garbage.append(f'{{"orders": [{row}]}}')
    shop.garbage.extend(["[]"] * 2)  # its order_details and order_carriers: none
    with pytest.raises(ShopUnreadable, match=r"\(id 3\) has no readable date_upd: 'yesterday'"):
        await polled(client, T0)


async def test_a_new_order_state_reads_the_lookups_again(
    shop: PrestaShopSim, make_client: MakeClient
) -> None:
    client = make_client()
    await client.lookups()
    shop.tables["order_states"][20] = {**shop.tables["order_states"][2], "id": 20}
    ref = shop.place_order(state=20)
    (item,) = await polled(client, T0)
    assert isinstance(item.mapped, Order) and item.mapped.order_ref == str(ref)
    assert item.mapped.payment_status == "paid" and item.mapped.checks == ()
