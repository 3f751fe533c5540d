"""The intake's durable store: inbound events kept until the broker acknowledged them, an
outbox like the agent's, on the relay side.

What it keeps:

* **events** (``intake_events``), one row per order (or return) state taken, numbered by
  the store: that number is the event's ``sequence``. Each is ``pending`` until its PUBACK
  (:meth:`IntakeStore.mark_published`), or ``dead`` with the broker's reason after a
  negative one (:meth:`IntakeStore.mark_dead`), shown in :meth:`IntakeStore.stats` and
  :meth:`IntakeStore.dead_events`;
* **heads** (``intake_heads``), per ``(shop, kind, ref)``: the version and digest of the
  newest state stored, and its sequence. One row per order, which is also what a take locks;
* **notes** (``intake_notes``): what is recorded but never published (a checkout draft, a
  trashed or gone order, a body that verified but cannot be mapped: a dead letter), with the
  body as received;
* **cursors** (``intake_cursors``): each shop's catch-up poll position.

:meth:`IntakeStore.take` decides, per event, in order:

1. ``duplicate``: its ``id`` is stored (a webhook and a poll of one state, a shop's retry);
2. ``stale``: its ``version`` is older than the newest stored for its order;
3. ``conflict``: the same ``version`` as the newest stored, other content (another
   ``digest``), and not ``reread``. Nothing is stored: the caller reads the order from the
   shop again and takes what it reads with ``reread=True``, which stores it. So the newest
   state of an order always has its highest sequence, and at equal version the higher
   sequence wins (DESIGN.md, "Identity"), though the two deliveries came in either order;
4. else ``stored``.

A take is one transaction, committed (durably: SQLite ``synchronous=FULL``) before it
returns, so the webhook handler answers 2xx only for what survives a crash.

**The one case the id cannot tell.** An event's id is a function of ``(shop, ref, version,
digest)`` and nothing else, so that one state is one event everywhere (a webhook, a poll, a
retry, another intake process). A state that comes back within the same second, A -> B ->
A at one ``version``, has the first A's id: it is taken as a ``duplicate`` of it and not
stored again, and the agent, which holds B (the higher sequence), keeps B until the order
next changes with a later ``version``. Storing the second A would need another id for the
same state, and that would make every webhook/poll pair of one state two events. Shops
move ``updated_at`` on each change, so the window is that one second.

Two backends behind one interface, chosen by the URL (:mod:`relay.db`):

* **SQLite** (``sqlite:///path``) serves one intake process: a lock file
  (:meth:`IntakeStore.reserve`, taken at the first write) keeps a second one out, and the
  process's transactions take turns.
* **PostgreSQL** (``postgresql://...``) serves several intake processes behind a load
  balancer. A take creates its orders' head rows if missing (``INSERT .. ON CONFLICT DO
  NOTHING``) then locks them (``SELECT .. FOR UPDATE``), both in key order, so two
  processes taking the same webhook at once take turns on that order: the second sees the
  first's row and answers ``duplicate``, and no conflict check interleaves with another's
  insert. Sequences are allocated under that lock, so per order they grow in commit order;
  across orders a lower sequence can commit after a higher one, which is why
  :meth:`IntakeStore.pending` readers start again from the lowest unpublished one rather
  than only after the highest they saw.

The envelope is built when read (:meth:`IntakeStore.pending`) from the stored row, byte for
byte the same on every re-send: CloudEvents 1.0 JSON, as ``agent/inbox.py`` accepts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import IO, Any, Literal, get_args

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    bindparam,
    func,
    select,
    tuple_,
    update,
)
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
from relay.errors import StoreError
from relay.intake.order import time_text

__all__ = [
    "SCHEMA_VERSION",
    "DeadEvent",
    "IntakeStore",
    "IntakeStoreStats",
    "NewEvent",
    "Note",
    "NoteKind",
    "Outgoing",
    "StoredNote",
    "Taken",
    "envelope",
    "sequence_text",
    "subject_of",
]

SCHEMA_VERSION = 1
"""1: events, heads, notes, cursors."""
CHUNK = 1000
"""Keys or sequences per ``IN`` list: at most 3000 parameters."""
_SETUP_LOCK = 0x64_73_69_6E  # pg_advisory_xact_lock id for table creation ("dsin")

Kind = Literal["order", "return"]
Taken = Literal["stored", "duplicate", "conflict", "stale"]
NoteKind = Literal["draft", "trashed", "gone", "dead"]
NOTE_KINDS: tuple[NoteKind, ...] = get_args(NoteKind)
Key = tuple[str, str, str]  # shop, kind, ref

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- what goes in and out -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewEvent:
    """One canonical order (or return) state to take."""

    kind: Kind
    shop: str
    ref: str
    """``order_ref``, or ``return_ref`` for a return."""
    version: datetime
    """The shop's ``updated_at``, aware (compared to the microsecond)."""
    digest: str
    id: str
    """From :mod:`relay.intake.identity`: a function of shop, ref, version and digest."""
    tenant: str
    agent: str
    """Where it goes: ``{prefix}/{tenant}/{agent}/in/{kind}``."""
    data: dict[str, Any]
    """``Order.to_data()`` / ``Return.to_data()``."""

    @property
    def key(self) -> Key:
        return (self.shop, self.kind, self.ref)


