"""A Shopify Admin GraphQL API on loopback: what :mod:`relay.sinks.shopify` sends and the
intake's Shopify client reads, and the shop's webhooks.

No GraphQL engine: a call is dispatched on its ``operationName`` (the root field it names
must be in the query text), and its variables are checked the way Shopify's schema and
resolvers check them. Modelled from shopify.dev:

- ``POST /admin/api/{version}/graphql.json``; ``X-Shopify-Access-Token`` or 401
  ``{"errors": "[API] Invalid API key or access token ..."}``; an unknown version is 404.
- Rate limits ("GraphQL Admin API rate limits"): a leaky bucket of cost points per app and
  shop. A call's requested cost is taken from the bucket before it runs and the difference
  to its actual cost refunded after; a call asking for more than the bucket holds gets HTTP
  200 with ``errors[].extensions.code == "THROTTLED"``; one above 1,000 points gets
  ``MAX_COST_EXCEEDED``; every answer carries ``extensions.cost`` with ``throttleStatus``.
  Costs: an object 1, a connection 2 + ``first`` x its node's cost, a mutation 10.
- ``productVariants(query:)`` search with ``sku:`` terms joined by ``OR`` (case-insensitive
  match), ``first`` at most 250, opaque cursors and ``pageInfo``.
- ``inventorySetQuantities`` as of 2026-04: ``changeFromQuantity`` required on every quantity
  (``null`` skips the check; a mismatch is ``CHANGE_FROM_QUANTITY_STALE``), the
  ``@idempotent(key:)`` directive required; the call is all or nothing. An (inventory item,
  location) pair named twice in one call is refused before anything is looked up:
  ``NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR`` ("The combination of inventoryItemId and
  locationId must be unique.") on every quantity of the pair, ``field: ["input",
  "quantities", "<i>", "locationId"]``. Idempotency ("Implementing idempotency"): the same
  key with the same input answers the first result without applying again; with another
  input, ``IDEMPOTENCY_KEY_PARAMETER_MISMATCH``; after a failed first attempt,
  ``IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED``; while the first request with the key is still
  being processed, ``IDEMPOTENCY_CONCURRENT_REQUEST`` ("This request is currently in
  progress, please try again": the client asks again with the same key). Keys are kept for
  the simulator's life (Shopify keeps them a day; no test runs that long).
- ``productVariantsBulkUpdate(productId, variants, allowPartialUpdates)``: per-variant
  ``userErrors`` with ``field: ["variants", "<i>", ...]``.

Orders and webhooks (shopify.dev: "orders" and "order" queries, search syntax,
"webhookSubscriptions", "webhookSubscriptionCreate", "About webhooks" / "Deliver webhooks
through HTTPS", and the changelog "Updates to webhook retry mechanism", September 2024):

- Orders are held in the webhook's (REST) shape, ``tests/fixtures/shopify``'s, times to the
  whole second of :attr:`ShopifySim.order_clock` with the shop's offset (``+01:00``);
  :func:`node_of` makes the GraphQL ``Order`` node from them (UTC ``Z`` times, gids, money
  sets), which :func:`relay.intake.shopify.map_node` maps to the same order. A test places
  and changes them with :meth:`~ShopifySim.add_order` (``orders/create``),
  :meth:`~ShopifySim.update_order` (``orders/updated``), :meth:`~ShopifySim.cancel_order`
  (``orders/cancelled`` + ``orders/updated``), :meth:`~ShopifySim.refund_order`
  (``refunds/create`` + ``orders/updated``), :meth:`~ShopifySim.delete_order`.
- ``orders(first <= 250, after, query: "updated_at:>='...'" (inclusive; a time without a
  zone is the shop's), sortKey: UPDATED_AT|CREATED_AT|ID, reverse)`` with ``edges { cursor
  node }`` and ``pageInfo``; cursors carry the last node's sort value and id, as Shopify's
  do, so a page after one does not shift when orders change. Cost 2 + ``first`` x
  :data:`ORDER_COST`, refunded to the nodes returned. ``order(id:)``: the node or ``null``.
- ``webhookSubscriptions(first, after)`` (``id topic uri format endpoint``) and
  ``webhookSubscriptionCreate(topic, webhookSubscription: {uri | callbackUrl, format})``:
  the same topic and address twice is a ``userErrors`` "Address for this topic has already
  been taken".
- Delivery: the payload is fixed when the event happens, one POST per subscription, signed
  ``X-Shopify-Hmac-Sha256`` (base64 HMAC-SHA256 of the raw body with the app's client
  secret, :attr:`ShopifySim.client_secret`), with ``X-Shopify-Topic``, ``-Shop-Domain``,
  ``-API-Version``, ``-Webhook-Id``, ``-Event-Id`` (one per event), ``-Triggered-At``. A
  non-2xx answer, no answer within 5 s or no connection is retried with the original body
  and headers, at most 8 times (:data:`REAL_RETRIES` over 4 hours; the simulator's
  :attr:`ShopifySim.retry_schedule`, or :meth:`ShopifySim.retry_now` when it is None).
  Test controls: :meth:`~ShopifySim.drop_next`, :meth:`~ShopifySim.duplicate_next`,
  :attr:`~ShopifySim.raw_next` (garbage answers), :meth:`~ShopifySim.settled`.

Faults for tests: :attr:`ShopifySim.fail_next` (HTTP statuses answered before anything
runs), :attr:`ShopifySim.lose_next` (apply a mutation, then answer 502 as if the answer got
lost), :attr:`ShopifySim.before_writes` (each runs just before one stock write: a sale
that lands between the sink's read and its write), :attr:`ShopifySim.hold_next` (a stock
write that is still being processed when its gateway answers 504; :meth:`ShopifySim.finish_held`
completes it, and :attr:`ShopifySim.after_concurrent` hooks run after each answer that it is
still in progress).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import itertools
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp
from aiohttp import web

from tests.sims import Served

TOKEN = "shpat_0123456789abcdef"
API_VERSION = "2026-10"
MAX_QUERY_COST = 1000
MAX_QUANTITY = 1_000_000_000
MAX_PRICE = Decimal("1000000000000000000")
QUANTITY_NAMES = {
    "available",
    "on_hand",
    "committed",
    "incoming",
    "reserved",
    "damaged",
    "quality_control",
    "safety_stock",
}
REASONS = {
    "correction",
    "cycle_count_available",
    "damaged",
    "movement_created",
    "movement_updated",
    "movement_received",
    "movement_canceled",
    "other",
    "promotion",
    "quality_control",
    "received",
    "reservation_created",
    "reservation_deleted",
    "reservation_updated",
    "restock",
    "safety_stock",
    "shrinkage",
}
Outcome = tuple[dict[str, Any], int]
"""An operation's ``data`` and its actual cost."""
_SKU_TERM = re.compile(r'^sku:(?:"((?:[^"\\]|\\.)*)"|([^\s"]+))$')


