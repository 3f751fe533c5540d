"""The WooCommerce order mapping and the inbound event identity (issue 14, first piece).

Every delivery captured from a real WooCommerce 9.9.5 (tests/fixtures/woocommerce/, copied
unchanged from the shared fixtures) is mapped, and its figures are checked against values
worked out by hand from the fixture's JSON: the arithmetic is in the comments, and no
expected value is computed by the code under test.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.intake.identity import NAMESPACE, digest, event_id, order_event_id
from relay.intake.order import Order
from relay.intake.woocommerce import (
    Draft,
    Gone,
    Mapped,
    Trashed,
    Unmappable,
    map_body,
    map_order,
    payment_status,
)

FIXTURES = Path(__file__).parent / "fixtures" / "woocommerce"
SHOP = "woo-main"


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))
    return loaded


def body(name: str) -> dict[str, Any]:
    """The order JSON of a delivery (its raw body) or of a REST GET (its body)."""
    loaded = fixture(name)
    parsed: dict[str, Any] = loaded["body"] if "body" in loaded else json.loads(loaded["raw_body"])
    return parsed


def delivered(name: str) -> Mapped:
    """A delivery mapped from its raw bytes, exactly as the intake will get them."""
    return map_body(SHOP, fixture(name)["raw_body"].encode())


def order(name: str) -> Order:
    mapped = delivered(name) if "rest_get" not in name else map_order(SHOP, body(name))
    assert isinstance(mapped, Order), mapped
    return mapped


def id_of(data: dict[str, Any]) -> uuid.UUID:
    return event_id(data["shop"], data["order_ref"], data["version"], digest(data))


# --- every delivery, by hand -------------------------------------------------------------

KIND = {
    "order_created_customer_variation": Order,
    "order_created_customer_variation.rest_get": Order,
    "order_created_guest_coupon_shipping": Order,
    "order_created_guest_coupon_shipping.rest_get": Order,
    "order_created_store_api_checkout": Order,
    "order_created_store_api_checkout.rest_get": Order,
    "order_deleted_trash": Trashed,
    "order_deleted_trash.rest_get": Trashed,
    "order_updated_after_create": Order,
    "order_updated_status_completed": Order,
    "order_updated_status_completed.rest_get": Order,
    "order_updated_status_processing": Order,
    "order_updated_status_processing.rest_get": Order,
    "order_updated_store_api_checkout": Order,
    "ping": Unmappable,
}


def test_every_fixture_maps_to_its_kind() -> None:
    """A fixture added later without a hand-worked test here fails this one."""
    names = {path.name.removesuffix(".json") for path in FIXTURES.glob("*.json")}
    assert names == set(KIND)
    for name, kind in KIND.items():
        mapped = map_order(SHOP, body(name)) if "rest_get" in name else delivered(name)
        assert isinstance(mapped, kind), (name, mapped)


def test_guest_order_with_coupon_and_shipping() -> None:
    data = order("order_created_guest_coupon_shipping").to_data()
    assert data["order_ref"] == "32"
    assert data["number"] == "32"
    # date_modified_gmt / date_created_gmt "2026-12-02T13:43:57" are UTC.
    assert data["version"] == "2026-12-02T13:43:57Z"
    assert data["created_at"] == "2026-12-02T13:43:57Z"
    # status pending, date_paid_gmt null, bank transfer: open and not paid yet.
    assert (data["status"], data["payment_status"]) == ("open", "pending")
    assert (data["currency"], data["prices_include_tax"]) == ("EUR", True)
    # customer_id 0: a guest; the billing fields give the rest, "" becomes null.
    assert data["customer"] == {
        "email": "luis.perez@example.com",
        "shop_customer_id": None,
        "first_name": "Luis",
        "last_name": "Pérez Núñez",
        "company": "Bodega Ñ S.L.",
        "tax_id": None,
        "phone": "954 000 000",
    }
    address = {
        "name": "Luis Pérez Núñez",
        "line1": "Avda. de la Constitución 7",
        "line2": None,
        "city": "Sevilla",
        "postcode": "41001",
        "region": "SE",
        "country": "ES",
    }
    assert data["billing_address"] == address
    assert data["shipping_address"] == address
    assert data["lines"] == [
        # Taza: 2 x, subtotal 20.00 -> unit 20.00 / 2 = 10.00; total 18.00 (the price
        # float 9 is after discount: not used); discount 20.00 - 18.00 = 2.00; tax 3.78;
        # charged 18.00 + 3.78 = 21.78.
        {
            "line_ref": "36",
            "sku": "DSACC-MUG",
            "name": "Taza",
            "quantity": 2,
            "unit_price": "10.00",
            "discount": "2.00",
            "tax_rate": "21",
            "tax": "3.78",
            "total": "21.78",
        },
        # Camiseta - L: 1 x 16.49; discount 16.49 - 14.84 = 1.65; tax 3.12 (the taxes
        # string "3.117025" is unrounded: not used); charged 14.84 + 3.12 = 17.96.
        {
            "line_ref": "37",
            "sku": "DSACC-TEE-L",
            "name": "Camiseta - L",
            "quantity": 1,
            "unit_price": "16.49",
            "discount": "1.65",
            "tax_rate": "21",
            "tax": "3.12",
            "total": "17.96",
        },
    ]
    # Shipping 4.95 ex tax, tax 1.04 (not the unrounded "1.0395"), rate 1 = 21 %.
    assert data["shipping"] == [
        {"method": "Envío estándar", "price": "4.95", "tax_rate": "21", "tax": "1.04"}
    ]
    assert data["payment"] == {
        "method": "Transferencia bancaria",
        "gateway": "bacs",
        "transaction_ref": None,
    }
    # subtotal 20.00 + 16.49 = 36.49; discount 3.65 (= 2.00 + 1.65); tax 3.78 + 3.12 + 1.04
    # = 7.94; total 36.49 - 3.65 + 4.95 + 7.94 = 45.73, as the shop says (and as charged:
    # 21.78 + 17.96 + 4.95 + 1.04 = 45.73). Nothing to flag.
    assert data["totals"] == {
        "subtotal": "36.49",
        "discount": "3.65",
        "shipping": "4.95",
        "tax": "7.94",
        "total": "45.73",
    }
    assert data["note"] is None
    assert data["checks"] == []


def test_the_same_order_set_processing_and_paid() -> None:
    data = order("order_updated_status_processing").to_data()
    # date_modified_gmt moved to 13:44:00; date_paid_gmt "2026-12-02T13:44:00" -> paid.
    assert data["version"] == "2026-12-02T13:44:00Z"
    assert data["created_at"] == "2026-12-02T13:43:57Z"
    assert (data["status"], data["payment_status"]) == ("open", "paid")
    assert data["totals"]["total"] == "45.73"


def test_registered_customer_variation_cash_on_delivery() -> None:
    data = order("order_created_customer_variation").to_data()
    assert (data["order_ref"], data["version"]) == ("34", "2026-12-02T13:44:04Z")
    # processing, date_paid_gmt null, cod: cash on delivery is authorized, not pending.
    assert (data["status"], data["payment_status"]) == ("open", "authorized")
    assert data["customer"]["shop_customer_id"] == "2"
    assert data["customer"]["email"] == "ana.dsacc@example.com"
    assert data["customer"]["company"] is None  # "" in the shop
    assert data["billing_address"]["line2"] == "2º B"
    # The variation's own SKU, not the parent's; 3 x, subtotal 49.46 -> 49.46 / 3 =
    # 16.48666..., to 6 decimals 16.486667; no coupon: 49.46 - 49.46 = 0.00; tax 10.39;
    # charged 49.46 + 10.39 = 59.85.
    assert data["lines"] == [
        {
            "line_ref": "43",
            "sku": "DSACC-TEE-M",
            "name": "Camiseta - M",
            "quantity": 3,
            "unit_price": "16.486667",
            "discount": "0.00",
            "tax_rate": "21",
            "tax": "10.39",
            "total": "59.85",
        }
    ]
    # 49.46 - 0.00 + 4.95 + 11.43 (= 10.39 + 1.04) = 65.84.
    assert data["totals"] == {
        "subtotal": "49.46",
        "discount": "0.00",
        "shipping": "4.95",
        "tax": "11.43",
        "total": "65.84",
    }
    assert data["payment"] == {
        "method": "Contra reembolso",
        "gateway": "cod",
        "transaction_ref": None,
    }
    assert data["checks"] == []


def test_completed_order_is_closed_and_paid() -> None:
    data = order("order_updated_status_completed").to_data()
    # status completed -> closed; set_paid stamped date_paid_gmt 13:44:07 -> paid.
    assert (data["status"], data["payment_status"]) == ("closed", "paid")
    assert data["version"] == "2026-12-02T13:44:07Z"
    assert data["created_at"] == "2026-12-02T13:44:04Z"


def test_store_api_checkout() -> None:
    data = order("order_created_store_api_checkout").to_data()
    assert (data["order_ref"], data["version"]) == ("35", "2026-12-02T13:44:11Z")
    # processing, unpaid, cod -> authorized; a guest again.
    assert (data["status"], data["payment_status"]) == ("open", "authorized")
    assert data["customer"]["shop_customer_id"] is None
    assert data["note"] == "Entregar por la mañana"
    assert data["payment"] == {
        "method": "Cash on delivery",
        "gateway": "cod",
        "transaction_ref": None,
    }
    # Té verde: 3 x, subtotal 19.81 -> 19.81 / 3 = 6.60333... -> 6.603333; discount
    # 19.81 - 17.83 = 1.98; tax 3.74; charged 17.83 + 3.74 = 21.57.
    # Camiseta - S: 16.49, discount 16.49 - 14.84 = 1.65, tax 3.12, 14.84 + 3.12 = 17.96.
    assert [
        (line["sku"], line["unit_price"], line["discount"], line["tax"], line["total"])
        for line in data["lines"]
    ] == [
        ("DSACC-TEA", "6.603333", "1.98", "3.74", "21.57"),
        ("DSACC-TEE-S", "16.49", "1.65", "3.12", "17.96"),
    ]
    # subtotal 19.81 + 16.49 = 36.30; discount 1.98 + 1.65 = 3.63 (= discount_total);
    # tax 3.74 + 3.12 + 1.04 = 7.90; 36.30 - 3.63 + 4.95 + 7.90 = 45.52.
    assert data["totals"] == {
        "subtotal": "36.30",
        "discount": "3.63",
        "shipping": "4.95",
        "tax": "7.90",
        "total": "45.52",
    }
    assert data["checks"] == []


def test_trash_deletion_is_recorded_not_mapped() -> None:
    # order.deleted for the trash: the body is {"id":34} only.
    assert delivered("order_deleted_trash") == Trashed("34")
    # Read back over REST, the same order says "status": "trash".
    assert map_order(SHOP, body("order_deleted_trash.rest_get")) == Trashed("34")


def test_ping_is_not_an_order() -> None:
    # webhook_id=17, form-encoded: the webhook handler answers it before any mapping.
    mapped = delivered("ping")
    assert isinstance(mapped, Unmappable)
    assert mapped.reason.startswith("body is not JSON")


def test_order_deleted_for_good_is_gone() -> None:
    # What WooCommerce builds for a delivery whose order was force-deleted meanwhile: the
    # REST controller's WP_Error, validly signed.
    error = (
        b'{"code":"woocommerce_rest_shop_order_invalid_id",'
        b'"message":"Invalid ID.","data":{"status":404}}'
    )
    assert map_body(SHOP, error) == Gone("woocommerce_rest_shop_order_invalid_id", "Invalid ID.")


def test_a_bad_request_error_is_not_gone() -> None:
    # "ID is invalid." with 400 is what an update of a wrong id answers: no order was lost.
    error = b'{"code":"woocommerce_rest_shop_order_invalid_id","message":"ID is invalid.",'
    error += b'"data":{"status":400}}'
    assert map_body(SHOP, error) == Unmappable(
        "a REST error body, not an order: woocommerce_rest_shop_order_invalid_id: ID is invalid."
    )


def test_line_price_and_unrounded_tax_strings_are_not_read() -> None:
    # The traps: price is a float after discount, taxes[].total/subtotal are unrounded.
    # Changing them changes nothing in the canonical order.
    trapped = copy.deepcopy(body("order_created_guest_coupon_shipping"))
    trapped["line_items"][1]["price"] = 999.99
    trapped["line_items"][1]["taxes"][0].update({"total": "3.9", "subtotal": "4.1"})
    trapped["shipping_lines"][0]["taxes"][0]["total"] = "1.1"
    mapped = map_order(SHOP, trapped)
    assert isinstance(mapped, Order)
    assert mapped == order("order_created_guest_coupon_shipping")


def test_prices_excluding_tax_read_the_same_figures() -> None:
    # Line totals and shipping are ex tax either way: only the flag differs.
    ex_tax = map_order(
        SHOP, body("order_created_guest_coupon_shipping") | {"prices_include_tax": False}
    )
    assert isinstance(ex_tax, Order)
    data = ex_tax.to_data()
    assert data["prices_include_tax"] is False
    assert data["lines"] == order("order_created_guest_coupon_shipping").to_data()["lines"]
    assert data["totals"]["total"] == "45.73"


def test_a_line_without_tax_has_rate_zero() -> None:
    # A zero-rated line: WooCommerce gives no taxes entry and total_tax "0.00".
    untaxed = with_line({"taxes": [], "total_tax": "0.00"}) | {
        "total_tax": "4.16",
        "total": "41.95",
    }
    mapped = map_order(SHOP, untaxed)
    assert isinstance(mapped, Order)
    line = mapped.to_data()["lines"][0]
    # 18.00 + 0.00 = 18.00 charged; tax 3.12 + 1.04 = 4.16; 36.49 - 3.65 + 4.95 + 4.16 = 41.95.
    assert (line["tax_rate"], line["tax"], line["total"]) == ("0", "0.00", "18.00")
    assert mapped.checks == ()


def test_abandoned_store_api_checkout_is_a_draft() -> None:
    draft = body("order_created_store_api_checkout") | {"status": "checkout-draft"}
    mapped = map_order(SHOP, draft)
    assert isinstance(mapped, Draft)
    assert mapped.order_ref == "35"
    assert mapped.version is not None
    assert mapped.version.isoformat() == "2026-12-02T13:44:11+00:00"


# --- identity ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("webhook", "rest"),
    [
        ("order_created_guest_coupon_shipping", "order_created_guest_coupon_shipping.rest_get"),
        ("order_updated_status_processing", "order_updated_status_processing.rest_get"),
        ("order_created_customer_variation", "order_created_customer_variation.rest_get"),
        ("order_updated_status_completed", "order_updated_status_completed.rest_get"),
        ("order_created_store_api_checkout", "order_created_store_api_checkout.rest_get"),
        # Same state delivered twice: order.created and order.updated of one create.
        ("order_updated_after_create", "order_created_guest_coupon_shipping.rest_get"),
        ("order_updated_store_api_checkout", "order_created_store_api_checkout.rest_get"),
    ],
)
def test_webhook_and_rest_get_of_one_state_share_the_id(webhook: str, rest: str) -> None:
    assert order_event_id(order(webhook)) == order_event_id(order(rest))


def test_each_state_of_an_order_has_its_own_id() -> None:
    ids = {
        order_event_id(order(name))
        for name in (
            "order_created_guest_coupon_shipping",
            "order_updated_status_processing",
            "order_created_customer_variation",
            "order_updated_status_completed",
            "order_created_store_api_checkout",
        )
    }
    assert len(ids) == 5


def test_two_states_within_one_second_get_different_ids() -> None:
    # Order 32 paid in the same second it was created: date_modified_gmt is shared.
    created = order("order_created_guest_coupon_shipping")
    paid_body = body("order_updated_status_processing") | {
        "date_modified_gmt": "2026-12-02T13:43:57"
    }
    paid = map_order(SHOP, paid_body)
    assert isinstance(paid, Order)
    assert paid.to_data()["version"] == created.to_data()["version"]
    assert digest(paid.to_data()) != digest(created.to_data())
    assert order_event_id(paid) != order_event_id(created)


def test_a_version_bump_alone_keeps_the_digest_but_not_the_id() -> None:
    # A meta write-back moves date_modified with no change of content (DESIGN.md).
    first = order("order_created_guest_coupon_shipping")
    bumped = map_order(
        SHOP,
        body("order_created_guest_coupon_shipping") | {"date_modified_gmt": "2026-12-02T13:50:00"},
    )
    assert isinstance(bumped, Order)
    assert digest(bumped.to_data()) == digest(first.to_data())
    assert order_event_id(bumped) != order_event_id(first)


def test_namespace_and_join_are_what_the_docstring_says() -> None:
    assert uuid.uuid5(uuid.NAMESPACE_URL, "urn:distillsync:inbound-event") == NAMESPACE
    # A port with nothing but a standard library reproduces the id from the event's data.
    data = order("order_created_store_api_checkout").to_data()
    content = {key: value for key, value in data.items() if key != "version"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    hexdigest = hashlib.sha256(canonical.encode()).hexdigest()
    name = json.dumps(
        [SHOP, "35", "2026-12-02T13:44:11Z", hexdigest], separators=(",", ":"), ensure_ascii=False
    )
    assert order_event_id(order("order_created_store_api_checkout")) == uuid.uuid5(NAMESPACE, name)


def test_the_digest_ignores_key_order_and_version() -> None:
    data = order("order_created_guest_coupon_shipping").to_data()
    reordered = dict(reversed(list(data.items())))
    assert digest(reordered) == digest(data)
    assert digest(data | {"version": "2030-01-01T00:00:00Z"}) == digest(data)


def test_parts_cannot_slide_into_each_other() -> None:
    assert event_id("a-b", "c", "v", "d") != event_id("a", "b-c", "v", "d")


def test_data_keys_in_design_order() -> None:
    data = order("order_created_guest_coupon_shipping").to_data()
    assert list(data) == [
        "shop", "order_ref", "number", "version", "created_at", "status", "payment_status",
        "currency", "prices_include_tax", "customer", "billing_address", "shipping_address",
        "lines", "shipping", "payment", "totals", "note", "checks",
    ]  # fmt: skip
    assert list(data["lines"][0]) == [
        "line_ref", "sku", "name", "quantity", "unit_price", "discount", "tax_rate", "tax",
        "total",
    ]  # fmt: skip
    assert list(data["totals"]) == ["subtotal", "discount", "shipping", "tax", "total"]


# --- identity: properties ----------------------------------------------------------------

AMOUNT_KEYS = {
    "total", "subtotal", "total_tax", "subtotal_tax", "discount_total", "shipping_total",
}  # fmt: skip
ORDERS = [
    "order_created_guest_coupon_shipping",
    "order_updated_status_processing",
    "order_created_customer_variation",
    "order_created_store_api_checkout",
]


def respell(value: Any, rng: random.Random) -> Any:
    """The same JSON with keys in another order and amounts spelled otherwise."""
    if isinstance(value, dict):
        items = [(key, respell_amount(key, item, rng)) for key, item in value.items()]
        rng.shuffle(items)
        return dict(items)
    if isinstance(value, list):
        return [respell(item, rng) for item in value]
    return value


def respell_amount(key: str, value: Any, rng: random.Random) -> Any:
    if key not in AMOUNT_KEYS or not isinstance(value, str) or value in ("", "0"):
        return respell(value, rng)
    amount = Decimal(value)
    spellings: list[Any] = [value, value + "0", value + "000", float(value)]
    if amount == amount.to_integral_value():
        spellings.append(int(amount))
    return rng.choice(spellings)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(ORDERS), rng=st.randoms(use_true_random=False))
def test_the_id_depends_only_on_the_content(name: str, rng: random.Random) -> None:
    original = map_order(SHOP, body(name))
    respelled = map_order(SHOP, respell(copy.deepcopy(body(name)), rng))
    assert isinstance(original, Order)
    assert isinstance(respelled, Order)
    assert order_event_id(respelled) == order_event_id(original)


def leaves(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in leaves(item, (*path, key))]
    if isinstance(value, list) and value:
        return [leaf for index, item in enumerate(value) for leaf in leaves(item, (*path, index))]
    return [path]


def changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return ["x"]
    return "x"  # null


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(ORDERS), pick=st.integers(min_value=0))
def test_the_id_changes_with_any_field(name: str, pick: int) -> None:
    data = order(name).to_data()
    assert id_of(data) == order_event_id(order(name))
    paths = leaves(data)
    path = paths[pick % len(paths)]
    mutated = copy.deepcopy(data)
    holder: Any = mutated
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = changed(holder[path[-1]])
    assert id_of(mutated) != id_of(data), path


# --- checks: what does not add up is flagged, not dropped --------------------------------


def test_a_total_that_does_not_add_up_is_flagged() -> None:
    wrong = body("order_created_guest_coupon_shipping") | {"total": "46.73"}
    mapped = map_order(SHOP, wrong)
    assert isinstance(mapped, Order)
    # 36.49 - 3.65 + 4.95 + 0 + 7.94 = 45.73, one euro short of what the order says.
    assert mapped.checks == (
        "total: subtotal - discount + shipping + fees + tax = 45.73, the order says 46.73",
    )


def test_a_cent_of_rounding_is_not_flagged() -> None:
    within = body("order_created_guest_coupon_shipping") | {"total": "45.74"}
    mapped = map_order(SHOP, within)
    assert isinstance(mapped, Order)
    assert mapped.checks == ()  # 45.74 - 45.73 = 0.01: within tolerance


def test_a_tax_total_that_does_not_add_up_is_flagged() -> None:
    wrong = body("order_created_guest_coupon_shipping") | {"total_tax": "8.94", "total": "46.73"}
    mapped = map_order(SHOP, wrong)
    assert isinstance(mapped, Order)
    # lines 3.78 + 3.12 + shipping 1.04 = 7.94; the order says 8.94 (and its total
    # 36.49 - 3.65 + 4.95 + 8.94 = 46.73 agrees with that, so only the tax is flagged).
    assert mapped.checks == ("tax: the lines add up to 7.94, the order says 8.94",)


def test_a_fee_is_counted_and_said() -> None:
    with_fee = body("order_created_guest_coupon_shipping") | {
        "fee_lines": [{"id": 60, "name": "Recargo", "total": "2.00", "total_tax": "0.42"}],
        # 45.73 + 2.00 + 0.42 = 48.15, tax 7.94 + 0.42 = 8.36.
        "total": "48.15",
        "total_tax": "8.36",
    }
    mapped = map_order(SHOP, with_fee)
    assert isinstance(mapped, Order)
    assert mapped.checks == ("fee 'Recargo' 2.00 + tax 0.42 is in the total but in no line",)


def test_an_unknown_status_is_read_as_open_and_said() -> None:
    mapped = map_order(SHOP, body("order_created_customer_variation") | {"status": "shipped"})
    assert isinstance(mapped, Order)
    assert mapped.status == "open"
    assert mapped.checks == ("status: unknown WooCommerce status 'shipped' read as open",)


@pytest.mark.parametrize(
    ("status", "paid", "refunds", "expected"),
    [
        ("pending", None, [], "pending"),
        ("on-hold", None, [], "pending"),
        ("processing", None, [], "authorized"),  # cash on delivery
        ("completed", None, [], "authorized"),
        ("processing", "2026-12-02T13:44:00", [], "paid"),
        ("completed", "2026-12-02T13:44:00", [], "paid"),
        ("failed", None, [], "voided"),
        ("cancelled", None, [], "voided"),
        ("cancelled", "2026-12-02T13:44:00", [], "paid"),  # money taken: refund is the ERP's
        ("refunded", "2026-12-02T13:44:00", [{"id": 9, "total": "-45.73"}], "refunded"),
        ("completed", "2026-12-02T13:44:00", [{"id": 9, "total": "-5.00"}], "partially_refunded"),
    ],
)
def test_payment_status_as_design_maps_it(
    status: str, paid: str | None, refunds: list[dict[str, str]], expected: str
) -> None:
    assert payment_status(status, {"date_paid_gmt": paid, "refunds": refunds}) == expected


def test_cancelled_maps_to_cancelled() -> None:
    mapped = map_order(SHOP, body("order_created_guest_coupon_shipping") | {"status": "cancelled"})
    assert isinstance(mapped, Order)
    assert (mapped.status, mapped.payment_status) == ("cancelled", "voided")


# --- bad input: each its precise reason --------------------------------------------------


def with_line(changes: dict[str, Any]) -> dict[str, Any]:
    changed_body = copy.deepcopy(body("order_created_guest_coupon_shipping"))
    changed_body["line_items"][0].update(changes)
    return changed_body


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (with_line({"sku": ""}), "line 36 (Taza) has no SKU"),
        (with_line({"sku": None}), "line 36 (Taza) has no SKU"),
        (with_line({"quantity": 0}), "line 36 (Taza): quantity 0 is not a positive whole number"),
        (with_line({"total": "abc"}), "line 36 (Taza) total is not an amount: 'abc'"),
        (
            with_line({"taxes": [{"id": 7, "total": "3.78", "subtotal": "4.2"}]}),
            "line 36 (Taza): tax rate 7 has no rate_percent in tax_lines",
        ),
        (
            body("order_created_guest_coupon_shipping") | {"currency": "XYZ"},
            "unknown currency 'XYZ' (not an ISO 4217 code)",
        ),
        (
            body("order_created_guest_coupon_shipping") | {"currency": "eur"},
            "unknown currency 'eur' (not an ISO 4217 code)",
        ),
        (
            body("order_created_guest_coupon_shipping") | {"date_modified_gmt": None},
            "date_modified_gmt is missing",
        ),
        (
            body("order_created_guest_coupon_shipping") | {"line_items": None},
            "line_items is not a list but null",
        ),
    ],
)
def test_a_bad_order_names_its_reason(bad: dict[str, Any], reason: str) -> None:
    assert map_order(SHOP, bad) == Unmappable(reason, "32")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[1, 2]", "not a WooCommerce order: the body is a list"),
        (b'"order"', "not a WooCommerce order: the body is a str"),
        (b'{"number": "32"}', "not a WooCommerce order: id is None, not a positive integer"),
        (b'{"id": "32"}', "not a WooCommerce order: id is '32', not a positive integer"),
        (b'{"id": true}', "not a WooCommerce order: id is True, not a positive integer"),
        (
            b'{"code":"woocommerce_rest_cannot_view","message":"Sorry, you cannot view this '
            b'resource.","data":{"status":401}}',
            "a REST error body, not an order: woocommerce_rest_cannot_view: Sorry, you cannot "
            "view this resource.",
        ),
    ],
)
def test_a_body_that_is_not_an_order_names_its_reason(raw: bytes, reason: str) -> None:
    assert map_body(SHOP, raw) == Unmappable(reason)


def test_a_body_that_is_not_json() -> None:
    mapped = map_body(SHOP, b'{"id": 32,')
    assert isinstance(mapped, Unmappable)
    assert mapped.reason.startswith("body is not JSON: ")
    assert mapped.order_ref is None
