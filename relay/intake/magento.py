"""Magento 2 / Adobe Commerce order entity to the canonical :class:`~relay.intake.order.Order`.

The entity is what ``GET V1/orders/{id}`` answers and what each of the ``items`` of a
``V1/orders`` search is (``Magento\\Sales\\Api\\Data\\OrderInterface`` as JSON: amounts are
JSON numbers, absent when null). :func:`map_order` maps one; what cannot become an order is
:class:`Unmappable` with its precise reason, never an exception.

How Magento's figures are read:

- ``order_ref`` is ``entity_id``, ``number`` the ``increment_id`` the customer sees.
- Items: a child item (``parent_item_id`` set: the simple product of a configurable) is
  left out, its parent carries the SKU (the chosen simple's) and the price. ``price`` is the
  unit price ex tax, ``row_total`` the line before discount ex tax, ``tax_amount`` its tax
  (after the discount), ``tax_percent`` the rate; ``discount_amount`` is the line's discount
  in the catalogue's terms, of which ``discount_tax_compensation_amount`` is tax when prices
  include tax. So a line charged ``row_total - discount_amount + tax_amount +
  discount_tax_compensation_amount`` (``row_total_incl_tax`` when there is no discount), and
  its ex-tax discount is ``discount_amount - discount_tax_compensation_amount``.
- Shipping: ``shipping_amount`` less ``shipping_discount_amount`` (ex tax),
  ``shipping_tax_amount``, the method from ``extension_attributes.shipping_assignments``
  (``shipping_description`` when given); the rate is not on the order: worked out from the
  amounts to two decimals.
- ``state`` gives the status (``canceled`` cancelled, ``complete`` and ``closed`` closed,
  the rest open) and, with ``total_paid``, ``total_due`` and ``total_refunded``, the payment
  status (:func:`payment_status`).
- ``updated_at`` and ``created_at`` are naive UTC ``YYYY-MM-DD HH:MM:SS``.
- A guest (``customer_is_guest`` 1, no ``customer_id``) has no shop customer id; names
  from the billing address when the order has none. The tax id is ``customer_taxvat``,
  else the billing address's ``vat_id``.
- Amounts are the order currency's (``order_currency_code``), never the ``base_`` ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from relay.intake.order import (
    Address,
    Customer,
    Line,
    Order,
    OrderStatus,
    Payment,
    PaymentStatus,
    ShippingLine,
    Totals,
    Unreadable,
    kind_of,
    money_text,
    per_unit,
    read_currency,
    read_dict,
    read_list,
    read_money,
    read_quantity,
    read_text,
)
from relay.intake.outcome import Mapped, Unmappable

__all__ = ["Mapped", "Unmappable", "map_order", "order_status", "payment_status", "read_time"]

_CENT = Decimal("0.01")
_TIME = "%Y-%m-%d %H:%M:%S"

_STATUS: dict[str, OrderStatus] = {
    "new": "open",
    "pending_payment": "open",
    "payment_review": "open",
    "processing": "open",
    "holded": "open",
    "complete": "closed",
    "closed": "closed",
    "canceled": "cancelled",
}

Row = Mapping[str, Any]


def map_order(shop: str, entity: object, *, prices_include_tax: bool = False) -> Mapped:
    """Map one order entity for the intake's ``shop``."""
    if not isinstance(entity, dict):
        return Unmappable(f"not a Magento order: the entity is {kind_of(entity)}")
    entity_id = entity.get("entity_id")
    if not isinstance(entity_id, int) or isinstance(entity_id, bool) or entity_id <= 0:
        return Unmappable(f"not a Magento order: entity_id is {entity_id!r}, not a positive id")
    ref = str(entity_id)
    try:
        return _order(shop, ref, entity, prices_include_tax)
    except Unreadable as bad:
        return Unmappable(str(bad), ref)


def read_time(value: object, where: str) -> datetime:
    """Magento's naive UTC ``YYYY-MM-DD HH:MM:SS``, aware."""
    try:
        naive = datetime.strptime(value, _TIME) if isinstance(value, str) else None
    except ValueError:
        naive = None
    if naive is None:
        raise Unreadable(f"{where} is not a time (YYYY-MM-DD HH:MM:SS, UTC): {value!r}")
    return naive.replace(tzinfo=UTC)


