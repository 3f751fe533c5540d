"""PrestaShop (8.2 Webservice, JSON) order to the canonical :class:`~relay.intake.order.Order`.

A PrestaShop order is not one resource but about nine (DESIGN.md, "What the real shop and
ERPs do"): the ``orders`` row (``display=full``), its ``order_details`` (the lines), the
``customers`` row, the invoice and delivery ``addresses``, its ``order_payments`` (linked by
the order's ``reference``), its ``order_carriers``, and the shop's ``order_states``,
``currencies``, ``taxes``, ``countries``, ``states`` and ``carriers``, which change rarely
and which the client keeps (:class:`Lookups`, with ``PS_TIMEZONE`` and the ``PS_OS_*`` state
ids from ``configurations``). The client assembles what it read into an :class:`Assembled`
and :func:`map_order` maps it; what cannot become an order is :class:`Unmappable` with its
precise reason, never an exception.

How PrestaShop's figures are read:

- ``order_ref`` is the order's ``id``: its ``reference`` (what the customer sees, hence
  ``number``) is shared by every order split from one cart.
- A line (``order_details``): ``product_reference`` is the SKU (none: Unmappable);
  ``product_price`` the unit price ex tax before catalogue reductions;
  ``total_price_tax_excl`` / ``total_price_tax_incl`` what was charged, so the line's tax is
  their difference and its discount ``quantity x product_price - total_price_tax_excl``; the
  rate is the sum of the ``taxes`` its ``associations.taxes`` name.
- Vouchers (cart rules) are on the order, not on its lines (``total_discounts_tax_excl`` /
  ``_incl``): counted in ``totals.discount`` and said in ``checks``; the order's tax is
  ``total_paid_tax_incl - total_paid_tax_excl``.
- Shipping: one line per ``order_carriers`` row (``shipping_cost_tax_excl`` / ``_incl``, the
  order's ``carrier_tax_rate``, the carrier's name), or the order's own shipping totals when
  there is none.
- Payment status comes from the current state (:func:`payment_status`): the shop's
  ``PS_OS_REFUND`` state is refunded, ``PS_OS_CANCELED`` voided (and the order cancelled),
  ``PS_OS_ERROR`` voided, any state flagged ``paid`` paid, ``PS_OS_COD_VALIDATION`` (cash on
  delivery) authorized, the rest pending; ``PS_OS_DELIVERED`` closes the order.
- Times (``date_add``, ``date_upd``) are naive, in the shop's ``PS_TIMEZONE``: converted to
  UTC. A stamp in the autumn hour that repeats is read as its first occurrence, said in
  ``checks``.
- A guest checkout is a ``customers`` row with ``is_guest`` 1: no shop customer id. The tax
  id is the invoice address's ``vat_number``, else its ``dni``.
- PrestaShop stores catalogue prices ex tax; whether the shop shows them with tax depends
  on the customer group, which the order does not say: ``prices_include_tax`` is the
  client's setting.

A ``customers`` row carries the password hash and ``secure_key`` (an order its
``secure_key``): :func:`without_secrets` drops them, the client applies it to every row it
reads, and nothing here reads them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
    time_text,
)
from relay.intake.outcome import Mapped, Unmappable

__all__ = [
    "CONFIGURATION_NAMES",
    "SECRET_FIELDS",
    "Assembled",
    "Lookups",
    "Mapped",
    "Unmappable",
    "by_id",
    "i18n_text",
    "list_rows",
    "local_time",
    "map_order",
    "one_row",
    "payment_status",
    "without_secrets",
]

SECRET_FIELDS = frozenset({"passwd", "secure_key", "reset_password_token", "last_passwd_gen"})
"""What a Webservice row may carry that must never be kept or logged."""

CONFIGURATION_NAMES = (
    "PS_TIMEZONE",
    "PS_OS_CANCELED",
    "PS_OS_REFUND",
    "PS_OS_ERROR",
    "PS_OS_COD_VALIDATION",
    "PS_OS_DELIVERED",
)
"""The ``configurations`` the client reads once: the shop's time zone and the ids of the
order states that mean something to the mapping."""

_CENT = Decimal("0.01")
_TIME = "%Y-%m-%d %H:%M:%S"

Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Lookups:
    """What the shop changes rarely, read once by the client, each table by id (as text)."""

    timezone: ZoneInfo
    order_states: Mapping[str, Row]
    currencies: Mapping[str, Row]
    taxes: Mapping[str, Row]
    countries: Mapping[str, Row]
    states: Mapping[str, Row] = field(default_factory=dict)
    carriers: Mapping[str, Row] = field(default_factory=dict)
    special: Mapping[str, str] = field(default_factory=dict)
    """``PS_OS_*`` configuration name -> the id of that order state in this shop."""

    @staticmethod
    def configuration(rows: Iterable[Row]) -> tuple[ZoneInfo, dict[str, str]]:
        """``PS_TIMEZONE`` and the ``PS_OS_*`` ids from ``configurations`` rows."""
        values = {str(row.get("name")): str(row.get("value") or "") for row in rows}
        zone = values.get("PS_TIMEZONE", "")
        try:
            timezone = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise Unreadable(f"PS_TIMEZONE {zone!r} is not a time zone") from None
        special = {name: values[name] for name in CONFIGURATION_NAMES[1:] if values.get(name)}
        return timezone, special


@dataclass(frozen=True, slots=True)
class Assembled:
    """One order as read from the Webservice, secrets already dropped."""

    order: Row
    details: Sequence[Row]
    customer: Row | None
    addresses: Mapping[str, Row]
    """The order's invoice and delivery addresses, by id."""
    payments: Sequence[Row] = ()
    order_carriers: Sequence[Row] = ()


