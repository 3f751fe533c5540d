"""The intake store (relay/intake/store.py), on a SQLite file and on a real PostgreSQL.

What the webhook handler and the poller rely on: a take's verdicts follow the rule (a plain
dict model agrees over random histories), what a take returned survives a SIGKILL, two
stores on one PostgreSQL taking the same events at once store each once, and what
:meth:`IntakeStore.pending` builds is an envelope the agent's inbox accepts.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from agent.inbox import parse_event
from relay.errors import SchemaTooNew, StoreBusy, StoreError
from relay.intake.identity import digest, event_id
from relay.intake.order import Order, Return, ReturnLine
from relay.intake.store import (
    SCHEMA_VERSION,
    IntakeStore,
    NewEvent,
    Note,
    Outgoing,
    Taken,
)
from relay.intake.woocommerce import map_body
from tests.support import REPO
from tests.test_relay_store import postgres_database

PREFIX = "distillsync"
T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
WOO = REPO / "tests" / "fixtures" / "woocommerce"


def event(
    ref: str = "1001",
    second: int = 0,
    content: str = "a",
    shop: str = "woo-main",
    kind: str = "order",
    agent: str = "erp-1",
) -> NewEvent:
    """An order state: ``content`` stands for what the order holds at ``second``."""
    version = T0 + timedelta(seconds=second)
    data: dict[str, Any] = {
        "shop": shop,
        "order_ref": ref,
        "version": version.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "payment_status": "paid",
        "note": content,
    }
    content_digest = digest(data)
    return NewEvent(
        kind="order" if kind == "order" else "return",
        shop=shop,
        ref=ref,
        version=version,
        digest=content_digest,
        id=str(event_id(shop, ref, data["version"], content_digest)),
        tenant="acme",
        agent=agent,
        data=data,
    )


def from_order(order: Order, agent: str = "erp-1") -> NewEvent:
    data = order.to_data()
    content_digest = digest(data)
    return NewEvent(
        "order",
        order.shop,
        order.order_ref,
        order.version,
        content_digest,
        str(event_id(order.shop, order.order_ref, data["version"], content_digest)),
        "acme",
        agent,
        data,
    )


def woo_order(name: str) -> Order:
    raw = json.loads((WOO / f"{name}.json").read_text("utf-8"))["raw_body"].encode()
    mapped = map_body("woo-main", raw)
    assert isinstance(mapped, Order), mapped
    return mapped


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'intake.db'}"
    else:
        with postgres_database() as pg_url:
            yield pg_url


@pytest.fixture
async def store(url: str) -> AsyncIterator[IntakeStore]:
    async with await IntakeStore.open(url, PREFIX) as opened:
        yield opened


async def sequences(store: IntakeStore) -> dict[str, int]:
    """Every pending event's id and sequence."""
    return {out.id: out.sequence for out in await store.pending(0, 10_000)}


# --- the verdicts ---------------------------------------------------------------------


async def test_each_verdict(store: IntakeStore) -> None:
    a, b, newer = event(second=5), event(second=5, content="b"), event(second=6)
    assert await store.take([a]) == ["stored"]
    assert await store.take([a]) == ["duplicate"]  # a webhook and a poll of one state
    assert await store.take([event(second=4)]) == ["stale"]
    assert await store.take([b]) == ["conflict"]  # same second, other content: re-read
    assert b.id not in await sequences(store)
    assert await store.take([b], reread=True) == ["stored"]
    assert await store.take([event(second=4)], reread=True) == ["stale"]
    assert await store.take([newer]) == ["stored"]
    stored = await sequences(store)
    assert list(stored) == [a.id, b.id, newer.id]
    assert stored[a.id] < stored[b.id] < stored[newer.id]


async def test_a_state_that_comes_back_within_its_second_is_a_duplicate(
    store: IntakeStore,
) -> None:
    """A -> B -> A at one version: the second A is the first A's id (module docstring)."""
    a, b = event(second=1), event(second=1, content="b")
    assert await store.take([a]) == ["stored"]
    assert await store.take([b], reread=True) == ["stored"]
    assert await store.take([a], reread=True) == ["duplicate"]
    assert list(await sequences(store)) == [a.id, b.id]


