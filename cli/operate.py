"""Operator commands: ``outbox``, ``inbox`` and ``resync``.

``outbox`` and ``inbox`` go through the status API when the agent runs (so its counters and the
TUI see the action at once) and falls back to the outbox file when it does not. SQLite's
WAL lets the file path run next to a live agent too; its writes are short transactions
that wait (busy timeout) for the agent's. ``outbox backup`` only reads the file, through
a read-only connection of its own (the stdlib's, as it runs outside the event loop).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from agent.apiclient import ApiClient
from agent.config import Config
from agent.errors import EX_FAILURE, EX_OK, EX_USAGE
from agent.inbox import Inbox, InboxState
from agent.model import FeedId
from agent.outbox import PENDING, Outbox


async def outbox_command(
    config: Config, action: str, dead_id: int | None, state: str, limit: int
) -> int:
    if action in ("retry", "discard") and dead_id is None:
        print(f"outbox {action} needs the id of a dead letter", file=sys.stderr)
        return EX_USAGE
    try:
        return await _through_api(ApiClient(config.api.socket), action, dead_id, state, limit)
    except OSError:
        pass  # the agent is not running: work on the file
    path = _outbox_file(config)
    if path is None:
        return EX_FAILURE
    async with Outbox.open(
        path, config.outbox.synchronous, config.outbox.delivered_retention
    ) as outbox:
        if action == "stats":
            return _print_json(await outbox.stats())
        if action == "list":
            return await _list(outbox, state, limit)
        assert dead_id is not None
        act = outbox.retry_dead if action == "retry" else outbox.discard_dead
        return _acted(action, dead_id, await act(dead_id))


def _outbox_file(config: Config) -> Path | None:
    """The outbox file, or ``None`` (said on stderr) when there is none yet."""
    path = config.agent.state_dir / "outbox.db"
    if not path.exists():
        print(f"no outbox at {path} yet (has the agent run?)", file=sys.stderr)
        return None
    return path


async def _through_api(
    client: ApiClient, action: str, dead_id: int | None, state: str, limit: int
) -> int:
    if action == "stats":
        _, status = await client.get("/v1/status")
        return _print_json(status["outbox"])
    if action == "list":
        _, page = await client.get(f"/v1/outbox?state={state}&limit={limit}")
        for item in page["items"]:
            if state == "pending":
                _print_pending(
                    item["sequence"],
                    item["time"],
                    item["entity"],
                    item["op"],
                    item["subject"],
                    orjson.dumps(item["data"]).decode(),
                )
            else:
                _print_dead(
                    item["id"],
                    item["kind"],
                    f"{item['source']}/{item['feed']}",
                    item["reason"],
                    item["payload"],
                )
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


def _print_pending(sequence: int, time: str, entity: str, op: str, subject: str, data: str) -> None:
    print(f"{sequence:>10}  {time}  {entity}.{op}  {subject}  {data[:80]}")


def _print_dead(dead_id: int, kind: str, feed: str, reason: str, payload: str) -> None:
    print(f"{dead_id:>6}  {kind:<8} {feed}  {reason}")
    print(f"        {payload[:200]}")


async def _list(outbox: Outbox, state: str, limit: int) -> int:
    if state == "pending":
        for event in await outbox.fetch_pending(0, limit):
            _print_pending(
                event.sequence,
                event.time,
                event.entity,
                event.op,
                event.subject,
                event.data.decode(errors="replace"),
            )
        return EX_OK
    for dead in await outbox.dead_letters(0, limit):
        _print_dead(
            dead.id,
            dead.kind,
            f"{dead.source}/{dead.feed}",
            dead.reason,
            dead.payload.decode(errors="replace"),
        )
    return EX_OK


async def inbox_command(
    config: Config, action: str, item_id: int | None, state: InboxState | None, limit: int
) -> int:
    """``inbox list|retry|discard|stats``: through the API when the agent runs, else on the
    file (a retry there judges the item with this config's ``[master]`` and ``[inbox]``)."""
    if action in ("retry", "discard") and item_id is None:
        print(f"inbox {action} needs the id of an inbox item", file=sys.stderr)
        return EX_USAGE
    try:
        return await _inbox_through_api(ApiClient(config.api.socket), action, item_id, state, limit)
    except OSError:
        pass  # the agent is not running: work on the file
    path = _outbox_file(config)
    if path is None:
        return EX_FAILURE
    from agent.api import inbox_item, inbox_status  # the same shapes as the API's

    async with Outbox.open(
        path, config.outbox.synchronous, config.outbox.delivered_retention
    ) as outbox:
        inbox = Inbox(outbox, config.master, config.inbox.import_when)
        if action == "stats":
            return _print_json(dataclasses.asdict(inbox_status(await inbox.stats())))
        if action == "list":
            for listed in await inbox.items(state, 0, limit):
                _print_inbox_item(inbox_item(listed))
            return EX_OK
        assert item_id is not None
        done = await (inbox.retry if action == "retry" else inbox.discard)(item_id)
        item = await inbox.get(item_id)
        if done:
            return _inbox_acted(action, item_id, item.state if item else None)
        if item is None:
            return _inbox_refused(f"no inbox item with id {item_id}")
        why = f": {item.reason}" if item.reason else ""
        return _inbox_refused(f"inbox item {item_id} is {item.state}{why}; {action} not done")


async def _inbox_through_api(
    client: ApiClient, action: str, item_id: int | None, state: InboxState | None, limit: int
) -> int:
    if action == "stats":
        _, status = await client.get("/v1/status")
        return _print_json(status["inbox"])
    if action == "list":
        query = f"state={state}&" if state else ""
        _, page = await client.get(f"/v1/inbox?{query}limit={limit}")
        for item in page["items"]:
            _print_inbox_item(item)
        return EX_OK
    code, body = await client.post(f"/v1/inbox/{item_id}/{action}")
    if code != 200:
        return _inbox_refused(str(body.get("error")))
    return _inbox_acted(action, item_id, body.get("state"))


def _print_inbox_item(item: dict[str, object]) -> None:
    what = f"{item['entity'] or '?'}.{item['op'] or '?'}"
    reason = f"  {item['reason']}" if item["reason"] else ""
    print(f"{item['id']:>6}  {item['state']:<8} {what}  {item['subject'] or '-'}{reason}")
    print(f"        {str(item['payload'])[:200]}")


def _inbox_acted(action: str, item_id: int | None, state: object) -> int:
    print(f"inbox item {item_id}: {action} done" + (f", now {state}" if state else ""))
    return EX_OK


def _inbox_refused(message: str) -> int:
    print(message, file=sys.stderr)
    return EX_FAILURE


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
    async with Outbox.open(
        path, config.outbox.synchronous, config.outbox.delivered_retention
    ) as outbox:
        for feed in feeds:
            await outbox.forget_cursor(feed)
            print(f"{feed.source}/{feed.feed}: cursor cleared; the next poll re-reads it")
    return EX_OK


# Pages copied per backup step, between progress reports: 16 MiB with SQLite's 4 KiB pages.
BACKUP_STEP_PAGES = 4096


class BackupError(Exception):
    """The copy was made but is not sound; it was not put in place."""


@dataclass(frozen=True, slots=True)
class BackupResult:
    size: int
    pending: int
    last_sequence: int
    seconds: float


def backup(
    config: Config, dest: Path, force: bool = False, step_pages: int = BACKUP_STEP_PAGES
) -> int:
    """``outbox backup``: a consistent copy of the outbox, safe next to a running agent."""
    source = config.agent.state_dir / "outbox.db"
    problem = _backup_problem(source, dest, force)
    if problem:
        print(problem, file=sys.stderr)
        return EX_FAILURE
    try:
        result = copy_outbox(source, dest, force, step_pages)
    except FileExistsError:
        print(
            f"{dest} appeared during the backup; it was left alone (--force overwrites it)",
            file=sys.stderr,
        )
        return EX_FAILURE
    except (OSError, sqlite3.Error, BackupError) as error:
        print(f"backup of {source} failed, {dest} was not written: {error}", file=sys.stderr)
        return EX_FAILURE
    print(
        f"backed up {source} to {dest}: {result.size / 2**20:.1f} MiB "
        f"({result.size:,} bytes), {result.pending:,} events pending, last sequence "
        f"{result.last_sequence}, integrity ok, in {result.seconds:.2f}s"
    )
    return EX_OK


def _backup_problem(source: Path, dest: Path, force: bool) -> str | None:
    if not source.exists():
        return f"no outbox at {source} yet (has the agent run?)"
    if dest.is_dir():
        return f"{dest} is a directory; name the backup file, e.g. {dest / 'outbox.db'}"
    if not dest.parent.is_dir():
        return f"{dest.parent} does not exist; create it first"
    if dest.exists() and dest.resolve() == source.resolve():
        return f"{dest} is the outbox itself; back it up somewhere else"
    if dest.exists() and not force:
        return f"{dest} already exists; choose another name, or --force to overwrite it"
    return None


Progress = Callable[[int, int, int], object]
"""``sqlite3.Connection.backup``'s callback: (status, pages remaining, pages in all)."""


def copy_outbox(
    source: Path,
    dest: Path,
    force: bool,
    step_pages: int = BACKUP_STEP_PAGES,
    progress: Progress | None = None,
) -> BackupResult:
    """Copy into a temporary file beside ``dest``, check it, flush it, then put it in place:
    ``dest`` is either absent or a whole, checked backup, whatever happens meanwhile."""
    started = time.monotonic()
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)  # mode 0600: the outbox holds the company's data
    temporary = Path(name)
    try:
        _snapshot(source, temporary, step_pages, progress or _Progress())
        pending, last_sequence = _check_copy(temporary)
        _fsync(temporary)
        _put_in_place(temporary, dest, force)
        _fsync(dest.parent)
    finally:
        temporary.unlink(missing_ok=True)
    return BackupResult(dest.stat().st_size, pending, last_sequence, time.monotonic() - started)