# --- reading Webservice JSON ---------------------------------------------------------------


def without_secrets(row: Row) -> dict[str, Any]:
    """The row less :data:`SECRET_FIELDS`."""
    return {key: value for key, value in row.items() if key not in SECRET_FIELDS}


def list_rows(body: object, plural: str) -> list[dict[str, Any]]:
    """The rows of a list answer: ``{"orders": [...]}``, or ``[]`` when nothing matched."""
    if body == [] or body == {}:
        return []
    rows = read_list(read_dict(body, plural).get(plural), plural)
    return [without_secrets(read_dict(row, f"{plural}[]")) for row in rows]


def one_row(body: object, singular: str) -> dict[str, Any]:
    """The row of a single GET: ``{"order": {...}}``."""
    return without_secrets(read_dict(read_dict(body, singular).get(singular), singular))


def by_id(rows: Iterable[Row]) -> dict[str, Row]:
    return {str(row.get("id")): row for row in rows}


def i18n_text(value: object) -> str | None:
    """A localised field: text (one ``language`` asked) or ``[{"id", "value"}, ...]``."""
    if isinstance(value, list):
        texts = [read_text(item.get("value")) for item in value if isinstance(item, dict)]
        return next((text for text in texts if text), None)
    return read_text(value)


def local_time(value: object, timezone: ZoneInfo, where: str) -> tuple[datetime, list[str]]:
    """A naive ``YYYY-MM-DD HH:MM:SS`` in the shop's zone, to UTC; a check when the wall
    time happened twice (the autumn change) and was read as the first."""
    try:
        naive = datetime.strptime(value, _TIME) if isinstance(value, str) else None
    except ValueError:
        naive = None
    if naive is None:
        raise Unreadable(f"{where} is not a time (YYYY-MM-DD HH:MM:SS): {value!r}")
    first, second = naive.replace(tzinfo=timezone), naive.replace(tzinfo=timezone, fold=1)
    checks = []
    if first.utcoffset() != second.utcoffset() and _exists(second):  # not a spring gap
        checks.append(
            f"{where}: {value} happened twice in {timezone.key} (the clock went back): "
            f"read as the first, {time_text(first)}"
        )
    return first.astimezone(UTC), checks


