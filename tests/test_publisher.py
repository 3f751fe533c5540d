"""Delivery through the real link to a real Mosquitto: what "delivered" means.

Delivery and RelayLink run in this process against a private broker, with a real
SQLite outbox, built from a config by the same functions the daemon uses. The link is
the real one; ``RecordingLink`` only writes down what it handed to the socket and how
many publishes were unacknowledged at that moment. The retained status is checked
against the daemon itself, since only a real process can be SIGKILLed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import os
import signal
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import agent
from agent.config import Config, parse_config
from agent.delivery import Delivery
from agent.envelope import CONTENT_TYPE, envelope, event_topic, now_rfc3339, uuid7
from agent.model import CapturedPage, Change, FeedId, Outcome, PendingEvent
from agent.outbox import DELIVERED, Outbox
from agent.publisher import Ack, PackedProperties, RelayLink, _install_hooks, message_properties
from agent.service import delivery_settings, link_settings
from tests.delivery_support import Subscriber, retained, wait_for_retained
from tests.erp import ErpDb, source_toml, stock_entity
from tests.support import AgentProcess, Mosquitto, agent_toml

TIMEOUT = 30.0


# --- harness -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    topic: str
    event_id: str | None
    sequence: int | None
    in_flight: int
    """Unacknowledged publishes on this link right after this one went out."""


class RecordingLink(RelayLink):
    """The real link, writing down every message it hands to paho."""

    def __init__(self, settings: Any, made: list[RecordingLink]) -> None:
        super().__init__(settings)
        self.sent: list[Sent] = []
        made.append(self)

    def send(
        self, topic: str, payload: bytes, properties: Any, retain: bool = False
    ) -> asyncio.Future[Ack]:
        future = super().send(topic, payload, properties, retain)
        event = orjson.loads(payload) if "/out/" in topic else {}
        sequence = int(event["sequence"]) if "sequence" in event else None
        self.sent.append(Sent(topic, event.get("id"), sequence, self.in_flight))
        return future

    def event_sends(self) -> list[Sent]:
        return [s for s in self.sent if s.sequence is not None]


@dataclass
class Harness:
    outbox: Outbox
    delivery: Delivery
    links: list[RecordingLink]
    state: Path

    async def enqueue(self, entity: str, rows: dict[str, dict[str, Any]]) -> list[int]:
        """Commit one page of upserts; returns their sequences."""
        before = (await self.outbox.stats()).last_sequence
        changes = []
        for subject, row in rows.items():
            data = orjson.dumps(row, option=orjson.OPT_SORT_KEYS)
            changes.append(Change(subject, "upsert", data, hashlib.sha256(data).digest()))
        await self.outbox.commit_page(CapturedPage(FeedId("erp", entity, entity), changes))
        after = (await self.outbox.stats()).last_sequence
        return list(range(before + 1, after + 1))

    async def states(self) -> dict[int, int]:
        async with self.outbox._reader.execute("SELECT id, state FROM events") as cursor:
            return {int(r[0]): int(r[1]) async for r in cursor}

    async def settled(self) -> bool:
        return await self.outbox.pending_count() == 0


def make_config(
    broker: Mosquitto, state: Path, agent_id: str, relay: str = "", ack_timeout: str = "10s"
) -> Config:
    source = (
        '[[sources]]\nname = "erp"\nurl = "sqlite+aiosqlite:///unused.db"\n'
        '[[sources.entities]]\nentity = "stock"\nquery = "SELECT 1"\nkey = ["sku"]\n'
        'cursor = "tms"\n'
    )  # delivery only: no source is opened
    text = agent_toml(state, broker.url, source, agent_id=agent_id, extra=relay)
    text = text.replace('ack_timeout = "10s"', f'ack_timeout = "{ack_timeout}"')
    return parse_config(tomllib.loads(text))


@contextlib.asynccontextmanager
async def delivering(
    config: Config, backlog: dict[str, dict[str, Any]] | None = None
) -> AsyncIterator[Harness]:
    """Delivery running in this loop, stopped (gracefully) on exit.

    ``backlog`` stock rows are enqueued before delivery starts, as after a restart.
    """
    links: list[RecordingLink] = []
    state = config.agent.state_dir
    async with Outbox.open(state / "outbox.db") as outbox:
        stop = asyncio.Event()
        settings = link_settings(config)
        delivery = Delivery(
            outbox,
            lambda: RecordingLink(settings, links),
            delivery_settings(config),
            stop,
            now_rfc3339(),
        )
        harness = Harness(outbox, delivery, links, state)
        if backlog:
            await harness.enqueue("stock", backlog)
        task = asyncio.create_task(delivery.run(), name="delivery")
        try:
            yield harness
        finally:
            stop.set()
            await asyncio.wait_for(task, TIMEOUT)


async def until(
    predicate: Callable[[], bool | Awaitable[bool]],
    what: str,
    within: float = TIMEOUT,
    detail: Callable[[], object] = lambda: "",
) -> None:
    """Wait for a condition without blocking the loop (delivery runs on it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what} {detail()}")
        await asyncio.sleep(0.02)


