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
from agent.model import Outcome, PendingEvent, PublishResult
from agent.outbox import Outbox
from agent.publisher import Ack, RelayLink, message_properties

log = logging.getLogger("distillsync.delivery")

FETCH_BATCH = 1000
IDLE_WAKEUP = 1.0  # seconds; also bounds how late a stop or a dead link is noticed
ANNOUNCE_EVERY = 15.0  # seconds between retained status refreshes (the contract: <= 30 s)
TAIL_LENGTH = 1000


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
        self.tail.append(TailEntry(event.sequence, event.event_id, event.entity, event.op,
                                   event.subject, "delivered" if delivered else "refused",
                                   None if delivered else ack.reason, time.time()))
        self.tail_total += 1

    def new_tail(self, seen: int) -> list[TailEntry]:
        """Entries added since a reader saw ``seen`` of them (older ones may have rolled off)."""
        fresh = min(self.tail_total - seen, len(self.tail))
        return list(self.tail)[len(self.tail) - fresh:] if fresh > 0 else []


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


def status_payload(state: str, started_at: str, extra: dict[str, Any] | None = None) -> bytes:
    """The retained ``status`` message; the fleet view reads ``extra`` (backlog, errors)."""
    return orjson.dumps({"state": state, "version": __version__, "started_at": started_at,
                         "time": now_rfc3339(), **(extra or {})})


Describe = Callable[[], Awaitable[dict[str, Any]]]


async def _nothing_to_add() -> dict[str, Any]:
    return {}


class Delivery:
    def __init__(self, outbox: Outbox, make_link: Callable[[], RelayLink],
                 settings: DeliverySettings, stop: asyncio.Event, started_at: str,
                 describe: Describe = _nothing_to_add) -> None:
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
                delay = min(self.settings.backoff_cap,
                            self.settings.backoff_base * 2 ** min(failures, 16))
                delay *= random.uniform(0.5, 1.0)
                log.warning("relay unreachable (attempt %d): %s; retrying in %.1fs",
                            failures, error, delay)
            else:
                delay = self.settings.backoff_base * random.uniform(0.5, 1.0)
            self.stats.become("disconnected" if not self.stop.is_set() else "stopped")
            if not self.stop.is_set():
                self.stats.reconnects += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)

    async def _connected(self, link: RelayLink) -> None:
        window = max(1, min(self.settings.max_inflight, link.receive_maximum))
        log.info("relay connected (window %d, max packet %d bytes)", window,
                 link.max_packet_size)
        self.stats.become("connected")
        slots = _Slots(asyncio.Semaphore(window), asyncio.Semaphore(self.settings.max_inflight))
        finished = asyncio.Event()
        recorder = asyncio.create_task(self._record_results(finished), name="delivery-recorder")
        watchdog = asyncio.create_task(self._watch_acks(link), name="delivery-ack-watchdog")
        announcer = asyncio.create_task(self._announce(link, slots), name="delivery-status")
        try:
            await self._pump(link, slots)
            announcer.cancel()
            await self._drain(link)
        finally:
            watchdog.cancel()
            announcer.cancel()
            # Let the recorder finish its batch rather than cancel it mid-transaction.
            finished.set()
            self._results_ready.set()
            await recorder

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
            [("id", event.event_id), ("type", f"distillsync.{event.entity}.{event.op}"),
             ("source", self.settings.source), ("sequence", sequence)],
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
        await asyncio.wait([*waiters, link.closed], timeout=IDLE_WAKEUP,
                           return_when=asyncio.FIRST_COMPLETED)
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
        future = link.send(self._status_topic(), status_payload("offline", self.started_at),
                           None, retain=True)
        with contextlib.suppress(TimeoutError):
            ack = await asyncio.wait_for(asyncio.shield(future), 2.0)
            if ack.outcome is Outcome.ACKED:
                link.leave_will = False  # said it ourselves; the Will would only repeat it