def _exists(moment: datetime) -> bool:
    """Whether the wall time survives a round trip through UTC (a gap's does not)."""
    back = moment.astimezone(UTC).astimezone(moment.tzinfo)
    return back.replace(tzinfo=None) == moment.replace(tzinfo=None)


# --- the mapping ---------------------------------------------------------------------------


def map_order(
    shop: str, assembled: Assembled, lookups: Lookups, *, prices_include_tax: bool = False
) -> Mapped:
    """Map one assembled order for the intake's ``shop``."""
    body = assembled.order
    if not isinstance(body, Mapping):
        return Unmappable(f"not a PrestaShop order: the order is {kind_of(body)}")
    ref = str(body.get("id", ""))
    if not ref.isdigit() or int(ref) <= 0:
        return Unmappable(f"not a PrestaShop order: id is {body.get('id')!r}, not a positive id")
    try:
        return _order(shop, ref, assembled, lookups, prices_include_tax)
    except Unreadable as bad:
        return Unmappable(str(bad), ref)


def payment_status(state_id: str, state: Row | None, special: Mapping[str, str]) -> PaymentStatus:
    """The payment status the order's current state stands for (module docstring)."""
    if state_id == special.get("PS_OS_REFUND"):
        return "refunded"
    if state_id in (special.get("PS_OS_CANCELED"), special.get("PS_OS_ERROR")):
        return "voided"
    if state is not None and str(state.get("paid")) == "1":
        return "paid"
    if state_id == special.get("PS_OS_COD_VALIDATION"):
        return "authorized"
    return "pending"


def _order(shop: str, ref: str, assembled: Assembled, lookups: Lookups, included: bool) -> Order:
    body = assembled.order
    version, version_checks = local_time(body.get("date_upd"), lookups.timezone, "date_upd")
    created, created_checks = local_time(body.get("date_add"), lookups.timezone, "date_add")
    if not assembled.details:
        raise Unreadable("the order has no lines (no order_details)")
    lines = tuple(_line(row, lookups) for row in assembled.details)
    shipping = _shipping(body, assembled.order_carriers, lookups)
    state_id = str(body.get("current_state", ""))
    state = lookups.order_states.get(state_id)
    totals, checks = _totals(body, lines, shipping)
    addresses = assembled.addresses
    invoice = _address_row(addresses, body.get("id_address_invoice"), "invoice")
    delivery = _address_row(addresses, body.get("id_address_delivery"), "delivery")
    return Order(
        shop=shop,
        order_ref=ref,
        number=read_text(body.get("reference")) or ref,
        version=version,
        created_at=created,
        status=_status(state_id, lookups.special),
        payment_status=payment_status(state_id, state, lookups.special),
        currency=_currency(body.get("id_currency"), lookups),
        prices_include_tax=included,
        customer=_customer(assembled.customer, body, invoice),
        billing_address=_address(invoice, lookups),
        shipping_address=_address(delivery, lookups),
        lines=lines,
        shipping=shipping,
        payment=_payment(body, assembled.payments),
        totals=totals,
        note=read_text(body.get("note")),
        checks=(
            *version_checks,
            *created_checks,
            *_state_checks(state_id, state),
            *checks,
        ),
    )


def _status(state_id: str, special: Mapping[str, str]) -> OrderStatus:
    if state_id == special.get("PS_OS_CANCELED"):
        return "cancelled"
    if state_id in (special.get("PS_OS_DELIVERED"), special.get("PS_OS_REFUND")):
        return "closed"
    return "open"


def _state_checks(state_id: str, state: Row | None) -> tuple[str, ...]:
    if state is None:
        return (f"status: order state {state_id!r} is not among the shop's order states",)
    return ()


