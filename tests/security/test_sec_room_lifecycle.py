"""A visit is a durable object: configured rooms survive a restart with their options and visit id,
a join never silently creates or replaces a configured room, and closing a room ends the tokens
issued for it (those issued before the close, and those bound to its visit)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection
from ctl_helpers import Server, make_settings

from mediasrv.auth import mint_token
from mediasrv.media.host_addresses import configure_host_addresses

configure_host_addresses(["127.0.0.1"])
ADMIN = ("root", "admin")
OPTIONS = {"waiting_room": True, "max_participants": 3, "max_duration_s": 600, "recording_allowed": True}


async def _join(srv: Server, room: str, token: str) -> tuple[dict[str, Any], int | None]:
    """The first answer to a join, and the close code if the server then closed the socket."""
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{srv.url}/rooms/{room}/ws") as ws:
        await ws.send_json({"type": "join", "token": token, "request_id": "j"})
        first = await ws.receive_json()
        if first["type"] == "error":
            await ws.receive()
            return first, ws.close_code
        return first, None


async def _whip(srv: Server, room: str, token: str, whep: str | None = None) -> tuple[int, dict[str, Any]]:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="recvonly" if whep else "sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    await pc.close()
    assert srv.session is not None
    path = f"/whep/{room}/{whep}" if whep else f"/whip/{room}"
    async with srv.session.post(path, data=pc.localDescription.sdp, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}) as r:
        body = await r.json() if r.status >= 400 else {}
        if r.status == 201:
            await srv.request("DELETE", r.headers["Location"], headers={"Authorization": f"Bearer {token}"})
        return r.status, body


async def test_configured_rooms_survive_a_restart_and_delete_forgets_them(srv: Server) -> None:
    r = await srv.request("POST", "/v1/rooms", who=ADMIN, json={"name": "visit", **OPTIONS})
    assert r.status == 201
    created = await r.json()
    assert isinstance(created["visit_id"], str) and len(created["visit_id"]) >= 16
    await srv.restart()
    r = await srv.request("GET", "/v1/rooms/visit", who=ADMIN)
    assert r.status == 200
    room = await r.json()
    assert room["options"] == OPTIONS and room["visit_id"] == created["visit_id"] and room["configured"]
    assert (await srv.request("DELETE", "/v1/rooms/visit", who=ADMIN)).status == 204
    await srv.restart()
    assert (await srv.request("GET", "/v1/rooms/visit", who=ADMIN)).status == 404


async def test_joins_do_not_create_rooms_when_the_setting_is_off(tmp_path: Path) -> None:
    srv = Server(make_settings(tmp_path / "data", rooms_created_on_join=False))
    await srv.start()
    try:
        token = srv.token("pat-ana", "patient", "visit")
        first, close = await _join(srv, "visit", token)
        assert first["code"] == "room_not_found" and close == 4404
        status, body = await _whip(srv, "visit", srv.token("dr-lee", "clinician", "visit"))
        assert status == 404 and body["error"]["code"] == "room_not_found"
        r = await srv.request("GET", "/v1/rooms", who=ADMIN)
        assert (await r.json())["rooms"] == []  # the refused joins created nothing
        assert (await srv.request("POST", "/v1/rooms", who=ADMIN, json={"name": "visit"})).status == 201
        first, close = await _join(srv, "visit", token)
        assert first["type"] == "joined" and close is None
    finally:
        await srv.stop()


async def test_configuring_an_ad_hoc_room_applies_the_options(srv: Server) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{srv.url}/rooms/visit/ws") as ws:
        await ws.send_json({"type": "join", "token": srv.token("pat-ana", "patient", "visit"), "request_id": "j"})
        assert (await ws.receive_json())["admitted"] is True
        r = await srv.request("POST", "/v1/rooms", who=ADMIN, json={"name": "visit", "waiting_room": True})
        assert r.status == 201
        room = await r.json()
        assert room["configured"] and room["options"]["waiting_room"] is True
        # Whoever was in already stays as they were; the waiting room applies to later joins.
        assert [p["admitted"] for p in room["participants"]] == [True]
        first, _ = await _join(srv, "visit", srv.token("pat-bo", "patient", "visit"))
        assert first["type"] == "joined" and first["admitted"] is False
        r = await srv.request("POST", "/v1/rooms", who=ADMIN, json={"name": "visit"})
        assert r.status == 409 and (await r.json())["error"]["code"] == "room_exists"


async def test_closing_a_room_ends_the_tokens_issued_before(srv: Server) -> None:
    assert (await srv.request("POST", "/v1/rooms", who=ADMIN, json={"name": "visit", **OPTIONS})).status == 201
    old_patient = srv.token("pat-ana", "patient", "visit")
    old_doctor = srv.token("dr-lee", "clinician", "visit")
    assert (await _join(srv, "visit", old_patient))[0]["type"] == "joined"
    assert (await srv.request("DELETE", "/v1/rooms/visit", who=ADMIN)).status == 204

    for _ in range(2):  # before and after a restart
        first, close = await _join(srv, "visit", old_patient)
        assert first["code"] == "room_closed" and close == 4410
        status, body = await _whip(srv, "visit", old_doctor)
        assert status == 410 and body["error"]["code"] == "room_closed"
        r = await srv.request("GET", "/v1/rooms/visit", who=ADMIN)
        assert r.status == 404  # the old token re-created nothing
        await srv.restart()

    # A token issued after the close opens a new visit.
    first, close = await _join(srv, "visit", srv.token("pat-ana", "patient", "visit"))
    assert first["type"] == "joined" and close is None


async def test_a_token_bound_to_a_visit_is_refused_by_another_visit(srv: Server) -> None:
    r = await srv.request("POST", "/v1/rooms", who=ADMIN, json={"name": "visit"})
    visit_id = (await r.json())["visit_id"]
    r = await srv.request("POST", "/v1/tokens", who=ADMIN,
                          json={"identity": "pat-ana", "role": "patient", "room": "visit"})
    minted = await r.json()
    assert r.status == 201 and minted["visit"] == visit_id
    assert (await _join(srv, "visit", minted["token"]))[0]["type"] == "joined"

    other = mint_token(srv.settings.api_secret, identity="pat-ana", role="patient", room="visit",
                       visit="an-earlier-visit", now=time.time())
    first, close = await _join(srv, "visit", other)
    assert first["code"] == "visit_ended" and close == 4410
    status, body = await _whip(srv, "visit", mint_token(
        srv.settings.api_secret, identity="dr-lee", role="clinician", room="visit", visit="an-earlier-visit"))
    assert status == 410 and body["error"]["code"] == "visit_ended"


async def test_whep_with_a_token_from_before_the_close_is_refused(srv: Server) -> None:
    old = srv.token("pat-ana", "patient", "visit")
    assert (await srv.request("DELETE", "/v1/rooms/visit", who=ADMIN)).status == 404
    assert (await srv.request("POST", "/v1/rooms", who=ADMIN, json={"name": "visit"})).status == 201
    assert (await srv.request("DELETE", "/v1/rooms/visit", who=ADMIN)).status == 204
    # A token issued within about a millisecond of the close counts as from before it (token times
    # are rounded to the millisecond); the next visit's token comes later, as any real one would.
    await asyncio.sleep(0.01)
    # A later visit under the same name, with someone in it.
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{srv.url}/rooms/visit/ws") as ws:
        await ws.send_json({"type": "join", "token": srv.token("dr-lee", "clinician", "visit"), "request_id": "j"})
        reply = await ws.receive_json()
        assert reply["type"] == "joined", reply
        status, body = await _whip(srv, "visit", old, whep="dr-lee")
        assert status == 410 and body["error"]["code"] == "room_closed"


def _signed(secret: str, payload: str) -> str:
    """A token with a hand-written payload (values the JWT library would not encode)."""
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(payload.encode())
    return signing + "." + b64(hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest())


@pytest.mark.parametrize("iat", ["1e999", "true", '"yesterday"', "-5"])
async def test_a_malformed_iat_is_an_invalid_token(srv: Server, iat: str) -> None:
    exp = int(time.time()) + 60
    token = _signed(srv.settings.api_secret,
                    f'{{"sub":"pat","role":"patient","room":"visit","exp":{exp},"iat":{iat}}}')
    first, close = await _join(srv, "visit", token)
    assert first["type"] == "error" and first["code"] == "invalid_token" and close == 4401
