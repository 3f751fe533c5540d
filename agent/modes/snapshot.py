"""Snapshot mode: every row, in key order and in pages, compared with the stored hashes.

Each pass has a generation number; the outbox marks every key a page holds as seen by it,
and once a pass is complete, the keys it did not see were deleted in the ERP. A pass cut
short (a stop, an error) proves nothing and emits no deletes. For small tables, tables
with no reliable change column, and anything whose deletes matter.
"""

from __future__ import annotations

from agent.config import EntityConfig
from agent.envelope import key_parts
from agent.model import CapturedPage
from agent.modes.base import Poller, PollTotals
from agent.sources.base import Position


class Snapshot:
    """One snapshot feed's passes. It keeps nothing in memory: the pass number and the keys
    each pass saw are in the outbox, so a restart loses nothing but the pass it cut short."""

    def __init__(self, entity: EntityConfig) -> None:
        self.entity = entity

    async def poll(self, poller: Poller) -> PollTotals:
        _, generation = await poller.outbox.feed_state(poller.feed)
        generation += 1
        totals, after = PollTotals(), None
        while True:
            rows = await poller.reader.snapshot_page(self.entity, after)
            if rows:
                after = Position.of(rows[-1], self.entity.key)
                totals += await poller.capture(rows, len(rows), generation=generation)
            if len(rows) < poller.reader.config.page_size:
                break
            if poller.stop.is_set():
                return totals  # an unfinished pass proves no deletes
        totals += await self._delete_unseen(poller, generation)
        await poller.outbox.finish_generation(poller.feed, generation)
        return totals

    def outbox_failed(self) -> None:
        """Nothing to forget: an unfinished pass is simply not finished."""

    async def _delete_unseen(self, poller: Poller, generation: int) -> PollTotals:
        """Keys this complete pass did not see were deleted in the ERP."""
        totals = PollTotals()
        page_size = poller.reader.config.page_size
        while subjects := await poller.outbox.unseen_subjects(poller.feed, generation, page_size):
            deletes = [poller.mapper.delete(s, key_parts(s)) for s in subjects]
            page = CapturedPage(poller.feed, deletes, conflate=self.entity.conflate)
            totals += await poller.commit(page, 0)
        return totals
