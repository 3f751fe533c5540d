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

PrestaShop itself has no rate limit; 429 with ``Retry-After`` comes from the proxy or WAF
in front of a shop, and 5xx from an overloaded PHP pool: both are injected with
:meth:`PrestaShopSim.fail`.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from xml.etree import ElementTree as ET

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
