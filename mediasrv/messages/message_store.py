"""Store-and-forward messages and their attachments in the metadata database.

Patient content (subject, body, attachment file names) is sealed with `RecordCipher`, bound to its row
id; identities, states, sizes and content types stay in clear so they can be queried.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mediasrv.storage.crypto import RecordCipher
from mediasrv.storage.database import Connection, Database, Row, register_migration, register_schema

register_schema(
    "messages",
    [
        """CREATE TABLE IF NOT EXISTS messages (
            id TEXT PRIMARY KEY,
            sender TEXT NOT NULL,
            sender_role TEXT NOT NULL,
            recipient TEXT NOT NULL,
            created_at REAL NOT NULL,
            read_at REAL,
            sealed BLOB NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS messages_recipient ON messages (recipient, created_at)",
        "CREATE INDEX IF NOT EXISTS messages_sender ON messages (sender, created_at)",
        "CREATE INDEX IF NOT EXISTS messages_created ON messages (created_at)",
        """CREATE TABLE IF NOT EXISTS attachments (
            id TEXT PRIMARY KEY,
            message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
            upload_id TEXT NOT NULL UNIQUE,
            blob_id TEXT NOT NULL,
            state TEXT NOT NULL,
            reason TEXT,
            content_type TEXT NOT NULL,
            length INTEGER NOT NULL,
            sealed_name BLOB,
            sha256 TEXT,
            media TEXT,
            thumbnail_blob TEXT,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            completed_at REAL
        )""",
        "CREATE INDEX IF NOT EXISTS attachments_message ON attachments (message_id)",
        "CREATE INDEX IF NOT EXISTS attachments_state ON attachments (state, expires_at)",
    ],
)

# Which node writes an unfinished upload (tus), so one writes at a time across nodes sharing the
# database and blob directory: `holder` (a node's random id, '' when free) until `expires_at`, renewed
# while it writes; `generation` counts hand-overs, so a node knows when its open writer is stale.
register_migration(
    "messages", 2,
    [
        """CREATE TABLE IF NOT EXISTS upload_leases (
            upload_id TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at REAL NOT NULL,
            generation INTEGER NOT NULL
        )""",
    ],
)

STATES = ("uploading", "processing", "ready", "rejected")


@dataclass
class Message:
    id: str
    sender: str
    sender_role: str
    recipient: str
    created_at: float
    read_at: float | None
    subject: str
    body: str


@dataclass
class Attachment:
    id: str
    message_id: str
    upload_id: str
    blob_id: str
    state: str
    reason: str | None
    content_type: str
    length: int
    filename: str | None
    sha256: str | None
    media: dict[str, Any] | None
    thumbnail_blob: str | None
    created_at: float
    expires_at: float
    completed_at: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def blob_ids(self) -> list[str]:
        return [b for b in (self.blob_id, self.thumbnail_blob) if b]


def new_id(nbytes: int = 16) -> str:
    return secrets.token_urlsafe(nbytes)


