"""The shopify sink against the Admin GraphQL simulator in tests/sims/shopify.py."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from relay.model import Event, SinkResult, Status
from relay.settings import SecretMissing
from relay.sinks.base import SinkUnavailable
from relay.sinks.shopify import Settings, ShopifySink, idempotency_key, sku_search
from tests.sims import APPLIED, event, price, sink_maker, stock
from tests.sims.shopify import TOKEN, ShopifySim

MAD = "gid://shopify/Location/1"
BCN = "gid://shopify/Location/2"

MakeSink = Callable[..., ShopifySink]


def from_agent(sent: Event, agent: str) -> Event:
    """``sent`` as agent ``agent`` of tenant acme published it (its key is that agent's)."""
    return dataclasses.replace(sent, source=f"urn:distillsync:acme:{agent}")


def two_locations(**options: Any) -> ShopifySim:
    """A shop with the locations MAD and BCN map to (``options`` as ShopifySim takes them)."""
    shop = ShopifySim(**options)
    shop.add_location(MAD)
    shop.add_location(BCN)
    return shop


@pytest.fixture
async def sim() -> AsyncIterator[ShopifySim]:
    async with two_locations(restore_rate=1000.0) as shop:
        yield shop


@pytest.fixture
async def make_sink(sim: ShopifySim, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MakeSink]:
    """Sinks on ``sim``; ``make_sink(shop_url=other.url)`` for another shop."""
    monkeypatch.setenv("SHOPIFY_TOKEN", TOKEN)
    async with sink_maker(
        ShopifySink,
        Settings,
        type="shopify",
        name="acme-shop",
        shop_url=sim.url,
        access_token_env="SHOPIFY_TOKEN",
        locations={"MAD": MAD, "BCN": BCN},
        backoff="10ms",
    ) as make:
        yield make


async def test_stock_and_prices_reach_the_shop(sim: ShopifySim, make_sink: MakeSink) -> None:
    sim.add_product(["TEE-S", "TEE-M"], price="9.00", stock={MAD: 1, BCN: 1})
    sim.add_product(["MUG"], price="4.00", stock={MAD: 0})
    sim.level("TEE-S", MAD).committed = 2  # two units promised to unfulfilled orders
    events = [
        stock("TEE-S", 7),
        stock("TEE-M", 3, "BCN"),
        stock("MUG", 12),
        price("TEE-S", "19.90"),
        price("TEE-M", "21.00"),
        price("MUG", "5.5"),
    ]

    assert await make_sink().apply(events) == [APPLIED] * 6

    assert (sim.on_hand("TEE-S", MAD), sim.on_hand("TEE-M", BCN), sim.on_hand("MUG", MAD)) == (
        7,
        3,
        12,
    )
    # on_hand is the shelf count; Shopify keeps the committed units out of "available".
    assert sim.level("TEE-S", MAD).available == 5
    assert (sim.price("TEE-S"), sim.price("TEE-M"), sim.price("MUG")) == ("19.90", "21.00", "5.5")
    # One lookup, a stock read per location, one stock write, a price write per product.
    assert sim.calls == {"VariantsBySku": 1, "StockLevels": 2, "SetStock": 1, "SetPrices": 2}


async def test_a_full_batch_is_one_call_of_each_and_lookups_are_cached(
    sim: ShopifySim, make_sink: MakeSink
) -> None:
    skus = [f"SKU-{n:03d}" for n in range(50)]
    for sku in skus:
        sim.add_product([sku], stock={MAD: 0})
    sink = make_sink()
    assert sink.max_batch == 50

    assert await sink.apply([stock(sku, 5) for sku in skus]) == [APPLIED] * 50
    assert sim.calls == {"VariantsBySku": 1, "StockLevels": 1, "SetStock": 1}
    assert await sink.apply([stock(sku, 6) for sku in skus]) == [APPLIED] * 50
    assert sim.calls == {"VariantsBySku": 1, "StockLevels": 2, "SetStock": 2}
    assert all(sim.on_hand(sku, MAD) == 6 for sku in skus)


async def test_the_lookup_pages_and_keeps_exact_matches_only(
    sim: ShopifySim, make_sink: MakeSink
) -> None:
    # Shopify's search ignores case: each SKU also finds its lower-case twin, so 40 SKUs
    # match 80 variants, two pages of 50.
    skus = [f"BOX-{n:02d}" for n in range(40)]
    for sku in skus:
        sim.add_product([sku.lower()], price="1.00")
        sim.add_product([sku], price="1.00")

    assert await make_sink().apply([price(sku, "2.00") for sku in skus]) == [APPLIED] * 40

    assert sim.calls["VariantsBySku"] == 2
    assert all(sim.price(sku) == "2.00" and sim.price(sku.lower()) == "1.00" for sku in skus)


async def test_unknown_and_ambiguous_skus_are_dead_while_the_rest_applies(
    sim: ShopifySim, make_sink: MakeSink
) -> None:
    sim.add_product(["OK-1"], stock={MAD: 1})
    sim.add_product(["TWIN"], stock={MAD: 1})
    sim.add_product(["TWIN"], stock={MAD: 1})

    results = await make_sink().apply(
        [
            stock("GHOST", 4),
            stock("OK-1", 4),
            stock("TWIN", 4),
            price("GHOST", "1.00"),
            price("OK-1", "3.00"),
        ]
    )

    assert [result.status for result in results] == [
        Status.DEAD,
        Status.APPLIED,
        Status.DEAD,
        Status.DEAD,
        Status.APPLIED,
    ]
    assert results[0].reason == "GHOST: no variant has this SKU in Shopify"
    assert results[2].reason.startswith("TWIN: 2 variants share this SKU in Shopify")
    assert (sim.on_hand("OK-1", MAD), sim.price("OK-1")) == (4, "3.00")


async def test_a_rejected_item_is_dead_naming_its_sku(sim: ShopifySim, make_sink: MakeSink) -> None:
    sim.add_product(["GOLD", "SILVER"], price="1.00", stock={MAD: 1})
    sim.add_product(["REMOTE"], stock={BCN: 1})  # not stocked at MAD

    results = await make_sink().apply(
        [
            price("GOLD", "1000000000000000000"),
            price("SILVER", "2.50"),
            stock("REMOTE", 3),
            stock("SILVER", 3),
        ]
    )

    assert results[0] == SinkResult(
        Status.DEAD, "GOLD: Price must be less than 1000000000000000000 (INVALID_INPUT)"
    )
    assert results[1] == APPLIED
    assert results[2].status is Status.DEAD
    assert results[2].reason.startswith(f"REMOTE: not stocked at Shopify location {MAD}")
    assert results[3] == APPLIED
    assert (sim.price("GOLD"), sim.price("SILVER"), sim.on_hand("SILVER", MAD)) == (
        "1.00",
        "2.50",
        3,
    )


async def test_event_data_shopify_cannot_take_is_dead(sim: ShopifySim, make_sink: MakeSink) -> None:
    sim.add_product(["ROPE"], stock={MAD: 9})

    results = await make_sink().apply([stock("ROPE", 2.5), price("ROPE", "cheap")])

    assert results == [
        SinkResult(Status.DEAD, "ROPE: on_hand 2.5 is not a whole number (Shopify counts units)"),
        SinkResult(Status.DEAD, "ROPE: price 'cheap' is not a non-negative decimal amount"),
    ]
    assert sim.on_hand("ROPE", MAD) == 9


async def test_negative_erp_stock_is_none_to_sell(sim: ShopifySim, make_sink: MakeSink) -> None:
    sim.add_product(["OVERSOLD"], stock={MAD: 4})
    assert await make_sink().apply([stock("OVERSOLD", -3)]) == [APPLIED]
    assert sim.on_hand("OVERSOLD", MAD) == 0


async def test_what_this_shop_does_not_take_is_skipped_without_a_call(
    sim: ShopifySim, make_sink: MakeSink
) -> None:
    sim.add_product(["TEE"], stock={MAD: 1})

    results = await make_sink().apply(
        [
            stock("TEE", 5, warehouse="LIS"),
            event("stock", {"sku": "TEE", "warehouse": "MAD"}, op="delete"),
            price("TEE", "3.00", price_list="WHOLESALE"),
            event("product", {"sku": "TEE"}),
        ]
    )

    assert [result.status for result in results] == [Status.SKIPPED] * 4
    assert results[0].reason == "TEE: warehouse LIS is not mapped to a Shopify location"
    assert sum(sim.calls.values()) == 0


async def test_the_configured_price_list_is_the_one_applied(
    sim: ShopifySim, make_sink: MakeSink
) -> None:
    sim.add_product(["TEE"], price="1.00")

    results = await make_sink(price_list="RETAIL").apply(
        [price("TEE", "3.00", price_list="RETAIL"), price("TEE-X", "4.00")]
    )

    assert [result.status for result in results] == [Status.APPLIED, Status.SKIPPED]
    assert sim.price("TEE") == "3.00"


async def test_a_sale_between_read_and_write_is_read_again_and_written(
    sim: ShopifySim, make_sink: MakeSink
) -> None:
    sim.add_product(["HAT"], stock={MAD: 10})
    sim.add_product(["CAP"], stock={MAD: 10})

    def sale() -> None:
        sim.level("HAT", MAD).on_hand -= 1

    sim.before_writes = [sale]

    assert await make_sink().apply([stock("HAT", 20), stock("CAP", 30)]) == [APPLIED] * 2

    assert sim.stale == 1
    assert (sim.on_hand("HAT", MAD), sim.on_hand("CAP", MAD)) == (20, 30)
    # The stale write changed nothing (all or nothing); the second, from a fresh read, did.
    assert sim.calls["StockLevels"] == 2
    assert sorted(delta for _, _, delta in sim.adjustments) == [11, 20]
    assert len(set(sim.keys_seen)) == 2  # a different request, a different key


async def test_a_write_after_a_refused_one_never_reuses_its_key(
    sim: ShopifySim, make_sink: MakeSink
) -> None:
    sim.add_product(["HAT"], stock={MAD: 10})

    def sale() -> None:
        sim.level("HAT", MAD).on_hand -= 1

    def sale_returned() -> None:
        sim.level("HAT", MAD).on_hand += 1

    # The third write reads 10 again, as the first did: same input, but that one failed.
    sim.before_writes = [sale, sale_returned]

    assert await make_sink().apply([stock("HAT", 20)]) == [APPLIED]
    assert sim.stale == 2
    assert len(set(sim.keys_seen)) == 3
    assert sim.on_hand("HAT", MAD) == 20


async def test_stock_that_keeps_moving_hands_the_batch_back(
    sim: ShopifySim, make_sink: MakeSink
) -> None:
    sim.add_product(["HOT"], stock={MAD: 10})

    def sale() -> None:
        sim.level("HOT", MAD).on_hand -= 1

    sim.before_writes = [sale] * 10  # a sale before every write

    with pytest.raises(SinkUnavailable, match="kept changing"):
        await make_sink().apply([stock("HOT", 50)])
    assert sim.stale == 5
    assert sim.on_hand("HOT", MAD) == 5  # nothing written over the sales


async def test_a_redelivered_event_changes_nothing(sim: ShopifySim, make_sink: MakeSink) -> None:
    sim.add_product(["SOCK"], stock={MAD: 2})
    again = stock("SOCK", 8)

    assert await make_sink().apply([again]) == [APPLIED]
    # A consumer that crashed before recording the event gets it again, with a new sink.
    assert await make_sink().apply([again]) == [APPLIED]

    assert sim.on_hand("SOCK", MAD) == 8
    assert len(sim.adjustments) == 1
    assert sim.calls["SetStock"] == 1  # already so: the second delivery wrote nothing


async def test_a_lost_answer_is_retried_with_the_same_key_and_applied_once(
    sim: ShopifySim, make_sink: MakeSink
) -> None:
    sim.add_product(["SOCK"], stock={MAD: 2})
    sim.lose_next = 1  # Shopify applies the write, the answer is lost (502)
    sock = stock("SOCK", 8)

    assert await make_sink().apply([sock]) == [APPLIED]

    assert sim.on_hand("SOCK", MAD) == 8
    assert len(sim.adjustments) == 1
    assert sim.replays == 1  # the retry was answered from the first result
    # Both attempts carried the key made from the event id and what it set.
    sent = [
        {
            "inventoryItemId": sim.variant("SOCK").inventory_item_id,
            "locationId": MAD,
            "quantity": 8,
            "changeFromQuantity": 2,
        }
    ]
    assert sim.keys_seen == [idempotency_key([sock.id], sent)] * 2


async def test_two_agents_rows_for_one_sku_and_location_are_both_applied(
    sim: ShopifySim, make_sink: MakeSink
) -> None:
    # Two ERPs each send TEE at their warehouse MAD: distinct keys, so one batch holds both.
    sim.add_product(["TEE"], stock={MAD: 1, BCN: 1})
    first, second = stock("TEE", 4), from_agent(stock("TEE", 9), "erp-2")
    other = stock("TEE", 2, "BCN")

    assert await make_sink().apply([first, other, second]) == [APPLIED] * 3

    # What one event at a time leaves: the batch's last row for TEE at MAD.
    assert (sim.on_hand("TEE", MAD), sim.on_hand("TEE", BCN)) == (9, 2)
    assert sim.calls["SetStock"] == 1
    item = sim.variant("TEE").inventory_item_id
    sent = [
        {"inventoryItemId": item, "locationId": MAD, "quantity": 9, "changeFromQuantity": 1},
        {"inventoryItemId": item, "locationId": BCN, "quantity": 2, "changeFromQuantity": 1},
    ]
    # The key names every event the write carries, so it is the batch's alone.
    assert sim.keys_seen == [idempotency_key([first.id, second.id, other.id], sent)]


async def test_two_agents_rows_for_a_location_that_does_not_stock_the_item_are_both_dead(
    sim: ShopifySim, make_sink: MakeSink
) -> None:
    sim.add_product(["TEE"], stock={BCN: 1})

    results = await make_sink().apply([stock("TEE", 4), from_agent(stock("TEE", 9), "erp-2")])

    assert (
        results
        == [
            SinkResult(
                Status.DEAD, f"TEE: not stocked at Shopify location {MAD} (activate it there)"
            )
        ]
        * 2
    )
    assert sim.calls["SetStock"] == 0


async def test_the_simulator_refuses_a_pair_named_twice_in_one_call(sim: ShopifySim) -> None:
    sim.add_product(["TEE"], stock={MAD: 1})
    item = sim.variant("TEE").inventory_item_id
    quantity = {"inventoryItemId": item, "locationId": MAD, "changeFromQuantity": 1}
    variables = {
        "idempotencyKey": "k-1",
        "input": {
            "name": "on_hand",
            "reason": "correction",
            "quantities": [quantity | {"quantity": 4}, quantity | {"quantity": 9}],
        },
    }
    query = (
        "mutation SetStock { inventorySetQuantities(input: $input) "
        "@idempotent(key: $idempotencyKey) { userErrors { field message code } } }"
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sim.url}/admin/api/{sim.api_version}/graphql.json",
            json={"query": query, "variables": variables, "operationName": "SetStock"},
            headers={"X-Shopify-Access-Token": TOKEN},
        ) as response,
    ):
        answer = await response.json()

    errors = answer["data"]["inventorySetQuantities"]["userErrors"]
    assert errors == [
        {
            "field": ["input", "quantities", str(position), "locationId"],
            "message": "The combination of inventoryItemId and locationId must be unique.",
            "code": "NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR",
        }
        for position in (0, 1)
    ]
    assert sim.on_hand("TEE", MAD) == 1  # all or nothing


