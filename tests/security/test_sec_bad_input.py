"""Bad input stays a 4xx with a JSON body: out-of-range SDP numbers, non-finite JSON numbers, tus
overruns; and a refused or failed session leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from aiortc import RTCPeerConnection
from ctl_helpers import TUS, checksum, create_upload

from mediasrv.api import appkeys as keys
from mediasrv.media.host_addresses import configure_host_addresses
from mediasrv.media.sdp import SdpError, check_offer_text

configure_host_addresses(["127.0.0.1"])


async def _offer(kind: str = "video", direction: str = "sendonly") -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver(kind, direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def _first_ssrc(sdp: str) -> str:
    found = re.search(r"a=ssrc:(\d+) ", sdp)
    assert found
    return found.group(1)


async def _whip(srv, room: str, who: tuple[str, str], sdp: str):
    r = await srv.request("POST", f"/whip/{room}", headers={
        **srv.auth(who[0], who[1], room), "Content-Type": "application/sdp"}, data=sdp)
    return r, (await r.json() if r.content_type == "application/json" else await r.text())


@pytest.mark.parametrize("edit, what", [
    (lambda s: s.replace(f"a=ssrc:{_first_ssrc(s)} ", "a=ssrc:99999999999999999999 "), "SSRC"),
    (lambda s: s.replace(f"a=ssrc:{_first_ssrc(s)} ", "a=ssrc:4294967296 "), "SSRC"),
    (lambda s: s.replace(f"a=ssrc:{_first_ssrc(s)} ", "a=ssrc:-1 "), "SSRC"),
    (lambda s: re.sub(r"a=ssrc-group:FID (\d+) (\d+)", r"a=ssrc-group:FID \1 99999999999", s), "ssrc-group"),
    (lambda s: s.replace("a=rtpmap:97 ", "a=rtpmap:200 ").replace(" 97 ", " 200 ", 1), "payload type"),
    (lambda s: re.sub(r"a=extmap:(\d+) ", "a=extmap:300 ", s, count=1), "extension id"),
    (lambda s: re.sub(r"^m=video \d+ ", "m=video 70000 ", s, flags=re.M), "port"),
    (lambda s: re.sub(r"(a=mid:\S+\r\n)", r"\1b=AS:99999999999999999999\r\n", s, count=1), "bandwidth"),
    (lambda s: re.sub(r"apt=(\d+)", "apt=999", s, count=1), "apt"),
])
def test_sdp_numbers_out_of_range_are_invalid_sdp(edit, what) -> None:
    sdp = asyncio.run(_offer())
    bad = edit(sdp)
    assert bad != sdp, what
    check_offer_text(sdp)
    with pytest.raises(SdpError) as err:
        check_offer_text(bad)
    assert err.value.status == 400 and err.value.code == "invalid_sdp"
    assert what.lower() in err.value.message.lower()


async def test_whip_out_of_range_ssrc_is_400_and_leaves_nothing(srv) -> None:
    admin = ("ops", "admin")
    r = await srv.request("POST", "/v1/rooms", who=admin, json={"name": "r2", "max_participants": 2})
    assert r.status == 201, await r.text()
    sdp = await _offer()
    bad = sdp.replace(f"a=ssrc:{_first_ssrc(sdp)} ", "a=ssrc:99999999999999999999 ")
    for who in (("ghost1", "patient"), ("ghost2", "patient")):
        r, body = await _whip(srv, "r2", who, bad)
        assert r.status == 400, body
        assert body["error"]["code"] == "invalid_sdp" and "SSRC" in body["error"]["message"]
    assert not srv.app[keys.ROOMS].get("r2").participants  # nothing left behind
    r, body = await _whip(srv, "r2", ("doc", "clinician"), await _offer())
    assert r.status == 201, body


async def test_a_session_failing_for_any_reason_is_a_json_500_and_leaves_nothing(srv, monkeypatch, caplog) -> None:
    admin = ("ops", "admin")
    r = await srv.request("POST", "/v1/rooms", who=admin, json={"name": "r2", "max_participants": 2})
    assert r.status == 201, await r.text()
    from mediasrv.rooms import Room

    real_publish = Room.publish

    async def broken(self, p, offer, sources):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(Room, "publish", broken)
    sdp = await _offer()
    for who in (("ghost1", "patient"), ("ghost2", "patient")):
        r, body = await _whip(srv, "r2", who, sdp)
        assert r.status == 500 and r.content_type == "application/json", body
        assert body["error"]["code"] == "internal_error"
    assert not srv.app[keys.ROOMS].get("r2").participants
    logged = [rec for rec in caplog.records if rec.exc_info and rec.exc_info[0] is RuntimeError]
    assert len(logged) == 2  # once per failed request
    monkeypatch.setattr(Room, "publish", real_publish)
    r, body = await _whip(srv, "r2", ("doc", "clinician"), sdp)
    assert r.status == 201, body


NON_FINITE = ["1e999999", "-1e999999", "NaN", "Infinity", "-Infinity"]


@pytest.mark.parametrize("number", NON_FINITE)
async def test_room_protocol_refuses_non_finite_numbers(srv, number) -> None:
    assert srv.session is not None
    ws = await srv.session.ws_connect(f"/rooms/r1/ws?access_token={srv.token('pat', 'patient', 'r1')}")
    await ws.send_json({"type": "join", "request_id": "j"})
    assert (await ws.receive_json())["type"] == "joined"
    await ws.send_str('{"type": "ping", "request_id": ' + number + "}")
    raw = (await ws.receive()).data
    err = json.loads(raw, parse_constant=lambda c: pytest.fail(f"server wrote {c}: {raw}"))
    assert (err["type"], err["code"], err["request_id"]) == ("error", "invalid_json", None)
    assert "finite" in err["message"] or "not a JSON number" in err["message"]
    await ws.send_json({"type": "ping", "request_id": "p"})  # the session goes on
    assert (await ws.receive_json()) == {"type": "pong", "request_id": "p"}
    await ws.close()


@pytest.mark.parametrize("number", NON_FINITE)
async def test_http_json_bodies_refuse_non_finite_numbers(srv, number) -> None:
    r = await srv.request("POST", "/v1/rooms", who=("ops", "admin"),
                          data='{"name": "r1", "max_duration_s": ' + number + "}",
                          headers={"Content-Type": "application/json"})
    assert r.status == 400, await r.text()
    assert (await r.json())["error"]["code"] == "invalid_json"
    assert srv.app[keys.ROOMS].get("r1") is None


def test_server_json_output_never_carries_non_finite_numbers() -> None:
    from mediasrv.api.http_common import dumps, json_response
    for value in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(ValueError):
            dumps({"x": value})
        with pytest.raises(ValueError):
            json_response({"x": value})


async def _joined_ws(srv, room: str, who: str, role: str):
    assert srv.session is not None
    ws = await srv.session.ws_connect(f"/rooms/{room}/ws?access_token={srv.token(who, role, room)}")
    await ws.send_json({"type": "join", "request_id": "j"})
    assert (await ws.receive_json())["type"] == "joined"
    return ws


async def test_room_protocol_publish_with_out_of_range_ssrc_is_invalid_sdp(srv) -> None:
    ws = await _joined_ws(srv, "r1", "doc", "clinician")
    sdp = await _offer()
    await ws.send_json({"type": "publish", "request_id": 7,
                        "sdp": sdp.replace(f"a=ssrc:{_first_ssrc(sdp)} ", "a=ssrc:99999999999999999999 ")})
    err = await ws.receive_json()
    assert (err["type"], err["code"], err["request_id"]) == ("error", "invalid_sdp", 7)
    participant = srv.app[keys.ROOMS].get("r1").participants["doc"]
    assert not participant.tracks and not participant.publisher_registered  # nothing routed
    await ws.send_json({"type": "ping", "request_id": "p"})
    assert (await ws.receive_json()) == {"type": "pong", "request_id": "p"}
    await ws.close()


async def test_room_protocol_unexpected_error_is_a_json_event_and_the_participant_goes(
        srv, monkeypatch, caplog) -> None:
    from mediasrv.rooms import Room

    async def broken(self, p, offer, sources):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(Room, "publish", broken)
    ws = await _joined_ws(srv, "r1", "doc", "clinician")
    await ws.send_json({"type": "publish", "request_id": 8, "sdp": await _offer()})
    err = await ws.receive_json()
    assert (err["type"], err["code"], err["request_id"]) == ("error", "internal_error", 8)
    await ws.receive()
    assert ws.close_code == 1011
    for _ in range(500):  # the server's side of the close finishes after ours
        room = srv.app[keys.ROOMS].get("r1")
        if room is None or "doc" not in room.participants:
            break
        await asyncio.sleep(0.01)
    assert room is None or "doc" not in room.participants
    logged = [rec for rec in caplog.records if rec.exc_info and rec.exc_info[0] is RuntimeError]
    assert len(logged) == 1


# --- tus: a PATCH that overruns Upload-Length keeps none of its bytes ---------------------------
PATIENT = ("pat-ana", "patient")


async def _chunked(*parts: bytes):
    for part in parts:  # an async generator body: aiohttp sends it chunked, without Content-Length
        yield part


async def _head_offset(srv, upload: str) -> int:
    r = await srv.request("HEAD", upload, who=PATIENT, headers=TUS)
    assert r.status == 200
    return int(r.headers["Upload-Offset"])


async def _patch(srv, upload: str, offset: int, data):
    return await srv.request("PATCH", upload, who=PATIENT, data=data, headers={
        **TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})


@pytest.mark.parametrize("with_checksum", [False, True])
async def test_tus_chunked_patch_past_upload_length_keeps_nothing(srv, with_checksum) -> None:
    msg = await srv.send_message(PATIENT, "dr-lee")
    upload = (await create_upload(srv, PATIENT, msg["id"], 10)).headers["Location"]
    r = await _patch(srv, upload, 0, b"abcd")
    assert r.status == 204 and r.headers["Upload-Offset"] == "4"
    over = b"efghijklmnop"  # 12 bytes where 6 remain
    headers = {**TUS, "Upload-Offset": "4", "Content-Type": "application/offset+octet-stream"}
    if with_checksum:
        headers["Upload-Checksum"] = checksum("sha256", over)
    r = await srv.request("PATCH", upload, who=PATIENT, data=_chunked(over[:3], over[3:]), headers=headers)
    assert r.status == 413 and (await r.json())["error"]["code"] == "exceeds_upload_length"
    assert await _head_offset(srv, upload) == 4  # none of the refused bytes were kept
    r = await _patch(srv, upload, 4, _chunked(b"ef", b"ghij"))
    assert r.status == 204 and r.headers["Upload-Offset"] == "10"
    att = await srv.app[keys.MESSAGES].get_attachment_by_upload(upload.rsplit("/", 1)[1])
    assert att is not None and att.state != "uploading"


async def test_tus_content_length_patch_past_upload_length_keeps_nothing(srv) -> None:
    msg = await srv.send_message(PATIENT, "dr-lee")
    upload = (await create_upload(srv, PATIENT, msg["id"], 10)).headers["Location"]
    r = await _patch(srv, upload, 0, b"a" * 11)
    assert r.status == 413
    assert await _head_offset(srv, upload) == 0
    r = await _patch(srv, upload, 0, b"a" * 10)
    assert r.status == 204 and r.headers["Upload-Offset"] == "10"


async def test_tus_chunked_patch_cut_off_keeps_what_arrived(srv) -> None:
    msg = await srv.send_message(PATIENT, "dr-lee")
    upload = (await create_upload(srv, PATIENT, msg["id"], 10)).headers["Location"]
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write((
        f"PATCH {upload} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
        f"Authorization: Bearer {srv.token(*PATIENT)}\r\nTus-Resumable: 1.0.0\r\n"
        "Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
        "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n").encode())
    await writer.drain()
    for _ in range(500):  # wait until the server has read the chunk, then drop the connection
        state = srv.app[keys.UPLOADS]
        if any(lock.locked() for lock in state.locks.values()):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    writer.transport.abort()
    for _ in range(500):
        if await _head_offset(srv, upload) == 3:
            break
        await asyncio.sleep(0.01)
    assert await _head_offset(srv, upload) == 3


def test_an_offer_checked_twice_is_parsed_once_and_a_bad_one_refused_every_time(monkeypatch) -> None:
    from mediasrv.media import sdp as sdp_module

    good = asyncio.run(_offer())
    bad = good.replace("a=rtpmap:97 ", "a=rtpmap:200 ").replace(" 97 ", " 200 ", 1)
    parses = []
    real = sdp_module.SessionDescription.parse
    monkeypatch.setattr(sdp_module.SessionDescription, "parse", lambda text: parses.append(text) or real(text))
    assert check_offer_text(good) is check_offer_text(str(good))  # the same text, another string
    assert parses == [good]
    for _ in range(2):
        with pytest.raises(SdpError):
            check_offer_text(bad)
    assert parses == [good, bad, bad]
    check_offer_text(good)  # still the last one accepted
    assert parses == [good, bad, bad]