class GatewayTimeout(Exception):
    """Shopify goes on processing the call, but its gateway stops waiting: HTTP 504."""


class GraphQLError(Exception):
    """A top-level ``errors`` entry: the call did not run."""

    def __init__(self, message: str, code: str = "INVALID_VARIABLE") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class SimVariant:
    id: str
    sku: str
    product_id: str
    inventory_item_id: str
    price: str


@dataclass
class Level:
    on_hand: int
    committed: int = 0

    @property
    def available(self) -> int:
        return self.on_hand - self.committed


@dataclass(frozen=True)
class Operation:
    root: str
    """The root field the query must select."""
    cost: Callable[[dict[str, Any]], int]
    """Requested cost from the variables, before the call runs."""
    run: Callable[[str, dict[str, Any]], Outcome]


def _gid(kind: str, number: int) -> str:
    return f"gid://shopify/{kind}/{number}"


def _cursor(position: int) -> str:
    return base64.b64encode(f"cursor:{position}".encode()).decode()


def _position(cursor: str) -> int:
    try:
        return int(base64.b64decode(cursor).decode().split(":")[1])
    except (ValueError, IndexError) as error:
        raise GraphQLError(f"Invalid cursor for current pagination sort: {cursor}") from error


def _user_error(field: list[str], message: str, code: str) -> dict[str, Any]:
    return {"field": field, "message": message, "code": code}


def _whole_call_error(code: str, message: str) -> dict[str, Any]:
    """An ``inventorySetQuantities`` refused as a whole (no input field to blame)."""
    return {
        "inventorySetQuantities": {
            "inventoryAdjustmentGroup": None,
            "userErrors": [_user_error([], message, code)],
        }
    }


def _key_mismatch() -> dict[str, Any]:
    return _whole_call_error(
        "IDEMPOTENCY_KEY_PARAMETER_MISMATCH",
        "The same idempotency key cannot be used with different operation parameters.",
    )


