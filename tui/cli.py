"""Entry points: ``distillsync tui`` calls these; ``python -m tui`` is the same for testing."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.apiclient import DEFAULT_SOCKET, ApiClient
from tui.app import AgentDashboard
from tui.fleet import FleetApp
from tui.sources import ApiSource, RelaySource

DEFAULT_PREFIX = "distillsync"


def run_agent_tui(client: ApiClient) -> int:
    """The live dashboard of one agent, until the user quits; returns the exit code."""
    return AgentDashboard(ApiSource(client)).run() or 0


def run_fleet_tui(url: str, tenant: str | None, prefix: str = DEFAULT_PREFIX) -> int:
    """Every agent's retained status on the relay at ``url``, until the user quits."""
    return FleetApp(RelaySource(url, tenant, prefix)).run() or 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tui", description=__doc__)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--socket", type=Path, default=DEFAULT_SOCKET,
                       help="the agent's status API socket (default: %(default)s)")
    where.add_argument("--url", help="the status API over TCP, e.g. http://127.0.0.1:8080")
    where.add_argument("--relay", help="show the fleet on this MQTT relay instead")
    parser.add_argument("--token-file", type=Path, help="bearer token for --url")
    parser.add_argument("--tenant", help="fleet: only this tenant's agents")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="fleet: the topic prefix")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.relay:
        return run_fleet_tui(args.relay, args.tenant, args.prefix)
    token = args.token_file.read_text().strip() if args.token_file else None
    return run_agent_tui(ApiClient(args.socket, url=args.url, token=token))
