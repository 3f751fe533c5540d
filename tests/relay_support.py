"""Helpers for the relay kit's end-to-end tests: consumer configs, events published
straight to the broker as an agent would, and the consumer as a real process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.publish

from agent.apiclient import ApiClient
from agent.envelope import envelope, source_urn, subject_of
from agent.model import PendingEvent
from relay.config import load
from relay.service import run
from tests.sims.woocommerce import WooCommerceSim
from tests.support import REPO, write_secret

TIME = "2026-11-23T12:00:00.000000Z"


def stock_event(
    sequence: int,
    sku: str,
    warehouse: str,
    on_hand: float,
    agent: str = "erp-1",
    event_id: str | None = None,
) -> tuple[str, bytes]:
    """``(topic, envelope)`` exactly as the agent publishes a stock upsert."""
    subject = subject_of([sku, warehouse])
    data = orjson.dumps(
        {"sku": sku, "warehouse": warehouse, "on_hand": on_hand}, option=orjson.OPT_SORT_KEYS
    )
    event = PendingEvent(
        sequence, event_id or f"{agent}-{sequence}", "stock", "upsert", subject, TIME, data
    )
    return (
        f"distillsync/acme/{agent}/out/stock/{subject}",
        envelope(event, source_urn("acme", agent)),
    )


def entity_event(
    sequence: int, entity: str, data: dict[str, Any], subject: str, agent: str = "erp-1"
) -> tuple[str, bytes]:
    event = PendingEvent(
        sequence,
        f"{agent}-{sequence}",
        entity,
        "upsert",
        subject,
        TIME,
        orjson.dumps(data, option=orjson.OPT_SORT_KEYS),
    )
    return (
        f"distillsync/acme/{agent}/out/{entity}/{subject}",
        envelope(event, source_urn("acme", agent)),
    )


async def publish(port: int, messages: Sequence[tuple[str, bytes]]) -> None:
    batch: list[Any] = [(topic, payload, 1, False) for topic, payload in messages]
    await asyncio.to_thread(
        paho.mqtt.publish.multiple,
        batch,
        hostname="127.0.0.1",
        port=port,
        protocol=paho.mqtt.client.MQTTv5,
    )


def consumer_toml(
    tmp: Path,
    broker_url: str,
    sinks: str,
    *,
    name: str = "shops-1",
    store: str | None = None,
    subscribe: str = "",
    pipeline: str = "",
) -> str:
    return (
        f'[consumer]\nname = "{name}"\n\n'
        # Each config its own MQTT session: the tests share one broker, and a
        # persistent session would hand a later test what an earlier one left queued.
        f'[relay]\nurl = "{broker_url}"\nkeepalive = "5s"\n'
        f'client_id = "{name}-{secrets.token_hex(4)}"\n\n'
        f'[subscribe]\ntenants = ["acme"]\n{subscribe}\n'
        f'[store]\nurl = "{store or f"sqlite:///{tmp}/{name}.db"}"\n\n'
        f'[api]\nsocket = "{tmp}/{name}.sock"\n\n'
        f"[pipeline]\n{pipeline}\n{sinks}"
    )


def woocommerce_sink(sim: WooCommerceSim, folder: Path, extra: str = "") -> str:
    """A ``[[sinks]]`` table for ``sim``, its key and secret written (0600) into ``folder``;
    the shop shows the MAD warehouse."""
    write_secret(folder / "ck", sim.consumer_key)
    write_secret(folder / "cs", sim.consumer_secret)
    return (
        f'[[sinks]]\ntype = "woocommerce"\nname = "woo"\nurl = "{sim.url}"\n'
        f'consumer_key_file = "{folder / "ck"}"\n'
        f'consumer_secret_file = "{folder / "cs"}"\nwarehouse = "MAD"\n{extra}'
    )


def webhook_sink(url: str, secret_file: Path, entities: str = "") -> str:
    return (
        f'[[sinks]]\ntype = "webhook"\nname = "hook"\nurl = "{url}"\n'
        f'secret_file = "{secret_file}"\nrequests_per_second = 10000\n{entities}\n'
    )


@contextlib.asynccontextmanager
async def consumer_running(config: Path) -> AsyncIterator[asyncio.Task[None]]:
    """The consumer in this process (for tests that look inside)."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(load(config), stop))
    try:
        yield task
    finally:
        stop.set()
        await task


class ConsumerProcess:
    """``distillsync consume`` as a child process, so tests can SIGKILL it."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "consume", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=dict(os.environ),
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def __enter__(self) -> ConsumerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


async def eventually(predicate: Any, seconds: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        assert loop.time() < deadline, f"timed out after {seconds}s waiting for {what}"
        await asyncio.sleep(0.05)


async def subscribed(socket: Path, seconds: float = 30) -> dict[str, Any]:
    """Until the consumer serving ``socket`` says its relay is ``connected``; returns its
    ``/v1/status``. It says so only once the broker has answered each of its SUBSCRIBEs
    (SUBACK), so what is published after this reaches it (or its share group)."""
    client = ApiClient(socket)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    last: object = "no answer yet"
    while True:
        with contextlib.suppress(OSError):  # not serving yet
            code, status = await client.get("/v1/status")
            if code == 200 and status["relay"]["state"] == "connected":
                return dict(status)
            last = status
        assert loop.time() < deadline, f"{socket}: not subscribed after {seconds}s: {last}"
        await asyncio.sleep(0.05)
