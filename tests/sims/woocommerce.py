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
"""

from __future__ import annotations

import base64
import hmac
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

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


def auth_error(message: str) -> web.Response:
    return wp_error(401, "woocommerce_rest_authentication_error", message)


def anonymous(request: web.Request) -> web.Response:
    """What a route answers a visitor who is not logged in."""
    if request.method == "GET":
        return wp_error(401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")
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
