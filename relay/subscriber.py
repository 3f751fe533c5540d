"""The relay side's MQTT subscriber: the only module of the kit that imports aiomqtt
(and paho beneath it).

Effectively-once needs two gates, both from the contract: drop an ``id`` already seen
(redelivery), and drop an event whose ``sequence`` is not newer than the last one
applied for its key (reordering after a reconnect, duplicates of older states).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import orjson
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from common.paho_io import register_write_when_open
from common.tls import ClosedOnFailedHandshake
from relay.errors import RelayUnavailable

MQTT5, MQTT311 = "5", "3.1.1"


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    topic: str
    event: dict[str, Any]

    @property
    def entity(self) -> str:
        return str(self.event["type"]).split(".")[1]

    @property
    def op(self) -> str:
        return str(self.event["type"]).split(".")[2]

    @property
    def key(self) -> tuple[str, str, str]:
        return (str(self.event["source"]), self.entity, str(self.event["subject"]))


@dataclass
class VersionGate:
    """In-memory dedupe and version store (the kit's durable stores build on this rule)."""

    seen_ids: set[str] = field(default_factory=set)
    applied: dict[tuple[str, str, str], str] = field(default_factory=dict)
    duplicates: int = 0
    stale: int = 0

    def admit(self, received: ReceivedEvent) -> bool:
        event_id = str(received.event["id"])
        if event_id in self.seen_ids:
            self.duplicates += 1
            return False
        self.seen_ids.add(event_id)
        sequence = str(received.event["sequence"])  # zero-padded: text order is number order
        last = self.applied.get(received.key)
        if last is not None and sequence <= last:
            self.stale += 1
            return False
        self.applied[received.key] = sequence
        return True


def _client(url: str, client_id: str, protocol: str) -> aiomqtt.Client:
    parts = urlsplit(url)
    version = aiomqtt.ProtocolVersion.V311 if protocol == MQTT311 else aiomqtt.ProtocolVersion.V5
    client = aiomqtt.Client(
        parts.hostname or "127.0.0.1", parts.port or 1883, identifier=client_id, protocol=version
    )
    client._client.on_socket_register_write = register_write_when_open(client)
    return client


async def watch(
    url: str, topic: str | list[str], client_id: str, protocol: str = MQTT5
) -> AsyncIterator[tuple[str, bytes]]:
    """Every message on ``topic`` (or each of a list) as ``(topic, payload)``, retained
    ones first; an empty payload is a cleared retained message. What the TUI's fleet view
    reads. A lost or refused connection raises :class:`~relay.errors.RelayUnavailable`
    (an :class:`OSError`)."""
    try:
        async with _client(url, client_id, protocol) as client:
            for each in [topic] if isinstance(topic, str) else topic:
                await client.subscribe(each, qos=1)
            async for message in client.messages:
                payload = message.payload
                if isinstance(payload, bytes | bytearray):
                    yield str(message.topic), bytes(payload)
    except aiomqtt.MqttError as error:
        # One exception type for "the relay is gone" across the kit and the TUI.
        raise RelayUnavailable(f"relay unreachable at {url}: {error}") from None


async def subscribe(
    url: str, topic: str, client_id: str, protocol: str = MQTT5
) -> AsyncIterator[ReceivedEvent]:
    """Yield every parseable event on ``topic`` (QoS 1) until the caller stops iterating."""
    async for topic_name, payload in watch(url, topic, client_id, protocol):
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and "type" in event:
            yield ReceivedEvent(topic_name, event)


# --- the consumer's session: persistent, acknowledged only after the apply ---------------


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    """paho's message id on the connection that received it; 0 for QoS 0."""
    connection: int
    """Which connection delivered it: an ack on a later one would be meaningless."""


@dataclass(frozen=True, slots=True)
class SessionSettings:
    url: str
    client_id: str
    topics: list[str]
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    session_expiry: int = 86400
    keepalive: int = 30
    receive_maximum: int = 1000
    will_topic: str | None = None
    will_payload: bytes = b""


def tls_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> ssl.SSLContext:
    """Verify the relay's certificate and hostname; optionally present a client cert."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.sslsocket_class = ClosedOnFailedHandshake  # paho leaks a refused one otherwise
    if cert_file is not None and key_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file))
    return context


@dataclass(frozen=True, slots=True)
class PubAck:
    """The broker's answer to one QoS 1 PUBLISH (MQTT 5 PUBACK)."""

    code: int
    """The reason code: ``0x00`` success, ``0x10`` no matching subscribers (a success
    too), ``>= 0x80`` a refusal (``0x87`` not authorized, ``0x97`` quota exceeded, ...)."""
    reason: str
    """The code's name and value, ``Not authorized (0x87)``."""

    @property
    def refused(self) -> bool:
        return self.code >= 0x80


class Session:
    """One MQTT 5 connection with a persistent session whose QoS 1 messages are
    acknowledged only when :meth:`ack` is called, and whose own QoS 1 publishes report
    the broker's PUBACK (:meth:`publish_acked`).

    aiomqtt acknowledges on receipt; paho, beneath it, can leave that to the caller
    (``manual_ack``), which is what effectively-once needs: a message is acknowledged only
    after its outcome is recorded, so a crash before that makes the broker redeliver it.
    MQTT wants PUBACKs in the order the PUBLISHes came; the caller keeps that order.

    aiomqtt's own ``publish`` ignores the PUBACK's reason code (a negative ack looks like
    success), so :func:`_install_hooks` chains our handlers in front of aiomqtt's on paho's
    ``on_connect`` (the broker's Receive Maximum), ``on_publish`` (each PUBACK, with its
    code) and ``on_disconnect`` (what was unanswered: fate unknown), as the agent's link
    does; this and ``manual_ack`` are the only reaches below aiomqtt 2.5.
    """

    _connections = 0

    def __init__(self, settings: SessionSettings) -> None:
        Session._connections += 1
        self.connection = Session._connections
        self.settings = settings
        parts = urlsplit(settings.url)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = settings.session_expiry
        props.ReceiveMaximum = settings.receive_maximum
        will = (
            aiomqtt.Will(settings.will_topic, settings.will_payload, qos=1, retain=True)
            if settings.will_topic
            else None
        )
        self.client = aiomqtt.Client(
            parts.hostname or "127.0.0.1",
            parts.port or (8883 if settings.tls else 1883),
            identifier=settings.client_id,
            username=settings.username,
            password=settings.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=props,
            will=will,
            tls_context=settings.tls,
            keepalive=settings.keepalive,
            # The window of publish_acked is its caller's (min of its own and the broker's
            # Receive Maximum): paho must not hold publishes back in a queue of its own.
            max_inflight_messages=0,
        )
        self.receive_maximum = 65535
        """The broker's Receive Maximum (CONNACK): unacknowledged QoS 1 publishes allowed."""
        self.closed: asyncio.Future[None] | None = None
        """Done once the connection is gone (set up by ``async with``)."""
        self._acks: dict[int, asyncio.Future[PubAck | None]] = {}
        self._paho = _install_hooks(self)  # the reach below aiomqtt: manual acks, PUBACKs,
        self._paho.manual_ack_set(True)
        # no writer for a socket paho closed meanwhile (common.paho_io)
        self._paho.on_socket_register_write = register_write_when_open(self.client)

    async def __aenter__(self) -> Session:
        self.closed = asyncio.get_running_loop().create_future()
        try:
            await self.client.__aenter__()
            for topic in self.settings.topics:
                await self.client.subscribe(topic, qos=1)
        except aiomqtt.MqttError as error:
            raise RelayUnavailable(f"relay unreachable at {self.settings.url}: {error}") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._lost()
        with contextlib.suppress(aiomqtt.MqttError):
            await self.client.__aexit__(None, None, None)

    async def messages(self) -> AsyncIterator[Incoming]:
        """Every message until the connection drops, which raises
        :class:`~relay.errors.RelayUnavailable` (an :class:`OSError`)."""
        try:
            async for message in self.client.messages:
                payload = message.payload
                if isinstance(payload, bytes | bytearray):
                    yield Incoming(str(message.topic), bytes(payload), message.mid, self.connection)
        except aiomqtt.MqttError as error:
            raise RelayUnavailable(f"relay connection lost: {error}") from None

    def ack(self, incoming: Incoming) -> None:
        """PUBACK; a message of an earlier connection will be redelivered instead."""
        if incoming.connection == self.connection and incoming.mid:
            self._paho.ack(incoming.mid, 1)

    async def publish(self, topic: str, payload: bytes, retain: bool = True) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            await self.client.publish(topic, payload, qos=1, retain=retain)

    def publish_acked(
        self,
        topic: str,
        payload: bytes,
        user_properties: Sequence[tuple[str, str]] = (),
        content_type: str | None = None,
        retain: bool = False,
    ) -> asyncio.Future[PubAck | None]:
        """Hand one QoS 1 PUBLISH (with MQTT 5 User Properties and Content Type) to the
        socket. The future resolves with its :class:`PubAck`, or with ``None`` when the
        connection went first (whether the broker has it is unknown: send it again on the
        next one). A publish that cannot be sent at all (no connection) raises
        :class:`~relay.errors.RelayUnavailable`."""
        props = Properties(PacketTypes.PUBLISH)
        if user_properties:
            props.UserProperty = list(user_properties)
        if content_type is not None:
            props.ContentType = content_type
        info = self._paho.publish(topic, payload, qos=1, retain=retain, properties=props)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise RelayUnavailable(f"publish to {topic} not sent: {paho.error_string(info.rc)}")
        future: asyncio.Future[PubAck | None] = asyncio.get_running_loop().create_future()
        self._acks[info.mid] = future
        return future

    @property
    def unacknowledged(self) -> int:
        """Publishes of :meth:`publish_acked` still waiting for their PUBACK."""
        return len(self._acks)

    # --- paho callbacks (run on the event loop thread) -----------------------------------

    def _connack(self, properties: Properties | None) -> None:
        if properties is not None:
            self.receive_maximum = int(getattr(properties, "ReceiveMaximum", 65535))

    def _puback(self, mid: int, code: ReasonCode | int) -> None:
        future = self._acks.pop(mid, None)
        if future is None or future.done():
            return  # a publish of aiomqtt's own (the retained status)
        value = code.value if isinstance(code, ReasonCode) else int(code)
        name = code.getName() if isinstance(code, ReasonCode) else "reason code"
        future.set_result(PubAck(value, f"{name} (0x{value:02x})"))

    def _lost(self) -> None:
        acks, self._acks = self._acks, {}
        for future in acks.values():
            if not future.done():
                future.set_result(None)
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)


