"""The dashboards driven through Textual's Pilot on frozen data (tests/tui_support.py)."""

from __future__ import annotations

from typing import Any

import pytest
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Input, Sparkline

from tests.tui_support import (
    DEAD_LETTERS,
    EVENTS,
    FLEET,
    NOW,
    FakeAgent,
    FakeRelay,
    fast,
    frozen,
    rows,
    table,
    text,
    until,
    updates,
)
from tui.app import AgentDashboard
from tui.fleet import FleetApp
from tui.formats import clock
from tui.model import DeadLetter
from tui.screens import ConfirmScreen, DeadLetterScreen, HelpScreen
from tui.widgets import Banner

Notices = list[tuple[str, str]]


def dashboard(agent: FakeAgent) -> AgentDashboard:
    return AgentDashboard(agent, now=frozen, backoff=fast())


def record_notices(app: App[Any]) -> Notices:
    """Every notification the app raises, as ``(message, severity)``."""
    notices: Notices = []

    def notify(message: str, *, severity: str = "information", **_: Any) -> None:
        notices.append((message, severity))

    app.notify = notify  # type: ignore[method-assign]
    return notices


async def loaded(pilot: Pilot[Any]) -> None:
    await until(pilot, lambda: table(pilot.app, "#events").row_count, "the first update")


async def test_the_main_screen_shows_header_sources_outbox_and_tail() -> None:
    app = dashboard(FakeAgent(updates()))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        header = text(app.screen.query_one("#header"))
        for expected in ("erp-madrid-1", "acme", "● connected 2m", "up 3h 12m", "118/s"):
            assert expected in header
        sources = rows(table(app, "#sources"))
        assert [row[0] for row in sources] == [
            "erp/product",
            "erp/price",
            "erp/stock",
            "warehouse/stock_wh",
            "crm/customer",
        ]
        assert sources[2][1:8] == ["time", "2s ago", "2s ago", "310.6k", "88.4k", "2", "0"]
        assert sources[3][-1] == "paused"
        assert sources[4][-1] == "failing"
        figures = text(app.screen.query_one("#outbox-figures"))
        assert "pending 1,204" in figures and "in flight 37" in figures
        assert "oldest 4s" in figures and "dead letters 3" in figures
        tail = rows(table(app, "#events"))
        assert len(tail) == 11
        assert tail[0][:3] == [clock(NOW - 0.5), "90310", "price"]
        assert tail[1][-1] == "refused: not authorized (0x87)"
        assert not app.screen.query_one(Banner).has_class("-shown")


async def test_the_sparkline_is_fed_from_the_published_counter() -> None:
    app = dashboard(FakeAgent(updates()))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        series = app.screen.query_one("#throughput", Sparkline).data
        assert series is not None
        data = list(series)
        assert len(data) == 300
        assert data[:100] == [0.0] * 100  # before the first update: nothing known
        assert max(data) > 900  # the burst in the frozen data


async def test_wide_terminals_get_the_full_columns() -> None:
    app = dashboard(FakeAgent(updates()))
    async with app.run_test(size=(200, 50)) as pilot:
        await loaded(pilot)
        crm = rows(table(app, "#sources"))[4]
        assert crm[1] == "incrementing"
        assert crm[-1] == "connection refused by 10.0.0.7:5432"


async def test_the_filter_narrows_the_tail_by_entity_subject_or_outcome() -> None:
    app = dashboard(FakeAgent(updates()))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        events = table(app, "#events")
        await pilot.press("slash")
        assert app.focused is app.screen.query_one("#filter", Input)
        await pilot.press(*"refused")
        assert [row[1] for row in rows(events)] == ["90309"]
        app.screen.query_one("#filter", Input).value = "wh2"
        await pilot.pause()
        assert {row[4] for row in rows(events)} == {"SKU-5/WH2", "SKU-9/WH2"}
        app.screen.query_one("#filter", Input).value = "PRICE"
        await pilot.pause()
        assert {row[2] for row in rows(events)} == {"price"}
        assert "3 matching" in str(app.screen.query_one("#tail").border_title)
        await pilot.press("escape")
        assert app.focused is app.screen.query_one("#sources")


async def test_new_events_go_on_top_and_the_repeated_past_is_not_shown_twice() -> None:
    agent = FakeAgent(updates())
    app = dashboard(agent)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        again = updates(2)  # a reconnect's first update repeats the last 100 events
        again[-1]["events"] = again[-1]["events"] + [
            {
                "sequence": 90_311,
                "id": "x",
                "entity": "stock",
                "op": "delete",
                "subject": "SKU-1/WH9",
                "outcome": "delivered",
                "reason": None,
                "at": NOW,
            }
        ]
        agent.script.plans.put_nowait(again)
        await until(pilot, lambda: table(app, "#events").row_count == 12, "the new event")
        assert rows(table(app, "#events"))[0][1:4] == ["90311", "stock", "delete"]

        fresh = updates(1)  # an agent on a new outbox: sequences begin again
        fresh[0]["status"]["outbox"]["last_sequence"] = 2
        fresh[0]["events"] = [{**EVENTS[0], "sequence": 2}]
        agent.script.plans.put_nowait(fresh)
        await until(pilot, lambda: table(app, "#events").row_count == 1, "a fresh tail")


