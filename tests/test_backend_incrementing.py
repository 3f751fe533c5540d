"""Incrementing mode in process: the real poller, reader and outbox on each backend.

Sequences and ``AUTO_INCREMENT`` hand out ids when a row is written, not when it commits,
so a lower id can become visible after a higher one was read. Here the out-of-order
arrival is produced deterministically with explicit ids; the end-to-end test with a
really late transaction is in ``test_backends.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.config import SourceConfig
from agent.model import FeedId
from agent.outbox import Outbox
from agent.poller import FeedPoller
from agent.sources.cursor import decode_cursor
from agent.sources.sql import SqlReader
from tests.erp import ErpDb
from tests.test_backends import INVOICE_DDL

QUERY = "SELECT rowid, entity, ref AS number, total_ttc AS total FROM llx_facture"


def source_for(erp: ErpDb, lookback: str, page_size: int = 2) -> SourceConfig:
    return SourceConfig.model_validate(
        {
            "name": "dolibarr",
            "url": erp.url,
            "page_size": page_size,
            "entities": [
                {
                    "entity": "invoice",
                    "query": QUERY,
                    "key": ["entity", "number"],
                    "mode": "incrementing",
                    "cursor": "rowid",
                    "lookback": lookback,
                }
            ],
        }
    )


def insert(erp: ErpDb, *ids: int) -> None:
    for i in ids:
        erp.execute(
            "INSERT INTO llx_facture (rowid, ref, total_ttc) VALUES (?, ?, ?)",
            (i, f"FA-{i:03d}", f"{i}.10"),
        )


async def stored_cursor(outbox: Outbox, feed: FeedId) -> Any:
    text, _ = await outbox.feed_state(feed)
    return decode_cursor(text) if text is not None else None


async def numbers(outbox: Outbox) -> list[str]:
    return [orjson.loads(e.data)["number"] for e in await outbox.fetch_pending(0, 1000)]


@pytest.mark.parametrize("lookback", ["1h", "0s"])
async def test_an_id_that_appears_below_the_highest_read(
    erp: ErpDb, tmp_path: Path, lookback: str
) -> None:
    erp.execute(INVOICE_DDL[erp.backend])
    insert(erp, 1, 2, 3, 4, 5)
    source = source_for(erp, lookback)
    reader = SqlReader(source, None)
    try:
        async with Outbox.open(tmp_path / "outbox.db") as outbox:
            poller = FeedPoller(source, source.entities[0], reader, outbox)
            # the first load (pages of 2) settles at once
            assert (await poller.poll()).enqueued == 5
            assert await stored_cursor(outbox, poller.feed) == 5
            insert(erp, 8)
            assert (await poller.poll()).enqueued == 1
            insert(erp, 7)  # a lower id, visible only now (its transaction committed late)
            late = await poller.poll()
            for _ in range(3):  # later polls re-read inside the window and emit nothing
                assert (await poller.poll()).enqueued == 0
            got = await numbers(outbox)
            cursor = await stored_cursor(outbox, poller.feed)
    finally:
        await reader.close()

    if lookback == "0s":  # strict id > last: id 7 is below the cursor and never read
        assert (late.rows, late.enqueued) == (0, 0)
        assert got == ["FA-001", "FA-002", "FA-003", "FA-004", "FA-005", "FA-008"]
        assert cursor == 8
    else:  # 8 was read less than an hour ago: ids above 5 are still re-read
        assert (late.rows, late.enqueued) == (2, 1)
        assert got == ["FA-001", "FA-002", "FA-003", "FA-004", "FA-005", "FA-008", "FA-007"]
        assert cursor == 5


async def test_a_restart_rereads_the_window_and_sends_nothing_again(
    erp: ErpDb, tmp_path: Path
) -> None:
    erp.execute(INVOICE_DDL[erp.backend])
    insert(erp, 1, 2, 3)
    source = source_for(erp, "1h")
    for run, new_ids in enumerate([(), (4, 5, 6, 7, 8), (), (9,)]):
        insert(erp, *new_ids)
        reader = SqlReader(source, None)  # a fresh poller: nothing carried in memory
        try:
            async with Outbox.open(tmp_path / "outbox.db") as outbox:
                poller = FeedPoller(source, source.entities[0], reader, outbox)
                totals = await poller.poll()
                assert totals.enqueued == len(new_ids) + (3 if run == 0 else 0)
                assert await stored_cursor(outbox, poller.feed) == 3  # held by the window
                got = await numbers(outbox)
        finally:
            await reader.close()
    assert got == [f"FA-{i:03d}" for i in range(1, 10)]


async def test_the_window_settles_once_the_lookback_has_passed(erp: ErpDb, tmp_path: Path) -> None:
    erp.execute(INVOICE_DDL[erp.backend])
    insert(erp, 1)
    source = source_for(erp, "250ms")
    reader = SqlReader(source, None)
    try:
        async with Outbox.open(tmp_path / "outbox.db") as outbox:
            poller = FeedPoller(source, source.entities[0], reader, outbox)
            await poller.poll()
            insert(erp, 2, 3, 4)
            await poller.poll()
            assert await stored_cursor(outbox, poller.feed) == 1
            # wait (for a condition, not a duration under test) until a poll settles it
            for _ in range(400):
                totals = await poller.poll()
                assert totals.enqueued == 0
                if await stored_cursor(outbox, poller.feed) == 4:
                    break
                await asyncio.sleep(0.05)
            assert await stored_cursor(outbox, poller.feed) == 4
            assert (await poller.poll()).rows == 0  # settled: nothing is re-read any more
            assert len(await numbers(outbox)) == 4
    finally:
        await reader.close()
