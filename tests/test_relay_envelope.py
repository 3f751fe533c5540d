"""The relay kit reads exactly what the agent writes, and says why it refuses the rest."""

from __future__ import annotations

import orjson
import pytest

from agent.envelope import envelope, source_urn
from agent.model import PendingEvent
from relay.envelope import InvalidEvent, parse

STOCK = PendingEvent(
    sequence=1234,
    event_id="0193a8c0-0000-7000-8000-000000000001",
    entity="stock",
    op="upsert",
    subject="SKU-1/WH%2F2",
    time="2026-11-23T12:00:00.123456Z",
    data=b'{"on_hand":12,"sku":"SKU-1","warehouse":"WH/2"}',
)


def agent_made(event: PendingEvent = STOCK) -> bytes:
    return envelope(event, source_urn("acme", "erp-1"))


def test_an_agent_envelope_parses_to_its_event() -> None:
    raw = agent_made()
    event = parse("distillsync/acme/erp-1/out/stock/SKU-1/WH%2F2", raw)
    assert (event.entity, event.op, event.subject) == ("stock", "upsert", "SKU-1/WH%2F2")
    assert event.sequence == "00000000000000001234" and event.raw == raw
    assert event.key == ("urn:distillsync:acme:erp-1", "stock", "SKU-1/WH%2F2")
    assert event.data == {"sku": "SKU-1", "warehouse": "WH/2", "on_hand": 12}
    assert event.priority == 1


def test_a_delete_carries_only_its_key() -> None:
    delete = PendingEvent(7, "id-7", "product", "delete", "SKU-9", STOCK.time, b'{"sku":"SKU-9"}')
    assert parse("t", agent_made(delete)).op == "delete"


def changed(**fields: object) -> bytes:
    body = orjson.loads(agent_made())
    body.update(fields)
    return orjson.dumps({k: v for k, v in body.items() if v is not None})


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (changed(sequence=None), "envelope lacks sequence"),
        (changed(specversion="0.3"), "specversion '0.3' is not 1.0"),
        (changed(type="distillsync.stock.patch"), "unknown type 'distillsync.stock.patch'"),
        (changed(type="distillsync.orders.upsert"), "unknown type"),
        (changed(sequence="1234"), "sequence '1234' is not 20 digits"),
        (changed(source="erp-1"), "source 'erp-1' is not urn:distillsync:TENANT:AGENT"),
        (
            changed(data={"sku": "SKU-1", "warehouse": "W", "on_hand": "12"}),
            "stock SKU-1/WH%2F2: data.on_hand must be number",
        ),
        (changed(data={"sku": "SKU-1"}), "data must contain ['on_hand', 'warehouse'] properties"),
        (changed(id=17), "envelope id is not a string"),
    ],
)
def test_what_is_refused_and_why(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        parse("t", payload)
    assert reason in str(refused.value)
