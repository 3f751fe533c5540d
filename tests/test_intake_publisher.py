"""Publishing from the intake store (relay/intake/publisher.py) through a real Mosquitto.

Events go out in sequence order with the agent's User Properties and pass the agent's inbox
parser; a broker restarted mid-stream loses none of them; a topic the broker's ACL refuses
is a dead letter with the broker's reason while the rest are published.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.inbox import parse_event
from relay.intake.publisher import CONTENT_TYPE, IntakePublisher
from relay.intake.store import IntakeStore, NewEvent
from relay.subscriber import SessionSettings
from tests.support import Mosquitto
from tests.test_intake_store import event

TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Got:
    topic: str
    payload: bytes
    user_properties: list[tuple[str, str]]
    content_type: str | None

    @property
    def envelope(self) -> dict[str, Any]:
        loaded: dict[str, Any] = orjson.loads(self.payload)
        return loaded


@dataclass
class Inbox:
    """The agent's side, as a QoS 1 subscriber on its own thread; with a persistent session
    (and a broker with persistence) it gets what was published while the broker was down."""

    port: int
    topic: str
    got: list[Got] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            protocol=paho.MQTTv5,
            client_id=f"inbox-{secrets.token_hex(4)}",
        )
        self.client.reconnect_delay_set(1, 1)
        self.subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(self.topic, qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        got = Got(
            msg.topic,
            bytes(msg.payload),
            list(getattr(props, "UserProperty", []) or []),
            getattr(props, "ContentType", None),
        )
        with self.lock:
            self.got.append(got)

    def __enter__(self) -> Inbox:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("inbox could not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def messages(self) -> list[Got]:
        with self.lock:
            return list(self.got)

    def ids(self) -> set[str]:
        return {m.envelope["id"] for m in self.messages()}


async def until(predicate: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Wait for a condition without blocking the loop the publisher runs on."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def publishing(
    store: IntakeStore, broker: Mosquitto, **options: Any
) -> AsyncIterator[IntakePublisher]:
    username = options.pop("username", None)
    settings = SessionSettings(
        broker.url, f"intake-{secrets.token_hex(4)}", [], username=username, keepalive=5
    )
    publisher = IntakePublisher(store, settings, backoff_cap=1.0, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(publisher.run(stop), name="intake-publisher")
    try:
        yield publisher
    finally:
        stop.set()
        await task


def tenant() -> str:
    return f"t-{secrets.token_hex(3)}"  # each test its own topics on the shared broker


def for_tenant(new: NewEvent, name: str, agent: str = "erp-1") -> NewEvent:
    return replace(new, tenant=name, agent=agent)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[IntakeStore]:
    async with await IntakeStore.open(f"sqlite:///{tmp_path / 'intake.db'}", "distillsync") as s:
        yield s


async def nothing_pending(store: IntakeStore) -> bool:
    return (await store.stats()).pending == 0


def first_occurrences(messages: list[Got]) -> list[dict[str, Any]]:
    """What the agent's inbox keeps: each id once, in the order it first came."""
    seen: set[str] = set()
    kept = []
    for message in messages:
        envelope = message.envelope
        if envelope["id"] not in seen:
            seen.add(envelope["id"])
            kept.append(envelope)
    return kept


def assert_in_sequence_per_order(envelopes: list[dict[str, Any]]) -> None:
    last: dict[str, int] = {}
    for envelope in envelopes:
        sequence = int(envelope["sequence"])
        assert sequence > last.get(envelope["subject"], 0), envelope["subject"]
        last[envelope["subject"]] = sequence


# --- the stream -----------------------------------------------------------------------


async def test_events_go_out_in_order_with_their_properties(
    broker: Mosquitto, store: IntakeStore
) -> None:
    name = tenant()
    events = [
        for_tenant(event(str(n % 3), second=n, content=str(n)), name, f"erp-{n % 2}")
        for n in range(30)
    ]
    assert set(await store.take(events)) == {"stored"}
    outgoing = await store.pending(0, 100)
    with Inbox(broker.port, f"distillsync/{name}/#") as inbox:
        async with publishing(store, broker, max_inflight=7) as publisher:
            await until(lambda: len(inbox.messages()) >= 30, "30 events")
            await until(lambda: nothing_pending(store), "every PUBACK recorded")
            later = for_tenant(event("9", second=99), name)
            await store.take([later])
            publisher.wake()
            await until(lambda: later.id in inbox.ids(), "the event stored later")
            status = publisher.status()
    got = inbox.messages()
    assert [m.payload for m in got[:30]] == [o.payload for o in outgoing]  # sequence order
    assert [m.topic for m in got[:30]] == [o.topic for o in outgoing]
    assert [m.user_properties for m in got[:30]] == [o.user_properties for o in outgoing]
    assert {m.content_type for m in got} == {CONTENT_TYPE}
    assert outgoing[1].topic == f"distillsync/{name}/erp-1/in/order"
    for message in got:
        parsed = parse_event(message.payload)
        assert dict(message.user_properties)["sequence"] == f"{parsed.sequence:020d}"
    assert (status.state, status.published, status.dead, status.inflight) == (
        "connected",
        31,
        0,
        0,
    )
    stats = await store.stats()
    assert (stats.published, stats.pending, stats.dead) == (31, 0, 0)


