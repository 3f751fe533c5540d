"""Publishing from the intake store: QoS 1, MQTT 5, the reliability of the agent's outbox.

The store is the source of truth; the publisher reports what the broker said and the store
records it:

* an event is ``pending`` until its PUBACK (``0x00``, or ``0x10`` "no matching
  subscribers", a success as far as the relay is concerned); then it is published
  (:meth:`~relay.intake.store.IntakeStore.mark_published`);
* a negative PUBACK (reason code ``>= 0x80``: an ACL denial, a quota) makes it a dead
  letter with the broker's reason (:meth:`~relay.intake.store.IntakeStore.mark_dead`),
  and the rest go on;
* a connection lost before the PUBACK leaves it pending: after every (re)connect the
  publisher starts again from the lowest pending sequence, in sequence order, with the
  same ``id`` and payload, so the agent dedupes what the broker had already taken.

The window slides: a publish goes out as soon as a slot frees, and at most
min(``max_inflight``, the broker's Receive Maximum) wait for their PUBACK. Every read of
the store starts from the lowest pending sequence (skipping those sent on this connection),
not after the highest seen: on PostgreSQL a lower sequence of another order may commit after
a higher one (:mod:`relay.intake.store`), and it is picked up by the next read.

It wakes when :meth:`IntakePublisher.wake` is called (the webhook handler and the poller
call it after a take that stored something), when a PUBACK frees a slot, and at the latest
every :data:`IDLE_WAKEUP` seconds (events another intake process stored on a shared
PostgreSQL). The connection is :class:`relay.subscriber.Session`, the relay side's one
owner of aiomqtt and paho; it is reopened with jittered exponential backoff until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal

from relay.errors import RelayUnavailable, StoreError
from relay.intake.store import IntakeStore, Outgoing
from relay.subscriber import PubAck, Session, SessionSettings

__all__ = ["CONTENT_TYPE", "IDLE_WAKEUP", "IntakePublisher", "PublisherStatus"]

log = logging.getLogger("distillsync.relay.intake.publisher")

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
"""The PUBLISH's Content Type, as the agent's events carry."""
IDLE_WAKEUP = 1.0
"""Seconds: the longest the publisher sleeps with nothing to do (see the module docstring)."""
SHUTDOWN_WAIT = 5.0
"""Seconds a stop waits for the PUBACKs of what was sent (what is left is re-sent later)."""


@dataclass(frozen=True, slots=True)
class PublisherStatus:
    state: Literal["connected", "disconnected"]
    published: int
    """Acknowledged since this process started."""
    dead: int
    """Refused by the broker since this process started."""
    inflight: int
    """Sent on the current connection, PUBACK not yet recorded."""
    last_error: str | None


class IntakePublisher:
    def __init__(
        self,
        store: IntakeStore,
        session_settings: SessionSettings,
        *,
        max_inflight: int = 100,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self.store = store
        self.session_settings = session_settings
        self.max_inflight = max_inflight
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.reconnects = 0
        self._state: Literal["connected", "disconnected"] = "disconnected"
        self._published = 0
        self._dead = 0
        self._last_error: str | None = None
        self._woken = asyncio.Event()
        self._sent: dict[int, asyncio.Future[PubAck | None]] = {}
        """This connection's publishes by sequence, until their outcome is recorded."""
        self._session: Session | None = None

    def wake(self) -> None:
        """New events are stored: publish them now rather than at the next idle wakeup."""
        self._woken.set()

    def status(self) -> PublisherStatus:
        return PublisherStatus(
            self._state, self._published, self._dead, len(self._sent), self._last_error
        )

    async def announce(self, topic: str, payload: bytes) -> None:
        """Publish a retained status on the current connection; nothing while there is none
        (the Will says offline, and the next connection announces again)."""
        if self._session is not None:
            await self._session.publish(topic, payload, retain=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, publish, reconnect with jittered exponential backoff, until ``stop``."""
        failures = 0
        while not stop.is_set():
            try:
                async with Session(self.session_settings) as session:
                    failures = 0
                    self._state, self._session = "connected", session
                    log.info("intake publisher connected to %s", self.session_settings.url)
                    await self._pump(session, stop)
            except (OSError, StoreError) as error:  # RelayUnavailable is an OSError
                failures += 1
                self._last_error = str(error)
                log.warning("intake publisher: %s; retrying", error)
            finally:
                self._state, self._session = "disconnected", None
                self._sent = {}
            if not stop.is_set():
                self.reconnects += 1
                delay = min(self.backoff_cap, self.backoff_base * 2 ** min(failures, 10))
                await _wait(stop.wait(), delay * random.uniform(0.5, 1.0))

    async def _pump(self, session: Session, stop: asyncio.Event) -> None:
        assert session.closed is not None
        while not stop.is_set():
            self._woken.clear()  # before reading: a take after the read wakes us again
            await self._send(session)
            helpers = [
                asyncio.ensure_future(self._woken.wait()),
                asyncio.ensure_future(stop.wait()),
            ]
            waits: list[asyncio.Future[Any]] = [session.closed, *helpers, *self._unanswered()]
            try:
                # Whatever comes first: a PUBACK (record it, refill the window), new events,
                # the stop, the lost connection, or the idle wakeup.
                await asyncio.wait(waits, timeout=IDLE_WAKEUP, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for helper in helpers:
                    helper.cancel()
            await self._record()
            if session.closed.done():
                raise RelayUnavailable(f"relay connection lost ({len(self._sent)} unanswered)")
        await self._drain()

    def _window(self, session: Session) -> int:
        return min(self.max_inflight, session.receive_maximum) - len(self._sent)

    async def _send(self, session: Session) -> None:
        """Fill the window from the lowest pending sequences not sent on this connection."""
        free = self._window(session)
        if free <= 0:
            return
        pending = await self.store.pending(0, len(self._sent) + free)
        for out in [o for o in pending if o.sequence not in self._sent][:free]:
            self._sent[out.sequence] = self._publish(session, out)

    @staticmethod
    def _publish(session: Session, out: Outgoing) -> asyncio.Future[PubAck | None]:
        return session.publish_acked(out.topic, out.payload, out.user_properties, CONTENT_TYPE)

    def _unanswered(self) -> list[asyncio.Future[PubAck | None]]:
        return [future for future in self._sent.values() if not future.done()]

    async def _record(self) -> None:
        """Write the outcome of every answered publish; forget those of unknown fate (the
        connection went first: they stay pending and go again on the next)."""
        answered = {seq: f.result() for seq, f in self._sent.items() if f.done()}
        if not answered:
            return
        acked = [seq for seq, ack in answered.items() if ack is not None and not ack.refused]
        await self.store.mark_published(acked)
        for sequence, ack in answered.items():
            if ack is not None and ack.refused:
                reason = f"broker refused: {ack.reason}"
                log.error("intake event %d is a dead letter: %s", sequence, reason)
                await self.store.mark_dead(sequence, reason)
                self._dead += 1
        self._published += len(acked)
        for sequence in answered:
            del self._sent[sequence]

    async def _drain(self) -> None:
        """Stopping: wait a little for the PUBACKs of what was sent, and record them."""
        if self._unanswered():
            await _wait(asyncio.wait(self._unanswered()), SHUTDOWN_WAIT)
        await self._record()


async def _wait(awaitable: Awaitable[Any], seconds: float) -> None:
    """Await ``awaitable`` for at most ``seconds``."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(awaitable, seconds)
