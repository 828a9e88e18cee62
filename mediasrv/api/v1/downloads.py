"""Streaming a sealed blob over HTTP: one `bytes=` Range, decrypting only the chunks it covers.

Used for message attachments and recordings. Downloads are untrusted files: always sent as
attachments, never sniffed, sandboxed if opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from mediasrv.api.http_common import HttpError
from mediasrv.storage.blobs import BlobStore

STREAM_BLOCK_BYTES = 256 * 1024
DOWNLOAD_SAFETY_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One `bytes=` range as [start, end); None means 'send everything' (absent or ignorable)."""
    if not header or not header.startswith("bytes="):
        return None
    spec = header[6:].strip()
    first, dash, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if not spec.isascii():  # str.isdigit() accepts '²' (int() refuses it) and other scripts' digits
        return None
    if "," in spec or not dash or not (first or last) or not (first.isdigit() or not first) \
            or not (last.isdigit() or not last) or len(first) > 19 or len(last) > 19:
        return None  # multiple or malformed ranges: a server may ignore Range
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise _unsatisfiable(size)
    end = min(size, int(last) + 1) if last else size
    return start, end


def _unsatisfiable(size: int) -> HttpError:
    return HttpError(416, "range_not_satisfiable", "the requested range is outside the file",
                     {"Content-Range": f"bytes */{size}"})


async def stream_blob(request: web.Request, blobs: BlobStore, blob_id: str, *, content_type: str,
                      sha256: str | None, filename: str | None,
                      before_send: Callable[[int], Awaitable[None]] | None = None) -> web.StreamResponse:
    """Send the blob (or the requested range). `before_send(status)` runs once the request is
    known to succeed, e.g. to write the audit entry."""
    reader = await asyncio.to_thread(blobs.open_reader, blob_id)
    try:
        size = reader.length
        rng = parse_range(request.headers.get("Range"), size)
        start, end = rng or (0, size)
        status = 206 if rng else 200
        headers = {
            "Accept-Ranges": "bytes", "Content-Type": content_type,
            "Cache-Control": "private, no-store", "Content-Length": str(end - start),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}" if filename
            else "attachment",
            **DOWNLOAD_SAFETY_HEADERS,
        }
        if sha256:
            headers["ETag"] = f'"{sha256}"'
        if rng:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        if before_send is not None:
            await before_send(status)
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        reader.seek(start)
        pos = start
        while pos < end:
            block = await asyncio.to_thread(reader.read, min(STREAM_BLOCK_BYTES, end - pos))
            if not block:
                break
            await response.write(block)
            pos += len(block)
        await response.write_eof()
        return response
    finally:
        reader.close()
