"""Delivery: moves pending outbox events through a relay link, as a sliding window.

The outbox is the source of truth. After every (re)connect delivery starts again from
the oldest pending event, so everything not acknowledged is re-sent in sequence order
with its original id; a row becomes delivered only once its PUBACK arrived. Results are
recorded in batches by one task, so the socket waits for SQLite only when ``max_inflight``
events are all acknowledged but not yet recorded (see the second bound below).

The window slides: a new publish goes out as soon as a slot frees, never batch-and-wait
(a client that pauses for PUBACKs stalls on delayed ACKs). Two bounds hold at once:

* unacknowledged publishes <= min(``max_inflight``, the broker's Receive Maximum); the
  retained status counts too, since Receive Maximum counts every QoS 1 message;
* events sent but whose outcome is not yet committed to the outbox <= ``max_inflight``,
  so a crash re-sends at most that many (an acked event that was not yet recorded as
  delivered is re-sent, just like an unacked one).

The sequence never goes back, even when the outbox does (a restored backup, a lost
``outbox.db``): the agent keeps its watermark, the highest sequence it has sent, retained
on ``{base}/sequence``, at most ``MARK_EVERY`` seconds behind. On every connection, before
anything else is published, it reads that watermark back and moves the outbox's sequence
above it (:meth:`agent.outbox.Outbox.move_sequence_above`). A relay that cannot be reached
holds publishing back, never the check; one that answers but cannot say (an ACL that denies
reading the topic) is warned about, and publishing goes on unchecked. Not the status topic:
the Will replaces that one, with what it said at connect time, exactly when an agent dies.

Given the inbox, every connection also carries the inbound direction (``agent/inbound.py``):
subscribed to ``{base}/in/#`` on the same session, each message acknowledged only once the
inbox has committed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson

from agent import __version__
from agent.envelope import (
    CONTENT_TYPE,
    envelope,
    event_topic,
    now_rfc3339,
    sequence_text,
)
from agent.errors import RelayError
from agent.inbound import Receiver
from agent.inbox import Inbox
from agent.model import Outcome, PendingEvent, PublishResult
from agent.outbox import Outbox, OutboxUnwritable, SequenceMove
from agent.publisher import Ack, RelayLink, RetainedUnknown, message_properties

log = logging.getLogger("distillsync.delivery")

FETCH_BATCH = 1000
IDLE_WAKEUP = 1.0  # seconds; also bounds how late a stop or a dead link is noticed
ANNOUNCE_EVERY = 15.0  # seconds between retained status refreshes (the contract: <= 30 s)
TAIL_LENGTH = 1000
MARK_EVERY = 1.0  # seconds: the retained watermark lags the highest sequence sent by at most this
SEQUENCE_TOPIC = "sequence"
_MAX_WATERMARK = 2**62  # far beyond any outbox (SQLite's ids stop at 2**63 - 1): not a sequence


@dataclass(frozen=True, slots=True)
class TailEntry:
    """One settled publish, for the live event tail of the status API."""

    sequence: int
    event_id: str
    entity: str
    op: str
    subject: str
    outcome: str  # "delivered" | "refused"
    reason: str | None
    at: float


@dataclass(slots=True)
class SequenceCheck:
    """The sequence against the relay's watermark: ``sequence`` in ``/v1/status``."""

    state: str = "unchecked"
    """``unchecked`` until a connection read the watermark (nothing is published before),
    ``ok`` once the last connection read it, ``unread`` when the relay could not say (then
    publishing goes on unchecked, and no watermark is written over what it may hold)."""
    checked_at: float | None = None
    relay_watermark: int | None = None
    """What the relay held at the last reading (``None``: nothing, a new agent)."""
    unread_reason: str | None = None
    published: int = 0
    """The highest watermark the relay acknowledged from this process."""
    watermark_error: str | None = None
    """Why the relay refused the last watermark, while it does (an ACL)."""
    moved: SequenceMove | None = None
    """Set once the outbox was found behind the watermark and moved above it."""
    moved_at: float | None = None


