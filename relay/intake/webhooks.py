"""``POST /v1/webhooks/{shop}``: a shop's delivery, verified, mapped and committed before
it is answered.

The order of things is the guarantee:

1. the shop must be configured (404) and deliver webhooks at all (404 for PrestaShop and
   Magento, which have none);
2. the body is read whole, at most ``[listen] max_body`` bytes (413);
3. the signature (base64 HMAC-SHA256 of the raw body with the shop's secret: Shopify's
   ``X-Shopify-Hmac-Sha256``, WooCommerce's ``X-WC-Webhook-Signature``) is compared in
   constant time **before anything is parsed**: a missing or wrong one is 401, counted,
   never stored. The one exception is WooCommerce's ping on hook creation (form-encoded
   ``webhook_id=N``, unsigned), answered exactly 200 (even 201 makes WooCommerce send it
   again after every delivery) and counted, nothing more;
4. the body is mapped by its content, never by the topic header: the signature covers the
   body only, so a valid body replayed under another topic is the same state and stores as
   a duplicate (a signed topic the intake does not take, such as WooCommerce's
   ``action.*``, is answered 200 and counted ``ignored_topic``);
5. the outcome is committed in the intake store (:meth:`relay.intake.intake.Intake.take`),
   and only then answered 200; a body that verified but cannot be mapped is committed as a
   dead letter and answered 200 too (refusing it would make Shopify retry it for hours and
   WooCommerce disable the hook). A store that cannot commit is 503: Shopify retries,
   WooCommerce does not, and the catch-up poll repairs that.

Nothing here waits on the shop: a conflicting version is re-read in the background, so an
answer takes one store commit (a WooCommerce queue waits up to 60 s on a slow answer).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from relay.errors import StoreError
from relay.intake import shopify, woocommerce
from relay.intake.intake import Intake, Received, Route
from relay.intake.outcome import Mapped

log = logging.getLogger("distillsync.relay.intake.webhooks")

_PING = re.compile(rb"^webhook_id=\d+$")


@dataclass(frozen=True, slots=True)
class Flavour:
    """How one shop type signs, names and shapes its deliveries."""

    signature_header: str
    topic_header: str
    topics: frozenset[str]
    map_body: Callable[[str, bytes], Mapped]
    pings: bool = False
    """Sends an unsigned ping when a hook is created (WooCommerce)."""


FLAVOURS: dict[str, Flavour] = {
    "shopify": Flavour(
        "X-Shopify-Hmac-Sha256",
        "X-Shopify-Topic",
        frozenset({"orders/create", "orders/updated", "orders/cancelled", "refunds/create"}),
        shopify.map_body,
    ),
    "woocommerce": Flavour(
        "X-WC-Webhook-Signature",
        "X-WC-Webhook-Topic",
        frozenset({"order.created", "order.updated", "order.deleted", "order.restored"}),
        woocommerce.map_body,
        pings=True,
    ),
}


def signature(secret: str, body: bytes) -> str:
    """What the shop sends: base64 of HMAC-SHA256 over the raw body."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def verified(secret: str, body: bytes, given: str) -> bool:
    return hmac.compare_digest(signature(secret, body).encode(), given.strip().encode())


@dataclass(frozen=True, slots=True)
class WebhookShop:
    route: Route
    flavour: Flavour | None
    """None: the shop type sends no webhooks."""
    secret: str | None


def is_ping(request: web.Request, body: bytes) -> bool:
    return (
        request.content_type == "application/x-www-form-urlencoded"
        and _PING.match(body.strip()) is not None
    )


class WebhookHandler:
    def __init__(self, intake: Intake, shops: Mapping[str, WebhookShop], max_body: int) -> None:
        self.intake = intake
        self.shops = shops
        self.max_body = max_body

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["shop"]
        shop = self.shops.get(name)
        if shop is None:
            return self._refuse("-", "unknown_shop", 404, f"no shop {name!r} in this intake")
        if shop.flavour is None or shop.secret is None:
            return self._refuse(name, "no_webhooks", 404, f"shop {name!r} takes no webhooks")
        if request.content_length is not None and request.content_length > self.max_body:
            return self._refuse(name, "too_large", 413, "body too large")
        body = await request.read()
        given = request.headers.get(shop.flavour.signature_header)
        if given is None:
            if shop.flavour.pings and is_ping(request, body):
                self.intake.stats.count_webhook(name, "ping")
                return web.Response(status=200, text="ok")
            return self._refuse(name, "missing_signature", 401, "signature missing")
        if not verified(shop.secret, body, given):
            return self._refuse(name, "bad_signature", 401, "signature does not match")
        return await self._take(shop, request.headers.get(shop.flavour.topic_header, ""), body)

    async def _take(self, shop: WebhookShop, topic: str, body: bytes) -> web.Response:
        name = shop.route.shop
        assert shop.flavour is not None
        if topic not in shop.flavour.topics:
            self.intake.stats.count_webhook(name, "ignored_topic")
            return web.Response(status=200, text="ignored")
        mapped = shop.flavour.map_body(name, body)
        try:
            await self.intake.take(shop.route, [Received(mapped, body)], f"webhook {topic}")
        except (StoreError, OSError) as error:
            log.error("%s: webhook not stored (%s); answered 503", name, error)
            self.intake.stats.count_webhook(name, "store_unavailable")
            raise web.HTTPServiceUnavailable(text="store unavailable") from None
        self.intake.stats.count_webhook(name, "accepted")
        return web.Response(status=200, text="ok")

    def _refuse(self, shop: str, outcome: str, status: int, why: str) -> web.Response:
        self.intake.stats.count_webhook(shop, outcome)
        log.info("webhook for %s refused: %s (%d)", shop, why, status)
        return web.Response(status=status, text=why)


def webhook_app(handler: WebhookHandler, max_body: int) -> web.Application:
    async def alive(_: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    app = web.Application(client_max_size=max_body)
    app.router.add_post("/v1/webhooks/{shop}", handler.handle)
    app.router.add_get("/v1/health", alive)
    return app
