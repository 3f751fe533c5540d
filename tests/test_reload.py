"""SIGHUP: source changes apply without dropping the outbox or the relay session; an
invalid file is refused whole and the running config kept; systemd hears RELOADING=1
then READY=1."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

from tests.support import (
    PRICES_ENTITY,
    AgentProcess,
    Collector,
    Mosquitto,
    agent_toml,
    stock_levels_source,
    wait_until,
)
from tests.test_daemon import NotifySocket


def make_erp(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE stock_levels (sku TEXT, warehouse TEXT, on_hand REAL, tms TEXT)")
    db.execute("CREATE TABLE prices (sku TEXT, price TEXT, tms TEXT)")
    return db


def reloaded(agent: AgentProcess, notify: NotifySocket, count: int) -> None:
    """SIGHUP, then RELOADING=1 followed by READY=1 (the ``count``-th reload)."""
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGHUP)

    def answered() -> bool:
        fields = [m.split("\n")[0] for m in notify.drain()]
        after = [f for f in fields if f in ("RELOADING=1", "READY=1")]
        return (
            after.count("RELOADING=1") >= count
            and after[-1] == "READY=1"
            and after.count("READY=1") >= count + 1
        )  # the start's READY, then one per reload

    wait_until(answered, 30, f"reload {count}: RELOADING=1 then READY=1")


def test_sighup_applies_source_changes_and_refuses_a_bad_file(
    broker: Mosquitto, tmp_path: Path
) -> None:
    erp, other = make_erp(tmp_path / "erp.db"), make_erp(tmp_path / "other.db")
    base = agent_toml(
        tmp_path / "state", broker.url, stock_levels_source(tmp_path / "erp.db"), agent_id="reload"
    )
    config = tmp_path / "agent.toml"
    config.write_text(base)
    notify = NotifySocket(tmp_path / "notify.sock")
    agent = AgentProcess(config, tmp_path / "agent.log", {"NOTIFY_SOCKET": str(notify.path)})
    try:
        with Collector(broker.port, "distillsync/acme/reload/#") as sub, agent:
            wait_until(lambda: notify.seen("READY=1"), 30, "READY=1")
            erp.execute("INSERT INTO stock_levels VALUES ('A', 'W', 1, datetime('now'))")
            sub.wait_for(lambda ev: len(ev) == 1, 30, "the first stock event")

            # A new entity on the running source and a second source, in one reload.
            config.write_text(
                base
                + PRICES_ENTITY
                + "\n"
                + stock_levels_source(tmp_path / "other.db", name="warehouse")
            )
            reloaded(agent, notify, 1)
            erp.execute("INSERT INTO prices VALUES ('A', '9.90', datetime('now'))")
            other.execute("INSERT INTO stock_levels VALUES ('B', 'X', 2, datetime('now'))")
            sub.wait_for(
                lambda ev: {e.event["subject"] for e in ev} == {"A/W", "A", "B/X"},
                30,
                "the price and the second source's stock",
            )

            # An invalid file: refused whole, the running sources go on.
            config.write_text(base.replace('poll_interval = "200ms"', 'poll_interval = "fast"'))
            reloaded(agent, notify, 2)
            erp.execute("INSERT INTO prices VALUES ('C', '1.00', datetime('now'))")
            sub.wait_for(
                lambda ev: "C" in {e.event["subject"] for e in ev},
                30,
                "a price: the reloaded config still runs",
            )

            # A relay change waits for a restart; dropping the second source stops it.
            config.write_text(base.replace('keepalive = "5s"', 'keepalive = "7s"'))
            reloaded(agent, notify, 3)
            assert agent.terminate() == 0
        events = sub.events()
        sequences = [int(e.event["sequence"]) for e in events]
        assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
        statuses = [m.event["state"] for m in sub.messages if m.topic.endswith("/status")]
        assert "offline" not in statuses[:-1], "the relay session dropped during a reload"
    finally:
        notify.close()
    log = agent.output()
    assert log.count("relay connected") == 1
    assert "reloaded" in log and "sources started erp, warehouse, stopped erp" in log
    assert "reload refused, the running config stays: sources[0].poll_interval: " in log
    assert "reload: [relay] changed; that takes effect at the next restart" in log
    assert "sources started erp, stopped erp, warehouse" in log  # back to one source
