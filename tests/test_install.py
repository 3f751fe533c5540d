"""The README's install steps, as far as a test can take them: the wheel goes into a
virtualenv of its own, and from there ``check`` reads the relay password the way the
unit hands it over ($CREDENTIALS_DIRECTORY), the daemon publishes, and ``outbox backup``
copies its outbox.

The wheel is installed without its dependencies, which come from this test's own
virtualenv through a ``.pth`` line: the test needs no package index and stays fast, and
every ``agent``, ``relay``, ``tui``, ``common``, ``cli`` and ``demo`` module it runs is the
wheel's (checked), so a module or data file missing from the wheel fails here.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest

from agent import __version__
from tests.support import (
    REPO,
    AgentProcess,
    Collector,
    Mosquitto,
    agent_toml,
    stock_levels_source,
)

PASSWORD = "correct horse battery staple"


def run(
    *command: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=120, env=env, cwd="/"
    )


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``/opt/distillsync``, in a temporary directory."""
    folder = tmp_path_factory.mktemp("install")
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", folder, REPO)
    assert built.returncode == 0, built.stderr
    (wheel,) = folder.glob("distillsync-*.whl")
    target = folder / "opt-distillsync"
    made = run(sys.executable, "-m", "venv", "--without-pip", target)
    assert made.returncode == 0, made.stderr
    python = target / "bin" / "python"
    installed = run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        wheel,
    )
    assert installed.returncode == 0, installed.stderr
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site.stdout.strip()) / "distillsync-test-deps.pth").write_text("\n".join(deps))
    return target


def test_the_wheel_runs_from_its_own_virtualenv(venv: Path) -> None:
    packages = "agent, relay, tui, common, cli, demo"
    where = run(
        venv / "bin/python", "-c", f"import {packages}; print(*(p.__file__ for p in ({packages},)))"
    )
    assert where.returncode == 0, where.stderr
    assert all(Path(f).is_relative_to(venv) for f in where.stdout.split()), where.stdout
    version = run(venv / "bin/distillsync", "--version")
    assert version.stdout.strip() == f"distillsync {__version__}"


@pytest.fixture
def password_broker(make_broker: Callable[..., Mosquitto], tmp_path: Path) -> Mosquitto:
    passwd = tmp_path / "mosquitto.passwd"
    made = run("mosquitto_passwd", "-c", "-b", passwd, "erp-1", PASSWORD)
    assert made.returncode == 0, made.stderr
    # Root, so it may read pytest's directory; a wrong password is refused even though
    # anonymous clients are let in.
    return make_broker(f"user root\npassword_file {passwd}\n")


def test_check_run_and_backup_from_the_install(
    venv: Path, password_broker: Mosquitto, tmp_path: Path
) -> None:
    erp = tmp_path / "erp.db"
    with contextlib.closing(sqlite3.connect(erp)) as db, db:
        db.execute("CREATE TABLE stock_levels (sku TEXT, warehouse TEXT, on_hand REAL, tms TEXT)")
        db.execute("INSERT INTO stock_levels VALUES ('A', 'W', 1, '2026-01-01 00:00:00')")
    config = tmp_path / "agent.toml"
    config.write_text(
        agent_toml(
            tmp_path / "state",
            password_broker.url,
            stock_levels_source(erp),
            agent_id="erp-1",
            extra='username = "erp-1"\npassword_credential = "relay-password"\n',
        )
    )
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    secret = credentials / "relay-password"
    secret.touch(mode=0o600)
    secret.write_text("wrong password\n")
    env = {"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": str(credentials)}
    distillsync = str(venv / "bin/distillsync")

    refused = run(distillsync, "check", "-c", config, env=env)
    assert refused.returncode == 78, refused.stdout + refused.stderr
    secret.write_text(f"{PASSWORD}\n")
    checked = run(distillsync, "check", "-c", config, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "all good" in checked.stdout and PASSWORD not in checked.stdout + checked.stderr

    agent = AgentProcess(config, tmp_path / "agent.log", env, prefix=[distillsync])
    with Collector(password_broker.port, "distillsync/acme/erp-1/out/#") as sub, agent:
        sub.wait_for(lambda events: len(events) == 1, 30, "the installed agent's event")
        backup = run(
            distillsync, "outbox", "backup", "-c", config, tmp_path / "outbox.bak", env=env
        )
        assert backup.returncode == 0, backup.stderr
        assert "last sequence 1," in backup.stdout
        assert agent.terminate() == 0, agent.output()
    assert sub.events()[0].event["data"] == {"sku": "A", "warehouse": "W", "on_hand": 1}
    assert "Traceback" not in agent.output()
