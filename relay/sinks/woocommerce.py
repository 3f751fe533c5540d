"""``woocommerce``: stock and prices through the WooCommerce REST API (``wc/v3``).

Followed: the WooCommerce REST API docs (woocommerce.github.io/woocommerce-rest-api-docs):
"Authentication", "Pagination", "Errors", "Products" (list, batch update) and "Product
variations" (batch update), and the batch controller they describe.

- **Auth.** Over https, the consumer key and secret as HTTP Basic credentials;
  ``auth = "query"`` sends them as ``consumer_key``/``consumer_secret`` query parameters
  instead, the documented fallback for servers that drop the Authorization header
  ("Consumer key is missing"). Basic is the default because it keeps the secret out of URLs,
  hence out of access logs. WooCommerce takes neither over plain http (it answers as to a
  visitor who is not logged in): there the sink signs every request with OAuth 1.0a
  one-legged, as WooCommerce documents it: ``oauth_consumer_key``, ``oauth_timestamp``,
  ``oauth_nonce`` (new for every attempt, retries included: WooCommerce refuses a nonce
  twice), ``oauth_signature_method=HMAC-SHA256`` and ``oauth_signature`` in the query
  string, the HMAC of RFC 5849's signature base string (3.4.1) under ``consumer_secret +
  "&"`` (no token). The secret never travels; stock and prices do, in clear, so plain http
  to a host other than loopback needs ``allow_insecure = true``. The shop's clock must be
  within 15 minutes of ours.
- **SKU -> id.** ``GET /products?sku=A,B,...`` (commas separate SKUs); when ``sku`` is
  given WooCommerce searches variations too and returns them with their ``parent_id``. Up to
  50 SKUs a lookup with ``per_page=100``, so one page holds every match of unique SKUs; more
  pages (a shop that allows duplicate SKUs) are read as ``X-WP-TotalPages`` says, and a
  listing whose ``X-WP-Total`` changed between pages is read again from the first (offset
  pages shift when products come or go; a page past the end is ``200 []``). Ids are kept in
  the version store (:mod:`relay.sinks.lookup`), and a SKU the shop does not have is
  remembered so for ``unknown_sku_ttl``. When a write says the id is gone (``*_invalid_id``),
  it is forgotten and the SKU looked up once more; still nothing, or refused again, is that
  event's ``DEAD`` result.
- **Writes.** ``POST /products/batch`` for products and ``POST /products/{parent}/variations/
  batch`` for variations, ``{"update": [{"id": ..., ...}]}``, at most 100 items a call (the
  default of ``woocommerce_rest_batch_items_limit``; a shop that lowered it answers 413
  ``woocommerce_rest_request_entity_too_large``, and the sink halves its batches until one
  fits). The answer lists the items in order, each the product or ``{"id", "error": {"code",
  "message"}}``: each maps to APPLIED or DEAD, and the rest of the batch goes on.
- **Stock** is absolute: ``{"manage_stock": true, "stock_quantity": N}`` (WooCommerce only
  stores a quantity while it manages stock). WooCommerce counts whole units, so a fractional
  ``on_hand`` is floored: the shop never offers a unit the warehouse does not hold. Only the
  ``warehouse`` this shop shows is written; other warehouses are SKIPPED.
- **Price** goes to ``regular_price``, the decimal string as the ERP sent it. With
  ``price_list`` set, prices of other lists are SKIPPED.
- **Deletes** of stock or price are SKIPPED: a product keeps its last figure, and removing a
  product from the shop is the catalogue's business, not a price's.
- **Rate.** WooCommerce documents no request limit; hosts and WAFs impose their own and
  answer 429. The default budget is a modest 5 requests/s (each can carry 100 updates);
  raise it for a shop that takes more. 429s and 5xx are retried honouring ``Retry-After``.
- **401/403** (a wrong or read-only key, a bad signature, a clock off) fail every write
  alike: the sink raises :class:`SinkUnavailable` naming the shop's error and what it means
  (:data:`REFUSALS`), rather than dead-letter the stream.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, quote, urlsplit

import orjson
from pydantic import Field, field_validator, model_validator

from relay.errors import SinkUnavailable
from relay.model import Event, SinkResult, Status
from relay.settings import CredentialName, FilePath
from relay.sinks.base import RateBudget
from relay.sinks.http import HttpSettings, LazySession, Reply, check_url, send, with_retries
from relay.sinks.lookup import IdStore, LookupSettings, SkuIds
from relay.sinks.shop import ENTITIES, Price, Rules, Stock

BATCH_LIMIT = 100
"""WooCommerce's default ``woocommerce_rest_batch_items_limit``."""
LOOKUP_SKUS = 50
"""SKUs per lookup: keeps the URL short whatever the SKUs look like."""
PER_PAGE = 100
"""The largest page WooCommerce serves; more than a lookup of unique SKUs can match."""
LISTING_READS = 3
"""Reads of a lookup whose match count keeps moving before the sink waits for calmer times."""
STALE_ID = frozenset(
    {
        "woocommerce_rest_product_invalid_id",  # no such product
        "woocommerce_rest_product_variation_invalid_id",  # no such variation of that parent
        "woocommerce_rest_invalid_product_id",  # a variation sent as a product
    }
)
"""Per-item error codes meaning the cached id no longer fits the SKU."""


