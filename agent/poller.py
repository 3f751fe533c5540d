"""Change capture: drives a source's reads through the mapper into the outbox.

One :class:`FeedPoller` per entity feed. Every page it reads is committed together
with the cursor that page reached, so a crash between pages re-reads at most a page
(plus the lookback), and the stored hashes drop what was already enqueued.

The lookback is what catches late commits, in both cursor modes:

* ``timestamp``: a sweep every few seconds re-reads from ``cursor - lookback`` (in the
  cursor's own type); polls in between read only past the last row read
  (:meth:`FeedPoller._timestamp_window`).
* ``incrementing``: ids (sequences, ``AUTO_INCREMENT``) are handed out when a row is
  written, not when it commits, so id 4 can commit after id 5 was read. The stored cursor
  is therefore the highest id the agent had *already seen ``lookback`` ago*, not the
  highest id read: ids below what was read stay re-readable for ``lookback`` (rows re-read
  are dropped by hash). ``lookback = "0s"`` is the strict ``id > last``. The very first
  load of a feed settles at once: it does not wait for transactions open before it.

When the outbox cannot be written (disk full, a failing disk), the page whose commit
failed left events and cursor as they were: the poll ends there, never skipping to the
next page, and the feed shows the error. Polls then wait for the outbox's backoff
(:meth:`Outbox.writable`) and read again from the stored cursor, so what changed
meanwhile is captured once the disk recovers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from agent.capture import Mapper
from agent.config import EntityConfig, SourceConfig
from agent.envelope import key_parts
from agent.model import CapturedPage, Change, DeadRow, FeedId, PageResult
from agent.outbox import Outbox, OutboxUnwritable
from agent.sources.cursor import decode_cursor, encode_cursor, shift_back
from agent.sources.sql import Position, Row, SqlReader

log = logging.getLogger("distillsync.capture")

MAP_SLICE = 200  # rows mapped between yields to the event loop (~2 ms of CPU)
TICK_SETTLE = 2.0  # seconds the cursor must stay put before its tick counts as closed
MAX_FINGERPRINTS = 200_000  # raw-row fingerprints kept per feed (see _drop_known)


@dataclass(slots=True)
class FeedStats:
    """What the status API shows per feed; updated in place by its poller."""

    mode: str
    last_poll_start: float | None = None
    last_poll_end: float | None = None
    last_success: float | None = None
    rows_read: int = 0
    changes_emitted: int = 0
    dead_letters: int = 0
    errors: int = 0
    last_error: str | None = None

    @property
    def failing(self) -> bool:
        """The last poll failed (``last_error`` stays, for the record, after a recovery)."""
        return self.last_error is not None and (
            self.last_success is None or (self.last_poll_end or 0.0) > self.last_success)


@dataclass(frozen=True, slots=True)
class PollTotals:
    rows: int = 0
    enqueued: int = 0
    dead: int = 0

    def __add__(self, other: PollTotals) -> PollTotals:
        return PollTotals(self.rows + other.rows, self.enqueued + other.enqueued,
                          self.dead + other.dead)


class FeedPoller:
    def __init__(self, source: SourceConfig, entity: EntityConfig, reader: SqlReader,
                 outbox: Outbox, stop: asyncio.Event | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.entity = entity
        self._clock = clock  # the lookback's clock; tests drive it
        self.stop = stop or asyncio.Event()
        self.feed = FeedId(source.name, entity.feed, entity.entity)
        self.reader = reader
        self.outbox = outbox
        self.mapper = Mapper(entity.entity, entity.key, entity.cursor, ZoneInfo(source.timezone))
        self.stats = FeedStats(mode=entity.mode)
        # incrementing mode: (monotonic time, highest cursor read by then), oldest first
        self._seen: deque[tuple[float, Any]] = deque()
        self._highest: Any = None
        # timestamp mode: see _timestamp_window
        self._swept_once = False
        self._sweep_base: Any = None
        self._next_sweep = 0.0
        self._sweep_every = min(entity.lookback / 3, max(5.0, 5 * source.poll_interval))
        self._head: Position | None = None  # the last (cursor, key) read
        # Fingerprints of committed raw rows by key hash, this sweep's and the previous one's.
        self._recent: dict[int, int] = {}
        self._older: dict[int, int] = {}
        self._tick: Any = None
        self._tick_since = 0.0  # when the cursor last moved (monotonic)

    async def poll(self) -> PollTotals:
        """Read everything new once; raises :class:`SourceError` when the ERP fails. While
        the outbox cannot be written it does nothing, or stops at the page that failed."""
        if not await self.outbox.writable():
            return PollTotals()  # backing off; the outbox's status says why
        self.stats.last_poll_start = time.time()
        try:
            if self.entity.mode == "snapshot":
                totals = await self._snapshot()
            else:
                totals = await self._by_cursor()
        except OutboxUnwritable as error:
            self._outbox_failed(error)
            return PollTotals()
        self.stats.last_poll_end = self.stats.last_success = time.time()
        return totals

    def _outbox_failed(self, error: OutboxUnwritable) -> None:
        self.stats.errors += 1
        self.stats.last_error = str(error)
        self.stats.last_poll_end = time.time()
        # Incrementing mode noted the failed page's ids before committing it: forget them,
        # or a later page could settle the cursor past rows that were never committed.
        self._seen.clear()
        self._highest = None

    async def _map(self, rows: list[Row]) -> tuple[list[Change], list[DeadRow]]:
        changes: list[Change] = []
        dead: list[DeadRow] = []
        for n, row in enumerate(rows, start=1):
            mapped = self.mapper.upsert(row)
            if isinstance(mapped, Change):
                changes.append(mapped)
            else:
                dead.append(mapped)
            if n % MAP_SLICE == 0:
                await asyncio.sleep(0)  # let delivery keep its window full meanwhile
        return changes, dead

    async def _commit(self, page: CapturedPage, rows: int) -> PollTotals:
        result: PageResult = await self.outbox.commit_page(page)
        # Counted per page, so a poll that stops at a failed page still counts the rest.
        self.stats.rows_read += rows
        self.stats.changes_emitted += result.enqueued
        self.stats.dead_letters += result.dead
        return PollTotals(rows, result.enqueued, result.dead)

    async def _by_cursor(self) -> PollTotals:
        stored_text, _ = await self.outbox.feed_state(self.feed)
        stored = decode_cursor(stored_text) if stored_text is not None else None
        timestamp = self.entity.mode == "timestamp"
        sweeping = False
        if timestamp:
            low, after, sweeping = self._timestamp_window(stored)
        else:
            low, after = stored, None  # already held back by the lookback: see _settle
        first_load = stored is None
        if first_load:  # also after a resync forgot the cursor: start the window afresh
            self._seen.clear()
            self._highest = None
        totals, started_from, began = PollTotals(), stored, self._clock()
        while True:
            rows = await self.reader.cursor_page(self.entity, low, after)
            if not rows:
                break
            after = self._position(rows[-1], with_cursor=True)
            if timestamp:
                advanced = _newer(stored, after.cursor)
            else:
                self._note_highest(after.cursor)
                advanced = self._settle(stored, first_load)
            fresh, seen = self._drop_known(rows) if timestamp else (rows, [])
            changes, dead = await self._map(fresh)
            page = CapturedPage(self.feed, changes, dead, cursor=_encoded(advanced),
                                conflate=self.entity.conflate)
            totals += await self._commit(page, len(rows))
            self._remember(seen)  # only once committed
            stored = advanced
            self._head = after
            if timestamp and stored != self._tick:  # when this tick was first seen
                self._tick, self._tick_since = stored, self._clock()
            if self.stop.is_set():
                return totals
            if len(rows) < self.reader.config.page_size:
                break
        if timestamp:
            self._after_timestamp_poll(stored, started_from, began if sweeping else None)
        if not timestamp:
            # the window may settle further on a poll that read nothing new
            settled = self._settle(stored, first_load)
            if settled is not None and settled != stored:
                await self._commit(CapturedPage(self.feed, cursor=_encoded(settled)), 0)
        return totals

    def _timestamp_window(self, stored: Any) -> tuple[Any, Position | None, bool]:
        """Where a timestamp poll reads from: ``(low, after, is_sweep)``.

        Between sweeps a poll reads only from the cursor's own tick on (``>= cursor``: with
        one-second timestamps, later commits share the tick), so an unchanged lookback
        window is not re-read and re-mapped every ``poll_interval``. Once the cursor has not
        moved for ``TICK_SETTLE`` seconds, the ERP's clock has left that tick, so a new row
        in it can only be a late commit (the sweep's job): polls then continue strictly
        after the last ``(cursor, key)`` read, and a bulk change of 100,000 rows stamped in
        one second is not re-read every poll either. Every ``_sweep_every`` (or ten times
        the last sweep's duration, if longer) a
        sweep re-reads from ``base - lookback``, ``base`` being the cursor when the
        previous sweep began: a row stamped ``T`` that committed at ``C <= T + lookback``
        is visible to the first sweep that begins after ``C``, whose predecessor began
        before ``C``, when the cursor (at most the ERP's clock) was below ``T + lookback``.
        Late commits therefore wait at most one sweep interval, and none is missed.
        After a restart the first poll sweeps from the stored cursor, as it always did.
        """
        if stored is None:  # first load, or after a resync: read it all
            self._swept_once, self._sweep_base, self._head = False, None, None
            self._recent, self._older = {}, {}
            return None, None, True
        if self.entity.lookback <= 0:  # strict: only the cursor's own tick is re-read
            self._older, self._recent = self._recent, {}
            return stored, None, True
        now = self._clock()
        if self._swept_once and now < self._next_sweep:
            head = self._head
            settled = now - self._tick_since >= TICK_SETTLE
            if settled and head is not None and head.cursor == stored:
                return stored, head, False
            return stored, None, False
        base = self._sweep_base if self._sweep_base is not None else stored
        # Keys last read before the previous sweep are outside any window still re-read.
        self._older, self._recent = self._recent, {}
        return shift_back(base, self.entity.lookback), None, True

    def _drop_known(self, rows: list[Row]) -> tuple[list[Row], list[tuple[int, int | None]]]:
        """Rows re-read exactly as they were last committed (same values, cursor aside)
        would map to the stored hash and enqueue nothing: skip mapping them. Sweeps re-read
        their whole window, so this is most of a sweep's cost (bench/README.md, P3).

        A row is skipped only when it equals the key's *last* committed state: the
        fingerprint in ``_recent`` when the key has one there (it is newer), else the one
        in ``_older``. An older state must never hide a revert (A, a sweep, B, then A
        again: A equals the older fingerprint but not the last state, B). The fingerprint
        is a 64-bit SipHash of the values' ``repr`` (not of the values: ``hash(-1) ==
        hash(-2)`` in Python), filed under the same hash of the key; a new state that
        collided with the last one would wait for its next change (odds ~1e-19 per
        re-read row). At most ``MAX_FINGERPRINTS`` are kept (~10 MB): past that, a
        changed key's fingerprint is forgotten rather than left stale, and its rows are
        simply mapped. What ``seen`` returns is filed by :meth:`_remember` once the page
        is committed."""
        fresh: list[Row] = []
        seen: list[tuple[int, int | None]] = []
        room = MAX_FINGERPRINTS - len(self._recent)
        for row in rows:
            try:
                key, fingerprint = self._fingerprints(row)
            except TypeError:  # an unhashable driver value: map it as usual
                fresh.append(row)
                continue
            last = self._recent.get(key, self._older.get(key))
            if fingerprint == last:
                self._recent.setdefault(key, fingerprint)  # still the key's last state
                continue
            fresh.append(row)
            seen.append((key, fingerprint if len(seen) < room else None))
        return fresh, seen

    def _fingerprints(self, row: Row) -> tuple[int, int]:
        keys = tuple(row.get(k) for k in self.entity.key)
        values = tuple(v for c, v in row.items() if c != self.entity.cursor)
        return hash(repr(keys)), hash(repr(values))

    def _remember(self, seen: list[tuple[int, int | None]]) -> None:
        """File the fingerprints of a committed page (``None``: no room, forget the key)."""
        for key, fingerprint in seen:
            if fingerprint is None:
                self._recent.pop(key, None)
                self._older.pop(key, None)
            else:
                self._recent[key] = fingerprint

    def _after_timestamp_poll(self, stored: Any, started_from: Any,
                              sweep_began: float | None) -> None:
        now = self._clock()
        if sweep_began is None:
            return
        self._swept_once = True
        self._sweep_base = started_from if started_from is not None else stored
        # A sweep costs its window's size: never spend more than a tenth of the time on it.
        self._next_sweep = now + max(self._sweep_every, 10 * (now - sweep_began))

    def _note_highest(self, cursor: Any) -> None:
        highest = _newer(self._highest, cursor)
        if highest is not None and (not self._seen or self._seen[-1][1] != highest):
            self._seen.append((self._clock(), highest))
        self._highest = highest

    def _settle(self, stored: Any, first_load: bool) -> Any:
        """Incrementing mode: the highest cursor read at least ``lookback`` ago. Any id
        below it whose transaction was still open then has had ``lookback`` to commit."""
        cutoff = math.inf if first_load else self._clock() - self.entity.lookback
        settled = stored
        while self._seen and self._seen[0][0] <= cutoff:
            settled = _newer(settled, self._seen.popleft()[1])
        return settled

    async def _snapshot(self) -> PollTotals:
        _, generation = await self.outbox.feed_state(self.feed)
        generation += 1
        totals, after = PollTotals(), None
        while True:
            rows = await self.reader.snapshot_page(self.entity, after)
            if rows:
                after = self._position(rows[-1], with_cursor=False)
                changes, dead = await self._map(rows)
                page = CapturedPage(self.feed, changes, dead, seen_generation=generation,
                                    conflate=self.entity.conflate)
                totals += await self._commit(page, len(rows))
            if len(rows) < self.reader.config.page_size:
                break
            if self.stop.is_set():
                return totals  # an unfinished pass proves no deletes
        totals += await self._sweep(generation)
        await self.outbox.finish_generation(self.feed, generation)
        return totals

    async def _sweep(self, generation: int) -> PollTotals:
        """Keys this complete pass did not see were deleted in the ERP."""
        totals = PollTotals()
        page_size = self.reader.config.page_size
        while subjects := await self.outbox.unseen_subjects(self.feed, generation, page_size):
            deletes = [self.mapper.delete(s, key_parts(s)) for s in subjects]
            page = CapturedPage(self.feed, deletes, conflate=self.entity.conflate)
            totals += await self._commit(page, 0)
        return totals

    def _position(self, row: Mapping[str, Any], with_cursor: bool) -> Position:
        keys = tuple(row.get(k) for k in self.entity.key)
        cursor = row.get(self.entity.cursor) if with_cursor and self.entity.cursor else None
        return Position(cursor=cursor, keys=keys)


def _encoded(cursor: Any) -> str | None:
    return encode_cursor(cursor) if cursor is not None else None


def _newer(stored: Any, candidate: Any) -> Any:
    """The cursor never moves backwards, even if the ERP's clock does."""
    if stored is None:
        return candidate
    try:
        return candidate if candidate > stored else stored
    except TypeError:  # the column's type changed (e.g. a migration): trust the ERP
        return candidate
