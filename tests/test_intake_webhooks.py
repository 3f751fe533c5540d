"""``POST /v1/webhooks/{shop}`` against the WooCommerce simulator's real deliveries: the
signature before anything else, the ping, 2xx only once committed, the special bodies as
notes, a replay under another topic, and a same-second conflict settled by a re-read.

The intake's parts run in this process (store on a SQLite file, the real WooCommerce client,
the webhook app on a loopback port); publishing is the publisher's tests' business.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from relay.intake.clients.woocommerce import Client, Settings
from relay.intake.intake import Intake, Route
from relay.intake.status import IntakeStats
from relay.intake.store import IntakeStore
from relay.intake.webhooks import FLAVOURS, WebhookHandler, WebhookShop, webhook_app
from tests.sims.woocommerce import WooCommerceSim
from tests.support import write_secret

SECRET = "hook-secret"
SHOP = "woo-main"
MUG, TEE = ("MUG-1", 2, "12.10"), ("TEE-M", 1, "19.95")
T0 = datetime(2026, 12, 2, 13, 44, 4, tzinfo=UTC)


@dataclass
class Rig:
    shop: WooCommerceSim
    store: IntakeStore
    intake: Intake
    stats: IntakeStats
    url: str
    http: aiohttp.ClientSession

    async def post(self, body: bytes, topic: str = "order.updated", **headers: str) -> int:
        sent = {
            "Content-Type": "application/json",
            "X-WC-Webhook-Topic": topic,
            "X-WC-Webhook-Signature": sign(body),
        }
        sent.update(headers)
        async with self.http.post(self.url, data=body, headers=sent) as answer:
            return answer.status

    async def events(self) -> list[dict[str, Any]]:
        """The data of every stored event, in sequence order."""
        return [orjson.loads(out.payload)["data"] for out in await self.store.pending(0, 1000)]

    async def settled(self) -> None:
        await self.shop.settled()
        await self.intake.reread_all()

    def webhooks(self, outcome: str) -> int:
        return self.stats.webhooks[(SHOP, outcome)]


def sign(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    write_secret(tmp_path / "key", "ck_sim")
    write_secret(tmp_path / "secret", "cs_sim")
    async with WooCommerceSim() as shop:
        shop.order_clock = lambda: T0.timestamp()
        settings = Settings.model_validate(
            {
                "type": "woocommerce",
                "name": SHOP,
                "url": shop.url,
                "consumer_key_file": tmp_path / "key",
                "consumer_secret_file": tmp_path / "secret",
                "requests_per_second": 1000.0,
            }
        )
        client = Client(settings)
        route = Route(SHOP, "acme", "erp1", client)
        store = await IntakeStore.open(f"sqlite:///{tmp_path / 'intake.db'}", "distillsync")
        stats = IntakeStats("test")
        intake = Intake(store, {SHOP: route}, stats, lambda: None)
        shops = {
            SHOP: WebhookShop(route, FLAVOURS["woocommerce"], SECRET),
            "ps": WebhookShop(Route("ps", "acme", "erp1", client), None, None),
        }
        handler = WebhookHandler(intake, shops, max_body=64 * 1024)
        server = TestServer(webhook_app(handler, 64 * 1024), host="127.0.0.1")
        await server.start_server()
        rereads = asyncio.create_task(intake.rereads())
        try:
            async with aiohttp.ClientSession() as http:
                url = str(server.make_url(f"/v1/webhooks/{SHOP}"))
                yield Rig(shop, store, intake, stats, url, http)
        finally:
            rereads.cancel()
            await server.close()
            await client.close()
            await store.close()


async def test_registering_the_hooks_is_answered_ping_by_ping_and_stores_nothing(rig: Rig) -> None:
    hooks = await rig.intake.routes[SHOP].client.register_hooks(rig.url, SECRET)
    assert {h.status for h in hooks} == {"active"} and len(hooks) == 4
    assert rig.webhooks("ping") == 4 and len(rig.shop.pings) == 4
    assert all(p.status == 200 for p in rig.shop.pings)  # exactly 200: no re-sent pings
    assert await rig.events() == []


async def test_a_rest_order_fires_twice_and_is_stored_once(rig: Rig) -> None:
    await rig.intake.routes[SHOP].client.register_hooks(rig.url, SECRET)
    order_id = rig.shop.create([MUG, TEE], paid=True, status="processing")
    await rig.settled()
    events = await rig.events()
    assert [(e["order_ref"], e["payment_status"]) for e in events] == [(str(order_id), "paid")]
    assert rig.webhooks("accepted") == 2
    assert rig.stats.events[(SHOP, "stored")] == 1
    assert rig.stats.events[(SHOP, "duplicate")] == 1


async def test_signatures_are_checked_over_the_raw_body_before_anything(rig: Rig) -> None:
    body = orjson.dumps({"id": 31, "status": "processing"})
    assert await rig.post(body, **{"X-WC-Webhook-Signature": sign(body, "wrong-secret")}) == 401
    assert await rig.post(body + b" ", **{"X-WC-Webhook-Signature": sign(body)}) == 401  # tampered
    async with rig.http.post(
        rig.url, data=body, headers={"X-WC-Webhook-Topic": "order.updated"}
    ) as a:
        assert a.status == 401  # missing
    assert (rig.webhooks("bad_signature"), rig.webhooks("missing_signature")) == (2, 1)
    assert await rig.events() == [] and await rig.store.notes(None, 0, 10) == []


async def test_a_form_body_that_is_not_a_ping_needs_a_signature(rig: Rig) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    async with rig.http.post(rig.url, data=b"webhook_id=17", headers=form) as answer:
        assert answer.status == 200
    async with rig.http.post(rig.url, data=b"webhook_id=17&x=1", headers=form) as answer:
        assert answer.status == 401
    assert (rig.webhooks("ping"), rig.webhooks("missing_signature")) == (1, 1)


async def test_a_valid_body_replayed_under_another_topic_is_the_same_state(rig: Rig) -> None:
    order_id = rig.shop.create([MUG], paid=True, status="processing")
    body = orjson.dumps(rig.shop.order(order_id))
    assert await rig.post(body, "order.updated") == 200
    assert await rig.post(body, "order.deleted") == 200  # the topic is not signed: not trusted
    assert await rig.post(body, "action.woocommerce_something") == 200
    assert len(await rig.events()) == 1
    assert await rig.store.notes(None, 0, 10) == []  # not recorded as trashed
    assert rig.webhooks("ignored_topic") == 1


async def test_bodies_that_are_not_orders_to_import_are_notes(rig: Rig) -> None:
    await rig.intake.routes[SHOP].client.register_hooks(rig.url, SECRET)
    rig.shop.abandon([MUG])
    trashed = rig.shop.create([TEE], paid=True, status="processing")
    await rig.settled()
    rig.shop.trash(trashed)
    await rig.settled()
    rig.shop.hold()
    gone = rig.shop.create([MUG], paid=True, status="processing")
    rig.shop.delete(gone)
    rig.shop.release()
    await rig.settled()
    assert await rig.post(b"not json {") == 200
    kinds = [(n.kind, n.order_ref) for n in await rig.store.notes(None, 0, 100)]
    assert ("trashed", str(trashed)) in kinds
    assert {k for k, _ in kinds} == {"draft", "trashed", "gone", "dead"}
    dead = await rig.store.notes("dead", 0, 10)
    assert dead[0].reason.startswith("body is not JSON") and dead[0].body == b"not json {"


async def test_unknown_shops_and_shops_without_webhooks_are_404(rig: Rig) -> None:
    body = b"{}"
    for name in ("nobody", "ps"):
        url = rig.url.replace(f"/{SHOP}", f"/{name}")
        async with rig.http.post(
            url, data=body, headers={"X-WC-Webhook-Signature": sign(body)}
        ) as a:
            assert a.status == 404
    assert rig.stats.webhooks[("-", "unknown_shop")] == 1
    assert rig.stats.webhooks[("ps", "no_webhooks")] == 1


async def test_a_body_larger_than_max_body_is_413_and_never_read(rig: Rig) -> None:
    assert await rig.post(b"x" * (65 * 1024)) == 413
    assert rig.webhooks("too_large") == 1


async def test_an_older_body_of_the_same_second_arriving_last_is_settled_by_a_re_read(
    rig: Rig,
) -> None:
    """Two states in one second, their deliveries crossed: the late older body must not
    become the newest; the intake re-reads the order and the newest state has the highest
    sequence."""
    order_id = rig.shop.create([MUG], status="pending")
    first = orjson.dumps(rig.shop.order(order_id))
    rig.shop.update(order_id, status="processing", paid=True)  # same second: same version
    second = orjson.dumps(rig.shop.order(order_id))
    assert await rig.post(second) == 200
    assert await rig.post(first) == 200  # late: a conflict, re-read
    await rig.settled()
    assert [e["payment_status"] for e in await rig.events()] == ["paid"]
    assert rig.stats.events[(SHOP, "conflict")] == 1

    rig.shop.update(order_id, customer_note="ring twice")  # a third state, same second
    assert await rig.post(first) == 200  # the oldest again: re-read finds the third
    await rig.settled()
    data = await rig.events()
    assert [e["note"] for e in data] == [None, "ring twice"]
    assert len({e["version"] for e in data}) == 1  # all in one second
