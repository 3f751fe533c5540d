"""A WooCommerce REST API (``wc/v3``) on loopback, the parts the ``woocommerce`` sink uses.

Followed: the WooCommerce REST API docs (woocommerce.github.io/woocommerce-rest-api-docs)
and the controllers they document:

- Auth, as ``WC_REST_Authentication`` does it (WooCommerce's "Authentication" docs; the
  class in ``includes/class-wc-rest-authentication.php``):

  - Over https only (WordPress's ``is_ssl()``; here: :attr:`tls` is set), the key as
    ``consumer_key`` / ``consumer_secret`` query parameters (both given) or else HTTP Basic.
    A known key with the wrong secret: 401 ``woocommerce_rest_authentication_error``
    "Consumer secret is invalid."; an unknown key is no refusal of its own.
  - Then, over http or https, OAuth 1.0a one-legged, its parameters in the query string
    (the ``Authorization: OAuth`` header form is not modelled): some of ``oauth_consumer_key``,
    ``oauth_timestamp``, ``oauth_nonce``, ``oauth_signature``, ``oauth_signature_method``
    missing is 401 ``woocommerce_rest_authentication_missing_parameter``; the rest are 401
    ``woocommerce_rest_authentication_error``: "Consumer key is invalid.", "Invalid
    signature - signature method is invalid." (not HMAC-SHA1 or HMAC-SHA256), "Invalid
    signature - provided signature does not match." (HMAC under ``consumer_secret + "&"``
    of ``METHOD&url&params``, every query parameter but the signature, sorted by name),
    "Invalid timestamp." (more than 15 minutes from the shop's :attr:`clock`, either way),
    "Invalid nonce - nonce has already been used." (nonces are kept 15 minutes, one per
    timestamp, as WooCommerce stores them: a second nonce in the same second replaces the
    first).
  - Neither, over http Basic and query keys among them: the request goes on as anonymous,
    and the route refuses it: 401 ``woocommerce_rest_cannot_view`` (list) or
    ``woocommerce_rest_cannot_batch``.
- ``GET /wp-json/wc/v3/products``: ``sku`` (split on commas, the whole string matched as
  well; with ``sku`` variations are returned too, with their ``parent_id``), ``page``,
  ``per_page`` (default 10, at most 100, else 400 ``rest_invalid_param``); ``X-WP-Total``
  and ``X-WP-TotalPages`` on every page. A page past the end is ``200 []`` with the same
  headers: WooCommerce's CRUD controllers count the matches again and never refuse a page
  (the 400 ``rest_post_invalid_page_number`` is WordPress's posts controller, not theirs).
- ``POST /wp-json/wc/v3/products/batch`` and ``/products/{id}/variations/batch``: more than
  ``batch_limit`` items (100 unless a shop filters ``woocommerce_rest_batch_items_limit``)
  is 413 ``woocommerce_rest_request_entity_too_large``; each ``update`` item answers the
  product, or ``{"id", "error": {"code", "message", "data": {"status"}}}``: an unknown id
  ``woocommerce_rest_product_invalid_id``, a variation sent to ``/products/batch``
  ``woocommerce_rest_invalid_product_id``, an id that is not a variation of that parent
  ``woocommerce_rest_product_variation_invalid_id``. ``stock_quantity`` is stored only
  while the product manages stock, as WooCommerce does; the simulator is stricter than
  WooCommerce in refusing a ``stock_quantity`` that is not an integer (it would coerce it).
- WooCommerce has no request limit of its own; hosts and WAFs answer 429 with
  ``Retry-After``. ``rate_limit`` models one (a fixed window), :meth:`fail_next` injects
  429s, 5xx and hangs.
- Any other path: 404 ``rest_no_route``, as the WP REST API answers.

Orders and webhooks, as DESIGN.md ("What the real shop and ERPs do") records a real 9.9.5
doing them, and the REST docs' "Orders" and "Webhooks" pages; bodies are shaped key for key
like ``tests/fixtures/woocommerce`` (captured from that shop) and encoded as
``wp_json_encode`` does (``\\/``, ``\\uXXXX``):

- The shop's side, for tests: :meth:`~WooCommerceSim.create` (REST: ``order.created`` then
  ``order.updated``), :meth:`~WooCommerceSim.checkout` (Store API: ``order.updated`` then
  ``order.created``), :meth:`~WooCommerceSim.abandon` (``checkout-draft``, ``order.updated``
  only), :meth:`~WooCommerceSim.update`, :meth:`~WooCommerceSim.write_meta` (a new
  ``date_modified``), :meth:`~WooCommerceSim.add_note` (nothing fires, no new date),
  :meth:`~WooCommerceSim.trash` (``order.deleted`` with ``{"id": N}``),
  :meth:`~WooCommerceSim.restore`, :meth:`~WooCommerceSim.delete` (for good: nothing fires),
  :meth:`~WooCommerceSim.put_order` (a fixture's body as it is). Dates are whole seconds of
  :attr:`~WooCommerceSim.order_clock`, local (UTC+1) and ``_gmt``.
- ``GET orders``: ``modified_after`` exclusive at whole seconds, against ``date_modified_gmt``
  with ``dates_are_gmt=true`` (else the local one); a value with ``Z`` or an offset matches
  nothing; a malformed one is 400 ``rest_invalid_param``. ``status`` (default ``any``: all
  but ``trash``, and the unplaced ``checkout-draft``), ``orderby=date|modified|id``,
  ``order``, ``per_page`` 1..100, ``page``, ``X-WP-Total``/``X-WP-TotalPages``, ``200 []``
  past the end. ``GET orders/{id}``: a trashed order reads with ``"status": "trash"``; a
  deleted one is 404 ``woocommerce_rest_shop_order_invalid_id``.
- ``GET/POST webhooks``, ``GET/PUT/POST webhooks/{id}`` (``topic``, ``delivery_url``,
  ``secret``, ``status`` active|paused|disabled; the secret is not shown, as in the REST
  answer's view context). Creating one over REST pings it before answering: POST
  ``webhook_id=N`` form-encoded, unsigned; until a ping gets exactly 200 it is re-sent after
  every delivery of that hook. :meth:`~WooCommerceSim.add_hook` makes one without a ping.
- Delivery, as Action Scheduler runs it: one queue, one delivery at a time (a slow answer
  blocks it, up to :attr:`~WooCommerceSim.delivery_timeout`); a hook with the order already
  queued queues nothing more, and the body is built when sent, so close changes coalesce
  into one delivery of the final state (a permanent delete meanwhile: the REST error body,
  validly signed). Headers ``X-WC-Webhook-Source``, ``-Topic``, ``-Resource``, ``-Event``,
  ``-Signature`` (base64 HMAC-SHA256 of the raw body with the hook's secret), ``-ID``,
  ``-Delivery-ID`` (a hash of hook id and current second). 200-302 is success and clears the
  failure count; anything else, a timeout or no connection is a failure, never retried, and
  the 7th in a row disables the hook (re-enabling it keeps the count).
  Test controls: :meth:`~WooCommerceSim.drop_next`, :meth:`~WooCommerceSim.duplicate_next`,
  :meth:`~WooCommerceSim.hold` / :meth:`~WooCommerceSim.release`, and
  :meth:`~WooCommerceSim.settled` to wait for the queue to empty (no sleeps).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import hmac
import itertools
import json
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from tests.sims import Fault, Served

API = "/wp-json/wc/v3"
OAUTH_PARAMS = (
    "oauth_consumer_key",
    "oauth_timestamp",
    "oauth_nonce",
    "oauth_signature",
    "oauth_signature_method",
)
OAUTH_WINDOW = 15 * 60
"""Seconds a timestamp may be off, either way, and a nonce is remembered."""


@dataclass
class Product:
    id: int
    sku: str
    type: str
    """``simple``, ``variable`` or ``variation``."""
    parent_id: int = 0
    regular_price: str = ""
    manage_stock: bool = False
    stock_quantity: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": f"Product {self.sku}",
            "sku": self.sku,
            "type": self.type,
            "parent_id": self.parent_id,
            "status": "publish",
            "price": self.regular_price,
            "regular_price": self.regular_price,
            "manage_stock": self.manage_stock,
            "stock_quantity": self.stock_quantity,
        }


@dataclass(frozen=True)
class Hit:
    """One request as the shop saw it (credentials left out)."""

    at: float
    """``time.monotonic()`` on arrival."""
    method: str
    path: str
    """After ``/wp-json/wc/v3``."""
    query: dict[str, str]
    items: int
    """Items in a batch body."""
    status: int


def wp_error(status: int, code: str, message: str, **data: Any) -> web.Response:
    return web.json_response(
        {"code": code, "message": message, "data": {"status": status, **data}}, status=status
    )


class WooCommerceSim(Served):
    def __init__(
        self,
        consumer_key: str = "ck_sim",
        consumer_secret: str = "cs_sim",
        *,
        batch_limit: int = 100,
        rate_limit: int | None = None,
        window: float = 1.0,
    ) -> None:
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.batch_limit = batch_limit
        self.rate_limit = rate_limit
        """Requests a window takes before 429 (None: no limit)."""
        self.window = window
        self.products: dict[int, Product] = {}
        self.hits: list[Hit] = []
        self._next_id = 100
        self._faults: deque[Fault] = deque()
        self._window_start = 0.0
        self._window_count = 0
        self.clock: Callable[[], float] = time.time
        """The shop's clock, which OAuth timestamps are judged by."""
        self._nonces: dict[int, str] = {}
        """OAuth nonces seen, by their timestamp (one each, as WooCommerce keeps them)."""
        self.on_hit: Callable[[Hit], None] | None = None
        """Called with each request once answered: a test changes the shop between two."""
        self.order_clock: Callable[[], float] | None = None
        """The clock orders are stamped by (whole seconds), when a test wants it apart from
        :attr:`clock`: a fixed one puts several changes in one second."""
        self.utc_offset = 1
        """The store's timezone, hours from UTC: ``date_*`` are local, ``date_*_gmt`` UTC."""
        self.orders: dict[int, SimOrder] = {}
        self.hooks: dict[int, Hook] = {}
        self.deliveries: list[Delivery] = []
        """Every delivery made (a duplicate twice, a dropped one with ``sent`` False)."""
        self.pings: list[Delivery] = []
        self.delivery_timeout = 60.0
        """How long a delivery waits for its answer, blocking the queue meanwhile."""
        self._order_ids = itertools.count(30)
        self._hook_ids = itertools.count(17)
        self._meta_ids = itertools.count(500)
        self._queue: deque[Queued] = deque()
        self._held = False
        self._busy = False
        self._drops = 0
        self._duplicates = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._sender: aiohttp.ClientSession | None = None
        self._runner: asyncio.Task[None] | None = None

    # --- the catalogue ---------------------------------------------------------------

    def add(
        self,
        sku: str,
        *,
        type: str = "simple",
        parent_id: int = 0,
        price: str = "",
        stock: int | None = None,
    ) -> int:
        self._next_id += 1
        self.products[self._next_id] = Product(
            self._next_id, sku, type, parent_id, price, stock is not None, stock
        )
        return self._next_id

    def add_variable(self, sku: str, variations: list[str]) -> int:
        parent = self.add(sku, type="variable")
        for variation in variations:
            self.add(variation, type="variation", parent_id=parent)
        return parent

    def remove(self, sku: str) -> None:
        self.products = {key: p for key, p in self.products.items() if p.sku != sku}

    def find(self, sku: str) -> Product:
        return next(product for product in self.products.values() if product.sku == sku)

    def stock(self, sku: str) -> int | None:
        product = self.find(sku)
        return product.stock_quantity if product.manage_stock else None

    def price(self, sku: str) -> str:
        return self.find(sku).regular_price

    # --- faults and the log ----------------------------------------------------------

    def fail_next(self, count: int, status: int, *, retry_after: str | None = None) -> None:
        """Answer the next ``count`` requests with ``status`` (0: hang)."""
        self._faults.extend([Fault(status, retry_after)] * count)

    def answer_next(self, count: int, status: int, body: str) -> None:
        """Answer the next ``count`` requests with ``status`` and this raw ``body`` (a
        proxy's HTML page, a truncated answer, JSON of the wrong shape)."""
        self._faults.extend([Fault(status, body=body)] * count)

    def requests(self, method: str, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.method == method and hit.path == path]

    # --- serving ---------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._front])
        app.router.add_get(f"{API}/products", self._list)
        app.router.add_post(f"{API}/products/batch", self._batch_products)
        app.router.add_post(
            API + r"/products/{parent:\d+}/variations/batch", self._batch_variations
        )
        app.router.add_get(f"{API}/orders", self._list_orders)
        app.router.add_get(API + r"/orders/{id:\d+}", self._read_order)
        app.router.add_get(f"{API}/webhooks", self._list_hooks)
        app.router.add_post(f"{API}/webhooks", self._create_hook)
        app.router.add_get(API + r"/webhooks/{id:\d+}", self._read_hook)
        app.router.add_route("POST", API + r"/webhooks/{id:\d+}", self._update_hook)
        app.router.add_route("PUT", API + r"/webhooks/{id:\d+}", self._update_hook)
        return app

    @web.middleware
    async def _front(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """What stands before the routes: faults, the host's rate limit, then auth."""
        arrived = time.monotonic()
        body = await request.json() if request.can_read_body else {}
        items = sum(len(body.get(op) or []) for op in ("create", "update", "delete"))
        try:
            response = await self._gate(request, arrived) or await handler(request)
        except web.HTTPNotFound:
            response = wp_error(
                404, "rest_no_route", "No route was found matching the URL and request method"
            )
        query = {k: v for k, v in request.query.items() if not k.startswith("consumer_")}
        path = request.path.removeprefix(API)
        self.hits.append(Hit(arrived, request.method, path, query, items, response.status))
        if self.on_hit is not None:
            self.on_hit(self.hits[-1])
        return response

    async def _gate(self, request: web.Request, now: float) -> web.StreamResponse | None:
        if self._faults:
            fault = self._faults.popleft()
            if fault.status == 0:
                await self.hang()
            if fault.body:
                return web.Response(
                    text=fault.body, status=fault.status, content_type="application/json"
                )
            return web.json_response(
                {"code": "sim_fault", "message": "injected"},
                status=fault.status or 503,
                headers=fault.headers(),
            )
        return self._throttle(now) or self._authenticate(request)

    def _throttle(self, now: float) -> web.StreamResponse | None:
        if self.rate_limit is None:
            return None
        if now - self._window_start >= self.window:
            self._window_start, self._window_count = now, 0
        self._window_count += 1
        if self._window_count <= self.rate_limit:
            return None
        wait = math.ceil(self._window_start + self.window - now)
        return web.json_response(
            {"code": "too_many_requests", "message": "Slow down."},
            status=429,
            headers={"Retry-After": str(max(1, wait))},
        )

    def _authenticate(self, request: web.Request) -> web.StreamResponse | None:
        """Key auth over https, then OAuth 1.0a; a request that neither logs in nor is
        refused goes on as anonymous, which the routes refuse."""
        refused = None
        if request.secure:  # only then does WooCommerce take the key as it is
            user, refused = self._key_auth(request)
            if user:
                return None
        user, oauth_refused = self._oauth(request)
        if user:
            return None
        return oauth_refused or refused or anonymous(request)

    def _key_auth(self, request: web.Request) -> tuple[bool, web.Response | None]:
        key = request.query.get("consumer_key", "")
        secret = request.query.get("consumer_secret", "")
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if not (key and secret) and scheme == "Basic":
            key, _, secret = base64.b64decode(credentials).decode().partition(":")
        if not (key and secret) or not hmac.compare_digest(key, self.consumer_key):
            return False, None
        if not hmac.compare_digest(secret, self.consumer_secret):
            return False, auth_error("Consumer secret is invalid.")
        return True, None

    def _oauth(self, request: web.Request) -> tuple[bool, web.Response | None]:
        params = dict(request.query)  # PHP's $_GET: decoded values
        missing = [name for name in OAUTH_PARAMS if not params.get(name)]
        if len(missing) == len(OAUTH_PARAMS):
            return False, None  # not even trying OAuth
        if missing:
            plural = "s" if len(missing) > 1 else ""
            return False, wp_error(
                401,
                "woocommerce_rest_authentication_missing_parameter",
                f"Missing OAuth parameter{plural} {', '.join(missing)}",
            )
        if not hmac.compare_digest(params["oauth_consumer_key"], self.consumer_key):
            return False, auth_error("Consumer key is invalid.")
        problem = self._signature_problem(request, params) or self._replay_problem(params)
        return problem is None, auth_error(problem) if problem else None

    def _signature_problem(self, request: web.Request, params: dict[str, str]) -> str | None:
        home = f"{request.scheme}://{request.host}{request.rel_url.raw_path}"
        text = string_to_sign(request.method, home, params)
        method = params["oauth_signature_method"]
        if method not in ("HMAC-SHA1", "HMAC-SHA256"):
            return "Invalid signature - signature method is invalid."
        digest = hmac.new(
            f"{self.consumer_secret}&".encode(), text.encode(), method.removeprefix("HMAC-").lower()
        ).digest()
        given = params["oauth_signature"].replace(" ", "+")  # $_GET made a bare + a space
        if not hmac.compare_digest(base64.b64encode(digest).decode(), given):
            return "Invalid signature - provided signature does not match."
        return None

    def _replay_problem(self, params: dict[str, str]) -> str | None:
        now = self.clock()
        stamp = int(params["oauth_timestamp"]) if params["oauth_timestamp"].isdigit() else 0
        if abs(stamp - now) > OAUTH_WINDOW:
            return "Invalid timestamp."
        if params["oauth_nonce"] in self._nonces.values():
            return "Invalid nonce - nonce has already been used."
        self._nonces[stamp] = params["oauth_nonce"]
        self._nonces = {at: nonce for at, nonce in self._nonces.items() if at >= now - OAUTH_WINDOW}
        return None

    # --- endpoints -------------------------------------------------------------------

    async def _list(self, request: web.Request) -> web.StreamResponse:
        per_page = int(request.query.get("per_page", "10"))
        page = int(request.query.get("page", "1"))
        if not 1 <= per_page <= 100:
            return wp_error(
                400,
                "rest_invalid_param",
                "Invalid parameter(s): per_page",
                params={"per_page": "per_page must be between 1 (inclusive) and 100 (inclusive)"},
            )
        matches = self._matching(request.query.get("sku", ""))
        pages = math.ceil(len(matches) / per_page)
        shown = matches[(page - 1) * per_page : page * per_page]
        return web.json_response(
            [product.as_json() for product in shown],
            headers={"X-WP-Total": str(len(matches)), "X-WP-TotalPages": str(pages)},
        )

    def _matching(self, sku: str) -> list[Product]:
        newest_first = sorted(self.products.values(), key=lambda p: -p.id)
        if not sku:
            return [product for product in newest_first if product.type != "variation"]
        skus = {part.strip() for part in sku.split(",")}
        if len(skus) > 1:
            skus.add(sku)  # WooCommerce matches the whole string as a SKU too
        return [product for product in newest_first if product.sku in skus]

    async def _batch_products(self, request: web.Request) -> web.StreamResponse:
        return await self._batch(request, self._update_product)

    async def _batch_variations(self, request: web.Request) -> web.StreamResponse:
        parent = int(request.match_info["parent"])
        return await self._batch(request, lambda item: self._update_variation(parent, item))

    async def _batch(self, request: web.Request, update: Any) -> web.StreamResponse:
        body = await request.json()
        if sum(len(body.get(op) or []) for op in ("create", "update", "delete")) > self.batch_limit:
            return wp_error(
                413,
                "woocommerce_rest_request_entity_too_large",
                f"Unable to accept more than {self.batch_limit} items for this request.",
            )
        if body.get("create") or body.get("delete"):
            return wp_error(400, "sim_unsupported", "The simulator models updates only.")
        return web.json_response({"update": [update(item) for item in body.get("update", [])]})

    def _update_product(self, item: dict[str, Any]) -> dict[str, Any]:
        product = self.products.get(item.get("id", 0))
        if product is None:
            return item_error(item, "woocommerce_rest_product_invalid_id", "Invalid ID.")
        if product.type == "variation":
            return item_error(
                item,
                "woocommerce_rest_invalid_product_id",
                "To manipulate product variations you should use the "
                "/products/&lt;product_id&gt;/variations/&lt;id&gt; endpoint.",
            )
        return self._apply(product, item)

    def _update_variation(self, parent: int, item: dict[str, Any]) -> dict[str, Any]:
        variation = self.products.get(item.get("id", 0))
        if variation is None or variation.type != "variation" or variation.parent_id != parent:
            return item_error(item, "woocommerce_rest_product_variation_invalid_id", "Invalid ID.")
        return self._apply(variation, item)

    def _apply(self, product: Product, item: dict[str, Any]) -> dict[str, Any]:
        quantity = item.get("stock_quantity")
        if quantity is not None and (type(quantity) is not int):
            return item_error(item, "rest_invalid_param", "stock_quantity is not of type integer.")
        price = item.get("regular_price")
        if price is not None and not isinstance(price, str):
            return item_error(item, "rest_invalid_param", "regular_price is not of type string.")
        if "manage_stock" in item:
            product.manage_stock = bool(item["manage_stock"])
        if quantity is not None and product.manage_stock:
            product.stock_quantity = quantity
        if price is not None:
            product.regular_price = price
        return product.as_json()

    # --- orders: the shop's side (what a test does to the shop) ----------------------

    def now(self) -> datetime:
        """The shop's time, to the whole second (WooCommerce stores dates so)."""
        moment = (self.order_clock or self.clock)()
        return datetime.fromtimestamp(int(moment), UTC)

    def create(self, lines: Sequence[OrderLine], **options: Any) -> int:
        """An order made over REST (``POST wc/v3/orders``): fires ``order.created`` and
        ``order.updated``, in that order, both built when sent."""
        order_id = self._new_order(lines, created_via="rest-api", **options)
        self._fire("order.created", order_id)
        self._fire("order.updated", order_id)
        return order_id

    def checkout(self, lines: Sequence[OrderLine], **options: Any) -> int:
        """A customer's Store API checkout: fires ``order.updated`` *before*
        ``order.created`` (the draft order is updated into a real one, then announced)."""
        options.setdefault("status", "processing" if options.get("paid") else "pending")
        order_id = self._new_order(lines, created_via="store-api", **options)
        self._fire("order.updated", order_id)
        self._fire("order.created", order_id)
        return order_id

    def abandon(self, lines: Sequence[OrderLine], **options: Any) -> int:
        """A Store API checkout left unfinished: a ``checkout-draft`` order that fires
        ``order.updated`` (never ``order.created``) and is not in ``status=any`` lists."""
        order_id = self._new_order(
            lines, created_via="store-api", status="checkout-draft", **options
        )
        self._fire("order.updated", order_id)
        return order_id

    def put_order(self, body: dict[str, Any], *, event: str | None = "order.created") -> int:
        """Store ``body`` (a fixture's order, say) as it is, under its own id, and fire
        ``event`` for it (None: fire nothing)."""
        order_id = int(body["id"])
        self.orders[order_id] = SimOrder(copy.deepcopy(body))
        if event is not None:
            self._fire(event, order_id)
        return order_id

    def update(
        self, order_id: int, *, lines: Sequence[OrderLine] | None = None, **fields: Any
    ) -> None:
        """A change saved to the order (an admin edit, a status change, a REST ``PUT``):
        ``fields`` replace top-level fields (``status``, ``customer_note``, ...; ``paid=True``
        sets ``date_paid``), ``lines`` rebuild its lines and totals. ``date_modified`` moves
        to the current second and ``order.updated`` fires."""
        order = self.orders[order_id]
        paid = fields.pop("paid", None)
        if lines is not None:
            order.body.update(_amounts(order_id, lines, order.coupon, order.shipping))
        order.body.update(fields)
        now = self.now()
        if paid:
            order.body.update(self._dates("date_paid", now))
        if fields.get("status") == "completed":
            order.body.update(self._dates("date_completed", now))
        _flags(order.body)
        self._touch(order_id)

    def write_meta(self, order_id: int, key: str, value: str) -> None:
        """A REST write of order meta: a new ``date_modified`` and ``order.updated``, the
        order's content otherwise the same."""
        meta = self.orders[order_id].body["meta_data"]
        meta.append({"id": next(self._meta_ids), "key": key, "value": value})
        self._touch(order_id)

    def add_note(self, order_id: int, note: str) -> None:
        """An order note: fires nothing and keeps ``date_modified``."""
        self.orders[order_id].notes.append(note)

    def trash(self, order_id: int) -> None:
        """``DELETE orders/{id}`` (to the trash): status ``trash``, ``order.deleted`` with
        ``{"id": N}``; the order still reads over REST, but ``status=any`` leaves it out."""
        order = self.orders[order_id]
        order.before_trash = order.body["status"]
        order.body["status"] = "trash"
        self._touch(order_id, "order.deleted")

    def restore(self, order_id: int) -> None:
        """Out of the trash, to the status it had: ``order.restored``."""
        order = self.orders[order_id]
        order.body["status"] = order.before_trash or "pending"
        self._touch(order_id, "order.restored")

    def delete(self, order_id: int) -> None:
        """``DELETE orders/{id}?force=true``: gone for good, and nothing fires; a delivery
        queued before it is built now, so it carries the REST error body, validly signed."""
        del self.orders[order_id]

    def order(self, order_id: int) -> dict[str, Any]:
        return self.orders[order_id].body

    def _touch(self, order_id: int, event: str = "order.updated") -> None:
        self.orders[order_id].body.update(self._dates("date_modified", self.now()))
        self._fire(event, order_id)

    def _dates(self, field: str, moment: datetime) -> dict[str, str]:
        local = moment + timedelta(hours=self.utc_offset)
        return {field: _wc_time(local), f"{field}_gmt": _wc_time(moment)}

    def _new_order(
        self,
        lines: Sequence[OrderLine],
        *,
        created_via: str,
        status: str = "processing",
        paid: bool = False,
        customer_id: int = 0,
        coupon: int = 0,
        shipping: bool = True,
        payment_method: str = "cod",
        note: str = "",
    ) -> int:
        order_id = next(self._order_ids)
        now = self.now()
        body = _order_skeleton(order_id, self.url, customer_id, payment_method)
        body.update(_amounts(order_id, lines, coupon, shipping))
        body.update(status=status, created_via=created_via, customer_note=note)
        for name in ("date_created", "date_modified"):
            body.update(self._dates(name, now))
        if paid:
            body.update(self._dates("date_paid", now))
        self.orders[order_id] = SimOrder(_in_key_order(body), coupon=coupon, shipping=shipping)
        _flags(self.orders[order_id].body)
        return order_id

    # --- orders: the REST API --------------------------------------------------------

    async def _list_orders(self, request: web.Request) -> web.StreamResponse:
        paging = _paging(request.query)
        if isinstance(paging, web.Response):
            return paging
        per_page, page = paging
        after = request.query.get("modified_after")
        if after is not None and not _DATE_TIME.match(after):
            return _invalid("modified_after", "Invalid date.")
        gmt = request.query.get("dates_are_gmt", "false").lower() in ("1", "true")
        matches = self._listed(request.query.get("status", "any"))
        if after is not None:
            matches = self._modified_after(matches, after, gmt)
        matches = _ordered(matches, request.query.get("orderby", "date"), request.query)
        pages = math.ceil(len(matches) / per_page)
        shown = matches[(page - 1) * per_page : page * per_page]
        return _wp_json(
            [order.body for order in shown],
            headers={"X-WP-Total": str(len(matches)), "X-WP-TotalPages": str(pages)},
        )

    def _listed(self, status: str) -> list[SimOrder]:
        wanted = {part.strip() for part in status.split(",")}
        if "any" in wanted:  # every status but the trash (and the unplaced drafts)
            return [o for o in self.orders.values() if o.body["status"] not in _UNLISTED]
        return [o for o in self.orders.values() if o.body["status"] in wanted]

    def _modified_after(self, orders: list[SimOrder], after: str, gmt: bool) -> list[SimOrder]:
        if after.endswith(("Z", "z")) or _OFFSET.search(after):
            # An explicit zone is read against the stored naive strings: nothing matches
            # (what a real 9.9 answered to ...T12:00:00Z with dates_are_gmt=true).
            return []
        bound = after.replace(" ", "T").replace("t", "T")[:19]
        field = "date_modified_gmt" if gmt else "date_modified"
        return [order for order in orders if order.body[field] > bound]  # exclusive

    async def _read_order(self, request: web.Request) -> web.StreamResponse:
        order = self.orders.get(int(request.match_info["id"]))
        if order is None:
            return wp_error(404, *_INVALID_ORDER)
        return _wp_json(order.body)

    # --- webhooks: the REST API ------------------------------------------------------

    def add_hook(
        self, topic: str, delivery_url: str, secret: str = "", *, status: str = "active"
    ) -> int:
        """A hook that exists already (made in the admin, no ping); returns its id."""
        hook = Hook(next(self._hook_ids), topic, delivery_url, secret, status, self.now())
        self.hooks[hook.id] = hook
        return hook.id

    async def _list_hooks(self, request: web.Request) -> web.StreamResponse:
        paging = _paging(request.query)
        if isinstance(paging, web.Response):
            return paging
        per_page, page = paging
        status = request.query.get("status", "all")
        matches = [h for h in self.hooks.values() if status in ("all", h.status)]
        matches.sort(key=lambda hook: -hook.id)
        shown = matches[(page - 1) * per_page : page * per_page]
        return _wp_json(
            [self._hook_json(hook) for hook in shown],
            headers={
                "X-WP-Total": str(len(matches)),
                "X-WP-TotalPages": str(math.ceil(len(matches) / per_page)),
            },
        )

    async def _read_hook(self, request: web.Request) -> web.StreamResponse:
        hook = self.hooks.get(int(request.match_info["id"]))
        if hook is None:
            return wp_error(404, "woocommerce_rest_webhook_invalid_id", "Invalid ID.")
        return _wp_json(self._hook_json(hook))

    async def _create_hook(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        missing = [key for key in ("topic", "delivery_url") if not body.get(key)]
        if missing:
            return wp_error(
                400,
                "rest_missing_callback_param",
                f"Missing parameter(s): {', '.join(missing)}",
                params=missing,
            )
        problem = _hook_problem(body)
        if problem is not None:
            return problem
        secret = body.get("secret") or secrets.token_urlsafe(36)
        hook = Hook(
            next(self._hook_ids),
            body["topic"],
            body["delivery_url"],
            secret,
            body.get("status", "active"),
            self.now(),
            name=body.get("name") or "",
            pending_delivery=True,
        )
        self.hooks[hook.id] = hook
        await self._ping(hook)  # before the answer, as WooCommerce does it
        return _wp_json(self._hook_json(hook), status=201)

    async def _update_hook(self, request: web.Request) -> web.StreamResponse:
        hook = self.hooks.get(int(request.match_info["id"]))
        if hook is None:
            return wp_error(404, "woocommerce_rest_webhook_invalid_id", "Invalid ID.")
        body = await request.json()
        problem = _hook_problem(body)
        if problem is not None:
            return problem
        for key in ("topic", "delivery_url", "secret", "status", "name"):
            if key in body:
                setattr(hook, key, body[key])  # status active again keeps failure_count
        return _wp_json(self._hook_json(hook))

    def _hook_json(self, hook: Hook) -> dict[str, Any]:
        resource, _, event = hook.topic.partition(".")
        created = self._dates("date_created", hook.created)
        modified = self._dates("date_modified", hook.created)
        return {
            "id": hook.id,
            "name": hook.name or f"Webhook created on {hook.created:%b %d, %Y @ %I:%M %p}",
            "status": hook.status,
            "topic": hook.topic,
            "resource": resource,
            "event": event,
            "hooks": list(_HOOK_ACTIONS.get(hook.topic, ())),
            "delivery_url": hook.delivery_url,
            **created,
            **modified,
            "_links": {
                "self": [{"href": f"{self.url}{API}/webhooks/{hook.id}"}],
                "collection": [{"href": f"{self.url}{API}/webhooks"}],
            },
        }

    # --- webhooks: delivery ----------------------------------------------------------

    def drop_next(self, count: int = 1) -> None:
        """The next ``count`` deliveries are lost on the way (the shop logs nothing)."""
        self._drops += count

    def duplicate_next(self, count: int = 1) -> None:
        """The next ``count`` deliveries arrive twice, byte for byte alike."""
        self._duplicates += count

    def hold(self) -> None:
        """Stop delivering (a stuck queue runner); what fires meanwhile queues up."""
        self._held = True

    def release(self) -> None:
        """Deliver what was held, each built now: late, and showing the current state."""
        self._held = False
        self._wake.set()

    async def settled(self) -> None:
        """Wait until nothing is queued or being sent (or the queue is held)."""
        while self._busy or (self._queue and not self._held):
            self._idle.clear()
            await self._idle.wait()

    def _fire(self, event: str, order_id: int) -> None:
        """Queue the delivery of ``event`` to every active hook on it, once: a hook that
        has this order queued already keeps that one (Action Scheduler's unique action),
        so close changes coalesce into one delivery of the state when it is sent."""
        for hook in self.hooks.values():
            if hook.topic != event or hook.status != "active":
                continue
            if any(p.hook == hook.id and p.order_id == order_id for p in self._queue):
                continue
            self._queue.append(Queued(hook.id, order_id))
        self._wake.set()

    async def _run_queue(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and not self._held:
                queued = self._queue.popleft()
                self._busy = True
                try:
                    await self._deliver(queued)
                finally:
                    self._busy = False
            self._idle.set()

    async def _deliver(self, queued: Queued) -> None:
        hook = self.hooks.get(queued.hook)
        if hook is None or hook.status != "active":
            return
        body = self._payload(hook.topic, queued.order_id)
        now = self.now()
        headers = {
            "User-Agent": USER_AGENT,
            "Content-Type": "application/json",
            "X-WC-Webhook-Source": f"{self.url}/",
            "X-WC-Webhook-Topic": hook.topic,
            "X-WC-Webhook-Resource": hook.topic.partition(".")[0],
            "X-WC-Webhook-Event": hook.topic.partition(".")[2],
            "X-WC-Webhook-Signature": webhook_signature(body, hook.secret),
            "X-WC-Webhook-ID": str(hook.id),
            "X-WC-Webhook-Delivery-ID": hashlib.md5(
                f"{hook.id}{int(now.timestamp())}".encode()
            ).hexdigest(),
        }
        if self._drops:
            self._drops -= 1
            self.deliveries.append(Delivery(hook.id, hook.topic, queued.order_id, body, headers))
            return
        times = 1
        if self._duplicates:
            self._duplicates -= 1
            times = 2
        for _ in range(times):
            status = await self._post(hook.delivery_url, body, headers)
            self.deliveries.append(
                Delivery(hook.id, hook.topic, queued.order_id, body, headers, status, sent=True)
            )
            self._count(hook, status)
        if hook.pending_delivery:
            await self._ping(hook)  # re-sent after every delivery until one gets 200

    def _payload(self, topic: str, order_id: int) -> bytes:
        if topic == "order.deleted":
            return _wp_dumps({"id": order_id})
        order = self.orders.get(order_id)
        if order is None:  # deleted for good since it was queued: the REST error
            code, message = _INVALID_ORDER
            return _wp_dumps({"code": code, "message": message, "data": {"status": 404}})
        return _wp_dumps(order.body)

    def _count(self, hook: Hook, status: int | None) -> None:
        """200-302 is success and clears the count; else one more failure in a row, and
        the 7th disables the hook (nothing is retried)."""
        if status is not None and 200 <= status <= 302:
            hook.failure_count = 0
            return
        hook.failure_count += 1
        if hook.failure_count >= MAX_FAILURES:
            hook.status = "disabled"

    async def _ping(self, hook: Hook) -> None:
        """``webhook_id=N``, form-encoded, unsigned; only an exact 200 clears
        ``pending_delivery``."""
        body = f"webhook_id={hook.id}".encode()
        headers = {"User-Agent": USER_AGENT, "Content-Type": "application/x-www-form-urlencoded"}
        status = await self._post(hook.delivery_url, body, headers)
        self.pings.append(Delivery(hook.id, "ping", 0, body, headers, status, sent=True))
        if status == 200:
            hook.pending_delivery = False

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int | None:
        """The answer's status; None for a timeout or no connection (a failure too)."""
        assert self._sender is not None
        try:
            async with self._sender.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.delivery_timeout),
            ) as response:
                await response.read()
                return response.status
        except (TimeoutError, aiohttp.ClientError):
            return None

    async def start(self) -> str:
        url = await super().start()
        self._wake, self._idle = asyncio.Event(), asyncio.Event()
        self._sender = aiohttp.ClientSession()
        self._runner = asyncio.create_task(self._run_queue(), name="woocommerce-sim-webhooks")
        return url

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._sender is not None:
            await self._sender.close()
        await super().close()


def auth_error(message: str) -> web.Response:
    return wp_error(401, "woocommerce_rest_authentication_error", message)


def anonymous(request: web.Request) -> web.Response:
    """What a route answers a visitor who is not logged in."""
    if request.method == "GET":
        return wp_error(401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")
    if not request.path.endswith("/batch"):
        return wp_error(
            401, "woocommerce_rest_cannot_create", "Sorry, you are not allowed to create resources."
        )
    return wp_error(
        401,
        "woocommerce_rest_cannot_batch",
        "Sorry, you are not allowed to batch manipulate this resource.",
    )


def string_to_sign(method: str, home: str, params: dict[str, str]) -> str:
    """WooCommerce's own steps: the names sorted as they came, each name and value
    rawurlencoded, ``name=value`` encoded again, the pairs joined with ``%26``."""
    signed = sorted((name, value) for name, value in params.items() if name != "oauth_signature")
    query = "%26".join(
        rawurlencode(f"{rawurlencode(name)}={rawurlencode(value)}") for name, value in signed
    )
    return f"{method}&{rawurlencode(home)}&{query}"


def rawurlencode(text: str) -> str:
    """PHP's ``rawurlencode``: all but letters, digits and ``-_.~`` percent-encoded."""
    return quote(text, safe="")


def item_error(item: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    return {
        "id": item.get("id", 0),
        "error": {"code": code, "message": message, "data": {"status": 400}},
    }


# --- orders and webhooks: the data -------------------------------------------------------

USER_AGENT = "WooCommerce/9.9.5 Hookshot (WordPress/6.8.8)"
MAX_FAILURES = 7
"""Failures in a row that disable a hook (as DESIGN.md saw a real 9.9 do it)."""
TOPICS = ("order.created", "order.updated", "order.deleted", "order.restored")
_HOOK_ACTIONS = {
    "order.created": ("woocommerce_new_order",),
    "order.updated": ("woocommerce_update_order", "woocommerce_order_refunded"),
    "order.deleted": ("wp_trash_post", "woocommerce_trash_order"),
    "order.restored": ("untrashed_post", "woocommerce_untrash_order"),
}
_INVALID_ORDER = ("woocommerce_rest_shop_order_invalid_id", "Invalid ID.")
_UNLISTED = frozenset({"trash", "checkout-draft"})
_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}(:?\d{2})?)?$"
)
"""WordPress's ``rest_parse_date``: RFC 3339, the zone optional."""
_OFFSET = re.compile(r"[+-]\d{2}(:?\d{2})?$")
CENT = Decimal("0.01")
TAX_RATE = Decimal(21)
"""Every line and the shipping are taxed at 21 % (the captured shop's ES IVA)."""
SHIPPING = (Decimal("4.95"), Decimal("1.04"), "1.0395")
"""Flat rate ex tax, its tax, and the tax as WooCommerce keeps it, unrounded."""

