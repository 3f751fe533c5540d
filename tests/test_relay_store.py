"""The relay kit's dedupe/version store, on a SQLite file and on a real PostgreSQL.

Each PostgreSQL test gets a throwaway database, dropped afterwards. The consumers below
apply to an in-memory "shop" that logs every write, so a stale or doubled write shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import subprocess
import sys
import tempfile
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import text

from relay.model import Event
from relay.store import (
    CHUNK,
    SCHEMA_VERSION,
    SchemaTooNew,
    StoreBusy,
    StoreError,
    VersionStore,
)
from tests.erp import PG_ADMIN
from tests.support import REPO

AGENT = "urn:distillsync:acme:erp-madrid-1"
OTHER_AGENT = "urn:distillsync:acme:erp-bilbao-2"
Key = tuple[str, str, str]


def stock(
    sequence: int, sku: str = "SKU-1", on_hand: int = 0, source: str = AGENT, id: str | None = None
) -> Event:
    """A stock event as the consumer hands it over; ids default to one per version."""
    subject = f"{sku}/MAD"
    return Event(
        id=id or f"{source}#{sequence}",
        source=source,
        entity="stock",
        op="upsert",
        subject=subject,
        sequence=f"{sequence:020d}",
        time="2026-11-23T12:00:00Z",
        data={"sku": sku, "warehouse": "MAD", "on_hand": on_hand},
        raw=b'{"specversion":"1.0"}',
        topic=f"distillsync/acme/erp/out/stock/{sku}/MAD",
    )


# --- stores on both backends ----------------------------------------------------------


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    name = f"relay_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'relay.db'}"
    else:
        with postgres_database() as pg_url:
            yield pg_url


@pytest.fixture
async def store(url: str) -> AsyncIterator[VersionStore]:
    async with await VersionStore.open(url) as opened:
        yield opened


async def process(store: VersionStore, events: Sequence[Event]) -> tuple[Event, ...]:
    """Claim, "apply" the fresh ones, record them; what was fresh."""
    async with store.claim(events) as claim:
        claim.record(claim.fresh)
        return claim.fresh


# --- the verdict ----------------------------------------------------------------------


async def test_duplicates_stale_and_fresh(store: VersionStore) -> None:
    await process(store, [stock(5)])
    old, again, newer, newest = stock(3), stock(5), stock(6), stock(7)
    other, other_copy = stock(1, "SKU-2"), stock(1, "SKU-2")
    async with store.claim([again, old, newest, other, newer, other_copy]) as claim:
        assert claim.duplicates == (again, other_copy)  # recorded / earlier in this batch
        assert claim.stale == (old, newer)  # not newer than 5 / a newer one in the batch
        assert claim.fresh == (newest, other)  # input order


async def test_the_newest_of_a_key_in_a_batch_wins(store: VersionStore) -> None:
    a2, a9, a4, b3 = stock(2), stock(9), stock(4), stock(3, "SKU-2")
    async with store.claim([a2, a9, b3, a4]) as claim:
        assert claim.fresh == (a9, b3)
        assert claim.stale == (a2, a4)
        claim.record(claim.fresh)
    assert await process(store, [stock(8, id="late copy of 8"), stock(10)]) == (stock(10),)


async def test_keys_are_source_entity_and_subject(store: VersionStore) -> None:
    """Sequences are per agent: another agent's lower number is not stale."""
    await process(store, [stock(50)])
    price = Event(
        id="p-1",
        source=AGENT,
        entity="price",
        op="upsert",
        subject="SKU-1/MAD",
        sequence=f"{1:020d}",
        time="2026-11-23T12:00:00Z",
        data={},
        raw=b"{}",
    )
    fresh = (stock(1, source=OTHER_AGENT), price)
    assert await process(store, fresh) == fresh


