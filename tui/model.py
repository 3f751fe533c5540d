"""What the dashboard shows, parsed from the status API's and the relay's JSON.

Parsing is lenient on purpose: the TUI may face an older or newer agent than itself, and
a field it does not find shows as a blank instead of stopping the dashboard.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

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
    feed: str
    entity: str
    mode: str
    paused: bool
    last_poll_end: float | None
    last_success: float | None
    rows_read: int
    changes: int
    dead_letters: int
    errors: int
    last_error: str | None

    @property
    def key(self) -> str:
        return f"{self.source}/{self.feed}"

    @property
    def failing(self) -> bool:
        """The last poll ended without success (a success stamps both ends at once)."""
        if self.last_poll_end is None or self.last_error is None:
            return False
        return self.last_success is None or self.last_success < self.last_poll_end


@dataclass(frozen=True, slots=True)
class RelayInfo:
    url: str
    state: str
    since: float | None
    reconnects: int
    published: int
    refused: int
    in_flight: int
    last_publish: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class OutboxInfo:
    pending: int
    in_flight: int
    delivered_per_second: float | None
    oldest_pending_age: float | None
    dead_letters: int
    last_sequence: int
    write_error: str | None = None
    """The outbox cannot write (disk full, bad disk): nothing new is being captured."""
    write_error_since: float | None = None


@dataclass(frozen=True, slots=True)
class AgentSnapshot:
    """One ``/v1/status`` (plus the health verdict the stream sends with it)."""

    agent_id: str
    tenant: str
    version: str
    started_at: str
    uptime: float
    healthy: bool | None
    relay: RelayInfo
    outbox: OutboxInfo
    feeds: tuple[FeedRow, ...]

    @property
    def agent_time(self) -> float:
        """The agent's own clock (start + uptime): throughput is measured against it, so
        the rate does not depend on when an update happened to reach the TUI."""
        return (epoch(self.started_at) or 0.0) + self.uptime


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
        return not needle or any(needle in field.lower()
                                 for field in (self.entity, self.subject, self.outcome))


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
        try:
            return orjson.dumps(orjson.loads(self.payload), option=orjson.OPT_INDENT_2).decode()
        except orjson.JSONDecodeError:
            return self.payload


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


def parse_feed(source: Json, feed: Json) -> FeedRow:
    return FeedRow(
        source=_str(source, "name"), feed=_str(feed, "feed"), entity=_str(feed, "entity"),
        mode=_str(feed, "mode"), paused=bool(source.get("paused")),
        last_poll_end=_float(feed, "last_poll_end"), last_success=_float(feed, "last_success"),
        rows_read=_int(feed, "rows_read"), changes=_int(feed, "changes_emitted"),
        dead_letters=_int(feed, "dead_letters"), errors=_int(feed, "errors"),
        last_error=_opt_str(feed, "last_error"))


def parse_relay(relay: Json) -> RelayInfo:
    return RelayInfo(
        url=_str(relay, "url"), state=_str(relay, "state", "unknown"),
        since=_float(relay, "since"), reconnects=_int(relay, "reconnects"),
        published=_int(relay, "published"), refused=_int(relay, "refused"),
        in_flight=_int(relay, "in_flight"), last_publish=_float(relay, "last_publish"),
        last_error=_opt_str(relay, "last_error"))


def parse_outbox(outbox: Json) -> OutboxInfo:
    return OutboxInfo(
        pending=_int(outbox, "pending"), in_flight=_int(outbox, "in_flight"),
        delivered_per_second=_float(outbox, "delivered_per_second"),
        oldest_pending_age=_float(outbox, "oldest_pending_age_seconds"),
        dead_letters=_int(outbox, "dead_letters"), last_sequence=_int(outbox, "last_sequence"),
        write_error=_opt_str(_dict(outbox, "write_error"), "message"),
        write_error_since=_float(_dict(outbox, "write_error"), "since"))


def parse_status(status: Json, health: Json | None = None) -> AgentSnapshot:
    agent = _dict(status, "agent")
    healthy = health.get("healthy") if health else None
    return AgentSnapshot(
        agent_id=_str(agent, "id", "?"), tenant=_str(agent, "tenant", "?"),
        version=_str(agent, "version"), started_at=_str(agent, "started_at"),
        uptime=_float(agent, "uptime_seconds") or 0.0,
        healthy=healthy if isinstance(healthy, bool) else None,
        relay=parse_relay(_dict(status, "relay")), outbox=parse_outbox(_dict(status, "outbox")),
        feeds=tuple(parse_feed(source, feed) for source in _list(status, "sources")
                    for feed in _list(source, "feeds")))


def parse_event(event: Json) -> TailEvent:
    return TailEvent(
        sequence=_int(event, "sequence"), id=_str(event, "id"), entity=_str(event, "entity"),
        op=_str(event, "op"), subject=_str(event, "subject"), outcome=_str(event, "outcome"),
        reason=_opt_str(event, "reason"), at=_float(event, "at") or 0.0)


def parse_update(update: Json) -> Update:
    """One line of ``/v1/stream``: ``{"status", "health", "events"}``."""
    return Update(parse_status(_dict(update, "status"), _dict(update, "health")),
                  tuple(parse_event(event) for event in _list(update, "events")))


def parse_dead_letter(item: Json) -> DeadLetter:
    sequence = item.get("event_sequence")
    return DeadLetter(
        id=_int(item, "id"), kind=_str(item, "kind"), source=_str(item, "source"),
        feed=_str(item, "feed"), entity=_str(item, "entity"), subject=_str(item, "subject"),
        reason=_str(item, "reason"), payload=_str(item, "payload"),
        event_sequence=int(sequence) if isinstance(sequence, int) else None,
        created_at=_float(item, "created_at"))


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
        tenant=tenant, agent=agent, state=_str(status, "state", "unknown"),
        version=_str(status, "version"), time=epoch(_opt_str(status, "time")),
        backlog=_float_int(status, "backlog"), dead_letters=_float_int(status, "dead_letters"),
        last_publish=epoch(_opt_str(status, "last_publish")),
        last_error=_opt_str(status, "last_error"),
        sources_failing=_int(status, "sources_failing"),
        paused=_names(status, "paused"), kind=_str(status, "kind", "agent"))


def _float_int(data: Json, key: str) -> int | None:
    """An optional count: the offline Will carries none, which is not the same as zero."""
    value = _float(data, key)
    return None if value is None else int(value)
