"""The dedupe/version store: what turns at-least-once delivery into an effect applied once.

The contract's rule, per event: drop it if its ``id`` was recorded; drop it if its
``sequence`` is not newer than the last recorded for its key (source, entity, subject);
otherwise apply it, and only then record it. A crash between the apply and the record
redelivers the event; events carry absolute state, so applying it again is harmless, and
once recorded every later redelivery is a no-op. :meth:`VersionStore.claim` is that rule
as one unit of work::

    async with store.claim(events) as claim:   # duplicates / stale / fresh
        results = await sink.apply(claim.fresh)
        claim.record(claim.fresh)               # applied, skipped or dead: all processed
    # committed here; an exception inside the block records nothing

Two backends behind one interface, chosen by the URL:

* **SQLite** (``sqlite:///path``) serves one consumer process. Claims with a key in common
  take turns inside the process; the file is written in short ``BEGIN IMMEDIATE``
  transactions (one to read the versions, one to record), never held open while a shop
  is called, so the consumer's batches on distinct keys run side by side. A lock file
  (:meth:`VersionStore.reserve`, at the latest at the first claim) keeps a second
  consuming process out: two processes gating on one file would each apply what the
  other has not recorded yet.
* **PostgreSQL** (``postgresql://...``) serves consumers that scale out. A claim is one
  transaction held for the whole block: it locks the version rows of its keys
  (``INSERT .. ON CONFLICT DO NOTHING`` creates the missing ones, then
  ``SELECT .. FOR UPDATE``; both in key order, so two consumers cannot deadlock). A
  consumer whose batch overlaps waits, then reads the first one's record: neither
  applies a stale version nor an event twice.

The store also keeps what the shop sinks learnt of their SKUs (``relay_sku_ids``, see
:mod:`relay.sinks.lookup`): a cache, outside the claims' transactions, that a restarted
consumer starts from.

Both go through SQLAlchemy's async engine (aiosqlite, asyncpg), one statement per table
per claim: lookups are ``IN`` lists of up to :data:`CHUNK` keys (a batch of 1000 events
is one statement each), writes are ``executemany``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Select,
    Table,
    Text,
    bindparam,
    delete,
    func,
    or_,
    select,
    tuple_,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from relay.db import (
    Backend,
    database_url,
    hold_lock_file,
    insert_for,
    is_deadlock,
    make_engine,
    reason,
    setup_schema,
)
from relay.errors import SchemaTooNew, StoreBusy, StoreError
from relay.model import Event

__all__ = [
    "CHUNK",
    "SCHEMA_VERSION",
    "Claim",
    "DeadLetter",
    "SchemaTooNew",
    "StoreBusy",
    "StoreError",
    "StoreStats",
    "VersionStore",
    "classify",
    "store_url",
]

SCHEMA_VERSION = 2
"""1: versions, seen ids, dead letters. 2: adds ``relay_sku_ids`` (the sinks' known ids)."""
CHUNK = 1000
"""Keys per lookup statement: 3000 parameters, under SQLite's 32766 and asyncpg's 32767."""
_SETUP_LOCK = 0x64_73_72_6C  # pg_advisory_xact_lock id for table creation ("dsrl")

Key = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    time: float
    """Unix time it was stored."""
    topic: str
    reason: str
    raw: bytes
    """The message exactly as received."""
    event_id: str | None
    sink: str | None
    """The sink that declared it dead; ``None`` for a message that never became an event."""


@dataclass(frozen=True, slots=True)
class StoreStats:
    ids: int
    """Recorded event ids (until pruned)."""
    keys: int
    """Keys with a recorded version."""
    dead_letters: int


# --- schema ---------------------------------------------------------------------------

# PostgreSQL compares text in byte order under "C", as Python and SQLite do: the order in
# which claims lock keys, and the order of the zero-padded sequences, is the same everywhere.
_Text = Text().with_variant(Text(collation="C"), "postgresql")
_METADATA = MetaData()
_META = Table(
    "relay_meta",
    _METADATA,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
)
_VERSIONS = Table(
    "relay_versions",
    _METADATA,
    Column("source", _Text, primary_key=True),
    Column("entity", _Text, primary_key=True),
    Column("subject", _Text, primary_key=True),
    Column("sequence", _Text),  # NULL: a row created only to be locked, nothing recorded yet
    Column("updated", Double),
)
_SEEN = Table(
    "relay_seen_ids",
    _METADATA,
    Column("id", _Text, primary_key=True),
    Column("recorded", Double, nullable=False),
    Index("relay_seen_ids_recorded", "recorded"),
)
_DEAD = Table(
    "relay_dead_letters",
    _METADATA,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("time", Double, nullable=False),
    Column("topic", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("event_id", Text),
    Column("sink", Text),
    Column("raw", LargeBinary, nullable=False),
    sqlite_autoincrement=True,  # ids never reused: readers page with "after"
)
_SKU_IDS = Table(  # schema 2: what relay.sinks.lookup remembers of each sink's SKUs
    "relay_sku_ids",
    _METADATA,
    Column("sink", _Text, primary_key=True),
    Column("sku", _Text, primary_key=True),
    Column("ids", Text, nullable=False),  # JSON text, the sink's to read
    Column("updated", Double, nullable=False),
)
_KEY_COLUMNS = (_VERSIONS.c.source, _VERSIONS.c.entity, _VERSIONS.c.subject)


# --- the verdict on a batch -----------------------------------------------------------


def classify(
    events: Sequence[Event], last: dict[Key, str | None], seen: set[str]
) -> tuple[tuple[Event, ...], tuple[Event, ...], tuple[Event, ...]]:
    """``(duplicates, stale, fresh)``, each in input order.

    A duplicate's id is recorded, or came earlier in this batch. Of the rest, an event is
    stale when its key's recorded sequence is not older, or when the batch holds a newer
    event of its key: only the newest of a key is applied, since each carries the whole
    state.
    """
    ids = set(seen)
    duplicates: list[Event] = []
    candidates: list[Event] = []
    for event in events:
        (duplicates if event.id in ids else candidates).append(event)
        ids.add(event.id)
    newest: dict[Key, Event] = {}
    for event in candidates:
        floor = last.get(event.key)
        best = newest.get(event.key)
        if (floor is None or event.sequence > floor) and (
            best is None or event.sequence > best.sequence
        ):
            newest[event.key] = event
    fresh = tuple(e for e in candidates if newest.get(e.key) is e)
    stale = tuple(e for e in candidates if newest.get(e.key) is not e)
    return tuple(duplicates), stale, fresh


class Claim:
    """One batch's verdict, and what to write when the ``async with`` block ends.

    ``record`` and ``dead`` only collect: everything is written in one go as the block
    exits, in the claim's transaction, and nothing at all if the block raises.
    """

    __slots__ = ("_advance", "_dead", "_ids", "_last", "_open", "duplicates", "fresh", "stale")

    def __init__(
        self, events: Sequence[Event], last: dict[Key, str | None], seen: set[str]
    ) -> None:
        self.duplicates, self.stale, self.fresh = classify(events, last, seen)
        self._last = last  # every claimed key, with its recorded sequence
        self._ids: dict[str, None] = {}
        self._advance: dict[Key, str] = {}
        self._dead: list[dict[str, Any]] = []
        self._open = True

    def record(self, events: Iterable[Event]) -> None:
        """These events are processed (applied, skipped or dead): their ids are recorded
        and their keys' versions move up to them, so a redelivery is dropped."""
        for event in events:
            self._check(event)
            self._ids[event.id] = None
            floor = self._advance.get(event.key) or self._last[event.key]
            if floor is None or event.sequence > floor:
                self._advance[event.key] = event.sequence

    def dead(self, event: Event, reason: str, sink: str) -> None:
        """``sink`` declared ``event`` dead: keep the message with the reason (the event
        is processed all the same: pass it to :meth:`record` too)."""
        self._check(event)
        self._dead.append(
            {
                "topic": event.topic,
                "reason": reason,
                "raw": event.raw,
                "event_id": event.id,
                "sink": sink,
            }
        )

    def _check(self, event: Event) -> None:
        if not self._open:
            raise RuntimeError(
                "this claim is over: call record() and dead() inside its async with block"
            )
        if event.key not in self._last:
            raise ValueError(f"event {event.id} ({'/'.join(event.key)}) is not in this claim")

    @contextlib.contextmanager
    def _lent(self) -> Iterator[Claim]:
        """Open for ``record`` and ``dead`` only inside the claim's block."""
        try:
            yield self
        finally:
            self._open = False


# --- URLs and engines -----------------------------------------------------------------


def store_url(url: str) -> tuple[Backend, URL]:
    """The backend and SQLAlchemy async URL for ``store.url``; errors never echo a password."""
    return database_url(url)


def _engine(backend: Backend, url: URL) -> AsyncEngine:
    # A claim holds its connection while the shop is called: room for the consumer's
    # concurrent batches (at most 64) without waiting on the pool.
    return make_engine(backend, url, pool_size=4, max_overflow=60)


# --- statements -----------------------------------------------------------------------


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _versions_of(keys: Sequence[Key]) -> Select[Any]:
    # FOR UPDATE locks in ORDER BY order on PostgreSQL; SQLite renders none (its claims
    # take turns in the process instead).
    return (
        select(*_KEY_COLUMNS, _VERSIONS.c.sequence)
        .where(tuple_(*_KEY_COLUMNS).in_(keys))
        .order_by(*_KEY_COLUMNS)
        .with_for_update()
    )


def _key_rows(keys: Iterable[Key]) -> list[dict[str, str]]:
    return [{"source": s, "entity": e, "subject": j} for s, e, j in keys]


class _KeyTurns:
    """Claims with a key in common take turns (SQLite: one process, many batches)."""

    def __init__(self) -> None:
        self._held: dict[Key, asyncio.Event] = {}

    @asynccontextmanager
    async def hold(self, keys: Sequence[Key]) -> AsyncIterator[None]:
        while busy := next((self._held[k] for k in keys if k in self._held), None):
            await busy.wait()
        # No await between the check above and taking every key: nobody slips in.
        released = asyncio.Event()
        self._held.update(dict.fromkeys(keys, released))
        try:
            yield
        finally:
            for key in keys:
                del self._held[key]
            released.set()


# --- the store ------------------------------------------------------------------------


class VersionStore:
    """Recorded ids, the last recorded sequence per key, dead letters, and the sinks'
    known SKU ids (:mod:`relay.sinks.lookup`)."""

    def __init__(self, engine: AsyncEngine, backend: Backend, url: URL) -> None:
        self.engine = engine
        self.clock: Callable[[], float] = time.time
        """Wall clock for recorded ids and dead letters (tests replace it)."""
        self.backend: Backend = backend
        self.url = url.render_as_string(hide_password=True)
        self._turns = _KeyTurns()
        # SQLite has one writer at a time: queue in the loop rather than in busy_timeout.
        self._serial: AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if backend == "sqlite" else contextlib.nullcontext()
        )
        self._insert = insert_for(backend)
        self._lock_file: IO[bytes] | None = None

    @classmethod
    async def open(cls, url: str) -> VersionStore:
        """Connect, create the tables if missing, refuse a schema newer than this kit's."""
        backend, target = store_url(url)
        store = cls(_engine(backend, target), backend, target)
        try:
            await store._setup()
        except (SQLAlchemyError, OSError) as error:
            await store.close()
            raise StoreError(f"version store {store.url}: {reason(error)}") from error
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        await self.engine.dispose()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    async def __aenter__(self) -> VersionStore:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # --- claims -----------------------------------------------------------------------

    def claim(self, events: Sequence[Event]) -> AbstractAsyncContextManager[Claim]:
        """Classify ``events`` with their keys held until the block ends, then write what
        the block recorded; see the module docstring."""
        if self.backend == "postgresql":
            return self._claim_rows(list(events))
        return self._claim_turns(list(events))

    @asynccontextmanager
    async def _claim_rows(self, events: list[Event]) -> AsyncIterator[Claim]:
        """PostgreSQL: one transaction, the keys' version rows locked throughout."""
        keys = sorted({e.key for e in events})
        async with self.engine.connect() as conn:
            last, seen = await self._lock(conn, keys, [e.id for e in events])
            with Claim(events, last, seen)._lent() as claim:
                yield claim
            await self._write(conn, claim)
            await conn.commit()  # leaving the block any other way rolls back

    @asynccontextmanager
    async def _claim_turns(self, events: list[Event]) -> AsyncIterator[Claim]:
        """SQLite: the keys held in the process; read, then write, in short transactions."""
        self.reserve()
        keys = sorted({e.key for e in events})
        async with self._turns.hold(keys):
            async with self._transaction() as conn:
                last, seen = await self._read(conn, keys, [e.id for e in events])
            with Claim(events, last, seen)._lent() as claim:
                yield claim
            if claim._ids or claim._dead:
                async with self._transaction() as conn:
                    await self._write(conn, claim)

    async def _lock(
        self, conn: AsyncConnection, keys: list[Key], ids: list[str]
    ) -> tuple[dict[Key, str | None], set[str]]:
        """Create the missing version rows, lock all of them in key order, then read.
        Sorted keys make a deadlock unexpected; if PostgreSQL reports one, start over."""
        for attempt in range(3):
            try:
                for part in _chunks(keys):
                    await conn.execute(
                        self._insert(_VERSIONS).on_conflict_do_nothing(), _key_rows(part)
                    )
                return await self._read(conn, keys, ids)
            except DBAPIError as error:
                if attempt == 2 or not is_deadlock(error):
                    raise
                await conn.rollback()
        raise AssertionError("unreachable")

    @staticmethod
    async def _read(
        conn: AsyncConnection, keys: list[Key], ids: list[str]
    ) -> tuple[dict[Key, str | None], set[str]]:
        last: dict[Key, str | None] = dict.fromkeys(keys)
        for part in _chunks(keys):
            for row in await conn.execute(_versions_of(part)):
                last[(row.source, row.entity, row.subject)] = row.sequence
        seen: set[str] = set()
        for part in _chunks(list(dict.fromkeys(ids))):
            seen.update(await conn.scalars(select(_SEEN.c.id).where(_SEEN.c.id.in_(part))))
        return last, seen

    async def _write(self, conn: AsyncConnection, claim: Claim) -> None:
        now = self.clock()
        if claim._ids:
            await conn.execute(
                self._insert(_SEEN).on_conflict_do_nothing(),
                [{"id": i, "recorded": now} for i in claim._ids],
            )
        if claim._advance:
            await conn.execute(
                self._advance_versions(),
                [
                    {**_key_rows([key])[0], "sequence": sequence, "updated": now}
                    for key, sequence in claim._advance.items()
                ],
            )
        if claim._dead:
            await conn.execute(_DEAD.insert(), [{**row, "time": now} for row in claim._dead])

    def _advance_versions(self) -> Any:
        """Upsert a key's sequence, never moving it back (the claim checked; this is the
        database keeping its own invariant)."""
        statement = self._insert(_VERSIONS)
        new = statement.excluded
        return statement.on_conflict_do_update(
            index_elements=list(_KEY_COLUMNS),
            set_={"sequence": new.sequence, "updated": new.updated},
            where=or_(_VERSIONS.c.sequence.is_(None), _VERSIONS.c.sequence < new.sequence),
        )

    def reserve(self) -> None:
        """SQLite: take the lock file that keeps other consuming processes out, or raise
        :class:`StoreBusy`. A consumer calls it before it connects to the broker (where a
        second one would knock the first off, under the same client id); the first claim
        takes it otherwise. PostgreSQL needs none: its claims lock rows."""
        if self.backend != "sqlite" or self._lock_file is not None:
            return
        database = str(self.engine.url.database)
        handle = hold_lock_file(
            database,
            f"another consumer holds the version store {database}, and a SQLite store "
            "serves one consumer (use PostgreSQL to run several)",
        )
        self._lock_file = handle

    # --- the sinks' known ids (relay.sinks.lookup.IdStore) ------------------------------

    async def sku_ids(self, sink: str, skus: Sequence[str]) -> dict[str, str]:
        """The stored ids (JSON text) of those of ``skus`` that ``sink`` has some for."""
        found: dict[str, str] = {}
        async with self._transaction() as conn:
            for part in _chunks(list(skus)):
                rows = await conn.execute(
                    select(_SKU_IDS.c.sku, _SKU_IDS.c.ids).where(
                        _SKU_IDS.c.sink == sink, _SKU_IDS.c.sku.in_(part)
                    )
                )
                found.update((row.sku, row.ids) for row in rows)
        return found

    async def keep_sku_ids(self, sink: str, ids: Mapping[str, str]) -> None:
        """Store ``ids`` (SKU -> JSON text) of ``sink``, replacing what it had."""
        if not ids:
            return
        statement = self._insert(_SKU_IDS)
        upsert = statement.on_conflict_do_update(
            index_elements=[_SKU_IDS.c.sink, _SKU_IDS.c.sku],
            set_={"ids": statement.excluded.ids, "updated": statement.excluded.updated},
        )
        now = self.clock()
        async with self._transaction() as conn:
            await conn.execute(
                upsert,
                [
                    {"sink": sink, "sku": sku, "ids": text, "updated": now}
                    for sku, text in sorted(ids.items())
                ],
            )

    async def drop_sku_ids(self, sink: str, stale: Mapping[str, str]) -> None:
        """Delete each SKU's row of ``sink`` that still holds the ids given (a row another
        consumer replaced since with newer ids stays)."""
        statement = delete(_SKU_IDS).where(
            _SKU_IDS.c.sink == sink,
            _SKU_IDS.c.sku == bindparam("stale_sku"),
            _SKU_IDS.c.ids == bindparam("stale_ids"),
        )
        async with self._transaction() as conn:
            await conn.execute(
                statement,
                [{"stale_sku": sku, "stale_ids": text} for sku, text in sorted(stale.items())],
            )

    # --- the rest ---------------------------------------------------------------------

    async def add_dead_letter(
        self,
        raw: bytes,
        topic: str,
        reason: str,
        event_id: str | None = None,
        sink: str | None = None,
    ) -> None:
        """A message that never became a valid event (unparseable, schema errors)."""
        async with self._transaction() as conn:
            await conn.execute(
                _DEAD.insert(),
                [
                    {
                        "time": self.clock(),
                        "topic": topic,
                        "reason": reason,
                        "raw": bytes(raw),
                        "event_id": event_id,
                        "sink": sink,
                    }
                ],
            )

    async def dead_letters(self, after: int = 0, limit: int = 100) -> list[DeadLetter]:
        """Oldest first, those with ``id > after``."""
        query = select(_DEAD).where(_DEAD.c.id > after).order_by(_DEAD.c.id).limit(limit)
        async with self._transaction() as conn:
            rows = (await conn.execute(query)).all()
        return [
            DeadLetter(
                id=r.id,
                time=r.time,
                topic=r.topic,
                reason=r.reason,
                raw=bytes(r.raw),
                event_id=r.event_id,
                sink=r.sink,
            )
            for r in rows
        ]

    async def stats(self) -> StoreStats:
        count = select(func.count())
        async with self._transaction() as conn:
            ids = await conn.scalar(count.select_from(_SEEN))
            keys = await conn.scalar(
                count.select_from(_VERSIONS).where(_VERSIONS.c.sequence.is_not(None))
            )
            dead = await conn.scalar(count.select_from(_DEAD))
        return StoreStats(ids=ids or 0, keys=keys or 0, dead_letters=dead or 0)

    async def prune(self, older_than: float) -> int:
        """Forget ids recorded more than ``older_than`` seconds ago; how many. Versions stay:
        a redelivery of a forgotten event is still dropped, as stale."""
        cutoff = self.clock() - older_than
        async with self._transaction() as conn:
            result = await conn.execute(delete(_SEEN).where(_SEEN.c.recorded < cutoff))
        return int(result.rowcount)

    # --- plumbing ---------------------------------------------------------------------

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self._serial, self.engine.begin() as conn:
            yield conn

    async def _setup(self) -> None:
        def refusal(found: int) -> str:
            return (
                f"version store {self.url} has schema version {found}, newer than this "
                f"relay kit's {SCHEMA_VERSION}: upgrade distillsync, or point store.url "
                "at another database"
            )

        async with self._transaction() as conn:
            await setup_schema(
                conn, self.backend, _METADATA, _META, SCHEMA_VERSION, _SETUP_LOCK, refusal
            )