async def test_a_batch_is_taken_in_order(store: IntakeStore) -> None:
    first, again, older = event("1", 3), event("1", 3), event("1", 2)
    other, same_second = event("2", 0), event("2", 0, content="b")
    assert await store.take([first, other, again, older, same_second, event("1", 4)]) == [
        "stored",
        "stored",
        "duplicate",
        "stale",
        "conflict",
        "stored",
    ]
    assert len(await sequences(store)) == 3


async def test_an_order_and_a_return_of_one_ref_are_apart(store: IntakeStore) -> None:
    order, refund = event("7", 5), event("7", 1, content="r", kind="return")
    assert await store.take([order, refund]) == ["stored", "stored"]  # not stale
    assert [o.topic for o in await store.pending(0, 10)] == [
        "distillsync/acme/erp-1/in/order",
        "distillsync/acme/erp-1/in/return",
    ]


async def test_a_naive_version_is_refused_before_anything_is_written(store: IntakeStore) -> None:
    naive = replace(event(), version=datetime(2026, 11, 23, 12, 0, 0))
    with pytest.raises(ValueError, match="no time zone"):
        await store.take([event("2"), naive])
    assert await sequences(store) == {}


# --- the envelope the agent receives --------------------------------------------------


async def test_the_envelope_passes_the_agents_inbox(store: IntakeStore) -> None:
    order = woo_order("order_updated_status_completed")
    new = from_order(replace(order, shop="woo/main+1"))  # a ref or shop that needs escaping
    refund = Return(
        shop="woo-main",
        return_ref="R-9",
        order_ref=order.order_ref,
        version=T0,
        created_at=T0,
        currency="EUR",
        lines=(ReturnLine("SKU-1", 1, Decimal("12.10"), restock=True),),
        refund_total=Decimal("12.10"),
        reason="broken",
    )
    refund_data = refund.to_data()
    refund_digest = digest(refund_data)
    refund_event = NewEvent(
        "return",
        "woo-main",
        "R-9",
        T0,
        refund_digest,
        str(event_id("woo-main", "R-9", refund_data["version"], refund_digest)),
        "acme",
        "erp-2",
        refund_data,
    )
    assert await store.take([new, refund_event]) == ["stored", "stored"]
    out, back = await store.pending(0, 10)
    parsed = parse_event(out.payload)
    assert (parsed.id, parsed.entity, parsed.op) == (new.id, "order", "upsert")
    assert parsed.source == "urn:distillsync:acme:intake:woo/main+1"
    assert parsed.subject == f"woo%2Fmain%2B1/{order.order_ref}"
    assert parsed.sequence == out.sequence
    assert parsed.version == new.data["version"] == parsed.time
    assert parsed.payment_status == order.payment_status
    assert orjson.loads(parsed.data) == new.data
    envelope = orjson.loads(out.payload)
    assert envelope["sequence"] == f"{out.sequence:020d}"
    assert envelope["datacontenttype"] == "application/json"
    assert envelope["type"] == "distillsync.order.upsert"
    assert out.topic == "distillsync/acme/erp-1/in/order"
    assert out.user_properties == [
        ("id", new.id),
        ("type", "distillsync.order.upsert"),
        ("source", "urn:distillsync:acme:intake:woo/main+1"),
        ("sequence", f"{out.sequence:020d}"),
    ]
    returned = parse_event(back.payload)
    assert (returned.entity, returned.subject) == ("return", "woo-main/R-9")
    assert back.topic == "distillsync/acme/erp-2/in/return"
    again = await store.pending(0, 10)
    assert [o.payload for o in again] == [out.payload, back.payload]  # byte for byte


# --- publishing, notes, cursors, stats ------------------------------------------------


async def test_published_and_dead_leave_pending(store: IntakeStore) -> None:
    now = [1000.0]
    store.clock = lambda: now[0]
    events = [event(str(n)) for n in range(5)]
    await store.take(events)
    first, second, third, fourth, fifth = (o.sequence for o in await store.pending(0, 10))
    assert [o.sequence for o in await store.pending(second, 2)] == [third, fourth]
    now[0] = 1010.0
    await store.mark_published([first, third])
    await store.mark_dead(second, "broker refused: Not authorized (0x87)")
    await store.mark_dead(first, "too late: it was published")  # changes nothing
    assert [o.sequence for o in await store.pending(0, 10)] == [fourth, fifth]
    [dead] = await store.dead_events(0, 10)
    assert (dead.sequence, dead.id, dead.reason) == (
        second,
        events[1].id,
        "broker refused: Not authorized (0x87)",
    )
    assert parse_event(dead.payload).id == events[1].id
    stats = await store.stats()
    assert (stats.stored, stats.published, stats.pending, stats.dead) == (5, 2, 2, 1)
    assert stats.oldest_pending_age == 10.0
    await store.mark_published([fourth, fifth])
    assert (await store.stats()).oldest_pending_age is None


