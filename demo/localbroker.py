"""A private MQTT broker on a free loopback port, for ``distillsync demo`` and the tests.

Never a production relay: it listens on 127.0.0.1 only and allows anonymous clients.
``stop()`` then ``start()`` keeps the same port, so clients can reconnect to it.

Two kinds, one surface (``url``, ``port``, ``protocol``, ``start()``, ``stop()``):
:class:`LocalBroker` is a Mosquitto subprocess (MQTT 5, what the agent is built for);
:class:`AmqttBroker` is amqtt running in the caller's event loop, for machines without
Mosquitto. amqtt 0.12 speaks MQTT 3.1.1 only, so an agent pointed at it needs
``relay.protocol = "3.1.1"``. It is a demo broker, not a durable one: it keeps retained
messages in memory and forgets them when stopped; it keeps no session for an anonymous
client once it disconnects (nothing is queued for a subscriber that is away); and it
sends the PUBACK for a QoS 1 publish when it queues it, before forwarding it, so what it
acknowledged but had not forwarded yet is gone when it stops. :func:`embedded_broker`
picks a kind and runs it for the length of an ``async with``; amqtt is imported only
when an :class:`AmqttBroker` starts, so the agent never loads it otherwise (it is the
optional extra ``distillsync[demo]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agent.config import MQTT5, MQTT311
from agent.errors import DistillSyncError, RelayError

INSTALL_HINT = "install it with: apt-get install mosquitto"
AMQTT_HINT = "pip install 'distillsync[demo]'"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise RelayError(f"the mosquitto broker is not installed; {INSTALL_HINT}")


class LocalBroker:
    """A Mosquitto subprocess; ``start()`` and ``stop()`` block until it is up or gone."""

    protocol = MQTT5

    def __init__(self, workdir: Path, extra: str = "") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "mosquitto.log"

    def config_text(self) -> str:
        # A Receive Maximum of 100 lets the agent keep a useful window in flight.
        return (
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"max_inflight_messages 100\n{self.extra}\n"
        )

    def start(self, timeout: float = 10.0) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while not self._listening():
            if time.monotonic() > deadline:
                self.stop()
                raise RelayError(f"mosquitto did not start; see {self.log_file}")
            time.sleep(0.05)

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RelayError(f"mosquitto exited at start; see {self.log_file}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class AmqttBroker:
    """amqtt in this event loop: MQTT 3.1.1, anonymous, on 127.0.0.1 only.

    The listening socket is ours and amqtt serves the connections we hand it (its
    "external" listener): amqtt 0.12's own ``shutdown()`` cancels each connection's
    reader and waits for it, and can wait forever when a busy reader swallows the
    cancellation. ``stop()`` first ends every connection's input, so each reader stops on
    its own, then shuts amqtt down, which closes the connections. Each ``start()`` builds
    a fresh broker on the same port (amqtt keeps nothing across a restart anyway).
    """

    protocol = MQTT311

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._broker: Any = None  # amqtt.broker.Broker; amqtt is imported only in start()
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.StreamReader, asyncio.StreamWriter] = {}

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @staticmethod
    def config() -> dict[str, Any]:
        # Only the anonymous login: amqtt's default plugins also log every packet and
        # publish $SYS topics every 20 s.
        return {
            "listeners": {"default": {"type": "external"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }

    async def start(self) -> None:
        # amqtt is the optional extra: imported here only, when this broker starts.
        from amqtt.broker import Broker  # type: ignore[import-untyped]

        quiet_amqtt()
        self._broker = Broker(self.config())
        await self._broker.start()
        try:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )
        except OSError as error:
            await self.stop()
            raise RelayError(
                f"amqtt cannot listen on 127.0.0.1:{self.port}: {error.strerror}"
            ) from None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from amqtt.adapters import (  # type: ignore[import-untyped]
            StreamReaderAdapter,
            StreamWriterAdapter,
        )

        self._connections[reader] = writer
        try:
            await self._broker.external_connected(
                StreamReaderAdapter(reader), StreamWriterAdapter(writer), "default"
            )
        finally:
            del self._connections[reader]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for reader, writer in self._connections.items():
            if isinstance(writer.transport, asyncio.ReadTransport):
                writer.transport.pause_reading()  # nothing more comes in: then the end of it
            reader.feed_eof()
        if server is not None:
            await server.wait_closed()
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
        for writer in self._connections.values():  # any amqtt had not taken over yet
            writer.close()


def quiet_amqtt() -> None:
    """amqtt logs each connection at info level, and its state machine library
    (``transitions``) each state change; only their warnings are worth a line."""
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)


EmbeddedBroker = LocalBroker | AmqttBroker
BROKER_KINDS = ("auto", "mosquitto", "amqtt")


def _pick_broker(workdir: Path, kind: str) -> EmbeddedBroker:
    if kind not in BROKER_KINDS:
        raise ValueError(f"broker kind {kind!r} is not one of {', '.join(BROKER_KINDS)}")
    if kind != "amqtt":
        try:
            mosquitto_binary()
        except RelayError:
            if kind == "mosquitto":
                raise
        else:
            return LocalBroker(workdir)
    if importlib.util.find_spec("amqtt") is None:
        if kind == "amqtt":
            raise DistillSyncError(f"amqtt is not installed; {AMQTT_HINT}")
        raise DistillSyncError(
            "no MQTT broker for the demo: mosquitto is not installed and neither is amqtt; "
            f"{INSTALL_HINT}, or {AMQTT_HINT}"
        )
    return AmqttBroker()


@contextlib.asynccontextmanager
async def embedded_broker(workdir: Path, kind: str = "auto") -> AsyncIterator[EmbeddedBroker]:
    """A running private broker for the length of the ``async with``: with ``"auto"``,
    Mosquitto (MQTT 5) when its binary is found, else amqtt (MQTT 3.1.1); check
    ``.protocol``. ``"mosquitto"`` or ``"amqtt"`` asks for one kind.

    Raises :class:`DistillSyncError` naming the way out when what is needed is missing.
    """
    broker = _pick_broker(workdir, kind)
    if isinstance(broker, LocalBroker):
        await asyncio.to_thread(broker.start)  # it polls for the port; keep the loop free
    else:
        await broker.start()
    try:
        yield broker
    finally:
        if isinstance(broker, LocalBroker):
            await asyncio.to_thread(broker.stop)
        else:
            await broker.stop()
