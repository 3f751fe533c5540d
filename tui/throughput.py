"""Delivered events per second over the last minutes, from the relay's ``published`` counter.

The agent reports a running total; the difference between two updates is spread evenly over
the seconds between them, so updates arriving 4 times a second or once every 2 seconds draw
the same curve.
"""

from __future__ import annotations

import math

WINDOW = 300  # seconds of history kept and drawn


class Throughput:
    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self._per_second: dict[int, float] = {}
        self._last: tuple[float, int] | None = None

    def add(self, at: float, total: int) -> None:
        """Record the counter ``total`` as seen at ``at`` (the agent's clock, seconds)."""
        last, self._last = self._last, (at, total)
        if last is None or total < last[1] or at <= last[0]:
            return  # the first sample, or a restarted agent whose counter began again
        start = max(last[0], at - self.window)
        self._spread(start, at, (total - last[1]) * (at - start) / (at - last[0]))
        self._forget_before(math.floor(at) - self.window)

    def _spread(self, start: float, end: float, delivered: float) -> None:
        per_second = delivered / (end - start)
        second = math.floor(start)
        while second < end:
            overlap = min(end, second + 1) - max(start, second)
            self._per_second[second] = self._per_second.get(second, 0.0) + overlap * per_second
            second += 1

    def _forget_before(self, second: int) -> None:
        for old in [s for s in self._per_second if s < second]:
            del self._per_second[old]

    def series(self) -> list[float]:
        """Deliveries in each of the last ``window`` whole seconds, oldest first. The
        current second is still filling, so it is left out rather than drawn as a dip."""
        if self._last is None:
            return []
        end = math.floor(self._last[0])
        return [self._per_second.get(s, 0.0) for s in range(end - self.window, end)]

    def recent(self, seconds: int = 5) -> float | None:
        """The mean rate over the last few whole seconds."""
        series = self.series()[-seconds:]
        return sum(series) / len(series) if series else None
