"""``distillsync demo``: everything on this machine, nothing to configure.

A Dolibarr-shaped demo ERP in SQLite (a few hundred products, three warehouses, prices),
a simulator that changes stock and prices and now and then writes a bad row, a private
Mosquitto on a free loopback port, the agent itself, and a relay-side subscriber that
keeps the demo shop's stock and prints what it applies. Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import parse_config
from agent.errors import DistillSyncError
from agent.localbroker import LocalBroker
from agent.service import Agent
from relay.subscriber import ReceivedEvent, VersionGate, subscribe

WAREHOUSES = ("MAD", "BCN", "VLC")
KINDS = ("Olive Oil", "Red Wine", "White Wine", "Cava", "Manchego", "Chorizo", "Jamon",
         "Saffron", "Paprika", "Honey", "Almonds", "Turron", "Anchovies", "Tuna", "Rice")
QUALITIES = ("Organic", "Reserva", "Artisan", "Classic", "Gran Seleccion", "Estate",
             "Family", "Premium", "Gourmet", "Traditional")
SIZES = ("250g", "500g", "1kg", "75cl", "1L", "3L", "pack of 6")

SCHEMA = """
CREATE TABLE llx_product (rowid INTEGER PRIMARY KEY, ref TEXT NOT NULL, label TEXT,
                          price NUMERIC, tms TEXT NOT NULL DEFAULT (datetime('now')));
CREATE TABLE llx_entrepot (rowid INTEGER PRIMARY KEY, ref TEXT NOT NULL);
CREATE TABLE llx_product_stock (rowid INTEGER PRIMARY KEY, fk_product INTEGER,
                                fk_entrepot INTEGER, reel REAL,
                                tms TEXT NOT NULL DEFAULT (datetime('now')));
"""

STOCK_QUERY = ("SELECT p.ref AS sku, e.ref AS warehouse, s.reel AS on_hand, s.tms "
               "FROM llx_product_stock s JOIN llx_product p ON p.rowid = s.fk_product "
               "JOIN llx_entrepot e ON e.rowid = s.fk_entrepot")


def make_demo_erp(path: Path, products: int, rng: random.Random) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executescript(SCHEMA)
        db.executemany("INSERT INTO llx_entrepot VALUES (?, ?)",
                       list(enumerate(WAREHOUSES, start=1)))
        for n in range(1, products + 1):
            label = f"{rng.choice(QUALITIES)} {rng.choice(KINDS)} {rng.choice(SIZES)}"
            price = f"{rng.randint(199, 9999) / 100:.2f}"
            db.execute("INSERT INTO llx_product (rowid, ref, label, price) VALUES (?, ?, ?, ?)",
                       (n, f"DS-{1000 + n}", label, price))
            db.executemany(
                "INSERT INTO llx_product_stock (fk_product, fk_entrepot, reel) VALUES (?, ?, ?)",
                [(n, w, rng.randint(0, 120)) for w in range(1, len(WAREHOUSES) + 1)])


def demo_config(workdir: Path, broker_url: str) -> dict[str, object]:
    erp = f"sqlite+aiosqlite:///{workdir / 'erp.db'}"
    return {
        "agent": {"id": "demo-erp", "tenant": "demo", "state_dir": str(workdir / "state"),
                  "log_level": "warning", "shutdown_timeout": "3s"},
        "relay": {"url": broker_url},
        "api": {"socket": str(workdir / "agent.sock")},
        "sources": [{
            "name": "dolibarr", "url": erp, "poll_interval": "500ms",
            "entities": [
                {"entity": "stock", "query": STOCK_QUERY, "key": ["sku", "warehouse"],
                 "cursor": "tms", "lookback": "5s"},
                {"entity": "price", "query": "SELECT ref AS sku, price, tms FROM llx_product",
                 "key": ["sku"], "cursor": "tms"},
                {"entity": "product", "query": "SELECT ref AS sku, label AS name "
                 "FROM llx_product", "key": ["sku"], "mode": "snapshot"},
            ],
        }],
    }


class Simulator:
    """The ERP's users: stock moves, price changes, and the odd bad row."""

    def __init__(self, path: Path, products: int, rng: random.Random) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.products = products
        self.rng = rng
        self.bad_rows = 0

    def step(self) -> None:
        for _ in range(self.rng.randint(1, 6)):
            self.db.execute(
                "UPDATE llx_product_stock SET reel = max(0, reel + ?), tms = datetime('now') "
                "WHERE fk_product = ? AND fk_entrepot = ?",
                (self.rng.randint(-5, 8), self.rng.randint(1, self.products),
                 self.rng.randint(1, len(WAREHOUSES))))
        if self.rng.random() < 0.2:
            self.db.execute("UPDATE llx_product SET price = ?, tms = datetime('now') "
                            "WHERE rowid = ?", (f"{self.rng.randint(199, 9999) / 100:.2f}",
                                                self.rng.randint(1, self.products)))
        if self.rng.random() < 0.03:  # a clerk types text into a quantity
            self.bad_rows += 1
            self.db.execute("UPDATE llx_product_stock SET reel = 'n/a', tms = datetime('now') "
                            "WHERE fk_product = ? AND fk_entrepot = 1",
                            (self.rng.randint(1, self.products),))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    def close(self) -> None:
        self.db.close()


