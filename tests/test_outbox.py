"""Outbox: what commits together, what is suppressed, what the results mean."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.capture import digest
from agent.errors import OutboxError
from agent.model import CapturedPage, Change, DeadRow, FeedId, Outcome, PublishResult
from agent.outbox import MIGRATIONS, Outbox

FEED = FeedId("erp", "stock", "stock")


def change(subject: str, value: int) -> Change:
    data = f'{{"on_hand":{value}}}'.encode()
    return Change(subject, "upsert", data, digest(data))


def page(*changes: Change, cursor: str | None = None, conflate: bool = False) -> CapturedPage:
    return CapturedPage(FEED, list(changes), cursor=cursor, conflate=conflate)


async def test_unchanged_state_is_enqueued_once(tmp_path: Path) -> None:
    async with Outbox.open(tmp_path / "o.db") as outbox:
        first = await outbox.commit_page(page(change("A", 1), change("B", 1)))
        again = await outbox.commit_page(page(change("A", 1), change("B", 2)))
        assert (first.enqueued, again.enqueued, again.unchanged) == (2, 1, 1)
        pending = await outbox.fetch_pending(0, 10)
    assert [(e.sequence, e.subject) for e in pending] == [(1, "A"), (2, "B"), (3, "B")]


async def test_a_page_and_its_cursor_commit_together_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Outbox.open(tmp_path / "o.db") as outbox:
        await outbox.commit_page(page(change("A", 1), cursor='["int",1]'))

        async def fail(*_: object) -> None:
            raise OSError("disk on fire")

        monkeypatch.setattr(Outbox, "_store_hashes", staticmethod(fail))
        with pytest.raises(OSError):
            await outbox.commit_page(page(change("A", 2), change("B", 1), cursor='["int",2]'))
        monkeypatch.undo()
        assert await outbox.feed_state(FEED) == ('["int",1]', 0)
        assert [e.subject for e in await outbox.fetch_pending(0, 10)] == ["A"]
        # The failed page is read again and enqueued in full.
        result = await outbox.commit_page(page(change("A", 2), change("B", 1), cursor='["int",2]'))
        assert result.enqueued == 2


async def test_conflation_keeps_only_the_newest_pending_event_per_key(tmp_path: Path) -> None:
    async with Outbox.open(tmp_path / "o.db") as outbox:
        for value in range(5):
            await outbox.commit_page(
                page(change("A", value), change(f"K{value}", 0), conflate=True)
            )
        pending = await outbox.fetch_pending(0, 100)
    a_events = [e for e in pending if e.subject == "A"]
    assert len(a_events) == 1 and a_events[0].data == b'{"on_hand":4}'
    assert len(pending) == 6


async def test_results_acked_delivered_nacked_dead_unknown_pending(tmp_path: Path) -> None:
    async with Outbox.open(tmp_path / "o.db") as outbox:
        await outbox.commit_page(page(change("A", 1), change("B", 1), change("C", 1)))
        await outbox.record_results(
            [
                PublishResult(1, Outcome.ACKED),
                PublishResult(2, Outcome.NACKED, "broker refused: Not authorized (0x87)"),
                PublishResult(3, Outcome.UNKNOWN, "connection lost"),
            ]
        )
        assert [e.sequence for e in await outbox.fetch_pending(0, 10)] == [3]
        stats = await outbox.stats()
        assert (stats.pending, stats.delivered, stats.dead_letters) == (1, 1, 1)
        [dead] = await outbox.dead_letters()
        assert (dead.kind, dead.event_seq, dead.subject) == ("publish", 2, "B")
        assert "Not authorized" in dead.reason

        assert await outbox.retry_dead(dead.id)
        assert [e.sequence for e in await outbox.fetch_pending(0, 10)] == [2, 3]
        await outbox.record_results([PublishResult(2, Outcome.NACKED, "again")])
        [dead] = await outbox.dead_letters()
        assert await outbox.discard_dead(dead.id)
        assert await outbox.dead_letters() == []
        assert not await outbox.discard_dead(dead.id)


async def test_capture_dead_letters_are_reported_once_per_bad_state(tmp_path: Path) -> None:
    bad = DeadRow(
        "stock A: schema: data.on_hand must be number", "A", b'{"on_hand":"x"}', digest(b"x")
    )
    async with Outbox.open(tmp_path / "o.db") as outbox:
        first = await outbox.commit_page(CapturedPage(FEED, [], [bad]))
        again = await outbox.commit_page(CapturedPage(FEED, [], [bad]))
        assert (first.dead, again.dead) == (1, 0)
        [dead] = await outbox.dead_letters()
        # Retrying forgets the stored hash, so the next read of that row is judged afresh.
        assert await outbox.retry_dead(dead.id)
        assert (await outbox.commit_page(CapturedPage(FEED, [], [bad]))).dead == 1
        # Fixed in the ERP: a new state, enqueued as usual.
        assert (await outbox.commit_page(page(change("A", 3)))).enqueued == 1


async def test_sequences_are_never_reused_after_pruning(tmp_path: Path) -> None:
    async with Outbox.open(tmp_path / "o.db", retention=0.0) as outbox:
        await outbox.commit_page(page(change("A", 1), change("B", 1)))
        await outbox.record_results(
            [PublishResult(1, Outcome.ACKED), PublishResult(2, Outcome.ACKED)]
        )
        assert await outbox.fetch_pending(0, 10) == []
        await outbox.commit_page(page(change("A", 2)))
        [event] = await outbox.fetch_pending(0, 10)
    assert event.sequence == 3


async def test_delivered_rows_are_pruned_after_the_retention(tmp_path: Path) -> None:
    async with Outbox.open(tmp_path / "o.db", retention=60.0) as outbox:
        await outbox.commit_page(page(change("A", 1), change("B", 1)))
        await outbox.record_results([PublishResult(1, Outcome.ACKED)])
        assert await outbox.prune_delivered() == 0
        import time

        assert await outbox.prune_delivered(now=time.time() + 61) == 1
        stats = await outbox.stats()
        assert (stats.pending, stats.delivered, stats.last_sequence) == (1, 0, 2)


async def test_snapshot_generations_find_unseen_keys(tmp_path: Path) -> None:
    async with Outbox.open(tmp_path / "o.db") as outbox:
        await outbox.commit_page(
            CapturedPage(FEED, [change("A", 1), change("B", 1)], seen_generation=1)
        )
        await outbox.finish_generation(FEED, 1)
        await outbox.commit_page(CapturedPage(FEED, [change("A", 1)], seen_generation=2))
        assert await outbox.unseen_subjects(FEED, 2, 100) == ["B"]
        assert await outbox.feed_state(FEED) == (None, 1)


async def test_schema_is_versioned_and_a_newer_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    async with Outbox.open(path):
        pass
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(OutboxError, match="newer than this agent knows"):
        async with Outbox.open(path):
            pass


async def test_durable_by_default_wal_and_synchronous_full(tmp_path: Path) -> None:
    """Guarantee 5: a committed page survives power loss unless the operator opts out."""
    async with Outbox.open(tmp_path / "o.db") as outbox:
        for connection in (outbox._writer, outbox._reader):
            async with connection.execute("PRAGMA synchronous") as cursor:
                assert (await cursor.fetchone()) == (2,)  # FULL
            async with connection.execute("PRAGMA journal_mode") as cursor:
                assert (await cursor.fetchone()) == ("wal",)
    async with (
        Outbox.open(tmp_path / "n.db", synchronous="normal") as outbox,
        outbox._writer.execute("PRAGMA synchronous") as cursor,
    ):
        assert (await cursor.fetchone()) == (1,)  # NORMAL, when configured
