"""What the consumer counts, and how it shows it: ``/v1/status`` JSON, ``/v1/metrics``
(Prometheus text, prometheus-client on a private registry) and the compact retained
status the TUI's fleet view lists next to the agents.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

VERSION = version("distillsync")
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OUTCOMES = ("applied", "skipped", "duplicate", "stale", "dead", "invalid")


def _now_rfc3339(epoch: float | None = None) -> str:
    moment = time.time() if epoch is None else epoch
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1e6):06d}Z"
    )


@dataclass
class SinkStats:
    applied: int = 0
    skipped: int = 0
    dead: int = 0
    unavailable: int = 0
    """Batches the shop could not take (after the sink's own retries)."""
    last_error: str | None = None
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    """Seconds per ``apply`` call, the last thousand."""

    def latency(self, quantile: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]


@dataclass
class ConsumerStats:
    name: str
    started: float = field(default_factory=time.time)
    relay_state: str = "connecting"
    relay_since: float = field(default_factory=time.time)
    reconnects: int = 0
    received: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    last_apply: float | None = None
    last_error: str | None = None
    sinks: dict[str, SinkStats] = field(default_factory=dict)

    def relay(self, state: str) -> None:
        if state != self.relay_state:
            self.relay_state, self.relay_since = state, time.time()

    def snapshot(self, waiting: int, unacked: int) -> dict[str, Any]:
        return {
            "consumer": {
                "name": self.name,
                "version": VERSION,
                "started_at": _now_rfc3339(self.started),
                "uptime_seconds": round(time.time() - self.started, 1),
            },
            "relay": {
                "state": self.relay_state,
                "since": self.relay_since,
                "reconnects": self.reconnects,
            },
            "events": {
                "received": self.received,
                **self.outcomes,
                "waiting": waiting,
                "unacknowledged": unacked,
                "last_apply": self.last_apply,
                "last_error": self.last_error,
            },
            "sinks": {
                name: {
                    "applied": s.applied,
                    "skipped": s.skipped,
                    "dead": s.dead,
                    "unavailable": s.unavailable,
                    "last_error": s.last_error,
                    "latency_p50_seconds": s.latency(0.5),
                    "latency_p99_seconds": s.latency(0.99),
                }
                for name, s in self.sinks.items()
            },
        }

    def retained(self, state: str, dead_letters: int, waiting: int) -> bytes:
        """The fleet view's row: the agents' field names, where they mean the same."""
        return orjson.dumps(
            {
                "kind": "consumer",
                "state": state,
                "version": VERSION,
                "started_at": _now_rfc3339(self.started),
                "time": _now_rfc3339(),
                "backlog": waiting,
                "dead_letters": dead_letters,
                "published": self.outcomes["applied"],
                "last_publish": _now_rfc3339(self.last_apply) if self.last_apply else None,
                "last_error": self.last_error,
            }
        )


class _Families(Collector):
    def __init__(self, stats: ConsumerStats, waiting: int, unacked: int) -> None:
        self.stats, self.waiting, self.unacked = stats, waiting, unacked

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        outcomes = CounterMetricFamily(
            "distillsync_consumer_events", "Events by what became of them", labels=["outcome"]
        )
        for outcome, count in stats.outcomes.items():
            outcomes.add_metric([outcome], count)
        yield outcomes
        yield CounterMetricFamily(
            "distillsync_consumer_received", "Messages received", value=stats.received
        )
        yield GaugeMetricFamily(
            "distillsync_consumer_waiting_events",
            "Events received and not yet applied",
            value=self.waiting,
        )
        yield GaugeMetricFamily(
            "distillsync_consumer_unacknowledged_messages",
            "Messages not yet acknowledged to the relay",
            value=self.unacked,
        )
        yield GaugeMetricFamily(
            "distillsync_consumer_relay_connected",
            "1 while the relay connection is up",
            value=1 if stats.relay_state == "connected" else 0,
        )
        yield from _sink_families(stats)


def _sink_families(stats: ConsumerStats) -> Iterator[Metric]:
    labels = ["sink"]
    results = CounterMetricFamily(
        "distillsync_sink_events", "Events per sink and result", labels=["sink", "result"]
    )
    unavailable = CounterMetricFamily(
        "distillsync_sink_unavailable", "Batches a shop could not take", labels=labels
    )
    latency = SummaryMetricFamily(
        "distillsync_sink_latency_seconds", "Seconds per apply call (last thousand)", labels=labels
    )
    for name, sink in stats.sinks.items():
        for result in ("applied", "skipped", "dead"):
            results.add_metric([name, result], getattr(sink, result))
        unavailable.add_metric([name], sink.unavailable)
        latency.add_metric([name], count_value=len(sink.latencies), sum_value=sum(sink.latencies))
    yield from (results, unavailable, latency)


def metrics_text(stats: ConsumerStats, waiting: int, unacked: int) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(stats, waiting, unacked))
    return generate_latest(registry)
