"""Rooms and participants: /v1/rooms...

The live effects (closing, admitting, muting) belong to the media plane's RoomManager
(`mediasrv.rooms`); these handlers validate, authorize and call it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mediasrv.api import appkeys as keys
from mediasrv.api.http_common import HttpError, authenticate, json_response, read_json
from mediasrv.api.v1.common import audit, get_bool, get_int, get_str, reject_unknown
from mediasrv.auth import Identity
from mediasrv.authz import check_identity, require_admin, require_moderator
from mediasrv.rooms import RoomOptions

MAX_PARTICIPANTS = 1000
MAX_DURATION_S = 7 * 24 * 3600


def _room_name(request: web.Request) -> str:
    return check_identity("room", request.match_info["room"])


def _existing_room(request: web.Request, name: str) -> Any:
    room = request.app[keys.ROOMS].get(name)
    if room is None or getattr(room, "closed", False):
        raise HttpError(404, "room_not_found", f"no room {name!r}")
    return room


async def create_room(request: web.Request) -> web.Response:
    ident = require_admin(authenticate(request))
    data = await read_json(request, request.app[keys.SETTINGS].max_signaling_body_bytes)
    reject_unknown(data, {"name", "waiting_room", "max_participants", "max_duration_s",
                          "recording_allowed"})
    name = check_identity("name", get_str(data, "name", max_len=128))
    options = RoomOptions(
        waiting_room=get_bool(data, "waiting_room", False),
        max_participants=get_int(data, "max_participants", minimum=1, maximum=MAX_PARTICIPANTS),
        max_duration_s=get_int(data, "max_duration_s", minimum=1, maximum=MAX_DURATION_S),
        recording_allowed=get_bool(data, "recording_allowed", False),
    )
    try:
        room = await request.app[keys.ROOMS].configure(name, options)
    except KeyError:
        raise HttpError(409, "room_exists", f"room {name!r} already exists") from None
    await audit(request, ident, "room.created", room=name, visit=room.visit_id)
    return json_response(room.describe(), status=201,
                         headers={"Location": f"/v1/rooms/{name}"})


async def list_rooms(request: web.Request) -> web.Response:
    require_admin(authenticate(request))
    rooms = [r.describe() for r in request.app[keys.ROOMS].list() if not getattr(r, "closed", False)]
    return json_response({"rooms": rooms})


async def get_room(request: web.Request) -> web.Response:
    require_moderator(authenticate(request), request.match_info["room"])
    name = _room_name(request)
    return json_response(_existing_room(request, name).describe())


async def close_room(request: web.Request) -> web.Response:
    ident = require_admin(authenticate(request))
    name = _room_name(request)
    room = request.app[keys.ROOMS].get(name)
    if room is None or not await request.app[keys.ROOMS].end(name, "closed_by_admin"):
        raise HttpError(404, "room_not_found", f"no room {name!r}")
    await audit(request, ident, "room.closed", room=name, visit=room.visit_id)
    return web.Response(status=204)


def _participant(request: web.Request) -> tuple[Any, str, Identity]:
    ident = require_moderator(authenticate(request), request.match_info["room"])
    name = _room_name(request)
    identity = check_identity("identity", request.match_info["identity"])
    return _existing_room(request, name), identity, ident


async def admit(request: web.Request) -> web.Response:
    room, identity, ident = _participant(request)
    if not await room.admit(identity, by=ident):
        raise HttpError(404, "participant_not_found", f"no participant {identity!r} in the room")
    return web.Response(status=204)


async def remove(request: web.Request) -> web.Response:
    room, identity, ident = _participant(request)
    if not await room.remove(identity, by=ident):
        raise HttpError(404, "participant_not_found", f"no participant {identity!r} in the room")
    return web.Response(status=204)


async def mute(request: web.Request) -> web.Response:
    room, identity, ident = _participant(request)
    raw = request.match_info["track_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # isdigit() alone accepts ², which int() refuses
        raise HttpError(404, "track_not_found", "track ids are positive integers")
    if not await room.mute_track(identity, int(raw), by=ident):
        raise HttpError(404, "track_not_found", f"no track {raw} of participant {identity!r}")
    return web.Response(status=204)


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/rooms", create_room)
    r.add_get("/v1/rooms", list_rooms, allow_head=False)
    r.add_get("/v1/rooms/{room}", get_room, allow_head=False)
    r.add_delete("/v1/rooms/{room}", close_room)
    r.add_post("/v1/rooms/{room}/participants/{identity}/admit", admit)
    r.add_delete("/v1/rooms/{room}/participants/{identity}", remove)
    r.add_post("/v1/rooms/{room}/participants/{identity}/tracks/{track_id}/mute", mute)
