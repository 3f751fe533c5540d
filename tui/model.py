"""What the dashboard shows, parsed from the status API's and the relay's JSON.

Parsing is lenient on purpose: the TUI may face an older or newer agent than itself, and
a field it does not find shows as a blank instead of stopping the dashboard. The status
itself is ``agent.status``'s, parsed as ``distillsync status`` parses it; what is the
dashboard's alone (the live tail, dead letters, the fleet's retained statuses) is here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from agent.status import (
    AgentInfo,
    AgentStatus,
    FeedStatus,
    InboxStatus,
    OutboxStatus,
    RelayStatus,
)
from tui.formats import epoch

Json = Mapping[str, Any]


def _int(data: Json, key: str) -> int:
    value = data.get(key)
    return int(value) if isinstance(value, int | float) else 0


def _float(data: Json, key: str) -> float | None:
    value = data.get(key)
    return float(value) if isinstance(value, int | float) else None


def _str(data: Json, key: str, default: str = "") -> str:
    value = data.get(key)
    return str(value) if value is not None else default


def _opt_str(data: Json, key: str) -> str | None:
    value = data.get(key)
    return str(value) if value is not None else None


def _names(data: Json, key: str) -> tuple[str, ...]:
    value = data.get(key)
    return tuple(str(name) for name in value if name) if isinstance(value, list) else ()


def _dict(data: Json, key: str) -> Json:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def _list(data: Json, key: str) -> list[Json]:
    value = data.get(key)
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


@dataclass(frozen=True, slots=True)
class FeedRow:
    """One feed of one source: a row of the sources table."""

    source: str
    paused: bool
    feed: FeedStatus

    @property
    def key(self) -> str:
        return f"{self.source}/{self.feed.feed}"


@dataclass(frozen=True, slots=True)
class AgentSnapshot:
    """One ``/v1/status`` (plus the health verdict the stream sends with it)."""

    status: AgentStatus
    healthy: bool | None
    has_inbox: bool = True
    """False for an agent older than the inbox: its ``/v1/status`` has no ``inbox``, which
    ``agent.status`` reads as zeros."""

    @property
    def agent(self) -> AgentInfo:
        return self.status.agent

    @property
    def relay(self) -> RelayStatus:
        return self.status.relay

    @property
    def outbox(self) -> OutboxStatus:
        return self.status.outbox

    @property
    def inbox(self) -> InboxStatus:
        return self.status.inbox

    @property
    def feeds(self) -> tuple[FeedRow, ...]:
        return tuple(
            FeedRow(source.name, source.paused, feed)
            for source in self.status.sources
            for feed in source.feeds
        )

    @property
    def agent_time(self) -> float:
        """The agent's own clock (start + uptime): throughput is measured against it, so
        the rate does not depend on when an update happened to reach the TUI."""
        return (epoch(self.agent.started_at) or 0.0) + self.agent.uptime_seconds


@dataclass(frozen=True, slots=True)
class TailEvent:
    """One delivered or refused event of the live tail."""

    sequence: int
    id: str
    entity: str
    op: str
    subject: str
    outcome: str
    reason: str | None
    at: float

    def matches(self, needle: str) -> bool:
        """Case-insensitive substring match on entity, subject or outcome."""
        needle = needle.strip().lower()
        return not needle or any(
            needle in field.lower() for field in (self.entity, self.subject, self.outcome)
        )


@dataclass(frozen=True, slots=True)
class Update:
    snapshot: AgentSnapshot
    events: tuple[TailEvent, ...]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    kind: str
    source: str
    feed: str
    entity: str
    subject: str
    reason: str
    payload: str
    event_sequence: int | None
    created_at: float | None

    def pretty_payload(self) -> str:
        """The payload indented if it is JSON, else as stored (a dead letter may be any text)."""
        indented = _indented(self.payload)
        return self.payload if indented is None else indented


INBOX_STATES = ("held", "pending", "written", "failed", "dead", "stale")
"""``GET /v1/inbox?state=``'s values, in the order the dashboard shows them."""


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One item of ``GET /v1/inbox``: an inbound event (an order, mostly) and its state."""

    id: int
    event_id: str
    state: str
    reason: str | None
    entity: str | None
    subject: str | None
    topic: str | None
    version: str | None
    sequence: int | None
    payment_status: str | None
    attempts: int
    erp_ref: str | None
    duplicates: int
    received_at: float | None
    changed_at: float | None
    payload: str
    """The message as received (text: a dead one may not be JSON)."""

    def data(self) -> Json:
        """The event's ``data``, or empty if the payload is no event."""
        try:
            envelope = orjson.loads(self.payload)
        except orjson.JSONDecodeError:
            return {}
        return _dict(envelope, "data") if isinstance(envelope, Mapping) else {}

    def pretty_payload(self) -> str | None:
        """The payload indented, or None if it is not JSON."""
        return _indented(self.payload)