async def test_notes_are_kept_and_paged(store: IntakeStore) -> None:
    await store.record(
        [
            Note("draft", "woo-main", "40", "checkout-draft", "webhook order.updated", b"{}"),
            Note("dead", "woo-main", None, "not JSON", "webhook order.created", b"\xff{"),
            Note("trashed", "woo-main", "41", "order.deleted", "webhook order.deleted", b"{}"),
            Note("dead", "shopify", "9", "line 1: no SKU", "poll", b'{"id": 9}'),
        ]
    )
    every = await store.notes(None, 0, 10)
    assert [n.kind for n in every] == ["draft", "dead", "trashed", "dead"]
    dead = await store.notes("dead", 0, 10)
    assert [(n.shop, n.order_ref, n.reason, n.body) for n in dead] == [
        ("woo-main", None, "not JSON", b"\xff{"),
        ("shopify", "9", "line 1: no SKU", b'{"id": 9}'),
    ]
    assert [n.id for n in await store.notes("dead", dead[0].id, 10)] == [dead[1].id]
    assert (await store.stats()).notes == {"draft": 1, "trashed": 1, "gone": 0, "dead": 2}
    with pytest.raises(ValueError, match="not one of"):
        await store.record([Note("lost", "s", None, "r", "poll", b"")])  # type: ignore[arg-type]


async def test_cursors(store: IntakeStore) -> None:
    assert await store.cursor("woo-main") is None
    at = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)
    await store.set_cursor("woo-main", at)
    await store.set_cursor("woo-main", at + timedelta(seconds=1))
    madrid = datetime(2026, 11, 23, 13, 0, 0, tzinfo=UTC).astimezone(ZoneInfo("Europe/Madrid"))
    await store.set_cursor("presta", madrid)
    assert await store.cursor("woo-main") == at + timedelta(seconds=1)
    back = await store.cursor("presta")
    assert back == madrid and back is not None and back.tzinfo == UTC
    with pytest.raises(ValueError, match="no time zone"):
        await store.set_cursor("x", datetime(2026, 1, 1))


async def test_everything_survives_a_reopen(url: str) -> None:
    async with await IntakeStore.open(url, PREFIX) as store:
        await store.take([event("1"), event("2")])
        await store.set_cursor("woo-main", T0)
    async with await IntakeStore.open(url, "other-prefix") as store:
        assert await store.take([event("1"), event("2", content="b")]) == [
            "duplicate",
            "conflict",
        ]
        assert [o.topic for o in await store.pending(0, 10)] == [
            "other-prefix/acme/erp-1/in/order"
        ] * 2
        assert await store.cursor("woo-main") == T0


async def test_a_newer_schema_is_refused(url: str) -> None:
    async with await IntakeStore.open(url, PREFIX) as store, store.engine.begin() as conn:
        await conn.execute(
            text("UPDATE intake_meta SET value = :v WHERE name = 'schema_version'"),
            {"v": str(SCHEMA_VERSION + 1)},
        )
    with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        await IntakeStore.open(url, PREFIX)


async def test_sqlite_is_durable(tmp_path: Path) -> None:
    async with (
        await IntakeStore.open(f"sqlite:///{tmp_path / 'i.db'}", PREFIX) as store,
        store.engine.connect() as conn,
    ):
        assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"
        assert await conn.scalar(text("PRAGMA synchronous")) == 2  # FULL