@dataclass(frozen=True, slots=True)
class Note:
    """What is recorded but never published."""

    kind: NoteKind
    shop: str
    order_ref: str | None
    reason: str
    source: str
    """How it came: ``webhook order.updated``, ``poll``, ..."""
    body: bytes
    """The raw body as received (a dead letter shows it)."""


@dataclass(frozen=True, slots=True)
class StoredNote:
    id: int
    kind: NoteKind
    shop: str
    order_ref: str | None
    reason: str
    source: str
    body: bytes
    received_at: float
    """Unix time it was recorded."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A pending event as it goes out: the whole CloudEvents JSON, and its MQTT 5 User
    Properties (``id``, ``type``, ``source``, ``sequence``, as the agent's events carry)."""

    sequence: int
    id: str
    topic: str
    payload: bytes
    user_properties: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class DeadEvent:
    """An event the broker refused (a negative PUBACK), with its reason."""

    sequence: int
    id: str
    topic: str
    payload: bytes
    reason: str
    received_at: float
    dead_at: float


@dataclass(frozen=True, slots=True)
class IntakeStoreStats:
    stored: int
    """Events stored, in any state."""
    published: int
    pending: int
    dead: int
    """Refused by the broker (negative PUBACK)."""
    notes: dict[str, int]
    """Recorded notes per kind (every kind, zeros included)."""
    oldest_pending_age: float | None
    """Seconds since the oldest pending event was stored; ``None`` when none is."""


# --- the envelope ---------------------------------------------------------------------

_ESCAPED = str.maketrans({"%": "%25", "/": "%2F", "+": "%2B", "#": "%23"})


def subject_of(parts: Sequence[str]) -> str:
    """Each part percent-encoded to one topic level (the contract's rule), joined by ``/``."""
    return "/".join(part.translate(_ESCAPED) if part else "%00" for part in parts)


def sequence_text(sequence: int) -> str:
    """20 digits, zero-padded: text order is number order."""
    return f"{sequence:020d}"


def envelope(
    *,
    sequence: int,
    id: str,
    kind: str,
    tenant: str,
    shop: str,
    ref: str,
    version: datetime,
    data: bytes,
) -> tuple[bytes, list[tuple[str, str]]]:
    """The CloudEvents 1.0 JSON of one event (``data`` already JSON), and its User
    Properties."""
    event_type = f"distillsync.{kind}.upsert"
    source = f"urn:distillsync:{tenant}:intake:{shop}"
    payload = orjson.dumps(
        {
            "specversion": "1.0",
            "id": id,
            "source": source,
            "type": event_type,
            "subject": subject_of([shop, ref]),
            "time": time_text(version),
            "sequence": sequence_text(sequence),
            "datacontenttype": "application/json",
            "data": orjson.Fragment(data),
        }
    )
    properties = [
        ("id", id),
        ("type", event_type),
        ("source", source),
        ("sequence", sequence_text(sequence)),
    ]
    return payload, properties