OrderLine = tuple[str, int, str]
"""``(sku, quantity, unit price incl. tax)`` of a line the simulator builds."""


@dataclass
class SimOrder:
    body: dict[str, Any]
    """What ``GET orders/{id}`` answers and a delivery carries, keys in WooCommerce's order."""
    coupon: int = 0
    shipping: bool = True
    notes: list[str] = field(default_factory=list)
    before_trash: str | None = None


@dataclass
class Hook:
    id: int
    topic: str
    delivery_url: str
    secret: str
    status: str
    """``active``, ``paused`` (by an admin) or ``disabled`` (by failures)."""
    created: datetime
    name: str = ""
    failure_count: int = 0
    """Not in the REST answer (as in WooCommerce): a test reads it here."""
    pending_delivery: bool = False
    """Set at creation; an exact 200 to a ping clears it."""


@dataclass(frozen=True)
class Queued:
    hook: int
    order_id: int


@dataclass(frozen=True)
class Delivery:
    """One delivery (or ping) as the shop made it."""

    hook: int
    topic: str
    """``ping`` for a ping."""
    order_id: int
    body: bytes
    headers: dict[str, str]
    status: int | None = None
    """The receiver's answer; None for a timeout, no connection, or a dropped delivery."""
    sent: bool = False
    """False for a delivery :meth:`WooCommerceSim.drop_next` lost."""


