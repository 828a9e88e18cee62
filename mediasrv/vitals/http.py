"""Vitals over HTTP: a visit's readings (JSON or a FHIR R4 Bundle) and asynchronous uploads.

GET  /v1/rooms/{room}/vitals?format=fhir|json[&patient=ID]  clinician of the room, or admin
POST /v1/vitals   {"patient", "room", "envelopes": [base64...]}  a patient for themself, a clinician
                  for a room they hold a token for, or an admin
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from .. import keys
from ..httputil import HttpError, authenticate, client_address, read_json
from . import decode, jsonable
from .envelope import MAX_UPLOAD_ENVELOPES, parse_upload
from .fhir import build_bundle

MAX_UPLOAD_BYTES = 2 * 1024 * 1024


async def room_vitals(request: web.Request) -> web.Response:
    room = request.match_info["room"]
    ident = authenticate(request, room=room)
    if ident.role != "clinician" and not ident.is_admin:
        raise HttpError(403, "forbidden", "only the room's clinicians and admins read its vitals")
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "fhir"):
        raise HttpError(400, "invalid_format", "format must be 'json' or 'fhir'")
    readings = await request.app[keys.VITALS].list(room=room, patient=request.query.get("patient"))
    await request.app[keys.AUDIT].record(actor=ident.sub, role=ident.role, action="vitals_read",
                                         room=room, address=client_address(request),
                                         detail={"count": len(readings)})
    if fmt == "fhir":
        return web.json_response(build_bundle(readings, "searchset"),
                                 content_type="application/fhir+json")
    return web.json_response({"room": room, "readings": [
        {"patient": r.patient, "kind": r.kind, "received_at": r.received_at.isoformat(),
         "device_time_ms": r.device_time_ms, "reading": r.values} for r in readings]})


async def upload_vitals(request: web.Request) -> web.Response:
    ident = authenticate(request)
    body = await read_json(request, MAX_UPLOAD_BYTES)
    try:
        batch = parse_upload(body)
    except ValueError as exc:
        raise HttpError(400, "invalid_upload", str(exc)) from None
    patient = batch.patient or (ident.sub if ident.role == "patient" else None)
    if patient is None:
        raise HttpError(400, "invalid_upload", "'patient' is required unless a patient uploads")
    if ident.role == "patient":
        if patient != ident.sub:
            raise HttpError(403, "forbidden", "patients upload their own readings only")
        # A room's series is that visit's record: only a token for that room writes into it.
        if batch.room is not None and batch.room != ident.room:
            raise HttpError(403, "wrong_room", "readings for a room need a token for that room")
    elif ident.role == "clinician":
        if batch.room is None or batch.room != ident.room:
            raise HttpError(403, "forbidden", "clinicians upload into the room of their token")
    elif not ident.is_admin:
        raise HttpError(403, "forbidden", f"role {ident.role!r} cannot upload readings")
    rows: list[tuple[str | None, str, str, dict[str, Any], int | None]] = []
    errors = []
    for i, env in enumerate(batch.envelopes):
        try:
            rows.append((batch.room, patient, env.kind_name, jsonable(decode(env.kind, env.payload)),
                         env.device_time_ms))
        except ValueError as exc:
            errors.append({"index": i, "message": str(exc)})
    if errors:
        # all or nothing: a half-stored batch would be impossible to resend safely
        raise HttpError(400, "invalid_envelopes",
                        f"{len(errors)} of {len(batch.envelopes)} envelopes are invalid: "
                        + "; ".join(f"#{e['index']}: {e['message']}" for e in errors[:5]))
    await request.app[keys.VITALS].add_many(rows, received_at=time.time())
    await request.app[keys.AUDIT].record(actor=ident.sub, role=ident.role, action="vitals_upload",
                                         room=batch.room, target=patient,
                                         address=client_address(request), detail={"count": len(rows)})
    return web.json_response({"stored": len(rows)}, status=201)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/rooms/{room}/vitals", room_vitals)
    app.router.add_post("/v1/vitals", upload_vitals)


__all__ = ["MAX_UPLOAD_ENVELOPES", "setup_routes"]
