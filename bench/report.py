"""The printed table: each agent figure next to the raw limit measured in the same run."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from bench.parts import AgentOptions
from bench.scenarios import E2EResult, LatencyResult, OutageResult, RawResult

MIB = 1024 * 1024


@dataclass
class Results:
    opts: AgentOptions
    raw: list[RawResult]
    raw_repeats: list[RawResult] = field(default_factory=list)
    """The agent's publishing method again, after the end-to-end run and at the end."""
    e2e: E2EResult | None = None
    latency: LatencyResult | None = None
    outage: OutageResult | None = None
    seconds: float = 0.0
    other_load: float = 0.0
    """Average cores other processes on the machine used during the run."""
    broker_conf: list[str] = field(default_factory=list)
    subscriber: str = "lean"
    agent_tree: Path | None = None
    """Where the agent/ package came from, when not this checkout."""

    def raw_limit(self) -> float | None:
        """Subscriber-side rate of the agent's own publishing method, the median of its
        runs spread over the bench (the agent's figures are subscriber-side too)."""
        runs = [r.received_rate for r in [*self.raw, *self.raw_repeats] if r.mode == "paho-window"]
        return statistics.median(runs) if runs else None


def mosquitto_version() -> str:
    from demo.localbroker import mosquitto_binary

    done = subprocess.run([mosquitto_binary(), "-h"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).splitlines()[:1]
    return first[0].replace("mosquitto version ", "") if first else "?"


def agent_revision() -> str:
    """The commit the agent code comes from, and whether agent/ has uncommitted edits."""
    from bench.parts import REPO

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, check=False)
        return done.stdout.strip()

    last = git("log", "-1", "--format=%h", "--", "agent") or "?"
    dirty = " + uncommitted edits" if git("status", "--porcelain", "agent") else ""
    return f"agent/ as of {last}{dirty}"


def environment() -> str:
    return (
        f"{os.cpu_count()} cores · Mosquitto {mosquitto_version()} · "
        f"aiomqtt {metadata.version('aiomqtt')} / paho-mqtt {metadata.version('paho-mqtt')}"
        f" · Python {platform.python_version()}"
    )


RAW_LABELS = {
    "paho-window": "raw: paho publish under aiomqtt (as the agent), window {w}",
    "paho-window-properties": "raw: same, with paho's Properties class per message",
    "aiomqtt-window": "raw: aiomqtt publish() in tasks, window {w}",
    "serial": "raw: aiomqtt publish() awaited one at a time",
}


def rate(value: float) -> str:
    return f"{value:>9,.0f}/s"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}x" if base else "-"


