"""The PrestaShop order mapping (issue 14): an order assembled from the Webservice's
resources becomes the canonical order, with figures worked out by hand.

The fixtures (tests/fixtures/prestashop/, see its README) are written from PrestaShop 8's
documented Webservice shapes, not captured. The arithmetic behind each expected figure is in
the comments; no expected value is computed by the code under test.
"""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.intake.order import (
    Address,
    Customer,
    Line,
    Order,
    Payment,
    ShippingLine,
    Totals,
    Unreadable,
)
from relay.intake.outcome import Unmappable
from relay.intake.prestashop import (
    Assembled,
    Lookups,
    by_id,
    list_rows,
    local_time,
    map_order,
    one_row,
    without_secrets,
)

FIXTURES = Path(__file__).parent / "fixtures" / "prestashop"
SHOP = "prestashop-es"
NAMES = ["paid_card_two_addresses", "guest_cash_on_delivery_voucher", "cancelled_usd_new_york"]


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))
    return loaded


def lookups_of(doc: dict[str, Any]) -> Lookups:
    timezone, special = Lookups.configuration(list_rows(doc["configurations"], "configurations"))
    return Lookups(
        timezone=timezone,
        special=special,
        **{
            plural: by_id(list_rows(doc[plural], plural))
            for plural in ("order_states", "currencies", "taxes", "countries", "states", "carriers")
        },
    )


def assembled_of(doc: dict[str, Any]) -> Assembled:
    return Assembled(
        order=one_row(doc["order"], "order"),
        details=list_rows(doc["order_details"], "order_details"),
        customer=one_row(doc["customer"], "customer"),
        addresses=by_id(list_rows(doc["addresses"], "addresses")),
        payments=list_rows(doc["order_payments"], "order_payments"),
        order_carriers=list_rows(doc["order_carriers"], "order_carriers"),
    )


def mapped(doc: dict[str, Any]) -> Order | Unmappable:
    result = map_order(SHOP, assembled_of(doc), lookups_of(doc))
    assert isinstance(result, Order | Unmappable), result
    return result


def order(name: str) -> Order:
    result = mapped(fixture(name))
    assert isinstance(result, Order), result
    return result


def test_every_fixture_is_tested() -> None:
    assert {path.stem for path in FIXTURES.glob("*.json")} == set(NAMES)


def test_paid_card_order_with_two_addresses() -> None:
    got = order("paid_card_two_addresses")
    assert got.order_ref == "32"  # the id, not the reference split orders share
    assert got.number == "XKBKNABJK"
    # Europe/Madrid in November is +01:00: 13:00:00 local is 12:00:00 UTC.
    assert got.version == datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert got.created_at == datetime(2026, 11, 23, 11, 59, 2, tzinfo=UTC)
    assert (got.status, got.payment_status, got.currency) == ("open", "paid", "EUR")
    assert got.prices_include_tax is False
    assert got.customer == Customer(
        email="ana@example.com",
        shop_customer_id="7",
        first_name="Ana",
        last_name="García",
        company=None,
        tax_id="12345678Z",  # the invoice address's dni (no vat_number)
        phone="600111222",  # phone empty: phone_mobile
    )
    assert got.billing_address == Address(
        "Ana García", "Calle Mayor 1", "3º B", "Madrid", "28013", "M", "ES"
    )
    assert got.shipping_address == Address(
        "Ana García", "Paseo de la Castellana 200", None, "Madrid", "28046", "M", "ES"
    )
    assert got.lines == (
        # 2 x 10.00 = 20.00 ex tax; 24.20 - 20.00 = 4.20 tax at 21 %.
        Line("11", "MUG", "Taza", 2, Decimal("10.00"), Decimal("0.00"), Decimal(21),
             Decimal("4.20"), Decimal("24.20")),
        # product_price 20.00 before the 10 % reduction: charged 18.00 ex tax, so the
        # discount is 1 x 20.00 - 18.00 = 2.00; tax 21.78 - 18.00 = 3.78.
        Line("12", "TEE-M", "Camiseta - Talla: M", 1, Decimal("20.00"), Decimal("2.00"),
             Decimal(21), Decimal("3.78"), Decimal("21.78")),
    )  # fmt: skip
    # 5.00 incl., 4.13 ex tax: 0.87 tax at the carrier's 21 %.
    assert got.shipping == (
        ShippingLine("Mensajería 24h", Decimal("4.13"), Decimal(21), Decimal("0.87")),
    )
    assert got.payment == Payment("Tarjeta", "stripe_official", "pi_3QAbcDEF12345")
    # subtotal 20.00 + 20.00 = 40.00; discount 2.00; tax 50.98 - 42.13 = 8.85
    # (= 4.20 + 3.78 + 0.87); 40.00 - 2.00 + 4.13 + 8.85 = 50.98.
    assert got.totals == Totals(
        Decimal("40.00"), Decimal("2.00"), Decimal("4.13"), Decimal("8.85"), Decimal("50.98")
    )
    assert got.note is None
    assert got.checks == ()
    data = got.to_data()
    assert data["lines"][0]["unit_price"] == "10.00"
    assert data["lines"][1]["tax_rate"] == "21"
    assert data["version"] == "2026-11-23T12:00:00Z"


