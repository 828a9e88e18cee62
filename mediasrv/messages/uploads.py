"""Upload state shared by the tus handlers and message deletion: open blob writers and their locks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from mediasrv.messages.message_store import Attachment
from mediasrv.storage.blobs import BlobStore, BlobWriter


class UploadState:
    """Open blob writers of unfinished uploads (reopening one rereads the blob) and their locks."""

    def __init__(self) -> None:
        self.writers: dict[str, BlobWriter] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        # Per sender: the quota check and the new upload's row are one step (no two creations both
        # passing the check against the same usage).
        self.quota_locks: dict[str, tuple[asyncio.Lock, int]] = {}  # sender -> (lock, users)
        # HEAD reopens writers without the upload's lock; two concurrent reopenings would give two
        # writers with diverging offsets (and chunk nonces) over one blob file.
        self._opening = asyncio.Lock()

    def lock(self, upload_id: str) -> asyncio.Lock:
        return self.locks.setdefault(upload_id, asyncio.Lock())

    @contextlib.asynccontextmanager
    async def quota_lock(self, sender: str) -> AsyncIterator[None]:
        lock, users = self.quota_locks.get(sender, (asyncio.Lock(), 0))
        self.quota_locks[sender] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self.quota_locks[sender]
            if users == 1:  # counted, not lock.locked(): a woken waiter has not re-acquired yet
                del self.quota_locks[sender]
            else:
                self.quota_locks[sender] = (lock, users - 1)

    async def writer(self, blobs: BlobStore, att: Attachment) -> BlobWriter:
        writer = self.writers.get(att.upload_id)
        if writer is None:
            async with self._opening:
                writer = self.writers.get(att.upload_id)
                if writer is None:
                    writer = await asyncio.to_thread(blobs.open_writer, att.blob_id)
                    self.writers[att.upload_id] = writer
        return writer

    async def drop(self, upload_id: str) -> None:
        writer = self.writers.pop(upload_id, None)
        self.locks.pop(upload_id, None)
        if writer is not None:
            await asyncio.to_thread(writer.close)

    async def close_all(self) -> None:
        for upload_id in list(self.writers):
            await self.drop(upload_id)
