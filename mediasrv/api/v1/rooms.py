"""Rooms and participants: /v1/rooms...

The live effects (closing, admitting, muting) belong to the media plane's RoomManager
(`mediasrv.rooms`); these handlers validate, authorize and call it. In a cluster, a room another node
serves is acted on there: the command goes to its owner over the cluster's bus (`run_command` below
runs it on the owner) and the owner's answer is this request's.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from mediasrv.api import appkeys as keys
from mediasrv.api.http_common import HttpError, authenticate, json_response, read_json
from mediasrv.api.v1.cluster import answer, on_owner, owner_url
from mediasrv.api.v1.common import audit, get_bool, get_int, get_str, reject_unknown
from mediasrv.auth import Identity
from mediasrv.authz import check_identity, require_admin, require_moderator
from mediasrv.errors import MediasrvError
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
    if await owner_url(request, name) is not None:  # placed on another node: configured there
        reply = await on_owner(request, name, "configure", {"options": asdict(options)})
        if reply is not None:
            if reply.get("status") == 201:
                await audit(request, ident, "room.created", room=name, visit=reply["body"]["visit_id"])
            return answer(reply)
    try:
        room = await request.app[keys.ROOMS].configure(name, options)
    except KeyError:
        raise HttpError(409, "room_exists", f"room {name!r} already exists") from None
    await audit(request, ident, "room.created", room=name, visit=room.visit_id)
    return json_response(room.describe(), status=201,
                         headers={"Location": f"/v1/rooms/{name}"})


async def list_rooms(request: web.Request) -> web.Response:
    """This node's rooms (each node of a cluster lists its own; /v1/cluster lists the nodes)."""
    require_admin(authenticate(request))
    rooms = [r.describe() for r in request.app[keys.ROOMS].list() if not getattr(r, "closed", False)]
    return json_response({"rooms": rooms})


async def get_room(request: web.Request) -> web.Response:
    require_moderator(authenticate(request), request.match_info["room"])
    name = _room_name(request)
    reply = await on_owner(request, name, "get", {})
    if reply is not None:
        return answer(reply)
    return json_response(_existing_room(request, name).describe())


async def close_room(request: web.Request) -> web.Response:
    ident = require_admin(authenticate(request))
    name = _room_name(request)
    reply = await on_owner(request, name, "close", {})
    if reply is not None:
        if reply.get("status") == 204:
            await audit(request, ident, "room.closed", room=name, visit=reply.get("visit"))
        return answer(reply)
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


async def _remote(request: web.Request, op: str, **args: Any) -> web.Response | None:
    """The owner's answer when another node serves the room (None: it is this node's to do)."""
    ident = require_moderator(authenticate(request), request.match_info["room"])
    reply = await on_owner(request, _room_name(request), op, {"by": asdict(ident), **args})
    return answer(reply) if reply is not None else None


async def admit(request: web.Request) -> web.Response:
    remote = await _remote(request, "admit", identity=request.match_info["identity"])
    if remote is not None:
        return remote
    room, identity, ident = _participant(request)
    if not await room.admit(identity, by=ident):
        raise HttpError(404, "participant_not_found", f"no participant {identity!r} in the room")
    cluster = request.app.get(keys.CLUSTER)
    if cluster is not None:  # kept with the visit: a reconnection on another node is admitted again
        await cluster.admitted(room.name, identity)
    return web.Response(status=204)


async def remove(request: web.Request) -> web.Response:
    remote = await _remote(request, "remove", identity=request.match_info["identity"])
    if remote is not None:
        return remote
    room, identity, ident = _participant(request)
    if not await room.remove(identity, by=ident):
        raise HttpError(404, "participant_not_found", f"no participant {identity!r} in the room")
    return web.Response(status=204)


async def mute(request: web.Request) -> web.Response:
    raw = request.match_info["track_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # isdigit() alone accepts ², which int() refuses
        raise HttpError(404, "track_not_found", "track ids are positive integers")
    remote = await _remote(request, "mute", identity=request.match_info["identity"], track_id=int(raw))
    if remote is not None:
        return remote
    room, identity, ident = _participant(request)
    if not await room.mute_track(identity, int(raw), by=ident):
        raise HttpError(404, "track_not_found", f"no track {raw} of participant {identity!r}")
    return web.Response(status=204)


async def run_command(app: web.Application, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """On the owner: a command another node's control API sent for one of this node's rooms. The
    sender authenticated and authorized the request; its identity comes along for the audit trail."""
    manager = app[keys.ROOMS]
    name = str(args.get("room", ""))
    if op == "configure":
        try:
            configured = await manager.configure(name, RoomOptions(**args["options"]))
        except KeyError:
            return {"status": 409, "code": "room_exists", "message": f"room {name!r} already exists"}
        return {"status": 201, "body": configured.describe()}
    room = manager.get(name)
    if room is None or room.closed:
        if op == "stop_recording":
            return {"status": 404, "code": "not_recording", "message": f"room {name!r} is not being recorded"}
        return {"status": 404, "code": "room_not_found", "message": f"no room {name!r}"}
    if op == "get":
        return {"status": 200, "body": room.describe()}
    if op == "close":
        visit = room.visit_id
        if not await manager.end(name, "closed_by_admin"):
            return {"status": 404, "code": "room_not_found", "message": f"no room {name!r}"}
        return {"status": 204, "visit": visit}
    by = Identity(**args["by"])
    identity = str(args.get("identity", ""))
    missing = {"status": 404, "code": "participant_not_found",
               "message": f"no participant {identity!r} in the room"}
    if op == "admit":
        if not await room.admit(identity, by=by):
            return missing
        cluster = app.get(keys.CLUSTER)
        if cluster is not None:
            await cluster.admitted(name, identity)
        return {"status": 204}
    if op == "remove":
        return {"status": 204} if await room.remove(identity, by=by) else missing
    if op == "start_recording":
        return {"status": 201, "body": await room.recording.start_now(by)}
    if op == "stop_recording":
        result = await room.recording.stop(by)
        if result is None:
            return {"status": 404, "code": "not_recording", "message": f"room {name!r} is not being recorded"}
        return {"status": 200, "body": result}
    if op == "mute":
        track_id = int(args.get("track_id", 0))
        if not await room.mute_track(identity, track_id, by=by):
            return {"status": 404, "code": "track_not_found",
                    "message": f"no track {track_id} of participant {identity!r}"}
        return {"status": 204}
    return {"status": 400, "code": "unknown_command", "message": f"unknown command {op!r}"}


def setup_routes(app: web.Application) -> None:
    cluster = app.get(keys.CLUSTER)
    if cluster is not None:

        async def handler(op: str, args: dict[str, Any]) -> dict[str, Any]:
            try:
                return await run_command(app, op, args)
            except MediasrvError as exc:  # refused by the owner (consent missing, ...): the same answer
                return {"status": exc.status, "code": exc.code, "message": exc.message}

        cluster.bus.handler = handler
    r = app.router
    r.add_post("/v1/rooms", create_room)
    r.add_get("/v1/rooms", list_rooms, allow_head=False)
    r.add_get("/v1/rooms/{room}", get_room, allow_head=False)
    r.add_delete("/v1/rooms/{room}", close_room)
    r.add_post("/v1/rooms/{room}/participants/{identity}/admit", admit)
    r.add_delete("/v1/rooms/{room}/participants/{identity}", remove)
    r.add_post("/v1/rooms/{room}/participants/{identity}/tracks/{track_id}/mute", mute)
