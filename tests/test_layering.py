"""One module owns each outside dependency; the agent never imports the TUI toolkit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

OWNERS = {
    "aiomqtt": {"agent/publisher.py", "relay/subscriber.py"},
    "paho": {"agent/publisher.py", "relay/subscriber.py"},
    "aiosqlite": {"agent/outbox.py"},
    "sqlalchemy": {"agent/sources/sql.py", "relay/store.py"},
    "prometheus_client": {"agent/metrics.py", "relay/status.py"},
    "textual": set(),
}


def importers(package: str) -> set[str]:
    pattern = re.compile(rf"^\s*(import|from)\s+{package}\b", re.MULTILINE)
    found = set()
    for folder in ("agent", "relay"):
        for path in (REPO / folder).rglob("*.py"):
            if pattern.search(path.read_text()):
                found.add(str(path.relative_to(REPO)))
    return found


@pytest.mark.parametrize("package", sorted(OWNERS))
def test_each_dependency_has_one_owner(package: str) -> None:
    assert importers(package) <= OWNERS[package]


@pytest.mark.parametrize("package", ["textual", "amqtt"])
def test_running_the_agent_loads_neither_the_tui_nor_the_demo_broker(package: str) -> None:
    code = ("import sys, agent.service, agent.cli, agent.check, agent.demo, agent.localbroker; "
            f"print({package!r} in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_the_tui_package_does_not_reach_into_the_agent() -> None:
    for path in Path(REPO / "tui").rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+agent\.(outbox|service|poller|delivery)",
                             path.read_text(), re.MULTILINE), path


def test_the_relay_kit_and_the_agent_stand_apart() -> None:
    """The relay kit is written from the contract alone (other teams port it); only the
    demo, which stages both sides, and the command line, which dispatches to both,
    import from both."""
    pattern = re.compile(r"^\s*(import|from)\s+(agent|relay)\b", re.MULTILINE)
    crossing = {
        str(path.relative_to(REPO))
        for folder, other in (("agent", "relay"), ("relay", "agent"))
        for path in (REPO / folder).rglob("*.py")
        if any(m.group(2) == other for m in pattern.finditer(path.read_text()))
    }
    assert crossing == {"agent/demo.py", "agent/cli.py"}
