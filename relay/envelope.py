"""Parse and validate an incoming message against the contract: the CloudEvents envelope
and the entity's JSON Schema (``relay/schemas/``, identical to ``config/schemas/``).

Anything that fails is an :class:`InvalidEvent` with a reason a person can act on; the
consumer stores it as a dead letter and goes on.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from importlib import resources
from typing import Any

import fastjsonschema
import orjson

from relay.errors import InvalidEvent as InvalidEvent  # importable from here too
from relay.model import Event, Op

ENTITIES = ("product", "price", "stock", "promotion", "order_status", "invoice", "customer")
_TYPE = re.compile(r"^distillsync\.([a-z_]+)\.(upsert|delete)$")
_SEQUENCE = re.compile(r"^\d{20}$")
_SOURCE = re.compile(r"^urn:distillsync:[a-z0-9-]+:[a-z0-9-]+$")
_REQUIRED = ("specversion", "id", "source", "type", "subject", "time", "sequence", "data")


@functools.cache
def _validator(entity: str) -> Callable[[Any], Any]:
    text = resources.files("relay.schemas").joinpath(f"{entity}.json").read_text("utf-8")
    validate: Callable[[Any], Any] = fastjsonschema.compile(orjson.loads(text))
    return validate


def _envelope(payload: bytes) -> dict[str, Any]:
    try:
        envelope = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise InvalidEvent(f"not JSON: {error}") from None
    if not isinstance(envelope, dict):
        raise InvalidEvent("not a JSON object")
    missing = [name for name in _REQUIRED if name not in envelope]
    if missing:
        raise InvalidEvent(f"envelope lacks {', '.join(missing)}")
    if envelope["specversion"] != "1.0":
        raise InvalidEvent(f"specversion {envelope['specversion']!r} is not 1.0")
    for name in ("id", "source", "type", "subject", "time", "sequence"):
        if not isinstance(envelope[name], str):
            raise InvalidEvent(f"envelope {name} is not a string")
    return envelope


def parse(topic: str, payload: bytes) -> Event:
    """The validated :class:`Event`, or :class:`InvalidEvent` naming the problem."""
    envelope = _envelope(payload)
    kind = _TYPE.match(envelope["type"])
    if kind is None or kind.group(1) not in ENTITIES:
        raise InvalidEvent(f"unknown type {envelope['type']!r}")
    if not _SEQUENCE.match(envelope["sequence"]):
        raise InvalidEvent(f"sequence {envelope['sequence']!r} is not 20 digits")
    if not _SOURCE.match(envelope["source"]):
        raise InvalidEvent(f"source {envelope['source']!r} is not urn:distillsync:TENANT:AGENT")
    entity, data = kind.group(1), envelope["data"]
    op: Op = "upsert" if kind.group(2) == "upsert" else "delete"
    if not isinstance(data, dict):
        raise InvalidEvent("data is not an object")
    if op == "upsert":
        try:
            _validator(entity)(data)
        except fastjsonschema.JsonSchemaValueException as problem:
            raise InvalidEvent(f"{entity} {envelope['subject']}: {problem.message}") from None
    return Event(
        id=envelope["id"],
        source=envelope["source"],
        entity=entity,
        op=op,
        subject=envelope["subject"],
        sequence=envelope["sequence"],
        time=envelope["time"],
        data=data,
        raw=payload,
        topic=topic,
    )
