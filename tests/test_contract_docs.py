"""The contract as shipped for other languages: schemas that never drift, and an example
subscriber in plain paho-mqtt that keeps the ordering and dedupe rules when run for real."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import fastjsonschema
import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.envelope import envelope, event_topic, source_urn, subject_of, topic_base
from agent.model import Op, PendingEvent
from tests.support import REPO, Mosquitto, wait_until

SCHEMAS = REPO / "config" / "schemas"
ENTITY_SCHEMAS = sorted(path.name for path in (REPO / "agent" / "schemas").glob("*.json"))
EXAMPLE = REPO / "examples" / "paho_subscriber.py"


def schema(name: str) -> Any:
    return orjson.loads((SCHEMAS / name).read_bytes())


@pytest.mark.parametrize("name", ENTITY_SCHEMAS)
def test_config_schemas_are_the_agents_byte_for_byte(name: str) -> None:
    shipped = (REPO / "agent" / "schemas" / name).read_bytes()
    assert (SCHEMAS / name).read_bytes() == shipped, f"config/schemas/{name} drifted"
    kit_copy = REPO / "relay" / "schemas" / name  # the relay kit's own copy, where present
    assert not kit_copy.exists() or kit_copy.read_bytes() == shipped


def test_config_schemas_hold_nothing_but_the_entities_and_the_envelope() -> None:
    assert sorted(path.name for path in SCHEMAS.glob("*")) == sorted(
        [*ENTITY_SCHEMAS, "envelope.json"]
    )


def stock_event(
    sequence: int,
    sku: str,
    on_hand: int,
    event_id: str | None = None,
    warehouse: str = "MAD",
    op: Op = "upsert",
) -> PendingEvent:
    data = {"sku": sku, "warehouse": warehouse} | ({} if op == "delete" else {"on_hand": on_hand})
    return PendingEvent(
        sequence=sequence,
        event_id=event_id or f"id-{sequence}-{sku}",
        entity="stock",
        op=op,
        subject=subject_of([sku, warehouse]),
        time="2026-11-23T12:00:00.123456Z",
        data=orjson.dumps(data, option=orjson.OPT_SORT_KEYS),
    )


def test_an_agent_made_envelope_validates_against_envelope_json() -> None:
    validate = fastjsonschema.compile(schema("envelope.json"))
    raw = envelope(stock_event(1234, "SKU/1", 12, warehouse=""), source_urn("acme", "erp-1"))
    made = orjson.loads(raw)
    validate(made)
    fastjsonschema.compile(schema("stock.json"))(made["data"])
    validate(orjson.loads(envelope(stock_event(9, "SKU-9", 0, op="delete"), "urn:distillsync:a:b")))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("specversion", "0.3"),
        ("sequence", "1234"),
        ("sequence", 1234),
        ("type", "distillsync.stock.patch"),
        ("source", "urn:other:acme:erp-1"),
        ("time", "2026-11-23 12:00:00"),
        ("datacontenttype", "text/plain"),
        ("data", "{}"),
        ("id", None),
    ],
)
def test_envelope_json_refuses_what_breaks_the_contract(field: str, value: Any) -> None:
    made = orjson.loads(envelope(stock_event(1, "SKU-1", 1), source_urn("acme", "erp-1")))
    if value is None:
        del made[field]
    else:
        made[field] = value
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        fastjsonschema.compile(schema("envelope.json"))(made)


class Example:
    """``examples/paho_subscriber.py`` as a real process; its stdout, line by line."""

    def __init__(self, port: int, tenant: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "127.0.0.1", str(port), tenant],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        wait_until(
            lambda: any(line.startswith("subscribed") for line in self.lines),
            15,
            f"the example to subscribe ({self.lines})",
        )

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def applied(self) -> list[str]:
        return [line for line in self.lines if not line.startswith("subscribed")]

    def stop(self) -> None:
        self.proc.terminate()  # no DISCONNECT: the broker keeps the session
        self.proc.wait(10)
        self.reader.join(10)  # it ends at EOF, so the pipe can be closed after it
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def publish(broker: Mosquitto) -> Iterator[Any]:
    client = paho.Client(
        CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, client_id=f"docs-publisher-{os.getpid()}"
    )
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    wait_until(client.is_connected, 10, "the publisher to connect")

    def send(agent: str, tenant: str, event: PendingEvent) -> None:
        topic = event_topic(topic_base("distillsync", tenant, agent), event)
        payload = envelope(event, source_urn(tenant, agent))
        client.publish(topic, payload, qos=1).wait_for_publish(10)

    yield send
    client.disconnect()
    client.loop_stop()


def test_the_paho_example_applies_each_state_once_and_in_order(
    broker: Mosquitto, publish: Any
) -> None:
    tenant = f"docs-{os.getpid()}-{int(time.time())}"
    example = Example(broker.port, tenant)
    try:
        for agent, event in [
            ("erp-1", stock_event(1, "SKU-1", 5)),
            ("erp-1", stock_event(2, "SKU-1", 7)),
            ("erp-1", stock_event(2, "SKU-1", 7)),  # redelivered: same id
            ("erp-1", stock_event(4, "SKU-1", 9)),
            ("erp-1", stock_event(3, "SKU-1", 8)),  # older, arrives late
            ("erp-1", stock_event(4, "SKU-1", 99, "new-id")),  # new id, same sequence
            ("erp-1", stock_event(5, "SKU-3", 1, "id-1-SKU-1")),  # an id seen: dropped as is
            ("erp-2", stock_event(1, "SKU-1", 100, "erp-2-1")),  # another agent: its own order
            ("erp-1", stock_event(5, "SKU-2", 0, warehouse="")),
            ("erp-1", stock_event(6, "SKU-1", 0, op="delete")),  # last on SKU-1's topic
        ]:
            publish(agent, tenant, event)
        source = f"urn:distillsync:{tenant}"
        expected = [
            f"{source}:erp-1 SKU-1 MAD 5",
            f"{source}:erp-1 SKU-1 MAD 7",
            f"{source}:erp-1 SKU-1 MAD 9",
            f"{source}:erp-2 SKU-1 MAD 100",
            f"{source}:erp-1 SKU-2  0",
            f"{source}:erp-1 SKU-1 MAD deleted",
        ]
        wait_until(
            lambda: len(example.applied()) >= len(expected),
            15,
            f"the example's output ({example.lines})",
        )
        assert example.applied() == expected
    finally:
        example.stop()

    # Its session outlives it: what is published while it is away waits at the broker.
    publish("erp-1", tenant, stock_event(7, "SKU-1", 11))
    example = Example(broker.port, tenant)
    try:
        wait_until(lambda: bool(example.applied()), 15, f"the queued event ({example.lines})")
        assert example.applied() == [f"{source}:erp-1 SKU-1 MAD 11"]
    finally:
        example.stop()


def test_the_readme_shows_the_example_as_it_is() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Writing a subscriber in another language", 1)[1].split("\n## ")[0]
    assert "config/schemas/" in section and "examples/paho_subscriber.py" in section
    assert EXAMPLE.read_text().strip() in section
