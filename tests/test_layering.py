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
    "paho": {"agent/publisher.py"},
    "aiosqlite": {"agent/outbox.py"},
    "sqlalchemy": {"agent/sources/sql.py"},
    "prometheus_client": {"agent/metrics.py"},
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


def test_running_the_agent_loads_no_textual() -> None:
    code = ("import sys, agent.service, agent.cli, agent.check, agent.demo; "
            "print('textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_the_tui_package_does_not_reach_into_the_agent() -> None:
    for path in Path(REPO / "tui").rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+agent\.(outbox|service|poller|delivery)",
                             path.read_text(), re.MULTILINE), path
