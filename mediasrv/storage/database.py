"""SQLite in WAL mode behind one worker thread, so the event loop never blocks on disk.

Modules declare their schema with `register_schema(name, statements)`; `Database.open` applies every
registered schema (idempotent CREATE ... IF NOT EXISTS statements).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_SCHEMAS: dict[str, list[str]] = {}


def register_schema(name: str, statements: Sequence[str]) -> None:
    _SCHEMAS[name] = list(statements)


def add_column(conn: sqlite3.Connection, table: str, column: str, decl: str) -> None:
    """Add `column` to a table created before it existed (CREATE TABLE IF NOT EXISTS keeps old ones);
    stores call it once, in a transaction, before first use."""
    if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


class Database:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

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
        for statements in _SCHEMAS.values():
            for stmt in statements:
                conn.execute(stmt)
        self._conn = conn

    async def open(self) -> Database:
        await self.run(lambda _conn: None, _opening=True)
        return self

    async def run(self, fn: Callable[[sqlite3.Connection], T], _opening: bool = False) -> T:
        """Run `fn(conn)` on the database thread; a transaction wraps it."""

        def call() -> T:
            if self._conn is None:
                if not _opening:
                    raise RuntimeError("database is not open")
                self._open_sync()
            conn = self._conn
            assert conn is not None
            with self._lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Execute one statement; returns lastrowid."""
        return await self.run(lambda c: c.execute(sql, params).lastrowid or 0)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        await self.run(lambda c: c.executemany(sql, rows))

    async def fetchall(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return await self.run(lambda c: c.execute(sql, params).fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Row | None:
        return await self.run(lambda c: c.execute(sql, params).fetchone())

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)