@contextlib.contextmanager
def paused(broker: Mosquitto) -> Iterator[None]:
    """SIGSTOP the broker: its sockets stay open, nothing is read or answered."""
    assert broker.proc is not None
    os.kill(broker.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)


def stock_rows(first: int, count: int, **extra: Any) -> dict[str, dict[str, Any]]:
    return {
        f"SKU-{i}/WH1": {"sku": f"SKU-{i}", "warehouse": "WH1", "on_hand": i, **extra}
        for i in range(first, first + count)
    }


# --- the paho hooks ------------------------------------------------------------------------


async def test_our_paho_hooks_are_installed_and_chain_to_aiomqtts(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """If aiomqtt 2.x renames its paho client or its callbacks, this fails, loudly."""
    config = make_config(broker, tmp_path, "hooks")
    link = RelayLink(link_settings(config))
    inner = link._client._client
    assert isinstance(inner, paho.Client)
    assert inner._callback_api_version is CallbackAPIVersion.VERSION2
    for name in ("on_connect", "on_publish", "on_disconnect"):
        hook = getattr(inner, name)
        assert hook.__qualname__ == f"_install_hooks.<locals>.{name}", name
        # ... and what it chains to is aiomqtt's own handler, bound to this client.
        originals = dict(
            zip(
                hook.__code__.co_freevars,
                (c.cell_contents for c in hook.__closure__ or ()),
                strict=True,
            )
        )
        chained = originals["originals"][name]
        assert chained.__self__ is link._client
        assert chained.__func__ is getattr(aiomqtt.Client, f"_{name}")

    async with link:  # returns only once aiomqtt's _on_connect saw the CONNACK
        assert link.receive_maximum == 100  # our on_connect read the CONNACK properties
        # aiomqtt's own publish completes only through aiomqtt's _on_publish ...
        await asyncio.wait_for(link._client.publish("distillsync/acme/hooks/t", b"1", qos=1), 10)
        # ... and ours resolves the outcome from the same PUBACK.
        ack = await asyncio.wait_for(link.send("distillsync/acme/hooks/t", b"2", None), 10)
        assert ack == Ack(Outcome.ACKED)

        # The broker drops us (session takeover): both on_disconnect handlers run.
        thief = paho.Client(
            CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, client_id=config.client_id
        )
        thief.connect("127.0.0.1", broker.port)
        thief.loop_start()
        try:
            await asyncio.wait_for(asyncio.shield(link.closed), 10)
            disconnected = link._client._disconnected
            await until(disconnected.done, "aiomqtt's _on_disconnect")
            # Marked retrieved by our hook: asyncio will not log "Future exception was
            # never retrieved" for every connection the daemon loses.
            assert not disconnected._log_traceback
            assert isinstance(disconnected.exception(), aiomqtt.MqttCodeError)
        finally:
            thief.disconnect()
            thief.loop_stop()


async def test_install_hooks_refuses_an_aiomqtt_it_does_not_know() -> None:
    client = aiomqtt.Client("127.0.0.1", 1, protocol=aiomqtt.ProtocolVersion.V5)
    dummy = object.__new__(RelayLink)
    real = client._client
    try:
        real.on_publish = None
        with pytest.raises(RuntimeError, match="no longer sets paho callbacks"):
            _install_hooks(client, dummy)
        client._client = object()  # type: ignore[assignment]
        with pytest.raises(RuntimeError, match="no longer exposes its paho client"):
            _install_hooks(client, dummy)
    finally:
        client._client = real


# --- what the broker answers ---------------------------------------------------------------


async def test_a_negative_puback_is_a_dead_letter_not_a_delivery(
    make_broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    acl = tmp_path / "acl"
    acl.write_text(
        "topic read distillsync/#\n"  # anonymous: the subscriber
        "user agent\n"
        "topic write distillsync/acme/acl/status\n"
        "topic write distillsync/acme/acl/out/stock/#\n"
    )
    # Mosquitto started by root drops to user mosquitto, which cannot read our tmp_path.
    broker = make_broker(f"user root\nacl_file {acl}")
    config = make_config(broker, tmp_path / "state", "acl", relay='username = "agent"\n')
    with Subscriber(broker.port, "distillsync/acme/acl/#") as sub:
        async with delivering(config) as h:
            before = await h.enqueue("stock", stock_rows(1, 5))
            [refused] = await h.enqueue("price", {"SKU-1": {"sku": "SKU-1", "price": "9.90"}})
            after = await h.enqueue("stock", stock_rows(6, 5))
            await until(h.settled, "every event settled")
            states = await h.states()
            dead = await h.outbox.dead_letters()
            assert len(h.links) == 1 and not h.links[0].closed.done()
            stats = h.delivery.stats
        await until(lambda: len(sub.seen()) >= 10, "ten stock events")
    assert [(d.kind, d.event_seq, d.subject) for d in dead] == [("publish", refused, "SKU-1")]
    assert dead[0].reason == "broker refused: Not authorized (0x87)"
    assert {s: states[s] for s in before + after} == dict.fromkeys(before + after, DELIVERED)
    assert (stats.published, stats.nacked) == (10, 1)
    assert sorted(s.sequence for s in sub.seen()) == before + after


def exact_packet_size(topic: str, payload: bytes, props: PackedProperties) -> int:
    """An MQTT 5 PUBLISH's full size (QoS 1), computed here independently of the link."""
    remaining = 2 + len(topic.encode()) + 2 + len(props.pack()) + len(payload)
    length_bytes = 1 + (remaining >= 128) + (remaining >= 16_384) + (remaining >= 2_097_152)
    return 1 + length_bytes + remaining


def padding_for(size: int, source: str, topic_base: str) -> int:
    """How many characters of padding in ``data.note`` make a stock event exactly ``size``."""
    probe = PendingEvent(
        1,
        uuid7(),
        "stock",
        "upsert",
        "BIG/WH1",
        now_rfc3339(),
        orjson.dumps({"note": "", "on_hand": 1, "sku": "BIG", "warehouse": "WH1"}),
    )
    props = message_properties(
        [
            ("id", probe.event_id),
            ("type", "distillsync.stock.upsert"),
            ("source", source),
            ("sequence", "0" * 20),
        ],
        CONTENT_TYPE,
    )
    base = exact_packet_size(event_topic(topic_base, probe), envelope(probe, source), props)
    return size - base


async def test_an_event_over_the_brokers_maximum_packet_size_is_a_dead_letter(
    make_broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    broker = make_broker("max_packet_size 2000")
    config = make_config(broker, tmp_path / "state", "big")
    settings = delivery_settings(config)
    pad = padding_for(2000, settings.source, settings.topic_base)
    with Subscriber(broker.port, "distillsync/acme/big/#") as sub:
        async with delivering(config) as h:
            small = await h.enqueue("stock", stock_rows(1, 3))
            [fits] = await h.enqueue(
                "stock",
                {"BIG/WH1": {"sku": "BIG", "warehouse": "WH1", "on_hand": 1, "note": "x" * pad}},
            )
            [too_big] = await h.enqueue(
                "stock",
                {
                    "BIG/WH1": {
                        "sku": "BIG",
                        "warehouse": "WH1",
                        "on_hand": 2,
                        "note": "x" * (pad + 1),
                    }
                },
            )
            later = await h.enqueue("stock", stock_rows(4, 3))
            await until(h.settled, "every event settled")
            dead = await h.outbox.dead_letters()
            assert h.links[0].max_packet_size == 2000
            # The connection never dropped: the broker would have cut it for a big packet.
            assert len(h.links) == 1 and not h.links[0].closed.done()
            assert h.delivery.stats.reconnects == 0
        # Wait while still subscribed: a PUBACK to the agent says the broker has the
        # message, not that this subscriber has read it yet.
        await until(
            lambda: len(sub.seen()) >= 7,
            "the events that fit",
            detail=lambda: (sorted(s.sequence for s in sub.seen()), sub.client.is_connected()),
        )
    assert [(d.event_seq, d.reason) for d in dead] == [
        (too_big, "message of 2001 bytes exceeds the broker's maximum packet size 2000")
    ]
    assert sorted(s.sequence for s in sub.seen()) == [*small, fits, *later]


# --- the window ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("broker_receive_maximum", "max_inflight", "window"), [(5, 100, 5), (100, 7, 7)]
)
async def test_never_more_unacknowledged_publishes_than_the_window(
    make_broker: Callable[..., Mosquitto],
    tmp_path: Path,
    broker_receive_maximum: int,
    max_inflight: int,
    window: int,
) -> None:
    broker = make_broker(f"max_inflight_messages {broker_receive_maximum}")
    config = make_config(
        broker, tmp_path / "state", "window", relay=f"max_inflight = {max_inflight}\n"
    )
    with Subscriber(broker.port, "distillsync/acme/window/#") as sub:
        async with delivering(config, backlog=stock_rows(1, 200)) as h:
            await h.enqueue("stock", stock_rows(201, 200))
            await until(h.settled, "400 events delivered")
            [link] = h.links
            assert link.receive_maximum == broker_receive_maximum
            # Every message counts, the retained status too; and the window does fill.
            assert max(s.in_flight for s in link.sent) == window
        await until(lambda: len(sub.seen()) >= 400, "400 events at the subscriber")


# --- when PUBACKs do not come --------------------------------------------------------------


async def test_a_publish_with_no_puback_stays_pending_and_is_delivered_later(
    make_broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    broker = make_broker()
    config = make_config(broker, tmp_path / "state", "unknown", ack_timeout="1s")
    with Subscriber(broker.port, "distillsync/acme/unknown/#") as sub:
        async with delivering(config) as h:
            await h.enqueue("stock", stock_rows(1, 5))
            await until(h.settled, "the first events delivered")
            first = h.links[0]
            with paused(broker):
                [late] = await h.enqueue("stock", stock_rows(6, 1))
                await until(lambda: any(s.sequence == late for s in first.sent), "it was sent")
                # No PUBACK within ack_timeout: the link gives up on this connection ...
                await until(first.closed.done, "the link to give up", within=10)
                # ... and the event's fate is unknown, so it is neither delivered nor dead.
                assert (await h.states())[late] == 0
                assert await h.outbox.dead_letters() == []
            await until(h.settled, "the late event delivered after the broker resumed")
            assert (await h.states())[late] == DELIVERED
            resends = [s for link in h.links[1:] for s in link.event_sends()]
            assert [s.sequence for s in resends] == [late]
        await until(lambda: late in {s.sequence for s in sub.seen()}, "the late event")
        await until(lambda: sub.status_count() >= 4, "four status messages")
    copies = {s.event_id for s in sub.seen() if s.sequence == late}
    assert copies == {resends[0].event_id}
    # While it gave up on the connection, the Will told the fleet this agent was offline.
    assert [s["state"] for s in sub.status_since(0)] == ["online", "offline", "online", "offline"]


async def test_after_a_reconnect_pending_events_are_resent_in_order_with_the_same_id(
    make_broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    broker = make_broker()
    config = make_config(broker, tmp_path / "state", "resend", ack_timeout="1s")
    with Subscriber(broker.port, "distillsync/acme/resend/#") as sub:
        async with delivering(config) as h:
            acked = await h.enqueue("stock", stock_rows(1, 40))
            await until(h.settled, "the first 40 delivered")
            first = h.links[0]
            with paused(broker):
                unacked = await h.enqueue("stock", stock_rows(41, 60))
                await until(lambda: len(first.event_sends()) == 100, "60 more sent")
                await until(first.closed.done, "the link to give up", within=10)
            await until(h.settled, "every event delivered after the reconnect")
            resent = [s for link in h.links[1:] for s in link.event_sends()]
        await until(lambda: sub.sequences() >= set(acked + unacked), "all 100 at the subscriber")
    assert [s.sequence for s in resent] == unacked  # exactly the unacked, oldest first
    first_ids = {s.sequence: s.event_id for s in first.event_sends()}
    assert all(first_ids[s.sequence] == s.event_id for s in resent)
    ids: dict[int, set[str]] = {}
    for seen in sub.seen():
        ids.setdefault(seen.sequence, set()).add(seen.event_id)
        assert seen.user_id == seen.event_id
    assert all(ids[s] == {first_ids[s]} for s in acked + unacked)
    # What reached the subscriber the second time came in sequence order, too.
    second_copies = [s.sequence for s in sub.seen() if s.sequence in set(unacked)][-60:]
    assert second_copies == sorted(second_copies)


# --- Last Will and the retained status -----------------------------------------------------


async def test_a_delivery_cancelled_by_a_failing_sibling_leaves_the_will(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """In the daemon's TaskGroup any task that fails cancels delivery: the status must not
    stay "online" for an agent that is gone, so the link closes with its Will."""
    config = make_config(broker, tmp_path / "state", "cancelled")
    topic = "distillsync/acme/cancelled/status"
    links: list[RecordingLink] = []
    async with Outbox.open(tmp_path / "state" / "outbox.db") as outbox:
        settings = link_settings(config)
        delivery = Delivery(
            outbox,
            lambda: RecordingLink(settings, links),
            delivery_settings(config),
            asyncio.Event(),
            now_rfc3339(),
        )
        task = asyncio.create_task(delivery.run(), name="delivery")
        await until(lambda: delivery.stats.state == "connected", "connected")

        async def status() -> str | None:
            found = await asyncio.to_thread(retained, broker.port, topic)
            return found["state"] if found else None

        await until(lambda: _equals(status(), "online"), "the retained status online")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert await status() == "offline"


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


def test_the_retained_status_is_online_then_offline_and_the_will_covers_sigkill(
    broker: Mosquitto, tmp_path: Path, make_erp: Callable[[str], ErpDb]
) -> None:
    erp = make_erp("sqlite")
    erp.add_warehouses("WH1")
    erp.add_products(3)
    config = tmp_path / "agent.toml"
    config.write_text(
        agent_toml(
            tmp_path / "state", broker.url, source_toml(erp, stock_entity()), agent_id="status"
        )
    )
    topic = "distillsync/acme/status/status"
    agent_log = tmp_path / "agent.log"

    with AgentProcess(config, agent_log) as first:
        online = wait_for_retained(broker.port, topic, "online", "the agent online")
        assert online["version"] == agent.__version__
        assert online["started_at"]
        assert first.terminate() == 0
    offline = wait_for_retained(broker.port, topic, "offline", "offline after a clean stop")
    assert offline["started_at"] == online["started_at"]

    with AgentProcess(config, agent_log) as second:
        again = wait_for_retained(
            broker.port,
            topic,
            "online",
            "online again",
            check=lambda s: s["started_at"] != online["started_at"],
        )
        second.kill()  # SIGKILL: only the broker's Last Will can say it
    will = wait_for_retained(broker.port, topic, "offline", "the will after SIGKILL")
    assert will["version"] == agent.__version__
    assert retained(broker.port, topic) == will
    assert again["state"] == "online"


@pytest.mark.parametrize(
    "user",
    [
        [
            ("id", "0193a8c0-0000-7000-8000-000000000000"),
            ("type", "distillsync.stock.upsert"),
            ("source", "urn:distillsync:acme:erp-1"),
            ("sequence", "00000000000000001234"),
        ],
        [],
        [("clé", "valeur ☕"), ("long", "x" * 300)],  # multi-byte text; a length over 127
    ],
)
def test_packed_properties_are_byte_identical_to_paho(user: list[tuple[str, str]]) -> None:
    theirs = Properties(PacketTypes.PUBLISH)
    theirs.ContentType = CONTENT_TYPE
    if user:
        theirs.UserProperty = user
    assert message_properties(user, CONTENT_TYPE).pack() == theirs.pack()
