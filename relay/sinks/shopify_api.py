"""Shopify's Admin GraphQL API on the wire: what the ``shopify`` sink and the intake's
Shopify client share.

- :class:`CostBudget`: Shopify's leaky bucket of query-cost points as the shop last
  reported it (every answer's ``extensions.cost.throttleStatus``); each call first waits
  until its estimated cost is available.
- :class:`AdminGraphQL`: one shop's ``{shop_url}/admin/api/{version}/graphql.json`` with the
  app's token in ``X-Shopify-Access-Token``. :meth:`AdminGraphQL.graphql` answers a call's
  ``data``: 429, 5xx, a timeout or a lost connection, ``THROTTLED`` (waiting ``(cost -
  available) / restoreRate``), ``INTERNAL_SERVER_ERROR`` and ``IDEMPOTENCY_CONCURRENT_REQUEST``
  are retried through :func:`relay.sinks.http.with_retries`; a 401, another HTTP status,
  other GraphQL errors or an answer that is no JSON object raise ``unavailable`` (the
  caller's error class; ``refused`` for the 401), naming ``who``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from relay.errors import Refused, RelayKitError, SinkUnavailable, Transient
from relay.sinks.base import RateBudget
from relay.sinks.http import (
    HttpSettings,
    LazySession,
    connect_failure,
    is_transient,
    retry_after,
    with_retries,
)

__all__ = ["IN_PROGRESS", "AdminGraphQL", "CostBudget"]

IN_PROGRESS = "IDEMPOTENCY_CONCURRENT_REQUEST"
"""A ``userErrors`` code that says: this very request (same key) again, later."""


class CostBudget(RateBudget):
    """Shopify's leaky bucket as the shop last reported it, in query-cost points.

    Seeded with a Standard plan's bucket until the first response tells the real one.
    """

    def __init__(self) -> None:
        super().__init__(per_second=50.0, burst=1000.0)

    def observe(self, cost: Any) -> None:
        """Take the shop's ``extensions.cost.throttleStatus`` as the truth."""
        status: Any = cost.get("throttleStatus") if isinstance(cost, dict) else None
        try:
            maximum = float(status["maximumAvailable"])
            available = float(status["currentlyAvailable"])
            restore = float(status["restoreRate"])
        except (TypeError, KeyError, ValueError):
            return
        if maximum > 0 and restore > 0:
            self.capacity, self.per_second = maximum, restore
            self.tokens, self.updated = available, time.monotonic()

    async def take(self, cost: float = 1.0) -> None:
        # A cost above the bucket could never be met; the shop itself will say MAX_COST.
        await super().take(min(cost, self.capacity))


def _in_progress(data: dict[str, Any]) -> bool:
    """Whether a mutation's ``userErrors`` say its key's first request is still running."""
    return any(
        error.get("code") == IN_PROGRESS
        for payload in data.values()
        if isinstance(payload, dict)
        for error in payload.get("userErrors") or []
        if isinstance(error, dict)
    )


class AdminGraphQL:
    """One shop's Admin GraphQL endpoint, paced by its cost bucket."""

    def __init__(
        self,
        who: str,
        settings: HttpSettings,
        shop_url: str,
        api_version: str,
        token: str,
        *,
        unavailable: type[RelayKitError] = SinkUnavailable,
        refused: type[RelayKitError] = SinkUnavailable,
    ) -> None:
        self.who = who
        """``shopify {name}``: what every error starts with."""
        self.settings = settings
        self.endpoint = f"{shop_url}/admin/api/{api_version}/graphql.json"
        self.budget = CostBudget()
        self._unavailable, self._refused = unavailable, refused
        self._headers = {
            "X-Shopify-Access-Token": token,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._session = LazySession(
            tls=settings.tls(), timeout=aiohttp.ClientTimeout(total=settings.timeout)
        )

    async def close(self) -> None:
        await self._session.close()

    async def graphql(
        self, operation: str, query: str, variables: dict[str, Any], cost: float
    ) -> dict[str, Any]:
        """The ``data`` of one call, after the retries the shop's answers call for."""
        payload = {"query": query, "variables": variables, "operationName": operation}
        return await with_retries(
            lambda: self._call(operation, payload, cost), sink=self.who, settings=self.settings
        )

    async def _call(self, operation: str, payload: dict[str, Any], cost: float) -> dict[str, Any]:
        await self.budget.take(cost)
        try:
            async with self._session().post(
                self.endpoint, json=payload, headers=self._headers
            ) as response:
                status, headers, raw = response.status, response.headers, await response.read()
        except TimeoutError:
            raise Transient(f"{operation}: no answer within {self.settings.timeout:g}s") from None
        except aiohttp.ClientConnectorCertificateError as error:
            raise Refused(connect_failure(error)) from None
        except aiohttp.ClientError as error:
            raise Transient(f"{operation}: connection failed ({type(error).__name__})") from None
        if status != 200:
            raise self._http_error(operation, status, retry_after(headers.get("Retry-After")))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise self._unavailable(f"{self.who}: {operation} answered no JSON object")
        self.budget.observe((body.get("extensions") or {}).get("cost"))
        return self._data(operation, body)

    def _http_error(self, operation: str, status: int, hint: float | None) -> Exception:
        if is_transient(status):
            return Transient(f"{operation}: HTTP {status}", hint)
        if status == 401:
            return self._refused(
                f"{self.who}: the access token was refused (401); "
                "check access_token_file / access_token_env and that the "
                "app is installed on the shop"
            )
        # 402 (shop frozen), 403 (scopes), 404 (shop or version gone), 423 (shop locked):
        # nothing any single call could fix.
        return self._unavailable(f"{self.who}: {operation} answered HTTP {status}")

    def _data(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        errors = body.get("errors")
        if errors:
            errors = errors if isinstance(errors, list) else [{"message": str(errors)}]
            errors = [e if isinstance(e, dict) else {"message": str(e)} for e in errors]
            codes = {(error.get("extensions") or {}).get("code") for error in errors}
            text = "; ".join(str(error.get("message")) for error in errors)
            if "THROTTLED" in codes:
                raise Transient(f"{operation}: throttled", self._refill_time(body))
            if codes & {"INTERNAL_SERVER_ERROR", "SERVICE_UNAVAILABLE"}:
                raise Transient(f"{operation}: {text}")
            raise self._unavailable(f"{self.who}: {operation} failed: {text}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise self._unavailable(f"{self.who}: {operation} answered no data")
        if _in_progress(data):
            # Shopify's own advice: the same request, same key, again; it then answers
            # the first one's result. A new key would make it a second, distinct write.
            raise Transient(
                f"{operation}: Shopify is still processing the first request "
                "with this idempotency key"
            )
        return data

    def _refill_time(self, body: dict[str, Any]) -> float:
        """How long until the bucket holds what the throttled call asked for."""
        cost = (body.get("extensions") or {}).get("cost") or {}
        try:
            needed = float(cost["requestedQueryCost"]) - self.budget.tokens
        except (KeyError, TypeError, ValueError):
            return 1.0
        return max(0.0, needed / self.budget.per_second)
