"""``python -m bench``: one run, one private broker, every figure next to the raw limit."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.parts import REPO, SUBSCRIBERS, AgentOptions, Broker, MachineLoad
from bench.report import Results, render
from bench.scenarios import Context, end_to_end, latency, outage, raw

SCENARIOS = ("raw", "e2e", "latency", "outage")


@dataclass(frozen=True)
class Sizes:
    raw: int
    raw_refs: int
    serial: int
    e2e: int
    keys: int
    steady_seconds: float
    idle_seconds: float
    small_backlog: int
    large_backlog: int


FULL = Sizes(
    raw=60_000,
    raw_refs=30_000,
    serial=20_000,
    e2e=100_000,
    keys=10_000,
    steady_seconds=30,
    idle_seconds=10,
    small_backlog=1_000,
    large_backlog=100_000,
)
QUICK = Sizes(
    raw=20_000,
    raw_refs=10_000,
    serial=5_000,
    e2e=20_000,
    keys=4_000,
    steady_seconds=10,
    idle_seconds=5,
    small_backlog=1_000,
    large_backlog=20_000,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=100,
        help="relay.max_inflight and the broker's max_inflight_messages",
    )
    parser.add_argument("--poll-interval", default="250ms")
    parser.add_argument("--lookback", default="30s", help="the stock feed's lookback")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument(
        "--synchronous",
        choices=["full", "normal"],
        default="full",
        help="the outbox's SQLite synchronous mode",
    )
    parser.add_argument("--rate", type=int, default=500, help="changes/s of the latency run")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run the agents under cProfile and leave NAME.prof files in DIR "
        "(the figures are then distorted by the profiler)",
    )
    parser.add_argument(
        "--broker-conf",
        action="append",
        default=[],
        metavar="LINE",
        help='an extra mosquitto.conf line, e.g. "set_tcp_nodelay true"',
    )
    parser.add_argument(
        "--subscriber",
        choices=sorted(SUBSCRIBERS),
        default="lean",
        help="the QoS 1 subscriber: a lean socket one (default) or paho",
    )
    parser.add_argument(
        "--agent-tree",
        type=Path,
        metavar="DIR",
        help="run the agent/ package found in DIR instead of this "
        "checkout's, e.g. an older revision: mkdir DIR && git archive "
        "REV agent | tar -x -C DIR",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = set(args.only.split(","))
    unknown = only - set(SCENARIOS)
    if unknown:
        print(f"unknown scenario(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 64
    sizes = QUICK if args.quick else FULL
    opts = AgentOptions(
        poll_interval=args.poll_interval,
        page_size=args.page_size,
        lookback=args.lookback,
        window=args.window,
        synchronous=args.synchronous,
    )
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="distillsync-bench-"))
    started, load = time.monotonic(), MachineLoad()
    results = Results(
        opts=opts,
        raw=[],
        broker_conf=args.broker_conf,
        subscriber=args.subscriber,
        agent_tree=args.agent_tree.resolve() if args.agent_tree else None,
    )
    broker = Broker(workdir / "mosquitto", max_inflight=args.window, extra=args.broker_conf)
    broker.start()
    try:
        with SUBSCRIBERS[args.subscriber](broker.port) as sub:
            ctx = Context(
                workdir,
                broker,
                sub,
                opts,
                args.profile.resolve() if args.profile else None,
                args.agent_tree.resolve() if args.agent_tree else REPO,
            )
            if "raw" in only:
                results.raw.append(raw(ctx, "paho-window", sizes.raw, 1))
                results.raw.append(raw(ctx, "paho-window-properties", sizes.raw_refs, 2))
                results.raw.append(raw(ctx, "aiomqtt-window", sizes.raw_refs, 3))
                results.raw.append(raw(ctx, "serial", sizes.serial, 4))
            if "e2e" in only:
                results.e2e = end_to_end(ctx, sizes.e2e)
            if "raw" in only:
                results.raw_repeats.append(raw(ctx, "paho-window", sizes.raw, 5))
            if "latency" in only:
                results.latency = latency(
                    ctx, sizes.keys, args.rate, sizes.steady_seconds, sizes.idle_seconds
                )
            if "outage" in only:
                results.outage = outage(ctx, sizes.small_backlog, sizes.large_backlog)
            if "raw" in only:
                results.raw_repeats.append(raw(ctx, "paho-window", sizes.raw, 6))
    finally:
        with contextlib.suppress(Exception):
            broker.stop()
        results.seconds = time.monotonic() - started
        results.other_load = load.others()
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
