"""``distillsync outbox backup`` next to a real agent that keeps writing, and a restore.

The agent process captures a SQLite ERP whose stock a thread keeps changing; the backup
must come out whole (``integrity_check``), hold exactly the events the outbox held at one
moment, and leave the agent running. A restored backup is an outbox the agent resumes
from: nothing it had delivered is published again, and its sequence continues.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from cli.operate import copy_outbox
from tests.delivery_support import outbox_last_sequence, outbox_rows
from tests.support import (
    AgentProcess,
    Collector,
    Mosquitto,
    agent_toml,
    run_cli,
    stock_levels_source,
    wait_until,
)

SKUS = 50
TIMEOUT = 30.0


def make_erp(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE stock_levels (sku TEXT, warehouse TEXT, on_hand REAL, tms TEXT)")
        db.executemany(
            "INSERT INTO stock_levels VALUES (?, 'W', 0, '2026-01-01 00:00:00')",
            [(f"S{i}",) for i in range(SKUS)],
        )
    return path


def set_stock(erp: Path, sku: str, on_hand: float) -> None:
    with contextlib.closing(sqlite3.connect(erp, timeout=30)) as db, db:
        db.execute(
            "UPDATE stock_levels SET on_hand = ?, tms = ? WHERE sku = ?",
            (on_hand, datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"), sku),
        )


@contextlib.contextmanager
def erp_users(erp: Path) -> Iterator[None]:
    """A thread changing one SKU's stock every few milliseconds, to a value never used."""
    stop = threading.Event()

    def work() -> None:
        change = 0
        while not stop.wait(0.005):
            change += 1
            set_stock(erp, f"S{change % SKUS}", change)

    thread = threading.Thread(target=work, name="erp-users")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def write_config(tmp_path: Path, state: Path, relay: str, agent_id: str) -> Path:
    config = tmp_path / f"{state.name}.toml"
    config.write_text(
        agent_toml(state, relay, stock_levels_source(tmp_path / "erp.db"), agent_id=agent_id)
    )
    return config


def rows_up_to(path: Path, last: int) -> list[tuple[int, str, str]]:
    return [(r.sequence, r.event_id, r.subject) for r in outbox_rows(path) if r.sequence <= last]


