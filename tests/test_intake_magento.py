"""The Magento 2 order mapping (issue 14): the order entity of ``V1/orders`` becomes the
canonical order, with figures worked out by hand.

The fixtures (tests/fixtures/magento/, see its README) are written from Adobe Commerce's
documented REST shapes, not captured. The arithmetic behind each expected figure is in the
comments; no expected value is computed by the code under test.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from relay.intake.magento import map_order, read_time
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

FIXTURES = Path(__file__).parent / "fixtures" / "magento"
SHOP = "magento-eu"
NAMES = [
    "configurable_coupon_paid_card",
    "guest_virtual_checkmo_pending",
    "prices_incl_tax_coupon_canceled",
]


def entity(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))
    found: dict[str, Any] = loaded["order"]
    return found


def order(name: str, **changes: Any) -> Order:
    body = entity(name) | changes
    result = map_order(SHOP, body)
    assert isinstance(result, Order), result
    return result


def test_every_fixture_is_tested() -> None:
    assert {path.stem for path in FIXTURES.glob("*.json")} == set(NAMES)


def test_configurable_and_coupon_paid_by_card() -> None:
    got = order("configurable_coupon_paid_card")
    assert (got.order_ref, got.number) == ("17", "000000017")
    assert got.version == datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)  # naive UTC
    assert got.created_at == datetime(2026, 11, 23, 11, 59, 2, tzinfo=UTC)
    assert (got.status, got.payment_status, got.currency) == ("open", "paid", "EUR")
    assert got.customer == Customer(
        "ana@example.com", "5", "Ana", "García", None, "12345678Z", "600111222"
    )
    assert got.billing_address == Address(
        "Ana García", "Calle Mayor 1", "3º B", "Madrid", "28013", "M", "ES"
    )
    assert got.shipping_address == Address(
        "Ana García", "Paseo de la Castellana 200", None, "Madrid", "28046", "M", "ES"
    )
    assert got.lines == (
        # The configurable parent (item 31): 2 x 20.00 = 40.00, tax 8.40 at 21 %: 48.40.
        # Its child (item 32, parent_item_id 31, price 0) is left out.
        Line("31", "TEE-M", "Camiseta", 2, Decimal("20.00"), Decimal("0.00"), Decimal(21),
             Decimal("8.40"), Decimal("48.40")),
        # 10.00 - the 1.00 coupon = 9.00, tax 21 % of it 1.89: 10.89.
        Line("33", "MUG", "Taza", 1, Decimal("10.00"), Decimal("1.00"), Decimal(21),
             Decimal("1.89"), Decimal("10.89")),
    )  # fmt: skip
    # 1.05 / 5.00 = 21 %.
    assert got.shipping == (
        ShippingLine("Flat Rate - Fixed", Decimal("5.00"), Decimal(21), Decimal("1.05")),
    )
    assert got.payment == Payment("Credit Card", "braintree", "8xk2m3")
    # 50.00 - 1.00 + 5.00 + 11.34 (8.40 + 1.89 + 1.05) = 65.34.
    assert got.totals == Totals(
        Decimal("50.00"), Decimal("1.00"), Decimal("5.00"), Decimal("11.34"), Decimal("65.34")
    )
    assert got.checks == ()
    assert got.to_data()["lines"][1]["tax"] == "1.89"


def test_guest_virtual_order_awaiting_a_cheque() -> None:
    got = order("guest_virtual_checkmo_pending")
    assert (got.status, got.payment_status) == ("open", "pending")
    assert got.customer == Customer(
        email="luis@example.org",
        shop_customer_id=None,  # customer_is_guest 1, no customer_id
        first_name="Luis",  # no customer_firstname: the billing address's
        last_name="Pérez",
        company="Librería Sol SL",
        tax_id="ESB12345678",  # no customer_taxvat: the billing vat_id
        phone="655333444",
    )
    assert got.shipping_address is None  # virtual: no shipping assignment
    assert got.shipping == ()
    # 3 x 15.00 = 45.00, tax 10 % 4.50: 49.50.
    assert got.lines == (
        Line("40", "EBOOK-VINOS", "Guía de vinos (PDF)", 3, Decimal("15.00"), Decimal("0.00"),
             Decimal(10), Decimal("4.50"), Decimal("49.50")),
    )  # fmt: skip
    assert got.totals == Totals(
        Decimal("45.00"), Decimal("0.00"), Decimal("0.00"), Decimal("4.50"), Decimal("49.50")
    )
    assert got.payment == Payment("Check / Money order", "checkmo", None)
    assert got.note == "Factura a nombre de la empresa, por favor"
    assert got.checks == ()


def test_prices_incl_tax_coupon_then_cancelled() -> None:
    got = order("prices_incl_tax_coupon_canceled")
    assert (got.status, got.payment_status) == ("cancelled", "voided")
    # The coupon took 10 % of 121.00 incl. tax = 12.10, of which 2.10 was tax
    # (discount_tax_compensation_amount): 10.00 ex tax. Tax 21 % of 90.00 = 18.90.
    # Charged 100.00 - 12.10 + 18.90 + 2.10 = 108.90 (= 121.00 - 12.10).
    assert got.lines == (
        Line("50", "LAMP-01", "Lámpara", 1, Decimal("100.00"), Decimal("10.00"), Decimal(21),
             Decimal("18.90"), Decimal("108.90")),
    )  # fmt: skip
    # 100.00 - 10.00 + 5.00 + 19.95 (18.90 + 1.05) = 114.95.
    assert got.totals == Totals(
        Decimal("100.00"), Decimal("10.00"), Decimal("5.00"), Decimal("19.95"), Decimal("114.95")
    )
    assert got.checks == ()


@pytest.mark.parametrize(
    ("changes", "status", "payment"),
    [
        ({"state": "complete"}, "closed", "paid"),
        ({"state": "closed", "total_refunded": 65.34}, "closed", "refunded"),
        ({"total_refunded": 10}, "open", "partially_refunded"),
        ({"state": "holded"}, "open", "paid"),
        ({"state": "pending_payment", "total_paid": None, "total_due": 65.34}, "open", "pending"),
        # Processing but nothing captured yet (an authorization, cash on delivery).
        ({"total_paid": None, "total_due": 65.34}, "open", "authorized"),
        ({"state": "payment_review", "total_paid": 20, "total_due": 45.34}, "open", "pending"),
    ],
)
def test_status_and_payment_from_state_and_totals(
    changes: dict[str, Any], status: str, payment: str
) -> None:
    body = {
        key: value
        for key, value in (entity("configurable_coupon_paid_card") | changes).items()
        if value is not None
    }
    got = map_order(SHOP, body)
    assert isinstance(got, Order)
    assert (got.status, got.payment_status) == (status, payment)


def test_an_authorized_amount_is_authorized() -> None:
    body = entity("guest_virtual_checkmo_pending")
    body["payment"]["amount_authorized"] = 49.5
    got = map_order(SHOP, body)
    assert isinstance(got, Order) and got.payment_status == "authorized"


def test_an_unknown_state_is_open_and_said() -> None:
    got = order("configurable_coupon_paid_card", state="fraud_hold")
    assert got.status == "open"
    assert got.checks == ("status: unknown Magento state 'fraud_hold' read as open",)


def test_a_total_that_does_not_add_up_is_said() -> None:
    got = order("configurable_coupon_paid_card", grand_total=70)
    assert got.checks == (
        "total: subtotal - discount + shipping + tax = 65.34, the order says 70.00",
    )


def _item(name: str, index: int, **values: Any) -> dict[str, Any]:
    body = copy.deepcopy(entity(name))
    body["items"][index].update(values)
    return body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_item("configurable_coupon_paid_card", 2, sku=""), "item 33 (Taza) has no SKU"),
        (
            _item("configurable_coupon_paid_card", 2, qty_ordered=0),
            "item 33 (Taza): quantity 0 is not a positive whole number",
        ),
        (
            _item("configurable_coupon_paid_card", 2, tax_amount="lots"),
            "tax_amount is not an amount: 'lots'",
        ),
        (
            entity("configurable_coupon_paid_card") | {"order_currency_code": "XXY"},
            "unknown currency 'XXY' (not an ISO 4217 code)",
        ),
        (
            entity("configurable_coupon_paid_card") | {"updated_at": "2026-11-23T12:00:00Z"},
            "updated_at is not a time (YYYY-MM-DD HH:MM:SS, UTC): '2026-11-23T12:00:00Z'",
        ),
        (entity("configurable_coupon_paid_card") | {"items": []}, "the order has no items"),
        (
            entity("configurable_coupon_paid_card") | {"items": None},
            "items is not a list but null",
        ),
    ],
)
def test_what_cannot_be_mapped_says_why(body: dict[str, Any], reason: str) -> None:
    assert map_order(SHOP, body) == Unmappable(reason, "17")


def test_not_an_order() -> None:
    assert map_order(SHOP, []) == Unmappable("not a Magento order: the entity is a list")
    assert map_order(SHOP, {"entity_id": "17"}) == Unmappable(
        "not a Magento order: entity_id is '17', not a positive id"
    )


def test_read_time() -> None:
    assert read_time("2026-01-02 03:04:05", "t") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with pytest.raises(Unreadable):
        read_time(None, "t")
