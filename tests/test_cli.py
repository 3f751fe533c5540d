"""The operator's commands against real parts: check, outbox, resync."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.support import (
    AgentProcess,
    Collector,
    Mosquitto,
    agent_toml,
    run_cli,
    stock_levels_source,
)


def erp_file(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE stock_levels (sku TEXT, warehouse TEXT, on_hand REAL, tms TEXT)")
        # Minutes apart: a restart's 30 s lookback re-reads only the newest row.
        db.executemany(
            "INSERT INTO stock_levels VALUES (?, 'W', ?, ?)",
            [(f"S{i}", i, f"2026-01-01 00:0{i}:00") for i in range(5)],
        )
    return path


def write_config(tmp_path: Path, relay: str, cursor: str = "tms", agent_id: str = "cli") -> Path:
    config = tmp_path / "agent.toml"
    source = stock_levels_source(erp_file(tmp_path / "erp.db"), cursor)
    config.write_text(agent_toml(tmp_path / "state", relay, source, agent_id=agent_id))
    return config


def test_check_reports_what_it_reached(broker: Mosquitto, tmp_path: Path) -> None:
    result = run_cli(write_config(tmp_path, broker.url), "check")
    assert result.returncode == 0, result.stderr
    assert "ok   source erp / stock: sku, warehouse, on_hand, tms" in result.stdout
    assert f"ok   relay {broker.url}: connected as distillsync-acme-cli" in result.stdout


def test_check_names_each_problem_by_key_path_and_exits_78(tmp_path: Path) -> None:
    config = write_config(tmp_path, "mqtt://127.0.0.1:9", cursor="updated_at")
    result = run_cli(config, "check")
    assert result.returncode == 78
    assert "sources[0].entities[0]: column updated_at not in the query's result" in result.stderr
    assert "relay.url: cannot connect to 127.0.0.1:9" in result.stderr


def test_check_reports_a_failing_query(tmp_path: Path, broker: Mosquitto) -> None:
    config = write_config(tmp_path, broker.url)
    config.write_text(config.read_text().replace("FROM stock_levels", "FROM no_such_table"))
    result = run_cli(config, "check")
    assert result.returncode == 78
    assert "sources[0].entities[0].query: no such table: no_such_table" in result.stderr


def test_resync_republishes_only_what_differs(broker: Mosquitto, tmp_path: Path) -> None:
    config = write_config(tmp_path, broker.url, agent_id="resync")
    with Collector(broker.port, "distillsync/acme/resync/out/#") as sub:
        with AgentProcess(config, tmp_path / "a1.log") as agent:
            sub.wait_for(lambda ev: len(ev) == 5, 30, "the first five events")
            assert agent.terminate() == 0
        # An edit that does not move the cursor: only a full re-read can see it.
        with sqlite3.connect(tmp_path / "erp.db") as db:
            db.execute("UPDATE stock_levels SET on_hand = 42 WHERE sku = 'S3'")
        result = run_cli(config, "resync", "stock")
        assert result.returncode == 0, result.stderr
        assert "erp/stock: cursor cleared" in result.stdout

        with AgentProcess(config, tmp_path / "a2.log") as agent:
            sub.wait_for(lambda ev: len(ev) == 6, 30, "the one changed row")
            assert agent.terminate() == 0
    assert sub.events()[-1].event["data"]["on_hand"] == 42
    assert run_cli(config, "resync", "nothing").returncode == 64


def test_outbox_commands_without_an_outbox(tmp_path: Path) -> None:
    result = run_cli(write_config(tmp_path, "mqtt://127.0.0.1:9"), "outbox", "stats")
    assert result.returncode == 1
    assert "no outbox" in result.stderr


def test_an_outbox_from_a_newer_agent_exits_78_so_systemd_stops_retrying(tmp_path: Path) -> None:
    config = write_config(tmp_path, "mqtt://127.0.0.1:1")
    (tmp_path / "state").mkdir()
    with sqlite3.connect(tmp_path / "state" / "outbox.db") as db:
        db.execute("PRAGMA user_version = 99")
    for command in (("run",), ("outbox", "stats")):
        done = run_cli(config, *command)
        assert done.returncode == 78, (command, done.stderr)
        assert "newer than this agent knows" in done.stderr
