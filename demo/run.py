"""``distillsync demo``: everything on this machine, nothing to configure.

A Dolibarr-shaped demo ERP in SQLite (a few hundred products, three warehouses, prices),
a simulator that changes stock and prices and now and then writes a bad row, a private
broker on a free loopback port (Mosquitto when its binary is found, else amqtt in this
process), the agent itself, a relay-side subscriber that keeps the demo shop's stock and
prices, and the TUI on the agent. Quitting the TUI stops everything; ``--headless`` runs
without it and prints a one-line summary every few seconds instead, until Ctrl-C.

The TUI is imported only when it runs, so ``distillsync run`` never loads Textual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.api import StatusBoard
from agent.apiclient import ApiClient
from agent.config import parse_config
from agent.errors import DistillSyncError
from agent.service import Agent
from demo.localbroker import EmbeddedBroker, embedded_broker
from relay.subscriber import ReceivedEvent, VersionGate, subscribe

if TYPE_CHECKING:
    from tui.app import AgentDashboard

SUMMARY_EVERY = 3.0
SETTLE_LIMIT = 10.0

WAREHOUSES = ("MAD", "BCN", "VLC")
KINDS = (
    "Olive Oil",
    "Red Wine",
    "White Wine",
    "Cava",
    "Manchego",
    "Chorizo",
    "Jamon",
    "Saffron",
    "Paprika",
    "Honey",
    "Almonds",
    "Turron",
    "Anchovies",
    "Tuna",
    "Rice",
)
QUALITIES = (
    "Organic",
    "Reserva",
    "Artisan",
    "Classic",
    "Gran Seleccion",
    "Estate",
    "Family",
    "Premium",
    "Gourmet",
    "Traditional",
)
SIZES = ("250g", "500g", "1kg", "75cl", "1L", "3L", "pack of 6")

SCHEMA = """
CREATE TABLE llx_product (rowid INTEGER PRIMARY KEY, ref TEXT NOT NULL, label TEXT,
                          price NUMERIC, tms TEXT NOT NULL DEFAULT (datetime('now')));
CREATE TABLE llx_entrepot (rowid INTEGER PRIMARY KEY, ref TEXT NOT NULL);
CREATE TABLE llx_product_stock (rowid INTEGER PRIMARY KEY, fk_product INTEGER,
                                fk_entrepot INTEGER, reel REAL,
                                tms TEXT NOT NULL DEFAULT (datetime('now')));
