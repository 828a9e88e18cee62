"""Recordings at rest: every recorded file is an encrypted blob (AES-256-GCM chunks,
`mediasrv.storage.blobs`) described by a row in `recordings` / `recording_files`.

The writer from `new_writer` muxes straight into the blob store (`sealed_output.SealedOutput`), so
no plaintext reaches the disk and filing a finished file is just its database row. Before a file's
blob is sealed, its row is written to `recording_files_pending` (from the writer thread); filing
moves it to `recording_files`. A crash leaves only encrypted blobs, pending rows and a recording in
state `recording`; `recover()` (at startup) files every pending row whose blob is finished and reads
back intact (so a file sealed just before the crash is kept), deletes every other recording blob,
and marks the recording `interrupted`. Pending rows are never listed: a half-written file is never
offered for download.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediasrv.recording.muxer import RecordingWriter, TrackResult
from mediasrv.recording.sealed_output import FINAL_PREFIX, SPILL_PREFIX, is_recording_blob
from mediasrv.storage.crypto import IntegrityError
from mediasrv.storage.database import (
    Connection,
    Database,
    Row,
    add_column,
    register_migration,
    register_schema,
)


def _file_table(name: str, sealed: bool) -> str:
    """A recorded file's table: filed (`recording_files`) or about to be sealed (no size or sha256
    yet). One column list for both, in the order the positional INSERTs rely on."""
    sealed_columns = "size INTEGER NOT NULL, sha256 TEXT NOT NULL, " if sealed else ""
    return (f"CREATE TABLE IF NOT EXISTS {name} (blob_id TEXT PRIMARY KEY, "
            "recording_id TEXT NOT NULL REFERENCES recordings (id) ON DELETE CASCADE, "
            "participant TEXT NOT NULL, kind TEXT NOT NULL, codec TEXT NOT NULL, content_type TEXT NOT NULL, "
            f"{sealed_columns}frames INTEGER NOT NULL, start_s REAL, end_s REAL)")


register_schema(
    "recordings",
    [
        """CREATE TABLE IF NOT EXISTS recordings (
            id TEXT PRIMARY KEY,
            room TEXT NOT NULL,
            visit TEXT,
            started_by TEXT NOT NULL,
            started_at REAL NOT NULL,
            stopped_at REAL,
            state TEXT NOT NULL
        )""",
        _file_table("recording_files", sealed=True),
        "CREATE INDEX IF NOT EXISTS recording_files_rec ON recording_files (recording_id)",
        # Who took part (consented while it ran): with the starter, the clinicians who may see it.
        """CREATE TABLE IF NOT EXISTS recording_participants (
            recording_id TEXT NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
            identity TEXT NOT NULL,
            PRIMARY KEY (recording_id, identity)
        )""",
        # A file about to be sealed: its row, without size and sha256 (known once sealed).
        _file_table("recording_files_pending", sealed=False),
    ],
)

# Recordings made before they kept their visit have none (NULL): admins still see them.
register_migration("recordings", 2, lambda conn, _dialect: add_column(conn, "recordings", "visit", "TEXT"))
# The node a recording runs on, in a cluster (NULL: a node on its own): a node starting up recovers
# only its own recordings, never those other nodes sharing the database are making.
register_migration("recordings", 3, lambda conn, _dialect: add_column(conn, "recordings", "node", "TEXT"))
_PENDING_COLUMNS = ("blob_id", "recording_id", "participant", "kind", "codec", "content_type", "frames",
                    "start_s", "end_s")

CONTENT_TYPES = {(".webm", "video"): "video/webm", (".webm", "audio"): "audio/webm",
                 (".mkv", "video"): "video/x-matroska", (".mkv", "audio"): "audio/x-matroska"}
COPY_BLOCK = 1024 * 1024
# A recording a clinician may list and download (besides being for their token's room): one they
# started, consented to while it ran, or have a file in (recordings from before participants were kept).
VISIBLE_TO = ("(started_by = ? OR EXISTS (SELECT 1 FROM recording_participants p"
              " WHERE p.recording_id = recordings.id AND p.identity = ?)"
              " OR EXISTS (SELECT 1 FROM recording_files f WHERE f.recording_id = recordings.id AND f.participant = ?))")
PENDING_ROW_TIMEOUT_S = 30.0  # how long the writer thread waits for the database before sealing anyway
log = logging.getLogger(__name__)


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
    """Copies a finished plaintext file (a writer without blob store) into a new encrypted blob and
    removes it (blocking: run in a thread). Returns (blob_id, size, sha256)."""
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
    def __init__(self, db: Database, blobs: Any, work_dir: Path, node: str = "") -> None:
        """`node`: this node's id in a cluster whose nodes share the database and blob directory
        ('' for a node on its own)."""
        self.db, self.blobs, self.work_dir, self.node = db, blobs, work_dir, node

    def new_work_dir(self, recording_id: str) -> Path:
        """A plaintext working directory: only for writers without a blob store (use `new_writer`)."""
        d = self.work_dir / recording_id
        d.mkdir(parents=True, mode=0o700, exist_ok=True)
        return d

    def new_writer(self, recording_id: str, owners: Mapping[str, str] | None = None) -> RecordingWriter:
        """A writer whose files go straight into the encrypted blob store (nothing in plaintext).
        `owners` (track key -> participant, filled as tracks are added) names each file's
        participant in its pending row, written before the file is sealed. Call it on the event
        loop: the writer thread hands the pending rows to it."""
        loop = asyncio.get_running_loop()

        def on_sealing(result: TrackResult) -> None:
            participant = (owners or {}).get(result.spec.key, "")
            row = self._pending_row(recording_id, participant, result)
            insert = self.db.execute(
                "INSERT INTO recording_files_pending VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (blob_id) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in _PENDING_COLUMNS[1:]), row)
            try:
                asyncio.run_coroutine_threadsafe(insert, loop).result(PENDING_ROW_TIMEOUT_S)
            except Exception:
                log.exception("recording %s: pending row of %s not written", recording_id, result.blob_id)

        return RecordingWriter(self.work_dir / recording_id, blobs=self.blobs, on_sealing=on_sealing)

    @staticmethod
    def _describe(result: TrackResult) -> tuple[str, str, str]:
        """(kind, codec, content type) of a written file (one track, or a group's tracks)."""
        specs = result.tracks or (result.spec,)
        kind = "video" if any(s.kind == "video" for s in specs) else "audio"
        codec = "+".join(dict.fromkeys(s.codec.lower() for s in specs))
        return kind, codec, CONTENT_TYPES[(result.path.suffix, kind)]

    def _pending_row(self, recording_id: str, participant: str, result: TrackResult) -> tuple[Any, ...]:
        kind, codec, content_type = self._describe(result)
        return (result.blob_id, recording_id, participant, kind, codec, content_type, result.frames,
                result.start_s, result.end_s)

    async def create(self, room: str, started_by: str, visit: str | None = None) -> str:
        rid = secrets.token_urlsafe(12)
        await self.db.execute(
            "INSERT INTO recordings (id, room, visit, started_by, started_at, state, node) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rid, room, visit, started_by, time.time(), "recording", self.node or None))
        return rid

    async def add_participants(self, recording_id: str, identities: list[str]) -> None:
        """Record who took part (consented while it ran); see `visible_to`."""
        await self.db.executemany(
            "INSERT INTO recording_participants (recording_id, identity) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(recording_id, i) for i in identities])

    async def add_file(self, recording_id: str, participant: str, result: TrackResult) -> RecordingFile | None:
        """Files one written file (one track, or a group's tracks); tracks without frames leave none.
        A result already sealed by the writer (`blob_id`) only gets its row; a plaintext file from a
        writer without blob store is sealed first."""
        if result.frames == 0:
            return None
        if result.blob_id is not None and result.sha256 is not None:
            blob_id, size, sha = result.blob_id, result.size, result.sha256
        elif result.path.exists():
            blob_id, size, sha = await asyncio.to_thread(seal_file, self.blobs, result.path)
        else:
            return None
        kind, codec, content_type = self._describe(result)
        f = RecordingFile(blob_id, participant, kind, codec, content_type,
                          size, sha, result.frames, result.start_s, result.end_s)
        row = (f.blob_id, recording_id, f.participant, f.kind, f.codec, f.content_type, f.size,
               f.sha256, f.frames, f.start_s, f.end_s)

        def file_it(c: Connection) -> None:
            c.execute("INSERT INTO recording_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            c.execute("DELETE FROM recording_files_pending WHERE blob_id = ?", (f.blob_id,))

        await self.db.run(file_it)
        return f

    async def finish(self, recording_id: str, state: str = "ready") -> None:
        await self.db.execute("UPDATE recordings SET stopped_at = ?, state = ? WHERE id = ?",
                              (time.time(), state, recording_id))
        work = self.work_dir / recording_id
        if work.exists():
            await asyncio.to_thread(_remove_dir, work)

    async def recover(self) -> dict[str, int]:
        """At startup, before any recording runs: recordings a crash interrupted become
        `interrupted` (their finished files stay listed), files sealed but not yet filed when it
        came are filed if their blob reads back intact, every other recording blob is deleted, and
        plaintext working files of older versions are wiped. A node of a cluster (`node`) recovers
        only the recordings it was making, and leaves blobs it cannot attribute in place: other
        nodes' running recordings write into the same directory."""
        mine, params = ("", ()) if not self.node else (" AND (node = ? OR node IS NULL)", (self.node,))
        marked = await self.db.run(lambda c: c.execute(
            "UPDATE recordings SET state = 'interrupted', stopped_at = ? WHERE state = 'recording'" + mine,
            (time.time(), *params)).rowcount)
        filed_late = 0
        pending_rows = await self.db.fetchall(
            "SELECT p.* FROM recording_files_pending p JOIN recordings r ON r.id = p.recording_id"
            " WHERE r.state <> 'recording'" + mine.replace("node", "r.node"), params)
        for pending in pending_rows:
            checked = await asyncio.to_thread(_check_sealed, self.blobs, pending["blob_id"])

            def settle(c: Connection, p: Row = pending,
                       ok: tuple[int, str] | None = checked) -> None:
                if ok is not None:
                    c.execute("INSERT INTO recording_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                              (p["blob_id"], p["recording_id"], p["participant"], p["kind"], p["codec"],
                               p["content_type"], ok[0], ok[1], p["frames"], p["start_s"], p["end_s"]))
                c.execute("DELETE FROM recording_files_pending WHERE blob_id = ?", (p["blob_id"],))

            await self.db.run(settle)
            filed_late += checked is not None
        rows = await self.db.fetchall(
            "SELECT blob_id FROM recording_files WHERE blob_id LIKE ?", (FINAL_PREFIX + "%",))
        filed = {r["blob_id"] for r in rows}
        deleted = 0 if self.node else await asyncio.to_thread(_delete_leftovers, self.blobs, filed)
        if self.work_dir.exists():
            await asyncio.to_thread(_wipe_dir, self.work_dir)
        if marked or deleted or filed_late:
            log.warning("recovered after a crash: %d recording(s) interrupted, %d sealed file(s) filed, "
                        "%d leftover blob(s) deleted", marked, filed_late, deleted)
        return {"interrupted": marked, "filed_after_crash": filed_late, "deleted_blobs": deleted}

    async def get(self, recording_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM recordings WHERE id = ?", (recording_id,))
        if row is None:
            return None
        files = await self.db.fetchall(
            "SELECT * FROM recording_files WHERE recording_id = ? ORDER BY participant, kind", (recording_id,))
        return {**_row(row), "files": [_row(f) for f in files]}

    async def list(self, room: str | None = None, limit: int = 100,
                   visible_to: str | None = None, visit: str | None = None) -> list[dict[str, Any]]:
        """Newest first; `visible_to`: only recordings that identity started or took part in;
        `visit`: only that visit's."""
        where, params = [], []
        for clause, value in (("room = ?", room), ("visit = ?", visit)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if visible_to is not None:
            where.append(VISIBLE_TO)
            params += [visible_to] * 3
        sql = "SELECT * FROM recordings" + (" WHERE " + " AND ".join(where) if where else "")
        rows = await self.db.fetchall(sql + " ORDER BY started_at DESC LIMIT ?", (*params, limit))
        return [_row(r) for r in rows]

    async def visible_to(self, recording_id: str, identity: str) -> bool:
        """Did `identity` start this recording or take part in it (consented, or has a file in it)?"""
        row = await self.db.fetchone(f"SELECT 1 FROM recordings WHERE id = ? AND {VISIBLE_TO}",
                                     (recording_id, identity, identity, identity))
        return row is not None

    async def file(self, recording_id: str, blob_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone(
            "SELECT * FROM recording_files WHERE recording_id = ? AND blob_id = ?", (recording_id, blob_id))
        return None if row is None else _row(row)


def _row(row: Row) -> dict[str, Any]:
    return {k: row[k] for k in row.keys()}  # noqa: SIM118 (Row is not a mapping)


def _check_sealed(blobs: Any, blob_id: str) -> tuple[int, str] | None:
    """(size, sha256) of a finished blob that decrypts whole (every chunk authenticated, the last
    one marked final); None if it is missing, unfinished or damaged (blocking)."""
    if not is_recording_blob(blob_id) or not blobs.exists(blob_id) or blobs.path(blob_id).with_suffix(".tail").exists():
        return None
    sha, size = hashlib.sha256(), 0
    try:
        with blobs.open_reader(blob_id) as reader:
            while block := reader.read(COPY_BLOCK):
                sha.update(block)
                size += len(block)
    except (OSError, IntegrityError) as exc:
        log.warning("recording blob %s is not intact, not filed: %r", blob_id, exc)
        return None
    return size, sha.hexdigest()


def _delete_leftovers(blobs: Any, filed: set[str]) -> int:
    """Spill blobs, and final blobs that are unfinished or were never filed (blocking)."""
    ids = {p.name.split(".", 1)[0] for p in Path(blobs.root).glob("*/rec*")}
    doomed = [b for b in ids if is_recording_blob(b)
              and (b.startswith(SPILL_PREFIX) or b not in filed or blobs.path(b).with_suffix(".tail").exists())]
    for blob_id in doomed:
        blobs.delete(blob_id)
    return len(doomed)


def _wipe_dir(path: Path) -> None:
    for p in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if p.is_dir():
            p.rmdir()
        else:
            p.unlink(missing_ok=True)


def _remove_dir(path: Path) -> None:
    for p in path.iterdir():
        p.unlink(missing_ok=True)
    path.rmdir()
