"""The fleet view: ``distillsync tui --relay URL``, every agent's retained status at a glance.

It reads only the relay (no agent API), so a relay operator can watch agents they cannot
reach. A retained status is the agent's last word: the broker's Last Will turns it
``offline`` when an agent vanishes, and an empty retained message removes the agent.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.content import Content
from textual.widgets import Footer, Static

from tui.app import EVERYWHERE
from tui.follow import Backoff
from tui.formats import NONE, Clock, age, clock
from tui.messages import FleetStatus, Lost, follow
from tui.model import FleetAgent, parse_fleet_status
from tui.screens import HelpScreen, describe
from tui.sources import FleetSource
from tui.widgets import Banner, FittedTable

AGE_TICK = 1.0  # seconds between redraws of the "last publish" ages

FleetKey = tuple[str, str]


class FleetApp(App[int]):
    CSS_PATH = "tui.tcss"
    TITLE = "DistillSync fleet"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = EVERYWHERE

    def __init__(
        self, source: FleetSource, *, now: Clock = time.time, backoff: Backoff | None = None
    ) -> None:
        super().__init__()
        self.source = source
        self.now = now
        self.backoff = backoff or Backoff()
        self.agents: dict[FleetKey, FleetAgent] = {}

    def compose(self) -> ComposeResult:
        yield Static(id="header")
        yield Banner(id="banner")
        yield FleetTable(id="fleet", classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#fleet").border_title = f"agents and consumers · {self.source.topic}"
        self.redraw()
        self.set_interval(AGE_TICK, self.redraw)
        self.follow_relay()

    @work(exclusive=True, group="follow", name="follow the relay")
    async def follow_relay(self) -> None:
        await follow(
            self,
            self.source.messages,
            lambda message: FleetStatus(*parse_fleet_status(*message)),
            errors=(OSError,),
            now=self.now,
            backoff=self.backoff,
        )

    def on_fleet_status(self, message: FleetStatus) -> None:
        if message.agent is None:
            self.agents.pop(message.key, None)
        else:
            self.agents[message.key] = message.agent
        self.query_one(Banner).say(None)
        self.redraw()

    def on_lost(self, message: Lost) -> None:
        self.query_one(Banner).say(
            f"relay unreachable since {clock(message.since)} · {message.error} · reconnecting"
        )

    def redraw(self) -> None:
        agents = [self.agents[key] for key in sorted(self.agents)]
        online = sum(agent.state == "online" for agent in agents)
        self.query_one("#header", Static).update(
            _header(self.source.where, online, len(agents) - online)
        )
        self.query_one(FleetTable).show(agents, self.now())

    def action_help(self) -> None:
        self.push_screen(HelpScreen([("Fleet", describe(self, self.BINDINGS))]))


def _header(where: str, online: int, offline: int) -> Content:
    return Content.assemble(
        (" fleet ", "bold reverse $accent"),
        f" {where}  ",
        (f"● {online} online", "$success" if online else "dim"),
        "  ",
        (f"○ {offline} offline", "bold $error" if offline else "dim"),
    )


class FleetTable(FittedTable[FleetAgent]):
    COLUMNS = (
        "tenant",
        "agent",
        "state",
        "seen",
        "version",
        "backlog",
        "dead",
        "last publish",
        "last error",
    )
    NUMERIC = frozenset({"backlog", "dead"})
    WIDE_ONLY = "last error"

    def key_of(self, item: FleetAgent) -> str:
        return "/".join(item.key)

    def cells_of(self, item: FleetAgent, now: float) -> list[Text]:
        return _cells(item, now)


def _cells(agent: FleetAgent, now: float) -> list[Text]:
    online = agent.state == "online"
    state = Text(
        f"● {agent.state}" if online else f"○ {agent.state}",
        style="green" if online else "bold red",
    )
    tenant = Text("relay", style="italic cyan") if agent.kind == "consumer" else Text(agent.tenant)
    return [
        tenant,
        Text(agent.agent, style=_agent_style(agent)),
        state,
        Text(age(agent.time, now), style="dim"),
        Text(agent.version),
        _number(agent.backlog),
        _number(agent.dead_letters, alarm=True),
        Text(age(agent.last_publish, now)),
        Text(_trouble(agent), style="red"),
    ]


def _agent_style(agent: FleetAgent) -> str:
    if agent.last_error or agent.sources_failing:
        return "bold red"
    return "bold yellow" if agent.paused else ""


def _number(value: int | None, alarm: bool = False) -> Text:
    if value is None:
        return Text(NONE, style="dim", justify="right")
    return Text(f"{value:,}", justify="right", style="bold red" if alarm and value else "")


def _trouble(agent: FleetAgent) -> str:
    n = agent.sources_failing
    failing = f"{n} source{'s' if n > 1 else ''} failing" if n else ""
    paused = f"paused: {', '.join(agent.paused)}" if agent.paused else ""
    return " · ".join(part for part in _nonempty(agent.last_error, failing, paused))


def _nonempty(*parts: str | None) -> Iterable[str]:
    return (part for part in parts if part)
