"""Upload state shared by the tus handlers and message deletion: open blob writers and their locks.

Nodes that share the database and the blob directory can each take an upload's requests; one writes
it at a time. A request that reads or writes an unfinished upload first claims it (`claim`): a lease
row in the database, renewed while the request runs, given up after. A claim another node holds is
`423 upload_busy` (tus clients retry); a dead node's claim expires after `upload_lease_s`. Each
hand-over moves the upload's generation on, so a node whose open writer predates another node's
writes reopens the blob from disk (at the exact offset that node left) instead of trusting its own.

A claim is good until its expiry as of its last renewal (less a margin for the nodes' clocks). Every
write into the blob checks that first (the writer's guard), so a node stalled past its claim, or one
whose renewal found the upload taken over, writes nothing more: the request ends with `423
upload_busy` and the client resumes from the durable offset (HEAD).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from mediasrv.errors import MediasrvError
from mediasrv.messages.message_store import Attachment, MessageStore
from mediasrv.storage.blobs import BlobStore, BlobWriter

log = logging.getLogger(__name__)


def _busy() -> MediasrvError:
    return MediasrvError("upload_busy", "another server is writing this upload; retry in a moment",
                         423, {"Retry-After": "1"})


@dataclass
class _Claim:
    """This node's claim to write one upload, shared by its requests."""

    users: int
    valid_until: float  # time.monotonic() until which no other node can have taken it
    renewer: asyncio.Task[None] | None = None
    lost: bool = False  # a renewal found it taken over
    refused: bool = False  # a write was refused: the writer's view is not trusted


class UploadState:
    """Open blob writers of unfinished uploads (reopening one rereads the blob) and their locks."""

    def __init__(self, lease_s: float = 30.0) -> None:
        self.lease_s = lease_s
        self.holder = secrets.token_urlsafe(12)  # this node, in upload_leases
        # Generation of the upload when its open writer was last known current (see module doc).
        self.generations: dict[str, int] = {}
        self._claims: dict[str, _Claim] = {}
        # Stop writing this long before the claim's expiry: the other nodes' clocks may run ahead.
        self._margin_s = min(1.0, lease_s / 10)
        self._claiming = asyncio.Lock()
        self.completed: set[str] = set()  # uploads whose last byte came in under the current claim
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

    @contextlib.asynccontextmanager
    async def claim(self, store: MessageStore, upload_id: str) -> AsyncIterator[None]:
        """Hold the right to write `upload_id` across nodes for the block (re-entrant on this node);
        423 upload_busy while another node holds it."""
        async with self._claiming:
            held = self._claims.get(upload_id)
            if held is None:
                started = time.monotonic()
                generation = await store.take_upload_lease(upload_id, self.holder, self.lease_s)
                if generation is None:
                    raise _busy()
                if self.generations.get(upload_id) != generation:
                    await self._close_writer(upload_id)  # another node wrote since: reopen from disk
                held = _Claim(users=1, valid_until=started + self.lease_s - self._margin_s)
                held.renewer = asyncio.create_task(self._renew(store, upload_id, held))
                self._claims[upload_id] = held
                writer = self.writers.get(upload_id)  # one the creation opened before claiming
                if writer is not None:
                    writer.guard = self._guard(upload_id)
            elif held.lost:
                raise _busy()
            else:
                held.users += 1
        claim = held
        try:
            yield
        finally:
            # Under the same lock as claiming: a claim of this node must not slip in between
            # forgetting this one and giving it up in the database.
            async with self._claiming:
                claim.users -= 1
                if claim.users == 0:
                    del self._claims[upload_id]
                    if claim.renewer is not None:
                        claim.renewer.cancel()
                    done = upload_id in self.completed
                    self.completed.discard(upload_id)
                    generation = await asyncio.shield(
                        store.release_upload_lease(upload_id, self.holder, done=done))
                    if generation is None or claim.lost or claim.refused:
                        # Finished, or the claim was lost (its writer's view may be stale, or hold
                        # bytes a refused sync never made durable): reopen from disk next time.
                        self.generations.pop(upload_id, None)
                        await self._close_writer(upload_id)
                    else:
                        self.generations[upload_id] = generation

    def _guard(self, upload_id: str) -> Callable[[], None]:
        """A writer's check before each write (in the writer's thread): this node's claim on the
        upload must be held and good, else 423 upload_busy and nothing is written."""

        def check() -> None:
            claim = self._claims.get(upload_id)
            if claim is None or claim.lost or time.monotonic() >= claim.valid_until:
                if claim is not None:
                    claim.refused = True
                raise _busy()

        return check

    async def _renew(self, store: MessageStore, upload_id: str, claim: _Claim) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            started = time.monotonic()
            try:
                renewed = await store.renew_upload_lease(upload_id, self.holder, self.lease_s)
            except Exception:
                log.exception("upload %s: renewing the write claim failed", upload_id)
                continue
            if not renewed:
                claim.lost = True
                log.warning("upload %s: this node's write claim was taken over; its writes stop",
                            upload_id)
                return
            claim.valid_until = started + self.lease_s - self._margin_s

    async def _close_writer(self, upload_id: str) -> None:
        writer = self.writers.pop(upload_id, None)
        if writer is not None:
            await asyncio.to_thread(writer.close)

    async def writer(self, blobs: BlobStore, att: Attachment) -> BlobWriter:
        writer = self.writers.get(att.upload_id)
        if writer is None:
            async with self._opening:
                writer = self.writers.get(att.upload_id)
                if writer is None:
                    writer = await asyncio.to_thread(blobs.open_writer, att.blob_id)
                    writer.guard = self._guard(att.upload_id)
                    self.writers[att.upload_id] = writer
        return writer

    async def drop(self, upload_id: str) -> None:
        writer = self.writers.pop(upload_id, None)
        self.locks.pop(upload_id, None)
        self.generations.pop(upload_id, None)
        if writer is not None:
            await asyncio.to_thread(writer.close)

    async def close_all(self) -> None:
        for upload_id in list(self.writers):
            await self.drop(upload_id)
