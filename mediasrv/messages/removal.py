"""Deleting a message with its attachments and their encrypted blobs, safely against uploads in flight."""

from __future__ import annotations

import asyncio
import contextlib

from mediasrv.errors import MediasrvError
from mediasrv.messages.message_store import MessageStore
from mediasrv.messages.uploads import UploadState
from mediasrv.storage.blobs import BlobStore

UPLOAD_LOCK_WAIT_S = 15.0


async def delete_message_and_blobs(store: MessageStore, uploads: UploadState, blobs: BlobStore,
                                   message_id: str) -> None:
    """Remove a message, its attachments and their blobs (a user's delete and the retention purge)."""
    async with contextlib.AsyncExitStack() as held:
        # Hold every attachment's upload lock: a PATCH in flight finishes (or fails cleanly) before
        # its writer is closed and its blob deleted, instead of writing into a closed file (a 500)
        # and leaving an orphaned tail file behind.
        for att in (await store.list_attachments([message_id]))[message_id]:
            lock = uploads.lock(att.upload_id)
            try:
                await asyncio.wait_for(lock.acquire(), UPLOAD_LOCK_WAIT_S)
            except TimeoutError:
                raise MediasrvError("upload_busy", "an attachment is being uploaded; retry",
                                    423) from None
            held.callback(lock.release)
            await uploads.drop(att.upload_id)
        blob_ids = await store.delete_message(message_id)
        await asyncio.to_thread(delete_blobs, blobs, blob_ids)


def delete_blobs(blobs: BlobStore, blob_ids: list[str]) -> None:
    """Blocking: call from a thread."""
    for blob_id in blob_ids:
        blobs.delete(blob_id)
