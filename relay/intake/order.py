"""The canonical order: the ``data`` of a ``distillsync.order.upsert`` event (DESIGN.md,
"The order event"), as frozen dataclasses every shop's mapping builds.

Money is :class:`~decimal.Decimal` inside and a decimal string outside (never a float);
times are aware UTC datetimes inside and RFC 3339 ``...Z`` outside. Equal values always
serialise alike (``Decimal("18")`` and ``Decimal("18.000")`` are both ``"18.00"``), so the
event's digest (:mod:`relay.intake.identity`) sees values, not how a shop spelled them.

What the amounts mean (one meaning for every shop, whatever ``prices_include_tax`` says;
that flag only records how the shop priced its catalogue):

- a :class:`Line`'s ``unit_price`` and ``discount`` are **ex tax** and before / of the
  discount; ``tax`` is the line's tax; ``total`` is what was charged for it, **tax
  included**: ``quantity * unit_price - discount + tax == total`` (within rounding:
  ``unit_price`` may need more than two decimals, e.g. 49.46 for 3 is 16.486667, so a
  writer that needs cents builds from ``total``);
- a :class:`ShippingLine`'s ``price`` is ex tax, its ``tax`` apart;
- :class:`Totals`: ``subtotal`` (sum of lines before discount, ex tax) ``- discount``
  (ex tax) ``+ shipping`` (ex tax) ``+ tax`` (all of it) ``== total``, as charged.

``checks`` lists what did not add up (within 0.01) or could not be carried, in words; an
order is never dropped for it, the ERP side decides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal, cast

from relay.errors import RelayKitError
from relay.intake.currencies import ISO_4217

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "Address",
    "Customer",
    "Line",
    "Order",
    "OrderStatus",
    "Payment",
    "PaymentStatus",
    "Return",
    "ReturnLine",
    "ShippingLine",
    "Totals",
    "Unreadable",
    "kind_of",
    "money_text",
    "per_unit",
    "rate_text",
    "read_bool",
    "read_currency",
    "read_dict",
    "read_list",
    "read_money",
    "read_quantity",
    "read_text",
    "time_text",
]

OrderStatus = Literal["open", "cancelled", "closed"]
PaymentStatus = Literal["pending", "authorized", "paid", "partially_refunded", "refunded", "voided"]

_CENT = Decimal("0.01")


def money_text(amount: Decimal) -> str:
    """At least two decimals, no trailing zeros beyond them, never an exponent."""
    if not amount.is_finite():
        raise ValueError(f"not a finite amount: {amount}")
    if amount == amount.quantize(_CENT):
        return f"{amount.quantize(_CENT):f}"
    return f"{amount.normalize():f}"


def rate_text(rate: Decimal) -> str:
    """A tax rate in percent as the shop gives it: ``21``, ``10.5`` (no forced decimals)."""
    return f"{rate.normalize():f}"


def time_text(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``; microseconds only when there are any."""
    utc = moment.astimezone(UTC)
    pattern = "%Y-%m-%dT%H:%M:%S.%fZ" if utc.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return utc.strftime(pattern)


_PERCENT = {"percent": True}
"""Field metadata: this Decimal is a rate in percent (``21``), not money (``21.00``)."""


class _Data:
    """``to_data()`` for the dataclasses below: their fields, in order, made JSON-ready."""

    __slots__ = ()

    def to_data(self) -> dict[str, Any]:
        """The JSON-ready dict, keys in field order (which is DESIGN.md's key order)."""
        instance = cast("DataclassInstance", self)
        return {
            item.name: _jsonable(getattr(self, item.name), item.metadata)
            for item in dataclasses.fields(instance)
        }


def _jsonable(value: object, metadata: Mapping[str, Any]) -> Any:
    if isinstance(value, Decimal):
        return rate_text(value) if metadata.get("percent") else money_text(value)
    if isinstance(value, datetime):
        return time_text(value)
    if isinstance(value, tuple):
        return [_jsonable(item, metadata) for item in value]
    if isinstance(value, _Data):
        return value.to_data()
    return value  # str, int, bool, None


@dataclass(frozen=True, slots=True)
class Customer(_Data):
    email: str | None
    shop_customer_id: str | None
    """``None`` for a guest checkout."""
    first_name: str | None
    last_name: str | None
    company: str | None
    tax_id: str | None
    phone: str | None


@dataclass(frozen=True, slots=True)
class Address(_Data):
    name: str | None
    line1: str | None
    line2: str | None
    city: str | None
    postcode: str | None
    region: str | None
    country: str | None
    """ISO 3166-1 alpha-2, as the shop gives it."""