@dataclass(slots=True)
class RelayStats:
    state: str = "connecting"
    since: float = field(default_factory=time.time)
    reconnects: int = 0
    published: int = 0
    nacked: int = 0
    in_flight: int = 0
    last_error: str | None = None
    last_publish: float | None = None
    published_by_entity: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    """Publishes that did not succeed, by reason: ``refused`` or ``unacknowledged``."""
    tail: deque[TailEntry] = field(default_factory=lambda: deque(maxlen=TAIL_LENGTH))
    tail_total: int = 0
    """How many entries ever entered ``tail``; readers remember it to see what is new."""
    sequence: SequenceCheck = field(default_factory=SequenceCheck)
    received: int = 0
    """Messages received on the inbound topic (``in/#``), counted on arrival."""

    def become(self, state: str) -> None:
        if state != self.state:
            self.state, self.since = state, time.time()

    def settled(self, event: PendingEvent, ack: Ack) -> None:
        if ack.outcome is Outcome.UNKNOWN:
            self.failures["unacknowledged"] += 1
            return
        delivered = ack.outcome is Outcome.ACKED
        if delivered:
            self.published += 1
            self.published_by_entity[event.entity] += 1
            self.last_publish = time.time()
        else:
            self.nacked += 1
            self.failures["refused"] += 1
        self.tail.append(
            TailEntry(
                event.sequence,
                event.event_id,
                event.entity,
                event.op,
                event.subject,
                "delivered" if delivered else "refused",
                None if delivered else ack.reason,
                time.time(),
            )
        )
        self.tail_total += 1

    def new_tail(self, seen: int) -> list[TailEntry]:
        """Entries added since a reader saw ``seen`` of them (older ones may have rolled off)."""
        fresh = min(self.tail_total - seen, len(self.tail))
        return list(self.tail)[len(self.tail) - fresh :] if fresh > 0 else []


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    topic_base: str
    source: str
    max_inflight: int
    ack_timeout: float
    shutdown_timeout: float
    backoff_base: float = 0.5
    backoff_cap: float = 60.0


@dataclass(frozen=True, slots=True)
class _Slots:
    acks: asyncio.Semaphore
    """Unacknowledged publishes: min(max_inflight, the broker's Receive Maximum)."""
    settle: asyncio.Semaphore
    """Events sent whose outcome is not committed yet: max_inflight."""


def watermark_payload(sequence: int) -> bytes:
    """The retained ``sequence`` message: the highest sequence this agent has sent."""
    return orjson.dumps({"sequence": sequence_text(sequence), "time": now_rfc3339()})


