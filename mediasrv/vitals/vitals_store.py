"""Time series of vitals readings per visit, in the metadata database, encrypted at rest.

The reading itself (patient data) is sealed with AES-256-GCM, bound to its row by the associated data;
room, visit id, patient identity, kind and times stay in clear so a visit's series can be selected and
purged. A room name is reused by later visits; the visit id is not, so a series is selected by visit.
Rows stored before readings carried a visit have none (NULL) and keep their original associated data.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from mediasrv.storage.crypto import RecordCipher
from mediasrv.storage.database import (
    Connection,
    Database,
    add_column,
    register_migration,
    register_schema,
)
from mediasrv.vitals.fhir import StoredReading

register_schema(
    "vitals",
    [
        """CREATE TABLE IF NOT EXISTS vitals_readings (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            room TEXT,
            visit TEXT,
            patient TEXT NOT NULL,
            kind TEXT NOT NULL,
            received_at REAL NOT NULL,
            device_time_ms INTEGER,
            sealed BLOB NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS vitals_room ON vitals_readings (room, received_at)",
        "CREATE INDEX IF NOT EXISTS vitals_patient ON vitals_readings (patient, received_at)",
        # Paging a room's series by id (GET /v1/rooms/{room}/vitals?after=): no sort per page.
        "CREATE INDEX IF NOT EXISTS vitals_room_id ON vitals_readings (room, id)",
    ],
)

MAX_LIST = 100_000


def _aad(room: str | None, patient: str, kind: str, received_at: float, visit: str | None) -> bytes:
    # Without a visit, the associated data rows had before visits were stored: they still open.
    fields: list[Any] = ["vitals", room, patient, kind, received_at]
    if visit is not None:
        fields.append(visit)
    return json.dumps(fields).encode()


def _add_visit(conn: Connection, _dialect: str) -> None:
    add_column(conn, "vitals_readings", "visit", "TEXT")
    # Paging a visit's series by id: no sort per page.
    conn.execute("CREATE INDEX IF NOT EXISTS vitals_room_visit_id ON vitals_readings (room, visit, id)")


register_migration("vitals", 2, _add_visit)


class VitalsStore:
    def __init__(self, db: Database, cipher: RecordCipher) -> None:
        self.db = db
        self.cipher = cipher

    async def add_many(self, rows: list[tuple[str | None, str, str, dict[str, Any], int | None]],
                       received_at: float | None = None, *, visit: str | None = None) -> None:
        """rows: (room, patient, kind, jsonable reading, device_time_ms), all of visit `visit`."""
        now = time.time() if received_at is None else received_at
        params = [
            (room, visit, patient, kind, now, device_ms or None,
             self.cipher.seal(json.dumps(values).encode(), _aad(room, patient, kind, now, visit)))
            for room, patient, kind, values, device_ms in rows
        ]
        await self.db.executemany(
            "INSERT INTO vitals_readings (room, visit, patient, kind, received_at, device_time_ms, sealed)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)", params)

    async def readings(self, *, room: str | None = None, patient: str | None = None,
                   since: float | None = None, limit: int = MAX_LIST) -> list[StoredReading]:
        where, params = [], []
        for clause, value in (("room = ?", room), ("patient = ?", patient), ("received_at >= ?", since)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = "SELECT * FROM vitals_readings"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY received_at, id LIMIT ?"
        params.append(max(1, min(limit, MAX_LIST)))
        return [self._reading(r) for r in await self.db.fetchall(sql, params)]

    async def page(self, *, room: str, visits: list[str] | None = None, patient: str | None = None,
                   after: int = 0, limit: int = 1000) -> list[tuple[int, str | None, StoredReading]]:
        """A room's readings with id > `after`, oldest first by id (the order they were stored in, which
        is stable under paging even if the clock steps), at most `limit`, each with its id (the cursor)
        and visit. `visits`: only those visits' readings (None: every visit's, and those without one)."""
        sql = "SELECT * FROM vitals_readings WHERE room = ? AND id > ?"
        params: list[Any] = [room, after]
        if visits is not None:
            if not visits:
                return []
            sql += f" AND visit IN ({','.join('?' * len(visits))})"
            params += visits
        if patient is not None:
            sql += " AND patient = ?"
            params.append(patient)
        sql += " ORDER BY id LIMIT ?"
        params.append(max(1, min(limit, MAX_LIST)))
        return [(r["id"], r["visit"], self._reading(r)) for r in await self.db.fetchall(sql, params)]

    def _reading(self, r: Any) -> StoredReading:
        aad = _aad(r["room"], r["patient"], r["kind"], r["received_at"], r["visit"])
        values = json.loads(self.cipher.open(r["sealed"], aad))
        return StoredReading(kind=r["kind"], values=values, patient=r["patient"], room=r["room"],
                             received_at=datetime.fromtimestamp(r["received_at"], UTC),
                             device_time_ms=r["device_time_ms"])

    async def purge_before(self, cutoff: float) -> int:
        return await self.db.run(
            lambda c: c.execute("DELETE FROM vitals_readings WHERE received_at < ?", (cutoff,)).rowcount)
