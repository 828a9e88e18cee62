"""Bad input on the signaling surface gets a precise 4xx or close code, and other visits go on."""

from __future__ import annotations

import time

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from mediasrv.auth import mint_token
from mediasrv.media.host_addresses import configure_host_addresses

configure_host_addresses(["127.0.0.1"])


async def _offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def _post(url: str, body: str | bytes, token: str | None, ctype: str = "application/sdp"):
    headers = {"Content-Type": ctype}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        return r.status, (await r.json() if r.content_type == "application/json" else await r.text()), r.headers


async def test_whip_auth_failures(server):
    url = f"{server.url}/whip/visit1"
    status, body, headers = await _post(url, "v=0\r\n", None)
    assert status == 401 and body["error"]["code"] == "missing_token"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    expired = mint_token(server.settings.api_secret, identity="p1", role="patient", room="visit1",
                         ttl_s=60, now=time.time() - 3600)
    status, body, _ = await _post(url, "v=0\r\n", expired)
    assert (status, body["error"]["code"]) == (401, "token_expired")
    status, body, _ = await _post(url, "v=0\r\n", server.token("p1", "patient", "other-room"))
    assert (status, body["error"]["code"]) == (403, "wrong_room")
    status, body, _ = await _post(url, "v=0\r\n", server.token("o1", "observer", "visit1"))
    assert (status, body["error"]["code"]) == (403, "forbidden")


@pytest.mark.parametrize(
    "body, ctype, status, code",
    [
        ("hello", "application/sdp", 400, "invalid_sdp"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "application/sdp", 400, "invalid_sdp"),
        ("v=0\r\n" + "a=x\r\n" * 20000, "application/sdp", 413, "body_too_large"),
        ("{}", "application/json", 415, "unsupported_media_type"),
        (b"v=0\xff\xfe", "application/sdp", 400, "invalid_sdp"),
    ],
)
async def test_whip_bad_bodies(server, body, ctype, status, code):
    got, err, _ = await _post(f"{server.url}/whip/visit1", body, server.token("p1", "patient", "visit1"), ctype)
    assert (got, err["error"]["code"]) == (status, code)
    # nothing is left behind by a refused offer
    room = server.rooms.get("visit1")
    assert room is None or not room.participants


async def test_whip_offer_without_ice_credentials_is_refused(server):
    pc, sdp = await _offer()
    broken = "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith("a=ice-pwd"))
    status, err, _ = await _post(f"{server.url}/whip/visit1", broken, server.token("p1", "patient", "visit1"))
    assert status == 400 and "ICE" in err["error"]["message"]
    await pc.close()