async def test_a_request_still_in_progress_is_asked_again_with_its_key(
    sim: ShopifySim, make_sink: MakeSink
) -> None:
    sim.add_product(["SOCK"], stock={MAD: 2})
    # Shopify takes the write, its gateway gives up (504) while the write goes on; it
    # completes once the retry has been told it is still in progress.
    sim.hold_next = 1
    sim.after_concurrent = [sim.finish_held]

    assert await make_sink().apply([stock("SOCK", 8)]) == [APPLIED]

    assert sim.on_hand("SOCK", MAD) == 8
    assert sim.concurrent == 1
    # The same request again, not a new one: Shopify answered it from the first result.
    assert sim.replays == 1
    assert len(sim.keys_seen) == 3 and len(set(sim.keys_seen)) == 1
    assert len(sim.adjustments) == 1
    assert sim.calls["StockLevels"] == 1


async def test_a_request_in_progress_past_the_retries_goes_back_and_keeps_its_key(
    sim: ShopifySim, make_sink: MakeSink
) -> None:
    sim.add_product(["SOCK"], stock={MAD: 2})
    sim.hold_next = 1
    sock = stock("SOCK", 8)

    with pytest.raises(SinkUnavailable, match="still processing"):
        await make_sink(max_retries=1).apply([sock])  # not a dead letter: the batch goes back
    assert sim.concurrent == 1 and sim.on_hand("SOCK", MAD) == 2

    # The consumer's retry, by a new process after a crash: the same batch, the same
    # quantities read, so the same key; the first request completes meanwhile.
    sim.after_concurrent = [sim.finish_held]
    assert await make_sink().apply([sock]) == [APPLIED]

    assert sim.on_hand("SOCK", MAD) == 8
    assert len(set(sim.keys_seen)) == 1
    assert (sim.concurrent, sim.replays, len(sim.adjustments)) == (2, 1, 1)


