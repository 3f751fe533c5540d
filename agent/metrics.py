"""``/v1/metrics``: the status snapshot in Prometheus' text format (prometheus-client).

Families are built per scrape from the same snapshot ``/v1/status`` serves, through a
collector on a private registry, so nothing is global and the numbers in the two views
always agree. Names follow Prometheus' conventions: ``distillsync_`` prefix, base units,
``_total`` for counters.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.status import AgentStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"distillsync_{name}", doc)
    if value is not None:
        family.add_metric([], value)
    return family


def _agent_families(status: AgentStatus) -> Iterator[Metric]:
    agent, relay, outbox = status.agent, status.relay, status.outbox
    info = GaugeMetricFamily(
        "distillsync_agent_info",
        "The agent's identity; always 1",
        labels=["tenant", "agent", "version"],
    )
    info.add_metric([agent.tenant, agent.id, agent.version], 1)
    yield info
    yield _gauge("uptime_seconds", "Seconds since the agent started", agent.uptime_seconds)
    yield _gauge(
        "relay_connected",
        "1 while the relay connection is up",
        1 if relay.state == "connected" else 0,
    )
    yield CounterMetricFamily(
        "distillsync_relay_reconnects", "Relay reconnect attempts", value=relay.reconnects
    )
    yield _gauge("relay_in_flight_events", "Publishes awaiting PUBACK", relay.in_flight)
    yield _gauge(
        "relay_last_publish_timestamp_seconds",
        "Unix time of the last delivered event",
        relay.last_publish,
    )
    published = CounterMetricFamily(
        "distillsync_events_published", "Events acknowledged by the relay", labels=["entity"]
    )
    for entity, count in sorted(relay.published_by_entity.items()):
        published.add_metric([entity], count)
    yield published
    failures = CounterMetricFamily(
        "distillsync_publish_failures",
        "Publishes refused by the relay or left unacknowledged",
        labels=["reason"],
    )
    for reason in ("refused", "unacknowledged"):
        failures.add_metric([reason], relay.failures.get(reason, 0))
    yield failures
    yield _gauge("outbox_pending_events", "Events not yet delivered", outbox.pending)
    yield _gauge(
        "outbox_dead_letters", "Dead letters awaiting retry or discard", outbox.dead_letters
    )
    yield _gauge(
        "outbox_oldest_pending_age_seconds",
        "Age of the oldest undelivered event",
        outbox.oldest_pending_age_seconds or 0.0,
    )
    yield _gauge("outbox_last_sequence", "Sequence of the newest event", outbox.last_sequence)
    yield _gauge(
        "outbox_delivered_per_second",
        "Delivery rate over the last seconds",
        outbox.delivered_per_second,
    )
    yield _gauge(
        "outbox_write_failing",
        "1 while the outbox cannot be written (disk full, "
        "read-only or failing disk): nothing is captured meanwhile",
        0 if outbox.write_error is None else 1,
    )
    yield CounterMetricFamily(
        "distillsync_outbox_write_errors", "Failed outbox write attempts", value=outbox.write_errors
    )


_FEED_COUNTERS = (
    ("rows_read", "source_rows_read", "Rows read from the source"),
    ("changes_emitted", "source_changes", "Changes put in the outbox"),
    ("dead_letters", "source_dead_letters", "Rows that became dead letters"),
    ("errors", "source_errors", "Failed polls"),
)


def _feed_families(status: AgentStatus) -> Iterator[Metric]:
    labels = ["source", "feed", "entity"]
    last_success = GaugeMetricFamily(
        "distillsync_source_last_success_timestamp_seconds",
        "Unix time of the last successful poll",
        labels=labels,
    )
    paused = GaugeMetricFamily(
        "distillsync_source_paused", "1 while the source is paused", labels=labels
    )
    counters = {
        key: CounterMetricFamily(f"distillsync_{name}", doc, labels=labels)
        for key, name, doc in _FEED_COUNTERS
    }
    for source in status.sources:
        for feed in source.feeds:
            values = [source.name, feed.feed, feed.entity]
            if feed.last_success is not None:
                last_success.add_metric(values, feed.last_success)
            paused.add_metric(values, 1 if source.paused else 0)
            for key, family in counters.items():
                family.add_metric(values, getattr(feed, key))
    yield last_success
    yield paused
    yield from counters.values()


def _inbox_families(status: AgentStatus) -> Iterator[Metric]:
    inbox = status.inbox
    items = GaugeMetricFamily(
        "distillsync_inbox_items", "Inbound events in the inbox, by state", labels=["state"]
    )
    for state in ("held", "pending", "written", "failed", "dead", "stale"):
        items.add_metric([state], getattr(inbox, state))
    yield items
    yield CounterMetricFamily(
        "distillsync_inbox_duplicates",
        "Redeliveries of inbound event ids already recorded",
        value=inbox.duplicates,
    )
    yield CounterMetricFamily(
        "distillsync_inbox_received",
        "Messages received on the inbound topic (in/#), counted on arrival",
        value=inbox.received,
    )
    yield _gauge(
        "inbox_oldest_pending_age_seconds",
        "Age of the oldest inbound event waiting to be written (pending or failed)",
        inbox.oldest_pending_age_seconds or 0.0,
    )


class _Snapshot(Collector):
    def __init__(self, status: AgentStatus) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        yield from _agent_families(self.status)
        yield from _feed_families(self.status)
        yield from _inbox_families(self.status)


def render(status: AgentStatus) -> bytes:
    """The Prometheus text exposition of one ``/v1/status`` snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(status))
    return generate_latest(registry)
