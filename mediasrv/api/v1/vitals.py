"""Vitals over HTTP: a visit's readings (JSON or a FHIR R4 Bundle) and asynchronous uploads.

GET  /v1/rooms/{room}/vitals?format=fhir|json[&patient=ID][&limit=N][&after=ID][&visit=ID]
                  clinician of the room, or admin; pages of `limit` readings after the cursor `after`
POST /v1/vitals   {"patient", "room", "envelopes": [base64...]}  a patient for themself, a clinician
                  for a room they hold a token for, or an admin

A room name is reused by later visits, so readings are kept with their visit id and a clinician reads
only their token's visit: the one it is bound to, else the visits of the room open while it was valid
(never one that ended before it was issued). Admins read every visit of the name, or one (`visit=`).
"""

from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web

from mediasrv.api import appkeys as keys
from mediasrv.api.http_common import (
    HttpError,
    authenticate,
    client_address,
    json_response,
    read_json,
)
from mediasrv.api.v1.common import query_str
from mediasrv.authz import check_identity, is_moderator_of, require_moderator
from mediasrv.vitals import decode, jsonable
from mediasrv.vitals.envelope import MAX_UPLOAD_ENVELOPES, parse_upload
from mediasrv.vitals.fhir import build_bundle

MAX_UPLOAD_BYTES = 2 * 1024 * 1024
DEFAULT_PAGE = 1000
MAX_PAGE = 10_000
MAX_CURSOR = 2**63 - 1  # SQLite's largest rowid
VISIT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    # ASCII digits only: int() would take "+5", " 5", "5_0" and "٥"; a cursor is copied, not typed
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not low <= int(raw) <= high:
        raise HttpError(400, "invalid_query", f"{name} must be an integer in {low}..{high}")
    return int(raw)


def _page_url(request: web.Request, after: int) -> str:
    """The same query with the cursor moved (relative: right behind a proxy too)."""
    return str(request.rel_url.update_query(after=str(after)))


async def room_vitals(request: web.Request) -> web.Response:
    who = authenticate(request)
    room = check_identity("room", request.match_info["room"])  # a malformed name goes no further
    ident = require_moderator(who, room,
                              "only the room's clinicians and admins read its vitals")
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "fhir"):
        raise HttpError(400, "invalid_format", "format must be 'json' or 'fhir'")
    limit = _query_int(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    after = _query_int(request, "after", 0, 0, MAX_CURSOR)
    wanted = request.query.get("visit")
    if wanted is not None and not VISIT_ID.fullmatch(wanted):
        raise HttpError(400, "invalid_query", "visit must be a visit id")
    visits: list[str] | None = None if wanted is None else [wanted]
    if not ident.is_admin:
        visits = await request.app[keys.ROOMS].visits_of(room, ident)
        if wanted is not None:
            if wanted not in visits:
                raise HttpError(403, "wrong_visit", "the token is for another visit of this room")
            visits = [wanted]
    # One more than a page: tells whether a next page exists without a trailing empty one.
    rows = await request.app[keys.VITALS].page(room=room, visits=visits,
                                               patient=query_str(request, "patient"),
                                               after=after, limit=limit + 1)
    rows, more = rows[:limit], len(rows) > limit
    next_url = _page_url(request, rows[-1][0]) if more else None
    readings = [r for _, _, r in rows]
    await request.app[keys.AUDIT].record(actor=ident.sub, role=ident.role, action="vitals_read",
                                         room=room, visit=visits[0] if visits and len(visits) == 1 else None,
                                         address=client_address(request),
                                         detail={"count": len(readings)})
    headers = {"Link": f'<{next_url}>; rel="next"'} if next_url else None
    if fmt == "fhir":
        bundle = build_bundle(readings, "searchset")
        if more or after:
            del bundle["total"]  # FHIR's total counts every match, not this page's: leave it out
        links = [{"relation": "self", "url": str(request.rel_url)}]
        if next_url:
            links.append({"relation": "next", "url": next_url})
        entries = bundle.pop("entry")
        bundle.update(link=links, entry=entries)  # FHIR's element order: link before entry
        return json_response(bundle, content_type="application/fhir+json", headers=headers)
    return json_response({"room": room, "readings": [
        {"id": rid, "visit": visit, "patient": r.patient, "kind": r.kind,
         "received_at": r.received_at.isoformat(), "device_time_ms": r.device_time_ms,
         "reading": r.values} for rid, visit, r in rows],
        "next": next_url}, headers=headers)


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
        if not is_moderator_of(ident, batch.room):
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
    visit = None if batch.room is None else await request.app[keys.ROOMS].visit_of(batch.room, ident)
    if batch.room is not None and visit is None and not ident.is_admin:
        # A room's readings are one of its visits' record: stored under none, nobody but admins
        # would ever see them.
        raise HttpError(409, "no_visit", f"room {batch.room!r} has had no visit while this token was "
                        "valid; upload without a room, or once the visit has started")
    await request.app[keys.VITALS].add_many(rows, received_at=time.time(), visit=visit)
    await request.app[keys.AUDIT].record(actor=ident.sub, role=ident.role, action="vitals_upload",
                                         room=batch.room, visit=visit, target=patient,
                                         address=client_address(request), detail={"count": len(rows)})
    return json_response({"stored": len(rows)}, status=201)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/rooms/{room}/vitals", room_vitals)
    app.router.add_post("/v1/vitals", upload_vitals)


__all__ = ["MAX_UPLOAD_ENVELOPES", "setup_routes"]
