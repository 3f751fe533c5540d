"""SKU -> shop id lookups, remembered: what a shop sink knows of the SKUs it writes.

A shop sink must turn a SKU into the shop's own ids before it writes (WooCommerce's product
or variation id, Shopify's variant and inventory item, PrestaShop's product, combination
and stock_available). Asking costs an API call, so the answer is remembered, in two ways:

- **Known ids** (:class:`SkuIds`) are kept in memory and in the consumer's version store
  (table ``relay_sku_ids``, keyed by sink name and SKU, the ids as JSON text), so a
  restarted consumer writes a SKU it knew with no lookup. They are read lazily, one
  statement per batch for the SKUs not in memory yet (never the whole table), so memory
  holds the SKUs this consumer actually wrote since it started: a shop of 100,000 SKUs is
  some tens of megabytes at most. Ids do not expire: when the shop says a cached id is gone
  (a product deleted and re-created), the sink calls :meth:`SkuIds.stale` and looks the
  SKU up again. A stale row is deleted only if it still holds the ids found stale, so a
  consumer that already stored the new ones keeps them.
- **Misses** (:class:`Misses`): a SKU the shop has no (single) product for is remembered,
  with the reason, for ``unknown_sku_ttl`` (default 5 minutes), in memory only. Until then
  every event for it is DEAD with that reason and no request; afterwards it is looked up
  again, so a product the merchant creates is written within a TTL. A restart forgets the
  misses.

Known ids win over a miss: a sink calls :meth:`SkuIds.stale` before it looks a known SKU up
again, and records a miss only for what that lookup did not find.

The clock (``clock``, monotonic seconds) is an attribute tests replace.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from relay.settings import Duration, Strict

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["DEFAULT_TTL", "IdStore", "LookupSettings", "Miss", "Misses", "SkuIds"]

log = logging.getLogger("distillsync.relay.sinks.lookup")

DEFAULT_TTL = 300.0
"""Five minutes: a product the merchant creates is written soon, and a SKU the shop lacks
costs one lookup per TTL instead of one per batch."""

V = TypeVar("V", bound="DataclassInstance")


class LookupSettings(Strict):
    """What every shop sink's settings have for its lookups."""

    unknown_sku_ttl: Duration = DEFAULT_TTL
    """How long a SKU the shop has no product for is remembered as unknown (its events
    DEAD with no request); then it is looked up again."""


class IdStore(Protocol):
    """Where known ids outlive the process (:class:`relay.store.VersionStore`)."""

    async def sku_ids(self, sink: str, skus: Sequence[str]) -> dict[str, str]:
        """The stored ids (JSON text) of those of ``skus`` that have some."""
        ...

    async def keep_sku_ids(self, sink: str, ids: Mapping[str, str]) -> None:
        """Store (or replace) ``ids``: SKU -> JSON text."""
        ...

    async def drop_sku_ids(self, sink: str, stale: Mapping[str, str]) -> None:
        """Delete each SKU's row if it still holds the JSON text given."""
        ...


@dataclass(frozen=True, slots=True)
class Miss:
    """The shop has no (single) product for a SKU; believed until ``until``."""

    reason: str
    until: float


class Misses:
    """SKUs the shop did not know, each with the reason, for ``ttl`` seconds."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._misses: dict[str, Miss] = {}

    def get(self, sku: str) -> Miss | None:
        """The miss of ``sku`` while it is fresh; ``None`` once it is past its TTL."""
        miss = self._misses.get(sku)
        if miss is not None and self.clock() >= miss.until:
            del self._misses[sku]
            return None
        return miss

    def add(self, sku: str, reason: str) -> None:
        if self.ttl > 0:
            self._misses[sku] = Miss(reason, self.clock() + self.ttl)

    def discard(self, sku: str) -> None:
        self._misses.pop(sku, None)


class SkuIds(Generic[V]):
    """One sink's SKU -> ids (a frozen dataclass ``kind`` of JSON-able fields), and misses.

    ``store`` is ``None`` for a sink built without a consumer (tests, tools): ids are then
    remembered in memory only.
    """

    def __init__(
        self, sink: str, kind: type[V], ttl: float = DEFAULT_TTL, store: IdStore | None = None
    ) -> None:
        self.sink, self.kind, self.store = sink, kind, store
        self.misses = Misses(ttl)
        self._ids: dict[str, V] = {}

    @property
    def clock(self) -> Callable[[], float]:
        return self.misses.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self.misses.clock = clock

    async def known(self, skus: Iterable[str]) -> dict[str, V | Miss]:
        """What is known of each of ``skus``: its ids, or its fresh miss. The SKUs left out
        are the sink's to look up (then :meth:`found` and :meth:`missing`)."""
        answer: dict[str, V | Miss] = {}
        unread: list[str] = []
        for sku in dict.fromkeys(skus):
            ids = self._ids.get(sku)
            if ids is not None:
                answer[sku] = ids
            elif (miss := self.misses.get(sku)) is not None:
                answer[sku] = miss
            else:
                unread.append(sku)
        if unread and self.store is not None:
            for sku, text in (await self.store.sku_ids(self.sink, unread)).items():
                ids = self._decode(sku, text)
                if ids is not None:
                    self._ids[sku] = answer[sku] = ids
        return answer

    async def get(self, sku: str) -> V | Miss | None:
        """:meth:`known` for one SKU; ``None``: look it up."""
        return (await self.known([sku])).get(sku)

    async def found(self, ids: Mapping[str, V]) -> None:
        """The shop gave these SKUs these ids: remember and store them."""
        if not ids:
            return
        for sku, value in ids.items():
            self._ids[sku] = value
            self.misses.discard(sku)
        if self.store is not None:
            await self.store.keep_sku_ids(
                self.sink, {sku: _encode(value) for sku, value in ids.items()}
            )

    def missing(self, sku: str, reason: str) -> None:
        """A lookup found no (single) product for ``sku``: its events are DEAD with
        ``reason``, with no request, for the TTL."""
        self.misses.add(sku, reason)

    async def stale(self, sku: str, ids: V) -> None:
        """The shop says ``ids`` of ``sku`` no longer exist: forget them (here and in the
        store), so the next use looks the SKU up again."""
        if self._ids.get(sku) == ids:
            del self._ids[sku]
        if self.store is not None:
            await self.store.drop_sku_ids(self.sink, {sku: _encode(ids)})

    def _decode(self, sku: str, text: str) -> V | None:
        """Stored ids as ``kind``; ``None`` (look it up again) for a row of another shape."""
        try:
            fields: Any = json.loads(text)
            return self.kind(**fields)
        except (ValueError, TypeError):
            log.warning(
                "sink %s: stored ids of SKU %r are not %s (%r); looking it up again",
                self.sink,
                sku,
                self.kind.__name__,
                text[:200],
            )
            return None


def _encode(ids: DataclassInstance) -> str:
    return json.dumps(dataclasses.asdict(ids), sort_keys=True, separators=(",", ":"))
