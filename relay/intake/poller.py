"""Catch-up polls: every ``poll_interval``, each shop's orders changed since the cursor
minus ``overlap``, through the same :meth:`~relay.intake.intake.Intake.take` as webhooks.

This is how PrestaShop and Magento orders arrive at all, and how a lost WooCommerce or
Shopify webhook is repaired within one interval. The cursor is the newest shop update time
a poll has committed, kept in the intake store per shop, and moved only after the orders up
to it are committed, in batches as pages come (a crash re-reads at most one batch; a
backlog is never held in memory). The overlap re-reads what offset paging may have
skipped (an order modified while the pages were read moves behind the reader) and what a
shop's clock or whole-second stamps hide; re-reading is free, since the same state has the
same id and stores as a duplicate.

The poll also checks the shop's webhook subscriptions (:meth:`~relay.intake.source.
ShopClient.hooks`): WooCommerce disables a hook on its 7th failure in a row and says so
nowhere but ``GET wc/v3/webhooks``, so a disabled or missing hook shows in status, the
fleet view and ``distillsync_intake_hooks``, and is logged when it changes.

A shop that cannot be read (429 and 5xx past the client's retries, garbage, a refused key)
fails that poll only: the cursor stays, the error shows in status, the next interval tries
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import aiohttp

from relay.errors import RelayKitError
from relay.intake.intake import Intake, Received, Route
from relay.intake.order import time_text

log = logging.getLogger("distillsync.relay.intake.poller")

BATCH = 100
"""Orders committed (and the cursor moved) at a time."""

_FAILURES = (RelayKitError, OSError, aiohttp.ClientError, asyncio.TimeoutError)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Poller:
    def __init__(
        self,
        intake: Intake,
        route: Route,
        *,
        interval: float,
        overlap: float,
        backfill: float,
        webhook_url: str | None,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.intake = intake
        self.route = route
        self.interval = interval
        self.overlap = timedelta(seconds=overlap)
        self.backfill = timedelta(seconds=backfill)
        self.webhook_url = webhook_url
        self.now = now
        self._hooks_said: tuple[str, ...] = ()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll()
            if self.webhook_url is not None:
                await self.check_hooks()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def poll(self) -> int | None:
        """One catch-up pass; the orders read, or None when the shop could not be read."""
        shop = self.route.shop
        stats = self.intake.stats.poll(shop)
        stats.polls += 1
        try:
            read = await self._pass()
        except _FAILURES as error:
            stats.failures += 1
            text = f"{type(error).__name__}: {error}" if not str(error) else str(error)
            if text != stats.last_error:
                log.warning(
                    "%s: poll failed (%s); the cursor stays, next try in %ds",
                    shop,
                    text,
                    self.interval,
                )
            stats.last_error = text
            return None
        if stats.last_error is not None:
            log.info("%s: polls work again", shop)
        stats.last_error, stats.last_poll, stats.read_last = None, time.time(), read
        return read

    async def _pass(self) -> int:
        store, shop = self.intake.store, self.route.shop
        cursor = await store.cursor(shop) or self.now() - self.backfill
        newest, batch, read = cursor, list[Received](), 0
        async for polled in self.route.client.changed_since(cursor - self.overlap):
            batch.append(Received(polled.mapped, b""))
            newest, read = max(newest, polled.version), read + 1
            if len(batch) >= BATCH:
                await self._commit(batch, newest)
                batch = []
        await self._commit(batch, newest)
        return read

    async def _commit(self, batch: list[Received], cursor: datetime) -> None:
        if batch:
            await self.intake.take(self.route, batch, "poll")
        await self.intake.store.set_cursor(self.route.shop, cursor)
        self.intake.stats.poll(self.route.shop).cursor = time_text(cursor)

    async def check_hooks(self) -> None:
        assert self.webhook_url is not None
        shop = self.route.shop
        health = self.intake.stats.health(shop)
        try:
            hooks = await self.route.client.hooks(self.webhook_url)
        except _FAILURES as error:
            health.error = str(error) or type(error).__name__
            return
        health.hooks, health.error, health.checked = hooks, None, time.time()
        broken = tuple(
            sorted(f"{h.topic} {h.status}" for h in hooks if h.status in ("disabled", "missing"))
        )
        if broken and broken != self._hooks_said:
            log.warning(
                "%s: webhooks not delivering: %s; run `distillsync intake hooks --register` "
                "or re-enable them in the shop",
                shop,
                ", ".join(broken),
            )
        elif not broken and self._hooks_said:
            log.info("%s: every webhook is active again", shop)
        self._hooks_said = broken
