"""MQTT 3.1.1 (``relay.protocol = "3.1.1"``) and the demo's embedded broker, for real.

The agent publishes over 3.1.1 to amqtt (the demo's fallback when Mosquitto is missing,
running in this test's event loop) and to Mosquitto. The relay side is an aiomqtt
subscriber in the same loop: amqtt answers only while the loop is free, so every wait
here is ``await``-ed, never slept.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import aiomqtt
import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import agent
from agent import config
from agent.config import Config, MqttProtocol, RelaySection, parse_config
from agent.delivery import Delivery
from agent.envelope import now_rfc3339
from agent.errors import DistillSyncError, RelayError
from agent.model import Outcome
from agent.outbox import DELIVERED, Outbox
from agent.publisher import _DEFAULT_MAX_PACKET, Ack, RelayLink, message_properties
from agent.service import delivery_settings, link_settings
from demo import localbroker
from demo.localbroker import AmqttBroker, EmbeddedBroker, LocalBroker, embedded_broker
from relay.subscriber import MQTT5, MQTT311
from tests.erp import ErpDb, source_toml, stock_entity
from tests.support import AgentProcess, Mosquitto, agent_toml
from tests.test_publisher import Harness, RecordingLink, stock_rows, until

ENVELOPE_KEYS = {
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "sequence",
    "datacontenttype",
    "data",
}
V311 = f'protocol = "{MQTT311}"\n'


# --- the relay side, in this event loop ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Got:
    topic: str
    payload: dict[str, Any]
    retain: bool
    user_properties: list[tuple[str, str]]


def mqtt_client(port: int, protocol: str, name: str) -> aiomqtt.Client:
    version = aiomqtt.ProtocolVersion.V5 if protocol == MQTT5 else aiomqtt.ProtocolVersion.V311
    return aiomqtt.Client("127.0.0.1", port, identifier=f"{name}-{id(object())}", protocol=version)


@dataclass
class RelaySide:
    """A QoS 1 subscriber: everything on ``topic``, in arrival order, until it leaves.

    Entering returns once the broker acknowledged the subscription; ``got`` may be shared
    by successive subscribers (one per broker run).
    """

    port: int
    topic: str
    protocol: str = MQTT311
    got: list[Got] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> RelaySide:
        self.client = mqtt_client(self.port, self.protocol, "relay-side")
        await self.client.__aenter__()
        await self.client.subscribe(self.topic, qos=1)
        self.reader = asyncio.create_task(self._read(), name="relay-side")
        return self

    async def _read(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for message in self.client.messages:
                assert isinstance(message.payload, bytes)
                user = getattr(message.properties, "UserProperty", None) or []
                self.got.append(
                    Got(
                        str(message.topic),
                        orjson.loads(message.payload),
                        message.retain,
                        list(user),
                    )
                )
                self.arrived.set()

    async def __aexit__(self, *exc: object) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
        with contextlib.suppress(aiomqtt.MqttError):
            await self.client.__aexit__(None, None, None)

    def events(self) -> list[Got]:
        return [g for g in self.got if "/out/" in g.topic]

    def sequences(self) -> set[int]:
        return {int(g.payload["sequence"]) for g in self.events()}


async def retained(port: int, topic: str, protocol: str = MQTT311) -> dict[str, Any] | None:
    """The retained message on ``topic``, as a client subscribing now gets it."""
    async with RelaySide(port, topic, protocol) as side:
        with contextlib.suppress(TimeoutError):  # nothing retained: nothing comes
            await asyncio.wait_for(side.arrived.wait(), 1.0)
    return side.got[0].payload if side.got and side.got[0].retain else None


async def retained_state(port: int, topic: str, state: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    async def matches() -> bool:
        status = await retained(port, topic)
        if status is not None and status["state"] == state:
            found.append(status)
        return bool(found)

    await until(matches, f"the retained status {state!r} on {topic}")
    return found[0]


# --- brokers -------------------------------------------------------------------------------


@pytest.fixture
async def amqtt_broker() -> AsyncIterator[AmqttBroker]:
    broker = AmqttBroker()
    await broker.start()
    yield broker
    await broker.stop()


@pytest.fixture(params=["amqtt_broker", "broker"])
def broker311(request: pytest.FixtureRequest) -> EmbeddedBroker:
    """A broker the agent reaches over 3.1.1: amqtt, and Mosquitto (which speaks both)."""
    broker: EmbeddedBroker = request.getfixturevalue(request.param)
    return broker


def config_for(broker: EmbeddedBroker, state: Path, agent_id: str) -> Config:
    sources = (
        '[[sources]]\nname = "erp"\nurl = "sqlite+aiosqlite:///unused.db"\n'
        '[[sources.entities]]\nentity = "stock"\nquery = "SELECT 1"\nkey = ["sku"]\n'
        'cursor = "tms"\n'
    )  # delivery only: the source is never opened
    text = agent_toml(state, broker.url, sources, agent_id=agent_id, extra=V311)
    return parse_config(tomllib.loads(text))


# --- config --------------------------------------------------------------------------------


def test_relay_protocol_is_spelled_as_the_relay_kit_spells_it() -> None:
    assert get_args(MqttProtocol) == (MQTT5, MQTT311) == (config.MQTT5, config.MQTT311)
    assert RelaySection(url="mqtt://127.0.0.1").protocol == MQTT5


# --- the link ------------------------------------------------------------------------------


async def test_a_311_link_closed_on_an_error_leaves_its_will(
    broker311: EmbeddedBroker, tmp_path: Path
) -> None:
    config = config_for(broker311, tmp_path, "will-311")
    status = "distillsync/acme/will-311/status"
    with pytest.raises(RuntimeError, match="a sibling task failed"):
        async with RelayLink(link_settings(config)) as link:
            # 3.1.1 brings no Receive Maximum and no Maximum Packet Size: MQTT's own limits.
            assert (link.receive_maximum, link.max_packet_size) == (65535, _DEFAULT_MAX_PACKET)
            # Properties handed to a 3.1.1 link are left out, and the payload arrives whole.
            props = message_properties([("id", "x")], "application/json")
            ack = await link.send(status, b'{"state": "online"}', props, retain=True)
            assert ack == Ack(Outcome.ACKED)
            assert (await retained(broker311.port, status)) == {"state": "online"}
            raise RuntimeError("a sibling task failed")
    # No DISCONNECT went out (it would discard the Will): the broker published the Will.
    offline = await retained_state(broker311.port, status, "offline")
    assert offline["version"] == agent.__version__


async def test_an_aborted_311_link_leaves_its_will(
    amqtt_broker: AmqttBroker, tmp_path: Path
) -> None:
    config = config_for(amqtt_broker, tmp_path, "abort-311")
    status = "distillsync/acme/abort-311/status"
    async with RelayLink(link_settings(config)) as link:
        assert await link.send(status, b'{"state": "online"}', None, retain=True) == Ack(
            Outcome.ACKED
        )
        link.abort("no PUBACK for 60s")
        await until(lambda: link.closed.done(), "the link closed")
        await retained_state(amqtt_broker.port, status, "offline")


async def test_a_311_link_keeps_its_session(broker: Mosquitto, tmp_path: Path) -> None:
    """clean_session = False: the broker keeps the session (and what it queues for it)."""
    config = config_for(broker, tmp_path, "session-311")
    async with RelayLink(link_settings(config)):
        pass
    assert await asyncio.to_thread(session_present, broker.port, config.client_id)


def session_present(port: int, client_id: str) -> bool:
    """Whether the broker still holds a 3.1.1 session for ``client_id`` (CONNACK's flag)."""
    flags: list[bool] = []
    connected = threading.Event()
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=False,
        protocol=paho.MQTTv311,
    )

    def on_connect(_c: Any, _u: Any, connect_flags: Any, *_rest: Any) -> None:
        flags.append(bool(connect_flags.session_present))
        connected.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert connected.wait(10), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return flags[0]


