"""A Magento 2 / Adobe Commerce REST API on loopback: what :mod:`relay.sinks.magento` uses.

Modelled from the Adobe Commerce REST reference and the modules behind it:

- ``Authorization: Bearer <integration token>`` on every route, or 401 ``{"message": "The
  consumer isn't authorized to access %resources.", "parameters": {"resources": ...}}``;
  an unknown route is 404 ``{"message": "Request does not match any route."}``.
- ``POST /rest/{store}/V1/inventory/source-items`` (MSI ``SourceItemsSaveInterface``): every
  item is validated before anything is saved; any error fails the call with 400
  ``{"message": "Validation Failed", "errors": [{"message", "parameters"}]}`` (an unknown SKU:
  ``Product with requested "%field": "%value" was not found.``). A source code that passes
  validation but does not exist breaks the database's foreign key: 400 ``{"message": "Could
  not save Source Item"}``, nothing saved. Success answers ``[]``.
- ``GET /rest/{store}/V1/inventory/sources`` with ``searchCriteria[pageSize]`` and
  ``searchCriteria[currentPage]``: ``{"items", "search_criteria", "total_count"}``; a page
  past the last one answers the last page again, as Magento's collections do.
- ``POST /rest/{store}/V1/products/base-prices`` (``BasePriceStorage::update``): rows with an
  unknown SKU, a missing or negative price or an unknown store are skipped and reported as
  ``[{"message", "parameters"}]`` with positional parameters; the other rows are saved; 200.

- ``GET /rest/{store}/V1/orders`` with ``searchCriteria`` (``filter_groups[i][filters][j]
  [field|value|condition_type]``: filters of one group OR'd, groups AND'd; ``eq``, ``neq``,
  ``gt``, ``gteq``, ``lt``, ``lteq``, ``in``; ``sortOrders[k][field|direction]``;
  ``pageSize``, ``currentPage``): ``{"items", "search_criteria", "total_count"}``, a page
  past the end answering the last page again, so a client stops on ``total_count``.
  ``GET /rest/{store}/V1/orders/{id}``: the entity, or 404 ``{"message": "The entity that
  was requested doesn't exist. Verify the entity and try again."}``. Times are naive UTC
  ``YYYY-MM-DD HH:MM:SS`` from the sim's clock (:attr:`MagentoSim.clock`, whole seconds);
  amounts JSON numbers, null fields left out.

Orders for tests: :meth:`MagentoSim.place_order`, :meth:`MagentoSim.change_order` (any
fields, ``updated_at`` moves), :meth:`MagentoSim.pay`, :meth:`MagentoSim.cancel`,
:meth:`MagentoSim.delete_order`; :attr:`MagentoSim.garbage_next` answers 200 with a body
that is not what the route returns.

Faults for tests: :attr:`MagentoSim.fail_next` (statuses answered before anything runs; a
429 carries ``Retry-After: {retry_after}``) and :attr:`MagentoSim.disabled` (routes answered
as if their module were not installed).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from tests.sims import Served

TOKEN = "mg-integration-token-0123456789"
STORES = {"all": 0, "default": 1}
"""Store codes in REST paths, and the store ids the shop has."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, parameters: Any = None, **extra: Any) -> web.Response:
    body: dict[str, Any] = {"message": message, **extra}
    if parameters is not None:
        body["parameters"] = parameters
    return web.json_response(body, status=status)


def _required(field: str) -> web.Response:
    return _error(400, '"%fieldName" is required. Enter and try again.', {"fieldName": field})


