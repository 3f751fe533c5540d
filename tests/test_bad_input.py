"""Bad input never stops the pipeline: bad rows become dead letters, good rows flow on."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from tests.support import (
    AgentProcess,
    Collector,
    Mosquitto,
    agent_toml,
    run_cli,
    stock_levels_source,
)


def test_unmappable_rows_are_dead_letters_and_the_rest_flows(
    broker: Mosquitto, tmp_path: Path
) -> None:
    db_path = tmp_path / "erp.db"
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("CREATE TABLE stock_levels (sku TEXT, warehouse TEXT, on_hand REAL, tms TEXT)")
    db.executescript("""
        INSERT INTO stock_levels VALUES ('OK-1', 'WH1', 5, '2026-11-23 10:00:00');
        INSERT INTO stock_levels VALUES (NULL, 'WH1', 5, '2026-11-23 10:00:01');
        INSERT INTO stock_levels VALUES ('TXT', 'WH1', 'lots', '2026-11-23 10:00:02');
        INSERT INTO stock_levels VALUES (CAST(x'4241ff44' AS TEXT), 'WH1', 1,
                                         '2026-11-23 10:00:03');
        INSERT INTO stock_levels VALUES ('OK-2', 'WH1', 7, '2026-11-23 10:00:04');
    """)
    config = tmp_path / "agent.toml"
    config.write_text(
        agent_toml(
            tmp_path / "state", broker.url, stock_levels_source(db_path), agent_id="bad-input"
        )
    )
    with (
        Collector(broker.port, "distillsync/acme/bad-input/#") as sub,
        AgentProcess(config, tmp_path / "agent.log") as agent,
    ):
        sub.wait_for(lambda ev: len(ev) >= 2, 30, "the two good rows")
        db.execute("INSERT INTO stock_levels VALUES ('OK-3', 'WH1', 9, '2026-11-23 10:00:05')")
        sub.wait_for(lambda ev: len(ev) >= 3, 30, "a good row after the bad ones")
        listing = run_cli(config, "outbox", "list", "--state", "dead")
        assert agent.terminate() == 0
    assert sorted(m.event["subject"] for m in sub.events()) == ["OK-1/WH1", "OK-2/WH1", "OK-3/WH1"]
    assert listing.returncode == 0, listing.stderr
    assert "key column sku is NULL" in listing.stdout
    assert "TXT/WH1: schema: data.on_hand must be number" in listing.stdout
    assert "column sku: invalid UTF-8" in listing.stdout
    stats = run_cli(config, "outbox", "stats")
    assert '"dead_letters": 3' in stats.stdout
    db.close()


def test_an_oversize_event_is_a_dead_letter_with_its_reason(
    make_broker: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    small = make_broker("max_packet_size 1000")
    db_path = tmp_path / "erp.db"
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute(
        "CREATE TABLE stock_levels (sku TEXT, warehouse TEXT, on_hand REAL, note TEXT, tms TEXT)"
    )
    db.execute(
        "INSERT INTO stock_levels VALUES ('BIG', 'WH1', 1, ?, '2026-01-01 00:00:00')", ("x" * 5000,)
    )
    db.execute("INSERT INTO stock_levels VALUES ('SMALL', 'WH1', 1, 'ok', '2026-01-01 00:00:01')")
    config = tmp_path / "agent.toml"
    source = stock_levels_source(db_path).replace("on_hand, tms", "on_hand, note, tms")
    config.write_text(agent_toml(tmp_path / "state", small.url, source, agent_id="oversize"))
    with (
        Collector(small.port, "distillsync/acme/oversize/#") as sub,
        AgentProcess(config, tmp_path / "agent.log") as agent,
    ):
        sub.wait_for(lambda ev: len(ev) >= 1, 30, "the small event")
        db.execute(
            "INSERT INTO stock_levels VALUES ('AFTER', 'WH1', 2, 'ok', '2026-01-01 00:00:02')"
        )
        sub.wait_for(lambda ev: len(ev) >= 2, 30, "an event after the oversize one")
        assert agent.terminate() == 0
    listing = run_cli(config, "outbox", "list", "--state", "dead")
    assert "exceeds the broker's maximum packet size 1000" in listing.stdout
    assert sorted(m.event["subject"] for m in sub.events()) == ["AFTER/WH1", "SMALL/WH1"]
    db.close()
