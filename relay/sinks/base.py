"""What every sink is: a small interface, a rate budget, and one way to fail.

A sink gets a batch of events with distinct keys (the consumer guarantees at most one
in-flight write per key) and answers one :class:`~relay.model.SinkResult` per event, in
order. A failure of the whole shop (5xx, 429, timeout, connection refused), after the
sink's own retries, raises :class:`SinkUnavailable`: nothing is recorded or acknowledged,
and the consumer tries the batch again later. A failure of one event (4xx, an unknown
SKU) is that event's ``DEAD`` result, and the rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

from relay.errors import SinkUnavailable as SinkUnavailable  # what apply() raises
from relay.model import Event, SinkResult


class Sink(Protocol):
    name: str
    """From the config (``[[sinks]] name``): labels metrics and dead letters."""
    entities: frozenset[str]
    """The entities it writes; the consumer hands it nothing else."""
    max_batch: int
    """The most events one ``apply`` call takes (the shop's batch limit, or 1)."""

    async def apply(self, events: Sequence[Event]) -> list[SinkResult]:
        """One result per event, in order; raises :class:`SinkUnavailable`."""
        ...

    async def close(self) -> None: ...


class RateBudget:
    """A token bucket: at most ``per_second`` requests on average, ``burst`` at once.

    Sinks ``await take()`` before each request, so a drain after an outage paces itself
    to the shop's documented limit instead of flooding it into 429s.
    """

    def __init__(self, per_second: float, burst: float | None = None) -> None:
        self.per_second = per_second
        self.capacity = burst if burst is not None else max(1.0, per_second)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self.lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now

    async def take(self, cost: float = 1.0) -> None:
        async with self.lock:  # first come, first served
            self._refill()
            while self.tokens < cost:
                await asyncio.sleep((cost - self.tokens) / self.per_second)
                self._refill()
            self.tokens -= cost

    def pause(self, seconds: float) -> None:
        """The shop said "retry after": spend the next ``seconds`` worth of tokens now."""
        self._refill()
        self.tokens = min(self.tokens, 0.0) - seconds * self.per_second