@dataclass(frozen=True, slots=True)
class Line(_Data):
    line_ref: str
    sku: str
    name: str
    quantity: int
    unit_price: Decimal
    """Ex tax, before discount."""
    discount: Decimal
    """Ex tax, the whole line's."""
    tax_rate: Decimal = field(metadata=_PERCENT)
    """Percent."""
    tax: Decimal
    total: Decimal
    """Tax included, after discount: what the customer paid for this line."""


@dataclass(frozen=True, slots=True)
class ShippingLine(_Data):
    method: str | None
    price: Decimal
    """Ex tax."""
    tax_rate: Decimal = field(metadata=_PERCENT)
    tax: Decimal


@dataclass(frozen=True, slots=True)
class Payment(_Data):
    method: str | None
    """What the customer chose, in the shop's words (may be translated: map on ``gateway``)."""
    gateway: str | None
    """The shop's stable id of the payment gateway (``cod``, ``bacs``, ``stripe``...)."""
    transaction_ref: str | None


@dataclass(frozen=True, slots=True)
class Totals(_Data):
    subtotal: Decimal
    discount: Decimal
    shipping: Decimal
    tax: Decimal
    total: Decimal


@dataclass(frozen=True, slots=True)
class Order(_Data):
    shop: str
    """The intake's name for the shop (``[[shops]] name``), not the shop's own."""
    order_ref: str
    """The shop's stable order id (the idempotency key in the ERP)."""
    number: str
    """What the customer sees (``#1001``, ``32``)."""
    version: datetime
    """The shop's own last-modified time: whole seconds on most shops."""
    created_at: datetime
    status: OrderStatus
    payment_status: PaymentStatus
    currency: str
    prices_include_tax: bool
    customer: Customer
    billing_address: Address | None
    shipping_address: Address | None
    lines: tuple[Line, ...]
    shipping: tuple[ShippingLine, ...]
    payment: Payment
    totals: Totals
    note: str | None
    checks: tuple[str, ...] = ()
    """What did not add up or could not be carried, in words (``checks`` is last in data)."""


@dataclass(frozen=True, slots=True)
class ReturnLine(_Data):
    sku: str
    quantity: int
    amount: Decimal
    """Refunded for this line, tax included."""
    restock: bool
    """Whether the shop put the units back in stock (the ERP decides its own stock)."""


@dataclass(frozen=True, slots=True)
class Return(_Data):
    """The ``data`` of a ``distillsync.return.upsert`` event (subject ``{shop}/{return_ref}``):
    a refund or return of (part of) an order the shop already sent."""

    shop: str
    return_ref: str
    """The shop's id of the refund / credit memo / return."""
    order_ref: str
    version: datetime
    created_at: datetime
    currency: str
    lines: tuple[ReturnLine, ...]
    refund_total: Decimal
    """All that was refunded, tax and shipping included."""
    reason: str | None
    checks: tuple[str, ...] = ()


# --- reading a shop's JSON: shared by the mappings ---------------------------------------


class Unreadable(RelayKitError):
    """A shop's order field that cannot be read, the reason in words (naming the field): the
    mapping turns it into its ``Unmappable`` outcome. Not retryable: the same body reads
    the same way."""


def read_money(value: object, where: str) -> Decimal:
    """A decimal string (or a JSON number, read by its shortest text: 45.73 is 45.73)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise Unreadable(f"{where} is not an amount: {value!r}")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else value)
    except InvalidOperation:
        raise Unreadable(f"{where} is not an amount: {value!r}") from None
    if not amount.is_finite():
        raise Unreadable(f"{where} is not an amount: {value!r}")
    return amount


def per_unit(amount: Decimal, quantity: int) -> Decimal:
    """Exact when it divides to the cent; else to 6 decimals (the line total stays exact)."""
    unit = amount / quantity
    return unit if unit == unit.quantize(_CENT) else unit.quantize(Decimal("0.000001"))


def read_quantity(value: object, where: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise Unreadable(f"{where}: quantity {value!r} is not a positive whole number")
    return value


def read_currency(value: object) -> str:
    if not isinstance(value, str) or value not in ISO_4217:
        raise Unreadable(f"unknown currency {value!r} (not an ISO 4217 code)")
    return value


def read_text(value: object) -> str | None:
    """Shops write "" (or spaces) for absent text: the canonical order says null."""
    return value if isinstance(value, str) and value.strip() else None


def read_bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise Unreadable(f"{where} is not true or false: {value!r}")
    return value


def read_dict(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Unreadable(f"{where} is not an object but {kind_of(value)}")
    return value


def read_list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise Unreadable(f"{where} is not a list but {kind_of(value)}")
    return value


def kind_of(value: object) -> str:
    return "null" if value is None else f"a {type(value).__name__}"
