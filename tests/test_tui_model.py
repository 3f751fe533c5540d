"""The dashboards' pure parts: human formats, parsing, the throughput history."""

from __future__ import annotations

import orjson
import pytest

from tests.tui_support import FLEET, NOW, STARTED, fleet_status, updates
from tui.formats import age, count, epoch, rate, span
from tui.model import parse_fleet_status, parse_status, parse_update
from tui.sources import fleet_topic
from tui.throughput import Throughput


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.4, "just now"),
        (3, "3s ago"),
        (59.9, "59s ago"),
        (60, "1m ago"),
        (3599, "59m ago"),
        (3600 * 5 + 60 * 12, "5h ago"),
        (86400 * 2 + 3600 * 4, "2d ago"),
    ],
)
def test_ages(seconds: float, shown: str) -> None:
    assert age(NOW - seconds, NOW) == shown


def test_spans_rates_and_counts() -> None:
    assert [span(s) for s in (-1, 45, 720, 11_520, 86400 * 2 + 3600 * 4)] == [
        "0s",
        "45s",
        "12m",
        "3h 12m",
        "2d 4h",
    ]
    assert [rate(r) for r in (None, 0, 0.42, 123.4, 12_345)] == [
        "—",
        "0/s",
        "0.4/s",
        "123/s",
        "12.3k/s",
    ]
    assert [count(n) for n in (0, 9876, 12_345, 4_500_000)] == ["0", "9876", "12.3k", "4.5M"]
    assert age(None, NOW) == "—"
    assert epoch("2026-09-21T14:13:20Z") == NOW
    assert epoch("yesterday") is None and epoch(None) is None


def test_throughput_spreads_each_difference_over_its_seconds() -> None:
    history = Throughput(window=10)
    history.add(100.0, 1000)
    history.add(102.0, 1200)  # 200 in two seconds
    history.add(102.5, 1300)  # 100 in half a second
    history.add(103.5, 1360)  # 30 of these 60 in second 102, 30 in second 103
    history.add(104.2, 1360)  # second 104 is still filling: not drawn
    assert history.series() == [0.0] * 6 + [100.0, 100.0, 130.0, 30.0]
    assert history.recent(2) == 80.0


def test_throughput_starts_again_when_the_agent_restarts_and_forgets_old_seconds() -> None:
    history = Throughput(window=10)
    history.add(100.0, 5000)
    history.add(101.0, 5100)
    history.add(150.0, 7)  # a new agent: its counter began again
    history.add(151.0, 57)
    assert history.series()[-1] == 50.0
    assert sum(history.series()) == 50.0  # the second at 100 is beyond the window
    assert Throughput().series() == [] and Throughput().recent() is None


def test_a_long_gap_counts_only_inside_the_window() -> None:
    history = Throughput(window=10)
    history.add(0.0, 0)
    history.add(100.0, 1000)  # ten per second, but only the last ten seconds are kept
    assert history.series() == [10.0] * 10


def test_a_stream_update_parses_into_snapshot_and_events() -> None:
    update = parse_update(updates(1)[0])
    snap = update.snapshot
    assert (snap.agent.id, snap.agent.tenant, snap.healthy) == ("erp-madrid-1", "acme", True)
    assert snap.agent_time == pytest.approx(NOW)
    assert snap.relay.state == "connected" and snap.outbox.pending == 1204
    assert [feed.key for feed in snap.feeds][-1] == "crm/customer"
    assert snap.feeds[-1].feed.failing and not snap.feeds[0].feed.failing
    assert snap.feeds[3].paused
    assert update.events[-2].reason == "not authorized (0x87)"
    assert update.events[0].matches("SKU-1/") and not update.events[0].matches("refused")


def test_parsing_is_lenient_with_an_older_or_newer_agent() -> None:
    snap = parse_status(
        {
            "agent": {"id": "a"},
            "relay": {"state": "connecting"},
            "outbox": {"pending": 3, "future_field": 1},
            "sources": [{"name": "erp", "feeds": [{"feed": "stock"}]}, "odd"],
        }
    )
    assert snap.outbox.delivered_per_second is None and snap.outbox.pending == 3
    assert snap.feeds[0].key == "erp/stock" and snap.feeds[0].feed.last_success is None
    assert snap.healthy is None and snap.agent.uptime_seconds == 0.0
    assert parse_update({}).events == ()


def test_fleet_statuses_online_offline_cleared_and_unreadable() -> None:
    key, online = parse_fleet_status(*FLEET[0])
    assert key == ("acme", "erp-madrid-1") and online is not None
    assert (online.state, online.backlog, online.dead_letters) == ("online", 1204, 3)
    assert online.last_publish == NOW - 1
    _, will = parse_fleet_status("distillsync/acme/b/status", fleet_status("offline"))
    assert will is not None and will.state == "offline"
    assert (will.backlog, will.dead_letters, will.last_publish) == (None, None, None)
    assert parse_fleet_status("x/acme/gone/status", b"") == (("acme", "gone"), None)
    _, garbled = parse_fleet_status("x/acme/odd/status", b"\xff not json")
    assert garbled is not None and garbled.state == "unknown"
    _, odd = parse_fleet_status("x/t/a/status", orjson.dumps({"state": "online", "paused": 3}))
    assert odd is not None and odd.paused == ()
    _, listed = parse_fleet_status("x/t/a/status", orjson.dumps([1, 2]))
    assert listed is not None and listed.last_error == "unreadable status payload"
    assert online.time == NOW - 5 and STARTED < NOW


def test_fleet_topics() -> None:
    assert fleet_topic("distillsync", None) == "distillsync/+/+/status"
    assert fleet_topic("ds", "acme") == "ds/acme/+/status"
