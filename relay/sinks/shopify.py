"""Shopify: absolute stock and variant prices through the Admin GraphQL API.

One endpoint, ``{shop_url}/admin/api/{api_version}/graphql.json``, with the app's token in
``X-Shopify-Access-Token``. What the sink sends, and why:

- **Stock** is ``inventorySetQuantities`` with ``name: "on_hand"`` and ``reason: "correction"``.
  The ERP counts what stands on the shelf, and that is Shopify's ``on_hand``
  (``available`` + ``committed`` + ``reserved`` ...). Setting ``on_hand`` lets Shopify go on
  holding back the units its unfulfilled orders have claimed; writing the shelf count into
  ``available`` would sell those units a second time.
- **Compare-and-swap**: from API version 2026-04 every quantity must carry
  ``changeFromQuantity`` (the quantity the write expects to replace; ``null`` opts out, and
  ``compareQuantity`` / ``ignoreCompareQuantity`` are deprecated since 2026-01). The sink
  reads the current quantities of the batch first (one ``nodes`` query per location), sends
  them as ``changeFromQuantity``, and on ``CHANGE_FROM_QUANTITY_STALE`` (a sale landed
  between the read and the write) reads again and retries (so too when Shopify answers that
  a request with the same key failed before). A quantity that already equals the ERP's is
  not written at all, so a redelivered event changes nothing.
- **One quantity per item and location**: Shopify refuses a call that names an (inventory
  item, location) pair twice (``NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR``), which a
  batch does when two agents send the same SKU for warehouses mapped to one location.
  The batch's writes to a pair are folded into its last one (see :func:`_fold_stock`).
- **Idempotency**: ``@idempotent(key: ...)``, required for this mutation from 2026-04. The
  key is a UUID5 of the batch's event ids, of the exact quantities sent and of the attempt
  (the how-manieth write of this batch after refusals), so it depends on the batch's
  content and the quantities read, never on the process: the retry of a request whose
  answer was lost carries the same key, and so does the same batch redelivered to a new
  consumer after a crash, and Shopify answers it with the first result instead of applying
  it twice; a different request (other events, or a write after a stale compare) gets a
  different key, as Shopify requires of distinct requests and of failed ones.
  ``IDEMPOTENCY_CONCURRENT_REQUEST`` (the first request with this key is still being
  processed) is transient: the same request, same key, goes again with the HTTP retries'
  backoff, and past those the batch goes back to the consumer, whose retry makes the same
  key again from the same batch (unless the write has landed by then: nothing to write).
- **Prices**: ``productVariantsBulkUpdate`` once per product with ``allowPartialUpdates``, so
  one rejected price does not hold back its sibling variants.
- **SKUs** become variant, product and inventory item ids through ``productVariants(query:
  "sku:\\"A\\" OR sku:\\"B\\"")``, paged by ``pageInfo``, exact matches only, remembered in
  the version store (:mod:`relay.sinks.lookup`). A SKU that matches no variant, or several,
  is a dead letter, and remembered so for ``unknown_sku_ttl``. An inventory item Shopify
  no longer has (its product deleted and re-created) is forgotten and its SKU looked up
  again in the same batch; a variant or product a price write finds gone is forgotten, and
  that price is a dead letter.
- **Throttle**: Shopify charges every call its calculated query cost from a leaky bucket.
  Each response's ``extensions.cost.throttleStatus`` resets the sink's own copy of that
  bucket (:class:`CostBudget`), and every call first waits until its estimated cost is
  available; a ``THROTTLED`` answer all the same waits ``(cost - available) / restoreRate``
  and goes again.

``delete`` events are SKIPPED: a stock row or a price that disappears from the ERP says
nothing about what the shop should show (zero stock? a free product?); retiring a product
is done in Shopify.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import field_validator

from relay.errors import SinkUnavailable
from relay.model import Event, SinkResult, Status
from relay.settings import CredentialName, FilePath, read_secret
from relay.sinks.http import HttpSettings, ShopUrl
from relay.sinks.lookup import IdStore, LookupSettings, SkuIds
from relay.sinks.shop import ENTITIES, Price, Rules, Stock, one_warehouse_each, sort_out
from relay.sinks.shopify_api import AdminGraphQL, CostBudget

API_VERSION = "2026-10"
"""The newest stable version when this was written; any version from 2026-01 works."""
FIRST_API_VERSION = "2026-01"
"""``changeFromQuantity`` and ``@idempotent`` on ``inventorySetQuantities`` start here."""

MAX_BATCH = 50
"""A lookup of 50 SKUs costs 2 + 50 x 3 = 152 points and the stock read 150: a sixth of a
Standard plan's 1,000-point bucket each, far below the 1,000-point single-query cap, while
``inventorySetQuantities`` costs 10 whatever its size."""
CAS_ROUNDS = 5
AGAIN = frozenset({"CHANGE_FROM_QUANTITY_STALE", "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED"})
"""Stock ``userErrors`` that a fresh read and another write (with a new key) get past."""
MAX_QUANTITY = 1_000_000_000  # Shopify's INVALID_QUANTITY_TOO_HIGH limit
GONE = frozenset({"PRODUCT_DOES_NOT_EXIST", "PRODUCT_VARIANT_DOES_NOT_EXIST"})
"""Price ``userErrors`` that say the cached variant is gone: forget it."""

_VERSION = re.compile(r"^\d{4}-(01|04|07|10)$")
_LOCATION = re.compile(r"^gid://shopify/Location/\d+$")
# Arbitrary but fixed forever: a release that changed it would re-key every in-flight write.
_KEY_NAMESPACE = uuid.UUID("6f0d7c5e-3b1a-5c7e-9d2f-0a4b8c6e1f35")

VARIANTS_QUERY = """
query VariantsBySku($query: String!, $first: Int!, $after: String) {
  productVariants(first: $first, after: $after, query: $query) {
    nodes { id sku product { id } inventoryItem { id } }
    pageInfo { hasNextPage endCursor }
  }
}"""

LEVELS_QUERY = """
query StockLevels($ids: [ID!]!, $locationId: ID!, $names: [String!]!) {
  nodes(ids: $ids) {
    ... on InventoryItem {
      id
      inventoryLevel(locationId: $locationId) { quantities(names: $names) { name quantity } }
    }
  }
}"""

SET_STOCK_MUTATION = """
mutation SetStock($input: InventorySetQuantitiesInput!, $idempotencyKey: String!) {
  inventorySetQuantities(input: $input) @idempotent(key: $idempotencyKey) {
    inventoryAdjustmentGroup { id }
    userErrors { field message code }
  }
}"""

SET_PRICES_MUTATION = """
mutation SetPrices($productId: ID!, $variants: [ProductVariantsBulkInput!]!) {
  productVariantsBulkUpdate(productId: $productId, variants: $variants,
                            allowPartialUpdates: true) {
    productVariants { id }
    userErrors { field message code }
  }
}"""


class Settings(HttpSettings, LookupSettings):
    """``[[sinks]] type = "shopify"`` (with ``name``, ``timeout``, ``max_retries``, ``backoff``
    as every HTTP sink, and ``unknown_sku_ttl`` as every shop sink)."""

    type: Literal["shopify"]
    shop_url: ShopUrl
    """``https://acme.myshopify.com``; plain ``http://`` only to loopback (a simulator)."""
    api_version: str = API_VERSION
    access_token_file: FilePath | None = None
    """The Admin API access token (``shpat_...``) in a file; or ``access_token_env``."""
    access_token_env: str | None = None
    access_token_credential: CredentialName | None = None
    secrets = ("access_token",)
    locations: dict[str, str]
    """ERP warehouse -> Shopify location GID (``gid://shopify/Location/123``). Stock of any
    other warehouse is SKIPPED."""
    price_list: str | None = None
    """The ERP price list that is the variants' price; price events of other lists are
    SKIPPED. Unset: only price events that name no list."""

    @field_validator("api_version")
    @classmethod
    def _supported_version(cls, value: str) -> str:
        if not _VERSION.match(value):
            raise ValueError(f"{value!r} is not a Shopify API version such as {API_VERSION!r}")
        if value < FIRST_API_VERSION:
            raise ValueError(
                f"{value} predates changeFromQuantity and @idempotent on "
                f"inventorySetQuantities: use {FIRST_API_VERSION} or later"
            )
        return value

    @field_validator("locations")
    @classmethod
    def _location_gids(cls, value: dict[str, str]) -> dict[str, str]:
        for warehouse, gid in value.items():
            if not _LOCATION.match(gid):
                raise ValueError(
                    f"locations.{warehouse}: {gid!r} is not a location GID "
                    "such as 'gid://shopify/Location/123'"
                )
        return one_warehouse_each(value)


