"""Per-identity upload quota, checked when a tus upload is created (see docs/control-api.md).

Two limits, each 0 = off:
- `upload_quota_pending_bytes`: the declared lengths (Upload-Length) of the sender's unfinished,
  unexpired uploads. A client cannot reserve more disk than this by opening uploads it never ends.
- `upload_quota_daily_bytes`: the declared lengths of the sender's uploads created in the last 24
  hours (a rolling window) that are still stored, finished or not. Terminated uploads and deleted
  messages give their bytes back; retention (`retention_days`) bounds what a user holds in total.

Lengths are known at creation (Upload-Defer-Length is refused), so the whole upload is reserved
up front and a PATCH can never go over: the refusal is a 413 on creation, which tus clients
report as a failed creation instead of retrying.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mediasrv.config import Settings
from mediasrv.errors import MediasrvError
from mediasrv.messages.message_store import MessageStore
from mediasrv.storage.database import Connection, lock_key

WINDOW_S = 24 * 3600

# An upload in state 'uploading' past its expiry is dead (purged soon) and does not count.
_USAGE_SQL = """
SELECT COALESCE(SUM(CASE WHEN a.state = 'uploading' THEN a.length END), 0) AS pending,
       COALESCE(SUM(CASE WHEN a.created_at >= :since THEN a.length END), 0) AS recent
FROM attachments a JOIN messages m ON m.id = a.message_id
WHERE m.sender = :sender AND NOT (a.state = 'uploading' AND a.expires_at < :now)
"""


@dataclass(frozen=True)
class Usage:
    pending_bytes: int  # declared bytes of unfinished uploads
    recent_bytes: int  # declared bytes of uploads created in the last WINDOW_S


def usage_in(conn: Connection, sender: str, now: float | None = None) -> Usage:
    now = time.time() if now is None else now
    row = conn.execute(_USAGE_SQL, {"sender": sender, "since": now - WINDOW_S, "now": now}).fetchone()
    assert row is not None  # an aggregate always yields one row
    return Usage(int(row["pending"]), int(row["recent"]))


async def usage(store: MessageStore, sender: str, now: float | None = None) -> Usage:
    return await store.db.run(lambda conn: usage_in(conn, sender, now))


def admit(settings: Settings, sender: str, length: int, conn: Connection) -> None:
    """In the transaction that adds the upload's row: the check against the sender's usage, with
    every other node's check for the same sender held off until this transaction ends."""
    lock_key(conn, "upload-quota:" + sender)
    check(settings, usage_in(conn, sender), length)


def check(settings: Settings, used: Usage, length: int) -> None:
    """Raise 413 quota_exceeded if an upload of `length` bytes would go over a limit."""
    pending_limit, daily_limit = settings.upload_quota_pending_bytes, settings.upload_quota_daily_bytes
    if pending_limit and used.pending_bytes + length > pending_limit:
        raise MediasrvError("quota_exceeded",
                            f"unfinished uploads would hold {used.pending_bytes + length} bytes; the limit "
                            f"per user is {pending_limit} (finish or terminate an upload first)", 413)
    if daily_limit and used.recent_bytes + length > daily_limit:
        raise MediasrvError("quota_exceeded",
                            f"uploads of the last 24 hours would reach {used.recent_bytes + length} bytes; "
                            f"the limit per user is {daily_limit} (try again later)", 413)
