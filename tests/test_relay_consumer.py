"""The consumer end to end on a real Mosquitto: events in, the shop (a webhook receiver
that checks signatures) out, effectively once; dead letters; status and metrics."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from agent.apiclient import ApiClient
from relay.store import VersionStore
from tests.relay_support import (
    consumer_running,
    entity_event,
    eventually,
    publish,
    stock_event,
    subscribed,
    webhook_sink,
    woocommerce_sink,
)
from tests.relay_support import consumer_toml as toml
from tests.sims import Served
from tests.sims.webhook import WebhookReceiver
from tests.support import Mosquitto, write_secret

SECRET = b"hook-secret"


def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "hook-secret"
    write_secret(path, SECRET)
    return path


async def counted(client: ApiClient, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """``/v1/status`` once ``done`` holds: a batch is counted after its record commits,
    a moment after the shop has seen it."""
    for _ in range(200):
        code, status = await client.get("/v1/status")
        assert code == 200
        if done(status):
            break
        await asyncio.sleep(0.05)
    return dict(status)


def latest(received: list[dict[str, object]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for event in received:
        out[str(event["subject"])] = int(str(event["sequence"]))
    return out


async def test_duplicates_and_old_states_never_reach_the_shop(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with WebhookReceiver(SECRET) as shop:
        config = tmp_path / "relay.toml"
        config.write_text(toml(tmp_path, broker.url, webhook_sink(shop.url, secret_file(tmp_path))))
        async with consumer_running(config):
            await subscribed(tmp_path / "shops-1.sock")
            first = [stock_event(n, f"SKU-{n % 5}", "MAD", n) for n in range(1, 21)]
            await publish(broker.port, first)
            await eventually(
                lambda: latest(shop.received).get("SKU-4/MAD") == 19,
                20,
                "the newest state of SKU-4",
            )
            # A redelivery of each (same ids) and old states under new ids: all dropped.
            older = [
                stock_event(n, f"SKU-{n % 5}", "MAD", -1, event_id=f"late-{n}")
                for n in range(1, 16)
            ]
            await publish(broker.port, first + older + [stock_event(21, "SKU-1", "MAD", 21)])
            await eventually(
                lambda: latest(shop.received).get("SKU-1/MAD") == 21, 20, "the last event"
            )
        applied = [int(str(e["sequence"])) for e in shop.received]
        assert len(applied) == len(set(applied)), "an event reached the shop twice"
        assert all(e["data"]["on_hand"] != -1 for e in shop.received), "an old state won"
        assert latest(shop.received) == {
            "SKU-0/MAD": 20,
            "SKU-1/MAD": 21,
            "SKU-2/MAD": 17,
            "SKU-3/MAD": 18,
            "SKU-4/MAD": 19,
        }
        by_key: dict[str, list[int]] = {}
        for sequence, event in zip(applied, shop.received, strict=True):
            by_key.setdefault(str(event["subject"]), []).append(sequence)
        assert all(seqs == sorted(seqs) for seqs in by_key.values()), by_key


async def test_invalid_messages_become_dead_letters_and_the_rest_flows(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with WebhookReceiver(SECRET) as shop:
        config = tmp_path / "relay.toml"
        config.write_text(toml(tmp_path, broker.url, webhook_sink(shop.url, secret_file(tmp_path))))
        bad_stock = entity_event(
            2, "stock", {"sku": "X", "warehouse": "MAD", "on_hand": "n/a"}, "X/MAD"
        )
        async with consumer_running(config):
            await subscribed(tmp_path / "shops-1.sock")
            await publish(
                broker.port,
                [
                    stock_event(1, "A", "MAD", 1),
                    bad_stock,
                    ("distillsync/acme/erp-1/out/stock/junk", b"{not json"),
                    stock_event(3, "B", "MAD", 3),
                ],
            )
            await eventually(lambda: len(shop.received) == 2, 20, "the two good events")
            client = ApiClient(tmp_path / "shops-1.sock")
            status = await counted(client, lambda s: s["events"]["applied"] == 2)
            assert status["events"]["invalid"] == 2
            assert status["sinks"]["hook"]["applied"] == 2
            assert (await client.get("/v1/health"))[0] == 200
            _, metrics = await client.get_text("/v1/metrics")
            assert re.search(
                r'^distillsync_consumer_events_total\{outcome="invalid"\} 2\.0$',
                metrics,
                re.MULTILINE,
            ), metrics
            assert 'distillsync_sink_events_total{result="applied",sink="hook"} 2.0' in metrics
        async with await VersionStore.open(f"sqlite:///{tmp_path}/shops-1.db") as store:
            reasons = sorted(d.reason for d in await store.dead_letters())
        assert reasons[0].startswith("not JSON") and "on_hand must be number" in reasons[1]


async def test_the_consumer_shows_in_the_fleet(broker: Mosquitto, tmp_path: Path) -> None:
    from tests.support import Collector

    async with WebhookReceiver(SECRET) as shop:
        config = tmp_path / "relay.toml"
        config.write_text(
            toml(
                tmp_path, broker.url, webhook_sink(shop.url, secret_file(tmp_path)), name="fleet-1"
            )
        )
        with Collector(broker.port, "distillsync/_relay/fleet-1/status") as statuses:
            async with consumer_running(config):
                await eventually(lambda: statuses.messages, 10, "the retained status")
                online = statuses.messages[-1].event
                assert online["kind"] == "consumer" and online["state"] == "online"
            await eventually(
                lambda: statuses.messages[-1].event["state"] == "offline",
                10,
                "offline after a clean stop",
            )
    assert orjson.loads(orjson.dumps(online))["backlog"] == 0


async def test_a_backlog_drains_orders_first_then_stock_then_prices(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with WebhookReceiver(SECRET) as shop:
        config = tmp_path / "relay.toml"
        config.write_text(
            toml(
                tmp_path,
                broker.url,
                webhook_sink(shop.url, secret_file(tmp_path)),
                name="drain-1",
                pipeline='batch_size = 10\nconcurrency = 1\nlinger = "50ms"\n',
            )
        )
        async with consumer_running(config):
            # The persistent session subscribes, then goes away: the broker keeps its queue.
            await subscribed(tmp_path / "drain-1.sock")
        backlog = []
        for n in range(1, 301):  # catalogue, prices, stock and orders, interleaved
            kind = ("product", "price", "stock", "order_status")[n % 4]
            data: dict[str, dict[str, Any]] = {
                "product": {"sku": f"P{n}", "name": "Jamon"},
                "price": {"sku": f"P{n}", "price": "9.90"},
                "stock": {"sku": f"P{n}", "warehouse": "MAD", "on_hand": n},
                "order_status": {"order_ref": f"O{n}", "status": "shipped"},
            }
            backlog.append(entity_event(n, kind, data[kind], f"K{n}"))
        await publish(broker.port, backlog)
        async with consumer_running(config):
            await eventually(lambda: len(shop.received) == 300, 30, "the backlog")
    kinds = [str(e["type"]).split(".")[1] for e in shop.received]

    def mean_position(kind: str) -> float:
        places = [i for i, k in enumerate(kinds) if k == kind]
        return sum(places) / len(places)

    # The first batch may start before the whole backlog has arrived; after that the
    # order is strict, so the averages must come out in this order by a wide margin.
    means = [mean_position(k) for k in ("order_status", "stock", "price", "product")]
    assert means == sorted(means), dict(
        zip(("order_status", "stock", "price", "product"), means, strict=True)
    )
    assert kinds[-65:] == ["product"] * 65  # all but at most the first batch of ten


async def test_a_shop_that_is_down_holds_the_batch_and_an_unknown_sku_is_a_dead_letter(
    broker: Mosquitto, tmp_path: Path
) -> None:
    from tests.sims.woocommerce import WooCommerceSim

    async with WooCommerceSim() as sim:
        sim.add("KNOWN", stock=0)
        config = tmp_path / "relay.toml"
        config.write_text(
            toml(
                tmp_path,
                broker.url,
                woocommerce_sink(
                    sim, tmp_path, 'requests_per_second = 100\nmax_retries = 1\nbackoff = "50ms"\n'
                ),
            )
        )
        async with consumer_running(config):
            await subscribed(tmp_path / "shops-1.sock")
            sim.fail_next(6, 503, retry_after="1")  # beyond the sink's own retries
            await publish(
                broker.port, [stock_event(1, "KNOWN", "MAD", 7), stock_event(2, "GHOST", "MAD", 3)]
            )
            await eventually(lambda: sim.stock("KNOWN") == 7, 30, "the shop to come back")
            client = ApiClient(tmp_path / "shops-1.sock")
            status = await counted(client, lambda s: s["sinks"]["woo"]["dead"] == 1)
        woo = status["sinks"]["woo"]
        assert (woo["unavailable"] >= 1, woo["applied"], woo["dead"]) == (True, 1, 1), woo
    async with await VersionStore.open(f"sqlite:///{tmp_path}/shops-1.db") as store:
        [dead] = await store.dead_letters()
    assert dead.sink == "woo" and "unknown SKU GHOST" in dead.reason


class ShopSwitch(Served):
    """A webhook receiver that answers 503 while :attr:`down`, and takes the events once
    the test brings it back: a shop that is down for exactly as long as the test says."""

    path = "/hook"

    def __init__(self) -> None:
        self.down = True
        self.received: list[dict[str, Any]] = []
        self.refused = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(self.path, self._hook)
        return app

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.down:
            self.refused += 1
            return web.Response(status=503)
        self.received.append(orjson.loads(body))
        return web.Response(status=204)


def waiting_metric(metrics: str) -> float:
    found = re.search(r"^distillsync_consumer_waiting_events (\S+)$", metrics, re.MULTILINE)
    assert found, metrics
    return float(found.group(1))


async def test_events_held_by_a_shop_that_is_down_count_as_waiting(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Not only the queue: a batch retried against a 503 holds its events, and the status,
    and the metric say how many until the shop takes them."""
    async with ShopSwitch() as shop:
        config = tmp_path / "relay.toml"
        sink = webhook_sink(shop.url, secret_file(tmp_path)) + 'max_retries = 0\nbackoff = "50ms"\n'
        config.write_text(
            toml(tmp_path, broker.url, sink, name="held-1", pipeline='retry_max = "200ms"\n')
        )
        async with consumer_running(config):
            await subscribed(tmp_path / "held-1.sock")
            await publish(broker.port, [stock_event(n, f"SKU-{n}", "MAD", n) for n in range(1, 6)])
            client = ApiClient(tmp_path / "held-1.sock")
            # A batch refused twice is under retry: out of the queue, yet not applied.
            status = await counted(client, lambda s: s["sinks"]["hook"]["unavailable"] >= 2)
            assert status["events"]["waiting"] == 5, status["events"]
            assert waiting_metric((await client.get_text("/v1/metrics"))[1]) == 5
            shop.down = False
            status = await counted(
                client, lambda s: s["events"]["applied"] == 5 and s["events"]["waiting"] == 0
            )
            assert (status["events"]["applied"], status["events"]["waiting"]) == (5, 0)
            assert waiting_metric((await client.get_text("/v1/metrics"))[1]) == 0
        assert sorted(int(str(e["sequence"])) for e in shop.received) == [1, 2, 3, 4, 5]
