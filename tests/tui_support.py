"""Frozen data and fake sources for the dashboards' tests (and for looking at them by hand:
``python -m tests.tui_support`` runs the agent dashboard on this data, ``--fleet`` the
fleet view).

A fake feed plays a script: each item put on ``plans`` is either a list of updates to
deliver on the open connection, or an exception that breaks it. The next connection
waits for the next item, so a test decides exactly when the agent "comes back".
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import orjson
from rich.text import Text
from textual.app import App
from textual.css.query import NoMatches
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import DataTable

from tui.follow import Backoff
from tui.model import DeadLetter, InboxList, parse_dead_letter, parse_inbox_item

T = TypeVar("T")
NOW = 1_790_000_000.0  # 2026-09-21T14:13:20Z: the frozen clock of every test
STARTED = NOW - 3 * 3600 - 12 * 60  # the agent has been up 3h 12m
UPDATES = 90  # 3 minutes of history at one update every 2 s


def frozen() -> float:
    return NOW


def fast() -> Backoff:
    """Reconnect at once: tests wait for outcomes, not for the backoff."""
    return Backoff(first=0.01, cap=0.02)


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


class Script(Generic[T]):
    def __init__(self, *plans: list[T] | Exception) -> None:
        self.plans: asyncio.Queue[list[T] | Exception] = asyncio.Queue()
        self.connections = 0
        for plan in plans:
            self.plans.put_nowait(plan)

    async def play(self) -> AsyncIterator[T]:
        self.connections += 1
        while True:
            plan = await self.plans.get()
            if isinstance(plan, Exception):
                raise plan
            for item in plan:
                yield item


def feed(name: str, entity: str, mode: str, **figures: Any) -> dict[str, Any]:
    return {
        "feed": name,
        "entity": entity,
        "mode": mode,
        "last_poll_start": NOW - 3,
        "last_poll_end": NOW - 2,
        "last_success": NOW - 2,
        "rows_read": 0,
        "changes_emitted": 0,
        "dead_letters": 0,
        "errors": 0,
        "last_error": None,
        **figures,
    }


SOURCES: list[dict[str, Any]] = [
    {
        "name": "erp",
        "paused": False,
        "feeds": [
            feed("product", "product", "timestamp", rows_read=48_213, changes_emitted=1_207),
            feed("price", "price", "timestamp", rows_read=9_120, changes_emitted=342),
            feed(
                "stock",
                "stock",
                "timestamp",
                rows_read=310_554,
                changes_emitted=88_421,
                dead_letters=2,
            ),
        ],
    },
    {
        "name": "warehouse",
        "paused": True,
        "feeds": [
            feed(
                "stock_wh",
                "stock",
                "snapshot",
                rows_read=1_800,
                changes_emitted=12,
                last_poll_end=NOW - 95,
                last_success=NOW - 95,
            )
        ],
    },
    {
        "name": "crm",
        "paused": False,
        "feeds": [
            feed(
                "customer",
                "customer",
                "incrementing",
                rows_read=640,
                changes_emitted=640,
                errors=7,
                last_success=NOW - 420,
                last_error="connection refused by 10.0.0.7:5432",
            )
        ],
    },
]


def published_at(t: float) -> int:
    """Deliveries after ``t`` seconds: a gentle wave with a burst in the middle, so the
    sparkline has a shape."""
    return sum(
        120 + int(60 * math.sin(s / 9)) + (900 if 100 <= s < 130 else 0) for s in range(int(t))
    )


INBOX_STATUS: dict[str, Any] = {
    "held": 1,
    "pending": 1,
    "written": 1,
    "failed": 1,
    "dead": 2,
    "stale": 1,
    "duplicates": 1,
    "oldest_pending_age_seconds": 1260.4,  # 21 minutes: late
}


def status(
    uptime: float, published: int, inbox: dict[str, Any] | None = None, **outbox: Any
) -> dict[str, Any]:
    """One ``/v1/status``; ``inbox`` defaults to :data:`INBOX_STATUS`, ``{}`` leaves the
    section out, as an agent older than the inbox does."""
    body = {
        "agent": {
            "id": "erp-madrid-1",
            "tenant": "acme",
            "version": "0.1.0",
            "started_at": rfc3339(STARTED),
            "uptime_seconds": uptime,
        },
        "relay": {
            "url": "mqtts://relay.example.com:8883",
            "state": "connected",
            "since": NOW - 125,
            "reconnects": 1,
            "published": published,
            "refused": 2,
            "in_flight": 37,
            "last_publish": NOW - 0.4,
            "last_error": None,
        },
        "sources": SOURCES,
        "outbox": {
            "pending": 1_204,
            "in_flight": 37,
            "delivered_per_second": 118.5,
            "oldest_pending_time": rfc3339(NOW - 4),
            "oldest_pending_age_seconds": 4.2,
            "dead_letters": 3,
            "delivered_kept": 5_000,
            "last_sequence": 90_311,
            **outbox,
        },
    }
    if inbox != {}:
        body["inbox"] = INBOX_STATUS if inbox is None else inbox
    return body


def event(
    sequence: int, entity: str, subject: str, outcome: str = "delivered", reason: str | None = None
) -> dict[str, Any]:
    return {
        "sequence": sequence,
        "id": f"0193a8c0-{sequence:04x}",
        "entity": entity,
        "op": "upsert",
        "subject": subject,
        "outcome": outcome,
        "reason": reason,
        "at": NOW - (90_311 - sequence) * 0.5,
    }


EVENTS = [
    event(90_300 + i, entity, subject)
    for i, (entity, subject) in enumerate(
        [
            ("stock", "SKU-1/WH1"),
            ("stock", "SKU-2/WH1"),
            ("price", "SKU-1"),
            ("stock", "SKU-7/WH3"),
            ("product", "SKU-42"),
            ("stock", "SKU-9/WH2"),
            ("price", "SKU-7"),
            ("stock", "SKU-3/WH1"),
            ("product", "SKU-8"),
        ]
    )
] + [
    event(90_309, "stock", "SKU-5/WH2", "refused", "not authorized (0x87)"),
    event(90_310, "price", "SKU-99"),
]


def updates(count: int = UPDATES, inbox: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``count`` stream lines two seconds apart, the last one at ``NOW``; ``inbox`` as
    :func:`status` takes it."""
    lines = []
    for i in range(count):
        uptime = (NOW - STARTED) - 2 * (count - 1 - i)
        lines.append(
            {
                "status": status(uptime, published_at(2.0 * i), inbox),
                "health": {"healthy": True, "relay": "connected", "relay_since": NOW - 125},
                "events": EVENTS if i == count - 1 else [],
            }
        )
    return lines