def order_status(state: str) -> OrderStatus:
    return _STATUS.get(state, "open")


def payment_status(state: str, entity: Row) -> PaymentStatus:
    """From ``state`` and the totals: refunds first (all of what was paid: refunded, some:
    partially), then cancelled or nothing paid on a closed order is voided, paid when
    nothing is due, authorized when an amount is authorized (or the order is processing
    unpaid: an authorization not captured, cash on delivery), else pending."""
    paid = _amount(entity, "total_paid")
    refunded = _amount(entity, "total_refunded")
    if refunded > 0:
        return "refunded" if refunded >= paid else "partially_refunded"
    if state in ("canceled", "closed"):
        return "voided"
    due = _amount(entity, "total_due", _amount(entity, "grand_total") - paid)
    if paid > 0 and due <= 0:
        return "paid"
    payment = entity.get("payment")
    authorized = _amount(payment, "amount_authorized") if isinstance(payment, dict) else 0
    if authorized > 0 or state == "processing":
        return "authorized"
    return "pending"


def _amount(row: Row, key: str, default: Decimal | int = 0) -> Decimal:
    value = row.get(key)
    return Decimal(default) if value is None else read_money(value, key)


def _order(shop: str, ref: str, entity: Row, included: bool) -> Order:
    state = read_text(entity.get("state")) or ""
    items = read_list(entity.get("items"), "items")
    lines = tuple(_line(item) for item in items if not _is_child(item))
    if not lines:
        raise Unreadable("the order has no items")
    shipping = _shipping(entity)
    totals, checks = _totals(entity, lines, shipping)
    billing = read_dict(entity.get("billing_address") or {}, "billing_address")
    return Order(
        shop=shop,
        order_ref=ref,
        number=read_text(entity.get("increment_id")) or ref,
        version=read_time(entity.get("updated_at"), "updated_at"),
        created_at=read_time(entity.get("created_at"), "created_at"),
        status=order_status(state),
        payment_status=payment_status(state, entity),
        currency=read_currency(entity.get("order_currency_code")),
        prices_include_tax=included,
        customer=_customer(entity, billing),
        billing_address=_address(entity.get("billing_address"), "billing_address"),
        shipping_address=_address(_shipping_address(entity), "shipping address"),
        lines=lines,
        shipping=shipping,
        payment=_payment(entity.get("payment")),
        totals=totals,
        note=read_text(entity.get("customer_note")),
        checks=(*_state_checks(state), *_line_checks(items), *checks),
    )


def _is_child(item: object) -> bool:
    return isinstance(item, dict) and item.get("parent_item_id") is not None


def _state_checks(state: str) -> tuple[str, ...]:
    return () if state in _STATUS else (f"status: unknown Magento state {state!r} read as open",)


def _line(item: object) -> Line:
    row = read_dict(item, "items[]")
    ref = str(row.get("item_id"))
    name = read_text(row.get("name")) or ""
    where = f"item {ref} ({name})" if name else f"item {ref}"
    sku = read_text(row.get("sku"))
    if sku is None:
        raise Unreadable(f"{where} has no SKU")
    quantity = read_quantity(row.get("qty_ordered"), where)
    row_total = _amount(row, "row_total")
    discount = _amount(row, "discount_amount")
    hidden_tax = _amount(row, "discount_tax_compensation_amount")
    tax = _amount(row, "tax_amount")
    return Line(
        line_ref=ref,
        sku=sku,
        name=name,
        quantity=quantity,
        unit_price=per_unit(row_total, quantity),
        discount=discount - hidden_tax,
        tax_rate=_amount(row, "tax_percent").normalize(),
        tax=tax,
        total=row_total - discount + tax + hidden_tax,
    )


def _line_checks(items: list[Any]) -> list[str]:
    """A line with no discount charged ``row_total_incl_tax``: said when it did not."""
    checks = []
    for item in items:
        if _is_child(item) or not isinstance(item, dict) or item.get("discount_amount"):
            continue
        if item.get("row_total_incl_tax") is None:
            continue
        said = read_money(item["row_total_incl_tax"], "row_total_incl_tax")
        found = _amount(item, "row_total") + _amount(item, "tax_amount")
        if abs(found - said) > _CENT:
            checks.append(
                f"item {item.get('item_id')}: row_total + tax_amount = {money_text(found)}, "
                f"row_total_incl_tax says {money_text(said)}"
            )
    return checks


