"""The ``prestashop`` sink: stock and prices through the PrestaShop Webservice (XML).

What it writes, and how (devdocs.prestashop-project.org, Webservice reference and the
"Resources for Products / Combinations / Stock availables" pages):

- **stock** -> ``stock_availables.quantity`` of the product or combination whose
  ``reference`` is the SKU. StockAvailable is PrestaShop's only true stock figure (the
  ``quantity`` fields of products and combinations are deprecated copies). The shop shows
  one figure per product, so it takes the stock of one ERP ``warehouse``; others are
  SKIPPED. ``on_hand`` is written as is (whole units; a fractional one is rounded down so
  the shop never sells what is not there). A product with combinations keeps its stock
  (the sum of theirs) and its prices in them: an event for its own reference is DEAD,
  saying so. PrestaShop has no compare-and-set, so an order placed between the GET and
  the PUT is overwritten by the ERP's figure, as with any absolute write; the ERP's next
  event for that SKU carries the figure after the order.
- **price** -> the product's ``price``, which is the price *before tax* (the shop adds the
  tax rules group's tax): the ERP must send tax-excluded prices. A combination has no
  price of its own, only an *impact* on its product's price, so a combination's price is
  written as ``impact = price - product price`` read at that moment. The caveat: when
  the product's own price changes later, PrestaShop moves every combination's final
  price with it, so an ERP that prices both a product and its combinations must re-send
  the combinations after a product price change (events for both, in flight at once, may
  also read the product's price before or after its change).
- ``delete`` of stock or price: SKIPPED. PrestaShop has nothing to delete (a product's
  stock row and price always exist), and zeroing them on a delete would take products off
  sale by surprise; send ``on_hand = 0`` to empty a stock.

The Webservice has no batch endpoint and wants the **whole resource** on PUT (an optional
field left out is reset to empty), so each write is GET, change one field, PUT back. The
GET is fresh each time, never a cached copy, so a merchant's edit of another field
between two events is kept. What is stripped before a PUT, and why:

- ``manufacturer_name`` and ``quantity`` of a product: read-only; PrestaShop refuses the
  PUT with error 93 ("parameter ... not writable. Please remove this attribute").
- ``position_in_category`` of a product: writable in name, but sending back the value the
  GET returned moves the product within its category or fails with error 135 (PrestaShop
  issues #14903 and #31340; PrestaShop's own maintainers unset it before a PUT, #13950).
- ``associations`` (categories, images, combinations, ...): not fields. Left out they are
  left alone; sent back stale they would replace newer ones.
- XML attributes such as ``xlink:href`` and ``notFilterable``: output decoration only.

SKU -> (id_product, id_product_attribute, stock_available id) is remembered in the version
store (:mod:`relay.sinks.lookup`); a 404 on a cached id (a product deleted and re-created)
forgets it and looks the SKU up again. A reference no product or combination has (or
several, or a product with combinations) is remembered so for ``unknown_sku_ttl``.
Lookups filter on ``reference``, which PrestaShop matches without regard to case; the sink
keeps only an exact match. A SKU the filter syntax cannot express (``[`` or ``|`` inside,
or ``N,M`` which the filter reads as an interval) is DEAD with that reason.

Failures of the whole shop follow the policy every HTTP sink shares
(:func:`relay.sinks.http.with_retries`): 408, 429, 5xx, timeouts and lost connections
are retried with jittered backoff waiting at least ``Retry-After``, then raise
:class:`SinkUnavailable`; 401, 403 and 405 (a wrong key, or one without the permission
for a resource or method) raise it at once, since every event would fail alike. Any other
refusal (404 for a SKU, 400 with PrestaShop's error code and message) is that event's
DEAD result, and the rest of the batch goes on.

The shop's XML is parsed with the standard library: PrestaShop is the integrator's own
shop, expat (>= 2.4) refuses entity-expansion bombs and ElementTree never fetches
external entities.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from xml.etree import ElementTree as ET

from pydantic import Field

from relay.errors import RelayKitError, SinkUnavailable, Transient
from relay.model import Event, SinkResult, Status
from relay.settings import CredentialName, FilePath
from relay.sinks.base import RateBudget
from relay.sinks.http import HttpSettings, LazySession, Reply, ShopUrl, send, with_retries
from relay.sinks.lookup import IdStore, LookupSettings, Miss, SkuIds
from relay.sinks.shop import ENTITIES, Rules, Stock

__all__ = ["PrestaShopSink", "Settings"]

PRODUCT_NOT_FOR_PUT = ("manufacturer_name", "quantity", "position_in_category", "associations")
NOT_FOR_PUT = ("associations",)
_INTERVAL = re.compile(r"^[\d.:\-\s]+,[\d.:\-\s]+$")


class Settings(HttpSettings, LookupSettings):
    """``[[sinks]] type = "prestashop"`` (with ``name``, ``timeout``, ``max_retries`` and
    ``backoff`` as every HTTP sink has them, ``unknown_sku_ttl`` as every shop sink)."""

    type: Literal["prestashop"]
    url: ShopUrl
    """The shop's base URL; the Webservice is ``{url}/api/``. https, or http to loopback:
    the key travels in every request."""
    api_key_file: FilePath | None = None
    api_key_env: str | None = None
    """The Webservice key (Advanced Parameters > Webservice), sent as the Basic username."""
    api_key_credential: CredentialName | None = None
    secrets = ("api_key",)
    warehouse: str
    """The ERP warehouse whose stock the shop shows; stock of other warehouses is SKIPPED."""
    shop_id: int | None = None
    """Multistore with stock per shop: which shop's stock_available to write."""
    price_list: str | None = None
    """Price events of this ``price_list`` only (unset: events without a price list)."""
    currency: str | None = None
    """When set, price events in another currency are SKIPPED (the sink never converts)."""
    requests_per_second: float = Field(default=5.0, gt=0)
    """PrestaShop documents no limit; 5/s keeps a shared host's PHP pool responsive."""
    concurrency: int = Field(default=4, ge=1, le=64)
    """Events written at once within a batch (different SKUs), under the rate budget."""


