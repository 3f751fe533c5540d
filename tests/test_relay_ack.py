"""The consumer acknowledges a message only once its batch is applied and recorded.

Events of keys that never change again, a shop that takes the requests and never answers,
and the real ``distillsync consume`` killed with SIGKILL while the apply hangs: after a
restart every one of those events must reach the shop. A consumer that acknowledged a
batch before applying it loses them for good, because the broker forgets an acknowledged
message and no later event of the same key papers over the loss (in tests/test_relay_crash.py
the keys keep changing, so there it would go unseen).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.apiclient import ApiClient
from tests.relay_support import (
    ConsumerProcess,
    consumer_toml,
    eventually,
    publish,
    stock_event,
    webhook_sink,
)
from tests.sims.webhook import Hit, WebhookReceiver
from tests.support import Mosquitto, write_secret

SECRET = b"ack-secret"
SKUS = [f"ONCE-{n}" for n in range(10)]


class StallingShop(WebhookReceiver):
    """A webhook receiver that, while :attr:`stalled`, takes every request and answers
    none of them (until the server closes)."""

    stalled = True

    async def _hook(self, request: web.Request) -> web.Response:
        if not self.stalled:
            return await super()._hook(request)
        self.hits.append(Hit(time.monotonic(), 0))
        await self.hang()
        return web.Response(status=503)


async def consumer_status(socket: Path) -> dict[str, Any]:
    try:
        code, status = await ApiClient(socket).get("/v1/status")
    except OSError:
        return {}
    return dict(status) if code == 200 else {}


async def test_a_consumer_killed_while_applying_loses_nothing(
    broker: Mosquitto, tmp_path: Path
) -> None:
    secret = write_secret(tmp_path / "secret", SECRET)
    config, socket = tmp_path / "ack-1.toml", tmp_path / "ack-1.sock"
    async with StallingShop(SECRET) as shop:
        # the sink waits far longer than the test for an answer: the apply hangs till the kill
        config.write_text(
            consumer_toml(
                tmp_path,
                broker.url,
                webhook_sink(shop.url, secret, 'timeout = "1h"'),
                name="ack-1",
                pipeline="batch_size = 20\n",
            )
        )
        with ConsumerProcess(config, tmp_path / "consumer.log") as consumer:
            connected: dict[str, Any] = {}

            async def poll_connected() -> None:
                while (connected.get("relay") or {}).get("state") != "connected":
                    connected.update(await consumer_status(socket))
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(poll_connected(), 30)  # subscribed, so nothing is missed
            await publish(
                broker.port, [stock_event(n + 1, sku, "MAD", n + 1) for n, sku in enumerate(SKUS)]
            )
            await eventually(lambda: shop.hits, 30, "the apply to reach the shop")
            consumer.kill()  # mid-apply: nothing of this batch was recorded
            shop.stalled = False
            consumer.start()
            await eventually(
                lambda: {e["data"]["sku"] for e in shop.received} == set(SKUS),
                60,
                "every event at the shop after the restart",
            )
            assert consumer.terminate() == 0
