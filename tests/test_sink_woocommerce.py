"""The woocommerce sink against a simulator of the WooCommerce REST API (wc/v3)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from relay.model import Status
from relay.settings import SecretMissing
from relay.sinks import woocommerce
from relay.sinks.base import SinkUnavailable
from relay.sinks.woocommerce import Settings, WooCommerceSink
from tests.sims import event, price, sink_maker, statuses, stock
from tests.sims.woocommerce import Hit, WooCommerceSim
from tests.support import write_secret

MakeSink = Callable[..., WooCommerceSink]


@pytest.fixture
async def shop() -> AsyncIterator[WooCommerceSim]:
    async with WooCommerceSim() as running:
        running.add("MUG", price="9.00", stock=1)
        running.add("CAP", price="15.00", stock=1)
        running.add_variable("TEE", ["TEE-S", "TEE-M"])
        yield running


@pytest.fixture
async def make_sink(tmp_path: Path, shop: WooCommerceSim,
                    monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MakeSink]:
    write_secret(tmp_path / "key", shop.consumer_key + "\n")
    monkeypatch.setenv("WOO_SECRET", shop.consumer_secret)
    async with sink_maker(WooCommerceSink, Settings, type="woocommerce", name="shop",
                          url=shop.url, warehouse="MAD", consumer_key_file=tmp_path / "key",
                          consumer_secret_env="WOO_SECRET", requests_per_second=100.0,
                          backoff="10ms", timeout="2s") as make:
        yield make


async def test_stock_and_price_reach_the_shop(shop: WooCommerceSim,
                                              make_sink: MakeSink) -> None:
    results = await make_sink().apply([stock("MUG", 7.9), price("MUG", "19.90"),
                                       stock("CAP", -2)])
    assert statuses(results) == [Status.APPLIED] * 3
    assert shop.stock("MUG") == 7  # whole units, floored: never a unit the warehouse lacks
    assert shop.price("MUG") == "19.90"
    assert shop.stock("CAP") == -2


async def test_stock_turns_stock_management_on(shop: WooCommerceSim,
                                               make_sink: MakeSink) -> None:
    assert shop.stock("TEE-S") is None  # not managed: WooCommerce would ignore a quantity
    await make_sink().apply([stock("TEE-S", 4)])
    assert shop.stock("TEE-S") == 4


async def test_variations_go_through_their_parents_batch(shop: WooCommerceSim,
                                                         make_sink: MakeSink) -> None:
    results = await make_sink().apply([stock("TEE-S", 3), price("TEE-M", "12.50"),
                                       stock("MUG", 5)])
    assert statuses(results) == [Status.APPLIED] * 3
    assert (shop.stock("TEE-S"), shop.price("TEE-M"), shop.stock("MUG")) == (3, "12.50", 5)
    parent = shop.find("TEE").id
    assert [hit.items for hit in shop.requests("POST", f"/products/{parent}/variations/batch")
            ] == [2]
    assert [hit.items for hit in shop.requests("POST", "/products/batch")] == [1]


async def test_250_stock_events_take_3_batch_calls(shop: WooCommerceSim,
                                                   make_sink: MakeSink) -> None:
    for n in range(250):
        shop.add(f"SKU-{n:03}")
    results = await make_sink().apply([stock(f"SKU-{n:03}", n) for n in range(250)])
    assert statuses(results) == [Status.APPLIED] * 250
    assert [hit.items for hit in shop.requests("POST", "/products/batch")] == [100, 100, 50]
    assert all(shop.stock(f"SKU-{n:03}") == n for n in range(250))


async def test_an_unknown_sku_is_dead_and_the_rest_applies(shop: WooCommerceSim,
                                                           make_sink: MakeSink) -> None:
    results = await make_sink().apply([stock("MUG", 2), stock("GHOST-1", 5),
                                       price("CAP", "1.00")])
    assert statuses(results) == [Status.APPLIED, Status.DEAD, Status.APPLIED]
    assert "GHOST-1" in results[1].reason and "unknown SKU" in results[1].reason
    assert (shop.stock("MUG"), shop.price("CAP")) == (2, "1.00")


async def test_each_sku_is_looked_up_once(shop: WooCommerceSim, make_sink: MakeSink) -> None:
    sink = make_sink()
    await sink.apply([stock("MUG", 1), price("MUG", "2.00"), stock("TEE-S", 1)])
    await sink.apply([stock("MUG", 3), price("TEE-S", "4.00")])
    lookups = shop.requests("GET", "/products")
    assert len(lookups) == 1
    assert sorted(lookups[0].query["sku"].split(",")) == ["MUG", "TEE-S"]
    assert (shop.stock("MUG"), shop.price("TEE-S")) == (3, "4.00")


async def test_a_stale_id_is_looked_up_again_once(shop: WooCommerceSim,
                                                  make_sink: MakeSink) -> None:
    sink = make_sink()
    await sink.apply([stock("MUG", 1), stock("CAP", 1)])
    shop.remove("MUG")
    shop.add("MUG", stock=0)  # re-created: a new id
    shop.remove("CAP")  # gone for good
    results = await sink.apply([stock("MUG", 6), stock("CAP", 6)])
    assert results[0].status is Status.APPLIED
    assert shop.stock("MUG") == 6
    assert results[1].status is Status.DEAD and "unknown SKU CAP" in results[1].reason
    assert len(shop.requests("GET", "/products")) == 2


async def test_other_warehouses_price_lists_and_deletes_are_skipped(
        shop: WooCommerceSim, make_sink: MakeSink) -> None:
    results = await make_sink(price_list="retail").apply([
        stock("MUG", 1, warehouse="BCN"), price("MUG", "1.00", price_list="wholesale"),
        event("stock", {"sku": "MUG", "warehouse": "MAD", "on_hand": 0}, op="delete"),
        price("MUG", "3.00", price_list="retail")])
    assert statuses(results) == [Status.SKIPPED] * 3 + [Status.APPLIED]
    assert "BCN" in results[0].reason
    assert [hit.path for hit in shop.hits] == ["/products", "/products/batch"]


async def test_a_bad_price_is_dead_before_any_request(shop: WooCommerceSim,
                                                      make_sink: MakeSink) -> None:
    results = await make_sink().apply([price("MUG", "-1.00"), stock("", 1)])
    assert statuses(results) == [Status.DEAD, Status.DEAD]
    assert results[0].reason == "MUG: price '-1.00' is not a non-negative decimal amount"
    assert shop.hits == []


async def test_a_429_retry_after_is_honoured(shop: WooCommerceSim,
                                             make_sink: MakeSink) -> None:
    shop.fail_next(1, 429, retry_after="1")
    assert statuses(await make_sink().apply([stock("MUG", 8)])) == [Status.APPLIED]
    throttled, retried = shop.hits[:2]
    assert (throttled.status, retried.status) == (429, 200)
    assert retried.at - throttled.at >= 1.0
    assert shop.stock("MUG") == 8


async def test_the_hosts_rate_limit_is_waited_out(make_sink: MakeSink,
                                                  shop: WooCommerceSim) -> None:
    shop.rate_limit = 2
    for n in range(5):
        shop.add(f"SKU-{n}", type="variable")
        shop.add(f"SKU-{n}-V", type="variation", parent_id=shop.find(f"SKU-{n}").id)
    results = await make_sink().apply([stock(f"SKU-{n}-V", n) for n in range(5)])
    assert statuses(results) == [Status.APPLIED] * 5
    assert all(shop.stock(f"SKU-{n}-V") == n for n in range(5))
    for before, after in zip(shop.hits, shop.hits[1:], strict=False):
        if before.status == 429:
            assert after.at - before.at >= 1.0


async def test_the_rate_budget_paces_requests(shop: WooCommerceSim,
                                              make_sink: MakeSink) -> None:
    for n in range(6):
        shop.add(f"SKU-{n}", type="variable")
        shop.add(f"SKU-{n}-V", type="variation", parent_id=shop.find(f"SKU-{n}").id)
    await make_sink(requests_per_second=4.0).apply([stock(f"SKU-{n}-V", n) for n in range(6)])
    times = [hit.at for hit in shop.hits]
    assert len(times) == 7  # one lookup, one batch per parent
    # A token bucket of 4/s (burst 4) lets through at most 4 + 4*t requests in t seconds.
    for first in range(len(times)):
        for last in range(first, len(times)):
            assert last - first + 1 <= 4 + 4 * (times[last] - times[first]) + 0.05


async def test_server_errors_and_timeouts_are_retried(shop: WooCommerceSim,
                                                      make_sink: MakeSink) -> None:
    shop.fail_next(1, 502)
    shop.fail_next(1, 0)  # hangs past the sink's timeout
    shop.fail_next(1, 500)
    assert statuses(await make_sink(timeout="300ms").apply([stock("MUG", 4)])) == [
        Status.APPLIED]
    assert [hit.status for hit in shop.hits if hit.status != 0] == [502, 500, 200, 200]
    assert shop.stock("MUG") == 4


async def test_a_shop_failing_for_good_makes_the_sink_unavailable(
        shop: WooCommerceSim, make_sink: MakeSink) -> None:
    shop.fail_next(10, 503)
    with pytest.raises(SinkUnavailable, match="HTTP 503"):
        await make_sink(max_retries=2).apply([stock("MUG", 4)])
    assert len(shop.hits) == 3


@pytest.mark.parametrize("auth", ["basic", "query"])
async def test_a_wrong_secret_stops_the_sink_naming_the_shops_error(
        shop: WooCommerceSim, make_sink: MakeSink, monkeypatch: pytest.MonkeyPatch,
        auth: str) -> None:
    monkeypatch.setenv("WOO_SECRET", "cs_wrong")
    with pytest.raises(SinkUnavailable, match="Consumer secret is invalid") as raised:
        await make_sink(auth=auth).apply([stock("MUG", 4)])
    assert "cs_wrong" not in str(raised.value)
    assert len(shop.hits) == 1  # a refused key is not retried


async def test_a_key_revoked_mid_stream_stops_the_sink_with_nothing_dead(
        shop: WooCommerceSim, make_sink: MakeSink) -> None:
    sink = make_sink()
    await sink.apply([stock("MUG", 1)])  # the id is cached: the next apply only writes
    shop.consumer_secret = "cs_rotated"
    with pytest.raises(SinkUnavailable, match="HTTP 401 woocommerce_rest_authentication_error"):
        await sink.apply([stock("MUG", 2)])
    assert [hit.path for hit in shop.hits] == ["/products", "/products/batch", "/products/batch"]
    assert shop.stock("MUG") == 1


async def test_a_whole_batch_refused_is_dead_item_by_item(shop: WooCommerceSim,
                                                          make_sink: MakeSink) -> None:
    sink = make_sink()
    await sink.apply([stock("MUG", 1), stock("TEE-S", 1)])
    shop.fail_next(1, 400)  # the next call, the products batch, is refused as a whole
    results = await sink.apply([stock("MUG", 2), stock("TEE-S", 2)])
    assert statuses(results) == [Status.DEAD, Status.APPLIED]
    assert "SKU MUG" in results[0].reason and "sim_fault: injected" in results[0].reason
    assert (shop.stock("MUG"), shop.stock("TEE-S")) == (1, 2)


async def test_a_url_without_the_api_makes_the_sink_unavailable(
        shop: WooCommerceSim, make_sink: MakeSink) -> None:
    with pytest.raises(SinkUnavailable, match="HTTP 404 rest_no_route"):
        await make_sink(url=f"{shop.url}/blog").apply([stock("MUG", 1)])


async def test_query_string_auth_works(shop: WooCommerceSim, make_sink: MakeSink) -> None:
    assert statuses(await make_sink(auth="query").apply([price("CAP", "2.00")])) == [
        Status.APPLIED]
    assert shop.price("CAP") == "2.00"


async def test_a_lookup_longer_than_a_page_is_read_to_the_end(
        shop: WooCommerceSim, make_sink: MakeSink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(woocommerce, "PER_PAGE", 2)  # four matches: two pages
    skus = ["MUG", "CAP", "TEE-S", "TEE-M"]
    results = await make_sink().apply([stock(sku, 5) for sku in skus])
    assert statuses(results) == [Status.APPLIED] * 4
    assert [hit.query["page"] for hit in shop.requests("GET", "/products")] == ["1", "2"]
    assert all(shop.stock(sku) == 5 for sku in skus)


async def test_a_catalogue_shrinking_between_pages_is_read_again(
        shop: WooCommerceSim, make_sink: MakeSink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(woocommerce, "PER_PAGE", 2)
    shop.add("OLD-1")
    shop.add("OLD-2")  # the newest: on the first page, which the shop lists newest first

    def retire_after_the_first_page(hit: Hit) -> None:
        if hit.path == "/products":
            shop.on_hit = None
            shop.remove("OLD-1")
            shop.remove("OLD-2")  # page 2 now lies past the end

    shop.on_hit = retire_after_the_first_page
    results = await make_sink().apply([stock(sku, 3) for sku in ["MUG", "CAP", "OLD-1",
                                                                 "OLD-2"]])
    pages = [(hit.query["page"], hit.status) for hit in shop.requests("GET", "/products")]
    assert pages == [("1", 200), ("2", 200), ("1", 200)]  # the past-the-end page is 200 []
    assert statuses(results) == [Status.APPLIED, Status.APPLIED, Status.DEAD, Status.DEAD]
    assert (shop.stock("MUG"), shop.stock("CAP")) == (3, 3)


async def test_a_lowered_batch_limit_is_found_and_kept(shop: WooCommerceSim,
                                                       make_sink: MakeSink) -> None:
    shop.batch_limit = 30
    for n in range(70):
        shop.add(f"SKU-{n}")
    sink = make_sink()
    results = await sink.apply([stock(f"SKU-{n}", n) for n in range(70)])
    assert statuses(results) == [Status.APPLIED] * 70
    sizes = [(hit.items, hit.status) for hit in shop.requests("POST", "/products/batch")]
    assert sizes == [(70, 413), (35, 413), (17, 200), (17, 200), (17, 200), (17, 200),
                     (2, 200)]


async def test_a_sku_with_a_comma_is_looked_up_alone(shop: WooCommerceSim,
                                                     make_sink: MakeSink) -> None:
    shop.add("A,B", stock=0)
    shop.add("A", stock=0)
    results = await make_sink().apply([stock("A,B", 2), stock("MUG", 3)])
    assert statuses(results) == [Status.APPLIED] * 2
    assert (shop.stock("A,B"), shop.stock("A")) == (2, 0)
    assert sorted(hit.query["sku"] for hit in shop.requests("GET", "/products")) == [
        "A,B", "MUG"]


async def test_the_simulator_answers_as_woocommerce_documents(shop: WooCommerceSim) -> None:
    auth = {"consumer_key": shop.consumer_key, "consumer_secret": shop.consumer_secret}
    async with aiohttp.ClientSession(f"{shop.url}/wp-json/wc/v3/") as http:
        async with http.get("products", params={"per_page": "2", "page": "2", **auth}) as page:
            assert (page.headers["X-WP-Total"], page.headers["X-WP-TotalPages"]) == ("3", "2")
            assert [product["sku"] for product in await page.json()] == ["MUG"]
        async with http.get("products", params={"per_page": "2", "page": "9", **auth}) as past:
            assert (past.status, await past.json()) == (200, [])  # not a 400, as WordPress's own
            assert (past.headers["X-WP-Total"], past.headers["X-WP-TotalPages"]) == ("3", "2")
        async with http.get("products", params={"sku": "TEE-S", **auth}) as variation:
            assert [(p["type"], p["parent_id"]) for p in await variation.json()] == [
                ("variation", shop.find("TEE").id)]
        for params, status, code in [
                ({"per_page": "101", **auth}, 400, "rest_invalid_param"),
                ({}, 401, "woocommerce_rest_cannot_view"),
                ({**auth, "consumer_key": "ck_other"}, 401,
                 "woocommerce_rest_authentication_error")]:
            async with http.get("products", params=params) as refused:
                assert (refused.status, (await refused.json())["code"]) == (status, code)
        too_many = {"update": [{"id": 1}] * 101}
        async with http.post("products/batch", params=auth, json=too_many) as refused:
            body = await refused.json()
            assert (refused.status, body["code"]) == (413,
                                                      "woocommerce_rest_request_entity_too_large")


def test_settings_name_what_is_wrong(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base: dict[str, Any] = {"type": "woocommerce", "name": "shop", "url": "https://shop.example.com/",
            "warehouse": "MAD", "consumer_key_env": "WOO_KEY"}
    with pytest.raises(ValidationError, match="consumer_secret_file or consumer_secret_env"):
        Settings(**base)
    with pytest.raises(ValidationError, match=r"OAuth 1\.0a"):
        Settings(**base | {"url": "http://shop.example.com", "consumer_secret_env": "S"})
    with pytest.raises(ValidationError, match="warehouse"):
        Settings(**{k: v for k, v in base.items() if k != "warehouse"},
                 consumer_secret_env="S")
    monkeypatch.delenv("WOO_KEY", raising=False)
    with pytest.raises(SecretMissing, match="consumer_key_env: environment variable WOO_KEY"):
        WooCommerceSink(Settings(**base | {"consumer_secret_env": "S"}))
    assert Settings(**base | {"consumer_secret_env": "S"}).url == "https://shop.example.com"
