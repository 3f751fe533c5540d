"""``distillsync intake``: builds the intake from its config and runs it until
SIGTERM/SIGINT.

Parts, all on one event loop:

- the webhook listener (``[listen]``, TCP, behind the reverse proxy that terminates TLS):
  ``POST /v1/webhooks/{shop}`` (:mod:`relay.intake.webhooks`) and ``GET /v1/health`` for
  the load balancer;
- the status API on ``[api] socket`` (mode 0660, as the consumer's): ``/v1/health``,
  ``/v1/status``, ``/v1/metrics`` (:mod:`relay.intake.status`);
- one catch-up :class:`~relay.intake.poller.Poller` per shop, and the background re-reads
  of conflicting versions;
- the :class:`~relay.intake.publisher.IntakePublisher`, which publishes the store's events
  over MQTT 5 QoS 1 and keeps the intake's retained status (and its Will: ``offline``) on
  ``{prefix}/_intake/{name}/status`` for the fleet view.

Stopping closes the listener first (a delivery in progress is answered or not at all:
either way the store holds it or the shop resends it), then the rest; whatever is stored
and unpublished is published on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from relay.errors import SecretMissing, SocketBusy
from relay.intake.config import WEBHOOK_SHOPS, IntakeConfig, Shop
from relay.intake.intake import Intake, Route
from relay.intake.poller import Poller
from relay.intake.publisher import IntakePublisher
from relay.intake.status import IntakeStats, metrics_text, retained, snapshot
from relay.intake.store import IntakeStore
from relay.intake.webhooks import FLAVOURS, WebhookHandler, WebhookShop, webhook_app
from relay.service import relay_session, serve_unix

log = logging.getLogger("distillsync.relay.intake.service")

STATUS_EVERY = 30.0
"""Seconds between retained status updates (and on every change of the relay state)."""


def status_topic(config: IntakeConfig) -> str:
    # "_intake" cannot be a tenant (tenants are [a-z0-9-]+), so it never meets an agent.
    return f"{config.relay.topic_prefix}/_intake/{config.intake.name}/status"


def webhook_shops(
    config: IntakeConfig, shops: list[Shop], routes: dict[str, Route]
) -> dict[str, WebhookShop]:
    """Each shop's secret is read here: a missing one is named by its key path (exit 78)."""
    built = {}
    for index, shop in enumerate(shops):
        secret = None
        if shop.section.type in WEBHOOK_SHOPS:
            try:
                secret = shop.section.webhook_secret()
            except SecretMissing as error:
                raise SecretMissing(f"shops[{index}].{error}") from None
            if not secret:
                raise SecretMissing(f"shops[{index}].webhook_secret: the secret is empty")
        built[shop.name] = WebhookShop(routes[shop.name], FLAVOURS.get(shop.section.type), secret)
    return built


@dataclasses.dataclass
class Running:
    config: IntakeConfig
    stats: IntakeStats
    store: IntakeStore
    publisher: IntakePublisher

    async def store_stats(self) -> dict[str, Any]:
        return dataclasses.asdict(await self.store.stats())

    def relay(self) -> dict[str, Any]:
        return dataclasses.asdict(self.publisher.status())


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def status_app(running: Running) -> web.Application:
    async def health(_: web.Request) -> web.Response:
        relay = running.relay()
        healthy = relay["state"] == "connected"
        return _json({"healthy": healthy, "relay": relay["state"]}, 200 if healthy else 503)

    async def status(_: web.Request) -> web.Response:
        return _json(snapshot(running.stats, await running.store_stats(), running.relay()))

    async def metrics(_: web.Request) -> web.Response:
        connected = running.relay()["state"] == "connected"
        body = metrics_text(running.stats, await running.store_stats(), connected)
        return web.Response(
            body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )

    app = web.Application()
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/metrics", metrics)
    return app


@contextlib.asynccontextmanager
async def listen(app: web.Application, host: str, port: int) -> AsyncIterator[web.AppRunner]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        yield runner
    finally:
        await runner.cleanup()


async def run(config: IntakeConfig, shops: list[Shop], stop: asyncio.Event | None = None) -> None:
    """Until ``stop`` is set, or by default until SIGTERM/SIGINT."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    routes = _client_routes(shops)
    try:
        hooks = webhook_shops(config, shops, routes)
        stats = IntakeStats(config.intake.name)
        store = await IntakeStore.open(config.store.url, config.relay.topic_prefix)
        try:
            await _serve(config, shops, routes, hooks, stats, store, stop)
        finally:
            await store.close()
    finally:
        for route in routes.values():
            await route.client.close()
    log.info("stopped")


def _client_routes(shops: list[Shop]) -> dict[str, Route]:
    routes: dict[str, Route] = {}
    for index, shop in enumerate(shops):
        try:
            routes[shop.name] = Route(
                shop.name, shop.section.tenant, shop.section.agent, shop.client()
            )
        except SecretMissing as error:
            raise SecretMissing(f"shops[{index}].{error}") from None
    return routes


async def _serve(
    config: IntakeConfig,
    shops: list[Shop],
    routes: dict[str, Route],
    hooks: dict[str, WebhookShop],
    stats: IntakeStats,
    store: IntakeStore,
    stop: asyncio.Event,
) -> None:
    offline = orjson.dumps({"kind": "intake", "state": "offline"})
    session = relay_session(config.relay, config.client_id, [], status_topic(config), offline)
    publisher = IntakePublisher(store, session, max_inflight=config.publish.max_inflight)
    intake = Intake(store, routes, stats, publisher.wake)
    running = Running(config, stats, store, publisher)
    handler = WebhookHandler(intake, hooks, config.listen.max_body)
    api = serve_unix(status_app(running), config.api.socket, SocketBusy(_busy(config)))
    async with api, asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(publisher.run(stop), name="publisher"),
            group.create_task(intake.rereads(), name="rereads"),
            group.create_task(_announce(running, stop), name="status"),
        ]
        for shop in shops:
            poller = Poller(
                intake,
                routes[shop.name],
                interval=shop.section.poll_interval,
                overlap=shop.section.overlap,
                backfill=shop.section.backfill,
                webhook_url=config.webhook_url(shop.name)
                if shop.section.type in WEBHOOK_SHOPS
                else None,
            )
            tasks.append(group.create_task(poller.run(stop), name=f"poll-{shop.name}"))
        async with listen(
            webhook_app(handler, config.listen.max_body), config.listen.host, config.listen.port
        ):
            log.info(
                "intake %s listening on %s:%d for %d shop(s)",
                config.intake.name,
                config.listen.host,
                config.listen.port,
                len(shops),
            )
            await stop.wait()
            log.info("stopping")
        for task in tasks:
            task.cancel()


def _busy(config: IntakeConfig) -> str:
    return (
        f"another process serves the status socket {config.api.socket}; stop it, or give "
        "this intake another [api] socket"
    )


async def _announce(running: Running, stop: asyncio.Event) -> None:
    """The retained status: as soon as the relay connection is up, then every
    :data:`STATUS_EVERY` seconds while it stays up."""
    topic = status_topic(running.config)
    said_at: float | None = None
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        if running.relay()["state"] != "connected":
            said_at = None
        elif said_at is None or loop.time() - said_at >= STATUS_EVERY:
            payload = retained(running.stats, "online", await running.store_stats())
            await running.publisher.announce(topic, payload)
            said_at = loop.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
