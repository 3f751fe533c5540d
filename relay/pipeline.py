"""Between the MQTT session and the sinks: acknowledgements in order, and batches by
priority with at most one batch in flight per key.

* :class:`AckWindow` acknowledges messages in the order they arrived (MQTT requires
  it) as soon as every earlier one is finished, whatever order they finish in.
* :class:`Scheduler` hands out batches from the most urgent entity class first (orders,
  then stock, then prices, then the catalogue), never putting a key in a batch while
  another batch holding that key is in flight, so writes to one SKU cannot overtake
  each other.

  A batch holds at most one event per key. Folding several states of a key into one
  write (the newest) would save shop calls, but it is not crash-safe: if the consumer
  dies after writing the newest state and before recording it, the redelivered events
  may be batched differently, and an older one, alone in its batch, would be written
  over the newer state the shop already has. One event per key per batch means the
  oldest unrecorded event of a key is the one that was written, so a redelivery only
  repeats it. (The agent conflates at the source where that is wanted: ``conflate``.)

  Reordering happens within the broker's Receive Maximum: that many
  messages may be unacknowledged at once, and a message left waiting holds back the
  acknowledgements behind it until it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from relay.model import Event

T = TypeVar("T")


@dataclass(eq=False, slots=True)
class Ticket(Generic[T]):
    """One received message on its way; ``item`` is what to acknowledge."""

    item: T
    done: bool = False


class AckWindow(Generic[T]):
    def __init__(self, ack: Callable[[T], None]) -> None:
        self._ack = ack
        self._order: deque[Ticket[T]] = deque()

    def __len__(self) -> int:
        return len(self._order)

    def add(self, item: T) -> Ticket[T]:
        ticket = Ticket(item)
        self._order.append(ticket)
        return ticket

    def finish(self, ticket: Ticket[T]) -> None:
        ticket.done = True
        while self._order and self._order[0].done:
            self._ack(self._order.popleft().item)

    def forget(self) -> None:
        """The connection is gone: its unacknowledged messages will be redelivered."""
        self._order.clear()


@dataclass(slots=True)
class Queued(Generic[T]):
    event: Event
    ticket: Ticket[T]
    order: int


@dataclass
class Scheduler(Generic[T]):
    batch_size: int
    linger: float
    _classes: dict[int, deque[Queued[T]]] = field(default_factory=dict)
    _busy_keys: set[tuple[str, str, str]] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _filling: asyncio.Lock = field(default_factory=asyncio.Lock)
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    _held: int = 0

    def __len__(self) -> int:
        """Events queued, not yet in a batch."""
        return sum(len(queue) for queue in self._classes.values())

    @property
    def waiting(self) -> int:
        """Events not applied yet: queued, or in a batch not released (being filled,
        applied, or retried against a shop that is down)."""
        return len(self) + self._held

    def put(self, event: Event, ticket: Ticket[T]) -> None:
        self._classes.setdefault(event.priority, deque()).append(
            Queued(event, ticket, next(self._counter))
        )
        self._changed.set()

    def _collect(
        self, priority: int, room: int, taken: set[tuple[str, str, str]]
    ) -> list[Queued[T]]:
        """Up to ``room`` events of one class whose keys are free and not ``taken`` by
        this batch already. What is left keeps its arrival order."""
        queue = self._classes.get(priority, deque())
        batch: list[Queued[T]] = []
        kept: deque[Queued[T]] = deque()
        while queue and len(batch) < room:
            queued = queue.popleft()
            key = queued.event.key
            if key in self._busy_keys or key in taken:
                kept.append(queued)  # its key is in flight, or in this batch: it waits
                continue
            taken.add(key)
            batch.append(queued)
        kept.extend(queue)
        self._classes[priority] = kept
        self._busy_keys |= taken
        self._held += len(batch)
        return batch

    async def next_batch(self) -> list[Queued[T]]:
        """The most urgent class that has an event with a free key, filled up to
        ``batch_size`` for at most ``linger``; its keys are busy until :meth:`release`.

        One batch fills at a time: idle workers taking whatever has just arrived would
        cut a burst into many small batches, each paying for its own store commit."""
        async with self._filling:
            while True:
                self._changed.clear()
                for priority in sorted(self._classes):
                    taken: set[tuple[str, str, str]] = set()
                    batch = self._collect(priority, self.batch_size, taken)
                    if batch:
                        await self._fill(batch, priority, taken)
                        return batch
                await self._changed.wait()

    async def _fill(
        self, batch: list[Queued[T]], priority: int, taken: set[tuple[str, str, str]]
    ) -> None:
        deadline = asyncio.get_running_loop().time() + self.linger
        while len(batch) < self.batch_size:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
            batch += self._collect(priority, self.batch_size - len(batch), taken)

    def release(self, batch: list[Queued[T]]) -> None:
        self._held -= len(batch)
        for queued in batch:
            self._busy_keys.discard(queued.event.key)
        self._changed.set()

    def forget(self) -> None:
        """The connection is gone: drop what waits; the broker redelivers it. Batches
        in flight go on (and stay counted) until they are released."""
        self._classes.clear()
        self._changed.set()
