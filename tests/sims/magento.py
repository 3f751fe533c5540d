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

Faults for tests: :attr:`MagentoSim.fail_next` (statuses answered before anything runs; a
429 carries ``Retry-After: {retry_after}``) and :attr:`MagentoSim.disabled` (routes answered
as if their module were not installed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
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

    def __init__(self, *, token: str = TOKEN) -> None:
        self.token = token
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