def test_guest_cash_on_delivery_with_a_voucher() -> None:
    got = order("guest_cash_on_delivery_voucher")
    assert got.order_ref == "33"
    # Europe/Madrid in July is +02:00.
    assert got.version == datetime(2026, 7, 1, 8, 0, 5, tzinfo=UTC)
    # Cash on delivery awaiting validation (PS_OS_COD_VALIDATION, not flagged paid).
    assert (got.status, got.payment_status) == ("open", "authorized")
    assert got.customer == Customer(
        email="luis@example.org",
        shop_customer_id=None,  # is_guest 1
        first_name="Luis",
        last_name="Pérez",
        company="Librería Sol SL",
        tax_id="ESB12345678",  # vat_number first
        phone="655333444",
    )
    assert got.billing_address == got.shipping_address  # one address for both
    assert got.billing_address is not None and got.billing_address.region is None  # id_state 0
    # 3 x 15.00 = 45.00 ex tax, 46.80 incl.: 1.80 tax at 4 %.
    assert got.lines == (
        Line("14", "BOOK-COCINA", "Libro de cocina", 3, Decimal("15.00"), Decimal("0.00"),
             Decimal(4), Decimal("1.80"), Decimal("46.80")),
    )  # fmt: skip
    assert got.shipping == (
        ShippingLine("Recogida en tienda", Decimal("0.00"), Decimal(0), Decimal("0.00")),
    )
    assert got.payment == Payment("Pago contra reembolso", "ps_cashondelivery", None)
    # The cart rule, 5.00 ex tax (5.20 incl.), is in the discount: 45.00 - 5.00 + 0 + 1.60
    # = 41.60, the tax 41.60 - 40.00 = 1.60 = 1.80 on the line - 0.20 of the voucher.
    assert got.totals == Totals(
        Decimal("45.00"), Decimal("5.00"), Decimal("0.00"), Decimal("1.60"), Decimal("41.60")
    )
    assert got.note == "Entregar por la tarde"
    assert got.checks == (
        "discount: 5.00 ex tax (5.20 incl.) of cart rules is on the order, not on its lines",
    )


def test_cancelled_order_of_a_shop_in_new_york_in_the_repeated_hour() -> None:
    got = order("cancelled_usd_new_york")
    # 1 November 2026 01:30 in New York happened twice (EDT -04:00, then EST -05:00): the
    # first is 05:30 UTC. date_add 31 October 18:20 EDT is 22:20 UTC.
    assert got.version == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert got.created_at == datetime(2026, 10, 31, 22, 20, tzinfo=UTC)
    assert (got.status, got.payment_status, got.currency) == ("cancelled", "voided", "USD")
    assert got.billing_address == Address(
        "John Smith", "350 Fifth Avenue", "Floor 21", "New York", "10118", "NY", "US"
    )
    assert got.customer.phone == "+12125550100"
    assert got.customer.tax_id is None
    # 4 x 12.50 = 50.00 ex tax, 55.00 incl.: 5.00 at 10 %.
    assert got.lines[0].tax == Decimal("5.00")
    assert got.lines[0].tax_rate == Decimal(10)
    # No order_carriers row: the order's own 5.50 ex tax, 6.05 incl.
    assert got.shipping == (
        ShippingLine("Mensajería 24h", Decimal("5.50"), Decimal(10), Decimal("0.55")),
    )
    # 50.00 + 5.50 + 5.55 = 61.05.
    assert got.totals == Totals(
        Decimal("50.00"), Decimal("0.00"), Decimal("5.50"), Decimal("5.55"), Decimal("61.05")
    )
    assert got.checks == (
        "date_upd: 2026-11-01 01:30:00 happened twice in America/New_York (the clock went "
        "back): read as the first, 2026-11-01T05:30:00Z",
    )


@pytest.mark.parametrize(
    ("state", "status", "payment"),
    [
        ("1", "open", "pending"),  # awaiting cheque
        ("2", "open", "paid"),
        ("4", "open", "paid"),  # shipped
        ("5", "closed", "paid"),  # PS_OS_DELIVERED
        ("6", "cancelled", "voided"),  # PS_OS_CANCELED
        ("7", "closed", "refunded"),  # PS_OS_REFUND (flagged paid too: refund first)
        ("8", "open", "voided"),  # PS_OS_ERROR
        ("13", "open", "authorized"),  # PS_OS_COD_VALIDATION
    ],
)
def test_status_and_payment_from_the_current_state(state: str, status: str, payment: str) -> None:
    doc = fixture("paid_card_two_addresses")
    doc["order"]["order"]["current_state"] = state
    got = mapped(doc)
    assert isinstance(got, Order)
    assert (got.status, got.payment_status) == (status, payment)


