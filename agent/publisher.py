"""The MQTT link to the relay: the only module that imports aiomqtt (and paho beneath it).

aiomqtt 2.5 owns the connection (CONNECT with Will, TLS, its socket callbacks on our
event loop). Publishing goes one level down, because aiomqtt's ``publish`` cannot
report what we must know: it ignores the PUBACK reason code (an MQTT 5 negative ack
looks like success) and scans its pending calls on every publish. So :class:`RelayLink`
hooks paho's ``on_publish``/``on_connect``/``on_disconnect`` in :func:`_install_hooks`,
the one place that touches aiomqtt's private ``_client``; ``tests/test_publisher.py``
fails loudly if aiomqtt changes underneath. Moving to aiomqtt 3 replaces this file.

A link reports an outcome per message (acked, nacked with the reason, or unknown when
the link died first); it never decides what that means for the outbox.

Inbound (``LinkSettings.inbound_topic``, ``{base}/in/#``): the same connection and session
carry it. paho acknowledges nothing by itself (``manual_ack``): what arrives on the inbound
topic waits in :meth:`RelayLink.next_inbound` until the caller has committed it and calls
:meth:`RelayLink.ack`, in the order it came; anything else that arrives (the retained
watermark, its probe) is acknowledged at once. A message is acknowledged only on the
connection that delivered it; one left unacknowledged when the connection ends is the
broker's to redeliver on the next (the session keeps it).

MQTT 5 is the default and the design. ``relay.protocol = "3.1.1"`` exists for brokers that
speak nothing newer (the demo's embedded amqtt); the link then keeps every guarantee the
older protocol can carry and loses what it cannot:

* session: ``clean_session = False`` with the fixed client id, instead of ``clean_start =
  False`` and a Session Expiry Interval (how long the broker keeps it is its own setting);
* no CONNECT or PUBLISH properties: the User Properties (``id``, ``type``, ``source``,
  ``sequence``) and the Content Type are not sent. Nothing is lost, since the payload is
  the whole CloudEvents envelope, but subscribers must parse it to route and dedupe;
* no Receive Maximum (the window is ``relay.max_inflight``) and no Maximum Packet Size
  (MQTT's own ceiling applies, so an oversize event is the broker's to refuse);
* no reason codes on PUBACK, so every PUBACK is an ack: **a broker that drops a publish
  (an ACL denial, a quota) is invisible**, the event counts as delivered and never becomes
  a dead letter. Check the broker's ACL against the topics before relying on 3.1.1;
* the Will: 3.1.1's DISCONNECT has no reason code and always discards the Will, so a
  close that must leave the Will (an error, a cancellation, an abort) drops the TCP
  connection without DISCONNECT, which is when a 3.1.1 broker publishes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MQTT5, MQTT311, check_private
from agent.errors import ConfigError, RelayError
from agent.model import Outcome
from common.paho_io import register_write_when_open
from common.tls import ClosedOnFailedHandshake

log = logging.getLogger("distillsync.link")

# Only loud failures of the broker's side are refusals; 0x10 "no matching subscribers" is
# a success, and the event is delivered as far as the relay is concerned.
_FIRST_FAILURE_CODE = 0x80
_DEFAULT_MAX_PACKET = 268_435_455  # MQTT's own ceiling when the broker names none
_DISCONNECT_WITH_WILL = 0x04  # MQTT 5: "close, and publish my Will Message"


@dataclass(frozen=True, slots=True)
class LinkSettings:
    host: str
    port: int
    tls: ssl.SSLContext | None
    client_id: str
    username: str | None
    password: str | None
    keepalive: int
    session_expiry: int
    will_topic: str
    will_payload: bytes
    protocol: str = MQTT5
    """``MQTT5`` or ``MQTT311`` (``relay.protocol``)."""
    inbound_topic: str | None = None
    """Subscribed (QoS 1) on every connection; its messages are acknowledged only through
    :meth:`RelayLink.ack`. ``None``: no inbound."""


@dataclass(frozen=True, slots=True)
class Ack:
    outcome: Outcome
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message received on the inbound topic, to be acknowledged with :meth:`RelayLink.ack`
    once it is recorded."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    connection: int
    """The link that received it: an ack on another connection would be meaningless."""


class LinkLost(RelayError):
    """The connection dropped; every unacknowledged publish is of unknown fate."""


class RetainedUnknown(RelayError):
    """The link is up but cannot tell what the relay retains on a topic: the subscription or
    the probe was refused (an ACL), or neither came back in time. Another connection may."""


def tls_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> ssl.SSLContext:
    """Verify the relay's certificate and hostname; optionally present a client cert.

    A file that cannot be used is a :class:`ConfigError` naming its ``relay.*`` key, and a
    private key others may read is refused (:func:`agent.config.check_private`)."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        context.sslsocket_class = ClosedOnFailedHandshake
    except (OSError, ssl.SSLError) as error:
        raise ConfigError([f"relay.ca_file: cannot load {ca_file}: {_ssl_words(error)}"]) from None
    if cert_file is not None and key_file is not None:
        check_private(key_file, "relay.key_file")
        try:
            context.load_cert_chain(str(cert_file), str(key_file), password=_no_passphrase)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(
                [
                    f"relay.cert_file: cannot use {cert_file} with relay.key_file "
                    f"{key_file}: {_ssl_words(error)}"
                ]
            ) from None
    return context


