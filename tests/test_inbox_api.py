"""The inbox seen and operated like the outbox: ``/v1/status``, ``/v1/metrics``,
``GET /v1/inbox``, ``POST /v1/inbox/{id}/retry|discard`` and ``distillsync inbox``, against a
real agent process whose ``outbox.db`` already holds inbox items, then with it stopped."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import orjson

from agent.apiclient import ApiClient
from agent.config import MasterSection
from agent.inbox import Inbox
from agent.outbox import Outbox
from tests.support import (
    AgentProcess,
    Mosquitto,
    agent_toml,
    run_cli,
    stock_levels_source,
    wait_until,
)
from tests.test_inbox import SHOP, V1, V2, order, other

ORDER_TOPIC = "distillsync/acme/inbox-ops/in/order"


async def seed(path: Path) -> dict[str, int]:
    """One item in each state but written and failed, a redelivery, and three dead: a
    message that is no event, and two customers dead under a rule the agent's config lifts."""
    async with Outbox.open(path) as outbox:
        inbox = Inbox(outbox, MasterSection.model_validate({"customer": "erp"}))
        newer = await inbox.receive(order("1001", V2, 2), ORDER_TOPIC)
        await inbox.receive(order("1001", V2, 2), ORDER_TOPIC)  # redelivered: counted once
        older = await inbox.receive(order("1001", V1, 1), ORDER_TOPIC)
        held = await inbox.receive(order("1002", V1, 3, payment="pending"), ORDER_TOPIC)
        garbage = await inbox.receive(b"not json at all")
        first = await inbox.receive(other("customer", f"{SHOP}/77", 4))
        second = await inbox.receive(other("customer", f"{SHOP}/78", 5))
    assert (newer.state, older.state, held.state) == ("pending", "stale", "held")
    assert (garbage.state, first.state, second.state) == ("dead", "dead", "dead")
    return {
        "pending": newer.item_id,
        "stale": older.item_id,
        "held": held.item_id,
        "garbage": garbage.item_id,
        "customer": first.item_id,
        "customer2": second.item_id,
    }