async def test_an_exception_records_nothing(store: VersionStore) -> None:
    events = [stock(1), stock(2, "SKU-2")]
    with pytest.raises(RuntimeError, match="shop exploded"):
        async with store.claim(events) as claim:
            claim.record(claim.fresh)
            claim.dead(events[1], "unknown SKU SKU-2", "shop")
            raise RuntimeError("shop exploded")
    assert await process(store, events) == tuple(events)  # redelivered: fresh again
    stats = await store.stats()
    assert (stats.ids, stats.keys, stats.dead_letters) == (2, 2, 0)


async def test_record_advances_versions_and_never_moves_them_back(store: VersionStore) -> None:
    await process(store, [stock(7)])
    async with store.claim([stock(8), stock(6)]) as claim:
        assert claim.fresh == (stock(8),)
        claim.record([stock(8), stock(6)])  # 6 after 8 in one call: the version stays at 8
    async with store.claim([stock(6, id="new id"), stock(8, id="8 again")]) as claim:
        assert claim.fresh == () and len(claim.stale) == 2
        claim.record([stock(6, id="new id")])
    assert await process(store, [stock(9)]) == (stock(9),)
    assert (await store.stats()).ids == 5  # 7, 8, 6, "new id", 9


async def test_unrecorded_fresh_events_stay_fresh(store: VersionStore) -> None:
    """A claim that records nothing (every sink unavailable) leaves no trace."""
    async with store.claim([stock(1)]) as claim:
        assert claim.fresh == (stock(1),)
    assert await process(store, [stock(1)]) == (stock(1),)
    assert (await store.stats()).keys == 1


async def test_a_claim_takes_only_its_own_events(store: VersionStore) -> None:
    async with store.claim([stock(1)]) as claim:
        with pytest.raises(ValueError, match="SKU-2/MAD"):
            claim.record([stock(1, "SKU-2")])
    with pytest.raises(RuntimeError, match="claim is over"):
        claim.record([stock(1)])


# --- dead letters, pruning, reopening --------------------------------------------------


async def test_dead_letters_inside_a_claim_and_alone(store: VersionStore) -> None:
    store.clock = lambda: 1000.0
    event = stock(3)
    async with store.claim([event]) as claim:
        claim.dead(event, "unknown SKU SKU-1 (404)", "woo-main")
        claim.record([event])
    await store.add_dead_letter(b"{not json", "distillsync/acme/x/out/stock/A", "not JSON")
    first, second = await store.dead_letters()
    assert (first.event_id, first.sink, first.reason, first.raw, first.topic, first.time) == (
        event.id,
        "woo-main",
        "unknown SKU SKU-1 (404)",
        event.raw,
        event.topic,
        1000.0,
    )
    assert (second.event_id, second.sink, second.raw) == (None, None, b"{not json")
    assert await store.dead_letters(after=first.id) == [second]
    assert await store.dead_letters(limit=1) == [first]
    assert await process(store, [event]) == ()  # a dead event is processed: not retried
    assert (await store.stats()).dead_letters == 2


async def test_prune_forgets_old_ids_yet_their_redelivery_is_stale(store: VersionStore) -> None:
    store.clock = lambda: 1000.0
    await process(store, [stock(1), stock(2, "SKU-2")])
    store.clock = lambda: 2000.0
    await process(store, [stock(3)])
    assert await store.prune(older_than=500) == 2
    assert (await store.stats()).ids == 1
    async with store.claim([stock(1), stock(3)]) as claim:
        assert claim.stale == (stock(1),)  # forgotten id, gated by its version
        assert claim.duplicates == (stock(3),)
    assert await store.prune(older_than=500) == 0


async def test_reopening_keeps_everything(url: str) -> None:
    async with await VersionStore.open(url) as store:
        await process(store, [stock(4), stock(9, "SKU-2")])
        await store.add_dead_letter(b"x", "t", "bad")
    async with await VersionStore.open(url) as store:
        stats = await store.stats()
        assert (stats.ids, stats.keys, stats.dead_letters) == (2, 2, 1)
        async with store.claim([stock(4), stock(8, "SKU-2")]) as claim:
            assert (len(claim.duplicates), len(claim.stale)) == (1, 1)


