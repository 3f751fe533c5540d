"""Shopify's Admin GraphQL API as the intake reads it: catch-up polls, re-reads and webhook
subscriptions.

Followed: shopify.dev, "orders" query (``query`` search syntax, ``sortKey: UPDATED_AT``,
cursor pagination with ``pageInfo { hasNextPage endCursor }``), "order" query,
"webhookSubscriptions" and "webhookSubscriptionCreate" (the unified ``uri`` field that
replaced ``callbackUrl``), and "GraphQL Admin API rate limits":

- **Polls**: ``orders(first: 50, after: $after, query: "updated_at:>='...Z'", sortKey:
  UPDATED_AT)``; the search bound is inclusive, so ``since`` goes as it is (to the whole
  second, UTC). Every page is read through ``endCursor`` while ``hasNextPage``. Each node is
  mapped with :func:`relay.intake.shopify.map_node`; its version is ``updatedAt``.
- **Re-read**: ``order(id: "gid://shopify/Order/N")``; ``null`` (deleted) is
  :class:`~relay.intake.outcome.Gone`.
- **Hooks**: ``webhookSubscriptions`` (every page) to the intake's URL; Shopify has no
  disabled state (after 8 failed retries of a delivery it may delete a subscription made
  over the API, so a lost one shows as ``missing``). :meth:`Client.register_hooks` makes
  the missing ones with ``format: JSON``; the webhooks are signed with the app's client
  secret, so the ``secret`` argument is not sent.
- **Cost and retries** are the ``shopify`` sink's (:mod:`relay.sinks.shopify_api`): each
  call waits for its estimated cost in the bucket ``extensions.cost.throttleStatus`` last
  reported, ``THROTTLED`` waits for the refill and goes again, 429 and 5xx are retried.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import field_validator

from relay.errors import RelayKitError
from relay.intake.clients import ShopRefused, ShopUnreadable
from relay.intake.order import kind_of
from relay.intake.outcome import Gone, Mapped
from relay.intake.shopify import map_node
from relay.intake.source import WEBHOOK_TOPICS, HookState, Polled
from relay.settings import CredentialName, FilePath, read_secret
from relay.sinks.http import HttpSettings, ShopUrl
from relay.sinks.shopify import API_VERSION
from relay.sinks.shopify_api import AdminGraphQL

__all__ = ["ORDERS_QUERY", "PAGE", "Client", "Settings", "updated_since"]

PAGE = 50
"""Orders a page: 50 nodes with their lines stay well inside a 1,000-point bucket."""
ORDER_COST = 12
"""Our estimate of one order node's cost (lines and shipping lines included); the bucket
the shop reports after each call corrects the budget."""
TOPICS = {
    "orders/create": "ORDERS_CREATE",
    "orders/updated": "ORDERS_UPDATED",
    "orders/cancelled": "ORDERS_CANCELLED",
    "refunds/create": "REFUNDS_CREATE",
}
_TOPIC_NAMES = {enum: name for name, enum in TOPICS.items()}
_VERSION = re.compile(r"^\d{4}-(01|04|07|10)$")

_MONEY = "shopMoney { amount currencyCode }"
_TAXES = f"taxLines {{ title rate ratePercentage priceSet {{ {_MONEY} }} }}"
ORDER_FIELDS = f"""
  id legacyResourceId name email phone createdAt updatedAt cancelledAt closedAt
  displayFinancialStatus currencyCode taxesIncluded note paymentGatewayNames
  customer {{ id email firstName lastName phone }}
  billingAddress {{ firstName lastName name address1 address2 city zip provinceCode
                   countryCodeV2 company phone }}
  shippingAddress {{ firstName lastName name address1 address2 city zip provinceCode
                    countryCodeV2 company phone }}
  lineItems(first: 100) {{
    nodes {{ id name sku quantity originalUnitPriceSet {{ {_MONEY} }}
            discountAllocations {{ allocatedAmountSet {{ {_MONEY} }} }} {_TAXES} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
  shippingLines(first: 10) {{
    nodes {{ title code originalPriceSet {{ {_MONEY} }} discountedPriceSet {{ {_MONEY} }}
            {_TAXES} }}
  }}
  totalDiscountsSet {{ {_MONEY} }} totalTaxSet {{ {_MONEY} }} totalPriceSet {{ {_MONEY} }}
"""
ORDERS_QUERY = f"""
query Orders($first: Int!, $after: String, $query: String, $sortKey: OrderSortKeys) {{
  orders(first: $first, after: $after, query: $query, sortKey: $sortKey) {{
    edges {{ cursor node {{ {ORDER_FIELDS} }} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}"""
ORDER_QUERY = f"""
query Order($id: ID!) {{
  order(id: $id) {{ {ORDER_FIELDS} }}
}}"""
SUBSCRIPTIONS_QUERY = """
query WebhookSubscriptions($first: Int!, $after: String) {
  webhookSubscriptions(first: $first, after: $after) {
    nodes { id topic uri format }
    pageInfo { hasNextPage endCursor }
  }
}"""
CREATE_SUBSCRIPTION = """
mutation WebhookSubscriptionCreate($topic: WebhookSubscriptionTopic!,
                                   $webhookSubscription: WebhookSubscriptionInput!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $webhookSubscription) {
    webhookSubscription { id topic uri }
    userErrors { field message }
  }
}"""


class Settings(HttpSettings):
    """A Shopify shop the intake reads (``name``, ``timeout``, ``max_retries``, ``backoff``,
    ``ca_file`` as every HTTP client)."""

    type: Literal["shopify"]
    shop_url: ShopUrl
    """``https://acme.myshopify.com``; plain ``http://`` only to loopback (a simulator)."""
    api_version: str = API_VERSION
    access_token_file: FilePath | None = None
    """The Admin API access token (``shpat_...``, scope ``read_orders``) in a file."""
    access_token_env: str | None = None
    access_token_credential: CredentialName | None = None
    secrets = ("access_token",)

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _VERSION.match(value):
            raise ValueError(f"{value!r} is not a Shopify API version such as {API_VERSION!r}")
        return value


def updated_since(since: datetime) -> str:
    """The search that returns every order updated at or after ``since`` (inclusive)."""
    whole = since.astimezone(UTC).replace(microsecond=0)
    return f"updated_at:>='{whole:%Y-%m-%dT%H:%M:%SZ}'"


class Client:
    """One Shopify shop's orders and webhooks (a :class:`~relay.intake.source.ShopClient`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.name
        token = read_secret(
            settings.access_token_file,
            settings.access_token_env,
            "access_token",
            settings.access_token_credential,
        )
        self._who = f"shopify {self.name}"
        self._api = AdminGraphQL(
            self._who,
            settings,
            settings.shop_url,
            settings.api_version,
            token or "",
            unavailable=ShopUnreadable,
            refused=ShopRefused,
        )

    async def close(self) -> None:
        await self._api.close()

    # --- orders ----------------------------------------------------------------------

    async def changed_since(self, since: datetime) -> AsyncIterator[Polled]:
        """Every order updated at or after ``since``, oldest first, every page."""
        variables: dict[str, Any] = {
            "first": PAGE,
            "query": updated_since(since),
            "sortKey": "UPDATED_AT",
        }
        while True:
            data = await self._call("Orders", ORDERS_QUERY, variables, 2 + PAGE * ORDER_COST)
            connection = self._dict(data.get("orders"), "orders")
            for edge in self._list(connection.get("edges"), "orders.edges"):
                node = self._dict(edge, "orders.edges[]").get("node")
                yield Polled(self._version(node), map_node(self.name, node))
            page = self._dict(connection.get("pageInfo"), "orders.pageInfo")
            cursor = page.get("endCursor")
            if page.get("hasNextPage") is not True:
                return
            if not isinstance(cursor, str):
                raise ShopUnreadable(
                    f"{self._who}: orders says there is a next page but gives no endCursor"
                )
            variables["after"] = cursor

    async def read_order(self, order_ref: str) -> Mapped:
        gid = f"gid://shopify/Order/{order_ref}"
        data = await self._call("Order", ORDER_QUERY, {"id": gid}, 1 + ORDER_COST)
        node = data.get("order")
        if node is None:
            return Gone("not_found", f"Shopify has no order {order_ref}")
        return map_node(self.name, node)

    def _version(self, node: object) -> datetime:
        stamp = node.get("updatedAt") if isinstance(node, dict) else None
        try:
            moment = datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            gid = node.get("id") if isinstance(node, dict) else None
            raise ShopUnreadable(
                f"{self._who}: an order in orders ({gid!r}) has no readable updatedAt: {stamp!r}"
            )
        return moment.astimezone(UTC)

    # --- webhooks --------------------------------------------------------------------

    async def hooks(self, url: str) -> list[HookState]:
        states = []
        async for node in self._subscriptions():
            if node.get("uri") != url:
                continue
            topic = node.get("topic")
            states.append(
                HookState(_TOPIC_NAMES.get(str(topic), str(topic)), url, "active", str(node["id"]))
            )
        wanted = WEBHOOK_TOPICS["shopify"]
        states.sort(key=lambda s: wanted.index(s.topic) if s.topic in wanted else len(wanted))
        have = {state.topic for state in states}
        return states + [HookState(topic, url, "missing") for topic in wanted if topic not in have]

    async def register_hooks(self, url: str, secret: str) -> Sequence[HookState]:
        """``secret`` is not sent: Shopify signs with the app's client secret."""
        for state in await self.hooks(url):
            if state.status != "missing":
                continue
            variables = {
                "topic": TOPICS[state.topic],
                "webhookSubscription": {"uri": url, "format": "JSON"},
            }
            data = await self._call("WebhookSubscriptionCreate", CREATE_SUBSCRIPTION, variables, 10)
            result = self._dict(data.get("webhookSubscriptionCreate"), "webhookSubscriptionCreate")
            errors = result.get("userErrors") or []
            if errors:
                text = "; ".join(str(e.get("message")) for e in errors if isinstance(e, dict))
                raise ShopUnreadable(
                    f"{self._who}: Shopify refused the {state.topic} subscription: {text}"
                )
        return await self.hooks(url)

    async def _subscriptions(self) -> AsyncIterator[dict[str, Any]]:
        variables: dict[str, Any] = {"first": 100}
        while True:
            data = await self._call("WebhookSubscriptions", SUBSCRIPTIONS_QUERY, variables, 102)
            connection = self._dict(data.get("webhookSubscriptions"), "webhookSubscriptions")
            for node in self._list(connection.get("nodes"), "webhookSubscriptions.nodes"):
                row = self._dict(node, "webhookSubscriptions.nodes[]")
                if "id" not in row:
                    raise ShopUnreadable(f"{self._who}: a webhook subscription has no id")
                yield row
            page = self._dict(connection.get("pageInfo"), "webhookSubscriptions.pageInfo")
            if page.get("hasNextPage") is not True or not isinstance(page.get("endCursor"), str):
                return
            variables["after"] = page["endCursor"]

    # --- the wire --------------------------------------------------------------------

    async def _call(
        self, operation: str, query: str, variables: dict[str, Any], cost: float
    ) -> dict[str, Any]:
        try:
            return await self._api.graphql(operation, query, variables, cost)
        except ShopUnreadable:
            raise
        except RelayKitError as error:  # retries spent, or a certificate refused
            raise ShopUnreadable(str(error), error.retry_after) from None

    def _dict(self, value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ShopUnreadable(f"{self._who}: {where} is {kind_of(value)}, not an object")
        return value

    def _list(self, value: object, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise ShopUnreadable(f"{self._who}: {where} is {kind_of(value)}, not a list")
        return value
