"""Builds a consumer from its config and runs it until SIGTERM/SIGINT, with its status
API (``/v1/health``, ``/v1/status``, ``/v1/metrics``) on ``[api] socket`` (mode 0660).

Stopping cancels the batches in flight: their transactions roll back and their messages
stay unacknowledged, so the broker redelivers them to whoever runs next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from common.unix_socket import claimed_socket
from relay.config import ConsumerConfig, RelaySection, sink_settings
from relay.consumer import Consumer, status_topic, subscriptions
from relay.errors import SecretMissing, SocketBusy
from relay.settings import check_private, read_secret
from relay.sinks.base import Sink
from relay.sinks.lookup import LookupSettings
from relay.status import METRICS_CONTENT_TYPE, metrics_text
from relay.store import VersionStore
from relay.subscriber import SessionSettings, tls_context

log = logging.getLogger("distillsync.relay.service")


def session_settings(config: ConsumerConfig) -> SessionSettings:
    return relay_session(
        config.relay,
        config.client_id,
        subscriptions(config),
        status_topic(config),
        orjson.dumps({"kind": "consumer", "state": "offline"}),
    )


def relay_session(
    relay: RelaySection, client_id: str, topics: list[str], will_topic: str, will_payload: bytes
) -> SessionSettings:
    """The MQTT session ``[relay]`` describes (the consumer's and the intake's)."""
    secure = relay.url.startswith("mqtts://")
    if secure and relay.key_file is not None:
        check_private(relay.key_file, "relay.key_file")
    return SessionSettings(
        url=relay.url,
        client_id=client_id,
        topics=topics,
        username=relay.username,
        password=read_secret(
            relay.password_file, relay.password_env, "relay.password", relay.password_credential
        ),
        tls=tls_context(relay.ca_file, relay.cert_file, relay.key_file) if secure else None,
        session_expiry=int(relay.session_expiry),
        keepalive=int(relay.keepalive),
        receive_maximum=relay.receive_maximum,
        will_topic=will_topic,
        will_payload=will_payload,
    )


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def status_app(consumer: Consumer) -> web.Application:
    def counts() -> tuple[int, int]:
        return consumer.waiting, len(consumer.window)

    async def health(_: web.Request) -> web.Response:
        healthy = consumer.stats.relay_state == "connected"
        return _json(
            {"healthy": healthy, "relay": consumer.stats.relay_state}, 200 if healthy else 503
        )

    async def status(_: web.Request) -> web.Response:
        return _json(
            {**consumer.stats.snapshot(*counts()), "store": {"dead_letters": consumer.dead_letters}}
        )

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=metrics_text(consumer.stats, *counts()),
            headers={"Content-Type": METRICS_CONTENT_TYPE},
        )

    app = web.Application()
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/metrics", metrics)
    return app


def _busy(path: Path) -> str:
    return (
        f"another process serves the status socket {path}; stop it, or give this "
        "consumer another [api] socket"
    )


@contextlib.asynccontextmanager
async def serve_status(consumer: Consumer, path: Path) -> AsyncIterator[None]:
    async with serve_unix(status_app(consumer), path, SocketBusy(_busy(path))):
        yield


@contextlib.asynccontextmanager
async def serve_unix(app: web.Application, path: Path, busy: Exception) -> AsyncIterator[None]:
    """``app`` on the Unix socket ``path`` (mode 0660), which no other live process serves
    (``busy`` is raised if one does)."""
    with claimed_socket(path, busy):
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
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


def build_sinks(config: ConsumerConfig, store: VersionStore | None = None) -> list[Sink]:
    """Each sink reads its secrets here; a missing one is named by its full key path. The
    shop sinks keep the SKU ids they look up in ``store`` (:mod:`relay.sinks.lookup`)."""
    sinks = []
    for index, (sink_class, settings) in enumerate(sink_settings(config)):
        try:
            sinks.append(
                sink_class(settings, store)
                if isinstance(settings, LookupSettings)
                else sink_class(settings)
            )
        except SecretMissing as error:
            raise SecretMissing(f"sinks[{index}].{error}") from None
    return sinks


async def run(config: ConsumerConfig, stop: asyncio.Event | None = None) -> None:
    """Until ``stop`` is set, or by default until SIGTERM/SIGINT."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    for unused in build_sinks(config):  # secrets first: a missing one is a config error
        await unused.close()  # (78) even with a store that cannot be opened (69)
    store = await VersionStore.open(config.store.url)
    sinks: list[Sink] = []
    try:
        # Before the broker: a second consumer of this store, under the same client id,
        # would knock the running one off the broker before it found the store taken.
        store.reserve()
        sinks = build_sinks(config, store)
        consumer = Consumer(config, sinks, store, session_settings(config), stop)
        consumer.dead_letters = (await store.stats()).dead_letters
        async with serve_status(consumer, config.api.socket):
            await _run_parts(consumer, stop)
    finally:
        for sink in sinks:
            await sink.close()
        await store.close()
    log.info("stopped")


async def _run_parts(consumer: Consumer, stop: asyncio.Event) -> None:
    log.info(
        "consumer %s started with %d sink(s)", consumer.config.consumer.name, len(consumer.sinks)
    )
    async with asyncio.TaskGroup() as group:
        receiving = group.create_task(consumer.receive(), name="receive")
        helpers = [
            group.create_task(consumer.work(), name=f"worker-{n}")
            for n in range(consumer.config.pipeline.concurrency)
        ]
        helpers.append(group.create_task(consumer.prune(), name="prune"))
        await stop.wait()
        log.info("stopping: batches in flight roll back and are redelivered later")
        await receiving
        for task in helpers:
            task.cancel()
