"""The inbox on real SQLite files: dedupe by id, the version gate, held orders, dead items,
master of data, the writers' marks, a crash in the middle of a stream, and a model test."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import MasterSection, parse_config
from agent.errors import ConfigError
from agent.inbox import RETRY_FIRST, Inbox, InboxState, parse_event
from agent.outbox import MIGRATIONS, Outbox, OutboxUnwritable
from tests.support import REPO, run_cli

SHOP = "shopify-main"


def order(
    ref: str,
    version: str,
    sequence: int,
    payment: str = "paid",
    *,
    event_id: str | None = None,
    note: str | None = None,
    shop: str = SHOP,
) -> bytes:
    """An order event as the intake publishes it (DESIGN.md, "The order event")."""
    data = {
        "shop": shop,
        "order_ref": ref,
        "number": f"#{ref}",
        "version": version,
        "status": "open",
        "payment_status": payment,
        "currency": "EUR",
        "lines": [{"line_ref": "1", "sku": "SKU-1", "quantity": 2, "total": "24.20"}],
        "note": note,
    }
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": event_id or f"{shop}-{ref}-{version}-{sequence}",
            "source": f"urn:distillsync:acme:intake:{shop}",
            "type": "distillsync.order.upsert",
            "subject": f"{shop}/{ref}",
            "time": "2026-11-23T12:00:01.000000Z",
            "sequence": f"{sequence:020d}",
            "datacontenttype": "application/json",
            "data": data,
        }
    )


def other(entity: str, subject: str, sequence: int) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": f"{entity}-{subject}-{sequence}",
            "source": f"urn:distillsync:acme:intake:{SHOP}",
            "type": f"distillsync.{entity}.upsert",
            "subject": subject,
            "time": "2026-11-23T12:00:01Z",
            "sequence": f"{sequence:020d}",
            "datacontenttype": "application/json",
            "data": {"shop": SHOP, "email": "ana@example.com"},
        }
    )


V1, V2, V3 = "2026-11-23T12:00:00Z", "2026-11-23T12:00:01Z", "2026-11-23T12:00:02Z"


async def states(inbox: Inbox) -> list[tuple[str, InboxState]]:
    return [(item.event_id, item.state) for item in await inbox.items()]


async def test_a_redelivered_id_is_recorded_once(tmp_path: Path) -> None:
    async with Outbox.open(tmp_path / "outbox.db") as outbox:
        inbox = Inbox(outbox)
        first = await inbox.receive(order("1001", V1, 1), "distillsync/acme/erp-1/in/order")
        again = [await inbox.receive(order("1001", V1, 1)) for _ in range(2)]
        assert (first.state, first.duplicate) == ("pending", False)
        assert {(r.item_id, r.state, r.duplicate) for r in again} == {
            (first.item_id, "pending", True)
        }
        [item] = await inbox.items()
        assert (item.duplicates, item.topic) == (2, "distillsync/acme/erp-1/in/order")
        assert item.envelope == order("1001", V1, 1)
        assert item.data()["order_ref"] == "1001"
        assert (await inbox.stats()).duplicates == 2


async def test_an_older_version_is_stale_and_does_not_replace_the_newer(tmp_path: Path) -> None:
    async with Outbox.open(tmp_path / "outbox.db") as outbox:
        inbox = Inbox(outbox)
        newer = await inbox.receive(order("1001", V2, 7))
        older = await inbox.receive(order("1001", V1, 9))  # a higher sequence does not help
        assert (newer.state, older.state) == ("pending", "stale")
        assert older.reason is not None and "older than the version taken" in older.reason
        assert [i.id for i in await inbox.next_pending(10)] == [newer.item_id]


async def test_a_newer_version_supersedes_what_waits_but_not_what_is_written(
    tmp_path: Path,
) -> None:
    async with Outbox.open(tmp_path / "outbox.db") as outbox:
        inbox = Inbox(outbox)
        a1 = await inbox.receive(order("A", V1, 1))
        b1 = await inbox.receive(order("B", V1, 2))
        assert await inbox.mark_written(b1.item_id, "SO2611-0001")
        a2 = await inbox.receive(order("A", V2, 3))
        b2 = await inbox.receive(order("B", V2, 4))
        assert [(i.id, i.state) for i in await inbox.items()] == [
            (a1.item_id, "stale"),
            (b1.item_id, "written"),
            (a2.item_id, "pending"),
            (b2.item_id, "pending"),  # the writer decides: an edit, a cancellation, or nothing
        ]
        stale = await inbox.get(a1.item_id)
        assert stale is not None and stale.reason is not None
        assert f"superseded by version {V2}, sequence 3" in stale.reason
        written = await inbox.get(b1.item_id)
        assert written is not None and written.erp_ref == "SO2611-0001"
        assert not await inbox.mark_written(a1.item_id, "late")  # superseded: not written


async def test_at_the_same_version_the_higher_sequence_wins(tmp_path: Path) -> None:
    async with Outbox.open(tmp_path / "outbox.db") as outbox:
        inbox = Inbox(outbox)
        low = await inbox.receive(order("1001", V1, 5, note="first"))
        high = await inbox.receive(order("1001", V1, 8, note="re-read"))
        late = await inbox.receive(order("1001", V1, 6, note="middle"))
        assert [(r.state) for r in (high, late)] == ["pending", "stale"]
        assert [i.id for i in await inbox.next_pending(10)] == [high.item_id]
        assert (await inbox.get(low.item_id)).state == "stale"  # type: ignore[union-attr]


async def test_unpaid_orders_are_held_and_released_when_paid(tmp_path: Path) -> None:
    async with Outbox.open(tmp_path / "outbox.db") as outbox:
        inbox = Inbox(outbox)
        held = await inbox.receive(order("1001", V1, 1, "pending"))
        cod = await inbox.receive(order("1002", V1, 2, "authorized"))  # cash on delivery
        assert (held.state, cod.state) == ("held", "pending")
        assert (
            held.reason == "payment_status pending is not in inbox.import_when (authorized, paid)"
        )
        assert [i.id for i in await inbox.next_pending(10)] == [cod.item_id]
        paid = await inbox.receive(order("1001", V2, 3, "paid"))
        assert paid.state == "pending"
        assert (await inbox.get(held.item_id)).state == "stale"  # type: ignore[union-attr]
        # import_when changed (a reload): the held ones are judged again.
        refunded = await inbox.receive(order("1003", V1, 4, "refunded"))
        assert refunded.state == "held" and await inbox.release_held() == 0
        inbox.import_when = frozenset({"paid", "authorized", "refunded"})
        assert await inbox.release_held() == 1
        assert (await inbox.get(refunded.item_id)).state == "pending"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not a valid event: not JSON"),
        (b"[1, 2]", "not a valid event: not a JSON object"),
        (order("1", V1, 1).replace(b'"1.0"', b'"0.3"'), "specversion: '0.3' is not '1.0'"),
        (order("1", V1, 1).replace(b'"sequence":"0', b'"sequence":"'), "sequence: "),
        (order("1", V1, 1).replace(b"order.upsert", b"widget.upsert"), "unknown entity 'widget'"),
        (order("1", V1, 1, "maybe"), "data.payment_status: 'maybe' is not one of"),
        (order("1", "yesterday", 1), "data.version: 'yesterday' is not an RFC 3339 time"),
        (order("1", "2026-13-45T12:00:00Z", 1), "data.version: '2026-13-45T12:00:00Z' is not a"),
        (order("1", V1, 1).replace(b"2026-11-23T12:00:01.", b"2026-02-30T12:00:01."), "time: "),
        (order("1", V1, 1).replace(b'"subject":"shopify-main/1"', b'"subject":"x/2"'), "subject"),
        (order("1", V1, 1).replace(b"urn:distillsync:acme:intake:", b"urn:x:"), "source: "),
    ],
)
async def test_a_message_that_is_not_a_valid_event_is_a_dead_item(
    tmp_path: Path, payload: bytes, reason: str
) -> None:
    async with Outbox.open(tmp_path / "outbox.db") as outbox:
        inbox = Inbox(outbox)
        received = await inbox.receive(payload)
        assert received.state == "dead" and received.reason is not None
        assert received.reason.startswith("not a valid event: ") and reason in received.reason
        assert (await inbox.receive(payload)).duplicate  # a redelivered copy: one row
        [item] = await inbox.items("dead")
        assert (item.envelope, item.duplicates, item.entity) == (payload, 1, None)
        assert not await inbox.retry(item.id)  # still not valid
        assert await inbox.discard(item.id) and await inbox.items() == []


async def test_an_entity_the_erp_is_master_of_is_a_dead_item_naming_the_rule(
    tmp_path: Path,
) -> None:
    async with Outbox.open(tmp_path / "outbox.db") as outbox:
        inbox = Inbox(outbox, MasterSection.model_validate({"customer": "erp"}))
        customer = await inbox.receive(other("customer", f"{SHOP}/77", 1))
        stock = await inbox.receive(other("stock", "SKU-1/WH1", 2))
        assert customer.reason == (
            'master of data: customer is mastered by the ERP (master.customer = "erp"), '
            "so the inbox takes no customer from the shop"
        )
        assert (customer.state, stock.state) == ("dead", "dead")
        assert stock.reason is not None and "stock is mastered by the ERP" in stock.reason
        # The rule changed in the config: a retry judges it again.
        inbox.master = MasterSection()
        assert await inbox.retry(customer.item_id)
        assert (await inbox.get(customer.item_id)).state == "pending"  # type: ignore[union-attr]
        assert not await inbox.retry(stock.item_id)


async def test_an_entity_on_the_wrong_topic_is_dead(tmp_path: Path) -> None:
    async with Outbox.open(tmp_path / "outbox.db") as outbox:
        received = await Inbox(outbox).receive(order("1", V1, 1), "p/acme/erp-1/in/return")
        assert received.state == "dead"
        assert (
            received.reason == "not a valid event: type names order on topic p/acme/erp-1/in/return"
        )


async def test_the_writers_marks_backoff_retry_and_discard(tmp_path: Path) -> None:
    async with Outbox.open(tmp_path / "outbox.db") as outbox:
        inbox = Inbox(outbox)
        a = (await inbox.receive(order("A", V1, 1))).item_id
        b = (await inbox.receive(order("B", V1, 2))).item_id
        assert await inbox.mark_failed(a, "ERP unreachable", now=1000.0)
        assert [i.id for i in await inbox.next_pending(10, now=1000.0)] == [b]
        assert [i.id for i in await inbox.next_pending(10, now=1000.0 + RETRY_FIRST)] == [a, b]
        assert await inbox.mark_failed(a, "ERP unreachable", now=2000.0)
        failed = await inbox.get(a)
        assert failed is not None and (failed.state, failed.attempts) == ("failed", 2)
        assert failed.next_attempt_at == 2000.0 + 2 * RETRY_FIRST
        assert await inbox.mark_dead(b, "unknown SKU SKU-1")
        assert not await inbox.mark_dead(b, "twice")
        assert await inbox.retry(a) and await inbox.retry(b)
        assert {i.id: (i.state, i.attempts) for i in await inbox.items()} == {
            a: ("pending", 0),
            b: ("pending", 0),
        }
        assert not await inbox.retry(a)  # pending: nothing to retry
        assert await inbox.mark_written(a, "SO-1")
        assert not await inbox.discard(a)  # a written item is the record of an ERP order
        assert await inbox.mark_dead(b, "closed period") and await inbox.discard(b)
        assert [i.id for i in await inbox.items()] == [a]
        # Discarded, its version stays taken: an older copy is still stale.
        assert (await inbox.receive(order("B", V1, 1))).state == "stale"


async def test_list_pages_by_state_and_stats_count_each(tmp_path: Path) -> None:
    async with Outbox.open(tmp_path / "outbox.db") as outbox:
        inbox = Inbox(outbox)
        for n in range(5):
            await inbox.receive(order(f"P{n}", V1, n + 1))
        await inbox.receive(order("H", V1, 10, "pending"))
        await inbox.receive(b"garbage")
        first = await inbox.items("pending", limit=2)
        rest = await inbox.items("pending", after=first[-1].id, limit=10)
        assert [i.subject for i in first + rest] == [f"{SHOP}/P{n}" for n in range(5)]
        stats = await inbox.stats()
        assert (stats.pending, stats.held, stats.dead, stats.written, stats.stale) == (
            5,
            1,
            1,
            0,
            0,
        )
        assert stats.oldest_pending_age is not None and stats.oldest_pending_age >= 0
        for item in first + rest:
            await inbox.mark_written(item.id, "x")
        assert (await inbox.stats()).oldest_pending_age is None


async def test_a_batch_is_one_transaction_and_a_failure_inside_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Outbox.open(tmp_path / "outbox.db") as outbox:
        inbox = Inbox(outbox)
        results = await inbox.receive_many([(order("A", V1, 1), None), (order("A", V1, 1), None)])
        assert [r.duplicate for r in results] == [False, True]

        async def broken(*_: object) -> None:
            raise RuntimeError("crash between the item and its head")

        monkeypatch.setattr(Inbox, "_take", staticmethod(broken))
        with pytest.raises(RuntimeError):
            await inbox.receive(order("B", V1, 2))
        monkeypatch.undo()
        assert [i.subject for i in await inbox.items()] == [f"{SHOP}/A"]
        assert (await inbox.receive(order("B", V1, 2))).state == "pending"


def test_parse_event_is_a_frozen_dataclass() -> None:
    event = parse_event(order("1001", "2026-11-23T12:00:00.5+01:00", 42))
    assert (event.entity, event.op, event.subject, event.sequence) == (
        "order",
        "upsert",
        f"{SHOP}/1001",
        42,
    )
    assert event.version_key == parse_event(order("1", "2026-11-23T11:00:00.5Z", 1)).version_key
    with pytest.raises(AttributeError):
        event.sequence = 1  # type: ignore[misc]


# --- master of data in the config ----------------------------------------------------------

CONFIG: dict[str, Any] = {
    "agent": {"id": "erp-1", "tenant": "acme"},
    "relay": {"url": "mqtt://127.0.0.1:1883"},
    "sources": [
        {
            "name": "erp",
            "url": "sqlite+aiosqlite:///erp.db",
            "entities": [
                {"entity": "stock", "query": "SELECT * FROM s", "key": ["sku"], "mode": "snapshot"},
                {
                    "entity": "customer",
                    "query": "SELECT * FROM c",
                    "key": ["id"],
                    "mode": "snapshot",
                },
            ],
        }
    ],
}


def test_an_outbound_feed_of_a_shop_mastered_entity_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(CONFIG)
    assert error.value.problems == [
        "sources[0].entities[1].entity: customer is mastered by the shop "
        '(master.customer = "shop"), so the agent may not publish it; remove the feed or set '
        'master.customer = "erp"'
    ]
    config = parse_config(CONFIG | {"master": {"customer": "erp"}})
    assert (config.master.of("customer"), config.master.of("return")) == ("erp", "shop")
    assert config.inbox.import_when == ["paid", "authorized"]


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"master": {"order": "crm"}}, "master.order: Input should be 'erp' or 'shop'"),
        ({"master": {"orders": "shop"}}, "master.orders: unknown key"),
        ({"inbox": {"import_when": ["paid", "paid"]}}, "inbox.import_when: paid appears twice"),
        ({"inbox": {"import_when": ["payed"]}}, "inbox.import_when[0]: Input should be"),
        ({"inbox": {"hold": True}}, "inbox.hold: unknown key"),
    ],
)
def test_master_and_inbox_keys_are_strict(section: dict[str, Any], problem: str) -> None:
    good = CONFIG | {"master": {"customer": "erp"}}
    with pytest.raises(ConfigError) as error:
        parse_config(good | {k: good.get(k, {}) | v for k, v in section.items()})
    assert any(line.startswith(problem) for line in error.value.problems), error.value.problems


def test_check_exits_78_naming_the_feed_against_the_master(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        '[agent]\nid = "erp-1"\ntenant = "acme"\n[relay]\nurl = "mqtt://127.0.0.1:1883"\n'
        '[[sources]]\nname = "erp"\nurl = "sqlite+aiosqlite:///erp.db"\n'
        '  [[sources.entities]]\n  entity = "customer"\n  query = "SELECT * FROM c"\n'
        '  key = ["id"]\n  mode = "snapshot"\n'
    )
    result = run_cli(path, "check")
    assert result.returncode == 78
    assert "sources[0].entities[0].entity: customer is mastered by the shop" in result.stderr


# --- a crash in the middle of a stream -----------------------------------------------------

CHILD = """
import asyncio, sys
from pathlib import Path
from agent.inbox import Inbox
from agent.outbox import MIGRATIONS, Outbox, OutboxUnwritable
from tests.test_inbox import stream

