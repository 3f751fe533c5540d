"""The regions of the agent dashboard. Each draws what it is given and fetches nothing."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.reactive import reactive
from textual.widgets import DataTable, Input, Sparkline, Static

from agent.status import InboxStatus, OutboxStatus
from tui.formats import NONE, age, clock, count, rate, span
from tui.model import AgentSnapshot, FeedRow, TailEvent

TAIL_KEPT = 1000  # events remembered for filtering
TAIL_SHOWN = 200  # rows drawn: a screen never shows more, and redrawing stays cheap
STATE_STYLES = {"connected": "$success", "online": "$success", "connecting": "$warning"}
SHORT_MODES = {"timestamp": "time", "incrementing": "incr", "snapshot": "snap"}
OLD_PENDING = 15 * 60
"""An inbox item waiting longer is late: a failed one is tried again at least this often."""

Row = tuple[str, Sequence[Any]]
T = TypeVar("T")


def selected_key(table: DataTable[Any]) -> str | None:
    """The key of the row under the cursor, if there is one."""
    if not table.row_count:
        return None
    row_key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
    return None if row_key.value is None else str(row_key.value)


def fill_table(table: DataTable[Any], rows: Sequence[Row]) -> None:
    """Show ``rows`` (key, cells) in this order, keeping the cursor on the same key.
    Unchanged rows are updated cell by cell, so the table does not flicker or scroll."""
    keys = [key for key, _ in rows]
    if [row.key.value for row in table.ordered_rows] == keys:
        for key, cells in rows:
            for column, cell in zip(table.columns, cells, strict=True):
                if table.get_cell(key, column) != cell:
                    table.update_cell(key, column, cell, update_width=True)
        return
    selected = selected_key(table)
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if selected in keys:
        table.move_cursor(row=keys.index(selected), animate=False)


def state_style(state: str) -> str:
    return STATE_STYLES.get(state, "$error")


class Banner(Static):
    """A full-width alarm line (agent or relay unreachable); hidden while all is well."""

    def say(self, text: str | None) -> None:
        self.set_class(text is not None, "-shown")
        self.update(Content(text or ""))  # plain text: an error may hold [brackets]


class AgentHeader(Static):
    """Agent id, relay state and uptime, on one line."""

    def show(self, snap: AgentSnapshot, delivered: float | None, now: float) -> None:
        relay = snap.relay
        relay_for = f" {span(now - relay.since)}" if relay.since is not None else ""
        parts: list[str | tuple[str, str]] = [
            (f" {snap.agent.id} ", "bold reverse $accent"),
            f" {snap.agent.tenant}  ",
            ("relay ", "dim"),
            (f"● {relay.state}{relay_for}", state_style(relay.state)),
            ("  up ", "dim"),
            span(snap.agent.uptime_seconds),
            ("  rate ", "dim"),
            rate(delivered),
        ]
        if snap.healthy is False:
            parts.append(("  UNHEALTHY", "bold $error"))
        parts += [("  v", "dim"), (snap.agent.version, "dim")]
        self.update(Content.assemble(*parts))


class FittedTable(DataTable[Any], Generic[T]):
    """A table of items (feeds, agents) that fits 80 columns: below ``WIDE`` columns of
    width it leaves one space between columns instead of two and drops the ``WIDE_ONLY``
    column, whose text for the selected row then shows in the border instead."""

    COLUMNS: ClassVar[tuple[str, ...]] = ()
    NUMERIC: ClassVar[frozenset[str]] = frozenset()
    WIDE_ONLY: ClassVar[str] = ""
    WIDE: ClassVar[int] = 100
    compact = reactive(False, init=False)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._shown: tuple[Sequence[T], float] = ((), 0.0)
        self._items: dict[str, T] = {}

    def key_of(self, item: T) -> str:
        raise NotImplementedError

    def cells_of(self, item: T, now: float) -> list[Text]:
        """One cell per name in ``COLUMNS``."""
        raise NotImplementedError

    def show(self, items: Sequence[T], now: float) -> None:
        self._shown = (items, now)
        self._items = {self.key_of(item): item for item in items}
        columns = self._columns()
        fill_table(
            self,
            [
                (
                    key,
                    [
                        self._pad(cell)
                        for name, cell in zip(self.COLUMNS, self.cells_of(item, now), strict=True)
                        if name in columns
                    ],
                )
                for key, item in self._items.items()
            ],
        )
        self._show_long_text()

    def selected(self) -> T | None:
        key = selected_key(self)
        return self._items.get(key) if key else None

    def on_mount(self) -> None:
        self._add_columns()

    def on_resize(self) -> None:
        self.compact = self.size.width < self.WIDE

    def watch_compact(self, compact: bool) -> None:
        self.cell_padding = 0 if compact else 1
        self.clear(columns=True)
        self._add_columns()
        self.show(*self._shown)

    def on_data_table_row_highlighted(self) -> None:
        self._show_long_text()

    def _show_long_text(self) -> None:
        item, text = self.selected(), ""
        if item is not None and self.compact:
            cells = dict(zip(self.COLUMNS, self.cells_of(item, self._shown[1]), strict=True))
            text = cells[self.WIDE_ONLY].plain
        self.border_subtitle = f"{self.key_of(item)}: {text}" if item and text else ""

    def _add_columns(self) -> None:
        for name in self._columns():
            label = Text(name, justify="right" if name in self.NUMERIC else "left")
            self.add_column(self._pad(label), key=name)

    def _columns(self) -> list[str]:
        return [name for name in self.COLUMNS if not (self.compact and name == self.WIDE_ONLY)]

    def _pad(self, text: Text) -> Text:
        if not self.compact:
            return text
        padded = Text.assemble(" ", text)
        padded.justify = text.justify
        return padded


class SourcesTable(FittedTable[FeedRow]):
    """One row per source and feed; the cursor picks the source that p/r/s act on."""

    COLUMNS = (
        "feed",
        "mode",
        "polled",
        "success",
        "rows",
        "changes",
        "dead",
        "errors",
        "state",
        "last error",
    )
    NUMERIC = frozenset({"rows", "changes", "dead", "errors"})
    WIDE_ONLY = "last error"

    def key_of(self, item: FeedRow) -> str:
        return item.key

    def selected_source(self) -> str | None:
        feed = self.selected()
        return feed.source if feed else None

    def cells_of(self, item: FeedRow, now: float) -> list[Text]:
        feed = item.feed
        mode = SHORT_MODES.get(feed.mode, feed.mode) if self.compact else feed.mode
        return [
            Text(item.key),
            Text(mode),
            Text(age(feed.last_poll_end, now)),
            Text(age(feed.last_success, now), style="red" if feed.failing else ""),
            _figure(feed.rows_read),
            _figure(feed.changes_emitted),
            _figure(feed.dead_letters, "bold red"),
            _figure(feed.errors, "red"),
            _feed_state(item),
            Text(feed.last_error or "", style="red"),
        ]


def _figure(value: int, alarm: str = "") -> Text:
    """A right-aligned count, in the ``alarm`` style when not zero."""
    return Text(count(value), justify="right", style=alarm if value else "")


def _feed_state(row: FeedRow) -> Text:
    if row.paused:
        return Text("paused", style="bold yellow")
    if row.feed.failing:
        return Text("failing", style="bold red")
    return Text("ok", style="green")


class OutboxPanel(Vertical):
    """Throughput sparkline and the outbox's figures."""

    def compose(self) -> ComposeResult:
        yield Static("waiting for the first update…", id="outbox-figures")
        yield Sparkline([], id="throughput")

    def show(self, outbox: OutboxStatus, delivered: float | None, series: list[float]) -> None:
        oldest_age = outbox.oldest_pending_age_seconds
        oldest = span(oldest_age) if oldest_age is not None else NONE
        dead_style = "bold $error" if outbox.dead_letters else ""
        self.query_one("#outbox-figures", Static).update(
            Content.assemble(
                (rate(delivered), "bold"),
                ("  pending ", "dim"),
                (f"{outbox.pending:,}", "bold"),
                ("  in flight ", "dim"),
                (f"{outbox.in_flight:,}", "bold"),
                ("  oldest ", "dim"),
                (oldest, "bold"),
                ("  dead letters ", "dim"),
                (f"{outbox.dead_letters:,}", dead_style or "bold"),
            )
        )
        self.query_one(Sparkline).data = series


