"""``/v1/status`` as one typed snapshot (agent/status.py): what the status API serialises,
byte for byte as before the types, and what ``distillsync status``, ``/v1/metrics`` and
the dashboard read back from it.

The agent here is a stand-in holding fixed figures, on a frozen clock, so every field of
the JSON is known: the README documents each, and scripts read them.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import orjson
import pytest

from agent import __version__, api, metrics
from agent.delivery import RelayStats, SequenceCheck, TailEntry
from agent.inbox import InboxStats
from agent.model import FeedId
from agent.outbox import OutboxStats, SequenceMove, WriteHealth
from agent.status import AgentStatus, FeedStatus, SequenceStatus
from cli.main import summary
from tui.model import parse_status

if TYPE_CHECKING:
    from agent.service import Agent

NOW = 1_790_000_000.0  # 2026-09-21T14:13:20Z
MONOTONIC = 5000.0


class FrozenOutbox:
    def __init__(self, write_health: WriteHealth) -> None:
        self.write_health = write_health

    async def stats(self) -> OutboxStats:
        return OutboxStats(
            pending=1204,
            delivered=5000,
            dead_letters=3,
            oldest_pending_time="2026-09-21T14:13:16.000000Z",
            last_sequence=90_300,
        )


class FrozenInbox:
    async def stats(self) -> InboxStats:
        return InboxStats(
            held=2,
            pending=5,
            written=40,
            failed=1,
            dead=3,
            stale=4,
            duplicates=6,
            oldest_pending_age=12.345,
        )


def feed_stats(mode: str, **figures: Any) -> SimpleNamespace:
    return SimpleNamespace(
        **{
            "mode": mode,
            "last_poll_start": NOW - 3,
            "last_poll_end": NOW - 2,
            "last_success": NOW - 2,
            "rows_read": 10,
            "changes_emitted": 4,
            "dead_letters": 1,
            "errors": 0,
            "last_error": None,
            **figures,
        }
    )


def runner(name: str, paused: bool, *feeds: tuple[str, str, SimpleNamespace]) -> SimpleNamespace:
    return SimpleNamespace(
        config=SimpleNamespace(name=name),
        paused=paused,
        pollers=[
            SimpleNamespace(feed=FeedId(name, feed, entity), stats=stats)
            for feed, entity, stats in feeds
        ],
    )


def board(**changes: bool) -> api.StatusBoard:
    return api.StatusBoard(cast("Agent", stand_in(**changes)))


def stand_in(*, write_error: bool = True, moved: bool = True) -> SimpleNamespace:
    relay = RelayStats(
        state="connected",
        since=NOW - 125,
        reconnects=1,
        published=7,
        nacked=2,
        in_flight=37,
        last_error="a refusal",
        last_publish=NOW - 0.5,
        published_by_entity=Counter({"stock": 5, "price": 2}),
        failures=Counter({"refused": 2}),
        received=61,
    )
    relay.tail.append(
        TailEntry(
            90_311, "0193a8c0-0001", "stock", "upsert", "SKU-1/WH1", "delivered", None, NOW - 1
        )
    )
    relay.sequence = SequenceCheck(
        state="ok",
        checked_at=NOW - 100,
        relay_watermark=41,
        published=90_311,
        moved=SequenceMove(last_before=5, floor=41, renumbered=3, last_after=44) if moved else None,
        moved_at=NOW - 100 if moved else None,
    )
    health = (
        WriteHealth(error="database or disk is full", since=NOW - 30, failures=4)
        if write_error
        else WriteHealth()
    )
    return SimpleNamespace(
        config=SimpleNamespace(
            agent=SimpleNamespace(id="erp-1", tenant="acme"),
            relay=SimpleNamespace(url="mqtts://relay.example.com:8883"),
        ),
        started_at="2026-09-21T11:01:20.000000Z",
        started_monotonic=MONOTONIC - 11520.04,
        delivery=SimpleNamespace(stats=relay),
        outbox=FrozenOutbox(health),
        inbox=FrozenInbox(),
        runners=[
            runner(
                "erp",
                False,
                ("stock", "stock", feed_stats("timestamp")),
                (
                    "price",
                    "price",
                    feed_stats("incrementing", last_success=None, errors=2, last_error="timed out"),
                ),
            ),
            runner("crm", True, ("customer", "customer", feed_stats("snapshot"))),
        ],
    )


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "time", SimpleNamespace(time=lambda: NOW, monotonic=lambda: MONOTONIC))


def feed_json(feed: str, entity: str, mode: str, **figures: Any) -> dict[str, Any]:
    return {
        "feed": feed,
        "entity": entity,
        "mode": mode,
        "last_poll_start": NOW - 3,
        "last_poll_end": NOW - 2,
        "last_success": NOW - 2,
        "rows_read": 10,
        "changes_emitted": 4,
        "dead_letters": 1,
        "errors": 0,
        "last_error": None,
        **figures,
    }


# Every key in its order, as the status API sent it before agent/status.py, and then the
# inbox (issue 14).
EXPECTED: dict[str, Any] = {
    "agent": {
        "id": "erp-1",
        "tenant": "acme",
        "version": __version__,
        "started_at": "2026-09-21T11:01:20.000000Z",
        "uptime_seconds": 11520.0,
    },
    "relay": {
        "url": "mqtts://relay.example.com:8883",
        "state": "connected",
        "since": NOW - 125,
        "reconnects": 1,
        "published": 7,
        "refused": 2,
        "in_flight": 37,
        "last_publish": NOW - 0.5,
        "last_error": "a refusal",
        "published_by_entity": {"stock": 5, "price": 2},
        "failures": {"refused": 2},
    },
    "sources": [
        {
            "name": "erp",
            "paused": False,
            "feeds": [
                feed_json("stock", "stock", "timestamp"),
                feed_json(
                    "price",
                    "price",
                    "incrementing",
                    last_success=None,
                    errors=2,
                    last_error="timed out",
                ),
            ],
        },
        {"name": "crm", "paused": True, "feeds": [feed_json("customer", "customer", "snapshot")]},
    ],
    "outbox": {
        "pending": 1204,
        "in_flight": 37,
        "delivered_per_second": 0.0,
        "oldest_pending_time": "2026-09-21T14:13:16.000000Z",
        "oldest_pending_age_seconds": 4.0,
        "dead_letters": 3,
        "delivered_kept": 5000,
        "last_sequence": 90_311,
        "write_error": {"message": "database or disk is full", "since": NOW - 30},
        "write_errors": 4,
    },
    "sequence": {
        "check": "ok",
        "checked_at": NOW - 100,
        "relay_watermark": 41,
        "unread_reason": None,
        "watermark_published": 90_311,
        "watermark_error": None,
        "moved": {"from": 5, "above": 41, "renumbered": 3, "at": NOW - 100},
    },
    "inbox": {
        "held": 2,
        "pending": 5,
        "written": 40,
        "failed": 1,
        "dead": 3,
        "stale": 4,
        "duplicates": 6,
        "oldest_pending_age_seconds": 12.3,
        "received": 61,
    },
}


async def test_the_serialised_snapshot_is_the_json_of_before(frozen_clock: None) -> None:
    sent = orjson.dumps(await board().snapshot())
    assert sent == orjson.dumps(EXPECTED)  # the same keys, in the same order, same values


async def test_no_write_error_and_no_move_are_null(frozen_clock: None) -> None:
    status = orjson.loads(orjson.dumps(await board(write_error=False, moved=False).snapshot()))
    assert (status["outbox"]["write_error"], status["outbox"]["write_errors"]) == (None, 0)
    assert status["sequence"]["moved"] is None


SUMMARY = """\
agent   acme/erp-1 {version}, up 11520.0s, healthy
relay   mqtts://relay.example.com:8883: connected, 7 published, 2 refused, 1 reconnects
outbox  1204 pending (oldest 2026-09-21T14:13:16.000000Z), 3 dead letters, last sequence 90311
outbox  CANNOT WRITE since 2026-09-21T14:12:50.000000Z: database or disk is full
sequence checked against the relay's watermark (41); 90311 acknowledged since
sequence MOVED at 2026-09-21T14:11:40.000000Z: the outbox was at 5, the relay had seen 41 \
(a restored backup or a new outbox.db); 3 pending events renumbered above it
inbox   5 pending (oldest 12.3s), 2 held, 1 failed, 3 dead, 40 written, 4 stale, 6 duplicates
source  erp/stock [timestamp]: 10 rows read, 4 changes, 1 dead, 0 errors
source  erp/price [incrementing]: 10 rows read, 4 changes, 1 dead, 2 errors, last error: \
timed out
source  crm/customer (paused) [snapshot]: 10 rows read, 4 changes, 1 dead, 0 errors"""


async def test_distillsync_status_summarises_what_the_api_sent(frozen_clock: None) -> None:
    received = orjson.loads(orjson.dumps(await board().snapshot()))
    assert summary(received, {"healthy": True}) == SUMMARY.format(version=__version__)


async def test_what_is_received_parses_back_into_what_was_sent(frozen_clock: None) -> None:
    for sent in (await board().status(), await board(write_error=False, moved=False).status()):
        assert AgentStatus.from_json(orjson.loads(orjson.dumps(sent.to_json()))) == sent


async def test_metrics_and_the_dashboard_read_the_same_snapshot(frozen_clock: None) -> None:
    status = await board().status()
    text = metrics.render(status).decode()
    assert (
        'distillsync_source_errors_total{entity="price",feed="price",source="erp"} 2.0' in text
        and "distillsync_outbox_write_failing 1.0" in text
        and 'distillsync_inbox_items{state="dead"} 3.0' in text
        and "distillsync_inbox_duplicates_total 6.0" in text
        and "distillsync_inbox_oldest_pending_age_seconds 12.3" in text
        and "distillsync_inbox_received_total 61.0" in text
    )
    shown = parse_status(orjson.loads(orjson.dumps(status.to_json())), {"healthy": False})
    assert shown.status == status and shown.healthy is False
    assert [(row.key, row.paused, row.feed.failing) for row in shown.feeds] == [
        ("erp/stock", False, False),
        ("erp/price", False, True),
        ("crm/customer", True, False),
    ]


def test_parsing_gives_blanks_for_what_is_missing_or_of_the_wrong_kind() -> None:
    status = AgentStatus.from_json(
        {
            "agent": {"id": 7, "uptime_seconds": "long"},
            "relay": [],
            "sources": [{"name": "erp", "paused": 1, "feeds": [{"feed": "stock"}, 3]}, "odd"],
            "outbox": {"pending": 3, "write_error": "yes", "future_field": 1},
            "sequence": {"moved": {"from": 9}},
        }
    )
    assert (status.agent.id, status.agent.tenant, status.agent.uptime_seconds) == ("7", "?", 0.0)
    assert (status.relay.state, status.relay.since, status.relay.failures) == ("unknown", None, {})
    assert status.sources[0].paused and status.sources[0].feeds == (
        FeedStatus(
            feed="stock",
            entity="",
            mode="",
            last_poll_start=None,
            last_poll_end=None,
            last_success=None,
            rows_read=0,
            changes_emitted=0,
            dead_letters=0,
            errors=0,
            last_error=None,
        ),
    )
    assert len(status.sources) == 1
    assert (status.outbox.pending, status.outbox.write_error) == (3, None)
    assert status.sequence.check == "unchecked" and status.sequence.moved is not None
    assert status.sequence.moved.from_ == 9
    assert AgentStatus.from_json(None).sequence == SequenceStatus(
        check="unchecked",
        checked_at=None,
        relay_watermark=None,
        unread_reason=None,
        watermark_published=0,
        watermark_error=None,
        moved=None,
    )
