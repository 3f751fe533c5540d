"""The fleet view on a real Mosquitto: retained statuses in, a cleared one out, and a
broker that goes away and comes back."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import paho.mqtt.publish

from tests.support import Mosquitto
from tests.tui_support import FLEET, fast, frozen, rows, table, text, until
from tui.fleet import FleetApp
from tui.sources import RelaySource
from tui.widgets import Banner


async def retain(broker: Mosquitto, messages: list[tuple[str, bytes]], prefix: str) -> None:
    """Publish each status retained under ``prefix`` (each test has its own)."""
    batch: list[Any] = [
        (topic.replace("distillsync", prefix, 1), payload, 1, True) for topic, payload in messages
    ]
    await asyncio.to_thread(
        paho.mqtt.publish.multiple, batch, hostname="127.0.0.1", port=broker.port
    )


async def test_the_fleet_view_reads_retained_statuses(broker: Mosquitto) -> None:
    prefix = f"tui-{secrets.token_hex(4)}"
    await retain(broker, FLEET[:-1], prefix)  # erp-retired still retained
    app = FleetApp(RelaySource(broker.url, "acme", prefix), now=frozen, backoff=fast())
    async with app.run_test(size=(80, 24)) as pilot:
        fleet = table(app, "#fleet")
        await until(pilot, lambda: fleet.row_count == 5, "acme's four agents, the consumer")
        assert [row[1] for row in rows(fleet)] == [
            "shops-1",
            "erp-bilbao",
            "erp-madrid-1",
            "erp-retired",
            "erp-sevilla",
        ]
        await retain(broker, FLEET[-1:], prefix)  # cleared
        await until(pilot, lambda: fleet.row_count == 4, "erp-retired to go")
        assert "zeta" not in {row[0] for row in rows(fleet)}  # another tenant
    await retain(broker, [(topic, b"") for topic, _ in FLEET], prefix)


async def test_the_fleet_view_waits_for_a_lost_relay(make_broker: Callable[..., Mosquitto]) -> None:
    broker = make_broker()
    await retain(broker, FLEET[:1], "distillsync")
    app = FleetApp(RelaySource(broker.url), now=frozen, backoff=fast())
    async with app.run_test(size=(80, 24)) as pilot:
        banner = app.screen.query_one(Banner)
        await until(pilot, lambda: table(app, "#fleet").row_count == 1, "the agent")
        await asyncio.to_thread(broker.stop)
        await until(pilot, lambda: banner.has_class("-shown"), "the banner")
        assert text(banner).startswith("relay unreachable since")
        await asyncio.to_thread(broker.start)
        await retain(broker, FLEET[2:3], "distillsync")  # this broker keeps nothing
        await until(pilot, lambda: not banner.has_class("-shown"), "the relay back", seconds=15)
        assert table(app, "#fleet").row_count == 2