def test_an_unknown_state_is_pending_and_said() -> None:
    doc = fixture("paid_card_two_addresses")
    doc["order"]["order"]["current_state"] = "99"
    got = mapped(doc)
    assert isinstance(got, Order)
    assert got.payment_status == "pending"
    assert got.checks == ("status: order state '99' is not among the shop's order states",)


def test_the_customers_password_hash_and_secure_key_are_never_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in NAMES:
        doc = fixture(name)
        secrets = {doc["customer"]["customer"]["passwd"], doc["customer"]["customer"]["secure_key"]}
        secrets.add(doc["order"]["order"]["secure_key"])
        assembled = assembled_of(doc)
        assert "passwd" not in (assembled.customer or {})
        assert "secure_key" not in (assembled.customer or {})
        assert "secure_key" not in assembled.order
        result = map_order(SHOP, assembled, lookups_of(doc))
        text = orjson.dumps(result.to_data() if isinstance(result, Order) else {}).decode()
        kept = text + repr(assembled) + repr(result) + caplog.text
        assert not [secret for secret in secrets if secret in kept]
    assert without_secrets({"passwd": "x", "secure_key": "y", "email": "e"}) == {"email": "e"}


def test_an_empty_list_answer_is_no_rows() -> None:
    assert list_rows([], "order_payments") == []
    assert list_rows({"orders": [{"id": 1}]}, "orders") == [{"id": 1}]


def test_local_time_in_the_spring_gap_and_a_bad_stamp() -> None:
    zone = Lookups.configuration([{"name": "PS_TIMEZONE", "value": "Europe/Madrid"}])[0]
    # 29 March 2026 02:30 does not exist in Madrid; read with the offset before (+01:00).
    assert local_time("2026-03-29 02:30:00", zone, "date_upd") == (
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        [],
    )
    got = mapped(_with(order={"date_upd": "0000-00-00 00:00:00"}))
    assert got == Unmappable(
        "date_upd is not a time (YYYY-MM-DD HH:MM:SS): '0000-00-00 00:00:00'", "32"
    )


def _with(**changes: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(fixture("paid_card_two_addresses"))
    for part, values in changes.items():
        doc[part][part].update(values)
    return doc


def _detail(doc: dict[str, Any], **values: Any) -> dict[str, Any]:
    doc["order_details"]["order_details"][1].update(values)
    return doc


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (
            _detail(fixture("paid_card_two_addresses"), product_reference=""),
            "line 12 (Camiseta - Talla: M) has no SKU (product_reference is empty)",
        ),
        (
            _detail(fixture("paid_card_two_addresses"), product_quantity="0"),
            "line 12 (Camiseta - Talla: M): quantity 0 is not a positive whole number",
        ),
        (
            _detail(fixture("paid_card_two_addresses"), total_price_tax_incl="n/a"),
            "line 12 (Camiseta - Talla: M) total_price_tax_incl is not an amount: 'n/a'",
        ),
        (
            _detail(fixture("paid_card_two_addresses"), associations={"taxes": [{"id": "77"}]}),
            "line 12 (Camiseta - Talla: M): tax '77' is not among the shop's taxes",
        ),
        (
            _with(order={"id_currency": "9"}),
            "currency id '9' is not among the shop's currencies",
        ),
        (
            _with(order={"id_address_delivery": "99"}),
            "delivery address '99' of the order is not in the shop",
        ),
    ],
)
def test_what_cannot_be_mapped_says_why(doc: dict[str, Any], reason: str) -> None:
    assert mapped(doc) == Unmappable(reason, "32")


def test_a_currency_outside_iso_4217() -> None:
    doc = fixture("paid_card_two_addresses")
    doc["currencies"]["currencies"][0]["iso_code"] = "EURO"
    assert mapped(doc) == Unmappable("unknown currency 'EURO' (not an ISO 4217 code)", "32")


def test_no_lines_no_customer_no_country_and_not_an_order() -> None:
    doc = fixture("paid_card_two_addresses")
    doc["order_details"] = []
    assert mapped(doc) == Unmappable("the order has no lines (no order_details)", "32")
    doc = fixture("paid_card_two_addresses")
    assembled = assembled_of(doc)
    no_customer = Assembled(assembled.order, assembled.details, None, assembled.addresses)
    assert map_order(SHOP, no_customer, lookups_of(doc)) == Unmappable(
        "customer '7' of the order is not in the shop", "32"
    )
    doc["countries"] = []
    assert mapped(doc) == Unmappable(
        "address 11: country '6' is not among the shop's countries", "32"
    )
    doc = fixture("paid_card_two_addresses")
    doc["order"]["order"]["id"] = "x"
    assert mapped(doc) == Unmappable("not a PrestaShop order: id is 'x', not a positive id")


def test_a_bad_time_zone_is_unreadable() -> None:
    with pytest.raises(Unreadable, match="PS_TIMEZONE 'Mars/Olympus' is not a time zone"):
        Lookups.configuration([{"name": "PS_TIMEZONE", "value": "Mars/Olympus"}])
