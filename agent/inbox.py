"""The inbox: inbound events (orders, returns, customers from the shops) kept in ``outbox.db``.

One row per inbound event version, never deleted except by :meth:`Inbox.discard`. Each is in
one state (:data:`STATES`):

* ``held``: an order whose ``payment_status`` is not in ``[inbox] import_when`` (default
  paid and authorized); a newer version of it that is paid supersedes it, and
  :meth:`Inbox.release_held` re-checks the held ones after ``import_when`` changed;
* ``pending``: to be written into the ERP;
* ``written``: the ERP holds it (``erp_ref``);
* ``failed``: the ERP write failed in a way that may pass (ERP down): retried with backoff;
* ``dead``: rejected, with the reason (not a valid envelope, an entity the ERP is master
  of, and later the writers' refusals: unknown SKU, closed period, ...); an operator retries
  or discards it;
* ``stale``: an older version of something already taken: older than the version taken
  when it arrived, or superseded by a newer one while it waited. A written one is never
  made stale: the newer version is pending and the writer decides (edit, cancellation,
  nothing to do).

A redelivered ``id`` is recorded once (its row's ``duplicates`` counts the rest). The
version taken for each ``(entity, subject)`` is the highest ``(version, sequence)`` received
(``inbox_heads``): ``version`` is the shop's ``updated_at``, and at the same version the
intake's higher ``sequence`` is the newer state (DESIGN.md, "Identity").

What is atomic: :meth:`Inbox.receive` is one transaction, committed before it returns: the
item, the subject's head and the older items it supersedes. The MQTT subscriber
(``agent/inbound.py``) calls :meth:`Inbox.receive_many` for what arrived on ``{base}/in/#``
and sends the PUBACKs only after it returns; on :class:`~agent.outbox.OutboxUnwritable`
(a disk that fails) it sends none, so the broker redelivers them. The inbox shares the
outbox's writer connection and lock (:meth:`Outbox.transaction`), so its transactions never
interleave with capture's or delivery's.

The ERP writers (next issue) loop on :meth:`Inbox.next_pending` and answer each item with
:meth:`Inbox.mark_written`, :meth:`Inbox.mark_failed` or :meth:`Inbox.mark_dead`; the
status API and the CLI read :meth:`Inbox.stats` and :meth:`Inbox.items`, and act with
:meth:`Inbox.retry` and :meth:`Inbox.discard`.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

import orjson

from agent.config import ENTITIES, INBOUND, PAYMENT_STATUSES, MasterSection
from agent.envelope import subject_of
from agent.outbox import Connection, Outbox

InboxState = Literal["held", "pending", "written", "failed", "dead", "stale"]
STATES: tuple[InboxState, ...] = get_args(InboxState)
DEFAULT_IMPORT_WHEN = ("paid", "authorized")
RETRY_FIRST, RETRY_MAX = 5.0, 900.0
"""Seconds before a failed item is tried again: doubling from the first, up to the cap."""

_TYPE = re.compile(r"^distillsync\.([a-z][a-z_]*)\.(upsert|delete)$")
_SOURCE = re.compile(r"^urn:distillsync:[a-z0-9-]+:intake:[^:\s]+$")
_SEQUENCE = re.compile(r"^[0-9]{20}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_WAITING = ("held", "pending", "failed", "dead")  # what a newer version supersedes
_COLUMNS = (
    "id, event_id, entity, op, subject, source, topic, version, sequence, payment_status, "
    "state, reason, attempts, next_attempt_at, erp_ref, duplicates, received_at, changed_at, "
    "envelope"
)


class InvalidEnvelope(ValueError):
    """An inbound message is not a valid event; its text is the dead item's reason."""


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """A parsed, validated inbound CloudEvent."""

    id: str
    source: str
    entity: str
    op: Literal["upsert", "delete"]
    subject: str
    time: str
    sequence: int
    version: str
    """The shop's version (``data.version``, its ``updated_at``; else the event's ``time``)."""
    version_key: int
    """``version`` as microseconds since the epoch: what newer means."""
    payment_status: str | None
    data: bytes
    """The event's ``data``, canonical JSON (orjson, sorted keys)."""


