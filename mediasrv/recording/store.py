"""Recordings at rest: each finished track file is sealed into the encrypted blob store (AES-256-GCM
chunks, `mediasrv.store.blobs`) and described by a row in `recordings` / `recording_files`.
The plaintext working file exists only while its track is being written (0600, under the data
directory) and is removed once sealed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediasrv.store.db import Database, register_schema

from .muxer import TrackResult

register_schema(
    "recordings",
    [
        """CREATE TABLE IF NOT EXISTS recordings (
            id TEXT PRIMARY KEY,
            room TEXT NOT NULL,
            started_by TEXT NOT NULL,
            started_at REAL NOT NULL,
            stopped_at REAL,
            state TEXT NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS recording_files (
            blob_id TEXT PRIMARY KEY,
            recording_id TEXT NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
            participant TEXT NOT NULL,
            kind TEXT NOT NULL,
            codec TEXT NOT NULL,
            content_type TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            frames INTEGER NOT NULL,
            start_s REAL,
            end_s REAL
        )""",
        "CREATE INDEX IF NOT EXISTS recording_files_rec ON recording_files (recording_id)",
    ],
)

CONTENT_TYPES = {(".webm", "video"): "video/webm", (".webm", "audio"): "audio/webm",
                 (".mkv", "video"): "video/x-matroska", (".mkv", "audio"): "audio/x-matroska"}
COPY_BLOCK = 1024 * 1024


@dataclass
class RecordingFile:
    blob_id: str
    participant: str
    kind: str
    codec: str
    content_type: str
    size: int
    sha256: str
    frames: int
    start_s: float | None
    end_s: float | None


def seal_file(blobs: Any, path: Path) -> tuple[str, int, str]:
    """Copies a finished file into a new encrypted blob and removes it (blocking: run in a thread).
    Returns (blob_id, size, sha256)."""
    writer = blobs.create()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(COPY_BLOCK):
            writer.append(block)
            size += len(block)
    sha = writer.finish()
    os.unlink(path)
    return writer.blob_id, size, sha


class RecordingStore:
    def __init__(self, db: Database, blobs: Any, work_dir: Path) -> None:
        self.db, self.blobs, self.work_dir = db, blobs, work_dir

    def new_work_dir(self, recording_id: str) -> Path:
        d = self.work_dir / recording_id
        d.mkdir(parents=True, mode=0o700, exist_ok=True)
        return d

    async def create(self, room: str, started_by: str) -> str:
        rid = secrets.token_urlsafe(12)
        await self.db.execute(
            "INSERT INTO recordings (id, room, started_by, started_at, state) VALUES (?, ?, ?, ?, ?)",
            (rid, room, started_by, time.time(), "recording"))
        return rid

    async def add_file(self, recording_id: str, participant: str, result: TrackResult) -> RecordingFile | None:
        """Seals one track's file; tracks that produced no frame leave no file."""
        if result.frames == 0 or not result.path.exists():
            return None
        blob_id, size, sha = await asyncio.to_thread(seal_file, self.blobs, result.path)
        f = RecordingFile(blob_id, participant, result.spec.kind, result.spec.codec.lower(),
                          CONTENT_TYPES[(result.path.suffix, result.spec.kind)], size, sha, result.frames,
                          result.start_s, result.end_s)
        await self.db.execute(
            "INSERT INTO recording_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (f.blob_id, recording_id, f.participant, f.kind, f.codec, f.content_type, f.size,
             f.sha256, f.frames, f.start_s, f.end_s))
        return f

    async def finish(self, recording_id: str, state: str = "ready") -> None:
        await self.db.execute("UPDATE recordings SET stopped_at = ?, state = ? WHERE id = ?",
                              (time.time(), state, recording_id))
        work = self.work_dir / recording_id
        if work.exists():
            await asyncio.to_thread(_remove_dir, work)

    async def get(self, recording_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM recordings WHERE id = ?", (recording_id,))
        if row is None:
            return None
        files = await self.db.fetchall(
            "SELECT * FROM recording_files WHERE recording_id = ? ORDER BY participant, kind", (recording_id,))
        return {**_row(row), "files": [_row(f) for f in files]}

    async def list(self, room: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        if room is None:
            rows = await self.db.fetchall("SELECT * FROM recordings ORDER BY started_at DESC LIMIT ?", (limit,))
        else:
            rows = await self.db.fetchall(
                "SELECT * FROM recordings WHERE room = ? ORDER BY started_at DESC LIMIT ?", (room, limit))
        return [_row(r) for r in rows]

    async def file(self, recording_id: str, blob_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone(
            "SELECT * FROM recording_files WHERE recording_id = ? AND blob_id = ?", (recording_id, blob_id))
        return None if row is None else _row(row)


def _row(row: sqlite3.Row) -> dict[str, Any]:
    return {k: row[k] for k in row.keys()}  # noqa: SIM118 (sqlite3.Row is not a mapping)


def _remove_dir(path: Path) -> None:
    for p in path.iterdir():
        p.unlink(missing_ok=True)
    path.rmdir()