def _currency(currency_id: object, lookups: Lookups) -> str:
    row = lookups.currencies.get(str(currency_id))
    if row is None:
        raise Unreadable(f"currency id {currency_id!r} is not among the shop's currencies")
    return read_currency(row.get("iso_code"))


def _money(row: Row, key: str, where: str) -> Decimal:
    """PrestaShop's amounts have six decimals (``"24.200000"``): read as the cents they are."""
    return read_money(row.get(key), f"{where} {key}")


def _line(row: Row, lookups: Lookups) -> Line:
    ref = str(row.get("id"))
    name = read_text(row.get("product_name")) or ""
    where = f"line {ref} ({name})" if name else f"line {ref}"
    sku = read_text(row.get("product_reference"))
    if sku is None:
        raise Unreadable(f"{where} has no SKU (product_reference is empty)")
    quantity = read_quantity(_whole(row.get("product_quantity")), where)
    excl = _money(row, "total_price_tax_excl", where)
    incl = _money(row, "total_price_tax_incl", where)
    unit = _money(row, "product_price", where)
    discount = quantity * unit - excl
    if discount < 0:  # a price raised after the catalogue's (a manual edit): no discount
        unit, discount = per_unit(excl, quantity), Decimal(0)
    return Line(
        line_ref=ref,
        sku=sku,
        name=name,
        quantity=quantity,
        unit_price=_cents_or_more(unit),
        discount=_cents_or_more(discount),
        tax_rate=_rate(row, lookups, where),
        tax=incl - excl,
        total=incl,
    )