DEAD_LETTERS: list[dict[str, Any]] = [
    {
        "id": 12,
        "kind": "capture",
        "source": "erp",
        "feed": "stock",
        "entity": "stock",
        "subject": "SKU-9/WH1",
        "reason": "schema: data.on_hand must be number",
        "payload": '{"sku": "SKU-9", "warehouse": "WH1", "on_hand": "twelve"}',
        "event_sequence": None,
        "created_at": NOW - 300,
    },
    {
        "id": 15,
        "kind": "publish",
        "source": "erp",
        "feed": "product",
        "entity": "product",
        "subject": "SKU-77",
        "reason": "message of 5342 bytes exceeds the broker's maximum packet size 1000",
        "payload": orjson.dumps({"sku": "SKU-77", "name": "Long description " * 3}).decode(),
        "event_sequence": 88_002,
        "created_at": NOW - 75,
    },
    {
        "id": 16,
        "kind": "capture",
        "source": "erp",
        "feed": "stock",
        "entity": "stock",
        "subject": "SKU-10/WH2",
        "reason": "column label: invalid UTF-8",
        "payload": "SKU-10;WH2;\\xff\\xfe",
        "event_sequence": None,
        "created_at": NOW - 20,
    },
]


def order_data(shop: str, ref: str, number: str, version: str, payment: str) -> dict[str, Any]:
    """An order's ``data`` in the shape of DESIGN.md's order event, trimmed."""
    return {
        "shop": shop,
        "order_ref": ref,
        "number": number,
        "version": version,
        "status": "open",
        "payment_status": payment,
        "currency": "EUR",
        "customer": {"email": "ana@example.com", "first_name": "Ana", "last_name": "García"},
        "lines": [
            {"line_ref": "1", "sku": "SKU-1", "quantity": 2, "unit_price": "10.00", "tax": "4.20"}
        ],
        "totals": {"subtotal": "20.00", "shipping": "5.00", "tax": "5.07", "total": "29.27"},
    }