def _assignment(entity: Row) -> Row:
    extension = read_dict(entity.get("extension_attributes") or {}, "extension_attributes")
    assignments = read_list(
        extension.get("shipping_assignments") or [], "extension_attributes.shipping_assignments"
    )
    if not assignments:
        return {}
    first = read_dict(assignments[0], "shipping_assignments[]")
    return read_dict(first.get("shipping") or {}, "shipping_assignments[].shipping")


def _shipping_address(entity: Row) -> object:
    return _assignment(entity).get("address")


def _shipping(entity: Row) -> tuple[ShippingLine, ...]:
    method = read_text(entity.get("shipping_description")) or read_text(
        _assignment(entity).get("method")
    )
    amount = _amount(entity, "shipping_amount")
    price = (
        amount
        - _amount(entity, "shipping_discount_amount")
        + _amount(entity, "shipping_discount_tax_compensation_amount")
    )
    tax = _amount(entity, "shipping_tax_amount")
    if method is None and amount == 0 and tax == 0:
        return ()  # a virtual order: nothing shipped
    rate = (tax / price * 100).quantize(_CENT).normalize() if price else Decimal(0)
    return (ShippingLine(method, price, rate, tax),)


def _totals(
    entity: Row, lines: tuple[Line, ...], shipping: tuple[ShippingLine, ...]
) -> tuple[Totals, list[str]]:
    totals = Totals(
        subtotal=sum((line.quantity * line.unit_price for line in lines), Decimal(0)),
        discount=sum((line.discount for line in lines), Decimal(0)),
        shipping=sum((line.price for line in shipping), Decimal(0)),
        tax=_amount(entity, "tax_amount"),
        total=read_money(entity.get("grand_total"), "grand_total"),
    )
    taxes = [line.tax for line in lines] + [line.tax for line in shipping]
    found_tax = sum(taxes, Decimal(0))
    found_total = totals.subtotal - totals.discount + totals.shipping + totals.tax
    checks = []
    if abs(found_tax - totals.tax) > _CENT:
        checks.append(
            f"tax: the items and shipping add up to {money_text(found_tax)}, "
            f"the order says {money_text(totals.tax)}"
        )
    if abs(found_total - totals.total) > _CENT:
        checks.append(
            f"total: subtotal - discount + shipping + tax = {money_text(found_total)}, "
            f"the order says {money_text(totals.total)}"
        )
    return totals, checks


def _customer(entity: Row, billing: Row) -> Customer:
    customer_id = entity.get("customer_id")
    guest = entity.get("customer_is_guest") in (1, True, "1") or customer_id is None
    return Customer(
        email=read_text(entity.get("customer_email")) or read_text(billing.get("email")),
        shop_customer_id=None if guest else str(customer_id),
        first_name=read_text(entity.get("customer_firstname"))
        or read_text(billing.get("firstname")),
        last_name=read_text(entity.get("customer_lastname")) or read_text(billing.get("lastname")),
        company=read_text(billing.get("company")),
        tax_id=read_text(entity.get("customer_taxvat")) or read_text(billing.get("vat_id")),
        phone=read_text(billing.get("telephone")),
    )


def _address(value: object, where: str) -> Address | None:
    if value is None:
        return None
    row = read_dict(value, where)
    street = [read_text(line) for line in read_list(row.get("street") or [], f"{where} street")]
    names = [read_text(row.get(key)) for key in ("firstname", "lastname")]
    return Address(
        name=" ".join(name for name in names if name) or None,
        line1=street[0] if street else None,
        line2=", ".join(line for line in street[1:] if line) or None,
        city=read_text(row.get("city")),
        postcode=read_text(row.get("postcode")),
        region=read_text(row.get("region_code")) or read_text(row.get("region")),
        country=read_text(row.get("country_id")),
    )


def _payment(value: object) -> Payment:
    row = read_dict(value or {}, "payment")
    info = row.get("additional_information")
    title = read_text(info[0]) if isinstance(info, list) and info else None
    return Payment(
        method=title,
        gateway=read_text(row.get("method")),
        transaction_ref=read_text(row.get("last_trans_id")),
    )
