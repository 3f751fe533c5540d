"""Incrementing mode: a strictly growing column (a sequence, ``AUTO_INCREMENT``,
SQL Server ``rowversion``).

Reads are ``cursor > stored`` in ``(cursor, key...)`` order. Ids are handed out when a
row is written, not when it commits, so id 4 can commit after id 5 was read. The stored
cursor is therefore the highest id the agent had *already seen ``lookback`` ago*, not the
highest id read: ids below what was read stay re-readable for ``lookback`` (rows re-read
are dropped by hash). ``lookback = "0s"`` is the strict ``id > last``. The very first
load of a feed settles at once: it does not wait for transactions open before it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from agent.config import EntityConfig
from agent.model import CapturedPage
from agent.modes.base import Poller, PollTotals
from agent.sources.base import Position
from agent.sources.cursor import encode_cursor, newer


class IncrementingCursor:
    """One incrementing feed's window: the highest cursor read, and when, until it settles."""

    def __init__(self, entity: EntityConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.entity = entity
        self._clock = clock
        # (monotonic time, highest cursor read by then), oldest first
        self._seen: deque[tuple[float, Any]] = deque()
        self._highest: Any = None

    async def poll(self, poller: Poller) -> PollTotals:
        stored = await poller.stored_cursor()
        low = stored  # already held back by the lookback: see _settle
        first_load = stored is None
        if first_load:  # also after a resync forgot the cursor: start the window afresh
            self._forget()
        totals, after = PollTotals(), None
        while True:
            rows = await poller.reader.cursor_page(self.entity, low, after)
            if not rows:
                break
            after = Position.of(rows[-1], self.entity.key, self.entity.cursor)
            self._note_highest(after.cursor)
            advanced = self._settle(stored, first_load)
            totals += await poller.capture(rows, len(rows), cursor=advanced)
            stored = advanced
            if poller.stop.is_set():
                return totals
            if len(rows) < poller.reader.config.page_size:
                break
        # the window may settle further on a poll that read nothing new
        settled = self._settle(stored, first_load)
        if settled is not None and settled != stored:
            await poller.commit(CapturedPage(poller.feed, cursor=encode_cursor(settled)), 0)
        return totals

    def outbox_failed(self) -> None:
        """The failed page's ids were noted before it was committed: forget them, or a later
        page could settle the cursor past rows that were never committed."""
        self._forget()

    def _forget(self) -> None:
        self._seen.clear()
        self._highest = None

    def _note_highest(self, cursor: Any) -> None:
        highest = newer(self._highest, cursor)
        if highest is not None and (not self._seen or self._seen[-1][1] != highest):
            self._seen.append((self._clock(), highest))
        self._highest = highest

    def _settle(self, stored: Any, first_load: bool) -> Any:
        """The highest cursor read at least ``lookback`` ago. Any id below it whose
        transaction was still open then has had ``lookback`` to commit."""
        cutoff = math.inf if first_load else self._clock() - self.entity.lookback
        settled = stored
        while self._seen and self._seen[0][0] <= cutoff:
            settled = newer(settled, self._seen.popleft()[1])
        return settled
