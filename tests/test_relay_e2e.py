"""End to end: ERP tables -> the agent (a real process) -> Mosquitto -> the consumer ->
a shop simulator. After random changes the shop holds exactly what the ERP holds."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.relay_support import (
    consumer_running,
    consumer_toml,
    eventually,
    subscribed,
    woocommerce_sink,
)
from tests.sims.magento import MagentoSim
from tests.sims.prestashop import PrestaShopSim
from tests.sims.shopify import ShopifySim
from tests.sims.woocommerce import WooCommerceSim
from tests.support import (
    PRICES_ENTITY,
    AgentProcess,
    Mosquitto,
    agent_toml,
    stock_levels_source,
    write_secret,
)

SKUS = [f"SKU-{n}" for n in range(20)]
WAREHOUSES = ("MAD", "BCN")


class Erp:
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute(
            "CREATE TABLE stock_levels (sku TEXT, warehouse TEXT, on_hand REAL, "
            "tms TEXT, PRIMARY KEY (sku, warehouse))"
        )
        self.db.execute("CREATE TABLE prices (sku TEXT PRIMARY KEY, price TEXT, tms TEXT)")
        for sku in SKUS:
            self.db.execute("INSERT INTO prices VALUES (?, '10.00', datetime('now'))", (sku,))
            for warehouse in WAREHOUSES:
                self.db.execute(
                    "INSERT INTO stock_levels VALUES (?, ?, 5, datetime('now'))", (sku, warehouse)
                )

    def churn(self, rng: random.Random, rounds: int) -> None:
        for _ in range(rounds):
            self.db.execute(
                "UPDATE stock_levels SET on_hand = ?, tms = datetime('now') "
                "WHERE sku = ? AND warehouse = ?",
                (rng.randint(0, 50), rng.choice(SKUS), rng.choice(WAREHOUSES)),
            )
            if rng.random() < 0.3:
                self.db.execute(
                    "UPDATE prices SET price = ?, tms = datetime('now') WHERE sku = ?",
                    (f"{rng.randint(100, 9999) / 100:.2f}", rng.choice(SKUS)),
                )

    def stock(self, warehouse: str) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT sku, on_hand FROM stock_levels WHERE warehouse = ?", (warehouse,)
        )
        return {sku: int(on_hand) for sku, on_hand in rows}

    def prices(self) -> dict[str, Decimal]:
        return {
            sku: Decimal(price) for sku, price in self.db.execute("SELECT sku, price FROM prices")
        }


@dataclass
class Shop:
    """One simulator behind the same questions: what stock and price does it show?"""

    sink_toml: str
    stock: Callable[[str], Any]
    """What the shop shows for the ERP's MAD warehouse."""
    price: Callable[[str], Any]
    other_stock: Callable[[str], Any] | None = None
    """A multi-location shop's BCN figure."""


@contextlib.asynccontextmanager
async def woocommerce(tmp_path: Path) -> AsyncIterator[Shop]:
    async with WooCommerceSim() as sim:
        for sku in SKUS:  # out of date: only the events can bring it in line
            sim.add(sku, price="1.00", stock=0)
        yield Shop(
            woocommerce_sink(sim, tmp_path, "requests_per_second = 50\n"),
            sim.stock,
            lambda sku: Decimal(sim.price(sku)),
        )


@contextlib.asynccontextmanager
async def shopify(tmp_path: Path) -> AsyncIterator[Shop]:
    sim = ShopifySim()
    url = await sim.start()
    try:
        madrid, barcelona = sim.add_location(), sim.add_location()
        for sku in SKUS:
            sim.add_product([sku], price="1.00", stock={madrid: 0, barcelona: 0})
        write_secret(tmp_path / "token", sim.token)
        yield Shop(
            f'[[sinks]]\ntype = "shopify"\nname = "shopify"\nshop_url = "{url}"\n'
            f'access_token_file = "{tmp_path / "token"}"\n'
            f'locations = {{ MAD = "{madrid}", BCN = "{barcelona}" }}\n',
            lambda sku: sim.on_hand(sku, madrid),
            lambda sku: Decimal(sim.price(sku)),
            lambda sku: sim.on_hand(sku, barcelona),
        )
    finally:
        await sim.close()


@contextlib.asynccontextmanager
async def magento(tmp_path: Path) -> AsyncIterator[Shop]:
    sim = MagentoSim()
    url = await sim.start()
    try:
        sim.add_source("MAD")
        for sku in SKUS:
            sim.add_product(sku, price="1.00")
        write_secret(tmp_path / "token", sim.token)
        yield Shop(
            f'[[sinks]]\ntype = "magento"\nname = "magento"\nurl = "{url}"\n'
            f'token_file = "{tmp_path / "token"}"\nsources = {{ MAD = "MAD" }}\n'
            f"requests_per_second = 50\n",
            # No source item until the first stock update for it: not in sync yet.
            lambda sku: int(sim.quantity(sku, "MAD")) if (sku, "MAD") in sim.source_items else None,
            lambda sku: sim.prices[sku],
        )
    finally:
        await sim.close()


@contextlib.asynccontextmanager
async def prestashop(tmp_path: Path) -> AsyncIterator[Shop]:
    async with PrestaShopSim() as sim:
        ids = {sku: sim.add_product(sku, "1.00", quantity=0) for sku in SKUS}
        write_secret(tmp_path / "key", sim.key)
        yield Shop(
            f'[[sinks]]\ntype = "prestashop"\nname = "presta"\nurl = "{sim.url}"\n'
            f'api_key_file = "{tmp_path / "key"}"\nwarehouse = "MAD"\n'
            f"requests_per_second = 100\n",
            lambda sku: sim.stock(ids[sku]),
            lambda sku: sim.price(ids[sku]),
        )


SHOPS = {
    "woocommerce": woocommerce,
    "shopify": shopify,
    "magento": magento,
    "prestashop": prestashop,
}


@pytest.mark.parametrize("shop_name", sorted(SHOPS))
async def test_the_shop_ends_up_as_the_erp(
    shop_name: str, broker: Mosquitto, tmp_path: Path
) -> None:
    erp = Erp(tmp_path / "erp.db")
    agent_config = tmp_path / "agent.toml"
    agent_config.write_text(
        agent_toml(
            tmp_path / "state",
            broker.url,
            stock_levels_source(tmp_path / "erp.db") + PRICES_ENTITY,
            agent_id="e2e",
        )
    )
    async with SHOPS[shop_name](tmp_path) as shop:
        config = tmp_path / "relay.toml"
        config.write_text(consumer_toml(tmp_path, broker.url, shop.sink_toml))

        def in_sync() -> bool:
            other = shop.other_stock
            return (
                {sku: shop.stock(sku) for sku in SKUS} == erp.stock("MAD")
                and {sku: shop.price(sku) for sku in SKUS} == erp.prices()
                and (other is None or {sku: other(sku) for sku in SKUS} == erp.stock("BCN"))
            )

        async with consumer_running(config):
            await subscribed(tmp_path / "shops-1.sock")  # before the agent's first events
            with AgentProcess(agent_config, tmp_path / "agent.log") as agent:
                rng = random.Random(4)
                for _ in range(10):
                    erp.churn(rng, rounds=15)
                    await asyncio.sleep(0.2)
                await eventually(in_sync, 60, f"{shop_name} to match the ERP")
                assert agent.terminate() == 0
