"""The metadata database behind one worker thread, so the event loop never blocks on it.

Two engines, one interface: SQLite in WAL mode (the embedded default, `database_url` empty or
`sqlite:///path`) and PostgreSQL (`postgresql://...`, see `postgres.py`), which several nodes can
share. Stores call `db.run(fn)` with `fn(conn)` run in one transaction (`conn.execute(sql, params)`
with `?` or `:name` placeholders, rows indexed by column name), or `execute/executemany/fetchall/
fetchone` for one statement. SQL stays in the dialect both engines accept (`ON CONFLICT`, no
`INSERT OR ...`, no bare integers as booleans); DDL is written SQLite-style and translated.

Schemas are versioned per module: `register_schema(name, statements)` is version 1,
`register_migration(name, version, step)` adds later ones. `Database.open` applies the versions a
database has not seen yet, in order, each in a transaction, and notes them in `schema_migrations`.
Databases made before that table existed still open: version 1 is idempotent (CREATE ... IF NOT
EXISTS) and later steps check before they change anything (`add_column`).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """What `run` hands to its function: a sqlite3.Connection, or the PostgreSQL adapter."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any: ...


class Row(Protocol):
    """A result row: by column name or position, `keys()` for `dict(row)`."""

    def __getitem__(self, key: Any, /) -> Any: ...

    def keys(self) -> list[str]: ...


# A migration step: statements (SQLite-style DDL, translated for PostgreSQL), or per-dialect
# statements ({"sqlite": [...], "postgresql": [...]}), or a function of (connection, dialect).
Step = Sequence[str] | dict[str, Sequence[str]] | Callable[[Any, str], None]


@dataclass(frozen=True)
class _Migration:
    module: str
    version: int
    step: Step


_MIGRATIONS: dict[str, dict[int, Step]] = {}
MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    module TEXT NOT NULL,
    version INTEGER NOT NULL,
    applied_at REAL NOT NULL,
    PRIMARY KEY (module, version)
)"""


def register_schema(name: str, statements: Step) -> None:
    """Version 1 of module `name`'s schema (idempotent CREATE ... IF NOT EXISTS statements)."""
    register_migration(name, 1, statements)


def register_migration(name: str, version: int, step: Step) -> None:
    _MIGRATIONS.setdefault(name, {})[version] = step


def migrations() -> list[_Migration]:
    """Every registered step, modules in registration order, versions ascending."""
    return [_Migration(m, v, steps[v]) for m, steps in _MIGRATIONS.items() for v in sorted(steps)]


def dialect_of(conn: Any) -> str:
    return "sqlite" if isinstance(conn, sqlite3.Connection) else "postgresql"


def add_column(conn: Any, table: str, column: str, decl: str) -> None:
    """Add `column` to a table made before it existed (CREATE TABLE IF NOT EXISTS keeps old ones);
    for migration steps."""
    if dialect_of(conn) == "sqlite":
        if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    else:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {decl}")


def lock_key(conn: Any, key: str) -> None:
    """Serialise transactions on `key` across every node sharing the database, until this one ends
    (SQLite: every write transaction is already exclusive, BEGIN IMMEDIATE)."""
    if dialect_of(conn) == "postgresql":
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (key,))


def apply_migrations(conn: Any, dialect: str) -> list[tuple[str, int]]:
    """Run the steps `conn`'s database has not seen (the caller holds a transaction); returns them."""
    conn.execute(MIGRATIONS_TABLE)
    done = {(r[0], r[1]) for r in conn.execute("SELECT module, version FROM schema_migrations").fetchall()}
    applied = []
    for m in migrations():
        if (m.module, m.version) in done:
            continue
        step = m.step
        if callable(step):
            step(conn, dialect)
        else:
            statements = step.get(dialect, ()) if isinstance(step, dict) else step
            for stmt in statements:
                conn.execute(stmt)
        conn.execute("INSERT INTO schema_migrations (module, version, applied_at) VALUES (?, ?, ?)",
                     (m.module, m.version, time.time()))
        applied.append((m.module, m.version))
    return applied


def sqlite_path(url: str, default: Path) -> str:
    """The file of a `sqlite:///path` URL (empty: `default`)."""
    if not url:
        return str(default)
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path:
        raise ValueError("a SQLite database_url looks like sqlite:///absolute/path.sqlite3")
    return parts.path


def open_database(url: str, default_path: Path) -> Database:
    """The database `url` names (not opened yet): empty or sqlite:/// for SQLite, postgresql:// for
    PostgreSQL."""
    scheme = urlsplit(url).scheme if url else "sqlite"
    if scheme in ("postgresql", "postgres"):
        from mediasrv.storage.postgres import PostgresDatabase

        return PostgresDatabase(url)
    return Database(sqlite_path(url, default_path))


class Database:
    """SQLite; `PostgresDatabase` overrides connecting and the transaction around `run`."""

    dialect = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="database")
        self._conn: Any = None
        self._lock = threading.Lock()
        self.applied_migrations: list[tuple[str, int]] = []

    def _open_sync(self) -> None:
        if self.path != ":memory:":
            # Owner-only from the first byte: SQLite gives its -wal/-shm files the database's mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(self.path, 0o600)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        self._conn = conn
        self.applied_migrations = self._transaction(lambda c: apply_migrations(c, self.dialect))

    def _transaction(self, fn: Callable[[Any], T]) -> T:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _statement(self, fn: Callable[[Any], T]) -> T:
        """One statement: atomic by itself (PostgreSQL runs it without BEGIN/COMMIT round trips)."""
        return self._transaction(fn)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def open(self) -> Database:
        await self.run(lambda _conn: None, _opening=True)
        return self

    async def run(self, fn: Callable[[Connection], T], _opening: bool = False,
                  _statement: bool = False) -> T:
        """Run `fn(conn)` on the database thread; a transaction wraps it."""

        def call() -> T:
            with self._lock:
                if self._conn is None:
                    if not _opening:
                        raise RuntimeError("database is not open")
                    self._open_sync()
                return self._statement(fn) if _statement else self._transaction(fn)

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Execute one statement; returns the number of rows it changed."""
        return await self.run(lambda c: c.execute(sql, params).rowcount, _statement=True)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        await self.run(lambda c: c.executemany(sql, rows))

    async def fetchall(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        return await self.run(lambda c: c.execute(sql, params).fetchall(), _statement=True)

    async def fetchone(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        return await self.run(lambda c: c.execute(sql, params).fetchone(), _statement=True)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_sync)
        self._executor.shutdown(wait=True)
