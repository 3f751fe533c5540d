"""Relay kit: relay-side subscribers that apply DistillSync events to shops.

``distillsync consume`` runs it (:mod:`relay.service`). What a connector developer writing
a new sink imports is here, from ``relay``; the rest of the kit is its machinery and may
change:

- :class:`Sink`, the protocol a sink implements (``name``, ``entities``, ``max_batch``,
  ``apply``, ``close``), and :class:`RateBudget`, the token bucket it paces requests with;
- :class:`Event`, what ``apply`` gets (validated, at most one per key in a batch), and
  :class:`SinkResult` with :class:`Status` (``APPLIED``, ``SKIPPED``, ``DEAD`` with a
  reason), what it answers per event;
- :func:`parse`, the contract's check of a message (envelope and the entity's JSON
  Schema), which makes an :class:`Event` or raises :class:`InvalidEvent`;
- the error tree (:mod:`relay.errors`): :class:`RelayKitError` and each subclass, with
  ``retryable``. A sink raises :class:`SinkUnavailable` when the shop cannot take writes
  now (the consumer retries the batch) and answers ``DEAD`` for one event that can never
  apply.

An HTTP sink builds on :mod:`relay.sinks.http` (its own ``__all__``: ``HttpSettings``,
``LazySession``, ``send``, ``with_retries``, ...) and a shop sink on
:mod:`relay.sinks.shop` and :mod:`relay.sinks.lookup`; they stay out of this package's
namespace so that importing ``relay`` (as the TUI does, for :mod:`relay.subscriber`)
does not load aiohttp, pydantic and tenacity. A sink module has a ``Settings`` model for
its ``[[sinks]]`` table and its sink class, named in ``relay.config.SINK_TYPES``.
"""

from relay.envelope import parse
from relay.errors import (
    ConfigProblems,
    InvalidEvent,
    Refused,
    RelayKitError,
    RelayUnavailable,
    SchemaTooNew,
    SecretMissing,
    SinkUnavailable,
    SocketBusy,
    StoreBusy,
    StoreError,
    StoreUrlInvalid,
    Transient,
)
from relay.model import Event, SinkResult, Status
from relay.sinks.base import RateBudget, Sink

__all__ = [
    "ConfigProblems",
    "Event",
    "InvalidEvent",
    "RateBudget",
    "Refused",
    "RelayKitError",
    "RelayUnavailable",
    "SchemaTooNew",
    "SecretMissing",
    "Sink",
    "SinkResult",
    "SinkUnavailable",
    "SocketBusy",
    "Status",
    "StoreBusy",
    "StoreError",
    "StoreUrlInvalid",
    "Transient",
    "parse",
]
