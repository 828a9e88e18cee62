"""POST /v1/tokens: mint access tokens (admin only), with the same claims as `mediasrv token`."""

from __future__ import annotations

import time

from aiohttp import web

from mediasrv.api import appkeys as keys
from mediasrv.api.http_common import HttpError, authenticate, json_response, read_json
from mediasrv.api.v1.common import get_int, get_str, reject_unknown
from mediasrv.auth import mint_token
from mediasrv.authz import ROLES, check_identity, require_admin


async def create_token(request: web.Request) -> web.Response:
    require_admin(authenticate(request))
    settings = request.app[keys.SETTINGS]
    data = await read_json(request, settings.max_signaling_body_bytes)
    reject_unknown(data, {"identity", "role", "room", "name", "ttl_s"})
    identity = check_identity("identity", data.get("identity"))
    role = get_str(data, "role", max_len=32)
    if role not in ROLES:
        raise HttpError(400, "invalid_field", f"role must be one of {sorted(ROLES)}")
    room = data.get("room")
    if room is not None:
        check_identity("room", room)
        if role == "admin":
            raise HttpError(400, "invalid_field", "admin tokens are not bound to a room")
    name = get_str(data, "name", required=False, max_len=128)
    ttl = get_int(data, "ttl_s", minimum=1, maximum=settings.max_token_ttl_s,
                  default=settings.default_token_ttl_s)
    assert ttl is not None
    # A token for a configured room is bound to its current visit: it cannot join a later visit
    # that reuses the name.
    live = request.app[keys.ROOMS].get(room) if room is not None else None
    visit = live.visit_id if live is not None and live.explicit and not live.closed else None
    now = time.time()
    token = mint_token(settings.api_secret, identity=identity, role=role, room=room, name=name,
                       ttl_s=ttl, now=now, visit=visit)
    body = {"token": token, "identity": identity, "role": role, "room": room, "visit": visit,
            "expires_at": int(round(now, 3)) + ttl}
    return json_response(body, status=201)


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/tokens", create_token)
