"""The measured scenarios. Each returns plain numbers; ``bench.report`` prints them.

No scenario asserts anything about speed: a figure that misses its aim is printed, not
failed. A scenario fails only when the pipeline itself breaks (events missing, the agent
exiting), since then no figure would mean anything.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench.parts import (
    REPO,
    Agent,
    AgentOptions,
    Broker,
    Received,
    insert_stock,
    make_erp,
    running_agent,
    wait_until,
    write_agent_config,
)

WAREHOUSES = 2


@dataclass
class Context:
    workdir: Path
    broker: Broker
    sub: Received
    opts: AgentOptions
    profile_dir: Path | None = None
    agent_tree: Path = REPO
    notes: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        print(f"  .. {text}", file=sys.stderr, flush=True)

    def profile(self, name: str) -> Path | None:
        return self.profile_dir / f"{name}.prof" if self.profile_dir else None


def own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


# --- 1. raw limit -------------------------------------------------------------------------


@dataclass
class RawResult:
    mode: str
    count: int
    window: int
    receive_maximum: int | None
    acked_rate: float
    """Publisher side: messages / (first publish .. last PUBACK)."""
    received_rate: float
    """Subscriber side: messages / (first publish .. last receipt)."""
    publisher_cpu: float
    broker_cpu: float
    subscriber_cpu: float
    payload_bytes: float


def raw(ctx: Context, mode: str, count: int, run_id: int) -> RawResult:
    ctx.say(f"raw publish, {mode}, {count:,} messages")
    ctx.sub.expect("raw")
    broker0, sub0 = ctx.broker.cpu(), own_cpu()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.rawpub",
            "--port",
            str(ctx.broker.port),
            "--count",
            str(count),
            "--window",
            str(ctx.opts.window),
            "--mode",
            mode,
            "--run-id",
            str(run_id),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.rawpub {mode} failed:\n{done.stderr[-3000:]}")
    out: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    ctx.sub.wait_for(count, 120, f"{count:,} raw messages at the subscriber")
    last = max(at for at, _ in ctx.sub.received)
    return RawResult(
        mode=mode,
        count=count,
        window=int(out["window"]),
        receive_maximum=out["receive_maximum"],
        acked_rate=float(out["rate"]),
        received_rate=count / (last - float(out["started"])),
        publisher_cpu=float(out["cpu_seconds"]) / float(out["seconds"]),
        broker_cpu=(ctx.broker.cpu() - broker0) / (last - float(out["started"])),
        subscriber_cpu=(own_cpu() - sub0) / (last - float(out["started"])),
        payload_bytes=float(out["payload_bytes"]),
    )


# --- 2. end-to-end throughput -------------------------------------------------------------


@dataclass
class E2EResult:
    rows: int
    window: int | None
    rate: float
    """rows / (ERP commit .. last event at the subscriber)."""
    first_event: float
    """seconds from the ERP commit to the first event at the subscriber."""
    capture_seconds: float
    """seconds from the ERP commit until every row was in the outbox."""
    agent_cpu: float
    agent_cpu_per_event: float
    """agent CPU seconds (all threads) per event, commit .. last event: less sensitive
    to other load on the machine than the rates."""
    broker_cpu: float
    subscriber_cpu: float
    peak_rss: int
    payload_bytes: float


def end_to_end(ctx: Context, rows: int) -> E2EResult:
    workdir = ctx.workdir / "e2e"
    workdir.mkdir()
    products = rows // WAREHOUSES
    erp = make_erp(workdir, products, WAREHOUSES)
    config = write_agent_config(workdir, "bench-e2e", ctx.broker, erp, ctx.opts)
    ctx.sub.expect("bench-e2e")
    with running_agent(workdir, config, ctx.profile("e2e"), ctx.agent_tree) as agent:
        agent.wait_log("ready")
        ctx.say(f"end to end: committing {rows:,} stock rows in one ERP transaction")
        assert agent.rss is not None
        agent.rss.reset()
        cpu0, broker0, sub0 = agent.cpu(), ctx.broker.cpu(), own_cpu()
        insert_stock(erp, range(1, products + 1), WAREHOUSES, batch=1)
        committed = time.monotonic()
        captured = wait_until(lambda: agent.captured() >= rows, 600, "capture", every=0.05)
        ctx.sub.wait_for(rows, 600, f"{rows:,} events at the subscriber")
        times = [at for at, _ in ctx.sub.received]
        last = max(times)
        cpu, broker_cpu, sub_cpu = (
            agent.cpu() - cpu0,
            ctx.broker.cpu() - broker0,
            own_cpu() - sub0,
        )
        window = agent.window()
        peak = agent.rss.peak
    erp.close()
    span = last - committed
    return E2EResult(
        rows=rows,
        window=window,
        rate=rows / span,
        first_event=min(times) - committed,
        capture_seconds=captured - committed,
        agent_cpu=cpu / span,
        agent_cpu_per_event=cpu / rows,
        broker_cpu=broker_cpu / span,
        subscriber_cpu=sub_cpu / span,
        peak_rss=peak,
        payload_bytes=ctx.sub.payload_size(),
    )


# --- 3 and 6. latency at a steady rate, idle CPU ------------------------------------------


@dataclass
class LatencyResult:
    rate: int
    seconds: float
    changes: int
    achieved_rate: float
    p50: float
    p99: float
    max: float
    capture_p50: float
    capture_p99: float
    """ERP commit .. the event's enqueue time in the outbox."""
    delivery_p50: float
    delivery_p99: float
    """enqueue time .. subscriber receipt."""
    agent_cpu_steady: float
    idle_cpu: float
    """CPU share of one core, no changes, few rows inside the lookback window."""
    idle_cpu_after: float
    """CPU share of one core, no changes, right after the steady run."""
    idle_rss: int
    steady_rss: int
    idle_seconds: float


