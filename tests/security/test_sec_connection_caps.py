"""Caps on what one client holds open: HTTP connections and WHIP/WHEP sessions per address, sessions
per identity (WHIP, WHEP, room WebSocket), WHIP/WHEP sessions per token. Past a cap: 429 or a close
4429 with the reason, counted by reason in /metrics; a place is free again however its session ends
(DELETE, reaped, the WebSocket gone)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from mediasrv.api import appkeys as keys
from mediasrv.config import ConfigError, load_settings
from mediasrv.media.host_addresses import configure_host_addresses
from tests.conftest import Server, start_server

configure_host_addresses(["127.0.0.1"])


@pytest.fixture
async def capped(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await start_server(tmp_path / "data", max_sessions_per_identity=2, max_sessions_per_token=2)
    try:
        yield srv
    finally:
        await srv.runner.cleanup()


async def _offer(direction: str = "sendonly") -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return str(sdp)


async def _post(srv: Server, path: str, token: str, sdp: str,
                http: aiohttp.ClientSession | None = None) -> tuple[int, Any, str | None]:
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    own = http is None
    http = http or aiohttp.ClientSession()
    try:
        async with http.post(srv.url + path, data=sdp, headers=headers) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body, r.headers.get("Location")
    finally:
        if own:
            await http.close()


async def _delete(srv: Server, location: str, token: str) -> None:
    async with aiohttp.ClientSession() as s, \
            s.delete(srv.url + location, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200


async def _refused(srv: Server, reason: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(
            srv.url + "/metrics", headers={"Authorization": f"Bearer {srv.token('ops', 'admin')}"}) as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith(f'mediasrv_connections_refused_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no refused counter for {reason}")


async def _eventually(check: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_one_identity_holds_at_most_its_sessions_over_whip_whep_and_the_room_socket(capped: Server) -> None:
    sdp = await _offer()
    # Two WHIP sessions in two rooms (each its own token): the identity's cap of 2 is reached.
    t1, t2, t3 = (capped.token("dr", "clinician", room) for room in ("r1", "r2", "r3"))
    s1 = await _post(capped, "/whip/r1", t1, sdp)
    s2 = await _post(capped, "/whip/r2", t2, sdp)
    assert s1[0] == 201 and s2[0] == 201
    status, body, _ = await _post(capped, "/whip/r3", t3, sdp)
    assert status == 429 and body["error"]["code"] == "too_many_sessions"
    # The room WebSocket counts too: its join is refused and the socket closed 4429 with the reason.
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{capped.url}/rooms/r3/ws?access_token={t3}") as ws:
        await ws.send_json({"type": "join"})
        event = await ws.receive_json()
        assert event["type"] == "error" and event["code"] == "too_many_sessions"
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4429 and msg.extra == "too_many_sessions"
    assert await _refused(capped, "per_identity") == 2
    # Another identity is not affected.
    assert (await _post(capped, "/whip/r3", capped.token("pat", "patient", "r3"), sdp))[0] == 201
    # Ending a session frees its place: the room socket now joins.
    assert s1[2] is not None
    await _delete(capped, s1[2], t1)
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{capped.url}/rooms/r3/ws?access_token={t3}") as ws:
        await ws.send_json({"type": "join"})
        assert (await ws.receive_json())["type"] == "joined"
        # ... and holds the place while it is open.
        status, body, _ = await _post(capped, "/whip/r1", capped.token("dr", "clinician", "r1"), sdp)
        assert status == 429
    # The socket closed: its place is free again.
    caps = capped.app[keys.CONNECTION_CAPS]
    await _eventually(lambda: caps.by_identity.live("dr") == 1, "the room socket's place is freed")
    assert (await _post(capped, "/whip/r1", capped.token("dr", "clinician", "r1"), sdp))[0] == 201


async def test_one_token_opens_at_most_its_whip_whep_sessions(capped: Server) -> None:
    capped.settings.max_sessions_per_identity = 10
    pub = await _post(capped, "/whip/v", capped.token("dr", "clinician", "v"), await _offer())
    assert pub[0] == 201
    viewer_token = capped.token("obs", "observer", "v")
    sdp = await _offer("recvonly")
    statuses = [(await _post(capped, "/whep/v/dr", viewer_token, sdp))[0] for _ in range(3)]
    assert statuses == [201, 201, 429]
    assert await _refused(capped, "per_token") == 1
    # Another token of the same identity has its own budget (the identity's is larger here).
    assert (await _post(capped, "/whep/v/dr", capped.token("obs", "observer", "v", ttl_s=601), sdp))[0] == 201


async def test_reaped_sessions_give_their_place_back(capped: Server) -> None:
    capped.settings.session_setup_timeout_s = 0.5
    sdp = await _offer()
    for room in ("a", "b"):  # never completes ICE: reaped after the setup timeout
        assert (await _post(capped, f"/whip/{room}", capped.token("pat", "patient", room), sdp))[0] == 201
    caps = capped.app[keys.CONNECTION_CAPS]
    assert caps.by_identity.live("pat") == 2
    await _eventually(lambda: not capped.app[keys.SESSIONS], "both sessions are reaped")
    assert caps.by_identity.live("pat") == 0
    assert (await _post(capped, "/whip/c", capped.token("pat", "patient", "c"), sdp))[0] == 201


async def test_recorded_messages_count_against_the_identity(capped: Server) -> None:
    sdp = await _offer()
    assert (await _post(capped, "/whip/r1", capped.token("pat", "patient", "r1"), sdp))[0] == 201
    assert (await _post(capped, "/whip/r2", capped.token("pat", "patient", "r2"), sdp))[0] == 201
    status, body, _ = await _post(capped, "/whip/messages/dr-inbox", capped.token("pat", "patient"), sdp)
    assert status == 429 and body["error"]["code"] == "too_many_sessions"


async def test_one_address_holds_at_most_its_connections_and_sessions(tmp_path: Path) -> None:
    srv = await start_server(tmp_path / "data", connection_caps_exempt=[], max_connections_per_address=3)
    clients = [aiohttp.ClientSession() for _ in range(4)]
    try:
        # Three keep-alive connections from 127.0.0.1 are open ...
        for c in clients[:3]:
            async with c.get(srv.url + "/healthz") as r:
                assert r.status == 200
        # ... a fourth is answered 429 and closed.
        async with clients[3].get(srv.url + "/healthz") as r:
            assert r.status == 429
            assert (await r.json())["error"]["code"] == "too_many_connections"
            assert r.headers.get("Connection", "").lower() == "close"
        assert await _refused_via(srv, clients[0], "per_address") == 1
        # A connection closing frees its place.
        await clients[2].close()
        caps = srv.app[keys.CONNECTION_CAPS]
        await _eventually(lambda: caps.by_address.live("127.0.0.1") == 2, "the closed connection is freed")
        # A WHIP session counts as well, on top of its POST's connection: 2 connections + 1 session.
        sdp = await _offer()
        status, _, location = await _post(srv, "/whip/v", srv.token("pat", "patient", "v"), sdp, http=clients[1])
        assert status == 201 and location is not None
        assert caps.by_address.live("127.0.0.1") == 3
        status, body, _ = await _post(srv, "/whip/w", srv.token("dr", "clinician", "w"), sdp, http=clients[1])
        assert status == 429 and body["error"]["code"] == "too_many_connections"
    finally:
        for c in clients:
            await c.close()
        await srv.runner.cleanup()


async def _refused_via(srv: Server, http: aiohttp.ClientSession, reason: str) -> float:
    async with http.get(srv.url + "/metrics",
                        headers={"Authorization": f"Bearer {srv.token('ops', 'admin')}"}) as r:
        text = await r.text()
    line = next(x for x in text.splitlines()
                if x.startswith(f'mediasrv_connections_refused_total{{reason="{reason}"}}'))
    return float(line.split()[-1])


async def test_loopback_is_exempt_from_the_address_cap_by_default(tmp_path: Path) -> None:
    srv = await start_server(tmp_path / "data", max_connections_per_address=1)
    clients = [aiohttp.ClientSession() for _ in range(3)]
    try:
        for c in clients:
            async with c.get(srv.url + "/healthz") as r:
                assert r.status == 200
        assert srv.app[keys.CONNECTION_CAPS].by_address.live("127.0.0.1") == 0
    finally:
        for c in clients:
            await c.close()
        await srv.runner.cleanup()


def test_cap_settings_are_checked() -> None:
    for bad in ({"max_connections_per_address": -1}, {"max_sessions_per_identity": -1},
                {"max_sessions_per_token": -2}, {"connection_caps_exempt": ["not-a-net"]}):
        with pytest.raises(ConfigError):
            load_settings(env={}, **bad)
    assert load_settings(env={"MEDIASRV_CONNECTION_CAPS_EXEMPT": "10.0.0.0/8,::1"}).connection_caps_exempt \
        == ["10.0.0.0/8", "::1"]