@dataclass
class DemoShop:
    """The relay side: keeps the shop's stock and prices from the events it admits."""

    gate: VersionGate = field(default_factory=VersionGate)
    stock: dict[str, float] = field(default_factory=dict)
    prices: dict[str, str] = field(default_factory=dict)
    received: int = 0
    quiet_until: float = 0.0

    def apply(self, received: ReceivedEvent) -> str | None:
        self.received += 1
        if not self.gate.admit(received):
            return None
        data, subject = received.event["data"], received.event["subject"]
        if received.entity == "stock":
            self.stock[subject] = data["on_hand"]
            return f"stock  {subject:<12} on_hand = {data['on_hand']:g}"
        if received.entity == "price":
            self.prices[subject] = data["price"]
            return f"price  {subject:<12} price   = {data['price']}"
        return f"{received.entity} {received.op} {subject}"


async def _shop(url: str, topic: str, shop: DemoShop) -> None:
    async for received in subscribe(url, topic, "distillsync-demo-shop"):
        line = shop.apply(received)
        if line and time.monotonic() > shop.quiet_until:
            seq = int(received.event["sequence"])
            print(f"{time.strftime('%H:%M:%S')}  #{seq:<6} {line}", flush=True)


async def _summaries(agent: Agent, shop: DemoShop, sim: Simulator, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5)
        if stop.is_set():
            return
        stats = await agent.outbox.stats()
        print(f"-- shop {len(shop.stock)} stock, {len(shop.prices)} prices, "
              f"{shop.received} events | relay {agent.delivery.stats.state}, "
              f"{stats.pending} pending, {stats.dead_letters}/{sim.bad_rows} bad rows dead",
              flush=True)


async def run_demo(seconds: float = 0, products: int = 300) -> int:
    with tempfile.TemporaryDirectory(prefix="distillsync-demo-") as tmp:
        workdir = Path(tmp)
        rng = random.Random(7)
        make_demo_erp(workdir / "erp.db", products, rng)
        broker = LocalBroker(workdir / "broker")
        try:
            broker.start()
        except DistillSyncError as error:
            print(f"demo: {error}")
            return 1
        try:
            return await _run(workdir, broker, products, rng, seconds)
        finally:
            broker.stop()


async def _run(workdir: Path, broker: LocalBroker, products: int, rng: random.Random,
               seconds: float) -> int:
    agent = Agent(parse_config(demo_config(workdir, broker.url)))
    shop, sim, stop = DemoShop(), Simulator(workdir / "erp.db", products, rng), asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"demo ERP {workdir / 'erp.db'}: {products} products in {len(WAREHOUSES)} "
          f"warehouses; broker {broker.url}; Ctrl-C to stop", flush=True)
    shop.quiet_until = time.monotonic() + 3  # the initial load is summarised, not listed
    shop_task = asyncio.create_task(_shop(broker.url, "distillsync/demo/+/out/#", shop),
                                    name="shop")
    agent_task = asyncio.create_task(agent.run(), name="agent")
    helpers = [asyncio.create_task(sim.run(stop), name="simulator"),
               asyncio.create_task(_summaries(agent, shop, sim, stop), name="summaries")]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds or None)
    finally:
        stop.set()
        agent.request_stop()
        await agent_task
        shop_task.cancel()
        await asyncio.gather(shop_task, *helpers, return_exceptions=True)
        sim.close()
    print(f"demo stopped: the shop holds {len(shop.stock)} stock levels and "
          f"{len(shop.prices)} prices", flush=True)
    return 0