# --- schema ---------------------------------------------------------------------------

_Text = Text().with_variant(Text(collation="C"), "postgresql")  # byte order, as Python's
_Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite: INTEGER PRIMARY KEY, the rowid
_METADATA = MetaData()
_META = Table(
    "intake_meta",
    _METADATA,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
)
_EVENTS = Table(
    "intake_events",
    _METADATA,
    Column("sequence", _Id, primary_key=True, autoincrement=True),
    Column("id", _Text, nullable=False, unique=True),
    Column("kind", _Text, nullable=False),
    Column("shop", _Text, nullable=False),
    Column("ref", _Text, nullable=False),
    Column("version", BigInteger, nullable=False),  # microseconds since the epoch
    Column("digest", Text, nullable=False),
    Column("tenant", Text, nullable=False),
    Column("agent", Text, nullable=False),
    Column("data", LargeBinary, nullable=False),  # the JSON, as published
    Column("state", Text, nullable=False),  # pending | published | dead
    Column("reason", Text),
    Column("received_at", Double, nullable=False),
    Column("settled_at", Double),
    Index("intake_events_state", "state", "sequence"),
    sqlite_autoincrement=True,  # sequences never reused, even after the last row goes
)
_HEADS = Table(
    "intake_heads",
    _METADATA,
    Column("shop", _Text, primary_key=True),
    Column("kind", _Text, primary_key=True),
    Column("ref", _Text, primary_key=True),
    Column("version", BigInteger),  # NULL: a row created only to be locked
    Column("digest", Text),
    Column("sequence", BigInteger),
)
_NOTES = Table(
    "intake_notes",
    _METADATA,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False),
    Column("shop", Text, nullable=False),
    Column("order_ref", Text),
    Column("reason", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("received_at", Double, nullable=False),
    Index("intake_notes_kind", "kind", "id"),
    sqlite_autoincrement=True,  # ids never reused: readers page with "after"
)
_CURSORS = Table(
    "intake_cursors",
    _METADATA,
    Column("shop", _Text, primary_key=True),
    Column("value", BigInteger, nullable=False),  # microseconds since the epoch
    Column("updated", Double, nullable=False),
)
_HEAD_KEY = (_HEADS.c.shop, _HEADS.c.kind, _HEADS.c.ref)


@dataclass(frozen=True, slots=True)
class _Head:
    version: int
    digest: str
    sequence: int