"""

STOCK_QUERY = (
    "SELECT p.ref AS sku, e.ref AS warehouse, s.reel AS on_hand, s.tms "
    "FROM llx_product_stock s JOIN llx_product p ON p.rowid = s.fk_product "
    "JOIN llx_entrepot e ON e.rowid = s.fk_entrepot"
)


def make_demo_erp(path: Path, products: int, rng: random.Random) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executescript(SCHEMA)
        db.executemany(
            "INSERT INTO llx_entrepot VALUES (?, ?)", list(enumerate(WAREHOUSES, start=1))
        )
        for n in range(1, products + 1):
            label = f"{rng.choice(QUALITIES)} {rng.choice(KINDS)} {rng.choice(SIZES)}"
            price = f"{rng.randint(199, 9999) / 100:.2f}"
            db.execute(
                "INSERT INTO llx_product (rowid, ref, label, price) VALUES (?, ?, ?, ?)",
                (n, f"DS-{1000 + n}", label, price),
            )
            db.executemany(
                "INSERT INTO llx_product_stock (fk_product, fk_entrepot, reel) VALUES (?, ?, ?)",
                [(n, w, rng.randint(0, 120)) for w in range(1, len(WAREHOUSES) + 1)],
            )


def demo_config(workdir: Path, broker_url: str, protocol: str = "5") -> dict[str, object]:
    erp = f"sqlite+aiosqlite:///{workdir / 'erp.db'}"
    return {
        "agent": {
            "id": "demo-erp",
            "tenant": "demo",
            "state_dir": str(workdir / "state"),
            "log_level": "warning",
            "shutdown_timeout": "3s",
        },
        "relay": {"url": broker_url, "protocol": protocol},
        "api": {"socket": str(workdir / "agent.sock")},
        "sources": [
            {
                "name": "dolibarr",
                "url": erp,
                "poll_interval": "500ms",
                "entities": [
                    {
                        "entity": "stock",
                        "query": STOCK_QUERY,
                        "key": ["sku", "warehouse"],
                        "cursor": "tms",
                        "lookback": "5s",
                    },
                    {
                        "entity": "price",
                        "query": "SELECT ref AS sku, price, tms FROM llx_product",
                        "key": ["sku"],
                        "cursor": "tms",
                    },
                    {
                        "entity": "product",
                        "query": "SELECT ref AS sku, label AS name FROM llx_product",
                        "key": ["sku"],
                        "mode": "snapshot",
                    },
                ],
            }
        ],
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
                (
                    self.rng.randint(-5, 8),
                    self.rng.randint(1, self.products),
                    self.rng.randint(1, len(WAREHOUSES)),
                ),
            )
        if self.rng.random() < 0.2:
            self.db.execute(
                "UPDATE llx_product SET price = ?, tms = datetime('now') WHERE rowid = ?",
                (f"{self.rng.randint(199, 9999) / 100:.2f}", self.rng.randint(1, self.products)),
            )
        if self.rng.random() < 0.03:  # a clerk types text into a quantity
            self.bad_rows += 1
            self.db.execute(
                "UPDATE llx_product_stock SET reel = 'n/a', tms = datetime('now') "
                "WHERE fk_product = ? AND fk_entrepot = 1",
                (self.rng.randint(1, self.products),),
            )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    def close(self) -> None:
        self.db.close()

    def stock_levels(self) -> dict[str, float]:
        """What the ERP holds now, keyed like the shop (``SKU/WAREHOUSE``); bad rows left out."""
        rows = self.db.execute(
            "SELECT p.ref, e.ref, s.reel FROM llx_product_stock s "
            "JOIN llx_product p ON p.rowid = s.fk_product "
            "JOIN llx_entrepot e ON e.rowid = s.fk_entrepot"
        )
        return {
            f"{sku}/{wh}": float(on_hand)
            for sku, wh, on_hand in rows
            if isinstance(on_hand, int | float)
        }


@dataclass
class DemoShop:
    """The relay side: keeps the shop's stock and prices from the events it admits."""

    gate: VersionGate = field(default_factory=VersionGate)
    stock: dict[str, float] = field(default_factory=dict)
    prices: dict[str, str] = field(default_factory=dict)
    received: int = 0

    def apply(self, received: ReceivedEvent) -> None:
        self.received += 1
        if not self.gate.admit(received):
            return
        data, subject = received.event["data"], received.event["subject"]
        if received.entity == "stock" and received.op == "upsert":
            self.stock[subject] = data["on_hand"]
        elif received.entity == "price" and received.op == "upsert":
            self.prices[subject] = data["price"]

    def in_sync(self, erp_stock: dict[str, float]) -> int:
        return sum(1 for key, on_hand in erp_stock.items() if self.stock.get(key) == on_hand)


async def _shop(broker: EmbeddedBroker, shop: DemoShop) -> None:
    async for received in subscribe(
        broker.url, "distillsync/demo/+/out/#", "distillsync-demo-shop", broker.protocol
    ):
        shop.apply(received)


async def summary_line(
    board: StatusBoard, shop: DemoShop, sim: Simulator, fresh: bool = False
) -> str:
    """One line that fits 80 columns: the agent's side (its ``/v1/status``), then the
    shop's."""
    status, erp_stock = await board.status(fresh=fresh), sim.stock_levels()
    relay, outbox = status.relay, status.outbox
    trouble = "" if relay.state == "connected" else f" | relay {relay.state}"
    return (
        f"{time.strftime('%H:%M:%S')} {relay.published} sent, {outbox.pending} pending, "
        f"{outbox.dead_letters} dead | shop: {shop.in_sync(erp_stock)}/{len(erp_stock)} "
        f"stock = ERP, {len(shop.prices)} prices{trouble}"
    )


async def _summaries(
    board: StatusBoard, shop: DemoShop, sim: Simulator, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SUMMARY_EVERY)
        if not stop.is_set():
            print(await summary_line(board, shop, sim), flush=True)


