"""The demo page: try a visit in two browser tabs.

In development mode (`mediasrv serve --dev`) the page mints its own tokens through /demo/token;
otherwise it takes a token from the URL fragment (#token=...), as issued by `mediasrv token`.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from mediasrv.api import appkeys as keys
from mediasrv.api.http_common import HttpError, json_response, read_json
from mediasrv.auth import mint_token
from mediasrv.authz import ROOM_ROLES, check_identity

STATIC = Path(__file__).resolve().parent.parent / "demo"


async def demo_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def demo_token(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    if not settings.dev_mode:
        raise HttpError(403, "dev_mode_off", "the demo mints tokens only in development mode (--dev)")
    body = await read_json(request, 4096)
    room, identity, role = body.get("room"), body.get("identity"), body.get("role", "patient")
    if role not in ROOM_ROLES:
        raise HttpError(400, "invalid_role", f"role must be one of {sorted(ROOM_ROLES)}")
    if room is None:  # a token without a room is a messaging token: anyone's inbox by identity
        raise HttpError(400, "invalid_request", "room is required")
    try:
        # the body's identity is any JSON value until checked (mint_token checks it the same way)
        token = mint_token(settings.api_secret, identity=check_identity("identity", identity), role=role,
                           room=room, name=body.get("name") or identity, ttl_s=3600)
    except (ValueError, TypeError) as exc:
        raise HttpError(400, "invalid_request", str(exc)) from None
    return json_response({"token": token})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/demo", demo_page)
    app.router.add_post("/demo/token", demo_token)
    app.router.add_static("/demo/static", STATIC)
