"""The dashboard's inbox: the panel's figures, the inbox screen (newest first, by state,
the selected item's fields and pretty payload, retry and discard with the agent's answer),
an agent older than the inbox; on frozen data, then against a real agent."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

from rich.console import Console
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Static

from agent.apiclient import ApiClient
from agent.status import InboxStatus
from tests.support import AgentProcess, Mosquitto, wait_until
from tests.test_inbox_api import configs, seed
from tests.tui_support import (
    INBOX_STATUS,
    FakeAgent,
    fast,
    frozen,
    rows,
    table,
    text,
    until,
    updates,
)
from tui.app import AgentDashboard
from tui.inbox import InboxScreen
from tui.model import InboxList
from tui.screens import ConfirmScreen
from tui.sources import AgentSource, ApiSource
from tui.widgets import InboxPanel, inbox_figures

Notices = list[tuple[str, str]]


def dashboard(agent: AgentSource) -> AgentDashboard:
    return AgentDashboard(agent, now=frozen, backoff=fast())


def record_notices(app: App[Any]) -> Notices:
    notices: Notices = []

    def notify(message: str, *, severity: str = "information", **_: Any) -> None:
        notices.append((message, severity))

    app.notify = notify  # type: ignore[method-assign]
    return notices


def shown(widget: Static) -> str:
    """What a Static holds, rendered as plain text 100 columns wide (a Rich table, here)."""
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


async def loaded(pilot: Pilot[Any]) -> None:
    await until(pilot, lambda: table(pilot.app, "#events").row_count, "the first update")


async def inbox(pilot: Pilot[Any], count: int) -> None:
    await pilot.press("i")
    await until(
        pilot,
        lambda: (
            isinstance(pilot.app.screen, InboxScreen)
            and table(pilot.app, "#inbox-list").row_count == count
        ),
        f"{count} inbox items",
    )


def ids(app: App[Any]) -> list[str]:
    return [row[0] for row in rows(table(app, "#inbox-list"))]


async def select(pilot: Pilot[Any], item_id: str) -> None:
    await pilot.press(*["down"] * ids(pilot.app).index(item_id))
    assert f"#{item_id} " in shown(pilot.app.screen.query_one("#inbox-fields", Static))


async def test_the_panel_counts_items_by_state_and_shows_the_dead_in_red() -> None:
    app = dashboard(FakeAgent(updates()))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        panel = app.screen.query_one(InboxPanel)
        figures = text(panel)
        for expected in ("pending 1", "oldest 21m", "held 1", "failed 1", "dead 2"):
            assert expected in figures
        assert "written 1" in figures and "stale 1" in figures
        assert panel.has_class("-dead") and panel.border_subtitle == "duplicates 1"


def alarms(**figures: Any) -> dict[str, str]:
    """Each figure of the panel and its style."""
    inbox = InboxStatus(**{**INBOX_STATUS, **figures})
    parts = [part for part in inbox_figures(inbox) if isinstance(part, tuple)]
    pairs = zip(parts[::2], parts[1::2], strict=True)
    return {name.strip(): style for (name, _), (_, style) in pairs}


def test_the_panel_colours_the_dead_and_a_late_pending_item() -> None:
    assert alarms()["dead"] == "bold $error"
    assert alarms()["oldest"] == "bold $warning"  # 21 minutes
    calm = alarms(dead=0, failed=0, oldest_pending_age_seconds=14 * 60.0)
    assert set(calm.values()) == {"bold"}
    assert alarms(oldest_pending_age_seconds=None)["oldest"] == "bold"


async def test_an_agent_older_than_the_inbox_says_so_and_opens_none() -> None:
    agent = FakeAgent(updates(inbox={}))
    app = dashboard(agent)
    notices = record_notices(app)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        panel = app.screen.query_one(InboxPanel)
        assert text(panel) == "no inbox: agent v0.1.0 is older than the inbox"
        assert not panel.has_class("-dead")
        await pilot.press("i")
        assert not isinstance(app.screen, InboxScreen)
    assert notices == [("This agent (v0.1.0) is older than the inbox: it has none.", "warning")]
    assert agent.inbox_reads == []


async def test_the_inbox_lists_newest_first_and_f_steps_through_the_states() -> None:
    agent = FakeAgent(updates())
    app = dashboard(agent)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await inbox(pilot, 7)
        assert ids(app) == ["36", "35", "34", "33", "32", "31", "30"]
        title = app.screen.query_one("#inbox-title")
        assert "every state · 7, newest first" in text(title) and "f: dead" in text(title)
        listed = rows(table(app, "#inbox-list"))
        assert listed[1][1:] == ["—", "5m ago", "dead: not a valid event: not JSON: une…"]
        assert listed[2][-1].startswith("failed: ERP unreachable")

        await pilot.press("f")
        await until(pilot, lambda: ids(app) == ["36", "35"], "the dead only")
        assert "dead · 2, newest first" in text(title)
        await pilot.press("f")
        await until(pilot, lambda: ids(app) == ["34"], "the failed only")
        await pilot.press(*"ffff")
        await until(pilot, lambda: ids(app) == ["31"], "the stale only")
        await pilot.press("f")
        await until(pilot, lambda: len(ids(app)) == 7, "every state again")
        states = [None, "dead", "failed", "held", "pending", "written", "stale", None]
        assert agent.inbox_reads == states
        await pilot.press("escape")
        assert not isinstance(app.screen, InboxScreen)


async def test_wide_terminals_show_number_payment_and_the_whole_reason() -> None:
    app = dashboard(FakeAgent(updates()))
    async with app.run_test(size=(200, 50)) as pilot:
        await inbox(pilot, 7)
        listed = rows(table(app, "#inbox-list"))
        assert listed[3][:5] == ["33", "shopify-main/5512384", "#1001", "paid", "21m ago"]
        assert listed[0][-1].endswith("so the inbox takes no customer from the shop")


async def test_the_detail_shows_the_order_and_its_payload_pretty_printed() -> None:
    app = dashboard(FakeAgent(updates()))
    async with app.run_test(size=(100, 40)) as pilot:
        await inbox(pilot, 7)
        await select(pilot, "33")
        fields = shown(app.screen.query_one("#inbox-fields", Static))
        assert "order shopify-main/5512384 · received 21m ago" in fields
        assert "shop       shopify-main   order ref 5512384   number #1001" in fields
        assert "version    2026-09-21T13:52:03Z   sequence 33   payment paid" in fields
        assert "state      pending   attempts 0   duplicates 1   ERP ref —" in fields
        payload = text(app.screen.query_one("#inbox-payload"))
        assert payload.startswith('as received:\n{\n  "specversion": "1.0",')
        assert '\n  "data": {\n    "shop": "shopify-main",\n    "order_ref": "5512384",' in payload

        await pilot.press("up", "up")  # the message that was no event
        fields = shown(app.screen.query_one("#inbox-fields", Static))
        assert "#35        unreadable message" in fields
        assert "reason     not a valid event: not JSON: unexpected character" in fields
        payload = text(app.screen.query_one("#inbox-payload"))
        assert payload == "as received, not JSON:\n<html><body>502 Bad Gateway</body></html>"


async def test_retry_and_discard_post_and_tell_the_agents_answer() -> None:
    agent = FakeAgent(updates())
    app = dashboard(agent)
    notices = record_notices(app)
    async with app.run_test(size=(80, 24)) as pilot:
        await inbox(pilot, 7)
        await select(pilot, "34")
        await pilot.press("r")
        await until(pilot, lambda: notices, "the retry's answer")
        assert notices[-1] == ("Inbox item 34 judged again: now pending.", "information")
        await until(pilot, lambda: "pending" in rows(table(app, "#inbox-list"))[2][-1], "reload")

        await pilot.press("ctrl+home", "r")  # 36: dead by a rule that still holds
        await until(pilot, lambda: len(notices) == 2, "the refusal")
        assert notices[-1] == (
            "inbox item 36 is dead: master of data: customer is mastered by the ERP (master."
            'customer = "erp"), so the inbox takes no customer from the shop; retry not done '
            "(HTTP 409)",
            "error",
        )

        await select(pilot, "33")
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: len(notices) == 3, "the refusal")
        assert notices[-1] == ("inbox item 33 is pending; discard not done (HTTP 409)", "error")

        await pilot.press("ctrl+home", "down", "x", "y")  # 35, the unreadable one
        await until(pilot, lambda: "35" not in ids(app), "the discard")
        assert notices[-1] == ("Inbox item 35 discarded.", "information")
    assert agent.posts == [
        "/v1/inbox/34/retry",
        "/v1/inbox/36/retry",
        "/v1/inbox/33/discard",
        "/v1/inbox/35/discard",
    ]


async def test_an_inbox_that_cannot_be_read_says_so() -> None:
    class Unreachable(FakeAgent):
        async def inbox(self, state: str | None) -> InboxList:
            raise OSError("agent answered 404 to /v1/inbox?after=0&limit=1000: Not Found")

    app = dashboard(Unreachable(updates()))
    notices = record_notices(app)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("i")
        await until(pilot, lambda: notices, "the failure")
        assert "could not be read (g retries)" in text(app.screen.query_one("#inbox-title"))
        await pilot.press("r")
        assert notices[-1] == ("No inbox item selected.", "warning")
    assert notices[0] == ("agent answered 404 to /v1/inbox?after=0&limit=1000: Not Found", "error")


async def test_the_inbox_of_a_real_agent(broker: Mosquitto, tmp_path: Path) -> None:
    """tests/test_inbox_api.py's seeded outbox.db under a real agent: the panel's counts,
    the list by state, a 409 shown as the agent words it, a retry and a discard done."""
    (tmp_path / "state").mkdir()
    seeded = await seed(tmp_path / "state" / "outbox.db")
    config, _ = configs(tmp_path, broker.url)
    socket = tmp_path / "state" / "agent.sock"
    with AgentProcess(config, tmp_path / "agent.log") as agent:
        await asyncio.to_thread(wait_until, socket.exists, 30, "the API socket")
        app = dashboard(ApiSource(ApiClient(socket)))
        notices = record_notices(app)
        async with app.run_test(size=(100, 30)) as pilot:
            panel = app.screen.query_one(InboxPanel)
            await until(pilot, lambda: "dead 3" in text(panel), "the counts", seconds=15)
            assert "pending 1" in text(panel) and "held 1" in text(panel)
            await inbox(pilot, 6)
            await pilot.press("f")
            dead = [str(seeded[name]) for name in ("customer2", "customer", "garbage")]
            await until(pilot, lambda: ids(app) == dead, "the dead, newest first")

            await pilot.press("ctrl+end", "r")  # the message that is no event stays dead
            await until(pilot, lambda: notices, "the refusal")
            assert "is dead: not a valid event" in notices[-1][0]
            assert notices[-1][0].endswith("retry not done (HTTP 409)")

            await pilot.press("up", "r")  # the agent's config lifts the customer's rule
            await until(pilot, lambda: len(notices) == 2, "the retry")
            assert notices[-1] == (
                f"Inbox item {seeded['customer']} judged again: now pending.",
                "information",
            )
            await until(pilot, lambda: str(seeded["customer"]) not in ids(app), "the reload")
            await pilot.press("ctrl+home", "x", "y")
            await until(pilot, lambda: ids(app) == [str(seeded["garbage"])], "the discard")
            assert notices[-1] == (f"Inbox item {seeded['customer2']} discarded.", "information")
            await pilot.press("escape")
            await until(pilot, lambda: "dead 1" in text(panel), "the counts after", seconds=15)
        assert agent.terminate() == 0