async def main() -> None:
    async with Outbox.open(Path(sys.argv[1])) as outbox:
        inbox = Inbox(outbox)
        for payload in stream():
            received = await inbox.receive(payload)
            print(received.event_id, flush=True)  # the PUBACK would go now

asyncio.run(main())
"""


def stream(n: int = 2000) -> list[bytes]:
    """Versions of five orders, out of order, with redeliveries and a bad message now and
    then: what a broker may hand over after reconnects."""
    out = []
    for i in range(n):
        ref, version = f"R{i % 5}", f"2026-11-23T12:{(i * 7) % 60:02d}:00Z"
        out.append(order(ref, version, i + 1, "paid" if i % 3 else "pending"))
        if i % 4 == 0:
            out.append(order(ref, version, i + 1, "paid" if i % 3 else "pending"))
        if i % 50 == 0:
            out.append(b"not an event %d" % i)
    return out


def check_consistent(path: Path) -> None:
    """Nothing half-committed: each subject's head is a row of that version, the only one
    of its subject that waits (held or pending); every other row of the subject is stale."""
    with sqlite3.connect(path) as db:
        heads = db.execute(
            "SELECT h.subject, h.item_id, i.id, h.version_key = i.version_key AND "
            "h.sequence = i.sequence FROM inbox_heads h LEFT JOIN inbox i ON i.id = h.item_id"
        ).fetchall()
        for subject, item_id, row, same in heads:
            assert row == item_id and same, subject
            waiting = db.execute(
                "SELECT id FROM inbox WHERE subject = ? AND state IN ('held', 'pending')",
                (subject,),
            ).fetchall()
            assert waiting == [(item_id,)], subject
        orphans = db.execute(
            "SELECT count(*) FROM inbox WHERE entity IS NOT NULL AND state IN ('held', 'pending') "
            "AND id NOT IN (SELECT item_id FROM inbox_heads)"
        ).fetchone()
        assert orphans == (0,)


def test_sigkill_mid_stream_loses_nothing_committed_and_commits_nothing_half(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    committed: list[str] = []
    for round_ in range(3):  # killed, started again on the same file (redelivering all)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)],
            stdout=subprocess.PIPE,
            cwd=REPO,
            env=os.environ | {"PYTHONPATH": str(REPO)},
        )
        assert child.stdout is not None
        for _ in range(150 + 100 * round_):
            committed.append(child.stdout.readline().decode().strip())
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        check_consistent(path)
        with sqlite3.connect(path) as db:
            recorded = {row[0] for row in db.execute("SELECT event_id FROM inbox")}
        assert set(committed) <= recorded
    asyncio.run(receive_the_rest(path))
    check_consistent(path)


async def receive_the_rest(path: Path) -> None:
    """Started once more, the whole stream redelivered: every message is there once."""
    async with Outbox.open(path) as outbox:
        inbox = Inbox(outbox)
        for payload in stream():
            await inbox.receive(payload)
        total = len({parse_event(p).id for p in stream() if p.startswith(b"{")})
        stats = await inbox.stats()
    assert stats.dead == len([p for p in stream() if not p.startswith(b"{")])
    assert stats.pending + stats.held + stats.stale == total


# --- the model: random streams against a plain dict ----------------------------------------

Version = tuple[int, int, int, bool]  # (order, version second, sequence, paid)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Version], list[int]]:
    """Versions of up to three orders, then a delivery order: shuffled, with repeats."""
    drawn = draw(
        st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.booleans()), max_size=12)
    )
    versions = [(ref, second, n + 1, paid) for n, (ref, second, paid) in enumerate(drawn)]
    picks = draw(st.lists(st.integers(0, max(0, len(versions) - 1)), max_size=8))
    deliveries = list(range(len(versions))) + (picks if versions else [])
    return versions, draw(st.permutations(deliveries))


def as_event(version: Version) -> bytes:
    ref, second, sequence, paid = version
    return order(f"R{ref}", f"2026-11-23T12:00:0{second}Z", sequence, "paid" if paid else "pending")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_the_inbox_against_a_model(history: tuple[list[Version], list[int]]) -> None:
    versions, deliveries = history
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(check_against_model(Path(folder) / "outbox.db", versions, deliveries))


async def check_against_model(path: Path, versions: list[Version], deliveries: list[int]) -> None:
    async with Outbox.open(path, synchronous="normal", reserve=0) as outbox:
        inbox = Inbox(outbox)
        seen: set[int] = set()
        for index in deliveries:
            received = await inbox.receive(as_event(versions[index]))
            assert received.duplicate == (index in seen)
            seen.add(index)
        items = {item.event_id: item for item in await inbox.items(limit=1000)}
    ids = {parse_event(as_event(v)).id: v for v in versions}
    assert set(items) == set(ids)  # every id recorded, exactly once (event_id is unique)
    for event_id, item in items.items():
        assert item.duplicates == deliveries.count(versions.index(ids[event_id])) - 1
    for ref in {v[0] for v in versions}:
        newest = max((v for v in versions if v[0] == ref), key=lambda v: (v[1], v[2]))
        for event_id, version in ids.items():
            if version[0] != ref:
                continue
            expected = ("pending" if newest[3] else "held") if version == newest else "stale"
            assert items[event_id].state == expected, (version, newest)


async def test_a_full_disk_refuses_the_message_whole_so_it_is_not_acknowledged(
    tmp_path: Path,
) -> None:
    async with Outbox.open(tmp_path / "outbox.db", reserve=0) as outbox:
        inbox = Inbox(outbox)
        await inbox.receive(order("A", V1, 1))
        async with outbox.transaction() as db:  # the file may not grow: SQLITE_FULL
            async with db.execute("PRAGMA page_count") as cursor:
                pages = (await cursor.fetchone() or (0,))[0]
            await db.execute(f"PRAGMA max_page_count = {pages}")
        big = order("B", V1, 2, note="x" * 200_000)
        with pytest.raises(OutboxUnwritable):
            await inbox.receive(big)  # raised, not returned: the subscriber sends no PUBACK
        assert outbox.write_health.disk_full
        assert [i.subject for i in await inbox.items()] == [f"{SHOP}/A"]
        async with outbox.transaction() as db:
            await db.execute("PRAGMA max_page_count = 1073741823")
        assert (await inbox.receive(big)).state == "pending"  # the broker's redelivery


async def test_an_outbox_of_the_last_release_gains_the_inbox_and_keeps_its_events(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    with sqlite3.connect(path) as db:  # schema 1, as shipped before the inbox
        db.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
        db.execute(
            "INSERT INTO events (event_id, source, feed, entity, op, subject, time, data) "
            "VALUES ('e1', 'erp', 'stock', 'stock', 'upsert', 'SKU-1/WH1', 't', x'7b7d')"
        )
    db.close()
    async with Outbox.open(path, reserve=0) as outbox:
        assert [e.event_id for e in await outbox.fetch_pending(0, 10)] == ["e1"]
        assert (await Inbox(outbox).receive(order("A", V1, 1))).state == "pending"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
    db.close()
