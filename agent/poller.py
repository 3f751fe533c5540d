"""Change capture: drives a source's reads through the mapper into the outbox.

One :class:`FeedPoller` per entity feed, and one mode object per poller, picked by the
feed's ``mode``: :class:`~agent.modes.timestamp.TimestampCursor`,
:class:`~agent.modes.incrementing.IncrementingCursor` or
:class:`~agent.modes.snapshot.Snapshot`. The mode decides what each poll reads from the
:class:`~agent.sources.base.Source` and which cursor each page reaches (the lookback, and
how each mode uses it to catch late commits, is in its module); the poller maps the rows
and commits every page together with that cursor, so a crash between pages re-reads at
most a page (plus the lookback), and the stored hashes drop what was already enqueued.

When the outbox cannot be written (disk full, a failing disk), the page whose commit
failed left events and cursor as they were: the poll ends there, never skipping to the
next page, and the feed shows the error. Polls then wait for the outbox's backoff
(:meth:`Outbox.writable`) and read again from the stored cursor, so what changed
meanwhile is captured once the disk recovers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from agent.capture import Mapper
from agent.config import EntityConfig, SourceConfig
from agent.model import CapturedPage, Change, DeadRow, FeedId, PageResult
from agent.modes.base import Mode, PollTotals
from agent.modes.incrementing import IncrementingCursor
from agent.modes.snapshot import Snapshot
from agent.modes.timestamp import TimestampCursor
from agent.outbox import Outbox, OutboxUnwritable
from agent.sources.base import Row, Source
from agent.sources.cursor import decode_cursor, encode_cursor

log = logging.getLogger("distillsync.capture")

MAP_SLICE = 200  # rows mapped between yields to the event loop (~2 ms of CPU)


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
            self.last_success is None or (self.last_poll_end or 0.0) > self.last_success
        )


def mode_for(
    source: SourceConfig, entity: EntityConfig, clock: Callable[[], float] = time.monotonic
) -> Mode:
    """The mode object the feed's ``mode`` names; ``clock`` is its lookback's clock."""
    match entity.mode:
        case "timestamp":
            return TimestampCursor(entity, source.poll_interval, clock)
        case "incrementing":
            return IncrementingCursor(entity, clock)
        case "snapshot":
            return Snapshot(entity)


class FeedPoller:
    """One entity feed: its mode reads, the poller maps, commits and counts (a
    :class:`~agent.modes.base.Poller`)."""

    def __init__(
        self,
        source: SourceConfig,
        entity: EntityConfig,
        reader: Source,
        outbox: Outbox,
        stop: asyncio.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.entity = entity
        self.stop = stop or asyncio.Event()
        self.feed = FeedId(source.name, entity.feed, entity.entity)
        self.reader = reader
        self.outbox = outbox
        self.mapper = Mapper(entity.entity, entity.key, entity.cursor, ZoneInfo(source.timezone))
        self.stats = FeedStats(mode=entity.mode)
        self.mode = mode_for(source, entity, clock)  # the lookback's clock; tests drive it

    async def poll(self) -> PollTotals:
        """Read everything new once; raises :class:`SourceError` when the ERP fails. While
        the outbox cannot be written it does nothing, or stops at the page that failed."""
        if not await self.outbox.writable():
            return PollTotals()  # backing off; the outbox's status says why
        self.stats.last_poll_start = time.time()
        try:
            totals = await self.mode.poll(self)
        except OutboxUnwritable as error:
            self._outbox_failed(error)
            return PollTotals()
        self.stats.last_poll_end = self.stats.last_success = time.time()
        return totals

    def _outbox_failed(self, error: OutboxUnwritable) -> None:
        self.stats.errors += 1
        self.stats.last_error = str(error)
        self.stats.last_poll_end = time.time()
        self.mode.outbox_failed()

    async def stored_cursor(self) -> Any:
        stored_text, _ = await self.outbox.feed_state(self.feed)
        return decode_cursor(stored_text) if stored_text is not None else None

    async def capture(
        self, rows: list[Row], read: int, *, cursor: Any = None, generation: int | None = None
    ) -> PollTotals:
        changes, dead = await self._map(rows)
        page = CapturedPage(
            self.feed,
            changes,
            dead,
            cursor=_encoded(cursor),
            seen_generation=generation,
            conflate=self.entity.conflate,
        )
        return await self.commit(page, read)

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

    async def commit(self, page: CapturedPage, read: int) -> PollTotals:
        result: PageResult = await self.outbox.commit_page(page)
        # Counted per page, so a poll that stops at a failed page still counts the rest.
        self.stats.rows_read += read
        self.stats.changes_emitted += result.enqueued
        self.stats.dead_letters += result.dead
        return PollTotals(read, result.enqueued, result.dead)


def _encoded(cursor: Any) -> str | None:
    return encode_cursor(cursor) if cursor is not None else None
