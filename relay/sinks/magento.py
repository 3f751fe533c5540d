"""``magento``: stock as MSI source items, prices through the bulk base-prices API.

Followed: the Adobe Commerce REST reference (``POST /V1/inventory/source-items``,
``GET /V1/inventory/sources``, ``POST /V1/products/base-prices``) and what the Inventory and
Catalog modules' validators answer (magento/inventory ``SourceItemsSaveHandler`` and its
validators; magento2 ``BasePriceStorage``).

- **Auth.** An integration's access token as ``Authorization: Bearer``. A 401 ("The consumer
  isn't authorized to access %resources.") fails every write alike: the sink raises
  :class:`SinkUnavailable` naming the token keys, rather than dead-letter the stream.
- **Stock.** ``POST /rest/{store_code}/V1/inventory/source-items`` with ``{"sourceItems":
  [{"sku", "source_code", "quantity", "status"}]}``, up to 100 items a call; ``status`` is 1
  (in stock) when the quantity is above zero. Magento validates the whole list before it
  saves any of it, and one bad item fails the call with 400 ``{"message": "Validation
  Failed", "errors": [{"message", "parameters"}]}``. The errors name the SKU in their
  parameters (``Product with requested "%field": "%value" was not found.``): those events are
  DEAD and the rest is sent again. An error naming no SKU sends each item alone, so one bad
  row cannot sink ninety-nine good ones.
- **Sources.** ``sources`` maps an ERP warehouse to an MSI ``source_code``; left empty, each
  warehouse is the source of the same name (single-source shops: map yours to
  ``"default"``). With a table, warehouses not in it are SKIPPED. The shop's source codes
  are read once (``GET /V1/inventory/sources``, paged) and again when an unknown one turns
  up: stock for a source Magento does not have is DEAD with the list of those it has, where
  Magento itself would only answer "Could not save Source Item" for the whole call.
- **Prices.** ``POST /rest/{store_code}/V1/products/base-prices`` with ``{"prices": [{"sku",
  "price", "store_id"}]}``, up to 100 a call. This bulk ("efficient") price API skips rows it
  refuses and saves the others, answering 200 with the refused ones as ``[{"message",
  "parameters"}]`` (``Invalid attribute %fieldName = %fieldValue.`` with ``["SKU", sku]``):
  one call per batch instead of one ``PUT /V1/products/{sku}`` per price. ``store_id`` 0 is
  the global price, which is what Magento keeps unless the catalog price scope is
  per-website. With ``price_list`` set, prices of other lists are SKIPPED.
- **Store code.** ``all`` (the default) addresses the admin scope, where source items and
  global prices live; a store view code only changes which scope Magento resolves.
- **Rate.** Magento documents no REST request limit; hosts and CDNs add their own and answer
  429. The default budget is 10 requests/s, each carrying up to 100 writes. 429s, 5xx,
  timeouts and refused connections are retried, honouring ``Retry-After``.
- **Unknown SKUs.** Magento addresses products by SKU, so there are no ids to look up or
  keep. A SKU Magento says it has no product for (``Product with requested "sku" ... was not
  found.``, ``Invalid attribute SKU = ...``) is remembered for ``unknown_sku_ttl``
  (:class:`relay.sinks.lookup.Misses`): until then its events are DEAD with Magento's words
  and left out of the calls, which spares the call again with the rest of the batch.
- **Deletes** of stock or price are SKIPPED: a row gone from the ERP is not zero stock or a
  free product; unassigning a source or disabling a product is done in Magento.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from relay.errors import SinkUnavailable
from relay.model import Event, SinkResult, Status
from relay.settings import CredentialName, FilePath, read_secret
from relay.sinks.base import RateBudget
from relay.sinks.http import HttpSettings, LazySession, Reply, ShopUrl, send, with_retries
from relay.sinks.lookup import IdStore, LookupSettings, Misses
from relay.sinks.shop import ENTITIES, Price, Rules, Stock, one_warehouse_each, sort_out

MAX_BATCH = 100
"""Items per source-items or base-prices call: a few hundred kilobytes of JSON at most, and
one PHP request Magento validates and saves within its usual limits."""
SOURCES_PAGE = 100

_STORE_CODE = re.compile(r"^[a-z0-9_]+$")
_PLACEHOLDER = re.compile(r"%(\w+)")


class Settings(HttpSettings, LookupSettings):
    """``[[sinks]] type = "magento"`` (with ``name``, ``timeout``, ``max_retries``, ``backoff``
    as every HTTP sink, and ``unknown_sku_ttl`` as every shop sink)."""

    type: Literal["magento"]
    url: ShopUrl
    """The shop's base URL (``https://shop.example.com``); REST lives under ``/rest``."""
    token_file: FilePath | None = None
    """File holding the integration's access token; or ``token_env``."""
    token_env: str | None = None
    token_credential: CredentialName | None = None
    secrets = ("token",)
    store_code: str = "all"
    """The store code in REST paths; ``all`` is the admin (global) scope."""
    store_id: int = Field(default=0, ge=0)
    """The ``store_id`` of base prices; 0 is the global price."""
    sources: dict[str, str] = Field(default_factory=dict)
    """ERP warehouse -> MSI source_code. Empty: every warehouse is the source of its name."""
    price_list: str | None = None
    """The ERP price list that is Magento's price; others are SKIPPED. Unset: only price
    events that name no list."""
    requests_per_second: float = Field(default=10.0, gt=0)

    @field_validator("store_code")
    @classmethod
    def _store_code(cls, value: str) -> str:
        if not _STORE_CODE.match(value):
            raise ValueError(f"{value!r} is not a Magento store code (a-z, 0-9, _)")
        return value

    @field_validator("sources")
    @classmethod
    def _one_warehouse_per_source(cls, value: dict[str, str]) -> dict[str, str]:
        return one_warehouse_each(value)


