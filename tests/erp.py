"""A Dolibarr-shaped ERP on a real database: SQLite file, PostgreSQL or MariaDB.

``llx_product(rowid, ref, label, price, tms)``, ``llx_entrepot(rowid, ref)`` and
``llx_product_stock(fk_product, fk_entrepot, reel, tms)``; ``tms`` has one-second
resolution and changes on every write, as in Dolibarr. Each instance lives in its own
database (PostgreSQL, MariaDB) or file (SQLite) and is dropped on ``close()``.
Writes go through the ordinary synchronous drivers, from outside the agent.
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path
from typing import Any, TypedDict

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


class MariaDbLogin(TypedDict):
    """What ``pymysql.connect(**MARIADB, ...)`` needs to reach the server."""

    host: str
    port: int
    user: str
    password: str


MARIADB: MariaDbLogin = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}

SCHEMA = {
    "sqlite": [
        "CREATE TABLE llx_product (rowid INTEGER PRIMARY KEY, ref TEXT NOT NULL, label TEXT, "
        "price NUMERIC, tms TEXT NOT NULL DEFAULT (datetime('now')))",
        "CREATE TABLE llx_entrepot (rowid INTEGER PRIMARY KEY, ref TEXT NOT NULL)",
        "CREATE TABLE llx_product_stock (rowid INTEGER PRIMARY KEY, fk_product INTEGER, "
        "fk_entrepot INTEGER, reel REAL, tms TEXT NOT NULL DEFAULT (datetime('now')))",
    ],
    "postgres": [
        "CREATE TABLE llx_product (rowid SERIAL PRIMARY KEY, ref VARCHAR(128) NOT NULL, "
        "label VARCHAR(255), price NUMERIC(24,8), tms TIMESTAMP(0) NOT NULL DEFAULT now())",
        "CREATE TABLE llx_entrepot (rowid SERIAL PRIMARY KEY, ref VARCHAR(255) NOT NULL)",
        "CREATE TABLE llx_product_stock (rowid SERIAL PRIMARY KEY, fk_product INTEGER, "
        "fk_entrepot INTEGER, reel DOUBLE PRECISION, tms TIMESTAMP(0) NOT NULL DEFAULT now(), "
        "UNIQUE (fk_product, fk_entrepot))",
    ],
    "mariadb": [
        "CREATE TABLE llx_product (rowid INTEGER AUTO_INCREMENT PRIMARY KEY, "
        "ref VARCHAR(128) NOT NULL, label VARCHAR(255), price DOUBLE(24,8), "
        "tms TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP)",
        "CREATE TABLE llx_entrepot (rowid INTEGER AUTO_INCREMENT PRIMARY KEY, "
        "ref VARCHAR(255) NOT NULL)",
        "CREATE TABLE llx_product_stock (rowid INTEGER AUTO_INCREMENT PRIMARY KEY, "
        "fk_product INTEGER, fk_entrepot INTEGER, reel DOUBLE, "
        "tms TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, "
        "UNIQUE KEY uk (fk_product, fk_entrepot))",
    ],
}

# What an integrator writes in agent.toml for this ERP (Dolibarr's own column names).
STOCK_QUERY = (
    "SELECT p.ref AS sku, e.ref AS warehouse, s.reel AS on_hand, s.tms "
    "FROM llx_product_stock s JOIN llx_product p ON p.rowid = s.fk_product "
    "JOIN llx_entrepot e ON e.rowid = s.fk_entrepot"
)
PRICE_QUERY = "SELECT ref AS sku, price, label AS name, tms FROM llx_product"
PRODUCT_SNAPSHOT_QUERY = "SELECT ref AS sku, label AS name FROM llx_product"


class ErpDb:
    def __init__(self, backend: str, workdir: Path) -> None:
        self.backend = backend
        self.name = f"erp_{secrets.token_hex(4)}"
        self.path = workdir / f"{self.name}.db"
        self._create_database()
        self.conn: Any = self._connect()
        for statement in SCHEMA[backend]:
            self.execute(statement)

    # --- connection plumbing ---------------------------------------------------------

    def _admin(self, postgres: str, mariadb: str) -> None:
        """Run one statement on the server itself (SQLite files need none)."""
        if self.backend == "postgres":
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(postgres)
        elif self.backend == "mariadb":
            import pymysql

            conn = pymysql.connect(**MARIADB, autocommit=True)
            with conn.cursor() as cur:
                cur.execute(mariadb)
            conn.close()

    def _create_database(self) -> None:
        self._admin(
            f"CREATE DATABASE {self.name}", f"CREATE DATABASE {self.name} CHARACTER SET utf8mb4"
        )

    def _connect(self) -> Any:
        if self.backend == "sqlite":
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            return conn
        if self.backend == "postgres":
            import psycopg

            return psycopg.connect(
                f"host=127.0.0.1 user=postgres dbname={self.name}", autocommit=True
            )
        import pymysql

        return pymysql.connect(**MARIADB, database=self.name, autocommit=True)

    def connect_another(self) -> Any:
        """A second session, e.g. for a transaction that commits late."""
        return self._connect()

    @property
    def url(self) -> str:
        """The SQLAlchemy async URL the agent uses."""
        if self.backend == "sqlite":
            return f"sqlite+aiosqlite:///{self.path}"
        if self.backend == "postgres":
            return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{self.name}"
        return f"mysql+aiomysql://root@127.0.0.1:3306/{self.name}"

    def _sql(self, statement: str) -> str:
        return statement if self.backend == "sqlite" else statement.replace("?", "%s")

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        if self.backend == "sqlite":
            self.conn.execute(statement, params)
        else:
            with self.conn.cursor() as cur:
                cur.execute(self._sql(statement), params)

    def executemany(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        if self.backend == "sqlite":
            self.conn.execute("BEGIN")
            self.conn.executemany(statement, rows)
            self.conn.execute("COMMIT")
        else:
            with self.conn.cursor() as cur:
                cur.executemany(self._sql(statement), rows)

    def query(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.backend == "sqlite":
            return list(self.conn.execute(statement, params))
        with self.conn.cursor() as cur:
            cur.execute(self._sql(statement), params)
            return list(cur.fetchall())

    def close(self) -> None:
        self.conn.close()
        self._admin(
            f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)",
            f"DROP DATABASE IF EXISTS {self.name}",
        )

    # --- what the ERP's users do -------------------------------------------------------

    @property
    def now(self) -> str:
        return {"sqlite": "datetime('now')", "postgres": "now()", "mariadb": "CURRENT_TIMESTAMP"}[
            self.backend
        ]

    def add_warehouses(self, *refs: str) -> None:
        self.executemany(
            "INSERT INTO llx_entrepot (rowid, ref) VALUES (?, ?)",
            [(i + 1, ref) for i, ref in enumerate(refs)],
        )

    def add_products(self, count: int, start: int = 1) -> None:
        self.executemany(
            "INSERT INTO llx_product (rowid, ref, label, price) VALUES (?, ?, ?, ?)",
            [(i, f"SKU-{i}", f"Product {i}", f"{i}.90") for i in range(start, start + count)],
        )

    def set_stock(self, product: int, warehouse: int, quantity: float) -> None:
        """Upsert absolute stock, stamping ``tms`` as Dolibarr does."""
        updated = self._update_stock(product, warehouse, quantity)
        if not updated:
            self.execute(
                "INSERT INTO llx_product_stock (fk_product, fk_entrepot, reel) VALUES (?, ?, ?)",
                (product, warehouse, quantity),
            )

    def _update_stock(self, product: int, warehouse: int, quantity: float) -> int:
        statement = (
            f"UPDATE llx_product_stock SET reel = ?, tms = {self.now} "
            "WHERE fk_product = ? AND fk_entrepot = ?"
        )
        if self.backend == "sqlite":
            return int(self.conn.execute(statement, (quantity, product, warehouse)).rowcount)
        with self.conn.cursor() as cur:
            cur.execute(self._sql(statement), (quantity, product, warehouse))
            return int(cur.rowcount)

    def set_stock_many(self, rows: list[tuple[int, int, float]]) -> None:
        """Many absolute stock updates of existing rows in one transaction."""
        statement = (
            f"UPDATE llx_product_stock SET reel = ?, tms = {self.now} "
            "WHERE fk_product = ? AND fk_entrepot = ?"
        )
        self.executemany(statement, [(q, p, w) for p, w, q in rows])

    def set_price(self, product: int, price: str) -> None:
        self.execute(
            f"UPDATE llx_product SET price = ?, tms = {self.now} WHERE rowid = ?", (price, product)
        )

    def delete_product(self, product: int) -> None:
        self.execute("DELETE FROM llx_product_stock WHERE fk_product = ?", (product,))
        self.execute("DELETE FROM llx_product WHERE rowid = ?", (product,))


def source_toml(
    erp: ErpDb, entities: str, poll_interval: str = "200ms", page_size: int = 1000
) -> str:
    return (
        f'[[sources]]\nname = "dolibarr"\nurl = "{erp.url}"\n'
        f'poll_interval = "{poll_interval}"\npage_size = {page_size}\n{entities}'
    )


def stock_entity(lookback: str = "30s", conflate: bool = False) -> str:
    return (
        f'[[sources.entities]]\nentity = "stock"\nquery = "{STOCK_QUERY}"\n'
        f'key = ["sku", "warehouse"]\nmode = "timestamp"\ncursor = "tms"\n'
        f'lookback = "{lookback}"\nconflate = {str(conflate).lower()}\n'
    )


def product_snapshot_entity() -> str:
    return (
        f'[[sources.entities]]\nentity = "product"\nquery = "{PRODUCT_SNAPSHOT_QUERY}"\n'
        f'key = ["sku"]\nmode = "snapshot"\n'
    )


def price_entity() -> str:
    return (
        f'[[sources.entities]]\nentity = "price"\nquery = "{PRICE_QUERY}"\n'
        f'key = ["sku"]\nmode = "timestamp"\ncursor = "tms"\n'
    )