@dataclass(frozen=True, slots=True)
class Item:
    """What a SKU is in the shop: a product (attribute 0) or one of its combinations."""

    product: int
    attribute: int = 0
    stock: int = 0
    """Its stock_available's id; 0 until a stock write looked it up."""


class Dead(RelayKitError):
    """This event can never apply; the message is the dead letter's reason (not retried)."""


class Unknown(Dead):
    """The catalogue has no single product or combination for the SKU: remembered for
    ``unknown_sku_ttl``."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A Webservice answer: its status and XML root (``None`` for an empty or HTML body)."""

    status: int
    root: ET.Element | None

    def error(self) -> str:
        """PrestaShop's ``<errors>`` as ``code N: message``, or the bare status."""
        errors = [] if self.root is None else self.root.findall("./errors/error")
        text = "; ".join(f"code {_text(e, 'code')}: {_text(e, 'message')}" for e in errors)
        return f"HTTP {self.status}" + (f" ({text})" if text else "")


class PrestaShopSink:
    entities = ENTITIES
    max_batch = 20

    def __init__(self, settings: Settings, ids: IdStore | None = None) -> None:
        self.settings = settings
        self.name = settings.name
        key = settings.secret("api_key", "the Webservice key")
        # HTTP Basic with the key as the username and no password, built here because
        # aiohttp's BasicAuth is deprecated in 3.14 and its replacement is not in 3.9.
        authorization = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        self._budget = RateBudget(settings.requests_per_second)
        self._session = LazySession(tls=settings.tls(), headers={"Authorization": authorization})
        # Negative prices are the shop's to refuse (a product's: error 85, invalid price).
        self.rules = Rules(
            "PrestaShop",
            fractions="floor",
            oversold="keep",
            warehouse=settings.warehouse,
            price_list=settings.price_list,
            currency=settings.currency,
            negative_prices=True,
            deletes="PrestaShop has no equivalent: send the new state",
        )
        self.ids = SkuIds(self.name, Item, settings.unknown_sku_ttl, ids)

    # -- the Sink interface ---------------------------------------------------------------

    async def apply(self, events: Sequence[Event]) -> list[SinkResult]:
        results: list[SinkResult] = [SinkResult(Status.SKIPPED)] * len(events)
        limit = asyncio.Semaphore(self.settings.concurrency)

        async def run(index: int, event: Event) -> None:
            async with limit:
                results[index] = await self._apply_one(event)

        try:
            async with asyncio.TaskGroup() as group:
                for index, event in enumerate(events):
                    group.create_task(run(index, event), name=f"{self.name}:{event.subject}")
        except BaseExceptionGroup as group:  # one shop-wide failure fails the batch
            errors: list[BaseException] = list(group.exceptions)
            raise next((e for e in errors if isinstance(e, SinkUnavailable)), errors[0]) from None
        return results

    async def close(self) -> None:
        await self._session.close()

    # -- one event ------------------------------------------------------------------------

    async def _apply_one(self, event: Event) -> SinkResult:
        planned = self.rules.plan(event)
        if isinstance(planned, SinkResult):
            return planned
        try:
            if isinstance(planned, Stock):
                await self._set_stock(planned.sku, int(planned.quantity))  # floored: whole
            else:
                await self._set_price(planned.sku, planned.amount)
        except Dead as dead:
            return SinkResult(Status.DEAD, f"{event.entity} SKU {planned.sku!r}: {dead}")
        return SinkResult(Status.APPLIED)

    async def _set_stock(self, sku: str, quantity: int) -> None:
        item = await self._item(sku)
        stock = await self._stock_available(sku, item)
        if stock is None:  # the cached id vanished: look the SKU up afresh, once
            await self.ids.stale(sku, item)
            item = await self._item(sku)
            stock = await self._stock_available(sku, item)
        if stock is None:
            raise Dead(f"PrestaShop lost the stock_available of {_describe(item)} meanwhile")
        if _int(stock, "quantity") != quantity:
            _set(stock, "quantity", str(quantity))
            await self._put("stock_availables", stock)

    async def _set_price(self, sku: str, price: Decimal) -> None:
        item = await self._item(sku)
        product = await self._get("products", item.product)
        if product is None:
            await self.ids.stale(sku, item)
            item = await self._item(sku)
            product = await self._get("products", item.product)
        if product is None:
            raise Dead(f"PrestaShop lost product {item.product} meanwhile")
        if item.attribute == 0:
            await self._write_price(product, "products", price, PRODUCT_NOT_FOR_PUT)
            return
        combination = await self._get("combinations", item.attribute)
        if combination is None:
            await self.ids.stale(sku, item)
            raise Dead(f"PrestaShop lost combination {item.attribute} meanwhile")
        impact = price - _price(product)
        await self._write_price(combination, "combinations", impact, NOT_FOR_PUT)

    async def _write_price(
        self, resource: ET.Element, plural: str, value: Decimal, strip: tuple[str, ...]
    ) -> None:
        if _price(resource) == value:
            return  # already so: a replay costs one GET, not a write
        _set(resource, "price", f"{value:.6f}")
        await self._put(plural, resource, strip)

    # -- SKU lookups (cached) -----------------------------------------------------------

    async def _item(self, sku: str) -> Item:
        known = await self.ids.get(sku)
        if isinstance(known, Miss):
            raise Dead(known.reason)
        if known is not None:
            return known
        _check_filterable(sku)
        try:
            item = await self._find_product(sku) or await self._find_combination(sku)
            if item is None:
                raise Unknown("no product or combination has this reference in PrestaShop")
        except Unknown as unknown:
            self.ids.missing(sku, str(unknown))
            raise
        await self.ids.found({sku: item})
        return item

    async def _find_product(self, sku: str) -> Item | None:
        row = await self._by_reference("products", sku, "id,reference,cache_default_attribute")
        if row is None:
            return None
        if _int(row, "cache_default_attribute"):
            raise Unknown(
                "the product has combinations, so its stock and price are theirs: "
                "send the combinations' references"
            )
        return Item(_int(row, "id"))

    async def _find_combination(self, sku: str) -> Item | None:
        row = await self._by_reference("combinations", sku, "id,id_product,reference")
        return None if row is None else Item(_int(row, "id_product"), _int(row, "id"))

    async def _by_reference(self, plural: str, sku: str, fields: str) -> ET.Element | None:
        """The one row whose reference is exactly ``sku`` (the filter ignores case)."""
        rows = await self._list(plural, {"filter[reference]": f"[{sku}]", "display": f"[{fields}]"})
        found = [row for row in rows if _text(row, "reference") == sku]
        if len(found) > 1:
            ids = ", ".join(_text(row, "id") for row in found)
            raise Unknown(f"the reference is on several {plural} ({ids})")
        return found[0] if found else None

    async def _stock_available(self, sku: str, item: Item) -> ET.Element | None:
        """The item's stock_available, fresh; ``None`` when a cached id is gone."""
        if item.stock:
            return await self._get("stock_availables", item.stock)
        query = {
            "filter[id_product]": f"[{item.product}]",
            "filter[id_product_attribute]": f"[{item.attribute}]",
            "display": "full",
        }
        if self.settings.shop_id is not None:
            query["filter[id_shop]"] = f"[{self.settings.shop_id}]"
        rows = await self._list("stock_availables", query)
        if not rows:
            raise Dead(f"PrestaShop has no stock_available for {_describe(item)}")
        if len(rows) > 1:
            raise Dead(
                f"{_describe(item)} has {len(rows)} stock_availables (one per shop?): set shop_id"
            )
        await self.ids.found({sku: replace(item, stock=_int(rows[0], "id"))})
        return rows[0]

    # -- the Webservice's verbs ---------------------------------------------------------

    async def _list(self, plural: str, query: dict[str, str]) -> list[ET.Element]:
        answer = await self._call("GET", plural, params=query)
        if answer.status != 200 or answer.root is None:
            raise Dead(f"GET {plural} failed: {answer.error()}")
        container = answer.root.find(plural)
        return [] if container is None else list(container)

    async def _get(self, plural: str, resource_id: int) -> ET.Element | None:
        answer = await self._call("GET", f"{plural}/{resource_id}")
        if answer.status == 404:
            return None
        entity = None if answer.root is None else next(iter(answer.root), None)
        if answer.status != 200 or entity is None:
            raise Dead(f"GET {plural}/{resource_id} failed: {answer.error()}")
        return entity

    async def _put(
        self, plural: str, entity: ET.Element, strip: tuple[str, ...] = NOT_FOR_PUT
    ) -> None:
        resource_id = _text(entity, "id")
        body = _put_body(entity, strip)
        answer = await self._call("PUT", f"{plural}/{resource_id}", body=body)
        if answer.status != 200:
            raise Dead(f"PUT {plural}/{resource_id} refused: {answer.error()}")

    # -- HTTP: the policy every HTTP sink shares (relay.sinks.http) ----------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Answer:
        """One Webservice request: 408/429/5xx and lost connections retried (waiting at
        least ``Retry-After``), then :class:`SinkUnavailable`."""
        options: dict[str, Any] = {"params": params}
        if body is not None:
            options.update(data=body, headers={"Content-Type": "text/xml; charset=utf-8"})

        async def once() -> Reply:
            try:
                return await send(
                    self._session(),
                    self._budget,
                    method,
                    f"{self.settings.url}/api/{path}",
                    time_limit=self.settings.timeout,
                    **options,
                )
            except Transient as error:  # say which request, never the key
                raise Transient(f"{method} /api/{path}: {error}", error.retry_after) from None

        reply = await with_retries(once, sink=f"prestashop {self.name}", settings=self.settings)
        answer = Answer(reply.status, _parse(reply.body))
        if answer.status in (401, 403, 405):
            # Every event would fail alike: not a dead letter, the shop is unusable until
            # the key or its permissions are fixed.
            raise SinkUnavailable(
                f"prestashop {self.name}: the Webservice key was refused "
                f"on {method} /api/{path} ({answer.error()}); check "
                "api_key and its permissions"
            )
        return answer


