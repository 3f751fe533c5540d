"""Every SQL backend end to end: ERP writes -> the real daemon -> real Mosquitto -> subscriber.

Each test runs against the Dolibarr-shaped ERP on SQLite (``tms`` as ISO TEXT), PostgreSQL
and MariaDB, with ``distillsync run`` as a child process and a QoS 1 subscriber checking
what a relay-side consumer relies on: topics, the CloudEvents envelope, MQTT 5 properties,
the canonical ``data``, no missed and no duplicated changes.

Nothing asserts on timing: tests wait (generously) for conditions, and "nothing more
arrives" is proven with a sentinel change committed afterwards, since a poll that
publishes the sentinel has re-read everything older inside the lookback.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import secrets
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.apiclient import ApiClient
from agent.envelope import CONTENT_TYPE, encode_part
from agent.sources.cursor import decode_cursor
from tests.erp import (
    ErpDb,
    price_entity,
    product_snapshot_entity,
    source_toml,
    stock_entity,
)
from tests.support import AgentProcess, Collector, Mosquitto, Received, agent_toml, wait_until

WAIT = 60.0  # generous: a condition, never a duration under test
POLL = "200ms"
ODD_REF = "BOX/12+1 #a"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
DECIMAL_TEXT = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


# --- helpers ------------------------------------------------------------------------------


def new_agent_id(kind: str, erp: ErpDb) -> str:
    """Unique per test: the broker lives for the session and keeps persistent sessions."""
    return f"{kind}-{erp.backend}-{secrets.token_hex(3)}"


def state_dir(tmp_path: Path, agent_id: str) -> Path:
    """The agent's state directory, named by the id's random part only: its API socket
    must fit in a unix socket path (108 bytes) however deep pytest's tmp_path is
    (pytest-xdist adds a level)."""
    return tmp_path / f"state-{agent_id.rsplit('-', 1)[-1]}"


def write_config(
    tmp_path: Path,
    broker: Mosquitto,
    erp: ErpDb,
    agent_id: str,
    entities: str,
    page_size: int = 1000,
) -> Path:
    config = tmp_path / f"{agent_id}.toml"
    config.write_text(
        agent_toml(
            state_dir(tmp_path, agent_id),
            broker.url,
            source_toml(erp, entities, POLL, page_size),
            agent_id=agent_id,
        )
    )
    return config


@contextlib.contextmanager
def agent_running(config: Path, tmp_path: Path) -> Iterator[AgentProcess]:
    """The real daemon; on the way out it must stop cleanly (exit 0) on SIGTERM."""
    with AgentProcess(config, tmp_path / f"{config.stem}.log") as agent:
        try:
            yield agent
        except BaseException:
            print(agent.output())
            raise
        code = agent.terminate()
        assert code == 0, agent.output()


def db_second(erp: ErpDb, back: int = 0) -> str:
    """The ERP's current time, ``back`` seconds ago, as 'YYYY-MM-DD HH:MM:SS' (the form
    Dolibarr writes on SQLite; PostgreSQL and MariaDB parse it into their TIMESTAMP)."""
    sql = {
        "sqlite": "SELECT datetime('now')",
        "postgres": "SELECT date_trunc('second', localtimestamp)::text",
        "mariadb": "SELECT CAST(CURRENT_TIMESTAMP AS CHAR)",
    }[erp.backend]
    now = dt.datetime.fromisoformat(str(erp.query(sql)[0][0]))
    return (now - dt.timedelta(seconds=back)).strftime("%Y-%m-%d %H:%M:%S")


def stamp_stock(erp: ErpDb, product: int, warehouse: int, quantity: float, tms: str) -> None:
    """An absolute stock write with an explicit one-second ``tms``, in its own commit."""
    erp.execute(
        "UPDATE llx_product_stock SET reel = ?, tms = ? WHERE fk_product = ? AND fk_entrepot = ?",
        (quantity, tms, product, warehouse),
    )


def touch_stock(erp: ErpDb, product: int, warehouse: int) -> None:
    """Dolibarr re-saving a row without changing it: only ``tms`` moves."""
    erp.execute(
        f"UPDATE llx_product_stock SET tms = {erp.now} WHERE fk_product = ? AND fk_entrepot = ?",
        (product, warehouse),
    )


def of_type(events: list[Received], kind: str) -> list[Received]:
    return [m for m in events if m.event.get("type") == kind]


def has(sub: Collector, kind: str, subject: str, **data: Any) -> bool:
    return any(
        m.event["subject"] == subject and all(m.event["data"].get(k) == v for k, v in data.items())
        for m in of_type(sub.events(), kind)
    )


def wait_for_event(sub: Collector, kind: str, subject: str, **data: Any) -> None:
    sub.wait_for(
        lambda _: has(sub, kind, subject, **data), WAIT, f"{kind} {subject} {data or ''}".strip()
    )


def check_envelope(m: Received, agent_id: str) -> None:
    """Everything the contract fixes about one delivered event."""
    e = m.event
    entity, op = e["type"].split(".")[1:]
    assert e["type"] == f"distillsync.{entity}.{op}" and e["type"].startswith("distillsync.")
    assert op in ("upsert", "delete")
    assert set(e) == {
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "sequence",
        "datacontenttype",
        "data",
    }
    assert e["specversion"] == "1.0"
    event_id = uuid.UUID(e["id"])
    assert event_id.version == 7 and event_id.variant == uuid.RFC_4122
    assert str(event_id) == e["id"]  # canonical lower-case form
    assert e["source"] == f"urn:distillsync:acme:{agent_id}"
    assert RFC3339_UTC.match(e["time"]), e["time"]
    assert dt.datetime.fromisoformat(e["time"].replace("Z", "+00:00")).utcoffset() == dt.timedelta(
        0
    )
    assert len(e["sequence"]) == 20 and e["sequence"].isdigit() and int(e["sequence"]) > 0
    assert e["datacontenttype"] == "application/json"
    assert m.topic == f"distillsync/acme/{agent_id}/out/{entity}/{e['subject']}"
    assert m.user_properties == {
        "id": e["id"],
        "type": e["type"],
        "source": e["source"],
        "sequence": e["sequence"],
    }
    assert m.content_type == CONTENT_TYPE == "application/cloudevents+json; charset=utf-8"
    assert isinstance(e["data"], dict)


def check_stream(events: list[Received], agent_id: str) -> None:
    """Across the stream: ids unique, sequences unique, and increasing on every topic."""
    for m in events:
        check_envelope(m, agent_id)
    ids = [m.event["id"] for m in events]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    sequences = [m.event["sequence"] for m in events]
    assert len(sequences) == len(set(sequences))
    by_topic: dict[str, list[str]] = {}
    for m in events:
        by_topic.setdefault(m.topic, []).append(m.event["sequence"])
    for topic, seqs in by_topic.items():
        assert seqs == sorted(seqs), f"{topic}: sequences out of order {seqs}"


def check_stock_data(data: dict[str, Any]) -> None:
    assert set(data) == {"sku", "warehouse", "on_hand"}  # tms (the cursor) is left out
    assert isinstance(data["sku"], str) and isinstance(data["warehouse"], str)
    assert isinstance(data["on_hand"], int | float) and not isinstance(data["on_hand"], bool)


def check_price_data(data: dict[str, Any]) -> None:
    assert set(data) == {"sku", "price", "name"}  # tms (the cursor) is left out
    assert isinstance(data["sku"], str)
    # money: a decimal string, never a float, whatever the column type (PostgreSQL NUMERIC,
    # MariaDB DOUBLE, SQLite NUMERIC affinity)
    assert isinstance(data["price"], str) and DECIMAL_TEXT.match(data["price"]), data


def counts(events: list[Received]) -> Counter[tuple[str, str, bytes]]:
    """How many times each (type, subject, state) was published."""
    return Counter(
        (
            m.event["type"],
            m.event["subject"],
            orjson.dumps(m.event["data"], option=orjson.OPT_SORT_KEYS),
        )
        for m in events
    )


def api_socket(config: Path) -> Path:
    """Where the agent of a :func:`write_config` config serves its status API."""
    return state_dir(config.parent, config.stem) / "agent.sock"


def wait_for_polls(config: Path, count: int) -> None:
    """Until every feed of the agent has finished ``count`` successful polls that began
    after this call, as its ``/v1/status`` tells: a ``last_poll_start`` newer than the one
    seen first is a poll that began since, and it has finished once ``last_success`` has
    caught up with it. Sampling may miss a poll; then this waits for more, never fewer."""
    client = ApiClient(api_socket(config))

    def feeds() -> dict[str, tuple[float | None, float | None]]:
        code, status = asyncio.run(client.get("/v1/status"))
        assert code == 200, status
        return {
            f"{source['name']}/{feed['feed']}": (feed["last_poll_start"], feed["last_success"])
            for source in status["sources"]
            for feed in source["feeds"]
        }

    first = {feed: start or 0.0 for feed, (start, _) in feeds().items()}
    assert first, "the agent shows no feeds"
    begun: dict[str, set[float]] = {feed: set() for feed in first}
    finished: dict[str, int] = dict.fromkeys(first, 0)

    def enough() -> bool:
        for feed, (start, success) in feeds().items():
            if start is not None and start > first[feed]:
                begun[feed].add(start)
            finished[feed] = sum(1 for s in begun[feed] if success is not None and success >= s)
        return all(n >= count for n in finished.values())

    wait_until(enough, WAIT, f"{count} more polls of every feed ({finished} so far)")


def settle_with_sentinel(
    sub: Collector,
    config: Path,
    erp: ErpDb,
    product: int,
    warehouse: int,
    quantity: float,
    polls: int = 5,
) -> None:
    """Let the agent poll several more times (counted on its status API), then prove what
    they did: a sentinel change made afterwards must arrive, and its poll re-read
    everything older inside the lookback."""
    wait_for_polls(config, polls)
    erp.set_stock(product, warehouse, quantity)
    wait_for_event(
        sub, "distillsync.stock.upsert", f"SKU-{product}/WH{warehouse}", on_hand=quantity
    )


# --- 1. inserts, updates and deletes on every backend -----------------------------------


def test_inserts_updates_and_deletes_reach_the_subscriber(
    erp: ErpDb, broker: Mosquitto, tmp_path: Path
) -> None:
    erp.add_warehouses("WH1", "WH2")
    erp.add_products(3)
    erp.set_stock(1, 1, 5)
    erp.set_stock(2, 1, 7)
    erp.set_stock(2, 2, 0.5)
    # a real-world ref with topic wildcards and a separator, and a non-ASCII label
    erp.execute(
        "INSERT INTO llx_product (rowid, ref, label, price) VALUES (?, ?, ?, ?)",
        (9, ODD_REF, "Café ☕ 12", "0.10"),
    )
    agent_id = new_agent_id("be", erp)
    config = write_config(
        tmp_path, broker, erp, agent_id, stock_entity() + price_entity() + product_snapshot_entity()
    )
    upsert = {e: f"distillsync.{e}.upsert" for e in ("stock", "price", "product")}

    with (
        Collector(broker.port, f"distillsync/acme/{agent_id}/#") as sub,
        agent_running(config, tmp_path),
    ):
        # inserts already in the ERP when the agent starts
        sub.wait_for(
            lambda ev: (
                len(of_type(ev, upsert["stock"])) >= 3
                and len(of_type(ev, upsert["price"])) >= 4
                and len(of_type(ev, upsert["product"])) >= 4
            ),
            WAIT,
            "the initial rows",
        )
        # an insert while running, an update of a quantity and of a price
        erp.add_products(1, start=4)
        erp.set_stock(4, 2, 3)
        erp.set_stock(1, 1, 4)
        erp.set_price(2, "12.34")
        wait_for_event(sub, upsert["stock"], "SKU-4/WH2", on_hand=3)
        wait_for_event(sub, upsert["stock"], "SKU-1/WH1", on_hand=4)
        wait_for_event(sub, upsert["price"], "SKU-4")
        wait_for_event(sub, upsert["product"], "SKU-4", name="Product 4")
        sub.wait_for(
            lambda _: any(
                Decimal(m.event["data"]["price"]) == Decimal("12.34")
                for m in of_type(sub.events(), upsert["price"])
                if m.event["subject"] == "SKU-2"
            ),
            WAIT,
            "SKU-2 at 12.34",
        )
        # a delete: no tombstone in Dolibarr, so only the snapshot feed can see it
        erp.delete_product(3)
        wait_for_event(sub, "distillsync.product.delete", "SKU-3")
        settle_with_sentinel(sub, config, erp, 2, 2, 1.25)
    events = sub.events()

    check_stream(events, agent_id)
    for m in of_type(events, upsert["stock"]):
        check_stock_data(m.event["data"])
        sku, warehouse = m.event["subject"].split("/")
        assert m.topic.endswith(f"/out/stock/{sku}/{warehouse}")
        assert (m.event["data"]["sku"], m.event["data"]["warehouse"]) == (sku, warehouse)
    for m in of_type(events, upsert["price"]):
        check_price_data(m.event["data"])
    names = {f"SKU-{p}": f"Product {p}" for p in (1, 2, 3, 4)} | {ODD_REF: "Café ☕ 12"}
    assert {
        m.event["data"]["sku"]: m.event["data"]["name"] for m in of_type(events, upsert["product"])
    } == names
    for m in of_type(events, upsert["product"]):
        assert m.event["subject"] == encode_part(m.event["data"]["sku"])
    odd = [m for m in events if m.event["data"].get("sku") == ODD_REF]
    assert {m.event["type"] for m in odd} == {upsert["product"], upsert["price"]}
    for m in odd:  # one topic level: "/", "+" and "#" are percent-encoded
        assert m.event["subject"] == "BOX%2F12%2B1 %23a"
        assert m.topic.endswith("/BOX%2F12%2B1 %23a")
        assert m.topic.count("/") == 5
    first_price = next(
        m.event["data"] for m in of_type(events, upsert["price"]) if m.event["subject"] == "SKU-1"
    )
    assert Decimal(first_price["price"]) == Decimal("1.90")
    assert first_price["name"] == "Product 1"

    deletes = of_type(events, "distillsync.product.delete")
    assert len(deletes) == 1
    assert deletes[0].topic == f"distillsync/acme/{agent_id}/out/product/SKU-3"
    assert deletes[0].event["subject"] == "SKU-3"
    assert deletes[0].event["data"] == {"sku": "SKU-3"}  # only the key
    # every state exactly once: unchanged rows re-read by later polls emitted nothing
    assert all(n == 1 for n in counts(events).values()), counts(events)
    latest = sub.latest_by_subject("stock")
    assert {s: e["data"]["on_hand"] for s, e in latest.items()} == {
        "SKU-1/WH1": 4,
        "SKU-2/WH1": 7,
        "SKU-2/WH2": 1.25,
        "SKU-4/WH2": 3,
    }
    # the delete came after the product's upsert, by sequence
    upsert_3 = next(m for m in of_type(events, upsert["product"]) if m.event["subject"] == "SKU-3")
    assert deletes[0].event["sequence"] > upsert_3.event["sequence"]


# --- 2. one-second timestamps: same-second commits, re-reads inside the lookback ---------


@pytest.mark.parametrize("lookback", ["0s", "30s"])
def test_same_second_commits_all_arrive_and_rereads_emit_nothing(
    erp: ErpDb, broker: Mosquitto, tmp_path: Path, lookback: str
) -> None:
    """``tms`` has one-second resolution: a row committed after a poll, in the very second
    the cursor stands on, must still be read (``>=``, not ``>``), and every row re-read
    (the cursor's second always, the whole lookback window when there is one) must be
    dropped by its stored hash."""
    erp.add_warehouses("WH1")
    erp.add_products(6)
    stamp = db_second(erp, back=5)  # one second shared by every row
    erp.executemany(
        "INSERT INTO llx_product_stock (fk_product, fk_entrepot, reel, tms) VALUES (?, 1, ?, ?)",
        [(p, p, stamp) for p in range(1, 7)],
    )
    agent_id = new_agent_id("sec", erp)
    config = write_config(tmp_path, broker, erp, agent_id, stock_entity(lookback=lookback))
    kind = "distillsync.stock.upsert"

    with (
        Collector(broker.port, f"distillsync/acme/{agent_id}/#") as sub,
        agent_running(config, tmp_path),
    ):
        sub.wait_for(lambda ev: len(ev) >= 6, WAIT, "the six initial rows")
        # The cursor now stands on `stamp`. Three separate commits inside that same second,
        # each after the agent has polled (and published) the one before.
        for product, quantity in ((1, 11), (2, 12), (3, 13)):
            stamp_stock(erp, product, 1, quantity, stamp)
            wait_for_event(sub, kind, f"SKU-{product}/WH1", on_hand=quantity)
        # A burst of commits stamped by the database clock, as Dolibarr does: they share
        # seconds with each other while the agent polls every 200 ms in between.
        for product, quantity in ((1, 21), (2, 22), (3, 23), (5, 25), (1, 31)):
            erp.set_stock(product, 1, quantity)
            time.sleep(0.07)
        for product, quantity in ((1, 31), (2, 22), (3, 23), (5, 25)):
            wait_for_event(sub, kind, f"SKU-{product}/WH1", on_hand=quantity)
        # A row re-saved without a change moves only tms: nothing to publish.
        touch_stock(erp, 4, 1)
        settle_with_sentinel(sub, config, erp, 6, 1, 99)
    events = sub.events()

    check_stream(events, agent_id)
    for m in events:
        check_stock_data(m.event["data"])
    per_state = counts(events)
    assert all(n == 1 for n in per_state.values()), per_state
    per_key = Counter(m.event["subject"] for m in events)
    assert per_key["SKU-4/WH1"] == 1  # the initial state only; the touch emitted nothing
    assert per_key["SKU-6/WH1"] == 2  # initial + sentinel
    # SKU-1 went 1 -> 11 -> 21 -> 31: 21 may be conflated by a poll that saw only 31
    sku1 = [m.event["data"]["on_hand"] for m in events if m.event["subject"] == "SKU-1/WH1"]
    assert sku1[:2] == [1, 11] and sku1[-1] == 31 and set(sku1) <= {1, 11, 21, 31}
    latest = sub.latest_by_subject("stock")
    assert {s: e["data"]["on_hand"] for s, e in latest.items()} == {
        "SKU-1/WH1": 31,
        "SKU-2/WH1": 22,
        "SKU-3/WH1": 23,
        "SKU-4/WH1": 4,
        "SKU-5/WH1": 25,
        "SKU-6/WH1": 99,
    }


# --- 4. a late commit on PostgreSQL ------------------------------------------------------


def stored_cursor(state_dir: Path, feed: str) -> Any:
    """The agent's committed cursor, read from its outbox without writing to it."""
    conn = sqlite3.connect(f"file:{state_dir / 'outbox.db'}?mode=ro", uri=True, timeout=30)
    try:
        row = conn.execute("SELECT cursor FROM feeds WHERE feed = ?", (feed,)).fetchone()
    finally:
        conn.close()
    return decode_cursor(row[0]) if row and row[0] else None


@pytest.mark.postgres
@pytest.mark.parametrize("lookback", ["30s", "0s"])
def test_late_commit_on_postgres(
    make_erp: Any, broker: Mosquitto, tmp_path: Path, lookback: str
) -> None:
    """PostgreSQL's ``now()`` is the transaction's *start*: a transaction that stamps a row
    and commits two seconds later writes a ``tms`` older than rows committed meanwhile,
    which the agent has already polled past. With a lookback the row is re-read and
    published. With ``lookback = "0s"`` the agent reads ``tms >= last`` with no re-read
    window, which for a late commit is exactly what Kafka Connect's JDBC source does with
    its strict ``tms > last``: the row is never seen again, and the change is lost. That is
    why the lookback exists, and why it must exceed the longest ERP transaction."""
    erp: ErpDb = make_erp("postgres")
    erp.add_warehouses("WH1")
    erp.add_products(3)
    for product in (1, 2, 3):
        erp.set_stock(product, 1, product)
    agent_id = f"late-{lookback.replace('s', '')}-{secrets.token_hex(3)}"
    config = write_config(tmp_path, broker, erp, agent_id, stock_entity(lookback=lookback))
    kind = "distillsync.stock.upsert"

    with (
        contextlib.closing(erp.connect_another()) as late,
        Collector(broker.port, f"distillsync/acme/{agent_id}/#") as sub,
        agent_running(config, tmp_path),
    ):
        sub.wait_for(lambda ev: len(ev) >= 3, WAIT, "the three initial rows")
        with late.transaction():
            # stamped now, with the transaction's start time ...
            row = late.execute(
                "UPDATE llx_product_stock SET reel = 42, tms = now() "
                "WHERE fk_product = 1 RETURNING tms"
            ).fetchone()
            late_tms: dt.datetime = row[0]
            # ... while other sessions commit newer rows, which the agent publishes,
            wait_until(
                lambda: db_second(erp) > late_tms.strftime("%Y-%m-%d %H:%M:%S"),
                WAIT,
                "the database clock to pass the late row's stamp",
                every=0.1,
            )
            erp.set_stock(2, 1, 77)
            (newer_tms,) = erp.query("SELECT tms FROM llx_product_stock WHERE fk_product = 2")[0]
            assert newer_tms > late_tms
            wait_for_event(sub, kind, "SKU-2/WH1", on_hand=77)
            # ... so the agent's committed cursor is now past the late row's stamp.
            cursor = stored_cursor(state_dir(tmp_path, agent_id), "stock")
            assert cursor is not None and cursor >= newer_tms > late_tms
            # The agent's polls do not wait for the open transaction (MVCC): it is still open.
            assert not has(sub, kind, "SKU-1/WH1", on_hand=42)
        # committed now, about two seconds after its tms
        if lookback != "0s":
            wait_for_event(sub, kind, "SKU-1/WH1", on_hand=42)
        else:
            # A change committed after the late one must arrive; the poll that read it
            # started after the late commit, with a bound above the late row's tms.
            erp.set_stock(3, 1, 55)
            wait_for_event(sub, kind, "SKU-3/WH1", on_hand=55)
            settle_with_sentinel(sub, config, erp, 3, 1, 56)
    events = sub.events()

    check_stream(events, agent_id)
    assert all(n == 1 for n in counts(events).values()), counts(events)
    published_42 = has(sub, kind, "SKU-1/WH1", on_hand=42)
    if lookback != "0s":
        assert published_42
    else:
        assert not published_42, "with no lookback the late commit should have been missed"
        assert sub.latest_by_subject("stock")["SKU-1/WH1"]["data"]["on_hand"] == 1  # stale


# --- 5. incrementing mode: an append-only invoice table ----------------------------------

INVOICE_DDL = {
    "sqlite": "CREATE TABLE llx_facture (rowid INTEGER PRIMARY KEY AUTOINCREMENT, "
    "entity INTEGER NOT NULL DEFAULT 1, ref TEXT NOT NULL, total_ttc NUMERIC, "
    "datef DATE)",
    "postgres": "CREATE TABLE llx_facture (rowid SERIAL PRIMARY KEY, "
    "entity INTEGER NOT NULL DEFAULT 1, ref VARCHAR(30) NOT NULL, "
    "total_ttc NUMERIC(24,8), datef DATE)",
    "mariadb": "CREATE TABLE llx_facture (rowid INTEGER AUTO_INCREMENT PRIMARY KEY, "
    "entity INTEGER NOT NULL DEFAULT 1, ref VARCHAR(30) NOT NULL, "
    "total_ttc DECIMAL(24,8), datef DATE)",
}
# Dolibarr's invoice refs are unique per `entity` (its multi-company id, an integer):
# the key is (entity, number), and the integer part reaches topics as a string.
INVOICE_ENTITY = (
    '[[sources.entities]]\nentity = "invoice"\n'
    'query = "SELECT rowid, entity, ref AS number, total_ttc AS total, datef AS issued_on '
    'FROM llx_facture"\nkey = ["entity", "number"]\nmode = "incrementing"\ncursor = "rowid"\n'
)


def add_invoices(erp: ErpDb, numbers: range) -> None:
    """Each invoice in its own commit, as the ERP issues them."""
    for n in numbers:
        erp.execute(
            "INSERT INTO llx_facture (ref, total_ttc, datef) VALUES (?, ?, ?)",
            (
                f"FA2611-{n:04d}",
                f"{n}{n}.50" if n % 2 else f"{n}00.00",
                dt.date(2026, 11, n % 28 + 1).isoformat(),
            ),
        )


def invoice_numbers(events: list[Received]) -> list[str]:
    ordered = sorted(
        of_type(events, "distillsync.invoice.upsert"), key=lambda m: m.event["sequence"]
    )
    return [m.event["data"]["number"] for m in ordered]


def test_incrementing_mode_sends_new_rows_in_order_and_not_again_after_restart(
    erp: ErpDb, broker: Mosquitto, tmp_path: Path
) -> None:
    erp.execute(INVOICE_DDL[erp.backend])
    add_invoices(erp, range(1, 6))
    agent_id = new_agent_id("inc", erp)
    # pages of 2: the first poll crosses page boundaries
    config = write_config(tmp_path, broker, erp, agent_id, INVOICE_ENTITY, page_size=2)
    expected = [f"FA2611-{n:04d}" for n in range(1, 13)]

    with Collector(broker.port, f"distillsync/acme/{agent_id}/#") as sub:
        with agent_running(config, tmp_path):
            sub.wait_for(lambda ev: len(ev) >= 5, WAIT, "the first five invoices")
            add_invoices(erp, range(6, 9))
            sub.wait_for(lambda ev: len(ev) >= 8, WAIT, "invoices 6 to 8")
        assert invoice_numbers(sub.events()) == expected[:8]
        add_invoices(erp, range(9, 11))  # issued while the agent was stopped
        with agent_running(config, tmp_path):
            sub.wait_for(lambda ev: len(ev) >= 10, WAIT, "invoices 9 and 10")
            add_invoices(erp, range(11, 13))
            sub.wait_for(lambda ev: len(ev) >= 12, WAIT, "invoices 11 and 12")
            wait_for_polls(config, 5)  # several more polls, which must find nothing new
            add_invoices(erp, range(13, 14))  # sentinel: polled after those
            sub.wait_for(lambda ev: len(ev) >= 13, WAIT, "invoice 13")
    events = sub.events()
    expected.append("FA2611-0013")

    check_stream(events, agent_id)
    assert invoice_numbers(events) == expected  # each once, in the ERP's id order
    assert [m.event["data"]["number"] for m in events] == expected  # and in arrival order
    for m in events:
        data = m.event["data"]
        assert set(data) == {"entity", "number", "total", "issued_on"}  # rowid: the cursor
        assert data["entity"] == "1"  # an integer key column, as a string
        assert m.event["subject"] == f"1/{data['number']}"
        assert m.topic == f"distillsync/acme/{agent_id}/out/invoice/1/{data['number']}"
        assert isinstance(data["total"], str) and DECIMAL_TEXT.match(data["total"])
        n = int(data["number"][-4:])
        assert Decimal(data["total"]) == Decimal(f"{n}{n}.50" if n % 2 else f"{n}00")
        assert data["issued_on"] == dt.date(2026, 11, n % 28 + 1).isoformat()


@contextlib.contextmanager
def open_transaction(erp: ErpDb) -> Iterator[Any]:
    """A second ERP session inside an explicit transaction, committed on exit."""
    conn = erp.connect_another()
    try:
        if erp.backend == "postgres":
            with conn.transaction(), conn.cursor() as cur:
                yield cur
        else:
            conn.begin()
            with conn.cursor() as cur:
                yield cur
            conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("backend", "lookback"),
    [
        pytest.param("postgres", "30s", marks=pytest.mark.postgres),
        pytest.param("mariadb", "30s", marks=pytest.mark.mariadb),
        pytest.param("postgres", "0s", marks=pytest.mark.postgres),
    ],
)
def test_incrementing_mode_catches_an_id_committed_late(
    make_erp: Any, broker: Mosquitto, tmp_path: Path, backend: str, lookback: str
) -> None:
    """Two clerks issue invoices at once: the first transaction takes id 4 and commits
    after the second one's id 5 was committed and published. A strict ``id > last``
    (Kafka Connect's incrementing mode, or ``lookback = "0s"`` here) never reads id 4.
    With a lookback, ids below the highest one seen stay re-readable for that long."""
    erp: ErpDb = make_erp(backend)
    erp.execute(INVOICE_DDL[erp.backend])
    add_invoices(erp, range(1, 4))
    agent_id = new_agent_id(f"incl-{lookback[:-1]}", erp)
    config = write_config(
        tmp_path, broker, erp, agent_id, INVOICE_ENTITY + f'lookback = "{lookback}"\n'
    )
    kind = "distillsync.invoice.upsert"

    with (
        Collector(broker.port, f"distillsync/acme/{agent_id}/#") as sub,
        agent_running(config, tmp_path),
    ):
        sub.wait_for(lambda ev: len(ev) >= 3, WAIT, "the first three invoices")
        with open_transaction(erp) as late:
            late.execute(
                erp._sql("INSERT INTO llx_facture (ref, total_ttc) VALUES (?, ?)"),
                ("FA2611-0004", "4.00"),
            )
            add_invoices(erp, range(5, 6))  # id 5, committed first
            wait_for_event(sub, kind, "1/FA2611-0005")
            assert not has(sub, kind, "1/FA2611-0004")
        (late_id,) = erp.query("SELECT rowid FROM llx_facture WHERE ref = 'FA2611-0004'")[0]
        assert late_id == 4
        if lookback != "0s":
            wait_for_event(sub, kind, "1/FA2611-0004")
        add_invoices(erp, range(6, 7))  # committed after the late one: a later poll reads it
        wait_for_event(sub, kind, "1/FA2611-0006")
        wait_for_polls(config, 5)  # re-reading the window: 4 and 6 must not come again
        add_invoices(erp, range(7, 8))
        wait_for_event(sub, kind, "1/FA2611-0007")
    events = sub.events()

    check_stream(events, agent_id)
    numbers = sorted(m.event["data"]["number"] for m in events)
    expected = [f"FA2611-{n:04d}" for n in range(1, 8)]
    if lookback == "0s":
        expected.remove("FA2611-0004")  # lost: what the lookback is for
    assert numbers == expected  # each exactly once: re-reads in the window emit nothing