async def test_one_intake_process_per_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'intake.db'}"
    async with await IntakeStore.open(url, PREFIX) as first:
        await first.take([event("1")])
        async with await IntakeStore.open(url, PREFIX) as second:
            assert (await second.stats()).pending == 1  # reading is fine
            with pytest.raises(StoreBusy, match="serves one intake process"):
                await second.take([event("2")])
    async with await IntakeStore.open(url, PREFIX) as third:
        assert await third.take([event("2")]) == ["stored"]


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("mysql://root@127.0.0.1/i", "store.url: mysql:// is not supported"),
        ("sqlite:///:memory:", "SQLite needs a file path (sqlite:///path/to/intake.db)"),
    ],
)
async def test_bad_urls_are_named(bad: str, words: str) -> None:
    with pytest.raises(StoreError, match=words.replace("(", r"\(").replace(")", r"\)")):
        await IntakeStore.open(bad, PREFIX)


async def test_an_unreachable_database_is_a_store_error_without_the_password() -> None:
    with pytest.raises(StoreError, match=r"intake store postgresql\+asyncpg://p:\*\*\*@") as e:
        await IntakeStore.open("postgresql://p:hunter2@127.0.0.1:1/intake", PREFIX)
    assert "hunter2" not in str(e.value)


def assert_versions_grow_with_sequence(outgoing: Sequence[Outgoing]) -> None:
    """Per order, a higher sequence never holds an older version: the newest state of an
    order is its highest sequence."""
    last: dict[str, str] = {}
    for out in sorted(outgoing, key=lambda o: o.sequence):
        envelope = orjson.loads(out.payload)
        key = f"{envelope['type']} {envelope['subject']}"
        assert envelope["time"] >= last.get(key, ""), f"{key}: older version at {out.sequence}"
        last[key] = envelope["time"]


# --- the property: a plain dict model agrees ------------------------------------------


