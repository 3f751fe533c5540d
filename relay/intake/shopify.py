"""Shopify order JSON to the canonical :class:`~relay.intake.order.Order`, read both ways.

Two shapes of one order arrive: the REST-shaped body of the ``orders/create``,
``orders/updated`` and ``orders/cancelled`` webhooks (:func:`map_order`, :func:`map_body`)
and the Admin GraphQL ``Order`` node the catch-up poll reads (:func:`map_node`). The node is
first rewritten into the webhook's shape (:func:`rest_shape`) and both go through one
mapping, so the same state read either way gives the same canonical data and the same event
id. What cannot become an order is :class:`Unmappable` with its precise reason (a line with
no SKU, a currency outside ISO 4217, a body that is not an order), never an exception.

How Shopify's figures are read:

- ``price`` (REST) / ``originalUnitPriceSet`` (GraphQL) is the unit price before discount,
  **tax included when** ``taxes_included``; the line's discount is the sum of its
  ``discount_allocations`` (the deprecated ``total_discount`` only when there are none), in
  the same terms; its tax is the sum of its ``tax_lines`` prices, rates as fractions
  (``0.21``). So a line charged ``total`` = quantity x price - discount (+ tax when prices
  exclude it). With prices incl. tax, the ex-tax discount is the discount / (1 + rate),
  to the cent, and the ex-tax unit price what makes the line add up.
- Shipping is ``discounted_price`` (after shipping discounts), less its tax when prices
  include it.
- Money sets: the shop's currency (``shopMoney``, the plain REST amounts), never the
  presentment currency.
- ``financial_status`` (:func:`payment_status`): ``partially_paid`` is **pending** (the
  order is not paid, so it is held until it is; said in ``checks``), ``expired`` (an
  authorization not captured in time) is **voided**, also said; the rest keep
  their names.
- ``status``: ``cancelled_at`` set → cancelled, else ``closed_at`` set → closed, else open.
- ``customer`` null is a guest checkout: no shop customer id, the name from the billing
  address. Shopify has no tax id on an order; the payment's method and transaction are in
  its transactions, not in the order: ``gateway`` is ``payment_gateway_names`` joined.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
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
from relay.intake.outcome import Mapped, Unmappable

__all__ = [
    "Mapped",
    "Unmappable",
    "map_body",
    "map_node",
    "map_order",
    "payment_status",
    "rest_shape",
]


_CENT = Decimal("0.01")
_ORDER_GID = "gid://shopify/Order/"

_PAYMENT: dict[str, PaymentStatus] = {
    "pending": "pending",
    "authorized": "authorized",
    "partially_paid": "pending",
    "paid": "paid",
    "partially_refunded": "partially_refunded",
    "refunded": "refunded",
    "voided": "voided",
    "expired": "voided",
}


def map_body(shop: str, raw: bytes) -> Mapped:
    """Map a raw webhook body (``orders/create``, ``orders/updated``, ``orders/cancelled``)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        return Unmappable(f"body is not JSON: {error}")
    return map_order(shop, body)


def map_order(shop: str, body: object) -> Mapped:
    """Map a parsed webhook body (REST-shaped) for the intake's ``shop``."""
    if not isinstance(body, dict):
        return Unmappable(f"not a Shopify order: the body is {kind_of(body)}")
    order_id = body.get("id")
    if not isinstance(order_id, int) or isinstance(order_id, bool) or order_id <= 0:
        return Unmappable(f"not a Shopify order: id is {order_id!r}, not a positive integer")
    try:
        return _order(shop, str(order_id), body)
    except Unreadable as bad:
        return Unmappable(str(bad), str(order_id))


def map_node(shop: str, node: object) -> Mapped:
    """Map an Admin GraphQL ``Order`` node (as the poll's ``orders`` query returns it)."""
    if not isinstance(node, dict):
        return Unmappable(f"not a Shopify order node: the node is {kind_of(node)}")
    gid = node.get("id")
    ref = gid.removeprefix(_ORDER_GID) if isinstance(gid, str) else ""
    if not (isinstance(gid, str) and gid.startswith(_ORDER_GID) and ref.isdigit()):
        return Unmappable(f"not a Shopify order node: id is {gid!r}, not {_ORDER_GID}N")
    try:
        return _order(shop, ref, rest_shape(node))
    except Unreadable as bad:
        return Unmappable(str(bad), ref)


