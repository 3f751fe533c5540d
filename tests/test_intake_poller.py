"""The catch-up poll against the WooCommerce simulator: a lost webhook repaired by the next
poll, the cursor moved only past what is committed, a failing shop keeping the cursor, the
overlap re-reading what whole-second stamps and offset paging hide, and hook health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.intake.clients.woocommerce import Client, Settings
from relay.intake.intake import Intake, Route
from relay.intake.poller import Poller
from relay.intake.status import IntakeStats
from relay.intake.store import IntakeStore
from tests.sims import Catcher
from tests.sims.woocommerce import WooCommerceSim
from tests.support import write_secret

SHOP = "woo-main"
MUG = ("MUG-1", 2, "12.10")
T0 = datetime(2026, 12, 2, 13, 44, 4, tzinfo=UTC)


@dataclass
class Rig:
    shop: WooCommerceSim
    store: IntakeStore
    intake: Intake
    poller: Poller
    now: list[datetime]

    def at(self, moment: datetime) -> None:
        self.now[0] = moment
        self.shop.order_clock = lambda: moment.timestamp()

    async def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(out.payload)["data"] for out in await self.store.pending(0, 1000)]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    write_secret(tmp_path / "key", "ck_sim")
    write_secret(tmp_path / "secret", "cs_sim")
    async with WooCommerceSim() as shop:
        settings = Settings.model_validate(
            {
                "type": "woocommerce",
                "name": SHOP,
                "url": shop.url,
                "consumer_key_file": tmp_path / "key",
                "consumer_secret_file": tmp_path / "secret",
                "requests_per_second": 1000.0,
                "backoff": "10ms",
                "max_retries": 1,
            }
        )
        client = Client(settings)
        store = await IntakeStore.open(f"sqlite:///{tmp_path / 'intake.db'}", "distillsync")
        route = Route(SHOP, "acme", "erp1", client)
        intake = Intake(store, {SHOP: route}, IntakeStats("test"), lambda: None)
        now = [T0]
        poller = Poller(
            intake,
            route,
            interval=60,
            overlap=600,
            backfill=3600,
            webhook_url="http://127.0.0.1:9/v1/webhooks/woo-main",
            now=lambda: now[0],
        )
        rig = Rig(shop, store, intake, poller, now)
        rig.at(T0)
        rereads = asyncio.create_task(intake.rereads())
        try:
            yield rig
        finally:
            rereads.cancel()
            await client.close()
            await store.close()


async def test_orders_whose_webhooks_were_lost_arrive_by_the_next_poll(rig: Rig) -> None:
    first = rig.shop.create([MUG], paid=True, status="processing")
    rig.at(T0 + timedelta(seconds=30))
    second = rig.shop.checkout([MUG], paid=True)
    assert await rig.poller.poll() == 2
    assert [e["order_ref"] for e in await rig.events()] == [str(first), str(second)]
    assert await rig.store.cursor(SHOP) == T0 + timedelta(seconds=30)
    assert await rig.poller.poll() == 2  # the overlap reads them again: duplicates
    assert len(await rig.events()) == 2
    assert rig.intake.stats.events[(SHOP, "duplicate")] == 2


async def test_several_changes_in_one_second_end_with_the_last_state(rig: Rig) -> None:
    order = rig.shop.create([MUG], status="pending")
    assert await rig.poller.poll() == 1
    rig.shop.update(order, status="processing", paid=True)  # the same second
    rig.shop.update(order, customer_note="leave at the door")
    assert await rig.poller.poll() == 1
    await rig.intake.reread_all()
    last = (await rig.events())[-1]
    assert (last["payment_status"], last["note"]) == ("paid", "leave at the door")


async def test_a_failing_shop_fails_the_poll_and_keeps_the_cursor(rig: Rig) -> None:
    rig.shop.create([MUG], paid=True, status="processing")
    assert await rig.poller.poll() == 1
    cursor = await rig.store.cursor(SHOP)
    rig.at(T0 + timedelta(minutes=5))
    rig.shop.create([MUG], paid=True, status="processing")
    rig.shop.fail_next(2, 503)  # the first try and its one retry
    assert await rig.poller.poll() is None
    stats = rig.intake.stats.poll(SHOP)
    assert stats.failures == 1 and stats.last_error
    assert await rig.store.cursor(SHOP) == cursor
    rig.shop.answer_next(1, 200, "<html>maintenance</html>")
    assert await rig.poller.poll() is None  # garbage is a failure too, not a crash
    assert await rig.poller.poll() == 2
    assert stats.last_error is None and len(await rig.events()) == 2


async def test_the_first_poll_reaches_back_as_far_as_backfill(rig: Rig) -> None:
    rig.at(T0 - timedelta(hours=2))
    rig.shop.create([MUG], paid=True, status="processing")  # before the backfill
    rig.at(T0 - timedelta(minutes=30))
    inside = rig.shop.create([MUG], paid=True, status="processing")
    rig.at(T0)
    assert await rig.poller.poll() == 1
    assert [e["order_ref"] for e in await rig.events()] == [str(inside)]


async def test_disabled_and_missing_hooks_show_in_the_hook_health(rig: Rig) -> None:
    """Deliveries to an intake that answers 500: WooCommerce disables the hooks that fire on
    their 7th failure in a row, and only its webhook list says so."""
    async with Catcher(status=500) as failing:
        rig.poller.webhook_url = failing.url
        await rig.intake.routes[SHOP].client.register_hooks(failing.url, "s")
        await rig.poller.check_hooks()
        health = rig.intake.stats.health(SHOP)
        assert health.count("active") == 4 and rig.intake.stats.disabled_hooks() == 0
        for _ in range(7):
            rig.shop.create([MUG], paid=True, status="processing")
            await rig.shop.settled()
        await rig.poller.check_hooks()
        disabled = sorted(h.topic for h in health.hooks if h.status == "disabled")
        assert disabled == ["order.created", "order.updated"]  # the two that fired
        restored = next(h for h in rig.shop.hooks.values() if h.topic == "order.restored")
        del rig.shop.hooks[restored.id]
        await rig.poller.check_hooks()
        assert health.count("missing") == 1 and rig.intake.stats.disabled_hooks() == 3
