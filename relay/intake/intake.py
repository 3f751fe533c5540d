"""What every way in (a webhook, a poll, a re-read) does with what a shop's mapping made:
turn it into the store's terms, commit it, and count it.

- An :class:`~relay.intake.order.Order` or :class:`~relay.intake.order.Return` becomes a
  :class:`~relay.intake.store.NewEvent` with the id DESIGN.md fixes
  (:mod:`relay.intake.identity`); the store says ``stored``, ``duplicate``, ``stale`` or
  ``conflict``.
- A **conflict** (the order's newest stored state has this version and other content) is
  not stored as received: bodies of one second can arrive in any order, so the intake asks
  the shop for the order as it is now and stores *that* (``reread=True``), which gives the
  newest state the highest sequence. The re-read runs in the background (:meth:`Intake.
  rereads`), so a webhook is answered at once; if the intake dies first, the next catch-up
  poll reads the order again (its version is inside the overlap) and meets the same
  conflict.
- The other outcomes (an abandoned checkout, a trashed or deleted order, a body that
  cannot be mapped) are recorded as :class:`~relay.intake.store.Note`, shown in status and
  never published.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from relay.errors import RelayKitError
from relay.intake.identity import digest, event_id
from relay.intake.order import Order, Return
from relay.intake.outcome import Draft, Gone, Mapped, Trashed, Unmappable
from relay.intake.source import ShopClient
from relay.intake.status import IntakeStats
from relay.intake.store import IntakeStore, NewEvent, Note, Taken

log = logging.getLogger("distillsync.relay.intake")

REREAD_QUEUE = 10_000
"""Orders waiting to be re-read; past that, the catch-up poll repairs the rest."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where one shop's events go, and how to read it again."""

    shop: str
    tenant: str
    agent: str
    client: ShopClient


@dataclass(frozen=True, slots=True)
class Received:
    """One mapped outcome and the raw bytes it came from (kept for a dead letter)."""

    mapped: Mapped
    body: bytes


def new_event(route: Route, item: Order | Return) -> NewEvent:
    data = item.to_data()
    ref = item.order_ref if isinstance(item, Order) else item.return_ref
    content = digest(data)
    return NewEvent(
        kind="order" if isinstance(item, Order) else "return",
        shop=route.shop,
        ref=ref,
        version=item.version,
        digest=content,
        id=str(event_id(route.shop, ref, data["version"], content)),
        tenant=route.tenant,
        agent=route.agent,
        data=data,
    )


def note(
    route: Route, mapped: Draft | Trashed | Gone | Unmappable, source: str, body: bytes
) -> Note:
    match mapped:
        case Draft(order_ref=ref):
            return Note(
                "draft", route.shop, ref, "checkout not placed: nothing to import", source, body
            )
        case Trashed(order_ref=ref):
            return Note("trashed", route.shop, ref, "order moved to the trash", source, body)
        case Gone(code=code, message=message):
            return Note(
                "gone", route.shop, None, f"deleted for good ({code}: {message})", source, body
            )
        case Unmappable(reason=reason, order_ref=ref):
            return Note("dead", route.shop, ref, reason, source, body)


class Intake:
    def __init__(
        self,
        store: IntakeStore,
        routes: Mapping[str, Route],
        stats: IntakeStats,
        wake: Callable[[], None],
    ) -> None:
        self.store = store
        self.routes = routes
        self.stats = stats
        self._wake = wake
        self._rereads: asyncio.Queue[tuple[str, str]] = asyncio.Queue(REREAD_QUEUE)
        self._queued: set[tuple[str, str]] = set()

    async def take(
        self, route: Route, received: Sequence[Received], source: str
    ) -> list[Taken | str]:
        """Commit every outcome (one transaction for the events, one for the notes) and say
        what became of each: a :data:`Taken` or a note's kind."""
        events: list[NewEvent] = []
        notes: list[Note] = []
        for item in received:
            if isinstance(item.mapped, Order | Return):
                events.append(new_event(route, item.mapped))
            else:
                notes.append(note(route, item.mapped, source, item.body))
        taken = await self.store.take(events) if events else []
        if notes:
            await self.store.record(notes)
        self._count(route.shop, taken, notes)
        for event, outcome in zip(events, taken, strict=True):
            if outcome == "conflict" and event.kind == "order":
                self._queue_reread(route.shop, event.ref)
            elif outcome == "conflict":  # a refund is not read again: its latest word wins
                self._count(route.shop, await self.store.take([event], reread=True), [])
        outcomes: list[Taken | str] = []
        it_events, it_notes = iter(taken), iter(notes)
        for item in received:
            outcomes.append(
                next(it_events) if isinstance(item.mapped, Order | Return) else next(it_notes).kind
            )
        return outcomes

    def _count(self, shop: str, taken: Sequence[Taken], notes: Sequence[Note]) -> None:
        for outcome in taken:
            self.stats.count_event(shop, outcome)
        for one in notes:
            self.stats.count_event(shop, one.kind)
        if "stored" in taken:
            self._wake()

    def _queue_reread(self, shop: str, order_ref: str) -> None:
        key = (shop, order_ref)
        if key in self._queued:
            return
        try:
            self._rereads.put_nowait(key)
        except asyncio.QueueFull:
            return  # the next poll meets the conflict again
        self._queued.add(key)

    async def rereads(self) -> None:
        """Forever: read each conflicting order again and store what the shop says now."""
        while True:
            shop, ref = await self._rereads.get()
            self._queued.discard((shop, ref))
            try:
                await self.reread(self.routes[shop], ref)
            finally:
                self._rereads.task_done()

    async def reread_all(self) -> None:
        """Wait until every queued re-read is done (for tests and an orderly stop)."""
        await self._rereads.join()

    async def reread(self, route: Route, order_ref: str) -> None:
        try:
            await self._reread(route, order_ref)
        except (RelayKitError, OSError) as error:  # the store's errors are RelayKitErrors
            self.stats.count_event(route.shop, "reread_failed")
            log.warning(
                "%s: cannot re-read order %s (%s); the next poll will", route.shop, order_ref, error
            )

    async def _reread(self, route: Route, order_ref: str) -> None:
        mapped = await route.client.read_order(order_ref)
        if isinstance(mapped, Order | Return):
            taken = await self.store.take([new_event(route, mapped)], reread=True)
            self._count(route.shop, taken, [])
        else:
            notes = [note(route, mapped, "re-read", b"")]
            await self.store.record(notes)
            self._count(route.shop, [], notes)
