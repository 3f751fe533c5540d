"""What the dashboards look like, approved as SVGs (``--snapshot-update`` to re-approve).

Every clock is frozen (``tests.tui_support.NOW``) and wall-clock times are shown in UTC,
so the pictures are the same on every run and every machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from textual.pilot import Pilot

from tests.tui_support import FLEET, FakeAgent, FakeRelay, fast, frozen, table, until, updates
from tui.app import AgentDashboard
from tui.fleet import FleetApp
from tui.inbox import InboxScreen
from tui.screens import DeadLetterScreen

Compare = Callable[..., bool]
SMALL, LARGE = (80, 24), (200, 50)


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def dashboard(agent: FakeAgent | None = None) -> AgentDashboard:
    return AgentDashboard(agent or FakeAgent(updates()), now=frozen, backoff=fast())


async def loaded(pilot: Pilot[Any]) -> None:
    await until(pilot, lambda: table(pilot.app, "#events").row_count, "the first update")


async def dead_letters(pilot: Pilot[Any]) -> None:
    await loaded(pilot)
    await pilot.press("d")
    await until(
        pilot,
        lambda: (
            isinstance(pilot.app.screen, DeadLetterScreen)
            and table(pilot.app, "#dead-list").row_count == 3
        ),
        "the dead letters",
    )
    await pilot.press("down")


async def inbox(pilot: Pilot[Any]) -> None:
    """The inbox, the pending order selected."""
    await loaded(pilot)
    await pilot.press("i")
    await until(
        pilot,
        lambda: (
            isinstance(pilot.app.screen, InboxScreen)
            and table(pilot.app, "#inbox-list").row_count == 7
        ),
        "the inbox",
    )
    await pilot.press("down", "down", "down")


async def inbound_dead_letters(pilot: Pilot[Any]) -> None:
    await inbox(pilot)
    await pilot.press("f")
    await until(pilot, lambda: table(pilot.app, "#inbox-list").row_count == 2, "the dead")


def then(
    first: Callable[[Pilot[Any]], Awaitable[None]], *keys: str
) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run(pilot: Pilot[Any]) -> None:
        await first(pilot)
        await pilot.press(*keys)

    return run


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x50"])
def test_main_screen(snap_compare: Compare, size: tuple[int, int]) -> None:
    assert snap_compare(dashboard(), terminal_size=size, run_before=loaded)


def test_main_screen_with_the_agent_gone(snap_compare: Compare) -> None:
    agent = FakeAgent(updates(), OSError("agent at /run/distillsync/agent.sock closed the stream"))

    async def lost(pilot: Pilot[Any]) -> None:
        await until(
            pilot, lambda: pilot.app.screen.query_one("#body").has_class("-stale"), "the banner"
        )

    assert snap_compare(dashboard(agent), terminal_size=SMALL, run_before=lost)


def test_filtered_tail(snap_compare: Compare) -> None:
    assert snap_compare(dashboard(), terminal_size=SMALL, run_before=then(loaded, "slash", *"wh2"))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x50"])
def test_dead_letter_screen(snap_compare: Compare, size: tuple[int, int]) -> None:
    assert snap_compare(dashboard(), terminal_size=size, run_before=dead_letters)


def test_discard_asks_first(snap_compare: Compare) -> None:
    assert snap_compare(dashboard(), terminal_size=SMALL, run_before=then(dead_letters, "x"))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x50"])
def test_inbox_screen(snap_compare: Compare, size: tuple[int, int]) -> None:
    assert snap_compare(dashboard(), terminal_size=size, run_before=inbox)


def test_inbound_dead_letters(snap_compare: Compare) -> None:
    assert snap_compare(dashboard(), terminal_size=SMALL, run_before=inbound_dead_letters)


def test_main_screen_of_an_agent_older_than_the_inbox(snap_compare: Compare) -> None:
    agent = FakeAgent(updates(inbox={}))
    assert snap_compare(dashboard(agent), terminal_size=SMALL, run_before=loaded)


def test_help_screen(snap_compare: Compare) -> None:
    assert snap_compare(
        dashboard(), terminal_size=(80, 40), run_before=then(loaded, "question_mark")
    )


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x50"])
def test_fleet_view(snap_compare: Compare, size: tuple[int, int]) -> None:
    async def listed(pilot: Pilot[Any]) -> None:
        await until(
            pilot, lambda: table(pilot.app, "#fleet").row_count == 5, "the agents and the consumer"
        )
        await pilot.press("down", "down", "down", "down")

    app = FleetApp(FakeRelay(FLEET), now=frozen, backoff=fast())
    assert snap_compare(app, terminal_size=size, run_before=listed)
