"""The audit log: an append-only table of who did what, when, from where — never patient content.

`detail` may carry identifiers (room, message id, track id, role) but no message text, file names or
readings; `record` rejects detail keys that are not on the allow-list below. Entries about a visit carry
its visit id (`visit`): a room name is reused by later visits, the visit id is not.
"""

from __future__ import annotations

import json
import time
from typing import Any

from mediasrv.storage.database import (
    Connection,
    Database,
    add_column,
    register_migration,
    register_schema,
)

_TABLE = """CREATE TABLE IF NOT EXISTS audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            actor TEXT NOT NULL,
            role TEXT NOT NULL,
            action TEXT NOT NULL,
            room TEXT,
            visit TEXT,
            target TEXT,
            address TEXT,
            detail TEXT
        )"""
# Append-only: the database itself refuses updates and deletes.
register_schema(
    "audit",
    {
        "sqlite": [
            _TABLE,
            """CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
               BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END""",
            """CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
               BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END""",
            "CREATE INDEX IF NOT EXISTS audit_log_ts ON audit_log (ts)",
        ],
        "postgresql": [
            _TABLE,
            """CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql
               AS $$ BEGIN RAISE EXCEPTION 'audit log is append-only'; END $$""",
            """CREATE OR REPLACE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
               FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""",
            """CREATE OR REPLACE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
               FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()""",
            "CREATE INDEX IF NOT EXISTS audit_log_ts ON audit_log (ts)",
        ],
    },
)


def _add_visit(conn: Connection, _dialect: str) -> None:
    add_column(conn, "audit_log", "visit", "TEXT")
    conn.execute("CREATE INDEX IF NOT EXISTS audit_log_visit ON audit_log (visit)")


register_migration("audit", 2, _add_visit)

ALLOWED_DETAIL_KEYS = frozenset(
    {"message_id", "attachment_id", "track_id", "source", "kind", "reason", "recording_id", "upload_id", "status", "count"}
)


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(
        self,
        *,
        actor: str,
        role: str,
        action: str,
        room: str | None = None,
        visit: str | None = None,
        target: str | None = None,
        address: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        if detail:
            bad = set(detail) - ALLOWED_DETAIL_KEYS
            if bad:
                raise ValueError(f"audit detail keys not allowed: {sorted(bad)}")
        await self.db.execute(
            "INSERT INTO audit_log (ts, actor, role, action, room, visit, target, address, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time(), actor, role, action, room, visit, target, address,
             json.dumps(detail, sort_keys=True) if detail else None),
        )

    async def query(
        self, *, since: float | None = None, action: str | None = None, room: str | None = None,
        limit: int = 100, before_id: int | None = None, visit: str | None = None,
    ) -> list[dict[str, Any]]:
        where, params = [], []
        for clause, value in (("ts >= ?", since), ("action = ?", action), ("room = ?", room),
                              ("visit = ?", visit), ("id < ?", before_id)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = "SELECT * FROM audit_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(max(1, min(limit, 1000)))
        rows = await self.db.fetchall(sql, params)
        out = []
        for r in rows:
            item = dict(r)
            item["detail"] = json.loads(item["detail"]) if item["detail"] else None
            out.append(item)
        return out
