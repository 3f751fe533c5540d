"""``distillsync``: the command line. Errors are printed here, at the edge, never deeper."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from agent import __version__
from agent.config import Config, load_config, read_secret
from agent.envelope import rfc3339_from_epoch
from agent.errors import (
    EX_CONFIG,
    EX_FAILURE,
    EX_OK,
    EX_UNAVAILABLE,
    ConfigError,
    DistillSyncError,
    OutboxTooNew,
)
from agent.status import AgentStatus, InboxStatus, SequenceStatus

if TYPE_CHECKING:
    from agent.apiclient import ApiClient

log = logging.getLogger("distillsync")


def setup_logging(level: str) -> None:
    """One line per record on stderr; under systemd the journal adds its own timestamp."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if "JOURNAL_STREAM" not in os.environ:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)
    logging.getLogger("aiomqtt").setLevel(logging.WARNING)


def _config(args: argparse.Namespace) -> Config:
    return load_config(Path(args.config))


def cmd_run(args: argparse.Namespace) -> int:
    from agent.service import run_until_signalled

    config = _config(args)
    setup_logging(config.agent.log_level)
    asyncio.run(run_until_signalled(config, Path(args.config)))
    return EX_OK


def cmd_check(args: argparse.Namespace) -> int:
    from agent.check import check_all

    config = _config(args)
    problems = asyncio.run(check_all(config, print))
    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return EX_CONFIG
    print("\nall good")
    return EX_OK


def api_client(args: argparse.Namespace) -> ApiClient:
    """The agent named by ``--url``/``--token-file``, ``--socket``, or ``-c``'s ``[api]``."""
    from agent.apiclient import DEFAULT_SOCKET, ApiClient

    if args.url:
        token = read_secret(Path(args.token_file), None, "token") if args.token_file else None
        return ApiClient(None, url=args.url, token=token)
    if args.token_file:  # a token given for nothing is a mistake worth saying
        raise ConfigError(["--token-file: only with --url (the socket takes no token)"])
    socket = (
        Path(args.socket)
        if args.socket
        else (_config(args).api.socket if args.config else DEFAULT_SOCKET)
    )
    return ApiClient(socket)


def cmd_status(args: argparse.Namespace) -> int:
    client = api_client(args)
    try:
        code, status = asyncio.run(client.get("/v1/status"))
        health_code, health = asyncio.run(client.get("/v1/health"))
    except OSError as error:
        print(f"distillsync: {error}", file=sys.stderr)
        return EX_UNAVAILABLE
    if code != 200:
        print(f"distillsync: the agent answered {code}: {status.get('error')}", file=sys.stderr)
        return EX_FAILURE
    if args.json:
        print(
            orjson.dumps({"health": health, "status": status}, option=orjson.OPT_INDENT_2).decode()
        )
    else:
        print(summary(status, health))
    return EX_OK if health_code == 200 else EX_FAILURE


def cmd_tui(args: argparse.Namespace) -> int:
    if args.relay:
        from tui.cli import run_fleet_tui

        return run_fleet_tui(args.relay, args.tenant, args.prefix)
    from tui.cli import run_agent_tui

    return run_agent_tui(api_client(args))


def summary(received: object, health: dict[str, object]) -> str:
    """The human one-screen view of ``/v1/status``."""
    status = AgentStatus.from_json(received)
    agent, relay, outbox = status.agent, status.relay, status.outbox
    lines = [
        f"agent   {agent.tenant}/{agent.id} {agent.version}, "
        f"up {agent.uptime_seconds}s, {'healthy' if health['healthy'] else 'UNHEALTHY'}",
        f"relay   {relay.url}: {relay.state}, {relay.published} published, "
        f"{relay.refused} refused, {relay.reconnects} reconnects",
        f"outbox  {outbox.pending} pending (oldest {outbox.oldest_pending_time or '-'}), "
        f"{outbox.dead_letters} dead letters, last sequence {outbox.last_sequence}",
    ]
    if outbox.write_error is not None:  # disk full or failing: nothing is being captured
        since = rfc3339_from_epoch(outbox.write_error.since)
        lines.append(f"outbox  CANNOT WRITE since {since}: {outbox.write_error.message}")
    lines += _sequence_lines(status.sequence)
    lines.append(_inbox_line(status.inbox))
    for source in status.sources:
        paused = " (paused)" if source.paused else ""
        for feed in source.feeds:
            error = f", last error: {feed.last_error}" if feed.last_error else ""
            lines.append(
                f"source  {source.name}/{feed.feed}{paused} [{feed.mode}]: "
                f"{feed.rows_read} rows read, {feed.changes_emitted} changes, "
                f"{feed.dead_letters} dead, {feed.errors} errors{error}"
            )
    return "\n".join(lines)


