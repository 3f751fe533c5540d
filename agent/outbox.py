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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from agent.envelope import now_rfc3339, uuid7
from agent.errors import OutboxError
from agent.model import (
    CapturedPage,
    Change,
    FeedId,
    Outcome,
    PageResult,
    PendingEvent,
    PublishResult,
)

PENDING, DELIVERED, DEAD = 0, 1, 2
_CHUNK = 500  # bound for "IN (...)" lists, well under SQLite's variable limit

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
        raise OutboxError(
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


class Outbox:
    """Open with :meth:`open`; every method is safe to call from any task."""

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection,
                 retention: float) -> None:
        self._writer = writer
        self._reader = reader
        self._retention = retention
        self._lock = asyncio.Lock()
        self.new_events = asyncio.Event()
        """Set whenever a commit enqueued events; delivery waits on it when idle."""

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path, synchronous: str = "full",
                   retention: float = 3600.0) -> AsyncIterator[Outbox]:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = await _connect(path, synchronous)
        except (OSError, aiosqlite.Error) as error:
            raise OutboxError(f"cannot open outbox {path}: {error}") from error
        try:
            await _migrate(writer)
            reader = await _connect(path, synchronous)
        except BaseException:
            await writer.close()
            raise
        try:
            yield cls(writer, reader, retention)
        finally:
            await reader.close()
            await writer.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                # Shielded: a cancelled caller must not leave the transaction open.
                await asyncio.shield(self._writer.execute("ROLLBACK"))
                raise
            await asyncio.shield(self._writer.execute("COMMIT"))

    # --- feeds: cursor and snapshot generation -------------------------------------------

    async def feed_state(self, feed: FeedId) -> tuple[str | None, int]:
        """The stored cursor (``None`` before the first page) and last snapshot generation."""
        async with self._lock, self._writer.execute(
            "SELECT cursor, generation FROM feeds WHERE source = ? AND feed = ?",
            (feed.source, feed.feed),
        ) as cursor:
            row = await cursor.fetchone()
        return (row[0], int(row[1])) if row else (None, 0)

    async def finish_generation(self, feed: FeedId, generation: int) -> None:
        async with self._transaction() as db:
            await self._upsert_feed(db, feed, None, generation)

    async def forget_cursor(self, feed: FeedId) -> None:
        """The next poll re-reads the whole feed; stored hashes still drop what is unchanged."""
        async with self._transaction() as db:
            await db.execute("UPDATE feeds SET cursor = NULL WHERE source = ? AND feed = ?",
                             (feed.source, feed.feed))

    @staticmethod
    async def _upsert_feed(db: aiosqlite.Connection, feed: FeedId, cursor: str | None,
                           generation: int | None) -> None:
        await db.execute(
            "INSERT INTO feeds (source, feed, entity, cursor, generation) "
            "VALUES (?, ?, ?, ?, coalesce(?, 0)) ON CONFLICT (source, feed) DO UPDATE SET "
            "cursor = coalesce(excluded.cursor, cursor), "
            "generation = coalesce(?, generation)",
            (feed.source, feed.feed, feed.entity, cursor, generation, generation),
        )

    # --- capture side ---------------------------------------------------------------------

    async def commit_page(self, page: CapturedPage) -> PageResult:
        """Enqueue what changed in ``page`` and advance its cursor, all in one transaction."""
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
        if fresh:
            self.new_events.set()
        return PageResult(enqueued=len(fresh), unchanged=len(page.changes) - len(fresh),
                          dead=len(dead))

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

    async def _enqueue(self, db: aiosqlite.Connection, page: CapturedPage,
                       fresh: list[Change]) -> None:
        feed = page.feed
        if page.conflate and fresh:
            await db.executemany(
                "DELETE FROM events WHERE state = 0 AND entity = ? AND subject = ?",
                [(feed.entity, c.subject) for c in fresh],
            )
        now = now_rfc3339()
        await db.executemany(
            "INSERT INTO events (event_id, source, feed, entity, op, subject, time, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(uuid7(), feed.source, feed.feed, feed.entity, c.op, c.subject, now, c.data)
             for c in fresh],
        )

    @staticmethod
    async def _store_dead_rows(db: aiosqlite.Connection, page: CapturedPage,
                               dead: list[Any]) -> None:
        feed, now = page.feed, time.time()
        await db.executemany(
            "INSERT INTO dead_letters (kind, source, feed, entity, subject, reason, payload, "
            "created_at) VALUES ('capture', ?, ?, ?, ?, ?, ?, ?)",
            [(feed.source, feed.feed, feed.entity, d.subject, d.reason, d.row, now) for d in dead],
        )

    @staticmethod
    async def _store_hashes(db: aiosqlite.Connection, page: CapturedPage, fresh: list[Change],
                            dead: list[Any]) -> None:
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
        async with self._lock, self._writer.execute(
            "SELECT subject FROM key_state WHERE source = ? AND feed = ? AND generation < ? "
            "AND subject NOT LIKE '#%' ORDER BY subject LIMIT ?",
            (feed.source, feed.feed, generation, limit),
        ) as cursor:
            return [str(row[0]) async for row in cursor]

    # --- delivery side --------------------------------------------------------------------

    async def fetch_pending(self, after: int, limit: int) -> list[PendingEvent]:
        """Pending events with a sequence above ``after``, oldest first."""
        async with self._reader.execute(
            "SELECT id, event_id, entity, op, subject, time, data FROM events "
            "WHERE state = 0 AND id > ? ORDER BY id LIMIT ?",
            (after, limit),
        ) as cursor:
            return [
                PendingEvent(int(r[0]), r[1], r[2], r[3], r[4], r[5], bytes(r[6]))
                async for r in cursor
            ]

    async def record_results(self, results: Sequence[PublishResult]) -> None:
        """The outbox decides: acked -> delivered, nacked -> dead letter, unknown -> pending."""
        acked = [r.sequence for r in results if r.outcome is Outcome.ACKED]
        nacked = [r for r in results if r.outcome is Outcome.NACKED]
        if not acked and not nacked:
            return
        now = time.time()
        if not nacked and len(acked) <= _CHUNK:
            await self._record_acked(acked, now)
            return
        async with self._transaction() as db:
            if self._retention <= 0:
                await db.executemany("DELETE FROM events WHERE id = ?", [(s,) for s in acked])
            else:
                await db.executemany(
                    "UPDATE events SET state = 1, changed_at = ? WHERE id = ? AND state = 0",
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
            statement = (f"UPDATE events SET state = 1, changed_at = ? "
                         f"WHERE state = 0 AND id IN ({marks})")
            params = (now, *acked)
        async with self._lock, self._writer.execute(statement, params):
            pass

    @staticmethod
    async def _dead_event(db: aiosqlite.Connection, result: PublishResult, now: float) -> None:
        cursor = await db.execute(
            "UPDATE events SET state = 2, changed_at = ? WHERE id = ? AND state = 0",
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
        """Delete delivered rows older than the retention, in small transactions."""
        cutoff = (now or time.time()) - self._retention
        total = 0
        while True:
            async with self._transaction() as db:
                cursor = await db.execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events "
                    "WHERE state = 1 AND changed_at < ? LIMIT 5000)",
                    (cutoff,),
                )
                removed = cursor.rowcount
            total += removed
            if removed < 5000:
                return total

    # --- inspection and operator actions ---------------------------------------------------

    async def stats(self) -> OutboxStats:
        async with self._reader.execute(
            "SELECT (SELECT count(*) FROM events WHERE state = 0), "
            "(SELECT count(*) FROM events WHERE state = 1), "
            "(SELECT count(*) FROM dead_letters), "
            "(SELECT time FROM events WHERE state = 0 ORDER BY id LIMIT 1), "
            "(SELECT seq FROM sqlite_sequence WHERE name = 'events')"
        ) as cursor:
            row = await cursor.fetchone()
        assert row is not None
        return OutboxStats(int(row[0]), int(row[1]), int(row[2]), row[3], int(row[4] or 0))

    async def pending_count(self) -> int:
        async with self._reader.execute("SELECT count(*) FROM events WHERE state = 0") as cursor:
            row = await cursor.fetchone()
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
                await db.execute("UPDATE events SET state = 0 WHERE id = ?", (event_seq,))
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
                "DELETE FROM events WHERE state = 2 AND id = "
                "(SELECT event_seq FROM dead_letters WHERE id = ?)",
                (dead_id,),
            )
            cursor = await db.execute("DELETE FROM dead_letters WHERE id = ?", (dead_id,))
            return cursor.rowcount > 0
