"""Envelope: CloudEvents structured JSON, topics, ids."""

from __future__ import annotations

import uuid

import orjson
from hypothesis import given
from hypothesis import strategies as st

from agent.envelope import (
    decode_part,
    encode_part,
    envelope,
    event_topic,
    key_parts,
    subject_of,
    uuid7,
)
from agent.model import PendingEvent

EVENT = PendingEvent(
    1234,
    "0193a8c0-0000-7000-8000-000000000000",
    "stock",
    "upsert",
    "SKU-1/WH1",
    "2026-11-23T12:00:00.123456Z",
    b'{"on_hand":12,"sku":"SKU-1","warehouse":"WH1"}',
)


def test_envelope_matches_the_contract() -> None:
    event = orjson.loads(envelope(EVENT, "urn:distillsync:acme:erp-madrid-1"))
    assert event == {
        "specversion": "1.0",
        "id": "0193a8c0-0000-7000-8000-000000000000",
        "source": "urn:distillsync:acme:erp-madrid-1",
        "type": "distillsync.stock.upsert",
        "subject": "SKU-1/WH1",
        "time": "2026-11-23T12:00:00.123456Z",
        "sequence": "00000000000000001234",
        "datacontenttype": "application/json",
        "data": {"sku": "SKU-1", "warehouse": "WH1", "on_hand": 12},
    }


def test_envelope_is_byte_identical_on_every_resend() -> None:
    assert envelope(EVENT, "urn:x") == envelope(EVENT, "urn:x")


def test_topic() -> None:
    assert (
        event_topic("distillsync/acme/erp-1", EVENT) == "distillsync/acme/erp-1/out/stock/SKU-1/WH1"
    )


@given(st.lists(st.text(), min_size=1, max_size=4))
def test_key_parts_round_trip_and_stay_one_level_each(parts: list[str]) -> None:
    subject = subject_of(parts)
    assert key_parts(subject) == parts
    levels = subject.split("/")
    assert len(levels) == len(parts)
    assert not any(ch in level for level in levels for ch in "+#") and all(levels)


def test_encoding_examples() -> None:
    assert encode_part("a/b") == "a%2Fb"
    assert encode_part("") == "%00"
    assert decode_part("100%25") == "100%"


def test_uuid7_is_version_7_and_time_ordered() -> None:
    ids = [uuid7() for _ in range(2000)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
