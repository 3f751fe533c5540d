"""The magento sink against the REST simulator in tests/sims/magento.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from relay.model import SinkResult, Status
from relay.sinks.base import SinkUnavailable
from relay.sinks.magento import MagentoSink, Settings, render
from tests.sims import APPLIED, event, price, sink_maker, stock
from tests.sims.magento import TOKEN, MagentoSim

SOURCE_ITEMS, SOURCES, BASE_PRICES = (
    "inventory/source-items",
    "inventory/sources",
    "products/base-prices",
)

MakeSink = Callable[..., MagentoSink]


@pytest.fixture
async def sim() -> AsyncIterator[MagentoSim]:
    async with MagentoSim() as shop:
        shop.add_source("madrid")
        yield shop


@pytest.fixture
async def make_sink(sim: MagentoSim, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MakeSink]:
    monkeypatch.setenv("MAGENTO_TOKEN", TOKEN)
    async with sink_maker(
        MagentoSink,
        Settings,
        type="magento",
        name="acme-magento",
        url=sim.url,
        token_env="MAGENTO_TOKEN",
        backoff="10ms",
        sources={"MAD": "madrid", "BCN": "default"},
    ) as make:
        yield make


async def test_stock_and_prices_reach_the_shop(sim: MagentoSim, make_sink: MakeSink) -> None:
    sim.add_product("TEE", "9.00")
    sim.add_product("MUG", "4.00")

    results = await make_sink().apply(
        [stock("TEE", 5), stock("MUG", 0, "BCN"), price("TEE", "19.90"), price("MUG", "5")]
    )

    assert results == [APPLIED] * 4
    assert (sim.quantity("TEE", "madrid"), sim.status("TEE", "madrid")) == (5, 1)
    assert (sim.quantity("MUG", "default"), sim.status("MUG", "default")) == (0, 0)
    assert (sim.prices["TEE"], sim.prices["MUG"]) == (Decimal("19.9"), Decimal("5"))
    assert sim.calls == {SOURCES: 1, SOURCE_ITEMS: 1, BASE_PRICES: 1}


async def test_a_full_batch_is_one_call_and_sources_are_read_once(
    sim: MagentoSim, make_sink: MakeSink
) -> None:
    skus = [f"SKU-{n:03d}" for n in range(100)]
    for sku in skus:
        sim.add_product(sku)
    sink = make_sink()
    assert sink.max_batch == 100

    assert await sink.apply([stock(sku, n) for n, sku in enumerate(skus)]) == [APPLIED] * 100
    assert (
        await sink.apply([price(sku, f"{n}.50") for n, sku in enumerate(skus)]) == [APPLIED] * 100
    )
    assert await sink.apply([stock(sku, 1, "BCN") for sku in skus]) == [APPLIED] * 100

    assert sim.calls == {SOURCES: 1, SOURCE_ITEMS: 2, BASE_PRICES: 1}
    assert sim.quantity("SKU-042", "madrid") == 42 and sim.prices["SKU-042"] == Decimal("42.5")


async def test_unknown_skus_are_dead_while_the_rest_applies(
    sim: MagentoSim, make_sink: MakeSink
) -> None:
    sim.add_product("TEE")
    sim.add_product("MUG")

    results = await make_sink().apply(
        [
            stock("GHOST", 1),
            stock("TEE", 3),
            stock("PHANTOM", 2),
            stock("MUG", 4),
            price("GHOST", "1.00"),
            price("TEE", "2.00"),
        ]
    )

    assert results == [
        SinkResult(Status.DEAD, 'GHOST: Product with requested "sku": "GHOST" was not found.'),
        APPLIED,
        SinkResult(Status.DEAD, 'PHANTOM: Product with requested "sku": "PHANTOM" was not found.'),
        APPLIED,
        SinkResult(Status.DEAD, "GHOST: Invalid attribute SKU = GHOST."),
        APPLIED,
    ]
    assert (sim.quantity("TEE", "madrid"), sim.quantity("MUG", "madrid")) == (3, 4)
    assert sim.prices["TEE"] == Decimal("2.00")
    # Magento saves no source item of a refused call: the good ones go again, alone.
    assert sim.calls[SOURCE_ITEMS] == 2
    assert sim.calls[BASE_PRICES] == 1  # the bulk price API saved the good row at once


async def test_an_error_naming_no_sku_sends_each_item_alone(
    sim: MagentoSim, make_sink: MakeSink
) -> None:
    for sku in ("A", "B", "C"):
        sim.add_product(sku)
    sink = make_sink(sources={"MAD": "madrid", "BCN": "barcelona"})
    sim.add_source("barcelona")
    assert await sink.apply([stock("A", 1, "BCN")]) == [APPLIED]
    del sim.sources["barcelona"]  # removed in Magento after the sink read the sources

    results = await sink.apply([stock("A", 2), stock("B", 2, "BCN"), stock("C", 2)])

    assert results == [APPLIED, SinkResult(Status.DEAD, "B: Could not save Source Item"), APPLIED]
    assert (sim.quantity("A", "madrid"), sim.quantity("C", "madrid")) == (2, 2)
    assert sim.calls[SOURCE_ITEMS] == 1 + 1 + 3


async def test_sources_the_shop_lacks_are_dead_and_unmapped_warehouses_skipped(
    sim: MagentoSim, make_sink: MakeSink
) -> None:
    sim.add_product("TEE")

    results = await make_sink(sources={"MAD": "madrid", "LIS": "lisboa"}).apply(
        [stock("TEE", 1, "LIS"), stock("TEE", 2, "BCN"), stock("TEE", 3)]
    )

    assert results == [
        SinkResult(
            Status.DEAD,
            "TEE: Magento has no source 'lisboa' (it has: default, madrid); "
            "map the warehouse in this sink's sources",
        ),
        SinkResult(Status.SKIPPED, "TEE: warehouse BCN is not mapped to a Magento source"),
        APPLIED,
    ]
    assert sim.quantity("TEE", "madrid") == 3


async def test_without_a_table_a_warehouse_is_the_source_of_its_name(
    sim: MagentoSim, make_sink: MakeSink
) -> None:
    sim.add_product("TEE")
    sink = make_sink(sources={})

    results = await sink.apply([stock("TEE", 4, "madrid"), stock("TEE", 5, "valencia")])
    assert [result.status for result in results] == [Status.APPLIED, Status.DEAD]

    sim.add_source("valencia")  # created in Magento later: read the sources again
    assert await sink.apply([stock("TEE", 5, "valencia")]) == [APPLIED]
    assert (sim.quantity("TEE", "madrid"), sim.quantity("TEE", "valencia")) == (4, 5)
    assert sim.calls[SOURCES] == 2


async def test_sources_are_read_page_by_page(sim: MagentoSim, make_sink: MakeSink) -> None:
    for number in range(230):
        sim.add_source(f"store_{number:03d}")
    sim.add_product("TEE")

    assert await make_sink(sources={}).apply([stock("TEE", 1, "store_229")]) == [APPLIED]
    assert sim.calls[SOURCES] == 3


async def test_stock_figures_as_magento_keeps_them(sim: MagentoSim, make_sink: MakeSink) -> None:
    sim.add_product("ROPE")
    sim.add_product("OVERSOLD")

    results = await make_sink().apply(
        [stock("ROPE", 2.5), stock("OVERSOLD", -3), stock("NOTHING", "many"), price("ROPE", "-1")]
    )

    assert results[:2] == [APPLIED, APPLIED]
    assert (sim.quantity("ROPE", "madrid"), sim.status("ROPE", "madrid")) == (2.5, 1)
    assert (sim.quantity("OVERSOLD", "madrid"), sim.status("OVERSOLD", "madrid")) == (0, 0)
    assert results[2:] == [
        SinkResult(Status.DEAD, "NOTHING: on_hand 'many' is not a number"),
        SinkResult(Status.DEAD, "ROPE: price '-1' is not a non-negative decimal amount"),
    ]


async def test_what_this_shop_does_not_take_is_skipped_without_a_call(
    sim: MagentoSim, make_sink: MakeSink
) -> None:
    results = await make_sink(price_list="RETAIL").apply(
        [
            event("stock", {"sku": "TEE", "warehouse": "MAD"}, op="delete"),
            price("TEE", "3.00", price_list="WHOLESALE"),
            price("TEE", "3.00"),
            event("product", {"sku": "TEE"}),
        ]
    )

    assert [result.status for result in results] == [Status.SKIPPED] * 4
    assert sum(sim.calls.values()) == 0


async def test_a_refused_token_makes_the_shop_unavailable(
    sim: MagentoSim, make_sink: MakeSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.add_product("TEE")
    monkeypatch.setenv("WRONG_TOKEN", "not-the-token")

    with pytest.raises(
        SinkUnavailable,
        match=r"access token was refused \(401: The consumer "
        r"isn't authorized to access Magento_Catalog::catalog\.\)",
    ) as raised:
        await make_sink(token_env="WRONG_TOKEN").apply([price("TEE", "1.00")])
    assert "not-the-token" not in str(raised.value)
    assert sim.prices["TEE"] == Decimal("10.00")


async def test_server_errors_and_429_are_retried_then_succeed(
    sim: MagentoSim, make_sink: MakeSink
) -> None:
    sim.add_product("TEE")
    sim.fail_next = [503, 429, 500]

    assert await make_sink().apply([stock("TEE", 7)]) == [APPLIED]
    assert sim.quantity("TEE", "madrid") == 7
    assert sim.fail_next == []


async def test_a_long_retry_after_is_handed_to_the_consumer(
    sim: MagentoSim, make_sink: MakeSink
) -> None:
    sim.add_product("TEE")
    sim.fail_next, sim.retry_after = [429], "120"

    with pytest.raises(SinkUnavailable, match="HTTP 429") as raised:
        await make_sink().apply([price("TEE", "2.00")])
    assert raised.value.retry_after == 120


async def test_server_errors_past_the_retries_make_the_shop_unavailable(
    sim: MagentoSim, make_sink: MakeSink
) -> None:
    sim.add_product("TEE")
    sim.fail_next = [502] * 3

    with pytest.raises(SinkUnavailable, match="HTTP 502"):
        await make_sink(max_retries=2).apply([price("TEE", "2.00")])
    assert sim.prices["TEE"] == Decimal("10.00")


async def test_a_missing_api_makes_the_shop_unavailable(
    sim: MagentoSim, make_sink: MakeSink
) -> None:
    sim.add_product("TEE")
    sim.disabled = {BASE_PRICES}

    with pytest.raises(
        SinkUnavailable,
        match="products/base-prices answered HTTP 404: Request does not match any route",
    ):
        await make_sink().apply([price("TEE", "2.00")])


def test_render_fills_named_and_positional_parameters() -> None:
    assert render(
        {
            "message": 'Product with requested "%field": "%value" was not found.',
            "parameters": {"field": "sku", "value": "X-1"},
        }
    ) == ('Product with requested "sku": "X-1" was not found.')
    assert (
        render(
            {
                "message": "Invalid attribute %fieldName = %fieldValue.",
                "parameters": ["Price", "-1"],
            }
        )
        == "Invalid attribute Price = -1."
    )
    assert render({"message": "Store %1 of %2", "parameters": ["a", "b"]}) == "Store a of b"
    assert render({"message": "Input data is empty"}) == "Input data is empty"


def test_settings_refuse_what_would_not_work() -> None:
    base: dict[str, Any] = {
        "type": "magento",
        "name": "m",
        "url": "https://shop.example.com",
        "token_env": "MAGENTO_TOKEN",
    }
    settings = Settings.model_validate(base)
    assert (settings.store_code, settings.store_id, settings.sources) == ("all", 0, {})
    cases: list[tuple[dict[str, Any], str]] = [
        ({"url": "http://shop.example.com"}, "plain http"),
        ({"store_code": "Default View"}, "not a Magento store code"),
        ({"token_file": "/run/token"}, "exactly one of token_file or token_env"),
        ({"requests_per_second": 0}, "greater than 0"),
        ({"sources": {"MAD": "default", "BCN": "default"}}, "more than one warehouse"),
    ]
    for bad, message in cases:
        with pytest.raises(ValidationError, match=message):
            Settings.model_validate(base | bad)
