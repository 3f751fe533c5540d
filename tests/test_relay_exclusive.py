"""One consumer per SQLite store and per status socket, with real processes on a real
Mosquitto: a second one exits 69 in one sentence before it touches the broker or the
socket, so the running one is never knocked off nor made unreachable; a socket left by a
SIGKILLed consumer does not stop the next one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from agent.apiclient import ApiClient
from relay.config import load
from tests.relay_support import (
    ConsumerProcess,
    consumer_toml,
    eventually,
    publish,
    stock_event,
    subscribed,
    webhook_sink,
)
from tests.sims.webhook import WebhookReceiver
from tests.support import REPO, Mosquitto, write_secret

SECRET = b"exclusive-secret"
EX_UNAVAILABLE = 69


def config_file(
    tmp_path: Path, shop: WebhookReceiver, broker: Mosquitto, *, name: str, store: str | None = None
) -> Path:
    """``name`` names the store, the socket and the client id (see ``consumer_toml``);
    ``store`` another store instead."""
    secret = write_secret(tmp_path / "secret", SECRET)
    config = tmp_path / f"{name}-{len(list(tmp_path.glob('*.toml')))}.toml"
    config.write_text(
        consumer_toml(tmp_path, broker.url, webhook_sink(shop.url, secret), name=name, store=store)
    )
    return config


async def second_consumer(config: Path) -> subprocess.CompletedProcess[str]:
    """``distillsync consume`` run to its end; a second consumer must end by itself."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli", "consume", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def connections(broker: Mosquitto, client_id: str) -> tuple[int, int]:
    """How often the broker logged ``client_id`` connecting, and taking over a connection
    of the same id (which knocks the older one off)."""
    log = broker.log_file.read_text(errors="replace")
    return log.count(f" as {client_id} ("), log.count(f"{client_id} already connected")


async def still_serving(
    socket: Path,
    shop: WebhookReceiver,
    broker: Mosquitto,
    first_status: dict[str, object],
    sequence: int,
) -> None:
    """The first consumer answers on its socket, applies a new event, and never lost its
    relay connection since ``first_status``."""
    await publish(broker.port, [stock_event(sequence, "SKU-NEW", "MAD", sequence)])
    await eventually(
        lambda: any(int(str(e["sequence"])) == sequence for e in shop.received),
        30,
        "the running consumer to apply a new event",
    )
    code, status = await ApiClient(socket).get("/v1/status")
    assert code == 200
    assert status["relay"] == first_status["relay"], "the running consumer reconnected"


async def test_a_second_consumer_of_a_sqlite_store_exits_69_and_leaves_the_first_alone(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with WebhookReceiver(SECRET) as shop:
        config = config_file(tmp_path, shop, broker, name="twin-1")
        client_id = load(config).client_id
        socket = tmp_path / "twin-1.sock"
        with ConsumerProcess(config, tmp_path / "first.log"):
            first_status = await subscribed(socket)
            second = await second_consumer(config)  # the same file: store, id, socket
            assert second.returncode == EX_UNAVAILABLE, second.stderr
            assert second.stderr == (
                f"distillsync consume: another consumer holds the version store "
                f"{tmp_path / 'twin-1.db'}, and a SQLite store serves one consumer (use "
                "PostgreSQL to run several)\n"
            )
            await still_serving(socket, shop, broker, first_status, sequence=1)
            assert connections(broker, client_id) == (1, 0), "the broker saw the twin"


async def test_a_second_consumer_on_a_live_status_socket_exits_69_and_leaves_it(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with WebhookReceiver(SECRET) as shop:
        config = config_file(tmp_path, shop, broker, name="sock-1")
        other_store = f"sqlite:///{tmp_path}/other.db"
        other = config_file(tmp_path, shop, broker, name="sock-1", store=other_store)
        socket = tmp_path / "sock-1.sock"
        with ConsumerProcess(config, tmp_path / "first.log"):
            first_status = await subscribed(socket)
            second = await second_consumer(other)
            assert second.returncode == EX_UNAVAILABLE, second.stderr
            assert second.stderr == (
                f"distillsync consume: another process serves the status socket {socket}; "
                "stop it, or give this consumer another [api] socket\n"
            )
            await still_serving(socket, shop, broker, first_status, sequence=1)
            assert connections(broker, load(other).client_id) == (0, 0)


async def test_a_sigkilled_consumers_socket_does_not_stop_the_next(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with WebhookReceiver(SECRET) as shop:
        config = config_file(tmp_path, shop, broker, name="phoenix-1")
        socket = tmp_path / "phoenix-1.sock"
        with ConsumerProcess(config, tmp_path / "first.log") as first:
            killed = await subscribed(socket)
            first.kill()
        assert socket.exists()  # left behind, with whatever else the dead one held
        with ConsumerProcess(config, tmp_path / "next.log"):
            status = await subscribed(socket)
            assert status["consumer"]["started_at"] != killed["consumer"]["started_at"]
            await publish(broker.port, [stock_event(1, "SKU-1", "MAD", 1)])
            await eventually(lambda: len(shop.received) == 1, 30, "the next consumer to apply")