async def test_a_newer_schema_is_refused(url: str) -> None:
    async with await VersionStore.open(url) as store, store.engine.begin() as conn:
        await conn.execute(
            text("UPDATE relay_meta SET value = :v WHERE name = 'schema_version'"),
            {"v": str(SCHEMA_VERSION + 1)},
        )
    with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        await VersionStore.open(url)


async def test_sqlite_is_durable_by_default(tmp_path: Path) -> None:
    async with (
        await VersionStore.open(f"sqlite:///{tmp_path / 'r.db'}") as store,
        store.engine.connect() as conn,
    ):
        assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"
        assert await conn.scalar(text("PRAGMA synchronous")) == 2  # FULL
        assert await conn.scalar(text("PRAGMA busy_timeout")) > 0


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("mysql://root@127.0.0.1/relay", "mysql:// is not supported"),
        ("sqlite://", "SQLite needs a file path"),
        ("sqlite:////no/such/dir/relay.db", "directory /no/such/dir does not exist"),
        ("not a url", "not a database URL"),
    ],
)
async def test_bad_urls_are_named(url: str, complaint: str) -> None:
    with pytest.raises(StoreError, match=complaint):
        await VersionStore.open(url)


async def test_an_unreachable_database_is_a_store_error_without_the_password() -> None:
    with pytest.raises(StoreError, match=r"postgres:\*\*\*@127\.0\.0\.1:1/") as caught:
        await VersionStore.open("postgresql://postgres:hunter2@127.0.0.1:1/relay")
    assert "hunter2" not in str(caught.value)


async def test_a_second_process_cannot_consume_with_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    async with await VersionStore.open(url) as first:
        await process(first, [stock(1)])
        async with await VersionStore.open(url) as second:
            assert (await second.stats()).ids == 1  # reading is fine
            with pytest.raises(StoreBusy, match="serves one consumer"):
                await process(second, [stock(2)])
    async with await VersionStore.open(url) as third:
        assert await process(third, [stock(2)]) == (stock(2),)


async def test_a_big_batch_costs_a_few_statements(store: VersionStore) -> None:
    """1000 events on 1000 keys: one statement per table, not one per event."""
    statements: list[str] = []
    sqlalchemy_event.listen(
        store.engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2])
    )
    events = [stock(n + 1, f"SKU-{n}") for n in range(CHUNK)]
    assert len(await process(store, events)) == CHUNK
    assert len(statements) <= 7, statements  # BEGIN IMMEDIATE x2 on SQLite
    async with store.claim(events) as claim:
        assert len(claim.duplicates) == CHUNK
    many = [stock(CHUNK + n + 1, f"SKU-{n}") for n in range(CHUNK + 1)]
    assert len(await process(store, many)) == CHUNK + 1  # past one IN list: still right


# --- the property: any redelivery and reordering converges ------------------------------


@dataclass
class Shop:
    """Keeps the last write per key and every write, to check order after the fact."""

    state: dict[Key, Event] = field(default_factory=dict)
    writes: list[Event] = field(default_factory=list)

    def write(self, event: Event) -> None:
        self.state[event.key] = event
        self.writes.append(event)


def newest_per_key(stream: Sequence[Event]) -> dict[Key, Event]:
    newest: dict[Key, Event] = {}
    for event in stream:
        if event.key not in newest or event.sequence > newest[event.key].sequence:
            newest[event.key] = event
    return newest


