"""WHIP (RFC 9725) ingest and WHEP egress over HTTP.

POST /whip/{room}                 → 201, Location: /whip/{room}/{session}, SDP answer
POST /whep/{room}/{identity}      → 201, Location: /whep/{room}/{identity}/{session}, SDP answer
PATCH <Location>                  → trickle ICE candidates (application/trickle-ice-sdpfrag)
DELETE <Location>                 → ends the session
OPTIONS on any of them            → CORS preflight and Accept-Post
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass

from aiohttp import web
from aiortc.sdp import candidate_from_sdp
from multidict import CIMultiDict

from mediasrv.api import appkeys as keys
from mediasrv.api.http_common import HttpError, authenticate, read_body
from mediasrv.api.room_protocol import MAX_VIDEO_HEIGHT
from mediasrv.api.v1.cluster import owner_url
from mediasrv.auth import Identity, bearer_token
from mediasrv.authz import is_party, require_participant_of, require_publisher
from mediasrv.clock import wall
from mediasrv.media.sdp import check_offer_text
from mediasrv.media.turn_credentials import issue
from mediasrv.rooms import Participant, Room

SDP_TYPE = "application/sdp"
TRICKLE_TYPE = "application/trickle-ice-sdpfrag"
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Patch, Accept-Post",
    "Access-Control-Allow-Methods": "OPTIONS, POST, PATCH, DELETE",
}
MAX_WHEP_SESSIONS_PER_IDENTITY = 8
MESSAGE_ROOM_PREFIX = "message~"  # rooms of recorded messages (mediasrv.api.recorded_messages)


@dataclass
class WhipSession:
    id: str
    kind: str  # "whip" | "whep"
    room: Room
    participant: Participant
    owner: str  # token subject that created it
    etag: str


def etag(sdp: str) -> str:
    return '"' + hashlib.sha256(sdp.encode()).hexdigest()[:16] + '"'


async def sdp_body(request: web.Request) -> str:
    if request.content_type != SDP_TYPE:
        raise HttpError(415, "unsupported_media_type", f"expected Content-Type: {SDP_TYPE}")
    body = await read_body(request, request.app[keys.SETTINGS].max_signaling_body_bytes)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "invalid_sdp", "SDP must be UTF-8 text") from None
    check_offer_text(text)  # a malformed or out-of-range offer is refused before anyone joins
    return text


def created(request: web.Request, session: WhipSession, location: str, answer: str,
            ident: Identity | None = None) -> web.Response:
    request.app[keys.SESSIONS][session.id] = session
    headers = CIMultiDict({**CORS, "Location": location, "ETag": session.etag, "Accept-Patch": TRICKLE_TYPE})
    if ident is not None:  # TURN servers with credentials for this token, as Link headers (RFC 9725)
        cred = issue(request.app[keys.SETTINGS], ident.sub, ident.exp, wall())
        for link in cred.link_headers() if cred is not None else []:
            headers.add("Link", link)
    return web.Response(status=201, text=answer, content_type=SDP_TYPE, headers=headers)


async def start_session(request: web.Request, ident: Identity, kind: str, identity: str, room: Room) -> WhipSession:
    # A place under the caps of the client's address, identity and token (429 past one), held as
    # long as the participant is in the room: however the session ends, its place is free again.
    lease = request.app[keys.CONNECTION_CAPS].acquire(
        kind, address=request.remote, identity=ident.sub,
        token=bearer_token(request.headers.get("Authorization")))
    try:
        p = await room.join(dataclasses.replace(ident, sub=identity), kind, address=request.remote)
    except BaseException:
        lease.release()
        raise
    lease.bind(lambda: room.participants.get(p.identity) is p and not room.closed)
    return WhipSession(id=secrets.token_urlsafe(18), kind=kind, room=room, participant=p,
                       owner=ident.sub, etag="")


async def fail(room: Room, session: WhipSession) -> None:
    """The session could not be set up, for whatever reason: its participant goes, so a refused or
    failed offer never holds a place in the room (the error goes on to the client)."""
    p = session.participant
    if room.participants.get(p.identity) is p:  # not a newer session that replaced it
        await room.leave(p.identity, reason="negotiation_failed")


async def whip_post(request: web.Request) -> web.Response:
    room_name = request.match_info["room"]
    ident = require_publisher(require_participant_of(authenticate(request), room_name))
    await _redirect_to_owner(request, room_name)
    offer = await sdp_body(request)
    room = request.app[keys.ROOMS].get_or_create(room_name, ident)
    session = await start_session(request, ident, "whip", ident.sub, room)
    return await _answer(request, room, session, room.publish(session.participant, offer, {}),
                         f"/whip/{room_name}", ident)


async def whep_post(request: web.Request) -> web.Response:
    room_name, target = request.match_info["room"], request.match_info["identity"]
    ident = require_participant_of(authenticate(request), room_name)
    if ident.is_admin:
        raise HttpError(403, "forbidden", "use a room token to subscribe")
    await _redirect_to_owner(request, room_name)
    offer = await sdp_body(request)
    room = request.app[keys.ROOMS].get(room_name)
    if room is not None:  # a token from an earlier visit under this name subscribes to nothing
        request.app[keys.ROOMS].check_token(room_name, ident, room)
    publisher = room.participants.get(target) if room else None
    if room is None or publisher is None:
        raise HttpError(404, "unknown_identity", f"{target!r} is not in room {room_name!r}")
    open_sessions = sum(1 for s in request.app[keys.SESSIONS].values()
                        if s.kind == "whep" and s.owner == ident.sub and s.room is room)
    if open_sessions >= MAX_WHEP_SESSIONS_PER_IDENTITY:
        # Each session is a peer connection with its own ICE agent: one token must not make many.
        raise HttpError(429, "too_many_sessions",
                        f"at most {MAX_WHEP_SESSIONS_PER_IDENTITY} WHEP sessions per identity and room")
    max_height = _max_height(request)
    viewer = f"{ident.sub}:whep:{secrets.token_hex(3)}"
    session = await start_session(request, ident, "whep", viewer, room)
    session.participant.video_max_height = max_height
    return await _answer(request, room, session,
                         room.whep_subscribe(session.participant, target, offer),
                         f"/whep/{room_name}/{target}", ident)


def _max_height(request: web.Request) -> int | None:
    """`?max_height=` on a WHEP POST: the most video height the viewer wants (a simulcast
    publisher's layers above it are not sent to it), as `set_max_resolution` on the room protocol."""
    raw = request.query.get("max_height")
    if raw is None:
        return None
    if re.fullmatch(r"[0-9]{1,5}", raw) is None or not 1 <= int(raw) <= MAX_VIDEO_HEIGHT:
        raise HttpError(400, "invalid_request", f"max_height must be 1..{MAX_VIDEO_HEIGHT}")
    return int(raw)


async def _redirect_to_owner(request: web.Request, room_name: str) -> None:
    """In a cluster, a room is served by the node that owns it: elsewhere, 307 to the same path there
    (the client repeats its POST, offer and token included, at Location)."""
    url = await owner_url(request, room_name)
    if url is not None:
        raise HttpError(307, "room_on_other_node", "this room is served by another node",
                        {**CORS, "Location": url + request.path_qs})


async def _answer(request: web.Request, room: Room, session: WhipSession,
                  negotiation: Awaitable[str], base: str, ident: Identity) -> web.Response:
    """Finish a WHIP/WHEP POST: the session is registered only once the offer is answered."""
    try:
        answer = await negotiation
    except BaseException:  # refused, a bug, or the client gone (cancelled): nothing stays behind
        await asyncio.shield(fail(room, session))
        raise
    session.etag = etag(answer)
    _watch(request.app, session)
    return created(request, session, f"{base}/{session.id}", answer, ident)


def _watch(app: web.Application, session: WhipSession) -> None:
    """Forget the session when its participant goes (connection lost, removed, room closed)."""

    async def removed(reason: str) -> None:
        app[keys.SESSIONS].pop(session.id, None)

    session.participant.on_removed = removed


def _session(request: web.Request) -> tuple[WhipSession, Identity]:
    room_name = request.match_info["room"]
    ident = authenticate(request)
    # A recorded message's private room is reached with the sender's messaging token (no room).
    allowed_rooms = (room_name, None) if room_name.startswith(MESSAGE_ROOM_PREFIX) else (room_name,)
    if not ident.is_admin and ident.room not in allowed_rooms:
        raise HttpError(403, "wrong_room", "the access token is not valid for this room")
    session = request.app[keys.SESSIONS].get(request.match_info["session"])
    if session is None or session.room.name != room_name:
        raise HttpError(404, "unknown_session", "no such session")
    if not is_party(ident, session.owner):
        raise HttpError(403, "forbidden", "this session belongs to someone else")
    return session, ident


async def session_delete(request: web.Request) -> web.Response:
    session, _ = _session(request)
    request.app[keys.SESSIONS].pop(session.id, None)
    await session.room.leave(session.participant.identity, reason="left")
    return web.Response(status=200, headers=CORS)


async def session_patch(request: web.Request) -> web.Response:
    session, _ = _session(request)
    if request.content_type != TRICKLE_TYPE:
        raise HttpError(415, "unsupported_media_type", f"expected Content-Type: {TRICKLE_TYPE}")
    if_match = request.headers.get("If-Match")
    if if_match is not None and if_match != "*" and if_match != session.etag:
        raise HttpError(412, "etag_mismatch", "If-Match does not match the session's ETag")
    frag = (await read_body(request, 16 * 1024)).decode("utf-8", "replace")
    transport = session.participant.publisher or session.participant.subscriber
    assert transport is not None
    remote = transport.pc.remoteDescription
    current_ufrag = remote.sdp.split("a=ice-ufrag:", 1)[1].split()[0] if remote and "a=ice-ufrag:" in remote.sdp else None
    added = 0
    for line in frag.splitlines():
        line = line.strip()
        if line.startswith("a=ice-ufrag:") and current_ufrag and line[12:] != current_ufrag:
            raise HttpError(422, "ice_restart_unsupported", "ICE restarts are not supported; start a new session")
        if line.startswith("a=candidate:"):
            try:
                candidate = candidate_from_sdp(line[2:].split(":", 1)[1])
            except (ValueError, IndexError):
                raise HttpError(400, "invalid_candidate", f"cannot parse {line[:80]!r}") from None
            candidate.sdpMid = transport.transceivers()[0].mid if transport.transceivers() else "0"
            await transport.pc.addIceCandidate(candidate)
            added += 1
    return web.Response(status=204, headers=CORS)


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={**CORS, "Accept-Post": SDP_TYPE, "Accept-Patch": TRICKLE_TYPE})


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/whip/{room}", whip_post)
    r.add_route("OPTIONS", "/whip/{room}", preflight)
    r.add_delete("/whip/{room}/{session}", session_delete)
    r.add_patch("/whip/{room}/{session}", session_patch)
    r.add_route("OPTIONS", "/whip/{room}/{session}", preflight)
    r.add_post("/whep/{room}/{identity}", whep_post)
    r.add_route("OPTIONS", "/whep/{room}/{identity}", preflight)
    r.add_delete("/whep/{room}/{identity}/{session}", session_delete)
    r.add_patch("/whep/{room}/{identity}/{session}", session_patch)
    r.add_route("OPTIONS", "/whep/{room}/{identity}/{session}", preflight)