def _install_hooks(session: Session) -> paho.Client:
    """Chain the session's handlers in front of aiomqtt's on the underlying paho client."""
    inner = session.client._client  # aiomqtt 2.5 keeps its paho client here
    if not isinstance(inner, paho.Client):
        raise RuntimeError("aiomqtt no longer exposes its paho client; update subscriber.py")
    originals: dict[str, Callable[..., Any]] = {
        name: getattr(inner, name) for name in ("on_connect", "on_publish", "on_disconnect")
    }
    if any(callback is None for callback in originals.values()):
        raise RuntimeError("aiomqtt no longer sets paho callbacks; update subscriber.py")

    def on_connect(c: Any, userdata: Any, flags: Any, code: Any, props: Any = None) -> None:
        session._connack(props)
        originals["on_connect"](c, userdata, flags, code, props)

    def on_publish(c: Any, userdata: Any, mid: int, code: Any, props: Any) -> None:
        session._puback(mid, code)
        originals["on_publish"](c, userdata, mid, code, props)

    def on_disconnect(c: Any, userdata: Any, flags: Any, code: Any, props: Any = None) -> None:
        session._lost()
        originals["on_disconnect"](c, userdata, flags, code, props)
        # aiomqtt keeps an unexpected disconnection as an exception on a future only its
        # message iterator reads; a session that only publishes reads none, so mark it
        # retrieved rather than have asyncio log "Future exception was never retrieved".
        disconnected = getattr(session.client, "_disconnected", None)
        if (
            isinstance(disconnected, asyncio.Future)
            and disconnected.done()
            and not disconnected.cancelled()
        ):
            disconnected.exception()

    inner.on_connect = on_connect
    inner.on_publish = on_publish
    inner.on_disconnect = on_disconnect
    return inner
