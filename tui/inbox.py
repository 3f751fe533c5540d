"""The inbox screen: inbound items (orders from the shops), newest first, filtered by state;
the selected one's fields, reason and payload; retry or discard it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.highlight import highlight
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tui.actions import perform
from tui.formats import NONE, Clock, age
from tui.model import InboxItem, InboxList
from tui.screens import ConfirmScreen
from tui.sources import AgentSource
from tui.widgets import fill_table, selected_key

FILTERS: tuple[str | None, ...] = (None, "dead", "failed", "held", "pending", "written", "stale")
"""What ``f`` steps through: every state, then each one, what wants a hand first."""
STATE_STYLES = {
    "dead": "bold red",
    "failed": "yellow",
    "held": "cyan",
    "written": "green",
    "stale": "dim",
}
REASON_STYLES = {"dead": "red", "failed": "yellow"}
LABEL = 11  # the width of the detail's labels


class InboxTable(DataTable[Any]):
    """Inbox items, one a row, the state and its reason last, cut to fit with an ellipsis
    (the whole reason is in the pane below). Below ``WIDE`` columns of width the number
    and payment columns go (they are in the pane too) and one space parts the columns."""

    COLUMNS = ("id", "subject", "number", "payment", "age", "state")
    WIDE_ONLY = frozenset({"number", "payment"})
    WIDE = 120

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._shown: tuple[Sequence[InboxItem], float] = ((), 0.0)

    def show(self, items: Sequence[InboxItem], now: float) -> None:
        self._shown = (items, now)
        self.redraw()

    def on_resize(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        compact = self.size.width < self.WIDE
        names = [name for name in self.COLUMNS if not (compact and name in self.WIDE_ONLY)]
        if [str(key.value) for key in self.columns] != names:
            self.cell_padding = 0 if compact else 1
            self.clear(columns=True)
            for name in names:
                label = Text(name, justify="right" if name == "id" else "left")
                self.add_column(_pad(label, compact), key=name)
        items, now = self._shown
        rows = [[_pad(cell, compact) for cell in _cells(item, now, names)] for item in items]
        self._fit_last(rows, names)
        fill_table(self, [(str(item.id), cells) for item, cells in zip(items, rows, strict=True)])

    def _fit_last(self, rows: list[list[Text]], names: Sequence[str]) -> None:
        """Cut the last cell of each row to what the other columns leave of the width."""
        gap = 2 * self.cell_padding
        others = sum(
            max([len(name) + (gap or 1)] + [row[i].cell_len + gap for row in rows])
            for i, name in enumerate(names[:-1])
        )
        scrollbar = self.styles.scrollbar_size_vertical  # there or soon: leave its room
        room = max(self.size.width - scrollbar - others - gap, 12)
        for row in rows:
            row[-1].truncate(room, overflow="ellipsis")


class InboxScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "f",
            "next_state",
            "State",
            tooltip="Show the next state: all, dead, failed, …",
        ),
        Binding("r", "retry", "Retry", tooltip="Judge the selected dead or failed item again"),
        Binding(
            "x,delete",
            "discard",
            "Discard",
            key_display="x",
            tooltip="Discard the selected item (asks first)",
        ),
        Binding("g,f5", "reload", "Reload", key_display="g", tooltip="Read the list again"),
        Binding(
            "escape", "app.pop_screen", "Back", key_display="esc", tooltip="Back to the dashboard"
        ),
    ]

    def __init__(self, source: AgentSource, *, now: Clock, state: str | None = None) -> None:
        super().__init__()
        self.source = source
        self.now = now
        self.state = state
        self.items: dict[str, InboxItem] = {}

    def compose(self) -> ComposeResult:
        yield Static(self._title("loading…"), id="inbox-title")
        yield InboxTable(id="inbox-list", classes="panel")
        with VerticalScroll(id="inbox-detail", classes="panel"):
            yield Static(id="inbox-fields")
            yield Static(id="inbox-payload")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#inbox-detail").border_title = "item and payload"
        self.action_reload()

    def action_reload(self) -> None:
        self.reload()

    def _next_state(self) -> str | None:
        return FILTERS[(FILTERS.index(self.state) + 1) % len(FILTERS)]

    def action_next_state(self) -> None:
        self.state = self._next_state()
        self.query_one("#inbox-title", Static).update(self._title("loading…"))
        self.reload()

    @work(exclusive=True, group="inbox")
    async def reload(self) -> None:
        try:
            found = await self.source.inbox(self.state)
        except OSError as error:
            self.notify(str(error), title="Inbox", severity="error", markup=False)
            self.query_one("#inbox-title", Static).update(
                self._title("could not be read (g retries)")
            )
            return
        self.show(found)

    def show(self, found: InboxList) -> None:
        self.items = {str(item.id): item for item in found.items}
        self.query_one(InboxTable).show(found.items, self.now())
        shown = len(found.items)
        of = f" of {found.total:,}" if found.total > shown else ""
        self.query_one("#inbox-title", Static).update(self._title(f"{shown:,}{of}, newest first"))
        self.show_detail(self.selected())

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail(self.items.get(str(event.row_key.value)))

    def show_detail(self, item: InboxItem | None) -> None:
        fields, payload = _detail(item, self.state, self.now())
        self.query_one("#inbox-fields", Static).update(fields)
        self.query_one("#inbox-payload", Static).update(payload)

    def selected(self) -> InboxItem | None:
        key = selected_key(self.query_one(DataTable))
        return self.items.get(key) if key else None

    def action_retry(self) -> None:
        if item := self._require_selection():
            self.act(f"/v1/inbox/{item.id}/retry", lambda body: _retried(item, body))

    def action_discard(self) -> None:
        item = self._require_selection()
        if item is None:
            return
        question = f"Discard inbox item {item.id} ({item.state} {_subject(item)}) for good?"

        def answered(yes: bool | None) -> None:
            if yes:
                self.act(
                    f"/v1/inbox/{item.id}/discard", lambda _: f"Inbox item {item.id} discarded."
                )

        self.app.push_screen(ConfirmScreen(question), answered)

    def _require_selection(self) -> InboxItem | None:
        item = self.selected()
        if item is None:
            self.notify("No inbox item selected.", severity="warning")
        return item

    @work(group="inbox-actions")
    async def act(self, path: str, done: Callable[[Any], str]) -> None:
        if await perform(self.app, self.source, path, done):
            self.reload()

    def _title(self, text: str) -> Content:
        return Content.assemble(
            (" inbox ", "bold reverse $accent"),
            (f" {self.state or 'every state'}", "bold"),
            f" · {text}",
            (f"  f: {self._next_state() or 'every state'}", "dim"),
        )


def _retried(item: InboxItem, body: Any) -> str:
    state = body.get("state") if isinstance(body, dict) else None
    return f"Inbox item {item.id} judged again: now {state or 'gone'}."


def _subject(item: InboxItem) -> str:
    """The subject (``{shop}/{order_ref}``), after its entity unless it is an order."""
    subject = item.subject or NONE
    return subject if item.entity in ("order", None) else f"{item.entity} {subject}"


def _state(item: InboxItem) -> Text:
    """The state, and the reason after it (red for a dead item)."""
    shown = Text(item.state, style=STATE_STYLES.get(item.state, ""))
    if item.reason:
        shown.append(f": {item.reason}", style=REASON_STYLES.get(item.state, "dim"))
    return shown


def _cells(item: InboxItem, now: float, names: Sequence[str]) -> list[Text]:
    number = item.data().get("number")
    cells = {
        "id": Text(str(item.id), justify="right"),
        "subject": Text(_subject(item)),
        "number": Text(str(number) if number is not None else ""),
        "payment": Text(item.payment_status or ""),
        "age": Text(age(item.received_at, now), style="dim"),
        "state": _state(item),
    }
    return [cells[name] for name in names]


def _pad(text: Text, compact: bool) -> Text:
    """One space before each cell when the table has no cell padding."""
    if not compact:
        return text
    padded = Text.assemble(" ", text)
    padded.justify = text.justify
    return padded


def _detail(
    item: InboxItem | None, state: str | None, now: float
) -> tuple[Table | Content, Content]:
    """The item's fields, a label before each line (a long reason wraps under its own
    column), and its payload."""
    if item is None:
        where = f" {state}" if state else ""
        return Content(f"No{where} items in the inbox."), Content("")
    data = item.data()
    changed = (
        f" · changed {age(item.changed_at, now)}" if item.changed_at != item.received_at else ""
    )
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=LABEL - 1, style="dim", no_wrap=True)
    grid.add_column(ratio=1, overflow="fold")
    grid.add_row(
        Text(f"#{item.id}", style="bold"),
        Text.assemble(
            (f"{item.entity or 'unreadable message'} {item.subject or ''}".rstrip(), "bold"),
            f" · received {age(item.received_at, now)}{changed}",
        ),
    )
    grid.add_row(
        "shop",
        _pairs(
            _text(data.get("shop")),
            ("order ref", data.get("order_ref")),
            ("number", data.get("number")),
        ),
    )
    grid.add_row(
        "version",
        _pairs(item.version or NONE, ("sequence", item.sequence), ("payment", item.payment_status)),
    )
    grid.add_row(
        "state",
        _pairs(
            Text(item.state, style=STATE_STYLES.get(item.state, "bold")),
            ("attempts", item.attempts),
            ("duplicates", item.duplicates),
            ("ERP ref", item.erp_ref),
        ),
    )
    if item.reason:
        grid.add_row("reason", Text(item.reason, style=_reason_style(item.state)))
    grid.add_row("event", Text.assemble(item.event_id, (" on ", "dim"), item.topic or NONE))
    return grid, _payload(item)


def _pairs(first: str | Text, *pairs: tuple[str, object]) -> Text:
    """``first   label value   label value``: the first value bold, the labels dim."""
    line = Text.assemble(first if isinstance(first, Text) else (first, "bold"))
    for label, value in pairs:
        line.append(f"   {label} ", style="dim")
        line.append(_text(value), style="bold")
    return line


def _reason_style(state: str) -> str:
    return {"dead": "bold red", "failed": "yellow"}.get(state, "")


def _text(value: object) -> str:
    return NONE if value is None else str(value)


def _payload(item: InboxItem) -> Content:
    pretty = item.pretty_payload()
    if pretty is None:
        return Content.assemble(("as received, not JSON:\n", "dim"), item.payload)
    return Content.assemble(("as received:\n", "dim"), highlight(pretty, language="json"))
