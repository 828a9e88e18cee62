"""GET /v1/ice-servers: the ICE servers (TURN with fresh credentials) a client should use.

Any valid access token may ask: the credentials are tied to its identity and expire with it. Without
TURN configured the list is empty, and clients use host candidates as before.
"""

from __future__ import annotations

from aiohttp import web

from mediasrv.api import appkeys as keys
from mediasrv.api.http_common import authenticate, json_response
from mediasrv.clock import wall
from mediasrv.media.turn_credentials import issue


async def get_ice_servers(request: web.Request) -> web.Response:
    ident = authenticate(request)
    cred = issue(request.app[keys.SETTINGS], ident.sub, ident.exp, wall())
    servers = [cred.ice_server()] if cred is not None else []
    body = {"iceServers": servers, "expires": cred.expires if cred is not None else None}
    # Credentials: never cached by a proxy or browser beyond this response.
    return json_response(body, headers={"Cache-Control": "no-store"})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/ice-servers", get_ice_servers)


__all__ = ["setup_routes"]
