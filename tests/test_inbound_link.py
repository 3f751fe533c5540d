"""Inbound over the real link: a real Mosquitto, the agent as a real process, orders
published on ``{base}/in/order`` by a plain paho client (the intake's place).

The agent subscribes on its persistent session and sends each PUBACK only after the inbox
committed the message: killed before the commit (the test holds SQLite's write lock on
``outbox.db``), the broker redelivers and the inbox ends with one row.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.apiclient import ApiClient
from tests.support import AgentProcess, Mosquitto, agent_toml, stock_levels_source, wait_until
from tests.test_inbox import V1, V2, order

# Mosquitto's default log types, and one line per SUBSCRIBE: "{client id} {qos} {filter}".
SUBSCRIPTIONS_LOGGED = "".join(
    f"log_type {kind}\n" for kind in ("error", "warning", "notice", "information", "subscribe")
)


class Inbound:
    """One agent (``acme/{agent_id}``) on a broker of its own, and what the tests ask of it."""

    def __init__(self, tmp: Path, broker: Mosquitto, agent_id: str, extra: str = "") -> None:
        self.tmp, self.broker, self.agent_id = tmp, broker, agent_id
        erp = tmp / "erp.db"
        with contextlib.closing(sqlite3.connect(erp)) as db, db:
            db.execute(
                "CREATE TABLE stock_levels (sku TEXT, warehouse TEXT, on_hand REAL, tms TEXT)"
            )
        self.config = tmp / "agent.toml"
        self.config.write_text(
            agent_toml(
                tmp / "state", broker.url, stock_levels_source(erp), agent_id=agent_id, extra=extra
            )
        )
        self.api = ApiClient(tmp / "state" / "agent.sock")
        self.topic = f"distillsync/acme/{agent_id}/in/order"
        self.runs = 0
        self._subscriptions_before = 0

    def agent(self) -> AgentProcess:
        self.runs += 1
        self._subscriptions_before = self._subscriptions()
        return AgentProcess(self.config, self.tmp / f"agent-{self.runs}.log")

    def _subscriptions(self) -> int:
        line = f"distillsync-acme-{self.agent_id} 1 distillsync/acme/{self.agent_id}/in/#"
        return self.broker.log_file.read_text(errors="replace").count(line)

    def subscribed(self) -> None:
        """Until the broker has taken this run's SUBSCRIBE to the agent's in/#."""
        wait_until(
            lambda: self._subscriptions() > self._subscriptions_before,
            30,
            "the agent's subscription to its inbound topic",
        )

    def status(self) -> dict[str, Any]:
        code, body = asyncio.run(self.api.get("/v1/status"))
        assert code == 200, (code, body)
        return dict(body)

    def received(self) -> int:
        """Messages the running agent has received on in/# (counted on arrival)."""
        try:
            return int(self.status()["inbox"]["received"])
        except OSError:  # not serving yet
            return 0

    def items(self) -> list[dict[str, Any]]:
        code, body = asyncio.run(self.api.get("/v1/inbox"))
        assert code == 200, (code, body)
        return list(body["items"])

    def items_when(
        self, done: Callable[[list[dict[str, Any]]], bool], what: str
    ) -> list[dict[str, Any]]:
        def ready() -> bool:
            try:
                return done(self.items())
            except OSError:
                return False

        wait_until(ready, 30, what)
        return self.items()

    def publish(self, *payloads: bytes, topic: str | None = None) -> None:
        publish(self.broker.port, topic or self.topic, *payloads)


