"""Signaling limits: WHEP sessions per identity, and the demo never mints room-less tokens."""

from __future__ import annotations

from aiortc import RTCPeerConnection

from mediasrv.api.whip_whep import MAX_WHEP_SESSIONS_PER_IDENTITY
from mediasrv.auth import verify_token
from mediasrv.media.host_addresses import configure_host_addresses

configure_host_addresses(["127.0.0.1"])


async def test_one_identity_cannot_open_unbounded_whep_sessions(srv) -> None:
    assert srv.session is not None
    ws = await srv.session.ws_connect(f"/rooms/visit1/ws?access_token={srv.token('dr', 'clinician', 'visit1')}")
    await ws.send_json({"type": "join"})
    assert (await ws.receive_json())["type"] == "joined"
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    viewer = ("viewer", "observer", "visit1")
    statuses = []
    for _ in range(MAX_WHEP_SESSIONS_PER_IDENTITY + 1):
        r = await srv.request("POST", "/whep/visit1/dr", who=viewer, data=pc.localDescription.sdp,
                              headers={"Content-Type": "application/sdp"})
        statuses.append(r.status)
    assert statuses == [201] * MAX_WHEP_SESSIONS_PER_IDENTITY + [429]
    assert (await r.json())["error"]["code"] == "too_many_sessions"
    # another identity is not affected
    r = await srv.request("POST", "/whep/visit1/dr", who=("nurse", "observer", "visit1"),
                          data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"})
    assert r.status == 201
    await pc.close()
    await ws.close()


async def test_demo_token_needs_a_room_in_dev_mode(srv) -> None:
    srv.settings.dev_mode = True
    r = await srv.request("POST", "/demo/token", json={"identity": "someone", "role": "clinician"})
    assert r.status == 400
    r = await srv.request("POST", "/demo/token", json={"identity": "someone", "role": "clinician", "room": "v1"})
    assert r.status == 200
    ident = verify_token(srv.settings.api_secret, (await r.json())["token"])
    assert ident.room == "v1"


async def test_demo_token_is_refused_outside_dev_mode(srv) -> None:
    r = await srv.request("POST", "/demo/token", json={"identity": "x", "role": "clinician", "room": "v1"})
    assert r.status == 403
    assert (await r.json())["error"]["code"] == "dev_mode_off"
