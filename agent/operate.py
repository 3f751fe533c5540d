"""Operator commands that act on the outbox file directly: ``outbox`` and ``resync``.

SQLite's WAL lets these run next to a live agent; their writes are short transactions
that wait (busy timeout) for the agent's.
"""

from __future__ import annotations

import sys

import orjson

from agent.config import Config
from agent.errors import EX_FAILURE, EX_OK, EX_USAGE
from agent.model import FeedId
from agent.outbox import Outbox


async def outbox_command(config: Config, action: str, dead_id: int | None, state: str,
                         limit: int) -> int:
    path = config.agent.state_dir / "outbox.db"
    if not path.exists():
        print(f"no outbox at {path} yet (has the agent run?)", file=sys.stderr)
        return EX_FAILURE
    async with Outbox.open(path, config.outbox.synchronous,
                           config.outbox.delivered_retention) as outbox:
        if action == "stats":
            stats = await outbox.stats()
            print(orjson.dumps(stats, option=orjson.OPT_INDENT_2).decode())
            return EX_OK
        if action == "list":
            return await _list(outbox, state, limit)
        if dead_id is None:
            print(f"outbox {action} needs the id of a dead letter", file=sys.stderr)
            return EX_USAGE
        act = outbox.retry_dead if action == "retry" else outbox.discard_dead
        if not await act(dead_id):
            print(f"no dead letter with id {dead_id}", file=sys.stderr)
            return EX_FAILURE
        print(f"dead letter {dead_id}: {action} done")
        return EX_OK


async def _list(outbox: Outbox, state: str, limit: int) -> int:
    if state == "pending":
        for event in await outbox.fetch_pending(0, limit):
            print(f"{event.sequence:>10}  {event.time}  {event.entity}.{event.op}  "
                  f"{event.subject}  {event.data.decode(errors='replace')[:80]}")
        return EX_OK
    for dead in await outbox.dead_letters(0, limit):
        print(f"{dead.id:>6}  {dead.kind:<8} {dead.source}/{dead.feed}  {dead.reason}")
        print(f"        {dead.payload.decode(errors='replace')[:200]}")
    return EX_OK


def _feeds_named(config: Config, name: str) -> list[FeedId]:
    source_name, _, feed_name = name.rpartition("/")
    return [
        FeedId(source.name, entity.feed, entity.entity)
        for source in config.sources
        for entity in source.entities
        if (not source_name or source.name == source_name)
        and feed_name in (entity.feed, entity.entity)
    ]


async def resync(config: Config, name: str) -> int:
    """Forget the cursor (hashes stay): the next poll re-reads the whole entity and
    publishes only the rows whose state differs from what was last enqueued."""
    feeds = _feeds_named(config, name)
    if not feeds:
        known = sorted({e.feed for s in config.sources for e in s.entities})
        print(f"no feed named {name!r}; known: {', '.join(known)}", file=sys.stderr)
        return EX_USAGE
    path = config.agent.state_dir / "outbox.db"
    async with Outbox.open(path, config.outbox.synchronous,
                           config.outbox.delivered_retention) as outbox:
        for feed in feeds:
            await outbox.forget_cursor(feed)
            print(f"{feed.source}/{feed.feed}: cursor cleared; the next poll re-reads it")
    return EX_OK
