"""Rows to canonical entity data: map, normalise, validate, hash.

Each selected column becomes a field of ``data`` under its own name (``AS`` renames
it); the cursor column is left out of ``data`` and of the hash, so a row that is only
"touched" emits nothing. Values are normalised so that the same state always gives
the same bytes:

* key fields are strings (they are topic levels too);
* money (schema fields that are decimal strings) and every DECIMAL column are decimal
  strings, never floats; quantities declared as numbers are JSON numbers;
* datetimes are RFC 3339 UTC; naive ones are read in the source's ``timezone``;
* text must be valid UTF-8.

A row that breaks any of this, or its entity's JSON Schema, becomes a
:class:`DeadRow` with the reason; it never stops the pipeline.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import fastjsonschema
import orjson

from agent.envelope import rfc3339, subject_of
from agent.model import Change, DeadRow

Kind = str  # "money" | "string" | "number" | "any"


class Unmappable(ValueError):
    """A value that has no canonical form; its message is the dead letter's reason."""


@cache
def schema_of(entity: str) -> dict[str, Any]:
    text = resources.files("agent.schemas").joinpath(f"{entity}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator(entity: str) -> Callable[[Any], Any]:
    validate: Callable[[Any], Any] = fastjsonschema.compile(schema_of(entity))
    return validate


def _kind(prop: Mapping[str, Any]) -> Kind:
    for alternative in prop.get("anyOf", []):
        if alternative.get("type") == "string":
            return _kind(alternative)
    types = prop.get("type", [])
    types = [types] if isinstance(types, str) else types
    if "string" in types:
        return "money" if "pattern" in prop else "string"
    if "number" in types or "integer" in types:
        return "number"
    return "any"


@cache
def field_kinds(entity: str) -> dict[str, Kind]:
    return {name: _kind(prop) for name, prop in schema_of(entity)["properties"].items()}


def _text(value: str, column: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Unmappable(f"column {column}: invalid UTF-8") from None
    return value


def _decimal_text(value: Decimal, column: str) -> str:
    if not value.is_finite():
        raise Unmappable(f"column {column}: {value} is not a finite number")
    return format(value, "f")


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def normalise(value: Any, kind: Kind, column: str, zone: ZoneInfo) -> Any:
    """One column value in its canonical JSON form, or :class:`Unmappable`."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _text(value, column)
    if isinstance(value, int):
        return str(value) if kind in ("money", "string") else value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Unmappable(f"column {column}: {value} is not a finite number")
        return _decimal_text(Decimal(repr(value)), column) if kind == "money" else value
    if isinstance(value, Decimal):
        return _number(value) if kind == "number" else _decimal_text(value, column)
    if isinstance(value, dt.datetime):
        return rfc3339(value if value.tzinfo else value.replace(tzinfo=zone))
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise Unmappable(f"column {column}: invalid UTF-8") from None
    if isinstance(value, uuid.UUID):
        return str(value)
    raise Unmappable(f"column {column}: unsupported type {type(value).__name__}")


def key_text(value: Any, column: str, zone: ZoneInfo) -> str:
    if value is None:
        raise Unmappable(f"key column {column} is NULL")
    text = normalise(value, "string", column, zone)
    if not isinstance(text, str):  # bool keys: rare, but keep topics readable
        text = str(text).lower()
    return text


def _printable(value: Any) -> Any:
    """A dead row must be storable even when its text is broken."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace")
    return value


def row_bytes(row: Mapping[str, Any]) -> bytes:
    printable = {k: _printable(v) for k, v in row.items()}
    return orjson.dumps(printable, default=str, option=orjson.OPT_NON_STR_KEYS)


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class Mapper:
    """Maps the rows of one entity feed; built once per feed, used for every row."""

    def __init__(self, entity: str, key: list[str], cursor: str | None, zone: ZoneInfo) -> None:
        self.entity = entity
        self.key = key
        self.cursor = cursor
        self.zone = zone
        self._kinds = field_kinds(entity)
        self._validate = _validator(entity)

    def subject(self, row: Mapping[str, Any]) -> str:
        missing = [k for k in self.key if k not in row]
        if missing:
            raise Unmappable(f"key column {', '.join(missing)} is not in the query's result")
        return subject_of([key_text(row[k], k, self.zone) for k in self.key])

    def upsert(self, row: Mapping[str, Any]) -> Change | DeadRow:
        try:
            subject = self.subject(row)
        except Unmappable as problem:
            return self._dead(row, None, str(problem))
        try:
            data = self._data(row)
            self._validate(data)
        except Unmappable as problem:
            return self._dead(row, subject, str(problem))
        except fastjsonschema.JsonSchemaValueException as problem:
            return self._dead(row, subject, f"schema: {problem.message}")
        body = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
        return Change(subject=subject, op="upsert", data=body, row_hash=digest(body))

    def delete(self, subject: str, key_values: list[str]) -> Change:
        fields = dict(zip(self.key, key_values, strict=True))
        body = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
        return Change(subject=subject, op="delete", data=body, row_hash=b"")

    def _data(self, row: Mapping[str, Any]) -> dict[str, Any]:
        data = {}
        for column, value in row.items():
            if column == self.cursor:
                continue
            if column in self.key:
                data[column] = key_text(value, column, self.zone)
            else:
                data[column] = normalise(value, self._kinds.get(column, "any"), column, self.zone)
        return data

    def _dead(self, row: Mapping[str, Any], subject: str | None, reason: str) -> DeadRow:
        raw = row_bytes({k: v for k, v in row.items() if k != self.cursor})
        row_hash = digest(raw)
        # The hash of the bad state is kept, so a re-read of the same bad row is not a new
        # dead letter, while a fix in the ERP (a new state) is captured. A row with no usable
        # key is remembered under "#dead/<hash>": "#" is percent-encoded in real subjects.
        return DeadRow(
            reason=f"{self.entity} {subject or '(no key)'}: {reason}",
            subject=subject or f"#dead/{row_hash.hex()}",
            row=raw,
            row_hash=row_hash,
        )