def payment_status(financial_status: object) -> PaymentStatus:
    """REST ``financial_status`` or GraphQL ``displayFinancialStatus`` (any case) to ours;
    unknown or null is pending (said in ``checks`` by the mapping)."""
    return _PAYMENT.get(str(financial_status).lower(), "pending")


# --- GraphQL node to the webhook's shape ---------------------------------------------------


def rest_shape(node: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of an Admin GraphQL ``Order`` node the mapping reads, under the names and
    in the shape of the webhook body (ids from their gids, money from ``shopMoney``)."""
    customer = node.get("customer")
    return {
        "name": node.get("name"),
        "updated_at": node.get("updatedAt"),
        "created_at": node.get("createdAt"),
        "cancelled_at": node.get("cancelledAt"),
        "closed_at": node.get("closedAt"),
        "financial_status": node.get("displayFinancialStatus"),
        "currency": node.get("currencyCode"),
        "taxes_included": node.get("taxesIncluded"),
        "email": node.get("email"),
        "phone": node.get("phone"),
        "customer": None if customer is None else _node_customer(customer),
        "billing_address": _node_address(node.get("billingAddress")),
        "shipping_address": _node_address(node.get("shippingAddress")),
        "line_items": [_node_line(item) for item in _nodes(node.get("lineItems"), "lineItems")],
        "shipping_lines": [
            _node_shipping(item) for item in _nodes(node.get("shippingLines"), "shippingLines")
        ],
        "payment_gateway_names": node.get("paymentGatewayNames", []),
        "total_price": _shop_money(node.get("totalPriceSet"), "totalPriceSet"),
        "total_tax": _shop_money(node.get("totalTaxSet"), "totalTaxSet"),
        "total_discounts": _shop_money(node.get("totalDiscountsSet"), "totalDiscountsSet"),
        "note": node.get("note"),
    }


def _node_customer(value: object) -> dict[str, Any]:
    row = read_dict(value, "customer")
    gid = row.get("id")
    return {
        "id": gid.rsplit("/", 1)[-1] if isinstance(gid, str) else gid,
        "email": row.get("email"),
        "first_name": row.get("firstName"),
        "last_name": row.get("lastName"),
        "phone": row.get("phone"),
    }


def _node_address(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    row = read_dict(value, "address")
    names = {"countryCodeV2": "country_code", "provinceCode": "province_code"}
    names |= {"firstName": "first_name", "lastName": "last_name"}
    return {names.get(key, key): item for key, item in row.items()}


def _node_line(value: object) -> dict[str, Any]:
    row = read_dict(value, "lineItems.nodes[]")
    gid = row.get("id")
    where = f"line {gid}"
    return {
        "id": gid.rsplit("/", 1)[-1] if isinstance(gid, str) else gid,
        "name": row.get("name"),
        "sku": row.get("sku"),
        "quantity": row.get("quantity"),
        "price": _shop_money(row.get("originalUnitPriceSet"), f"{where} originalUnitPriceSet"),
        "discount_allocations": _node_allocations(row.get("discountAllocations", []), where),
        "tax_lines": _node_taxes(row.get("taxLines", []), where),
    }


def _node_shipping(value: object) -> dict[str, Any]:
    row = read_dict(value, "shippingLines.nodes[]")
    where = f"shipping line {row.get('title')!r}"
    return {
        "title": row.get("title"),
        "discounted_price": _shop_money(
            row.get("discountedPriceSet"), f"{where} discountedPriceSet"
        ),
        "tax_lines": _node_taxes(row.get("taxLines", []), where),
    }


def _node_allocations(value: object, where: str) -> list[dict[str, Any]]:
    return [
        {"amount": _shop_money(read_dict(item, where).get("allocatedAmountSet"), where)}
        for item in read_list(value, f"{where} discountAllocations")
    ]


def _node_taxes(value: object, where: str) -> list[dict[str, Any]]:
    taxes = []
    for item in read_list(value, f"{where} taxLines"):
        row = read_dict(item, f"{where} taxLines[]")
        price = _shop_money(row.get("priceSet"), f"{where} taxLines priceSet")
        taxes.append({"title": row.get("title"), "rate": row.get("rate"), "price": price})
    return taxes


def _nodes(connection: object, where: str) -> list[Any]:
    """A connection read with ``nodes`` (or ``edges { node }``)."""
    row = read_dict(connection, where)
    if "edges" in row:
        return [
            read_dict(edge, f"{where}.edges[]").get("node")
            for edge in read_list(row["edges"], where)
        ]
    return read_list(row.get("nodes"), f"{where}.nodes")


def _shop_money(money_set: object, where: str) -> object:
    if money_set is None:
        return None
    shop_money = read_dict(read_dict(money_set, where).get("shopMoney"), f"{where}.shopMoney")
    return shop_money.get("amount")


# --- one mapping for both ------------------------------------------------------------------


def _order(shop: str, ref: str, body: Mapping[str, Any]) -> Order:
    included = read_bool(body.get("taxes_included"), "taxes_included")
    lines = tuple(_line(item, included) for item in read_list(body.get("line_items"), "line_items"))
    shipping = tuple(
        _shipping(item, included)
        for item in read_list(body.get("shipping_lines", []), "shipping_lines")
    )
    totals, checks = _totals(body, lines, shipping)
    return Order(
        shop=shop,
        order_ref=ref,
        number=read_text(body.get("name")) or ref,
        version=_time(body.get("updated_at"), "updated_at"),
        created_at=_time(body.get("created_at"), "created_at"),
        status=_status(body),
        payment_status=payment_status(body.get("financial_status")),
        currency=read_currency(body.get("currency")),
        prices_include_tax=included,
        customer=_customer(body),
        billing_address=_address(body.get("billing_address"), "billing_address"),
        shipping_address=_address(body.get("shipping_address"), "shipping_address"),
        lines=lines,
        shipping=shipping,
        payment=_payment(body.get("payment_gateway_names", [])),
        totals=totals,
        note=read_text(body.get("note")),
        checks=(*_payment_checks(body.get("financial_status")), *checks),
    )


def _status(body: Mapping[str, Any]) -> OrderStatus:
    if body.get("cancelled_at"):
        return "cancelled"
    return "closed" if body.get("closed_at") else "open"


def _payment_checks(financial_status: object) -> tuple[str, ...]:
    text = str(financial_status).lower()
    if text == "partially_paid":
        return ("payment: partially_paid read as pending (not all of it is paid)",)
    if text == "expired":
        return ("payment: expired (the authorization was not captured in time) read as voided",)
    if text not in _PAYMENT:
        return (f"payment: unknown financial status {financial_status!r} read as pending",)
    return ()


def _line(item: object, included: bool) -> Line:
    row = read_dict(item, "line_items[]")
    ref = str(row.get("id"))
    name = read_text(row.get("name")) or ""
    where = f"line {ref} ({name})" if name else f"line {ref}"
    sku = read_text(row.get("sku"))
    if sku is None:
        raise Unreadable(f"{where} has no SKU")
    quantity = read_quantity(row.get("quantity"), where)
    gross = quantity * read_money(row.get("price"), f"{where} price")
    discount = _discount(row, where)
    rate, tax = _taxes(row.get("tax_lines", []), where)
    total = gross - discount + (Decimal(0) if included else tax)
    if included:
        discount = (discount / (1 + rate / 100)).quantize(_CENT)
    return Line(
        line_ref=ref,
        sku=sku,
        name=name,
        quantity=quantity,
        unit_price=per_unit(total - tax + discount, quantity),
        discount=discount,
        tax_rate=rate,
        tax=tax,
        total=total,
    )


def _discount(row: Mapping[str, Any], where: str) -> Decimal:
    allocations = read_list(row.get("discount_allocations", []), f"{where} discount_allocations")
    if not allocations:
        return read_money(row.get("total_discount", "0"), f"{where} total_discount")
    return sum(
        (
            read_money(read_dict(item, where).get("amount"), f"{where} discount")
            for item in allocations
        ),
        Decimal(0),
    )


def _taxes(value: object, where: str) -> tuple[Decimal, Decimal]:
    """The rate in percent of the taxes that apply (their sum: one, or state + county...)
    and the tax amount."""
    rate, tax = Decimal(0), Decimal(0)
    for item in read_list(value, f"{where} tax_lines"):
        row = read_dict(item, f"{where} tax_lines[]")
        price = read_money(row.get("price"), f"{where} tax {row.get('title')!r} price")
        if price != 0:
            rate += read_money(row.get("rate"), f"{where} tax {row.get('title')!r} rate") * 100
            tax += price
    return rate, tax


def _shipping(item: object, included: bool) -> ShippingLine:
    row = read_dict(item, "shipping_lines[]")
    where = f"shipping line {row.get('title')!r}"
    price = read_money(row.get("discounted_price", row.get("price")), f"{where} discounted_price")
    rate, tax = _taxes(row.get("tax_lines", []), where)
    return ShippingLine(
        method=read_text(row.get("title")),
        price=price - tax if included else price,
        tax_rate=rate,
        tax=tax,
    )


def _totals(
    body: Mapping[str, Any], lines: tuple[Line, ...], shipping: tuple[ShippingLine, ...]
) -> tuple[Totals, list[str]]:
    totals = Totals(
        # Shopify's subtotal_price is after discounts (and incl. tax when prices include
        # it): the canonical one is the lines' own, before discount, ex tax.
        subtotal=sum((line.total - line.tax + line.discount for line in lines), Decimal(0)),
        discount=sum((line.discount for line in lines), Decimal(0)),
        shipping=sum((line.price for line in shipping), Decimal(0)),
        tax=read_money(body.get("total_tax"), "total_tax"),
        total=read_money(body.get("total_price"), "total_price"),
    )
    taxes = [line.tax for line in lines] + [line.tax for line in shipping]
    found_tax = sum(taxes, Decimal(0))
    found_total = totals.subtotal - totals.discount + totals.shipping + totals.tax
    checks = []
    if abs(found_tax - totals.tax) > _CENT:
        checks.append(
            f"tax: the lines add up to {money_text(found_tax)}, "
            f"the order says {money_text(totals.tax)}"
        )
    if abs(found_total - totals.total) > _CENT:
        checks.append(
            f"total: subtotal - discount + shipping + tax = {money_text(found_total)}, "
            f"the order says {money_text(totals.total)}"
        )
    return totals, checks


def _customer(body: Mapping[str, Any]) -> Customer:
    customer = body.get("customer")
    # null (or absent) is a guest checkout.
    person = read_dict(customer, "customer") if customer is not None else {}
    billing = read_dict(body.get("billing_address") or {}, "billing_address")
    customer_id = person.get("id")
    return Customer(
        email=read_text(body.get("email")) or read_text(person.get("email")),
        shop_customer_id=None if customer_id is None else str(customer_id),
        first_name=read_text(person.get("first_name")) or read_text(billing.get("first_name")),
        last_name=read_text(person.get("last_name")) or read_text(billing.get("last_name")),
        company=read_text(billing.get("company")),
        tax_id=None,  # Shopify orders carry none
        phone=read_text(body.get("phone")) or read_text(person.get("phone")),
    )


def _address(value: object, where: str) -> Address | None:
    if value is None:
        return None  # nothing to ship (digital goods) or no billing address asked
    row = read_dict(value, where)
    names = [read_text(row.get(key)) for key in ("first_name", "last_name")]
    return Address(
        name=read_text(row.get("name")) or " ".join(name for name in names if name) or None,
        line1=read_text(row.get("address1")),
        line2=read_text(row.get("address2")),
        city=read_text(row.get("city")),
        postcode=read_text(row.get("zip")),
        region=read_text(row.get("province_code")),
        country=read_text(row.get("country_code")),
    )


def _payment(names: object) -> Payment:
    gateways = [name for name in read_list(names, "payment_gateway_names") if read_text(name)]
    return Payment(method=None, gateway=", ".join(gateways) or None, transaction_ref=None)


def _time(value: object, where: str) -> datetime:
    """ISO 8601 with an offset (REST: the shop's, ``+01:00``; GraphQL: ``Z``), to UTC."""
    if value is None or value == "":
        raise Unreadable(f"{where} is missing")
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise Unreadable(f"{where} is not a time with an offset: {value!r}")
    return moment.astimezone(UTC)
