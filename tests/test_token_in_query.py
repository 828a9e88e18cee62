"""Access tokens in the URL: accepted for the room WebSocket upgrade only, 400 token_in_query elsewhere."""

from __future__ import annotations

import aiohttp
import pytest

# (method, path, role, room) — every kind of authenticated HTTP route: control API, tus, downloads,
# vitals, WHIP, metrics.
ROUTES = [
    ("GET", "/v1/rooms", "admin", None),
    ("GET", "/v1/rooms/r1", "clinician", "r1"),
    ("GET", "/v1/messages", "patient", None),
    ("GET", "/v1/messages/abcdefghijklmnopqrstuv/attachments/abcdefghijklmnop", "patient", None),
    ("GET", "/v1/recordings", "admin", None),
    ("GET", "/v1/rooms/r1/vitals", "clinician", "r1"),
    ("POST", "/whip/r1", "clinician", "r1"),
    ("HEAD", "/v1/uploads/abcdefghijklmnopqrstuvwxyzabcdef", "patient", None),
    ("GET", "/metrics", "admin", None),
]


@pytest.mark.parametrize(("method", "path", "role", "room"), ROUTES)
async def test_query_token_is_refused_outside_the_websocket(server, method, path, role, room) -> None:
    token = server.token("someone", role, room)
    async with aiohttp.ClientSession() as s:
        # even alongside a valid header: the token has already leaked into the URL
        for headers in ({}, {"Authorization": f"Bearer {token}"}):
            async with s.request(method, f"{server.url}{path}", params={"access_token": token},
                                 headers={**headers, "Tus-Resumable": "1.0.0"}) as r:
                assert r.status == 400
                if method != "HEAD":
                    assert (await r.json())["error"]["code"] == "token_in_query"


async def test_the_header_still_works_where_the_query_is_refused(server) -> None:
    headers = {"Authorization": f"Bearer {server.token('ops', 'admin')}"}
    async with aiohttp.ClientSession() as s, s.get(f"{server.url}/v1/rooms", headers=headers) as r:
        assert r.status == 200


async def test_websocket_upgrade_accepts_a_query_token(server) -> None:
    token = server.token("dr", "clinician", "r1")
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(f"{server.url}/rooms/r1/ws", params={"access_token": token})
        await ws.send_json({"type": "join"})
        joined = await ws.receive_json()
        assert (joined["type"], joined["identity"]) == ("joined", "dr")
        await ws.close()


async def test_unknown_paths_stay_404(server) -> None:
    async with aiohttp.ClientSession() as s, s.get(f"{server.url}/nope", params={"access_token": "x"}) as r:
        assert r.status == 404
