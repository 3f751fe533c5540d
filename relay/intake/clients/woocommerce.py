"""WooCommerce's order API (``wc/v3``) as the intake reads it: catch-up polls, re-reads and
webhook subscriptions.

Followed: the WooCommerce REST API docs ("Orders": list and retrieve, "Webhooks": list and
create, "Pagination") and what a real 9.9 did (DESIGN.md, "What the real shop and ERPs do"):

- **Polls**: ``GET orders?modified_after=...&dates_are_gmt=true&orderby=modified&order=asc
  &per_page=100&page=N``. ``modified_after`` is exclusive at whole seconds and must be
  naive (with ``dates_are_gmt=true`` a ``Z`` suffix matches nothing), so the client sends
  the second before ``since``, as ``YYYY-MM-DDTHH:MM:SS`` in UTC: an order modified exactly
  at ``since`` comes back. Pages are read until ``X-WP-TotalPages`` (a page past the end is
  ``200 []``). Offset pages can skip an order modified while they are read; the poller's
  overlap catches it at the next poll. Each order is mapped with
  :func:`relay.intake.woocommerce.map_order`; its version is ``date_modified_gmt``.
- **Re-read**: ``GET orders/{id}``; an order deleted for good answers 404
  ``woocommerce_rest_shop_order_invalid_id``, which maps to
  :class:`~relay.intake.outcome.Gone`.
- **Hooks**: ``GET webhooks`` (every page) filtered on ``delivery_url``; a hook WooCommerce
  disabled after its 7th failure in a row shows ``"status": "disabled"`` there and nowhere
  else. :meth:`Client.register_hooks` ``POST webhooks`` ``{topic, delivery_url, secret}``
  for each topic of :data:`~relay.intake.source.WEBHOOK_TOPICS` without one to that URL.
- **Auth and retries** are the ``woocommerce`` sink's (:mod:`relay.sinks.woocommerce`):
  keys over https (Basic, or query parameters with ``auth = "query"``), OAuth 1.0a
  one-legged over plain http, a new nonce for every attempt; 429 and 5xx retried with
  backoff honouring ``Retry-After`` (:func:`relay.sinks.http.with_retries`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import orjson
from pydantic import Field, field_validator, model_validator

from relay.errors import RelayKitError
from relay.intake.clients import ShopRefused, ShopUnreadable
from relay.intake.order import kind_of
from relay.intake.outcome import Mapped
from relay.intake.source import WEBHOOK_TOPICS, HookState, HookStatus, Polled
from relay.intake.woocommerce import map_order
from relay.settings import CredentialName, FilePath
from relay.sinks.base import RateBudget
from relay.sinks.http import HttpSettings, LazySession, Reply, check_url, send, with_retries
from relay.sinks.woocommerce import Credentials
from relay.sinks.woocommerce import _error as error_of
from relay.sinks.woocommerce import _meaning as meaning_of

__all__ = ["PER_PAGE", "Client", "Settings", "modified_after"]

PER_PAGE = 100
"""The largest page WooCommerce serves (more is a 400 ``rest_invalid_param``)."""
TOPICS = WEBHOOK_TOPICS["woocommerce"]
_STATUSES: dict[object, HookStatus] = {
    "active": "active",
    "paused": "paused",
    "disabled": "disabled",
}


class Settings(HttpSettings):
    """A WooCommerce shop the intake reads (``name``, ``timeout``, ``max_retries``,
    ``backoff``, ``ca_file`` as every HTTP client)."""

    type: Literal["woocommerce"]
    url: str
    """The store's base URL (``https://shop.example.com``); the API is under ``/wp-json``."""
    consumer_key_file: FilePath | None = None
    consumer_key_env: str | None = None
    consumer_key_credential: CredentialName | None = None
    consumer_secret_file: FilePath | None = None
    consumer_secret_env: str | None = None
    consumer_secret_credential: CredentialName | None = None
    secrets = ("consumer_key", "consumer_secret")
    auth: Literal["basic", "query"] = "basic"
    """How the key travels over https: an Authorization header, or query parameters for
    servers that drop that header. Over http requests are signed with OAuth 1.0a instead."""
    allow_insecure: bool = False
    """Allow plain http to a host that is not loopback (signed, but orders travel in clear)."""
    requests_per_second: float = Field(5.0, gt=0)
    """WooCommerce documents no limit; 5/s is gentle on a shared host."""

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        return check_url(url, allow_http=True).rstrip("/")  # _scheme weighs allow_insecure

    @model_validator(mode="after")
    def _scheme(self) -> Self:
        check_url(
            self.url,
            allow_http=self.allow_insecure,
            why="sends customers' orders in clear (requests are signed with OAuth 1.0a, so "
            "the secret does not travel; set allow_insecure = true to accept that)",
        )
        return self


