"""Inbound: what the relay sends on ``{base}/in/#`` goes into the inbox, acknowledged only
once it is committed there.

On every connection :class:`Receiver` subscribes to the inbound topic (QoS 1; the session
keeps the subscription too, so what was published while the agent was away arrives as soon
as it is back), then loops: take every message that has arrived and not been recorded (at
most ``BATCH``), record them all in one inbox transaction (:meth:`agent.inbox.Inbox.receive_many`:
one commit, one fsync), and only then PUBACK each, in the order they came. Messages that
arrive during a commit wait for the next one, so a burst is recorded in a few transactions,
not one per message. A message that is not a valid event is recorded as a dead item (with
the reason) and acknowledged like any other: it must not come back forever, and it does not
hold back the next.

A crash before the commit leaves the messages unacknowledged, and the broker redelivers
them on the next connection; one after the commit but before the PUBACK redelivers them
too, and the inbox counts the copy as a duplicate. Acknowledgements never cross
connections: a message is acknowledged on the link that delivered it or not at all.

When the inbox cannot be written (a full disk, a locked or failing file), nothing is
acknowledged: the batch is tried again after the outbox's own backoff for as long as the
connection lasts, and the broker, which keeps what is not acknowledged, redelivers it on
the next one. That is said once per spell in the log, not per message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from agent.inbox import Inbox
from agent.outbox import OutboxUnwritable, WriteHealth
from agent.publisher import Incoming, LinkLost, RelayLink

log = logging.getLogger("distillsync.inbound")

BATCH = 500
"""Messages recorded in one inbox transaction at most."""
RETRY_FLOOR = 0.5  # seconds: the least wait before recording a refused batch again


class Receiver:
    """The inbound half of the relay link; :meth:`run` once per connection."""

    def __init__(
        self, inbox: Inbox, health: WriteHealth, count: Callable[[int], None] | None = None
    ) -> None:
        self.inbox = inbox
        self.health = health
        """The outbox's write health: when a refused batch may be tried again."""
        self.count = count or (lambda _n: None)
        """Told how many messages arrive, as they arrive (before they are recorded)."""
        self.failing_since: float | None = None
        """While the inbox cannot be written: since when (Unix time)."""
        self._refusal: str | None = None

    async def run(self, link: RelayLink) -> None:
        """Subscribe on ``link`` and record what arrives until it closes."""
        try:
            link.count_inbound(self.count)
            refusal = await link.subscribe_inbound()
        except LinkLost:
            return
        self._refused(refusal)
        while True:
            batch = await link.next_inbound(BATCH)
            if not batch:
                return  # closed: whatever was not acknowledged is redelivered
            if not await self._record(link, batch):
                return

    async def _record(self, link: RelayLink, batch: list[Incoming]) -> bool:
        """Commit ``batch``, then acknowledge it in order; False if the link closed before
        the inbox could take it (nothing acknowledged). While the inbox refuses, what
        arrives meanwhile joins the batch, so it is all committed at once when it can be."""
        while not link.closed.done():
            try:
                await self.inbox.receive_many([(m.payload, m.topic) for m in batch])
            except OutboxUnwritable as error:
                self._cannot_record(str(error), len(batch))
                await self._wait_to_retry(link)
                batch += link.take_inbound(BATCH - len(batch))
                continue
            for message in batch:
                link.ack(message)
            self._recorded()
            return True
        return False

    async def _wait_to_retry(self, link: RelayLink) -> None:
        delay = max(RETRY_FLOOR, self.health.retry_at - time.monotonic())
        await asyncio.wait([link.closed], timeout=delay)

    def _cannot_record(self, error: str, waiting: int) -> None:
        if self.failing_since is not None:
            return  # said once for the spell
        self.failing_since = time.time()
        log.warning(
            "cannot record inbound messages in the inbox (%s): %d and any that follow stay "
            "unacknowledged, so the broker keeps them and redelivers them after a reconnect; "
            "retrying by itself",
            error,
            waiting,
        )

    def _recorded(self) -> None:
        if self.failing_since is None:
            return
        log.info(
            "inbound messages recorded again after %.0fs; acknowledging them",
            time.time() - self.failing_since,
        )
        self.failing_since = None

    def _refused(self, refusal: str | None) -> None:
        if refusal is not None and refusal != self._refusal:  # once, not on every reconnect
            log.warning(
                "%s: no inbound events (orders, returns) reach this agent; let it read that "
                "topic (see the ACL)",
                refusal,
            )
        self._refusal = refusal
