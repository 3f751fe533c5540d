"""The durable outbox: the only module that touches the agent's SQLite file.

What is atomic (two things not written in one transaction can happen one without
the other, so these are never split):

* a poll page: its new events, the per-key hashes that suppress re-reads, its dead
  letters and the feed's cursor commit together (guarantees 1 and 2);
* a batch of publish results: acked rows become delivered, nacked rows dead letters.

Event ids are ``INTEGER PRIMARY KEY AUTOINCREMENT`` so a ``sequence`` is never reused,
even after delivered rows are pruned. Two connections: the writer (behind an asyncio
lock, since one aiosqlite connection would otherwise interleave two coroutines'
statements into one transaction) and a reader for delivery, which under WAL never
sees an uncommitted page.

When the file cannot be written (disk full, read-only or failing disk, the file removed
or replaced), a failed page leaves events and cursor as they were, so it is read again
later and nothing is lost. The outbox then keeps a :class:`WriteHealth` (shown in status,
health and metrics, logged once when it starts and once when it ends) and hands out
retries with a capped exponential backoff (:meth:`Outbox.writable`). Delivery's marks
wait for the next retry rather than fail, so at most ``max_inflight`` events go out
unrecorded. A reserve file set aside at open is given up on the first ``SQLITE_FULL``:
the room it frees lets delivery keep marking what it sends, and capture resumes only
once the reserve fits again with as much to spare (see :data:`RESERVE_BYTES`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from agent.envelope import now_rfc3339, uuid7
from agent.errors import OutboxError, OutboxTooNew
from agent.model import (
    CapturedPage,
    Change,
    FeedId,
    Outcome,
    PageResult,
    PendingEvent,
    PublishResult,
)

log = logging.getLogger("distillsync.outbox")

Connection = aiosqlite.Connection
"""The connection :meth:`Outbox.transaction` yields: the inbox (``agent/inbox.py``) names its
type from here, so this module stays the one that imports aiosqlite."""

PENDING, DELIVERED, DEAD = 0, 1, 2
"""An event's ``state``. Statements name them; the partial indexes in :data:`MIGRATIONS` hold
the numbers, as shipped (a migration is never edited), and a statement's ``state = {PENDING}``
is the same text they were planned for."""
_CHUNK = 500  # bound for "IN (...)" lists, well under SQLite's variable limit

RESERVE_BYTES = 8 * 1024 * 1024
"""Set aside next to the outbox (``outbox.db.reserve``) and freed when the disk fills. Once
capture stops, marks need little room: a mark rewrites pages the file already has, and
the WAL, once checkpointed, is reused from its start; 8 MiB covers a WAL grown to its
checkpoint size (1000 pages) and then some."""
RETRY_FIRST, RETRY_MAX = 0.5, 15.0  # seconds between write attempts while writes fail
# Primary result codes that mean "the disk, not the statement": the same write can
# succeed later. Anything else is a bug and is raised as it is.
_DISK_CODES = frozenset(
    {
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_NOTADB,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
    }
)


class OutboxUnwritable(OutboxError):
    """A write failed because of the disk or the file, not the statement; retry later."""

    retryable = True


@dataclass(slots=True)
class WriteHealth:
    """Whether the outbox can be written; the status API, health and metrics read it."""

    error: str | None = None
    """What the last failed write said, while writes fail; ``None`` while they succeed."""
    since: float | None = None
    """Unix time of the first failure of the current spell."""
    failures: int = 0
    """Failed write attempts since the agent started (a counter, never reset)."""
    disk_full: bool = False
    attempts: int = 0
    """Failed attempts in the current spell, for the backoff."""
    retry_at: float = 0.0
    """``time.monotonic()`` before which no write is tried again."""
    identity: tuple[int, int] = (0, 0)
    """(device, inode) of the file opened: another file at the path means it was replaced."""


MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        source TEXT NOT NULL,
        feed TEXT NOT NULL,
        entity TEXT NOT NULL,
        op TEXT NOT NULL,
        subject TEXT NOT NULL,
        time TEXT NOT NULL,
        data BLOB NOT NULL,
        state INTEGER NOT NULL DEFAULT 0,
        changed_at REAL
    );
    CREATE INDEX events_pending ON events(id) WHERE state = 0;
    CREATE INDEX events_pending_key ON events(entity, subject) WHERE state = 0;
    CREATE INDEX events_delivered ON events(changed_at) WHERE state = 1;
    CREATE TABLE key_state (
        source TEXT NOT NULL,
        feed TEXT NOT NULL,
        subject TEXT NOT NULL,
        hash BLOB NOT NULL,
        generation INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (source, feed, subject)
    ) WITHOUT ROWID;
    CREATE TABLE feeds (
        source TEXT NOT NULL,
        feed TEXT NOT NULL,
        entity TEXT NOT NULL,
        cursor TEXT,
        generation INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (source, feed)
    );
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        source TEXT NOT NULL,
        feed TEXT NOT NULL,
        entity TEXT NOT NULL,
        subject TEXT,
        reason TEXT NOT NULL,
        payload BLOB NOT NULL,
        event_seq INTEGER,
        created_at REAL NOT NULL
    );
    """,
    # 2: the inbox (agent/inbox.py): one row per inbound event version, and per subject the
    # version taken (the highest (version, sequence) seen), which gates older ones as stale.
    """
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        entity TEXT,
        op TEXT,
        subject TEXT,
        source TEXT,
        topic TEXT,
        version TEXT,
        version_key INTEGER,
        sequence INTEGER,
        payment_status TEXT,
        envelope BLOB NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        erp_ref TEXT,
        duplicates INTEGER NOT NULL DEFAULT 0,
        received_at REAL NOT NULL,
        changed_at REAL NOT NULL
    );
    CREATE INDEX inbox_state ON inbox(state, id);
    CREATE INDEX inbox_due ON inbox(next_attempt_at, id) WHERE state IN ('pending', 'failed');
    CREATE INDEX inbox_subject ON inbox(entity, subject, id);
    CREATE TABLE inbox_heads (
        entity TEXT NOT NULL,
        subject TEXT NOT NULL,
        version_key INTEGER NOT NULL,
        sequence INTEGER NOT NULL,
        item_id INTEGER NOT NULL,
        PRIMARY KEY (entity, subject)
    ) WITHOUT ROWID;
    """,
)


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    delivered: int
    dead_letters: int
    oldest_pending_time: str | None
    last_sequence: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    kind: Literal["capture", "publish"]
    source: str
    feed: str
    entity: str
    subject: str | None
    reason: str
    payload: bytes
    event_seq: int | None
    created_at: float