def _inbox_line(inbox: InboxStatus) -> str:
    age = inbox.oldest_pending_age_seconds
    return (
        f"inbox   {inbox.pending} pending (oldest {'-' if age is None else f'{age}s'}), "
        f"{inbox.held} held, {inbox.failed} failed, {inbox.dead} dead, {inbox.written} written, "
        f"{inbox.stale} stale, {inbox.duplicates} duplicates"
    )


def _sequence_lines(sequence: SequenceStatus) -> list[str]:
    """The sequence check of ``summary``: checked, unread or not yet, and any move."""
    if sequence.check == "ok":
        watermark = sequence.relay_watermark
        held = "none, a new agent" if watermark is None else watermark
        lines = [
            f"sequence checked against the relay's watermark ({held}); "
            f"{sequence.watermark_published} acknowledged since"
        ]
    elif sequence.check == "unread":
        lines = [f"sequence NOT CHECKED against the relay: {sequence.unread_reason}"]
    else:
        lines = ["sequence not checked yet: nothing is published before (relay not reached)"]
    if sequence.watermark_error:
        lines.append(f"sequence the relay refuses the watermark: {sequence.watermark_error}")
    moved = sequence.moved
    if moved is not None:
        lines.append(
            f"sequence MOVED at {rfc3339_from_epoch(moved.at)}: the outbox "
            f"was at {moved.from_}, the relay had seen {moved.above} (a restored "
            f"backup or a new outbox.db); {moved.renumbered} pending events "
            f"renumbered above it"
        )
    return lines


def cmd_outbox(args: argparse.Namespace) -> int:
    from cli import operate

    config = _config(args)
    if args.action == "backup":
        return operate.backup(config, args.dest, args.force)
    return asyncio.run(
        operate.outbox_command(
            config,
            args.action,
            getattr(args, "id", None),
            getattr(args, "state", "dead"),
            getattr(args, "limit", 50),
        )
    )


def _action_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    command: str,
    help_text: str,
    func: Callable[[argparse.Namespace], int],
) -> Callable[[str, str], argparse.ArgumentParser]:
    """``COMMAND ACTION``, one parser per action: each takes ``-c FILE`` before or after its
    own arguments (``outbox backup -c FILE DEST``), which one parser with an optional
    positional cannot do. Returns the maker of an action's parser."""
    parser = sub.add_parser(command, help=help_text, description=help_text)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, text: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=text, description=text)
        p.add_argument(
            "-c",
            "--config",
            required=True,
            metavar="FILE",
            help="agent TOML file (production: /etc/distillsync/agent.toml)",
        )
        p.set_defaults(func=func)
        return p

    return action


def add_outbox_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``outbox list|retry|discard|stats|backup``."""
    action = _action_parsers(
        sub,
        "outbox",
        "inspect and act on pending and dead-letter events; back the outbox up",
        cmd_outbox,
    )
    listing = action("list", "dead letters with their reason and payload, or pending events")
    listing.add_argument("--state", choices=["pending", "dead"], default="dead")
    listing.add_argument("--limit", type=int, default=50)
    for name, text in (
        ("retry", "capture or publish a dead letter again"),
        ("discard", "delete a dead letter"),
    ):
        action(name, text).add_argument("id", type=int, help="the dead letter's id")
    action("stats", "pending, dead letters, oldest pending, last sequence")
    backup = action("backup", "a consistent copy of the outbox, safe while the agent runs")
    backup.add_argument("dest", type=Path, metavar="DEST", help="the file to write")
    backup.add_argument("--force", action="store_true", help="overwrite DEST if it exists")


def cmd_inbox(args: argparse.Namespace) -> int:
    from cli import operate

    return asyncio.run(
        operate.inbox_command(
            _config(args),
            args.action,
            getattr(args, "id", None),
            getattr(args, "state", None),
            getattr(args, "limit", 50),
        )
    )


def add_inbox_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``inbox list|retry|discard|stats``."""
    from agent.inbox import STATES

    action = _action_parsers(
        sub,
        "inbox",
        "inspect and act on inbound events (held, pending, failed, dead, ...)",
        cmd_inbox,
    )
    listing = action("list", "inbox items by id with their state, reason and message")
    listing.add_argument("--state", choices=STATES, default=None, help="only this state")
    listing.add_argument("--limit", type=int, default=50)
    for name, text in (
        ("retry", "judge a dead or failed item again with the current config"),
        ("discard", "delete an item that will not be written (dead, failed, held or stale)"),
    ):
        action(name, text).add_argument("id", type=int, help="the inbox item's id")
    action("stats", "items by state, duplicates, oldest pending age")


def cmd_resync(args: argparse.Namespace) -> int:
    from cli import operate

    config = _config(args)
    return asyncio.run(operate.resync(config, args.entity))


def cmd_consume(args: argparse.Namespace) -> int:
    from relay.cli import consume

    return consume(Path(args.config))


