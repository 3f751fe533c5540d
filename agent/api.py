"""The status API (aiohttp): the only way the TUI and scripts see the agent.

Endpoints: ``GET /v1/health``, ``GET /v1/status``, ``GET /v1/metrics`` (Prometheus text),
``GET /v1/stream`` (newline-delimited JSON updates, see :func:`stream`),
``GET /v1/outbox?state=pending|dead`` (paged with ``after`` and ``limit``),
``POST /v1/outbox/{id}/retry|discard`` (dead letters),
``GET /v1/inbox?state=held|pending|written|failed|dead|stale`` (paged the same way),
``POST /v1/inbox/{id}/retry|discard`` and ``POST /v1/sources/{name}/pause|resume|resync``.
Errors are JSON: ``{"error": "..."}``.

It is always served on the unix socket ``[api] socket``, created with mode 0660 so the
agent's group can read it and file permissions are the access control. ``[api] listen``
adds a loopback TCP listener, where every request must carry the bearer token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from agent import __version__, metrics
from agent.config import ApiSection, read_secret
from agent.delivery import SequenceCheck, TailEntry
from agent.errors import ApiError, ConfigError, OutboxError
from agent.inbox import STATES, InboxItem, InboxStats
from agent.outbox import OutboxStats, WriteHealth
from agent.status import (
    AgentInfo,
    AgentStatus,
    FeedStatus,
    InboxStatus,
    OutboxStatus,
    RelayStatus,
    SequenceMoved,
    SequenceStatus,
    SourceStatus,
    WriteError,
)
from common.unix_socket import claimed_socket

if TYPE_CHECKING:
    from agent.runners import SourceRunner
    from agent.service import Agent

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_PAGE = 1000
RELAY_GRACE = 300.0  # seconds a relay may be reconnecting before the agent is unhealthy
OUTBOX_STATS_TTL = 1.0  # counting a large backlog costs; streams share one count a second
# (the outbox's and the inbox's, taken together)
RATE_WINDOW = 10.0  # seconds the delivered-per-second rate is averaged over
STREAM_TICK = 0.25  # at most 4 updates a second
STREAM_HEARTBEAT = 2.0  # and at least one every 2 s, so clients can tell a dead agent
TAIL_ON_CONNECT = 100


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as error:
        return _error(error.status, error.reason or "error")
    except OutboxError as error:  # a full or failing disk: the request may work later
        return _error(503, str(error))


class StatusBoard:
    """Builds ``/v1/status`` snapshots; the outbox and inbox counts are shared for a second."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._counts: tuple[OutboxStats, InboxStats] | None = None
        self._counts_at = 0.0
        self._published: deque[tuple[float, int]] = deque()

    async def _shared_counts(self, fresh: bool) -> tuple[OutboxStats, InboxStats]:
        now = time.monotonic()
        if fresh or self._counts is None or now - self._counts_at > OUTBOX_STATS_TTL:
            outbox = await self.agent.outbox.stats()
            self._counts, self._counts_at = (outbox, await self.agent.inbox.stats()), now
        return self._counts

    def _delivery_rate(self) -> float:
        now, published = time.monotonic(), self.agent.delivery.stats.published
        samples = self._published
        samples.append((now, published))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
        first_at, first = samples[0]
        return round((published - first) / (now - first_at), 1) if now > first_at else 0.0

    def health(self) -> dict[str, Any]:
        relay = self.agent.delivery.stats
        down_for = time.time() - relay.since
        healthy = relay.state == "connected" or (
            relay.state in ("connecting", "disconnected") and down_for < RELAY_GRACE
        )
        # An outbox that cannot be written captures nothing: unhealthy at once, no grace.
        write_error = self.agent.outbox.write_health.error
        return {
            "healthy": healthy and write_error is None,
            "relay": relay.state,
            "relay_since": relay.since,
            "outbox_write_error": write_error,
        }

    async def status(self, *, fresh: bool = False) -> AgentStatus:
        """The snapshot; ``fresh`` counts the outbox and inbox now rather than sharing the
        count."""
        agent, (stats, inbox) = self.agent, await self._shared_counts(fresh)
        relay = agent.delivery.stats
        return AgentStatus(
            agent=AgentInfo(
                id=agent.config.agent.id,
                tenant=agent.config.agent.tenant,
                version=__version__,
                started_at=agent.started_at,
                uptime_seconds=round(time.monotonic() - agent.started_monotonic, 1),
            ),
            relay=RelayStatus(
                url=agent.config.relay.url,
                state=relay.state,
                since=relay.since,
                reconnects=relay.reconnects,
                published=relay.published,
                refused=relay.nacked,
                in_flight=relay.in_flight,
                last_publish=relay.last_publish,
                last_error=relay.last_error,
                published_by_entity=dict(relay.published_by_entity),
                failures=dict(relay.failures),
            ),
            sources=tuple(_source_status(runner) for runner in agent.runners),
            outbox=OutboxStatus(
                pending=stats.pending,
                in_flight=relay.in_flight,
                delivered_per_second=self._delivery_rate(),
                oldest_pending_time=stats.oldest_pending_time,
                oldest_pending_age_seconds=_age(stats.oldest_pending_time),
                dead_letters=stats.dead_letters,
                delivered_kept=stats.delivered,
                # The count may be a second old; what settled since is newer.
                last_sequence=max(
                    stats.last_sequence, relay.tail[-1].sequence if relay.tail else 0
                ),
                write_error=_write_error(agent.outbox.write_health),
                write_errors=agent.outbox.write_health.failures,
            ),
            sequence=_sequence_status(relay.sequence),
            inbox=inbox_status(inbox, relay.received),
        )

    async def snapshot(self) -> dict[str, Any]:
        """``/v1/status``'s body: :meth:`status` as JSON values."""
        return (await self.status()).to_json()


