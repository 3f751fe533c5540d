"""What a capture mode is, and what it gets from the poller that drives it.

A mode decides what each poll reads and which cursor each page reaches; the
:class:`Poller` maps the rows it is handed and commits each page, with that cursor, in one
outbox transaction. A mode may remember what it read between polls (to read less), but
never relies on it: a fresh mode, after a restart, reads again from the stored cursor.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from agent.capture import Mapper
from agent.model import CapturedPage, FeedId
from agent.outbox import Outbox
from agent.sources.base import Row, Source


@dataclass(frozen=True, slots=True)
class PollTotals:
    rows: int = 0
    enqueued: int = 0
    dead: int = 0

    def __add__(self, other: PollTotals) -> PollTotals:
        return PollTotals(
            self.rows + other.rows, self.enqueued + other.enqueued, self.dead + other.dead
        )


class Poller(Protocol):
    feed: FeedId
    reader: Source
    outbox: Outbox
    mapper: Mapper
    stop: asyncio.Event
    """Set: stop after the page being committed."""

    async def stored_cursor(self) -> Any:
        """The feed's cursor in the outbox, decoded; ``None`` before the first load and
        after a resync."""
        ...

    async def capture(
        self, rows: list[Row], read: int, *, cursor: Any = None, generation: int | None = None
    ) -> PollTotals:
        """Map ``rows`` and commit them as one page of ``read`` rows read, with ``cursor``
        as the feed's new cursor (``None``: unchanged) or as seen by snapshot pass
        ``generation``; raises :class:`~agent.outbox.OutboxUnwritable`."""
        ...

    async def commit(self, page: CapturedPage, read: int) -> PollTotals:
        """Commit a page built by the mode itself (deletes, a cursor alone)."""
        ...


class Mode(Protocol):
    async def poll(self, poller: Poller) -> PollTotals:
        """Read everything new once, page by page, until a short page or ``poller.stop``."""
        ...

    def outbox_failed(self) -> None:
        """The page being committed did not reach the outbox (it raised
        :class:`~agent.outbox.OutboxUnwritable`): forget what was noted of it."""
        ...
