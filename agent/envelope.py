"""CloudEvents 1.0 envelopes, topics and identifiers, as fixed by the contract.

Payloads are built at publish time from the stored row, byte for byte the same on
every re-send, so a redelivery carries the same ``id`` and ``sequence``.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import orjson

from agent.model import PendingEvent

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
_ESCAPED = str.maketrans({"%": "%25", "/": "%2F", "+": "%2B", "#": "%23"})
_EMPTY = "%00"  # U+0000 may not appear in an MQTT topic, so this cannot clash with data


def encode_part(part: str) -> str:
    """Percent-encode one key part so it is exactly one MQTT topic level."""
    if part == "":
        return _EMPTY
    return part.translate(_ESCAPED)


def decode_part(level: str) -> str:
    if level == _EMPTY:
        return ""
    out, i = [], 0
    while i < len(level):
        if level[i] == "%":
            out.append(chr(int(level[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(level[i])
            i += 1
    return "".join(out)


def subject_of(parts: list[str]) -> str:
    """Key parts, each encoded, joined with ``/``: both the CloudEvents subject and topic tail."""
    return "/".join(encode_part(p) for p in parts)


def key_parts(subject: str) -> list[str]:
    return [decode_part(level) for level in subject.split("/")]


def topic_base(prefix: str, tenant: str, agent_id: str) -> str:
    return f"{prefix}/{tenant}/{agent_id}"


def event_topic(base: str, event: PendingEvent) -> str:
    return f"{base}/out/{event.entity}/{event.subject}"


def source_urn(tenant: str, agent_id: str) -> str:
    return f"urn:distillsync:{tenant}:{agent_id}"


def sequence_text(sequence: int) -> str:
    return f"{sequence:020d}"


def envelope(event: PendingEvent, source: str) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": event.event_id,
            "source": source,
            "type": f"distillsync.{event.entity}.{event.op}",
            "subject": event.subject,
            "time": event.time,
            "sequence": sequence_text(event.sequence),
            "datacontenttype": "application/json",
            "data": orjson.Fragment(event.data),
        }
    )


def rfc3339(moment: datetime) -> str:
    """UTC with microseconds and a ``Z``; naive datetimes are taken as UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_rfc3339() -> str:
    return rfc3339(datetime.now(UTC))


def rfc3339_from_epoch(seconds: float | None) -> str | None:
    return None if seconds is None else rfc3339(datetime.fromtimestamp(seconds, UTC))


_last_uuid7_ms = 0
_last_uuid7_counter = 0


def uuid7() -> str:
    """RFC 9562 UUIDv7: time-ordered, with a counter so ids minted in one ms stay ordered."""
    global _last_uuid7_ms, _last_uuid7_counter
    ms = time.time_ns() // 1_000_000
    if ms <= _last_uuid7_ms:
        ms = _last_uuid7_ms
        _last_uuid7_counter += 1
    else:
        _last_uuid7_counter = int.from_bytes(os.urandom(2), "big") & 0x3FF
    _last_uuid7_ms = ms
    counter = _last_uuid7_counter & 0xFFF
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
