"""What the shop sinks remember of SKUs (relay.sinks.lookup), against each shop's simulator.

One test per promise, run for every sink the promise applies to:

- a SKU the shop does not have costs one lookup per ``unknown_sku_ttl``, not one per batch;
  past the TTL (moved on an injected clock) it is looked up again, and written once the
  merchant created it (all four sinks: Magento has no ids, only the misses);
- a consumer restarted on the same version store writes a SKU it knew with no lookup;
- a persisted id the shop no longer has (the product deleted and re-created) is forgotten,
  looked up again, and the event lands; the new id is what the store keeps (and so for an
  id that goes stale while the sink runs).

The sinks are built as the consumer builds them (``relay.service.build_sinks`` with the
store), on SQLite and on PostgreSQL; the store's own part (the table, its migration) is
checked directly below.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from sqlalchemy import text

from relay.config import ConsumerConfig
from relay.model import Status
from relay.service import build_sinks
from relay.sinks.base import Sink
from relay.sinks.lookup import Misses
from relay.store import SCHEMA_VERSION, VersionStore
from tests import test_relay_store
from tests.sims import Served, statuses, stock
from tests.sims import magento as magento_sim
from tests.sims import shopify as shopify_sim
from tests.sims.magento import MagentoSim
from tests.sims.prestashop import PrestaShopSim
from tests.sims.shopify import ShopifySim
from tests.sims.woocommerce import WooCommerceSim

TTL = 600.0
APPLIED, DEAD = Status.APPLIED, Status.DEAD
store_url = test_relay_store.url
"""The store tests' ``url`` fixture: a test taking ``store_url`` runs on SQLite and on
PostgreSQL (a throwaway database)."""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- one adapter per shop: its simulator, the sink's table, and what a test asks ---------


class Shop:
    """A simulator, the ``[[sinks]]`` table of a sink on it, and the test's questions."""

    sim: Served
    env: dict[str, str] = {}

    def table(self) -> dict[str, Any]:
        raise NotImplementedError

    def add(self, sku: str) -> None:
        raise NotImplementedError

    def recreate(self, sku: str) -> None:
        """The merchant deletes the product of ``sku`` and creates it again: a new id."""
        raise NotImplementedError

    def lookups(self, sku: str) -> int:
        """Requests so far that looked ``sku`` up (Magento: that carried it)."""
        raise NotImplementedError

    def on_hand(self, sku: str) -> int | float | None:
        raise NotImplementedError


class Shopify(Shop):
    location = "gid://shopify/Location/1"
    env = {"SHOPIFY_TOKEN": shopify_sim.TOKEN}

    def __init__(self) -> None:
        self.sim = self.shop = ShopifySim(restore_rate=1000.0)
        self.shop.add_location(self.location)

    def table(self) -> dict[str, Any]:
        return {
            "type": "shopify",
            "shop_url": self.shop.url,
            "access_token_env": "SHOPIFY_TOKEN",
            "locations": {"MAD": self.location},
        }

    def add(self, sku: str) -> None:
        self.shop.add_product([sku], stock={self.location: 0})

    def recreate(self, sku: str) -> None:
        variant = self.shop.variant(sku)
        del self.shop.variants[variant.id]
        del self.shop.products[variant.product_id]
        self.add(sku)

    def lookups(self, sku: str) -> int:
        return self.shop.searched[sku]

    def on_hand(self, sku: str) -> int:
        return self.shop.on_hand(sku, self.location)


class PrestaShop(Shop):
    env = {"PRESTASHOP_KEY": PrestaShopSim.key}

    def __init__(self) -> None:
        self.sim = self.shop = PrestaShopSim()

    def table(self) -> dict[str, Any]:
        return {
            "type": "prestashop",
            "url": self.shop.url,
            "api_key_env": "PRESTASHOP_KEY",
            "warehouse": "MAD",
            "requests_per_second": 200.0,
        }

    def product(self, sku: str) -> int:
        return next(
            number for number, row in self.shop.rows["products"].items() if row["reference"] == sku
        )

    def add(self, sku: str) -> None:
        self.shop.add_product(sku, "1.00")

    def recreate(self, sku: str) -> None:
        old = self.product(sku)
        self.shop.add_product(sku, "1.00")  # while the old row stands: a new, higher id
        del self.shop.rows["products"][old]
        stock_rows = self.shop.rows["stock_availables"]
        for number in [n for n, row in stock_rows.items() if row["id_product"] == str(old)]:
            del stock_rows[number]

    def lookups(self, sku: str) -> int:
        return sum(
            f"filter[reference]=[{sku}]" in unquote(request) for request in self.shop.requests
        )

    def on_hand(self, sku: str) -> int:
        return self.shop.stock(self.product(sku))