def inbox_status(stats: InboxStats, received: int = 0) -> InboxStatus:
    """``/v1/status``'s ``inbox`` (also what ``distillsync inbox stats`` prints); ``received``
    is the running agent's count of messages received on ``in/#``."""
    age = stats.oldest_pending_age
    return InboxStatus(
        held=stats.held,
        pending=stats.pending,
        written=stats.written,
        failed=stats.failed,
        dead=stats.dead,
        stale=stats.stale,
        duplicates=stats.duplicates,
        oldest_pending_age_seconds=None if age is None else round(age, 1),
        received=received,
    )


def inbox_item(item: InboxItem) -> dict[str, Any]:
    """One item of ``GET /v1/inbox``: the row, and the message as received (``payload``,
    text: a dead item's may not be JSON)."""
    return {
        "id": item.id,
        "event_id": item.event_id,
        "state": item.state,
        "reason": item.reason,
        "entity": item.entity,
        "op": item.op,
        "subject": item.subject,
        "source": item.source,
        "topic": item.topic,
        "version": item.version,
        "sequence": item.sequence,
        "payment_status": item.payment_status,
        "attempts": item.attempts,
        "next_attempt_at": item.next_attempt_at,
        "erp_ref": item.erp_ref,
        "duplicates": item.duplicates,
        "received_at": item.received_at,
        "changed_at": item.changed_at,
        "payload": item.envelope.decode("utf-8", "replace"),
    }


def _sequence_status(check: SequenceCheck) -> SequenceStatus:
    move = check.moved
    moved = (
        None
        if move is None
        else SequenceMoved(
            from_=move.last_before, above=move.floor, renumbered=move.renumbered, at=check.moved_at
        )
    )
    return SequenceStatus(
        check=check.state,
        checked_at=check.checked_at,
        relay_watermark=check.relay_watermark,
        unread_reason=check.unread_reason,
        watermark_published=check.published,
        watermark_error=check.watermark_error,
        moved=moved,
    )


def _write_error(health: WriteHealth) -> WriteError | None:
    if health.error is None:
        return None
    return WriteError(message=health.error, since=health.since or 0.0)  # stamped with it


def _source_status(runner: SourceRunner) -> SourceStatus:
    return SourceStatus(
        name=runner.config.name,
        paused=runner.paused,
        feeds=tuple(
            FeedStatus(
                feed=p.feed.feed,
                entity=p.feed.entity,
                mode=p.stats.mode,
                last_poll_start=p.stats.last_poll_start,
                last_poll_end=p.stats.last_poll_end,
                last_success=p.stats.last_success,
                rows_read=p.stats.rows_read,
                changes_emitted=p.stats.changes_emitted,
                dead_letters=p.stats.dead_letters,
                errors=p.stats.errors,
                last_error=p.stats.last_error,
            )
            for p in runner.pollers
        ),
    )


