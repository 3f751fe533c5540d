"""``/v1/status`` as one typed snapshot: the status API builds an :class:`AgentStatus` and
serialises it (:meth:`AgentStatus.to_json`); ``/v1/metrics`` reads it; ``distillsync
status`` and the dashboard parse the JSON they receive back into it
(:meth:`AgentStatus.from_json`).

Each field is named as its JSON key (the README documents them), but for a trailing
underscore, which the key drops (``from_`` is ``"from"``). A new section is one more
frozen dataclass and one more field of :class:`AgentStatus`; both directions follow.

Parsing is lenient on purpose: a client may face an older or newer agent than itself, so
a field it does not find, or finds with the wrong kind of value, reads as its blank
(``None`` where the type allows it, else 0, ``""``, ``False``, empty) and an unknown one
is ignored, rather than stopping the dashboard. This module imports nothing of the agent
beyond the standard library, so the TUI can read it without loading the daemon.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union, cast, get_args, get_origin, get_type_hints

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AgentInfo:
    id: str = field(metadata={"blank": "?"})
    tenant: str = field(metadata={"blank": "?"})
    version: str
    started_at: str
    """RFC 3339 UTC."""
    uptime_seconds: float


@dataclass(frozen=True, slots=True)
class RelayStatus:
    url: str
    state: str = field(metadata={"blank": "unknown"})
    """``connecting``, ``connected`` or ``disconnected``."""
    since: float | None
    """Unix time the relay entered ``state`` (``None``: not reported)."""
    reconnects: int
    published: int
    refused: int
    in_flight: int
    last_publish: float | None
    last_error: str | None
    published_by_entity: dict[str, int]
    failures: dict[str, int]
    """Publishes that did not succeed, by reason: ``refused`` or ``unacknowledged``."""


@dataclass(frozen=True, slots=True)
class FeedStatus:
    feed: str
    entity: str
    mode: str
    last_poll_start: float | None
    last_poll_end: float | None
    last_success: float | None
    rows_read: int
    changes_emitted: int
    dead_letters: int
    errors: int
    last_error: str | None

    @property
    def failing(self) -> bool:
        """The last poll ended without success (a success stamps both ends at once)."""
        if self.last_poll_end is None or self.last_error is None:
            return False
        return self.last_success is None or self.last_success < self.last_poll_end


@dataclass(frozen=True, slots=True)
class SourceStatus:
    name: str
    paused: bool
    feeds: tuple[FeedStatus, ...]


@dataclass(frozen=True, slots=True)
class WriteError:
    """The outbox cannot be written (disk full, bad disk): nothing new is captured."""

    message: str
    since: float
    """Unix time of the first failure of this spell."""


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    pending: int
    in_flight: int
    delivered_per_second: float | None
    """Averaged over the last 10 s (``None``: not reported)."""
    oldest_pending_time: str | None
    oldest_pending_age_seconds: float | None
    dead_letters: int
    delivered_kept: int
    last_sequence: int
    write_error: WriteError | None
    write_errors: int
    """Failed write attempts since the agent started."""


@dataclass(frozen=True, slots=True)
class SequenceMoved:
    """The outbox was found at or below the relay's watermark and moved above it."""

    from_: int
    """The outbox's last sequence before."""
    above: int
    """The relay's watermark it was moved above."""
    renumbered: int
    """Pending events renumbered above it."""
    at: float | None


@dataclass(frozen=True, slots=True)
class SequenceStatus:
    """The check of the sequence against the relay's watermark."""

    check: str = field(metadata={"blank": "unchecked"})
    """``unchecked``, ``ok`` or ``unread``."""
    checked_at: float | None
    relay_watermark: int | None
    """``None``: the relay holds none (a new agent)."""
    unread_reason: str | None
    watermark_published: int
    watermark_error: str | None
    moved: SequenceMoved | None