class WooCommerce(Shop):
    env = {"WOO_KEY": "ck_sim", "WOO_SECRET": "cs_sim"}

    def __init__(self) -> None:
        self.sim = self.shop = WooCommerceSim()

    def table(self) -> dict[str, Any]:
        return {
            "type": "woocommerce",
            "url": self.shop.url,
            "warehouse": "MAD",
            "consumer_key_env": "WOO_KEY",
            "consumer_secret_env": "WOO_SECRET",
            "requests_per_second": 100.0,
        }

    def add(self, sku: str) -> None:
        self.shop.add(sku, stock=0)

    def recreate(self, sku: str) -> None:
        self.shop.remove(sku)
        self.add(sku)

    def lookups(self, sku: str) -> int:
        return sum(
            sku in hit.query.get("sku", "").split(",")
            for hit in self.shop.requests("GET", "/products")
        )

    def on_hand(self, sku: str) -> int | None:
        return self.shop.stock(sku)


class Magento(Shop):
    env = {"MAGENTO_TOKEN": magento_sim.TOKEN}

    def __init__(self) -> None:
        self.sim = self.shop = MagentoSim()

    def table(self) -> dict[str, Any]:
        return {
            "type": "magento",
            "url": self.shop.url,
            "token_env": "MAGENTO_TOKEN",
            "sources": {"MAD": "default"},
        }

    def add(self, sku: str) -> None:
        self.shop.add_product(sku)

    def lookups(self, sku: str) -> int:
        return self.shop.sent[sku]

    def on_hand(self, sku: str) -> float:
        return self.shop.quantity(sku, "default")


WITH_IDS = [Shopify, PrestaShop, WooCommerce]
ALL = [*WITH_IDS, Magento]


@pytest.fixture
async def shop(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Shop]:
    made: Shop = request.param()
    for name, value in made.env.items():
        monkeypatch.setenv(name, value)
    async with made.sim:
        yield made


def config(shop: Shop) -> ConsumerConfig:
    return ConsumerConfig.model_validate(
        {
            "consumer": {"name": "lookups"},
            "relay": {"url": "mqtt://127.0.0.1:1883"},
            "sinks": [
                {"name": "shop", "backoff": "10ms", "unknown_sku_ttl": f"{TTL:g}s", **shop.table()}
            ],
        }
    )


def misses(sink: Sink) -> Misses:
    ids = getattr(sink, "ids", None)
    found = ids.misses if ids is not None else getattr(sink, "misses", None)
    assert isinstance(found, Misses), "every shop sink remembers misses"
    return found


@contextlib.asynccontextmanager
async def consumer(shop: Shop, url: str, clock: Clock | None = None) -> AsyncIterator[Sink]:
    """The shop's sink as a consumer starts it on the store at ``url``; stopped after."""
    async with await VersionStore.open(url) as store:
        [sink] = build_sinks(config(shop), store)
        if clock is not None:
            misses(sink).clock = clock
        try:
            yield sink
        finally:
            await sink.close()


# --- the promises ---------------------------------------------------------------------


@pytest.mark.parametrize("shop", ALL, indirect=True, ids=lambda kind: kind.__name__)
async def test_an_unknown_sku_costs_one_lookup_per_ttl(shop: Shop, tmp_path: Path) -> None:
    shop.add("MUG")
    clock = Clock()
    async with consumer(shop, f"sqlite:///{tmp_path / 'relay.db'}", clock) as sink:
        first = await sink.apply([stock("GHOST", 1), stock("MUG", 1)])
        assert statuses(first) == [DEAD, APPLIED]
        looked_up = shop.lookups("GHOST")
        assert looked_up > 0
        for on_hand in range(2, 6):
            clock.now += TTL / 5
            again = await sink.apply([stock("GHOST", on_hand), stock("MUG", on_hand)])
            assert statuses(again) == [DEAD, APPLIED]
            assert again[0].reason == first[0].reason  # the shop's reason, remembered
        assert shop.lookups("GHOST") == looked_up, "one lookup within the TTL"
        assert shop.on_hand("MUG") == 5

        shop.add("GHOST")  # the merchant creates it
        clock.now += TTL / 5  # the miss is now TTL old
        late = await sink.apply([stock("GHOST", 7)])
        assert statuses(late) == [APPLIED]
        assert shop.lookups("GHOST") > looked_up
        assert shop.on_hand("GHOST") == 7