def webhook_signature(body: bytes, secret: str) -> str:
    """``X-WC-Webhook-Signature``: base64 of the HMAC-SHA256 of the raw body."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _wp_dumps(value: Any) -> bytes:
    """``wp_json_encode``: compact, non-ASCII as ``\\uXXXX`` and ``/`` as ``\\/``."""
    return json.dumps(value, separators=(",", ":")).replace("/", "\\/").encode()


def _wp_json(
    value: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_wp_dumps(value), status=status, headers=headers, content_type="application/json"
    )


def _wc_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _invalid(param: str, why: str) -> web.Response:
    return wp_error(
        400, "rest_invalid_param", f"Invalid parameter(s): {param}", params={param: why}
    )


def _paging(query: Mapping[str, str]) -> tuple[int, int] | web.Response:
    """``per_page`` (default 10, 1 to 100) and ``page`` (from 1), or WordPress's 400."""
    values = {}
    for name, default in (("per_page", "10"), ("page", "1")):
        text = query.get(name, default)
        if not text.lstrip("-").isdigit():
            return _invalid(name, f"{name} is not of type integer.")
        values[name] = int(text)
    if not 1 <= values["per_page"] <= 100:
        return _invalid("per_page", "per_page must be between 1 (inclusive) and 100 (inclusive)")
    if values["page"] < 1:
        return _invalid("page", "page must be greater than or equal to 1")
    return values["per_page"], values["page"]


