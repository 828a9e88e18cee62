"""Retention: delete messages older than `retention_days` and uploads abandoned past their expiry."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from mediasrv.messages.message_store import MessageStore
from mediasrv.messages.removal import delete_blobs, delete_message_and_blobs
from mediasrv.messages.uploads import UploadState
from mediasrv.storage.audit_log import AuditLog
from mediasrv.storage.blobs import BlobStore

log = logging.getLogger(__name__)
DAY_S = 86400.0


@dataclass
class Retention:
    store: MessageStore
    uploads: UploadState
    blobs: BlobStore
    audit: AuditLog
    retention_days: float  # <= 0 keeps messages forever (uploads still expire)

    async def purge(self, now: float | None = None) -> dict[str, int]:
        """One purge pass; returns how many messages and abandoned uploads it deleted."""
        now = time.time() if now is None else now
        purged_messages = purged_uploads = 0
        if self.retention_days > 0:
            cutoff = now - self.retention_days * DAY_S
            while ids := await self.store.messages_older_than(cutoff):
                for message_id in ids:
                    await delete_message_and_blobs(self.store, self.uploads, self.blobs, message_id)
                purged_messages += len(ids)
        while atts := await self.store.abandoned_uploads(now):
            for att in atts:
                async with self.uploads.lock(att.upload_id):
                    await self.uploads.drop(att.upload_id)
                    blob_ids = await self.store.delete_attachment(att.id)
                    await asyncio.to_thread(delete_blobs, self.blobs, blob_ids)
            purged_uploads += len(atts)
        for action, count in (("message.purged", purged_messages), ("upload.purged", purged_uploads)):
            if count:
                await self.audit.record(actor="mediasrv", role="system", action=action,
                                        detail={"count": count})
        return {"messages": purged_messages, "uploads": purged_uploads}

    async def run(self, interval_s: float) -> None:
        """Purge every `interval_s` until cancelled; a failed pass is logged and retried."""
        while True:
            try:
                counts = await self.purge()
                if any(counts.values()):
                    log.info("retention purge: %s", counts)
            except Exception:
                log.exception("retention purge failed")
            await asyncio.sleep(interval_s)