@dataclass(frozen=True, slots=True)
class InboxStatus:
    """Inbound events (orders, returns, customers from the shops) by state, in ``outbox.db``."""

    held: int
    pending: int
    written: int
    failed: int
    dead: int
    stale: int
    duplicates: int
    """Redeliveries of ids already recorded, in total."""
    oldest_pending_age_seconds: float | None
    """Since the oldest item waiting to be written (pending or failed) arrived."""
    received: int = 0
    """Messages received on ``in/#`` since the agent started, counted on arrival (before
    they are recorded); 0 when no agent runs."""


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """One ``/v1/status``."""

    agent: AgentInfo
    relay: RelayStatus
    sources: tuple[SourceStatus, ...]
    outbox: OutboxStatus
    sequence: SequenceStatus
    inbox: InboxStatus

    def to_json(self) -> dict[str, Any]:
        """What the status API sends: a dict of JSON values, keys in field order."""
        return cast(dict[str, Any], _to_json(self))

    @classmethod
    def from_json(cls, data: object) -> AgentStatus:
        """The snapshot a ``/v1/status`` (or a stream update's ``status``) describes;
        never fails (see the module's docstring)."""
        return from_json(cls, data)


def _to_json(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name.removesuffix("_"): _to_json(getattr(value, f.name))
            for f in dataclasses.fields(value)
        }
    if isinstance(value, tuple | list):
        return [_to_json(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _to_json(item) for key, item in value.items()}
    return value


class _Unfit(Exception):
    """A JSON value that is not of the field's kind."""


def from_json(cls: type[T], data: object) -> T:
    """``cls`` (a dataclass of this module) from a JSON object, leniently."""
    found = data if isinstance(data, Mapping) else {}
    values: dict[str, Any] = {}
    for f, hint in _fields(cls):
        key = f.name.removesuffix("_")
        try:
            values[f.name] = _value(hint, found[key])
        except (KeyError, _Unfit):
            values[f.name] = f.metadata["blank"] if "blank" in f.metadata else _blank(hint)
    return cls(**values)


_FIELDS: dict[type, tuple[tuple[dataclasses.Field[Any], Any], ...]] = {}


def _fields(cls: type) -> tuple[tuple[dataclasses.Field[Any], Any], ...]:
    """``cls``'s fields with their resolved types, worked out once per class."""
    if cls not in _FIELDS:
        hints = get_type_hints(cls)
        _FIELDS[cls] = tuple((f, hints[f.name]) for f in dataclasses.fields(cls))
    return _FIELDS[cls]


def _optional(hint: Any) -> Any | None:
    """``X`` for ``X | None``, else ``None``."""
    if get_origin(hint) in (Union, types.UnionType):
        others = [arg for arg in get_args(hint) if arg is not type(None)]
        if len(others) == 1:
            return others[0]
    return None


def _value(hint: Any, value: object) -> Any:
    inner = _optional(hint)
    if inner is not None:
        return None if value is None else _value(inner, value)
    origin = get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list):
            raise _Unfit
        (item, _) = get_args(hint)
        return tuple(_value(item, v) for v in value if _fits(item, v))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Unfit
        _, item = get_args(hint)
        return {str(k): _value(item, v) for k, v in value.items() if _fits(item, v)}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise _Unfit
        return from_json(hint, value)
    if hint is bool:
        return bool(value)
    if hint in (int, float):
        if not isinstance(value, int | float):
            raise _Unfit
        return hint(value)
    if hint is str and value is not None:
        return str(value)
    raise _Unfit


def _fits(hint: Any, value: object) -> bool:
    try:
        _value(hint, value)
    except _Unfit:
        return False
    return True


def _blank(hint: Any) -> Any:
    if _optional(hint) is not None:
        return None
    origin = get_origin(hint)
    if origin is tuple:
        return ()
    if origin is dict:
        return {}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_json(hint, {})
    return hint()  # bool, int, float, str: False, 0, 0.0, ""