def test_the_idempotency_key_is_deterministic() -> None:
    quantities = [
        {
            "inventoryItemId": "gid://shopify/InventoryItem/1",
            "locationId": MAD,
            "quantity": 8,
            "changeFromQuantity": 2,
        }
    ]
    key = idempotency_key(["event-1"], quantities)

    assert key == idempotency_key(["event-1"], [dict(quantities[0])])
    assert uuid.UUID(key).version == 5
    assert key != idempotency_key(["event-2"], quantities)
    assert key != idempotency_key(["event-1"], [quantities[0] | {"changeFromQuantity": 3}])
    assert key != idempotency_key(["event-1"], quantities, attempt=1)


def test_sku_search_quotes_what_shopify_search_would_split() -> None:
    assert sku_search(["A-1", 'B "2"', "C\\3"]) == 'sku:"A-1" OR sku:"B \\"2\\"" OR sku:"C\\\\3"'


async def test_a_long_run_paces_itself_and_is_never_throttled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A small bucket that a 500-event drain (about 3,100 points) empties eight times over.
    monkeypatch.setenv("SHOPIFY_TOKEN", TOKEN)
    skus = [f"P{n:03d}" for n in range(500)]
    events = [stock(sku, 1) for sku in skus]
    async with (
        two_locations(maximum=400.0, restore_rate=2000.0) as shop,
        sink_maker(
            ShopifySink,
            Settings,
            type="shopify",
            name="s",
            shop_url=shop.url,
            access_token_env="SHOPIFY_TOKEN",
            locations={"MAD": MAD},
        ) as make_sink,
    ):
        for sku in skus:
            shop.add_product([sku], stock={MAD: 0})
        sink = make_sink()
        for start in range(0, 500, sink.max_batch):
            assert await sink.apply(events[start : start + sink.max_batch]) == [APPLIED] * 50
    assert shop.throttled == 0
    assert sum(shop.calls.values()) == 30
    assert all(shop.on_hand(sku, MAD) == 1 for sku in skus)


