"""PrestaShop's Webservice (8.2, JSON output) as the intake reads it: catch-up polls and
re-reads. PrestaShop has no order webhooks: polls alone.

Followed: the PrestaShop 8 Webservice reference (resources, "Additional list parameters",
the cheat sheet) and what a real 8.2 did (DESIGN.md, "What the real shop and ERPs do"):

- **The shop's clock.** Every date is naive in ``PS_TIMEZONE``, read once from
  ``configurations`` (with the ``PS_OS_*`` order state ids the mapping needs), together with
  the lookups :class:`~relay.intake.prestashop.Lookups` holds (order states, currencies,
  taxes, countries, states, carriers). They are read again when an order names a state or
  currency the client has not seen.
- **Polls**: ``GET orders?display=full&filter[date_upd]=[a,b]&date=1
  &sort=[date_upd_ASC,id_ASC]&limit=offset,count``. The bounds are BETWEEN, inclusive at
  both ends, shop-local ``YYYY-MM-DD HH:MM:SS``: ``a`` is ``since`` (its whole second) in
  shop time, ``b`` now in shop time. A malformed bound is answered silently and wrongly
  (an ISO ``T``: an equality on the lower bound; anything after ``]``: every order), so
  :func:`date_filter` checks what it builds against the one form it may take and raises
  before anything is sent. When the clocks went back between ``since`` and now (the
  autumn hour repeats its stamps), ``a`` is taken with the later, smaller offset, an hour
  earlier, so no stamp of the repeated hour is missed. Pages are read until one comes
  back short (a page past the end is ``[]``).
- **About nine calls an order, batched per page**: the page's ``order_details``
  (``filter[id_order]=[1|2|3]``), ``customers`` (``filter[id]``, with ``display`` naming
  the fields read, so the password hash and ``secure_key`` are never even fetched),
  ``addresses``, ``order_payments`` (by ``order_reference``) and ``order_carriers``; every
  row goes through :func:`~relay.intake.prestashop.without_secrets` anyway. The order's
  version is its ``date_upd`` in UTC.
- **Re-read**: ``GET orders/{id}`` and the same related resources; a 404 (empty body: the
  order was deleted) is :class:`~relay.intake.outcome.Gone`.
- **Auth and retries** as the ``prestashop`` sink's (:mod:`relay.sinks.prestashop`): the
  Webservice key as the Basic username, no password; 429 and 5xx retried with backoff
  honouring ``Retry-After`` (:func:`relay.sinks.http.with_retries`). A resource the key may
  not use is 401: :class:`~relay.intake.clients.ShopRefused` naming it; an answer that is
  not what the Webservice documents is :class:`~relay.intake.clients.ShopUnreadable`,
  naming the shop and the resource.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson
from pydantic import Field

from relay.errors import RelayKitError
from relay.intake.clients import ShopRefused, ShopUnreadable
from relay.intake.order import Unreadable
from relay.intake.outcome import Gone, Mapped, Unmappable
from relay.intake.prestashop import (
    CONFIGURATION_NAMES,
    Assembled,
    Lookups,
    by_id,
    list_rows,
    local_time,
    map_order,
    one_row,
)
from relay.intake.source import HookState, Polled
from relay.settings import CredentialName, FilePath
from relay.sinks.base import RateBudget
from relay.sinks.http import HttpSettings, LazySession, Reply, ShopUrl, send, with_retries

__all__ = ["PAGE_SIZE", "Client", "Settings", "date_filter"]

PAGE_SIZE = 50
_LOCAL = "%Y-%m-%d %H:%M:%S"
_BOUNDS = re.compile(r"\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\]")
_CUSTOMER_FIELDS = "[id,email,firstname,lastname,company,is_guest]"
"""What the mapping reads of a customer: ``display=full`` would bring the password hash."""
_LOOKUPS = ("order_states", "currencies", "taxes", "countries", "states", "carriers")


class Settings(HttpSettings):
    """A PrestaShop shop the intake reads (``name``, ``timeout``, ``max_retries``,
    ``backoff``, ``ca_file`` as every HTTP client; ``url`` and the key as the ``prestashop``
    sink's)."""

    type: Literal["prestashop"]
    url: ShopUrl
    """The shop's base URL; the Webservice is ``{url}/api/``."""
    api_key_file: FilePath | None = None
    api_key_env: str | None = None
    """The Webservice key (GET on orders, order_details, customers, addresses,
    order_states, order_payments, order_carriers, currencies, taxes, countries, states,
    carriers, configurations), sent as the Basic username."""
    api_key_credential: CredentialName | None = None
    secrets = ("api_key",)
    page_size: int = Field(PAGE_SIZE, ge=1, le=1000)
    prices_include_tax: bool = False
    """Whether the shop shows prices with tax (its customer groups' price display): the
    order does not say, the canonical order records it."""
    requests_per_second: float = Field(5.0, gt=0)
    """PrestaShop documents no limit; 5/s keeps a shared host's PHP pool responsive."""


def date_filter(since: datetime, now: datetime, timezone: ZoneInfo) -> str | None:
    """``[a,b]`` for ``filter[date_upd]``: ``since`` to ``now`` in shop-local whole seconds
    (``a`` an hour earlier when the clocks went back in between); None when ``since`` is
    after ``now``. Raises ValueError rather than build anything else."""
    start, end = since.astimezone(timezone), now.astimezone(timezone)
    low = start.replace(microsecond=0, tzinfo=None)
    offset_now = end.utcoffset()
    if offset_now is not None and offset_now < (start.utcoffset() or offset_now):
        low = min(low, (since.astimezone(UTC) + offset_now).replace(microsecond=0, tzinfo=None))
    high = end.replace(microsecond=0, tzinfo=None)
    if low > high:
        return None
    bounds = f"[{low.strftime(_LOCAL)},{high.strftime(_LOCAL)}]"
    if not _BOUNDS.fullmatch(bounds):
        raise ValueError(f"refusing to send a malformed date_upd filter: {bounds!r}")
    return bounds


class Client:
    """One PrestaShop shop's orders (a :class:`~relay.intake.source.ShopClient`).

    ``clock`` is now (aware), for tests against a simulated shop's clock."""

    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.name = settings.name
        key = settings.secret("api_key", "the Webservice key")
        # As the prestashop sink sends it: the key as the Basic username, no password.
        authorization = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        self._headers = {"Authorization": authorization}
        self._api = f"{settings.url}/api/"
        self._budget = RateBudget(settings.requests_per_second)
        self._session = LazySession(tls=settings.tls())
        self._who = f"prestashop {self.name}"
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lookups: Lookups | None = None

    async def close(self) -> None:
        await self._session.close()

    # --- orders ----------------------------------------------------------------------

    async def changed_since(self, since: datetime) -> AsyncIterator[Polled]:
        """Every order whose ``date_upd`` is at or after ``since``, oldest first."""
        lookups = await self.lookups()
        bounds = date_filter(since, self._clock(), lookups.timezone)
        if bounds is None:
            return
        size, offset = self.settings.page_size, 0
        while True:
            query = {
                "display": "full",
                "filter[date_upd]": bounds,
                "date": "1",
                "sort": "[date_upd_ASC,id_ASC]",
                "limit": f"{offset},{size}",
            }
            orders = await self._rows("orders", query)
            for polled in await self._assemble(orders):
                yield polled
            if len(orders) < size:
                return
            offset += size

    async def read_order(self, order_ref: str) -> Mapped:
        if not order_ref.isdigit():  # never put into the path as it is
            return Unmappable(f"not a PrestaShop order: {order_ref!r} is not an id", order_ref)
        reply = await self._get(f"orders/{order_ref}", {})
        if reply.status == 404:
            return Gone("prestashop_not_found", f"order {order_ref} is not in the shop")
        order = self._read(reply, f"order {order_ref}", lambda body: one_row(body, "order"))
        (polled,) = await self._assemble([order])
        return polled.mapped

    async def hooks(self, url: str) -> list[HookState]:
        return []  # PrestaShop has no order webhooks

    async def register_hooks(self, url: str, secret: str) -> Sequence[HookState]:
        return []

    async def lookups(self, *, again: bool = False) -> Lookups:
        """The shop's time zone, state ids and lookup tables, read once (or ``again``)."""
        if self._lookups is None or again:
            names = "|".join(CONFIGURATION_NAMES)
            rows = await self._rows(
                "configurations", {"display": "[name,value]", "filter[name]": f"[{names}]"}
            )
            try:
                timezone, special = Lookups.configuration(rows)
            except Unreadable as bad:
                raise ShopUnreadable(f"{self._who}: configurations: {bad}") from None
            tables = {
                plural: by_id(await self._rows(plural, {"display": "full"})) for plural in _LOOKUPS
            }
            self._lookups = Lookups(timezone=timezone, special=special, **tables)
        return self._lookups

    # --- one page of orders, with what belongs to them ----------------------------------

    async def _assemble(self, orders: list[dict[str, Any]]) -> list[Polled]:
        if not orders:
            return []
        lookups = await self._fresh(orders)
        ids = [str(order.get("id")) for order in orders]
        details = await self._related("order_details", "id_order", ids)
        customers = await self._related(
            "customers", "id", _values(orders, "id_customer"), display=_CUSTOMER_FIELDS
        )
        addresses = by_id(
            await self._related(
                "addresses",
                "id",
                _values(orders, "id_address_invoice", "id_address_delivery"),
            )
        )
        payments = await self._related(
            "order_payments", "order_reference", _values(orders, "reference")
        )
        carriers = await self._related("order_carriers", "id_order", ids)
        people = by_id(customers)
        polled = []
        for order in orders:
            ref = str(order.get("id"))
            assembled = Assembled(
                order=order,
                details=[row for row in details if str(row.get("id_order")) == ref],
                customer=people.get(str(order.get("id_customer"))),
                addresses=addresses,
                payments=[
                    row for row in payments if row.get("order_reference") == order.get("reference")
                ],
                order_carriers=[row for row in carriers if str(row.get("id_order")) == ref],
            )
            mapped = map_order(
                self.name, assembled, lookups, prices_include_tax=self.settings.prices_include_tax
            )
            polled.append(Polled(self._version(order, lookups.timezone), mapped))
        return polled

    async def _fresh(self, orders: Iterable[dict[str, Any]]) -> Lookups:
        """The lookups, read again once when an order names a state or currency not in them."""
        lookups = await self.lookups()
        for order in orders:
            if str(order.get("current_state")) not in lookups.order_states or (
                str(order.get("id_currency")) not in lookups.currencies
            ):
                return await self.lookups(again=True)
        return lookups

    async def _related(
        self, plural: str, field: str, values: list[str], *, display: str = "full"
    ) -> list[dict[str, Any]]:
        wanted = sorted({value for value in values if value and value != "0"})
        if not wanted:
            return []
        # [a|b] is OR; a single value is the literal [a] (a lone [a|] would not be).
        return await self._rows(
            plural, {"display": display, f"filter[{field}]": f"[{'|'.join(wanted)}]"}
        )

    def _version(self, order: dict[str, Any], timezone: ZoneInfo) -> datetime:
        try:
            return local_time(order.get("date_upd"), timezone, "date_upd")[0]
        except Unreadable:
            raise ShopUnreadable(
                f"{self._who}: an order in the order list (id {order.get('id')!r}) has no "
                f"readable date_upd: {order.get('date_upd')!r}"
            ) from None

    # --- HTTP ------------------------------------------------------------------------

    async def _rows(self, plural: str, query: dict[str, str]) -> list[dict[str, Any]]:
        reply = await self._get(plural, query)
        rows: list[dict[str, Any]] = self._read(reply, plural, lambda body: list_rows(body, plural))
        return rows

    def _read(self, reply: Reply, what: str, rows: Callable[[Any], Any]) -> Any:
        if not reply.ok:
            raise ShopUnreadable(
                f"{self._who}: {what} failed (HTTP {reply.status}: {reply.excerpt() or 'no body'})"
            )
        try:
            return rows(orjson.loads(reply.body))
        except orjson.JSONDecodeError:
            raise ShopUnreadable(
                f"{self._who}: {what} is not JSON (HTTP {reply.status}): {reply.excerpt()}"
            ) from None
        except Unreadable as bad:
            raise ShopUnreadable(f"{self._who}: {what} is not a Webservice answer: {bad}") from None

    async def _get(self, path: str, query: dict[str, str]) -> Reply:
        """One GET with retries, JSON asked for; a refused key is :class:`ShopRefused`."""
        url, params = self._api + path, {**query, "output_format": "JSON"}
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
            resource = path.split("/")[0]
            raise ShopRefused(
                f"{self._who}: the Webservice key may not read {resource} (HTTP "
                f"{reply.status}); give it GET on {resource} in Advanced Parameters > Webservice"
            )
        return reply


def _values(rows: Iterable[dict[str, Any]], *fields: str) -> list[str]:
    return [str(row.get(name) or "") for row in rows for name in fields]
