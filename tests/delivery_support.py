"""Helpers shared by the delivery guarantee tests (publisher, crash, outage).

Still real parts only: a subscriber with a persistent MQTT session (so a broker restart
loses nothing it should keep), a look at the retained status, and a read-only look at
the agent's own ``outbox.db`` after (or while) it runs.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.erp import ErpDb
from tests.support import wait_until

STATUS_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Seen:
    """One event as the relay side saw it; ``payload`` is kept whole to compare re-sends."""

    topic: str
    event_id: str
    subject: str
    sequence: int
    on_hand: float | None
    payload: bytes
    user_id: str | None


@dataclass
class Subscriber:
    """A QoS 1 subscriber on its own thread that keeps only what the checks need.

    With ``session=True`` it uses a fixed client id, ``clean_start`` only on the first
    connect and a Session Expiry Interval, so a broker with persistence keeps its
    subscription and queues events while it is away (e.g. across a broker restart).
    """

    port: int
    topic: str
    session: bool = False
    keep_payloads: bool = True
    events: list[Seen] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, client_id=f"subscriber-{id(self)}"
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(self.topic, qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic.endswith("/status"):
            with self.lock:
                self.statuses.append(orjson.loads(msg.payload))
            return
        if "/out/" not in msg.topic:
            return  # the agent's retained sequence watermark (and its probe): not an event
        event = orjson.loads(msg.payload)
        user = dict(getattr(msg.properties, "UserProperty", []) or [])
        seen = Seen(
            msg.topic,
            event["id"],
            event["subject"],
            int(event["sequence"]),
            event["data"].get("on_hand"),
            bytes(msg.payload) if self.keep_payloads else b"",
            user.get("id"),
        )
        with self.lock:
            self.events.append(seen)

    def __enter__(self) -> Subscriber:
        props, clean_start = None, paho.MQTT_CLEAN_START_FIRST_ONLY
        if self.session:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            clean_start = False
        self.client.connect("127.0.0.1", self.port, clean_start=clean_start, properties=props)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("subscriber could not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        # paho drops what it has not read yet when it disconnects: wait for what the
        # subscriber should see inside the ``with``, never after it.
        self.client.disconnect()
        self.client.loop_stop()

    def seen(self) -> list[Seen]:
        with self.lock:
            return list(self.events)

    def status_count(self) -> int:
        with self.lock:
            return len(self.statuses)

    def status_since(self, index: int) -> list[dict[str, Any]]:
        with self.lock:
            return self.statuses[index:]

    def latest(self) -> dict[str, Seen]:
        """What a sequence-gated subscriber holds: the newest event per subject."""
        latest: dict[str, Seen] = {}
        for seen in self.seen():
            old = latest.get(seen.subject)
            if old is None or seen.sequence > old.sequence:
                latest[seen.subject] = seen
        return latest

    def sequences(self) -> set[int]:
        return {s.sequence for s in self.seen()}


def retained(port: int, topic: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """The retained message on ``topic``, as a client connecting now would get it."""
    got: list[bytes] = []
    ready = threading.Event()
    client = paho.Client(
        CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, client_id=f"retained-{id(got)}"
    )

    def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        if msg.retain:
            got.append(bytes(msg.payload))
        ready.set()

    probe = f"probe/{id(got)}"

    def on_subscribe(*_: Any) -> None:
        client.publish(probe, b"", qos=1)

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_connect = lambda c, *a: c.subscribe([(topic, 1), (probe, 1)])
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        # A retained message is sent right after SUBACK, before our own probe comes back.
        ready.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return orjson.loads(got[0]) if got else None


def wait_for_retained(
    port: int,
    topic: str,
    state: str,
    what: str,
    check: Callable[[dict[str, Any]], bool] = lambda _: True,
) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def matches() -> bool:
        status = retained(port, topic)
        if status is not None and status.get("state") == state and check(status):
            found.append(status)
            return True
        return False

    wait_until(matches, STATUS_TIMEOUT, what, every=0.2)
    return found[0]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    sequence: int
    event_id: str
    subject: str
    state: int


def outbox_rows(path: Path) -> list[OutboxRow]:
    """Every event the agent enqueued (delivered rows are kept for the retention time)."""
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        return [
            OutboxRow(int(r[0]), r[1], r[2], int(r[3]))
            for r in db.execute("SELECT id, event_id, subject, state FROM events ORDER BY id")
        ]


def outbox_last_sequence(path: Path) -> int:
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        try:
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        except sqlite3.OperationalError:  # not migrated yet
            return 0
    return int(row[0]) if row else 0


def dead_letter_count(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        return int(db.execute("SELECT count(*) FROM dead_letters").fetchone()[0])


def erp_stock(erp: ErpDb) -> dict[str, float]:
    """The ERP's current stock per subject, as the agent would name it."""
    rows = erp.query(
        "SELECT p.ref, e.ref, s.reel FROM llx_product_stock s "
        "JOIN llx_product p ON p.rowid = s.fk_product "
        "JOIN llx_entrepot e ON e.rowid = s.fk_entrepot"
    )
    return {f"{sku}/{wh}": float(reel) for sku, wh, reel in rows}


def seed_stock(
    erp: ErpDb, products: int, warehouses: int, label: str = ""
) -> list[tuple[int, int]]:
    """``products`` x ``warehouses`` stock rows at 0, in a few transactions."""
    erp.add_warehouses(*[f"WH{w}" for w in range(1, warehouses + 1)])
    erp.executemany(
        "INSERT INTO llx_product (rowid, ref, label, price) VALUES (?, ?, ?, ?)",
        [(p, f"SKU-{p}", f"{label}{p}", "1.00") for p in range(1, products + 1)],
    )
    keys = [(p, w) for p in range(1, products + 1) for w in range(1, warehouses + 1)]
    erp.executemany(
        "INSERT INTO llx_product_stock (fk_product, fk_entrepot, reel) VALUES (?, ?, 0)", keys
    )
    return keys


def converged(sub: Subscriber, erp: ErpDb) -> bool:
    want = erp_stock(erp)
    latest = sub.latest()
    return all(s in latest and latest[s].on_hand == v for s, v in want.items())


def describe_divergence(sub: Subscriber, erp: ErpDb) -> str:
    want = erp_stock(erp)
    latest = sub.latest()
    wrong = {
        s: (v, latest[s].on_hand if s in latest else None)
        for s, v in want.items()
        if s not in latest or latest[s].on_hand != v
    }
    return f"{len(wrong)} keys differ (erp, subscriber): {dict(list(wrong.items())[:5])}"


def wait_converged(sub: Subscriber, erp: ErpDb, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not converged(sub, erp):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no convergence after {timeout}s: {describe_divergence(sub, erp)}"
            )
        time.sleep(0.2)