class MagentoSim(Served):
    """One shop: a catalogue of SKUs, MSI sources, source items and base prices."""

    def __init__(self, *, token: str = TOKEN, clock: Callable[[], datetime] | None = None) -> None:
        self.token = token
        self.now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
        """The default clock's time: a test moves it (:meth:`tick`)."""
        self.clock: Callable[[], datetime] = clock or (lambda: self.now)
        self.orders: dict[int, dict[str, Any]] = {}
        self.garbage_next: list[bytes] = []
        """Bodies answered with 200 in place of the next answers (a proxy's page, cut JSON)."""
        self.searches: list[dict[str, str]] = []
        """The query of every V1/orders search, as received."""
        self.prices: dict[str, Decimal] = {}
        self.sources: dict[str, str] = {"default": "Default Source"}
        self.source_items: dict[tuple[str, str], tuple[float, int]] = {}
        self.calls: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        """How many source-items calls carried each SKU."""
        self.fail_next: list[int] = []
        self.retry_after = "0"
        self.disabled: set[str] = set()

    # --- the shop's contents ------------------------------------------------------------

    def add_product(self, sku: str, price: str = "10.00") -> None:
        self.prices[sku] = Decimal(price)

    def add_source(self, code: str, name: str = "") -> None:
        self.sources[code] = name or code.title()

    def quantity(self, sku: str, source: str) -> float:
        return self.source_items[(sku, source)][0]

    def status(self, sku: str, source: str) -> int:
        return self.source_items[(sku, source)][1]

    # --- serving ------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        app.router.add_post("/rest/{store}/V1/inventory/source-items", self._source_items)
        app.router.add_get("/rest/{store}/V1/inventory/sources", self._sources)
        app.router.add_post("/rest/{store}/V1/products/base-prices", self._base_prices)
        app.router.add_get("/rest/{store}/V1/orders", self._search_orders)
        app.router.add_get("/rest/{store}/V1/orders/{id}", self._order)
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Routing misses, auth, store codes and injected faults, before any handler."""
        route = request.path.rsplit("/V1/", 1)[-1]
        if request.match_info.route.resource is None or route in self.disabled:
            return _error(404, "Request does not match any route.")
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            resource = (
                "Magento_Catalog::catalog"
                if "price" in route
                else "Magento_Sales::actions_view"
                if route.startswith("orders")
                else "Magento_InventoryApi::source_item"
            )
            return _error(
                401, "The consumer isn't authorized to access %resources.", {"resources": resource}
            )
        if request.match_info["store"] not in STORES:
            return _error(
                400, "The store that was requested wasn't found. Verify the store and try again."
            )
        if self.fail_next:
            status = self.fail_next.pop(0)
            headers = {"Retry-After": self.retry_after} if status == 429 else None
            return web.json_response(
                {"message": "Service temporarily unavailable"}, status=status, headers=headers
            )
        self.calls[route] += 1
        if self.garbage_next:
            return web.Response(body=self.garbage_next.pop(0), content_type="application/json")
        return await handler(request)

    # --- MSI source items ---------------------------------------------------------------

    async def _source_items(self, request: web.Request) -> web.Response:
        body = await request.json()
        items = body.get("sourceItems") if isinstance(body, dict) else None
        if not isinstance(items, list):
            return _required("sourceItems")
        if not items:
            return _error(400, "Input data is empty")
        self.sent.update(str(item.get("sku")) for item in items if isinstance(item, dict))
        errors = [error for item in items for error in self._check_item(item)]
        if errors:
            return _error(400, "Validation Failed", errors=errors)
        if any(item["source_code"] not in self.sources for item in items):
            return _error(400, "Could not save Source Item")  # the foreign key said no
        for item in items:
            self.source_items[(item["sku"], item["source_code"])] = (
                float(item["quantity"]),
                int(item["status"]),
            )
        return web.json_response([])

    def _check_item(self, item: Any) -> list[dict[str, Any]]:
        if not isinstance(item, dict):
            return [{"message": "Invalid source item", "parameters": []}]
        errors = []
        sku, source = str(item.get("sku") or ""), str(item.get("source_code") or "")
        if not sku:
            errors.append({"message": '"%field" can not be empty.', "parameters": {"field": "sku"}})
        elif sku not in self.prices:
            errors.append(
                {
                    "message": 'Product with requested "%field": "%value" was not found.',
                    "parameters": {"field": "sku", "value": sku},
                }
            )
        if not source:
            errors.append(
                {"message": '"%field" can not be empty.', "parameters": {"field": "source_code"}}
            )
        elif any(character.isspace() for character in source):
            errors.append(
                {
                    "message": '"%field" can not contain whitespaces.',
                    "parameters": {"field": "source_code"},
                }
            )
        quantity = item.get("quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int | float):
            errors.append(
                {"message": '"%field" should be numeric.', "parameters": {"field": "quantity"}}
            )
        if item.get("status") not in (0, 1):
            errors.append(
                {
                    "message": '"%field" should be numeric and 0 or 1.',
                    "parameters": {"field": "status"},
                }
            )
        return errors

    async def _sources(self, request: web.Request) -> web.Response:
        size = int(request.query.get("searchCriteria[pageSize]", "20"))
        wanted = int(request.query.get("searchCriteria[currentPage]", "1"))
        codes = sorted(self.sources)
        last = max(1, -(-len(codes) // size))
        page = min(wanted, last)  # Magento clamps a page past the end to the last one
        items = [
            {
                "source_code": code,
                "name": self.sources[code],
                "enabled": True,
                "country_id": "ES",
                "postcode": "28001",
            }
            for code in codes[(page - 1) * size : page * size]
        ]
        return web.json_response(
            {
                "items": items,
                "total_count": len(codes),
                "search_criteria": {"filter_groups": [], "page_size": size, "current_page": wanted},
            }
        )

    # --- base prices --------------------------------------------------------------------

    async def _base_prices(self, request: web.Request) -> web.Response:
        body = await request.json()
        rows = body.get("prices") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            return _required("prices")
        failed: list[dict[str, Any]] = []
        for row in rows:
            problem = self._check_price(row)
            if problem:
                failed.append(problem)
            else:
                self.prices[row["sku"]] = Decimal(str(row["price"]))
        return web.json_response(failed)

    def _check_price(self, row: Any) -> dict[str, Any] | None:
        row = row if isinstance(row, dict) else {}
        sku, price = row.get("sku"), row.get("price")
        invalid = "Invalid attribute %fieldName = %fieldValue."
        if not sku or sku not in self.prices:
            return {"message": invalid, "parameters": ["SKU", str(sku)]}
        try:
            amount = Decimal(str(price)) if price is not None else None
        except InvalidOperation:
            amount = None
        if amount is None or amount < 0:
            return {"message": invalid, "parameters": ["Price", str(price)]}
        if row.get("store_id") not in STORES.values():
            return {
                "message": "Requested store is not found. Row ID: SKU = %SKU, Store ID: %storeId.",
                "parameters": [sku, str(row.get("store_id"))],
            }
        return None

    # --- orders -------------------------------------------------------------------------

    def tick(self, seconds: float = 1) -> datetime:
        """Move the default clock on."""
        self.now += timedelta(seconds=seconds)
        return self.now

    def _stamp(self) -> str:
        return self.clock().astimezone(UTC).strftime(MAGENTO_TIME)

    def place_order(
        self,
        lines: list[tuple[str, int, str]] | None = None,
        *,
        guest: bool = False,
        shipping: str = "5.00",
        email: str = "ana@example.com",
    ) -> int:
        """A new order (state ``new``, nothing paid) of ``(sku, quantity, unit price ex
        tax)`` lines at 21 %, flat rate ``shipping``; its ``entity_id``."""
        entity_id = max(self.orders, default=0) + 1
        stamp = self._stamp()
        items = [
            _order_item(entity_id, 100 * entity_id + index, sku, quantity, Decimal(price))
            for index, (sku, quantity, price) in enumerate(lines or [("MUG", 2, "10.00")])
        ]
        ship = Decimal(shipping)
        ship_tax = (ship * Decimal("0.21")).quantize(Decimal("0.01"))
        subtotal = sum((Decimal(str(item["row_total"])) for item in items), Decimal(0))
        tax = sum((Decimal(str(item["tax_amount"])) for item in items), ship_tax)
        address = {
            "address_type": "billing",
            "city": "Madrid",
            "country_id": "ES",
            "email": email,
            "entity_id": 2 * entity_id,
            "firstname": "Ana",
            "lastname": "García",
            "parent_id": entity_id,
            "postcode": "28013",
            "region_code": "M",
            "street": ["Calle Mayor 1"],
            "telephone": "600111222",
        }
        order: dict[str, Any] = {
            "entity_id": entity_id,
            "increment_id": f"{entity_id:09d}",
            "created_at": stamp,
            "updated_at": stamp,
            "state": "new",
            "status": "pending",
            "order_currency_code": "EUR",
            "base_currency_code": "EUR",
            "customer_email": email,
            "customer_is_guest": 1 if guest else 0,
            "subtotal": float(subtotal),
            "shipping_amount": float(ship),
            "shipping_tax_amount": float(ship_tax),
            "shipping_incl_tax": float(ship + ship_tax),
            "shipping_description": "Flat Rate - Fixed",
            "tax_amount": float(tax),
            "discount_amount": 0,
            "grand_total": float(subtotal + ship + tax),
            "total_due": float(subtotal + ship + tax),
            "items": items,
            "billing_address": address,
            "payment": {
                "method": "checkmo",
                "additional_information": ["Check / Money order"],
                "amount_ordered": float(subtotal + ship + tax),
            },
            "status_histories": [],
            "extension_attributes": {
                "shipping_assignments": [
                    {
                        "shipping": {
                            "address": address | {"address_type": "shipping"},
                            "method": "flatrate_flatrate",
                        },
                        "items": items,
                    }
                ]
            },
        }
        if not guest:
            order |= {"customer_id": 5, "customer_firstname": "Ana", "customer_lastname": "García"}
        self.orders[entity_id] = order
        return entity_id

    def change_order(self, entity_id: int, **fields: Any) -> None:
        """Set fields of an order (a None drops one); ``updated_at`` moves to the clock."""
        order = self.orders[entity_id]
        order.update(fields)
        for key in [key for key, value in order.items() if value is None]:
            del order[key]
        order["updated_at"] = self._stamp()

    def pay(self, entity_id: int) -> None:
        """Invoiced and captured: processing, paid in full."""
        total = self.orders[entity_id]["grand_total"]
        self.change_order(
            entity_id, state="processing", status="processing", total_paid=total, total_due=0
        )

    def cancel(self, entity_id: int) -> None:
        self.change_order(entity_id, state="canceled", status="canceled")

    def delete_order(self, entity_id: int) -> None:
        del self.orders[entity_id]

    async def _order(self, request: web.Request) -> web.Response:
        raw = request.match_info["id"]
        order = self.orders.get(int(raw)) if raw.isdigit() else None
        if order is None:
            return _error(
                404, "The entity that was requested doesn't exist. Verify the entity and try again."
            )
        return web.json_response(order)

    async def _search_orders(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.searches.append(query)
        groups, sorts = _criteria(query)
        found = [
            order
            for order in self.orders.values()
            if all(any(_matches(order, *each) for each in group) for group in groups.values())
        ]
        for field, direction in reversed(sorts):
            found.sort(key=lambda order: _sort_key(order.get(field)), reverse=direction == "DESC")
        size = int(query.get("searchCriteria[pageSize]", "0") or 0)
        wanted = int(query.get("searchCriteria[currentPage]", "1") or 1)
        if size > 0:
            last = max(1, -(-len(found) // size))
            page = min(wanted, last)  # past the end: the last page again
            items = found[(page - 1) * size : page * size]
        else:
            items = found
        return web.json_response(
            {
                "items": items,
                "search_criteria": {"page_size": size, "current_page": wanted},
                "total_count": len(found),
            }
        )


MAGENTO_TIME = "%Y-%m-%d %H:%M:%S"
_FILTER = re.compile(
    r"searchCriteria\[filter_groups\]\[(\d+)\]\[filters\]\[(\d+)\]\[(field|value|condition_type)\]"
)
_SORT = re.compile(r"searchCriteria\[sortOrders\]\[(\d+)\]\[(field|direction)\]")


def _criteria(
    query: dict[str, str],
) -> tuple[dict[str, list[tuple[str, str, str]]], list[tuple[str, str]]]:
    filters: dict[tuple[str, str], dict[str, str]] = {}
    sorts: dict[int, dict[str, str]] = {}
    for key, value in query.items():
        if match := _FILTER.fullmatch(key):
            filters.setdefault((match[1], match[2]), {})[match[3]] = value
        elif match := _SORT.fullmatch(key):
            sorts.setdefault(int(match[1]), {})[match[2]] = value
    groups: dict[str, list[tuple[str, str, str]]] = {}
    for (group, _), parts in sorted(filters.items()):
        condition = parts.get("condition_type", "eq")
        groups.setdefault(group, []).append(
            (parts.get("field", ""), parts.get("value", ""), condition)
        )
    order = [
        (parts.get("field", ""), parts.get("direction", "ASC").upper())
        for _, parts in sorted(sorts.items())
    ]
    return groups, order


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value or ""))


def _matches(order: dict[str, Any], field: str, value: str, condition: str) -> bool:
    stored = order.get(field)
    if stored is None:
        return condition == "null"
    left: Any = stored
    right: Any = value
    if isinstance(stored, int | float):
        try:
            right = float(value)
        except ValueError:
            return False
    else:
        left = str(stored)
    if condition == "in":
        return str(stored) in value.split(",")
    comparisons: dict[str, Callable[[Any, Any], bool]] = {
        "eq": lambda a, b: a == b,
        "neq": lambda a, b: a != b,
        "gt": lambda a, b: a > b,
        "gteq": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lteq": lambda a, b: a <= b,
    }
    compare = comparisons.get(condition)
    return compare(left, right) if compare is not None else False


def _order_item(
    order: int, item_id: int, sku: str, quantity: int, price: Decimal
) -> dict[str, Any]:
    row_total = price * quantity
    tax = (row_total * Decimal("0.21")).quantize(Decimal("0.01"))
    return {
        "item_id": item_id,
        "order_id": order,
        "sku": sku,
        "name": sku.title(),
        "product_type": "simple",
        "qty_ordered": quantity,
        "price": float(price),
        "row_total": float(row_total),
        "row_total_incl_tax": float(row_total + tax),
        "tax_amount": float(tax),
        "tax_percent": 21,
        "discount_amount": 0,
    }
