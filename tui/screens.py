"""Screens over the dashboards: dead letters, help, and a yes/no question."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Static

from tui.actions import perform
from tui.formats import Clock, age
from tui.model import DeadLetter
from tui.sources import AgentSource
from tui.widgets import fill_table, selected_key

HelpSection = tuple[str, Sequence[tuple[str, str]]]
TABLE_KEYS = [("↑ ↓ pgup pgdn", "Move the cursor in a table"), ("tab", "Next region")]
RETRIED = {
    "publish": "Dead letter {id} is queued for delivery again.",
    "capture": "Dead letter {id} is forgotten: its row is judged afresh on the next read.",
}


def describe(app: App[Any], bindings: Iterable[BindingType]) -> list[tuple[str, str]]:
    """``(keys, what it does)`` for each binding, every key spelled as the footer does; the
    tooltip, where there is one, is the longer description."""
    rows = []
    for binding in bindings:
        if isinstance(binding, Binding):
            keys = [
                app.get_key_display(dataclasses.replace(binding, key=key, key_display=None))
                for key in binding.key.split(",")
            ]
            rows.append((" ".join(keys), binding.tooltip or binding.description))
    return rows


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,f1", "dismiss", "Close", key_display="esc")
    ]

    def __init__(self, sections: Sequence[HelpSection]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(self._text(), id="help-text")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#help").border_title = "keys"
        self.query_one("#help").border_subtitle = "esc closes"

    def _text(self) -> Content:
        parts: list[str | tuple[str, str]] = []
        for title, rows in self.sections:
            parts.append((f"{title}\n", "bold $accent"))
            for keys, description in rows:
                parts += [(f"  {keys:<14}", "bold"), f" {description}\n"]
            parts.append("\n")
        return Content.assemble(*parts).rstrip()


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question: y answers yes, n or esc no."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No", key_display="n"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Static(Content(self.question))
            yield Static(Content.from_markup("[b]y[/b] yes    [b]n[/b] no"), id="confirm-keys")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class DeadLetterScreen(Screen[None]):
    """Every dead letter with its reason and payload; retry or discard the selected one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "retry", "Retry", tooltip="Retry the selected dead letter"),
        Binding(
            "x,delete",
            "discard",
            "Discard",
            key_display="x",
            tooltip="Discard the selected dead letter (asks first)",
        ),
        Binding("g,f5", "reload", "Reload", key_display="g", tooltip="Read the list again"),
        Binding(
            "escape", "app.pop_screen", "Back", key_display="esc", tooltip="Back to the dashboard"
        ),
    ]

    def __init__(self, source: AgentSource, *, now: Clock) -> None:
        super().__init__()
        self.source = source
        self.now = now
        self.items: dict[str, DeadLetter] = {}

    def compose(self) -> ComposeResult:
        yield Static(_title("loading…"), id="dead-title")
        table: DataTable[Any] = DataTable(
            cursor_type="row", zebra_stripes=True, id="dead-list", classes="panel"
        )
        for name in ("id", "kind", "feed", "subject", "age", "reason"):
            table.add_column(name, key=name)
        yield table
        with VerticalScroll(id="dead-detail", classes="panel"):
            yield Static(id="dead-reason")
            yield Static(id="dead-payload")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#dead-detail").border_title = "reason and payload"
        self.action_reload()

    def action_reload(self) -> None:
        self.reload()

    @work(exclusive=True, group="dead-letters")
    async def reload(self) -> None:
        try:
            items = await self.source.dead_letters()
        except OSError as error:
            self.notify(str(error), title="Dead letters", severity="error", markup=False)
            self.query_one("#dead-title", Static).update(_title("could not be read (g retries)"))
            return
        self.show(items)

    def show(self, items: Sequence[DeadLetter]) -> None:
        self.items = {str(item.id): item for item in items}
        now = self.now()
        fill_table(
            self.query_one(DataTable),
            [(key, _dead_cells(item, now)) for key, item in self.items.items()],
        )
        self.query_one("#dead-title", Static).update(_title(f"{len(items)}, oldest first"))
        self.show_detail(self.selected())

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail(self.items.get(str(event.row_key.value)))

    def show_detail(self, item: DeadLetter | None) -> None:
        reason, payload = _detail(item, self.now())
        self.query_one("#dead-reason", Static).update(reason)
        self.query_one("#dead-payload", Static).update(payload)

    def selected(self) -> DeadLetter | None:
        key = selected_key(self.query_one(DataTable))
        return self.items.get(key) if key else None

    def action_retry(self) -> None:
        if item := self._require_selection():
            self.act(
                f"/v1/outbox/{item.id}/retry",
                RETRIED.get(item.kind, RETRIED["publish"]).format(id=item.id),
            )

    def action_discard(self) -> None:
        item = self._require_selection()
        if item is None:
            return
        question = f"Discard dead letter {item.id} ({item.entity} {item.subject}) for good?"

        def answered(yes: bool | None) -> None:
            if yes:
                self.act(f"/v1/outbox/{item.id}/discard", f"Dead letter {item.id} discarded.")

        self.app.push_screen(ConfirmScreen(question), answered)

    def _require_selection(self) -> DeadLetter | None:
        item = self.selected()
        if item is None:
            self.notify("No dead letter selected.", severity="warning")
        return item

    @work(group="dead-letter-actions")
    async def act(self, path: str, done: str) -> None:
        if await perform(self.app, self.source, path, done):
            self.reload()


def _title(text: str) -> Content:
    return Content.assemble((" dead letters ", "bold reverse $accent"), f" {text}")


def _dead_cells(item: DeadLetter, now: float) -> list[Text]:
    return [
        Text(str(item.id), justify="right"),
        Text(item.kind),
        Text(f"{item.source}/{item.feed}"),
        Text(item.subject),
        Text(age(item.created_at, now), style="dim"),
        Text(item.reason, style="red"),
    ]


def _detail(item: DeadLetter | None, now: float) -> tuple[Content, Content]:
    if item is None:
        return Content("No dead letters: every event was mapped and delivered."), Content("")
    sequence = f" · sequence {item.event_sequence}" if item.event_sequence is not None else ""
    reason = Content.assemble(
        (f"#{item.id} {item.kind}", "bold"),
        f" · {item.source}/{item.feed} · {item.entity} ",
        (item.subject, "bold"),
        f"{sequence} · {age(item.created_at, now)}\n",
        ("reason  ", "dim"),
        (item.reason, "bold $error"),
    )
    return reason, Content(item.pretty_payload())
