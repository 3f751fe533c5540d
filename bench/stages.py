"""Where the agent's time goes, stage by stage, in one process with no broker.

``python -m bench.stages [--rows N]`` drives the agent's own classes (SqlReader,
FeedPoller, Outbox, the envelope and MQTT 5 properties) over a Dolibarr-shaped SQLite
ERP and prints microseconds per row for each stage:

* a first poll, where every row is new (read, map, enqueue);
* a second poll of the same rows, which is what every poll does to the rows inside the
  lookback window (read, map, compare hashes, enqueue nothing);
* delivery's work per event apart from the socket: fetch, envelope, properties, and
  recording the acknowledgements.

Wall time is per stage; CPU is the whole process (aiosqlite's threads included).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from agent.config import load_config
from agent.envelope import CONTENT_TYPE, envelope, event_topic, sequence_text
from agent.model import Outcome, PublishResult
from agent.outbox import Outbox
from agent.poller import FeedPoller
from agent.publisher import message_properties
from agent.sources.sql import SqlReader
from bench.parts import AgentOptions, agent_toml, insert_stock, make_erp
from bench.rawpub import paho_properties

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class Clock:
    wall: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.wall[name] = self.wall.get(name, 0.0) + seconds

    def wrap_async(self, name: str, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        async def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t0)

        return timed

    def wrap(self, name: str, fn: Callable[P, T]) -> Callable[P, T]:
        def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t0)

        return timed


def line(label: str, seconds: float, rows: int) -> str:
    return f"  {label:<52} {seconds * 1e6 / rows:8.1f} µs/row   {rows / seconds:>10,.0f}/s"


async def poll_stages(poller: FeedPoller, title: str) -> list[str]:
    clock = Clock()
    reader: Any = poller.reader
    reader.cursor_page = clock.wrap_async("read (SQLAlchemy + aiosqlite)", reader.cursor_page)
    label = "map (normalise, schema, orjson, blake2b)"
    mapper: Any = poller
    if inspect.iscoroutinefunction(poller._map):
        mapper._map = clock.wrap_async(label, poller._map)
    else:
        mapper._map = clock.wrap(label, poller._map)
    outbox: Any = poller.outbox
    outbox.commit_page = clock.wrap_async("outbox commit_page", outbox.commit_page)
    cpu0, t0 = time.process_time(), time.perf_counter()
    totals = await poller.poll()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    del reader.cursor_page, mapper._map, outbox.commit_page  # back to the class methods
    out = [f"{title}: {totals.rows:,} rows read, {totals.enqueued:,} enqueued"]
    if totals.rows == 0:
        return [*out, "  (nothing read: this agent does not re-read the window on every poll)"]
    out.append(line("whole poll (wall)", wall, totals.rows))
    out.append(line("whole poll (CPU, all threads)", cpu, totals.rows))
    for name, seconds in clock.wall.items():
        out.append(line(name, seconds, totals.rows))
    return out


async def delivery_stages(outbox: Outbox, rows: int, topic_base: str, source: str) -> list[str]:
    out = ["delivery, per event, without the socket:"]
    t0 = time.perf_counter()
    events = []
    after = 0
    while batch := await outbox.fetch_pending(after, 1000):
        events.extend(batch)
        after = batch[-1].sequence
    out.append(line("fetch_pending, pages of 1000", time.perf_counter() - t0, len(events)))

    t0 = time.perf_counter()
    for event in events:
        envelope(event, source)
        event_topic(topic_base, event)
    out.append(line("envelope + topic", time.perf_counter() - t0, len(events)))

    def user(event: Any) -> list[tuple[str, str]]:
        return [
            ("id", event.event_id),
            ("type", f"distillsync.{event.entity}.{event.op}"),
            ("source", source),
            ("sequence", sequence_text(event.sequence)),
        ]

    t0 = time.perf_counter()
    for event in events:
        message_properties(user(event), CONTENT_TYPE).pack()
    out.append(
        line(
            "MQTT 5 properties: agent's message_properties + pack",
            time.perf_counter() - t0,
            len(events),
        )
    )
    t0 = time.perf_counter()
    for event in events:
        paho_properties(user(event), CONTENT_TYPE).pack()
    out.append(
        line(
            "the same with paho's Properties class (reference)",
            time.perf_counter() - t0,
            len(events),
        )
    )

    for size in (100, 1000):
        chunk = events[: size * 10] if size == 100 else events[size * 10 :]
        if not chunk:
            continue
        t0 = time.perf_counter()
        for start in range(0, len(chunk), size):
            await outbox.record_results(
                [PublishResult(e.sequence, Outcome.ACKED) for e in chunk[start : start + size]]
            )
        out.append(line(f"record_results, batches of {size}", time.perf_counter() - t0, len(chunk)))
    return out


async def run(rows: int, synchronous: str, page_size: int, workdir: Path) -> list[str]:
    products = rows // 2
    erp = make_erp(workdir, products)
    insert_stock(erp, range(1, products + 1), 2, batch=1)
    opts = AgentOptions(
        poll_interval="1s", page_size=page_size, lookback="30s", window=100, synchronous=synchronous
    )
    config_file = workdir / "agent.toml"
    config_file.write_text(
        agent_toml(workdir / "state", "mqtt://127.0.0.1:1", erp.url, "stages", opts)
    )
    config = load_config(config_file)
    src = config.sources[0]
    reader = SqlReader(src, None)
    out = [
        f"{rows:,} stock rows, SQLite ERP, page_size {page_size}, outbox synchronous={synchronous}"
    ]
    try:
        async with Outbox.open(workdir / "state" / "outbox.db", synchronous) as outbox:
            poller = FeedPoller(src, src.entities[0], reader, outbox)
            out += await poll_stages(poller, "first poll (every row new)")
            out += await poll_stages(
                poller, "second poll (the lookback window again, every row unchanged)"
            )
            out += await delivery_stages(
                outbox, rows, "distillsync/acme/stages", "urn:distillsync:acme:stages"
            )
    finally:
        await reader.close()
        erp.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full")
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="distillsync-stages-"))
    try:
        print("\n".join(asyncio.run(run(args.rows, args.synchronous, args.page_size, workdir))))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