@dataclass(frozen=True, slots=True)
class InboxList:
    """The newest items of one state (or of all), newest first, out of ``total`` read."""

    items: tuple[InboxItem, ...]
    total: int


def _indented(text: str) -> str | None:
    """``text`` as indented JSON (keys in their order), or None if it is not JSON."""
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return None


@dataclass(frozen=True, slots=True)
class FleetAgent:
    """One agent's retained status on the relay."""

    tenant: str
    agent: str
    state: str
    version: str
    time: float | None
    backlog: int | None
    dead_letters: int | None
    last_publish: float | None
    last_error: str | None
    sources_failing: int
    paused: tuple[str, ...] = ()
    kind: str = "agent"
    """``agent``, or ``consumer`` for a relay-side consumer (its backlog: events waiting,
    its last publish: the last event applied to a shop)."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.agent)


def parse_status(status: Json, health: Json | None = None) -> AgentSnapshot:
    healthy = health.get("healthy") if health else None
    return AgentSnapshot(
        AgentStatus.from_json(status),
        healthy if isinstance(healthy, bool) else None,
        has_inbox=isinstance(status.get("inbox"), Mapping),
    )


def parse_event(event: Json) -> TailEvent:
    return TailEvent(
        sequence=_int(event, "sequence"),
        id=_str(event, "id"),
        entity=_str(event, "entity"),
        op=_str(event, "op"),
        subject=_str(event, "subject"),
        outcome=_str(event, "outcome"),
        reason=_opt_str(event, "reason"),
        at=_float(event, "at") or 0.0,
    )


def parse_update(update: Json) -> Update:
    """One line of ``/v1/stream``: ``{"status", "health", "events"}``."""
    return Update(
        parse_status(_dict(update, "status"), _dict(update, "health")),
        tuple(parse_event(event) for event in _list(update, "events")),
    )


def parse_dead_letter(item: Json) -> DeadLetter:
    sequence = item.get("event_sequence")
    return DeadLetter(
        id=_int(item, "id"),
        kind=_str(item, "kind"),
        source=_str(item, "source"),
        feed=_str(item, "feed"),
        entity=_str(item, "entity"),
        subject=_str(item, "subject"),
        reason=_str(item, "reason"),
        payload=_str(item, "payload"),
        event_sequence=int(sequence) if isinstance(sequence, int) else None,
        created_at=_float(item, "created_at"),
    )


def parse_inbox_item(item: Json) -> InboxItem:
    sequence = item.get("sequence")
    return InboxItem(
        id=_int(item, "id"),
        event_id=_str(item, "event_id"),
        state=_str(item, "state", "unknown"),
        reason=_opt_str(item, "reason"),
        entity=_opt_str(item, "entity"),
        subject=_opt_str(item, "subject"),
        topic=_opt_str(item, "topic"),
        version=_opt_str(item, "version"),
        sequence=int(sequence) if isinstance(sequence, int) else None,
        payment_status=_opt_str(item, "payment_status"),
        attempts=_int(item, "attempts"),
        erp_ref=_opt_str(item, "erp_ref"),
        duplicates=_int(item, "duplicates"),
        received_at=_float(item, "received_at"),
        changed_at=_float(item, "changed_at"),
        payload=_str(item, "payload"),
    )


def parse_fleet_status(topic: str, payload: bytes) -> tuple[tuple[str, str], FleetAgent | None]:
    """``({prefix}/{tenant}/{agent}/status, payload)`` → the row's key and the agent, or
    None when the retained status was cleared (an empty payload)."""
    tenant, agent = topic.split("/")[-3:-1]
    if not payload:
        return (tenant, agent), None
    try:
        status = orjson.loads(payload)
    except orjson.JSONDecodeError:
        status = None
    if not isinstance(status, Mapping):
        status = {"state": "unknown", "last_error": "unreadable status payload"}
    return (tenant, agent), FleetAgent(
        tenant=tenant,
        agent=agent,
        state=_str(status, "state", "unknown"),
        version=_str(status, "version"),
        time=epoch(_opt_str(status, "time")),
        backlog=_float_int(status, "backlog"),
        dead_letters=_float_int(status, "dead_letters"),
        last_publish=epoch(_opt_str(status, "last_publish")),
        last_error=_opt_str(status, "last_error"),
        sources_failing=_int(status, "sources_failing"),
        paused=_names(status, "paused"),
        kind=_str(status, "kind", "agent"),
    )


def _float_int(data: Json, key: str) -> int | None:
    """An optional count: the offline Will carries none, which is not the same as zero."""
    value = _float(data, key)
    return None if value is None else int(value)