def _age(rfc3339: str | None) -> float | None:
    if rfc3339 is None:
        return None
    return round(max(0.0, time.time() - datetime.fromisoformat(rfc3339).timestamp()), 1)


def _tail_item(entry: TailEntry) -> dict[str, Any]:
    return {
        "sequence": entry.sequence,
        "id": entry.event_id,
        "entity": entry.entity,
        "op": entry.op,
        "subject": entry.subject,
        "outcome": entry.outcome,
        "reason": entry.reason,
        "at": entry.at,
    }


async def _tick(stop: asyncio.Event) -> None:
    """The wait between two looks of a stream: ``STREAM_TICK``, or less if the agent stops."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), STREAM_TICK)


async def stream(
    board: StatusBoard,
    request: web.Request,
    *,
    clock: Callable[[], float] = time.monotonic,
    tick: Callable[[asyncio.Event], Awaitable[None]] = _tick,
) -> web.StreamResponse:
    """``/v1/stream``: one JSON object per line, ``{"status", "health", "events"}``.

    The first update carries the last ``TAIL_ON_CONNECT`` settled publishes, later ones
    only what settled since. The stream looks once per ``tick`` and sends at most one
    update per look: when something changed, or when ``STREAM_HEARTBEAT`` has passed on
    ``clock`` since the last one. So at most one update every ``STREAM_TICK`` and at least
    one every ``STREAM_HEARTBEAT``; the stream ends with the agent. Tests drive ``clock``
    and ``tick``.
    """
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    relay, agent = board.agent.delivery.stats, board.agent
    seen, last_sent, last_body = max(0, relay.tail_total - TAIL_ON_CONNECT), 0.0, b""
    with contextlib.suppress(ConnectionError):
        while not agent.stop.is_set():
            events = relay.new_tail(seen)
            seen = relay.tail_total
            status = await board.snapshot()
            body = orjson.dumps({k: v for k, v in status.items() if k != "agent"})
            now = clock()
            if events or body != last_body or now - last_sent >= STREAM_HEARTBEAT:
                update = {
                    "status": status,
                    "health": board.health(),
                    "events": [_tail_item(e) for e in events],
                }
                await response.write(orjson.dumps(update) + b"\n")
                last_sent, last_body = now, body
            await tick(agent.stop)
    return response


def bearer_auth(token: str) -> Middleware:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return _error(401, "a bearer token is required (Authorization: Bearer ...)")
        return await handler(request)

    return check


def build_app(agent: Agent, board: StatusBoard, token: str | None = None) -> web.Application:
    middlewares: list[Middleware] = [json_errors]
    if token is not None:
        middlewares.append(bearer_auth(token))
    app = web.Application(middlewares=middlewares)
    routes = web.RouteTableDef()

    @routes.get("/v1/health")
    async def health(_: web.Request) -> web.Response:
        body = board.health()
        return _json(body, 200 if body["healthy"] else 503)

    @routes.get("/v1/status")
    async def status(_: web.Request) -> web.Response:
        return _json(await board.snapshot())

    @routes.get("/v1/metrics")
    async def metrics_text(_: web.Request) -> web.Response:
        return web.Response(
            body=metrics.render(await board.status()),
            headers={"Content-Type": metrics.CONTENT_TYPE},
        )

    @routes.get("/v1/stream")
    async def live(request: web.Request) -> web.StreamResponse:
        return await stream(board, request)

    @routes.get("/v1/outbox")
    async def outbox(request: web.Request) -> web.Response:
        state = request.query.get("state", "pending")
        items: list[dict[str, Any]]
        try:
            after = int(request.query.get("after", "0"))
            limit = min(int(request.query.get("limit", "100")), MAX_PAGE)
        except ValueError:
            return _error(400, "after and limit are whole numbers")
        if state == "pending":
            events = await agent.outbox.pending_page(after, limit)
            items = [
                {
                    "sequence": e.sequence,
                    "id": e.event_id,
                    "entity": e.entity,
                    "op": e.op,
                    "subject": e.subject,
                    "time": e.time,
                    "data": orjson.Fragment(e.data),
                }
                for e in events
            ]
        elif state == "dead":
            dead = await agent.outbox.dead_letters(after, limit)
            items = [
                {
                    "id": d.id,
                    "kind": d.kind,
                    "source": d.source,
                    "feed": d.feed,
                    "entity": d.entity,
                    "subject": d.subject,
                    "reason": d.reason,
                    "payload": d.payload.decode("utf-8", "replace"),
                    "event_sequence": d.event_seq,
                    "created_at": d.created_at,
                }
                for d in dead
            ]
        else:
            return _error(400, "state is pending or dead")
        return _json({"state": state, "items": items})

    @routes.post(r"/v1/outbox/{id:\d+}/{action:retry|discard}")
    async def act_on_dead(request: web.Request) -> web.Response:
        dead_id, action = int(request.match_info["id"]), request.match_info["action"]
        act = agent.outbox.retry_dead if action == "retry" else agent.outbox.discard_dead
        if not await act(dead_id):
            return _error(404, f"no dead letter with id {dead_id}")
        return _json({"id": dead_id, "done": action})

    @routes.get("/v1/inbox")
    async def inbox(request: web.Request) -> web.Response:
        state = request.query.get("state") or None
        try:
            after = int(request.query.get("after", "0"))
            limit = min(int(request.query.get("limit", "100")), MAX_PAGE)
        except ValueError:
            return _error(400, "after and limit are whole numbers")
        if state is not None and state not in STATES:
            return _error(400, f"state is one of {', '.join(STATES)}, or none for all")
        items = await agent.inbox.items(state, after, limit)
        return _json({"state": state, "items": [inbox_item(item) for item in items]})

    @routes.post(r"/v1/inbox/{id:\d+}/{action:retry|discard}")
    async def act_on_inbox(request: web.Request) -> web.Response:
        item_id, action = int(request.match_info["id"]), request.match_info["action"]
        act = agent.inbox.retry if action == "retry" else agent.inbox.discard
        done = await act(item_id)
        item = await agent.inbox.get(item_id)
        if not done and item is None:
            return _error(404, f"no inbox item with id {item_id}")
        if not done:
            assert item is not None
            why = f": {item.reason}" if item.reason else ""
            return _error(409, f"inbox item {item_id} is {item.state}{why}; {action} not done")
        return _json({"id": item_id, "done": action, "state": item.state if item else None})

    @routes.post(r"/v1/sources/{name}/{action:pause|resume|resync}")
    async def act_on_source(request: web.Request) -> web.Response:
        name, action = request.match_info["name"], request.match_info["action"]
        runner = next((r for r in agent.runners if r.config.name == name), None)
        if runner is None:
            return _error(404, f"no source named {name!r}")
        if action == "resync":
            for poller in runner.pollers:
                await agent.outbox.forget_cursor(poller.feed)
        else:
            runner.paused = action == "pause"
        agent.delivery.announce_now.set()
        return _json({"source": name, "done": action, "paused": runner.paused})

    app.add_routes(routes)
    return app


@contextlib.asynccontextmanager
async def serve(agent: Agent, api: ApiSection) -> AsyncIterator[None]:
    """Serve the API on ``api.socket`` (mode 0660), and on ``api.listen`` with the bearer
    token when configured, for as long as the context is open. A socket another live
    process serves (a second agent given the same path) is an :class:`ApiError`, and left
    alone; a stale one (an agent SIGKILLed) is replaced."""
    board = StatusBoard(agent)
    runners: list[web.AppRunner] = []
    busy = ApiError(
        f"another process serves api.socket {api.socket}; stop it, or give "
        "this agent another [api] socket"
    )
    with claimed_socket(api.socket, busy):
        try:
            await _start(runners, agent, board, api)
            yield
        finally:
            for runner in runners:
                await runner.cleanup()


async def _start(
    runners: list[web.AppRunner], agent: Agent, board: StatusBoard, api: ApiSection
) -> None:
    runners.append(web.AppRunner(build_app(agent, board), access_log=None, shutdown_timeout=1.0))
    await runners[0].setup()
    old_umask = os.umask(0o117)
    try:
        await web.UnixSite(runners[0], str(api.socket)).start()
    finally:
        os.umask(old_umask)
    if api.tcp_address is not None:
        token = read_secret(api.token_file, api.token_env, "api.token", api.token_credential)
        if not token:
            raise ConfigError(["api.token: the bearer token is empty"])
        runners.append(
            web.AppRunner(build_app(agent, board, token), access_log=None, shutdown_timeout=1.0)
        )
        await runners[1].setup()
        await web.TCPSite(runners[1], *api.tcp_address).start()