@dataclass(frozen=True, slots=True)
class Received:
    """What :meth:`Inbox.receive` recorded; committed when it is returned."""

    item_id: int
    event_id: str
    state: InboxState
    duplicate: bool = False
    """The id was recorded before: nothing new was written but its count."""
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class InboxItem:
    id: int
    event_id: str
    entity: str | None
    op: str | None
    subject: str | None
    source: str | None
    topic: str | None
    version: str | None
    sequence: int | None
    payment_status: str | None
    state: InboxState
    reason: str | None
    attempts: int
    next_attempt_at: float | None
    erp_ref: str | None
    duplicates: int
    received_at: float
    changed_at: float
    envelope: bytes
    """The message as received, byte for byte."""

    def data(self) -> Any:
        """The event's ``data`` (``None`` for a message that was not an envelope)."""
        try:
            return orjson.loads(self.envelope).get("data")
        except (orjson.JSONDecodeError, AttributeError):
            return None


@dataclass(frozen=True, slots=True)
class InboxStats:
    held: int
    pending: int
    written: int
    failed: int
    dead: int
    stale: int
    duplicates: int
    """Redeliveries of ids already recorded, in total."""
    oldest_pending_age: float | None
    """Seconds since the oldest item waiting to be written (pending or failed) arrived."""


# --- parsing: bytes to an InboundEvent, or the reason it is not one ------------------------


def _field(envelope: dict[str, Any], name: str, pattern: re.Pattern[str] | None = None) -> str:
    value = envelope.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidEnvelope(f"{name}: required, a non-empty string")
    if pattern is not None and not pattern.match(value):
        raise InvalidEnvelope(f"{name}: {value!r} does not match {pattern.pattern}")
    return value


