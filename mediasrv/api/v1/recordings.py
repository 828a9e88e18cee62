"""Recordings over HTTP.

POST   /v1/rooms/{room}/recording            start (asks for consent; 409 until everyone consented)
DELETE /v1/rooms/{room}/recording            stop; the files are sealed and listed
GET    /v1/recordings[?room=R][&visit=V]     list
GET    /v1/recordings/{id}                   one recording with its files (one per track)
GET    /v1/recordings/{id}/files/{file_id}   download (Range supported), audited

Admins may do all of it. A clinician with a token for the room may start and stop its recording, and
list and download those of its recordings that they started or took part in: room names can be
reused for later visits, and a token for the name must not open earlier visits' recordings. Each
recording keeps the visit id of its room; a token bound to a visit sees only that visit's recordings.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from mediasrv.api import appkeys as keys
from mediasrv.api.http_common import HttpError, authenticate, client_address, json_response
from mediasrv.api.v1.cluster import answer, on_owner
from mediasrv.api.v1.common import is_path_id, query_str
from mediasrv.api.v1.vitals import VISIT_ID
from mediasrv.auth import Identity
from mediasrv.authz import require_moderator
from mediasrv.recording.recording_store import RecordingStore

REFUSAL = "recordings are for the room's clinicians and admins"


def _store(request: web.Request) -> RecordingStore:
    store = request.app[keys.ROOMS].recording_store
    if store is None:
        raise HttpError(503, "recording_unavailable", "recording is not configured")
    return store


def _moderator(request: web.Request, room: str | None) -> Identity:
    """A moderator of `room`; with None, of the room of the token (or an admin)."""
    return require_moderator(authenticate(request), room, REFUSAL)


async def start(request: web.Request) -> web.Response:
    name = request.match_info["room"]
    ident = _moderator(request, name)
    reply = await on_owner(request, name, "start_recording", {"by": asdict(ident)})
    if reply is not None:  # in a cluster, started by the node that serves the room
        return answer(reply)
    room = request.app[keys.ROOMS].get(name)
    if room is None:
        raise HttpError(404, "room_not_found", f"no open room {name!r}")
    status = await room.recording.start_now(ident)
    return json_response(status, status=201)


async def stop(request: web.Request) -> web.Response:
    name = request.match_info["room"]
    ident = _moderator(request, name)
    reply = await on_owner(request, name, "stop_recording", {"by": asdict(ident)})
    if reply is not None:
        return answer(reply)
    room = request.app[keys.ROOMS].get(name)
    result = await room.recording.stop(ident) if room is not None else None
    if result is None:
        raise HttpError(404, "not_recording", f"room {name!r} is not being recorded")
    return json_response(result)


async def list_recordings(request: web.Request) -> web.Response:
    ident = _moderator(request, None)
    room = query_str(request, "room")
    if not ident.is_admin:
        if room not in (None, ident.room):
            raise HttpError(403, "wrong_room", "the token is for another room")
        room = ident.room
    visit = request.query.get("visit")
    if visit is not None and not VISIT_ID.fullmatch(visit):
        raise HttpError(400, "invalid_query", "visit must be a visit id")
    if ident.visit is not None:
        if visit not in (None, ident.visit):
            raise HttpError(403, "wrong_visit", "the token is for another visit of this room")
        visit = ident.visit
    visible_to = None if ident.is_admin else ident.sub
    return json_response({"recordings": await _store(request).list(room=room, visible_to=visible_to,
                                                                    visit=visit)})


async def _visible(request: web.Request) -> tuple[Identity, dict[str, Any]]:
    ident = _moderator(request, None)
    store = _store(request)
    rid = request.match_info["id"]
    rec = await store.get(rid) if is_path_id(rid) else None  # e.g. a NUL, which PostgreSQL refuses
    if rec is None or (not ident.is_admin and (rec["room"] != ident.room
                                               or ident.visit not in (None, rec["visit"])
                                               or not await store.visible_to(rec["id"], ident.sub))):
        raise HttpError(404, "recording_not_found", "no such recording")
    return ident, rec


async def get_recording(request: web.Request) -> web.Response:
    _, rec = await _visible(request)
    return json_response(rec)


async def download(request: web.Request) -> web.StreamResponse:
    from mediasrv.api.v1.downloads import stream_blob

    ident, rec = await _visible(request)
    file_id = request.match_info["file_id"]
    f = await _store(request).file(rec["id"], file_id) if is_path_id(file_id) else None
    if f is None:
        raise HttpError(404, "file_not_found", "no such file in this recording")

    async def audited(status: int) -> None:
        await request.app[keys.AUDIT].record(
            actor=ident.sub, role=ident.role, action="recording_download", room=rec["room"], visit=rec["visit"],
            address=client_address(request), detail={"recording_id": rec["id"], "status": status})

    return await stream_blob(request, request.app[keys.BLOBS], f["blob_id"], content_type=f["content_type"],
                             sha256=f["sha256"], filename=None, before_send=audited)


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/rooms/{room}/recording", start)
    r.add_delete("/v1/rooms/{room}/recording", stop)
    r.add_get("/v1/recordings", list_recordings)
    r.add_get("/v1/recordings/{id}", get_recording)
    r.add_get("/v1/recordings/{id}/files/{file_id}", download)
