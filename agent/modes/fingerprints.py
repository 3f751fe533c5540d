"""Rows re-read exactly as they were last committed, told apart before they are mapped.

A timestamp sweep re-reads its whole lookback window; a row that did not change would map
to its stored hash and enqueue nothing, so :class:`Fingerprints` skips mapping it. That is
most of a sweep's cost (bench/README.md, P3).
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.sources.base import Row

MAX_FINGERPRINTS = 200_000  # raw-row fingerprints kept per feed (~10 MB)

Seen = list[tuple[int, int | None]]
"""Fingerprints of a page's rows by key hash, to file once the page is committed."""


class Fingerprints:
    """Fingerprints of committed raw rows by key hash, this sweep's and the previous one's.

    A row is skipped only when it equals the key's *last* committed state: the fingerprint
    in ``_recent`` when the key has one there (it is newer), else the one in ``_older``. An
    older state must never hide a revert (A, a sweep, B, then A again: A equals the older
    fingerprint but not the last state, B). The fingerprint is a 64-bit SipHash of the
    values' ``repr`` (not of the values: ``hash(-1) == hash(-2)`` in Python), the cursor
    left out, filed under the same hash of the key; a new state that collided with the last
    one would wait for its next change (odds ~1e-19 per re-read row). At most
    ``MAX_FINGERPRINTS`` are kept: past that, a changed key's fingerprint is forgotten
    rather than left stale, and its rows are simply mapped.
    """

    def __init__(self, key: Sequence[str], cursor: str | None) -> None:
        self._key = tuple(key)
        self._cursor = cursor
        self._recent: dict[int, int] = {}
        self._older: dict[int, int] = {}

    def clear(self) -> None:
        self._recent, self._older = {}, {}

    def rotate(self) -> None:
        """A sweep begins: keys last read before the previous one are outside any window
        still re-read."""
        self._older, self._recent = self._recent, {}

    def drop_known(self, rows: list[Row]) -> tuple[list[Row], Seen]:
        """The rows to map, and what :meth:`remember` files once they are committed."""
        fresh: list[Row] = []
        seen: Seen = []
        room = MAX_FINGERPRINTS - len(self._recent)
        for row in rows:
            try:
                key, fingerprint = self._fingerprints(row)
            except TypeError:  # an unhashable driver value: map it as usual
                fresh.append(row)
                continue
            last = self._recent.get(key, self._older.get(key))
            if fingerprint == last:
                self._recent.setdefault(key, fingerprint)  # still the key's last state
                continue
            fresh.append(row)
            seen.append((key, fingerprint if len(seen) < room else None))
        return fresh, seen

    def _fingerprints(self, row: Row) -> tuple[int, int]:
        keys = tuple(row.get(k) for k in self._key)
        values = tuple(v for c, v in row.items() if c != self._cursor)
        return hash(repr(keys)), hash(repr(values))

    def remember(self, seen: Seen) -> None:
        """File the fingerprints of a committed page (``None``: no room, forget the key)."""
        for key, fingerprint in seen:
            if fingerprint is None:
                self._recent.pop(key, None)
                self._older.pop(key, None)
            else:
                self._recent[key] = fingerprint