class Settings(HttpSettings, LookupSettings):
    """``[[sinks]] type = "woocommerce"``."""

    type: Literal["woocommerce"]
    url: str
    """The store's base URL (``https://shop.example.com``); the API is under ``/wp-json``."""
    consumer_key_file: FilePath | None = None
    consumer_key_env: str | None = None
    consumer_secret_file: FilePath | None = None
    consumer_secret_env: str | None = None
    consumer_key_credential: CredentialName | None = None
    consumer_secret_credential: CredentialName | None = None
    secrets = ("consumer_key", "consumer_secret")
    auth: Literal["basic", "query"] = "basic"
    """How the key travels over https: an Authorization header, or query parameters for
    servers that drop that header. Over http requests are signed with OAuth 1.0a instead."""
    allow_insecure: bool = False
    """Allow plain http to a host that is not loopback (signed, but stock and prices travel
    in clear)."""
    warehouse: str
    """The ERP warehouse whose stock the shop shows; stock of other warehouses is skipped."""
    price_list: str | None = None
    """Only prices of this ERP price list; unset takes every price event."""
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
            why="sends stock and prices in clear (requests are signed with OAuth 1.0a, "
            "so the secret does not travel; set allow_insecure = true to accept "
            "that)",
        )
        return self


# --- OAuth 1.0a, one-legged (RFC 5849 section 3.4, as WooCommerce takes it over http) ------


def oauth_encode(text: str) -> str:
    """RFC 5849 3.6: UTF-8, every byte but ``A-Z a-z 0-9 - . _ ~`` as ``%XX``."""
    return quote(text, safe="")