def inbox_item(
    item_id: int,
    state: str,
    data: dict[str, Any],
    *,
    entity: str = "order",
    reason: str | None = None,
    received: float,
    **row: Any,
) -> dict[str, Any]:
    """One item of ``GET /v1/inbox`` holding the event the intake would have published."""
    subject = f"{data['shop']}/{data.get('order_ref', data.get('ref', ''))}"
    envelope = {
        "specversion": "1.0",
        "id": f"0193b7e2-{item_id:04d}",
        "source": f"urn:distillsync:acme:intake:{data['shop']}",
        "type": f"distillsync.{entity}.upsert",
        "subject": subject,
        "sequence": f"{item_id:020d}",
        "data": data,
    }
    return {
        "id": item_id,
        "event_id": envelope["id"],
        "state": state,
        "reason": reason,
        "entity": entity,
        "op": "upsert",
        "subject": subject,
        "source": envelope["source"],
        "topic": f"distillsync/acme/erp-madrid-1/in/{entity}",
        "version": data.get("version"),
        "sequence": item_id,
        "payment_status": data.get("payment_status"),
        "attempts": 0,
        "next_attempt_at": None,
        "erp_ref": None,
        "duplicates": 0,
        "received_at": received,
        "changed_at": received,
        "payload": orjson.dumps(envelope).decode(),
        **row,
    }


V1, V2 = "2026-09-21T13:51:58Z", "2026-09-21T13:52:03Z"
INBOX: list[dict[str, Any]] = [
    inbox_item(
        30,
        "written",
        order_data("shopify-main", "5511907", "#0998", "2026-09-21T11:02:40Z", "paid"),
        received=NOW - 11_000,
        erp_ref="SO-2291",
    ),
    inbox_item(
        31,
        "stale",
        order_data("shopify-main", "5512384", "#1001", V1, "authorized"),
        reason=f"superseded by version {V2}, sequence 33 (item 33)",
        received=NOW - 1_290,
    ),
    inbox_item(
        32,
        "held",
        order_data("woo-eu", "8812", "8812", "2026-09-21T13:58:11Z", "pending"),
        reason="payment_status pending is not in inbox.import_when (authorized, paid)",
        received=NOW - 900,
    ),
    inbox_item(
        33,
        "pending",
        order_data("shopify-main", "5512384", "#1001", V2, "paid"),
        received=NOW - 1_260.4,
        duplicates=1,
    ),
    inbox_item(
        34,
        "failed",
        order_data("presta-es", "771", "XKBKNABJK", "2026-09-21T14:01:09Z", "paid"),
        reason="ERP unreachable: connection refused by 10.0.0.5:8069",
        received=NOW - 600,
        attempts=3,
        changed_at=NOW - 40,
    ),
    {
        **inbox_item(
            35,
            "dead",
            {"shop": "?"},
            reason="not a valid event: not JSON: unexpected character: line 1 column 1 (char 0)",
            received=NOW - 300,
        ),
        "event_id": "invalid:9f2c4e0b7d1a",
        "entity": None,
        "op": None,
        "subject": None,
        "source": None,
        "version": None,
        "sequence": None,
        "payload": "<html><body>502 Bad Gateway</body></html>",
    },
    inbox_item(
        36,
        "dead",
        {"shop": "shopify-main", "ref": "77", "email": "ana@example.com", "first_name": "Ana"},
        entity="customer",
        reason=(
            'master of data: customer is mastered by the ERP (master.customer = "erp"), '
            "so the inbox takes no customer from the shop"
        ),
        received=NOW - 45,
    ),
]


class FakeAgent:
    """An :class:`tui.sources.AgentSource` with frozen data that records what it is asked."""

    where = "/run/distillsync/agent.sock"

    def __init__(
        self,
        *plans: list[dict[str, Any]] | Exception,
        dead: list[dict[str, Any]] | None = None,
        inbox: list[dict[str, Any]] | None = None,
    ) -> None:
        self.script: Script[dict[str, Any]] = Script(*plans)
        self.dead = list(DEAD_LETTERS if dead is None else dead)
        self.inbox_items = [dict(item) for item in (INBOX if inbox is None else inbox)]
        self.posts: list[str] = []
        self.dead_reads = 0
        self.inbox_reads: list[str | None] = []

    def updates(self) -> AsyncIterator[dict[str, Any]]:
        return self.script.play()

    async def dead_letters(self) -> list[DeadLetter]:
        self.dead_reads += 1
        return [parse_dead_letter(item) for item in self.dead]

    async def inbox(self, state: str | None) -> InboxList:
        self.inbox_reads.append(state)
        found = [parse_inbox_item(i) for i in self.inbox_items if state in (None, i["state"])]
        return InboxList(tuple(reversed(found)), len(found))

    async def act(self, path: str) -> tuple[int, Any]:
        self.posts.append(path)
        parts = path.strip("/").split("/")  # v1 outbox 12 retry | v1 sources erp pause
        if parts[1] == "inbox":
            return self._act_on_inbox(int(parts[2]), parts[3])
        if parts[1] == "sources":
            if parts[2] not in {s["name"] for s in SOURCES}:
                return 404, {"error": f"no source named {parts[2]!r}"}
            return 200, {"source": parts[2], "done": parts[3], "paused": parts[3] == "pause"}
        found = [item for item in self.dead if str(item["id"]) == parts[2]]
        if not found:
            return 404, {"error": f"no dead letter with id {parts[2]}"}
        self.dead.remove(found[0])
        return 200, {"id": int(parts[2]), "done": parts[3]}

    def _act_on_inbox(self, item_id: int, action: str) -> tuple[int, Any]:
        """As the agent answers: a failed item retried is pending, a dead one stays dead
        (the rule that killed it still holds); discard takes any but a pending or written
        one."""
        found = [item for item in self.inbox_items if item["id"] == item_id]
        if not found:
            return 404, {"error": f"no inbox item with id {item_id}"}
        item = found[0]
        applies = ("failed",) if action == "retry" else ("dead", "failed", "held", "stale")
        if item["state"] not in applies:
            why = f": {item['reason']}" if item["reason"] else ""
            return 409, {
                "error": f"inbox item {item_id} is {item['state']}{why}; {action} not done"
            }
        if action == "discard":
            self.inbox_items.remove(item)
            return 200, {"id": item_id, "done": action, "state": None}
        item.update(state="pending", reason=None)
        return 200, {"id": item_id, "done": action, "state": "pending"}


