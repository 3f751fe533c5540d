"""The rules every shop sink plans its writes by (relay/sinks/shop.py), and where shops differ."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from relay.model import SinkResult, Status
from relay.sinks.shop import Invalid, Price, Rules, Stock, one_warehouse_each
from tests.sims import event, price, stock

# As the four sinks build them (see each sink's __init__).
SHOPIFY = Rules(
    "Shopify",
    fractions="refuse",
    oversold="zero",
    places={"MAD": "loc-1", "BCN": "loc-2"},
    place="a Shopify location",
)
MAGENTO = Rules("Magento", fractions="keep", oversold="zero")
PRESTASHOP = Rules(
    "PrestaShop",
    fractions="floor",
    oversold="keep",
    warehouse="MAD",
    currency="EUR",
    negative_prices=True,
)
WOOCOMMERCE = Rules(
    "WooCommerce", fractions="floor", oversold="keep", warehouse="MAD", any_list_when_unset=True
)


def test_other_entities_deletes_and_missing_skus_are_never_written() -> None:
    for rules in (SHOPIFY, MAGENTO, PRESTASHOP, WOOCOMMERCE):
        assert rules.plan(event("product", {"sku": "TEE"})) == SinkResult(
            Status.SKIPPED, f"the {rules.shop} sink does not write product"
        )
        deleted = rules.plan(event("stock", {"sku": "TEE", "warehouse": "MAD"}, op="delete"))
        assert isinstance(deleted, SinkResult) and deleted.status is Status.SKIPPED
        assert rules.plan(stock("", 1)) == SinkResult(Status.DEAD, "stock /MAD: no sku")
        assert rules.plan(price("TEE", "1.00")) == Price("TEE", Decimal("1.00"), "1.00")


@pytest.mark.parametrize(
    ("rules", "on_hand", "expected"),
    [
        (SHOPIFY, 7, 7),
        (SHOPIFY, 7.0, 7),
        (SHOPIFY, -3, 0),
        (SHOPIFY, 2.5, "on_hand 2.5 is not a whole number (Shopify counts units)"),
        (MAGENTO, 2.5, 2.5),
        (MAGENTO, -2.5, 0),
        (PRESTASHOP, 4.7, 4),
        (PRESTASHOP, -2.5, -3),
        (WOOCOMMERCE, 7.9, 7),
        (WOOCOMMERCE, -2, -2),
        (MAGENTO, "many", "on_hand 'many' is not a number"),
        (PRESTASHOP, True, "on_hand True is not a number"),
        (WOOCOMMERCE, float("nan"), "on_hand nan is not a number"),
        (SHOPIFY, float("inf"), "on_hand inf is not a number"),
    ],
)
def test_each_shop_counts_units_its_own_way(
    rules: Rules, on_hand: Any, expected: float | str
) -> None:
    if isinstance(expected, str):
        with pytest.raises(Invalid) as raised:
            rules.quantity(on_hand)
        assert str(raised.value) == expected
    else:
        quantity = rules.quantity(on_hand)
        assert (quantity, type(quantity)) == (expected, type(expected))


def test_a_bad_price_is_dead_and_a_negative_one_only_where_the_shop_judges_it() -> None:
    assert SHOPIFY.plan(price("TEE", "-1")) == SinkResult(
        Status.DEAD, "TEE: price '-1' is not a non-negative decimal amount"
    )
    assert SHOPIFY.plan(price("TEE", "cheap")) == SinkResult(
        Status.DEAD, "TEE: price 'cheap' is not a non-negative decimal amount"
    )
    assert PRESTASHOP.plan(price("TEE", "-4.00")) == Price("TEE", Decimal("-4.00"), "-4.00")
    assert PRESTASHOP.plan(price("TEE", "NaN")) == SinkResult(
        Status.DEAD, "TEE: price 'NaN' is not a decimal amount"
    )
    assert WOOCOMMERCE.plan(price("TEE", "007.50")) == Price("TEE", Decimal("7.50"), "007.50")


def test_warehouses_one_a_mapping_or_each_its_own_source() -> None:
    assert SHOPIFY.plan(stock("TEE", 3, "BCN")) == Stock("TEE", "loc-2", 3)
    assert SHOPIFY.plan(stock("TEE", 3, "LIS")) == SinkResult(
        Status.SKIPPED, "TEE: warehouse LIS is not mapped to a Shopify location"
    )
    assert MAGENTO.plan(stock("TEE", 3, "LIS")) == Stock("TEE", "LIS", 3)
    assert WOOCOMMERCE.plan(stock("TEE", 3)) == Stock("TEE", "MAD", 3)
    assert PRESTASHOP.plan(stock("TEE", 3, "BCN")) == SinkResult(
        Status.SKIPPED, "TEE: warehouse 'BCN' is not the shop's ('MAD')"
    )
    with pytest.raises(ValueError, match="one warehouse or a mapping"):
        Rules("Both", fractions="keep", oversold="keep", warehouse="MAD", places={"MAD": "x"})


def test_two_warehouses_on_one_place_are_a_config_error() -> None:
    assert one_warehouse_each({"MAD": "a", "BCN": "b"}) == {"MAD": "a", "BCN": "b"}
    with pytest.raises(ValueError, match=r"^a is mapped from more than one warehouse"):
        one_warehouse_each({"MAD": "a", "BCN": "a", "LIS": "b"})


@pytest.mark.parametrize(
    ("wanted", "any_list", "event_list", "taken"),
    [
        (None, False, None, True),
        (None, False, "", True),
        (None, False, "RETAIL", False),
        ("RETAIL", False, "RETAIL", True),
        ("RETAIL", False, None, False),
        ("RETAIL", True, "WHOLESALE", False),
        (None, True, "WHOLESALE", True),  # WooCommerce: unset takes every list
    ],
)
def test_the_price_list_filter(
    wanted: str | None, any_list: bool, event_list: str | None, taken: bool
) -> None:
    rules = Rules(
        "Shop", fractions="keep", oversold="keep", price_list=wanted, any_list_when_unset=any_list
    )
    planned = rules.plan(price("TEE", "1.00", price_list=event_list))
    assert isinstance(planned, Price) is taken
    if not taken:
        assert planned == SinkResult(
            Status.SKIPPED,
            f"TEE: price list {event_list} is not the one this shop sells at ({wanted})",
        )


def test_a_currency_the_shop_does_not_sell_in_is_skipped() -> None:
    assert isinstance(PRESTASHOP.plan(price("TEE", "1.00", currency="EUR")), Price)
    assert PRESTASHOP.plan(price("TEE", "1.00", currency="USD")) == SinkResult(
        Status.SKIPPED, "TEE: currency 'USD' is not the shop's ('EUR')"
    )
    assert isinstance(SHOPIFY.plan(price("TEE", "1.00", currency="USD")), Price)