def _no_passphrase() -> str:
    # OpenSSL would otherwise prompt on the terminal, which a service does not have.
    raise ConfigError(
        [
            "relay.key_file: the private key is encrypted and the agent cannot ask "
            "for its passphrase; store it unencrypted, mode 600 "
            "(openssl pkey -in ENCRYPTED -out PLAIN)"
        ]
    )


def _ssl_words(error: OSError) -> str:
    """OpenSSL's reason without its library tag and source line: ``[SSL:
    CERTIFICATE_VERIFY_FAILED] certificate verify failed: ... (_ssl.c:1006)`` ->
    ``certificate verify failed: ...``."""
    if not isinstance(error, ssl.SSLError) and error.strerror:
        return error.strerror
    words = re.sub(r"^\[[^]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", str(error)).strip()
    return "not a PEM certificate with its matching key" if words == "PEM lib" else words


_CLOSED_EARLY = "the relay closed the connection before accepting it"
# What a connection failure means, in an operator's words: (text in the library's error,
# the explanation). The first match wins; the library's own text follows in brackets.
_CONNECT_FAILURES = (
    (
        "certificate has expired",
        "the relay's TLS certificate has expired (or this machine's clock is wrong)",
    ),
    (
        "certificate is not yet valid",
        "the relay's TLS certificate is not valid yet (or this machine's clock is wrong)",
    ),
    (
        "Hostname mismatch",
        "the relay's TLS certificate is not issued for {host}: connect by "
        "a name the certificate lists",
    ),
    (
        "IP address mismatch",
        "the relay's TLS certificate is not issued for {host}: connect by "
        "a name the certificate lists",
    ),
    (
        "certificate verify failed",
        "the relay's TLS certificate is not signed by a CA we "
        "trust; set relay.ca_file to the CA that signed it",
    ),
    (
        "WRONG_VERSION_NUMBER",
        "the relay's port does not speak TLS: use its TLS port, or mqtt:// to a loopback relay",
    ),
    (_CLOSED_EARLY, "the relay closed the connection while we logged in{tls}"),
    (
        "Not authorized",
        "the relay refused the login: check relay.username and the password "
        "(or the client certificate)",
    ),
    (
        "Bad user name or password",
        "the relay refused the login: check relay.username and the password",
    ),
)


def describe_connect_failure(error: Exception, host: str, tls: bool) -> str:
    """``error`` (from aiomqtt or paho) with, where known, what it means and what to do."""
    raw = _ssl_words(error) if isinstance(error, OSError) else str(error)
    raw = re.sub(r"^\[SSL: [A-Z_]+\]\s*|\s*\(_ssl\.c:\d+\)$", "", raw)
    hint = (
        (
            " (a TLS relay does that when it requires a client certificate and gets none it "
            "trusts: see relay.cert_file and relay.key_file)"
        )
        if tls
        else ""
    )
    for needle, words in _CONNECT_FAILURES:
        if needle in raw:
            words = words.format(host=host, tls=hint)
            return words if raw == _CLOSED_EARLY else f"{words} ({raw})"
    return raw


