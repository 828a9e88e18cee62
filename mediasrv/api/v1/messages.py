"""Store-and-forward messages: /v1/messages...

Only the sender, the recipient and admins see a message (anyone else gets the same 404 as for a
message that does not exist); only the recipient marks it read; the sender or the recipient deletes it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from mediasrv.api import appkeys as keys
from mediasrv.api.http_common import HttpError, json_response, read_json
from mediasrv.api.v1.common import (
    audit,
    check_path_id,
    get_str,
    messaging_identity,
    query_float,
    query_int,
    reject_unknown,
)
from mediasrv.api.v1.downloads import DOWNLOAD_SAFETY_HEADERS, stream_blob
from mediasrv.auth import Identity
from mediasrv.authz import check_identity, is_party, require_message_sender
from mediasrv.messages.message_store import Attachment, Message, MessageStore
from mediasrv.messages.removal import delete_message_and_blobs
from mediasrv.storage.blobs import BlobStore

MAX_SUBJECT_CHARS = 200
MAX_BODY_CHARS = 20_000


def attachment_json(message: Message, att: Attachment, viewer: Identity) -> dict[str, Any]:
    base = f"/v1/messages/{message.id}/attachments/{att.id}"
    out: dict[str, Any] = {
        "id": att.id, "state": att.state, "reason": att.reason, "content_type": att.content_type,
        "size": att.length, "filename": att.filename, "sha256": att.sha256, "media": att.media,
        "created_at": att.created_at, "completed_at": att.completed_at,
        "download_url": base if att.state == "ready" else None,
        "thumbnail_url": f"{base}/thumbnail" if att.thumbnail_blob else None,
    }
    if viewer.sub == message.sender and att.state == "uploading":
        out["upload_url"] = f"/v1/uploads/{att.upload_id}"
        out["upload_expires_at"] = att.expires_at
    return out


def message_json(message: Message, atts: list[Attachment], viewer: Identity, *,
                 with_body: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": message.id, "sender": message.sender, "sender_role": message.sender_role,
        "recipient": message.recipient, "subject": message.subject,
        "created_at": message.created_at, "read_at": message.read_at,
        "attachments": [attachment_json(message, a, viewer) for a in atts],
    }
    if with_body:
        out["body"] = message.body
    return out


async def _visible_message(request: web.Request, ident: Identity) -> Message:
    message_id = check_path_id("message", request.match_info["message_id"])
    message = await request.app[keys.MESSAGES].get_message(message_id)
    if message is None or not is_party(ident, message.sender, message.recipient):
        raise HttpError(404, "message_not_found", "no such message")
    return message


async def create_message(request: web.Request) -> web.Response:
    ident = require_message_sender(messaging_identity(request), "only patients and clinicians send messages")
    data = await read_json(request, request.app[keys.SETTINGS].max_signaling_body_bytes)
    reject_unknown(data, {"recipient", "subject", "body"})
    recipient = check_identity("recipient", data.get("recipient"))
    subject = get_str(data, "subject", max_len=MAX_SUBJECT_CHARS)
    body = get_str(data, "body", max_len=MAX_BODY_CHARS)
    assert subject is not None and body is not None
    store: MessageStore = request.app[keys.MESSAGES]
    message = await store.create_message(sender=ident.sub, sender_role=ident.role,
                                         recipient=recipient, subject=subject, body=body)
    await audit(request, ident, "message.created", target=recipient, detail={"message_id": message.id})
    return json_response(message_json(message, [], ident), status=201,
                         headers={"Location": f"/v1/messages/{message.id}"})


async def list_messages(request: web.Request) -> web.Response:
    ident = messaging_identity(request)
    box = request.query.get("box", "inbox")
    if box not in ("inbox", "sent"):
        raise HttpError(400, "invalid_query", "box must be 'inbox' or 'sent'")
    unread = request.query.get("unread", "false")
    if unread not in ("true", "false"):
        raise HttpError(400, "invalid_query", "unread must be 'true' or 'false'")
    limit = query_int(request, "limit", minimum=1, maximum=200, default=50)
    before = query_float(request, "before")
    assert limit is not None
    store: MessageStore = request.app[keys.MESSAGES]
    who = {"recipient": ident.sub} if box == "inbox" else {"sender": ident.sub}
    messages = await store.list_messages(**who, unread_only=unread == "true", before=before, limit=limit)
    atts = await store.list_attachments([m.id for m in messages])
    items = [message_json(m, atts[m.id], ident, with_body=False) for m in messages]
    next_before = messages[-1].created_at if len(messages) == limit else None
    return json_response({"messages": items, "next_before": next_before})


async def get_message(request: web.Request) -> web.Response:
    ident = messaging_identity(request)
    message = await _visible_message(request, ident)
    atts = await request.app[keys.MESSAGES].list_attachments([message.id])
    await audit(request, ident, "message.read", target=message.id, detail={"message_id": message.id})
    return json_response(message_json(message, atts[message.id], ident))


async def mark_read(request: web.Request) -> web.Response:
    ident = messaging_identity(request)
    message = await _visible_message(request, ident)
    if ident.sub != message.recipient:
        raise HttpError(403, "forbidden", "only the recipient marks a message read")
    read_at = await request.app[keys.MESSAGES].mark_read(message.id)
    await audit(request, ident, "message.marked_read", target=message.id, detail={"message_id": message.id})
    return json_response({"id": message.id, "read_at": read_at})


async def delete_message(request: web.Request) -> web.Response:
    ident = messaging_identity(request)
    message = await _visible_message(request, ident)
    if ident.sub not in (message.sender, message.recipient):
        raise HttpError(403, "forbidden", "only the sender or the recipient deletes a message")
    app = request.app
    await delete_message_and_blobs(app[keys.MESSAGES], app[keys.UPLOADS], app[keys.BLOBS],
                                   message.id)
    await audit(request, ident, "message.deleted", target=message.id, detail={"message_id": message.id})
    return web.Response(status=204)


async def _attachment_for_download(request: web.Request) -> tuple[Identity, Message, Attachment]:
    ident = messaging_identity(request)
    message = await _visible_message(request, ident)
    attachment_id = check_path_id("attachment", request.match_info["attachment_id"])
    att = await request.app[keys.MESSAGES].get_attachment(attachment_id)
    if att is None or att.message_id != message.id:
        raise HttpError(404, "attachment_not_found", "no such attachment")
    if att.state != "ready":
        raise HttpError(409, "attachment_not_ready", f"the attachment is {att.state}")
    return ident, message, att


async def download_attachment(request: web.Request) -> web.StreamResponse:
    ident, message, att = await _attachment_for_download(request)

    async def audited(status: int) -> None:
        await audit(request, ident, "attachment.downloaded", target=message.id,
                    detail={"message_id": message.id, "attachment_id": att.id, "status": status})

    # The content type is the sender's claim: stream_blob never lets a browser render it here.
    return await stream_blob(request, request.app[keys.BLOBS], att.blob_id, content_type=att.content_type,
                             sha256=att.sha256, filename=att.filename, before_send=audited)


async def download_thumbnail(request: web.Request) -> web.Response:
    ident, message, att = await _attachment_for_download(request)
    if not att.thumbnail_blob:
        raise HttpError(404, "thumbnail_not_found", "this attachment has no thumbnail")
    blobs: BlobStore = request.app[keys.BLOBS]
    jpeg = await asyncio.to_thread(blobs.read_bytes, att.thumbnail_blob)
    await audit(request, ident, "attachment.thumbnail_downloaded", target=message.id,
                detail={"message_id": message.id, "attachment_id": att.id})
    return web.Response(body=jpeg, content_type="image/jpeg",
                        headers={"Cache-Control": "private, no-store", **DOWNLOAD_SAFETY_HEADERS})


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/messages", create_message)
    r.add_get("/v1/messages", list_messages, allow_head=False)
    r.add_get("/v1/messages/{message_id}", get_message, allow_head=False)
    r.add_delete("/v1/messages/{message_id}", delete_message)
    r.add_post("/v1/messages/{message_id}/read", mark_read)
    r.add_get("/v1/messages/{message_id}/attachments/{attachment_id}", download_attachment,
              allow_head=False)
    r.add_get("/v1/messages/{message_id}/attachments/{attachment_id}/thumbnail", download_thumbnail,
              allow_head=False)
