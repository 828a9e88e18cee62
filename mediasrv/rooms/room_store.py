"""Rooms at rest: the rooms configured through the control API (their options and visit id), so they
are re-created on startup; every visit (configured or ad hoc) with when it started and ended, so data
kept per visit can be given to the tokens that belong to it; and when each room name was last closed,
so tokens issued before a close cannot bring the room back."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from mediasrv.rooms.models import RoomOptions
from mediasrv.storage.database import Connection, Database, register_migration, register_schema

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
        """CREATE TABLE IF NOT EXISTS room_visits (
            visit_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            started_at REAL NOT NULL,
            ended_at REAL,
            -- ended by a close that refuses the tokens issued before it (an admin's, or max_duration)
            revoking INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX IF NOT EXISTS room_visits_name ON room_visits (name, started_at)",
    ],
)
# Visits that ended before any token still valid was issued are pruned by their end.
register_migration("rooms", 2, ["CREATE INDEX IF NOT EXISTS room_visits_ended ON room_visits (ended_at)"])


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
        def run(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO configured_rooms (name, visit_id, options, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET visit_id = excluded.visit_id, "
                "options = excluded.options, created_at = excluded.created_at",
                (room.name, room.visit_id, json.dumps(asdict(room.options)), room.created_at))
            _started(conn, room.visit_id, room.name, room.created_at)

        await self.db.run(run)

    async def configured(self) -> list[StoredRoom]:
        rows = await self.db.fetchall("SELECT * FROM configured_rooms ORDER BY created_at")
        return [StoredRoom(r["name"], r["visit_id"], _options(r["options"]), r["created_at"]) for r in rows]

    async def closed(self, name: str, at: float, visit_id: str | None = None) -> None:
        """The room `name` (its visit `visit_id`) is no longer configured, and was closed at `at`:
        tokens issued before then no longer open it."""

        def run(conn: Connection) -> None:
            conn.execute("DELETE FROM configured_rooms WHERE name = ?", (name,))
            conn.execute("UPDATE room_visits SET revoking = 1, ended_at = coalesce(ended_at, ?) "
                         "WHERE visit_id = ?", (at, visit_id))
            conn.execute("INSERT INTO closed_rooms (name, closed_at) VALUES (?, ?) ON CONFLICT (name) "
                         "DO UPDATE SET closed_at = CASE WHEN closed_rooms.closed_at > excluded.closed_at "
                         "THEN closed_rooms.closed_at ELSE excluded.closed_at END", (name, at))

        await self.db.run(run)

    async def close_times(self) -> dict[str, float]:
        rows = await self.db.fetchall("SELECT name, closed_at FROM closed_rooms")
        return {r["name"]: r["closed_at"] for r in rows}

    async def prune_closes(self, before: float) -> int:
        """Forget closes at or before `before`: no token issued before them can still be valid."""
        return await self.db.run(
            lambda c: c.execute("DELETE FROM closed_rooms WHERE closed_at <= ?", (before,)).rowcount)

    # --- visits -----------------------------------------------------------------------------------
    async def visit_started(self, visit_id: str, name: str, at: float) -> None:
        await self.db.run(lambda c: _started(c, visit_id, name, at))

    async def visit_ended(self, visit_id: str, at: float) -> None:
        await self.db.execute("UPDATE room_visits SET ended_at = ? WHERE visit_id = ? AND ended_at IS NULL",
                              (at, visit_id))

    async def end_visits_except(self, keep: list[str], at: float) -> None:
        """Every open visit not in `keep` ended at `at` (after a restart: only configured rooms are back)."""
        marks = ",".join("?" * len(keep))
        await self.db.execute(f"UPDATE room_visits SET ended_at = ? WHERE ended_at IS NULL"
                              f"{f' AND visit_id NOT IN ({marks})' if keep else ''}", (at, *keep))

    async def prune_visits(self, before: float) -> int:
        """Forget visits that ended before `before`: no token still valid was issued while they were
        open, so none can be given their data through them."""
        return await self.db.run(lambda c: c.execute(
            "DELETE FROM room_visits WHERE ended_at IS NOT NULL AND ended_at < ?", (before,)).rowcount)

    async def visit_room(self, visit_id: str) -> str | None:
        row = await self.db.fetchone("SELECT name FROM room_visits WHERE visit_id = ?", (visit_id,))
        return None if row is None else str(row["name"])

    async def visits_between(self, name: str, start: float, end: float) -> list[str]:
        """The visits of room `name` open at some time in [start, end] that a token valid from `start`
        could have been in: none that started after a close that refused such tokens. Latest first."""
        rows = await self.db.fetchall(
            "SELECT visit_id FROM room_visits v WHERE name = ? AND started_at <= ? "
            "AND (ended_at IS NULL OR ended_at >= ?) AND NOT EXISTS (SELECT 1 FROM room_visits c "
            "WHERE c.name = v.name AND c.revoking <> 0 AND c.ended_at >= ? AND c.ended_at <= v.started_at) "
            "ORDER BY started_at DESC", (name, end, start, start))
        return [r["visit_id"] for r in rows]


def _started(conn: Connection, visit_id: str, name: str, at: float) -> None:
    conn.execute("INSERT INTO room_visits (visit_id, name, started_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                 (visit_id, name, at))
