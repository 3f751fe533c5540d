"""The relay kit's error tree: one root, one subclass per outside system or border.

Every error says whether the same operation, tried again later and unchanged, can
succeed (:attr:`RelayKitError.retryable`), so the code that catches them decides between
waiting and giving up without listing types: the consumer retries a batch on a retryable
error from a sink, and ``distillsync consume`` exits 69 (EX_UNAVAILABLE, systemd may
restart it) on a retryable error and 78 (EX_CONFIG, an operator must change something)
on any other::

    RelayKitError                  retryable  raised by
    ├── ConfigProblems             no         relay.config: every problem by key path
    ├── SecretMissing              no         relay.settings: a secret unreadable, or not private
    ├── StoreError                 yes        relay.store: the version store cannot be used
    │   ├── StoreBusy              yes        another consumer holds the SQLite store
    │   ├── StoreUrlInvalid        no         store.url names no store the kit can open
    │   └── SchemaTooNew           no         the store was written by a newer relay kit
    ├── SocketBusy                 yes        relay.service: another process serves [api] socket
    ├── RelayUnavailable (OSError) yes        relay.subscriber: the broker is unreachable or gone
    ├── InvalidEvent               no         relay.envelope: a message that is not a valid event
    ├── SinkUnavailable            yes        a sink: the shop cannot take writes now
    ├── Transient                  yes        relay.sinks.http: a failed request worth repeating
    ├── Refused                    no         relay.sinks.http: an endpoint unusable as it is
    ├── relay.sinks.shop.Invalid (ValueError)   no   event data no shop can take
    └── relay.sinks.prestashop.Dead → Unknown   no   an event PrestaShop can never apply

The last two never leave their sink: it answers ``Status.DEAD`` with the message as the
reason. ``Transient`` is the HTTP layer's word to its own retries
(:func:`relay.sinks.http.with_retries`); once those are spent it becomes
``SinkUnavailable``, the sink's word to the consumer. A ``Refused`` request is not
retried: the sink is unavailable at once, and the consumer waits for it like any other.

This module imports nothing, so every part of the kit (and a connector's own sink) can
raise these without import cycles.
"""

from __future__ import annotations

__all__ = [
    "ConfigProblems",
    "InvalidEvent",
    "Refused",
    "RelayKitError",
    "RelayUnavailable",
    "SchemaTooNew",
    "SecretMissing",
    "SinkUnavailable",
    "SocketBusy",
    "StoreBusy",
    "StoreError",
    "StoreUrlInvalid",
    "Transient",
]


class RelayKitError(Exception):
    """Root of every error the relay kit raises on purpose."""

    retryable: bool = False
    """Whether the same operation, later and unchanged, can succeed."""
    retry_after: float | None = None
    """Seconds the other side asked us to wait before trying again, if it said."""


class ConfigProblems(RelayKitError):
    """The consumer's TOML is invalid; carries every problem, each with its key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class SecretMissing(RelayKitError):
    """A secret that cannot be read (or is readable by others); names the key."""


class StoreError(RelayKitError):
    """The version store cannot be used as configured; the message names what and why."""

    retryable = True


class StoreUrlInvalid(StoreError):
    """``store.url`` names no store this kit can open (syntax, driver, a store in memory):
    a configuration mistake that no restart can mend (exit 78)."""

    retryable = False


class SchemaTooNew(StoreError):
    """The database was written by a newer relay kit; this one must not touch it."""

    retryable = False


class StoreBusy(StoreError):
    """Another process already consumes with this SQLite store."""


class SocketBusy(RelayKitError):
    """Another live process serves the consumer's ``[api] socket`` (the relay kit's own
    error for :func:`common.unix_socket.claimed_socket`, which raises what it is given)."""

    retryable = True


class RelayUnavailable(RelayKitError, OSError):
    """The MQTT relay cannot be reached, refused us, or dropped the connection. An
    :class:`OSError` too: one exception type for "the relay is gone" across the kit and
    the TUI."""

    retryable = True


class InvalidEvent(RelayKitError):
    """Not an event this kit may apply; the message says why (it becomes a dead letter)."""


class SinkUnavailable(RelayKitError):
    """The shop cannot take writes now; ``retry_after`` seconds is its hint, if it gave one.
    Nothing of the batch is recorded or acknowledged, and the consumer tries it again."""

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Transient(RelayKitError):
    """A failure of the whole endpoint that may pass: 408, 429, 5xx, timeout, no connection."""

    retryable = True

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Refused(RelayKitError):
    """An endpoint that cannot be used as it is (its certificate fails verification): no
    retry can help, so :func:`~relay.sinks.http.with_retries` makes it SinkUnavailable at
    once."""