# --- the daemon, end to end ----------------------------------------------------------------


@pytest.fixture
def stock_erp(make_erp: Callable[[str], ErpDb]) -> ErpDb:
    erp = make_erp("sqlite")
    erp.add_warehouses("WH1", "WH2")
    erp.add_products(10)
    for product in range(1, 11):
        for warehouse in (1, 2):
            erp.set_stock(product, warehouse, product * 10 + warehouse)
    return erp


@contextlib.contextmanager
def daemon(
    broker: EmbeddedBroker, erp: ErpDb, tmp_path: Path, agent_id: str
) -> Iterator[AgentProcess]:
    text = agent_toml(
        tmp_path / "state",
        broker.url,
        source_toml(erp, stock_entity()),
        agent_id=agent_id,
        extra=V311,
    )
    (tmp_path / "agent.toml").write_text(text)
    with AgentProcess(tmp_path / "agent.toml", tmp_path / "agent.log") as process:
        yield process


def assert_full_envelopes(events: list[Got], agent_id: str) -> None:
    for got in events:
        event = got.payload
        assert set(event) == ENVELOPE_KEYS, event
        assert event["source"] == f"urn:distillsync:acme:{agent_id}"
        assert event["type"] == "distillsync.stock.upsert"
        assert got.topic == f"distillsync/acme/{agent_id}/out/stock/{event['subject']}"
        assert got.user_properties == []  # 3.1.1 has none; the envelope carries them


