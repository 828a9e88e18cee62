"""The metadata database on both engines: versioned migrations (and files from before them), the
PostgreSQL adapter's SQL translation, and two nodes' transactions on one PostgreSQL database."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

import mediasrv.app  # noqa: F401 (every store registers its schema)
from mediasrv.messages.message_store import MessageStore
from mediasrv.recording.recording_store import RecordingStore
from mediasrv.rooms.room_store import RoomStore
from mediasrv.storage import database
from mediasrv.storage.audit_log import AuditLog
from mediasrv.storage.crypto import RecordCipher
from mediasrv.storage.database import Database, lock_key, open_database
from mediasrv.storage.postgres import translate
from mediasrv.vitals.vitals_store import VitalsStore

OLD_DUMP = Path(__file__).resolve().parents[1] / "data" / "sqlite_before_migrations.sql"
OLD_KEY = bytes(range(32))  # the storage key the dump's sealed rows were made with


def _old_file(path: Path, *, drop_visit: bool = False) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(OLD_DUMP.read_text())
    if drop_visit:  # as versions before visits were stored left it
        conn.executescript("""
            DROP INDEX vitals_room_visit_id; DROP INDEX audit_log_visit;
            DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;
            ALTER TABLE vitals_readings DROP COLUMN visit; ALTER TABLE audit_log DROP COLUMN visit;
            ALTER TABLE recordings DROP COLUMN visit;
        """)
    conn.close()
    return path


def _columns(path: Path, table: str) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
    finally:
        conn.close()


async def test_a_sqlite_file_from_before_migrations_opens_with_its_data(tmp_path: Path) -> None:
    path = _old_file(tmp_path / "old.sqlite3")
    db = await Database(path).open()
    try:
        applied = set(db.applied_migrations)
        assert {(m.module, m.version) for m in database.migrations()} == applied
        rows = await db.fetchall("SELECT module, version FROM schema_migrations")
        assert {(r["module"], r["version"]) for r in rows} == applied
        cipher = RecordCipher(OLD_KEY)
        messages = MessageStore(db, cipher)
        [msg] = await messages.list_messages(sender="dr-a")
        assert (msg.subject, msg.body, msg.recipient) == ("s", "b", "pt-b")
        atts = await messages.list_attachments([msg.id])
        assert [a.filename for a in atts[msg.id]] == ["x.png"]
        [reading] = await VitalsStore(db, cipher).readings(room="r1")
        assert reading.values == {"spo2": 97}
        [entry] = await AuditLog(db).query(visit="v1")
        assert entry["action"] == "room.created"
        [rec] = await RecordingStore(db, None, tmp_path / "rec").list(visit="v1")
        assert rec["state"] == "ready"
        assert await RoomStore(db).visit_room("v1") == "r1"
        # Still writable, constraints and triggers in place.
        await AuditLog(db).record(actor="x", role="admin", action="test")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            await db.execute("DELETE FROM audit_log")
    finally:
        await db.close()
    again = await Database(path).open()
    assert again.applied_migrations == []
    await again.close()


async def test_a_sqlite_file_without_visit_columns_gains_them(tmp_path: Path) -> None:
    path = _old_file(tmp_path / "older.sqlite3", drop_visit=True)
    assert "visit" not in _columns(path, "vitals_readings")
    db = await Database(path).open()
    try:
        for table in ("vitals_readings", "audit_log", "recordings"):
            assert "visit" in _columns(path, table)
        [entry] = await AuditLog(db).query(action="room.created")
        assert entry["visit"] is None  # kept, without the visit it never had
        await AuditLog(db).record(actor="x", role="admin", action="test", visit="v9")
        assert len(await AuditLog(db).query(visit="v9")) == 1
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            await db.execute("UPDATE audit_log SET actor = 'y'")  # the triggers came back (version 1)
    finally:
        await db.close()


async def test_a_new_migration_runs_once_on_either_engine(tmp_path: Path, database_url: str) -> None:
    url = database_url or f"sqlite:///{tmp_path / 'db.sqlite3'}"
    db = await open_database(url, tmp_path / "unused").open()
    assert ("messages", 1) in db.applied_migrations
    await db.close()
    database.register_migration("test_module", 1, ["CREATE TABLE IF NOT EXISTS test_t (id INTEGER PRIMARY KEY AUTOINCREMENT, x REAL, b BLOB)"])
    database.register_migration("test_module", 2, lambda conn, _d: database.add_column(conn, "test_t", "y", "INTEGER"))
    try:
        db = await open_database(url, tmp_path / "unused").open()
        assert db.applied_migrations == [("test_module", 1), ("test_module", 2)]
        await db.execute("INSERT INTO test_t (x, b, y) VALUES (?, ?, ?)", (0.1 + 0.2, b"\x00\xff", 2**40))
        row = await db.fetchone("SELECT * FROM test_t")
        # Full double precision, bytes and 64-bit integers on both engines.
        assert (row["id"], row["x"], bytes(row["b"]), row["y"]) == (1, 0.1 + 0.2, b"\x00\xff", 2**40)
        assert dict(row).keys() == {"id", "x", "b", "y"}
        await db.close()
        db = await open_database(url, tmp_path / "unused").open()
        assert db.applied_migrations == []
        await db.close()
    finally:
        database._MIGRATIONS.pop("test_module")


def test_postgres_translation() -> None:
    assert translate("SELECT * FROM t WHERE a = ? AND b LIKE 'x?%' AND c LIKE ?", True) == \
        "SELECT * FROM t WHERE a = %s AND b LIKE 'x?%%' AND c LIKE %s"
    assert translate("SELECT :since, 'a:b', x::text FROM t WHERE s = :sender", True) == \
        "SELECT %(since)s, 'a:b', x::text FROM t WHERE s = %(sender)s"
    assert translate("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, r REAL, b BLOB, n INTEGER)", False) == \
        "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, r DOUBLE PRECISION, b BYTEA, n BIGINT)"
    assert translate("SELECT 1 WHERE 'x' LIKE '%'", False) == "SELECT 1 WHERE 'x' LIKE '%'"


async def test_two_nodes_serialise_on_a_key(pg_cluster: object) -> None:
    """Two nodes' databases (one connection each) on one PostgreSQL database: a check-then-write
    under `lock_key` never interleaves, so a counter incremented by both loses no update."""
    from tests.pg_cluster import PostgresCluster

    assert isinstance(pg_cluster, PostgresCluster)
    url = pg_cluster.new_database()
    a, b = await open_database(url, Path()).open(), await open_database(url, Path()).open()
    try:
        await a.execute("CREATE TABLE counter (n INTEGER NOT NULL)")
        await a.execute("INSERT INTO counter VALUES (0)")

        def bump(conn: database.Connection) -> None:
            lock_key(conn, "counter")
            n = conn.execute("SELECT n FROM counter").fetchone()[0]
            conn.execute("SELECT pg_sleep(0.002)")  # widen the window between read and write
            conn.execute("UPDATE counter SET n = ?", (n + 1,))

        await asyncio.gather(*(db.run(bump) for _ in range(25) for db in (a, b)))
        assert (await a.fetchone("SELECT n FROM counter"))["n"] == 50
    finally:
        await a.close()
        await b.close()


async def test_a_node_reconnects_after_its_postgresql_connection_is_cut(pg_cluster: object) -> None:
    """The server ends the node's session (a restart, a failover): the transaction in flight fails,
    the next one runs on a new connection."""
    import psycopg

    from tests.pg_cluster import PostgresCluster

    assert isinstance(pg_cluster, PostgresCluster)
    db = await open_database(pg_cluster.new_database(), Path()).open()
    try:
        pid = (await db.fetchone("SELECT pg_backend_pid() AS pid"))["pid"]
        pg_cluster.sql(f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(psycopg.OperationalError):
            await db.fetchone("SELECT 1")
        assert (await db.fetchone("SELECT pg_backend_pid() AS pid"))["pid"] != pid
        assert (await db.fetchone("SELECT count(*) AS n FROM schema_migrations"))["n"] > 0
    finally:
        await db.close()


@pytest.mark.parametrize("overrides", [{"database_url": "mysql://x/y"}, {"database_url": "sqlite://relative"},
                                       {"upload_lease_s": 0}, {"upload_lease_s": float("nan")}])
def test_bad_database_settings_are_refused(overrides: dict[str, object]) -> None:
    from mediasrv.config import ConfigError, load_settings

    with pytest.raises(ConfigError):
        load_settings(env={}, **overrides)


def test_database_urls_name_the_engine(tmp_path: Path) -> None:
    from mediasrv.storage.postgres import PostgresDatabase

    assert open_database("", tmp_path / "d.sqlite3").path == str(tmp_path / "d.sqlite3")
    assert open_database(f"sqlite://{tmp_path}/x.sqlite3", tmp_path / "d").path == f"{tmp_path}/x.sqlite3"
    pg = open_database("postgresql://app:pw@db.internal:5432/mediasrv", tmp_path / "d")
    assert isinstance(pg, PostgresDatabase) and "pw" not in pg.path
