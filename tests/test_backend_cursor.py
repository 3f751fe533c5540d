"""Cursor values as the outbox stores them, and the lookback shift in the cursor's own type.

Dolibarr on SQLite keeps ``tms`` as TEXT ``'YYYY-MM-DD HH:MM:SS'``, so a text cursor must
be shifted back as text, in the same style, or the ERP's string comparison breaks.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from agent.sources.cursor import decode_cursor, encode_cursor, shift_back

UTC = dt.UTC
PLUS2 = dt.timezone(dt.timedelta(hours=2))


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2026, 11, 23, 12, 0, 0),
        dt.datetime(2026, 11, 23, 12, 0, 0, 123456),
        dt.datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC),
        dt.datetime(2026, 11, 23, 12, 0, 0, 500, tzinfo=PLUS2),
        dt.date(2026, 11, 23),
        0,
        42,
        2**62,
        -7,
        Decimal("12345678901234567890.000001"),
        "2026-11-23 12:00:00",
        "2026-11-23T12:00:00.250Z",
        "opaque-text-cursor",
        "",
        b"\x00\x00\x00\x00\x00\x00\x07\xd1",  # SQL Server rowversion
    ],
    ids=repr,
)
def test_encode_decode_round_trip_keeps_value_and_type(value: Any) -> None:
    decoded = decode_cursor(encode_cursor(value))
    assert decoded == value
    assert type(decoded) is type(value)
    if isinstance(value, dt.datetime):
        assert decoded.tzinfo == value.tzinfo
        assert decoded.utcoffset() == value.utcoffset()


def test_decoded_naive_and_aware_datetimes_stay_distinct() -> None:
    """A naive cursor (e.g. PostgreSQL ``timestamp``) must not come back aware, or binding it
    into the same query would fail or shift it by the session's zone."""
    naive = decode_cursor(encode_cursor(dt.datetime(2026, 1, 1, 10, 0)))
    aware = decode_cursor(encode_cursor(dt.datetime(2026, 1, 1, 10, 0, tzinfo=UTC)))
    assert naive.tzinfo is None
    assert aware.tzinfo is not None


def test_float_cursor_round_trips_as_an_exact_decimal() -> None:
    decoded = decode_cursor(encode_cursor(1.5))
    assert decoded == Decimal("1.5")


@pytest.mark.parametrize("value", [True, False, None, object()])
def test_values_that_cannot_be_cursors_are_refused(value: Any) -> None:
    with pytest.raises(TypeError):
        encode_cursor(value)


# --- shift_back -----------------------------------------------------------------------------


def test_naive_datetime_is_shifted_and_stays_naive() -> None:
    value = dt.datetime(2026, 1, 1, 0, 0, 10)
    shifted = shift_back(value, 30)
    assert shifted == dt.datetime(2025, 12, 31, 23, 59, 40)
    assert shifted.tzinfo is None


def test_aware_datetime_is_shifted_and_keeps_its_zone() -> None:
    value = dt.datetime(2026, 1, 1, 0, 0, 10, tzinfo=PLUS2)
    shifted = shift_back(value, 0.25)
    assert shifted == dt.datetime(2026, 1, 1, 0, 0, 9, 750000, tzinfo=PLUS2)
    assert shifted.utcoffset() == dt.timedelta(hours=2)


def test_date_is_shifted_by_whole_days_rounding_up() -> None:
    day = dt.date(2026, 3, 1)
    assert shift_back(day, 30) == dt.date(2026, 2, 28)  # 30 s still needs the day before
    assert shift_back(day, 86400) == dt.date(2026, 2, 28)
    assert shift_back(day, 86401) == dt.date(2026, 2, 27)


def test_numbers_are_shifted_by_whole_units_rounding_up() -> None:
    assert shift_back(1_700_000_000, 30) == 1_699_999_970  # epoch seconds
    assert shift_back(100, 0.5) == 99
    shifted = shift_back(Decimal("100.5"), 1.5)
    assert shifted == Decimal("98.5")
    assert isinstance(shifted, Decimal)


@pytest.mark.parametrize(
    "value", [dt.datetime(2026, 1, 1), dt.date(2026, 1, 1), 5, "2026-01-01 00:00:00", "opaque"]
)
def test_no_lookback_leaves_the_cursor_unchanged(value: Any) -> None:
    assert shift_back(value, 0) == value
    assert shift_back(value, -5) == value


@pytest.mark.parametrize(
    ("text", "seconds", "expected"),
    [
        # Dolibarr on SQLite: datetime('now') writes 'YYYY-MM-DD HH:MM:SS'
        ("2026-11-23 12:00:00", 30, "2026-11-23 11:59:30"),
        ("2026-01-01 00:00:10", 30, "2025-12-31 23:59:40"),  # across midnight and a year
        ("2024-03-01 00:00:00", 86400, "2024-02-29 00:00:00"),  # leap day
        # ISO 'T' separator is kept
        ("2026-11-23T12:00:00", 30, "2026-11-23T11:59:30"),
        # fractional seconds keep their width
        ("2026-11-23 12:00:00.500", 30, "2026-11-23 11:59:30.500"),
        ("2026-11-23 12:00:00.123456", 0.5, "2026-11-23 11:59:59.623456"),
        ("2026-11-23T12:00:00.5", 0.25, "2026-11-23T12:00:00.2"),  # .25 truncated: below
        ("2026-11-23T12:00:00.1", 0.25, "2026-11-23T11:59:59.8"),  # .85 truncated: below
        # a shift by a fraction of a second on a whole-second text rounds down (earlier = safe)
        ("2026-11-23 12:00:00", 0.5, "2026-11-23 11:59:59"),
        # zone suffixes are kept as written
        ("2026-11-23T12:00:00Z", 30, "2026-11-23T11:59:30Z"),
        ("2026-11-23T12:00:00.250Z", 1, "2026-11-23T11:59:59.250Z"),
        ("2026-11-23T12:00:00+02:00", 60, "2026-11-23T11:59:00+02:00"),
        ("2026-11-23 12:00:00-0500", 60, "2026-11-23 11:59:00-0500"),
    ],
)
def test_iso_text_is_shifted_in_its_own_style(text: str, seconds: float, expected: str) -> None:
    shifted = shift_back(text, seconds)
    assert shifted == expected
    # the ERP compares text: the shifted bound must sort at or before the original
    assert shifted <= text


@pytest.mark.parametrize(
    "text",
    [
        "opaque-cursor",
        "2026-11-23",
        "2026-11-23 12:00",
        "23/11/2026 12:00:00",
        "",
        "2026-11-23 12:00:00 extra",
    ],
)
def test_text_that_is_not_an_iso_timestamp_gets_no_lookback(text: str) -> None:
    assert shift_back(text, 30) == text


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2026, 11, 23, 12, 0, 0),
        dt.datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
        dt.date(2026, 11, 23),
        1_700_000_000,
        "2026-11-23 12:00:00",
        "2026-11-23T12:00:00.5Z",
    ],
    ids=repr,
)
def test_stored_cursor_then_shift_is_what_the_next_poll_binds(value: Any) -> None:
    """The poller decodes the stored text and shifts it: the bound has the column's type."""
    bound = shift_back(decode_cursor(encode_cursor(value)), 30)
    assert type(bound) is type(value)
    assert bound < value