def render(res: Results) -> str:
    opts = res.opts
    base = res.raw_limit()
    lines: list[str] = []
    add = lines.append
    origin = f"agent/ from {res.agent_tree}" if res.agent_tree else agent_revision()
    add(f"DistillSync bench · {environment()} · {origin}")
    window = next((r.window for r in res.raw), opts.window)
    recv_max = next((r.receive_maximum for r in res.raw), None)
    payload = next((r.payload_bytes for r in res.raw), 0.0)
    add(
        f"window {window} = min(relay.max_inflight {opts.window}, broker Receive Maximum "
        f"{recv_max}) · CloudEvents payload ~{payload:.0f} B + MQTT 5 properties as bytes · "
        f"one QoS 1 subscriber ({res.subscriber})"
        + (f" · broker: {'; '.join(res.broker_conf)}" if res.broker_conf else "")
    )
    add(
        f"agent: poll_interval {opts.poll_interval} · lookback {opts.lookback} · "
        f"page_size {opts.page_size} · outbox synchronous={opts.synchronous}"
    )
    add(
        f"run took {res.seconds:.0f} s; other processes on the machine used "
        f"{res.other_load:.2f} cores on average meanwhile (noise: compare runs at ~0)"
    )
    add("")
    head = f"{'figure':<62} {'value':>34}  {'vs raw':>7}  aim"
    add(head)
    add("-" * len(head))

    def row(label: str, value: str, versus: str = "", aim: str = "") -> None:
        add(f"{label:<62} {value:>34}  {versus:>7}  {aim}")

    when = ["after the end-to-end run", "at the end"]
    for r in [*res.raw, *res.raw_repeats]:
        label = RAW_LABELS[r.mode].format(w=r.window)
        if r in res.raw_repeats:
            label = f"raw: paho under aiomqtt, again {when[res.raw_repeats.index(r)]}"
        row(
            f"1 {label}",
            f"{rate(r.acked_rate)} acked {rate(r.received_rate)} recv",
            ratio(r.received_rate, base),
        )
        row(
            "    CPU share of a core: publisher / broker / sub · publisher/msg",
            f"{r.publisher_cpu:.2f} / {r.broker_cpu:.2f} / {r.subscriber_cpu:.2f} · "
            f"{us(r.publisher_cpu / r.acked_rate)}",
        )
    if base:
        row("  raw limit: median of the paho-under-aiomqtt runs, received", rate(base), "1.00x")
    if res.e2e:
        e = res.e2e
        row(
            f"2 agent end to end: {e.rows:,} rows, ERP commit → subscriber",
            rate(e.rate),
            ratio(e.rate, base),
            "≥ 0.50x",
        )
        row(
            "    capture: ERP commit → all rows in the outbox",
            f"{e.capture_seconds:.1f} s = {rate(e.rows / e.capture_seconds)}",
        )
        row("    first event at the subscriber after the commit", ms(e.first_event))
        row(
            "    CPU share of a core: agent / broker / sub · agent/event",
            f"{e.agent_cpu:.2f} / {e.broker_cpu:.2f} / {e.subscriber_cpu:.2f} · "
            f"{us(e.agent_cpu_per_event)}",
        )
        row(
            "    agent window (from its log) · payload size",
            f"{e.window} · {e.payload_bytes:.0f} B",
        )
    if res.latency:
        lat = res.latency
        row(
            f"3 latency ERP commit → subscriber at {lat.rate}/s, poll {opts.poll_interval}",
            f"p50 {ms(lat.p50)} · p99 {ms(lat.p99)}",
            "",
            "p99 < poll_interval + 100 ms",
        )
        row(
            "    split p50/p99: commit → outbox · outbox → subscriber",
            f"{lat.capture_p50 * 1000:.0f}/{lat.capture_p99 * 1000:.0f} · "
            f"{lat.delivery_p50 * 1000:.0f}/{lat.delivery_p99 * 1000:.0f} ms",
        )
        row(
            f"    max · changes ({lat.seconds:.0f} s at {lat.achieved_rate:.0f}/s achieved)",
            f"{ms(lat.max)} · {lat.changes:,}",
        )
        row("    agent CPU during the steady run, share of one core", f"{lat.agent_cpu_steady:.2f}")
    if res.outage:
        big, small = res.outage.large, res.outage.small
        row(
            f"4 drain of a {big.backlog:,} backlog after a broker outage",
            rate(big.drain_rate),
            ratio(big.drain_rate, base),
        )
        row(
            "    agent CPU per event: building the backlog · draining it",
            f"{us(big.build_cpu / big.backlog)} · {us(big.drain_cpu / big.backlog)}",
        )
        row(
            "    agent CPU share of a core, backlog built, broker down, no changes",
            f"{small.waiting_cpu:.2f} ({small.backlog:,}) · {big.waiting_cpu:.2f} "
            f"({big.backlog:,})",
        )
        row(
            "    the same drain seen in the outbox (recorded PUBACKs)",
            rate(big.outbox_drain_rate),
            ratio(big.outbox_drain_rate, base),
        )
        row(
            "    backlog build (broker down): ERP commit → all pending",
            f"{big.build_seconds:.1f} s = {rate(big.backlog / big.build_seconds)}",
        )
        row(
            "    broker restart → first event (agent reconnect backoff)",
            f"{big.reconnect_seconds:.1f} s",
        )
        row(
            f"    drain of a {small.backlog:,} backlog",
            rate(small.drain_rate),
            ratio(small.drain_rate, base),
        )
        row(
            f"5 agent peak RSS: backlog {small.backlog:,} / {big.backlog:,}",
            f"{small.peak_rss / MIB:.0f} / {big.peak_rss / MIB:.0f} MiB",
        )
        row(
            "    lifetime peak (VmHWM) of that agent",
            f"{res.outage.lifetime_peak_rss / MIB:.0f} MiB",
        )
    if res.latency:
        lat = res.latency
        row(
            "    RSS idle / peak during the steady run",
            f"{lat.idle_rss / MIB:.0f} / {lat.steady_rss / MIB:.0f} MiB",
        )
        row(
            f"6 agent CPU idle ({lat.idle_seconds:.0f} s, no changes), share of one core",
            f"{lat.idle_cpu:.3f}",
        )
        row(
            "    idle, right after the steady run (its rows within lookback)",
            f"{lat.idle_cpu_after:.3f}",
        )
    return "\n".join(lines)