def parse_relay_url(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    secure = parts.scheme == "mqtts"
    return parts.hostname or "", parts.port or (8883 if secure else 1883), secure


class PackedProperties:
    """A PUBLISH's MQTT 5 properties, encoded once. paho only ever calls ``pack()`` on the
    properties of a PUBLISH, and building its ``Properties`` object per message cost ~40 µs
    of the ~150 µs a publish took (bench/README.md, P1); these bytes cost ~3 µs."""

    __slots__ = ("packed",)

    def __init__(self, packed: bytes) -> None:
        self.packed = packed

    def pack(self) -> bytes:
        return self.packed


def _utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    return len(raw).to_bytes(2, "big") + raw


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = value >> 7, value & 0x7F
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


_CONTENT_TYPE_ID, _USER_PROPERTY_ID = b"\x03", b"\x26"  # MQTT 5 §2.2.2.2


def message_properties(user: list[tuple[str, str]], content_type: str) -> PackedProperties:
    """Content Type and User Properties, length-prefixed, byte for byte as paho packs them
    (``tests/test_publisher.py`` compares the two)."""
    body = (
        _CONTENT_TYPE_ID
        + _utf8(content_type)
        + b"".join(_USER_PROPERTY_ID + _utf8(key) + _utf8(value) for key, value in user)
    )
    return PackedProperties(_varint(len(body)) + body)


def _reason_text(code: ReasonCode) -> str:
    return f"{code.getName()} (0x{code.value:02x})"


class RelayLink:
    """One MQTT connection with a persistent session; use as an async context manager."""

    _connections = 0

    def __init__(self, settings: LinkSettings) -> None:
        if settings.protocol not in (MQTT5, MQTT311):
            raise ValueError(f"unknown MQTT protocol {settings.protocol!r}")
        self.settings = settings
        self.mqtt5 = settings.protocol == MQTT5
        self.receive_maximum = 65535
        self.max_packet_size = _DEFAULT_MAX_PACKET
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.leave_will = True
        """Close with the Will (status offline) unless we said "offline" ourselves."""
        self._pending: dict[int, tuple[asyncio.Future[Ack], float]] = {}
        self._client = self._make_client()
        self._paho = _install_hooks(self._client, self)
        # paho logs every PUBLISH and PUBACK at debug level: ~4 µs a message even when the
        # level filters them out. Our own log says what matters about the link.
        self._paho.disable_logger()
        RelayLink._connections += 1
        self.connection = RelayLink._connections
        self._inbound: list[Incoming] = []
        self._inbound_ready = asyncio.Event()
        self._count_inbound: Callable[[int], None] | None = None
        if settings.inbound_topic is not None:
            # Before CONNECT: a persistent session delivers what waited as soon as it is back,
            # before this connection has subscribed again.
            self._paho.manual_ack_set(True)
            self._paho.message_callback_add(settings.inbound_topic, self._on_inbound)

    def _make_client(self) -> aiomqtt.Client:
        s = self.settings
        will = aiomqtt.Will(s.will_topic, s.will_payload, qos=1, retain=True)
        clean_start: paho.CleanStartOption = paho.MQTT_CLEAN_START_FIRST_ONLY
        clean_session: bool | None = None
        props: Properties | None = None
        if self.mqtt5:
            clean_start, props = False, Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = s.session_expiry
        else:
            clean_session = False  # 3.1.1's persistent session; clean_start is 5's alone
        version = aiomqtt.ProtocolVersion.V5 if self.mqtt5 else aiomqtt.ProtocolVersion.V311
        return aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.client_id,
            username=s.username,
            password=s.password,
            protocol=version,
            clean_start=clean_start,
            clean_session=clean_session,
            properties=props,
            will=will,
            keepalive=s.keepalive,
            tls_context=s.tls,
            timeout=30,
            # The sliding window is ours; paho must not hold messages back in its own queue.
            max_inflight_messages=0,
        )

    async def __aenter__(self) -> RelayLink:
        try:
            await self._client.__aenter__()
        except aiomqtt.MqttError as error:
            s = self.settings
            why = describe_connect_failure(error, s.host, s.tls is not None)
            raise RelayError(f"cannot connect to {s.host}:{s.port}: {why}") from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._fail_pending("link closed")
        if self.leave_will and not self.closed.done():
            # Leaving on an error or a cancellation: a plain DISCONNECT would discard the
            # Will and leave the retained status "online" for an agent that is gone.
            self._disconnect_with_will()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.closed), 5.0)
        with contextlib.suppress(aiomqtt.MqttError, OSError, asyncio.TimeoutError):
            await self._client.__aexit__(exc_type, exc, tb)
        if not self.closed.done():
            self.closed.set_result(None)

    def _disconnect_with_will(self) -> None:
        if not self.mqtt5:
            self._drop_connection()
            return
        code = ReasonCode(PacketTypes.DISCONNECT, identifier=_DISCONNECT_WITH_WILL)
        with contextlib.suppress(Exception):
            self._paho.disconnect(reasoncode=code)

    def _drop_connection(self) -> None:
        """MQTT 3.1.1's way to leave the Will: end the connection without DISCONNECT.

        Only shut the socket down: paho then reads end-of-file on its next read, closes
        the socket itself and reports the lost connection, like any other."""
        sock = self._paho.socket()
        if isinstance(sock, socket.socket):  # an SSLSocket too
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # --- publishing ----------------------------------------------------------------------

    def send(
        self, topic: str, payload: bytes, properties: PackedProperties | None, retain: bool = False
    ) -> asyncio.Future[Ack]:
        """Hand one QoS 1 message to the socket; the future resolves on its PUBACK."""
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        if not self.mqtt5:
            properties = None  # 3.1.1 has no properties; the envelope carries them all
        size = self.packet_size(topic, payload, properties, self.mqtt5)
        if size > self.max_packet_size:
            future.set_result(
                Ack(
                    Outcome.NACKED,
                    f"message of {size} bytes exceeds the "
                    f"broker's maximum packet size "
                    f"{self.max_packet_size}",
                )
            )
            return future
        info = self._paho.publish(topic, payload, qos=1, retain=retain, properties=properties)  # type: ignore[arg-type]
        if info.rc != paho.MQTT_ERR_SUCCESS:
            # Not sent (no connection): unknown, and delivery must start over from the
            # oldest pending event on a new connection rather than carry on past it.
            future.set_result(Ack(Outcome.UNKNOWN, paho.error_string(info.rc)))
            self.abort(f"publish not sent: {paho.error_string(info.rc)}")
            return future
        self._pending[info.mid] = (future, time.monotonic())
        return future

    async def read_retained(self, topic: str, within: float) -> bytes | None:
        """The message the relay retains on ``topic``, or ``None`` when it retains none.

        MQTT has no "that was all" for retained messages, so rather than wait out a timeout
        when there is none: subscribe, then publish a probe (QoS 1, not retained, a random
        payload) to the same topic. A broker sends the retained message as it takes the
        subscription, before it forwards anything published afterwards, so once the probe
        comes back no retained message is still to come. The retain flag tells the two apart
        (a forwarded publish has it cleared, in 3.1.1 and in 5 without Retain As Published).
        Raises :class:`RetainedUnknown` when the relay cannot tell within ``within``
        seconds, :class:`LinkLost` when the connection goes first.

        The subscription is withdrawn afterwards. Whatever still arrives on ``topic`` later
        (a session kept across a crash keeps its subscription too) is dropped here, rather
        than queued in aiomqtt for a reader that does not exist.
        """
        found: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        probe = b'{"probe": "%s"}' % secrets.token_hex(8).encode()

        def on_message(_client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
            self._ack_now(message)
            if found.done():
                return
            if message.retain:
                found.set_result(bytes(message.payload))
            elif message.payload == probe:
                found.set_result(None)

        self._paho.message_callback_add(topic, on_message)
        try:
            return await asyncio.wait_for(self._subscribe_and_probe(topic, probe, found), within)
        except TimeoutError:
            raise RetainedUnknown(
                f"nothing came back on {topic} within {within:.0f}s (may "
                f"this agent read that topic?)"
            ) from None
        finally:
            self._paho.message_callback_add(topic, self._drop_message)
            if not self.closed.done():
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    await self._client.unsubscribe(topic, timeout=within)

    async def _subscribe_and_probe(
        self, topic: str, probe: bytes, found: asyncio.Future[bytes | None]
    ) -> bytes | None:
        try:
            codes = await self._client.subscribe(topic, qos=1, timeout=math.inf)
        except aiomqtt.MqttError as error:
            raise LinkLost(f"cannot subscribe to {topic}: {error}") from None
        refused = [
            code for code in codes if (code.value if isinstance(code, ReasonCode) else code) >= 0x80
        ]
        if refused:
            code = refused[0]
            words = _reason_text(code) if isinstance(code, ReasonCode) else f"0x{code:02x}"
            raise RetainedUnknown(f"the relay refused the subscription to {topic}: {words}")
        ack = await self.send(topic, probe, None)
        if ack.outcome is Outcome.NACKED:
            raise RetainedUnknown(f"the relay refused a publish to {topic}: {ack.reason}")
        if ack.outcome is Outcome.UNKNOWN:
            raise LinkLost(f"no answer to the probe on {topic}: {ack.reason}")
        waits: list[asyncio.Future[Any]] = [found, self.closed]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if not found.done():
            raise LinkLost(f"connection lost while reading {topic}")
        return found.result()

    # --- inbound ---------------------------------------------------------------------------

    async def subscribe_inbound(self) -> str | None:
        """Subscribe to the inbound topic (QoS 1); the broker's refusal in words, or ``None``.
        Raises :class:`LinkLost` when the connection goes first."""
        topic = self.settings.inbound_topic
        if topic is None:
            return None
        try:
            codes = await self._client.subscribe(topic, qos=1, timeout=math.inf)
        except aiomqtt.MqttError as error:
            raise LinkLost(f"cannot subscribe to {topic}: {error}") from None
        for code in codes:
            value = code.value if isinstance(code, ReasonCode) else int(code)
            if value >= _FIRST_FAILURE_CODE:
                words = _reason_text(code) if isinstance(code, ReasonCode) else f"0x{value:02x}"
                return f"the relay refused the subscription to {topic}: {words}"
        return None

    def count_inbound(self, count: Callable[[int], None]) -> None:
        """Tell ``count`` how many inbound messages arrive, as they arrive (and now, how
        many arrived before this was called)."""
        self._count_inbound = count
        if self._inbound:
            count(len(self._inbound))

    async def next_inbound(self, limit: int) -> list[Incoming]:
        """The inbound messages received so far and not yet taken, oldest first, at most
        ``limit``; waits for at least one. Empty once the connection is closed."""
        while not self._inbound and not self.closed.done():
            self._inbound_ready.clear()
            await _first_of(self._inbound_ready.wait(), self.closed)
        return self.take_inbound(limit)

    def take_inbound(self, limit: int) -> list[Incoming]:
        """As :meth:`next_inbound`, without waiting: possibly none."""
        if self.closed.done():
            self._inbound.clear()  # the broker redelivers them on the next connection
            return []
        taken, self._inbound = self._inbound[:limit], self._inbound[limit:]
        return taken

    def ack(self, message: Incoming) -> None:
        """PUBACK ``message``, once it is recorded; call in the order they came. Nothing on
        another connection than the one that delivered it (that one will redeliver it)."""
        if message.connection == self.connection and message.qos > 0 and not self.closed.done():
            self._paho.ack(message.mid, message.qos)

    def _on_inbound(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        self._inbound.append(
            Incoming(
                message.topic,
                bytes(message.payload),
                message.mid,
                message.qos,
                self.connection,
            )
        )
        self._inbound_ready.set()
        if self._count_inbound is not None:
            self._count_inbound(1)

    def _ack_now(self, message: paho.MQTTMessage) -> None:
        """A message the link reads for itself (not inbound): acknowledged on receipt."""
        if self.settings.inbound_topic is not None and message.qos > 0:
            self._paho.ack(message.mid, message.qos)

    def _drop_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        """What arrives on a topic read once and left (see :meth:`read_retained`)."""
        self._ack_now(message)

    @staticmethod
    def packet_size(
        topic: str, payload: bytes, properties: PackedProperties | None, mqtt5: bool = True
    ) -> int:
        """The whole QoS 1 PUBLISH packet, as MQTT 5's Maximum Packet Size counts it."""
        props = len(properties.pack()) if properties is not None else int(mqtt5)
        # topic length prefix + topic + packet id + properties (with their length) + payload
        remaining = 2 + len(topic.encode("utf-8")) + 2 + props + len(payload)
        # fixed header: one type byte, then the remaining length as a variable byte integer
        length_bytes = 1 + sum(remaining >= limit for limit in (128, 16_384, 2_097_152))
        return 1 + length_bytes + remaining

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def settle(self, deadline: float) -> None:
        """Wait until every publish sent so far has its answer, or ``deadline`` seconds."""
        futures = [future for future, _ in self._pending.values()]
        if futures:
            await asyncio.wait(futures, timeout=deadline)

    def oldest_unacked_age(self) -> float:
        if not self._pending:
            return 0.0
        oldest = min(sent for _, sent in self._pending.values())
        return time.monotonic() - oldest

    def abort(self, why: str) -> None:
        """Give up on this connection (e.g. PUBACKs stopped coming): fail what is pending.

        The Will goes out, so the fleet sees this agent offline until it reconnects.
        """
        log.warning("relay link aborted: %s", why)
        self._fail_pending(why)
        self._disconnect_with_will()
        if not self.closed.done():
            self.closed.set_result(None)

    # --- paho callbacks (run on the event loop thread) -----------------------------------

    def on_connack(self, properties: Properties | None) -> None:
        if properties is None or not self.mqtt5:
            return  # 3.1.1: no Receive Maximum, no Maximum Packet Size; the defaults stand
        self.receive_maximum = int(getattr(properties, "ReceiveMaximum", 65535))
        self.max_packet_size = int(getattr(properties, "MaximumPacketSize", _DEFAULT_MAX_PACKET))

    def on_puback(self, mid: int, code: ReasonCode) -> None:
        entry = self._pending.pop(mid, None)
        if entry is None or entry[0].done():
            return
        # 3.1.1's PUBACK has no reason code (paho reports 0): every one is an ack.
        if self.mqtt5 and code.value >= _FIRST_FAILURE_CODE:
            entry[0].set_result(Ack(Outcome.NACKED, f"broker refused: {_reason_text(code)}"))
        else:
            entry[0].set_result(Ack(Outcome.ACKED))

    def on_disconnect(self, code: Any) -> None:
        self._fail_pending(f"connection lost ({code})")
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for future, _ in pending.values():
            if not future.done():
                future.set_result(Ack(Outcome.UNKNOWN, why))


async def _first_of(*waits: Any) -> None:
    """Until the first of ``waits`` is done; the coroutines among them are cancelled, the
    futures (shared ones, like a link's ``closed``) only let go."""
    tasks = [w if isinstance(w, asyncio.Future) else asyncio.ensure_future(w) for w in waits]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task, wait in zip(tasks, waits, strict=True):
        if task is not wait:
            task.cancel()


def _install_hooks(client: aiomqtt.Client, link: RelayLink) -> paho.Client:
    """Chain our handlers in front of aiomqtt's on the underlying paho client."""
    inner = client._client  # aiomqtt 2.5 keeps its paho client here
    if not isinstance(inner, paho.Client):
        raise RuntimeError("aiomqtt no longer exposes its paho client; update publisher.py")
    originals: dict[str, Callable[..., Any]] = {
        name: getattr(inner, name)
        for name in ("on_connect", "on_publish", "on_disconnect", "on_message")
    }
    if any(callback is None for callback in originals.values()):
        raise RuntimeError("aiomqtt no longer sets paho callbacks; update publisher.py")

    def on_connect(c: Any, userdata: Any, flags: Any, code: Any, props: Any = None) -> None:
        link.on_connack(props)
        originals["on_connect"](c, userdata, flags, code, props)

    def on_publish(c: Any, userdata: Any, mid: int, code: ReasonCode, props: Any) -> None:
        link.on_puback(mid, code)
        originals["on_publish"](c, userdata, mid, code, props)

    def on_disconnect(c: Any, userdata: Any, flags: Any, code: Any, props: Any = None) -> None:
        link.on_disconnect(code)
        originals["on_disconnect"](c, userdata, flags, code, props)
        # Closed before its CONNACK (a TLS relay that wants a client certificate does
        # that): aiomqtt ignores it and would wait out its whole connect timeout.
        connecting = getattr(client, "_connected", None)
        if isinstance(connecting, asyncio.Future) and not connecting.done():
            connecting.set_exception(aiomqtt.MqttError(_CLOSED_EARLY))
        # aiomqtt keeps an unexpected disconnection as an exception on a future that only
        # its message iterator reads; we report the loss ourselves, so mark it retrieved
        # rather than have asyncio log "Future exception was never retrieved" each time.
        disconnected = getattr(client, "_disconnected", None)
        if (
            isinstance(disconnected, asyncio.Future)
            and disconnected.done()
            and not disconnected.cancelled()
        ):
            disconnected.exception()

    def on_message(c: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        link._ack_now(message)  # on no topic the link reads: nobody else would ever ack it
        originals["on_message"](c, userdata, message)

    inner.on_connect = on_connect
    inner.on_publish = on_publish
    inner.on_message = on_message
    inner.on_disconnect = on_disconnect
    inner.on_socket_register_write = register_write_when_open(client)
    return inner