def cmd_intake(args: argparse.Namespace) -> int:
    from relay.intake import cli

    config = getattr(args, "hooks_config", None) or args.config
    if config is None:
        print("distillsync intake: -c FILE is required", file=sys.stderr)
        return 2
    if args.action == "hooks":
        return cli.hooks(Path(config), args.register)
    return cli.intake(Path(config))


def add_intake_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    what = "relay side: take the shops' orders (webhooks and polls) to the agents' inboxes"
    intake = sub.add_parser("intake", help=what, description=what)
    config_help = "intake TOML file (production: /etc/distillsync/intake.toml)"
    intake.add_argument("-c", "--config", metavar="FILE", help=config_help)
    actions = intake.add_subparsers(dest="action", metavar="ACTION")
    hooks = actions.add_parser(
        "hooks",
        help="list each shop's webhook subscriptions and their state",
        description="list each shop's webhook subscriptions and their state; exit 1 if "
        "one is missing or disabled",
    )
    hooks.add_argument("-c", "--config", metavar="FILE", help=config_help, dest="hooks_config")
    hooks.add_argument(
        "--register",
        action="store_true",
        help="create the missing subscriptions (same topic and URL: nothing new)",
    )
    intake.set_defaults(func=cmd_intake, action=None)


def cmd_demo(args: argparse.Namespace) -> int:
    from demo.run import run_demo

    setup_logging("warning")
    return asyncio.run(
        run_demo(
            seconds=args.seconds,
            products=args.products,
            headless=args.headless or not sys.stdout.isatty(),
            broker_kind=args.broker,
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillsync", description="Keep an ERP and its online shops in sync."
    )
    parser.add_argument("--version", action="version", version=f"distillsync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "-c",
            "--config",
            required=True,
            metavar="FILE",
            help="agent TOML file (production: /etc/distillsync/agent.toml)",
        )
        return p

    with_config("run", "run the daemon in the foreground").set_defaults(func=cmd_run)
    with_config("check", "validate the config and reach every source and the relay").set_defaults(
        func=cmd_check
    )

    def with_api(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--socket",
            help="the agent's API socket "
            "(default: [api] socket of -c FILE, else /run/distillsync/agent.sock)",
        )
        p.add_argument("-c", "--config", metavar="FILE", help="agent TOML file")
        p.add_argument("--url", help="the API over TCP instead, e.g. http://127.0.0.1:8765")
        p.add_argument("--token-file", metavar="FILE", help="bearer token for --url")
        return p

    status = with_api(
        "status", "one-shot status of a running agent (exit 0 healthy, 1 unhealthy, 69 unreachable)"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
    tui = with_api("tui", "live dashboard of one agent, or of a fleet with --relay")
    tui.add_argument(
        "--relay", metavar="URL", help="fleet view: the relay broker, e.g. mqtt://127.0.0.1:1883"
    )
    tui.add_argument("--tenant", help="fleet view: only this tenant")
    tui.add_argument("--prefix", default="distillsync", help="fleet view: topic prefix")
    tui.set_defaults(func=cmd_tui)
    add_outbox_parser(sub)
    add_inbox_parser(sub)
    resync = with_config("resync", "re-read an entity fully and publish what differs")
    resync.add_argument("entity", help="entity or feed name, e.g. stock, or SOURCE/FEED")
    resync.set_defaults(func=cmd_resync)
    consume = sub.add_parser(
        "consume",
        help="relay side: apply the events to the shops",
        description="relay side: apply the events to the shops",
    )
    consume.add_argument(
        "-c",
        "--config",
        required=True,
        metavar="FILE",
        help="consumer TOML file (production: /etc/distillsync/relay.toml)",
    )
    consume.set_defaults(func=cmd_consume)
    add_intake_parser(sub)
    demo = sub.add_parser("demo", help="demo ERP, embedded broker, agent, demo shop and the TUI")
    demo.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")
    demo.add_argument("--products", type=int, default=300)
    demo.add_argument(
        "--headless",
        action="store_true",
        help="no TUI: a one-line summary every few seconds (also without a tty)",
    )
    demo.add_argument(
        "--broker",
        choices=["auto", "mosquitto", "amqtt"],
        default="auto",
        help="auto: Mosquitto when its binary is found, else amqtt",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as error:
        where = getattr(args, "config", None) or "the command line"
        print(f"configuration problems in {where}:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return EX_CONFIG
    except OutboxTooNew as error:  # systemd must not restart into the same refusal
        print(f"distillsync: {error}", file=sys.stderr)
        return EX_CONFIG
    except DistillSyncError as error:
        print(f"distillsync: {error}", file=sys.stderr)
        return EX_FAILURE
    except KeyboardInterrupt:
        return EX_FAILURE
    return code
