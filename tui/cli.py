"""What ``distillsync tui`` (cli/, the one command line) runs once it has parsed
its arguments and read the token, with the agent's check on the token file."""

from __future__ import annotations

from agent.apiclient import ApiClient
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