@dataclass(frozen=True, slots=True)
class _Item:
    """One event to write: a source item or a price."""

    index: int
    sku: str
    row: dict[str, Any]
    """What Magento gets for it."""


def render(error: Any) -> str:
    """A Magento error's message with its parameters put in (named or positional)."""
    if not isinstance(error, dict):
        return str(error)
    message, parameters = str(error.get("message", "")), error.get("parameters")
    if isinstance(parameters, dict):
        values = {str(name): str(value) for name, value in parameters.items()}
    elif isinstance(parameters, list):
        # Positional values fill the placeholders in the order they appear (%1, %2 or named).
        names = list(dict.fromkeys(_PLACEHOLDER.findall(message)))
        values = dict(zip(names, map(str, parameters), strict=False))
    else:
        return message
    return _PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), message)


def _unknown_sku(error: Any) -> str | None:
    """The SKU an error says Magento has no product for; ``None`` for any other error."""
    if not isinstance(error, dict):
        return None
    message, parameters = str(error.get("message", "")), error.get("parameters")
    if (
        isinstance(parameters, dict)
        and "was not found" in message
        and (str(parameters.get("field")).lower() == "sku")
    ):
        return str(parameters.get("value"))
    values = list(parameters.values()) if isinstance(parameters, dict) else parameters
    if (
        message.startswith("Invalid attribute")
        and isinstance(values, list)
        and (len(values) == 2 and str(values[0]).lower() == "sku")
    ):
        return str(values[1])
    return None


def _values(error: Any) -> set[str]:
    parameters = error.get("parameters") if isinstance(error, dict) else None
    if isinstance(parameters, dict):
        return {str(value) for value in parameters.values()}
    return {str(value) for value in parameters} if isinstance(parameters, list) else set()