def check_copy(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # A single self-contained file: nothing needs copying beside it.
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_a_backup_taken_while_the_agent_writes_is_one_consistent_moment(
    broker: Mosquitto, tmp_path: Path
) -> None:
    erp = make_erp(tmp_path / "erp.db")
    state = tmp_path / "state"
    outbox = state / "outbox.db"
    config = write_config(tmp_path, state, broker.url, "backup")
    with AgentProcess(config, tmp_path / "agent.log") as agent, erp_users(erp):
        wait_until(lambda: outbox_last_sequence(outbox) > 200, TIMEOUT, "events captured")

        # Stepwise, one page at a time, and between the first two steps the agent commits
        # more: the copy must still be the moment it began at, and it must finish.
        seen_during: list[int] = []

        def progress(_status: int, _remaining: int, _total: int) -> None:
            if not seen_during:
                seen_during.append(outbox_last_sequence(outbox))
                wait_until(
                    lambda: outbox_last_sequence(outbox) > seen_during[0] + 20,
                    TIMEOUT,
                    "the agent committing during the backup",
                )

        first = copy_outbox(
            outbox, tmp_path / "step.db", force=False, step_pages=1, progress=progress
        )
        assert seen_during and first.last_sequence <= seen_during[0]

        # The command line, with its own figures, while the ERP keeps changing.
        result = run_cli(config, "outbox", "backup", str(tmp_path / "cli.db"))
        assert result.returncode == 0, result.stderr
        assert "integrity ok" in result.stdout and "events pending" in result.stdout
        assert agent.proc is not None and agent.proc.poll() is None  # it kept running
        assert agent.terminate() == 0

    for copy, last in (
        (tmp_path / "step.db", first.last_sequence),
        (tmp_path / "cli.db", outbox_last_sequence(tmp_path / "cli.db")),
    ):
        check_copy(copy)
        assert last > 200
        # Every event up to the backup point, exactly as the outbox holds it, none after.
        assert rows_up_to(copy, last) == rows_up_to(outbox, last)
        assert max(r.sequence for r in outbox_rows(copy)) == last
    assert f"last sequence {outbox_last_sequence(tmp_path / 'cli.db')}," in result.stdout


def test_backup_refuses_to_overwrite_unless_forced(broker: Mosquitto, tmp_path: Path) -> None:
    make_erp(tmp_path / "erp.db")
    state = tmp_path / "state"
    config = write_config(tmp_path, state, broker.url, "overwrite")
    with AgentProcess(config, tmp_path / "agent.log") as agent:
        wait_until(
            lambda: outbox_last_sequence(state / "outbox.db") >= SKUS, TIMEOUT, "the first poll"
        )
        assert agent.terminate() == 0
    dest = tmp_path / "outbox.bak"
    dest.write_bytes(b"yesterday's backup")
    refused = run_cli(config, "outbox", "backup", str(dest))
    assert refused.returncode == 1
    assert f"{dest} already exists; choose another name, or --force" in refused.stderr
    assert dest.read_bytes() == b"yesterday's backup"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []

    itself = run_cli(config, "outbox", "backup", str(state / "outbox.db"), "--force")
    assert itself.returncode == 1 and "is the outbox itself" in itself.stderr

    forced = run_cli(config, "outbox", "backup", str(dest), "--force")
    assert forced.returncode == 0, forced.stderr
    check_copy(dest)
    assert f"{SKUS} events pending" in forced.stdout or "0 events pending" in forced.stdout
    assert (dest.stat().st_mode & 0o777) == 0o600  # the outbox holds the company's data


def test_backup_without_an_outbox_or_a_destination(tmp_path: Path) -> None:
    make_erp(tmp_path / "erp.db")
    config = write_config(tmp_path, tmp_path / "state", "mqtt://127.0.0.1:9", "none")
    missing = run_cli(config, "outbox", "backup", str(tmp_path / "x.db"))
    assert missing.returncode == 1 and "no outbox at" in missing.stderr
    usage = run_cli(config, "outbox", "backup")
    assert usage.returncode == 2 and "the following arguments are required: DEST" in usage.stderr


def test_a_restored_backup_resumes_without_republishing(broker: Mosquitto, tmp_path: Path) -> None:
    erp = make_erp(tmp_path / "erp.db")
    old = tmp_path / "old-state"
    topic = "distillsync/acme/restore/out/#"
    with Collector(broker.port, topic) as sub:
        with AgentProcess(
            write_config(tmp_path, old, broker.url, "restore"), tmp_path / "old.log"
        ) as agent:
            sub.wait_for(lambda ev: len(ev) == SKUS, TIMEOUT, "every SKU published")
            wait_until(
                lambda: all(r.state == 1 for r in outbox_rows(old / "outbox.db")),
                TIMEOUT,
                "every event acknowledged",
            )
            backup = run_cli(
                write_config(tmp_path, old, broker.url, "restore"),
                "outbox",
                "backup",
                str(tmp_path / "outbox.bak"),
            )
            assert backup.returncode == 0, backup.stderr
            assert "0 events pending" in backup.stdout
            assert agent.terminate() == 0

        # The restore the README describes: the backup becomes state_dir/outbox.db.
        new = tmp_path / "new-state"
        new.mkdir()
        (new / "outbox.db").write_bytes((tmp_path / "outbox.bak").read_bytes())
        with AgentProcess(
            write_config(tmp_path, new, broker.url, "restore"), tmp_path / "new.log"
        ) as agent:
            wait_until(lambda: "ready" in agent.output(), TIMEOUT, "the restored agent ready")
            set_stock(erp, "S7", 77)
            sub.wait_for(lambda ev: len(ev) > SKUS, TIMEOUT, "the change after the restore")
            assert agent.terminate() == 0

    events = [m.event for m in sub.events()]
    assert len(events) == SKUS + 1, "a delivered event was published again"
    assert len({e["id"] for e in events}) == len(events)
    assert events[-1]["subject"] == "S7/W" and events[-1]["data"]["on_hand"] == 77
    assert int(events[-1]["sequence"]) == SKUS + 1  # the sequence continues