class ShopifySim(Served):
    """One shop: products, variants, inventory levels per location, and a cost bucket."""

    def __init__(
        self,
        *,
        token: str = TOKEN,
        api_version: str = API_VERSION,
        maximum: float = 1000.0,
        restore_rate: float = 50.0,
        available: float | None = None,
    ) -> None:
        self.token = token
        self.api_version = api_version
        self.maximum, self.restore_rate = maximum, restore_rate
        self.bucket = maximum if available is None else available
        self._refilled = time.monotonic()
        self.variants: dict[str, SimVariant] = {}
        self.products: dict[str, list[str]] = {}
        self.location_ids: list[str] = []
        self.levels: dict[tuple[str, str], Level] = {}
        self.calls: Counter[str] = Counter()
        self.searched: Counter[str] = Counter()
        """How many VariantsBySku searches named each SKU."""
        self.throttled = 0
        self.stale = 0
        self.replays = 0
        self.adjustments: list[tuple[str, str, int]] = []
        """(inventory item, location, delta) of every quantity a write changed."""
        self.price_writes: list[tuple[str, str]] = []
        self.keys_seen: list[str] = []
        self.fail_next: list[int] = []
        self.lose_next = 0
        self.before_writes: list[Callable[[], None]] = []
        self.hold_next = 0
        """The next this many stock writes stay in progress, their callers answered 504."""
        self.after_concurrent: list[Callable[[], None]] = []
        """Each runs once an answer of IDEMPOTENCY_CONCURRENT_REQUEST is made."""
        self.concurrent = 0
        self._idempotency: dict[str, tuple[str, dict[str, Any], bool]] = {}
        self._held: dict[str, tuple[str, dict[str, Any]]] = {}
        """Key -> fingerprint and input of a stock write still being processed."""
        self._numbers = itertools.count(1001)
        self.operations = {
            "VariantsBySku": Operation(
                "productVariants(", self._variants_cost, self._variants_by_sku
            ),
            "StockLevels": Operation("nodes(", self._levels_cost, self._stock_levels),
            "SetStock": Operation("inventorySetQuantities(", lambda _: 10, self._set_stock),
            "SetPrices": Operation("productVariantsBulkUpdate(", lambda _: 10, self._set_prices),
            "Orders": Operation("orders(", self._orders_cost, self._orders),
            "Order": Operation("order(", lambda _: 1 + ORDER_COST, self._order),
            "WebhookSubscriptions": Operation(
                "webhookSubscriptions(",
                lambda v: 2 + v["first"] if isinstance(v.get("first"), int) else 0,
                self._subscriptions,
            ),
            "WebhookSubscriptionCreate": Operation(
                "webhookSubscriptionCreate(", lambda _: 10, self._create_subscription
            ),
        }
        self.client_secret = CLIENT_SECRET
        """The app's client secret, which signs every webhook."""
        self.shop_domain = "distillsync-sim.myshopify.com"
        self.order_clock: Callable[[], float] | None = None
        """Stamps orders' times (whole seconds); a fixed one puts changes in one second."""
        self.orders: dict[int, dict[str, Any]] = {}
        """Each order in the webhook's (REST) shape; the GraphQL node is made from it."""
        self.subscriptions: dict[str, Subscription] = {}
        self.deliveries: list[SentHook] = []
        self.retry_schedule: Sequence[float] | None = None
        """Seconds before each retry (at most 8; Shopify's are :data:`REAL_RETRIES`); None:
        failed deliveries wait for :meth:`retry_now`."""
        self.delivery_timeout = 5.0
        """Shopify waits 5 s for an answer; longer is a failure."""
        self._order_ids = itertools.count(5512384001)
        self._drops = 0
        self._duplicates = 0
        self._failed: list[Pending] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._waiting = 0
        self._changed = asyncio.Event()
        self.raw_next: list[str] = []
        """Bodies answered (HTTP 200) to the next calls instead of running them: garbage."""
        self._sender: aiohttp.ClientSession | None = None

    # --- the shop's contents ------------------------------------------------------------

    def add_location(self, location: str | None = None) -> str:
        location = location or _gid("Location", next(self._numbers))
        self.location_ids.append(location)
        return location

    def add_product(
        self, skus: list[str], *, price: str = "10.00", stock: dict[str, int] | None = None
    ) -> str:
        """A product with one variant per SKU, stocked at ``stock``'s locations."""
        product = _gid("Product", next(self._numbers))
        self.products[product] = []
        for sku in skus:
            number = next(self._numbers)
            variant = SimVariant(
                _gid("ProductVariant", number), sku, product, _gid("InventoryItem", number), price
            )
            self.variants[variant.id] = variant
            self.products[product].append(variant.id)
            for location, quantity in (stock or {}).items():
                self.levels[(variant.inventory_item_id, location)] = Level(quantity)
        return product

    def variant(self, sku: str) -> SimVariant:
        [found] = [variant for variant in self.variants.values() if variant.sku == sku]
        return found

    def level(self, sku: str, location: str) -> Level:
        return self.levels[(self.variant(sku).inventory_item_id, location)]

    def on_hand(self, sku: str, location: str) -> int:
        return self.level(sku, location).on_hand

    def price(self, sku: str) -> str:
        return self.variant(sku).price

    # --- orders: the shop's side (what a test does to the shop) -------------------------

    def now(self) -> datetime:
        """The shop's time, to the whole second."""
        return datetime.fromtimestamp(int((self.order_clock or time.time)()), UTC)

    def _stamp(self) -> str:
        local = self.now().astimezone(SHOP_ZONE)
        return local.isoformat()

    def add_order(self, body: dict[str, Any] | None = None, **fields: Any) -> int:
        """An order placed: ``body`` as the ``orders/create`` webhook carries it (a fixture's,
        say; by default one built by :func:`order_body`), ``fields`` over it, ``created_at``
        and ``updated_at`` now unless given. Fires ``orders/create``; returns its id."""
        order_id = int(body["id"]) if body is not None else next(self._order_ids)
        order = copy.deepcopy(body) if body is not None else order_body(order_id)
        stamp = self._stamp()
        order.setdefault("created_at", stamp)
        order["updated_at"] = stamp
        order.update(fields)
        self.orders[order_id] = order
        self._trigger("ORDERS_CREATE", order)
        return order_id

    def update_order(self, order_id: int, **fields: Any) -> None:
        """An edit: ``fields`` replace top-level fields, ``updated_at`` moves to the
        current second, ``orders/updated`` fires."""
        order = self.orders[order_id]
        order.update(fields, updated_at=self._stamp())
        self._trigger("ORDERS_UPDATED", order)

    def cancel_order(self, order_id: int) -> None:
        """``orderCancel``: ``cancelled_at`` set; ``orders/cancelled`` then ``orders/updated``."""
        order = self.orders[order_id]
        stamp = self._stamp()
        order.update(cancelled_at=stamp, cancel_reason="customer", updated_at=stamp)
        self._trigger("ORDERS_CANCELLED", order)
        self._trigger("ORDERS_UPDATED", order)

    def refund_order(self, order_id: int) -> int:
        """A full refund: ``refunds/create`` (the refund's body), then ``orders/updated``."""
        order = self.orders[order_id]
        refund_id = next(self._order_ids)
        stamp = self._stamp()
        refund = {
            "id": refund_id,
            "order_id": order_id,
            "admin_graphql_api_id": _gid("Refund", refund_id),
            "created_at": stamp,
            "note": None,
            "restock": True,
            "refund_line_items": [
                {"line_item_id": line["id"], "quantity": line["quantity"], "restock_type": "return"}
                for line in order.get("line_items", [])
            ],
            "transactions": [
                {"kind": "refund", "amount": order["total_price"], "status": "success"}
            ],
        }
        order.update(financial_status="refunded", updated_at=stamp)
        self._trigger("REFUNDS_CREATE", refund)
        self._trigger("ORDERS_UPDATED", order)
        return refund_id

    def delete_order(self, order_id: int) -> None:
        """``orderDelete``: gone from the API (``orders/delete`` is not modelled)."""
        del self.orders[order_id]

    # --- orders: the Admin GraphQL API ---------------------------------------------------

    def _orders_cost(self, variables: dict[str, Any]) -> int:
        first = variables.get("first")
        return 2 + ORDER_COST * first if isinstance(first, int) else 0

    def _orders(self, _query: str, variables: dict[str, Any]) -> Outcome:
        first, search, after = (variables.get(key) for key in ("first", "query", "after"))
        if not isinstance(first, int) or not 0 < first <= 250:
            raise GraphQLError("The page size must be between 1 and 250 (first)")
        if variables.get("sortKey", "ID") not in ("UPDATED_AT", "CREATED_AT", "ID"):
            raise GraphQLError(f"Invalid sortKey {variables.get('sortKey')!r}")
        since = _updated_since(search)
        nodes = sorted(
            (node_of(body) for body in self.orders.values()),
            key=_sort_key(str(variables.get("sortKey", "ID"))),
            reverse=bool(variables.get("reverse")),
        )
        if since is not None:
            nodes = [node for node in nodes if node["updatedAt"] >= since]
        if isinstance(after, str):
            last = _order_cursor_of(after)
            keys = [_cursor_key(node) for node in nodes]
            nodes = [
                n
                for n, k in zip(nodes, keys, strict=True)
                if (k > last) != bool(variables.get("reverse"))
            ]
        page = nodes[:first]
        data = {
            "orders": {
                "edges": [{"cursor": _order_cursor(node), "node": node} for node in page],
                "pageInfo": {
                    "hasNextPage": len(nodes) > first,
                    "endCursor": _order_cursor(page[-1]) if page else None,
                },
            }
        }
        return data, 2 + ORDER_COST * len(page)

    def _order(self, _query: str, variables: dict[str, Any]) -> Outcome:
        gid = variables.get("id")
        ref = gid.removeprefix("gid://shopify/Order/") if isinstance(gid, str) else ""
        if not ref.isdigit():
            raise GraphQLError(f"Invalid global id '{gid}'")
        body = self.orders.get(int(ref))
        return {"order": None if body is None else node_of(body)}, 1 + ORDER_COST

    # --- webhook subscriptions -------------------------------------------------------------

    def _subscriptions(self, _query: str, variables: dict[str, Any]) -> Outcome:
        first, after = variables.get("first"), variables.get("after")
        if not isinstance(first, int) or not 0 < first <= 250:
            raise GraphQLError("The page size must be between 1 and 250 (first)")
        subscriptions = sorted(self.subscriptions.values(), key=lambda s: s.number)
        start = _position(after) + 1 if isinstance(after, str) else 0
        page = subscriptions[start : start + first]
        data = {
            "webhookSubscriptions": {
                "nodes": [subscription.node() for subscription in page],
                "pageInfo": {
                    "hasNextPage": start + first < len(subscriptions),
                    "endCursor": _cursor(start + len(page) - 1) if page else None,
                },
            }
        }
        return data, 2 + len(page)

    def _create_subscription(self, _query: str, variables: dict[str, Any]) -> Outcome:
        topic, given = variables.get("topic"), variables.get("webhookSubscription")
        if topic not in TOPICS:
            raise GraphQLError(
                "Variable $topic of type WebhookSubscriptionTopic! was provided invalid "
                f"value {topic!r}"
            )
        if not isinstance(given, dict):
            raise GraphQLError("Variable $webhookSubscription was provided invalid value")
        uri = str(given.get("uri") or given.get("callbackUrl") or "")
        errors = []
        if not uri:
            errors.append(
                _user_error(
                    ["webhookSubscription", "callbackUrl"], "Address can't be blank", "BLANK"
                )
            )
        elif any(s.topic == topic and s.uri == uri for s in self.subscriptions.values()):
            errors.append(
                _user_error(
                    ["webhookSubscription", "callbackUrl"],
                    "Address for this topic has already been taken",
                    "TAKEN",
                )
            )
        if errors:
            return {
                "webhookSubscriptionCreate": {"webhookSubscription": None, "userErrors": errors}
            }, 10
        created = self.subscribe(topic, uri)
        return {
            "webhookSubscriptionCreate": {
                "webhookSubscription": self.subscriptions[created].node(),
                "userErrors": [],
            }
        }, 10

    def subscribe(self, topic: str, uri: str) -> str:
        """A subscription of ``topic`` (``ORDERS_CREATE`` ...) to ``uri``; returns its gid."""
        number = next(self._numbers)
        subscription = Subscription(number, topic, uri)
        self.subscriptions[subscription.id] = subscription
        return subscription.id

    # --- webhook delivery -----------------------------------------------------------------

    def drop_next(self, count: int = 1) -> None:
        """The next ``count`` deliveries are lost after Shopify counted them delivered: no
        retry (only a poll finds what they carried)."""
        self._drops += count

    def duplicate_next(self, count: int = 1) -> None:
        """The next ``count`` deliveries arrive twice (same event id, same body)."""
        self._duplicates += count

    async def retry_now(self) -> None:
        """Send every failed delivery's next retry at once (the schedule compressed to
        now), with its original payload and headers, and wait for the answers."""
        due, self._failed = self._failed, []
        for pending in due:
            self._spawn(pending)
        await self.settled()

    async def settled(self) -> None:
        """Wait until no delivery is in flight or waiting for its scheduled retry."""
        while self._sending or self._waiting:
            if self._sending:
                await asyncio.gather(*self._sending, return_exceptions=True)
            else:
                self._changed.clear()
                await self._changed.wait()

    def _trigger(self, topic: str, body: dict[str, Any]) -> None:
        """One event: its payload fixed now (retries carry it unchanged), one delivery per
        subscription to ``topic``, each with the event's id."""
        raw = json.dumps(body, ensure_ascii=False).encode()
        event_id = str(uuid.uuid4())
        triggered = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        for subscription in self.subscriptions.values():
            if subscription.topic != topic:
                continue
            headers = {
                "Content-Type": "application/json",
                "X-Shopify-Topic": TOPICS[topic],
                "X-Shopify-Hmac-Sha256": hmac_header(raw, self.client_secret),
                "X-Shopify-Shop-Domain": self.shop_domain,
                "X-Shopify-API-Version": self.api_version,
                "X-Shopify-Webhook-Id": str(uuid.uuid4()),
                "X-Shopify-Event-Id": event_id,
                "X-Shopify-Triggered-At": triggered,
            }
            self._spawn(Pending(subscription.uri, raw, headers))

    def _spawn(self, pending: Pending) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(pending))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, pending: Pending) -> None:
        if self._drops:
            self._drops -= 1
            self.deliveries.append(SentHook(pending, None, sent=False))
            return
        times = 1
        if self._duplicates:
            self._duplicates -= 1
            times = 2
        for _ in range(times):
            status = await self._post(pending)
            self.deliveries.append(SentHook(pending, status))
        if status is not None and 200 <= status < 300:
            return
        pending.attempts += 1
        if pending.attempts > len(REAL_RETRIES):
            return  # 8 retries spent: the event is given up
        if self.retry_schedule is None:
            self._failed.append(pending)  # a test sends it with retry_now()
            return
        delay = self.retry_schedule[pending.attempts - 1]
        self._waiting += 1
        self._timers.append(asyncio.get_running_loop().call_later(delay, self._due, pending))

    def _due(self, pending: Pending) -> None:
        self._waiting -= 1
        self._spawn(pending)
        self._changed.set()

    async def _post(self, pending: Pending) -> int | None:
        assert self._sender is not None
        try:
            async with self._sender.post(
                pending.uri,
                data=pending.body,
                headers=pending.headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.delivery_timeout),
            ) as response:
                await response.read()
                return response.status
        except (TimeoutError, aiohttp.ClientError):
            return None

    async def start(self) -> str:
        url = await super().start()
        self._sender = aiohttp.ClientSession()
        return url

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        if self._sender is not None:
            await self._sender.close()
        await super().close()

    # --- serving ------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/admin/api/{version}/graphql.json", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["version"] != self.api_version:
            return web.json_response({"errors": "Not Found"}, status=404)
        if request.headers.get("X-Shopify-Access-Token") != self.token:
            return web.json_response(
                {
                    "errors": "[API] Invalid API key or access token "
                    "(unrecognized login or wrong password)"
                },
                status=401,
            )
        if self.fail_next:
            status = self.fail_next.pop(0)
            return web.json_response(
                {"errors": "Internal Server Error"},
                status=status,
                headers={"Retry-After": "0"} if status == 429 else None,
            )
        if self.raw_next:
            return web.Response(text=self.raw_next.pop(0), content_type="application/json")
        body = await request.json()
        try:
            answer = self._execute(
                str(body.get("operationName") or ""),
                str(body.get("query", "")),
                body.get("variables") or {},
            )
        except GatewayTimeout:
            return web.json_response({"errors": "Gateway Timeout"}, status=504)
        if self.lose_next and "data" in answer and body.get("operationName", "").startswith("Set"):
            self.lose_next -= 1  # applied, but the answer never reaches the client
            return web.json_response({"errors": "Bad Gateway"}, status=502)
        return web.json_response(answer)

    def _execute(self, name: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        operation = self.operations.get(name)
        if operation is None or operation.root not in query:
            return {
                "errors": [
                    {
                        "message": f"Unknown operation {name!r}",
                        "extensions": {"code": "BAD_REQUEST"},
                    }
                ]
            }
        requested = operation.cost(variables)
        if requested > MAX_QUERY_COST:
            return {
                "errors": [
                    {
                        "message": f"Query cost is {requested}, which exceeds the single "
                        f"query max cost limit ({MAX_QUERY_COST}).",
                        "extensions": {
                            "code": "MAX_COST_EXCEEDED",
                            "cost": requested,
                            "maxCost": MAX_QUERY_COST,
                        },
                    }
                ]
            }
        self._refill()
        if self.bucket < requested:
            self.throttled += 1
            return {
                "errors": [
                    {
                        "message": "Throttled",
                        "extensions": {
                            "code": "THROTTLED",
                            "documentation": "https://shopify.dev/api/usage/rate-limits",
                        },
                    }
                ],
                "extensions": {"cost": self._cost(requested, None)},
            }
        self.bucket -= requested
        try:
            data, actual = operation.run(query, variables)
        except GraphQLError as error:
            self.bucket += requested  # refused before it ran
            return {"errors": [{"message": str(error), "extensions": {"code": error.code}}]}
        except GatewayTimeout:
            self.calls[name] += 1  # it runs on: only its answer is lost
            raise
        self.bucket = min(self.maximum, self.bucket + requested - actual)
        self.calls[name] += 1
        return {"data": data, "extensions": {"cost": self._cost(requested, actual)}}

    def _refill(self) -> None:
        now = time.monotonic()
        self.bucket = min(self.maximum, self.bucket + (now - self._refilled) * self.restore_rate)
        self._refilled = now

    def _cost(self, requested: int, actual: int | None) -> dict[str, Any]:
        return {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": {
                "maximumAvailable": self.maximum,
                "currentlyAvailable": round(self.bucket, 3),
                "restoreRate": self.restore_rate,
            },
        }

    # --- productVariants(query: "sku:...") -------------------------------------------------

    def _variants_cost(self, variables: dict[str, Any]) -> int:
        first = variables.get("first")
        return 2 + 3 * first if isinstance(first, int) else 0

    def _variants_by_sku(self, _query: str, variables: dict[str, Any]) -> Outcome:
        first, search, after = (variables.get(key) for key in ("first", "query", "after"))
        if not isinstance(first, int) or not 0 < first <= 250:
            raise GraphQLError("The page size must be between 1 and 250 (first)")
        if not isinstance(search, str):
            raise GraphQLError("Variable $query of type String! was provided invalid value")
        terms = self._search_terms(search)
        self.searched.update(terms)
        wanted = {sku.casefold() for sku in terms}
        matches = sorted(
            (variant for variant in self.variants.values() if variant.sku.casefold() in wanted),
            key=lambda variant: int(variant.id.rsplit("/", 1)[1]),
        )
        start = _position(after) + 1 if isinstance(after, str) else 0
        page = matches[start : start + first]
        nodes = [
            {
                "id": variant.id,
                "sku": variant.sku,
                "product": {"id": variant.product_id},
                "inventoryItem": {"id": variant.inventory_item_id},
            }
            for variant in page
        ]
        more = start + first < len(matches)
        data = {
            "productVariants": {
                "nodes": nodes,
                "pageInfo": {
                    "hasNextPage": more,
                    "endCursor": _cursor(start + len(page) - 1) if page else None,
                },
            }
        }
        return data, 2 + 3 * len(page)

    @staticmethod
    def _search_terms(search: str) -> list[str]:
        skus = []
        for term in re.split(r"\s+OR\s+", search.strip()):
            match = _SKU_TERM.match(term)
            if match is None:
                raise GraphQLError(f"this simulator only searches sku: terms, not {term!r}")
            quoted, bare = match.groups()
            skus.append(re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare)
        return skus

    # --- nodes(ids:) on InventoryItem with inventoryLevel(locationId:) -----------------------

    def _levels_cost(self, variables: dict[str, Any]) -> int:
        ids = variables.get("ids")
        return 3 * len(ids) if isinstance(ids, list) else 0

    def _stock_levels(self, _query: str, variables: dict[str, Any]) -> Outcome:
        ids, location, names = (variables.get(key) for key in ("ids", "locationId", "names"))
        if not isinstance(ids, list) or len(ids) > 250 or not isinstance(location, str):
            raise GraphQLError("Variable $ids or $locationId was provided invalid value")
        if not isinstance(names, list) or not set(names) <= QUANTITY_NAMES:
            raise GraphQLError(f"Invalid quantity names {names!r}")
        items = {variant.inventory_item_id for variant in self.variants.values()}
        nodes: list[dict[str, Any] | None] = []
        for item in ids:
            if item not in items:
                nodes.append(None)
                continue
            level = self.levels.get((item, location))
            nodes.append(
                {
                    "id": item,
                    "inventoryLevel": None
                    if level is None
                    else {
                        "quantities": [
                            {"name": name, "quantity": self._quantity(level, name)}
                            for name in names
                        ]
                    },
                }
            )
        return {"nodes": nodes}, 3 * sum(node is not None for node in nodes)

    @staticmethod
    def _quantity(level: Level, name: str) -> int:
        return {
            "on_hand": level.on_hand,
            "available": level.available,
            "committed": level.committed,
        }.get(name, 0)

    # --- inventorySetQuantities -------------------------------------------------------------

    def _set_stock(self, query: str, variables: dict[str, Any]) -> Outcome:
        key = variables.get("idempotencyKey")
        if "@idempotent(key: $idempotencyKey)" not in query or not isinstance(key, str) or not key:
            raise GraphQLError(
                "The @idempotent directive with a key is required for inventorySetQuantities",
                code="BAD_REQUEST",
            )
        payload = variables.get("input")
        self._check_set_input(payload)
        assert isinstance(payload, dict)
        self.keys_seen.append(key)
        fingerprint = json.dumps(payload, sort_keys=True)
        if key in self._held:
            return self._in_progress(key, fingerprint), 10
        if key in self._idempotency:
            return self._replay(key, fingerprint), 10
        if self.hold_next:
            self.hold_next -= 1
            self._held[key] = (fingerprint, payload)
            raise GatewayTimeout
        return self._run_set(key, fingerprint, payload), 10

    def finish_held(self) -> None:
        """Complete the stock writes still in progress, as Shopify would once it gets to them."""
        held, self._held = self._held, {}
        for key, (fingerprint, payload) in held.items():
            self._run_set(key, fingerprint, payload)

    def _run_set(self, key: str, fingerprint: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Apply one ``inventorySetQuantities`` input (all or nothing) and keep its result."""
        if self.before_writes:
            self.before_writes.pop(0)()
        quantities = payload["quantities"]
        errors = self._duplicate_pairs(quantities) or [
            error
            for position, quantity in enumerate(quantities)
            for error in self._check_quantity(position, quantity)
        ]
        result: dict[str, Any] = {"inventoryAdjustmentGroup": None, "userErrors": errors}
        if not errors:
            result["inventoryAdjustmentGroup"] = {
                "id": _gid("InventoryAdjustmentGroup", next(self._numbers))
            }
            for quantity in quantities:
                self._write_quantity(payload["name"], quantity)
        data = {"inventorySetQuantities": result}
        self._idempotency[key] = (fingerprint, data, not errors)
        return data

    @staticmethod
    def _duplicate_pairs(quantities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every quantity whose (inventory item, location) another quantity names too."""
        pairs = Counter(
            (quantity["inventoryItemId"], quantity["locationId"]) for quantity in quantities
        )
        return [
            _user_error(
                ["input", "quantities", str(position), "locationId"],
                "The combination of inventoryItemId and locationId must be unique.",
                "NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR",
            )
            for position, quantity in enumerate(quantities)
            if pairs[(quantity["inventoryItemId"], quantity["locationId"])] > 1
        ]

    def _check_set_input(self, payload: Any) -> list[dict[str, Any]]:
        if not isinstance(payload, dict):
            raise GraphQLError(
                "Variable $input of type InventorySetQuantitiesInput! was provided invalid value"
            )
        if payload.get("name") not in ("available", "on_hand"):
            raise GraphQLError("The quantity name must be either 'available' or 'on_hand'")
        if payload.get("reason") not in REASONS:
            raise GraphQLError(f"Invalid reason {payload.get('reason')!r}")
        uri = payload.get("referenceDocumentUri")
        if uri is not None and (not isinstance(uri, str) or ":" not in uri):
            raise GraphQLError("referenceDocumentUri must be a URI")
        quantities = payload.get("quantities")
        if not isinstance(quantities, list) or not quantities:
            raise GraphQLError("quantities must not be empty")
        for position, quantity in enumerate(quantities):
            if not isinstance(quantity, dict) or "changeFromQuantity" not in quantity:
                raise GraphQLError(
                    f"quantities.{position}.changeFromQuantity is required "
                    "(pass null to skip the compare)"
                )
            if not isinstance(quantity.get("quantity"), int) or not all(
                isinstance(quantity.get(field), str) for field in ("inventoryItemId", "locationId")
            ):
                raise GraphQLError(f"quantities.{position} was provided invalid value")
        return quantities

    def _in_progress(self, key: str, fingerprint: str) -> dict[str, Any]:
        """The answer to a key whose first request is still being processed."""
        if self._held[key][0] != fingerprint:
            return _key_mismatch()
        self.concurrent += 1
        answer = _whole_call_error(
            "IDEMPOTENCY_CONCURRENT_REQUEST",
            "This request is currently in progress, please try again.",
        )
        if self.after_concurrent:
            self.after_concurrent.pop(0)()  # after the answer: it stays "in progress"
        return answer

    def _replay(self, key: str, fingerprint: str) -> dict[str, Any]:
        first_fingerprint, data, succeeded = self._idempotency[key]
        if first_fingerprint != fingerprint:
            return _key_mismatch()
        if not succeeded:
            return _whole_call_error(
                "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED",
                "A previous request "
                "with this idempotency key failed. Retry with a new "
                "idempotency key.",
            )
        self.replays += 1
        return data

    def _check_quantity(self, position: int, quantity: dict[str, Any]) -> list[dict[str, Any]]:
        field = ["input", "quantities", str(position)]
        item, location = quantity["inventoryItemId"], quantity["locationId"]
        if item not in {variant.inventory_item_id for variant in self.variants.values()}:
            return [
                _user_error(
                    [*field, "inventoryItemId"],
                    "The specified inventory item could not be found.",
                    "INVALID_INVENTORY_ITEM",
                )
            ]
        if location not in self.location_ids:
            return [
                _user_error(
                    [*field, "locationId"],
                    "The specified location could not be found.",
                    "INVALID_LOCATION",
                )
            ]
        level = self.levels.get((item, location))
        if level is None:
            return [
                _user_error(
                    [*field, "locationId"],
                    "The inventory item is not stocked at the location.",
                    "ITEM_NOT_STOCKED_AT_LOCATION",
                )
            ]
        if quantity["quantity"] < 0:
            return [
                _user_error(
                    [*field, "quantity"],
                    "The quantity can't be negative.",
                    "INVALID_QUANTITY_NEGATIVE",
                )
            ]
        if quantity["quantity"] > MAX_QUANTITY:
            return [
                _user_error(
                    [*field, "quantity"],
                    "The quantity can't be higher than 1,000,000,000.",
                    "INVALID_QUANTITY_TOO_HIGH",
                )
            ]
        expected = quantity["changeFromQuantity"]
        if expected is not None and expected != level.on_hand:
            self.stale += 1
            return [
                _user_error(
                    [*field, "changeFromQuantity"],
                    "The changeFromQuantity value does not match persisted value.",
                    "CHANGE_FROM_QUANTITY_STALE",
                )
            ]
        return []

    def _write_quantity(self, name: str, quantity: dict[str, Any]) -> None:
        item, location = quantity["inventoryItemId"], quantity["locationId"]
        level = self.levels[(item, location)]
        target = quantity["quantity"] + (level.committed if name == "available" else 0)
        self.adjustments.append((item, location, target - level.on_hand))
        level.on_hand = target

    # --- productVariantsBulkUpdate ----------------------------------------------------------

    def _set_prices(self, query: str, variables: dict[str, Any]) -> Outcome:
        product, variants = variables.get("productId"), variables.get("variants")
        if not isinstance(product, str) or not isinstance(variants, list) or not variants:
            raise GraphQLError("Variable $productId or $variants was provided invalid value")
        partial = "allowPartialUpdates: true" in query
        if product not in self.products:
            return self._prices_result(
                [_user_error(["productId"], "Product does not exist", "PRODUCT_DOES_NOT_EXIST")], []
            ), 10
        errors: list[dict[str, Any]] = []
        valid: list[tuple[str, str]] = []
        for position, entry in enumerate(variants):
            problem = self._check_price(product, position, entry)
            if problem:
                errors.append(problem)
            else:
                valid.append((entry["id"], entry["price"]))
        if errors and not partial:
            valid = []
        for variant_id, price in valid:
            self.variants[variant_id].price = price
            self.price_writes.append((variant_id, price))
        return self._prices_result(errors, [variant for variant, _ in valid]), 10

    def _check_price(self, product: str, position: int, entry: Any) -> dict[str, Any] | None:
        field = ["variants", str(position)]
        if not isinstance(entry, dict) or entry.get("id") not in self.products[product]:
            return _user_error(
                [*field, "id"], "Product variant does not exist", "PRODUCT_VARIANT_DOES_NOT_EXIST"
            )
        try:
            price = Decimal(str(entry.get("price")))
        except InvalidOperation:
            return _user_error([*field, "price"], "Price is invalid", "INVALID_INPUT")
        if price < 0:
            return _user_error(
                [*field, "price"],
                "Price must be greater than or equal to 0",
                "GREATER_THAN_OR_EQUAL_TO",
            )
        if price >= MAX_PRICE:
            return _user_error(
                [*field, "price"], f"Price must be less than {MAX_PRICE}", "INVALID_INPUT"
            )
        return None

    def _prices_result(self, errors: list[dict[str, Any]], updated: list[str]) -> dict[str, Any]:
        return {
            "productVariantsBulkUpdate": {
                "productVariants": [{"id": variant} for variant in updated] or None,
                "userErrors": errors,
            }
        }


# --- orders and webhooks: the data -----------------------------------------------------

SHOP_ZONE = timezone(timedelta(hours=1))
"""The shop's timezone: REST bodies carry its offset (``+01:00``), GraphQL answers UTC."""
CLIENT_SECRET = "shpss_sim_client_secret"
ORDER_COST = 12
"""What the simulator charges an ``Order`` node with its lines and shipping lines."""
TOPICS = {
    "ORDERS_CREATE": "orders/create",
    "ORDERS_UPDATED": "orders/updated",
    "ORDERS_CANCELLED": "orders/cancelled",
    "REFUNDS_CREATE": "refunds/create",
}
REAL_RETRIES = (60.0, 120.0, 300.0, 600.0, 1200.0, 2400.0, 3600.0, 5820.0)
"""8 retries over 4 hours, backing off (Shopify's changelog, September 2024); the exact
delays are not published: these add up to 4 hours."""
_SINCE = re.compile(r"""^updated_at:>=?\s*['"]?([0-9T:\-+.Z]+)['"]?$""")


@dataclass
class Subscription:
    number: int
    topic: str
    """The GraphQL enum: ``ORDERS_CREATE`` ..."""
    uri: str

    @property
    def id(self) -> str:
        return _gid("WebhookSubscription", self.number)

    def node(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "topic": self.topic,
            "uri": self.uri,
            "format": "JSON",
            "endpoint": {"__typename": "WebhookHttpEndpoint", "callbackUrl": self.uri},
        }


@dataclass
class Pending:
    """One delivery of one event to one subscription; retries send it unchanged."""

    uri: str
    body: bytes
    headers: dict[str, str]
    attempts: int = 0
    """Failed attempts so far."""


@dataclass(frozen=True)
class SentHook:
    pending: Pending
    status: int | None
    """The receiver's answer; None for a timeout, no connection or a dropped delivery."""
    sent: bool = True


def hmac_header(body: bytes, secret: str) -> str:
    """``X-Shopify-Hmac-Sha256``: base64 of the HMAC-SHA256 of the raw body."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _money_set(amount: str) -> dict[str, Any]:
    return {
        "shop_money": {"amount": amount, "currency_code": "EUR"},
        "presentment_money": {"amount": amount, "currency_code": "EUR"},
    }


def order_body(
    order_id: int, sku: str = "SKU-MUG-RED", quantity: int = 2, price: str = "12.10"
) -> dict[str, Any]:
    """A paid order in the webhook's (REST) shape: one line and standard shipping, prices
    incl. 21 % tax, figures that add up."""
    gross = Decimal(price) * quantity
    line_tax = (gross - gross / Decimal("1.21")).quantize(Decimal("0.01"))
    ship, ship_tax = Decimal("5.99"), Decimal("1.04")
    address = {
        "first_name": "Ana",
        "last_name": "García",
        "name": "Ana García",
        "address1": "Calle Mayor 1",
        "address2": None,
        "city": "Madrid",
        "zip": "28013",
        "province": "Madrid",
        "province_code": "M",
        "country": "Spain",
        "country_code": "ES",
        "company": None,
        "phone": None,
    }
    return {
        "id": order_id,
        "admin_graphql_api_id": _gid("Order", order_id),
        "name": f"#{order_id % 100000}",
        "email": f"customer{order_id}@example.com",
        "phone": None,
        "cancelled_at": None,
        "cancel_reason": None,
        "closed_at": None,
        "financial_status": "paid",
        "currency": "EUR",
        "taxes_included": True,
        "total_price": str(gross + ship),
        "total_tax": str(line_tax + ship_tax),
        "total_discounts": "0.00",
        "payment_gateway_names": ["shopify_payments"],
        "note": None,
        "customer": {
            "id": 7700000000 + order_id % 1000,
            "email": f"customer{order_id}@example.com",
            "first_name": "Ana",
            "last_name": "García",
            "phone": None,
        },
        "billing_address": address,
        "shipping_address": address,
        "line_items": [
            {
                "id": order_id * 10 + 1,
                "admin_graphql_api_id": _gid("LineItem", order_id * 10 + 1),
                "name": f"Product {sku}",
                "sku": sku,
                "quantity": quantity,
                "price": price,
                "price_set": _money_set(price),
                "total_discount": "0.00",
                "discount_allocations": [],
                "tax_lines": [
                    {"title": "IVA", "rate": 0.21, "price": str(line_tax)},
                ],
            }
        ],
        "shipping_lines": [
            {
                "id": order_id * 10 + 9,
                "title": "Envío estándar",
                "code": "Standard",
                "price": str(ship),
                "discounted_price": str(ship),
                "discount_allocations": [],
                "tax_lines": [{"title": "IVA", "rate": 0.21, "price": str(ship_tax)}],
            }
        ],
    }


def _utc(stamp: object) -> str | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    moment = datetime.fromisoformat(stamp).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _set(amount: object) -> dict[str, Any] | None:
    if amount is None:
        return None
    money = {"amount": str(amount), "currencyCode": "EUR"}
    return {"shopMoney": money, "presentmentMoney": money}


def _node_taxes(taxes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "title": tax.get("title"),
            "rate": tax.get("rate"),
            "ratePercentage": float(Decimal(str(tax.get("rate"))) * 100),
            "priceSet": _set(tax.get("price")),
        }
        for tax in taxes
    ]


def _node_address(address: dict[str, Any] | None) -> dict[str, Any] | None:
    if address is None:
        return None
    return {
        "firstName": address.get("first_name"),
        "lastName": address.get("last_name"),
        "name": address.get("name"),
        "address1": address.get("address1"),
        "address2": address.get("address2"),
        "city": address.get("city"),
        "zip": address.get("zip"),
        "provinceCode": address.get("province_code"),
        "countryCodeV2": address.get("country_code"),
        "company": address.get("company"),
        "phone": address.get("phone"),
    }


def node_of(body: dict[str, Any]) -> dict[str, Any]:
    """The Admin GraphQL ``Order`` node of an order held in the webhook's shape: what the
    ``orders`` and ``order`` queries answer (UTC times, gids, money sets)."""
    customer = body.get("customer")
    lines = [
        {
            "id": _gid("LineItem", int(line["id"])),
            "name": line.get("name"),
            "sku": line.get("sku"),
            "quantity": line.get("quantity"),
            "originalUnitPriceSet": _set(line.get("price")),
            "discountAllocations": [
                {"allocatedAmountSet": _set(item.get("amount"))}
                for item in line.get("discount_allocations", [])
            ],
            "taxLines": _node_taxes(line.get("tax_lines", [])),
        }
        for line in body.get("line_items", [])
    ]
    shipping = [
        {
            "title": line.get("title"),
            "code": line.get("code"),
            "originalPriceSet": _set(line.get("price")),
            "discountedPriceSet": _set(line.get("discounted_price", line.get("price"))),
            "discountAllocations": [],
            "taxLines": _node_taxes(line.get("tax_lines", [])),
        }
        for line in body.get("shipping_lines", [])
    ]
    return {
        "id": _gid("Order", int(body["id"])),
        "legacyResourceId": str(body["id"]),
        "name": body.get("name"),
        "email": body.get("email"),
        "phone": body.get("phone"),
        "createdAt": _utc(body.get("created_at")),
        "updatedAt": _utc(body.get("updated_at")),
        "cancelledAt": _utc(body.get("cancelled_at")),
        "closedAt": _utc(body.get("closed_at")),
        "displayFinancialStatus": str(body.get("financial_status") or "pending").upper(),
        "currencyCode": body.get("currency"),
        "taxesIncluded": body.get("taxes_included"),
        "note": body.get("note"),
        "paymentGatewayNames": body.get("payment_gateway_names", []),
        "customer": None
        if customer is None
        else {
            "id": _gid("Customer", int(customer["id"])),
            "email": customer.get("email"),
            "firstName": customer.get("first_name"),
            "lastName": customer.get("last_name"),
            "phone": customer.get("phone"),
        },
        "billingAddress": _node_address(body.get("billing_address")),
        "shippingAddress": _node_address(body.get("shipping_address")),
        "lineItems": {"nodes": lines, "pageInfo": {"hasNextPage": False, "endCursor": None}},
        "shippingLines": {"nodes": shipping},
        "totalDiscountsSet": _set(body.get("total_discounts")),
        "totalTaxSet": _set(body.get("total_tax")),
        "totalPriceSet": _set(body.get("total_price")),
    }


def _updated_since(search: object) -> str | None:
    """``updated_at:>='2026-11-23T12:00:00Z'`` (quotes optional) as a UTC ``...Z`` string
    to compare with ``updatedAt``; no query: None."""
    if search is None or search == "":
        return None
    match = _SINCE.match(str(search).strip())
    if match is None:
        raise GraphQLError(f"this simulator only searches updated_at:>=, not {search!r}")
    moment = datetime.fromisoformat(match.group(1))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=SHOP_ZONE)  # Shopify reads a bare time in the shop's zone
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cursor_key(node: dict[str, Any]) -> tuple[str, int]:
    return str(node["updatedAt"]), int(node["legacyResourceId"])


def _sort_key(sort: str) -> Callable[[dict[str, Any]], tuple[str, int]]:
    field = {"UPDATED_AT": "updatedAt", "CREATED_AT": "createdAt"}.get(sort)
    if field is None:
        return lambda node: ("", int(node["legacyResourceId"]))
    return lambda node: (str(node[field]), int(node["legacyResourceId"]))


def _order_cursor(node: dict[str, Any]) -> str:
    """Opaque, as Shopify's are: the last node's sort value and id, so a page after it is
    the same whatever changed before it."""
    last_value, last_id = _cursor_key(node)
    text = json.dumps({"last_id": last_id, "last_value": last_value})
    return base64.b64encode(text.encode()).decode()


def _order_cursor_of(cursor: str) -> tuple[str, int]:
    try:
        decoded = json.loads(base64.b64decode(cursor))
        return str(decoded["last_value"]), int(decoded["last_id"])
    except (ValueError, KeyError, TypeError) as error:
        raise GraphQLError(f"Invalid cursor for current pagination sort: {cursor}") from error
