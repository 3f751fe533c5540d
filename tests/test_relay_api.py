"""What a connector developer imports from ``relay``, and the kit's one error tree."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import relay
from relay import errors

PUBLIC = {
    "Event",
    "SinkResult",
    "Status",  # relay.model
    "RateBudget",
    "Sink",  # relay.sinks.base
    "parse",  # relay.envelope
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
    "Transient",  # relay.errors
}

RETRYABLE = {
    "ConfigProblems": False,
    "SecretMissing": False,
    "SchemaTooNew": False,
    "InvalidEvent": False,
    "Refused": False,
    "StoreError": True,
    "StoreBusy": True,
    "StoreUrlInvalid": False,
    "SocketBusy": True,
    "RelayUnavailable": True,
    "SinkUnavailable": True,
    "Transient": True,
}


def test_a_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from relay import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == PUBLIC == set(relay.__all__)


def test_each_public_name_is_the_kit_s_own_object() -> None:
    for name in relay.__all__:
        value = getattr(relay, name)
        home = importlib.import_module(value.__module__)
        assert value.__module__.startswith("relay.") and getattr(home, name) is value, name


def test_every_error_the_kit_defines_has_one_root_and_says_if_retrying_helps() -> None:
    """Each module imported, each exception class it defines under the root; a new
    unrelated one (``class Busy(Exception)``) fails here."""
    found = set()
    for module in pkgutil.walk_packages(relay.__path__, "relay."):
        for _, value in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
            if issubclass(value, BaseException) and value.__module__.startswith("relay"):
                found.add(value)
    assert len(found) > len(RETRYABLE) + 1  # the sinks' own (Invalid, Dead, ...) are found too
    for error in found:
        assert issubclass(error, errors.RelayKitError), error
        assert isinstance(error.retryable, bool), error
    assert set(RETRYABLE) | {"RelayKitError"} == set(errors.__all__)
    for name, retryable in RETRYABLE.items():
        assert getattr(errors, name).retryable is retryable, name


def test_the_relay_is_gone_is_still_an_os_error() -> None:
    """The consumer reconnects on OSError and the TUI reports it: both see the broker's
    failures as they did before the tree."""
    assert issubclass(errors.RelayUnavailable, OSError)
    lost = errors.RelayUnavailable("relay connection lost: x")
    assert str(lost) == "relay connection lost: x"


def test_a_wait_the_shop_asked_for_travels_with_the_error() -> None:
    assert errors.SinkUnavailable("down", 30.0).retry_after == 30.0
    assert errors.Transient("HTTP 429", 2.0).retry_after == 2.0
    assert errors.RelayKitError("x").retry_after is None
    assert errors.StoreError("x").retry_after is None
