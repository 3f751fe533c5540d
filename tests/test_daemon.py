"""The daemon as systemd sees it: notify protocol, signals, exit codes, logs."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

from agent.notify import Notifier
from tests.support import (
    AgentProcess,
    Collector,
    Mosquitto,
    agent_toml,
    run_cli,
    stock_levels_source,
    wait_until,
)


def make_erp(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE stock_levels (sku TEXT, warehouse TEXT, on_hand REAL, tms TEXT)")
        db.execute("INSERT INTO stock_levels VALUES ('A', 'W', 1, '2026-01-01 00:00:00')")


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                return self.messages

    def seen(self, field: str) -> bool:
        return any(field in m.split("\n") for m in self.drain())

    def close(self) -> None:
        self.sock.close()


def test_notify_ready_status_watchdog_stopping_and_clean_exit(
    broker: Mosquitto, tmp_path: Path
) -> None:
    make_erp(tmp_path / "erp.db")
    config = tmp_path / "agent.toml"
    config.write_text(
        agent_toml(
            tmp_path / "state",
            broker.url,
            stock_levels_source(tmp_path / "erp.db"),
            agent_id="notify",
            extra='username = "notify"\npassword_env = "RELAY_SECRET"\n',
        )
    )
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": "1000000",
        "RELAY_SECRET": "hunter2-very-secret",
    }
    agent = AgentProcess(config, tmp_path / "agent.log", env)
    try:
        with Collector(broker.port, "distillsync/acme/notify/#") as sub, agent:
            wait_until(lambda: notify.seen("READY=1"), 30, "READY=1")
            ready = next(m for m in notify.messages if "READY=1" in m)
            assert "STATUS=relay" in ready
            # READY comes only after the first poll: its event is already in the outbox.
            sub.wait_for(lambda ev: len(ev) == 1, 30, "the first event")
            wait_until(
                lambda: sum("WATCHDOG=1" in m for m in notify.drain()) >= 2,
                10,
                "two watchdog pings (every 0.5 s)",
            )
            assert agent.terminate() == 0
            assert notify.seen("STOPPING=1")
        statuses = [m for m in sub.messages if m.topic.endswith("/status")]
        assert statuses[-1].event["state"] == "offline"
    finally:
        notify.close()
    log = agent.output()
    assert "hunter2" not in log
    assert all(line[:4].isdigit() for line in log.splitlines() if line.strip()), (
        "every log record is one line"
    )


def test_notifier_is_silent_without_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    notifier.ready("x")  # no socket, no error


def test_notifier_abstract_socket_and_watchdog_pid() -> None:
    assert (
        Notifier(
            {"NOTIFY_SOCKET": "@sd", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
        ).watchdog_interval
        is None
    )
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0


def test_sigterm_while_the_relay_is_down_still_exits_zero(tmp_path: Path) -> None:
    make_erp(tmp_path / "erp.db")
    config = tmp_path / "agent.toml"
    config.write_text(
        agent_toml(
            tmp_path / "state",
            "mqtt://127.0.0.1:9",
            stock_levels_source(tmp_path / "erp.db"),
            agent_id="nobroker",
        )
    )
    with AgentProcess(config, tmp_path / "agent.log") as agent:
        # Past one failed connect and into the backoff before the next: mid-retry.
        wait_until(lambda: "(attempt 2)" in agent.output(), 30, "two failed connects")
        assert agent.terminate() == 0
    assert "Traceback" not in agent.output()


def test_a_second_agent_on_the_same_state_dir_refuses_to_start(
    broker: Mosquitto, tmp_path: Path
) -> None:
    make_erp(tmp_path / "erp.db")
    config = tmp_path / "agent.toml"
    config.write_text(
        agent_toml(
            tmp_path / "state",
            broker.url,
            stock_levels_source(tmp_path / "erp.db"),
            agent_id="twice",
        )
    )
    with AgentProcess(config, tmp_path / "first.log") as first:
        wait_until(lambda: "ready" in first.output(), 30, "the first agent")
        second = AgentProcess(config, tmp_path / "second.log")
        second.start()
        assert second.proc is not None and second.proc.wait(30) == 1
        assert f"already running on {tmp_path / 'state'}" in second.output()
        assert str(first.pid) in second.output()
        assert first.terminate() == 0


def test_a_second_agent_on_the_same_api_socket_leaves_it_to_the_first(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Two state directories, one socket path (a copied config): the second exits 1 saying
    so, and the first's status API still answers. A SIGKILLed agent's stale socket does not
    stop the next one."""
    make_erp(tmp_path / "erp.db")
    shared = tmp_path / "agent.sock"

    def config(name: str) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(
            agent_toml(
                tmp_path / name, broker.url, stock_levels_source(tmp_path / "erp.db"), agent_id=name
            ).replace(f'socket = "{tmp_path / name}/agent.sock"', f'socket = "{shared}"')
        )
        return path

    def answers() -> bool:
        return run_cli(config("first"), "status").returncode == 0

    with AgentProcess(config("first"), tmp_path / "first.log") as first:
        wait_until(answers, 30, "the first agent's status API")
        second = AgentProcess(config("second"), tmp_path / "second.log")
        second.start()
        assert second.proc is not None and second.proc.wait(30) == 1
        assert f"another process serves api.socket {shared}" in second.output()
        assert answers()
        first.kill()
    assert shared.exists()  # left behind by the SIGKILL
    with AgentProcess(config("second"), tmp_path / "third.log") as third:
        wait_until(answers, 30, "the next agent's status API on the stale path")
        assert third.terminate() == 0
    assert not shared.exists()
