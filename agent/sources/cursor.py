"""Cursor values: stored as text in the outbox, shifted back by the lookback window.

A cursor keeps the type the ERP returned (naive or aware datetime, date, number, or
ISO text for SQLite), so it can be bound back into the same query unchanged.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal
from typing import Any

import orjson

_ISO_TEXT = re.compile(
    r"^(\d{4}-\d{2}-\d{2})([T ])(\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$"
)


def encode_cursor(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return orjson.dumps(["datetime", value.isoformat()]).decode()
    if isinstance(value, dt.date):
        return orjson.dumps(["date", value.isoformat()]).decode()
    if isinstance(value, bool):
        raise TypeError("a boolean column cannot be a cursor")
    if isinstance(value, int):
        return orjson.dumps(["int", value]).decode()
    if isinstance(value, Decimal | float):
        return orjson.dumps(["decimal", str(value)]).decode()
    if isinstance(value, str):
        return orjson.dumps(["text", value]).decode()
    if isinstance(value, bytes | bytearray | memoryview):  # SQL Server rowversion
        return orjson.dumps(["bytes", bytes(value).hex()]).decode()
    raise TypeError(f"a {type(value).__name__} column cannot be a cursor")


def decode_cursor(text: str) -> Any:
    kind, raw = orjson.loads(text)
    decoders: dict[str, Any] = {
        "datetime": dt.datetime.fromisoformat,
        "date": dt.date.fromisoformat,
        "int": int,
        "decimal": Decimal,
        "text": str,
        "bytes": bytes.fromhex,
    }
    return decoders[kind](raw)


def _shift_text(text: str, seconds: float) -> str:
    """ISO timestamps kept as text (SQLite): shift and write back in the same style,
    so that the ERP's own string comparison still orders them correctly."""
    match = _ISO_TEXT.match(text)
    if match is None:
        return text  # not a timestamp: an opaque text cursor gets no lookback
    date, sep, clock, fraction, zone = match.groups()
    parsed = dt.datetime.fromisoformat(f"{date}T{clock}{fraction or ''}")
    shifted = parsed - dt.timedelta(seconds=seconds)
    out = shifted.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    if fraction:
        out += f".{shifted.microsecond:06d}"[: len(fraction)]
    return out + (zone or "")


def shift_back(value: Any, seconds: float) -> Any:
    """The lower bound of the next poll: ``cursor - lookback`` in the cursor's own type."""
    if seconds <= 0:
        return value
    if isinstance(value, dt.datetime):
        return value - dt.timedelta(seconds=seconds)
    if isinstance(value, dt.date):
        return value - dt.timedelta(days=math.ceil(seconds / 86400))
    if isinstance(value, str):
        return _shift_text(value, seconds)
    if isinstance(value, int | Decimal):
        return value - type(value)(math.ceil(seconds))
    return value


def newer(stored: Any, candidate: Any) -> Any:
    """The cursor never moves backwards, even if the ERP's clock does."""
    if stored is None:
        return candidate
    try:
        return candidate if candidate > stored else stored
    except TypeError:  # the column's type changed (e.g. a migration): trust the ERP
        return candidate