def _ordered(orders: list[SimOrder], orderby: str, query: Mapping[str, str]) -> list[SimOrder]:
    field = {"modified": "date_modified_gmt", "id": "id"}.get(orderby, "date_created_gmt")
    ascending = query.get("order", "desc").lower() == "asc"
    ordered = sorted(orders, key=lambda order: (order.body[field], order.body["id"]))
    return ordered if ascending else ordered[::-1]


def _hook_problem(body: Mapping[str, Any]) -> web.Response | None:
    if "topic" in body and body["topic"] not in TOPICS:
        return wp_error(
            400,
            "woocommerce_rest_webhook_invalid_topic",
            "Webhook topic is required and must be valid.",
        )
    if "status" in body and body["status"] not in ("active", "paused", "disabled"):
        return _invalid("status", "status is not one of active, paused and disabled.")
    url = body.get("delivery_url")
    if url is not None and not str(url).startswith(("http://", "https://")):
        return _invalid("delivery_url", "delivery_url is not a valid URL.")
    return None


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT, ROUND_HALF_UP))


def _unrounded(value: Decimal) -> str:
    text = format(value.quantize(Decimal("0.000001"), ROUND_HALF_UP).normalize(), "f")
    return text


def _split(gross: Decimal) -> tuple[Decimal, Decimal, Decimal]:
    """A tax-included amount as (ex tax, tax, tax unrounded), to the cent."""
    net = (gross / (1 + TAX_RATE / 100)).quantize(CENT, ROUND_HALF_UP)
    return net, gross - net, gross - gross / (1 + TAX_RATE / 100)


