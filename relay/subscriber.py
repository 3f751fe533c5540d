"""The relay side's MQTT subscriber: the only module of the kit that imports aiomqtt.

Effectively-once needs two gates, both from the contract: drop an ``id`` already seen
(redelivery), and drop an event whose ``sequence`` is not newer than the last one
applied for its key (reordering after a reconnect, duplicates of older states).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import orjson

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
    version = (aiomqtt.ProtocolVersion.V311 if protocol == MQTT311
               else aiomqtt.ProtocolVersion.V5)
    return aiomqtt.Client(parts.hostname or "127.0.0.1", parts.port or 1883,
                          identifier=client_id, protocol=version)


async def watch(url: str, topic: str, client_id: str,
                protocol: str = MQTT5) -> AsyncIterator[tuple[str, bytes]]:
    """Every message on ``topic`` as ``(topic, payload)``, retained ones first; an empty
    payload is a cleared retained message. What the TUI's fleet view reads. A lost or
    refused connection raises :class:`OSError`."""
    try:
        async with _client(url, client_id, protocol) as client:
            await client.subscribe(topic, qos=1)
            async for message in client.messages:
                payload = message.payload
                if isinstance(payload, bytes | bytearray):
                    yield str(message.topic), bytes(payload)
    except aiomqtt.MqttError as error:
        # One exception type for "the relay is gone" across the kit and the TUI.
        raise OSError(f"relay unreachable at {url}: {error}") from None


async def subscribe(url: str, topic: str, client_id: str,
                    protocol: str = MQTT5) -> AsyncIterator[ReceivedEvent]:
    """Yield every parseable event on ``topic`` (QoS 1) until the caller stops iterating."""
    async for topic_name, payload in watch(url, topic, client_id, protocol):
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and "type" in event:
            yield ReceivedEvent(topic_name, event)
