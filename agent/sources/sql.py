"""SQL sources through SQLAlchemy's async engine (PostgreSQL, MariaDB/MySQL, SQLite, SQL Server).

The entity's ``query`` may be any SELECT, joins included: the agent wraps it as a
subquery ``q`` and adds only the cursor filter, the keyset paging and the order:

* ``timestamp``:    ``WHERE q.c >= :low`` (``low`` = stored cursor - lookback), then
  ``ORDER BY q.c, q.k1, ...`` in pages continued by keyset, never by OFFSET;
* ``incrementing``: ``WHERE q.c > :last ORDER BY q.c``, where ``last`` is held back by
  the lookback (see :mod:`agent.modes.incrementing`: ids are allocated before they
  commit); for SQL Server ``rowversion``, put ``WHERE rv < MIN_ACTIVE_ROWVERSION()`` in
  the query itself so rows of open transactions are read only once they commit;
* ``snapshot``:     every row in key order (keyset pages), then keys not seen are deletes.

Rows whose cursor is NULL are never selected by a cursor mode (document the column as
NOT NULL, or use snapshot); a snapshot skips rows whose key is NULL, since they have no
identity to compare.

MySQL/MariaDB ``TIMESTAMP`` columns hold instants (stored in UTC) but come back as naive
wall-clock times in the *session* time zone, which defaults to the server's. In a zone
with summer time two instants share each wall-clock time of the autumn's repeated hour,
and the values go backwards there, so no ``timezone`` could read them back right. Every
connection therefore sets ``time_zone = '+00:00'`` (an offset: MariaDB often has no named
zones loaded), and the reader marks TIMESTAMP values as UTC (aware), so the source's
``timezone`` applies only to ``DATETIME`` and other naive values. Aware datetimes are
bound back as naive UTC, which the UTC session reads right.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agent.config import EntityConfig, SourceConfig
from agent.errors import ConfigError, SourceError
from agent.sources.base import Position, Row

log = logging.getLogger("distillsync.source")

MYSQL_TIMESTAMP = 7  # the protocol's type code of a TIMESTAMP column (DATETIME is 12)


def source_url(config: SourceConfig, password: str | None) -> URL:
    url = make_url(config.url)
    if password is not None:
        url = url.set(password=password)
    if _is_mysql(url) and "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    return url


def _keep_broken_text(dbapi_connection: Any, _record: Any) -> None:
    """SQLite raises on invalid UTF-8 for the whole fetch; decode leniently instead so
    capture can dead-letter the one bad row (lone surrogates mark the broken bytes)."""
    # aiosqlite's adapter wraps the stdlib connection; reach it to set the text factory.
    raw = dbapi_connection.driver_connection._conn
    raw.text_factory = lambda data: data.decode("utf-8", "surrogateescape")


def _is_mysql(url: URL) -> bool:
    return url.get_backend_name() in ("mysql", "mariadb")


def _utc_session(dbapi_connection: Any, _record: Any) -> None:
    """MySQL/MariaDB: TIMESTAMP values in UTC on every new connection (see the module)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET time_zone = '+00:00'")
    finally:
        cursor.close()


def create_engine(config: SourceConfig, password: str | None, path: str) -> AsyncEngine:
    """The source's engine; a URL SQLAlchemy cannot use is a config error at ``path``."""
    try:
        url = source_url(config, password)
        if url.get_backend_name() == "sqlite":
            engine = create_async_engine(url)
        else:
            engine = create_async_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2)
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as error:
        raise ConfigError([f"{path}.url: {_short(error)}"]) from None
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _keep_broken_text)
    if _is_mysql(url):
        event.listen(engine.sync_engine, "connect", _utc_session)
    return engine


class QueryBuilder:
    """Writes the wrapped statements for one entity feed in the engine's SQL dialect."""

    def __init__(self, entity: EntityConfig, dialect_name: str, quote: Any) -> None:
        self.entity = entity
        self.mssql = dialect_name == "mssql"
        self._q = quote

    def col(self, name: str) -> str:
        return f"q.{self._q(name)}"

    def _page(self, where: list[str], order: list[str]) -> str:
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        inner = self.entity.query.strip()
        if self.mssql:
            return (
                f"SELECT * FROM ({inner}) AS q{clause} ORDER BY {', '.join(order)} "
                "OFFSET 0 ROWS FETCH NEXT :page_size ROWS ONLY"
            )
        return f"SELECT * FROM ({inner}) AS q{clause} ORDER BY {', '.join(order)} LIMIT :page_size"

    def _after(self, columns: Sequence[str], start: int = 0) -> str:
        """Strictly after the previous page's last row, in ``columns`` order, spelled out
        (no row-value comparison: SQL Server lacks it)."""
        name, param = self.col(columns[start]), f":p{start}"
        if start == len(columns) - 1:
            return f"{name} > {param}"
        return f"({name} > {param} OR ({name} = {param} AND {self._after(columns, start + 1)}))"

    def cursor_page(self, has_low: bool, has_position: bool) -> str:
        assert self.entity.cursor is not None
        columns = [self.entity.cursor, *self.entity.key]
        where = [f"{self.col(self.entity.cursor)} IS NOT NULL"]
        if has_low:
            op = ">=" if self.entity.mode == "timestamp" else ">"
            where.append(f"{self.col(self.entity.cursor)} {op} :low")
        if has_position:
            where.append(self._after(columns))
        return self._page(where, [self.col(c) for c in columns])

    def snapshot_page(self, has_position: bool) -> str:
        keys = self.entity.key
        where = [f"{self.col(k)} IS NOT NULL" for k in keys]
        if has_position:
            where.append(self._after(keys))
        return self._page(where, [self.col(k) for k in keys])

    def probe(self) -> str:
        inner = self.entity.query.strip()
        if self.mssql:
            return f"SELECT TOP 1 * FROM ({inner}) AS q"
        return f"SELECT * FROM ({inner}) AS q LIMIT 1"


