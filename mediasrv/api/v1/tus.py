"""Attachment uploads over tus 1.0 at /v1/uploads/.

Extensions: creation, creation-with-upload, checksum (sha1, sha256), termination, expiration.
The upload id is a random 192-bit token and every request still needs the sender's bearer token.
Bytes go straight into the encrypted blob store as they arrive; a request body with an
Upload-Checksum is held back (in memory, or in an encrypted staging blob when large) until its
checksum is verified, so a mismatching chunk is discarded whole (460) and the offset stays. A body
without Content-Length (chunked) is held back the same way until it has ended within Upload-Length,
so a body that overruns it is refused (413) with none of its bytes kept and the offset unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from functools import partial, wraps
from typing import Any, TypeVar

from aiohttp import web

from mediasrv.api import appkeys as keys
from mediasrv.api.http_common import BodyTimeout, HttpError, body_chunks
from mediasrv.api.v1.common import (
    audit,
    check_path_id,
    messaging_identity,
)
from mediasrv.auth import Identity
from mediasrv.authz import is_party
from mediasrv.errors import MediasrvError
from mediasrv.messages import quota
from mediasrv.messages.message_store import Attachment, MessageStore
from mediasrv.messages.removal import delete_blobs
from mediasrv.messages.uploads import UploadState
from mediasrv.storage.blobs import BlobStore, BlobWriter, new_blob_id

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,checksum,termination,expiration"
CHECKSUMS: dict[str, Callable[[], Any]] = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
MAX_ATTACHMENTS_PER_MESSAGE = 20
# A checksummed body up to this size is verified in memory; larger ones go to a staging blob.
IN_MEMORY_CHECKED_BYTES = 8 * 1024 * 1024
# Plaintext handed to the writer thread at a time (amortises the thread hop, bounds memory).
WRITE_BATCH_BYTES = 1024 * 1024
READ_CHUNK_BYTES = 256 * 1024
LOCK_WAIT_S = 15.0
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")
_META_KEY = re.compile(r"^[!-+\--~]{1,64}$")  # printable ASCII without space and comma
T = TypeVar("T")


def _tus_headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store", **(extra or {})}


def tus_handler(fn: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Callable[
        [web.Request], Awaitable[web.StreamResponse]]:
    """Check Tus-Resumable (412 otherwise) and put it on error responses too."""

    @wraps(fn)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            if request.headers.get("Tus-Resumable") != TUS_VERSION:
                raise HttpError(412, "unsupported_tus_version",
                                f"this server speaks tus {TUS_VERSION}; send Tus-Resumable: {TUS_VERSION}",
                                {"Tus-Version": TUS_VERSION})
            return await fn(request)
        except MediasrvError as exc:  # the error middleware turns it into the response
            exc.headers = {**_tus_headers(), **exc.headers}
            raise

    return wrapper


def _http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def _header_int(request: web.Request, name: str, *, required: bool = True) -> int | None:
    raw = request.headers.get(name)
    if raw is None:
        if required:
            raise HttpError(400, "missing_header", f"the {name} header is required")
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:  # isdigit() alone accepts ², which int() refuses
        raise HttpError(400, "invalid_header", f"{name} must be a non-negative integer")
    return int(raw)


def parse_metadata(raw: str | None) -> dict[str, str]:
    """Upload-Metadata: comma-separated `key base64(value)` pairs (value optional)."""
    out: dict[str, str] = {}
    if not raw or not raw.strip():
        return out
    if len(raw) > 4096:
        raise HttpError(400, "invalid_header", "Upload-Metadata is too long")
    for item in raw.split(","):
        key, _, value = item.strip().partition(" ")
        if not _META_KEY.match(key) or key in out:
            raise HttpError(400, "invalid_header", "Upload-Metadata has a malformed or repeated key")
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise HttpError(400, "invalid_header", f"Upload-Metadata value of {key!r} is not base64 UTF-8") from None
    return out


def parse_checksum(raw: str | None) -> tuple[str, bytes] | None:
    if raw is None:
        return None
    algo, _, value = raw.strip().partition(" ")
    if algo not in CHECKSUMS:
        raise HttpError(400, "unsupported_checksum", f"checksum algorithm must be one of {sorted(CHECKSUMS)}")
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise HttpError(400, "invalid_header", "Upload-Checksum value is not base64") from None
    if len(digest) != CHECKSUMS[algo]().digest_size:
        raise HttpError(400, "invalid_header", f"Upload-Checksum is not a {algo} digest")
    return algo, digest


async def _uncancellable(fn: Callable[[], T]) -> T:
    """Run blocking storage work in a thread and let it finish even if the request is cancelled."""
    fut = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        await asyncio.wait([fut])  # keep holding the upload's lock until the disk work is done
        raise


# --- receiving bytes ---------------------------------------------------------------------------
async def _stream_into(request: web.Request, writer: BlobWriter, remaining: int) -> None:
    """Unchecked body whose Content-Length fits: append as it arrives; what arrived before a
    disconnect is kept."""
    buf = bytearray()
    received = 0
    too_long = False
    try:
        async for data in body_chunks(request, READ_CHUNK_BYTES):
            received += len(data)
            if received > remaining:
                too_long = True
                buf += data[: len(data) - (received - remaining)]
                break
            buf += data
            if len(buf) >= WRITE_BATCH_BYTES:
                batch = bytes(buf)
                buf.clear()
                await _uncancellable(partial(writer.append, batch))
    finally:
        rest = bytes(buf)

        def flush() -> None:
            writer.append(rest)
            writer.sync()

        await _uncancellable(flush)
    if too_long:
        raise HttpError(413, "exceeds_upload_length", "the body goes past Upload-Length")


async def _receive_staged(request: web.Request, writer: BlobWriter, remaining: int,
                          check: tuple[str, bytes] | None) -> None:
    """A body of unknown length, or with a checksum: received apart (in memory, then a staging
    blob) and committed whole once it is known to fit Upload-Length and match its checksum. An
    overrun (413) or a mismatch (460) keeps none of it; an unchecked body cut off by a disconnect
    keeps what arrived, as a streamed one does."""
    staging: BlobStore = request.app[keys.STAGING]
    hasher = CHECKSUMS[check[0]]() if check is not None else None
    buf = bytearray()
    staged: BlobWriter | None = None

    async def commit() -> None:
        rest = bytes(buf)
        if staged is None:

            def commit_memory() -> None:
                writer.append(rest)
                writer.sync()

            await _uncancellable(commit_memory)
        else:
            staged_writer = staged

            def commit_staged() -> None:
                staged_writer.append(rest)
                staged_writer.finish()
                with staging.open_reader(staged_writer.blob_id) as reader:
                    for block in reader.iter_range(0, reader.length, WRITE_BATCH_BYTES):
                        writer.append(block)
                writer.sync()

            await _uncancellable(commit_staged)

    received = 0
    try:
        try:
            async for data in body_chunks(request, READ_CHUNK_BYTES):
                received += len(data)
                if received > remaining:  # before any of it is committed
                    raise HttpError(413, "exceeds_upload_length",
                                    "the body goes past Upload-Length; none of it was stored")
                if hasher is not None:
                    hasher.update(data)
                buf += data
                if staged is None and len(buf) > IN_MEMORY_CHECKED_BYTES:
                    staged = await asyncio.to_thread(staging.create)
                if staged is not None and len(buf) >= WRITE_BATCH_BYTES:
                    batch = bytes(buf)
                    buf.clear()
                    await asyncio.to_thread(staged.append, batch)
        except BodyTimeout:
            if hasher is None:  # the client stalled: as after a disconnect, keep what arrived
                await commit()
            raise
        except MediasrvError:
            raise
        except BaseException:
            if hasher is None:  # the client went away: what arrived fits, keep it to resume from
                await commit()
            raise
        if check is not None and hasher is not None and hasher.digest() != check[1]:
            raise HttpError(460, "checksum_mismatch",
                            f"the {check[0]} of the body does not match Upload-Checksum; nothing was stored")
        await commit()
    finally:
        if staged is not None:
            staged_id, to_close = staged.blob_id, staged

            def discard() -> None:
                to_close.close()
                staging.delete(staged_id)

            await _uncancellable(discard)


async def _receive(request: web.Request, att: Attachment, writer: BlobWriter) -> None:
    checksum = parse_checksum(request.headers.get("Upload-Checksum"))
    remaining = att.length - writer.size
    if request.content_length is not None and request.content_length > remaining:
        raise HttpError(413, "exceeds_upload_length",
                        f"the body ({request.content_length} bytes) goes past Upload-Length")
    if checksum is None and request.content_length is not None:
        # The length is known to fit (checked above): stream straight into the upload.
        await _stream_into(request, writer, remaining)
    else:
        # A checksum, or a chunked body whose length shows only at its end: nothing is committed
        # until all of it has arrived and fits.
        await _receive_staged(request, writer, remaining, checksum)


async def _after_receive(request: web.Request, ident: Identity, att: Attachment,
                         writer: BlobWriter) -> None:
    """Slide the expiry forward; when the last byte is in, seal the blob and start processing."""
    store, state = request.app[keys.MESSAGES], request.app[keys.UPLOADS]
    if writer.size < att.length:
        att.expires_at = time.time() + request.app[keys.SETTINGS].upload_expiry_s
        await store.update_attachment(att.id, expires_at=att.expires_at)
        return
    sha256 = await _uncancellable(writer.finish)
    state.writers.pop(att.upload_id, None)
    state.completed.add(att.upload_id)
    await audit(request, ident, "upload.completed", target=att.message_id,
                detail={"message_id": att.message_id, "attachment_id": att.id, "upload_id": att.upload_id})
    await request.app[keys.PROCESSOR].completed(att, sha256)


# --- lookups -----------------------------------------------------------------------------------
async def _own_upload(request: web.Request) -> tuple[Identity, Attachment]:
    ident = messaging_identity(request)
    upload_id = check_path_id("upload", request.match_info["upload_id"])
    att = await request.app[keys.MESSAGES].get_attachment_by_upload(upload_id)
    if att is None:
        raise HttpError(404, "upload_not_found", "no such upload")
    message = await request.app[keys.MESSAGES].get_message(att.message_id)
    if message is None or message.sender != ident.sub:
        raise HttpError(404, "upload_not_found", "no such upload")  # the same answer as a wrong id
    return ident, att


def _check_not_expired(att: Attachment) -> None:
    if att.state == "uploading" and att.expires_at < time.time():
        raise HttpError(410, "upload_expired", "this upload has expired; start a new one")


def _check_offset_request(request: web.Request) -> None:
    if request.content_type != OFFSET_CONTENT_TYPE:
        raise HttpError(415, "unsupported_media_type", f"PATCH bodies must be {OFFSET_CONTENT_TYPE}")


# --- handlers ----------------------------------------------------------------------------------
async def options(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    return web.Response(status=204, headers=_tus_headers({
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Max-Size": str(settings.max_upload_bytes),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
    }))


@tus_handler
async def create_upload(request: web.Request) -> web.Response:
    ident = messaging_identity(request)
    settings = request.app[keys.SETTINGS]
    store: MessageStore = request.app[keys.MESSAGES]
    if "Upload-Defer-Length" in request.headers:
        raise HttpError(400, "defer_length_unsupported", "Upload-Length must be known at creation")
    length = _header_int(request, "Upload-Length")
    assert length is not None
    if length > settings.max_upload_bytes:
        raise HttpError(413, "upload_too_large", f"Upload-Length exceeds Tus-Max-Size ({settings.max_upload_bytes})")
    meta = parse_metadata(request.headers.get("Upload-Metadata"))
    message_id = meta.get("message")
    if not message_id:
        raise HttpError(400, "missing_metadata", "Upload-Metadata must name the message ('message')")
    message = await store.get_message(check_path_id("message", message_id))
    if message is None or not is_party(ident, message.sender, message.recipient):
        raise HttpError(404, "message_not_found", "no such message")
    if message.sender != ident.sub:
        raise HttpError(403, "forbidden", "only the sender of a message can attach files to it")
    content_type = (meta.get("content_type") or meta.get("filetype") or meta.get("type")
                    or "application/octet-stream").strip().lower()
    if not _CONTENT_TYPE.match(content_type):
        raise HttpError(400, "invalid_metadata", "content_type must look like type/subtype")
    filename = meta.get("filename") or meta.get("name")
    if filename is not None and (len(filename) > 255 or any(ord(c) < 0x20 for c in filename)):
        raise HttpError(400, "invalid_metadata", "filename must be at most 255 printable characters")
    existing = await store.list_attachments([message.id])
    if len(existing[message.id]) >= MAX_ATTACHMENTS_PER_MESSAGE:
        raise HttpError(409, "too_many_attachments",
                        f"a message has at most {MAX_ATTACHMENTS_PER_MESSAGE} attachments")
    blobs: BlobStore = request.app[keys.BLOBS]
    state: UploadState = request.app[keys.UPLOADS]
    async with state.quota_lock(ident.sub):
        quota.check(settings, await quota.usage(store, ident.sub), length)  # before making a blob
        writer = await asyncio.to_thread(blobs.create, new_blob_id())
        try:
            # Checked again with the row's insert: other nodes may be adding uploads of this sender.
            att = await store.create_attachment(
                message_id=message.id, blob_id=writer.blob_id, content_type=content_type, length=length,
                filename=filename, expires_at=time.time() + settings.upload_expiry_s,
                admit=partial(quota.admit, settings, ident.sub, length),
            )
        except BaseException:
            unused = writer

            def discard() -> None:
                unused.close()
                delete_blobs(blobs, [unused.blob_id])

            await asyncio.to_thread(discard)
            raise
    state.writers[att.upload_id] = writer
    state.generations[att.upload_id] = 0  # a new upload's lease starts at generation 0
    await audit(request, ident, "upload.created", target=message.id,
                detail={"message_id": message.id, "attachment_id": att.id, "upload_id": att.upload_id})
    async with state.lock(att.upload_id), state.claim(store, att.upload_id):
        if request.content_type == OFFSET_CONTENT_TYPE and (request.content_length or request.body_exists):
            try:
                await _receive(request, att, writer)  # creation-with-upload
            except HttpError as exc:
                if exc.status != 460:
                    raise
                # The upload exists; the client learns offset 0 and sends the bytes again.
        await _after_receive(request, ident, att, writer)
    offset = writer.size if not writer.finished else att.length
    return web.Response(status=201, headers=_tus_headers({
        "Location": f"/v1/uploads/{att.upload_id}",
        "Upload-Offset": str(offset),
        "Upload-Expires": _http_date(att.expires_at),
    }))


@tus_handler
async def head_upload(request: web.Request) -> web.Response:
    ident, att = await _own_upload(request)
    _check_not_expired(att)
    headers = {"Upload-Length": str(att.length)}
    if att.state == "uploading":
        state: UploadState = request.app[keys.UPLOADS]
        # Claimed like a write: the blob is only opened by the node writing it (423 elsewhere).
        async with state.claim(request.app[keys.MESSAGES], att.upload_id):
            writer = await state.writer(request.app[keys.BLOBS], att)
            offset = writer.size
            if offset == att.length and not writer.finished:
                await _seal_stranded(request, ident, att)
        headers["Upload-Offset"] = str(offset)
        if offset < att.length:
            headers["Upload-Expires"] = _http_date(att.expires_at)
    else:
        headers["Upload-Offset"] = str(att.length)
    return web.Response(status=200, headers=_tus_headers(headers))


async def _seal_stranded(request: web.Request, ident: Identity, att: Attachment) -> None:
    """Every byte of the upload is on disk but it was never sealed (its writer's node lost the
    claim between the last write and the seal, or stopped there). A client that reads offset =
    length sends nothing more, so the HEAD that tells it so finishes the upload."""
    state: UploadState = request.app[keys.UPLOADS]
    lock = state.lock(att.upload_id)
    try:
        await asyncio.wait_for(lock.acquire(), LOCK_WAIT_S)
    except TimeoutError:
        return  # a PATCH is at it: it seals the upload itself
    try:
        current = await request.app[keys.MESSAGES].get_attachment(att.id)
        if current is None or current.state != "uploading":
            return
        writer = await state.writer(request.app[keys.BLOBS], current)
        if writer.size == current.length and not writer.finished:
            await _after_receive(request, ident, current, writer)
    finally:
        lock.release()


@tus_handler
async def patch_upload(request: web.Request) -> web.Response:
    ident, att = await _own_upload(request)
    _check_offset_request(request)
    offset = _header_int(request, "Upload-Offset")
    _check_not_expired(att)
    state: UploadState = request.app[keys.UPLOADS]
    lock = state.lock(att.upload_id)
    try:
        await asyncio.wait_for(lock.acquire(), LOCK_WAIT_S)
    except TimeoutError:
        raise HttpError(423, "upload_busy", "another request is writing this upload") from None
    try:
        # Re-read: the state may have changed while this request waited for the lock.
        current = await request.app[keys.MESSAGES].get_attachment(att.id)
        if current is None:
            raise HttpError(404, "upload_not_found", "no such upload")
        if current.state != "uploading":
            if offset == current.length and not request.content_length:
                return web.Response(status=204, headers=_tus_headers({"Upload-Offset": str(offset)}))
            raise HttpError(409, "upload_complete", "this upload is already complete")
        assert offset is not None  # required above
        async with state.claim(request.app[keys.MESSAGES], current.upload_id):
            return await _patch_claimed(request, ident, current, offset)
    finally:
        lock.release()
        if att.upload_id not in state.writers and not lock.locked():
            state.locks.pop(att.upload_id, None)


async def _patch_claimed(request: web.Request, ident: Identity, current: Attachment,
                         offset: int) -> web.Response:
    """A PATCH once this node holds the upload's lock and its claim across nodes."""
    state: UploadState = request.app[keys.UPLOADS]
    writer = await state.writer(request.app[keys.BLOBS], current)
    if offset != writer.size:
        raise HttpError(409, "offset_mismatch",
                        f"Upload-Offset {offset} does not match the server's offset {writer.size}",
                        {"Upload-Offset": str(writer.size)})
    await _receive(request, current, writer)
    await _after_receive(request, ident, current, writer)
    headers = {"Upload-Offset": str(writer.size if not writer.finished else current.length)}
    if not writer.finished:
        headers["Upload-Expires"] = _http_date(current.expires_at)
    return web.Response(status=204, headers=_tus_headers(headers))


@tus_handler
async def terminate_upload(request: web.Request) -> web.Response:
    ident, att = await _own_upload(request)
    state: UploadState = request.app[keys.UPLOADS]
    async with state.lock(att.upload_id), state.claim(request.app[keys.MESSAGES], att.upload_id):
        await state.drop(att.upload_id)
        blob_ids = await request.app[keys.MESSAGES].delete_attachment(att.id)
        await asyncio.to_thread(delete_blobs, request.app[keys.BLOBS], blob_ids)
    await audit(request, ident, "upload.terminated", target=att.message_id,
                detail={"message_id": att.message_id, "attachment_id": att.id, "upload_id": att.upload_id})
    return web.Response(status=204, headers=_tus_headers())


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_route("OPTIONS", "/v1/uploads/", options)
    r.add_post("/v1/uploads/", create_upload)
    r.add_route("HEAD", "/v1/uploads/{upload_id}", head_upload)
    r.add_patch("/v1/uploads/{upload_id}", patch_upload)
    r.add_delete("/v1/uploads/{upload_id}", terminate_upload)