def erp(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE stock_levels (sku TEXT, warehouse TEXT, on_hand REAL, tms TEXT)")
    return path


def configs(tmp_path: Path, relay: str) -> tuple[Path, Path]:
    """The agent's config, and one with the same socket but a state_dir with no outbox:
    only the API can answer for that one."""
    source = stock_levels_source(erp(tmp_path / "erp.db"))
    config, api_only = tmp_path / "agent.toml", tmp_path / "api-only.toml"
    config.write_text(agent_toml(tmp_path / "state", relay, source, agent_id="inbox-ops"))
    api_only.write_text(
        agent_toml(tmp_path / "elsewhere", relay, source, agent_id="inbox-ops").replace(
            f"{tmp_path}/elsewhere/agent.sock", f"{tmp_path}/state/agent.sock"
        )
    )
    return config, api_only


def inbox_status(client: ApiClient) -> dict[str, Any]:
    code, status = asyncio.run(client.get("/v1/status"))
    assert code == 200
    inbox: dict[str, Any] = status["inbox"]
    return inbox


def counts(inbox: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in inbox.items() if k != "oldest_pending_age_seconds"}


def test_status_metrics_list_retry_and_discard_through_the_api(
    broker: Mosquitto, tmp_path: Path
) -> None:
    (tmp_path / "state").mkdir()
    ids = asyncio.run(seed(tmp_path / "state" / "outbox.db"))
    config, _ = configs(tmp_path, broker.url)
    socket = tmp_path / "state" / "agent.sock"
    client = ApiClient(socket)
    with AgentProcess(config, tmp_path / "agent.log") as agent:
        wait_until(socket.exists, 30, "the API socket")
        inbox = inbox_status(client)
        assert counts(inbox) == {
            "held": 1,
            "pending": 1,
            "written": 0,
            "failed": 0,
            "dead": 3,
            "stale": 1,
            "duplicates": 1,
            "received": 0,  # on in/#: the seeded items came through no link
        }
        assert inbox["oldest_pending_age_seconds"] >= 0

        shown = run_cli(config, "status")
        assert shown.returncode == 0, shown.stderr
        assert "inbox   1 pending (oldest " in shown.stdout
        assert "1 held, 0 failed, 3 dead, 0 written, 1 stale, 1 duplicates" in shown.stdout

        code, text = asyncio.run(client.get_text("/v1/metrics"))
        assert code == 200
        for line in (
            'distillsync_inbox_items{state="dead"} 3.0',
            'distillsync_inbox_items{state="written"} 0.0',
            "distillsync_inbox_duplicates_total 1.0",
            "distillsync_inbox_oldest_pending_age_seconds ",
        ):
            assert line in text, line

        code, page = asyncio.run(client.get("/v1/inbox?state=dead"))
        assert code == 200 and page["state"] == "dead"
        assert [item["id"] for item in page["items"]] == [
            ids["garbage"],
            ids["customer"],
            ids["customer2"],
        ]
        garbage, customer = page["items"][0], page["items"][1]
        assert garbage["payload"] == "not json at all" and garbage["entity"] is None
        assert garbage["reason"].startswith("not a valid event: ")
        assert orjson.loads(customer["payload"])["data"]["email"] == "ana@example.com"
        assert "customer is mastered by the ERP" in customer["reason"]

        code, everything = asyncio.run(client.get("/v1/inbox?limit=2"))
        assert [i["id"] for i in everything["items"]] == [ids["pending"], ids["stale"]]
        pending = everything["items"][0]
        assert (pending["state"], pending["duplicates"], pending["topic"]) == (
            "pending",
            1,
            ORDER_TOPIC,
        )
        assert orjson.loads(pending["payload"])["data"]["order_ref"] == "1001"
        code, rest = asyncio.run(client.get(f"/v1/inbox?after={ids['stale']}&limit=5000"))
        assert code == 200 and len(rest["items"]) == 4  # a page is capped, not refused
        assert asyncio.run(client.get("/v1/inbox?state=sideways"))[0] == 400
        assert asyncio.run(client.get("/v1/inbox?after=x"))[0] == 400

        assert asyncio.run(client.post("/v1/inbox/999/retry")) == (
            404,
            {"error": "no inbox item with id 999"},
        )
        assert asyncio.run(client.post("/v1/inbox/999/discard"))[0] == 404
        code, refused = asyncio.run(client.post(f"/v1/inbox/{ids['garbage']}/retry"))
        assert code == 409 and "is dead: not a valid event" in refused["error"]
        assert asyncio.run(client.post(f"/v1/inbox/{ids['pending']}/discard"))[0] == 409
        # The agent's config lifts the rule: judged again, the customer is pending now.
        assert asyncio.run(client.post(f"/v1/inbox/{ids['customer']}/retry")) == (
            200,
            {"id": ids["customer"], "done": "retry", "state": "pending"},
        )
        assert asyncio.run(client.post(f"/v1/inbox/{ids['held']}/discard")) == (
            200,
            {"id": ids["held"], "done": "discard", "state": None},
        )
        wait_until(
            lambda: (
                (lambda i: (i["pending"], i["held"], i["dead"]))(inbox_status(client)) == (2, 0, 2)
            ),
            10,
            "the counts after the actions",
        )
        assert agent.terminate() == 0


def test_the_inbox_commands_through_the_agent_and_on_the_file(
    broker: Mosquitto, tmp_path: Path
) -> None:
    (tmp_path / "state").mkdir()
    ids = asyncio.run(seed(tmp_path / "state" / "outbox.db"))
    config, api_only = configs(tmp_path, broker.url)
    with AgentProcess(config, tmp_path / "agent.log") as agent:
        wait_until((tmp_path / "state" / "agent.sock").exists, 30, "the API socket")
        listed = run_cli(api_only, "inbox", "list", "--state", "dead")
        assert listed.returncode == 0, listed.stderr
        rows = [line.split()[0] for line in listed.stdout.splitlines() if line[:6].strip()]
        assert rows == [str(ids["garbage"]), str(ids["customer"]), str(ids["customer2"])]
        assert "customer.upsert" in listed.stdout and "not json at all" in listed.stdout
        everything = run_cli(api_only, "inbox", "list")
        assert everything.returncode == 0 and "held" in everything.stdout
        stats = orjson.loads(run_cli(api_only, "inbox", "stats").stdout)
        assert (stats["dead"], stats["duplicates"]) == (3, 1)
        assert "oldest_pending_age_seconds" in stats

        retried = run_cli(api_only, "inbox", "retry", str(ids["customer"]))
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout.strip() == f"inbox item {ids['customer']}: retry done, now pending"
        missing = run_cli(api_only, "inbox", "retry", "999")
        assert missing.returncode == 1 and "no inbox item with id 999" in missing.stderr
        refused = run_cli(api_only, "inbox", "retry", str(ids["garbage"]))
        assert refused.returncode == 1 and "is dead: not a valid event" in refused.stderr
        assert run_cli(api_only, "inbox", "discard", str(ids["stale"])).returncode == 0
        wait_until(
            lambda: orjson.loads(run_cli(api_only, "inbox", "stats").stdout)["stale"] == 0,
            10,
            "the stale item gone",
        )
        assert agent.terminate() == 0

    # The agent stopped: the same commands open the outbox file.
    stats = orjson.loads(run_cli(config, "inbox", "stats").stdout)
    assert {k: stats[k] for k in ("held", "pending", "dead", "stale", "duplicates")} == {
        "held": 1,
        "pending": 2,
        "dead": 2,
        "stale": 0,
        "duplicates": 1,
    }
    listed = run_cli(config, "inbox", "list", "--state", "dead")
    assert listed.returncode == 0, listed.stderr
    assert str(ids["customer2"]) in listed.stdout and "not a valid event" in listed.stdout
    retried = run_cli(config, "inbox", "retry", str(ids["customer2"]))
    assert retried.returncode == 0, retried.stderr
    assert "retry done, now pending" in retried.stdout
    assert run_cli(config, "inbox", "discard", str(ids["garbage"])).returncode == 0
    assert run_cli(config, "inbox", "discard", "999").returncode == 1
    assert run_cli(config, "inbox", "retry").returncode == 2  # argparse: the id is required
    after = orjson.loads(run_cli(config, "inbox", "stats").stdout)
    assert (after["pending"], after["dead"]) == (3, 0)
    gone = run_cli(api_only, "inbox", "list")  # no agent, and no file there
    assert gone.returncode == 1 and "no outbox at" in gone.stderr
