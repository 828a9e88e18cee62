"""Encrypted blob store: AES-256-GCM in fixed-size chunks, written and read as streams.

File layout of `<blob_id>.blob`:

    header  = MAGIC (4) | chunk_size (4, big endian) | salt (16) | nonce_prefix (4)
    chunk i = AES-GCM(blob_key, nonce_prefix || i (8, big endian), plaintext_i,
                      aad = blob_id || i (8) || final flag (1)) -> ciphertext_i || tag (16)

Every chunk but the last holds exactly `chunk_size` plaintext bytes; the last one is sealed with the
final flag, so a truncated file, dropped chunk or reordered chunks fail to open. The key of each blob
is derived from the storage key and the blob's random salt (HKDF), so deterministic per-chunk nonces
never repeat across blobs.

While a blob is being written, its last incomplete chunk lives in `<blob_id>.tail`, sealed with a
fresh random nonce each time it is rewritten (the deterministic nonce of chunk i is used exactly once,
when chunk i is complete). The tail records its chunk index, so after a crash between writing a chunk
and rewriting the tail, the stale tail is recognised and the upload resumes at the last durable byte.

All methods here are blocking; callers run them in a thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import secrets
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mediasrv.storage.crypto import IntegrityError

MAGIC = b"MSB1"
TAIL_MAGIC = b"MST1"
DEFAULT_CHUNK_SIZE = 64 * 1024
TAG_LEN = 16
HEADER_LEN = 4 + 4 + 16 + 4
_BLOB_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def new_blob_id() -> str:
    return secrets.token_urlsafe(24)


def _check_blob_id(blob_id: str) -> str:
    if not _BLOB_ID.match(blob_id):
        raise ValueError("malformed blob id")
    return blob_id


def _blob_key(master: bytes, salt: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"mediasrv blob v1")
    return AESGCM(hkdf.derive(master))


def _aad(blob_id: str, index: int, final: bool) -> bytes:
    return blob_id.encode() + struct.pack(">QB", index, 1 if final else 0)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """Blobs under `root`, sharded by the first two characters of the id."""

    def __init__(self, root: Path, key: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if len(key) != 32:
            raise ValueError("the blob store needs a 32-byte key")
        if chunk_size <= 0 or chunk_size > 16 * 1024 * 1024:
            raise ValueError("chunk size must be between 1 byte and 16 MiB")
        self.root = Path(root)
        self.key = key
        self.chunk_size = chunk_size

    def path(self, blob_id: str) -> Path:
        _check_blob_id(blob_id)
        return self.root / blob_id[:2] / f"{blob_id}.blob"

    def exists(self, blob_id: str) -> bool:
        return self.path(blob_id).exists()

    def create(self, blob_id: str | None = None) -> BlobWriter:
        """Start a new, empty blob."""
        blob_id = _check_blob_id(blob_id or new_blob_id())
        path = self.path(blob_id)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        salt, prefix = os.urandom(16), os.urandom(4)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(MAGIC + struct.pack(">I", self.chunk_size) + salt + prefix)
            fh.flush()
            os.fsync(fh.fileno())
        writer = BlobWriter(self, blob_id, _new=True)
        writer.sync()  # an (empty) tail file marks the blob as unfinished
        return writer

    def open_writer(self, blob_id: str) -> BlobWriter:
        """Continue writing an unfinished blob (e.g. after a restart)."""
        return BlobWriter(self, blob_id)

    def open_reader(self, blob_id: str) -> BlobReader:
        return BlobReader(self, blob_id)

    def delete(self, blob_id: str) -> None:
        path = self.path(blob_id)
        for p in (path, path.with_suffix(".tail")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def write_bytes(self, data: bytes, blob_id: str | None = None) -> tuple[str, str]:
        """Store a small blob in one go. Returns (blob_id, sha256 hex)."""
        writer = self.create(blob_id)
        writer.append(data)
        return writer.blob_id, writer.finish()

    def read_bytes(self, blob_id: str) -> bytes:
        with self.open_reader(blob_id) as reader:
            return reader.read()


def _read_header(path: Path) -> tuple[int, bytes, bytes]:
    with open(path, "rb") as fh:
        header = fh.read(HEADER_LEN)
    if len(header) != HEADER_LEN or header[:4] != MAGIC:
        raise IntegrityError("blob header is malformed")
    (chunk_size,) = struct.unpack(">I", header[4:8])
    if chunk_size == 0:
        raise IntegrityError("blob header is malformed")
    return chunk_size, header[8:24], header[24:28]


class BlobWriter:
    """Appends plaintext to a blob; `size` is the number of durable plaintext bytes after `sync`."""

    def __init__(self, store: BlobStore, blob_id: str, *, _new: bool = False) -> None:
        self.store = store
        self.blob_id = _check_blob_id(blob_id)
        self.path = store.path(blob_id)
        self.tail_path = self.path.with_suffix(".tail")
        if not self.path.exists():
            raise FileNotFoundError(f"no blob {blob_id}")
        if not _new and not self.tail_path.exists():
            raise ValueError(f"blob {blob_id} is finished; it cannot be written again")
        self.chunk_size, salt, self._prefix = _read_header(self.path)
        self._aead = _blob_key(store.key, salt)
        self._record = self.chunk_size + TAG_LEN
        self._fh = open(self.path, "r+b")  # noqa: SIM115 - closed in close()/finish()
        # Drop a torn (partially written) chunk at the end: only whole chunks count.
        body = os.fstat(self._fh.fileno()).st_size - HEADER_LEN
        self._chunks = max(body, 0) // self._record
        self._fh.truncate(HEADER_LEN + self._chunks * self._record)
        self._tail = bytearray(self._load_tail())
        self._tail_dirty = _new
        self._sha = hashlib.sha256()
        self._rehash()
        self.finished = False
        # Called before anything is written (append, sync, finish); raises to refuse the write. Set by
        # the owner of a writer that may lose the right to write (an upload claimed across nodes).
        self.guard: Callable[[], None] | None = None

    # --- state ---------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self._chunks * self.chunk_size + len(self._tail)

    def _nonce(self, index: int) -> bytes:
        return self._prefix + struct.pack(">Q", index)

    def _load_tail(self) -> bytes:
        try:
            raw = self.tail_path.read_bytes()
        except FileNotFoundError:
            return b""
        if len(raw) < 4 + 8 + 12 + TAG_LEN or raw[:4] != TAIL_MAGIC:
            raise IntegrityError("blob tail is malformed")
        (index,) = struct.unpack(">Q", raw[4:12])
        if index != self._chunks:
            return b""  # stale: its bytes already went into a chunk before a crash
        try:
            return self._aead.decrypt(raw[12:24], raw[24:], self._tail_aad(index))
        except InvalidTag:
            raise IntegrityError("blob tail failed its integrity check") from None

    def _tail_aad(self, index: int) -> bytes:
        return self.blob_id.encode() + b"/tail" + struct.pack(">Q", index)

    def _rehash(self) -> None:
        """Recompute the running sha256 from what is on disk (only needed when reopening)."""
        if self._chunks == 0:
            self._sha.update(self._tail)
            return
        with BlobReader(self.store, self.blob_id, unfinished_chunks=self._chunks) as reader:
            while block := reader.read(1024 * 1024):
                self._sha.update(block)
        self._sha.update(self._tail)

    # --- writing -------------------------------------------------------------------------------
    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Add plaintext. Complete chunks go to the blob file; the rest waits in the tail."""
        if self.finished:
            raise ValueError("blob is already finished")
        if self.guard is not None:
            self.guard()
        if not data:
            return
        self._sha.update(data)
        self._tail += data
        self._tail_dirty = True
        # Keep up to one whole chunk in the tail: the last chunk must be sealed as final.
        if len(self._tail) > self.chunk_size:
            n = (len(self._tail) - 1) // self.chunk_size
            out = bytearray()
            with memoryview(self._tail) as view:
                for k in range(n):
                    index = self._chunks + k
                    with view[k * self.chunk_size : (k + 1) * self.chunk_size] as piece:
                        out += self._aead.encrypt(self._nonce(index), piece,
                                                  _aad(self.blob_id, index, False))
            self._fh.seek(HEADER_LEN + self._chunks * self._record)
            self._fh.write(out)
            self._chunks += n
            del self._tail[: n * self.chunk_size]

    def sync(self) -> None:
        """Make everything appended so far durable: chunks first, then the tail that follows them."""
        if self.guard is not None:
            self.guard()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        if not self._tail_dirty:
            return
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, bytes(self._tail), self._tail_aad(self._chunks))
        tmp = self.tail_path.with_suffix(".tail.tmp")
        with open(tmp, "wb", opener=lambda p, f: os.open(p, f, 0o600)) as fh:
            fh.write(TAIL_MAGIC + struct.pack(">Q", self._chunks) + nonce + sealed)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.tail_path)
        _fsync_dir(self.path.parent)
        self._tail_dirty = False

    def finish(self) -> str:
        """Seal the last chunk as final. Returns the sha256 (hex) of the whole plaintext."""
        if self.finished:
            raise ValueError("blob is already finished")
        if self.guard is not None:
            self.guard()
        index = self._chunks
        sealed = self._aead.encrypt(self._nonce(index), bytes(self._tail), _aad(self.blob_id, index, True))
        self._fh.seek(HEADER_LEN + index * self._record)
        self._fh.write(sealed)
        self._fh.truncate()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._chunks += 1
        self._tail.clear()
        with contextlib.suppress(FileNotFoundError):
            self.tail_path.unlink()
        self.finished = True
        return self._sha.hexdigest()

    def close(self) -> None:
        """Stop writing for now (sync first if the data must survive)."""
        if not self._fh.closed:
            self._fh.close()