class MagentoSink:
    """Stock (MSI source items) and base prices of one Magento 2 / Adobe Commerce shop."""

    entities = ENTITIES
    max_batch = MAX_BATCH

    def __init__(self, settings: Settings, ids: IdStore | None = None) -> None:
        """``ids`` is not used: Magento takes SKUs as they are, there are no ids to keep."""
        self.settings = settings
        self.name = settings.name
        token = read_secret(
            settings.token_file, settings.token_env, "token", settings.token_credential
        )
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._api = f"{settings.url}/rest/{settings.store_code}/V1"
        self._budget = RateBudget(settings.requests_per_second)
        # An empty sources table: each warehouse is the source of its name.
        self.rules = Rules(
            "Magento",
            fractions="keep",
            oversold="zero",
            places=settings.sources,
            place="a Magento source",
            price_list=settings.price_list,
        )
        self._sources: set[str] = set()
        self.misses = Misses(settings.unknown_sku_ttl)
        self._session = LazySession(tls=settings.tls())

    async def close(self) -> None:
        await self._session.close()

    async def apply(self, events: Sequence[Event]) -> list[SinkResult]:
        results, stock, prices = sort_out(events, self._plan)
        if stock:
            results |= await self._stock(stock)
        if prices:
            results |= await self._save(prices, self._save_prices)
        return [results[index] for index in range(len(events))]

    def _plan(self, index: int, event: Event) -> _Item | SinkResult:
        """What to write for one event, or why nothing will be."""
        planned = self.rules.plan(event)
        miss = self.misses.get(planned.sku) if isinstance(planned, Stock | Price) else None
        if miss is not None:
            return SinkResult(Status.DEAD, miss.reason)
        if isinstance(planned, Stock):
            quantity = planned.quantity
            return _Item(
                index,
                planned.sku,
                {
                    "sku": planned.sku,
                    "source_code": planned.place,
                    "quantity": quantity,
                    "status": 1 if quantity > 0 else 0,
                },
            )
        if isinstance(planned, Price):
            # Magento stores decimal(20,6) and reads the JSON number into it.
            return _Item(
                index,
                planned.sku,
                {
                    "sku": planned.sku,
                    "price": float(planned.amount),
                    "store_id": self.settings.store_id,
                },
            )
        return planned

    # --- stock -----------------------------------------------------------------------

    async def _stock(self, items: list[_Item]) -> dict[int, SinkResult]:
        """Items of sources the shop has are saved; the others are dead, saying why."""
        known = await self._known_sources({item.row["source_code"] for item in items})
        results = {
            item.index: SinkResult(
                Status.DEAD,
                f"{item.sku}: Magento has no source {item.row['source_code']!r} "
                f"(it has: {', '.join(sorted(known)) or 'none'}); map the warehouse "
                "in this sink's sources",
            )
            for item in items
            if item.row["source_code"] not in known
        }
        ready = [item for item in items if item.index not in results]
        return results | (await self._save(ready, self._save_stock) if ready else {})

    async def _known_sources(self, wanted: set[str]) -> set[str]:
        if not wanted <= self._sources:  # first use, or a source added since: read again
            self._sources = set()
            page = 1
            while True:
                listing = await self._get_json(
                    "/inventory/sources",
                    {
                        "searchCriteria[pageSize]": str(SOURCES_PAGE),
                        "searchCriteria[currentPage]": str(page),
                    },
                )
                codes = [str(source.get("source_code")) for source in listing.get("items") or []]
                self._sources.update(codes)
                if not codes or len(self._sources) >= int(listing.get("total_count") or 0):
                    break
                page += 1
        return self._sources

    async def _save_stock(self, items: list[_Item]) -> tuple[list[Any], bool]:
        reply = await self._request(
            "POST", "/inventory/source-items", json={"sourceItems": [item.row for item in items]}
        )
        if reply.ok:
            return [], False
        if reply.status != 400:
            raise self._unavailable("inventory/source-items", reply)
        body = self._body(reply)
        # Nothing was saved: validation runs over the whole list before the save.
        return (body.get("errors") or [body]) if isinstance(body, dict) else [body], False

    # --- prices ----------------------------------------------------------------------

    async def _save_prices(self, items: list[_Item]) -> tuple[list[Any], bool]:
        reply = await self._request(
            "POST", "/products/base-prices", json={"prices": [item.row for item in items]}
        )
        if not reply.ok:
            raise self._unavailable("products/base-prices", reply)
        refused = self._body(reply)
        # The rows Magento did not refuse are saved.
        return (refused if isinstance(refused, list) else []), True

    # --- what a refused item becomes -------------------------------------------------

    async def _save(
        self, items: list[_Item], save: Callable[[list[_Item]], Awaitable[tuple[list[Any], bool]]]
    ) -> dict[int, SinkResult]:
        """``save`` the items; those its errors name are dead, the rest saved or sent again.

        ``save`` answers the errors and whether the items they do not name were saved.
        """
        errors, others_saved = await save(items)
        if not errors:
            return {item.index: SinkResult(Status.APPLIED) for item in items}
        named = self._reasons(errors, {item.sku for item in items})
        for sku in {_unknown_sku(error) for error in errors}:
            if sku in named:
                self.misses.add(sku, f"{sku}: {named[sku]}")
        results = {
            item.index: SinkResult(Status.DEAD, f"{item.sku}: {named[item.sku]}")
            for item in items
            if item.sku in named
        }
        rest = [item for item in items if item.sku not in named]
        unnamed = [error for error in errors if not _values(error) & {i.sku for i in items}]
        if len(rest) == 1 and unnamed:
            results[rest[0].index] = SinkResult(Status.DEAD, f"{rest[0].sku}: {render(unnamed[0])}")
        elif unnamed:
            # Magento did not say which row it refused: each alone (writes are absolute).
            for item in rest:
                results |= await self._save([item], save)
        elif others_saved:
            results |= {item.index: SinkResult(Status.APPLIED) for item in rest}
        elif rest:
            results |= await self._save(rest, save)
        return results

    @staticmethod
    def _reasons(errors: Iterable[Any], skus: set[str]) -> dict[str, str]:
        """Each SKU an error names in its parameters, with the error's text."""
        reasons: dict[str, list[str]] = {}
        for error in errors:
            for sku in _values(error) & skus:
                reasons.setdefault(sku, []).append(render(error))
        return {sku: "; ".join(texts) for sku, texts in reasons.items()}

    # --- the wire --------------------------------------------------------------------

    async def _request(self, method: str, path: str, **options: Any) -> Reply:
        async def call() -> Reply:
            return await send(
                self._session(),
                self._budget,
                method,
                self._api + path,
                time_limit=self.settings.timeout,
                headers=self._headers,
                **options,
            )

        reply = await with_retries(call, sink=f"magento {self.name}", settings=self.settings)
        if reply.status == 401:
            raise SinkUnavailable(
                f"magento {self.name}: the access token was refused (401: "
                f"{render(self._body(reply))}); check token_file / token_env and the "
                "integration's API resources"
            )
        return reply

    async def _get_json(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        reply = await self._request("GET", path, params=params)
        body = self._body(reply)
        if not reply.ok or not isinstance(body, dict):
            raise self._unavailable(path.strip("/"), reply)
        return body

    @staticmethod
    def _body(reply: Reply) -> Any:
        try:
            return json.loads(reply.body)
        except ValueError:
            return reply.excerpt()

    def _unavailable(self, endpoint: str, reply: Reply) -> SinkUnavailable:
        """A refusal no single event caused (a missing route or module, a forbidden scope)."""
        return SinkUnavailable(
            f"magento {self.name}: {endpoint} answered HTTP {reply.status}: "
            f"{render(self._body(reply))}"
        )


__all__ = ["MagentoSink", "Settings", "render"]
