"""Recorded messages: `POST /whip/messages/{recipient}` with a messaging token (sub + role, no room).

The sender publishes with any WHIP client; the server records what it sends through the same path as
a visit recording (a private room whose recorder reads the sender's tracks from router sinks) and,
when the sender ends the session (DELETE, or the connection goes), files the recording as a message
to the recipient: ONE attachment, the sender's audio and video muxed into one file (the recorder
groups a message's tracks by sender, `TrackSpec.group`; WebM for VP8+Opus, Matroska for H.264),
probed like uploads, so the message becomes ready when processing ends. Only a track that started
too late to join the file (muxer.GROUP_WAIT_S) would become a second attachment.
"""

from __future__ import annotations

import logging
import secrets
import time

from aiohttp import web

from mediasrv.api import appkeys as keys
from mediasrv.api import whip_whep as whip
from mediasrv.api.http_common import HttpError, authenticate
from mediasrv.auth import Identity
from mediasrv.authz import check_identity, require_message_sender, require_messaging_token
from mediasrv.rooms import RoomOptions

log = logging.getLogger(__name__)


async def post_message(request: web.Request) -> web.Response:
    ident = require_messaging_token(authenticate(request),
                                    "use a messaging token (no room claim) to leave a message")
    require_message_sender(ident, "only patients and clinicians leave messages")
    recipient = check_identity("recipient", request.match_info["recipient"])
    rooms = request.app[keys.ROOMS]
    offer = await whip.sdp_body(request)
    if rooms.recording_store is None:
        raise HttpError(503, "recording_unavailable", "recording is not configured")
    # Each message is a peer connection, a private room and a recorder: one sender gets only a few.
    # Counted by the private rooms the sender is in, which the sender joins before this handler
    # next yields, so concurrent requests cannot all pass the check.
    limit = request.app[keys.SETTINGS].max_message_sessions_per_sender
    if sum(1 for r in rooms.list() if r.name.startswith(whip.MESSAGE_ROOM_PREFIX) and not r.closed
           and ident.sub in r.participants) >= limit:
        raise HttpError(429, "too_many_sessions", f"at most {limit} recorded messages at once per sender")
    room = rooms.create(whip.MESSAGE_ROOM_PREFIX + secrets.token_urlsafe(12), RoomOptions(recording_allowed=True))
    sender = Identity(sub=ident.sub, role=ident.role, room=room.name, name=ident.name, exp=ident.exp)
    session = await whip.start_session(request, sender, "whip", ident.sub, room)

    async def finished(reason: str) -> None:
        """The sender is done: stop, file the message, drop the private room. Nothing recorded
        (the sender went before any media, or while the recording was starting): no message."""
        request.app[keys.SESSIONS].pop(session.id, None)
        try:
            result = await room.recording.stop(sender, reason="message_sent")
            files = (result or {}).get("files") or []
            if not files:
                # Ids only: sender and recipient are patient data, the audit log has them.
                log.warning("recorded message session %s (room %s): nothing was recorded (%s), no message created",
                            session.id, room.name, reason)
                await request.app[keys.AUDIT].record(
                    actor=ident.sub, role=ident.role, action="message.not_created", target=recipient,
                    detail={"kind": "recorded", "reason": f"nothing_recorded:{reason}",
                            "recording_id": (result or {}).get("recording_id")})
                return
            store = request.app[keys.MESSAGES]
            message = await store.create_message(
                sender=ident.sub, sender_role=ident.role, recipient=recipient,
                subject="Recorded message", body="")
            # The audio+video file first: it is the message.
            files.sort(key=lambda f: (f["kind"] != "video", -f["frames"]))
            for n, f in enumerate(files, 1):
                ext = ".mkv" if "matroska" in f["content_type"] else ".webm"
                name = "recorded-message" if n == 1 else f"recorded-message-{n}"
                att = await store.create_attachment(
                    message_id=message.id, blob_id=f["blob_id"], content_type=f["content_type"],
                    length=f["size"], filename=f"{name}{ext}", expires_at=time.time() + 86400)
                await request.app[keys.PROCESSOR].completed(att, f["sha256"])
            await request.app[keys.AUDIT].record(
                actor=ident.sub, role=ident.role, action="message.created", target=recipient,
                detail={"message_id": message.id, "kind": "recorded", "count": len(files)})
        except Exception:
            log.exception("recorded message session %s (room %s): filing the message failed", session.id, room.name)
        finally:
            await rooms.close(room.name, "message_sent")

    # Set before publishing: a sender whose connection goes while the recording starts is handled
    # (the start is cancelled, nothing is filed) instead of leaving the room and its recorder open.
    session.participant.on_removed = finished
    try:
        answer = await room.publish(session.participant, offer, {})
        if not room.closed:
            await room.recording.start_for_message(sender)
    except Exception:
        session.participant.on_removed = None  # a refused offer is not a message
        await rooms.close(room.name, "negotiation_failed")
        await whip.fail(room, session)
        raise
    if room.closed or not room.recording.running:
        # The sender went (their connection failed) while the recording was starting.
        raise HttpError(409, "sender_gone", "the session ended before the recording started; no message was sent")
    session.etag = whip.etag(answer)
    return whip.created(request, session, f"/whip/{room.name}/{session.id}", answer)


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/whip/messages/{recipient}", post_message)
    app.router.add_route("OPTIONS", "/whip/messages/{recipient}", whip.preflight)