async def test_the_daemon_publishes_every_event_to_amqtt_and_its_will_covers_sigkill(
    amqtt_broker: AmqttBroker, stock_erp: ErpDb, tmp_path: Path
) -> None:
    port, status = amqtt_broker.port, "distillsync/acme/to-amqtt/status"
    async with RelaySide(port, "distillsync/acme/to-amqtt/#") as side:
        with daemon(amqtt_broker, stock_erp, tmp_path, "to-amqtt") as process:
            await until(
                lambda: len(side.events()) >= 20,
                "20 stock events",
                within=30,
                detail=process.output,
            )
            online = await retained_state(port, status, "online")
            process.kill()  # SIGKILL: only the broker's Last Will can say it
            will = await retained_state(port, status, "offline")
    assert will["started_at"] == online["started_at"]
    events = side.events()
    assert_full_envelopes(events, "to-amqtt")
    assert {g.payload["subject"]: g.payload["data"]["on_hand"] for g in events} == {
        f"SKU-{p}/WH{w}": p * 10 + w for p in range(1, 11) for w in (1, 2)
    }


async def test_the_daemon_publishes_over_311_to_mosquitto(
    broker: Mosquitto, stock_erp: ErpDb, tmp_path: Path
) -> None:
    port, status = broker.port, "distillsync/acme/to-mosquitto/status"
    # The relay side speaks MQTT 5, to see that a 3.1.1 publisher sent no User Properties.
    async with RelaySide(port, "distillsync/acme/to-mosquitto/#", MQTT5) as side:
        with daemon(broker, stock_erp, tmp_path, "to-mosquitto") as process:
            await until(
                lambda: len(side.events()) >= 20,
                "20 stock events",
                within=30,
                detail=process.output,
            )
            await retained_state(port, status, "online")
            stock_erp.set_stock(3, 1, 99)
            await until(
                lambda: any(g.payload["data"]["on_hand"] == 99 for g in side.events()),
                "SKU-3/WH1 at 99",
            )
            assert await asyncio.to_thread(process.terminate) == 0
            await retained_state(port, status, "offline")
    assert_full_envelopes(side.events(), "to-mosquitto")
    assert len({g.payload["id"] for g in side.events()}) == 21


# --- a broker restart mid-stream -----------------------------------------------------------


class GatedLink(RecordingLink):
    """The real link; it connects only once ``gate`` is set and notes what was acked."""

    def __init__(self, settings: Any, made: list[RecordingLink], gate: asyncio.Event) -> None:
        super().__init__(settings, made)
        self.gate = gate
        self.acked: set[int] = set()

    async def __aenter__(self) -> GatedLink:
        await self.gate.wait()
        await super().__aenter__()
        return self

    def send(
        self, topic: str, payload: bytes, properties: Any, retain: bool = False
    ) -> asyncio.Future[Ack]:
        future = super().send(topic, payload, properties, retain)
        sequence = self.sent[-1].sequence
        if sequence is not None:
            future.add_done_callback(
                lambda f: self.acked.add(sequence) if f.result().outcome is Outcome.ACKED else None
            )
        return future