def _version_key(value: str, name: str) -> int:
    if not _RFC3339.match(value):
        raise InvalidEnvelope(f"{name}: {value!r} is not an RFC 3339 time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:  # the shape of a time, but no such day or hour
        raise InvalidEnvelope(f"{name}: {value!r} is not a valid time: {error}") from None
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _order_fields(data: dict[str, Any], subject: str, op: str) -> str | None:
    """An order's ``shop``/``order_ref`` make its subject; its payment status, if an upsert."""
    shop, ref = data.get("shop"), data.get("order_ref")
    if not isinstance(shop, str) or not isinstance(ref, str) or not shop or not ref:
        raise InvalidEnvelope("data: an order needs shop and order_ref, non-empty strings")
    if subject != subject_of([shop, ref]):
        raise InvalidEnvelope(f"subject: {subject!r} is not {{shop}}/{{order_ref}} of its data")
    if "version" not in data:
        raise InvalidEnvelope("data.version: required for an order")
    status = data.get("payment_status")
    if op == "delete" and status is None:
        return None
    if status not in PAYMENT_STATUSES:
        raise InvalidEnvelope(
            f"data.payment_status: {status!r} is not one of {', '.join(PAYMENT_STATUSES)}"
        )
    return str(status)


def parse_event(payload: bytes) -> InboundEvent:
    """Validate one inbound message; :class:`InvalidEnvelope` says what is wrong."""
    try:
        envelope = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise InvalidEnvelope(f"not JSON: {error}") from None
    if not isinstance(envelope, dict):
        raise InvalidEnvelope("not a JSON object")
    if envelope.get("specversion") != "1.0":
        raise InvalidEnvelope(f"specversion: {envelope.get('specversion')!r} is not '1.0'")
    kind = _TYPE.match(_field(envelope, "type", _TYPE))
    assert kind is not None
    entity, op = kind.group(1), kind.group(2)
    if entity not in INBOUND and entity not in ENTITIES:
        raise InvalidEnvelope(f"type: unknown entity {entity!r}")
    subject, when = _field(envelope, "subject"), _field(envelope, "time")
    _version_key(when, "time")
    sequence = int(_field(envelope, "sequence", _SEQUENCE))
    if envelope.get("datacontenttype", "application/json") != "application/json":
        raise InvalidEnvelope("datacontenttype: only application/json")
    data = envelope.get("data")
    if not isinstance(data, dict):
        raise InvalidEnvelope("data: required, a JSON object")
    status = _order_fields(data, subject, op) if entity == "order" else None
    version = data.get("version", when)
    if not isinstance(version, str):
        raise InvalidEnvelope("data.version: must be an RFC 3339 time string")
    return InboundEvent(
        id=_field(envelope, "id"),
        source=_field(envelope, "source", _SOURCE),
        entity=entity,
        op="delete" if op == "delete" else "upsert",
        subject=subject,
        time=when,
        sequence=sequence,
        version=version,
        version_key=_version_key(version, "data.version"),
        payment_status=status,
        data=orjson.dumps(data, option=orjson.OPT_SORT_KEYS),
    )


def _dead_id(payload: bytes) -> str:
    """An invalid message's id: its digest, so a redelivered copy is recorded once."""
    return "invalid:" + hashlib.sha256(payload).hexdigest()


def _item(row: Sequence[Any]) -> InboxItem:
    fields: list[Any] = [*row[:18], bytes(row[18])]
    return InboxItem(*fields)


class Inbox:
    """The inbox in an open :class:`~agent.outbox.Outbox`'s file; safe from any task."""

    def __init__(
        self,
        outbox: Outbox,
        master: MasterSection | None = None,
        import_when: Collection[str] = DEFAULT_IMPORT_WHEN,
    ) -> None:
        self._outbox = outbox
        self.master = master or MasterSection()
        self.import_when = frozenset(import_when)
        """Payment statuses that make an order pending; change it, then :meth:`release_held`."""

    # --- receiving ---------------------------------------------------------------------

    async def receive(self, payload: bytes, topic: str | None = None) -> Received:
        """Record one inbound message; returns once committed (then PUBACK it)."""
        return (await self.receive_many([(payload, topic)]))[0]

    async def receive_many(self, messages: Sequence[tuple[bytes, str | None]]) -> list[Received]:
        """As :meth:`receive`, for a batch in one transaction (one commit, one fsync)."""
        now = time.time()
        async with self._outbox.transaction() as db:
            return [await self._receive(db, bytes(p), t, now) for p, t in messages]

    async def _receive(
        self, db: Connection, payload: bytes, topic: str | None, now: float
    ) -> Received:
        try:
            event = parse_event(payload)
        except InvalidEnvelope as error:
            return await self._record_invalid(db, payload, topic, str(error), now)
        duplicate = await self._duplicate(db, event.id)
        if duplicate is not None:
            return duplicate
        state, reason = await self._classify(db, event, topic)
        item = await self._insert(db, event.id, event, payload, topic, state, reason, now)
        await self._take(db, event, item, state, now)
        return Received(item, event.id, state, reason=reason)

    async def _record_invalid(
        self, db: Connection, payload: bytes, topic: str | None, why: str, now: float
    ) -> Received:
        event_id, reason = _dead_id(payload), f"not a valid event: {why}"
        duplicate = await self._duplicate(db, event_id)
        if duplicate is not None:
            return duplicate
        item = await self._insert(db, event_id, None, payload, topic, "dead", reason, now)
        return Received(item, event_id, "dead", reason=reason)

    @staticmethod
    async def _duplicate(db: Connection, event_id: str) -> Received | None:
        """Count a redelivery of an id already recorded; ``None`` if it is new."""
        cursor = await db.execute(
            "UPDATE inbox SET duplicates = duplicates + 1 WHERE event_id = ? "
            "RETURNING id, state, reason",
            (event_id,),
        )
        row = await cursor.fetchone()
        await cursor.close()
        if row is None:
            return None
        return Received(int(row[0]), event_id, row[1], duplicate=True, reason=row[2])

    async def _classify(
        self, db: Connection, event: InboundEvent, topic: str | None, item: int = 0
    ) -> tuple[InboxState, str | None]:
        """The state a new (or retried) item starts in, and why."""
        if topic is not None and topic.rsplit("/", 1)[-1] != event.entity:
            return "dead", f"not a valid event: type names {event.entity} on topic {topic}"
        if self.master.of(event.entity) == "erp":
            return "dead", (
                f"master of data: {event.entity} is mastered by the ERP "
                f'(master.{event.entity} = "erp"), so the inbox takes no {event.entity} '
                "from the shop"
            )
        async with db.execute(
            "SELECT version_key, sequence FROM inbox_heads WHERE entity = ? AND subject = ? "
            "AND item_id != ?",
            (event.entity, event.subject, item),
        ) as cursor:
            head = await cursor.fetchone()
        if head is not None and (event.version_key, event.sequence) <= (head[0], head[1]):
            return "stale", (
                f"older than the version taken (version {event.version}, sequence "
                f"{event.sequence} is not after sequence {head[1]})"
            )
        return self._payment_gate(event.entity, event.op, event.payment_status)

    def _payment_gate(
        self, entity: str | None, op: str | None, status: str | None
    ) -> tuple[InboxState, str | None]:
        if entity == "order" and op == "upsert" and status not in self.import_when:
            wanted = ", ".join(sorted(self.import_when)) or "nothing"
            return "held", f"payment_status {status} is not in inbox.import_when ({wanted})"
        return "pending", None

    @staticmethod
    async def _insert(
        db: Connection,
        event_id: str,
        event: InboundEvent | None,
        payload: bytes,
        topic: str | None,
        state: InboxState,
        reason: str | None,
        now: float,
    ) -> int:
        fields: tuple[object, ...] = (None,) * 8
        if event is not None:
            fields = (event.entity, event.op, event.subject, event.source, event.version)
            fields += (event.version_key, event.sequence, event.payment_status)
        cursor = await db.execute(
            "INSERT INTO inbox (event_id, entity, op, subject, source, version, version_key, "
            "sequence, payment_status, topic, envelope, state, reason, received_at, changed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (event_id, *fields, topic, payload, state, reason, now, now),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    @staticmethod
    async def _take(
        db: Connection, event: InboundEvent, item: int, state: InboxState, now: float
    ) -> None:
        """A held or pending ``event`` is the newest of its subject: it becomes the head, and
        what waited before it is stale (a written one stays written)."""
        if state not in ("held", "pending"):
            return
        await db.execute(
            "INSERT INTO inbox_heads (entity, subject, version_key, sequence, item_id) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET version_key = excluded.version_key, "
            "sequence = excluded.sequence, item_id = excluded.item_id",
            (event.entity, event.subject, event.version_key, event.sequence, item),
        )
        marks = ",".join("?" * len(_WAITING))
        await db.execute(
            "UPDATE inbox SET state = 'stale', reason = ?, next_attempt_at = NULL, "
            f"changed_at = ? WHERE entity = ? AND subject = ? AND id != ? AND state IN ({marks})",
            (
                f"superseded by version {event.version}, sequence {event.sequence} (item {item})",
                now,
                event.entity,
                event.subject,
                item,
                *_WAITING,
            ),
        )

    # --- the writers' side -------------------------------------------------------------

    async def next_pending(self, limit: int, now: float | None = None) -> list[InboxItem]:
        """Items to write, oldest first: pending ones, and failed ones whose backoff ended."""
        with self._outbox.disk_errors():
            async with self._outbox.reader.execute(
                f"SELECT {_COLUMNS} FROM inbox WHERE state IN ('pending', 'failed') "
                "AND coalesce(next_attempt_at, 0) <= ? ORDER BY id LIMIT ?",
                (time.time() if now is None else now, limit),
            ) as cursor:
                return [_item(row) async for row in cursor]

    async def mark_written(self, item_id: int, erp_ref: str) -> bool:
        """The ERP holds it; False if it was not waiting to be written (superseded, say)."""
        return await self._move(
            item_id, ("pending", "failed"), "written", None, erp_ref=erp_ref, next_at=None
        )

    async def mark_failed(self, item_id: int, reason: str, now: float | None = None) -> bool:
        """A write that may pass later (ERP down): tried again after a doubling backoff."""
        now = time.time() if now is None else now
        async with self._outbox.transaction() as db:
            cursor = await db.execute(
                "UPDATE inbox SET state = 'failed', reason = ?, attempts = attempts + 1, "
                "next_attempt_at = ? + min(?, ? * (1 << min(attempts, 30))), changed_at = ? "
                "WHERE id = ? AND state IN ('pending', 'failed')",
                (reason, now, RETRY_MAX, RETRY_FIRST, now, item_id),
            )
            return cursor.rowcount > 0

    async def mark_dead(self, item_id: int, reason: str) -> bool:
        """Rejected (unknown SKU, closed period, ...): an operator retries or discards it."""
        return await self._move(item_id, ("held", "pending", "failed"), "dead", reason)

    async def _move(
        self,
        item_id: int,
        sources: Sequence[InboxState],
        target: InboxState,
        reason: str | None,
        *,
        erp_ref: str | None = None,
        next_at: float | None = None,
    ) -> bool:
        marks = ",".join("?" * len(sources))
        async with self._outbox.transaction() as db:
            cursor = await db.execute(
                "UPDATE inbox SET state = ?, reason = ?, erp_ref = coalesce(?, erp_ref), "
                f"next_attempt_at = ?, changed_at = ? WHERE id = ? AND state IN ({marks})",
                (target, reason, erp_ref, next_at, time.time(), item_id, *sources),
            )
            return cursor.rowcount > 0

    # --- inspection and operator actions -----------------------------------------------

    async def get(self, item_id: int) -> InboxItem | None:
        with self._outbox.disk_errors():
            async with self._outbox.reader.execute(
                f"SELECT {_COLUMNS} FROM inbox WHERE id = ?", (item_id,)
            ) as cursor:
                row = await cursor.fetchone()
        return _item(row) if row else None

    async def items(
        self, state: InboxState | None = None, after: int = 0, limit: int = 100
    ) -> list[InboxItem]:
        """Items with an id above ``after``, by id; page on with the last one's id."""
        where, params = ("state = ? AND ", (state,)) if state else ("", ())
        with self._outbox.disk_errors():
            async with self._outbox.reader.execute(
                f"SELECT {_COLUMNS} FROM inbox WHERE {where}id > ? ORDER BY id LIMIT ?",
                (*params, after, limit),
            ) as cursor:
                return [_item(row) async for row in cursor]

    async def stats(self, now: float | None = None) -> InboxStats:
        with self._outbox.disk_errors():
            async with self._outbox.reader.execute(
                "SELECT state, count(*) FROM inbox GROUP BY state"
            ) as cursor:
                counts = {str(state): int(n) async for state, n in cursor}
            async with self._outbox.reader.execute(
                "SELECT coalesce(sum(duplicates), 0), "
                "(SELECT min(received_at) FROM inbox WHERE state IN ('pending', 'failed')) "
                "FROM inbox"
            ) as cursor:
                row = await cursor.fetchone()
        assert row is not None
        oldest = None if row[1] is None else max(0.0, (now or time.time()) - float(row[1]))
        return InboxStats(
            **{s: counts.get(s, 0) for s in STATES},
            duplicates=int(row[0]),
            oldest_pending_age=oldest,
        )

    async def retry(self, item_id: int) -> bool:
        """A dead or failed item is judged again as if it had just arrived (so a rule since
        changed in the config applies). True if it is pending or held now; False if it was
        neither dead nor failed, or is dead again, or stale (a newer version was taken)."""
        now = time.time()
        async with self._outbox.transaction() as db:
            async with db.execute(
                "SELECT envelope, topic FROM inbox WHERE id = ? AND state IN ('dead', 'failed')",
                (item_id,),
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                return False
            try:
                event = parse_event(bytes(row[0]))
            except InvalidEnvelope as error:
                await self._set(db, item_id, "dead", f"not a valid event: {error}", now)
                return False
            state, reason = await self._classify(db, event, row[1], item_id)
            await self._set(db, item_id, state, reason, now)
            await self._take(db, event, item_id, state, now)
        return state in ("held", "pending")

    @staticmethod
    async def _set(
        db: Connection, item: int, state: InboxState, reason: str | None, now: float
    ) -> None:
        await db.execute(
            "UPDATE inbox SET state = ?, reason = ?, attempts = 0, next_attempt_at = NULL, "
            "changed_at = ? WHERE id = ?",
            (state, reason, now, item),
        )

    async def discard(self, item_id: int) -> bool:
        """Delete an item that will not be written (dead, failed, held or stale). Its
        subject's taken version stays, so an older copy arriving later is still stale."""
        async with self._outbox.transaction() as db:
            cursor = await db.execute(
                "DELETE FROM inbox WHERE id = ? AND state IN ('dead', 'failed', 'held', 'stale')",
                (item_id,),
            )
            return cursor.rowcount > 0

    async def release_held(self) -> int:
        """Held orders whose payment status is now in :attr:`import_when` become pending
        (after a change of ``[inbox] import_when``); how many."""
        async with self._outbox.transaction() as db:
            async with db.execute(
                "SELECT id, payment_status FROM inbox WHERE state = 'held'"
            ) as cursor:
                ready = [int(r[0]) async for r in cursor if r[1] in self.import_when]
            await db.executemany(
                "UPDATE inbox SET state = 'pending', reason = NULL, changed_at = ? WHERE id = ?",
                [(time.time(), item) for item in ready],
            )
        return len(ready)
