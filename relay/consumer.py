"""``distillsync consume``: the relay-side runner. One MQTT session in, sinks out.

For each message: parse and validate it (an invalid one becomes a dead letter), queue it
by priority, and in batches: claim the batch in the version store (which drops ids seen
before and sequences not newer than the last applied for the key, and locks the keys),
apply what is fresh to every sink that takes its entity, record the outcome, commit,
and only then acknowledge, in arrival order. A crash anywhere before the commit leaves
the messages unacknowledged: the broker redelivers them and the store makes the repeat
a no-op. A shop that is down (a sink's retryable error, :class:`~relay.errors.SinkUnavailable`)
holds its batch (with backoff) without blocking other keys; any other error stops the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from relay.config import ConsumerConfig
from relay.envelope import parse
from relay.errors import InvalidEvent, RelayKitError
from relay.model import Event, SinkResult, Status
from relay.pipeline import AckWindow, Queued, Scheduler, Ticket
from relay.sinks.base import Sink
from relay.status import ConsumerStats, SinkStats
from relay.store import VersionStore
from relay.subscriber import Incoming, Session, SessionSettings

log = logging.getLogger("distillsync.relay.consumer")

ANNOUNCE_EVERY = 15.0
PRUNE_EVERY = 3600.0


def subscriptions(config: ConsumerConfig) -> list[str]:
    """``{prefix}/{tenant}/+/out/{entity}/#`` per tenant and entity, shared if configured."""
    sub, prefix = config.subscribe, config.relay.topic_prefix
    share = f"$share/{sub.shared_group}/" if sub.shared_group else ""
    return [
        f"{share}{prefix}/{tenant}/+/out/{entity}/#"
        for tenant in sub.tenants
        for entity in sub.entities
    ]


def status_topic(config: ConsumerConfig) -> str:
    # "_relay" cannot be a tenant (tenants are [a-z0-9-]+), so it never meets an agent.
    return f"{config.relay.topic_prefix}/_relay/{config.consumer.name}/status"


@dataclass(frozen=True, slots=True)
class Applied:
    """What one batch came to, counted only once its transaction committed."""

    fresh: int
    duplicates: int
    stale: int
    per_sink: list[tuple[Sink, list[tuple[Event, SinkResult]]]]


