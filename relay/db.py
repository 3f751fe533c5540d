"""The relay side's SQL plumbing, shared by its stores: URL to engine, SQLite's pragmas and
lock file, the schema version check.

Two stores build on it, each with its own tables and rules: the consumer's version store
(:mod:`relay.store`) and the intake's store of inbound events (:mod:`relay.intake.store`).
Both take a URL, ``sqlite:///path`` for one process or ``postgresql://...`` for several,
and go through SQLAlchemy's async engine (aiosqlite, asyncpg):

* SQLite runs in WAL mode with ``synchronous=FULL`` (a commit that returned survives a
  power cut), takes its write lock up front (``BEGIN IMMEDIATE``) and keeps a second
  process out with a lock file beside the database (:func:`hold_lock_file`);
* PostgreSQL creates tables under a transaction-level advisory lock, so processes starting
  together do not race to create them (:func:`setup_schema`).

Errors are :class:`~relay.errors.StoreError` and its subclasses; none echoes a password.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Literal

from sqlalchemy import MetaData, Table, func, inspect, make_url, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.event import listen
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from relay.errors import SchemaTooNew, StoreBusy, StoreError, StoreUrlInvalid

__all__ = [
    "BUSY_TIMEOUT_MS",
    "Backend",
    "database_url",
    "hold_lock_file",
    "insert_for",
    "is_deadlock",
    "make_engine",
    "reason",
    "setup_schema",
]

Backend = Literal["sqlite", "postgresql"]
BUSY_TIMEOUT_MS = 30_000
_DEADLOCK = "40P01"

_DRIVERS: dict[str, tuple[Backend, str]] = {
    "sqlite": ("sqlite", "sqlite+aiosqlite"),
    "sqlite+aiosqlite": ("sqlite", "sqlite+aiosqlite"),
    "postgresql": ("postgresql", "postgresql+asyncpg"),
    "postgres": ("postgresql", "postgresql+asyncpg"),
    "postgresql+asyncpg": ("postgresql", "postgresql+asyncpg"),
}


def database_url(url: str, key: str = "store.url", file: str = "relay.db") -> tuple[Backend, URL]:
    """The backend and SQLAlchemy async URL for the setting ``key``; ``file`` is the
    example file name its errors suggest. Errors never echo a password."""
    examples = f"sqlite:////var/lib/distillsync/{file} or postgresql://user@host:5432/db"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreUrlInvalid(f"{key} is not a database URL such as {examples}") from None
    if parsed.drivername not in _DRIVERS:
        raise StoreUrlInvalid(f"{key}: {parsed.drivername}:// is not supported; use {examples}")
    backend, driver = _DRIVERS[parsed.drivername]
    parsed = parsed.set(drivername=driver)
    if backend == "sqlite":
        _check_sqlite_path(parsed.database, key, file)
    return backend, parsed


def _check_sqlite_path(database: str | None, key: str, file: str) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        raise StoreUrlInvalid(
            f"{key}: SQLite needs a file path (sqlite:///path/to/{file}); "
            "a store in memory would forget everything it holds at exit"
        )
    if not Path(database).parent.is_dir():
        raise StoreError(f"{key}: directory {Path(database).parent} does not exist")


def _sqlite_connected(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own implicit BEGIN would defer locking; we emit ours in _sqlite_begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=FULL", f"busy_timeout={BUSY_TIMEOUT_MS}"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # IMMEDIATE takes the write lock up front, so a transaction that reads then writes
    # cannot fail half way on a lock another writer took in between.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(
    backend: Backend, url: URL, pool_size: int = 4, max_overflow: int = 60
) -> AsyncEngine:
    """PostgreSQL: a pool of ``pool_size`` plus ``max_overflow``. SQLite: durable pragmas
    on every connection, and every transaction ``BEGIN IMMEDIATE``."""
    if backend == "postgresql":
        return create_async_engine(
            url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True
        )
    engine = create_async_engine(url)
    listen(engine.sync_engine, "connect", _sqlite_connected)
    listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def insert_for(backend: Backend) -> Callable[[Table], Any]:
    """The dialect's ``insert`` (both have ``on_conflict_do_nothing`` / ``_do_update``)."""
    return postgresql.insert if backend == "postgresql" else sqlite.insert


def is_deadlock(error: DBAPIError) -> bool:
    """PostgreSQL chose this transaction as a deadlock's victim: start it over."""
    return getattr(error.orig, "sqlstate", None) == _DEADLOCK


def hold_lock_file(database: str, busy: str) -> IO[bytes]:
    """Take ``{database}.lock`` (an exclusive ``flock``), or raise :class:`StoreBusy` with
    the message ``busy``. Closing the handle, or the process dying, releases it."""
    path = Path(f"{database}.lock")
    handle = path.open("ab")  # held open while the store is: not a with block
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreBusy(busy) from None
    return handle


async def setup_schema(
    conn: AsyncConnection,
    backend: Backend,
    metadata: MetaData,
    meta: Table,
    version: int,
    lock_id: int,
    refusal: Callable[[int], str],
) -> None:
    """Create the missing tables and record ``version`` in ``meta`` (``name``, ``value``
    columns); a schema newer than ``version`` raises :class:`SchemaTooNew` with
    ``refusal(found)``. Migrations so far only add tables, which ``create_all`` does."""
    if backend == "postgresql":
        # Processes starting together: one creates the tables, the others wait.
        await conn.execute(select(func.pg_advisory_xact_lock(lock_id)))
    found = await _schema_version(conn, meta)
    if found is not None and found > version:
        raise SchemaTooNew(refusal(found))
    await conn.run_sync(metadata.create_all)
    if found is None:
        await conn.execute(meta.insert().values(name="schema_version", value=str(version)))
    elif found < version:
        await conn.execute(
            meta.update().where(meta.c.name == "schema_version").values(value=str(version))
        )


async def _schema_version(conn: AsyncConnection, meta: Table) -> int | None:
    if not await conn.run_sync(lambda sync: inspect(sync).has_table(meta.name)):
        return None
    value = await conn.scalar(select(meta.c.value).where(meta.c.name == "schema_version"))
    return None if value is None else int(value)


def reason(error: SQLAlchemyError | OSError) -> str:
    """The driver's own words, without SQLAlchemy's statement dump and link."""
    original = getattr(error, "orig", None)
    return str(original if original is not None else error).splitlines()[0]