async def test_an_empty_bucket_is_waited_for_and_the_call_retried(make_sink: MakeSink) -> None:
    async with two_locations(available=0.0, restore_rate=500.0) as shop:
        shop.add_product(["TEE"], stock={MAD: 1})
        assert await make_sink(shop_url=shop.url).apply([stock("TEE", 6)]) == [APPLIED]
    assert shop.throttled == 1
    assert shop.on_hand("TEE", MAD) == 6


async def test_a_bucket_that_refills_slowly_is_handed_to_the_consumer(make_sink: MakeSink) -> None:
    async with two_locations(available=0.0, restore_rate=1.0) as shop:
        shop.add_product(["TEE"], stock={MAD: 1})
        with pytest.raises(SinkUnavailable, match="throttled") as raised:
            await make_sink(shop_url=shop.url).apply([stock("TEE", 6)])
    assert raised.value.retry_after is not None and raised.value.retry_after > 60


async def test_a_refused_token_makes_the_shop_unavailable(
    sim: ShopifySim, make_sink: MakeSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.add_product(["TEE"], stock={MAD: 1})
    monkeypatch.setenv("WRONG_TOKEN", "shpat_wrong")

    with pytest.raises(SinkUnavailable, match=r"access token was refused \(401\)") as raised:
        await make_sink(access_token_env="WRONG_TOKEN").apply([stock("TEE", 3)])
    assert "shpat_wrong" not in str(raised.value)
    assert sim.on_hand("TEE", MAD) == 1


async def test_server_errors_are_retried_then_succeed(sim: ShopifySim, make_sink: MakeSink) -> None:
    sim.add_product(["TEE"], stock={MAD: 1})
    sim.fail_next = [503, 500, 429]

    assert await make_sink().apply([stock("TEE", 3)]) == [APPLIED]
    assert sim.on_hand("TEE", MAD) == 3
    assert sim.fail_next == []


async def test_server_errors_past_the_retries_make_the_shop_unavailable(
    sim: ShopifySim, make_sink: MakeSink
) -> None:
    sim.add_product(["TEE"], stock={MAD: 1})
    sim.fail_next = [502] * 3

    with pytest.raises(SinkUnavailable, match="HTTP 502"):
        await make_sink(max_retries=2).apply([stock("TEE", 3)])
    assert sim.fail_next == []


def test_settings_refuse_what_would_not_work(monkeypatch: pytest.MonkeyPatch) -> None:
    base: dict[str, Any] = {
        "type": "shopify",
        "name": "s",
        "shop_url": "https://acme.myshopify.com",
        "access_token_env": "SHOPIFY_TOKEN",
        "locations": {"MAD": MAD},
    }
    assert Settings.model_validate(base).api_version == "2026-10"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"shop_url": "http://acme.myshopify.com"}, "plain http"),
        ({"api_version": "2025-10"}, "predates changeFromQuantity"),
        ({"api_version": "latest"}, "not a Shopify API version"),
        ({"locations": {"MAD": "123"}}, "locations.MAD: '123' is not a location GID"),
        ({"locations": {"MAD": MAD, "MAD2": MAD}}, "mapped from more than one warehouse"),
        ({"access_token_file": "/run/token"}, "exactly one of access_token_file"),
    ]
    for bad, message in cases:
        with pytest.raises(ValidationError, match=message):
            Settings.model_validate(base | bad)
    monkeypatch.delenv("SHOPIFY_TOKEN", raising=False)
    with pytest.raises(SecretMissing, match="access_token_env: environment variable"):
        ShopifySink(Settings.model_validate(base))