def _snapshot(source: Path, target: Path, step_pages: int, progress: Progress) -> None:
    with (
        contextlib.closing(
            sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30, isolation_level=None)
        ) as src,
        contextlib.closing(sqlite3.connect(target, isolation_level=None)) as dst,
    ):
        # One read transaction across every step: the copy is the snapshot it sees, while
        # the agent goes on committing to the WAL. Without it each step would see the
        # newest commit, and SQLite restarts a backup whose source changed: against a
        # busy agent, for ever.
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master")
        try:
            src.backup(dst, pages=step_pages, progress=progress)
        finally:
            src.execute("ROLLBACK")
        # The copy inherits the WAL flag; a rollback-journal file is self-contained
        # (nothing to copy beside it). The agent turns WAL back on when it opens it.
        dst.execute("PRAGMA journal_mode=DELETE")


class _Progress:
    """Prints a line on stderr at each further tenth of a copy that takes several steps."""

    def __init__(self) -> None:
        self.shown = 0

    def __call__(self, _status: int, remaining: int, total: int) -> None:
        done = 100 * (total - remaining) // max(total, 1)
        if remaining and done >= self.shown + 10:
            self.shown = done - done % 10
            print(f"  {done}% ({total - remaining:,} of {total:,} pages)", file=sys.stderr)


def _check_copy(path: Path) -> tuple[int, int]:
    """``integrity_check`` on the copy, then what it holds: pending events, last sequence."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        problems = [row[0] for row in db.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise BackupError("integrity_check on the copy: " + "; ".join(problems[:5]))
        pending = db.execute("SELECT count(*) FROM events WHERE state = ?", (PENDING,)).fetchone()[
            0
        ]
        last = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return int(pending), int(last[0]) if last else 0


def _put_in_place(temporary: Path, dest: Path, force: bool) -> None:
    if force:
        temporary.replace(dest)
        return
    try:
        # A link never replaces: a DEST created since the first check is left alone.
        dest.hardlink_to(temporary)
    except FileExistsError:
        raise
    except OSError:
        # No hard links on this file system (FAT, some network shares): check, then rename.
        if dest.exists():
            raise FileExistsError(dest) from None
        temporary.replace(dest)


def _fsync(path: Path) -> None:
    """Flush a file, or a directory's entries (so a rename survives power loss)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
