"""Retention: delete messages older than `retention_days` and uploads abandoned past their expiry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from mediasrv.api import appkeys as keys
from mediasrv.api.v1.messages import delete_message_and_blobs
from mediasrv.storage.blobs import BlobStore

log = logging.getLogger(__name__)
DAY_S = 86400.0


async def purge(app: web.Application, now: float | None = None) -> dict[str, int]:
    """One purge pass. `retention_days <= 0` keeps messages forever (uploads still expire)."""
    now = time.time() if now is None else now
    settings, store = app[keys.SETTINGS], app[keys.MESSAGES]
    blobs: BlobStore = app[keys.BLOBS]
    purged_messages = purged_uploads = 0
    if settings.retention_days > 0:
        cutoff = now - settings.retention_days * DAY_S
        while ids := await store.messages_older_than(cutoff):
            for message_id in ids:
                await delete_message_and_blobs(app, message_id)
            purged_messages += len(ids)
    while atts := await store.abandoned_uploads(now):
        for att in atts:
            async with app[keys.UPLOADS].lock(att.upload_id):
                await app[keys.UPLOADS].drop(att.upload_id)
                blob_ids = await store.delete_attachment(att.id)
                await asyncio.to_thread(lambda ids=blob_ids: [blobs.delete(b) for b in ids])
        purged_uploads += len(atts)
    audit = app[keys.AUDIT]
    for action, count in (("message.purged", purged_messages), ("upload.purged", purged_uploads)):
        if count:
            await audit.record(actor="mediasrv", role="system", action=action, detail={"count": count})
    return {"messages": purged_messages, "uploads": purged_uploads}


async def _purge_forever(app: web.Application, interval: float) -> None:
    while True:
        try:
            counts = await purge(app)
            if any(counts.values()):
                log.info("retention purge: %s", counts)
        except Exception:
            log.exception("retention purge failed")
        await asyncio.sleep(interval)


async def purge_task(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx hook: run the purge periodically while the app runs."""
    interval = app[keys.SETTINGS].retention_purge_interval_s
    task = asyncio.get_running_loop().create_task(_purge_forever(app, interval)) if interval > 0 else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
