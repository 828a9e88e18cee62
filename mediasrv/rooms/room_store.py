"""Rooms at rest: the rooms configured through the control API (their options and visit id), so they
are re-created on startup, and when each room name was last closed, so tokens issued before a close
cannot bring the room back."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass

from mediasrv.rooms.models import RoomOptions
from mediasrv.storage.database import Database, register_schema

register_schema(
    "rooms",
    [
        """CREATE TABLE IF NOT EXISTS configured_rooms (
            name TEXT PRIMARY KEY,
            visit_id TEXT NOT NULL,
            options TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS closed_rooms (
            name TEXT PRIMARY KEY,
            closed_at REAL NOT NULL
        )""",
    ],
)


@dataclass
class StoredRoom:
    name: str
    visit_id: str
    options: RoomOptions
    created_at: float


def _options(text: str) -> RoomOptions:
    known = RoomOptions.__dataclass_fields__
    return RoomOptions(**{k: v for k, v in json.loads(text).items() if k in known})


class RoomStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def save(self, room: StoredRoom) -> None:
        await self.db.execute(
            "INSERT INTO configured_rooms (name, visit_id, options, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET visit_id = excluded.visit_id, options = excluded.options, "
            "created_at = excluded.created_at",
            (room.name, room.visit_id, json.dumps(asdict(room.options)), room.created_at))

    async def configured(self) -> list[StoredRoom]:
        rows = await self.db.fetchall("SELECT * FROM configured_rooms ORDER BY created_at")
        return [StoredRoom(r["name"], r["visit_id"], _options(r["options"]), r["created_at"]) for r in rows]

    async def closed(self, name: str, at: float) -> None:
        """The room `name` is no longer configured, and was closed at `at`."""

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM configured_rooms WHERE name = ?", (name,))
            conn.execute("INSERT INTO closed_rooms (name, closed_at) VALUES (?, ?) ON CONFLICT (name) "
                         "DO UPDATE SET closed_at = max(closed_at, excluded.closed_at)", (name, at))

        await self.db.run(run)

    async def close_times(self) -> dict[str, float]:
        rows = await self.db.fetchall("SELECT name, closed_at FROM closed_rooms")
        return {r["name"]: r["closed_at"] for r in rows}
