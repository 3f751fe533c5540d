"""Magento 2 / Adobe Commerce's order API (REST ``V1/orders``) as the intake reads it:
catch-up polls and re-reads. Magento has no order webhooks: polls alone.

Followed: the Adobe Commerce REST reference (``salesOrderRepositoryV1``: ``GET V1/orders``
with ``searchCriteria``, ``GET V1/orders/{id}``) and its "Search using REST endpoints" page:

- **Polls**: ``GET V1/orders?searchCriteria[filter_groups][0][filters][0][field]=updated_at
  &...[value]=YYYY-MM-DD HH:MM:SS&...[condition_type]=gteq``, sorted by ``updated_at`` then
  ``entity_id`` ascending, ``pageSize`` / ``currentPage``. ``updated_at`` is naive UTC and
  ``gteq`` inclusive, so ``since`` is sent as its whole second. Magento answers a page past
  the end with the last page again, so the client stops once it has read ``total_count``
  items (or a page comes back empty), never on an empty page alone. Each item is mapped
  with :func:`relay.intake.magento.map_order`; its version is ``updated_at``.
- **Re-read**: ``GET V1/orders/{id}``; a 404 (no such entity: deleted) is
  :class:`~relay.intake.outcome.Gone`.
- **Auth and retries** as the ``magento`` sink's (:mod:`relay.sinks.magento`): the
  integration's access token as a bearer token, Magento's error bodies rendered with
  :func:`relay.sinks.magento.render`, 429 and 5xx retried with backoff honouring
  ``Retry-After`` (:func:`relay.sinks.http.with_retries`). A refused token (401) is
  :class:`~relay.intake.clients.ShopRefused`; an answer that is not what the API documents
  is :class:`~relay.intake.clients.ShopUnreadable`, naming the shop and the resource.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import Field

from relay.errors import RelayKitError
from relay.intake.clients import ShopRefused, ShopUnreadable
from relay.intake.magento import map_order, read_time
from relay.intake.order import Unreadable, kind_of
from relay.intake.outcome import Gone, Mapped, Unmappable
from relay.intake.source import HookState, Polled
from relay.settings import CredentialName, FilePath
from relay.sinks.base import RateBudget
from relay.sinks.http import HttpSettings, LazySession, Reply, ShopUrl, send, with_retries
from relay.sinks.magento import render

__all__ = ["PAGE_SIZE", "Client", "Settings", "search_criteria"]

PAGE_SIZE = 50
"""Orders per page: whole entities with their items and addresses, tens of kB each."""
_TIME = "%Y-%m-%d %H:%M:%S"


class Settings(HttpSettings):
    """A Magento shop the intake reads (``name``, ``timeout``, ``max_retries``, ``backoff``,
    ``ca_file`` as every HTTP client; ``url`` and the token as the ``magento`` sink's)."""

    type: Literal["magento"]
    url: ShopUrl
    """The shop's base URL (``https://shop.example.com``); REST lives under ``/rest``."""
    token_file: FilePath | None = None
    """File holding the integration's access token (Magento_Sales::actions_view); or
    ``token_env`` / ``token_credential``."""
    token_env: str | None = None
    token_credential: CredentialName | None = None
    secrets = ("token",)
    store_code: str = Field("all", pattern=r"^[a-z0-9_]+$")
    """The store code in REST paths; ``all`` reads the orders of every store view."""
    page_size: int = Field(PAGE_SIZE, ge=1, le=300)
    prices_include_tax: bool = False
    """Whether the shop's catalogue prices include tax (Stores > Configuration > Sales >
    Tax): the order does not say, the canonical order records it."""
    requests_per_second: float = Field(10.0, gt=0)


def search_criteria(since: datetime, page: int, size: int) -> dict[str, str]:
    """The query of one page of orders updated at or after ``since`` (its whole second,
    naive UTC), oldest first, ties by id."""
    stamp = since.astimezone(UTC).replace(microsecond=0, tzinfo=None).strftime(_TIME)
    group = "searchCriteria[filter_groups][0][filters][0]"
    return {
        f"{group}[field]": "updated_at",
        f"{group}[value]": stamp,
        f"{group}[condition_type]": "gteq",
        "searchCriteria[sortOrders][0][field]": "updated_at",
        "searchCriteria[sortOrders][0][direction]": "ASC",
        "searchCriteria[sortOrders][1][field]": "entity_id",
        "searchCriteria[sortOrders][1][direction]": "ASC",
        "searchCriteria[pageSize]": str(size),
        "searchCriteria[currentPage]": str(page),
    }


class Client:
    """One Magento shop's orders (a :class:`~relay.intake.source.ShopClient`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.name
        token = settings.secret("token", "the access token")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._api = f"{settings.url}/rest/{settings.store_code}/V1/"
        self._budget = RateBudget(settings.requests_per_second)
        self._session = LazySession(tls=settings.tls())
        self._who = f"magento {self.name}"

    async def close(self) -> None:
        await self._session.close()

    # --- orders ----------------------------------------------------------------------

    async def changed_since(self, since: datetime) -> AsyncIterator[Polled]:
        """Every order updated at or after ``since``, oldest first, every page."""
        page, read = 1, 0
        while True:
            params = search_criteria(since, page, self.settings.page_size)
            items, total = await self._page(params, page)
            for item in items:
                yield Polled(self._version(item), self._map(item))
            read += len(items)
            if not items or read >= total:
                return
            page += 1

    async def read_order(self, order_ref: str) -> Mapped:
        what = f"order {order_ref}"
        if not order_ref.isdigit():  # never put into the path as it is
            return Unmappable(f"not a Magento order: {order_ref!r} is not an entity_id", order_ref)
        reply = await self._call(f"orders/{order_ref}", None)
        body = self._json(reply, what)
        if reply.status == 404:
            return Gone("magento_no_such_entity", render(body))
        if not reply.ok:
            raise self._failed(reply, what)
        return self._map(body)

    async def hooks(self, url: str) -> list[HookState]:
        return []  # Magento has no order webhooks

    async def register_hooks(self, url: str, secret: str) -> Sequence[HookState]:
        return []

    def _map(self, entity: object) -> Mapped:
        return map_order(self.name, entity, prices_include_tax=self.settings.prices_include_tax)

    def _version(self, item: object) -> datetime:
        stamp = item.get("updated_at") if isinstance(item, dict) else None
        try:
            return read_time(stamp, "updated_at")
        except Unreadable:
            order = item.get("entity_id") if isinstance(item, dict) else None
            raise ShopUnreadable(
                f"{self._who}: an order in the order list (entity_id {order!r}) has no "
                f"readable updated_at: {stamp!r}"
            ) from None

    # --- HTTP ------------------------------------------------------------------------

    async def _page(self, params: dict[str, str], page: int) -> tuple[list[Any], int]:
        what = f"the order list (page {page})"
        reply = await self._call("orders", params)
        body = self._json(reply, what)
        if not reply.ok:
            raise self._failed(reply, what)
        items = body.get("items") if isinstance(body, dict) else None
        total = body.get("total_count") if isinstance(body, dict) else None
        if not isinstance(items, list) or not isinstance(total, int) or isinstance(total, bool):
            raise ShopUnreadable(
                f"{self._who}: {what} is {kind_of(body)} without a list of items and a "
                f"total_count: {reply.excerpt()}"
            )
        return items, total

    def _json(self, reply: Reply, what: str) -> Any:
        try:
            return orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            raise ShopUnreadable(
                f"{self._who}: {what} is not JSON (HTTP {reply.status}): {reply.excerpt()}"
            ) from None

    def _failed(self, reply: Reply, what: str) -> ShopUnreadable:
        return ShopUnreadable(
            f"{self._who}: {what} failed (HTTP {reply.status}: {_message(reply)})"
        )

    async def _call(self, path: str, params: dict[str, str] | None) -> Reply:
        """One GET with retries; a refused token is :class:`ShopRefused`."""
        url = self._api + path
        try:
            reply = await with_retries(
                lambda: send(
                    self._session(),
                    self._budget,
                    "GET",
                    url,
                    time_limit=self.settings.timeout,
                    headers=self._headers,
                    params=params,
                ),
                sink=self._who,
                settings=self.settings,
            )
        except RelayKitError as error:  # retries spent, or a certificate refused
            raise ShopUnreadable(str(error), error.retry_after) from None
        if reply.status in (401, 403):
            raise ShopRefused(
                f"{self._who}: the access token was refused reading {path.split('/')[0]} "
                f"(HTTP {reply.status}: {_message(reply)}); check token_file / token_env and "
                "the integration's access to Magento_Sales::actions_view"
            )
        return reply


def _message(reply: Reply) -> str:
    """Magento's error message with its parameters put in, or the body's start."""
    try:
        return render(orjson.loads(reply.body))
    except orjson.JSONDecodeError:
        return reply.excerpt()