class InboxPanel(Static):
    """The inbox's figures: items by state and the oldest pending age; a red border while
    any item is dead. An agent older than the inbox says so."""

    def show(self, snap: AgentSnapshot) -> None:
        inbox = snap.inbox if snap.has_inbox else None
        self.set_class(bool(inbox and inbox.dead), "-dead")
        if inbox is None:
            self.border_subtitle = ""
            self.update(
                Content.styled(
                    f"no inbox: agent v{snap.agent.version} is older than the inbox", "dim"
                )
            )
            return
        self.border_subtitle = f"duplicates {count(inbox.duplicates)}" if inbox.duplicates else ""
        self.update(Content.assemble(*inbox_figures(inbox)))


def inbox_figures(inbox: InboxStatus) -> list[str | tuple[str, str]]:
    """``pending N  oldest 4s  held N ...``: a figure in its alarm style when it is not
    zero, the oldest age when it is late."""
    oldest = inbox.oldest_pending_age_seconds
    late = oldest is not None and oldest >= OLD_PENDING
    figures = [
        ("pending", count(inbox.pending), ""),
        ("oldest", span(oldest) if oldest is not None else NONE, "$warning" if late else ""),
        ("held", count(inbox.held), ""),
        ("failed", count(inbox.failed), "$warning" if inbox.failed else ""),
        ("dead", count(inbox.dead), "$error" if inbox.dead else ""),
        ("written", count(inbox.written), ""),
        ("stale", count(inbox.stale), ""),
    ]
    parts: list[str | tuple[str, str]] = []
    for name, shown, alarm in figures:
        parts += ["  " if parts else "", (f"{name} ", "dim"), (shown, f"bold {alarm}".strip())]
    return parts


