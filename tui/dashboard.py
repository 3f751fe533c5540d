"""The agent dashboard's main screen: header, sources, outbox and inbox, event tail.

It follows ``/v1/stream`` in a worker, so the screen never waits on the agent; when the
agent goes away it says since when, keeps the last figures (dimmed) and reconnects.
"""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Input

from tui.actions import perform
from tui.follow import Backoff
from tui.formats import Clock, clock
from tui.inbox import InboxScreen
from tui.messages import AgentUpdated, Lost, follow
from tui.model import AgentSnapshot, parse_update
from tui.screens import DeadLetterScreen
from tui.sources import AgentSource
from tui.throughput import Throughput
from tui.widgets import AgentHeader, Banner, EventTail, InboxPanel, OutboxPanel, SourcesTable

SOURCE_ACTIONS = {
    "pause": "paused",
    "resume": "resumed",
    "resync": "will be re-read in full on its next poll",
}


class DashboardScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "source('pause')", "Pause", tooltip="Pause the selected row's source"),
        Binding("r", "source('resume')", "Resume", tooltip="Resume the selected row's source"),
        Binding(
            "s", "source('resync')", "Resync", tooltip="Re-read the selected row's source in full"
        ),
        Binding(
            "d",
            "dead_letters",
            "Dead letters",
            tooltip="Dead letters: reason and payload, retry, discard",
        ),
        Binding(
            "i",
            "inbox",
            "Inbox",
            tooltip="Inbox: orders by state, payload, retry, discard",
        ),
        Binding(
            "slash",
            "focus_filter",
            "Filter",
            tooltip="Filter the events by entity, subject or outcome",
        ),
        Binding(
            "escape",
            "leave_filter",
            "Leave the filter",
            show=False,
            tooltip="Back from the filter to the sources",
        ),
    ]

    def __init__(self, source: AgentSource, *, now: Clock, backoff: Backoff) -> None:
        super().__init__()
        self.source = source
        self.now = now
        self.backoff = backoff
        self.throughput = Throughput()
        self.last: AgentSnapshot | None = None

    def compose(self) -> ComposeResult:
        yield AgentHeader(Content(f" connecting to the agent at {self.source.where}…"), id="header")
        yield Banner(id="banner")
        with Vertical(id="body"):
            yield SourcesTable(id="sources", classes="panel")
            with Container(id="queues"):
                yield OutboxPanel(id="outbox", classes="panel")
                yield InboxPanel("waiting for the first update…", id="inbox", classes="panel")
            yield EventTail(id="tail", classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#sources").border_title = "sources"
        self.query_one("#outbox").border_title = "outbox"
        self.query_one("#outbox").border_subtitle = "delivered per second, last 5 minutes"
        self.query_one("#inbox").border_title = "inbox"
        self.query_one("#tail").border_title = "events"
        self.follow_agent()

    @work(exclusive=True, group="follow", name="follow the agent")
    async def follow_agent(self) -> None:
        await follow(
            self,
            self.source.updates,
            lambda raw: AgentUpdated(parse_update(raw)),
            errors=(OSError,),
            now=self.now,
            backoff=self.backoff,
        )

    def on_agent_updated(self, message: AgentUpdated) -> None:
        update = message.update
        snap, now = update.snapshot, self.now()
        self.last = snap
        self.throughput.add(snap.agent_time, snap.relay.published)
        delivered = snap.outbox.delivered_per_second
        if delivered is None:
            delivered = self.throughput.recent()
        self.query_one(Banner).say(_alarm(snap))
        self.query("#header, #body").remove_class("-stale")
        self.query_one(AgentHeader).show(snap, delivered, now)
        self.query_one(SourcesTable).show(snap.feeds, now)
        self.query_one(OutboxPanel).show(snap.outbox, delivered, self.throughput.series())
        self.query_one(InboxPanel).show(snap)
        self.query_one(EventTail).add(update.events, snap.outbox.last_sequence)

    def on_lost(self, message: Lost) -> None:
        """Keep the last figures, dimmed, under a banner saying since when."""
        detail = message.error.removeprefix("agent unreachable ")  # said once is enough
        self.query_one(Banner).say(
            f"agent unreachable since {clock(message.since)} · {detail} · reconnecting"
        )
        self.query("#header, #body").add_class("-stale")

    def action_source(self, action: str) -> None:
        name = self.query_one(SourcesTable).selected_source()
        if name is None:
            self.notify("No source selected.", severity="warning")
            return
        self.act(f"/v1/sources/{name}/{action}", f"Source {name} {SOURCE_ACTIONS[action]}.")

    @work(group="source-actions")
    async def act(self, path: str, done: str) -> None:
        await perform(self.app, self.source, path, done)

    def action_dead_letters(self) -> None:
        self.app.push_screen(DeadLetterScreen(self.source, now=self.now))

    def action_inbox(self) -> None:
        if self.last is not None and not self.last.has_inbox:
            self.notify(
                f"This agent (v{self.last.agent.version}) is older than the inbox: it has none.",
                severity="warning",
            )
            return
        self.app.push_screen(InboxScreen(self.source, now=self.now))

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_leave_filter(self) -> None:
        self.query_one(SourcesTable).focus()


def _alarm(snap: AgentSnapshot) -> str | None:
    """What must not go unseen while the agent answers: an outbox that cannot write."""
    error = snap.outbox.write_error
    if error is None:
        return None
    since = f" since {clock(error.since)}" if error.since else ""
    return f"outbox cannot write{since} · nothing new is captured · {error.message}"
