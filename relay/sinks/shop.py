"""What the shop sinks share: which events they write, and what the data must be.

The four shop sinks (woocommerce, shopify, prestashop, magento) write ``stock`` and ``price``
and nothing else, and judge an event by the same rules before they ask the shop anything
(:meth:`Rules.plan`):

- another entity is SKIPPED, and so is a ``delete``: a stock or price row gone from the ERP
  is not zero stock or a free product (each sink says what its shop does instead);
- an event without a SKU is DEAD;
- stock of a warehouse the shop does not take is SKIPPED; ``on_hand`` must be a number;
- a price of another price list (or, where the shop names one, another currency) is
  SKIPPED; ``price`` must be a decimal amount.

Where shops differ on purpose, the difference is a field of :class:`Rules`, set by each sink
where it builds them: how the shop counts units (:attr:`Rules.fractions`: Shopify refuses
a fraction, Magento keeps it, PrestaShop and WooCommerce floor it; :attr:`Rules.oversold`:
Shopify and Magento show negative ERP stock as 0, PrestaShop and WooCommerce keep it),
which warehouses it takes (one, a mapping, or each as the source of its name), whether a
negative price goes to the shop to judge, and what an unset ``price_list`` takes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar

from relay.errors import RelayKitError
from relay.model import Event, SinkResult, Status

ENTITIES = frozenset({"stock", "price"})
"""What every shop sink writes."""
NOT_ZERO = "a row gone from the ERP is not zero stock or a free product"
"""Why a delete of stock or price is SKIPPED, unless a sink says it for its shop."""

W = TypeVar("W")


class Invalid(RelayKitError, ValueError):
    """Event data no shop can take; the message names the field and its value (the
    event's dead letter reason: never retried)."""


@dataclass(frozen=True, slots=True)
class Stock:
    """A stock event the shop takes: set ``sku`` to ``quantity`` at ``place``."""

    sku: str
    place: str
    """The shop's location or source for the event's warehouse (the warehouse itself for a
    shop with one stock figure, or one that names its sources after the warehouses)."""
    quantity: int | float
    """``on_hand`` as the shop counts it: an int unless :attr:`Rules.fractions` keeps them."""


@dataclass(frozen=True, slots=True)
class Price:
    """A price event the shop takes: ``sku`` sells at ``amount``."""

    sku: str
    amount: Decimal
    """Finite; not negative unless :attr:`Rules.negative_prices`."""
    text: str
    """The price as the event wrote it, for a shop that takes the ERP's string as it is."""


@dataclass(frozen=True, slots=True)
class Rules:
    """How one shop sink turns events into :class:`Stock` and :class:`Price` writes."""

    shop: str
    """The vendor's name, as reasons say it (``"Shopify"``)."""
    fractions: Literal["refuse", "floor", "keep"]
    """A fractional ``on_hand``: DEAD (the shop counts whole units and the sink will not
    guess), rounded down (the shop never offers a unit the warehouse lacks), or kept."""
    oversold: Literal["zero", "keep"]
    """A negative ``on_hand`` (oversold): written as 0 (nothing left to sell), or as is (the
    shop keeps negative stock for backorders)."""
    warehouse: str | None = None
    """A shop with one stock figure per product: the ERP warehouse it shows."""
    places: Mapping[str, str] | None = None
    """ERP warehouse -> the shop's location or source. Neither this nor ``warehouse``: each
    warehouse is the place of its own name."""
    place: str = "a location"
    """What a place is in this shop, for reasons (``"a Shopify location"``)."""
    price_list: str | None = None
    """The ERP price list the shop sells at (an event's empty ``price_list`` names none)."""
    any_list_when_unset: bool = False
    """With ``price_list`` unset: take every price event, not only those naming no list."""
    currency: str | None = None
    """When set, price events in another currency are SKIPPED (no sink converts)."""
    negative_prices: bool = False
    """Hand a negative price to the shop to judge instead of refusing it here."""
    deletes: str = NOT_ZERO
    """Why deletes are SKIPPED, for this shop."""

    def __post_init__(self) -> None:
        if self.warehouse is not None and self.places:
            raise ValueError("a shop takes one warehouse or a mapping of them, not both")

    def plan(self, event: Event) -> Stock | Price | SinkResult:
        """What to write for ``event``, or its result when nothing will be (SKIPPED or DEAD)."""
        if event.entity not in ENTITIES:
            return SinkResult(Status.SKIPPED, f"the {self.shop} sink does not write {event.entity}")
        if event.op == "delete":
            return SinkResult(
                Status.SKIPPED,
                f"{event.entity} deletes are not applied to the shop ({self.deletes})",
            )
        sku = event.data.get("sku")
        if not isinstance(sku, str) or not sku:
            return SinkResult(Status.DEAD, f"{event.entity} {event.subject}: no sku")
        try:
            if event.entity == "stock":
                return self._stock(sku, event.data)
            return self._price(sku, event.data)
        except Invalid as invalid:
            return SinkResult(Status.DEAD, f"{sku}: {invalid}")

    def _stock(self, sku: str, data: Mapping[str, Any]) -> Stock | SinkResult:
        place = self.place_of(sku, data)
        if isinstance(place, SinkResult):
            return place
        return Stock(sku, place, self.quantity(data.get("on_hand")))

    def _price(self, sku: str, data: Mapping[str, Any]) -> Price | SinkResult:
        skipped = self.other_list(sku, data)
        if skipped is not None:
            return skipped
        price = data.get("price")
        return Price(sku, self.amount(price), str(price))

    def place_of(self, sku: str, data: Mapping[str, Any]) -> str | SinkResult:
        """The shop's place for the stock's warehouse, or SKIPPED when it takes none there."""
        warehouse = str(data.get("warehouse", ""))
        if self.warehouse is not None:
            if warehouse == self.warehouse:
                return warehouse
            return SinkResult(
                Status.SKIPPED,
                f"{sku}: warehouse {warehouse!r} is not the shop's ({self.warehouse!r})",
            )
        if not self.places:
            return warehouse
        place = self.places.get(warehouse)
        if place is None:
            return SinkResult(
                Status.SKIPPED, f"{sku}: warehouse {warehouse} is not mapped to {self.place}"
            )
        return place

    def other_list(self, sku: str, data: Mapping[str, Any]) -> SinkResult | None:
        """SKIPPED for a price the shop does not sell at (list or currency); else None."""
        price_list, wanted = data.get("price_list") or None, self.price_list
        if price_list != wanted and not (wanted is None and self.any_list_when_unset):
            return SinkResult(
                Status.SKIPPED,
                f"{sku}: price list {price_list} is not the one this shop sells at ({wanted})",
            )
        currency = data.get("currency")
        if self.currency and currency not in (None, self.currency):
            return SinkResult(
                Status.SKIPPED,
                f"{sku}: currency {currency!r} is not the shop's ({self.currency!r})",
            )
        return None

    def quantity(self, on_hand: Any) -> int | float:
        """``on_hand`` as the shop counts it; :class:`Invalid` when it cannot."""
        if (
            isinstance(on_hand, bool)
            or not isinstance(on_hand, int | float)
            or (not math.isfinite(on_hand))
        ):
            raise Invalid(f"on_hand {on_hand!r} is not a number")
        quantity: int | float = on_hand
        if self.fractions == "floor":
            quantity = math.floor(on_hand)
        elif self.fractions == "refuse":
            if on_hand != int(on_hand):
                raise Invalid(f"on_hand {on_hand} is not a whole number ({self.shop} counts units)")
            quantity = int(on_hand)
        return quantity if self.oversold == "keep" else max(0, quantity)

    def amount(self, price: Any) -> Decimal:
        """``price`` (a decimal string; a number is read as its text) as a Decimal;
        :class:`Invalid` when it is none, or negative where the shop does not judge that."""
        amount = _decimal(price)
        if amount is None or (amount < 0 and not self.negative_prices):
            kind = "decimal amount" if self.negative_prices else "non-negative decimal amount"
            raise Invalid(f"price {price!r} is not a {kind}")
        return amount


def _decimal(value: Any) -> Decimal | None:
    """A finite Decimal from a string or a number (read as its text), or None."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def sort_out(
    events: Sequence[Event], plan: Callable[[int, Event], W | SinkResult]
) -> tuple[dict[int, SinkResult], list[W], list[W]]:
    """``plan(index, event)`` each event: the results of those nothing will be written for
    (by index), then the stock writes and the price writes, each in event order."""
    results: dict[int, SinkResult] = {}
    stock: list[W] = []
    prices: list[W] = []
    for index, event in enumerate(events):
        planned = plan(index, event)
        if isinstance(planned, SinkResult):
            results[index] = planned
        else:
            (stock if event.entity == "stock" else prices).append(planned)
    return results, stock, prices


def one_warehouse_each(places: dict[str, str]) -> dict[str, str]:
    """``places`` (ERP warehouse -> the shop's location or source) as it is, or ValueError
    naming the places mapped from more than one warehouse: absolute counts from two
    warehouses written to one place would overwrite each other."""
    shared = sorted({place for place in places.values() if list(places.values()).count(place) > 1})
    if shared:
        raise ValueError(
            f"{', '.join(shared)} is mapped from more than one warehouse; "
            "each would overwrite the other's count"
        )
    return places


__all__ = [
    "ENTITIES",
    "NOT_ZERO",
    "Invalid",
    "Price",
    "Rules",
    "Stock",
    "one_warehouse_each",
    "sort_out",
]