def assert_every_write_was_newer(writes: Sequence[Event]) -> None:
    """No stale write (per key, strictly increasing) and so no event applied twice."""
    last: dict[Key, str] = {}
    for event in writes:
        assert event.sequence > last.get(event.key, ""), f"stale write {event.id} to {event.key}"
        last[event.key] = event.sequence


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[Event], list[list[Event]], set[int]]:
    """A stream of a few keys from two agents, delivered reordered, with duplicates, in
    batches of any size; plus which batches crash after applying, before committing."""
    updates = draw(
        st.lists(
            st.tuples(
                st.sampled_from([AGENT, OTHER_AGENT]),
                st.sampled_from(["SKU-1", "SKU-2", "SKU-3"]),
                st.integers(0, 99),
            ),
            min_size=1,
            max_size=20,
        )
    )
    sequences: Counter[str] = Counter()
    stream = []
    for source, sku, on_hand in updates:
        sequences[source] += 1
        stream.append(stock(sequences[source], sku, on_hand, source))
    arrivals = draw(st.permutations(stream + draw(st.lists(st.sampled_from(stream), max_size=10))))
    batches: list[list[Event]] = []
    while arrivals:
        size = draw(st.integers(1, 6))
        batches.append(arrivals[:size])
        arrivals = arrivals[size:]
    crashes = draw(st.sets(st.integers(0, len(batches) - 1), max_size=2))
    return stream, batches, crashes


class Crash(Exception):
    """The consumer dies after the shop took the writes, before the store committed."""


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries())
async def test_any_redelivery_and_reordering_converges(
    case: tuple[list[Event], list[list[Event]], set[int]],
) -> None:
    stream, batches, crashes = case
    shop = Shop()
    committed: list[Event] = []
    pending = deque(enumerate(batches))
    with tempfile.TemporaryDirectory() as folder:
        async with await VersionStore.open(f"sqlite:///{folder}/relay.db") as store:
            while pending:
                number, batch = pending.popleft()
                try:
                    async with store.claim(batch) as claim:
                        for event in claim.fresh:
                            shop.write(event)
                        claim.record(claim.fresh)
                        if number in crashes:
                            raise Crash
                except Crash:
                    pending.append((-1, batch))  # the broker redelivers it, later
                else:
                    committed.extend(claim.fresh)
    assert shop.state == newest_per_key(stream)
    assert_every_write_was_newer(committed)
    if not crashes:
        assert shop.writes == committed


# --- consumers side by side ---------------------------------------------------------------


