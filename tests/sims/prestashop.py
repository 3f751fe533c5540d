"""A PrestaShop Webservice on loopback, as its documentation and its dispatcher behave.

Followed: devdocs.prestashop-project.org "Webservice reference" (resources, methods),
"Resources for Products / Combinations / Stock availables" (fields, required and
writable flags), "Additional list parameters" and the cheat sheet (``display=full``,
``display=[a,b]``, ``filter[field]=[value]`` literal and ``[a|b]`` OR, case-insensitive),
and the dispatcher's error answers: the ``<prestashop><errors><error><code><message>``
body; 401 with ``WWW-Authenticate: Basic`` when the key (the Basic username, no password)
is missing or unknown; on PUT a read-only field is 400 code 93 ("parameter "X" not
writable. Please remove this attribute of this XML"), a missing required field 400 code
41, an unknown id 404 code 92, and a missing *optional* field is reset to empty, which is
why a client must send the whole resource back; a GET of an unknown id is a bare 404.

Orders (JSON only, ``output_format=JSON``), as DESIGN.md says a real 8.2 serves them:
``orders``, ``order_details``, ``customers``, ``addresses``, ``order_states``,
``order_histories``, ``order_payments``, ``order_carriers``, ``messages``, ``currencies``,
``taxes``, ``countries``, ``states``, ``carriers``, ``configurations``. Lists take
``display`` (none: ids only), ``filter[field]`` (``[a|b]`` OR, ``[x]`` literal, ``[a,b]``
interval, ``>[x]``, ``<[x]``), ``sort=[f_ASC,g_DESC]`` and ``limit=offset,count`` (or
``count``); an empty answer is ``[]``. A date field's filter needs ``date=1`` (without it,
nothing matches); ``[a,b]`` on dates is SQL BETWEEN, inclusive at both ends, on naive
shop-local ``YYYY-MM-DD HH:MM:SS`` (the sim's :attr:`PrestaShopSim.timezone`); and the two
silent wrong answers: a bound with an ISO ``T`` makes the filter an equality on the lower
bound, anything after the closing ``]`` drops the filter (every row). ``date_upd`` moves, to
the whole second of :attr:`PrestaShopSim.clock`, on creation and on every
``order_histories`` POST (XML body; JSON is a 500), not on ``messages`` or an
``order_carriers`` tracking number. ``DELETE orders/{id}`` makes the order vanish.
A resource the key may not use (:attr:`PrestaShopSim.forbidden`) is 401, an unknown id a
404 with an empty body. Tests place and change orders with :meth:`PrestaShopSim.place_order`,
:meth:`PrestaShopSim.change_state`, :meth:`PrestaShopSim.add_message`,
:meth:`PrestaShopSim.set_tracking`, :meth:`PrestaShopSim.delete_order`;
:attr:`PrestaShopSim.garbage` answers 200 with a given body in place of the next answers.

PrestaShop itself has no rate limit; 429 with ``Retry-After`` comes from the proxy or WAF
in front of a shop, and 5xx from an overloaded PHP pool: both are injected with
:meth:`PrestaShopSim.fail`.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

from aiohttp import web

from tests.sims import Fault, Served

XLINK = "http://www.w3.org/1999/xlink"

# (name, required) in PrestaShop's order; a shortened but faithful subset of each resource.
PRODUCT_FIELDS = [
    ("id", False),
    ("id_manufacturer", False),
    ("id_supplier", False),
    ("id_category_default", False),
    ("new", False),
    ("cache_default_attribute", False),
    ("id_default_image", False),
    ("id_tax_rules_group", False),
    ("position_in_category", False),
    ("manufacturer_name", False),
    ("quantity", False),
    ("type", False),
    ("id_shop_default", False),
    ("reference", False),
    ("supplier_reference", False),
    ("location", False),
    ("ean13", False),
    ("minimal_quantity", False),
    ("price", True),
    ("wholesale_price", False),
    ("unity", False),
    ("on_sale", False),
    ("active", False),
    ("available_for_order", False),
    ("show_price", False),
    ("visibility", False),
    ("date_add", False),
    ("date_upd", False),
]
PRODUCT_I18N = ["name", "link_rewrite", "description_short"]
COMBINATION_FIELDS = [
    ("id", False),
    ("id_product", True),
    ("location", False),
    ("ean13", False),
    ("quantity", False),
    ("reference", False),
    ("supplier_reference", False),
    ("wholesale_price", False),
    ("price", False),
    ("ecotax", False),
    ("weight", False),
    ("unit_price_impact", False),
    ("minimal_quantity", True),
    ("default_on", False),
]
STOCK_FIELDS = [
    ("id", False),
    ("id_product", True),
    ("id_product_attribute", True),
    ("id_shop", False),
    ("id_shop_group", False),
    ("quantity", True),
    ("depends_on_stock", True),
    ("out_of_stock", True),
    ("location", False),
]

VIRTUAL = {"id", "position_in_category"}
"""Not columns but getter/setter pairs: left out of a PUT, they keep their value."""


@dataclass(frozen=True)
class Resource:
    plural: str
    singular: str
    fields: list[tuple[str, bool]]
    i18n: list[str] = field(default_factory=list)
    read_only: frozenset[str] = frozenset()
    """Fields the Webservice refuses on PUT (``setter: false``)."""

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.fields]


RESOURCES = {
    "products": Resource(
        "products",
        "product",
        PRODUCT_FIELDS,
        PRODUCT_I18N,
        frozenset({"manufacturer_name", "quantity"}),
    ),
    "combinations": Resource("combinations", "combination", COMBINATION_FIELDS),
    "stock_availables": Resource("stock_availables", "stock_available", STOCK_FIELDS),
}


class WsError(Exception):
    """An error answer: PrestaShop's error XML, or ``body`` as is (a proxy's, or none)."""

    def __init__(
        self,
        status: int,
        code: int = 0,
        message: str = "",
        *,
        body: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.headers = status, dict(headers or {})
        self.body = error_body(code, message) if body is None else body
        if status == 401:
            self.headers["WWW-Authenticate"] = (
                'Basic realm="Welcome to PrestaShop Webservice, please enter the '
                'authentication key as the login. No password required."'
            )

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            text=self.body,
            headers=self.headers,
            content_type="text/xml" if self.body.startswith("<?xml") else "text/html",
        )


def cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def document(inner: str) -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<prestashop xmlns:xlink="{XLINK}">\n'
        f"{inner}</prestashop>\n"
    )


def error_body(code: int, message: str) -> str:
    return document(
        f"<errors>\n<error>\n<code>{cdata(str(code))}</code>\n"
        f"<message>{cdata(message)}</message>\n</error>\n</errors>\n"
    )


@dataclass
class PrestaShopSim(Served):
    """One shop: its rows per resource, what it was sent, and failures to inject."""

    key: str = "K" * 32
    languages: tuple[int, ...] = (1, 2)
    rows: dict[str, dict[int, dict[str, str]]] = field(
        default_factory=lambda: {name: {} for name in RESOURCES}
    )
    names: dict[int, dict[str, dict[int, str]]] = field(default_factory=dict)
    """i18n fields of products: id -> field -> language id -> text."""
    puts: list[tuple[str, ET.Element]] = field(default_factory=list)
    """Every PUT body as received, with its path."""
    requests: list[str] = field(default_factory=list)
    injected: list[Fault] = field(default_factory=list)
    delay: float = 0.0
    """Seconds each request takes, so concurrent clients overlap."""
    in_flight: int = 0
    max_in_flight: int = 0
    timezone: str = "Europe/Madrid"
    """PS_TIMEZONE: every date of the order resources is naive in it."""
    now: datetime = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    """The default clock's time (aware); :meth:`tick` moves it."""
    clock: Callable[[], datetime] | None = None
    """An injected clock (aware datetimes); None: :attr:`now`."""
    tables: dict[str, dict[int, dict[str, Any]]] = field(default_factory=lambda: seed_tables())
    """The order resources' rows by id, values as the Webservice's JSON gives them."""
    forbidden: set[str] = field(default_factory=set)
    """Resources this key may not use: 401."""
    garbage: list[str] = field(default_factory=list)
    """Bodies answered with 200 in place of the next answers."""

    # -- building the catalogue -------------------------------------------------------

    def _insert(self, resource: str, values: dict[str, str]) -> int:
        table = self.rows[resource]
        new_id = max(table, default=0) + 1
        row = dict.fromkeys(RESOURCES[resource].names, "")
        row.update(values, id=str(new_id))
        table[new_id] = row
        return new_id

    def add_product(self, reference: str, price: str, quantity: int = 0) -> int:
        product = self._insert(
            "products",
            {
                "reference": reference,
                "price": f"{Decimal(price):.6f}",
                "id_category_default": "2",
                "position_in_category": "5",
                "manufacturer_name": "ACME",
                "type": "simple",
                "id_shop_default": "1",
                "minimal_quantity": "1",
                "active": "1",
                "visibility": "both",
                "location": "aisle 4",
                "wholesale_price": "4.000000",
                "cache_default_attribute": "0",
                "id_tax_rules_group": "1",
            },
        )
        self.names[product] = {
            "name": {lang: f"{reference} name {lang}" for lang in self.languages},
            "link_rewrite": {lang: reference.lower() for lang in self.languages},
            "description_short": {lang: "<p>short</p>" for lang in self.languages},
        }
        self._add_stock(product, 0, quantity)
        return product

    def add_combination(
        self, product: int, reference: str, impact: str = "0", quantity: int = 0
    ) -> int:
        combination = self._insert(
            "combinations",
            {
                "id_product": str(product),
                "reference": reference,
                "minimal_quantity": "1",
                "price": f"{Decimal(impact):.6f}",
                "location": "bin 7",
                "default_on": "0",
            },
        )
        self.rows["products"][product]["cache_default_attribute"] = str(combination)
        self._add_stock(product, combination, quantity)
        return combination

    def _add_stock(self, product: int, attribute: int, quantity: int) -> None:
        self._insert(
            "stock_availables",
            {
                "id_product": str(product),
                "id_product_attribute": str(attribute),
                "id_shop": "1",
                "id_shop_group": "0",
                "quantity": str(quantity),
                "depends_on_stock": "0",
                "out_of_stock": "2",
                "location": "",
            },
        )

    def fail(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        """The next ``times`` requests answer ``status`` (e.g. 503, 429) instead."""
        self.injected.extend(Fault(status, retry_after) for _ in range(times))

    # -- reading the shop's state ----------------------------------------------------

    def _stock_row(self, product: int, attribute: int) -> dict[str, str]:
        return next(
            row
            for row in self.rows["stock_availables"].values()
            if row["id_product"] == str(product) and row["id_product_attribute"] == str(attribute)
        )

    def stock(self, product: int, attribute: int = 0) -> int:
        return int(self._stock_row(product, attribute)["quantity"])

    def price(self, product: int, attribute: int = 0) -> Decimal:
        """The final price before tax: base price plus the combination's impact."""
        base = Decimal(self.rows["products"][product]["price"])
        if attribute == 0:
            return base
        return base + Decimal(self.rows["combinations"][attribute]["price"] or "0")

    # -- the Webservice -----------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/{resource}", self._handle)
        app.router.add_route("*", "/api/{resource}/{id}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(f"{request.method} {request.path_qs}")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.Response:
        try:
            self._authenticate(request)
            if self.injected:
                raise self._injected(self.injected.pop(0))
            if self.garbage:
                return web.Response(text=self.garbage.pop(0), content_type="application/json")
            if request.match_info["resource"] in ORDER_RESOURCES:
                return await self._orders_api(request, request.match_info["resource"])
            resource = RESOURCES.get(request.match_info["resource"])
            if resource is None:
                raise WsError(
                    400, 27, f'Resource of type "{request.match_info["resource"]}" does not exists'
                )
            return await self._dispatch(request, resource)
        except WsError as error:
            return error.response()

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            raise WsError(
                401, 16, "Please enter the authentication key as the login. No password required"
            )
        login = base64.b64decode(header[6:]).decode().partition(":")[0]
        if len(login) != 32:
            raise WsError(401, 18, "Invalid authentication key format")
        if login != self.key:
            raise WsError(401, 20, "Authentification key is not active")

    @staticmethod
    def _injected(failure: Fault) -> WsError:
        if failure.status == 500:  # PHP itself failed: PrestaShop's own error XML
            return WsError(500, 2, "[PHP Warning #2] mysqli::real_connect(): Too many connections")
        # 429, 502, 503: the proxy in front of the shop answers, in HTML.
        return WsError(
            failure.status,
            body=f"<html><body>{failure.status}</body></html>",
            headers=failure.headers(),
        )

    async def _dispatch(self, request: web.Request, resource: Resource) -> web.Response:
        raw_id = request.match_info.get("id")
        if request.method == "GET" and raw_id is None:
            return self._ok(self._list(resource, request.query))
        if request.method == "GET":
            row = self.rows[resource.plural].get(int(raw_id or 0))
            if row is None:
                raise WsError(404, body="")  # PrestaShop answers a bare 404 here
            return self._ok(self._full(resource, row) + "\n")
        if request.method == "PUT" and raw_id is not None:
            body = await request.read()
            return self._ok(self._put(resource, int(raw_id), body, request.path) + "\n")
        raise WsError(405, 23, f"Method {request.method} is not valid")

    @staticmethod
    def _ok(inner: str) -> web.Response:
        return web.Response(text=document(inner), content_type="text/xml")

    # -- GET ----------------------------------------------------------------------------

    def _list(self, resource: Resource, query: object) -> str:
        assert hasattr(query, "items")
        filters: list[tuple[str, str]] = []
        display: str | None = None
        for key, value in query.items():
            match = re.fullmatch(r"filter\[(\w+)\]", key)
            if match:
                if match.group(1) not in resource.names:
                    raise WsError(
                        400, 32, f'This filter does not exist. Did you mean: "{match.group(1)}"?'
                    )
                filters.append((match.group(1), value))
            elif key == "display":
                display = value
        fields = self._display(resource, display)
        found = [
            row
            for row in self.rows[resource.plural].values()
            if all(self._matches(row[name], value) for name, value in filters)
        ]
        items = "".join(self._item(resource, row, fields) for row in found)
        return f"<{resource.plural}>\n{items}</{resource.plural}>\n"

    @staticmethod
    def _display(resource: Resource, display: str | None) -> list[str] | None:
        if display is None:
            return None
        if display == "full":
            return resource.names + resource.i18n
        match = re.fullmatch(r"\[(.*)\]", display)
        if match is None:
            raise WsError(
                400,
                36,
                "The 'display' syntax is wrong. You can set 'full' or "
                "'[field_1,field_2,field_3,...]'",
            )
        fields = match.group(1).split(",")
        for name in fields:
            if name not in resource.names + resource.i18n:
                raise WsError(
                    400,
                    35,
                    f'Unable to display this field "{name}". However, '
                    f"these are available: {', '.join(resource.names)}",
                )
        return fields

    @staticmethod
    def _matches(stored: str, value: str) -> bool:
        """``[x]`` literal and ``[a|b]`` OR, not case sensitive, as the docs say."""
        match = re.fullmatch(r"\[(.*)\]", value)
        if match is None:
            return stored.lower() == value.lower()
        inner = match.group(1)
        options = inner.split("|") if inner.find("|") > 0 else [inner]
        return stored.lower() in {option.lower() for option in options}

    def _item(self, resource: Resource, row: dict[str, str], fields: list[str] | None) -> str:
        if fields is None:  # the default list: ids with links only
            return (
                f'<{resource.singular} id="{row["id"]}" xlink:href="{self.url}/api/'
                f'{resource.plural}/{row["id"]}"/>\n'
            )
        return self._element(resource, row, fields)

    def _full(self, resource: Resource, row: dict[str, str]) -> str:
        return self._element(resource, row, resource.names + resource.i18n, associations=True)

    def _element(
        self, resource: Resource, row: dict[str, str], fields: list[str], associations: bool = False
    ) -> str:
        lines = [f"<{resource.singular}>"]
        for name in fields:
            if name in resource.i18n:
                lines.append(self._i18n(int(row["id"]), name))
            elif name in resource.read_only or name == "position_in_category":
                lines.append(f'\t<{name} notFilterable="true">{cdata(row[name])}</{name}>')
            else:
                lines.append(f"\t<{name}>{cdata(row[name])}</{name}>")
        if associations and resource.plural == "products":
            lines.append(self._associations(int(row["id"])))
        lines.append(f"</{resource.singular}>\n")
        return "\n".join(lines)

    def _i18n(self, product: int, name: str) -> str:
        texts = self.names[product][name]
        languages = "".join(
            f'<language id="{lang}" xlink:href="{self.url}/api/languages/'
            f'{lang}">{cdata(text)}</language>'
            for lang, text in texts.items()
        )
        return f"\t<{name}>{languages}</{name}>"

    def _associations(self, product: int) -> str:
        combinations = "".join(
            f"<combination><id>{cdata(str(cid))}</id></combination>"
            for cid, row in self.rows["combinations"].items()
            if row["id_product"] == str(product)
        )
        return (
            f'\t<associations><categories nodeType="category" api="categories">'
            f"<category><id>{cdata('2')}</id></category></categories>"
            f'<combinations nodeType="combination" api="combinations">{combinations}'
            f"</combinations></associations>"
        )

    # -- PUT ----------------------------------------------------------------------------

    def _put(self, resource: Resource, resource_id: int, body: bytes, path: str) -> str:
        try:
            root = ET.fromstring(body)
        except ET.ParseError as error:
            raise WsError(500, 127, f"XML error : {error}") from None
        entity = root.find(resource.singular)
        if entity is None or (entity.findtext("id") or "").strip() == "":
            raise WsError(400, 90, "id is required when modifying a resource")
        self.puts.append((path, entity))
        row = self.rows[resource.plural].get(int((entity.findtext("id") or "0").strip()))
        if row is None or row["id"] != str(resource_id):
            raise WsError(404, 92, "Invalid ID")
        updated = self._updated(resource, row, entity)
        if resource.plural == "products":
            self._check_product(updated)
            self.names[resource_id] = self._updated_i18n(resource, resource_id, entity)
        row.update(updated)
        return self._full(resource, row)

    def _updated(
        self, resource: Resource, row: dict[str, str], entity: ET.Element
    ) -> dict[str, str]:
        """PrestaShop's field loop: set what is sent, reset what is optional and missing."""
        updated = dict(row)
        for name, required in resource.fields:
            element = entity.find(name)
            if element is not None:
                if name in resource.read_only:
                    raise WsError(
                        400,
                        93,
                        f'parameter "{name}" not writable. Please remove '
                        "this attribute of this XML",
                    )
                updated[name] = (element.text or "").strip()
                if name == "position_in_category":
                    self._check_position(row, updated[name])
            elif required:
                raise WsError(400, 41, f'parameter "{name}" required')
            elif name not in resource.read_only and name not in VIRTUAL:
                updated[name] = ""
        return updated

    def _check_position(self, row: dict[str, str], position: str) -> None:
        """What a GET returned as the position is not always one a PUT may set (#31340)."""
        in_category = [
            other
            for other in self.rows["products"].values()
            if other["id_category_default"] == row["id_category_default"]
        ]
        if int(position or 0) > len(in_category) - 1:
            raise WsError(
                500,
                135,
                "You cannot set a position greater than the total number "
                "of products in the category, minus 1 (position numbering "
                "starts at 0).",
            )

    def _updated_i18n(
        self, resource: Resource, product: int, entity: ET.Element
    ) -> dict[str, dict[int, str]]:
        texts: dict[str, dict[int, str]] = {}
        for name in resource.i18n:
            element = entity.find(name)
            sent = (
                {}
                if element is None
                else {
                    int(lang.get("id", "0")): (lang.text or "").strip()
                    for lang in element.findall("language")
                }
            )
            if name in ("name", "link_rewrite") and not all(
                sent.get(lang) for lang in self.languages
            ):
                raise WsError(400, 84, f'Validation error: "Property Product->{name} is empty"')
            texts[name] = sent
        return texts

    @staticmethod
    def _check_product(updated: dict[str, str]) -> None:
        try:
            valid = Decimal(updated["price"]) >= 0
        except ArithmeticError:
            valid = False
        if not valid:
            raise WsError(400, 85, 'Validation error: "Property Product->price is not valid"')

    # -- the log ------------------------------------------------------------------------

    def put_paths(self) -> Iterator[str]:
        return (path for path, _ in self.puts)

    # -- orders (JSON) --------------------------------------------------------------------

    def tick(self, seconds: float = 1) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def local_now(self) -> str:
        """The clock in the shop's zone, naive, whole seconds: what MySQL's NOW() stores."""
        moment = self.clock() if self.clock is not None else self.now
        return moment.astimezone(ZoneInfo(self.timezone)).strftime(LOCAL)

    def _add(self, plural: str, row: dict[str, Any]) -> int:
        table = self.tables[plural]
        new_id = max(table, default=0) + 1
        table[new_id] = {"id": new_id, **row}
        return new_id

    def place_order(
        self,
        lines: list[tuple[str, int, str]] | None = None,
        *,
        guest: bool = False,
        state: int = 10,
        email: str = "ana@example.com",
        shipping: str = "5.00",
    ) -> int:
        """A new order of ``(reference, quantity, unit price ex tax)`` lines at 21 %, by a
        new customer (a guest or not) with one address, paid by bank wire, in ``state``
        (10: awaiting bank wire; 2: payment accepted); its id."""
        stamp = self.local_now()
        customer = self._add("customers", customer_row(email, guest, stamp))
        address = self._add("addresses", address_row(customer, stamp))
        lines = lines or [("MUG", 2, "10.00")]
        details = [
            detail_values(reference, quantity, Decimal(price))
            for reference, quantity, price in lines
        ]
        products = sum((Decimal(d["total_price_tax_excl"]) for d in details), Decimal(0))
        products_wt = sum((Decimal(d["total_price_tax_incl"]) for d in details), Decimal(0))
        ship_wt = Decimal(shipping)
        ship = (ship_wt / Decimal("1.21")).quantize(Decimal("0.01"))
        reference = f"REF{len(self.tables['orders']) + 1:06d}"
        order = self._add(
            "orders",
            order_row(
                customer, address, state, stamp, reference, products, products_wt, ship, ship_wt
            ),
        )
        for values in details:
            self._add("order_details", {"id_order": str(order), **values})
        self._add("order_carriers", carrier_row(order, ship, ship_wt, stamp))
        self._add("order_histories", history_row(order, state, stamp))
        if self.tables["order_states"][state]["paid"] == "1":
            self._add("order_payments", payment_row(reference, products_wt + ship_wt, stamp))
        return order

    def change_state(self, order_id: int, state: int) -> None:
        """An ``order_histories`` POST: the state changes and ``date_upd`` moves."""
        stamp = self.local_now()
        self._add("order_histories", history_row(order_id, state, stamp))
        order = self.tables["orders"][order_id]
        order.update(current_state=str(state), date_upd=stamp)
        paid = self.tables["order_states"][state]["paid"] == "1"
        reference = order["reference"]
        if paid and not any(
            row["order_reference"] == reference for row in self.tables["order_payments"].values()
        ):
            self._add("order_payments", payment_row(reference, Decimal(order["total_paid"]), stamp))

    def add_message(self, order_id: int, text: str) -> int:
        """A private message: ``date_upd`` stays."""
        return self._add(
            "messages",
            {"id_cart": "0", "id_order": str(order_id), "id_customer": "0", "id_employee": "1",
             "message": text, "private": "1", "date_add": self.local_now()},
        )  # fmt: skip

    def set_tracking(self, order_id: int, number: str) -> None:
        """The tracking number in ``order_carriers``: ``date_upd`` stays."""
        for row in self.tables["order_carriers"].values():
            if row["id_order"] == str(order_id):
                row["tracking_number"] = number

    def delete_order(self, order_id: int) -> None:
        del self.tables["orders"][order_id]

    def date_upd(self, order_id: int) -> str:
        return str(self.tables["orders"][order_id]["date_upd"])

    async def _orders_api(self, request: web.Request, plural: str) -> web.Response:
        if plural in self.forbidden:
            raise WsError(401, 25, f"No permission to access this resource ({plural})")
        raw_id = request.match_info.get("id")
        if (
            request.method == "POST"
            and raw_id is None
            and plural in ("order_histories", "messages")
        ):
            return self._post(plural, await request.read())
        if request.method == "DELETE" and raw_id is not None and plural == "orders":
            if self.tables["orders"].pop(int(raw_id) if raw_id.isdigit() else 0, None) is None:
                raise WsError(404, body="")
            return web.Response(status=200, text="")
        if request.method != "GET":
            raise WsError(405, 23, f"Method {request.method} is not valid")
        self.tables["configurations"][1] = {
            **self.tables["configurations"][2],
            "id": 1,
            "name": "PS_TIMEZONE",
            "value": self.timezone,
        }
        if request.query.get("output_format", request.query.get("io_format")) != "JSON":
            raise WsError(400, 0, "this simulator serves the order resources as JSON only")
        if raw_id is not None:
            row = self.tables[plural].get(int(raw_id) if raw_id.isdigit() else 0)
            if row is None:
                raise WsError(404, body="")
            return web.json_response({ORDER_RESOURCES[plural]: self._shown(plural, row)})
        return web.json_response(self._json_list(plural, request.query))

    def _post(self, plural: str, body: bytes) -> web.Response:
        try:
            root = ET.fromstring(body)
        except ET.ParseError as error:
            # A JSON body: PrestaShop's XML parser fails inside PHP.
            raise WsError(500, 127, f"XML error : {error}") from None
        entity = root.find(ORDER_RESOURCES[plural])
        order_id = int((entity.findtext("id_order") if entity is not None else "") or 0)
        if order_id not in self.tables["orders"]:
            raise WsError(400, 0, 'Validation error: "Property OrderHistory->id_order is empty"')
        if plural == "messages":
            new_id = self.add_message(
                order_id, (entity.findtext("message") if entity is not None else "") or ""
            )
        else:
            state = int((entity.findtext("id_order_state") if entity is not None else "") or 0)
            if state not in self.tables["order_states"]:
                raise WsError(
                    400, 0, 'Validation error: "Property OrderHistory->id_order_state is empty"'
                )
            self.change_state(order_id, state)
            new_id = max(self.tables["order_histories"])
        row = self.tables[plural][new_id]
        inner = "".join(f"<{key}>{cdata(str(value))}</{key}>" for key, value in row.items())
        singular = ORDER_RESOURCES[plural]
        return web.Response(
            status=201,
            text=document(f"<{singular}>{inner}</{singular}>\n"),
            content_type="text/xml",
        )

    def _shown(self, plural: str, row: dict[str, Any]) -> dict[str, Any]:
        shown = dict(row)
        if plural == "orders":
            shown["associations"] = {
                "order_rows": [
                    {"id": str(detail["id"]), "product_id": detail["product_id"],
                     "product_attribute_id": detail["product_attribute_id"],
                     "product_quantity": detail["product_quantity"],
                     "product_name": detail["product_name"],
                     "product_reference": detail["product_reference"],
                     "product_price": detail["product_price"],
                     "unit_price_tax_incl": detail["unit_price_tax_incl"],
                     "unit_price_tax_excl": detail["unit_price_tax_excl"]}
                    for detail in self.tables["order_details"].values()
                    if detail["id_order"] == str(row["id"])
                ]
            }  # fmt: skip
        return shown

    def _json_list(self, plural: str, query: Any) -> Any:
        rows = [self._shown(plural, row) for row in self.tables[plural].values()]
        names = set(rows[0]) if rows else {"id"}
        dates = query.get("date") == "1"
        for key, value in query.items():
            match = re.fullmatch(r"filter\[(\w+)\]", key)
            if match is None:
                continue
            name = match.group(1)
            if rows and name not in names:
                raise WsError(400, 32, f'This filter does not exist. Did you mean: "{name}"?')
            rows = [row for row in rows if row_matches(str(row.get(name, "")), value, name, dates)]
        rows = sorted_rows(rows, query.get("sort"))
        rows = limited(rows, query.get("limit"))
        if not rows:
            return []
        return {plural: [displayed(row, query.get("display")) for row in rows]}


LOCAL = "%Y-%m-%d %H:%M:%S"
_STAMP = r"\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2})?"
_DATE_FIELDS = {"date_add", "date_upd", "invoice_date", "delivery_date"}


def row_matches(stored: str, value: str, name: str, dates: bool) -> bool:
    """PrestaShop's filter on one field, with its silent wrong answers on dates."""
    if name in _DATE_FIELDS and not dates:
        return False  # a date filter without date=1 matches nothing
    match = re.fullmatch(r"([<>]?)\[(.*?)\](.*)", value, re.DOTALL)
    if match is None:
        return stored.lower() == value.lower()
    operator, inner, after = match.groups()
    if after:
        return True  # anything after the closing ] drops the filter: every row
    if operator in "<>" and operator:
        left, right = _ordered(stored, name), _ordered(inner, name)
        if type(left) is not type(right):
            return False
        return bool(left > right) if operator == ">" else bool(left < right)  # type: ignore[operator]
    if "|" in inner:
        return stored.lower() in {option.lower() for option in inner.split("|")}
    low, comma, high = inner.partition(",")
    if comma and name in _DATE_FIELDS:
        if not (re.fullmatch(_STAMP, low) and re.fullmatch(_STAMP, high)):
            # The interval's pattern fails (an ISO T): an equality on the lower bound.
            return stored == low.replace("T", " ")[:19]
        return low <= stored <= (high if len(high) > 10 else high + " 00:00:00")
    if comma:
        values = [_ordered(text, name) for text in (low, stored, high)]
        if len({type(item) for item in values}) > 1:
            return False
        return bool(values[0] <= values[1] <= values[2])  # type: ignore[operator]
    return stored.lower() == inner.lower()


def _ordered(value: str, name: str) -> Decimal | str:
    if name in _DATE_FIELDS:
        return value
    try:
        return Decimal(value)
    except ArithmeticError:
        return value


def sorted_rows(rows: list[dict[str, Any]], sort: str | None) -> list[dict[str, Any]]:
    if not sort:
        return sorted(rows, key=lambda row: int(row["id"]))
    keys = re.fullmatch(r"\[(.*)\]", sort)
    if keys is None:
        raise WsError(
            400,
            38,
            "The 'sort' value has to be formed as this example: 'field_ASC' or "
            "'[field_1_DESC,field_2_ASC,field_3_ASC,...]'",
        )
    for key in reversed(keys.group(1).split(",")):
        name, _, direction = key.rpartition("_")
        rows = sorted(
            rows,
            key=lambda row: _ordered(str(row.get(name, "")), name),
            reverse=direction == "DESC",
        )
    return rows


def limited(rows: list[dict[str, Any]], limit: str | None) -> list[dict[str, Any]]:
    if not limit:
        return rows
    offset, _, count = limit.partition(",") if "," in limit else ("0", "", limit)
    start = int(offset)
    return rows[start : start + int(count)]


def displayed(row: dict[str, Any], display: str | None) -> dict[str, Any]:
    if display is None:
        return {"id": row["id"]}
    if display == "full":
        return row
    fields = display.strip("[]").split(",")
    return {name: row[name] for name in fields if name in row}


ORDER_RESOURCES = {
    "orders": "order",
    "order_details": "order_detail",
    "customers": "customer",
    "addresses": "address",
    "order_states": "order_state",
    "order_histories": "order_history",
    "order_payments": "order_payment",
    "order_carriers": "order_carrier",
    "messages": "message",
    "currencies": "currency",
    "taxes": "tax",
    "countries": "country",
    "states": "state",
    "carriers": "carrier",
    "configurations": "configuration",
}


def _i18n(text: str) -> list[dict[str, str]]:
    return [{"id": "1", "value": text}]


def _state(name: str, paid: str = "0", shipped: str = "0") -> dict[str, Any]:
    return {"unremovable": "1", "delivery": shipped, "hidden": "0", "send_email": "0",
            "module_name": "", "invoice": paid, "color": "#4169E1", "logable": paid,
            "shipped": shipped, "paid": paid, "pdf_delivery": "0", "pdf_invoice": "0",
            "deleted": "0", "name": _i18n(name), "template": _i18n("")}  # fmt: skip


def seed_tables() -> dict[str, dict[int, dict[str, Any]]]:
    """A fresh shop's lookups (PrestaShop's default order states and configuration ids)."""
    states = {1: _state("Awaiting check payment"), 2: _state("Payment accepted", "1"),
              3: _state("Processing in progress", "1"), 4: _state("Shipped", "1", "1"),
              5: _state("Delivered", "1", "1"), 6: _state("Canceled"),
              7: _state("Refunded", "1"), 8: _state("Payment error"),
              10: _state("Awaiting bank wire payment"),
              13: _state("Awaiting Cash On Delivery validation")}  # fmt: skip
    configuration = {"PS_OS_CANCELED": "6", "PS_OS_REFUND": "7", "PS_OS_ERROR": "8",
                     "PS_OS_COD_VALIDATION": "13", "PS_OS_DELIVERED": "5"}  # fmt: skip
    tables: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in ORDER_RESOURCES}
    tables["order_states"] = {key: {"id": key, **row} for key, row in states.items()}
    tables["configurations"] = {
        index: {"id": index, "value": value, "name": name, "id_shop_group": "", "id_shop": "",
                "date_add": "2026-01-01 00:00:00", "date_upd": "2026-01-01 00:00:00"}
        for index, (name, value) in enumerate(configuration.items(), start=2)
    }  # fmt: skip
    tables["currencies"] = {1: {"id": 1, "name": _i18n("Euro"), "iso_code": "EUR",
                                "numeric_iso_code": "978", "precision": "2",
                                "conversion_rate": "1.000000", "deleted": "0",
                                "active": "1"}}  # fmt: skip
    tables["taxes"] = {1: {"id": 1, "rate": "21.000", "active": "1", "deleted": "0",
                           "name": _i18n("IVA ES 21%")}}  # fmt: skip
    tables["countries"] = {6: {"id": 6, "id_zone": "1", "iso_code": "ES", "active": "1",
                               "contains_states": "1", "name": _i18n("Spain")}}  # fmt: skip
    tables["states"] = {313: {"id": 313, "id_zone": "1", "id_country": "6", "iso_code": "M",
                              "name": "Madrid", "active": "1"}}  # fmt: skip
    tables["carriers"] = {2: {"id": 2, "deleted": "0", "name": "Mensajería 24h", "active": "1",
                              "is_free": "0", "delay": _i18n("24h")}}  # fmt: skip
    return tables


def customer_row(email: str, guest: bool, stamp: str) -> dict[str, Any]:
    return {"id_default_group": "2" if guest else "3", "id_lang": "1",
            "last_passwd_gen": stamp, "secure_key": "d41d8cd98f00b204e9800998ecf8427e",
            "deleted": "0", "passwd": "$2y$10$SiMuLaTeDhAsHsImUlAtEdHaShSiMuLaTeDhAsHsImUlAtEdHa",
            "lastname": "García", "firstname": "Ana", "email": email, "company": "",
            "active": "1", "note": "", "is_guest": "1" if guest else "0", "id_shop": "1",
            "id_shop_group": "1", "date_add": stamp, "date_upd": stamp,
            "reset_password_token": "",
            "reset_password_validity": "0000-00-00 00:00:00"}  # fmt: skip


def address_row(customer: int, stamp: str) -> dict[str, Any]:
    return {"id_customer": str(customer), "id_manufacturer": "0", "id_supplier": "0",
            "id_warehouse": "0", "id_country": "6", "id_state": "313", "alias": "Mi dirección",
            "company": "", "lastname": "García", "firstname": "Ana", "vat_number": "",
            "address1": "Calle Mayor 1", "address2": "", "postcode": "28013", "city": "Madrid",
            "other": "", "phone": "", "phone_mobile": "600111222", "dni": "12345678Z",
            "deleted": "0", "date_add": stamp, "date_upd": stamp}  # fmt: skip


def _six(amount: Decimal) -> str:
    return f"{amount:.6f}"


def detail_values(reference: str, quantity: int, price: Decimal) -> dict[str, Any]:
    excl = price * quantity
    incl = (excl * Decimal("1.21")).quantize(Decimal("0.01"))
    return {"product_id": "1", "product_attribute_id": "0", "id_shop": "1", "id_warehouse": "0",
            "product_name": reference.title(), "product_quantity": str(quantity),
            "product_price": _six(price), "reduction_percent": "0.00",
            "product_reference": reference, "id_tax_rules_group": "1",
            "unit_price_tax_incl": _six((price * Decimal("1.21")).quantize(Decimal("0.000001"))),
            "unit_price_tax_excl": _six(price), "total_price_tax_incl": _six(incl),
            "total_price_tax_excl": _six(excl), "original_product_price": _six(price),
            "associations": {"taxes": [{"id": "1"}]}}  # fmt: skip


def order_row(
    customer: int, address: int, state: int, stamp: str, reference: str,
    products: Decimal, products_wt: Decimal, ship: Decimal, ship_wt: Decimal,
) -> dict[str, Any]:  # fmt: skip
    paid_wt, paid = products_wt + ship_wt, products + ship
    return {"id_address_delivery": str(address), "id_address_invoice": str(address),
            "id_cart": "1", "id_currency": "1", "id_lang": "1", "id_customer": str(customer),
            "id_carrier": "2", "current_state": str(state), "module": "ps_wirepayment",
            "valid": "0", "date_add": stamp, "date_upd": stamp, "shipping_number": "",
            "note": "", "id_shop_group": "1", "id_shop": "1",
            "secure_key": "d41d8cd98f00b204e9800998ecf8427e", "payment": "Bank transfer",
            "total_discounts": "0.000000", "total_discounts_tax_incl": "0.000000",
            "total_discounts_tax_excl": "0.000000", "total_paid": _six(paid_wt),
            "total_paid_tax_incl": _six(paid_wt), "total_paid_tax_excl": _six(paid),
            "total_paid_real": "0.000000", "total_products": _six(products),
            "total_products_wt": _six(products_wt), "total_shipping": _six(ship_wt),
            "total_shipping_tax_incl": _six(ship_wt), "total_shipping_tax_excl": _six(ship),
            "carrier_tax_rate": "21.000", "total_wrapping": "0.000000",
            "total_wrapping_tax_incl": "0.000000", "total_wrapping_tax_excl": "0.000000",
            "round_mode": "2", "round_type": "2", "conversion_rate": "1.000000",
            "reference": reference}  # fmt: skip


def carrier_row(order: int, ship: Decimal, ship_wt: Decimal, stamp: str) -> dict[str, Any]:
    return {"id_order": str(order), "id_carrier": "2", "id_order_invoice": "0",
            "weight": "0.000000", "shipping_cost_tax_excl": _six(ship),
            "shipping_cost_tax_incl": _six(ship_wt), "tracking_number": "",
            "date_add": stamp}  # fmt: skip


def history_row(order: int, state: int, stamp: str) -> dict[str, Any]:
    return {"id_employee": "0", "id_order_state": str(state), "id_order": str(order),
            "date_add": stamp}  # fmt: skip


def payment_row(reference: str, amount: Decimal, stamp: str) -> dict[str, Any]:
    return {"order_reference": reference, "id_currency": "1", "amount": _six(amount),
            "payment_method": "Bank transfer", "conversion_rate": "1.000000",
            "transaction_id": f"TX-{reference}", "card_number": "", "card_brand": "",
            "card_expiration": "", "card_holder": "", "date_add": stamp}  # fmt: skip
