"""One module owns each outside dependency; agent/ is the daemon alone, apart from the relay
kit, the command line, the demo and the TUI toolkit."""

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
    # relay/db.py: URL to engine, pragmas, lock file, schema version, for both relay stores
    "sqlalchemy": {
        "agent/sources/sql.py",
        "relay/db.py",
        "relay/store.py",
        "relay/intake/store.py",
    },
    "prometheus_client": {"agent/metrics.py", "relay/status.py", "relay/intake/status.py"},
    "textual": set(),
}


def importers(package: str) -> set[str]:
    pattern = re.compile(rf"^\s*(import|from)\s+{package}\b", re.MULTILINE)
    found = set()
    for folder in ("agent", "relay", "common", "cli", "demo"):
        for path in (REPO / folder).rglob("*.py"):
            if pattern.search(path.read_text()):
                found.add(str(path.relative_to(REPO)))
    return found


@pytest.mark.parametrize("package", sorted(OWNERS))
def test_each_dependency_has_one_owner(package: str) -> None:
    assert importers(package) <= OWNERS[package]


@pytest.mark.parametrize("package", ["textual", "amqtt"])
def test_running_the_agent_loads_neither_the_tui_nor_the_demo_broker(package: str) -> None:
    code = (
        "import sys, agent.service, agent.check, cli.main, cli.operate, demo.run, "
        f"demo.localbroker; print({package!r} in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert out.stdout.strip() == "False", out.stderr


def test_the_tui_package_does_not_reach_into_the_agent() -> None:
    """The dashboards read each side through its client only: the agent through its
    status API (and the snapshot's types), the fleet through the relay's retained
    statuses."""
    pattern = re.compile(r"^\s*(?:import|from)\s+((?:agent|relay)\.\w+)", re.MULTILINE)
    reached = {
        name
        for path in Path(REPO / "tui").rglob("*.py")
        for name in pattern.findall(path.read_text())
    }
    assert reached <= {"agent.apiclient", "agent.status", "relay.subscriber"}


def test_the_status_types_load_nothing_of_the_daemon() -> None:
    """The TUI and the command line parse ``/v1/status`` into ``agent.status``: reading it
    must not load the outbox, the MQTT link or the sources."""
    heavy = [
        "aiosqlite",
        "aiomqtt",
        "paho",
        "sqlalchemy",
        "aiohttp",
        "agent.outbox",
        "agent.delivery",
        "agent.service",
    ]
    code = f"import sys, agent.status; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def imports_of(folder: str) -> dict[str, set[str]]:
    """Each module under ``folder`` and the top-level packages of this tree it imports."""
    pattern = re.compile(r"^\s*(?:import|from)\s+(agent|relay|tui|cli|demo|common)\b", re.MULTILINE)
    return {
        str(path.relative_to(REPO)): set(pattern.findall(path.read_text()))
        for path in (REPO / folder).rglob("*.py")
    }


@pytest.mark.parametrize(
    ("folder", "others"),
    [
        ("agent", {"relay", "tui", "cli", "demo"}),
        ("relay", {"agent", "tui", "cli", "demo"}),
        ("common", {"agent", "relay", "tui", "cli", "demo"}),
        ("tui", {"cli", "demo"}),
    ],
)
def test_the_relay_kit_and_the_agent_stand_apart(folder: str, others: set[str]) -> None:
    """The relay kit is written from the contract alone (other teams port it), and agent/
    is the daemon alone: neither imports the other, nor the command line, the demo or the
    dashboards. Only cli/, which dispatches to both, and demo/, which stages both sides,
    import from both; common/ sits below both and imports neither."""
    crossing = {
        module: found & others for module, found in imports_of(folder).items() if found & others
    }
    assert crossing == {}