@pytest.mark.parametrize(
    ("key", "row", "path", "notice"),
    [
        ("p", 0, "/v1/sources/erp/pause", "Source erp paused."),
        ("r", 3, "/v1/sources/warehouse/resume", "Source warehouse resumed."),
        ("s", 4, "/v1/sources/crm/resync", "Source crm will be re-read in full on its next poll."),
    ],
)
async def test_source_keys_post_to_the_selected_source(
    key: str, row: int, path: str, notice: str
) -> None:
    agent = FakeAgent(updates())
    app = dashboard(agent)
    notices = record_notices(app)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press(*["down"] * row, key)
        await until(pilot, lambda: notices, "the outcome")
        assert agent.posts == [path]
        assert notices == [(notice, "information")]


async def test_a_refused_or_failed_action_is_reported_as_an_error() -> None:
    class Unreachable(FakeAgent):
        async def act(self, path: str) -> tuple[int, Any]:
            if "pause" in path:
                return 404, {"error": "no source named 'erp'"}
            raise OSError("agent unreachable at /run/distillsync/agent.sock: refused")

    app = dashboard(Unreachable(updates()))
    notices = record_notices(app)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("p")
        await until(pilot, lambda: notices, "the refusal")
        await pilot.press("s")
        await until(pilot, lambda: len(notices) == 2, "the failure")
    assert notices == [
        ("no source named 'erp' (HTTP 404)", "error"),
        ("agent unreachable at /run/distillsync/agent.sock: refused", "error"),
    ]


async def test_the_dead_letter_screen_inspects_retries_and_discards() -> None:
    agent = FakeAgent(updates())
    app = dashboard(agent)
    notices = record_notices(app)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("d")
        await until(
            pilot,
            lambda: (
                isinstance(app.screen, DeadLetterScreen) and table(app, "#dead-list").row_count == 3
            ),
            "the dead letters",
        )
        assert [row[0] for row in rows(table(app, "#dead-list"))] == ["12", "15", "16"]
        reason, payload = (
            app.screen.query_one("#dead-reason"),
            app.screen.query_one("#dead-payload"),
        )
        assert "schema: data.on_hand must be number" in text(reason)
        assert '"on_hand": "twelve"' in text(payload)

        await pilot.press("down")
        assert "exceeds the broker's maximum packet size 1000" in text(reason)
        assert "sequence 88002" in text(reason)
        await pilot.press("r")
        await until(pilot, lambda: table(app, "#dead-list").row_count == 2, "the reload")
        assert agent.posts == ["/v1/outbox/15/retry"]
        assert notices[-1] == ("Dead letter 15 is queued for delivery again.", "information")

        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert agent.posts == ["/v1/outbox/15/retry"]
        selected = rows(table(app, "#dead-list"))[table(app, "#dead-list").cursor_row][0]
        await pilot.press("x", "y")
        await until(pilot, lambda: table(app, "#dead-list").row_count == 1, "the discard")
        assert agent.posts[-1] == f"/v1/outbox/{selected}/discard"
        assert notices[-1] == (f"Dead letter {selected} discarded.", "information")
        assert agent.dead_reads == 3

        await pilot.press("escape")
        assert not isinstance(app.screen, DeadLetterScreen)


async def test_retrying_a_capture_dead_letter_says_what_happens_to_it() -> None:
    agent = FakeAgent(updates(), dead=DEAD_LETTERS[:1])
    app = dashboard(agent)
    notices = record_notices(app)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("d")
        await until(pilot, lambda: table(app, "#dead-list").row_count == 1, "the dead letter")
        await pilot.press("r")
        await until(pilot, lambda: table(app, "#dead-list").row_count == 0, "the reload")
        assert notices[-1][0].startswith("Dead letter 12 is forgotten")
        assert "No dead letters" in text(app.screen.query_one("#dead-reason"))
        await pilot.press("r")  # nothing selected: nothing posted
        assert notices[-1] == ("No dead letter selected.", "warning")
    assert agent.posts == ["/v1/outbox/12/retry"]


async def test_dead_letters_that_cannot_be_read_say_so() -> None:
    class Unreachable(FakeAgent):
        async def dead_letters(self) -> list[DeadLetter]:
            raise OSError("agent unreachable at /run/distillsync/agent.sock: refused")

    app = dashboard(Unreachable(updates()))
    notices = record_notices(app)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("d")
        await until(pilot, lambda: notices, "the failure")
        assert "could not be read" in text(app.screen.query_one("#dead-title"))
    assert notices == [("agent unreachable at /run/distillsync/agent.sock: refused", "error")]