def scrambled(stream: Sequence[Event], seed: int) -> list[list[Event]]:
    """The whole stream as a consumer might see it across redeliveries: in order but for
    shuffles within windows of 12, a third of the events twice, in batches of 1 to 8."""
    rng = random.Random(seed)
    arrivals: list[Event] = []
    for start in range(0, len(stream), 12):
        window = list(stream[start : start + 12])
        window += rng.sample(window, len(window) // 3)
        rng.shuffle(window)
        arrivals += window
    batches = []
    while arrivals:
        size = rng.randint(1, 8)
        batches.append(arrivals[:size])
        arrivals = arrivals[size:]
    return batches


def stream_of(keys: int, updates: int, seed: int) -> list[Event]:
    rng = random.Random(seed)
    return [
        stock(n, f"SKU-{rng.randrange(keys)}", rng.randrange(100)) for n in range(1, updates + 1)
    ]


async def consume(
    store: VersionStore, batches: Sequence[Sequence[Event]], shop: Shop, pause: float
) -> None:
    for batch in batches:
        async with store.claim(batch) as claim:
            await asyncio.sleep(pause)  # the shop is slow: the other consumer overlaps
            for event in claim.fresh:
                shop.write(event)
            claim.record(claim.fresh)


async def test_two_consumers_never_write_stale_nor_twice(url: str) -> None:
    """PostgreSQL: two stores (two engines) on one database; SQLite: one store, two
    concurrent batches, as the consumer runs them."""
    stream = stream_of(keys=4, updates=60, seed=1)
    shop = Shop()
    first = await VersionStore.open(url)
    second = first if url.startswith("sqlite") else await VersionStore.open(url)
    try:
        await asyncio.gather(
            consume(first, scrambled(stream, 2), shop, 0.005),
            consume(second, scrambled(stream, 3), shop, 0.005),
        )
    finally:
        await first.close()
        await second.close()
    assert_every_write_was_newer(shop.writes)
    assert shop.state == newest_per_key(stream)


# --- two OS processes on one PostgreSQL store ---------------------------------------------


def process_main() -> None:
    """A consumer process: argv is the store URL, a JSON file of batches, the write log."""
    url, batches_file, log_file = sys.argv[1:4]
    batches = [
        [Event(**fields, raw=b"{}") for fields in batch]
        for batch in orjson.loads(Path(batches_file).read_bytes())
    ]
    asyncio.run(_consume_in_process(url, batches, log_file))


async def _consume_in_process(url: str, batches: list[list[Event]], log_file: str) -> None:
    log = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    async with await VersionStore.open(url) as store:
        print("ready", flush=True)
        sys.stdin.readline()  # both start together
        waiting_for_the_other = True
        for batch in batches:
            async with store.claim(batch) as claim:
                await asyncio.sleep(0.02)
                for event in claim.fresh:  # written before the commit that releases the key
                    line = [event.id, *event.key, event.sequence, os.getpid()]
                    os.write(log, orjson.dumps(line) + b"\n")
                claim.record(claim.fresh)
            if claim.fresh and waiting_for_the_other:
                # Both take part however the machine schedules us: each pauses after its
                # first write until the other has written too (see the test).
                print("wrote", flush=True)
                sys.stdin.readline()
                waiting_for_the_other = False
        if waiting_for_the_other:
            print("wrote nothing", flush=True)
    os.close(log)


def tell(consumers: Sequence[subprocess.Popen[str]], word: str) -> None:
    for consumer in consumers:
        assert consumer.stdin is not None
        consumer.stdin.write(f"{word}\n")
        consumer.stdin.flush()


def heard(consumers: Sequence[subprocess.Popen[str]]) -> list[str]:
    lines = []
    for consumer in consumers:
        assert consumer.stdout is not None
        lines.append(consumer.stdout.readline())
    return lines


@pytest.mark.postgres
def test_two_consumer_processes_never_write_stale_nor_twice(tmp_path: Path) -> None:
    """Each consumer has the whole stream, scrambled its own way: whoever claims a key
    first writes it. A consumer that the machine runs late would find everything written
    already, so each one pauses after its first write until the other has written too
    (one that is paused holds no key, and the other always finds something newer than a
    batch); then both race through the rest."""
    stream = stream_of(keys=4, updates=150, seed=4)
    log_file = tmp_path / "writes.log"
    with postgres_database() as url:
        consumers = []
        for seed in (5, 6):
            batches_file = tmp_path / f"batches-{seed}.json"
            batches_file.write_bytes(
                orjson.dumps(
                    [
                        [
                            {
                                "id": e.id,
                                "source": e.source,
                                "entity": e.entity,
                                "op": e.op,
                                "subject": e.subject,
                                "sequence": e.sequence,
                                "time": e.time,
                                "data": e.data,
                            }
                            for e in batch
                        ]
                        for batch in scrambled(stream, seed)
                    ]
                )
            )
            consumers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        "from tests.test_relay_store import process_main; process_main()",
                        url,
                        str(batches_file),
                        str(log_file),
                    ],
                    cwd=REPO,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        assert heard(consumers) == ["ready\n"] * 2
        tell(consumers, "go")
        assert heard(consumers) == ["wrote\n"] * 2  # both took part
        tell(consumers, "on")
        assert [consumer.wait(timeout=60) for consumer in consumers] == [0, 0]
        for consumer in consumers:
            assert consumer.stdin is not None and consumer.stdout is not None
            consumer.stdin.close()
            consumer.stdout.close()
    writes = [orjson.loads(line) for line in log_file.read_bytes().splitlines()]
    by_id = {e.id: e for e in stream}
    applied = [by_id[event_id] for event_id, *_ in writes]
    assert len({pid for *_, pid in writes}) == 2  # both consumers wrote
    assert_every_write_was_newer(applied)
    final = {e.key: e for e in applied}
    assert final == newest_per_key(stream)


def test_consumer_helpers_catch_what_they_should() -> None:
    """The checks above can fail: a stale write and a double apply are both caught."""
    with pytest.raises(AssertionError, match="stale write"):
        assert_every_write_was_newer([stock(2), stock(1)])
    with pytest.raises(AssertionError, match="stale write"):
        assert_every_write_was_newer([stock(2), stock(2)])
