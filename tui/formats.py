"""Human formats for the dashboard: ages ("3s ago"), spans ("3h 12m"), rates ("123/s").

Every function is pure and takes the current time as an argument where it needs one, so
the screens can be drawn from frozen data with a frozen clock (snapshot tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

Clock = Callable[[], float]
NONE = "—"


def span(seconds: float) -> str:
    """A duration at the precision a glance needs: ``45s``, ``12m``, ``3h 12m``, ``2d 4h``."""
    whole = max(int(seconds), 0)
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{minutes}m"
    if whole < 86400:
        return f"{hours}h {minutes % 60:02d}m"
    return f"{days}d {hours % 24}h"


def age(then: float | None, now: float) -> str:
    """How long ago ``then`` (epoch seconds) was: ``3s ago``, ``2m ago``; ``—`` if never."""
    if then is None:
        return NONE
    elapsed = now - then
    if elapsed < 1:
        return "just now"
    return f"{span(elapsed).split()[0]} ago"


def rate(per_second: float | None) -> str:
    """``123/s``, ``1.2k/s``, ``0.4/s``; ``—`` when unknown."""
    if per_second is None:
        return NONE
    if 0 < per_second < 10:
        return f"{per_second:.1f}/s"
    return f"{count(round(per_second))}/s"


def count(n: int) -> str:
    """Compact counts for narrow columns: ``9876``, ``12.3k``, ``4.5M``."""
    if abs(n) < 10_000:
        return str(n)
    if abs(n) < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def clock(epoch: float) -> str:
    """Local wall-clock time, ``HH:MM:SS`` (the operator compares it with their own clock)."""
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def epoch(rfc3339: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp, or None if absent or unreadable."""
    if not rfc3339:
        return None
    try:
        return datetime.fromisoformat(rfc3339).timestamp()
    except ValueError:
        return None