# -- XML and value helpers --------------------------------------------------------------


def _parse(body: bytes) -> ET.Element | None:
    """The reply's XML root; ``None`` for an empty or non-XML body (a proxy's HTML page)."""
    try:
        return ET.fromstring(body) if body.strip() else None
    except ET.ParseError:
        return None


def _text(element: ET.Element, name: str) -> str:
    return (element.findtext(name) or "").strip()


def _int(element: ET.Element, name: str) -> int:
    text = _text(element, name)
    return int(text) if text.lstrip("-").isdigit() else 0


def _price(element: ET.Element) -> Decimal:
    try:
        return Decimal(_text(element, "price") or "0")
    except InvalidOperation:
        raise Dead(
            f"PrestaShop sent a price that is not a number: {_text(element, 'price')!r}"
        ) from None


def _set(element: ET.Element, name: str, value: str) -> None:
    child = element.find(name)
    if child is None:
        child = ET.SubElement(element, name)
    child.text = value


def _put_body(entity: ET.Element, strip: tuple[str, ...]) -> bytes:
    """``<prestashop><{resource}>...`` with the whole resource, less what PUT refuses."""
    copy = ET.fromstring(ET.tostring(entity))
    for name in strip:
        for child in copy.findall(name):
            copy.remove(child)
    for element in copy.iter():
        for attribute in [a for a in element.attrib if a.startswith("{") or a == "notFilterable"]:
            del element.attrib[attribute]
    root = ET.Element("prestashop")
    root.append(copy)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _check_filterable(sku: str) -> None:
    """Refuse SKUs that ``filter[reference]=[...]`` would read as something else."""
    if not sku:
        raise Dead("the SKU is empty")
    if "[" in sku or "|" in sku or _INTERVAL.match(sku):
        raise Dead(
            "the Webservice filter syntax cannot look this reference up "
            "('[', '|' and 'N,M' have a meaning there)"
        )


def _describe(item: Item) -> str:
    if item.attribute:
        return f"combination {item.attribute} of product {item.product}"
    return f"product {item.product}"