class MessageStore:
    def __init__(self, db: Database, cipher: RecordCipher) -> None:
        self.db = db
        self.cipher = cipher

    # --- messages --------------------------------------------------------------------------------
    def _message(self, row: Row) -> Message:
        content = json.loads(self.cipher.open(row["sealed"], b"message:" + row["id"].encode()))
        return Message(
            id=row["id"], sender=row["sender"], sender_role=row["sender_role"],
            recipient=row["recipient"], created_at=row["created_at"], read_at=row["read_at"],
            subject=content["subject"], body=content["body"],
        )

    async def create_message(
        self, *, sender: str, sender_role: str, recipient: str, subject: str, body: str
    ) -> Message:
        mid = new_id()
        sealed = self.cipher.seal(
            json.dumps({"subject": subject, "body": body}).encode(), b"message:" + mid.encode()
        )
        now = time.time()
        await self.db.execute(
            "INSERT INTO messages (id, sender, sender_role, recipient, created_at, sealed)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (mid, sender, sender_role, recipient, now, sealed),
        )
        return Message(mid, sender, sender_role, recipient, now, None, subject, body)

    async def get_message(self, message_id: str) -> Message | None:
        row = await self.db.fetchone("SELECT * FROM messages WHERE id = ?", (message_id,))
        return self._message(row) if row else None

    async def list_messages(
        self, *, recipient: str | None = None, sender: str | None = None,
        unread_only: bool = False, before: float | None = None, limit: int = 50,
    ) -> list[Message]:
        where, params = [], []
        for clause, value in (("recipient = ?", recipient), ("sender = ?", sender), ("created_at < ?", before)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if unread_only:
            where.append("read_at IS NULL")
        sql = "SELECT * FROM messages"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC LIMIT ?"
        params.append(limit)
        rows = await self.db.fetchall(sql, params)
        return [self._message(r) for r in rows]

    async def mark_read(self, message_id: str) -> float:
        now = time.time()
        await self.db.execute(
            "UPDATE messages SET read_at = COALESCE(read_at, ?) WHERE id = ?", (now, message_id)
        )
        row = await self.db.fetchone("SELECT read_at FROM messages WHERE id = ?", (message_id,))
        return float(row["read_at"]) if row else now

    async def delete_message(self, message_id: str) -> list[str]:
        """Delete a message and its attachment rows. Returns the blob ids the caller must remove."""

        def delete(conn: Connection) -> list[str]:
            rows = conn.execute(
                "SELECT blob_id, thumbnail_blob FROM attachments WHERE message_id = ?", (message_id,)
            ).fetchall()
            conn.execute("DELETE FROM upload_leases WHERE upload_id IN"
                         " (SELECT upload_id FROM attachments WHERE message_id = ?)", (message_id,))
            conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            return [b for r in rows for b in (r["blob_id"], r["thumbnail_blob"]) if b]

        return await self.db.run(delete)

    async def messages_older_than(self, cutoff: float, limit: int = 500) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT id FROM messages WHERE created_at < ? ORDER BY created_at LIMIT ?", (cutoff, limit)
        )
        return [r["id"] for r in rows]

    # --- attachments -----------------------------------------------------------------------------
    def _attachment(self, row: Row) -> Attachment:
        name = None
        if row["sealed_name"] is not None:
            name = self.cipher.open(row["sealed_name"], b"attachment-name:" + row["id"].encode()).decode()
        return Attachment(
            id=row["id"], message_id=row["message_id"], upload_id=row["upload_id"],
            blob_id=row["blob_id"], state=row["state"], reason=row["reason"],
            content_type=row["content_type"], length=row["length"], filename=name,
            sha256=row["sha256"], media=json.loads(row["media"]) if row["media"] else None,
            thumbnail_blob=row["thumbnail_blob"], created_at=row["created_at"],
            expires_at=row["expires_at"], completed_at=row["completed_at"],
        )

    async def create_attachment(
        self, *, message_id: str, blob_id: str, content_type: str, length: int,
        filename: str | None, expires_at: float, admit: Callable[[Connection], None] | None = None,
    ) -> Attachment:
        """`admit(conn)` runs first in the same transaction and may refuse by raising."""
        aid, upload_id = new_id(12), new_id(24)
        sealed = (
            self.cipher.seal(filename.encode(), b"attachment-name:" + aid.encode())
            if filename is not None else None
        )
        now = time.time()

        def insert(conn: Connection) -> None:
            if admit is not None:
                admit(conn)
            conn.execute(
                "INSERT INTO attachments (id, message_id, upload_id, blob_id, state, content_type,"
                " length, sealed_name, created_at, expires_at) VALUES (?, ?, ?, ?, 'uploading', ?, ?, ?, ?, ?)",
                (aid, message_id, upload_id, blob_id, content_type, length, sealed, now, expires_at),
            )

        await self.db.run(insert)
        return Attachment(aid, message_id, upload_id, blob_id, "uploading", None, content_type,
                          length, filename, None, None, None, now, expires_at, None)

    async def get_attachment(self, attachment_id: str) -> Attachment | None:
        row = await self.db.fetchone("SELECT * FROM attachments WHERE id = ?", (attachment_id,))
        return self._attachment(row) if row else None

    async def get_attachment_by_upload(self, upload_id: str) -> Attachment | None:
        row = await self.db.fetchone("SELECT * FROM attachments WHERE upload_id = ?", (upload_id,))
        return self._attachment(row) if row else None

    async def list_attachments(self, message_ids: list[str]) -> dict[str, list[Attachment]]:
        out: dict[str, list[Attachment]] = {m: [] for m in message_ids}
        if not message_ids:
            return out
        marks = ",".join("?" * len(message_ids))
        rows = await self.db.fetchall(
            f"SELECT * FROM attachments WHERE message_id IN ({marks}) ORDER BY created_at", message_ids
        )
        for r in rows:
            out[r["message_id"]].append(self._attachment(r))
        return out

    async def attachments_in_state(self, state: str) -> list[Attachment]:
        rows = await self.db.fetchall("SELECT * FROM attachments WHERE state = ?", (state,))
        return [self._attachment(r) for r in rows]

    async def update_attachment(self, attachment_id: str, *, expect_state: str | None = None,
                                **values: Any) -> bool:
        """Set columns of one attachment; with `expect_state`, only if it is still in that state."""
        allowed = {"state", "reason", "sha256", "media", "thumbnail_blob", "completed_at", "expires_at"}
        if set(values) - allowed:
            raise ValueError(f"cannot update {sorted(set(values) - allowed)}")
        if "media" in values and values["media"] is not None:
            values["media"] = json.dumps(values["media"], sort_keys=True)
        sets = ", ".join(f"{k} = ?" for k in values)
        sql, params = f"UPDATE attachments SET {sets} WHERE id = ?", [*values.values(), attachment_id]
        if expect_state is not None:
            sql += " AND state = ?"
            params.append(expect_state)
        return bool(await self.db.run(lambda c: c.execute(sql, params).rowcount))

    async def delete_attachment(self, attachment_id: str) -> list[str]:
        def delete(conn: Connection) -> list[str]:
            row = conn.execute(
                "SELECT blob_id, thumbnail_blob FROM attachments WHERE id = ?", (attachment_id,)
            ).fetchone()
            conn.execute("DELETE FROM upload_leases WHERE upload_id IN"
                         " (SELECT upload_id FROM attachments WHERE id = ?)", (attachment_id,))
            conn.execute("DELETE FROM attachments WHERE id = ?", (attachment_id,))
            return [b for b in (row["blob_id"], row["thumbnail_blob"]) if b] if row else []

        return await self.db.run(delete)

    # --- upload leases: one node writes an upload at a time -----------------------------------
    async def take_upload_lease(self, upload_id: str, holder: str, ttl_s: float) -> int | None:
        """Claim the right to write `upload_id` for `ttl_s` seconds: returns the upload's generation
        if `holder` holds it now (it was free, expired, or already `holder`'s), None while another
        holder's claim is live. The conditional UPDATE is the arbiter: on PostgreSQL a concurrent
        claim waits for the row and re-checks the condition, on SQLite writes are exclusive."""
        now = time.time()

        def take(conn: Connection) -> int | None:
            conn.execute("INSERT INTO upload_leases (upload_id, holder, expires_at, generation)"
                         " VALUES (?, '', 0, 0) ON CONFLICT DO NOTHING", (upload_id,))
            # Taking over another holder's expired claim is a hand-over too: the generation moves on,
            # so a node whose open writer predates that holder's writes reopens the blob.
            taken = conn.execute(
                "UPDATE upload_leases SET holder = ?, expires_at = ?,"
                " generation = generation + (CASE WHEN holder = ? OR holder = '' THEN 0 ELSE 1 END)"
                " WHERE upload_id = ? AND (holder = ? OR holder = '' OR expires_at < ?)",
                (holder, now + ttl_s, holder, upload_id, holder, now)).rowcount
            if not taken:
                return None
            row = conn.execute("SELECT generation FROM upload_leases WHERE upload_id = ?", (upload_id,)).fetchone()
            return int(row["generation"])

        return await self.db.run(take)

    async def renew_upload_lease(self, upload_id: str, holder: str, ttl_s: float) -> bool:
        return bool(await self.db.execute(
            "UPDATE upload_leases SET expires_at = ? WHERE upload_id = ? AND holder = ?",
            (time.time() + ttl_s, upload_id, holder)))

    async def release_upload_lease(self, upload_id: str, holder: str, *, done: bool = False) -> int | None:
        """Give the claim up; the generation moves on (whoever writes next reopens the blob). Returns
        the new generation, None if `holder` no longer held it. `done`: the upload is over, forget it."""

        def release(conn: Connection) -> int | None:
            if done:
                conn.execute("DELETE FROM upload_leases WHERE upload_id = ? AND holder = ?", (upload_id, holder))
                return None
            changed = conn.execute(
                "UPDATE upload_leases SET holder = '', expires_at = 0, generation = generation + 1"
                " WHERE upload_id = ? AND holder = ?", (upload_id, holder)).rowcount
            if not changed:
                return None
            row = conn.execute("SELECT generation FROM upload_leases WHERE upload_id = ?", (upload_id,)).fetchone()
            return int(row["generation"])

        return await self.db.run(release)

    async def abandoned_uploads(self, now: float, limit: int = 500) -> list[Attachment]:
        rows = await self.db.fetchall(
            "SELECT * FROM attachments WHERE state = 'uploading' AND expires_at < ? LIMIT ?", (now, limit)
        )
        return [self._attachment(r) for r in rows]