async def test_whip_session_lifecycle(server):
    pc, sdp = await _offer()
    token = server.token("cam1", "patient", "visit1")
    status, answer, headers = await _post(f"{server.url}/whip/visit1", sdp, token)
    assert status == 201, answer
    assert headers["Content-Type"].startswith("application/sdp") and answer.startswith("v=0")
    location = headers["Location"]
    assert location.startswith("/whip/visit1/") and headers["ETag"]
    room = server.rooms.get("visit1")
    assert "cam1" in room.participants and len(room.tracks) == 1
    async with aiohttp.ClientSession() as s:
        # somebody else's token cannot end the session
        other = server.token("mallory", "patient", "visit1")
        async with s.delete(server.url + location, headers={"Authorization": f"Bearer {other}"}) as r:
            assert r.status == 403
        async with s.patch(server.url + location, data="a=end-of-candidates\r\n",
                           headers={"Authorization": f"Bearer {token}",
                                    "Content-Type": "application/trickle-ice-sdpfrag",
                                    "If-Match": '"stale"'}) as r:
            assert r.status == 412
        async with s.options(f"{server.url}/whip/visit1") as r:
            assert r.status == 204 and "POST" in r.headers["Access-Control-Allow-Methods"]
            assert r.headers["Accept-Post"] == "application/sdp"
        async with s.delete(server.url + location, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
        async with s.delete(server.url + location, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 404
    assert server.rooms.get("visit1") is None  # the empty room is gone
    await pc.close()


async def test_whep_unknown_identity_is_404(server):
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    status, err, _ = await _post(f"{server.url}/whep/visit1/nobody", pc.localDescription.sdp,
                                 server.token("viewer", "observer", "visit1"))
    assert (status, err["error"]["code"]) == (404, "unknown_identity")
    await pc.close()


async def _ws(server, room: str, query: str = ""):
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(f"{server.url}/rooms/{room}/ws{query}")
    return session, ws


async def test_ws_join_errors_close_with_codes(server):
    session, ws = await _ws(server, "visit1")
    await ws.send_json({"type": "join", "token": server.token("p1", "patient", "other")})
    msg = await ws.receive_json()
    assert msg["type"] == "error" and msg["code"] == "wrong_room"
    await ws.receive()
    assert ws.close_code == 4403
    await session.close()

    session, ws = await _ws(server, "visit1")
    await ws.send_json({"type": "join", "token": "garbage"})
    assert (await ws.receive_json())["code"] == "invalid_token"
    await ws.receive()
    assert ws.close_code == 4401
    await session.close()

    async with aiohttp.ClientSession() as s, s.get(f"{server.url}/rooms/visit1/ws?access_token=bad") as r:
        assert r.status == 401  # refused before the upgrade


async def test_ws_garbage_gets_errors_and_the_visit_goes_on(server):
    s1, clinician = await _ws(server, "visit1")
    await clinician.send_json({"type": "join", "token": server.token("dr", "clinician", "visit1")})
    assert (await clinician.receive_json())["type"] == "joined"
    s2, patient = await _ws(server, "visit1")
    await patient.send_json({"type": "join", "token": server.token("pat", "patient", "visit1")})
    assert (await patient.receive_json())["type"] == "joined"
    assert (await clinician.receive_json())["type"] == "participant_joined"

    for bad, code in [("{nope", "invalid_json"), ("[1,2]", "invalid_message"),
                      ('{"type": "teleport"}', "unknown_type"), ('{"type": "chat"}', "invalid_message"),
                      ('{"type": "publish", "sdp": "x"}', "invalid_sdp"),
                      ('{"type": "subscribe", "track_ids": [999]}', "unknown_track"),
                      ('{"type": "answer", "sdp": 5}', "invalid_message")]:
        await patient.send_str(bad)
        msg = await patient.receive_json()
        assert (msg["type"], msg["code"]) == ("error", code), bad
    # The refused offer made no peer connection for the patient.
    assert server.rooms.get("visit1").participants["pat"].publisher is None
    await patient.send_json({"type": "chat", "text": "hello doctor"})
    chat = await clinician.receive_json()
    assert chat["type"] == "chat" and chat["text"] == "hello doctor" and chat["from"] == "pat"
    assert (await patient.receive_json())["text"] == "hello doctor"  # the sender sees it too
    await patient.send_bytes(b"\x00\x01")
    closing = await patient.receive()
    assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1003), closing
    left = await clinician.receive_json()
    assert left["type"] == "participant_left" and left["identity"] == "pat"
    assert list(server.rooms.get("visit1").participants) == ["dr"]
    await clinician.send_json({"type": "ping", "request_id": "7"})
    assert await clinician.receive_json() == {"type": "pong", "request_id": "7"}
    await s1.close()
    await s2.close()


async def test_participant_left_says_whether_the_client_left_or_its_socket_went_away(server):
    """A close frame (or `leave`) is leaving; a socket that just stops (a network outage, a reset)
    is `disconnected`, which tells the others the patient will likely be back."""
    s1, clinician = await _ws(server, "visit2")
    await clinician.send_json({"type": "join", "token": server.token("dr", "clinician", "visit2")})
    assert (await clinician.receive_json())["type"] == "joined"

    async def patient_joins() -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
        session, patient = await _ws(server, "visit2")
        await patient.send_json({"type": "join", "token": server.token("pat", "patient", "visit2")})
        assert (await patient.receive_json())["type"] == "joined"
        assert (await clinician.receive_json())["type"] == "participant_joined"
        return session, patient

    s2, patient = await patient_joins()
    await patient.close()
    assert await clinician.receive_json() == {"type": "participant_left", "identity": "pat", "reason": "left"}
    await s2.close()
    s3, patient = await patient_joins()
    await s3.close()  # the session's connection closed under the socket: no close frame
    left = await clinician.receive_json()
    assert left == {"type": "participant_left", "identity": "pat", "reason": "disconnected"}
    # A client that closes saying it is coming back (4100, the demo page when its media failed).
    s4, patient = await patient_joins()
    await patient.close(code=4100, message=b"reconnecting")
    left = await clinician.receive_json()
    assert left == {"type": "participant_left", "identity": "pat", "reason": "disconnected"}
    await s4.close()
    await s1.close()


async def test_metrics_need_auth_and_report_gauges(server):
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{server.url}/metrics") as r:
            assert r.status == 401
        headers = {"Authorization": f"Bearer {server.token('ops', 'admin')}"}
        async with s.get(f"{server.url}/metrics", headers=headers) as r:
            text = await r.text()
            assert r.status == 200
        assert "mediasrv_rooms 0.0" in text and "mediasrv_rtp_packets_forwarded_total 0.0" in text
        async with s.get(f"{server.url}/healthz") as r:
            assert (await r.json()) == {"status": "ok"}


async def test_unknown_paths_and_methods_get_json_errors(server):
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{server.url}/no/such/thing") as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
        async with s.put(f"{server.url}/whip/visit1") as r:
            assert r.status == 405 and (await r.json())["error"]["code"] == "method_not_allowed"
            assert "POST" in r.headers["Allow"]


async def test_simulcast_group_naming_another_tracks_ssrc_is_refused(server):
    """An a=ssrc-group:SIM that claims the audio track's SSRC is a 400, not a 500."""
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    audio_ssrc = sdp[:sdp.index("m=video")].split("a=ssrc:", 1)[1].split(" ", 1)[0]
    sdp = sdp.replace("a=mid:1\r\n", f"a=mid:1\r\na=ssrc-group:SIM {audio_ssrc} 111 222\r\n")
    status, err, _ = await _post(f"{server.url}/whip/simroom", sdp, server.token("p1", "patient", "simroom"))
    assert (status, err["error"]["code"]) == (400, "invalid_sdp"), err
    assert "simulcast" in err["error"]["message"]
    room = server.rooms.get("simroom")
    assert room is None or not room.participants
    await pc.close()