async def run_demo(
    seconds: float = 0, products: int = 300, headless: bool = False, broker_kind: str = "auto"
) -> int:
    with tempfile.TemporaryDirectory(prefix="distillsync-demo-") as tmp:
        workdir = Path(tmp)
        rng = random.Random(7)
        make_demo_erp(workdir / "erp.db", products, rng)
        try:
            async with embedded_broker(workdir / "broker", broker_kind) as broker:
                return await Demo(workdir, broker, products, rng).run(seconds, headless)
        except DistillSyncError as error:
            print(f"demo: {error}")
            return 1


class Demo:
    def __init__(
        self, workdir: Path, broker: EmbeddedBroker, products: int, rng: random.Random
    ) -> None:
        self.workdir, self.broker, self.products = workdir, broker, products
        self.agent = Agent(parse_config(demo_config(workdir, broker.url, broker.protocol)))
        self.board = StatusBoard(self.agent)
        self.shop, self.stop = DemoShop(), asyncio.Event()
        self.sim = Simulator(workdir / "erp.db", products, rng)

    async def run(self, seconds: float, headless: bool) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop.set)
        kind = "Mosquitto" if self.broker.protocol == "5" else "amqtt (MQTT 3.1.1)"
        print(
            f"demo: {self.products} products in {len(WAREHOUSES)} warehouses, "
            f"{kind} on 127.0.0.1:{self.broker.port}",
            flush=True,
        )
        tasks = [
            asyncio.create_task(self.agent.run(), name="agent"),
            asyncio.create_task(_shop(self.broker, self.shop), name="shop"),
            asyncio.create_task(self.sim.run(self.stop), name="simulator"),
        ]
        if headless:
            print("headless: a summary every few seconds; Ctrl-C to stop", flush=True)
            tasks.append(
                asyncio.create_task(
                    _summaries(self.board, self.shop, self.sim, self.stop), name="summaries"
                )
            )
        try:
            await self._until_done(seconds, headless)
        finally:
            await self._shut_down(tasks)
        print(
            f"demo stopped: the shop holds {len(self.shop.stock)} stock levels and "
            f"{len(self.shop.prices)} prices",
            flush=True,
        )
        return 0

    async def _until_done(self, seconds: float, headless: bool) -> None:
        stopped = asyncio.ensure_future(self.stop.wait())
        if headless:
            await asyncio.wait([stopped], timeout=seconds or None)
        else:
            with _logging_to(self.workdir / "demo.log"):
                app = self._dashboard()
                ui = asyncio.ensure_future(app.run_async())
                await asyncio.wait(
                    [stopped, ui], timeout=seconds or None, return_when=asyncio.FIRST_COMPLETED
                )
                app.exit()
                await ui
        stopped.cancel()

    def _dashboard(self) -> AgentDashboard:
        from tui.app import AgentDashboard
        from tui.sources import ApiSource

        return AgentDashboard(ApiSource(ApiClient(self.agent.config.api.socket)))

    async def _settle(self) -> None:
        """Give the last changes a moment to reach the shop, so the final line can show
        the shop agreeing with the ERP; never longer than ``SETTLE_LIMIT``."""
        deadline = time.monotonic() + SETTLE_LIMIT
        while time.monotonic() < deadline:
            erp_stock = self.sim.stock_levels()
            if self.shop.in_sync(erp_stock) == len(erp_stock):
                return
            await asyncio.sleep(0.2)

    async def _shut_down(self, tasks: list[asyncio.Task[None]]) -> None:
        self.stop.set()  # the simulator stops writing first
        if not tasks[0].done():  # the last word, while the agent's outbox is still open
            await self._settle()
            print(await summary_line(self.board, self.shop, self.sim, fresh=True), flush=True)
        self.agent.request_stop()
        await tasks[0]  # the agent: finishes its page and in-flight publishes
        for task in tasks[1:]:
            task.cancel()
        await asyncio.gather(*tasks[1:], return_exceptions=True)
        self.sim.close()
        logged = self.workdir / "demo.log"
        if logged.exists() and logged.stat().st_size:
            print("logged while the dashboard ran (last lines):")
            print("\n".join(logged.read_text(errors="replace").splitlines()[-10:]))


@contextlib.contextmanager
def _logging_to(path: Path) -> Iterator[None]:
    """While the dashboard owns the terminal, log lines go to a file instead of over it."""
    root = logging.getLogger()
    saved = root.handlers[:]
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = saved
        handler.close()