def _steady_changes(
    erp: Any, keys: int, rate: int, seconds: float, commits: dict[int, float]
) -> int:
    """``rate`` stock changes a second, as 100 ERP transactions a second of ``rate/100``
    rows each, each row carrying its transaction's number; ``commits`` gets each
    transaction's commit time."""
    ticks_per_second = 100
    per_tick = max(1, rate // ticks_per_second)
    conn = erp.conn
    start, tick, written = time.monotonic(), 0, 0
    while True:
        tick += 1
        due = start + tick / ticks_per_second
        if due - start > seconds:
            return written
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        rows = [(float(tick), tick, (written + i) % keys + 1) for i in range(per_tick)]
        conn.execute("BEGIN")
        conn.executemany(
            "UPDATE llx_product_stock SET reel = ?, bench_batch = ?, "
            "tms = datetime('now') WHERE rowid = ?",
            rows,
        )
        conn.execute("COMMIT")
        commits[tick] = time.monotonic()
        written += per_tick


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(
    ctx: Context, keys: int, rate: int, seconds: float, idle_seconds: float
) -> LatencyResult:
    workdir = ctx.workdir / "latency"
    workdir.mkdir()
    products = keys // WAREHOUSES
    erp = make_erp(workdir, products, WAREHOUSES)
    insert_stock(erp, range(1, products + 1), WAREHOUSES, batch=0, quiet=True)
    config = write_agent_config(workdir, "bench-lat", ctx.broker, erp, ctx.opts)
    ctx.sub.expect("bench-lat")
    with running_agent(workdir, config, ctx.profile("latency"), ctx.agent_tree) as agent:
        ctx.say(f"latency: initial sync of {keys:,} keys")
        ctx.sub.wait_for(keys, 300, "the initial sync")
        time.sleep(1.0)
        ctx.say(f"idle CPU over {idle_seconds:.0f}s")
        idle_cpu, idle_rss = _idle(agent, idle_seconds), agent.rss_now()
        ctx.sub.expect("bench-lat")
        commits: dict[int, float] = {}
        ctx.say(f"latency: {rate}/s changes for {seconds:.0f}s")
        assert agent.rss is not None
        agent.rss.reset()
        cpu0, t0 = agent.cpu(), time.monotonic()
        written = _steady_changes(erp, keys, rate, seconds, commits)
        elapsed = time.monotonic() - t0
        ctx.sub.wait_for(written, 120, f"{written:,} changes at the subscriber")
        steady_cpu = (agent.cpu() - cpu0) / (time.monotonic() - t0)
        steady_rss = agent.rss.peak
        time.sleep(1.0)
        ctx.say(f"idle CPU over {idle_seconds:.0f}s, right after the steady run")
        idle_after = _idle(agent, idle_seconds)
    erp.close()
    # The event's "time" is when the agent enqueued it (wall clock): it splits each lag
    # into capture (commit .. in the outbox) and delivery (outbox .. subscriber).
    to_wall = time.time() - time.monotonic()
    lags, captures, deliveries = [], [], []
    for at, event in ctx.sub.distinct().values():
        committed = commits.get(event["data"]["batch"])
        if committed is None:
            continue
        enqueued = dt.datetime.fromisoformat(event["time"]).timestamp() - to_wall
        lags.append(at - committed)
        captures.append(enqueued - committed)
        deliveries.append(at - enqueued)
    ctx.say(f"latency histogram, commit → outbox: {_histogram(captures)}")
    ctx.say(f"latency histogram, outbox → subscriber: {_histogram(deliveries)}")
    return LatencyResult(
        rate=rate,
        seconds=seconds,
        changes=written,
        achieved_rate=written / elapsed,
        p50=statistics.median(lags),
        p99=_percentile(lags, 0.99),
        max=max(lags),
        capture_p50=statistics.median(captures),
        capture_p99=_percentile(captures, 0.99),
        delivery_p50=statistics.median(deliveries),
        delivery_p99=_percentile(deliveries, 0.99),
        agent_cpu_steady=steady_cpu,
        idle_cpu=idle_cpu,
        idle_cpu_after=idle_after,
        idle_rss=idle_rss,
        steady_rss=steady_rss,
        idle_seconds=idle_seconds,
    )


def _histogram(values: list[float]) -> str:
    edges = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, math.inf]
    counts = [0] * len(edges)
    for value in values:
        counts[next(i for i, edge in enumerate(edges) if value < edge)] += 1
    names = ["<10ms", "<50ms", "<100ms", "<250ms", "<500ms", "<1s", "≥1s"]
    return " ".join(f"{n}:{c}" for n, c in zip(names, counts, strict=True) if c)


