"""What every source is: the reads a poller makes of an ERP, whatever the ERP speaks.

A source reads pages of one ``[[sources]]`` table's entity feeds: SQL through SQLAlchemy
(:mod:`agent.sources.sql`) today, a cloud ERP's HTTP API next. It knows how to read and
nothing of the outbox: the feed's mode (:mod:`agent.modes`) decides where each read
starts, and the poller maps and commits what it reads. Pages are continued by keyset
(``after``, the previous page's last row), never by offset, and hold at most
``config.page_size`` rows; a shorter page is the last. An ERP that fails (unreachable,
a query it refuses) raises :class:`~agent.errors.SourceError`, which the runner backs off
from; a source never raises anything else for the ERP's sake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agent.config import EntityConfig, SourceConfig

Row = Mapping[str, Any]
"""One record as the ERP gave it: column (or field) name to value."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where the previous page ended: the keyset to continue after."""

    cursor: Any
    keys: tuple[Any, ...]

    @classmethod
    def of(cls, row: Row, key: Sequence[str], cursor: str | None = None) -> Position:
        """Where ``row`` stands: its key values, and its ``cursor`` column's if one is named."""
        return cls(cursor=row.get(cursor) if cursor else None, keys=tuple(row.get(k) for k in key))


class Source(Protocol):
    config: SourceConfig
    """Its ``[[sources]]`` table: name, ``page_size``, ``timezone``, its entity feeds."""

    async def cursor_page(
        self, entity: EntityConfig, low: Any, after: Position | None
    ) -> list[Row]:
        """Rows of ``entity`` whose cursor is not NULL and at least ``low`` (timestamp mode)
        or above it (incrementing mode; ``None``: no bound), in ``(cursor, key...)`` order,
        strictly after ``after``. Cursor values keep the type the ERP gives, so that one
        read back from the outbox binds into the same comparison."""
        ...

    async def snapshot_page(self, entity: EntityConfig, after: Position | None) -> list[Row]:
        """Every row of ``entity`` whose key is not NULL, in key order, strictly after
        ``after.keys``."""
        ...

    async def probe(self, entity: EntityConfig) -> list[str]:
        """Read ``entity`` once, at most a row; the names its rows carry (for ``check``)."""
        ...

    async def close(self) -> None:
        """Release connections; the runner calls it once, when the source stops."""
        ...
