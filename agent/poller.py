"""Change capture: drives a source's reads through the mapper into the outbox.

One :class:`FeedPoller` per entity feed. Every page it reads is committed together
with the cursor that page reached, so a crash between pages re-reads at most a page
(plus the lookback), and the stored hashes drop what was already enqueued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from agent.capture import Mapper
from agent.config import EntityConfig, SourceConfig
from agent.envelope import key_parts
from agent.model import CapturedPage, Change, DeadRow, FeedId, PageResult
from agent.outbox import Outbox
from agent.sources.cursor import decode_cursor, encode_cursor, shift_back
from agent.sources.sql import Position, Row, SqlReader

log = logging.getLogger("distillsync.capture")


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
                 outbox: Outbox, stop: asyncio.Event | None = None) -> None:
        self.entity = entity
        self.stop = stop or asyncio.Event()
        self.feed = FeedId(source.name, entity.feed, entity.entity)
        self.reader = reader
        self.outbox = outbox
        self.mapper = Mapper(entity.entity, entity.key, entity.cursor, ZoneInfo(source.timezone))
        self.stats = FeedStats(mode=entity.mode)

    async def poll(self) -> PollTotals:
        """Read everything new once; raises :class:`SourceError` when the ERP fails."""
        self.stats.last_poll_start = time.time()
        if self.entity.mode == "snapshot":
            totals = await self._snapshot()
        else:
            totals = await self._by_cursor()
        now = time.time()
        self.stats.last_poll_end = self.stats.last_success = now
        self.stats.rows_read += totals.rows
        self.stats.changes_emitted += totals.enqueued
        self.stats.dead_letters += totals.dead
        return totals

    def _map(self, rows: list[Row]) -> tuple[list[Change], list[DeadRow]]:
        changes: list[Change] = []
        dead: list[DeadRow] = []
        for row in rows:
            mapped = self.mapper.upsert(row)
            (changes if isinstance(mapped, Change) else dead).append(mapped)  # type: ignore[arg-type]
        return changes, dead

    async def _commit(self, page: CapturedPage, rows: int) -> PollTotals:
        result: PageResult = await self.outbox.commit_page(page)
        return PollTotals(rows, result.enqueued, result.dead)

    async def _by_cursor(self) -> PollTotals:
        stored_text, _ = await self.outbox.feed_state(self.feed)
        stored = decode_cursor(stored_text) if stored_text is not None else None
        lookback = self.entity.lookback if self.entity.mode == "timestamp" else 0.0
        low = shift_back(stored, lookback) if stored is not None else None
        totals, after = PollTotals(), None
        while True:
            rows = await self.reader.cursor_page(self.entity, low, after)
            if not rows:
                return totals
            last = rows[-1]
            after = self._position(last, with_cursor=True)
            highest = _newer(stored, after.cursor)
            changes, dead = self._map(rows)
            page = CapturedPage(self.feed, changes, dead, cursor=encode_cursor(highest),
                                conflate=self.entity.conflate)
            totals += await self._commit(page, len(rows))
            stored = highest
            if len(rows) < self.reader.config.page_size or self.stop.is_set():
                return totals

    async def _snapshot(self) -> PollTotals:
        _, generation = await self.outbox.feed_state(self.feed)
        generation += 1
        totals, after = PollTotals(), None
        while True:
            rows = await self.reader.snapshot_page(self.entity, after)
            if rows:
                after = self._position(rows[-1], with_cursor=False)
                changes, dead = self._map(rows)
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


def _newer(stored: Any, candidate: Any) -> Any:
    """The cursor never moves backwards, even if the ERP's clock does."""
    if stored is None:
        return candidate
    try:
        return candidate if candidate > stored else stored
    except TypeError:  # the column's type changed (e.g. a migration): trust the ERP
        return candidate