@dataclass(frozen=True, slots=True)
class Variant:
    id: str
    product_id: str
    inventory_item_id: str


@dataclass(slots=True)
class _Write:
    """One event this sink will write: a stock quantity or a price, and where."""

    index: int
    event_id: str
    sku: str
    value: int | str
    """The quantity to set, or the price as a decimal string."""
    location: str = ""
    variant: Variant | None = None
    folded: list[_Write] = field(default_factory=list)
    """Earlier stock writes of the batch to the same item and location: this one's
    quantity overwrites theirs, and its result is theirs (:func:`_fold_stock`)."""

    @property
    def item(self) -> str:
        assert self.variant is not None
        return self.variant.inventory_item_id

    @property
    def event_ids(self) -> list[str]:
        """The events this write carries: the folded ones first, in batch order."""
        return [*(write.event_id for write in self.folded), self.event_id]


@dataclass(frozen=True, slots=True)
class _UserError:
    code: str
    message: str


def idempotency_key(
    event_ids: Iterable[str], quantities: list[dict[str, Any]], attempt: int = 0
) -> str:
    """The same events written against the same observed quantities: the same key.

    ``attempt`` counts the writes of one batch after refusals (a stale compare): Shopify
    wants a new key after a failed request, even were its input to come out the same.
    """
    material = json.dumps(
        {"events": list(event_ids), "quantities": quantities, "attempt": attempt},
        sort_keys=True,
        separators=(",", ":"),
    )
    return str(uuid.uuid5(_KEY_NAMESPACE, material))


