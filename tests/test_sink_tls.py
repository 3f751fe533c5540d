"""The HTTP sinks against shops served over real TLS by certificates of a private CA
(made with openssl, tests/tls_support.py): ``ca_file`` trusts that CA, and a certificate
the sink cannot verify says what is wrong with it rather than "cannot connect"."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from relay.model import Status
from relay.sinks import magento, prestashop, shopify, webhook, woocommerce
from relay.sinks.base import SinkUnavailable
from tests.sims import Served, sink_maker, statuses, stock
from tests.sims.magento import TOKEN, MagentoSim
from tests.sims.prestashop import PrestaShopSim
from tests.sims.shopify import ShopifySim
from tests.sims.webhook import WebhookReceiver
from tests.sims.woocommerce import WooCommerceSim
from tests.support import write_secret
from tests.tls_support import HAVE_OPENSSL, make_ca, make_cert

pytestmark = pytest.mark.skipif(not HAVE_OPENSSL, reason="needs the openssl command")

WooSink = Callable[..., woocommerce.WooCommerceSink]


@dataclass(frozen=True)
class Pki:
    folder: Path
    ca: Path
    """The private CA that signed the shops' certificates."""
    other_ca: Path
    """A CA that signed nothing the shops show."""

    def server(self, name: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.folder / f"{name}.pem", self.folder / f"{name}.key")
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = make_ca(folder, "shop-ca"), make_ca(folder, "other-ca")
    make_cert(folder, "shop-ca", "shop", "shop.test")  # lists IP 127.0.0.1 too
    make_cert(folder, "shop-ca", "expired", "shop.test", expired=True)
    make_cert(folder, "shop-ca", "elsewhere", "elsewhere.test", ip=None)
    return Pki(folder, ca, other)


@asynccontextmanager
async def https(sim: Served, context: ssl.SSLContext) -> AsyncIterator[None]:
    sim.tls = context
    async with sim:
        yield


@pytest.fixture
async def shop(pki: Pki) -> AsyncIterator[WooCommerceSim]:
    sim = WooCommerceSim()
    async with https(sim, pki.server("shop")):
        sim.add("MUG", stock=1)
        yield sim


@pytest.fixture
async def make_sink(tmp_path: Path, shop: WooCommerceSim) -> AsyncIterator[WooSink]:
    write_secret(tmp_path / "key", shop.consumer_key)
    write_secret(tmp_path / "secret", shop.consumer_secret)
    async with sink_maker(
        woocommerce.WooCommerceSink,
        woocommerce.Settings,
        type="woocommerce",
        name="shop",
        url=shop.url,
        warehouse="MAD",
        backoff="10ms",
        consumer_key_file=tmp_path / "key",
        consumer_secret_file=tmp_path / "secret",
    ) as make:
        yield make


def untrusted(url: str, why: str) -> str:
    host_port = url.removeprefix("https://").split("/")[0]
    return (
        f"woocommerce shop: cannot connect to {host_port}: the shop's certificate is not "
        f"trusted (certificate verify failed: {why}): set ca_file to the CA that signed it"
    )


async def test_a_private_ca_without_ca_file_is_named_and_not_retried(
    shop: WooCommerceSim, make_sink: WooSink
) -> None:
    with pytest.raises(SinkUnavailable) as raised:
        await make_sink(max_retries=3).apply([stock("MUG", 2)])
    # No "(gave up after N attempts)": no retry makes an untrusted certificate trusted.
    assert str(raised.value) == untrusted(shop.url, "unable to get local issuer certificate")
    assert shop.hits == []


async def test_the_wrong_ca_file_is_not_trusted_either(
    shop: WooCommerceSim, make_sink: WooSink, pki: Pki
) -> None:
    with pytest.raises(SinkUnavailable) as raised:
        await make_sink(ca_file=pki.other_ca).apply([stock("MUG", 2)])
    assert str(raised.value) == untrusted(shop.url, "unable to get local issuer certificate")


@pytest.mark.parametrize("auth", ["basic", "query"])
async def test_with_ca_file_the_key_goes_as_it_is_over_https(
    shop: WooCommerceSim, make_sink: WooSink, pki: Pki, auth: str
) -> None:
    results = await make_sink(ca_file=pki.ca, auth=auth).apply([stock("MUG", 2)])
    assert statuses(results) == [Status.APPLIED]
    assert shop.stock("MUG") == 2
    assert not any(name.startswith("oauth_") for hit in shop.hits for name in hit.query)


@pytest.mark.parametrize("auth", ["basic", "query"])
async def test_a_wrong_secret_over_https_says_check_consumer_secret(
    shop: WooCommerceSim, make_sink: WooSink, pki: Pki, auth: str
) -> None:
    shop.consumer_secret = "cs_rotated"
    with pytest.raises(SinkUnavailable) as raised:
        await make_sink(ca_file=pki.ca, auth=auth).apply([stock("MUG", 2)])
    assert str(raised.value) == (
        "woocommerce shop: the shop refused the request (HTTP 401 "
        "woocommerce_rest_authentication_error: Consumer secret is invalid.); the secret does "
        "not go with the key: check consumer_secret"
    )
    assert len(shop.hits) == 1


async def test_an_unknown_key_over_https_is_taken_as_anonymous(
    shop: WooCommerceSim, make_sink: WooSink, pki: Pki
) -> None:
    shop.consumer_key = "ck_other"  # WooCommerce names no error of its own for this one
    with pytest.raises(SinkUnavailable) as raised:
        await make_sink(ca_file=pki.ca).apply([stock("MUG", 2)])
    assert "HTTP 401 woocommerce_rest_cannot_view" in str(raised.value)
    assert (
        "it knows no such consumer key, or a server in front of it drops the Authorization "
        'header (then set auth = "query")' in str(raised.value)
    )


