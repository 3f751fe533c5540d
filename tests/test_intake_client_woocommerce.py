"""The intake's WooCommerce client against the WooCommerce simulator on loopback, and the
simulator's orders and webhooks behaving as DESIGN.md says a real 9.9 does."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from relay.intake.clients import ShopRefused, ShopUnreadable
from relay.intake.clients.woocommerce import Client, Settings, modified_after
from relay.intake.order import Order
from relay.intake.outcome import Draft, Gone, Trashed
from relay.intake.source import HookState, Polled
from relay.intake.woocommerce import map_body, map_order
from relay.sinks.woocommerce import Credentials
from tests.sims import Catcher
from tests.sims.woocommerce import API, WooCommerceSim
from tests.support import write_secret

MakeClient = Callable[..., Client]
MUG, TEE = ("MUG-1", 2, "12.10"), ("TEE-M", 1, "19.95")
T0 = datetime(2026, 12, 2, 13, 44, 4, tzinfo=UTC)
SECRET = "hook-secret"


@pytest.fixture
async def shop() -> AsyncIterator[WooCommerceSim]:
    async with WooCommerceSim() as running:
        running.order_clock = lambda: T0.timestamp()
        yield running


@pytest.fixture
async def catcher() -> AsyncIterator[Catcher]:
    async with Catcher() as running:
        yield running


@pytest.fixture
async def make_client(
    tmp_path: Path, shop: WooCommerceSim, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[MakeClient]:
    write_secret(tmp_path / "key", shop.consumer_key + "\n")
    monkeypatch.setenv("WOO_SECRET", shop.consumer_secret)
    made: list[Client] = []

    def make(**overrides: Any) -> Client:
        settings = {
            "type": "woocommerce",
            "name": "woo-main",
            "url": shop.url,
            "consumer_key_file": tmp_path / "key",
            "consumer_secret_env": "WOO_SECRET",
            "requests_per_second": 1000.0,
            "backoff": "10ms",
            "timeout": "2s",
        }
        made.append(Client(Settings.model_validate(settings | overrides)))
        return made[-1]

    yield make
    for client in made:
        await client.close()


def at(shop: WooCommerceSim, moment: datetime) -> None:
    shop.order_clock = lambda: moment.timestamp()


async def polled(client: Client, since: datetime) -> list[Polled]:
    return [item async for item in client.changed_since(since)]


def refs(items: list[Polled]) -> list[str]:
    return [item.mapped.order_ref for item in items if isinstance(item.mapped, Order)]


async def shop_get(
    shop: WooCommerceSim,
    path: str,
    params: dict[str, str],
    *,
    method: str = "GET",
    json: Any = None,
) -> Any:
    """A signed request straight to the simulator: (status, headers, JSON body)."""
    url = f"{shop.url}{API}/{path}"
    signed = Credentials(shop.consumer_key, shop.consumer_secret, "oauth1").params(
        method, url, params
    )
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, params=signed, json=json) as response,
    ):
        return response.status, response.headers, orjson.loads(await response.read())


def signed_by(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


# --- the simulator's orders map as the fixtures do ----------------------------------------


async def test_every_kind_of_simulated_order_maps_cleanly(shop: WooCommerceSim) -> None:
    placed = [
        shop.create([MUG, TEE], paid=True),
        shop.create([MUG], customer_id=2, coupon=10),
        shop.checkout([TEE, ("CAP", 3, "7.99")], coupon=10, shipping=False),
    ]
    for order_id in placed:
        mapped = map_order("woo-main", shop.order(order_id))
        assert isinstance(mapped, Order), mapped
        assert mapped.checks == (), mapped.checks  # every figure adds up, as a real one's


async def test_the_body_is_encoded_as_wordpress_does(
    shop: WooCommerceSim, catcher: Catcher
) -> None:
    shop.add_hook("order.created", catcher.url, SECRET)
    order_id = shop.create([MUG])
    await shop.settled()
    raw = catcher.caught[0].body
    assert b"\\/wp-json\\/wc\\/v3\\/orders" in raw and b"\\u00e9" in raw  # "/" and "é" escaped
    assert list(orjson.loads(raw)) == list(shop.order(order_id))  # keys in the REST order


# --- polls -----------------------------------------------------------------------------


async def test_a_poll_reads_every_page_oldest_first(
    shop: WooCommerceSim, make_client: MakeClient
) -> None:
    placed = []
    for n in range(230):
        at(shop, T0 + timedelta(seconds=230 - n))  # made newest first: the poll must sort
        placed.append(str(shop.create([MUG])))
    items = await polled(make_client(), T0)
    assert refs(items) == placed[::-1]
    assert [item.version for item in items] == sorted(item.version for item in items)
    pages = shop.requests("GET", "/orders")
    assert [hit.query["page"] for hit in pages] == ["1", "2", "3"]
    assert {hit.query["per_page"] for hit in pages} == {"100"}


async def test_modified_after_is_sent_naive_one_second_early(
    shop: WooCommerceSim, make_client: MakeClient
) -> None:
    for offset in (-1, 0, 1):
        at(shop, T0 + timedelta(seconds=offset))
        shop.create([MUG])
    items = await polled(make_client(), T0 + timedelta(microseconds=250_000))
    assert [item.version for item in items] == [T0, T0 + timedelta(seconds=1)]
    [hit] = shop.requests("GET", "/orders")
    assert hit.query["modified_after"] == "2026-12-02T13:44:03" == modified_after(T0)
    assert hit.query["dates_are_gmt"] == "true"
    assert (hit.query["orderby"], hit.query["order"]) == ("modified", "asc")


async def test_the_bound_is_exclusive_and_a_z_suffix_matches_nothing(shop: WooCommerceSim) -> None:
    shop.create([MUG])
    gmt = {"dates_are_gmt": "true"}
    status, headers, body = await shop_get(
        shop, "orders", {**gmt, "modified_after": "2026-12-02T13:44:03"}
    )
    assert (status, len(body), headers["X-WP-Total"]) == (200, 1, "1")
    _, _, body = await shop_get(shop, "orders", {**gmt, "modified_after": "2026-12-02T13:44:04"})
    assert body == []  # exclusive
    _, headers, body = await shop_get(
        shop, "orders", {**gmt, "modified_after": "2026-12-02T13:44:03Z"}
    )
    assert (body, headers["X-WP-Total"]) == ([], "0")
    # Without dates_are_gmt the bound is the store's local time (UTC+1 here).
    _, _, body = await shop_get(shop, "orders", {"modified_after": "2026-12-02T14:44:03"})
    assert len(body) == 1


async def test_paging_limits_and_a_page_past_the_end(shop: WooCommerceSim) -> None:
    shop.create([MUG])
    status, _, body = await shop_get(shop, "orders", {"per_page": "101"})
    assert (status, body["code"]) == (400, "rest_invalid_param")
    status, headers, body = await shop_get(shop, "orders", {"page": "5"})
    assert (status, body, headers["X-WP-Total"], headers["X-WP-TotalPages"]) == (200, [], "1", "1")


async def test_several_changes_in_one_second_share_the_version(
    shop: WooCommerceSim, make_client: MakeClient
) -> None:
    order_id = shop.create([MUG])
    shop.update(order_id, status="on-hold")
    shop.update(order_id, status="processing", paid=True)
    [item] = await polled(make_client(), T0)
    assert item.version == T0
    assert isinstance(item.mapped, Order) and item.mapped.payment_status == "paid"


async def test_status_any_leaves_out_trashed_orders_and_drafts(
    shop: WooCommerceSim, make_client: MakeClient
) -> None:
    kept, trashed = shop.create([MUG]), shop.create([TEE])
    shop.abandon([MUG])
    shop.trash(trashed)
    assert refs(await polled(make_client(), T0)) == [str(kept)]


async def test_read_order_now_trashed_and_gone(
    shop: WooCommerceSim, make_client: MakeClient
) -> None:
    client = make_client()
    order_id = shop.create([MUG, TEE])
    mapped = await client.read_order(str(order_id))
    assert isinstance(mapped, Order) and [line.sku for line in mapped.lines] == ["MUG-1", "TEE-M"]
    shop.trash(order_id)
    assert await client.read_order(str(order_id)) == Trashed(str(order_id))
    shop.delete(order_id)
    assert await client.read_order(str(order_id)) == Gone(
        "woocommerce_rest_shop_order_invalid_id", "Invalid ID."
    )


# --- the shop failing --------------------------------------------------------------------


async def test_429_and_5xx_are_retried(shop: WooCommerceSim, make_client: MakeClient) -> None:
    order_id = shop.create([MUG])
    shop.fail_next(1, 429, retry_after="0")
    shop.fail_next(2, 503)
    assert refs(await polled(make_client(), T0)) == [str(order_id)]
    assert [hit.status for hit in shop.requests("GET", "/orders")] == [429, 503, 503, 200]


async def test_a_shop_that_keeps_failing_is_unreadable_for_now(
    shop: WooCommerceSim, make_client: MakeClient
) -> None:
    shop.fail_next(3, 502)
    with pytest.raises(ShopUnreadable) as raised:
        await polled(make_client(max_retries=2), T0)
    assert raised.value.retryable and "woocommerce woo-main" in str(raised.value)
    assert "HTTP 502" in str(raised.value)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("<html><body>Error establishing a database connection</body></html>", "is not JSON"),
        ('{"orders": []}', r"the order list \(page 1\) is a dict, not a list"),
        ('[{"id": 5}]', r"order in the order list \(id 5\) has no readable date_modified_gmt"),
    ],
)
async def test_garbage_is_a_clear_error(
    shop: WooCommerceSim, make_client: MakeClient, body: str, says: str
) -> None:
    shop.answer_next(1, 200, body)
    with pytest.raises(ShopUnreadable, match=says) as raised:
        await polled(make_client(), T0)
    assert str(raised.value).startswith("woocommerce woo-main: ")


async def test_a_refused_key_is_not_retryable(
    shop: WooCommerceSim, make_client: MakeClient
) -> None:
    shop.consumer_secret = "cs_other"
    with pytest.raises(ShopRefused, match="check consumer_secret") as raised:
        await polled(make_client(), T0)
    assert not raised.value.retryable


async def test_an_unsigned_request_is_refused_by_the_order_routes(shop: WooCommerceSim) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{shop.url}{API}/orders/1") as response,
    ):
        assert response.status == 401
        assert (await response.json())["code"] == "woocommerce_rest_cannot_view"


# --- hooks ---------------------------------------------------------------------------------


async def test_register_hooks_is_idempotent_and_each_new_hook_is_pinged(
    shop: WooCommerceSim, make_client: MakeClient, catcher: Catcher
) -> None:
    client = make_client()
    assert {state.status for state in await client.hooks(catcher.url)} == {"missing"}
    states = await client.register_hooks(catcher.url, SECRET)
    topics = ["order.created", "order.updated", "order.deleted", "order.restored"]
    assert [(state.topic, state.status) for state in states] == [(t, "active") for t in topics]
    assert len(shop.requests("POST", "/webhooks")) == 4
    assert await client.register_hooks(catcher.url, SECRET) == states
    assert len(shop.requests("POST", "/webhooks")) == 4  # the second call made nothing
    pings = catcher.caught
    assert [ping.body for ping in pings] == [f"webhook_id={s.ref}".encode() for s in states]
    for ping in pings:  # unsigned, form-encoded, no X-WC-Webhook-* header at all
        assert ping.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert not any(name.startswith("X-WC-") for name in ping.headers)
    assert {hook.secret for hook in shop.hooks.values()} == {SECRET}


async def test_only_an_exact_200_clears_the_ping(
    shop: WooCommerceSim, make_client: MakeClient, catcher: Catcher
) -> None:
    catcher.answer_next(201)
    await make_client().register_hooks(catcher.url, SECRET)
    created = next(hook for hook in shop.hooks.values() if hook.topic == "order.created")
    assert created.pending_delivery
    shop.create([MUG])
    await shop.settled()
    # After the delivery the ping goes again, answered 200 this time.
    assert [p.status for p in shop.pings if p.hook == created.id] == [201, 200]
    assert not created.pending_delivery


async def test_seven_failures_in_a_row_disable_a_hook_and_hooks_says_so(
    shop: WooCommerceSim, make_client: MakeClient, catcher: Catcher
) -> None:
    client = make_client()
    hook = shop.add_hook("order.created", catcher.url, SECRET)
    catcher.status = 500
    for _ in range(6):
        shop.create([MUG])
    await shop.settled()
    assert shop.hooks[hook].status == "active"  # 6 in a row: still active
    shop.create([MUG])
    await shop.settled()
    states = {state.topic: state for state in await client.hooks(catcher.url)}
    assert states["order.created"] == HookState("order.created", catcher.url, "disabled", str(hook))
    assert states["order.updated"].status == "missing"
    shop.create([MUG])  # a disabled hook delivers nothing
    await shop.settled()
    assert len(catcher.caught) == 7
    # Re-enabled over REST, the count stays: the next failure disables it again at once.
    status, _, body = await shop_get(
        shop, f"webhooks/{hook}", {}, method="PUT", json={"status": "active"}
    )
    assert (status, body["status"], shop.hooks[hook].failure_count) == (200, "active", 7)
    shop.create([MUG])
    await shop.settled()
    assert shop.hooks[hook].status == "disabled"


async def test_a_success_clears_the_failure_count(shop: WooCommerceSim, catcher: Catcher) -> None:
    hook = shop.add_hook("order.created", catcher.url, SECRET)
    catcher.answer_next(*[500] * 6, 302)
    for _ in range(7):
        shop.create([MUG])
    await shop.settled()
    assert (shop.hooks[hook].status, shop.hooks[hook].failure_count) == ("active", 0)


# --- deliveries ----------------------------------------------------------------------------


async def test_a_delivery_is_signed_over_its_raw_body(
    shop: WooCommerceSim, catcher: Catcher
) -> None:
    hook = shop.add_hook("order.created", catcher.url, SECRET)
    order_id = shop.create([MUG])
    await shop.settled()
    [caught] = catcher.caught
    assert caught.headers["X-WC-Webhook-Signature"] == signed_by(SECRET, caught.body)
    assert caught.headers["X-WC-Webhook-Topic"] == "order.created"
    assert caught.headers["X-WC-Webhook-Resource"] == "order"
    assert caught.headers["X-WC-Webhook-Event"] == "created"
    assert caught.headers["X-WC-Webhook-ID"] == str(hook)
    assert caught.headers["X-WC-Webhook-Source"] == f"{shop.url}/"
    assert caught.headers["User-Agent"].startswith("WooCommerce/9.9")
    second = int(T0.timestamp())
    assert caught.headers["X-WC-Webhook-Delivery-ID"] == (
        hashlib.md5(f"{hook}{second}".encode()).hexdigest()  # hook id + second: not unique
    )
    mapped = map_body("woo-main", caught.body)
    assert isinstance(mapped, Order) and mapped.order_ref == str(order_id)


async def test_rest_create_fires_created_then_updated_with_one_body(
    shop: WooCommerceSim, catcher: Catcher
) -> None:
    for topic in ("order.created", "order.updated"):
        shop.add_hook(topic, catcher.url, SECRET)
    shop.create([MUG])
    await shop.settled()
    assert [c.headers["X-WC-Webhook-Topic"] for c in catcher.caught] == [
        "order.created",
        "order.updated",
    ]
    assert catcher.caught[0].body == catcher.caught[1].body


async def test_a_store_api_checkout_fires_updated_before_created(
    shop: WooCommerceSim, catcher: Catcher
) -> None:
    for topic in ("order.created", "order.updated"):
        shop.add_hook(topic, catcher.url, SECRET)
    shop.checkout([MUG])
    await shop.settled()
    assert [c.headers["X-WC-Webhook-Topic"] for c in catcher.caught] == [
        "order.updated",
        "order.created",
    ]
    assert orjson.loads(catcher.caught[0].body)["created_via"] == "store-api"


async def test_an_abandoned_checkout_is_an_update_with_status_checkout_draft(
    shop: WooCommerceSim, catcher: Catcher
) -> None:
    for topic in ("order.created", "order.updated"):
        shop.add_hook(topic, catcher.url, SECRET)
    order_id = shop.abandon([MUG])
    await shop.settled()
    [caught] = catcher.caught
    assert caught.headers["X-WC-Webhook-Topic"] == "order.updated"
    assert map_body("woo-main", caught.body) == Draft(str(order_id), T0)


async def test_changes_close_together_coalesce_into_the_final_state(
    shop: WooCommerceSim, catcher: Catcher
) -> None:
    shop.add_hook("order.updated", catcher.url, SECRET)
    shop.hold()
    order_id = shop.create([MUG])
    shop.update(order_id, status="on-hold")
    at(shop, T0 + timedelta(seconds=1))
    shop.update(order_id, status="completed", paid=True)
    shop.release()
    await shop.settled()
    [caught] = catcher.caught  # one delivery for three changes, built when sent
    body = orjson.loads(caught.body)
    assert (body["status"], body["date_modified_gmt"]) == ("completed", "2026-12-02T13:44:05")


async def test_trash_fires_deleted_with_the_id_only(shop: WooCommerceSim, catcher: Catcher) -> None:
    shop.add_hook("order.deleted", catcher.url, SECRET)
    order_id = shop.create([MUG])
    shop.trash(order_id)
    await shop.settled()
    [caught] = catcher.caught
    assert caught.body == f'{{"id":{order_id}}}'.encode()
    assert map_body("woo-main", caught.body) == Trashed(str(order_id))


async def test_a_delivery_queued_before_a_permanent_delete_carries_the_rest_error(
    shop: WooCommerceSim, catcher: Catcher
) -> None:
    shop.add_hook("order.updated", catcher.url, SECRET)
    shop.hold()
    order_id = shop.create([MUG])
    shop.delete(order_id)  # fires nothing itself
    shop.release()
    await shop.settled()
    [caught] = catcher.caught
    assert caught.headers["X-WC-Webhook-Signature"] == signed_by(SECRET, caught.body)
    assert map_body("woo-main", caught.body) == Gone(
        "woocommerce_rest_shop_order_invalid_id", "Invalid ID."
    )


async def test_notes_fire_nothing_and_meta_fires_a_new_version(
    shop: WooCommerceSim, catcher: Catcher
) -> None:
    shop.add_hook("order.updated", catcher.url, SECRET)
    order_id = shop.create([MUG])
    await shop.settled()
    at(shop, T0 + timedelta(seconds=3))
    shop.add_note(order_id, "ERP order SO-1")
    await shop.settled()
    assert len(catcher.caught) == 1
    shop.write_meta(order_id, "_erp_ref", "SO-1")
    await shop.settled()
    first, second = (orjson.loads(c.body) for c in catcher.caught)
    assert second["date_modified_gmt"] == "2026-12-02T13:44:07" != first["date_modified_gmt"]


async def test_test_controls_drop_duplicate_and_hold(
    shop: WooCommerceSim, catcher: Catcher
) -> None:
    shop.add_hook("order.created", catcher.url, SECRET)
    shop.drop_next()
    dropped = shop.create([MUG])
    shop.duplicate_next()
    twice = shop.create([MUG])
    await shop.settled()
    assert [orjson.loads(c.body)["id"] for c in catcher.caught] == [twice, twice]
    assert [(d.order_id, d.sent) for d in shop.deliveries] == [
        (dropped, False),
        (twice, True),
        (twice, True),
    ]
    shop.hold()
    late = shop.create([MUG])
    await shop.settled()  # held: nothing goes, and settled() does not wait for it
    assert len(catcher.caught) == 2
    shop.update(late, customer_note="changed while held")
    shop.release()
    await shop.settled()
    assert orjson.loads(catcher.caught[-1].body)["customer_note"] == "changed while held"


async def test_a_slow_answer_blocks_the_queue_and_counts_as_a_failure(
    shop: WooCommerceSim, catcher: Catcher
) -> None:
    hook = shop.add_hook("order.created", catcher.url, SECRET)
    shop.delivery_timeout = 0.2
    catcher.answer_next(0)  # the first answer never comes
    first, second = shop.create([MUG]), shop.create([TEE])
    await shop.settled()
    assert [(d.order_id, d.status) for d in shop.deliveries] == [(first, None), (second, 200)]
    assert shop.hooks[hook].failure_count == 0  # the second succeeded: the count is cleared