@dataclass
class Model:
    """The rule of take(), written plainly: ids seen, and per order its newest state."""

    ids: set[str] = field(default_factory=set)
    newest: dict[tuple[str, str], tuple[datetime, str]] = field(default_factory=dict)
    stored: list[str] = field(default_factory=list)
    last: dict[tuple[str, str], str] = field(default_factory=dict)

    def take(self, events: list[NewEvent], reread: bool) -> list[Taken]:
        out: list[Taken] = []
        for e in events:
            head = self.newest.get((e.kind, e.ref))
            if e.id in self.ids:
                out.append("duplicate")
            elif head is not None and e.version < head[0]:
                out.append("stale")
            elif head is not None and e.version == head[0] and e.digest != head[1] and not reread:
                out.append("conflict")
            else:
                out.append("stored")
                self.ids.add(e.id)
                self.newest[(e.kind, e.ref)] = (e.version, e.digest)
                self.stored.append(e.id)
                self.last[(e.kind, e.ref)] = e.id
        return out


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[list[tuple[str, str, int, str]], bool]]:
    """Batches of (kind, ref, second, content), each taken with reread or not: few orders,
    seconds and contents, so duplicates, conflicts and stale versions are common."""
    state = st.tuples(
        st.sampled_from(["order", "return"]),
        st.sampled_from(["1", "2"]),
        st.integers(0, 3),
        st.sampled_from(["a", "b", "c"]),
    )
    return draw(
        st.lists(st.tuples(st.lists(state, min_size=1, max_size=4), st.booleans()), max_size=12)
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(history=histories())
async def test_take_agrees_with_a_plain_model(
    url: str, history: list[tuple[list[tuple[str, str, int, str]], bool]]
) -> None:
    shop = f"s{secrets.token_hex(4)}"  # each example its own shop in the one database
    model = Model()
    async with await IntakeStore.open(url, PREFIX) as store:
        for batch, reread in history:
            events = [
                event(ref, second, content, shop=shop, kind=kind)
                for kind, ref, second, content in batch
            ]
            assert await store.take(events, reread=reread) == model.take(events, reread), (
                batch,
                reread,
            )
        pending = await store.pending(0, 100_000)
    mine = [out for out in pending if orjson.loads(out.payload)["data"]["shop"] == shop]
    assert [out.id for out in mine] == model.stored  # ascending sequence is take order
    newest: dict[str, str] = {}
    for out in mine:
        envelope = orjson.loads(out.payload)
        newest[f"{envelope['type']} {envelope['subject']}"] = out.id
    assert_versions_grow_with_sequence(mine)
    assert newest == {
        f"distillsync.{kind}.upsert {shop}/{ref}": model.last[(kind, ref)]
        for kind, ref in model.newest
    }


# --- two intake processes on one PostgreSQL -----------------------------------------------


def racing_stream(seed: int) -> list[NewEvent]:
    """Ten orders, each through a few seconds with up to three states per second."""
    rng = random.Random(seed)
    stream = []
    for ref in range(10):
        for second in range(4):
            for content in rng.sample("abc", rng.randint(1, 3)):
                stream.append(event(str(ref), second, content, shop=f"race{seed}"))
    return stream


async def take_like_an_intake(store: IntakeStore, events: list[NewEvent]) -> list[str]:
    """Take each batch; a conflict is re-read (here: the same state) and taken again.
    The ids this store stored."""
    stored = []
    for start in range(0, len(events), 3):
        batch = events[start : start + 3]
        verdicts = await store.take(batch)
        stored += [e.id for e, v in zip(batch, verdicts, strict=True) if v == "stored"]
        for conflicting in [e for e, v in zip(batch, verdicts, strict=True) if v == "conflict"]:
            if await store.take([conflicting], reread=True) == ["stored"]:
                stored.append(conflicting.id)
    return stored


@pytest.mark.postgres
async def test_two_stores_on_one_postgresql_store_each_event_once() -> None:
    with postgres_database() as pg_url:
        first = await IntakeStore.open(pg_url, PREFIX)
        second = await IntakeStore.open(pg_url, PREFIX)
        try:
            for seed in range(5):
                stream = racing_stream(seed)
                # The same deliveries reach both, each in its own order, four takers each.
                orders = [
                    random.Random(seed * 10 + n).sample(stream, len(stream)) for n in range(8)
                ]
                results = await asyncio.gather(
                    *(
                        take_like_an_intake(first if n % 2 else second, order)
                        for n, order in enumerate(orders)
                    )
                )
                stored = [event_id for result in results for event_id in result]
                assert len(stored) == len(set(stored))  # no id stored twice
                pending = await first.pending(0, 100_000)
                assert sorted(stored) == sorted(o.id for o in pending)
                assert_versions_grow_with_sequence(pending)
                # Every order ends at its last second, whichever store took what.
                last: dict[str, str] = {}
                for out in pending:
                    data = orjson.loads(out.payload)["data"]
                    last[data["order_ref"]] = data["version"]
                assert last == dict.fromkeys(
                    (str(ref) for ref in range(10)), "2026-11-23T12:00:03Z"
                )
                await first.mark_published([o.sequence for o in pending])
        finally:
            await first.close()
            await second.close()


# --- a take that returned survives a SIGKILL ----------------------------------------------

_TAKER = """
import asyncio, sys
from datetime import UTC, datetime, timedelta
from relay.intake.identity import digest, event_id
from relay.intake.store import IntakeStore, NewEvent

async def main(url, start):
    store = await IntakeStore.open(url, "distillsync")
    n = start
    while True:
        version = datetime(2026, 11, 23, tzinfo=UTC) + timedelta(seconds=n)
        data = {"shop": "kill", "order_ref": str(n % 7), "version": version.isoformat(), "n": n}
        d = digest(data)
        eid = str(event_id("kill", str(n % 7), data["version"], d))
        event = NewEvent("order", "kill", str(n % 7), version, d, eid, "acme", "erp-1", data)
        if await store.take([event]) == ["stored"]:
            print(eid, flush=True)
        n += 1

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def takes_until_killed(url: str, start: int, at_least: int) -> list[str]:
    """Run the taker, SIGKILL it once it said ``at_least`` takes returned; what it said."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _TAKER, url, str(start)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    said: list[bytes] = []
    try:
        while len(said) < at_least:
            line = proc.stdout.readline()
            assert line, f"the taker exited with {proc.wait()}"
            said.append(line)
        proc.send_signal(signal.SIGKILL)
        said += proc.stdout.readlines()  # what it printed before it died
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    return [line.decode().strip() for line in said if line.endswith(b"\n")]


async def test_every_take_that_returned_survives_a_sigkill(url: str) -> None:
    returned: list[str] = []
    for round_ in range(4):
        returned += takes_until_killed(url, round_ * 100_000, at_least=20 + 15 * round_)
        async with await IntakeStore.open(url, PREFIX) as store:
            stored = set(await sequences(store))
        missing = [event_id for event_id in returned if event_id not in stored]
        assert missing == [], f"round {round_}: {len(missing)} returned takes lost"
