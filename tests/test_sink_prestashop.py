"""The prestashop sink against a Webservice simulator that behaves as PrestaShop's does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from relay.model import Status
from relay.settings import SecretMissing
from relay.sinks.base import SinkUnavailable
from relay.sinks.prestashop import PrestaShopSink, Settings
from tests.sims import event, price, sink_maker, statuses, stock
from tests.sims.prestashop import PrestaShopSim

MakeSink = Callable[..., PrestaShopSink]


@pytest.fixture
async def shop() -> AsyncIterator[PrestaShopSim]:
    async with PrestaShopSim() as sim:
        yield sim


@pytest.fixture
async def make_sink(
    shop: PrestaShopSim, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[MakeSink]:
    monkeypatch.setenv("PRESTASHOP_KEY", shop.key)
    async with sink_maker(
        PrestaShopSink,
        Settings,
        type="prestashop",
        name="shop-es",
        url=shop.url,
        api_key_env="PRESTASHOP_KEY",
        warehouse="MAD",
        requests_per_second=200.0,
        backoff="10ms",
    ) as make:
        yield make


@pytest.fixture
def catalogue(shop: PrestaShopSim) -> dict[str, int]:
    """A simple product, and a product sold only as combinations (sizes)."""
    mug = shop.add_product("MUG", "9.90", quantity=1)
    tee = shop.add_product("TEE", "20.00")
    return {
        "mug": mug,
        "tee": tee,
        "tee_m": shop.add_combination(tee, "TEE-M", impact="0", quantity=0),
        "tee_xl": shop.add_combination(tee, "TEE-XL", impact="2", quantity=5),
    }


async def test_stock_of_a_product_and_of_a_combination(
    shop: PrestaShopSim, make_sink: MakeSink, catalogue: dict[str, int]
) -> None:
    sink = make_sink()
    results = await sink.apply([stock("MUG", 12), stock("TEE-M", 7), stock("TEE-XL", 4.7)])
    assert statuses(results) == [Status.APPLIED] * 3
    assert shop.stock(catalogue["mug"]) == 12
    assert shop.stock(catalogue["tee"], catalogue["tee_m"]) == 7
    assert shop.stock(catalogue["tee"], catalogue["tee_xl"]) == 4  # never sell 0.7 of one
    assert shop.stock(catalogue["tee"]) == 0  # the product row itself was left alone

    shop.requests.clear()  # ids are cached: no lookup by reference the second time
    assert statuses(await sink.apply([stock("MUG", 0)])) == [Status.APPLIED]
    assert shop.stock(catalogue["mug"]) == 0
    assert not [r for r in shop.requests if "filter" in r]
    assert shop.requests == [
        f"GET /api/stock_availables/{catalogue['mug']}",
        f"PUT /api/stock_availables/{catalogue['mug']}",
    ]


async def test_a_replayed_state_reads_but_does_not_write(
    shop: PrestaShopSim, make_sink: MakeSink, catalogue: dict[str, int]
) -> None:
    sink = make_sink()
    results = await sink.apply([stock("MUG", 1), price("MUG", "9.9"), price("TEE-XL", "22")])
    assert statuses(results) == [Status.APPLIED] * 3
    assert shop.puts == []  # the shop already showed all three
    await sink.apply([stock("MUG", 3)])
    assert list(shop.put_paths()) == [f"/api/stock_availables/{catalogue['mug']}"]


async def test_prices_of_a_product_and_of_a_combination(
    shop: PrestaShopSim, make_sink: MakeSink, catalogue: dict[str, int]
) -> None:
    results = await make_sink().apply(
        [price("MUG", "12.50"), price("TEE-XL", "23.00"), price("TEE-M", "18.90")]
    )
    assert statuses(results) == [Status.APPLIED] * 3
    assert shop.price(catalogue["mug"]) == Decimal("12.50")
    assert shop.price(catalogue["tee"], catalogue["tee_xl"]) == Decimal("23.00")
    assert shop.price(catalogue["tee"], catalogue["tee_m"]) == Decimal("18.90")
    # A combination's price is an impact on its product's, which stays as it was.
    assert shop.rows["combinations"][catalogue["tee_m"]]["price"] == "-1.100000"
    assert shop.price(catalogue["tee"]) == Decimal("20.00")


async def test_the_put_carries_the_whole_resource_less_what_prestashop_refuses(
    shop: PrestaShopSim, make_sink: MakeSink, catalogue: dict[str, int]
) -> None:
    mug = catalogue["mug"]
    product_before = dict(shop.rows["products"][mug])
    names_before = {name: dict(texts) for name, texts in shop.names[mug].items()}
    stock_before = dict(shop.rows["stock_availables"][mug])

    results = await make_sink().apply([price("MUG", "11.00"), stock("MUG", 9)])
    assert statuses(results) == [Status.APPLIED] * 2

    assert shop.rows["products"][mug] == {**product_before, "price": "11.000000"}
    assert shop.names[mug] == names_before  # every language of name, link_rewrite, ...
    assert shop.rows["stock_availables"][mug] == {**stock_before, "quantity": "9"}
    sent = dict(shop.puts)[f"/api/products/{mug}"]
    for refused in ("manufacturer_name", "quantity", "position_in_category", "associations"):
        assert sent.find(refused) is None, refused
    assert sent.findtext("location") == "aisle 4"
    assert [lang.get("id") for lang in sent.iterfind("name/language")] == ["1", "2"]


async def test_an_unknown_sku_is_dead_and_the_rest_applies(
    shop: PrestaShopSim, make_sink: MakeSink, catalogue: dict[str, int]
) -> None:
    shop.add_product("TWICE", "1.00")
    shop.add_product("TWICE", "2.00")
    results = await make_sink().apply(
        [
            stock("NOPE-1", 5),
            stock("MUG", 8),
            price("mug", "1.00"),
            stock("TEE", 3),
            stock("A|B", 1),
            price("MUG", "-4.00"),
            stock("TWICE", 1),
        ]
    )
    assert statuses(results) == [
        Status.DEAD,
        Status.APPLIED,
        Status.DEAD,
        Status.DEAD,
        Status.DEAD,
        Status.DEAD,
        Status.DEAD,
    ]
    assert "stock SKU 'NOPE-1': no product or combination has this reference" in (results[0].reason)
    assert "'mug'" in results[2].reason  # PrestaShop matches 'MUG'; the sink wants it exact
    assert "has combinations" in results[3].reason
    assert "filter syntax" in results[4].reason
    assert "code 85" in results[5].reason and "price is not valid" in results[5].reason
    assert "on several products (3, 4)" in results[6].reason
    assert shop.stock(catalogue["mug"]) == 8
    assert shop.price(catalogue["mug"]) == Decimal("9.90")


async def test_a_product_recreated_in_the_shop_is_looked_up_again(
    shop: PrestaShopSim, make_sink: MakeSink, catalogue: dict[str, int]
) -> None:
    sink = make_sink()
    await sink.apply([stock("MUG", 2)])
    del shop.rows["products"][catalogue["mug"]]
    del shop.rows["stock_availables"][catalogue["mug"]]
    new_mug = shop.add_product("MUG", "9.90", quantity=0)
    assert (
        statuses(await sink.apply([stock("MUG", 6), price("MUG", "8.00")])) == [Status.APPLIED] * 2
    )
    assert shop.stock(new_mug) == 6 and shop.price(new_mug) == Decimal("8.00")


async def test_events_the_shop_does_not_take_are_skipped_without_a_request(
    shop: PrestaShopSim, make_sink: MakeSink, catalogue: dict[str, int]
) -> None:
    results = await make_sink(currency="EUR").apply(
        [
            stock("MUG", 40, warehouse="BCN"),
            stock("MUG", 0, op="delete"),
            price("MUG", "1.00", price_list="wholesale"),
            price("MUG", "1.00", currency="USD"),
            event("product", {"sku": "MUG"}),
        ]
    )
    assert statuses(results) == [Status.SKIPPED] * 5
    assert "warehouse 'BCN' is not the shop's ('MAD')" in results[0].reason
    assert shop.requests == []
    assert shop.stock(catalogue["mug"]) == 1


async def test_a_refused_key_makes_the_shop_unavailable_without_retrying(
    shop: PrestaShopSim,
    make_sink: MakeSink,
    catalogue: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WRONG_KEY", "W" * 32)
    with pytest.raises(SinkUnavailable) as raised:
        await make_sink(api_key_env="WRONG_KEY").apply([stock("MUG", 3), stock("TEE-M", 1)])
    message = str(raised.value)
    assert "HTTP 401" in message and "code 20" in message and "api_key" in message
    assert "W" * 32 not in message
    assert len(shop.requests) <= 2  # one per event at most, never retried
    assert shop.stock(catalogue["mug"]) == 1


async def test_5xx_and_429_are_retried_honouring_retry_after(
    shop: PrestaShopSim,
    make_sink: MakeSink,
    catalogue: dict[str, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = make_sink()
    shop.fail(503, times=2)
    shop.fail(429, retry_after="1")
    shop.fail(500)
    assert statuses(await sink.apply([stock("MUG", 21)])) == [Status.APPLIED]
    assert shop.stock(catalogue["mug"]) == 21
    assert len(shop.requests) == 4 + 3  # four failures, then lookup, stock_availables, PUT
    waits = [record.getMessage() for record in caplog.records]
    assert "HTTP 429; retry 3 of 5 in 1.00s" in waits[2]  # the proxy's Retry-After


async def test_retries_run_out_into_sink_unavailable(
    shop: PrestaShopSim, make_sink: MakeSink, catalogue: dict[str, int]
) -> None:
    shop.fail(502, times=3)
    with pytest.raises(SinkUnavailable, match="HTTP 502"):
        await make_sink(max_retries=2).apply([stock("MUG", 5)])
    assert len(shop.requests) == 3

    shop.fail(429, retry_after="600")  # too long to wait inside: the consumer's to schedule
    with pytest.raises(SinkUnavailable) as raised:
        await make_sink().apply([stock("MUG", 5)])
    assert raised.value.retry_after == 600
    assert shop.stock(catalogue["mug"]) == 1


async def test_distinct_skus_are_written_concurrently(
    shop: PrestaShopSim, make_sink: MakeSink
) -> None:
    for n in range(6):
        shop.add_product(f"SKU-{n}", "1.00")
    shop.delay = 0.05
    results = await make_sink(concurrency=3).apply([stock(f"SKU-{n}", n) for n in range(6)])
    assert statuses(results) == [Status.APPLIED] * 6
    assert shop.max_in_flight == 3


def test_settings_name_the_bad_key(tmp_path: Path) -> None:
    base = {"type": "prestashop", "name": "shop", "url": "https://shop.example", "warehouse": "MAD"}
    with pytest.raises(ValidationError, match="exactly one of api_key_file or api_key_env"):
        Settings.model_validate(base)
    with pytest.raises(ValidationError, match="http:// or https://"):
        Settings.model_validate({**base, "url": "shop.example", "api_key_env": "K"})
    with pytest.raises(ValidationError, match="in clear: use https"):
        Settings.model_validate({**base, "url": "http://shop.example", "api_key_env": "K"})
    with pytest.raises(SecretMissing, match="api_key_file: cannot read"):
        PrestaShopSink(Settings.model_validate({**base, "api_key_file": tmp_path / "missing"}))
    settings = Settings.model_validate({**base, "api_key_env": "K", "timeout": "3s"})
    assert (settings.timeout, settings.requests_per_second, settings.max_retries) == (3.0, 5, 5)
    assert settings.url == "https://shop.example"