WAITING_SECONDS = 15.0
"""How long the backlog's waiting CPU is averaged over (see :func:`_stage`)."""


def _idle(agent: Agent, seconds: float) -> float:
    cpu0, t0 = agent.cpu(), time.monotonic()
    time.sleep(seconds)
    return (agent.cpu() - cpu0) / (time.monotonic() - t0)


# --- 4 and 5. backlog drain after an outage, RSS ------------------------------------------


@dataclass
class Stage:
    backlog: int
    build_seconds: float
    """ERP commit .. every row pending in the outbox (broker down)."""
    reconnect_seconds: float
    """broker restart .. first backlog event at the subscriber (the agent's backoff)."""
    drain_rate: float
    """backlog / (first .. last backlog event at the subscriber)."""
    outbox_drain_rate: float
    """backlog / (first PUBACK recorded .. nothing pending), seen in the outbox."""
    peak_rss: int
    build_cpu: float
    """agent CPU seconds from the ERP commit until the backlog was built."""
    drain_cpu: float
    """agent CPU seconds from the broker restart until nothing was pending."""
    waiting_cpu: float
    """agent CPU share of one core with the backlog built, the broker down, no changes."""


@dataclass
class OutageResult:
    small: Stage
    large: Stage
    lifetime_peak_rss: int


def outage(ctx: Context, small: int, large: int) -> OutageResult:
    workdir = ctx.workdir / "outage"
    workdir.mkdir()
    products = (small + large) // WAREHOUSES
    erp = make_erp(workdir, products, WAREHOUSES)
    config = write_agent_config(workdir, "bench-outage", ctx.broker, erp, ctx.opts)
    with running_agent(workdir, config, ctx.profile("outage"), ctx.agent_tree) as agent:
        agent.wait_log("ready")
        first = range(1, small // WAREHOUSES + 1)
        stages = [_stage(ctx, agent, erp, first, batch=1)]
        second = range(first.stop, first.stop + large // WAREHOUSES)
        stages.append(_stage(ctx, agent, erp, second, batch=2))
        lifetime = agent.peak_rss()
    erp.close()
    return OutageResult(stages[0], stages[1], lifetime)


def _stage(ctx: Context, agent: Agent, erp: Any, products: range, batch: int) -> Stage:
    backlog = len(products) * WAREHOUSES
    assert agent.rss is not None
    ctx.say(f"outage: broker stopped, building a backlog of {backlog:,}")
    ctx.broker.stop()
    agent.rss.reset()
    cpu0 = agent.cpu()
    ctx.sub.expect("bench-outage")
    insert_stock(erp, products, WAREHOUSES, batch=batch)
    committed = time.monotonic()
    built = wait_until(lambda: agent.pending() >= backlog, 600, "the backlog", every=0.1)
    build_cpu = agent.cpu() - cpu0
    # Nothing changes and nothing can be published now: what the agent still burns is
    # its polls re-reading the rows inside the lookback window. Sweeps of a window that
    # large are spaced by ten times their duration, so a few seconds right after the
    # insert would sample one sweep (0.1 to 1.0 core by luck): average over several.
    waiting_cpu = _idle(agent, WAITING_SECONDS)
    ctx.say(f"outage: backlog of {backlog:,} built; broker restarted, draining")
    oldest, drain0 = agent.oldest_pending(), agent.cpu()
    ctx.broker.start()
    restarted = time.monotonic()
    # The outbox's side of the drain: from the first recorded PUBACK to nothing pending.
    began = wait_until(
        lambda: agent.oldest_pending() != oldest, 300, "the drain to begin", every=0.02
    )
    ended = wait_until(lambda: agent.oldest_pending() == 0, 600, "the drain to end", every=0.02)
    drain_cpu = agent.cpu() - drain0
    ctx.sub.wait_for(backlog, 300, f"a backlog of {backlog:,} at the subscriber")
    times = [at for at, _ in ctx.sub.received]
    first, last = min(times), max(times)
    ctx.say(
        f"outage: subscriber back {ctx.sub.connected_at - restarted:+.1f}s, first event "
        f"{first - restarted:+.1f}s after the restart"
    )
    return Stage(
        backlog=backlog,
        build_seconds=built - committed,
        reconnect_seconds=first - restarted,
        drain_rate=backlog / (last - first) if last > first else float("nan"),
        outbox_drain_rate=backlog / (ended - began) if ended > began else float("nan"),
        peak_rss=agent.rss.peak,
        build_cpu=build_cpu,
        drain_cpu=drain_cpu,
        waiting_cpu=waiting_cpu,
    )
