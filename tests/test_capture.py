"""Capture: rows to canonical data; same state, same bytes; bad rows become dead rows."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import orjson
import pytest

from agent.capture import Mapper, schema_of
from agent.config import ENTITIES
from agent.model import Change, DeadRow

UTC = ZoneInfo("UTC")
MADRID = ZoneInfo("Europe/Madrid")


def stock_mapper(zone: ZoneInfo = UTC) -> Mapper:
    return Mapper("stock", ["sku", "warehouse"], "tms", zone)


def data_of(result: Change | DeadRow) -> dict[str, object]:
    assert isinstance(result, Change), result
    decoded: dict[str, object] = orjson.loads(result.data)
    return decoded


def test_keys_are_strings_and_the_cursor_is_left_out() -> None:
    row = {"sku": 1001, "warehouse": 2, "on_hand": Decimal("12"), "tms": dt.datetime(2026, 1, 1)}
    result = stock_mapper().upsert(row)
    assert isinstance(result, Change)
    assert result.subject == "1001/2"
    assert data_of(result) == {"sku": "1001", "warehouse": "2", "on_hand": 12}


def test_touching_a_row_changes_nothing() -> None:
    mapper = stock_mapper()
    first = mapper.upsert({"sku": "A", "warehouse": "W", "on_hand": 3.0, "tms": "2026-01-01"})
    again = mapper.upsert({"sku": "A", "warehouse": "W", "on_hand": 3.0, "tms": "2026-02-02"})
    assert isinstance(first, Change) and isinstance(again, Change)
    assert first.row_hash == again.row_hash and first.data == again.data


def test_column_order_does_not_change_the_hash() -> None:
    mapper = stock_mapper()
    a = mapper.upsert({"sku": "A", "warehouse": "W", "on_hand": 3})
    b = mapper.upsert({"on_hand": 3, "warehouse": "W", "sku": "A"})
    assert isinstance(a, Change) and isinstance(b, Change)
    assert a.row_hash == b.row_hash


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("19.90"), "19.90"),
        (19.9, "19.9"),
        (20, "20"),
        ("7.50", "7.50"),
        (Decimal("0.1") + Decimal("0.2"), "0.3"),
    ],
)
def test_money_is_a_decimal_string(value: object, expected: str) -> None:
    result = Mapper("price", ["sku"], None, UTC).upsert({"sku": "A", "price": value})
    assert data_of(result)["price"] == expected


def test_extra_decimal_columns_stay_exact_and_ride_along() -> None:
    result = stock_mapper().upsert(
        {
            "sku": "A",
            "warehouse": "W",
            "on_hand": 1,
            "cost": Decimal("3.333333333333333333"),
            "bin": "B-7",
        }
    )
    assert data_of(result)["cost"] == "3.333333333333333333"
    assert data_of(result)["bin"] == "B-7"


def test_datetimes_become_utc_rfc3339_reading_naive_ones_in_the_source_zone() -> None:
    mapper = Mapper("promotion", ["code"], None, MADRID)
    result = mapper.upsert(
        {
            "code": "BF",
            "starts_at": dt.datetime(2026, 11, 27, 9, 0),
            "ends_at": dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC),
        }
    )
    assert data_of(result)["starts_at"] == "2026-11-27T08:00:00.000000Z"
    assert data_of(result)["ends_at"] == "2026-11-30T23:00:00.000000Z"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"sku": None, "warehouse": "W", "on_hand": 1}, "key column sku is NULL"),
        ({"warehouse": "W", "on_hand": 1}, "key column sku is not in the query's result"),
        ({"sku": "A", "warehouse": "W", "on_hand": "abc"}, "schema: data.on_hand must be number"),
        ({"sku": "A", "warehouse": "W", "on_hand": None}, "schema: data.on_hand must be number"),
        ({"sku": "A", "warehouse": "W"}, "schema: data must contain"),
        (
            {"sku": "A", "warehouse": "W", "on_hand": 1, "note": "caf\udce9"},
            "column note: invalid UTF-8",
        ),
        (
            {"sku": "A", "warehouse": "W", "on_hand": 1, "note": b"\xff\xfe"},
            "column note: invalid UTF-8",
        ),
        ({"sku": "A", "warehouse": "W", "on_hand": float("nan")}, "is not a finite number"),
        ({"sku": "A", "warehouse": "W", "on_hand": 1, "blob": object()}, "unsupported type object"),
    ],
)
def test_unmappable_rows_become_dead_rows_with_the_reason(
    row: dict[str, object], reason: str
) -> None:
    result = stock_mapper().upsert(row)
    assert isinstance(result, DeadRow)
    assert reason in result.reason
    assert result.subject and result.row_hash
    orjson.loads(result.row)  # storable even when the text is broken


def test_a_dead_row_without_key_is_remembered_by_its_content() -> None:
    mapper = stock_mapper()
    one = mapper.upsert({"sku": None, "warehouse": "W", "on_hand": 1, "tms": "t1"})
    two = mapper.upsert({"sku": None, "warehouse": "W", "on_hand": 1, "tms": "t2"})
    assert isinstance(one, DeadRow) and isinstance(two, DeadRow)
    assert one.subject == two.subject and one.subject is not None
    assert one.subject.startswith("#dead/")


def test_key_parts_are_percent_encoded_into_single_topic_levels() -> None:
    result = stock_mapper().upsert({"sku": "A/B+C#1%", "warehouse": "", "on_hand": 1})
    assert isinstance(result, Change)
    assert result.subject == "A%2FB%2BC%231%25/%00"
    assert data_of(result)["sku"] == "A/B+C#1%"


def test_deletes_carry_only_the_key() -> None:
    change = stock_mapper().delete("A/W", ["A", "W"])
    assert change.op == "delete"
    assert orjson.loads(change.data) == {"sku": "A", "warehouse": "W"}


@pytest.mark.parametrize("entity", ENTITIES)
def test_every_entity_has_a_schema_with_required_fields(entity: str) -> None:
    schema = schema_of(entity)
    assert schema["required"] and schema["additionalProperties"] is True
    assert set(schema["required"]) <= set(schema["properties"])