class Consumer:
    def __init__(
        self,
        config: ConsumerConfig,
        sinks: Sequence[Sink],
        store: VersionStore,
        session_settings: SessionSettings,
        stop: asyncio.Event,
    ) -> None:
        self.config, self.sinks, self.store = config, list(sinks), store
        self.session_settings, self.stop = session_settings, stop
        self.stats = ConsumerStats(config.consumer.name)
        self.stats.sinks = {sink.name: SinkStats() for sink in self.sinks}
        self.scheduler: Scheduler[Incoming] = Scheduler(
            config.pipeline.batch_size, config.pipeline.linger
        )
        self.window: AckWindow[Incoming] = AckWindow(lambda _: None)
        self.dead_letters = 0
        self._session: Session | None = None

    # --- receiving -----------------------------------------------------------------------

    async def receive(self) -> None:
        """Connect, take messages, reconnect with jittered backoff, until stopped."""
        failures = 0
        while not self.stop.is_set():
            try:
                async with Session(self.session_settings) as session:
                    failures = 0
                    await self._connected(session)
            except OSError as error:
                failures += 1
                self.stats.last_error = str(error)
                log.warning("%s; retrying", error)
            self.stats.relay("disconnected")
            self.scheduler.forget()  # the broker redelivers what was not acknowledged
            self.window.forget()
            if not self.stop.is_set():
                self.stats.reconnects += 1
                delay = min(self.config.relay.reconnect_max, 0.5 * 2 ** min(failures, 10))
                await _sleep_unless(self.stop, delay * random.uniform(0.5, 1.0))

    async def _connected(self, session: Session) -> None:
        self.stats.relay("connected")
        self._session, self.window = session, AckWindow(session.ack)
        log.info("relay connected; subscribed to %s", ", ".join(session.settings.topics))
        announcer = asyncio.create_task(self._announce(session), name="announce")
        try:
            stream = asyncio.ensure_future(self._take(session))
            stopped = asyncio.ensure_future(self.stop.wait())
            await asyncio.wait([stream, stopped], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if stream.done():
                stream.result()  # re-raise the OSError of a lost connection
            stream.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await stream
            await session.publish(status_topic(self.config), self._retained("offline"))
        finally:
            announcer.cancel()
            self._session = None

    async def _take(self, session: Session) -> None:
        async for incoming in session.messages():
            self.stats.received += 1
            ticket = self.window.add(incoming)
            try:
                event = parse(incoming.topic, incoming.payload)
            except InvalidEvent as problem:
                await self._invalid(incoming, str(problem), ticket)
                continue
            self.scheduler.put(event, ticket)

    async def _invalid(self, incoming: Incoming, reason: str, ticket: Ticket[Incoming]) -> None:
        log.warning("dead letter from %s: %s", incoming.topic, reason)
        await self.store.add_dead_letter(incoming.payload, incoming.topic, reason)
        self.stats.outcomes["invalid"] += 1
        self.dead_letters += 1
        self.window.finish(ticket)

    # --- applying ------------------------------------------------------------------------

    async def work(self) -> None:
        while True:
            batch = await self.scheduler.next_batch()
            try:
                await self._apply_until_done([queued.event for queued in batch])
            finally:
                self.scheduler.release(batch)
            self._finish(batch)

    def _finish(self, batch: list[Queued[Incoming]]) -> None:
        for queued in batch:
            if queued.ticket.item.connection == self.window_connection:
                self.window.finish(queued.ticket)

    @property
    def waiting(self) -> int:
        """Received and not applied yet, including batches retried against a shop that
        is down: what an operator watching a stalled shop needs to see grow."""
        return self.scheduler.waiting

    @property
    def window_connection(self) -> int:
        return self._session.connection if self._session else -1

    async def _apply_until_done(self, events: list[Event]) -> None:
        attempt = 0
        while True:
            try:
                self._count(await self._apply(events))
                return
            except RelayKitError as error:
                if not error.retryable:
                    raise
                attempt += 1
                delay = min(self.config.pipeline.retry_max, 2 ** min(attempt, 10) * 0.5)
                delay = max(delay * random.uniform(0.5, 1.0), error.retry_after or 0.0)
                self.stats.last_error = str(error)
                log.warning("%s; %d events wait %.1fs", error, len(events), delay)
                await asyncio.sleep(delay)

    async def _apply(self, events: list[Event]) -> Applied:
        async with self.store.claim(events) as claim:
            per_sink = await asyncio.gather(
                *(self._to_sink(sink, claim.fresh) for sink in self.sinks)
            )
            for sink, outcomes in zip(self.sinks, per_sink, strict=True):
                for event, result in outcomes:
                    if result.status is Status.DEAD:
                        claim.dead(event, result.reason, sink.name)
            claim.record(claim.fresh)
            return Applied(
                len(claim.fresh),
                len(claim.duplicates),
                len(claim.stale),
                list(zip(self.sinks, per_sink, strict=True)),
            )

    async def _to_sink(self, sink: Sink, fresh: Sequence[Event]) -> list[tuple[Event, SinkResult]]:
        """What ``sink`` made of each fresh event it takes, in ``max_batch`` chunks."""
        mine = [event for event in fresh if event.entity in sink.entities]
        results: list[SinkResult] = []
        try:
            for start in range(0, len(mine), sink.max_batch):
                chunk = mine[start : start + sink.max_batch]
                began = time.monotonic()
                results += await sink.apply(chunk)
                self.stats.sinks[sink.name].latencies.append(time.monotonic() - began)
        except RelayKitError as error:
            if not error.retryable:
                raise
            stats = self.stats.sinks[sink.name]
            stats.unavailable += 1
            stats.last_error = str(error)
            raise
        return list(zip(mine, results, strict=True))

    def _count(self, applied: Applied) -> None:
        outcomes = self.stats.outcomes
        outcomes["duplicate"] += applied.duplicates
        outcomes["stale"] += applied.stale
        dead_events = 0
        for sink, settled in applied.per_sink:
            stats = self.stats.sinks[sink.name]
            for _, result in settled:
                if result.status is Status.APPLIED:
                    stats.applied += 1
                elif result.status is Status.SKIPPED:
                    stats.skipped += 1
                else:
                    stats.dead += 1
                    dead_events += 1
        self.dead_letters += dead_events
        outcomes["dead"] += dead_events
        outcomes["applied"] += applied.fresh
        if applied.fresh:
            self.stats.last_apply = time.time()

    # --- the retained status and housekeeping ---------------------------------------------

    def _retained(self, state: str) -> bytes:
        return self.stats.retained(state, self.dead_letters, self.waiting)

    async def _announce(self, session: Session) -> None:
        while True:
            await session.publish(status_topic(self.config), self._retained("online"))
            await asyncio.sleep(ANNOUNCE_EVERY)

    async def prune(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY)
            forgotten = await self.store.prune(self.config.store.id_retention)
            if forgotten:
                log.info("forgot %d recorded ids older than the retention", forgotten)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
