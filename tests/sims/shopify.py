"""A Shopify Admin GraphQL API on loopback: just what :mod:`relay.sinks.shopify` sends.

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

Faults for tests: :attr:`ShopifySim.fail_next` (HTTP statuses answered before anything
runs), :attr:`ShopifySim.lose_next` (apply a mutation, then answer 502 as if the answer got
lost), :attr:`ShopifySim.before_writes` (each runs just before one stock write: a sale
that lands between the sink's read and its write), :attr:`ShopifySim.hold_next` (a stock
write that is still being processed when its gateway answers 504; :meth:`ShopifySim.finish_held`
completes it, and :attr:`ShopifySim.after_concurrent` hooks run after each answer that it is
still in progress).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

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
        }

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