def publish(
    port: int,
    topic: str,
    *payloads: bytes,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
) -> None:
    """Publish each at QoS 1 and return once the broker acknowledged them all."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=protocol, client_id="test-intake")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


@contextlib.contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Hold SQLite's write lock on ``path`` (another connection's ``BEGIN IMMEDIATE``)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        yield
        db.execute("ROLLBACK")
    finally:
        db.close()


@pytest.fixture
def inbound(tmp_path: Path, make_broker: Callable[..., Mosquitto]) -> Callable[..., Inbound]:
    def make(agent_id: str, extra: str = "") -> Inbound:
        return Inbound(tmp_path, make_broker(SUBSCRIPTIONS_LOGGED), agent_id, extra)

    return make


def test_an_order_arrives_in_the_inbox_once_also_when_published_twice(
    inbound: Callable[..., Inbound],
) -> None:
    link = inbound("in-once")
    first = order("1001", V1, 1)
    with link.agent() as agent:
        link.subscribed()
        link.publish(first, first)
        wait_until(lambda: link.received() == 2, 30, "both copies at the agent")
        [item] = link.items_when(lambda i: bool(i) and i[0]["duplicates"] == 1, "the copy counted")
        assert (item["state"], item["entity"], item["subject"]) == (
            "pending",
            "order",
            "shopify-main/1001",
        )
        assert item["topic"] == link.topic and item["payload"].encode() == first
        assert agent.terminate() == 0


def test_killed_before_the_commit_the_broker_redelivers_and_the_inbox_has_one_row(
    inbound: Callable[..., Inbound],
) -> None:
    link = inbound("in-kill")
    outbox = link.tmp / "state" / "outbox.db"
    event = order("2001", V1, 1)
    with link.agent() as agent:
        link.subscribed()
        with write_locked(outbox):
            link.publish(event)  # the broker has it: PUBACK to the publisher
            wait_until(lambda: link.received() == 1, 30, "the order at the agent")
            assert link.items() == []  # received, not committed: no PUBACK sent
            agent.kill()
    with link.agent() as agent:
        items = link.items_when(bool, "the redelivered order in the inbox")
        wait_until(lambda: link.received() >= 1, 30, "the redelivery counted")
        assert [(i["event_id"], i["state"], i["duplicates"]) for i in items] == [
            (f"shopify-main-2001-{V1}-1", "pending", 0)
        ]
        assert agent.terminate() == 0
    with contextlib.closing(sqlite3.connect(outbox)) as db:
        assert db.execute("SELECT count(*) FROM inbox").fetchone() == (1,)


def test_a_locked_outbox_acks_nothing_says_so_once_and_records_when_it_frees(
    inbound: Callable[..., Inbound],
) -> None:
    """The inbox's write fails (SQLite's busy timeout on a lock held elsewhere): the agent
    keeps the messages unacknowledged, logs it once, and records them when it can."""
    link = inbound("in-locked")
    outbox = link.tmp / "state" / "outbox.db"
    with link.agent() as agent:
        link.subscribed()
        with write_locked(outbox):
            link.publish(order("3001", V1, 1), order("3002", V1, 2))
            wait_until(lambda: link.received() == 2, 30, "both orders at the agent")
            wait_until(
                lambda: "cannot record inbound messages" in agent.output(), 60, "the warning"
            )
            wait_until(
                lambda: link.status()["outbox"]["write_errors"] >= 3, 90, "more failed attempts"
            )
            assert link.items() == []
        items = link.items_when(lambda i: len(i) == 2, "both orders recorded")
        assert [i["subject"] for i in items] == ["shopify-main/3001", "shopify-main/3002"]
        wait_until(lambda: "inbound messages recorded again" in agent.output(), 30, "recovery")
        assert agent.output().count("cannot record inbound messages") == 1
        assert agent.terminate() == 0
    # Acknowledged: a new run on the same session is not sent them again.
    with link.agent() as agent:
        link.subscribed()
        link.publish(order("3003", V1, 3))
        items = link.items_when(lambda i: len(i) == 3, "the next order")
        assert [i["duplicates"] for i in items] == [0, 0, 0]
        assert link.received() == 1
        assert agent.terminate() == 0


def test_what_is_published_while_the_agent_is_down_arrives_when_it_starts(
    inbound: Callable[..., Inbound],
) -> None:
    link = inbound("in-away")
    with link.agent() as agent:
        link.subscribed()  # the session now holds the subscription
        assert agent.terminate() == 0
    link.publish(order("4001", V1, 1), order("4001", V2, 2), order("4002", V1, 3))
    with link.agent() as agent:
        items = link.items_when(lambda i: len(i) == 3, "what waited in the session")
        assert [(i["subject"], i["state"]) for i in items] == [
            ("shopify-main/4001", "stale"),
            ("shopify-main/4001", "pending"),
            ("shopify-main/4002", "pending"),
        ]
        link.subscribed()  # and subscribed again on this connection
        assert agent.terminate() == 0


def test_an_invalid_envelope_is_a_dead_item_and_does_not_hold_back_the_next(
    inbound: Callable[..., Inbound],
) -> None:
    link = inbound("in-dead")
    with link.agent() as agent:
        link.subscribed()
        link.publish(b"not an event", order("5001", V1, 1))
        items = link.items_when(lambda i: len(i) == 2, "both messages in the inbox")
        dead, good = items
        assert dead["state"] == "dead" and dead["payload"] == "not an event"
        assert dead["reason"].startswith("not a valid event: not JSON")
        assert (good["state"], good["subject"]) == ("pending", "shopify-main/5001")
        assert agent.terminate() == 0
    # Both were acknowledged: the next run gets neither again.
    with link.agent() as agent:
        link.subscribed()
        link.publish(order("5002", V1, 2))
        items = link.items_when(lambda i: len(i) == 3, "the next order")
        assert [i["duplicates"] for i in items] == [0, 0, 0] and link.received() == 1
        assert agent.terminate() == 0


def test_mqtt_311_receives_too_and_redelivers_after_a_kill(
    inbound: Callable[..., Inbound],
) -> None:
    link = inbound("in-311", 'protocol = "3.1.1"\n')
    outbox = link.tmp / "state" / "outbox.db"
    with link.agent() as agent:
        link.subscribed()
        publish(
            link.broker.port,
            link.topic,
            order("6001", V1, 1),
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        link.items_when(lambda i: len(i) == 1, "the order over 3.1.1")
        with write_locked(outbox):
            link.publish(order("6002", V1, 2))
            wait_until(lambda: link.received() == 2, 30, "the second order at the agent")
            agent.kill()
    with link.agent() as agent:
        items = link.items_when(lambda i: len(i) == 2, "the second order, redelivered")
        assert [(i["subject"], i["duplicates"]) for i in items] == [
            ("shopify-main/6001", 0),
            ("shopify-main/6002", 0),
        ]
        assert agent.terminate() == 0
