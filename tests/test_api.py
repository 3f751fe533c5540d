"""The status API against a running agent, through ``distillsync status`` and the client."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import stat
from pathlib import Path

import orjson

from agent.apiclient import ApiClient
from tests.support import (
    AgentProcess,
    Collector,
    Mosquitto,
    agent_toml,
    run_cli,
    stock_levels_source,
    wait_until,
)


def test_status_endpoints_and_actions(broker: Mosquitto, tmp_path: Path) -> None:
    db_path = tmp_path / "erp.db"
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE stock_levels (sku TEXT, warehouse TEXT, on_hand REAL, tms TEXT)")
        db.execute("INSERT INTO stock_levels VALUES ('A', 'W', 1, '2026-01-01 00:00:00')")
        db.execute("INSERT INTO stock_levels VALUES ('B', 'W', 'x', '2026-01-01 00:00:01')")
    config = tmp_path / "agent.toml"
    config.write_text(agent_toml(tmp_path / "state", broker.url, stock_levels_source(db_path),
                                 agent_id="api"))
    socket = tmp_path / "state" / "agent.sock"
    client = ApiClient(socket)
    with Collector(broker.port, "distillsync/acme/api/out/#") as sub, \
            AgentProcess(config, tmp_path / "agent.log") as agent:
        sub.wait_for(lambda ev: len(ev) == 1, 30, "the good row")
        wait_until(socket.exists, 30, "the API socket")
        assert stat.S_IMODE(socket.stat().st_mode) == 0o660

        shown = run_cli(config, "status")
        assert shown.returncode == 0, shown.stderr
        assert "acme/api" in shown.stdout and "healthy" in shown.stdout
        assert re.search(r"source  erp/stock \[timestamp\]: \d+ rows read, 1 changes, 1 dead",
                         shown.stdout), shown.stdout
        as_json = orjson.loads(run_cli(config, "status", "--json").stdout)
        assert as_json["status"]["relay"]["state"] == "connected"
        assert as_json["status"]["outbox"]["dead_letters"] == 1

        code, dead = asyncio.run(client.get("/v1/outbox?state=dead"))
        assert code == 200 and "on_hand must be number" in dead["items"][0]["reason"]
        assert asyncio.run(client.get("/v1/outbox?state=sideways"))[0] == 400
        assert asyncio.run(client.post("/v1/outbox/999/retry")) == (
            404, {"error": "no dead letter with id 999"})
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