class BlobReader(io.RawIOBase):
    """Seekable, read-only, decrypting view of a finished blob (a file-like object for PyAV too)."""

    def __init__(self, store: BlobStore, blob_id: str, *, unfinished_chunks: int | None = None) -> None:
        super().__init__()
        self.blob_id = _check_blob_id(blob_id)
        path = store.path(blob_id)
        self.chunk_size, salt, self._prefix = _read_header(path)
        self._aead = _blob_key(store.key, salt)
        self._record = self.chunk_size + TAG_LEN
        self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        body = os.fstat(self._fh.fileno()).st_size - HEADER_LEN
        # `unfinished_chunks`: read the complete chunks of a blob still being written (none final).
        self._unfinished = unfinished_chunks is not None
        if self._unfinished:
            assert unfinished_chunks is not None
            self._nchunks = unfinished_chunks
            self.length = unfinished_chunks * self.chunk_size
        else:
            if body < TAG_LEN:
                self._fh.close()
                raise IntegrityError("blob is truncated or unfinished")
            self._nchunks = -(-body // self._record)
            last = body - (self._nchunks - 1) * self._record
            if last < TAG_LEN:
                self._fh.close()
                raise IntegrityError("blob is truncated")
            self.length = (self._nchunks - 1) * self.chunk_size + last - TAG_LEN
        self._pos = 0
        self._cache_index = -1
        self._cache = b""

    def _chunk(self, index: int) -> bytes:
        if index == self._cache_index:
            return self._cache
        final = not self._unfinished and index == self._nchunks - 1
        self._fh.seek(HEADER_LEN + index * self._record)
        sealed = self._fh.read(self._record)
        try:
            plain = self._aead.decrypt(
                self._prefix + struct.pack(">Q", index), sealed, _aad(self.blob_id, index, final)
            )
        except InvalidTag:
            raise IntegrityError(f"blob chunk {index} failed its integrity check") from None
        if not final and len(plain) != self.chunk_size:
            raise IntegrityError(f"blob chunk {index} has the wrong size")
        self._cache_index, self._cache = index, plain
        return plain

    # --- io.RawIOBase ----------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.length + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        n = len(data)
        memoryview(buffer)[:n] = data
        return n

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed blob")
        end = self.length if size is None or size < 0 else min(self.length, self._pos + size)
        if self._pos >= end:
            return b""
        parts = []
        pos = self._pos
        while pos < end:
            index, offset = divmod(pos, self.chunk_size)
            chunk = self._chunk(index)
            piece = chunk[offset : offset + (end - pos)]
            parts.append(piece)
            pos += len(piece)
        self._pos = pos
        return b"".join(parts)

    def iter_range(self, start: int, end: int, block: int = 1024 * 1024) -> Iterator[bytes]:
        """Plaintext bytes [start, end) in blocks, decrypting only the chunks that cover them."""
        self.seek(start)
        while self._pos < end:
            data = self.read(min(block, end - self._pos))
            if not data:
                return
            yield data

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()