class EventTail(Vertical):
    """The newest events first, filtered by what is typed in the filter box."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events: deque[TailEvent] = deque(maxlen=TAIL_KEPT)

    def compose(self) -> ComposeResult:
        filter_box = Input(
            placeholder="filter by entity, subject or outcome  ( / )", compact=True, id="filter"
        )
        filter_box.cursor_blink = False  # steady: a blinking cursor is only noise here
        yield filter_box
        table: DataTable[Any] = DataTable(cursor_type="none", zebra_stripes=True, id="events")
        for name in ("time", "seq", "entity", "op", "subject", "outcome"):
            table.add_column(name, key=name)
        yield table

    def add(self, events: Iterable[TailEvent], last_sequence: int) -> None:
        """``last_sequence``: the outbox's, so a fresh outbox (sequences from 1 again) is
        told from the repeats that the stream's first update sends after a reconnect."""
        if self.events and 0 < last_sequence < self.events[-1].sequence:
            self.events.clear()
        newest = self.events[-1].sequence if self.events else -1
        self.events.extend(e for e in events if e.sequence > newest)
        self.redraw()

    def on_input_changed(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        needle = self.query_one(Input).value
        matching = [e for e in reversed(self.events) if e.matches(needle)]
        fill_table(
            self.query_one("#events", DataTable),
            [(str(e.sequence), _event_cells(e)) for e in matching[:TAIL_SHOWN]],
        )
        self.border_title = f"events · {len(matching)} matching" if needle.strip() else "events"


def _event_cells(event: TailEvent) -> list[Text]:
    outcome = Text(event.outcome, style="green" if event.outcome == "delivered" else "red")
    if event.reason:
        outcome.append(f": {event.reason}")
    return [
        Text(clock(event.at), style="dim"),
        Text(str(event.sequence), justify="right"),
        Text(event.entity),
        Text(event.op),
        Text(event.subject),
        outcome,
    ]
