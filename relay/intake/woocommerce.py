"""WooCommerce (9.9, ``wc/v3``) order JSON to the canonical :class:`~relay.intake.order.Order`.

A webhook body and ``GET wc/v3/orders/{id}`` have the same shape (the fixtures show them
byte for byte alike), so one function maps both. What the real shop sends besides orders
(DESIGN.md, "What the real shop and ERPs do") comes back as its own typed outcome, never
as an exception:

- :class:`Draft`: an abandoned Store API checkout (``"status": "checkout-draft"``), which
  is not an order to import: record it, import nothing;
- :class:`Trashed`: ``order.deleted`` for the trash, whose body is only ``{"id": N}`` (or a
  re-read of such an order, ``"status": "trash"``): record it and show it;
- :class:`Gone`: a delivery queued before a permanent delete arrives validly signed with
  a REST error body (``woocommerce_rest_shop_order_invalid_id``): the order is gone, which
  is not a mapping error;
- :class:`Unmappable`: anything else that cannot become an order, with the precise reason
  (a line with no SKU, a currency outside ISO 4217, a body that is not an order).

The traps, each handled where it is read:

- ``line_items[].price`` is a float, after discount and ex tax: never used. Lines come
  from ``subtotal`` (before discount), ``total`` and ``total_tax``, all ex tax even when
  ``prices_include_tax``; so is shipping's ``total``.
- ``taxes[].total`` strings are unrounded (``"3.117025"``): used only to see which rates
  apply, never as money; the amounts are the rounded ``total_tax`` the order sums.
- Payment has no status of its own: it comes from ``date_paid_gmt`` and the order
  status (:func:`payment_status`); cash on delivery (``processing`` unpaid) is
  ``authorized``.
- ``customer_id`` 0 is a guest checkout: no shop customer id.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

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
    read_bool,
    read_currency,
    read_dict,
    read_list,
    read_money,
    read_quantity,
    read_text,
)
from relay.intake.outcome import Draft, Gone, Mapped, Trashed, Unmappable

__all__ = [
    "Draft",
    "Gone",
    "Mapped",
    "Trashed",
    "Unmappable",
    "map_body",
    "map_order",
    "payment_status",
]


_TOLERANCE = Decimal("0.01")

_STATUS: dict[str, OrderStatus] = {
    "pending": "open",
    "processing": "open",
    "on-hold": "open",
    "failed": "open",  # the customer may still pay it again
    "completed": "closed",
    "refunded": "closed",
    "cancelled": "cancelled",
}


def map_body(shop: str, raw: bytes) -> Mapped:
    """Map a raw delivery body. The ping (``webhook_id=N``, form-encoded) is the webhook
    handler's to answer before this; here it is only "not JSON"."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        return Unmappable(f"body is not JSON: {error}")
    return map_order(shop, body)


def map_order(shop: str, body: object) -> Mapped:
    """Map a parsed WooCommerce order (webhook body or REST GET) for the intake's ``shop``."""
    if not isinstance(body, dict):
        return Unmappable(f"not a WooCommerce order: the body is {kind_of(body)}")
    if "code" in body and "id" not in body:
        return _rest_error(body)
    order_id = body.get("id")
    if not isinstance(order_id, int) or isinstance(order_id, bool) or order_id <= 0:
        return Unmappable(f"not a WooCommerce order: id is {order_id!r}, not a positive integer")
    ref = str(order_id)
    if body.keys() == {"id"} or body.get("status") == "trash":
        return Trashed(ref)
    try:
        if body.get("status") == "checkout-draft":
            return Draft(ref, _optional_time(body.get("date_modified_gmt"), "date_modified_gmt"))
        return _order(shop, ref, body)
    except Unreadable as bad:
        return Unmappable(str(bad), ref)


def _rest_error(body: Mapping[str, Any]) -> Gone | Unmappable:
    code, message = str(body.get("code")), str(body.get("message", ""))
    details = body.get("data")
    status = details.get("status") if isinstance(details, dict) else None
    # The REST controllers' "woocommerce_rest_{post_type}_invalid_id" with 404, which for
    # an order (HPOS or not) is woocommerce_rest_shop_order_invalid_id; a 400 invalid id
    # is a bad request, not a missing order.
    if code.startswith("woocommerce_rest_") and code.endswith("_invalid_id") and status == 404:
        return Gone(code, message)
    return Unmappable(f"a REST error body, not an order: {code}: {message}")


