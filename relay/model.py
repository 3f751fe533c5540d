"""The relay kit's typed records: a validated event, and what a sink made of it.

Everything here follows the contract in DESIGN.md alone (topics, CloudEvents envelope,
per-entity JSON Schemas), never the agent's code: other teams port this kit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal

Op = Literal["upsert", "delete"]

# Drain order after an outage: what a customer is waiting for goes first.
PRIORITY = {
    "order": 0,
    "order_status": 0,
    "stock": 1,
    "price": 2,
    "promotion": 2,
    "product": 3,
    "customer": 3,
    "invoice": 3,
}


@dataclass(frozen=True, slots=True)
class Event:
    """One CloudEvent as received, its envelope and ``data`` already validated."""

    id: str
    source: str
    """``urn:distillsync:{tenant}:{agent}``."""
    entity: str
    op: Op
    subject: str
    sequence: str
    """20 zero-padded digits: text order is number order."""
    time: str
    data: dict[str, Any]
    raw: bytes
    """The envelope exactly as received (the webhook sink forwards it unchanged)."""
    topic: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        """What the version gate orders by: one agent's entity instance."""
        return (self.source, self.entity, self.subject)

    @property
    def priority(self) -> int:
        return PRIORITY.get(self.entity, 3)


class Status(enum.Enum):
    APPLIED = "applied"
    """The shop now holds this event's state."""
    SKIPPED = "skipped"
    """Nothing for this sink to do (an entity or operation it does not handle)."""
    DEAD = "dead"
    """Will never apply (4xx, unknown SKU): recorded as a dead letter with the reason."""


@dataclass(frozen=True, slots=True)
class SinkResult:
    status: Status
    reason: str = ""
