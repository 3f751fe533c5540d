"""Property test of the Shopify sink's fold against the plain rule it shortcuts.

Shopify refuses a call that names an (inventory item, location) pair twice, so the sink
folds a batch's rows for one pair into the last of them (``_fold_stock`` in
relay/sinks/shopify.py). The plain rule is one event at a time, in batch order: over
random batches (SKUs, some unknown; warehouses, one unmapped; agents; quantities, some
negative; order) and random shops (items stocked at some locations only), applying the
batch at once must leave the shop exactly as applying its events one by one does, and
answer each event as one by one does.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.model import Event, SinkResult
from relay.sinks.shopify import Settings, ShopifySink
from tests.sims import sink_maker, stock
from tests.sims.shopify import TOKEN, ShopifySim

LOCATIONS = {"MAD": "gid://shopify/Location/1", "BCN": "gid://shopify/Location/2"}
SKUS = ["TEE", "CAP", "MUG"]
Row = tuple[str, str, str, int]
"""SKU, warehouse, agent, on_hand."""
Shop = dict[tuple[str, str], int | None]
"""(SKU, location) -> on_hand, or None where the item is not stocked."""

rows = st.tuples(
    st.sampled_from([*SKUS, "GHOST"]),
    st.sampled_from(["MAD", "BCN", "LIS"]),
    st.sampled_from(["erp-1", "erp-2", "erp-3"]),
    st.integers(-2, 9),
)
shops = st.fixed_dictionaries(
    {
        (sku, location): st.none() | st.integers(0, 9)
        for sku in SKUS
        for location in LOCATIONS.values()
    }
)


def stocked(shop: Shop) -> ShopifySim:
    """A simulator holding ``shop``; two built from one ``shop`` have the same ids."""
    sim = ShopifySim(restore_rate=1000.0)
    for location in LOCATIONS.values():
        sim.add_location(location)
    for sku in SKUS:
        sim.add_product(
            [sku],
            stock={
                location: quantity
                for (name, location), quantity in shop.items()
                if name == sku and quantity is not None
            },
        )
    return sim


def event(row: Row) -> Event:
    sku, warehouse, agent, on_hand = row
    return dataclasses.replace(
        stock(sku, on_hand, warehouse), source=f"urn:distillsync:acme:{agent}"
    )


async def both_ways(shop: Shop, batch: list[Event]) -> tuple[Any, Any]:
    """(levels, results) after the batch at once, and after its events one by one."""
    async with (
        stocked(shop) as at_once,
        stocked(shop) as one_by_one,
        sink_maker(
            ShopifySink,
            Settings,
            type="shopify",
            name="s",
            access_token_env="SHOPIFY_TOKEN",
            locations=LOCATIONS,
            backoff="10ms",
        ) as make_sink,
    ):
        folded = await make_sink(shop_url=at_once.url).apply(batch)
        sink = make_sink(shop_url=one_by_one.url)
        plain: list[SinkResult] = []
        for each in batch:
            plain += await sink.apply([each])
        return ((levels(at_once), folded), (levels(one_by_one), plain))


def levels(sim: ShopifySim) -> dict[tuple[str, str], int]:
    return {pair: level.on_hand for pair, level in sim.levels.items()}


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPIFY_TOKEN", TOKEN)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(shop=shops, batch=st.lists(rows, min_size=1, max_size=10))
def test_a_batch_ends_the_shop_where_one_event_at_a_time_does(shop: Shop, batch: list[Row]) -> None:
    at_once, one_by_one = asyncio.run(both_ways(shop, [event(row) for row in batch]))
    assert at_once == one_by_one
