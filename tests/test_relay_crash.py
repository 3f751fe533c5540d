"""The consumer killed with SIGKILL mid-batch, and two consumers sharing the load:
nothing is lost, no key ever goes back to an older state, nothing applies twice
beyond the batches in flight at a kill."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agent.apiclient import ApiClient
from relay.status import OUTCOMES
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
from tests.support import Mosquitto, write_secret

SECRET = b"crash-secret"
KEYS = 50
EVENTS = 1500
BATCH, CONCURRENCY = 20, 4


def stream() -> list[tuple[str, bytes]]:
    """Every key changes many times; the newest of key k is the largest n with n % KEYS == k."""
    return [stock_event(n, f"SKU-{n % KEYS}", "MAD", n) for n in range(1, EVENTS + 1)]


def newest() -> dict[str, int]:
    return {
        f"SKU-{k}/MAD": max(n for n in range(1, EVENTS + 1) if n % KEYS == k) for k in range(KEYS)
    }


def check_the_shop(received: list[dict[str, Any]], allowed_repeats: int) -> None:
    by_key: dict[str, list[int]] = {}
    for event in received:
        by_key.setdefault(str(event["subject"]), []).append(int(str(event["sequence"])))
    # Never an older state after a newer one (a repeat of the same one is allowed).
    for key, sequences in by_key.items():
        assert sequences == sorted(sequences), f"{key} went back: {sequences}"
    assert {key: seqs[-1] for key, seqs in by_key.items()} == newest(), "a key is not current"
    ids = [str(event["id"]) for event in received]
    assert len(ids) - len(set(ids)) <= allowed_repeats


def settings(
    tmp_path: Path,
    url: str,
    broker: Mosquitto,
    store: str | None = None,
    name: str = "crash-1",
    group: str = "",
) -> Path:
    secret = tmp_path / "secret"
    write_secret(secret, SECRET)
    config = tmp_path / f"{name}.toml"
    config.write_text(
        consumer_toml(
            tmp_path,
            broker.url,
            webhook_sink(url, secret),
            name=name,
            store=store,
            subscribe=f'shared_group = "{group}"\n' if group else "",
            pipeline=f"batch_size = {BATCH}\nconcurrency = {CONCURRENCY}\n",
        )
    )
    return config


async def test_sigkill_mid_batch_loses_nothing(broker: Mosquitto, tmp_path: Path) -> None:
    async with WebhookReceiver(SECRET) as shop:
        config = settings(tmp_path, shop.url, broker)
        kills = 0
        with ConsumerProcess(config, tmp_path / "consumer.log") as consumer:
            # Its session is new: what is published before its SUBACK is not kept for it.
            await subscribed(tmp_path / "crash-1.sock")
            await publish(broker.port, stream())
            for threshold in (100, 400, 800):  # kill it three times while it works
                await eventually(
                    lambda t=threshold: len(shop.received) >= t,
                    60,
                    f"{threshold} events at the shop",
                )
                consumer.kill()
                kills += 1
                consumer.start()
            await eventually(
                lambda: (
                    len({str(e["subject"]) for e in shop.received}) == KEYS
                    and _current(shop.received)
                ),
                90,
                "every key current",
            )
            assert consumer.terminate() == 0
        # At a kill, at most the batches in flight were applied but not recorded.
        check_the_shop(shop.received, allowed_repeats=kills * BATCH * CONCURRENCY)


def _current(received: list[dict[str, Any]]) -> bool:
    last: dict[str, int] = {}
    for event in received:
        last[str(event["subject"])] = int(str(event["sequence"]))
    return last == newest()


@pytest.fixture
def postgres_store() -> Iterator[str]:
    name = f"relay_{secrets.token_hex(4)}"
    admin = "postgresql://postgres@127.0.0.1:5432/test"
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.mark.postgres
async def test_two_consumers_share_the_stream_without_stale_or_double_writes(
    broker: Mosquitto, tmp_path: Path, postgres_store: str
) -> None:
    async with WebhookReceiver(SECRET, delay=0.002) as shop:
        configs = [
            settings(tmp_path, shop.url, broker, postgres_store, name=f"twin-{n}", group="twins")
            for n in (1, 2)
        ]
        sockets = [tmp_path / f"twin-{n}.sock" for n in (1, 2)]
        with (
            ConsumerProcess(configs[0], tmp_path / "twin-1.log"),
            ConsumerProcess(configs[1], tmp_path / "twin-2.log"),
        ):
            for socket in sockets:  # both in the share before anything is published
                await subscribed(socket)
            events = stream()
            # Redeliveries of old states under their own ids, mixed in: still stale.
            messages = events + events[:300]
            await publish(broker.port, messages)
            await eventually(lambda: _current(shop.received), 90, "every key current")
            counts = await accounted(sockets, len(messages))
        check_the_shop(shop.received, allowed_repeats=0)
        # Both did work, and between them applied each event the shop saw, once.
        assert all(c["received"] > 0 and c["applied"] > 0 for c in counts), counts
        assert sum(c["applied"] for c in counts) == len(shop.received), counts


async def accounted(sockets: list[Path], total: int) -> list[dict[str, Any]]:
    """Each consumer's event counts, once every one of ``total`` messages has an outcome
    at one of them (a batch is counted after its record commits, after the shop saw it)."""
    clients = [ApiClient(socket) for socket in sockets]
    counts: list[dict[str, Any]] = []

    async def read() -> int:
        counts[:] = [(await client.get("/v1/status"))[1]["events"] for client in clients]
        return sum(c[outcome] for c in counts for outcome in OUTCOMES)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while await read() < total:
        assert loop.time() < deadline, f"not every message has an outcome: {counts}"
        await asyncio.sleep(0.05)
    return counts