class SqlReader:
    """A :class:`~agent.sources.base.Source`: reads pages of one source's entity feeds;
    knows SQL, nothing of the outbox."""

    def __init__(
        self, config: SourceConfig, password: str | None, path: str = "sources[?]"
    ) -> None:
        self.config = config
        self.engine = create_engine(config, password, path)
        self.mysql = self.engine.dialect.name in ("mysql", "mariadb")
        self._zone = ZoneInfo(config.timezone)
        self._instants: dict[str, frozenset[str]] = {}  # feed: its TIMESTAMP columns
        preparer = self.engine.dialect.identifier_preparer
        self._builders = {
            e.feed: QueryBuilder(e, self.engine.dialect.name, preparer.quote)
            for e in config.entities
        }

    async def close(self) -> None:
        await self.engine.dispose()

    async def _fetch(self, feed: str, sql: str, params: dict[str, Any]) -> list[Row]:
        if self.mysql:
            params = {name: _naive_utc(value) for name, value in params.items()}
        try:
            async with self.engine.connect() as conn:
                result = await conn.execute(text(sql), params)
                description = result.cursor.description if result.cursor else None
                rows = list(result.mappings())
        except (SQLAlchemyError, OSError) as error:
            raise SourceError(f"source {self.config.name}: {_short(error)}") from error
        if not (self.mysql and description):
            return [dict(row) for row in rows]
        self._instants[feed] = instants = frozenset(
            column[0] for column in description if column[1] == MYSQL_TIMESTAMP
        )
        return [
            {name: _as_utc(value) if name in instants else value for name, value in row.items()}
            for row in rows
        ]

    async def _low(self, entity: EntityConfig, low: Any) -> Any:
        """A naive ``low`` on a TIMESTAMP cursor is a cursor stored before TIMESTAMPs were
        read in UTC, in the zone they were then read in (the server's, which the config's
        ``timezone`` had to name): convert it, the earlier instant in a repeated hour."""
        if not (self.mysql and isinstance(low, dt.datetime) and low.tzinfo is None):
            return low
        if entity.feed not in self._instants:
            await self._fetch(entity.feed, self._builders[entity.feed].probe(), {})
        if entity.cursor not in self._instants[entity.feed]:
            return low
        return low.replace(tzinfo=self._zone).astimezone(dt.UTC)

    async def cursor_page(
        self, entity: EntityConfig, low: Any, after: Position | None
    ) -> list[Row]:
        builder = self._builders[entity.feed]
        params: dict[str, Any] = {"page_size": self.config.page_size}
        if low is not None:
            params["low"] = await self._low(entity, low)
        if after is not None:
            params.update(_position_params((after.cursor, *after.keys)))
        return await self._fetch(
            entity.feed, builder.cursor_page(low is not None, after is not None), params
        )

    async def snapshot_page(self, entity: EntityConfig, after: Position | None) -> list[Row]:
        builder = self._builders[entity.feed]
        params: dict[str, Any] = {"page_size": self.config.page_size}
        if after is not None:
            params.update(_position_params(after.keys))
        return await self._fetch(entity.feed, builder.snapshot_page(after is not None), params)

    async def probe(self, entity: EntityConfig) -> list[str]:
        """Run the query once with a row limit; return the result's column names."""
        sql = self._builders[entity.feed].probe()
        try:
            async with self.engine.connect() as conn:
                result = await conn.execute(text(sql))
                return list(result.keys())
        except (SQLAlchemyError, OSError) as error:
            raise SourceError(f"{_short(error)}") from error


def _as_utc(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _naive_utc(value: Any) -> Any:
    """An aware datetime as the UTC session reads it (drivers drop the zone unconverted)."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _position_params(values: Sequence[Any]) -> dict[str, Any]:
    return {f"p{i}": value for i, value in enumerate(values)}


def _short(error: BaseException) -> str:
    """Driver errors carry the whole statement; the first line says what went wrong."""
    cause = getattr(error, "orig", None) or error
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
