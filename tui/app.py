"""The single-agent dashboard: ``distillsync tui [--socket PATH]``."""

from __future__ import annotations

import time
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from tui.dashboard import DashboardScreen
from tui.follow import Backoff
from tui.formats import Clock
from tui.inbox import InboxScreen
from tui.screens import TABLE_KEYS, DeadLetterScreen, HelpScreen, describe
from tui.sources import AgentSource

EVERYWHERE: list[BindingType] = [
    Binding("question_mark,f1", "help", "Help", key_display="?", tooltip="This list of keys"),
    Binding("q", "quit", "Quit"),
    # ctrl+c is Textual's "copy"; here it quits, as in any terminal program.
    Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
]


class AgentDashboard(App[int]):
    """Startable with ``run()`` or, next to an agent in the same loop, ``await run_async()``;
    q or ctrl+c just returns."""

    CSS_PATH = "tui.tcss"
    TITLE = "DistillSync"
    ENABLE_COMMAND_PALETTE = False  # every action has its key; the palette only adds noise
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]  # a taller sparkline from 36 rows
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (140, "-wide")]  # outbox and inbox side by side
    BINDINGS: ClassVar[list[BindingType]] = EVERYWHERE

    def __init__(
        self, source: AgentSource, *, now: Clock = time.time, backoff: Backoff | None = None
    ) -> None:
        super().__init__()
        self.source = source
        self.dashboard = DashboardScreen(source, now=now, backoff=backoff or Backoff())

    def get_default_screen(self) -> DashboardScreen:
        return self.dashboard

    def action_help(self) -> None:
        self.push_screen(
            HelpScreen(
                [
                    ("Dashboard", describe(self, DashboardScreen.BINDINGS)),
                    ("Tables", TABLE_KEYS),
                    ("Dead letters (d)", describe(self, DeadLetterScreen.BINDINGS)),
                    ("Inbox (i)", describe(self, InboxScreen.BINDINGS)),
                    ("Everywhere", describe(self, EVERYWHERE)),
                ]
            )
        )
