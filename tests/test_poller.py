"""The timestamp poller's read plan: head reads between sweeps, sweeps catch the rest."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import agent.modes.timestamp
from agent.config import SourceConfig
from agent.modes.timestamp import TimestampCursor
from agent.outbox import Outbox
from agent.poller import FeedPoller
from agent.sources.sql import SqlReader


def source(db: Path) -> SourceConfig:
    return SourceConfig.model_validate(
        {
            "name": "erp",
            "url": f"sqlite+aiosqlite:///{db}",
            "page_size": 3,
            "entities": [
                {
                    "entity": "stock",
                    "query": "SELECT sku, warehouse, on_hand, tms FROM stock_levels",
                    "key": ["sku", "warehouse"],
                    "cursor": "tms",
                    "lookback": "30s",
                }
            ],
        }
    )


def make_sweep_due(poller: FeedPoller) -> None:
    """The next poll sweeps (sets the timestamp mode's private schedule)."""
    assert isinstance(poller.mode, TimestampCursor)
    poller.mode._next_sweep = 0.0


async def test_a_late_row_in_a_settled_tick_is_left_to_the_sweep_which_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent.modes.timestamp, "TICK_SETTLE", 0.0)
    db = sqlite3.connect(tmp_path / "erp.db", isolation_level=None)
    db.execute("CREATE TABLE stock_levels (sku TEXT, warehouse TEXT, on_hand REAL, tms TEXT)")
    db.executemany(
        "INSERT INTO stock_levels VALUES (?, 'W', 1, '2026-01-01 10:00:00')",
        [(f"S{i}",) for i in range(5, 10)],
    )
    config = source(tmp_path / "erp.db")
    reader = SqlReader(config, None)
    try:
        async with Outbox.open(tmp_path / "outbox.db") as outbox:
            poller = FeedPoller(config, config.entities[0], reader, outbox)
            assert (await poller.poll()).enqueued == 5  # the first load is a sweep
            # The tick is closed: a head read continues strictly after (tick, S9/W) ...
            assert (await poller.poll()).rows == 0
            # ... so a transaction that stamped this tick and commits only now is not
            # seen by head reads (its key sorts first), nor is a newer row missed:
            db.execute("INSERT INTO stock_levels VALUES ('S1', 'W', 7, '2026-01-01 10:00:00')")
            db.execute("INSERT INTO stock_levels VALUES ('S2', 'W', 8, '2026-01-01 10:00:01')")
            head = await poller.poll()
            assert (head.rows, head.enqueued) == (1, 1)
            make_sweep_due(poller)
            sweep = await poller.poll()
            assert sweep.enqueued == 1  # the late S1, re-read from cursor - lookback
            pending = await outbox.fetch_pending(0, 100)
    finally:
        await reader.close()
        db.close()
    assert sorted(e.subject for e in pending) == [
        "S1/W",
        "S2/W",
        *(f"S{i}/W" for i in range(5, 10)),
    ]


async def test_rows_re_read_unchanged_are_not_mapped_again_but_changes_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = sqlite3.connect(tmp_path / "erp.db", isolation_level=None)
    db.execute("CREATE TABLE stock_levels (sku TEXT, warehouse TEXT, on_hand REAL, tms TEXT)")
    db.executemany(
        "INSERT INTO stock_levels VALUES (?, 'W', 1, '2026-01-01 10:00:00')",
        [(f"S{i}",) for i in range(6)],
    )
    config = source(tmp_path / "erp.db")
    reader = SqlReader(config, None)
    mapped: list[str] = []
    try:
        async with Outbox.open(tmp_path / "outbox.db") as outbox:
            poller = FeedPoller(config, config.entities[0], reader, outbox)
            original = poller.mapper.upsert

            def counting(row: dict[str, object]) -> object:
                mapped.append(str(row["sku"]))
                return original(row)

            monkeypatch.setattr(poller.mapper, "upsert", counting)
            assert (await poller.poll()).enqueued == 6
            # Touched only (tms moves), and one real change, both inside the window:
            db.execute("UPDATE stock_levels SET tms = '2026-01-01 10:00:05' WHERE sku = 'S1'")
            db.execute("UPDATE stock_levels SET on_hand = 9 WHERE sku = 'S2'")
            mapped.clear()
            make_sweep_due(poller)
            sweep = await poller.poll()
            assert (sweep.rows, sweep.enqueued) == (6, 1)
            assert mapped == ["S2"]  # the five unchanged rows were never mapped again
            mapped.clear()
            make_sweep_due(poller)
            assert (await poller.poll()).enqueued == 0
            assert mapped == []
    finally:
        await reader.close()
        db.close()