def _line_json(line_id: int, line: OrderLine, coupon: int) -> dict[str, Any]:
    sku, quantity, unit = line
    gross = Decimal(unit) * quantity
    after = (gross * (100 - coupon) / 100).quantize(CENT, ROUND_HALF_UP)
    subtotal, subtotal_tax, subtotal_raw = _split(gross)
    total, total_tax, total_raw = _split(after)
    price = total / quantity
    return {
        "id": line_id,
        "name": f"Product {sku}",
        "product_id": 10 + sum(sku.encode()) % 90,
        "variation_id": 0,
        "quantity": quantity,
        "tax_class": "",
        "subtotal": _money(subtotal),
        "subtotal_tax": _money(subtotal_tax),
        "total": _money(total),
        "total_tax": _money(total_tax),
        "taxes": [{"id": 1, "total": _unrounded(total_raw), "subtotal": _unrounded(subtotal_raw)}],
        "meta_data": [],
        "sku": sku,
        # A PHP float: after discount, ex tax (never to be read as money).
        "price": int(price) if price == price.to_integral_value() else float(price),
        "image": {"id": "", "src": ""},
        "parent_name": None,
    }


def _amounts(
    order_id: int, lines: Sequence[OrderLine], coupon: int, shipping: bool
) -> dict[str, Any]:
    """Lines, tax lines, shipping and every total, as WooCommerce computes them with
    prices incl. 21 % tax: line amounts and shipping ex tax, taxes rounded per line."""
    base = order_id * 100
    items = [_line_json(base + n, line, coupon) for n, line in enumerate(lines, 1)]
    cart_tax = sum((Decimal(item["total_tax"]) for item in items), Decimal(0))
    net = sum((Decimal(item["total"]) for item in items), Decimal(0))
    discount = sum((Decimal(i["subtotal"]) - Decimal(i["total"]) for i in items), Decimal(0))
    discount_tax = sum(
        (Decimal(i["subtotal_tax"]) - Decimal(i["total_tax"]) for i in items), Decimal(0)
    )
    ship, ship_tax, ship_raw = SHIPPING if shipping else (Decimal(0), Decimal(0), "")
    shipping_lines = []
    if shipping:
        shipping_lines.append(
            {
                "id": base + 98,
                "method_title": "Envío estándar",
                "method_id": "flat_rate",
                "instance_id": "",
                "total": _money(ship),
                "total_tax": _money(ship_tax),
                "taxes": [{"id": 1, "total": ship_raw, "subtotal": ""}],
                "tax_status": "taxable",
                "meta_data": [],
            }
        )
    coupons = []
    if coupon:
        coupons.append(
            {
                "id": base + 97,
                "code": f"sim{coupon}",
                "discount": _money(discount),
                "discount_tax": _money(discount_tax),
                "meta_data": [],
                "discount_type": "percent",
                "nominal_amount": coupon,
                "free_shipping": False,
            }
        )
    return {
        "discount_total": _money(discount),
        "discount_tax": _money(discount_tax),
        "shipping_total": _money(ship),
        "shipping_tax": _money(ship_tax),
        "cart_tax": _money(cart_tax),
        "total": _money(net + cart_tax + ship + ship_tax),
        "total_tax": _money(cart_tax + ship_tax),
        "line_items": items,
        "tax_lines": [
            {
                "id": base + 99,
                "rate_code": "ES-IVA-1",
                "rate_id": 1,
                "label": "IVA",
                "compound": False,
                "tax_total": _money(cart_tax),
                "shipping_tax_total": _money(ship_tax),
                "rate_percent": int(TAX_RATE),
                "meta_data": [],
            }
        ],
        "shipping_lines": shipping_lines,
        "coupon_lines": coupons,
    }


