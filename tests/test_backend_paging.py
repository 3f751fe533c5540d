"""The statements the SQL source writes, per dialect, and keyset paging run for real.

SQL Server has no server here, so its statements are checked as text (``OFFSET 0 ROWS
FETCH NEXT``, ``TOP 1``, no row-value comparison, which SQL Server lacks). The same
builder is then run with a tiny page size on SQLite, PostgreSQL and MariaDB over many
rows that share one ``tms`` second, to prove keyset paging neither skips nor repeats.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy.dialects import mssql, mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect

from agent.config import EntityConfig, SourceConfig
from agent.outbox import Outbox
from agent.poller import FeedPoller
from agent.sources.base import Position
from agent.sources.sql import QueryBuilder, SqlReader
from tests.erp import PRODUCT_SNAPSHOT_QUERY, STOCK_QUERY, ErpDb
from tests.test_poller import make_sweep_due

DIALECTS: dict[str, Callable[[], Dialect]] = {
    "mssql": mssql.dialect,
    "postgresql": postgresql.dialect,
    "mysql": mysql.dialect,
    "sqlite": sqlite.dialect,
}
# Sage 50's stock table: upper-case names, and FINAL is a reserved word in SQL Server.
SAGE_QUERY = "SELECT ARTICULO, ALMACEN, FINAL, ULT_ACT FROM STOCKS2"
QUOTED = {"mssql": "[{}]", "postgresql": '"{}"', "mysql": "`{}`", "sqlite": '"{}"'}
# (a, b) > (x, y) and friends: row values, which SQL Server does not have
ROW_VALUE = re.compile(r"\(\s*q\.[^()]*,\s*q\.[^()]*\)\s*[<>=]")


def entity(mode: str = "timestamp", **overrides: Any) -> EntityConfig:
    fields: dict[str, Any] = {
        "entity": "stock",
        "query": SAGE_QUERY,
        "key": ["ARTICULO", "ALMACEN"],
        "mode": mode,
    }
    if mode != "snapshot":
        fields["cursor"] = "ULT_ACT"
    fields.update(overrides)
    return EntityConfig.model_validate(fields)


def builder(dialect_name: str, feed: EntityConfig) -> QueryBuilder:
    dialect = DIALECTS[dialect_name]()
    return QueryBuilder(feed, dialect.name, dialect.identifier_preparer.quote)


def q(dialect_name: str, column: str) -> str:
    return "q." + QUOTED[dialect_name].format(column)


@pytest.mark.parametrize("dialect_name", list(DIALECTS))
def test_keyset_predicate_is_spelled_out_without_row_values(dialect_name: str) -> None:
    sql = builder(dialect_name, entity()).cursor_page(has_low=True, has_position=True)
    c, k1, k2 = (q(dialect_name, n) for n in ("ULT_ACT", "ARTICULO", "ALMACEN"))
    after = f"({c} > :p0 OR ({c} = :p0 AND ({k1} > :p1 OR ({k1} = :p1 AND {k2} > :p2))))"
    assert after in sql
    assert f"{c} IS NOT NULL" in sql
    assert f"{c} >= :low" in sql  # timestamp mode: >=, so same-second commits are re-read
    assert f"ORDER BY {c}, {k1}, {k2}" in sql
    assert not ROW_VALUE.search(sql), sql
    assert f"FROM ({SAGE_QUERY}) AS q WHERE " in sql


@pytest.mark.parametrize("dialect_name", list(DIALECTS))
def test_page_limit_syntax_per_dialect(dialect_name: str) -> None:
    b = builder(dialect_name, entity())
    statements = [
        b.cursor_page(False, False),
        b.cursor_page(True, False),
        b.cursor_page(False, True),
        b.cursor_page(True, True),
        b.snapshot_page(False),
        b.snapshot_page(True),
    ]
    for sql in statements:
        if dialect_name == "mssql":
            assert sql.endswith("OFFSET 0 ROWS FETCH NEXT :page_size ROWS ONLY"), sql
            assert "LIMIT" not in sql
        else:
            assert sql.endswith("LIMIT :page_size"), sql
            assert "OFFSET" not in sql and "FETCH" not in sql
        assert not ROW_VALUE.search(sql), sql
        assert sql.count(":page_size") == 1


@pytest.mark.parametrize("dialect_name", list(DIALECTS))
def test_probe_reads_one_row(dialect_name: str) -> None:
    sql = builder(dialect_name, entity()).probe()
    if dialect_name == "mssql":
        assert sql == f"SELECT TOP 1 * FROM ({SAGE_QUERY}) AS q"
    else:
        assert sql == f"SELECT * FROM ({SAGE_QUERY}) AS q LIMIT 1"


def test_mssql_statements_in_full() -> None:
    b = builder("mssql", entity())
    inner = f"SELECT * FROM ({SAGE_QUERY}) AS q"
    assert b.cursor_page(has_low=False, has_position=False) == (
        f"{inner} WHERE q.[ULT_ACT] IS NOT NULL ORDER BY q.[ULT_ACT], q.[ARTICULO], q.[ALMACEN] "
        "OFFSET 0 ROWS FETCH NEXT :page_size ROWS ONLY"
    )
    assert b.cursor_page(has_low=True, has_position=True) == (
        f"{inner} WHERE q.[ULT_ACT] IS NOT NULL AND q.[ULT_ACT] >= :low AND "
        "(q.[ULT_ACT] > :p0 OR (q.[ULT_ACT] = :p0 AND "
        "(q.[ARTICULO] > :p1 OR (q.[ARTICULO] = :p1 AND q.[ALMACEN] > :p2)))) "
        "ORDER BY q.[ULT_ACT], q.[ARTICULO], q.[ALMACEN] "
        "OFFSET 0 ROWS FETCH NEXT :page_size ROWS ONLY"
    )
    assert b.snapshot_page(has_position=True) == (
        f"{inner} WHERE q.[ARTICULO] IS NOT NULL AND q.[ALMACEN] IS NOT NULL AND "
        "(q.[ARTICULO] > :p0 OR (q.[ARTICULO] = :p0 AND q.[ALMACEN] > :p1)) "
        "ORDER BY q.[ARTICULO], q.[ALMACEN] OFFSET 0 ROWS FETCH NEXT :page_size ROWS ONLY"
    )


@pytest.mark.parametrize("dialect_name", list(DIALECTS))
def test_incrementing_mode_reads_strictly_after_the_cursor(dialect_name: str) -> None:
    feed = entity(
        "incrementing",
        cursor="ID",
        key=["ARTICULO"],
        query="SELECT ID, ARTICULO, FINAL FROM MOVIMIENTOS",
    )
    sql = builder(dialect_name, feed).cursor_page(has_low=True, has_position=True)
    c, k = q(dialect_name, "ID"), q(dialect_name, "ARTICULO")
    assert f"{c} > :low" in sql
    assert ">=" not in sql
    assert f"({c} > :p0 OR ({c} = :p0 AND {k} > :p1))" in sql


@pytest.mark.parametrize("dialect_name", list(DIALECTS))
def test_single_column_keyset_and_lowercase_names(dialect_name: str) -> None:
    feed = entity("snapshot", key=["sku"], query=PRODUCT_SNAPSHOT_QUERY)
    b = builder(dialect_name, feed)
    assert b.snapshot_page(False).startswith(
        f"SELECT * FROM ({PRODUCT_SNAPSHOT_QUERY}) AS q WHERE q.sku IS NOT NULL ORDER BY q.sku"
    )
    assert "WHERE q.sku IS NOT NULL AND q.sku > :p0 ORDER BY q.sku" in b.snapshot_page(True)


def test_a_three_part_key_nests_every_level() -> None:
    feed = entity(key=["a", "b", "c"], cursor="t", query="SELECT a, b, c, t FROM x")
    sql = builder("mssql", feed).cursor_page(has_low=False, has_position=True)
    assert (
        "(q.t > :p0 OR (q.t = :p0 AND (q.a > :p1 OR (q.a = :p1 AND "
        "(q.b > :p2 OR (q.b = :p2 AND q.c > :p3))))))"
    ) in sql


async def test_the_source_builds_with_its_engines_dialect(tmp_path: Path) -> None:
    source = SourceConfig.model_validate(
        {
            "name": "erp",
            "url": f"sqlite+aiosqlite:///{tmp_path}/x.db",
            "entities": [
                {
                    "entity": "stock",
                    "query": SAGE_QUERY,
                    "key": ["ARTICULO", "ALMACEN"],
                    "cursor": "ULT_ACT",
                }
            ],
        }
    )
    reader = SqlReader(source, None)
    try:
        sql = reader._builders["stock"].cursor_page(True, True)
    finally:
        await reader.close()
    assert 'q."ULT_ACT" >= :low' in sql
    assert "LIMIT :page_size" in sql


# --- keyset paging, executed for real ----------------------------------------------------

PAGE = 3
PRODUCTS = 10
WAREHOUSES = ("WH1", "WH2")


def stock_feed(mode: str = "timestamp") -> dict[str, Any]:
    feed: dict[str, Any] = {
        "entity": "stock",
        "query": STOCK_QUERY,
        "key": ["sku", "warehouse"],
        "mode": mode,
    }
    if mode != "snapshot":
        feed.update(cursor="tms", lookback="30s")
    return feed


def source_for(erp: ErpDb, *feeds: dict[str, Any]) -> SourceConfig:
    return SourceConfig.model_validate(
        {"name": "dolibarr", "url": erp.url, "page_size": PAGE, "entities": list(feeds)}
    )


def fill_stock_sharing_seconds(erp: ErpDb) -> set[tuple[str, str]]:
    """20 stock rows; all but two share one ``tms`` second, so most pages split inside a
    second and the keyset must continue on the key columns."""
    erp.add_warehouses(*WAREHOUSES)
    erp.add_products(PRODUCTS)
    erp.executemany(
        "INSERT INTO llx_product_stock (fk_product, fk_entrepot, reel, tms) VALUES (?, ?, ?, ?)",
        [
            (p, w, p * 10 + w, "2026-01-01 10:00:00" if p > 1 else "2026-01-01 09:59:59")
            for p in range(1, PRODUCTS + 1)
            for w in (1, 2)
        ],
    )
    return {(f"SKU-{p}", wh) for p in range(1, PRODUCTS + 1) for wh in WAREHOUSES}


async def read_all_cursor_pages(
    reader: SqlReader, feed: EntityConfig, low: Any
) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    after: Position | None = None
    while True:
        rows = [dict(r) for r in await reader.cursor_page(feed, low, after)]
        if rows:
            pages.append(rows)
        if len(rows) < PAGE:
            return pages
        last = rows[-1]
        after = Position(cursor=last["tms"], keys=(last["sku"], last["warehouse"]))
        assert len(pages) < 100, "paging does not end"


async def read_all_snapshot_pages(
    reader: SqlReader, feed: EntityConfig
) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    after: Position | None = None
    while True:
        rows = [dict(r) for r in await reader.snapshot_page(feed, after)]
        if rows:
            pages.append(rows)
        if len(rows) < PAGE:
            return pages
        after = Position(cursor=None, keys=tuple(rows[-1][k] for k in feed.key))
        assert len(pages) < 100, "paging does not end"


def keys_of(pages: list[list[dict[str, Any]]]) -> list[tuple[str, str]]:
    return [(r["sku"], r["warehouse"]) for page in pages for r in page]


async def test_cursor_keyset_paging_neither_skips_nor_repeats(erp: ErpDb) -> None:
    expected = fill_stock_sharing_seconds(erp)
    source = source_for(erp, stock_feed())
    feed = source.entities[0]
    reader = SqlReader(source, None)
    try:
        pages = await read_all_cursor_pages(reader, feed, low=None)
        keys = keys_of(pages)
        assert len(keys) == len(set(keys)), f"a row was read twice: {keys}"
        assert set(keys) == expected
        assert all(len(page) == PAGE for page in pages[:-1])
        # the order is the one the keyset continues: (tms, sku, warehouse) ascending
        stamps = [r["tms"] for page in pages for r in page]
        assert stamps == sorted(stamps)
        # and again from a lower bound inside the data, bound in the column's own type
        low = next(r["tms"] for page in pages for r in page if r["sku"] != "SKU-1")
        keys_from_low = keys_of(await read_all_cursor_pages(reader, feed, low=low))
        assert len(keys_from_low) == len(set(keys_from_low))
        assert set(keys_from_low) == expected - {("SKU-1", "WH1"), ("SKU-1", "WH2")}
    finally:
        await reader.close()


async def test_snapshot_keyset_paging_neither_skips_nor_repeats(erp: ErpDb) -> None:
    expected = fill_stock_sharing_seconds(erp)
    source = source_for(erp, stock_feed("snapshot"))
    reader = SqlReader(source, None)
    try:
        keys = keys_of(await read_all_snapshot_pages(reader, source.entities[0]))
        assert len(keys) == len(set(keys)), f"a row was read twice: {keys}"
        assert set(keys) == expected
    finally:
        await reader.close()


async def test_poller_pages_every_row_into_the_outbox_once(erp: ErpDb, tmp_path: Path) -> None:
    """The real poller over the real reader: 20 same-second rows in pages of 3; a poll
    between sweeps re-reads only the cursor's own second; a sweep re-reads the lookback
    window in pages; neither enqueues anything."""
    expected = fill_stock_sharing_seconds(erp)
    source = source_for(erp, stock_feed(), {**stock_feed("snapshot"), "name": "stock_snap"})
    reader = SqlReader(source, None)
    try:
        async with Outbox.open(tmp_path / "outbox.db") as outbox:
            timestamp = FeedPoller(source, source.entities[0], reader, outbox)
            snapshot = FeedPoller(source, source.entities[1], reader, outbox)
            first = await timestamp.poll()
            assert (first.rows, first.enqueued, first.dead) == (20, 20, 0)
            head = await timestamp.poll()
            assert head.rows <= 20 and head.enqueued == 0  # the cursor's own second only
            make_sweep_due(timestamp)
            again = await timestamp.poll()
            assert (again.rows, again.enqueued) == (20, 0)  # all re-read in the lookback
            snap = await snapshot.poll()
            assert (snap.rows, snap.enqueued) == (20, 20)
            assert (await snapshot.poll()).enqueued == 0
            pending = await outbox.fetch_pending(0, 1000)
    finally:
        await reader.close()
    subjects = [e.subject for e in pending]
    assert len(subjects) == 40
    assert set(subjects) == {f"{sku}/{wh}" for sku, wh in expected}
    assert all(subjects.count(s) == 2 for s in set(subjects))  # one per feed


async def test_snapshot_in_small_pages_finds_deletes_on_page_boundaries(
    erp: ErpDb, tmp_path: Path
) -> None:
    erp.add_products(10)
    source = source_for(
        erp,
        {"entity": "product", "query": PRODUCT_SNAPSHOT_QUERY, "key": ["sku"], "mode": "snapshot"},
    )
    reader = SqlReader(source, None)
    try:
        async with Outbox.open(tmp_path / "outbox.db") as outbox:
            poller = FeedPoller(source, source.entities[0], reader, outbox)
            assert (await poller.poll()).enqueued == 10
            assert (await poller.poll()).enqueued == 0
            # key order is text order: SKU-1, SKU-10, SKU-2, ... so SKU-2 ends page 1 and
            # SKU-3 starts page 2; SKU-9 is the very last row
            for product in (2, 3, 9):
                erp.delete_product(product)
            erp.execute("UPDATE llx_product SET label = ? WHERE rowid = ?", ("Renamed", 4))
            totals = await poller.poll()
            assert totals.enqueued == 4
            assert (await poller.poll()).enqueued == 0  # deletes are not repeated
            events = (await outbox.fetch_pending(0, 1000))[10:]
    finally:
        await reader.close()
    deletes = {e.subject: orjson.loads(e.data) for e in events if e.op == "delete"}
    assert deletes == {
        "SKU-2": {"sku": "SKU-2"},
        "SKU-3": {"sku": "SKU-3"},
        "SKU-9": {"sku": "SKU-9"},
    }
    upserts = [(e.subject, orjson.loads(e.data)) for e in events if e.op == "upsert"]
    assert upserts == [("SKU-4", {"sku": "SKU-4", "name": "Renamed"})]
