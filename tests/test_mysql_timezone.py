"""MySQL/MariaDB TIMESTAMP columns are instants: whatever the session's default zone, the
agent reads them in UTC; DATETIME columns are wall clock in the source's ``timezone``.

The MariaDB here runs in UTC and has no named zones loaded, so the server default the agent
meets is changed the way a DBA's ``default_time_zone`` would be seen by a client: every
connection of the source starts with ``SET time_zone = '+05:00'`` (``init_command`` in the
URL, run by the driver before the agent's own connect hook). The source's ``timezone`` is
Europe/Madrid, different again, and the instants are in Madrid's repeated autumn hour:
00:30Z and 01:30Z are both 02:30 in Madrid on 2025-10-26, which no zone setting other than
UTC could tell apart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import orjson
import pytest

from agent.capture import Mapper
from agent.config import EntityConfig, SourceConfig
from agent.model import Change
from agent.sources.cursor import decode_cursor, encode_cursor
from agent.sources.sql import SqlReader
from tests.erp import ErpDb

pytestmark = pytest.mark.mariadb

MADRID = "Europe/Madrid"
SERVER_DEFAULT = "SET time_zone = '+05:00'"
QUERY = "SELECT code, starts_at, ends_at, tms FROM promo"
# code, starts_at and tms (TIMESTAMP, written as UTC instants), ends_at (DATETIME, Madrid)
ROWS = [
    ("a", "2025-10-26 00:30:00", "2025-10-26 04:30:00"),  # 02:30 CEST; ends 04:30 CET
    ("b", "2025-10-26 01:30:00", "2025-07-01 12:00:00"),  # 02:30 CET;  ends 12:00 CEST
]
EXPECTED = {
    "a": {"starts_at": "2025-10-26T00:30:00.000000Z", "ends_at": "2025-10-26T03:30:00.000000Z"},
    "b": {"starts_at": "2025-10-26T01:30:00.000000Z", "ends_at": "2025-07-01T10:00:00.000000Z"},
}


@pytest.fixture
def promo(make_erp: Callable[[str], ErpDb]) -> ErpDb:
    erp = make_erp("mariadb")
    erp.execute(
        "CREATE TABLE promo (code VARCHAR(16) PRIMARY KEY, starts_at TIMESTAMP NULL, "
        "ends_at DATETIME NULL, tms TIMESTAMP NOT NULL)"
    )
    erp.execute("SET time_zone = '+00:00'")  # so the literals below are UTC instants
    erp.executemany(
        "INSERT INTO promo (code, starts_at, ends_at, tms) VALUES (?, ?, ?, ?)",
        [(code, starts, ends, starts) for code, starts, ends in ROWS],
    )
    return erp


def reader_of(erp: ErpDb) -> tuple[SqlReader, EntityConfig]:
    url = f"{erp.url}?init_command={quote(SERVER_DEFAULT)}"
    source = SourceConfig(
        name="erp",
        url=url,
        timezone=MADRID,
        entities=[
            EntityConfig(entity="promotion", query=QUERY, key=["code"], cursor="tms"),
            EntityConfig(
                entity="promotion", name="by_end", query=QUERY, key=["code"], cursor="ends_at"
            ),
        ],
    )
    return SqlReader(source, None, "sources[0]"), source.entities[0]


def published(rows: list[Any]) -> dict[str, dict[str, Any]]:
    mapper = Mapper("promotion", ["code"], "tms", ZoneInfo(MADRID))
    out = {}
    for row in rows:
        change = mapper.upsert(row)
        assert isinstance(change, Change), change
        data = orjson.loads(change.data)
        out[data["code"]] = {k: data[k] for k in ("starts_at", "ends_at")}
    return out


def test_the_session_default_really_differs(promo: ErpDb) -> None:
    """The setup bites: a client that keeps the default reads 00:30Z as 05:30."""
    conn = promo.connect_another()
    try:
        with conn.cursor() as cur:
            cur.execute(SERVER_DEFAULT)
            cur.execute("SELECT starts_at FROM promo WHERE code = 'a'")
            assert cur.fetchone() == (dt.datetime(2025, 10, 26, 5, 30),)
    finally:
        conn.close()


async def test_timestamps_are_utc_instants_and_datetimes_the_sources_zone(promo: ErpDb) -> None:
    reader, entity = reader_of(promo)
    try:
        rows = await reader.cursor_page(entity, None, None)
    finally:
        await reader.close()
    assert published(rows) == EXPECTED
    # the cursor is the instant too, aware, so it survives the outbox unchanged
    assert [row["tms"] for row in rows] == [
        dt.datetime(2025, 10, 26, 0, 30, tzinfo=dt.UTC),
        dt.datetime(2025, 10, 26, 1, 30, tzinfo=dt.UTC),
    ]


async def test_a_stored_cursor_is_bound_back_as_the_same_instant(promo: ErpDb) -> None:
    """The second instant of the repeated hour, stored and read back, selects exactly the
    rows at and after it; a naive cursor stored before TIMESTAMPs were read in UTC (so in
    the zone ``timezone`` named) selects from the earlier reading of an ambiguous time,
    so it may re-read a row but never skips one."""
    reader, entity = reader_of(promo)
    try:
        stored = decode_cursor(encode_cursor(dt.datetime(2025, 10, 26, 1, 30, tzinfo=dt.UTC)))
        assert [r["code"] for r in await reader.cursor_page(entity, stored, None)] == ["b"]
        old_style = dt.datetime(2025, 10, 26, 2, 45)  # Madrid: 00:45Z or 01:45Z
        assert [r["code"] for r in await reader.cursor_page(entity, old_style, None)] == ["b"]
        old_style = dt.datetime(2025, 10, 26, 2, 30)  # Madrid: 00:30Z or 01:30Z
        assert [r["code"] for r in await reader.cursor_page(entity, old_style, None)] == ["a", "b"]
    finally:
        await reader.close()


async def test_a_naive_datetime_cursor_is_bound_as_it_is(promo: ErpDb) -> None:
    """A DATETIME cursor is wall clock: no zone is applied to it either way."""
    reader, _ = reader_of(promo)
    entity = reader.config.entities[1]
    try:
        low = dt.datetime(2025, 10, 26, 4, 30)
        assert [r["code"] for r in await reader.cursor_page(entity, low, None)] == ["a"]
    finally:
        await reader.close()
