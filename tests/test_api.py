"""The status API against a running agent, through ``distillsync status`` and the client."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import orjson
from aiohttp import web

from agent import api
from agent.apiclient import ApiClient
from agent.delivery import RelayStats
from agent.model import Outcome, PendingEvent
from agent.publisher import Ack
from demo.localbroker import free_port
from tests.support import (
    AgentProcess,
    Collector,
    Mosquitto,
    agent_toml,
    run_cli,
    stock_levels_source,
    wait_until,
    write_secret,
)


def erp_with_a_good_and_a_bad_row(tmp_path: Path) -> Path:
    db_path = tmp_path / "erp.db"
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE stock_levels (sku TEXT, warehouse TEXT, on_hand REAL, tms TEXT)")
        db.execute("INSERT INTO stock_levels VALUES ('A', 'W', 1, '2026-01-01 00:00:00')")
        db.execute("INSERT INTO stock_levels VALUES ('B', 'W', 'x', '2026-01-01 00:00:01')")
    return db_path


def test_status_endpoints_and_actions(broker: Mosquitto, tmp_path: Path) -> None:
    db_path = erp_with_a_good_and_a_bad_row(tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text(
        agent_toml(tmp_path / "state", broker.url, stock_levels_source(db_path), agent_id="api")
    )
    socket = tmp_path / "state" / "agent.sock"
    client = ApiClient(socket)
    with (
        Collector(broker.port, "distillsync/acme/api/out/#") as sub,
        AgentProcess(config, tmp_path / "agent.log") as agent,
    ):
        sub.wait_for(lambda ev: len(ev) == 1, 30, "the good row")
        wait_until(socket.exists, 30, "the API socket")
        assert stat.S_IMODE(socket.stat().st_mode) == 0o660

        shown = run_cli(config, "status")
        assert shown.returncode == 0, shown.stderr
        assert "acme/api" in shown.stdout and "healthy" in shown.stdout
        assert re.search(
            r"source  erp/stock \[timestamp\]: \d+ rows read, 1 changes, 1 dead", shown.stdout
        ), shown.stdout
        as_json = orjson.loads(run_cli(config, "status", "--json").stdout)
        assert as_json["status"]["relay"]["state"] == "connected"
        assert as_json["status"]["outbox"]["dead_letters"] == 1

        code, dead = asyncio.run(client.get("/v1/outbox?state=dead"))
        assert code == 200 and "on_hand must be number" in dead["items"][0]["reason"]
        assert asyncio.run(client.get("/v1/outbox?state=sideways"))[0] == 400
        assert asyncio.run(client.post("/v1/outbox/999/retry")) == (
            404,
            {"error": "no dead letter with id 999"},
        )
        code, _ = asyncio.run(client.post(f"/v1/outbox/{dead['items'][0]['id']}/discard"))
        assert code == 200

        assert asyncio.run(client.post("/v1/sources/erp/pause"))[1]["paused"] is True
        assert asyncio.run(client.post("/v1/sources/nope/pause"))[0] == 404
        assert asyncio.run(client.post("/v1/sources/erp/resume"))[1]["paused"] is False
        assert asyncio.run(client.get("/v1/health"))[0] == 200
        assert agent.terminate() == 0
    assert not socket.exists()
    gone = run_cli(config, "status")
    assert gone.returncode == 69 and "agent unreachable" in gone.stderr


def tailed(updates: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["subject"], e["outcome"]) for u in updates for e in u["events"]]


async def read_updates(
    client: ApiClient,
    after_first: Callable[[], None],
    done: Callable[[list[dict[str, Any]]], bool],
    seconds: float = 30,
) -> list[dict[str, Any]]:
    """The stream's updates until ``done`` holds; ``after_first`` runs once the first one
    is in (so what it changes can only show in a later update)."""
    updates: list[dict[str, Any]] = []

    async def read() -> None:
        async for update in client.stream():
            updates.append(update)
            if len(updates) == 1:
                await asyncio.to_thread(after_first)
            if done(updates):
                return

    try:
        await asyncio.wait_for(read(), seconds)
    except TimeoutError:
        raise AssertionError(f"timed out; the stream so far: {tailed(updates)}") from None
    return updates


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in\n{text}"
    return float(match.group(1))


def test_metrics_stream_and_token_on_tcp(broker: Mosquitto, tmp_path: Path) -> None:
    db_path = erp_with_a_good_and_a_bad_row(tmp_path)
    token_file = tmp_path / "api-token"
    write_secret(token_file, "s3cret-token\n")
    port = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(
        agent_toml(
            tmp_path / "state",
            broker.url,
            stock_levels_source(db_path),
            agent_id="metrics",
            api_extra=f'listen = "127.0.0.1:{port}"\ntoken_file = "{token_file}"\n',
        )
    )
    socket = tmp_path / "state" / "agent.sock"
    local = ApiClient(socket)
    before_start = time.time()
    with (
        Collector(broker.port, "distillsync/acme/metrics/out/#") as sub,
        AgentProcess(config, tmp_path / "agent.log") as agent,
    ):
        sub.wait_for(lambda ev: len(ev) == 1, 30, "the good row")
        wait_until(socket.exists, 30, "the API socket")
        wait_until(
            lambda: asyncio.run(local.get("/v1/status"))[1]["outbox"]["pending"] == 0,
            30,
            "the delivery recorded",
        )

        code, text = asyncio.run(local.get_text("/v1/metrics"))
        assert code == 200
        assert metric(text, 'distillsync_events_published_total{entity="stock"}') == 1
        assert metric(text, "distillsync_relay_connected") == 1
        assert metric(text, "distillsync_outbox_pending_events") == 0
        assert metric(text, "distillsync_outbox_dead_letters") == 1
        assert metric(text, 'distillsync_publish_failures_total{reason="refused"}') == 0
        feed = 'entity="stock",feed="stock",source="erp"'  # the exposition sorts labels
        assert metric(text, f"distillsync_source_dead_letters_total{{{feed}}}") == 1
        last_success = metric(text, f"distillsync_source_last_success_timestamp_seconds{{{feed}}}")
        assert before_start <= last_success <= time.time()  # epoch seconds, this run's

        url = f"http://127.0.0.1:{port}"
        assert asyncio.run(ApiClient(None, url=url).get("/v1/status"))[0] == 401
        assert asyncio.run(ApiClient(None, url=url, token="wrong").get("/v1/status"))[0] == 401
        code, status = asyncio.run(ApiClient(None, url=url, token="s3cret-token").get("/v1/status"))
        assert code == 200 and status["agent"]["id"] == "metrics"
        assert "s3cret" not in agent.output()

        def insert_c() -> None:
            with contextlib.closing(sqlite3.connect(db_path)) as db, db:
                db.execute("INSERT INTO stock_levels VALUES ('C', 'W', 3, datetime('now'))")

        # How often updates come is the unit test's business (test_the_stream_*, below).
        updates = asyncio.run(
            read_updates(local, insert_c, lambda us: ("C/W", "delivered") in tailed(us))
        )
        first = updates[0]
        assert [e["subject"] for e in first["events"]] == ["A/W"]  # the tail on connect
        assert first["health"]["healthy"] and first["status"]["relay"]["state"] == "connected"
        assert tailed(updates) == [("A/W", "delivered"), ("C/W", "delivered")]
        assert agent.terminate() == 0


# --- the stream's pace, on a clock the test moves -----------------------------------------


class Board:
    """What ``stream`` reads of a StatusBoard, with a ``state`` the test changes; each
    update it sends asks for ``health()`` once, so ``updates`` counts them as they go."""

    def __init__(self) -> None:
        self.relay = RelayStats()
        self.agent = SimpleNamespace(
            delivery=SimpleNamespace(stats=self.relay), stop=asyncio.Event()
        )
        self.state = 0
        self.updates = 0

    async def snapshot(self) -> dict[str, Any]:
        return {"agent": {"uptime_seconds": 0}, "relay": {"state": self.state}}

    def health(self) -> dict[str, Any]:
        self.updates += 1
        return {"healthy": True}

    def settle(self, count: int) -> None:
        for n in range(count):
            sequence = self.relay.tail_total + 1
            self.relay.settled(
                PendingEvent(
                    sequence,
                    f"id-{sequence}",
                    "stock",
                    "upsert",
                    f"K{n}",
                    "2026-01-01T00:00:00Z",
                    b"{}",
                ),
                Ack(Outcome.ACKED),
            )


class Pace:
    """The stream's clock and its wait between looks, both moved by the test: each look
    ends in ``tick``, which reports it and holds the stream until ``next_look``."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._looked: asyncio.Queue[None] = asyncio.Queue()
        self._go: asyncio.Queue[None] = asyncio.Queue()

    def clock(self) -> float:
        return self.now

    async def tick(self, _stop: asyncio.Event) -> None:
        self._looked.put_nowait(None)
        await self._go.get()

    async def looked(self) -> None:
        await asyncio.wait_for(self._looked.get(), 30)

    async def next_look(self, seconds: float = api.STREAM_TICK) -> None:
        """Let ``seconds`` pass on the clock, then let the stream look once more."""
        self.now += seconds
        self._go.put_nowait(None)
        await self.looked()