def _order(shop: str, ref: str, body: Mapping[str, Any]) -> Order:
    status_text = _str(body.get("status"), "status")
    rates = _rates(read_list(body.get("tax_lines", []), "tax_lines"))
    lines = tuple(_line(item, rates) for item in read_list(body.get("line_items"), "line_items"))
    shipping_lines = read_list(body.get("shipping_lines", []), "shipping_lines")
    shipping = tuple(_shipping(item, rates) for item in shipping_lines)
    billing = read_dict(body.get("billing", {}), "billing")
    totals, checks = _totals(body, lines, shipping)
    return Order(
        shop=shop,
        order_ref=ref,
        number=str(body.get("number") or ref),
        version=_time(body.get("date_modified_gmt"), "date_modified_gmt"),
        created_at=_time(body.get("date_created_gmt"), "date_created_gmt"),
        status=_STATUS.get(status_text, "open"),
        payment_status=payment_status(status_text, body),
        currency=read_currency(body.get("currency")),
        prices_include_tax=read_bool(body.get("prices_include_tax"), "prices_include_tax"),
        customer=_customer(body, billing),
        billing_address=_address(billing),
        shipping_address=_address(read_dict(body.get("shipping", {}), "shipping")),
        lines=lines,
        shipping=shipping,
        payment=_payment(body),
        totals=totals,
        note=read_text(body.get("customer_note")),
        checks=(*_status_checks(status_text), *checks),
    )


def payment_status(status: str, body: Mapping[str, Any]) -> PaymentStatus:
    """DESIGN.md's mapping: WooCommerce payment has no status of its own.

    ``refunded`` → refunded; any refund on a paid order → partially_refunded;
    ``date_paid_gmt`` set → paid; ``failed``/``cancelled`` unpaid → voided;
    ``processing``/``completed`` unpaid (cash on delivery) → authorized; else pending.
    """
    paid = bool(body.get("date_paid_gmt"))
    if status == "refunded":
        return "refunded"
    if paid and body.get("refunds"):
        return "partially_refunded"
    if paid:
        return "paid"
    if status in ("failed", "cancelled"):
        return "voided"
    if status in ("processing", "completed"):
        return "authorized"
    return "pending"


def _status_checks(status: str) -> tuple[str, ...]:
    if status in _STATUS:
        return ()
    # Plugins add statuses (wc-shipped, wc-awaiting-...): keep the order, say how it was read.
    return (f"status: unknown WooCommerce status {status!r} read as open",)


def _line(item: object, rates: Mapping[int, Decimal]) -> Line:
    row = read_dict(item, "line_items[]")
    ref = str(row.get("id"))
    name = read_text(row.get("name")) or ""
    where = f"line {ref} ({name})" if name else f"line {ref}"
    sku = read_text(row.get("sku"))
    if sku is None:
        raise Unreadable(f"{where} has no SKU")
    quantity = read_quantity(row.get("quantity"), where)
    subtotal = read_money(row.get("subtotal"), f"{where} subtotal")
    total = read_money(row.get("total"), f"{where} total")
    tax = read_money(row.get("total_tax"), f"{where} total_tax")
    return Line(
        line_ref=ref,
        sku=sku,
        name=name,
        quantity=quantity,
        unit_price=per_unit(subtotal, quantity),
        discount=subtotal - total,
        tax_rate=_rate(row.get("taxes", []), rates, where),
        tax=tax,
        total=total + tax,
    )


def _shipping(item: object, rates: Mapping[int, Decimal]) -> ShippingLine:
    row = read_dict(item, "shipping_lines[]")
    where = f"shipping line {row.get('id')}"
    return ShippingLine(
        method=read_text(row.get("method_title")) or read_text(row.get("method_id")),
        price=read_money(row.get("total"), f"{where} total"),
        tax_rate=_rate(row.get("taxes", []), rates, where),
        tax=read_money(row.get("total_tax"), f"{where} total_tax"),
    )


def _rates(tax_lines: list[Any]) -> dict[int, Decimal]:
    rates: dict[int, Decimal] = {}
    for item in tax_lines:
        row = read_dict(item, "tax_lines[]")
        percent = row.get("rate_percent")
        if isinstance(percent, int | float | str) and not isinstance(percent, bool):
            rates[row.get("rate_id", -1)] = read_money(percent, f"tax line {row.get('id')} rate")
    return rates


def _rate(taxes: object, rates: Mapping[int, Decimal], where: str) -> Decimal:
    """The line's rate in percent: the sum of the rates that taxed it (one, in practice)."""
    rate = Decimal(0)
    for item in read_list(taxes, f"{where} taxes"):
        row = read_dict(item, f"{where} taxes[]")
        if not _taxed(row.get("total")):
            continue
        if row.get("id") not in rates:
            rate_id = row.get("id")
            raise Unreadable(f"{where}: tax rate {rate_id!r} has no rate_percent in tax_lines")
        rate += rates[row["id"]]
    return rate


def _taxed(unrounded: object) -> bool:
    # An unrounded tax string ("1.0395"), "" or "0" for a rate that did not apply.
    try:
        return Decimal(str(unrounded)) != 0
    except InvalidOperation:
        return False