def micros(moment: datetime) -> int:
    """An aware datetime as microseconds since the epoch (exact, unlike ``timestamp()``)."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment.isoformat()} has no time zone: versions and cursors are aware")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def verdict(event: NewEvent, head: _Head | None, seen: set[str], reread: bool) -> Taken:
    """The rule of :meth:`IntakeStore.take` for one event (see the module docstring)."""
    if event.id in seen:
        return "duplicate"
    if head is None:
        return "stored"
    version = micros(event.version)
    if version < head.version:
        return "stale"
    if version == head.version and event.digest != head.digest and not reread:
        return "conflict"
    return "stored"


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


# --- the store ------------------------------------------------------------------------


class IntakeStore:
    """Inbound events until published, the heads that decide what is new, notes, cursors."""

    def __init__(self, engine: AsyncEngine, backend: Backend, topic_prefix: str) -> None:
        self.engine = engine
        self.backend: Backend = backend
        self.topic_prefix = topic_prefix
        self.url = engine.url.render_as_string(hide_password=True)
        self.clock: Callable[[], float] = time.time
        """Wall clock for received/settled times (tests replace it)."""
        self._insert = insert_for(backend)
        # SQLite has one writer at a time: queue in the loop rather than in busy_timeout.
        self._serial: AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if backend == "sqlite" else contextlib.nullcontext()
        )
        self._lock_file: IO[bytes] | None = None

    @classmethod
    async def open(cls, url: str, topic_prefix: str) -> IntakeStore:
        """Connect, create the tables if missing, refuse a schema newer than this one."""
        backend, target = database_url(url, "store.url", "intake.db")
        store = cls(
            make_engine(backend, target, pool_size=5, max_overflow=20), backend, topic_prefix
        )
        try:
            async with store._transaction() as conn:
                await setup_schema(
                    conn, backend, _METADATA, _META, SCHEMA_VERSION, _SETUP_LOCK, store._refusal
                )
        except BaseException:
            await store.close()
            raise
        return store

    def _refusal(self, found: int) -> str:
        return (
            f"intake store {self.url} has schema version {found}, newer than this intake's "
            f"{SCHEMA_VERSION}: upgrade distillsync, or point store.url at another database"
        )

    async def close(self) -> None:
        await self.engine.dispose()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    async def __aenter__(self) -> IntakeStore:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def reserve(self) -> None:
        """SQLite: take the lock file that keeps other intake processes out, or raise
        :class:`~relay.errors.StoreBusy`. Every write takes it; reading needs none (the
        command line may look while the intake runs). PostgreSQL needs none."""
        if self.backend != "sqlite" or self._lock_file is not None:
            return
        database = str(self.engine.url.database)
        self._lock_file = hold_lock_file(
            database,
            f"another intake holds the store {database}, and a SQLite store serves one "
            "intake process (use PostgreSQL to run several)",
        )

    # --- taking events ----------------------------------------------------------------

    async def take(self, events: Sequence[NewEvent], *, reread: bool = False) -> list[Taken]:
        """Each event's verdict, in order; see the module docstring. Committed on return."""
        events = list(events)
        if not events:
            return []
        for event in events:
            micros(event.version)  # refuses a naive one before anything is written
        self.reserve()
        for attempt in range(3):
            try:
                async with self._transaction() as conn:
                    return await self._take(conn, events, reread)
            except StoreError as error:
                cause = error.__cause__
                if attempt == 2 or not isinstance(cause, DBAPIError) or not is_deadlock(cause):
                    raise
        raise AssertionError("unreachable")

    async def _take(
        self, conn: AsyncConnection, events: list[NewEvent], reread: bool
    ) -> list[Taken]:
        keys = sorted({event.key for event in events})
        heads = await self._lock_heads(conn, keys)
        seen = await self._seen(conn, [event.id for event in events])
        now = self.clock()
        verdicts: list[Taken] = []
        moved: dict[Key, _Head] = {}
        for event in events:
            taken = verdict(event, heads.get(event.key), seen, reread)
            if taken == "stored":
                sequence = await self._insert_event(conn, event, now)
                heads[event.key] = moved[event.key] = _Head(
                    micros(event.version), event.digest, sequence
                )
                seen.add(event.id)
            verdicts.append(taken)
        if moved:
            await conn.execute(
                update(_HEADS)
                .where(
                    _HEADS.c.shop == bindparam("k_shop"),
                    _HEADS.c.kind == bindparam("k_kind"),
                    _HEADS.c.ref == bindparam("k_ref"),
                )
                .values(version=bindparam("v"), digest=bindparam("d"), sequence=bindparam("s")),
                [
                    {
                        "k_shop": s,
                        "k_kind": k,
                        "k_ref": r,
                        "v": h.version,
                        "d": h.digest,
                        "s": h.sequence,
                    }
                    for (s, k, r), h in moved.items()
                ],
            )
        return verdicts

    async def _lock_heads(self, conn: AsyncConnection, keys: list[Key]) -> dict[Key, _Head]:
        """Create the missing head rows, then lock and read all of them, in key order
        (PostgreSQL; SQLite renders no FOR UPDATE: its transactions take turns)."""
        heads: dict[Key, _Head] = {}
        for part in _chunks(keys):
            rows = [{"shop": s, "kind": k, "ref": r} for s, k, r in part]
            await conn.execute(self._insert(_HEADS).on_conflict_do_nothing(), rows)
            query = (
                select(*_HEAD_KEY, _HEADS.c.version, _HEADS.c.digest, _HEADS.c.sequence)
                .where(tuple_(*_HEAD_KEY).in_(part))
                .order_by(*_HEAD_KEY)
                .with_for_update()
            )
            for row in await conn.execute(query):
                if row.version is not None:
                    heads[(row.shop, row.kind, row.ref)] = _Head(
                        row.version, row.digest, row.sequence
                    )
        return heads

    @staticmethod
    async def _seen(conn: AsyncConnection, ids: list[str]) -> set[str]:
        seen: set[str] = set()
        for part in _chunks(list(dict.fromkeys(ids))):
            seen.update(await conn.scalars(select(_EVENTS.c.id).where(_EVENTS.c.id.in_(part))))
        return seen

    @staticmethod
    async def _insert_event(conn: AsyncConnection, event: NewEvent, now: float) -> int:
        """One at a time, so sequences follow the input order."""
        sequence = await conn.scalar(
            _EVENTS.insert()
            .values(
                id=event.id,
                kind=event.kind,
                shop=event.shop,
                ref=event.ref,
                version=micros(event.version),
                digest=event.digest,
                tenant=event.tenant,
                agent=event.agent,
                data=orjson.dumps(event.data),
                state="pending",
                received_at=now,
            )
            .returning(_EVENTS.c.sequence)
        )
        assert sequence is not None
        return int(sequence)

    # --- notes ------------------------------------------------------------------------

    async def record(self, notes: Sequence[Note]) -> None:
        """Keep ``notes`` (one transaction, committed on return)."""
        if not notes:
            return
        for note in notes:
            if note.kind not in NOTE_KINDS:
                raise ValueError(f"note kind {note.kind!r} is not one of {', '.join(NOTE_KINDS)}")
        self.reserve()
        now = self.clock()
        async with self._transaction() as conn:
            await conn.execute(
                _NOTES.insert(),
                [
                    {
                        "kind": n.kind,
                        "shop": n.shop,
                        "order_ref": n.order_ref,
                        "reason": n.reason,
                        "source": n.source,
                        "body": bytes(n.body),
                        "received_at": now,
                    }
                    for n in notes
                ],
            )

    async def notes(self, kind: str | None, after: int, limit: int) -> list[StoredNote]:
        """Oldest first, those with ``id > after`` (of ``kind``, or of every kind)."""
        query = select(_NOTES).where(_NOTES.c.id > after).order_by(_NOTES.c.id).limit(limit)
        if kind is not None:
            query = query.where(_NOTES.c.kind == kind)
        async with self._transaction() as conn:
            rows = (await conn.execute(query)).all()
        return [
            StoredNote(
                id=r.id,
                kind=r.kind,
                shop=r.shop,
                order_ref=r.order_ref,
                reason=r.reason,
                source=r.source,
                body=bytes(r.body),
                received_at=r.received_at,
            )
            for r in rows
        ]

    # --- publishing -------------------------------------------------------------------

    async def pending(self, after: int, limit: int) -> list[Outgoing]:
        """Unpublished events with ``sequence > after``, ascending, at most ``limit``."""
        query = (
            select(_EVENTS)
            .where(_EVENTS.c.state == "pending", _EVENTS.c.sequence > after)
            .order_by(_EVENTS.c.sequence)
            .limit(limit)
        )
        async with self._transaction() as conn:
            rows = (await conn.execute(query)).all()
        return [self._outgoing(row) for row in rows]

    def _outgoing(self, row: Any) -> Outgoing:
        payload, properties = envelope(
            sequence=row.sequence,
            id=row.id,
            kind=row.kind,
            tenant=row.tenant,
            shop=row.shop,
            ref=row.ref,
            version=from_micros(row.version),
            data=bytes(row.data),
        )
        topic = f"{self.topic_prefix}/{row.tenant}/{row.agent}/in/{row.kind}"
        return Outgoing(row.sequence, row.id, topic, payload, properties)

    async def mark_published(self, sequences: Sequence[int]) -> None:
        """The broker acknowledged these (PUBACK): they are published."""
        if not sequences:
            return
        self.reserve()
        now = self.clock()
        async with self._transaction() as conn:
            for part in _chunks(sorted(set(sequences))):
                await conn.execute(
                    update(_EVENTS)
                    .where(_EVENTS.c.sequence.in_(part), _EVENTS.c.state == "pending")
                    .values(state="published", settled_at=now)
                )

    async def mark_dead(self, sequence: int, reason: str) -> None:
        """The broker refused it (a negative PUBACK): a dead letter with ``reason``."""
        self.reserve()
        async with self._transaction() as conn:
            await conn.execute(
                update(_EVENTS)
                .where(_EVENTS.c.sequence == sequence, _EVENTS.c.state == "pending")
                .values(state="dead", reason=reason, settled_at=self.clock())
            )

    async def dead_events(self, after: int, limit: int) -> list[DeadEvent]:
        """The refused events with ``sequence > after``, oldest first."""
        query = (
            select(_EVENTS)
            .where(_EVENTS.c.state == "dead", _EVENTS.c.sequence > after)
            .order_by(_EVENTS.c.sequence)
            .limit(limit)
        )
        async with self._transaction() as conn:
            rows = (await conn.execute(query)).all()
        dead = []
        for row in rows:
            out = self._outgoing(row)
            dead.append(
                DeadEvent(
                    out.sequence,
                    out.id,
                    out.topic,
                    out.payload,
                    row.reason,
                    row.received_at,
                    row.settled_at,
                )
            )
        return dead

    # --- cursors ----------------------------------------------------------------------

    async def cursor(self, shop: str) -> datetime | None:
        """Where ``shop``'s catch-up poll stands (aware UTC), or ``None`` before its first."""
        async with self._transaction() as conn:
            value = await conn.scalar(select(_CURSORS.c.value).where(_CURSORS.c.shop == shop))
        return None if value is None else from_micros(int(value))

    async def set_cursor(self, shop: str, value: datetime) -> None:
        self.reserve()
        statement = self._insert(_CURSORS)
        upsert = statement.on_conflict_do_update(
            index_elements=[_CURSORS.c.shop],
            set_={"value": statement.excluded.value, "updated": statement.excluded.updated},
        )
        async with self._transaction() as conn:
            await conn.execute(
                upsert, [{"shop": shop, "value": micros(value), "updated": self.clock()}]
            )

    # --- the rest ---------------------------------------------------------------------

    async def stats(self) -> IntakeStoreStats:
        async with self._transaction() as conn:
            states = await self._counts(conn, _EVENTS.c.state)
            kinds = await self._counts(conn, _NOTES.c.kind)
            oldest = await conn.scalar(
                select(func.min(_EVENTS.c.received_at)).where(_EVENTS.c.state == "pending")
            )
        return IntakeStoreStats(
            stored=sum(states.values()),
            published=states.get("published", 0),
            pending=states.get("pending", 0),
            dead=states.get("dead", 0),
            notes={kind: kinds.get(kind, 0) for kind in NOTE_KINDS},
            oldest_pending_age=None if oldest is None else max(0.0, self.clock() - oldest),
        )

    @staticmethod
    async def _counts(conn: AsyncConnection, column: Any) -> dict[str, int]:
        rows = await conn.execute(select(column, func.count()).group_by(column))
        return {str(value): int(count) for value, count in rows}

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed when the block ends; a database failure is a
        :class:`~relay.errors.StoreError` (retryable) naming the store."""
        try:
            async with self._serial, self.engine.begin() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as error:
            raise StoreError(f"intake store {self.url}: {reason(error)}") from error
