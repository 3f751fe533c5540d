"""Operator commands: ``outbox`` and ``resync``.

``outbox`` goes through the status API when the agent runs (so its counters and the
TUI see the action at once) and falls back to the outbox file when it does not. SQLite's
WAL lets the file path run next to a live agent too; its writes are short transactions
that wait (busy timeout) for the agent's.
"""

from __future__ import annotations

import sys

import orjson

from agent.apiclient import ApiClient
from agent.config import Config
from agent.errors import EX_FAILURE, EX_OK, EX_USAGE
from agent.model import FeedId
from agent.outbox import Outbox


async def outbox_command(config: Config, action: str, dead_id: int | None, state: str,
                         limit: int) -> int:
    if action in ("retry", "discard") and dead_id is None:
        print(f"outbox {action} needs the id of a dead letter", file=sys.stderr)
        return EX_USAGE
    try:
        return await _through_api(ApiClient(config.api.socket), action, dead_id, state, limit)
    except OSError:
        pass  # the agent is not running: work on the file
    path = config.agent.state_dir / "outbox.db"
    if not path.exists():
        print(f"no outbox at {path} yet (has the agent run?)", file=sys.stderr)
        return EX_FAILURE
    async with Outbox.open(path, config.outbox.synchronous,
                           config.outbox.delivered_retention) as outbox:
        if action == "stats":
            return _print_json(await outbox.stats())
        if action == "list":
            return await _list(outbox, state, limit)
        assert dead_id is not None
        act = outbox.retry_dead if action == "retry" else outbox.discard_dead
        return _acted(action, dead_id, await act(dead_id))


async def _through_api(client: ApiClient, action: str, dead_id: int | None, state: str,
                       limit: int) -> int:
    if action == "stats":
        _, status = await client.get("/v1/status")
        return _print_json(status["outbox"])
    if action == "list":
        _, page = await client.get(f"/v1/outbox?state={state}&limit={limit}")
        for item in page["items"]:
            if state == "pending":
                _print_pending(item["sequence"], item["time"], item["entity"], item["op"],
                               item["subject"], orjson.dumps(item["data"]).decode())
            else:
                _print_dead(item["id"], item["kind"], f"{item['source']}/{item['feed']}",
                            item["reason"], item["payload"])
        return EX_OK
    code, _ = await client.post(f"/v1/outbox/{dead_id}/{action}")
    return _acted(action, dead_id, code == 200)


def _print_json(value: object) -> int:
    print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())
    return EX_OK


def _acted(action: str, dead_id: int | None, done: bool) -> int:
    if not done:
        print(f"no dead letter with id {dead_id}", file=sys.stderr)
        return EX_FAILURE
    print(f"dead letter {dead_id}: {action} done")
    return EX_OK


def _print_pending(sequence: int, time: str, entity: str, op: str, subject: str,
                   data: str) -> None:
    print(f"{sequence:>10}  {time}  {entity}.{op}  {subject}  {data[:80]}")


def _print_dead(dead_id: int, kind: str, feed: str, reason: str, payload: str) -> None:
    print(f"{dead_id:>6}  {kind:<8} {feed}  {reason}")
    print(f"        {payload[:200]}")


async def _list(outbox: Outbox, state: str, limit: int) -> int:
    if state == "pending":
        for event in await outbox.fetch_pending(0, limit):
            _print_pending(event.sequence, event.time, event.entity, event.op, event.subject,
                           event.data.decode(errors="replace"))
        return EX_OK
    for dead in await outbox.dead_letters(0, limit):
        _print_dead(dead.id, dead.kind, f"{dead.source}/{dead.feed}", dead.reason,
                    dead.payload.decode(errors="replace"))
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
