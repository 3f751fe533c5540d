"""What the intake counts, and how it shows it: ``/v1/status`` JSON, ``/v1/metrics``
(Prometheus text, ``distillsync_intake_*``) and the compact retained status the TUI's fleet
view lists beside the agents and consumers.

Counters live in memory (since start, as Prometheus expects); what is durable (events
stored, published, dead; notes) is read from the store when asked.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.intake.source import HookState
from relay.status import VERSION, _now_rfc3339

WEBHOOK_OUTCOMES = (
    "accepted",
    "ping",
    "ignored_topic",
    "bad_signature",
    "missing_signature",
    "unknown_shop",
    "no_webhooks",
    "too_large",
    "store_unavailable",
)
"""What became of a webhook: ``accepted`` (committed), ``ping`` (WooCommerce's unsigned
hello), ``ignored_topic`` (signed, a topic the intake does not take), the rest refusals."""


@dataclass
class PollStats:
    polls: int = 0
    failures: int = 0
    last_poll: float | None = None
    last_error: str | None = None
    read_last: int = 0
    """Orders the last successful poll read."""
    cursor: str | None = None


@dataclass
class HookHealth:
    checked: float | None = None
    hooks: list[HookState] = field(default_factory=list)
    error: str | None = None

    def count(self, state: str) -> int:
        return sum(1 for hook in self.hooks if hook.status == state)


@dataclass
class IntakeStats:
    name: str
    started: float = field(default_factory=time.time)
    webhooks: Counter[tuple[str, str]] = field(default_factory=Counter)
    events: Counter[tuple[str, str]] = field(default_factory=Counter)
    polls: dict[str, PollStats] = field(default_factory=dict)
    hooks: dict[str, HookHealth] = field(default_factory=dict)

    def count_webhook(self, shop: str, outcome: str) -> None:
        self.webhooks[(shop, outcome)] += 1

    def count_event(self, shop: str, outcome: str) -> None:
        self.events[(shop, outcome)] += 1

    def poll(self, shop: str) -> PollStats:
        return self.polls.setdefault(shop, PollStats())

    def health(self, shop: str) -> HookHealth:
        return self.hooks.setdefault(shop, HookHealth())

    def disabled_hooks(self) -> int:
        return sum(h.count("disabled") + h.count("missing") for h in self.hooks.values())


def _per_shop(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    shops: dict[str, dict[str, int]] = {}
    for (shop, outcome), count in sorted(counts.items()):
        shops.setdefault(shop, {})[outcome] = count
    return shops


def snapshot(
    stats: IntakeStats, store: dict[str, Any], publisher: dict[str, Any]
) -> dict[str, Any]:
    """``GET /v1/status``."""
    return {
        "intake": {
            "name": stats.name,
            "version": VERSION,
            "started_at": _now_rfc3339(stats.started),
            "uptime_seconds": round(time.time() - stats.started, 1),
        },
        "relay": publisher,
        "store": store,
        "webhooks": _per_shop(stats.webhooks),
        "events": _per_shop(stats.events),
        "polls": {shop: asdict(p) for shop, p in sorted(stats.polls.items())},
        "hooks": {
            shop: {
                "checked": h.checked,
                "error": h.error,
                "hooks": [asdict(hook) for hook in h.hooks],
            }
            for shop, h in sorted(stats.hooks.items())
        },
    }


def retained(stats: IntakeStats, state: str, store: dict[str, Any]) -> bytes:
    """The fleet view's row: the agents' and consumers' field names, where they mean the
    same."""
    return orjson.dumps(
        {
            "kind": "intake",
            "state": state,
            "version": VERSION,
            "started_at": _now_rfc3339(stats.started),
            "time": _now_rfc3339(),
            "backlog": store.get("pending", 0),
            "dead_letters": store.get("dead", 0) + store.get("notes", {}).get("dead", 0),
            "published": store.get("published", 0),
            "hooks_disabled": stats.disabled_hooks(),
            "last_error": next((p.last_error for p in stats.polls.values() if p.last_error), None),
        }
    )


class _Families(Collector):
    def __init__(self, stats: IntakeStats, store: dict[str, Any], connected: bool) -> None:
        self.stats, self.store, self.connected = stats, store, connected

    def collect(self) -> Iterator[Metric]:
        yield _labelled(
            "distillsync_intake_webhooks",
            "Webhooks by shop and what became of them",
            self.stats.webhooks,
        )
        yield _labelled(
            "distillsync_intake_events",
            "Orders and returns read (webhook, poll, re-read) by outcome",
            self.stats.events,
        )
        polls = CounterMetricFamily(
            "distillsync_intake_polls", "Catch-up polls by result", labels=["shop", "result"]
        )
        hooks = GaugeMetricFamily(
            "distillsync_intake_hooks", "Webhook subscriptions by state", labels=["shop", "state"]
        )
        for shop, poll in sorted(self.stats.polls.items()):
            polls.add_metric([shop, "ok"], poll.polls - poll.failures)
            polls.add_metric([shop, "failed"], poll.failures)
        for shop, health in sorted(self.stats.hooks.items()):
            for state in ("active", "paused", "disabled", "missing"):
                hooks.add_metric([shop, state], health.count(state))
        yield from (polls, hooks)
        yield from _store_families(self.store, self.connected)


def _labelled(name: str, text: str, counts: Counter[tuple[str, str]]) -> Metric:
    family = CounterMetricFamily(name, text, labels=["shop", "outcome"])
    for (shop, outcome), count in sorted(counts.items()):
        family.add_metric([shop, outcome], count)
    return family


def _store_families(store: dict[str, Any], connected: bool) -> Iterator[Metric]:
    for key, text in (
        ("stored", "Events in the intake store"),
        ("published", "Events the broker acknowledged"),
        ("pending", "Events stored and not yet acknowledged"),
        ("dead", "Events the broker refused (negative PUBACK)"),
    ):
        yield GaugeMetricFamily(f"distillsync_intake_{key}_events", text, value=store.get(key, 0))
    notes = GaugeMetricFamily(
        "distillsync_intake_notes", "Recorded, never published, by kind", labels=["kind"]
    )
    for kind, count in sorted(store.get("notes", {}).items()):
        notes.add_metric([kind], count)
    yield notes
    yield GaugeMetricFamily(
        "distillsync_intake_relay_connected",
        "1 while the relay connection is up",
        value=1 if connected else 0,
    )


def metrics_text(stats: IntakeStats, store: dict[str, Any], connected: bool) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(stats, store, connected))
    return generate_latest(registry)
