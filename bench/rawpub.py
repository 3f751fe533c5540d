"""The raw limit: aiomqtt 2.5 alone publishing agent-shaped events, in its own process.

``python -m bench.rawpub --port P --count N --window W --mode MODE`` prints one JSON line.
It runs as a separate process, as the agent does, so that it competes with the bench's
subscriber and the broker for the two cores exactly as the agent would.

Every mode sends the same bytes: the agent's topics, CloudEvents payloads built
beforehand with the agent's own ``envelope()`` (~334 bytes), and per message, inside the
timed loop, the MQTT 5 content type and four user properties, encoded as bytes by
:func:`packed_properties` (byte for byte paho's ``Properties.pack()``), as
``agent/publisher.py`` does since it stopped using paho's ``Properties`` class.

Modes:

* ``paho-window``: what ``agent/publisher.py`` does: aiomqtt owns the connection, each
  message goes straight to paho's ``publish`` and a hooked ``on_publish`` resolves it,
  with a sliding window of unacknowledged publishes (``min(W, Receive Maximum)``).
* ``paho-window-properties``: the same, with a paho ``Properties`` object built per
  message (how the agent published before): what that class costs.
* ``aiomqtt-window``: aiomqtt's public ``await client.publish(qos=1)`` in tasks behind
  the same sliding window (``pending_calls_threshold`` raised, no timeout).
* ``serial``: ``await client.publish(qos=1)`` one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
import orjson
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.envelope import (
    CONTENT_TYPE,
    envelope,
    event_topic,
    now_rfc3339,
    sequence_text,
    source_urn,
    topic_base,
    uuid7,
)
from agent.model import PendingEvent
from agent.publisher import message_properties

AGENT_ID = "raw"
SOURCE = source_urn("acme", AGENT_ID)
BASE = topic_base("distillsync", "acme", AGENT_ID)

Message = tuple[str, bytes, list[tuple[str, str]]]


def messages(count: int, run: int) -> list[Message]:
    """Agent-shaped stock events: topic, CloudEvents payload, user properties."""
    now = now_rfc3339()
    out: list[Message] = []
    for i in range(1, count + 1):
        subject = f"SKU-{i // 2 + 1}/WH{i % 2 + 1}"
        data = orjson.dumps(
            {
                "batch": run,
                "on_hand": float(i % 97),
                "sku": f"SKU-{i // 2 + 1}",
                "warehouse": f"WH{i % 2 + 1}",
            },
            option=orjson.OPT_SORT_KEYS,
        )
        event = PendingEvent(i, uuid7(), "stock", "upsert", subject, now, data)
        user = [
            ("id", event.event_id),
            ("type", "distillsync.stock.upsert"),
            ("source", SOURCE),
            ("sequence", sequence_text(i)),
        ]
        out.append((event_topic(BASE, event), envelope(event, SOURCE), user))
    return out


def make_client(mode: str, port: int) -> aiomqtt.Client:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=f"bench-raw-{mode}",
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=True,
        properties=props,
        timeout=30,
        max_inflight_messages=0,
    )


def hook(client: aiomqtt.Client, name: str, before: Callable[..., None]) -> None:
    """Chain ``before`` in front of aiomqtt's own paho callback, as agent/publisher.py does."""
    inner = client._client
    original = getattr(inner, name)

    def chained(*args: Any) -> None:
        before(*args)
        original(*args)

    setattr(inner, name, chained)


async def paho_window(
    client: aiomqtt.Client, batch: list[Message], window: int, packed: bool = True
) -> None:
    inner: paho.Client = client._client
    slots = asyncio.Semaphore(window)
    done = asyncio.get_running_loop().create_future()
    pending: dict[int, int] = {}
    refused: list[str] = []
    acked = 0

    def on_publish(_c: Any, _u: Any, mid: int, code: Any, _p: Any) -> None:
        nonlocal acked
        if pending.pop(mid, None) is None:
            return
        slots.release()
        acked += 1
        if code.value >= 0x80:
            refused.append(str(code))
        if acked == len(batch) and not done.done():
            done.set_result(None)

    hook(client, "on_publish", on_publish)
    for i, (topic, payload, user) in enumerate(batch):
        await slots.acquire()
        props: Any = (
            packed_properties(user, CONTENT_TYPE) if packed else paho_properties(user, CONTENT_TYPE)
        )
        info = inner.publish(topic, payload, qos=1, properties=props)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish failed: {paho.error_string(info.rc)}")
        pending[info.mid] = i
    await done
    if refused:
        raise RuntimeError(f"{len(refused)} negative PUBACKs, e.g. {refused[0]}")


def paho_properties(user: list[tuple[str, str]], content_type: str) -> Properties:
    """The same properties through paho's own class (what it costs is the point)."""
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = content_type
    props.UserProperty = user
    return props


def packed_properties(user: list[tuple[str, str]], content_type: str) -> Any:
    """The agent's own encoder: the raw limit must pay exactly what the agent pays."""
    return message_properties(user, content_type)


async def paho_window_properties(client: aiomqtt.Client, batch: list[Message], window: int) -> None:
    await paho_window(client, batch, window, packed=False)


async def aiomqtt_window(client: aiomqtt.Client, batch: list[Message], window: int) -> None:
    client.pending_calls_threshold = window + 10
    slots = asyncio.Semaphore(window)
    tasks: set[asyncio.Task[None]] = set()

    async def one(topic: str, payload: bytes, user: list[tuple[str, str]]) -> None:
        props: Any = packed_properties(user, CONTENT_TYPE)
        try:
            await client.publish(topic, payload, qos=1, timeout=math.inf, properties=props)
        finally:
            slots.release()

    for topic, payload, user in batch:
        await slots.acquire()
        task = asyncio.create_task(one(topic, payload, user))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*list(tasks))


async def serial(client: aiomqtt.Client, batch: list[Message], _window: int) -> None:
    for topic, payload, user in batch:
        props: Any = packed_properties(user, CONTENT_TYPE)
        await client.publish(topic, payload, qos=1, properties=props)


MODES = {
    "paho-window": paho_window,
    "paho-window-properties": paho_window_properties,
    "aiomqtt-window": aiomqtt_window,
    "serial": serial,
}


async def run(mode: str, port: int, count: int, window: int, run_id: int) -> dict[str, Any]:
    batch = messages(count, run_id)
    client = make_client(mode, port)
    connack: dict[str, int] = {}

    def on_connect(_c: Any, _u: Any, _f: Any, _rc: Any, props: Any = None) -> None:
        connack["receive_maximum"] = int(getattr(props, "ReceiveMaximum", 65535))

    hook(client, "on_connect", on_connect)
    async with client:
        effective = min(window, connack.get("receive_maximum", 65535))
        cpu0, t0 = time.process_time(), time.monotonic()
        await MODES[mode](client, batch, effective)
        seconds, cpu = time.monotonic() - t0, time.process_time() - cpu0
    return {
        "mode": mode,
        "count": count,
        "window": effective,
        "started": t0,
        "receive_maximum": connack.get("receive_maximum"),
        "seconds": seconds,
        "rate": count / seconds,
        "cpu_seconds": cpu,
        "payload_bytes": sum(len(p) for _, p, _ in batch[:1000]) / min(1000, count),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--mode", choices=sorted(MODES), default="paho-window")
    parser.add_argument("--run-id", type=int, default=0)
    args = parser.parse_args()
    result = asyncio.run(run(args.mode, args.port, args.count, args.window, args.run_id))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