@contextlib.asynccontextmanager
async def paced_stream(tmp_path: Path) -> AsyncIterator[tuple[Board, Pace, list[Any]]]:
    """``/v1/stream`` served (on a unix socket) from a Board on a Pace, and a client
    reading it; on exit the stream ends and every line the client read is checked."""
    board, pace, lines = Board(), Pace(), []

    async def handler(request: web.Request) -> web.StreamResponse:
        return await api.stream(
            cast(api.StatusBoard, board), request, clock=pace.clock, tick=pace.tick
        )

    app = web.Application()
    app.router.add_get("/v1/stream", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    socket = tmp_path / "stream.sock"
    await web.UnixSite(runner, str(socket)).start()

    async def read() -> None:
        with contextlib.suppress(OSError):  # "closed the stream", once the agent stops
            async for update in ApiClient(socket).stream():
                lines.append(update)

    reader = asyncio.create_task(read())
    try:
        await pace.looked()  # the first look
        yield board, pace, lines
        board.agent.stop.set()
        pace._go.put_nowait(None)
        await asyncio.wait_for(reader, 30)
    finally:
        reader.cancel()
        await runner.cleanup()
    assert len(lines) == board.updates  # what was counted is what went out


async def test_the_stream_sends_one_update_per_look_however_much_changed(tmp_path: Path) -> None:
    async with paced_stream(tmp_path) as (board, pace, lines):
        assert board.updates == 1  # the first look always sends
        board.settle(50)
        board.state += 1
        await pace.next_look()
        assert board.updates == 2  # fifty publishes and a new status: one update
        for look in range(1, 9):  # a change at every look: an update at every look
            board.state += 1
            await pace.next_look()
            assert board.updates == 2 + look
    assert [len(u["events"]) for u in lines] == [0, 50, *[0] * 8]
    assert [u["status"]["relay"]["state"] for u in lines] == list(range(10))


async def test_a_quiet_stream_sends_only_the_heartbeat(tmp_path: Path) -> None:
    looks_per_beat = int(api.STREAM_HEARTBEAT / api.STREAM_TICK)
    async with paced_stream(tmp_path) as (board, pace, _):
        sent_at = []
        for look in range(1, 3 * looks_per_beat + 1):
            before = board.updates
            await pace.next_look()
            if board.updates > before:
                sent_at.append(look)
        assert sent_at == [looks_per_beat, 2 * looks_per_beat, 3 * looks_per_beat]
        # A change between two heartbeats goes out at the next look, and the heartbeat
        # counts again from there.
        board.settle(1)
        await pace.next_look()
        assert board.updates == 5
        for _ in range(looks_per_beat - 1):
            await pace.next_look()
        assert board.updates == 5
        await pace.next_look()
        assert board.updates == 6


def test_outbox_commands_go_through_the_running_agent(broker: Mosquitto, tmp_path: Path) -> None:
    db_path = erp_with_a_good_and_a_bad_row(tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text(
        agent_toml(tmp_path / "state", broker.url, stock_levels_source(db_path), agent_id="ops")
    )
    # Same socket, but a state_dir with no outbox: only the API can answer for this one.
    api_only = tmp_path / "api-only.toml"
    api_only.write_text(
        agent_toml(
            tmp_path / "elsewhere", broker.url, stock_levels_source(db_path), agent_id="ops"
        ).replace(f"{tmp_path}/elsewhere/agent.sock", f"{tmp_path}/state/agent.sock")
    )
    with (
        Collector(broker.port, "distillsync/acme/ops/status") as statuses,
        AgentProcess(config, tmp_path / "agent.log") as agent,
    ):
        wait_until((tmp_path / "state" / "agent.sock").exists, 30, "the API socket")
        wait_until(lambda: "1 dead" in run_cli(config, "status").stdout, 30, "the dead row")
        listed = run_cli(api_only, "outbox", "list")
        assert listed.returncode == 0, listed.stderr
        assert "on_hand must be number" in listed.stdout
        dead_id = int(listed.stdout.split()[0])
        stats = orjson.loads(run_cli(api_only, "outbox", "stats").stdout)
        assert stats["dead_letters"] == 1 and "delivered_per_second" in stats
        assert run_cli(api_only, "outbox", "retry", "999").returncode == 1
        assert run_cli(api_only, "outbox", "discard", str(dead_id)).returncode == 0
        assert orjson.loads(run_cli(api_only, "outbox", "stats").stdout)["dead_letters"] == 0

        # The fleet's retained status: the summary, refreshed at once on a state change.
        assert (
            asyncio.run(ApiClient(tmp_path / "state" / "agent.sock").post("/v1/sources/erp/pause"))[
                0
            ]
            == 200
        )
        wait_until(
            lambda: statuses.messages[-1].event.get("paused") == ["erp"],
            10,
            "a status naming the paused source",
        )
        online = statuses.messages[-1].event
        assert online["state"] == "online" and online["backlog"] == 0
        assert online["last_publish"].endswith("Z") and online["published"] >= 1
        assert agent.terminate() == 0
    assert run_cli(api_only, "outbox", "list").returncode == 1  # no agent, and no file there