async def test_help_lists_every_key_and_closes() -> None:
    app = dashboard(FakeAgent(updates()))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_text = text(app.screen.query_one("#help-text"))
        for expected in (
            "Pause the selected row's source",
            "Resume",
            "Re-read",
            "Dead letters",
            "Filter the events",
            "Retry the selected",
            "Discard",
            "Inbox: orders by state",
            "Show the next state: all, dead",
            "Judge the selected dead or failed item again",
            "? f1",
            "^c",
            "Quit",
        ):
            assert expected in help_text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("question_mark")
        assert not isinstance(app.screen, HelpScreen)


async def test_an_unreachable_agent_is_shown_until_it_comes_back() -> None:
    agent = FakeAgent(OSError("agent unreachable at /run/distillsync/agent.sock: refused"))
    app = dashboard(agent)
    async with app.run_test(size=(80, 24)) as pilot:
        banner = app.screen.query_one(Banner)
        await until(pilot, lambda: banner.has_class("-shown"), "the banner")
        assert text(banner) == (
            f"agent unreachable since {clock(NOW)} · "
            "at /run/distillsync/agent.sock: refused · reconnecting"
        )

        agent.script.plans.put_nowait(updates(3))
        await until(pilot, lambda: not banner.has_class("-shown"), "the agent back")
        assert "erp-madrid-1" in text(app.screen.query_one("#header"))
        assert not app.screen.query_one("#body").has_class("-stale")
        assert agent.script.connections == 2

        agent.script.plans.put_nowait(OSError("agent at /x closed the stream [/b]"))
        await until(pilot, lambda: banner.has_class("-shown"), "the banner again")
        assert "closed the stream" in text(banner)
        assert app.screen.query_one("#body").has_class("-stale")
        assert "erp-madrid-1" in text(app.screen.query_one("#header"))  # last figures kept


async def test_an_outbox_that_cannot_write_is_an_alarm_until_it_can() -> None:
    failing = updates(2)
    failing[-1]["status"]["outbox"]["write_error"] = {
        "message": "outbox /var/lib/distillsync/outbox.db: database or disk is full (SQLITE_FULL)",
        "since": NOW - 60,
    }
    agent = FakeAgent(failing)
    app = dashboard(agent)
    async with app.run_test(size=(80, 24)) as pilot:
        banner = app.screen.query_one(Banner)
        await until(pilot, lambda: banner.has_class("-shown"), "the alarm")
        assert text(banner).startswith(
            f"outbox cannot write since {clock(NOW - 60)} · nothing new is captured · "
        )
        assert "SQLITE_FULL" in text(banner)
        agent.script.plans.put_nowait(updates(1))
        await until(pilot, lambda: not banner.has_class("-shown"), "the alarm to clear")


@pytest.mark.parametrize("key", ["q", "ctrl+c"])
async def test_quitting_just_returns(key: str) -> None:
    app = dashboard(FakeAgent(updates()))
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("slash")  # even from the filter box, ctrl+c quits
        if key == "q":
            await pilot.press("escape")
        await pilot.press(key)
        await until(pilot, lambda: not app.is_running, "the app to stop")
    assert app.return_code == 0


async def test_the_fleet_lists_every_agent_sorted_with_counts() -> None:
    app = FleetApp(FakeRelay(FLEET), now=frozen, backoff=fast())
    async with app.run_test(size=(80, 24)) as pilot:
        fleet = table(app, "#fleet")
        await until(pilot, lambda: fleet.row_count == 5, "four agents and a consumer")
        listed = rows(fleet)
        assert [row[:3] for row in listed] == [
            ["relay", "shops-1", "● online"],
            ["acme", "erp-bilbao", "○ offline"],
            ["acme", "erp-madrid-1", "● online"],
            ["acme", "erp-sevilla", "● online"],
            ["zeta", "erp-porto", "● online"],
        ]
        assert listed[0][5:7] == ["12", "1"]  # a consumer's waiting events and dead letters
        assert listed[1][3:8] == ["5s ago", "0.1.0", "—", "—", "—"]  # the Will says only that
        assert listed[2][5:8] == ["1,204", "3", "1s ago"]
        assert listed[4][5:8] == ["88,310", "0", "10m ago"]
        header = text(app.screen.query_one("#header"))
        assert "4 online" in header and "1 offline" in header
        await pilot.press("down", "down", "down")
        assert fleet.border_subtitle == "acme/erp-sevilla: paused: legacy"
        await pilot.press("down")
        assert fleet.border_subtitle == ("zeta/erp-porto: not authorized (0x87) · 1 source failing")


async def test_the_fleet_shows_a_lost_relay_and_recovers() -> None:
    relay = FakeRelay(FLEET[:2], ConnectionError("connection to the relay lost"))
    app = FleetApp(relay, now=frozen, backoff=fast())
    async with app.run_test(size=(80, 24)) as pilot:
        banner = app.screen.query_one(Banner)
        await until(pilot, lambda: banner.has_class("-shown"), "the banner")
        assert text(banner).startswith(f"relay unreachable since {clock(NOW)}")
        assert table(app, "#fleet").row_count == 2  # what was known stays
        relay.script.plans.put_nowait(FLEET[2:3])
        await until(pilot, lambda: not banner.has_class("-shown"), "the relay back")
        assert table(app, "#fleet").row_count == 3
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