def parse_watermark(payload: bytes) -> int:
    """The sequence in a retained ``sequence`` message; ``ValueError`` if it holds none."""
    try:
        text = orjson.loads(payload)["sequence"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        raise ValueError(f"not a watermark: {payload[:80]!r}") from None
    if not isinstance(text, str) or not text.isdigit() or int(text) > _MAX_WATERMARK:
        raise ValueError(f"not a sequence: {text!r}")
    return int(text)


def status_payload(state: str, started_at: str, extra: dict[str, Any] | None = None) -> bytes:
    """The retained ``status`` message; the fleet view reads ``extra`` (backlog, errors)."""
    return orjson.dumps(
        {
            "state": state,
            "version": __version__,
            "started_at": started_at,
            "time": now_rfc3339(),
            **(extra or {}),
        }
    )


Describe = Callable[[], Awaitable[dict[str, Any]]]


async def _nothing_to_add() -> dict[str, Any]:
    return {}


class Delivery:
    def __init__(
        self,
        outbox: Outbox,
        make_link: Callable[[], RelayLink],
        settings: DeliverySettings,
        stop: asyncio.Event,
        started_at: str,
        describe: Describe = _nothing_to_add,
        inbox: Inbox | None = None,
    ) -> None:
        self.outbox = outbox
        self.make_link = make_link
        self.settings = settings
        self.stop = stop
        self.started_at = started_at
        self.describe = describe
        """Fields of the compact retained status beyond state, version and times."""
        self.announce_now = asyncio.Event()
        """Set it when the agent's state changed: the retained status is refreshed at once."""
        self.stats = RelayStats()
        self._results: list[tuple[PublishResult, asyncio.Semaphore]] = []
        """Outcomes waiting to be committed, each with the settle slot it frees then."""
        self._results_ready = asyncio.Event()
        self._sent_high = 0
        """The highest sequence handed to a link: what subscribers may have seen (a lost
        PUBACK does not mean a lost event), so what the watermark must cover."""
        self._relay_high = 0
        """The highest watermark read from the relay."""
        self._marked = 0
        """The watermark last sent on the current connection (what the relay holds, or will)."""
        self._sent_more = asyncio.Event()
        self.receiver = (
            Receiver(inbox, outbox.write_health, self._count_received) if inbox else None
        )
        """The inbound direction on each connection; ``None`` without an inbox."""

    def _count_received(self, messages: int) -> None:
        self.stats.received += messages

    async def run(self) -> None:
        """Connect, pump, reconnect with jittered exponential backoff, until stopped."""
        failures = 0
        while not self.stop.is_set():
            try:
                async with self.make_link() as link:
                    failures = 0
                    await self._connected(link)
                    if self.stop.is_set():
                        await self._say_offline(link)
            except RelayError as error:
                failures += 1
                self.stats.last_error = str(error)
                delay = min(
                    self.settings.backoff_cap, self.settings.backoff_base * 2 ** min(failures, 16)
                )
                delay *= random.uniform(0.5, 1.0)
                log.warning(
                    "relay unreachable (attempt %d): %s; retrying in %.1fs", failures, error, delay
                )
            else:
                delay = self.settings.backoff_base * random.uniform(0.5, 1.0)
            self.stats.become("disconnected" if not self.stop.is_set() else "stopped")
            if not self.stop.is_set():
                self.stats.reconnects += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)

    async def _connected(self, link: RelayLink) -> None:
        inbound = (
            asyncio.create_task(self.receiver.run(link), name="delivery-inbound")
            if self.receiver is not None
            else None
        )
        if inbound is not None:
            inbound.add_done_callback(partial(_end_with_inbound, link))
        try:
            await self._publishing(link)
        finally:
            if inbound is not None:
                inbound.cancel()  # what it has not acknowledged, the broker redelivers
                with contextlib.suppress(asyncio.CancelledError):
                    await inbound

    async def _publishing(self, link: RelayLink) -> None:
        if not await self._check_sequence(link):
            return  # stopping while the outbox could not be written
        window = max(1, min(self.settings.max_inflight, link.receive_maximum))
        log.info("relay connected (window %d, max packet %d bytes)", window, link.max_packet_size)
        self.stats.become("connected")
        slots = _Slots(asyncio.Semaphore(window), asyncio.Semaphore(self.settings.max_inflight))
        finished = asyncio.Event()
        recorder = asyncio.create_task(self._record_results(finished), name="delivery-recorder")
        watchdog = asyncio.create_task(self._watch_acks(link), name="delivery-ack-watchdog")
        announcer = asyncio.create_task(self._announce(link, slots), name="delivery-status")
        marker = asyncio.create_task(self._mark_sequence(link, slots), name="delivery-sequence")
        try:
            await self._pump(link, slots)
            announcer.cancel()
            marker.cancel()
            await self._drain(link)
        finally:
            watchdog.cancel()
            announcer.cancel()
            marker.cancel()
            # Let the recorder finish its batch rather than cancel it mid-transaction.
            finished.set()
            self._results_ready.set()
            await recorder

    # --- the sequence watermark -----------------------------------------------------------

    async def _check_sequence(self, link: RelayLink) -> bool:
        """Read the relay's watermark and move the outbox above it, before this link
        publishes anything; False if the agent stopped while the outbox could not be written.
        A lost connection raises (:class:`~agent.publisher.LinkLost`), to be tried again."""
        check = self.stats.sequence
        try:
            payload = await link.read_retained(self._sequence_topic(), self.settings.ack_timeout)
            watermark = None if payload is None else parse_watermark(payload)
        except (RetainedUnknown, ValueError) as error:
            self._unread(check, f"{self._sequence_topic()}: {error}")
            return True
        check.state, check.checked_at, check.unread_reason = "ok", time.time(), None
        check.relay_watermark = watermark
        self._relay_high = max(self._relay_high, watermark or 0)
        self._marked = watermark or 0
        if watermark is None:
            return True
        try:
            move = await self.outbox.move_sequence_above(watermark)
        except OutboxUnwritable:
            return False
        if move is not None:
            self._moved(check, move)
        return True

    def _unread(self, check: SequenceCheck, reason: str) -> None:
        if check.unread_reason != reason:  # once, not on every reconnect
            log.warning(
                "cannot read this agent's sequence watermark from the relay (%s): "
                "publishing anyway, unchecked; if the outbox went back in time (a "
                "restored backup, a new outbox.db) subscribers drop its events as "
                "stale. Let the agent read and write that topic (see the ACL)",
                reason,
            )
        check.state, check.checked_at, check.unread_reason = "unread", time.time(), reason

    def _moved(self, check: SequenceCheck, move: SequenceMove) -> None:
        check.moved, check.moved_at = move, time.time()
        renumbered = (
            f"; its {move.renumbered} pending events now start at {move.floor + 1}, "
            f"in their order, with new ids"
            if move.renumbered
            else ""
        )
        log.warning(
            "the relay has seen sequence %d from this agent but the outbox was at %d "
            "(a restored backup, or a new outbox.db): sequences now go on above %d, "
            "so subscribers do not drop new events as stale%s",
            move.floor,
            move.last_before,
            move.floor,
            renumbered,
        )

    def _watermark(self) -> int:
        return max(self._sent_high, self._relay_high)

    async def _mark_sequence(self, link: RelayLink, slots: _Slots) -> None:
        """The retained watermark, when it has grown, at most every ``MARK_EVERY`` seconds;
        never while the relay could not be read (it would write over a higher one)."""
        while not link.closed.done() and self.stats.sequence.state == "ok":
            self._sent_more.clear()
            value = self._watermark()
            if value > self._marked:
                if not await self._take_slot(slots.acks, link):
                    return
                self._send_watermark(link, value).add_done_callback(lambda _: slots.acks.release())
                await _first_of(link.closed, within=MARK_EVERY)
            else:
                await _first_of(link.closed, self._sent_more.wait())

    def _send_watermark(self, link: RelayLink, value: int) -> asyncio.Future[Ack]:
        self._marked = value
        sent = link.send(self._sequence_topic(), watermark_payload(value), None, retain=True)
        check = self.stats.sequence

        def done(f: asyncio.Future[Ack]) -> None:
            ack = f.result() if not f.cancelled() else Ack(Outcome.UNKNOWN, "cancelled")
            if ack.outcome is Outcome.ACKED:
                check.published, check.watermark_error = max(check.published, value), None
            elif ack.outcome is Outcome.NACKED:
                if check.watermark_error is None:
                    log.warning(
                        "the relay refuses this agent's sequence watermark on %s: %s; "
                        "let the agent write that topic (see the ACL)",
                        self._sequence_topic(),
                        ack.reason,
                    )
                check.watermark_error = ack.reason

        sent.add_done_callback(done)
        return sent

    def _sequence_topic(self) -> str:
        return f"{self.settings.topic_base}/{SEQUENCE_TOPIC}"

    # --- the retained status ----------------------------------------------------------------

    async def _announce(self, link: RelayLink, slots: _Slots) -> None:
        """The retained ``online`` status with the compact summary, on connect, whenever
        ``announce_now`` is set, and every ``ANNOUNCE_EVERY`` seconds."""
        while not link.closed.done():
            self.announce_now.clear()
            payload = status_payload("online", self.started_at, await self.describe())
            if not await self._take_slot(slots.acks, link):  # counts against Receive Maximum
                return
            sent = link.send(self._status_topic(), payload, None, retain=True)
            sent.add_done_callback(lambda _: slots.acks.release())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.announce_now.wait(), ANNOUNCE_EVERY)

    async def _pump(self, link: RelayLink, slots: _Slots) -> None:
        after = 0
        while not self.stop.is_set() and not link.closed.done():
            self.outbox.new_events.clear()
            events = await self.outbox.fetch_pending(after, FETCH_BATCH)
            if not events:
                await self._idle(link)
                continue
            for event in events:
                if not await self._take_slot(slots.settle, link):
                    return
                if not await self._take_slot(slots.acks, link):
                    slots.settle.release()
                    return
                self._publish(link, event, slots)
                after = event.sequence
                if after > self._sent_high:
                    self._sent_high = after
                    self._sent_more.set()

    async def _take_slot(self, slots: asyncio.Semaphore, link: RelayLink) -> bool:
        if not slots.locked():
            await slots.acquire()
            return True
        acquire: asyncio.Future[Any] = asyncio.ensure_future(slots.acquire())
        await asyncio.wait([acquire, link.closed], return_when=asyncio.FIRST_COMPLETED)
        if acquire.done() and not link.closed.done():
            return True
        if acquire.done():
            slots.release()
        else:
            acquire.cancel()
        return False

    def _publish(self, link: RelayLink, event: PendingEvent, slots: _Slots) -> None:
        sequence = sequence_text(event.sequence)
        props = message_properties(
            [
                ("id", event.event_id),
                ("type", f"distillsync.{event.entity}.{event.op}"),
                ("source", self.settings.source),
                ("sequence", sequence),
            ],
            CONTENT_TYPE,
        )
        payload = envelope(event, self.settings.source)
        future = link.send(event_topic(self.settings.topic_base, event), payload, props)
        self.stats.in_flight += 1

        def done(f: asyncio.Future[Ack]) -> None:
            slots.acks.release()
            self.stats.in_flight -= 1
            ack = f.result() if not f.cancelled() else Ack(Outcome.UNKNOWN, "cancelled")
            self.stats.settled(event, ack)
            self._note(PublishResult(event.sequence, ack.outcome, ack.reason), slots.settle)

        future.add_done_callback(done)

    def _note(self, result: PublishResult, settle: asyncio.Semaphore) -> None:
        """Queue an outcome for the recorder, which frees its slot once it is committed."""
        if result.outcome is Outcome.NACKED:
            log.error("event %d refused: %s", result.sequence, result.reason)
        elif result.outcome is Outcome.UNKNOWN:
            settle.release()  # stays pending, re-sent after the reconnect
            return
        self._results.append((result, settle))
        self._results_ready.set()

    async def _idle(self, link: RelayLink) -> None:
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self.outbox.new_events.wait()),
            asyncio.ensure_future(self.stop.wait()),
        ]
        await asyncio.wait(
            [*waiters, link.closed], timeout=IDLE_WAKEUP, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in waiters:
            waiter.cancel()

    async def _drain(self, link: RelayLink) -> None:
        """On stop: give in-flight publishes until the deadline to be acknowledged."""
        await link.settle(self.settings.shutdown_timeout)

    async def _watch_acks(self, link: RelayLink) -> None:
        while not link.closed.done():
            await asyncio.sleep(min(1.0, self.settings.ack_timeout / 4))
            if link.oldest_unacked_age() > self.settings.ack_timeout:
                link.abort(f"no PUBACK for {self.settings.ack_timeout:.0f}s")

    async def _record_results(self, finished: asyncio.Event) -> None:
        while True:
            await self._results_ready.wait()
            self._results_ready.clear()
            await self._flush_results()
            if finished.is_set():
                return

    async def _flush_results(self) -> None:
        batch, self._results = self._results, []
        if batch:
            await self.outbox.record_results([result for result, _ in batch])
            for _, slot in batch:
                slot.release()

    def _status_topic(self) -> str:
        return f"{self.settings.topic_base}/status"

    async def _say_offline(self, link: RelayLink) -> None:
        """On a clean stop: the last watermark, then the retained ``offline`` status."""
        if self.stats.sequence.state == "ok" and self._watermark() > self._marked:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(self._send_watermark(link, self._watermark())), 2.0
                )
        future = link.send(
            self._status_topic(), status_payload("offline", self.started_at), None, retain=True
        )
        with contextlib.suppress(TimeoutError):
            ack = await asyncio.wait_for(asyncio.shield(future), 2.0)
            if ack.outcome is Outcome.ACKED:
                link.leave_will = False  # said it ourselves; the Will would only repeat it


def _end_with_inbound(link: RelayLink, task: asyncio.Task[None]) -> None:
    """An inbound task that failed ends the connection, so its error is raised at once
    (from :meth:`Delivery._connected`) rather than when the link next drops."""
    if not task.cancelled() and task.exception() is not None:
        link.abort(f"inbound failed: {task.exception()!r}")


async def _first_of(*waits: Awaitable[Any], within: float | None = None) -> None:
    """Until the first of ``waits`` is done (or ``within`` seconds); the others are cancelled,
    except futures shared with others (a link's ``closed``), which are only let go."""
    tasks = [w if isinstance(w, asyncio.Future) else asyncio.ensure_future(w) for w in waits]
    await asyncio.wait(tasks, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    for task, wait in zip(tasks, waits, strict=True):
        if task is not wait:
            task.cancel()