def sku_search(skus: Iterable[str]) -> str:
    """``sku:"A" OR sku:"B"`` in Shopify's search syntax (quotes and backslashes escaped)."""

    def quoted(sku: str) -> str:
        return '"' + sku.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return " OR ".join(f"sku:{quoted(sku)}" for sku in skus)


def _user_errors(errors: Any, prefix: tuple[str, ...]) -> dict[int, _UserError]:
    """``userErrors`` by the input index their ``field`` path names; -1: the whole call."""
    found: dict[int, _UserError] = {}
    for error in errors or []:
        field = [str(part) for part in error.get("field") or []]
        rest = field[len(prefix) :] if tuple(field[: len(prefix)]) == prefix else []
        index = int(rest[0]) if rest and rest[0].isdigit() else -1
        found.setdefault(
            index, _UserError(str(error.get("code") or ""), str(error.get("message") or "rejected"))
        )
    return found


def _fold_stock(writes: list[_Write]) -> list[_Write]:
    """One write per (inventory item, location): the batch's last, carrying the others.

    Why fold rather than split the batch into calls: every write sets an absolute
    quantity, so applying a batch one event at a time leaves each pair at its last event's
    quantity whatever came before, and that last write is the one kept. The earlier writes
    of a pair share its fate (APPLIED, or DEAD for the same item or location): the shop
    can refuse only the item or the location, which they share (each quantity is a
    non-negative whole number under Shopify's cap before it gets here), and an equal
    quantity makes the last write "already so" as it would one event at a time. A split
    would cost a read and a write per extra row, and show the shop, for a moment, and in
    its adjustment history, quantities that one-by-one application overwrites at once.
    ``tests/test_shopify_fold.py`` checks the fold against one event at a time.

    This folds rows of different keys (two agents' rows for one SKU and location), which
    the consumer puts in one batch: what ``relay/pipeline.py`` refuses to fold, several
    states of one key, never meets here.
    """
    kept: dict[tuple[str, str], _Write] = {}
    for write in writes:
        earlier = kept.get((write.item, write.location))
        if earlier is not None:
            write.folded = [*earlier.folded, earlier]
        kept[(write.item, write.location)] = write  # keeps the pair's first position
    return list(kept.values())