@pytest.mark.parametrize(
    ("certificate", "meaning"),
    [
        (
            "expired",
            "the shop's certificate has expired (or this machine's clock is wrong) "
            "(certificate verify failed: certificate has expired)",
        ),
        (
            "elsewhere",
            "the shop's certificate is not issued for 127.0.0.1: use a URL with a name "
            "the certificate lists (certificate verify failed: IP address mismatch",
        ),
    ],
)
async def test_a_certificate_the_ca_file_cannot_save_says_why(
    tmp_path: Path, pki: Pki, certificate: str, meaning: str
) -> None:
    sim = WooCommerceSim()
    async with https(sim, pki.server(certificate)):
        write_secret(tmp_path / "key", sim.consumer_key)
        settings = woocommerce.Settings(
            type="woocommerce",
            name="shop",
            url=sim.url,
            warehouse="MAD",
            ca_file=pki.ca,
            consumer_key_file=tmp_path / "key",
            consumer_secret_file=tmp_path / "key",
        )
        sink = woocommerce.WooCommerceSink(settings)
        try:
            with pytest.raises(SinkUnavailable, match=r"cannot connect to 127\.0\.0\.1:") as raised:
                await sink.apply([stock("MUG", 2)])
        finally:
            await sink.close()
    assert meaning in str(raised.value) and "set ca_file" not in str(raised.value)


def test_a_ca_file_that_cannot_be_loaded_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("k")
    base: dict[str, Any] = {
        "type": "woocommerce",
        "name": "shop",
        "warehouse": "MAD",
        "url": "https://shop.example.com",
        "consumer_key_env": "K",
        "consumer_secret_env": "S",
    }
    (tmp_path / "not.pem").write_text("this is no certificate\n")
    for path, words in [
        (tmp_path / "none.pem", "No such file or directory"),
        (tmp_path / "not.pem", "no certificate or crl found"),
    ]:
        with pytest.raises(ValidationError) as raised:
            woocommerce.Settings(**base, ca_file=path)
        (problem,) = raised.value.errors()
        assert (problem["loc"], problem["msg"]) == (
            ("ca_file",),
            f"Value error, cannot load {path}: {words}",
        )


# --- the other HTTP sinks take ca_file too ------------------------------------------------


@dataclass(frozen=True)
class OtherShop:
    """How to stand up one sink's simulator and the settings that reach it."""

    sim: Callable[[], Served]
    settings: Callable[[Served, Path], dict[str, Any]]
    sink: Callable[[Any], Any]
    model: Any


def _webhook_settings(sim: Served, folder: Path) -> dict[str, Any]:
    write_secret(folder / "secret", b"s3cret")
    return {"type": "webhook", "name": "shop", "url": sim.url, "secret_file": folder / "secret"}


def _magento(sim: Served, folder: Path) -> dict[str, Any]:
    assert isinstance(sim, MagentoSim)
    write_secret(folder / "token", TOKEN)
    sim.add_source("madrid")
    sim.add_product("MUG", "4.00")
    return {
        "type": "magento",
        "name": "shop",
        "url": sim.url,
        "token_file": folder / "token",
        "sources": {"MAD": "madrid"},
    }


def _prestashop(sim: Served, folder: Path) -> dict[str, Any]:
    assert isinstance(sim, PrestaShopSim)
    write_secret(folder / "key", sim.key)
    sim.add_product("MUG", "9.90", quantity=1)
    return {
        "type": "prestashop",
        "name": "shop",
        "url": sim.url,
        "api_key_file": folder / "key",
        "warehouse": "MAD",
    }


def _shopify(sim: Served, folder: Path) -> dict[str, Any]:
    assert isinstance(sim, ShopifySim)
    write_secret(folder / "token", sim.token)
    madrid = sim.add_location()
    sim.add_product(["MUG"], price="4.00", stock={madrid: 0})
    return {
        "type": "shopify",
        "name": "shop",
        "shop_url": sim.url,
        "access_token_file": folder / "token",
        "locations": {"MAD": madrid},
    }


OTHERS = {
    "webhook": OtherShop(
        lambda: WebhookReceiver(b"s3cret"), _webhook_settings, webhook.WebhookSink, webhook.Settings
    ),
    "magento": OtherShop(MagentoSim, _magento, magento.MagentoSink, magento.Settings),
    "prestashop": OtherShop(
        PrestaShopSim, _prestashop, prestashop.PrestaShopSink, prestashop.Settings
    ),
    "shopify": OtherShop(ShopifySim, _shopify, shopify.ShopifySink, shopify.Settings),
}


def _sink_of(kind: str, settings: dict[str, Any]) -> AbstractAsyncContextManager[Any]:
    shop = OTHERS[kind]
    return sink_maker(shop.sink, shop.model, **settings, backoff="10ms", max_retries=0)


@pytest.mark.parametrize("kind", OTHERS)
async def test_every_http_sink_trusts_its_ca_file(tmp_path: Path, pki: Pki, kind: str) -> None:
    sim = OTHERS[kind].sim()
    async with (
        https(sim, pki.server("shop")),
        _sink_of(kind, OTHERS[kind].settings(sim, tmp_path)) as make,
    ):
        with pytest.raises(SinkUnavailable, match="the shop's certificate is not trusted"):
            await make().apply([stock("MUG", 2)])
        assert statuses(await make(ca_file=pki.ca).apply([stock("MUG", 2)])) == [Status.APPLIED]