async def _connect(path: Path, synchronous: str) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute(f"PRAGMA synchronous={synchronous.upper()}")
    await db.execute("PRAGMA busy_timeout=10000")
    return db


async def _migrate(db: aiosqlite.Connection) -> None:
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    current = int(row[0]) if row else 0
    if current > len(MIGRATIONS):
        raise OutboxTooNew(
            f"outbox schema version {current} is newer than this agent knows "
            f"({len(MIGRATIONS)}); upgrade the agent or restore a backup"
        )
    for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
        await db.executescript(
            f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={version};\nCOMMIT;"
        )


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _disk_trouble(error: BaseException) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return (
        isinstance(error, sqlite3.Error) and isinstance(code, int) and (code & 0xFF) in _DISK_CODES
    )


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _make_reserve(path: Path, size: int) -> bool:
    """Allocate ``size`` bytes at ``path`` (blocks, not a sparse file); False if no room."""
    if size <= 0:
        return False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink()
        return False
    return True


def _free_bytes(directory: Path) -> int:
    info = os.statvfs(directory)
    return info.f_bavail * info.f_frsize


class Outbox:
    """Open with :meth:`open`; every method is safe to call from any task."""

    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        retention: float,
        path: Path | None = None,
        reserve: int = 0,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._retention = retention
        self._lock = asyncio.Lock()
        self.new_events = asyncio.Event()
        """Set whenever a commit enqueued events; delivery waits on it when idle."""
        self.path = path
        self.write_health = WriteHealth(identity=(_identity(path) or (0, 0)) if path else (0, 0))
        self.stopping = asyncio.Event()
        """Set when the agent stops: writes that keep failing are not retried any more (the
        outcomes left unrecorded stay pending, and those events are sent again later)."""
        self._reserve_size = reserve
        self._reserve = path.with_name(path.name + ".reserve") if path else None
        self._last_stats: OutboxStats | None = None

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: Path,
        synchronous: str = "full",
        retention: float = 3600.0,
        reserve: int = RESERVE_BYTES,
    ) -> AsyncIterator[Outbox]:
        """``reserve``: bytes set aside for a full disk (0: none), see :data:`RESERVE_BYTES`."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = await _connect(path, synchronous)
        except (OSError, aiosqlite.Error) as error:
            raise OutboxError(f"cannot open outbox {path}: {error}") from error
        try:
            await _migrate(writer)
            reader = await _connect(path, synchronous)
        except aiosqlite.Error as error:  # e.g. a full disk with no room for the WAL index
            await writer.close()
            raise OutboxError(f"cannot open outbox {path}: {error}") from error
        except BaseException:
            await writer.close()
            raise
        try:
            outbox = cls(writer, reader, retention, path, reserve)
            await asyncio.to_thread(outbox._keep_reserve)
            yield outbox
        finally:
            await reader.close()
            await writer.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            try:
                await self._rollback()  # one a failing disk left open, if any
                await self._writer.execute("BEGIN IMMEDIATE")
                yield self._writer
                await asyncio.shield(self._writer.execute("COMMIT"))
            except BaseException as error:
                # Shielded: a cancelled caller must not leave the transaction open.
                await asyncio.shield(self._rollback())
                if _disk_trouble(error):
                    raise self._failed(error) from error
                raise

    def transaction(self) -> contextlib.AbstractAsyncContextManager[aiosqlite.Connection]:
        """One write transaction on the writer connection, for the inbox (``agent/inbox.py``)
        that shares this file: committed when the block ends, rolled back if it raises, and a
        disk's failure raised as :class:`OutboxUnwritable` (counted in :attr:`write_health`)."""
        return self._transaction()

    @property
    def reader(self) -> aiosqlite.Connection:
        """The read connection (WAL: it never sees an uncommitted transaction)."""
        return self._reader

    def disk_errors(self) -> contextlib.AbstractContextManager[None]:
        """For reads outside :meth:`transaction`: a disk's failure as :class:`OutboxUnwritable`."""
        return self._disk_errors()

    @contextlib.contextmanager
    def _disk_errors(self) -> Iterator[None]:
        """Statements outside :meth:`_transaction`: a disk's failure counts as a failed write."""
        try:
            yield
        except sqlite3.Error as error:
            if _disk_trouble(error):
                raise self._failed(error) from error
            raise

    async def _rollback(self) -> None:
        """Roll back what is open. SQLite has often rolled back already (a failed COMMIT
        on a full disk does), and a dead disk may refuse even this: both are fine."""
        if self._writer.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                await self._writer.execute("ROLLBACK")

    # --- write health: failing, backing off, recovering -------------------------------------

    @property
    def writes_failing(self) -> bool:
        return self.write_health.error is not None

    def _failed(self, error: BaseException | str) -> OutboxUnwritable:
        """Note a failed write attempt; the first of a spell is logged, later ones counted."""
        health = self.write_health
        if isinstance(error, str):
            message = error
        else:
            name = getattr(error, "sqlite_errorname", type(error).__name__)
            message = f"outbox {self.path}: {error} ({name})"
            if getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL:
                health.disk_full = True
                self._drop_reserve()
        if health.error is None:
            health.since = time.time()
            log.warning(
                "outbox writes fail: %s; capture is paused (cursors stay where "
                "they are), pending events go out while deliveries can be recorded; "
                "retrying by itself",
                message,
            )
        health.error = message
        health.failures += 1
        health.attempts += 1
        delay = min(RETRY_MAX, RETRY_FIRST * 2 ** (health.attempts - 1))
        health.retry_at = time.monotonic() + delay
        return OutboxUnwritable(message)

    def _wrote(self) -> None:
        """A capture write committed: the spell, if any, is over."""
        health = self.write_health
        if health.error is None:
            return
        log.info(
            "outbox writable again after %.0fs (%d failed attempts); capture resumes",
            time.time() - (health.since or time.time()),
            health.attempts,
        )
        health.error, health.since, health.disk_full, health.attempts = None, None, False, 0

    async def writable(self) -> bool:
        """Whether capture should try a write now: always while writes succeed; while they
        fail, once the backoff has passed and (on a full disk) the reserve fits again."""
        health = self.write_health
        if health.error is None:
            return True
        if time.monotonic() < health.retry_at:
            return False
        if health.disk_full and not await asyncio.to_thread(self._room_to_resume):
            self._failed(health.error)
            return False
        return True

    def _check_file(self) -> None:
        """Capture must not go on into a file that is no longer at the outbox's path: all it
        wrote would be gone with the process, cursors included."""
        if self.path is None or _identity(self.path) == self.write_health.identity:
            return
        raise self._failed(
            f"outbox {self.path} was removed or replaced while the agent "
            f"ran; capture stops until it is back (put the same file back, "
            f"or restart the agent to open the one now at that path)"
        )

    def _keep_reserve(self) -> None:
        if self._reserve is None or self._reserve_size <= 0:
            return
        with contextlib.suppress(OSError):
            if self._reserve.stat().st_size >= self._reserve_size:
                return
        if not _make_reserve(self._reserve, self._reserve_size):
            log.warning(
                "no room for the outbox reserve %s (%d MiB): on a full disk, delivery "
                "will stop after relay.max_inflight unrecorded events",
                self._reserve,
                self._reserve_size // 2**20,
            )

    def _drop_reserve(self) -> None:
        if self._reserve is not None:
            with contextlib.suppress(FileNotFoundError):
                self._reserve.unlink()
                log.info(
                    "gave up the outbox reserve %s to keep recording deliveries", self._reserve
                )

    def _room_to_resume(self) -> bool:
        """Capture resumes on a once-full disk when the reserve fits again with as much to
        spare; else it would fill the disk again at once, and deliveries with it."""
        if self._reserve is None or self._reserve_size <= 0:
            return True
        assert self.path is not None
        try:
            if _free_bytes(self.path.parent) < 2 * self._reserve_size:
                return False
        except OSError:
            return False
        return _make_reserve(self._reserve, self._reserve_size)

    async def _wait_to_retry(self) -> bool:
        """Sleep until the next write may be tried; False once the agent is stopping."""
        delay = max(0.0, self.write_health.retry_at - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), delay)
        return not self.stopping.is_set()

    # --- feeds: cursor and snapshot generation -------------------------------------------

    async def feed_state(self, feed: FeedId) -> tuple[str | None, int]:
        """The stored cursor (``None`` before the first page) and last snapshot generation."""
        with self._disk_errors():
            async with (
                self._lock,
                self._writer.execute(
                    "SELECT cursor, generation FROM feeds WHERE source = ? AND feed = ?",
                    (feed.source, feed.feed),
                ) as cursor,
            ):
                row = await cursor.fetchone()
        return (row[0], int(row[1])) if row else (None, 0)

    async def finish_generation(self, feed: FeedId, generation: int) -> None:
        self._check_file()
        async with self._transaction() as db:
            await self._upsert_feed(db, feed, None, generation)
        self._wrote()

    async def forget_cursor(self, feed: FeedId) -> None:
        """The next poll re-reads the whole feed; stored hashes still drop what is unchanged."""
        self._check_file()
        async with self._transaction() as db:
            await db.execute(
                "UPDATE feeds SET cursor = NULL WHERE source = ? AND feed = ?",
                (feed.source, feed.feed),
            )
        self._wrote()

    @staticmethod
    async def _upsert_feed(
        db: aiosqlite.Connection, feed: FeedId, cursor: str | None, generation: int | None
    ) -> None:
        await db.execute(
            "INSERT INTO feeds (source, feed, entity, cursor, generation) "
            "VALUES (?, ?, ?, ?, coalesce(?, 0)) ON CONFLICT (source, feed) DO UPDATE SET "
            "cursor = coalesce(excluded.cursor, cursor), "
            "generation = coalesce(?, generation)",
            (feed.source, feed.feed, feed.entity, cursor, generation, generation),
        )

    # --- capture side ---------------------------------------------------------------------

    async def commit_page(self, page: CapturedPage) -> PageResult:
        """Enqueue what changed in ``page`` and advance its cursor, all in one transaction.
        Raises :class:`OutboxUnwritable` (nothing written) when the disk or file fails."""
        self._check_file()
        async with self._transaction() as db:
            known = await self._known_hashes(db, page)
            fresh = self._changed(page.changes, known)
            await self._enqueue(db, page, fresh)
            dead = [d for d in page.dead if d.subject is None or known.get(d.subject) != d.row_hash]
            # (a dead row's hash is remembered too: the same bad state is reported once)
            await self._store_dead_rows(db, page, dead)
            await self._store_hashes(db, page, fresh, dead)
            if page.cursor is not None:
                await self._upsert_feed(db, page.feed, page.cursor, None)
        self._wrote()
        if fresh:
            self.new_events.set()
        return PageResult(
            enqueued=len(fresh), unchanged=len(page.changes) - len(fresh), dead=len(dead)
        )

    async def _known_hashes(self, db: aiosqlite.Connection, page: CapturedPage) -> dict[str, bytes]:
        subjects = [c.subject for c in page.changes] + [d.subject for d in page.dead if d.subject]
        known: dict[str, bytes] = {}
        for chunk in _chunks(subjects):
            marks = ",".join("?" * len(chunk))
            async with db.execute(
                f"SELECT subject, hash FROM key_state WHERE source = ? AND feed = ? "
                f"AND subject IN ({marks})",
                (page.feed.source, page.feed.feed, *chunk),
            ) as cursor:
                known.update({str(s): bytes(h) async for s, h in cursor})
        return known

    @staticmethod
    def _changed(changes: list[Change], known: dict[str, bytes]) -> list[Change]:
        fresh = []
        for change in changes:
            if change.op == "upsert" and known.get(change.subject) == change.row_hash:
                continue
            known[change.subject] = change.row_hash
            fresh.append(change)
        return fresh

    async def _enqueue(
        self, db: aiosqlite.Connection, page: CapturedPage, fresh: list[Change]
    ) -> None:
        feed = page.feed
        if page.conflate and fresh:
            await db.executemany(
                f"DELETE FROM events WHERE state = {PENDING} AND entity = ? AND subject = ?",
                [(feed.entity, c.subject) for c in fresh],
            )
        now = now_rfc3339()
        await db.executemany(
            "INSERT INTO events (event_id, source, feed, entity, op, subject, time, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (uuid7(), feed.source, feed.feed, feed.entity, c.op, c.subject, now, c.data)
                for c in fresh
            ],
        )

    @staticmethod
    async def _store_dead_rows(
        db: aiosqlite.Connection, page: CapturedPage, dead: list[Any]
    ) -> None:
        feed, now = page.feed, time.time()
        await db.executemany(
            "INSERT INTO dead_letters (kind, source, feed, entity, subject, reason, payload, "
            "created_at) VALUES ('capture', ?, ?, ?, ?, ?, ?, ?)",
            [(feed.source, feed.feed, feed.entity, d.subject, d.reason, d.row, now) for d in dead],
        )

    @staticmethod
    async def _store_hashes(
        db: aiosqlite.Connection, page: CapturedPage, fresh: list[Change], dead: list[Any]
    ) -> None:
        feed, generation = page.feed, page.seen_generation
        if generation is not None:  # a snapshot pass marks every key it saw, changed or not
            changes, dead = page.changes, page.dead
        else:
            changes = fresh
        rows = [(c.subject, c.row_hash) for c in changes if c.op == "upsert"]
        rows += [(d.subject, d.row_hash) for d in dead if d.subject and d.row_hash]
        await db.executemany(
            "INSERT INTO key_state (source, feed, subject, hash, generation) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET hash = excluded.hash, "
            "generation = excluded.generation",
            [(feed.source, feed.feed, s, h, generation or 0) for s, h in rows],
        )
        deleted = [(feed.source, feed.feed, c.subject) for c in fresh if c.op == "delete"]
        await db.executemany(
            "DELETE FROM key_state WHERE source = ? AND feed = ? AND subject = ?", deleted
        )

    async def unseen_subjects(self, feed: FeedId, generation: int, limit: int) -> list[str]:
        """Keys the snapshot pass ``generation`` did not see: deleted in the ERP."""
        with self._disk_errors():
            async with (
                self._lock,
                self._writer.execute(
                    "SELECT subject FROM key_state WHERE source = ? AND feed = ? "
                    "AND generation < ? AND subject NOT LIKE '#%' ORDER BY subject LIMIT ?",
                    (feed.source, feed.feed, generation, limit),
                ) as cursor,
            ):
                return [str(row[0]) async for row in cursor]

    # --- delivery side --------------------------------------------------------------------

    async def fetch_pending(self, after: int, limit: int) -> list[PendingEvent]:
        """Pending events with a sequence above ``after``, oldest first. For delivery: when
        the file cannot be read (a failing disk), it waits for the next retry and returns
        none, so delivery idles instead of failing; :meth:`pending_page` raises instead."""
        try:
            return await self.pending_page(after, limit)
        except OutboxUnwritable:
            await self._wait_to_retry()
            return []

    async def pending_page(self, after: int, limit: int) -> list[PendingEvent]:
        """As :meth:`fetch_pending`, raising :class:`OutboxUnwritable` on a failing disk."""
        with self._disk_errors():
            async with self._reader.execute(
                "SELECT id, event_id, entity, op, subject, time, data FROM events "
                f"WHERE state = {PENDING} AND id > ? ORDER BY id LIMIT ?",
                (after, limit),
            ) as cursor:
                return [
                    PendingEvent(int(r[0]), r[1], r[2], r[3], r[4], r[5], bytes(r[6]))
                    async for r in cursor
                ]

    async def record_results(self, results: Sequence[PublishResult]) -> None:
        """The outbox decides: acked -> delivered, nacked -> dead letter, unknown -> pending.

        While the file cannot be written this waits and tries again (with the backoff of
        :meth:`writable`): delivery holds a window slot per unrecorded outcome, so it stops
        sending after ``max_inflight`` of them instead of sending everything once unrecorded
        and again later. If the agent stops first, the events stay pending and go out again
        after the restart (a duplicate subscribers drop by id)."""
        acked = [r.sequence for r in results if r.outcome is Outcome.ACKED]
        nacked = [r for r in results if r.outcome is Outcome.NACKED]
        if not acked and not nacked:
            return
        now = time.time()
        while True:
            try:
                await self._record(acked, nacked, now)
                return
            except OutboxUnwritable:
                if not await self._wait_to_retry():
                    log.warning(
                        "stopping with %d delivered events not recorded: they stay "
                        "pending and are sent again after the restart",
                        len(acked) + len(nacked),
                    )
                    return

    async def _record(self, acked: list[int], nacked: list[PublishResult], now: float) -> None:
        if not nacked and len(acked) <= _CHUNK:
            await self._record_acked(acked, now)
            return
        async with self._transaction() as db:
            if self._retention <= 0:
                await db.executemany("DELETE FROM events WHERE id = ?", [(s,) for s in acked])
            else:
                await db.executemany(
                    f"UPDATE events SET state = {DELIVERED}, changed_at = ? "
                    f"WHERE id = ? AND state = {PENDING}",
                    [(now, s) for s in acked],
                )
            for result in nacked:
                await self._dead_event(db, result, now)

    async def _record_acked(self, acked: list[int], now: float) -> None:
        """The hot path in one statement, so one thread hop instead of three (delivery
        holds a window slot until this commits). One statement is its own transaction:
        as atomic and durable as the batch in :meth:`record_results`."""
        marks = ",".join("?" * len(acked))
        params: tuple[float, ...]
        if self._retention <= 0:
            statement, params = f"DELETE FROM events WHERE id IN ({marks})", (*acked,)
        else:
            statement = (
                f"UPDATE events SET state = {DELIVERED}, changed_at = ? "
                f"WHERE state = {PENDING} AND id IN ({marks})"
            )
            params = (now, *acked)
        with self._disk_errors():
            async with self._lock, self._writer.execute(statement, params):
                pass

    @staticmethod
    async def _dead_event(db: aiosqlite.Connection, result: PublishResult, now: float) -> None:
        cursor = await db.execute(
            f"UPDATE events SET state = {DEAD}, changed_at = ? WHERE id = ? AND state = {PENDING}",
            (now, result.sequence),
        )
        if cursor.rowcount == 0:
            return  # conflated away meanwhile: a newer state supersedes it
        await db.execute(
            "INSERT INTO dead_letters (kind, source, feed, entity, subject, reason, payload, "
            "event_seq, created_at) SELECT 'publish', source, feed, entity, subject, ?, data, "
            "id, ? FROM events WHERE id = ?",
            (result.reason, now, result.sequence),
        )

    async def prune_delivered(self, now: float | None = None) -> int:
        """Delete delivered rows older than the retention, in small transactions. Skipped
        while writes fail: it frees no disk space (SQLite keeps the pages) and its WAL
        frames would take room deliveries need."""
        cutoff = (now or time.time()) - self._retention
        total = 0
        while not self.writes_failing:
            try:
                async with self._transaction() as db:
                    cursor = await db.execute(
                        "DELETE FROM events WHERE id IN (SELECT id FROM events "
                        f"WHERE state = {DELIVERED} AND changed_at < ? LIMIT 5000)",
                        (cutoff,),
                    )
                    removed = cursor.rowcount
            except OutboxUnwritable:
                break
            total += removed
            if removed < 5000:
                break
        return total

    # --- inspection and operator actions ---------------------------------------------------

    async def stats(self) -> OutboxStats:
        """The counts; while the file cannot be read (a failing disk), the last ones taken,
        so status keeps answering (with the failure in :attr:`write_health`)."""
        try:
            with self._disk_errors():
                async with self._reader.execute(
                    f"SELECT (SELECT count(*) FROM events WHERE state = {PENDING}), "
                    f"(SELECT count(*) FROM events WHERE state = {DELIVERED}), "
                    "(SELECT count(*) FROM dead_letters), "
                    f"(SELECT time FROM events WHERE state = {PENDING} ORDER BY id LIMIT 1), "
                    "(SELECT seq FROM sqlite_sequence WHERE name = 'events')"
                ) as cursor:
                    row = await cursor.fetchone()
        except OutboxUnwritable:
            return self._last_stats or OutboxStats(0, 0, 0, None, 0)
        assert row is not None
        self._last_stats = OutboxStats(
            int(row[0]), int(row[1]), int(row[2]), row[3], int(row[4] or 0)
        )
        return self._last_stats

    async def pending_count(self) -> int:
        try:
            with self._disk_errors():
                async with self._reader.execute(
                    f"SELECT count(*) FROM events WHERE state = {PENDING}"
                ) as cursor:
                    row = await cursor.fetchone()
        except OutboxUnwritable:
            return self._last_stats.pending if self._last_stats else 0
        return int(row[0]) if row else 0

    async def dead_letters(self, after: int = 0, limit: int = 100) -> list[DeadLetter]:
        async with self._reader.execute(
            "SELECT id, kind, source, feed, entity, subject, reason, payload, event_seq, "
            "created_at FROM dead_letters WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        ) as cursor:
            return [
                DeadLetter(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bytes(r[7]), r[8], r[9])
                async for r in cursor
            ]

    async def retry_dead(self, dead_id: int) -> bool:
        """Publish dead letters go back to pending; capture ones are re-read on the next
        change or snapshot pass (their stored hash is forgotten)."""
        async with self._transaction() as db:
            async with db.execute(
                "SELECT kind, source, feed, subject, event_seq FROM dead_letters WHERE id = ?",
                (dead_id,),
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                return False
            kind, source, feed, subject, event_seq = row
            if kind == "publish":
                await db.execute(f"UPDATE events SET state = {PENDING} WHERE id = ?", (event_seq,))
            else:
                await db.execute(
                    "DELETE FROM key_state WHERE source = ? AND feed = ? AND subject = ?",
                    (source, feed, subject),
                )
            await db.execute("DELETE FROM dead_letters WHERE id = ?", (dead_id,))
        self.new_events.set()
        return True

    async def discard_dead(self, dead_id: int) -> bool:
        async with self._transaction() as db:
            await db.execute(
                f"DELETE FROM events WHERE state = {DEAD} AND id = "
                "(SELECT event_seq FROM dead_letters WHERE id = ?)",
                (dead_id,),
            )
            cursor = await db.execute("DELETE FROM dead_letters WHERE id = ?", (dead_id,))
            return cursor.rowcount > 0

    # --- the sequence floor: never below what the relay has seen -----------------------------

    async def move_sequence_above(self, floor: int) -> SequenceMove | None:
        """Make every sequence still to be published greater than ``floor``, the highest one
        the relay has seen from this agent; ``None`` when the outbox is past it already.

        Behind it means the outbox went back in time: a backup restored, or ``outbox.db``
        lost and started afresh. Subscribers drop an event whose sequence is not above the
        last one they applied for its key, so new events must be numbered above ``floor``:
        the events table's AUTOINCREMENT counter (``sqlite_sequence``) is moved to it.

        The pending events are renumbered above it too, in their order (one shift, so their
        gaps stay), and each gets a new ``id``. They are the restored backup's undelivered
        events and whatever capture enqueued since the agent started; with their low numbers
        subscribers would drop them as stale, and with their old ids as duplicates of what
        they applied before the loss. They must be applied: the backup's key hashes count
        them as sent, so capture does not send those states again (a row changed after the
        backup and back to its earlier value before the loss would otherwise stay at the
        later state in the shop). Applied again they are harmless (absolute state), a newer
        state captured later still comes after them, and capture order is kept. Delivered
        and dead rows keep their numbers: sent already, or not to be sent.

        One transaction, committed before delivery publishes anything on the connection that
        read ``floor``. While the disk refuses the write this waits and tries again; it
        raises :class:`OutboxUnwritable` only once the agent is stopping.
        """
        while True:
            try:
                move = await self._move_sequence_above(floor)
                break
            except OutboxUnwritable:
                if not await self._wait_to_retry():
                    raise
        if move is not None and move.renumbered:
            self.new_events.set()
        return move

    async def _move_sequence_above(self, floor: int) -> SequenceMove | None:
        async with self._transaction() as db:
            async with db.execute(
                "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'events'), "
                f"(SELECT min(id) FROM events WHERE state = {PENDING})"
            ) as cursor:
                row = await cursor.fetchone()
            assert row is not None
            last = int(row[0] or 0)
            if last >= floor:
                return None
            renumbered = 0
            if row[1] is not None:  # every id is <= last < floor: shifted, they collide with none
                renumbered = await self._renumber_pending(db, last, floor + 1 - int(row[1]))
            async with db.execute("SELECT max(id) FROM events") as cursor:
                row = await cursor.fetchone()
            new_last = max(floor, int(row[0] or 0) if row else 0)
            # UPDATE does not move the AUTOINCREMENT counter; a new file has no row for it yet.
            cursor = await db.execute(
                "UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'", (new_last,)
            )
            if cursor.rowcount == 0:
                await db.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (new_last,)
                )
        return SequenceMove(last, floor, renumbered, new_last)

    @staticmethod
    async def _renumber_pending(db: aiosqlite.Connection, last: int, shift: int) -> int:
        """Pending ids up to ``last`` move up by ``shift`` with new event ids, in batches (a
        backlog may be large); a moved row is above ``last`` and is not read again."""
        after, total = 0, 0
        while True:
            async with db.execute(
                f"SELECT id FROM events WHERE state = {PENDING} AND id > ? AND id <= ? "
                "ORDER BY id "
                "LIMIT ?",
                (after, last, _RENUMBER_BATCH),
            ) as cursor:
                ids = [int(r[0]) async for r in cursor]
            if not ids:
                return total
            await db.executemany(
                "UPDATE events SET id = ?, event_id = ? WHERE id = ?",
                [(old + shift, uuid7(), old) for old in ids],
            )
            after, total = ids[-1], total + len(ids)


_RENUMBER_BATCH = 5000


@dataclass(frozen=True, slots=True)
class SequenceMove:
    """What :meth:`Outbox.move_sequence_above` did."""

    last_before: int
    """The outbox's last sequence before: 0 for a new file."""
    floor: int
    """The relay's watermark it was moved above."""
    renumbered: int
    """Pending events given numbers above ``floor`` (from ``floor + 1``, in their order)."""
    last_after: int