async def lookups_to_write(shop: Shop, url: str, on_hand: int) -> int:
    """Start a consumer on ``url``, write MUG's ``on_hand``, stop: the lookups it cost."""
    before = shop.lookups("MUG")
    async with consumer(shop, url) as sink:
        results = await sink.apply([stock("MUG", on_hand)])
    assert statuses(results) == [APPLIED], results
    assert shop.on_hand("MUG") == on_hand
    return shop.lookups("MUG") - before


@pytest.mark.parametrize("shop", WITH_IDS, indirect=True, ids=lambda kind: kind.__name__)
async def test_a_restarted_consumer_writes_a_known_sku_with_no_lookup(
    shop: Shop, store_url: str
) -> None:
    shop.add("MUG")
    assert await lookups_to_write(shop, store_url, 3) > 0
    assert await lookups_to_write(shop, store_url, 4) == 0


@pytest.mark.parametrize("shop", WITH_IDS, indirect=True, ids=lambda kind: kind.__name__)
async def test_a_stale_persisted_id_is_forgotten_and_looked_up_again(
    shop: Shop, store_url: str
) -> None:
    shop.add("MUG")
    assert await lookups_to_write(shop, store_url, 3) > 0
    shop.recreate("MUG")
    assert await lookups_to_write(shop, store_url, 5) > 0
    assert await lookups_to_write(shop, store_url, 6) == 0  # the store now holds the new id


@pytest.mark.parametrize("shop", WITH_IDS, indirect=True, ids=lambda kind: kind.__name__)
async def test_an_id_gone_meanwhile_is_looked_up_again_in_the_batch(
    shop: Shop, tmp_path: Path
) -> None:
    shop.add("MUG")
    async with consumer(shop, f"sqlite:///{tmp_path / 'relay.db'}") as sink:
        assert statuses(await sink.apply([stock("MUG", 3)])) == [APPLIED]
        shop.recreate("MUG")
        landed = await sink.apply([stock("MUG", 5)])
        assert statuses(landed) == [APPLIED], landed
    assert shop.on_hand("MUG") == 5


# --- the store's part -----------------------------------------------------------------


async def test_known_ids_per_sink_and_a_conditional_forget(store_url: str) -> None:
    async with await VersionStore.open(store_url) as store:
        await store.keep_sku_ids("woo", {"MUG": '{"id":1}', "CAP": '{"id":2}'})
        await store.keep_sku_ids("shopify", {"MUG": '{"id":"gid"}'})
        await store.keep_sku_ids("woo", {"MUG": '{"id":3}'})  # replaced
        assert await store.sku_ids("woo", ["MUG", "CAP", "TEE"]) == {
            "MUG": '{"id":3}',
            "CAP": '{"id":2}',
        }
        await store.drop_sku_ids("woo", {"MUG": '{"id":1}', "CAP": '{"id":2}'})
        # MUG's row holds newer ids than those found stale: it stays.
        assert await store.sku_ids("woo", ["MUG", "CAP"]) == {"MUG": '{"id":3}'}
        assert await store.sku_ids("shopify", ["MUG"]) == {"MUG": '{"id":"gid"}'}


async def test_a_schema_1_store_gains_the_table(store_url: str) -> None:
    async with await VersionStore.open(store_url) as store, store.engine.begin() as conn:
        await conn.execute(text("DROP TABLE relay_sku_ids"))
        await conn.execute(text("UPDATE relay_meta SET value = '1' WHERE name = 'schema_version'"))
    async with await VersionStore.open(store_url) as store:
        await store.keep_sku_ids("woo", {"MUG": '{"id":1}'})
        assert await store.sku_ids("woo", ["MUG"]) == {"MUG": '{"id":1}'}
        async with store.engine.begin() as conn:
            version = await conn.scalar(
                text("SELECT value FROM relay_meta WHERE name = 'schema_version'")
            )
    assert version == str(SCHEMA_VERSION) == "2"
