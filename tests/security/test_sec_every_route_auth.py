"""Every route the server registers refuses a request without a valid token: missing, expired,
badly signed, `alg=none`, another algorithm, an unknown role. The list is read from the running app,
so a route added later without authentication fails here. Only the routes below are public."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time

import aiohttp
import pytest
from ctl_helpers import Server

# (method, path) that need no token, and why.
PUBLIC = {
    ("GET", "/healthz"), ("HEAD", "/healthz"),  # liveness probes
    ("GET", "/readyz"), ("HEAD", "/readyz"),  # readiness probe (503 while draining), no data
    ("GET", "/v1/openapi.json"),  # the API's description, no data
    ("GET", "/demo"), ("HEAD", "/demo"), ("GET", "/demo/static"), ("HEAD", "/demo/static"),  # static page
    ("POST", "/demo/token"),  # refused (403 dev_mode_off) unless the server runs with --dev
}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _jwt(header: dict, claims: dict, key: bytes, digest=hashlib.sha256) -> str:
    signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing}.{_b64(hmac.new(key, signing.encode(), digest).digest())}"


def _bad_tokens(secret: str) -> dict[str, str]:
    now = int(time.time())
    good = {"sub": "mallory", "role": "admin", "iat": now, "exp": now + 600}
    key = secret.encode()
    unsigned = f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(good).encode())}."
    return {
        "missing": "",
        "expired": _jwt({"alg": "HS256", "typ": "JWT"}, {**good, "iat": now - 7200, "exp": now - 3600}, key),
        "forged": _jwt({"alg": "HS256", "typ": "JWT"}, good, b"not-the-server-secret"),
        "alg_none": unsigned,
        "other_alg": _jwt({"alg": "HS512", "typ": "JWT"}, good, key, hashlib.sha512),
        "unknown_role": _jwt({"alg": "HS256", "typ": "JWT"}, {**good, "role": "superuser"}, key),
        "garbage": "not.a.token",
    }


def _concrete(path: str) -> str:
    """A request path for a route pattern: every {param} gets a plausible value."""
    return re.sub(r"\{([^}]+)\}", lambda m: "1" if m.group(1) in ("track_id", "id") else f"x{m.group(1)}", path)


def _protected(srv: Server) -> list[tuple[str, str]]:
    routes = set()
    for route in srv.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        # CORS preflights answer without data, as browsers send them without credentials.
        if route.method in ("*", "OPTIONS") or (route.method, path) in PUBLIC or path.endswith("/ws"):
            continue  # the room WebSocket is checked below, the way clients open it
        routes.add((route.method, path))
    return sorted(routes)


async def test_the_route_list_is_the_servers(srv: Server) -> None:
    routes = _protected(srv)
    assert len(routes) >= 40  # every API the server has, read from the app itself
    for method, path in PUBLIC:
        assert any(r.method == method and r.resource is not None and r.resource.canonical == path
                   for r in srv.app.router.routes()), f"stale public route {method} {path}"


@pytest.mark.parametrize("kind", ["missing", "expired", "forged", "alg_none", "other_alg", "unknown_role",
                                  "garbage"])
async def test_every_route_refuses_a_bad_token(srv: Server, kind: str) -> None:
    token = _bad_tokens(srv.settings.api_secret)[kind]
    failures = []
    for method, path in _protected(srv):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if path.startswith("/v1/uploads"):  # tus refuses other versions first (412), auth next
            headers["Tus-Resumable"] = "1.0.0"
        if method in ("POST", "PATCH"):
            headers["Content-Type"] = "application/sdp" if path.startswith(("/whip", "/whep")) else "application/json"
        resp = await srv.request(method, _concrete(path), headers=headers, data=b"{}" if method != "GET" else None)
        if resp.status != 401:
            failures.append(f"{method} {path}: {resp.status}")
        elif method != "HEAD":
            body = await resp.json()
            if not body.get("error", {}).get("code"):
                failures.append(f"{method} {path}: 401 without a JSON error code")
    assert failures == []


@pytest.mark.parametrize("kind", ["expired", "forged", "alg_none", "other_alg", "unknown_role", "garbage"])
async def test_the_room_websocket_refuses_a_bad_token(srv: Server, kind: str) -> None:
    token = _bad_tokens(srv.settings.api_secret)[kind]
    async with aiohttp.ClientSession() as http:
        # In the URL (as browsers send it): refused before the upgrade.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{srv.url}/rooms/r1/ws?access_token={token}")
        assert refused.value.status == 401
        # In the join message: an error, then the socket is closed with 4401.
        async with http.ws_connect(f"{srv.url}/rooms/r1/ws") as ws:
            await ws.send_json({"type": "join", "token": token, "request_id": "j"})
            error = await ws.receive_json()
            assert error["type"] == "error" and error["code"]
            assert (await ws.receive()).data == 4401
