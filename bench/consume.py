"""``python -m bench.consume``: how fast ``distillsync consume`` drains a backlog, next to
the raw limit measured in the same run on the same broker.

The raw limit is a plain paho QoS 1 subscriber with a persistent session draining the
same backlog (paho acknowledges each message as it arrives; it applies nothing). The
consumer drains it through the whole pipeline: validation, the version store, the
WooCommerce simulator (batch writes of 100, from ``tests/sims``), the record and the
in-order acknowledgements. Both start from a broker holding the backlog queued.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.apiclient import ApiClient
from bench.parts import Broker
from tests.relay_support import (
    ConsumerProcess,
    consumer_toml,
    publish,
    stock_event,
    woocommerce_sink,
)
from tests.sims.woocommerce import WooCommerceSim

TOPIC = "distillsync/acme/+/out/stock/#"
PIPELINE = ""  # the defaults: batch_size 100, concurrency 4


def session(port: int, client_id: str, on_message: Any = None) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, client_id=client_id)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    if on_message:
        client.on_message = on_message
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    return client


def raw_drain(port: int, backlog: list[tuple[str, bytes]]) -> float:
    """Messages/s of a bare paho subscriber draining the queued backlog."""
    subscribe = session(port, "bench-raw")
    subscribe.subscribe(TOPIC, qos=1)
    subscribe.loop(2)
    subscribe.disconnect()
    asyncio.run(publish(port, backlog))
    done, count = threading.Event(), [0]

    def arrived(*_: Any) -> None:
        count[0] += 1
        if count[0] == len(backlog):
            done.set()

    started = time.monotonic()
    client = session(port, "bench-raw", arrived)
    client.loop_start()
    done.wait(600)
    elapsed = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    return len(backlog) / elapsed


async def consumer_drain(
    workdir: Path, broker: Broker, backlog: list[tuple[str, bytes]], skus: int, store: str | None
) -> float:
    async with WooCommerceSim() as shop:
        for n in range(skus):
            shop.add(f"SKU-{n}", stock=0)
        config = workdir / "relay.toml"
        config.write_text(
            consumer_toml(
                workdir,
                broker.url,
                woocommerce_sink(shop, workdir, "requests_per_second = 100000\n"),
                name="bench",
                store=store,
                pipeline=PIPELINE,
            )
        )
        consumer = ConsumerProcess(config, workdir / "consumer.log")
        consumer.start()  # once, to make its session, then away while the backlog queues
        client = ApiClient(workdir / "bench.sock")
        await _until(lambda: (workdir / "bench.sock").exists())
        await asyncio.sleep(1)
        consumer.terminate()
        await publish(broker.port, backlog)
        started = time.monotonic()
        consumer.start()
        await _until(lambda: (workdir / "bench.sock").exists())
        while True:
            with contextlib.suppress(OSError):
                _, status = await client.get("/v1/status")
                events = status["events"]
                if events["applied"] + events["duplicate"] + events["stale"] >= len(backlog):
                    break
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        consumer.terminate()
        return len(backlog) / elapsed


async def _until(predicate: Any) -> None:
    while not predicate():  # noqa: ASYNC110 (a file appearing has no event to wait on)
        await asyncio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.consume", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--skus", type=int, default=2_000)
    parser.add_argument("--postgres", help="also with this PostgreSQL store URL")
    args = parser.parse_args()
    backlog = [stock_event(n, f"SKU-{n % args.skus}", "MAD", n) for n in range(1, args.events + 1)]
    with tempfile.TemporaryDirectory(prefix="distillsync-bench-consume-") as tmp:
        workdir = Path(tmp)
        broker = Broker(workdir / "mosquitto", max_inflight=1000)
        broker.start()
        try:
            raw = raw_drain(broker.port, backlog)
            print(f"raw QoS 1 drain (paho, no work): {raw:,.0f} msg/s")
            stores = [("sqlite", None)] + ([("postgresql", args.postgres)] if args.postgres else [])
            for label, url in stores:
                (workdir / label).mkdir()
                rate = asyncio.run(consumer_drain(workdir / label, broker, backlog, args.skus, url))
                print(
                    f"consume drain, {label} store, WooCommerce sim: {rate:,.0f} events/s "
                    f"= {rate / raw:.2f} x raw"
                )
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
