"""What the intake asks of a shop's API: its orders changed since a moment, one order read
again, and its webhook subscriptions. One class per shop type implements
:class:`ShopClient` (``relay/intake/clients/{type}.py``); the intake's poller, webhook
handler and ``intake hooks`` command use nothing else of them.

A client pages through everything itself, paces itself to the shop's rate limit (429 and
5xx are retried with backoff through :func:`relay.sinks.http.with_retries`), and raises a
:class:`~relay.errors.RelayKitError` (retryable or not) when the shop cannot be read: the
poller keeps its cursor and tries again at the next interval. It never logs a credential
or a customer's secret (PrestaShop's ``passwd`` and ``secure_key``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from relay.intake.outcome import Mapped

__all__ = ["WEBHOOK_TOPICS", "HookState", "HookStatus", "Polled", "ShopClient"]

HookStatus = Literal["active", "paused", "disabled", "missing"]

WEBHOOK_TOPICS: dict[str, tuple[str, ...]] = {
    "shopify": ("orders/create", "orders/updated", "orders/cancelled", "refunds/create"),
    "woocommerce": ("order.created", "order.updated", "order.deleted", "order.restored"),
    "prestashop": (),
    "magento": (),
}
"""The subscriptions ``intake hooks --register`` makes, per shop type (in the shop's own
topic spelling); PrestaShop and Magento have no order webhooks: polls alone."""


@dataclass(frozen=True, slots=True)
class HookState:
    """One webhook subscription as the shop reports it."""

    topic: str
    """In the shop's spelling (``order.updated``, ``orders/create``)."""
    url: str
    """Where the shop delivers it."""
    status: HookStatus
    """``disabled``: the shop stopped delivering (WooCommerce's 7th failure in a row);
    ``missing``: one of :data:`WEBHOOK_TOPICS` has no subscription to the intake's URL."""
    ref: str | None = None
    """The shop's id of the subscription (None when missing)."""
    failures: int | None = None
    """Failures in a row, when the shop says (WooCommerce's ``failure_count`` is not in its
    REST answer, so mostly None)."""


@dataclass(frozen=True, slots=True)
class Polled:
    """One order (or return) as a poll read it: ``version`` is the shop's update time, the
    poller's cursor, whatever the mapping made of the body."""

    version: datetime
    mapped: Mapped


class ShopClient(Protocol):
    """A shop's order API, as the intake uses it."""

    name: str
    """The intake's ``[[shops]] name``."""

    def changed_since(self, since: datetime) -> AsyncIterator[Polled]:
        """Every order (and return) whose update time is at or after ``since`` (aware UTC),
        oldest first, all pages. The client converts ``since`` to what the shop's filter
        needs (WooCommerce's exclusive naive GMT seconds: it asks from one second earlier;
        PrestaShop's inclusive shop-local ``YYYY-MM-DD HH:MM:SS``), so that the poller's
        overlap is the only window it has to think about."""
        ...

    async def read_order(self, order_ref: str) -> Mapped:
        """The order as the shop holds it now (a re-read: same version, other content)."""
        ...

    async def hooks(self, url: str) -> list[HookState]:
        """The shop's webhook subscriptions to ``url`` (the intake's public webhook URL for
        this shop), with one ``missing`` entry per topic of :data:`WEBHOOK_TOPICS` that has
        none; ``[]`` for a shop without webhooks."""
        ...

    async def register_hooks(self, url: str, secret: str) -> Sequence[HookState]:
        """Create the missing subscriptions to ``url`` (signed with ``secret`` where the shop
        takes one per hook, as WooCommerce does), idempotently: a topic that already has one
        to ``url`` is left alone. Returns the hooks afterwards, as :meth:`hooks` would."""
        ...

    async def close(self) -> None: ...