async def test_a_broker_restarted_mid_stream_loses_nothing(
    make_broker: Callable[..., Mosquitto], store: IntakeStore, tmp_path: Path
) -> None:
    persisted = tmp_path / "persist"
    persisted.mkdir()
    broker = make_broker(
        f"user root\npersistence true\npersistence_location {persisted}/\nmax_queued_messages 0\n"
    )
    name = tenant()
    first = [for_tenant(event(str(n % 10), second=n, content="a"), name) for n in range(200)]
    more = [for_tenant(event(str(n % 10), second=n, content="b"), name) for n in range(200, 300)]
    await store.take(first)
    with Inbox(broker.port, f"distillsync/{name}/#") as inbox:
        async with publishing(store, broker, max_inflight=5) as publisher:
            await until(lambda: len(inbox.messages()) >= 50, "the stream under way")
            broker.stop()
            await until(lambda: publisher.status().state == "disconnected", "the loss seen")
            assert (await store.stats()).pending > 0  # stopped mid-stream indeed
            await store.take(more)  # stored while the broker is down
            publisher.wake()
            broker.start()
            await until(lambda: nothing_pending(store), "every event acknowledged")
            await until(
                lambda: inbox.ids() >= {e.id for e in first + more}, "every event in the inbox"
            )
            assert publisher.reconnects >= 1
    kept = first_occurrences(inbox.messages())
    assert {e["id"] for e in kept} == {e.id for e in first + more}  # none missing
    assert_in_sequence_per_order(kept)
    for message in inbox.messages():
        parse_event(message.payload)


async def test_a_refused_topic_is_a_dead_letter_and_the_rest_go_out(
    make_broker: Callable[..., Mosquitto], store: IntakeStore, tmp_path: Path
) -> None:
    acl = tmp_path / "acl"
    acl.write_text(
        "topic read distillsync/#\n"  # anonymous: the agent's inbox here
        "user intake\n"
        "topic write distillsync/acme/erp-1/in/#\n"
    )
    # Mosquitto started by root drops to user mosquitto, which cannot read our tmp_path.
    broker = make_broker(f"user root\nacl_file {acl}")
    allowed = [for_tenant(event(str(n), second=n), "acme") for n in range(5)]
    refused = for_tenant(event("x", second=1), "acme", agent="erp-2")
    after = [for_tenant(event(str(n), second=n), "acme") for n in range(5, 10)]
    await store.take([*allowed, refused, *after])
    with Inbox(broker.port, "distillsync/acme/#") as inbox:
        async with publishing(store, broker, username="intake") as publisher:
            await until(lambda: nothing_pending(store), "every event settled")
            await until(lambda: len(inbox.messages()) >= 10, "ten events")
            status = publisher.status()
    [dead] = await store.dead_events(0, 10)
    assert (dead.id, dead.topic) == (refused.id, "distillsync/acme/erp-2/in/order")
    assert dead.reason == "broker refused: Not authorized (0x87)"
    assert [m.envelope["id"] for m in inbox.messages()] == [e.id for e in allowed + after]
    assert (status.published, status.dead, status.last_error) == (10, 1, None)
    stats = await store.stats()
    assert (stats.published, stats.dead, stats.pending) == (10, 1, 0)


async def test_no_subscriber_is_still_a_success(broker: Mosquitto, store: IntakeStore) -> None:
    """PUBACK 0x10 (no matching subscribers): published, not dead."""
    await store.take([for_tenant(event("1"), tenant())])
    async with publishing(store, broker) as publisher:
        await until(lambda: nothing_pending(store), "the PUBACK recorded")
        assert (publisher.status().published, publisher.status().dead) == (1, 0)


async def test_an_unreachable_broker_is_retried_and_reported(
    make_broker: Callable[..., Mosquitto], store: IntakeStore
) -> None:
    broker = make_broker()
    broker.stop()
    await store.take([for_tenant(event("1"), tenant())])
    async with publishing(store, broker) as publisher:
        await until(lambda: publisher.reconnects >= 2, "two attempts")
        status = publisher.status()
        assert status.state == "disconnected" and status.last_error
        assert "relay unreachable" in status.last_error
        broker.start()
        await until(lambda: nothing_pending(store), "published once the broker is back")