def modified_after(since: datetime) -> str:
    """The ``modified_after`` that returns every order modified at or after ``since``: the
    whole second before it (the bound is exclusive), naive, in UTC."""
    whole = since.astimezone(UTC).replace(microsecond=0, tzinfo=None)
    return (whole - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")


class Client:
    """One WooCommerce shop's orders and webhooks (a :class:`~relay.intake.source.ShopClient`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.name
        key = settings.secret("consumer_key", "the consumer key")
        secret = settings.secret("consumer_secret", "the consumer secret")
        plain = urlsplit(settings.url).scheme == "http"  # WooCommerce's is_ssl() is false
        self._credentials = Credentials(key, secret, "oauth1" if plain else settings.auth)
        self._api = f"{settings.url}/wp-json/wc/v3/"
        self._budget = RateBudget(settings.requests_per_second)
        self._session = LazySession(tls=settings.tls())
        self._who = f"woocommerce {self.name}"

    async def close(self) -> None:
        await self._session.close()

    # --- orders ----------------------------------------------------------------------

    async def changed_since(self, since: datetime) -> AsyncIterator[Polled]:
        """Every order modified at or after ``since``, oldest first, every page."""
        params = {
            "modified_after": modified_after(since),
            "dates_are_gmt": "true",
            "orderby": "modified",
            "order": "asc",
            "per_page": str(PER_PAGE),
        }
        async for body in self._pages("orders", params, what="the order list"):
            yield Polled(self._version(body), map_order(self.name, body))

    async def read_order(self, order_ref: str) -> Mapped:
        reply = await self._call("GET", f"orders/{order_ref}")
        body = self._json(reply, f"order {order_ref}")
        if reply.status == 404 and isinstance(body, dict) and "code" in body:
            return map_order(self.name, body)  # deleted for good: Gone
        if not reply.ok:
            raise self._failed(reply, f"order {order_ref}")
        return map_order(self.name, body)

    def _version(self, body: object) -> datetime:
        stamp = body.get("date_modified_gmt") if isinstance(body, dict) else None
        try:
            moment = datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
        except ValueError:
            moment = None
        if moment is None:
            order = body.get("id") if isinstance(body, dict) else None
            raise ShopUnreadable(
                f"{self._who}: an order in the order list (id {order!r}) has no readable "
                f"date_modified_gmt: {stamp!r}"
            )
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

    # --- webhooks --------------------------------------------------------------------

    async def hooks(self, url: str) -> list[HookState]:
        found = [
            hook
            async for hook in self._hook_rows()
            if isinstance(hook, dict) and hook.get("delivery_url") == url
        ]
        states = [self._state(hook, url) for hook in found]
        states.sort(key=lambda s: TOPICS.index(s.topic) if s.topic in TOPICS else len(TOPICS))
        have = {state.topic for state in states}
        return states + [HookState(topic, url, "missing") for topic in TOPICS if topic not in have]

    async def register_hooks(self, url: str, secret: str) -> Sequence[HookState]:
        for state in await self.hooks(url):
            if state.status != "missing":
                continue
            body = {
                "name": f"DistillSync intake: {state.topic}",
                "topic": state.topic,
                "delivery_url": url,
                "secret": secret,
                "status": "active",
            }
            reply = await self._call("POST", "webhooks", json=body)
            if not reply.ok:
                raise self._failed(reply, f"creating the {state.topic} webhook")
        return await self.hooks(url)

    def _hook_rows(self) -> AsyncIterator[Any]:
        return self._pages("webhooks", {"per_page": str(PER_PAGE)}, what="the webhook list")

    def _state(self, hook: dict[str, Any], url: str) -> HookState:
        status, topic = hook.get("status"), hook.get("topic")
        if status not in _STATUSES or not isinstance(topic, str):
            raise ShopUnreadable(
                f"{self._who}: webhook {hook.get('id')!r} in the webhook list has topic "
                f"{topic!r} and status {status!r}, not a topic and active/paused/disabled"
            )
        return HookState(topic, url, _STATUSES[status], ref=str(hook.get("id")))

    # --- HTTP ------------------------------------------------------------------------

    async def _pages(self, path: str, params: dict[str, str], *, what: str) -> AsyncIterator[Any]:
        """The items of every page of a list, as ``X-WP-TotalPages`` says."""
        page = 1
        while True:
            reply = await self._call("GET", path, params={**params, "page": str(page)})
            items = self._json(reply, what) if reply.ok else None
            if not reply.ok:
                raise self._failed(reply, what)
            if not isinstance(items, list):
                raise ShopUnreadable(
                    f"{self._who}: {what} (page {page}) is {kind_of(items)}, not a list: "
                    f"{reply.excerpt()}"
                )
            for item in items:
                yield item
            if not items or page >= _count(reply.headers.get("X-WP-TotalPages")):
                return
            page += 1

    def _json(self, reply: Reply, what: str) -> object:
        try:
            return orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            raise ShopUnreadable(
                f"{self._who}: {what} is not JSON (HTTP {reply.status}): {reply.excerpt()}"
            ) from None

    def _failed(self, reply: Reply, what: str) -> ShopUnreadable:
        code, message = error_of(reply)
        return ShopUnreadable(f"{self._who}: {what} failed (HTTP {reply.status} {code}: {message})")

    async def _call(
        self, method: str, path: str, *, params: dict[str, str] | None = None, json: Any = None
    ) -> Reply:
        """One API request with retries; a refused key is :class:`ShopRefused`."""
        url, credentials = self._api + path, self._credentials
        try:
            reply = await with_retries(
                lambda: send(
                    self._session(),
                    self._budget,
                    method,
                    url,
                    time_limit=self.settings.timeout,
                    headers=credentials.headers(),
                    json=json,
                    params=credentials.params(method, url, params or {}),
                ),
                sink=self._who,
                settings=self.settings,
            )
        except RelayKitError as error:  # retries spent, or a certificate refused
            raise ShopUnreadable(str(error), error.retry_after) from None
        if reply.status in (401, 403):
            code, message = error_of(reply)
            raise ShopRefused(
                f"{self._who}: the shop refused the request (HTTP {reply.status} {code}: "
                f"{message}); {meaning_of(reply.status, code, message, credentials.how)}"
            )
        return reply


def _count(header: str | None) -> int:
    """A count header; 0 when absent or not a number (read no further)."""
    return int(header) if header is not None and header.strip().isdigit() else 0
