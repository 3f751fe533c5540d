"""Timestamp mode: a column the ERP stamps on every write (``updated_at``, ``tms``).

Reads are ``cursor >= low`` in ``(cursor, key...)`` order. The lookback is what catches
late commits: a row stamped ``T`` whose transaction commits after the agent read past
``T``. A sweep every few seconds re-reads from ``cursor - lookback`` (in the cursor's own
type); polls in between read only past the last row read (:meth:`TimestampCursor._window`
has the argument). Rows re-read unchanged are skipped before mapping
(:class:`~agent.modes.fingerprints.Fingerprints`), and would enqueue nothing anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from agent.config import EntityConfig
from agent.modes.base import Poller, PollTotals
from agent.modes.fingerprints import Fingerprints
from agent.sources.base import Position
from agent.sources.cursor import newer, shift_back

TICK_SETTLE = 2.0  # seconds the cursor must stay put before its tick counts as closed


class TimestampCursor:
    """One timestamp feed's read plan: when to sweep, where its head is, its fingerprints."""

    def __init__(
        self,
        entity: EntityConfig,
        poll_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.entity = entity
        self._clock = clock
        self.known = Fingerprints(entity.key, entity.cursor)
        self._swept_once = False
        self._sweep_base: Any = None
        self._next_sweep = 0.0
        self._sweep_every = min(entity.lookback / 3, max(5.0, 5 * poll_interval))
        self._head: Position | None = None  # the last (cursor, key) read
        self._tick: Any = None
        self._tick_since = 0.0  # when the cursor last moved (monotonic)

    async def poll(self, poller: Poller) -> PollTotals:
        stored = await poller.stored_cursor()
        low, after, sweeping = self._window(stored)
        totals, started_from, began = PollTotals(), stored, self._clock()
        while True:
            rows = await poller.reader.cursor_page(self.entity, low, after)
            if not rows:
                break
            after = Position.of(rows[-1], self.entity.key, self.entity.cursor)
            advanced = newer(stored, after.cursor)
            fresh, seen = self.known.drop_known(rows)
            totals += await poller.capture(fresh, len(rows), cursor=advanced)
            self.known.remember(seen)  # only once committed
            stored, self._head = advanced, after
            if stored != self._tick:  # when this tick was first seen
                self._tick, self._tick_since = stored, self._clock()
            if poller.stop.is_set():
                return totals
            if len(rows) < poller.reader.config.page_size:
                break
        if sweeping:
            self._swept(stored, started_from, began)
        return totals

    def outbox_failed(self) -> None:
        """Nothing to forget: the head, the tick and the fingerprints move only once a page
        is committed."""

    def _window(self, stored: Any) -> tuple[Any, Position | None, bool]:
        """Where a poll reads from: ``(low, after, is_sweep)``.

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
            self.known.clear()
            return None, None, True
        if self.entity.lookback <= 0:  # strict: only the cursor's own tick is re-read
            self.known.rotate()
            return stored, None, True
        now = self._clock()
        if self._swept_once and now < self._next_sweep:
            head = self._head
            settled = now - self._tick_since >= TICK_SETTLE
            if settled and head is not None and head.cursor == stored:
                return stored, head, False
            return stored, None, False
        base = self._sweep_base if self._sweep_base is not None else stored
        self.known.rotate()
        return shift_back(base, self.entity.lookback), None, True

    def _swept(self, stored: Any, started_from: Any, began: float) -> None:
        """A sweep that began at ``began`` from ``started_from`` read up to ``stored``."""
        now = self._clock()
        self._swept_once = True
        self._sweep_base = started_from if started_from is not None else stored
        # A sweep costs its window's size: never spend more than a tenth of the time on it.
        self._next_sweep = now + max(self._sweep_every, 10 * (now - began))