def _totals(
    body: Mapping[str, Any], lines: tuple[Line, ...], shipping: tuple[ShippingLine, ...]
) -> tuple[Totals, list[str]]:
    fee_total, fee_tax, checks = _fees(read_list(body.get("fee_lines", []), "fee_lines"))
    totals = Totals(
        # WooCommerce has no order subtotal: the lines' own, before discount, ex tax.
        subtotal=sum((line.total - line.tax + line.discount for line in lines), Decimal(0)),
        discount=read_money(body.get("discount_total"), "discount_total"),
        shipping=read_money(body.get("shipping_total"), "shipping_total"),
        tax=read_money(body.get("total_tax"), "total_tax"),
        total=read_money(body.get("total"), "total"),
    )
    tax = sum((line.tax for line in lines), fee_tax) + sum(
        (line.tax for line in shipping), Decimal(0)
    )
    sums = [
        ("discount", sum((line.discount for line in lines), Decimal(0)), totals.discount),
        ("shipping", sum((line.price for line in shipping), Decimal(0)), totals.shipping),
        ("tax", tax, totals.tax),
        (
            "total",
            totals.subtotal - totals.discount + totals.shipping + fee_total + totals.tax,
            totals.total,
        ),
    ]
    checks += [_mismatch(name, found, said) for name, found, said in sums if _off(found, said)]
    return totals, checks


def _off(found: Decimal, said: Decimal) -> bool:
    # Each figure is rounded to the cent on its own: a cent apart is rounding, not an error.
    return abs(found - said) > _TOLERANCE


def _mismatch(name: str, found: Decimal, said: Decimal) -> str:
    if name == "total":
        return (
            f"total: subtotal - discount + shipping + fees + tax = {money_text(found)}, "
            f"the order says {money_text(said)}"
        )
    return f"{name}: the lines add up to {money_text(found)}, the order says {money_text(said)}"


def _fees(fee_lines: list[Any]) -> tuple[Decimal, Decimal, list[str]]:
    """Fees have no place in the canonical order: counted in the sums, and said in checks."""
    total, tax, checks = Decimal(0), Decimal(0), []
    for item in fee_lines:
        row = read_dict(item, "fee_lines[]")
        amount = read_money(row.get("total"), f"fee {row.get('id')} total")
        fee_tax = read_money(row.get("total_tax", "0"), f"fee {row.get('id')} total_tax")
        total, tax = total + amount, tax + fee_tax
        checks.append(
            f"fee {read_text(row.get('name'))!r} {money_text(amount)} + tax "
            f"{money_text(fee_tax)} is in the total but in no line"
        )
    return total, tax, checks


def _customer(body: Mapping[str, Any], billing: Mapping[str, Any]) -> Customer:
    customer_id = body.get("customer_id")
    return Customer(
        email=read_text(billing.get("email")),
        # 0 is WooCommerce's guest checkout.
        shop_customer_id=str(customer_id) if customer_id not in (None, 0, "0") else None,
        first_name=read_text(billing.get("first_name")),
        last_name=read_text(billing.get("last_name")),
        company=read_text(billing.get("company")),
        # WooCommerce core has no tax id field (plugins keep one in order meta).
        tax_id=None,
        phone=read_text(billing.get("phone")),
    )


def _address(part: Mapping[str, Any]) -> Address | None:
    names = [read_text(part.get(key)) for key in ("first_name", "last_name")]
    address = Address(
        name=" ".join(name for name in names if name) or None,
        line1=read_text(part.get("address_1")),
        line2=read_text(part.get("address_2")),
        city=read_text(part.get("city")),
        postcode=read_text(part.get("postcode")),
        region=read_text(part.get("state")),
        country=read_text(part.get("country")),
    )
    # A virtual-goods order has an empty shipping address: none, not a blank one.
    return None if address == Address(None, None, None, None, None, None, None) else address


def _payment(body: Mapping[str, Any]) -> Payment:
    return Payment(
        method=read_text(body.get("payment_method_title")),
        gateway=read_text(body.get("payment_method")),
        transaction_ref=read_text(body.get("transaction_id")),
    )


def _time(value: object, where: str) -> datetime:
    moment = _optional_time(value, where)
    if moment is None:
        raise Unreadable(f"{where} is missing")
    return moment


def _optional_time(value: object, where: str) -> datetime | None:
    """WooCommerce's ``*_gmt`` fields: naive ``YYYY-MM-DDTHH:MM:SS`` in UTC."""
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(_str(value, where))
    except ValueError:
        raise Unreadable(f"{where} is not a time: {value!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise Unreadable(f"{where} is not text: {value!r}")
    return value