def fleet_status(state: str, **extra: Any) -> bytes:
    body = {
        "state": state,
        "version": "0.1.0",
        "started_at": rfc3339(STARTED),
        "time": rfc3339(NOW - 5),
        **extra,
    }
    return orjson.dumps(body)


def online(backlog: int, dead: int, last_publish: float | None, **extra: Any) -> bytes:
    figures = {
        "backlog": backlog,
        "dead_letters": dead,
        "published": 1000,
        "last_publish": rfc3339(last_publish) if last_publish else None,
        "last_error": None,
        "sources_failing": 0,
    }
    return fleet_status("online", **{**figures, **extra})


FLEET: list[tuple[str, bytes]] = [
    ("distillsync/acme/erp-madrid-1/status", online(1_204, 3, NOW - 1)),
    ("distillsync/acme/erp-bilbao/status", fleet_status("offline")),  # the Last Will
    ("distillsync/acme/erp-sevilla/status", online(0, 0, NOW - 42, paused=["legacy"])),
    (
        "distillsync/zeta/erp-porto/status",
        online(88_310, 0, NOW - 600, last_error="not authorized (0x87)", sources_failing=1),
    ),
    (
        "distillsync/_relay/shops-1/status",  # a relay-side consumer, next to the agents
        online(12, 1, NOW - 2, kind="consumer"),
    ),
    ("distillsync/acme/erp-retired/status", online(5, 0, NOW - 3)),
    ("distillsync/acme/erp-retired/status", b""),  # cleared: the row goes away
]


class FakeRelay:
    """A :class:`tui.sources.FleetSource` playing retained statuses."""

    where = "mqtts://relay.example.com:8883"
    topic = "distillsync/+/+/status"

    def __init__(self, *plans: list[tuple[str, bytes]] | Exception) -> None:
        self.script: Script[tuple[str, bytes]] = Script(*plans)

    def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        return self.script.play()


# Reading the screens in Pilot tests.


async def until(
    pilot: Pilot[Any], condition: Callable[[], object], what: str, seconds: float = 5.0
) -> None:
    """Let the app run until ``condition()`` holds: updates arrive through workers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not _holds(condition):
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.01)


def _holds(condition: Callable[[], object]) -> bool:
    try:
        return bool(condition())
    except NoMatches:  # the screen is still being composed
        return False


def text(widget: Widget) -> str:
    return str(widget.render())


def rows(table: DataTable[Any]) -> list[list[str]]:
    return [
        [
            cell.plain.strip() if isinstance(cell, Text) else str(cell)
            for cell in table.get_row_at(i)
        ]
        for i in range(table.row_count)
    ]


def table(app: App[Any], selector: str) -> DataTable[Any]:
    return app.screen.query_one(selector, DataTable)


def main(argv: list[str]) -> None:
    from tui.app import AgentDashboard
    from tui.fleet import FleetApp

    if "--fleet" in argv:
        FleetApp(FakeRelay(FLEET), now=frozen).run()
    else:
        AgentDashboard(FakeAgent(updates()), now=frozen).run()


if __name__ == "__main__":
    main(sys.argv[1:])