def _dead(write: _Write, reason: str) -> SinkResult:
    return SinkResult(Status.DEAD, f"{write.sku}: {reason}")


APPLIED = SinkResult(Status.APPLIED)


class ShopifySink:
    """Stock and prices of one Shopify shop."""

    entities = ENTITIES
    max_batch = MAX_BATCH

    def __init__(self, settings: Settings, ids: IdStore | None = None) -> None:
        self.settings = settings
        self.name = settings.name
        token = read_secret(
            settings.access_token_file,
            settings.access_token_env,
            "access_token",
            settings.access_token_credential,
        )
        self._api = AdminGraphQL(
            f"shopify {self.name}", settings, settings.shop_url, settings.api_version, token or ""
        )
        self.endpoint = self._api.endpoint
        self.budget = self._api.budget
        self.rules = Rules(
            "Shopify",
            fractions="refuse",
            oversold="zero",
            places=settings.locations,
            place="a Shopify location",
            price_list=settings.price_list,
        )
        self.ids = SkuIds(self.name, Variant, settings.unknown_sku_ttl, ids)

    async def close(self) -> None:
        await self._api.close()

    async def apply(self, events: Sequence[Event]) -> list[SinkResult]:
        results, stock, prices = sort_out(events, self._plan)
        found = await self._resolve({write.sku for write in (*stock, *prices)})
        for write in (*stock, *prices):
            match = found[write.sku]
            if isinstance(match, str):
                results[write.index] = _dead(write, match)
            else:
                write.variant = match
        results |= await self._stock([write for write in stock if write.variant])
        results |= await self._prices([write for write in prices if write.variant])
        return [results[index] for index in range(len(events))]

    def _plan(self, index: int, event: Event) -> _Write | SinkResult:
        """What to write for one event, or why nothing will be."""
        planned = self.rules.plan(event)
        if isinstance(planned, Price):
            return _Write(index, event.id, planned.sku, f"{planned.amount:f}")
        if isinstance(planned, Stock):
            if planned.quantity > MAX_QUANTITY:
                return SinkResult(
                    Status.DEAD,
                    f"{planned.sku}: on_hand {planned.quantity} is "
                    f"above Shopify's limit of {MAX_QUANTITY}",
                )
            # A whole number: the rules refuse fractions.
            return _Write(
                index, event.id, planned.sku, int(planned.quantity), location=planned.place
            )
        return planned

    # --- SKU lookup ------------------------------------------------------------------

    async def _resolve(self, skus: set[str]) -> dict[str, Variant | str]:
        """Each SKU's variant, or why it has none (unknown, or on several variants)."""
        found: dict[str, Variant | str] = {
            sku: known if isinstance(known, Variant) else known.reason
            for sku, known in (await self.ids.known(skus)).items()
        }
        missing = sorted(skus - found.keys())
        matches: dict[str, list[Variant]] = {sku: [] for sku in missing}
        if missing:
            async for node in self._variant_nodes(sku_search(missing)):
                # Shopify's search is looser than equality: keep exact matches only.
                if node.get("sku") in matches:
                    matches[node["sku"]].append(
                        Variant(node["id"], node["product"]["id"], node["inventoryItem"]["id"])
                    )
        single: dict[str, Variant] = {}
        for sku, variants in matches.items():
            if len(variants) == 1:
                single[sku] = found[sku] = variants[0]
                continue
            found[sku] = (
                "no variant has this SKU in Shopify"
                if not variants
                else (
                    f"{len(variants)} variants share this SKU in Shopify ("
                    + ", ".join(variant.id for variant in variants)
                    + ")"
                )
            )
            self.ids.missing(sku, str(found[sku]))
        await self.ids.found(single)
        return found

    async def _variant_nodes(self, search: str) -> AsyncIterator[dict[str, Any]]:
        after: str | None = None
        while True:
            data = await self._graphql(
                "VariantsBySku",
                VARIANTS_QUERY,
                {"query": search, "first": MAX_BATCH, "after": after},
                cost=2 + 3 * MAX_BATCH,
            )
            connection = data["productVariants"]
            for node in connection["nodes"]:
                yield node
            if not connection["pageInfo"]["hasNextPage"]:
                return
            after = connection["pageInfo"]["endCursor"]

    # --- stock -----------------------------------------------------------------------

    async def _stock(self, writes: list[_Write]) -> dict[int, SinkResult]:
        """Each item and location set once (:func:`_fold_stock`); folded writes share the
        result of the write that carries them."""
        sent = _fold_stock(writes)
        results = await self._compare_and_set(sent)
        for write in sent:
            for earlier in write.folded:
                results[earlier.index] = results[write.index]
        return results

    async def _compare_and_set(self, writes: list[_Write]) -> dict[int, SinkResult]:
        """Read, compare, set; again for the quantities that moved under us."""
        results: dict[int, SinkResult] = {}
        for attempt in range(CAS_ROUNDS):
            if not writes:
                return results
            if attempt:
                await asyncio.sleep(self.settings.backoff)  # the shop just reported contention
            current = await self._read_levels(writes)
            pending: list[tuple[_Write, int]] = []
            for write in writes:
                now = current[write.index]
                if isinstance(now, str):
                    results[write.index] = _dead(write, now)
                elif now == write.value:
                    results[write.index] = APPLIED  # already so: nothing to write
                else:
                    pending.append((write, now))
            writes = []
            if pending:
                writes = await self._set_stock(pending, results, attempt)
        if writes:
            raise SinkUnavailable(
                f"shopify {self.name}: stock of {len(writes)} SKUs kept "
                f"changing in Shopify between read and write ({CAS_ROUNDS} "
                "tries); will try again"
            )
        return results

    async def _read_levels(self, writes: list[_Write]) -> dict[int, int | str]:
        """The current on_hand of each write's item at its location, or why there is none.
        An item Shopify no longer has (its product deleted, perhaps re-created) is
        forgotten, its SKU looked up again, and the new item read."""
        current = await self._levels(writes)
        gone = [write for write in writes if current[write.index] is None]
        if gone:
            again = await self._look_again(gone, current)
            current |= await self._levels(again)
        items = {write.index: write.item for write in writes}
        return {
            index: f"inventory item {items[index]} no longer exists in Shopify"
            if now is None
            else now
            for index, now in current.items()
        }

    async def _look_again(
        self, gone: list[_Write], current: dict[int, int | str | None]
    ) -> list[_Write]:
        """Forget the variants of ``gone``; those whose SKU is now on another variant are
        returned with it, the others get the lookup's reason in ``current``."""
        for write in gone:
            assert write.variant is not None
            await self.ids.stale(write.sku, write.variant)
        found = await self._resolve({write.sku for write in gone})
        again = []
        for write in gone:
            match = found[write.sku]
            if isinstance(match, str):
                current[write.index] = match
            elif match != write.variant:
                write.variant = match
                again.append(write)
        return again

    async def _levels(self, writes: list[_Write]) -> dict[int, int | str | None]:
        """One read per location: each write's on_hand, why it has none, or ``None``
        when Shopify has no such inventory item."""
        current: dict[int, int | str | None] = {}
        for location in sorted({write.location for write in writes}):
            here = [write for write in writes if write.location == location]
            ids = sorted({write.item for write in here})
            data = await self._graphql(
                "StockLevels",
                LEVELS_QUERY,
                {"ids": ids, "locationId": location, "names": ["on_hand"]},
                cost=3 * len(ids),
            )
            nodes = {node["id"]: node for node in data["nodes"] if node}
            for write in here:
                node = nodes.get(write.item)
                current[write.index] = None if node is None else self._level(write, node)
        return current

    def _level(self, write: _Write, node: dict[str, Any]) -> int | str:
        level = node.get("inventoryLevel")
        if level is None:
            return f"not stocked at Shopify location {write.location} (activate it there)"
        for quantity in level.get("quantities") or []:
            if quantity.get("name") == "on_hand":
                return int(quantity["quantity"])
        return f"Shopify reported no on_hand quantity at {write.location}"

    async def _set_stock(
        self, pending: list[tuple[_Write, int]], results: dict[int, SinkResult], attempt: int
    ) -> list[_Write]:
        """One ``inventorySetQuantities``; records outcomes, returns the writes to redo."""
        quantities = [
            {
                "inventoryItemId": write.item,
                "locationId": write.location,
                "quantity": write.value,
                "changeFromQuantity": now,
            }
            for write, now in pending
        ]
        key = idempotency_key(
            (event for write, _ in pending for event in write.event_ids), quantities, attempt
        )
        data = await self._graphql(
            "SetStock",
            SET_STOCK_MUTATION,
            {
                "input": {
                    "name": "on_hand",
                    "reason": "correction",
                    "quantities": quantities,
                    "referenceDocumentUri": f"gid://distillsync/StockSync/{key}",
                },
                "idempotencyKey": key,
            },
            cost=10,
        )
        errors = _user_errors(data["inventorySetQuantities"]["userErrors"], ("input", "quantities"))
        redo: list[_Write] = []
        for position, (write, _) in enumerate(pending):
            error = errors.get(position) or errors.get(-1)
            if error is None and not errors:
                results[write.index] = APPLIED
            elif error is None or error.code in AGAIN:
                redo.append(write)  # the call is all or nothing: a sibling's error stopped it
            else:
                if error.code == "INVALID_INVENTORY_ITEM" and write.variant is not None:
                    await self.ids.stale(write.sku, write.variant)
                results[write.index] = _dead(write, f"{error.message} ({error.code})")
        return redo

    # --- prices ----------------------------------------------------------------------

    async def _prices(self, writes: list[_Write]) -> dict[int, SinkResult]:
        """One ``productVariantsBulkUpdate`` per product, its variants together."""
        results: dict[int, SinkResult] = {}
        products: dict[str, list[_Write]] = {}
        for write in writes:
            assert write.variant is not None
            products.setdefault(write.variant.product_id, []).append(write)
        for product_id, group in products.items():
            variants = [
                {"id": write.variant.id, "price": write.value} for write in group if write.variant
            ]
            data = await self._graphql(
                "SetPrices",
                SET_PRICES_MUTATION,
                {"productId": product_id, "variants": variants},
                cost=10,
            )
            errors = _user_errors(data["productVariantsBulkUpdate"]["userErrors"], ("variants",))
            for position, write in enumerate(group):
                error = errors.get(position) or errors.get(-1)
                if error is not None and error.code in GONE and write.variant is not None:
                    await self.ids.stale(write.sku, write.variant)
                results[write.index] = (
                    APPLIED if error is None else _dead(write, f"{error.message} ({error.code})")
                )
        return results

    # --- the wire --------------------------------------------------------------------

    async def _graphql(
        self, operation: str, query: str, variables: dict[str, Any], cost: float
    ) -> dict[str, Any]:
        """The ``data`` of one call, after the retries the shop's answers call for."""
        return await self._api.graphql(operation, query, variables, cost)


__all__ = [
    "API_VERSION",
    "CostBudget",
    "Settings",
    "ShopifySink",
    "Variant",
    "idempotency_key",
    "sku_search",
]
