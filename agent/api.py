"""The status API (aiohttp, on a unix socket): the only way the TUI and scripts see the agent.

Endpoints so far: ``GET /v1/health``, ``GET /v1/status``, ``GET /v1/outbox?state=pending|dead``
(paged with ``after`` and ``limit``), ``POST /v1/outbox/{id}/retry|discard`` (dead letters),
``POST /v1/sources/{name}/pause|resume|resync``. Errors are JSON: ``{"error": "..."}``.
The socket is created with mode 0660, so the agent's group can read it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from agent import __version__

if TYPE_CHECKING:
    from agent.service import Agent

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_PAGE = 1000
RELAY_GRACE = 300.0  # seconds a relay may be reconnecting before the agent is unhealthy


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


async def status_of(agent: Agent) -> dict[str, Any]:
    stats = await agent.outbox.stats()
    relay = agent.delivery.stats
    return {
        "agent": {"id": agent.config.agent.id, "tenant": agent.config.agent.tenant,
                  "version": __version__, "started_at": agent.started_at,
                  "uptime_seconds": round(time.monotonic() - agent.started_monotonic, 1)},
        "relay": {"url": agent.config.relay.url, "state": relay.state, "since": relay.since,
                  "reconnects": relay.reconnects, "published": relay.published,
                  "refused": relay.nacked, "in_flight": relay.in_flight,
                  "last_publish": relay.last_publish, "last_error": relay.last_error},
        "sources": [
            {"name": runner.config.name, "paused": runner.paused,
             "feeds": [{"feed": p.feed.feed, "entity": p.feed.entity, "mode": p.stats.mode,
                        "last_poll_start": p.stats.last_poll_start,
                        "last_poll_end": p.stats.last_poll_end,
                        "last_success": p.stats.last_success, "rows_read": p.stats.rows_read,
                        "changes_emitted": p.stats.changes_emitted,
                        "dead_letters": p.stats.dead_letters, "errors": p.stats.errors,
                        "last_error": p.stats.last_error} for p in runner.pollers]}
            for runner in agent.runners
        ],
        "outbox": {"pending": stats.pending, "delivered_kept": stats.delivered,
                   "dead_letters": stats.dead_letters,
                   "oldest_pending_time": stats.oldest_pending_time,
                   "last_sequence": stats.last_sequence},
    }


def build_app(agent: Agent) -> web.Application:
    app = web.Application(middlewares=[json_errors])
    routes = web.RouteTableDef()

    @routes.get("/v1/health")
    async def health(_: web.Request) -> web.Response:
        relay = agent.delivery.stats
        down_for = time.time() - relay.since
        healthy = relay.state == "connected" or (
            relay.state in ("connecting", "disconnected") and down_for < RELAY_GRACE)
        return _json({"healthy": healthy, "relay": relay.state,
                      "relay_since": relay.since}, 200 if healthy else 503)

    @routes.get("/v1/status")
    async def status(_: web.Request) -> web.Response:
        return _json(await status_of(agent))

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
            events = await agent.outbox.fetch_pending(after, limit)
            items = [{"sequence": e.sequence, "id": e.event_id, "entity": e.entity,
                      "op": e.op, "subject": e.subject, "time": e.time,
                      "data": orjson.Fragment(e.data)} for e in events]
        elif state == "dead":
            dead = await agent.outbox.dead_letters(after, limit)
            items = [{"id": d.id, "kind": d.kind, "source": d.source, "feed": d.feed,
                      "entity": d.entity, "subject": d.subject, "reason": d.reason,
                      "payload": d.payload.decode("utf-8", "replace"),
                      "event_sequence": d.event_seq, "created_at": d.created_at}
                     for d in dead]
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
        return _json({"source": name, "done": action, "paused": runner.paused})

    app.add_routes(routes)
    return app


def _remove_socket(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _prepare_socket_path(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_socket(path)  # a stale socket of a dead agent: the state-dir lock says we own it


@contextlib.asynccontextmanager
async def serve_unix(agent: Agent, path: Path) -> AsyncIterator[None]:
    """Serve the API on ``path`` (mode 0660) for as long as the context is open."""
    _prepare_socket_path(path)
    runner = web.AppRunner(build_app(agent), access_log=None)
    await runner.setup()
    old_umask = os.umask(0o117)
    try:
        await web.UnixSite(runner, str(path)).start()
    finally:
        os.umask(old_umask)
    try:
        yield
    finally:
        await runner.cleanup()
        _remove_socket(path)