_PAYMENT_TITLES = {"cod": "Cash on delivery", "bacs": "Direct bank transfer", "stripe": "Card"}
_KEY_ORDER = (
    "id",
    "parent_id",
    "status",
    "currency",
    "version",
    "prices_include_tax",
    "date_created",
    "date_modified",
    "discount_total",
    "discount_tax",
    "shipping_total",
    "shipping_tax",
    "cart_tax",
    "total",
    "total_tax",
    "customer_id",
    "order_key",
    "billing",
    "shipping",
    "payment_method",
    "payment_method_title",
    "transaction_id",
    "customer_ip_address",
    "customer_user_agent",
    "created_via",
    "customer_note",
    "date_completed",
    "date_paid",
    "cart_hash",
    "number",
    "meta_data",
    "line_items",
    "tax_lines",
    "shipping_lines",
    "fee_lines",
    "coupon_lines",
    "refunds",
    "payment_url",
    "is_editable",
    "needs_payment",
    "needs_processing",
    "date_created_gmt",
    "date_modified_gmt",
    "date_completed_gmt",
    "date_paid_gmt",
    "currency_symbol",
    "_links",
)
"""The keys of a 9.9 order, in the order its REST controller writes them (the fixtures')."""


def _order_skeleton(order_id: int, url: str, customer_id: int, method: str) -> dict[str, Any]:
    guest = customer_id == 0
    person = ("Luis", "Pérez Núñez", "Bodega Ñ S.L.") if guest else ("Ana", "García", "")
    place = {
        "first_name": person[0],
        "last_name": person[1],
        "company": person[2],
        "address_1": "Calle Mayor 1",
        "address_2": "",
        "city": "Madrid",
        "state": "M",
        "postcode": "28013",
        "country": "ES",
    }
    key = f"wc_order_sim{order_id:09d}"
    api = f"{url}{API}/orders"
    return {
        "id": order_id,
        "parent_id": 0,
        "currency": "EUR",
        "version": "9.9.5",
        "prices_include_tax": True,
        "customer_id": customer_id,
        "order_key": key,
        "billing": {**place, "email": f"customer{order_id}@example.com", "phone": "600 000 000"},
        "shipping": {**place, "phone": ""},
        "payment_method": method,
        "payment_method_title": _PAYMENT_TITLES.get(method, method),
        "transaction_id": "",
        "customer_ip_address": "127.0.0.1",
        "customer_user_agent": "",
        "date_completed": None,
        "date_paid": None,
        "date_completed_gmt": None,
        "date_paid_gmt": None,
        "cart_hash": "",
        "number": str(order_id),
        "meta_data": [],
        "fee_lines": [],
        "refunds": [],
        "is_editable": False,
        "needs_payment": False,
        "needs_processing": True,
        "payment_url": f"{url}/checkout/order-pay/{order_id}/?pay_for_order=true&key={key}",
        "currency_symbol": "€",
        "_links": {
            "self": [
                {
                    "href": f"{api}/{order_id}",
                    "targetHints": {"allow": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
                }
            ],
            "collection": [{"href": api}],
        },
    }


def _in_key_order(body: dict[str, Any]) -> dict[str, Any]:
    return {key: body[key] for key in _KEY_ORDER if key in body}


def _flags(body: dict[str, Any]) -> None:
    status = body["status"]
    body["is_editable"] = status in ("pending", "on-hold", "checkout-draft")
    body["needs_payment"] = status in ("pending", "failed") and Decimal(body["total"]) > 0
    body["needs_processing"] = True
