"""The quick start's `make demo`: it comes up with nothing external and fills the shop."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support import REPO


@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
def test_demo_runs_headless_and_fills_the_shop(broker: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "demo",
            "--headless",
            "--broker",
            broker,
            "--seconds",
            "8",
            "--products",
            "40",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    summaries = [line for line in result.stdout.splitlines() if "| shop:" in line]
    assert len(summaries) >= 2, result.stdout  # one every 3 s, and the last word
    # At the end the simulator stops first, so the shop must agree with the ERP exactly
    # (a row holding text instead of a quantity is a dead letter and not counted).
    final = re.search(r"\| shop: (\d+)/(\d+) stock = ERP, 40 prices$", summaries[-1])
    assert final and final.group(1) == final.group(2), summaries[-1]
    assert int(final.group(2)) >= 110, summaries[-1]
    assert "demo stopped: the shop holds 120 stock levels and 40 prices" in result.stdout
