"""The quick start's `make demo` works with nothing but Mosquitto's binary installed."""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO


def test_demo_runs_headless_and_fills_the_shop() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "demo", "--seconds", "6", "--products", "40"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "demo stopped: the shop holds 120 stock levels and 40 prices" in result.stdout
    assert "Traceback" not in result.stderr
