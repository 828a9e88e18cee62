"""What happens after an upload's last byte: media probing and thumbnails, off the event loop.

Video and audio attachments go `processing` -> `ready` | `rejected(reason)`; other files are
`ready` at once. Attachments still `processing` at startup (the server stopped mid-probe) are
queued again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from mediasrv.messages import media_probe as probe
from mediasrv.messages.message_store import Attachment, MessageStore
from mediasrv.storage.blobs import BlobStore

log = logging.getLogger(__name__)
# Probing decodes video: one at a time leaves the other core to the media plane.
MAX_CONCURRENT_PROBES = 1


class AttachmentProcessor:
    def __init__(self, store: MessageStore, blobs: BlobStore, audit: Any) -> None:
        self.store = store
        self.blobs = blobs
        self.audit = audit
        self._tasks: set[asyncio.Task[None]] = set()
        self._sem = asyncio.Semaphore(MAX_CONCURRENT_PROBES)

    async def completed(self, att: Attachment, sha256: str) -> None:
        """The blob is sealed: record its sha256 and decide what processing it needs."""
        now = time.time()
        if probe.media_kind(att.content_type) is None:
            await self.store.update_attachment(att.id, state="ready", sha256=sha256, completed_at=now)
            return
        await self.store.update_attachment(att.id, state="processing", sha256=sha256, completed_at=now)
        self.schedule(att)

    def schedule(self, att: Attachment) -> None:
        task = asyncio.get_running_loop().create_task(self._process(att))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resume_pending(self) -> None:
        for att in await self.store.attachments_in_state("processing"):
            self.schedule(att)

    async def wait_idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _probe_sync(self, att: Attachment) -> tuple[dict[str, Any], str | None]:
        """Blocking: probe through the decrypting reader; thumbnail videos. Runs in a thread."""
        with self.blobs.open_reader(att.blob_id) as reader:
            result = probe.probe(reader, att.content_type, reader.length)
            thumb_id = None
            if probe.media_kind(att.content_type) == "video":
                try:
                    jpeg = probe.thumbnail(reader)
                except probe.MediaRejected as exc:
                    log.info("no thumbnail for attachment %s: %s", att.id, exc.reason)
                else:
                    thumb_id, _ = self.blobs.write_bytes(jpeg)
        return result.to_json(), thumb_id

    async def _process(self, att: Attachment) -> None:
        async with self._sem:
            try:
                media, thumb_id = await asyncio.to_thread(self._probe_sync, att)
            except probe.MediaRejected as exc:
                await self._finish(att, "rejected", reason=exc.reason)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a damaged blob or a decoder crash rejects this file only
                log.exception("probing attachment %s failed", att.id)
                await self._finish(att, "rejected", reason=f"the file could not be read ({type(exc).__name__})")
                return
            if not await self._finish(att, "ready", media=media, thumbnail_blob=thumb_id) and thumb_id:
                await asyncio.to_thread(self.blobs.delete, thumb_id)  # deleted meanwhile

    async def _finish(self, att: Attachment, state: str, **values: Any) -> bool:
        updated = await self.store.update_attachment(att.id, expect_state="processing", state=state, **values)
        if updated:
            action = "attachment.ready" if state == "ready" else "upload.rejected"
            detail: dict[str, Any] = {"message_id": att.message_id, "attachment_id": att.id}
            if state == "rejected":
                detail["reason"] = values.get("reason")
            await self.audit.record(actor="mediasrv", role="system", action=action,
                                    target=att.message_id, detail=detail)
        return updated
