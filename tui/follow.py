"""Follow a live feed for as long as the dashboard runs, reconnecting when it drops.

One loop serves both dashboards: the agent's ``/v1/stream`` and the relay's retained
statuses. It never gives up, and it tells the app when the feed was lost, once per outage
(the time it was first lost), so the app can say "unreachable since 12:03:04".
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tui.formats import Clock

T = TypeVar("T")


@dataclass
class Backoff:
    """Jittered exponential delays between attempts, from ``first`` up to ``cap``."""

    first: float = 0.5
    cap: float = 5.0
    _next: float = field(default=0.0, init=False)

    def delay(self) -> float:
        self._next = min(self.cap, self._next * 2 if self._next else self.first)
        return self._next * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._next = 0.0


@dataclass
class Follower(Generic[T]):
    """Reads ``open_feed()`` into ``deliver``; when it fails with one of ``errors`` (or
    just ends) calls ``lost(since, why)`` and opens it again after a backoff."""

    open_feed: Callable[[], AsyncIterator[T]]
    deliver: Callable[[T], object]
    lost: Callable[[float, str], object]
    errors: tuple[type[Exception], ...]
    now: Clock
    backoff: Backoff = field(default_factory=Backoff)

    async def run(self) -> None:
        lost_since: float | None = None
        while True:
            delivered, why = await self._read()
            if delivered:  # it came back before failing again: a new outage starts now
                lost_since = None
                self.backoff.reset()
            lost_since = lost_since or self.now()
            self.lost(lost_since, why)
            await asyncio.sleep(self.backoff.delay())

    async def _read(self) -> tuple[bool, str]:
        delivered = False
        try:
            async for item in self.open_feed():
                delivered = True
                self.deliver(item)
        except self.errors as error:
            return delivered, str(error) or type(error).__name__
        return delivered, "the connection was closed"