async def test_an_amqtt_restart_mid_stream_loses_nothing_unacknowledged(
    amqtt_broker: AmqttBroker, tmp_path: Path
) -> None:
    """amqtt keeps nothing across a restart, and it sends the PUBACK when it queues a
    publish, before forwarding it: what it acknowledged but had not forwarded dies with it.
    That is the broker's to lose. Everything it had not acknowledged, and everything
    captured while it was down, stays pending in the outbox and is sent (again, with the
    same id) once it is back."""
    config = config_for(amqtt_broker, tmp_path, "restart")
    links: list[RecordingLink] = []
    gate, stop = asyncio.Event(), asyncio.Event()
    got: list[Got] = []
    gate.set()
    async with Outbox.open(tmp_path / "outbox.db") as outbox:
        settings = link_settings(config)
        delivery = Delivery(
            outbox,
            lambda: GatedLink(settings, links, gate),
            delivery_settings(config),
            stop,
            now_rfc3339(),
        )
        h = Harness(outbox, delivery, [], tmp_path)
        task = asyncio.create_task(delivery.run(), name="delivery")
        try:
            async with RelaySide(amqtt_broker.port, "distillsync/acme/restart/#", got=got) as side:
                sequences = await h.enqueue("stock", stock_rows(1, 300))
                await until(lambda: len(side.sequences()) >= 50, "the stream under way")
                gate.clear()  # the agent comes back only once the relay side is back
                await amqtt_broker.stop()
            await until(lambda: links[0].closed.done(), "the first link to notice")
            sequences += await h.enqueue("stock", stock_rows(301, 100))
            assert await outbox.pending_count() >= 100  # waiting on disk, not lost
            await amqtt_broker.start()
            async with RelaySide(amqtt_broker.port, "distillsync/acme/restart/#", got=got) as side:
                gate.set()
                await until(h.settled, "every event delivered after the restart")
                first = links[0]
                assert isinstance(first, GatedLink)
                unacked = {s.sequence for s in first.event_sends()} - first.acked
                resent = {s.sequence for link in links[1:] for s in link.event_sends()}
                assert unacked <= resent
                await until(
                    lambda: side.sequences() >= set(sequences) - first.acked,
                    "every event the first broker had not acknowledged",
                )
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        assert set((await h.states()).values()) == {DELIVERED}
    ids: dict[int | None, set[str | None]] = {}
    for sent in (s for link in links for s in link.event_sends()):
        ids.setdefault(sent.sequence, set()).add(sent.event_id)
    assert all(len(copies) == 1 for copies in ids.values())  # a re-send keeps its id
    assert all({g.payload["id"]} == ids[int(g.payload["sequence"])] for g in side.events())


# --- embedded_broker: Mosquitto when found, else amqtt -------------------------------------


async def pub_sub(broker: EmbeddedBroker) -> None:
    async with RelaySide(broker.port, "demo/#", broker.protocol) as side:
        async with mqtt_client(broker.port, broker.protocol, "demo-pub") as client:
            await client.publish("demo/x", b'{"n": 1}', qos=1)
        await until(lambda: bool(side.got), "the message back")
    assert side.got[0].payload == {"n": 1}


async def test_embedded_broker_is_mosquitto_when_it_is_installed(tmp_path: Path) -> None:
    async with embedded_broker(tmp_path) as broker:
        assert isinstance(broker, LocalBroker)
        assert broker.protocol == MQTT5
        await pub_sub(broker)
    assert broker.proc is None


def _no_mosquitto() -> str:
    raise RelayError("the mosquitto broker is not installed")


async def test_embedded_broker_falls_back_to_amqtt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(localbroker, "mosquitto_binary", _no_mosquitto)
    async with embedded_broker(tmp_path) as broker:
        assert isinstance(broker, AmqttBroker)
        assert broker.protocol == MQTT311
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        await pub_sub(broker)
    with pytest.raises(OSError):  # stopped: nothing listens there any more
        await asyncio.open_connection("127.0.0.1", broker.port)


async def test_embedded_broker_names_both_ways_out_when_neither_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(localbroker, "mosquitto_binary", _no_mosquitto)
    monkeypatch.setitem(sys.modules, "amqtt", None)  # what an absent package looks like
    with pytest.raises(DistillSyncError) as caught:
        async with embedded_broker(tmp_path):
            pass
    assert "apt-get install mosquitto" in str(caught.value)
    assert "pip install 'distillsync[demo]'" in str(caught.value)


async def test_embedded_broker_can_be_asked_for_one_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with embedded_broker(tmp_path, "amqtt") as broker:  # even with Mosquitto here
        assert isinstance(broker, AmqttBroker)
    monkeypatch.setattr(localbroker, "mosquitto_binary", _no_mosquitto)
    with pytest.raises(RelayError, match="mosquitto broker is not installed"):
        async with embedded_broker(tmp_path, "mosquitto"):
            pass
    monkeypatch.setitem(sys.modules, "amqtt", None)
    with pytest.raises(DistillSyncError, match=r"amqtt is not installed; pip install"):
        async with embedded_broker(tmp_path, "amqtt"):
            pass
