"""The intake's Magento client against the Magento simulator on loopback, and the
simulator's V1/orders behaving as Magento's does (a page past the end is the last page)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from relay.intake.clients import ShopRefused, ShopUnreadable
from relay.intake.clients.magento import Client, Settings, search_criteria
from relay.intake.order import Order
from relay.intake.outcome import Gone, Unmappable
from relay.intake.source import Polled
from tests.sims.magento import TOKEN, MagentoSim

MakeClient = Callable[..., Client]
T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
async def shop() -> AsyncIterator[MagentoSim]:
    async with MagentoSim() as running:
        yield running


@pytest.fixture
async def make_client(
    shop: MagentoSim, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[MakeClient]:
    monkeypatch.setenv("MAGENTO_TOKEN", TOKEN)
    made: list[Client] = []

    def make(**overrides: Any) -> Client:
        settings = {
            "type": "magento",
            "name": "magento-eu",
            "url": shop.url,
            "token_env": "MAGENTO_TOKEN",
            "requests_per_second": 1000.0,
            "backoff": "10ms",
            "timeout": "2s",
        }
        made.append(Client(Settings.model_validate(settings | overrides)))
        return made[-1]

    yield make
    for client in made:
        await client.close()


async def polled(client: Client, since: datetime) -> list[Polled]:
    return [item async for item in client.changed_since(since)]


def refs(items: list[Polled]) -> list[str]:
    return [item.mapped.order_ref for item in items if isinstance(item.mapped, Order)]


async def test_an_order_arrives_by_poll_alone(shop: MagentoSim, make_client: MakeClient) -> None:
    client = make_client()
    assert await polled(client, T0) == []
    ref = shop.place_order([("MUG", 2, "10.00")])
    (item,) = await polled(client, T0)
    assert item.version == T0
    order = item.mapped
    assert isinstance(order, Order)
    assert (order.order_ref, order.number, order.payment_status) == (
        str(ref),
        "000000001",
        "pending",
    )
    # 2 x 10.00 + 4.20 tax, shipping 5.00 + 1.05: 30.25.
    assert str(order.totals.total) == "30.25"
    assert await client.hooks("https://intake.example/v1/webhooks/magento-eu") == []
    assert await client.register_hooks("https://intake.example/v1/webhooks/x", "s") == []


async def test_gteq_is_inclusive_and_changes_come_oldest_first(
    shop: MagentoSim, make_client: MakeClient
) -> None:
    first = shop.place_order()
    shop.tick()
    second = shop.place_order()
    shop.tick()
    shop.pay(first)  # first is now the newest
    client = make_client()
    got = await polled(client, T0)
    assert refs(got) == [str(second), str(first)]
    assert [item.version for item in got] == [T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
    assert isinstance(got[1].mapped, Order) and got[1].mapped.payment_status == "paid"
    # Since exactly the second one's stamp: it is included (gteq), with microseconds cut.
    later = T0 + timedelta(seconds=1, microseconds=500_000)
    assert refs(await polled(client, later)) == [str(second), str(first)]
    assert refs(await polled(client, T0 + timedelta(seconds=3))) == []
    query = shop.searches[-1]
    assert query["searchCriteria[filter_groups][0][filters][0][value]"] == "2026-11-23 12:00:03"
    assert query["searchCriteria[filter_groups][0][filters][0][condition_type]"] == "gteq"


async def test_paging_stops_on_total_count_although_magento_repeats_the_last_page(
    shop: MagentoSim, make_client: MakeClient
) -> None:
    placed = [shop.place_order() for _ in range(7)]
    got = await polled(make_client(page_size=3), T0)
    assert refs(got) == [str(ref) for ref in placed]  # each once, in id order at one second
    assert [query["searchCriteria[currentPage]"] for query in shop.searches] == ["1", "2", "3"]


async def test_the_sim_answers_a_page_past_the_end_with_the_last_page(shop: MagentoSim) -> None:
    for _ in range(5):
        shop.place_order()
    params = search_criteria(T0, 9, 2)
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with session.get(
            f"{shop.url}/rest/all/V1/orders", params=params, headers=headers
        ) as r:
            body = await r.json()
    assert [item["entity_id"] for item in body["items"]] == [5]
    assert body["total_count"] == 5


async def test_read_order_a_deleted_one_and_a_bad_ref(
    shop: MagentoSim, make_client: MakeClient
) -> None:
    ref = shop.place_order(guest=True)
    client = make_client()
    order = await client.read_order(str(ref))
    assert isinstance(order, Order) and order.customer.shop_customer_id is None
    shop.delete_order(ref)
    gone = await client.read_order(str(ref))
    assert isinstance(gone, Gone) and "doesn't exist" in gone.message
    assert await polled(client, T0) == []
    assert await client.read_order("../x") == Unmappable(
        "not a Magento order: '../x' is not an entity_id", "../x"
    )


async def test_429_and_5xx_are_retried(shop: MagentoSim, make_client: MakeClient) -> None:
    shop.place_order()
    shop.fail_next = [429, 503, 500]
    assert len(await polled(make_client(), T0)) == 1
    assert shop.fail_next == []


async def test_failures_past_the_retries_are_shop_unreadable(
    shop: MagentoSim, make_client: MakeClient
) -> None:
    shop.fail_next = [502] * 3
    with pytest.raises(ShopUnreadable, match="magento magento-eu: HTTP 502") as caught:
        await polled(make_client(max_retries=2), T0)
    assert caught.value.retryable


async def test_a_refused_token(shop: MagentoSim, make_client: MakeClient) -> None:
    shop.token = "another"
    with pytest.raises(ShopRefused, match="access token was refused reading orders") as caught:
        await polled(make_client(), T0)
    assert "Magento_Sales::actions_view" in str(caught.value)
    assert not caught.value.retryable


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"<html>maintenance</html>", "the order list (page 1) is not JSON"),
        (b'{"items": {}, "total_count": 1}', "without a list of items and a total_count"),
        (b'{"items": []}', "without a list of items and a total_count"),
        (b"[1, 2]", "is a list without a list of items"),
    ],
)
async def test_garbage_is_shop_unreadable_naming_shop_and_resource(
    shop: MagentoSim, make_client: MakeClient, body: bytes, words: str
) -> None:
    shop.garbage_next = [body]
    with pytest.raises(ShopUnreadable, match="magento magento-eu: ") as caught:
        await polled(make_client(), T0)
    assert words in str(caught.value)


async def test_an_item_without_a_readable_updated_at(
    shop: MagentoSim, make_client: MakeClient
) -> None:
    shop.garbage_next = [b'{"items": [{"entity_id": 4, "updated_at": "soon"}], "total_count": 1}']
    with pytest.raises(ShopUnreadable, match=r"entity_id 4\) has no readable updated_at: 'soon'"):
        await polled(make_client(), T0)


async def test_an_unmappable_order_still_moves_the_cursor(
    shop: MagentoSim, make_client: MakeClient
) -> None:
    ref = shop.place_order([("", 1, "5.00")])
    (item,) = await polled(make_client(), T0)
    assert item.version == T0
    assert item.mapped == Unmappable(f"item {100 * ref} has no SKU", str(ref))


async def test_an_injected_clock(make_client: MakeClient) -> None:
    moments = iter([T0 + timedelta(hours=5, microseconds=700)])
    async with MagentoSim(clock=lambda: next(moments)) as sim:
        sim.place_order()
        assert sim.orders[1]["updated_at"] == "2026-11-23 17:00:00"  # whole seconds
