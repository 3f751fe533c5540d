"""``distillsync tui`` is the dashboard's one command line, and its ``--token-file`` gets
the agent's check on secret files (agent.config.check_private)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import tui.cli
from cli.main import api_client, build_parser
from tests.support import write_secret

DISTILLSYNC = Path(sys.executable).parent / "distillsync"


def tui_command(*args: str) -> subprocess.CompletedProcess[str]:
    # stdin closed and a timeout: were the token accepted, the dashboard would start
    return subprocess.run(
        [str(DISTILLSYNC), "tui", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_a_token_file_others_can_read_is_refused_naming_file_mode_and_fix(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    token.chmod(0o644)
    result = tui_command("--url", "http://127.0.0.1:9", "--token-file", str(token))
    assert result.returncode == 78, result.stderr
    assert (
        f"{token} holds a secret but its group and other users can read it "
        "(mode 0644)" in result.stderr
    )
    assert f"chmod 600 {token}" in result.stderr
    assert "s3cret-token" not in result.stdout + result.stderr


def test_a_private_token_file_is_read(tmp_path: Path) -> None:
    token = write_secret(tmp_path / "token", "s3cret-token\n")
    args = build_parser().parse_args(
        ["tui", "--url", "http://127.0.0.1:9", "--token-file", str(token)]
    )
    assert api_client(args).headers == {"Authorization": "Bearer s3cret-token"}


def test_a_token_file_without_url_is_refused(tmp_path: Path) -> None:
    token = write_secret(tmp_path / "token", "s3cret-token\n")
    result = tui_command("--token-file", str(token))
    assert result.returncode == 78
    assert "--token-file: only with --url" in result.stderr


def test_there_is_one_command_line() -> None:
    """No ``python -m tui`` beside ``distillsync tui``: tui/ has no entry point of its own
    and no argument parser, only what ``distillsync tui`` calls."""
    assert importlib.util.find_spec("tui.__main__") is None
    assert not hasattr(tui.cli, "main") and not hasattr(tui.cli, "parser")
    assert "argparse" not in Path(tui.cli.__file__).read_text()
    result = subprocess.run(
        [sys.executable, "-m", "tui"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert result.returncode != 0 and "No module named tui.__main__" in result.stderr
