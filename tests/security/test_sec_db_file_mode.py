"""The database (and the WAL files SQLite makes beside it) is readable by the server's user only."""

from __future__ import annotations

import stat

from mediasrv.storage.database import Database


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_new_database_files_are_owner_only(tmp_path) -> None:
    path = tmp_path / "mediasrv.sqlite3"
    db = await Database(path).open()
    try:
        await db.execute("CREATE TABLE IF NOT EXISTS t (x)")
        await db.execute("INSERT INTO t VALUES (1)")
        files = [p for p in tmp_path.iterdir() if p.name.startswith("mediasrv.sqlite3")]
        assert {p.name for p in files} >= {"mediasrv.sqlite3", "mediasrv.sqlite3-wal"}
        assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        await db.close()


async def test_an_existing_readable_database_is_tightened(tmp_path) -> None:
    path = tmp_path / "old.sqlite3"
    path.touch(mode=0o644)
    path.chmod(0o644)
    db = await Database(path).open()
    await db.close()
    assert _mode(path) == 0o600
