"""A seekable file-like target for PyAV whose bytes never reach the disk in plaintext.

The Matroska/WebM muxer wants a seekable output: when it finishes it writes the cues (the seek index)
at the end and goes back once to the start of the file to fill in the segment size, the duration and
the seek head. Without seeking the file still plays but has no duration and no index, so players
cannot seek in it. Here the first `head_bytes` of the file stay in memory (every back-patch lands
there) and everything after them is appended, encrypted, to a *spill* blob. `seal()` then writes the
final blob: the patched head followed by the spill's bytes, decrypted and re-encrypted chunk by chunk
(the blob format is append-only and its first chunk was long written), and deletes the spill.
Files no larger than the head never touch the disk until they are sealed.

A crash leaves only encrypted blobs behind (ids with the prefixes below): unfinished ones, which
`RecordingStore.recover()` deletes at startup, and finished ones whose pending row it files after
checking them (the writer announces `final_blob_id` before sealing). Everything here blocks; the
writer thread calls it.
"""

from __future__ import annotations

import io
import secrets

from mediasrv.storage.blobs import BlobStore, BlobWriter

# Recording blob ids are longer than `new_blob_id()`'s (32 characters), so leftovers are told apart
# from resumable uploads, whose unfinished blobs must be kept.
SPILL_PREFIX = "recspill-"
FINAL_PREFIX = "rec-"
HEAD_BYTES = 1024 * 1024
COPY_BLOCK = 1024 * 1024


def spill_blob_id() -> str:
    return SPILL_PREFIX + secrets.token_urlsafe(24)


def final_blob_id() -> str:
    return FINAL_PREFIX + secrets.token_urlsafe(24)


def is_recording_blob(blob_id: str) -> bool:
    return blob_id.startswith((SPILL_PREFIX, FINAL_PREFIX)) and len(blob_id) > 32


class SealedOutput:
    """File-like (write/seek/tell) for `av.open(..., "w")`; call `seal()` after the container closed."""

    def __init__(self, blobs: BlobStore, head_bytes: int = HEAD_BYTES) -> None:
        if head_bytes <= 0:
            raise ValueError("head_bytes must be positive")
        self.blobs = blobs
        self.head_bytes = head_bytes
        self.head = bytearray()
        self.spill: BlobWriter | None = None
        self.spilled = 0  # bytes of the file after the head, in the spill blob
        self.pos = 0
        self.sealed = False
        self.write_failed = False  # the disk refused a write (full, I/O error): the file is lost
        self.discarded = False
        # Known before sealing, so the file's row can be written first (RecordingStore: pending).
        self.final_blob_id = final_blob_id()

    @property
    def size(self) -> int:
        return len(self.head) + self.spilled

    # --- what PyAV calls ---------------------------------------------------------------------
    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}.get(whence)
        if base is None:
            raise ValueError(f"bad whence {whence}")
        if base + offset < 0:
            raise ValueError("negative seek position")
        self.pos = base + offset
        return self.pos

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.sealed or self.discarded:
            raise ValueError("the output is already sealed or discarded")
        view = memoryview(data).cast("B")
        n = len(view)
        if self.pos < self.head_bytes:
            k = min(n, self.head_bytes - self.pos)
            if self.pos > len(self.head):
                self.head.extend(bytes(self.pos - len(self.head)))
            self.head[self.pos : self.pos + k] = view[:k]
            self.pos += k
            view = view[k:]
        if len(view):
            if self.pos != self.head_bytes + self.spilled or len(self.head) != self.head_bytes:
                # Only the head can be rewritten; the spill is append-only (and encrypted).
                raise OSError(f"the muxer rewrote byte {self.pos}, past the first {self.head_bytes} bytes")
            try:
                if self.spill is None:
                    self.spill = self.blobs.create(spill_blob_id())
                self.spill.append(view)
            except OSError:
                self.write_failed = True
                raise
            self.spilled += len(view)
            self.pos += len(view)
        return n

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass  # PyAV closes its target when the container closes; sealing is a separate step

    # --- ours ----------------------------------------------------------------------------------
    def seal(self) -> tuple[str, int, str]:
        """Write the final encrypted blob. Returns (blob_id, size, sha256 of the plaintext)."""
        if self.sealed:
            raise ValueError("the output is already sealed")
        self.sealed = True
        final = self.blobs.create(self.final_blob_id)
        try:
            final.append(self.head)
            if self.spill is not None:
                self.spill.finish()
                with self.blobs.open_reader(self.spill.blob_id) as reader:
                    while block := reader.read(COPY_BLOCK):
                        final.append(block)
            size = final.size
            sha = final.finish()
        except BaseException:
            final.close()
            self.blobs.delete(final.blob_id)
            raise
        finally:
            self.discard()
        return final.blob_id, size, sha

    def discard(self) -> None:
        """Drop the spill (and the head) without sealing, e.g. after a muxer error."""
        self.head = bytearray()
        self.discarded = True
        if self.spill is not None:
            self.spill.close()
            self.blobs.delete(self.spill.blob_id)
            self.spill = None