def _whole(value: object) -> object:
    """``"2"`` (every Webservice value is text) as 2; anything else as it is."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def _cents_or_more(amount: Decimal) -> Decimal:
    """``"10.000000"`` is 10.00; ``16.486667`` keeps its six decimals."""
    return amount.quantize(_CENT) if amount == amount.quantize(_CENT) else amount.normalize()


def _rate(row: Row, lookups: Lookups, where: str) -> Decimal:
    associations = read_dict(row.get("associations") or {}, f"{where} associations")
    rate = Decimal(0)
    for item in read_list(associations.get("taxes", []), f"{where} taxes"):
        tax_id = str(read_dict(item, f"{where} taxes[]").get("id"))
        tax = lookups.taxes.get(tax_id)
        if tax is None:
            raise Unreadable(f"{where}: tax {tax_id!r} is not among the shop's taxes")
        rate += read_money(tax.get("rate"), f"tax {tax_id} rate")
    return rate.normalize() if rate else Decimal(0)


def _shipping(body: Row, carriers: Sequence[Row], lookups: Lookups) -> tuple[ShippingLine, ...]:
    rate = read_money(body.get("carrier_tax_rate") or "0", "carrier_tax_rate")
    rate = rate.normalize() if rate else Decimal(0)
    if not carriers:
        excl = _money(body, "total_shipping_tax_excl", "order")
        incl = _money(body, "total_shipping_tax_incl", "order")
        if excl == 0 and incl == 0:
            return ()
        name = _carrier_name(body.get("id_carrier"), lookups)
        return (ShippingLine(name, _cents_or_more(excl), rate, incl - excl),)
    lines = []
    for row in carriers:
        where = f"order carrier {row.get('id')}"
        excl = _money(row, "shipping_cost_tax_excl", where)
        incl = _money(row, "shipping_cost_tax_incl", where)
        name = _carrier_name(row.get("id_carrier"), lookups)
        lines.append(ShippingLine(name, _cents_or_more(excl), rate, incl - excl))
    return tuple(lines)


def _carrier_name(carrier_id: object, lookups: Lookups) -> str | None:
    carrier = lookups.carriers.get(str(carrier_id))
    return read_text(carrier.get("name")) if carrier is not None else None


def _totals(
    body: Row, lines: tuple[Line, ...], shipping: tuple[ShippingLine, ...]
) -> tuple[Totals, list[str]]:
    voucher = _money(body, "total_discounts_tax_excl", "order")
    voucher_incl = _money(body, "total_discounts_tax_incl", "order")
    paid_incl = _money(body, "total_paid_tax_incl", "order")
    paid_excl = _money(body, "total_paid_tax_excl", "order")
    totals = Totals(
        subtotal=sum((line.quantity * line.unit_price for line in lines), Decimal(0)),
        discount=sum((line.discount for line in lines), voucher),
        shipping=sum((line.price for line in shipping), Decimal(0)),
        tax=paid_incl - paid_excl,
        total=paid_incl,
    )
    checks = []
    if voucher or voucher_incl:
        checks.append(
            f"discount: {money_text(voucher)} ex tax ({money_text(voucher_incl)} incl.) of "
            "cart rules is on the order, not on its lines"
        )
    taxes = [line.tax for line in lines] + [line.tax for line in shipping]
    found_tax = sum(taxes, voucher - voucher_incl)
    found_total = totals.subtotal - totals.discount + totals.shipping + totals.tax
    if abs(found_tax - totals.tax) > _CENT:
        checks.append(
            f"tax: the lines, shipping and cart rules add up to {money_text(found_tax)}, "
            f"the order says {money_text(totals.tax)}"
        )
    if abs(found_total - totals.total) > _CENT:
        checks.append(
            f"total: subtotal - discount + shipping + tax = {money_text(found_total)}, "
            f"the order says {money_text(totals.total)}"
        )
    return totals, checks


def _address_row(addresses: Mapping[str, Row], address_id: object, what: str) -> Row | None:
    if str(address_id) in ("", "0", "None"):
        return None
    row = addresses.get(str(address_id))
    if row is None:
        raise Unreadable(f"{what} address {address_id!r} of the order is not in the shop")
    return row


def _customer(person: Row | None, body: Row, invoice: Row | None) -> Customer:
    if person is None:
        raise Unreadable(f"customer {body.get('id_customer')!r} of the order is not in the shop")
    address = invoice or {}
    guest = str(person.get("is_guest")) == "1"
    return Customer(
        email=read_text(person.get("email")),
        shop_customer_id=None if guest else str(person.get("id")),
        first_name=read_text(person.get("firstname")) or read_text(address.get("firstname")),
        last_name=read_text(person.get("lastname")) or read_text(address.get("lastname")),
        company=read_text(address.get("company")) or read_text(person.get("company")),
        tax_id=read_text(address.get("vat_number")) or read_text(address.get("dni")),
        phone=read_text(address.get("phone")) or read_text(address.get("phone_mobile")),
    )


def _address(row: Row | None, lookups: Lookups) -> Address | None:
    if row is None:
        return None
    names = [read_text(row.get(key)) for key in ("firstname", "lastname")]
    return Address(
        name=" ".join(name for name in names if name) or None,
        line1=read_text(row.get("address1")),
        line2=read_text(row.get("address2")),
        city=read_text(row.get("city")),
        postcode=read_text(row.get("postcode")),
        region=_region(row.get("id_state"), lookups),
        country=_country(row.get("id_country"), lookups, f"address {row.get('id')}"),
    )


def _region(state_id: object, lookups: Lookups) -> str | None:
    state = lookups.states.get(str(state_id))
    return read_text(state.get("iso_code")) if state is not None else None


def _country(country_id: object, lookups: Lookups, where: str) -> str:
    country = lookups.countries.get(str(country_id))
    code = read_text(country.get("iso_code")) if country is not None else None
    if code is None:
        raise Unreadable(f"{where}: country {country_id!r} is not among the shop's countries")
    return code


def _payment(body: Row, payments: Sequence[Row]) -> Payment:
    transactions = [read_text(row.get("transaction_id")) for row in payments]
    return Payment(
        method=read_text(body.get("payment")),
        gateway=read_text(body.get("module")),
        transaction_ref=", ".join(ref for ref in transactions if ref) or None,
    )
