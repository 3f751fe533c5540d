"""The small typed records that flow between modules, in pipeline order.

``sources`` yield rows, ``capture`` turns them into :class:`Change` and
:class:`DeadRow`, the ``outbox`` stores a :class:`CapturedPage` atomically and
hands :class:`PendingEvent` to delivery, and the publisher answers each with a
:class:`PublishResult`; the outbox alone decides what that result means.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

Op = Literal["upsert", "delete"]


@dataclass(frozen=True, slots=True)
class Change:
    """The new absolute state of one key, ready to be enqueued."""

    subject: str
    op: Op
    data: bytes
    """Canonical JSON (orjson, sorted keys): the event's ``data`` and the hash input."""
    row_hash: bytes


@dataclass(frozen=True, slots=True)
class DeadRow:
    """A row that could not be mapped; it goes to the dead-letter table, not the pipeline."""

    reason: str
    subject: str | None
    row: bytes
    row_hash: bytes | None = None


@dataclass(frozen=True, slots=True)
class FeedId:
    """One entity feed of one source: the unit that owns a cursor and key hashes."""

    source: str
    feed: str
    entity: str


@dataclass(slots=True)
class CapturedPage:
    """One page of a poll: committed in a single transaction with its cursor."""

    feed: FeedId
    changes: list[Change] = field(default_factory=list)
    dead: list[DeadRow] = field(default_factory=list)
    cursor: str | None = None
    """Serialized cursor to store with this page; ``None`` leaves it unchanged."""
    seen_generation: int | None = None
    """Snapshot pass number; keys in the page are marked seen by this pass."""
    conflate: bool = False


@dataclass(frozen=True, slots=True)
class PageResult:
    enqueued: int
    unchanged: int
    dead: int


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An outbox row waiting for its PUBACK; ``sequence`` is the outbox id."""

    sequence: int
    event_id: str
    entity: str
    op: Op
    subject: str
    time: str
    data: bytes


class Outcome(enum.Enum):
    ACKED = "acked"
    NACKED = "nacked"
    """The broker refused it (negative PUBACK, too large): a dead letter."""
    UNKNOWN = "unknown"
    """No answer (timeout, connection lost): stays pending and is re-sent."""


@dataclass(frozen=True, slots=True)
class PublishResult:
    sequence: int
    outcome: Outcome
    reason: str = ""