def base_string(method: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """RFC 5849 3.4.1: ``METHOD&base-URI&parameters``, each part encoded. ``url``'s own
    query joins ``params`` (form and ``oauth_*`` parameters, without ``oauth_signature``)."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    host = f"[{host}]" if ":" in host else host
    if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(scheme):
        host += f":{parts.port}"
    pairs = sorted(
        (oauth_encode(name), oauth_encode(value))
        for name, value in [*parse_qsl(parts.query, keep_blank_values=True), *params]
    )
    normalized = "&".join(f"{name}={value}" for name, value in pairs)
    return "&".join(
        [
            method.upper(),
            oauth_encode(f"{scheme}://{host}{parts.path or '/'}"),
            oauth_encode(normalized),
        ]
    )


def signature(text: str, key: str, method: str = "HMAC-SHA256") -> str:
    """RFC 5849 3.4.2: base64 of the HMAC of ``text`` under ``key`` (client secret, ``&``,
    token secret); ``method`` is ``HMAC-SHA1`` or ``HMAC-SHA256``."""
    digest = hashlib.sha1 if method == "HMAC-SHA1" else hashlib.sha256
    return base64.b64encode(hmac.new(key.encode(), text.encode(), digest).digest()).decode()


@dataclass(frozen=True, slots=True)
class Credentials:
    """How the consumer key goes with each request."""

    key: str
    secret: str
    how: Literal["basic", "query", "oauth1"]

    def headers(self) -> dict[str, str]:
        if self.how != "basic":
            return {}
        basic = base64.b64encode(f"{self.key}:{self.secret}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}

    def params(self, method: str, url: str, params: dict[str, str]) -> dict[str, str]:
        """``params`` with the key, or signed; called anew for every attempt."""
        if self.how == "query":
            return {**params, "consumer_key": self.key, "consumer_secret": self.secret}
        if self.how == "basic":
            return params
        signed = {
            **params,
            "oauth_consumer_key": self.key,
            "oauth_nonce": secrets.token_hex(16),
            "oauth_signature_method": "HMAC-SHA256",
            "oauth_timestamp": str(int(time.time())),
        }
        # WooCommerce's key is the secret and "&" (no token), the secret not encoded.
        text = base_string(method, url, signed.items())
        return {**signed, "oauth_signature": signature(text, f"{self.secret}&")}


@dataclass(frozen=True, slots=True)
class Ref:
    """Where a SKU lives in the shop."""

    id: int
    parent_id: int
    """0 for a product; the variable product for a variation."""

    @property
    def endpoint(self) -> str:
        if self.parent_id:
            return f"products/{self.parent_id}/variations/batch"
        return "products/batch"


@dataclass(frozen=True, slots=True)
class Write:
    """One event turned into the fields of one batch update item."""

    index: int
    """The event's place in the batch, where its result goes."""
    sku: str
    what: str
    fields: dict[str, Any]


def _int(header: str | None) -> int:
    """A count header; 0 when absent or not a number (read no further)."""
    return int(header) if header is not None and header.strip().isdigit() else 0


def _error(reply: Reply) -> tuple[str, str]:
    """``(code, message)`` of a WordPress error body; the status and the body's start for
    anything else (a proxy's HTML page)."""
    try:
        body = orjson.loads(reply.body)
        return str(body["code"]), str(body["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"HTTP {reply.status}", reply.excerpt()


class WooCommerceSink:
    def __init__(self, settings: Settings, ids: IdStore | None = None) -> None:
        self.settings = settings
        self.name = settings.name
        self.entities = ENTITIES
        self.max_batch = BATCH_LIMIT
        self.rules = Rules(
            "WooCommerce",
            fractions="floor",
            oversold="keep",
            warehouse=settings.warehouse,
            price_list=settings.price_list,
            any_list_when_unset=True,
            deletes="the shop keeps its last figure; products are removed by the catalogue",
        )
        key = settings.secret("consumer_key", "the consumer key")
        secret = settings.secret("consumer_secret", "the consumer secret")
        plain = urlsplit(settings.url).scheme == "http"  # WooCommerce's is_ssl() is false
        self._credentials = Credentials(key, secret, "oauth1" if plain else settings.auth)
        self._api = f"{settings.url}/wp-json/wc/v3/"
        self._budget = RateBudget(settings.requests_per_second)
        self._batch_limit = BATCH_LIMIT
        self.ids = SkuIds(self.name, Ref, settings.unknown_sku_ttl, ids)
        self._session = LazySession(tls=settings.tls())

    async def apply(self, events: Sequence[Event]) -> list[SinkResult]:
        """Stock and price updates in as few batch calls as the shop takes."""
        results: list[SinkResult] = [SinkResult(Status.SKIPPED)] * len(events)
        writes: list[Write] = []
        for index, event in enumerate(events):
            planned = self._plan(index, event)
            if isinstance(planned, Write):
                writes.append(planned)
            else:
                results[index] = planned
        stale = await self._write(writes, results, last=False)
        await self._write(stale, results, last=True)  # ids the shop called gone, looked up anew
        return results

    async def close(self) -> None:
        await self._session.close()

    # --- events to update items ------------------------------------------------------

    def _plan(self, index: int, event: Event) -> Write | SinkResult:
        planned = self.rules.plan(event)
        if isinstance(planned, Stock):
            # WooCommerce stores a quantity only while it manages the product's stock.
            return Write(
                index,
                planned.sku,
                "stock",
                {"manage_stock": True, "stock_quantity": planned.quantity},
            )
        if isinstance(planned, Price):
            return Write(index, planned.sku, "price", {"regular_price": planned.text})
        return planned

    # --- writes ------------------------------------------------------------------------

    async def _write(
        self, writes: list[Write], results: list[SinkResult], *, last: bool
    ) -> list[Write]:
        """Send ``writes``, filling ``results``; returns the ones whose id went stale
        (unless ``last``, when those are dead too)."""
        if not writes:
            return []
        refs = await self._refs({write.sku for write in writes})
        by_endpoint: dict[str, list[tuple[Write, Ref]]] = defaultdict(list)
        for write in writes:
            ref = refs[write.sku]
            if isinstance(ref, Ref):
                by_endpoint[ref.endpoint].append((write, ref))
            else:
                results[write.index] = SinkResult(Status.DEAD, ref)
        stale: list[Write] = []
        for endpoint, items in by_endpoint.items():
            for (write, ref), answer in await self._batch(endpoint, items):
                result = await self._result(write, ref, answer, last=last)
                if result is None:
                    stale.append(write)
                else:
                    results[write.index] = result
        return stale

    async def _result(
        self, write: Write, ref: Ref, answer: dict[str, Any], *, last: bool
    ) -> SinkResult | None:
        error = answer.get("error")
        if not error:
            return SinkResult(Status.APPLIED)
        code = error.get("code", "") if isinstance(error, dict) else ""
        message = error.get("message", "") if isinstance(error, dict) else str(error)
        if code in STALE_ID:
            await self.ids.stale(write.sku, ref)
            if not last:
                return None
            return SinkResult(
                Status.DEAD,
                f"SKU {write.sku}: WooCommerce refused id {ref.id} "
                f"even after a fresh lookup ({code}: {message})",
            )
        return SinkResult(
            Status.DEAD,
            f"SKU {write.sku}: WooCommerce refused the {write.what} update ({code}: {message})",
        )

    async def _batch(
        self, endpoint: str, items: list[tuple[Write, Ref]]
    ) -> list[tuple[tuple[Write, Ref], dict[str, Any]]]:
        """POST ``items`` in chunks the shop accepts; each paired with its answer."""
        answers: list[tuple[tuple[Write, Ref], dict[str, Any]]] = []
        start = 0
        while start < len(items):
            chunk = items[start : start + self._batch_limit]
            body = {"update": [{"id": ref.id, **write.fields} for write, ref in chunk]}
            reply = await self._call("POST", endpoint, json=body)
            if reply.status == 413 and len(chunk) > 1:
                self._batch_limit = len(chunk) // 2  # the shop lowered its batch limit
                continue
            answers.extend(zip(chunk, self._answers(reply, len(chunk)), strict=True))
            start += len(chunk)
        return answers

    def _answers(self, reply: Reply, count: int) -> list[dict[str, Any]]:
        if not reply.ok:  # the whole request refused: the same error for every item
            code, message = _error(reply)
            return [{"error": {"code": code, "message": message}}] * count
        try:
            updated = orjson.loads(reply.body)["update"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            updated = None
        if not isinstance(updated, list) or len(updated) != count:
            raise SinkUnavailable(
                f"woocommerce {self.name}: the batch answer does not list "
                f"the {count} items sent: {reply.excerpt()}"
            )
        return updated

    # --- lookups -----------------------------------------------------------------------

    async def _refs(self, skus: set[str]) -> dict[str, Ref | str]:
        """Each SKU's ref, or why it has none: known, else looked up (and remembered)."""
        refs: dict[str, Ref | str] = {
            sku: known if isinstance(known, Ref) else known.reason
            for sku, known in (await self.ids.known(skus)).items()
        }
        found = await self._lookup(skus - refs.keys())
        await self.ids.found(found)
        for sku in skus - refs.keys() - found.keys():
            refs[sku] = reason = f"unknown SKU {sku}: no WooCommerce product or variation has it"
            self.ids.missing(sku, reason)
        return refs | found

    async def _lookup(self, skus: Iterable[str]) -> dict[str, Ref]:
        """The ids of those of ``skus`` the shop has."""
        found: dict[str, Ref] = {}
        wanted = set(skus)
        plain = sorted(sku for sku in wanted if "," not in sku)
        # WooCommerce splits ?sku= on commas: a SKU with a comma is looked up on its own
        # (the whole string is matched too, and the exact-SKU check below drops the parts).
        queries = [",".join(plain[i : i + LOOKUP_SKUS]) for i in range(0, len(plain), LOOKUP_SKUS)]
        queries += sorted(wanted - set(plain))
        for query in queries:
            for product in await self._products(query):
                if product.get("sku") in wanted:
                    found[product["sku"]] = Ref(
                        int(product["id"]), int(product.get("parent_id") or 0)
                    )
        return found

    async def _products(self, sku_query: str) -> list[Any]:
        """Every product ``GET /products?sku=...`` lists, over as many pages as it takes."""
        for _ in range(LISTING_READS):
            listing = await self._listing(sku_query)
            if listing is not None:
                return listing
        raise SinkUnavailable(
            f"woocommerce {self.name}: the product lookup kept changing "
            f"while it was read ({LISTING_READS} times); trying later"
        )

    async def _listing(self, sku_query: str) -> list[Any] | None:
        """The pages of one lookup; None when the match count moved between them, since
        offset pages then skip or repeat products."""
        found: list[Any] = []
        totals: set[str] = set()
        page = 1
        while True:
            params = {"sku": sku_query, "per_page": str(PER_PAGE), "page": str(page)}
            reply = await self._call("GET", "products", params=params)
            products = orjson.loads(reply.body) if reply.ok else None
            if not isinstance(products, list):
                code, message = _error(reply)
                raise SinkUnavailable(
                    f"woocommerce {self.name}: the product lookup failed "
                    f"(HTTP {reply.status} {code}: {message})"
                )
            found += products
            totals.add(reply.headers.get("X-WP-Total", ""))
            if len(totals) > 1:
                return None
            if not products or page >= _int(reply.headers.get("X-WP-TotalPages")):
                return found
            page += 1

    # --- HTTP --------------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, *, params: dict[str, str] | None = None, json: Any = None
    ) -> Reply:
        """One API request with retries; a refused key stops the sink, not the event."""
        url, credentials = self._api + path, self._credentials
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
            sink=f"woocommerce {self.name}",
            settings=self.settings,
        )
        if reply.status in (401, 403):
            code, message = _error(reply)
            raise SinkUnavailable(
                f"woocommerce {self.name}: the shop refused the request "
                f"(HTTP {reply.status} {code}: {message}); "
                f"{_meaning(reply.status, code, message, credentials.how)}"
            )
        return reply


REFUSALS = (
    ("Consumer key is invalid", "it knows no such consumer key: check consumer_key"),
    ("Consumer secret is invalid", "the secret does not go with the key: check consumer_secret"),
    (
        "signature does not match",
        "the OAuth 1.0a signature does not match, so the secret does "
        "not go with the key: check consumer_secret (or url is not the "
        "store's address as WordPress has it)",
    ),
    (
        "Invalid timestamp",
        "the shop's clock and this machine's are more than 15 minutes apart: set both right (NTP)",
    ),
    (
        "nonce has already been used",
        "the shop saw this request before (a proxy that repeats "
        "requests?); each attempt carries a new nonce",
    ),
    (
        "permissions.",
        "the key lacks that access: give it Read/Write (WooCommerce > Settings > "
        "Advanced > REST API)",
    ),
)
"""The shop's words (``code: message``) and what they mean to the operator; the first match wins."""
ANONYMOUS = {
    "basic": "it took the request as anonymous: it knows no such consumer key, or a server in "
    'front of it drops the Authorization header (then set auth = "query")',
    "query": "it took the request as anonymous: it knows no such consumer key: check consumer_key",
    "oauth1": "it took the request as anonymous: the OAuth 1.0a parameters did not reach "
    "WooCommerce (a proxy or security plugin in front of it may strip them)",
}
"""A 401 ``woocommerce_rest_cannot_*``: the key was not taken at all, by how it went."""


def _meaning(status: int, code: str, message: str, how: str) -> str:
    words = f"{code}: {message}"
    for needle, meaning in REFUSALS:
        if needle in words:
            return meaning
    if code.startswith("woocommerce_rest_cannot_"):
        return (
            ANONYMOUS[how]
            if status == 401
            else (
                "the key's WordPress user may not do this: "
                "give the key to a shop manager or an "
                "administrator"
            )
        )
    return "check consumer_key, consumer_secret and the key's Read/Write access"
