"""Numbers in paths and headers are ASCII digits: '²' (isdigit() but not int()) is a 4xx, not a 500."""

from __future__ import annotations

import asyncio

from ctl_helpers import tus_metadata, upload_bytes

from mediasrv.rooms import RoomOptions


async def _raw_status(port: int, request: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    line = await reader.readline()
    writer.close()
    return int(line.split()[1])


async def test_mute_with_a_superscript_track_id_is_404(srv) -> None:
    from mediasrv.api import appkeys as keys

    srv.app[keys.ROOMS].create("r1", RoomOptions())
    r = await srv.request("POST", "/v1/rooms/r1/participants/pat/tracks/%C2%B2/mute", who=("ops", "admin"))
    assert r.status == 404
    assert (await r.json())["error"]["code"] == "track_not_found"


async def test_tus_headers_with_superscript_digits_are_400(srv) -> None:
    patient = ("pat", "patient")
    message = await srv.send_message(patient, "doc")
    token = srv.token(*patient)
    meta = tus_metadata(message=message["id"]).encode()
    for value in ("²".encode(), "¹²".encode(), "١".encode()):
        status = await _raw_status(srv.port, b"POST /v1/uploads/ HTTP/1.1\r\nHost: x\r\n"
                                   b"Tus-Resumable: 1.0.0\r\nAuthorization: Bearer " + token.encode()
                                   + b"\r\nUpload-Length: " + value + b"\r\nUpload-Metadata: " + meta
                                   + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        assert status == 400, value


async def test_range_with_non_ascii_digits_is_ignored(srv) -> None:
    patient, clinician = ("pat", "patient"), ("doc", "clinician")
    message = await srv.send_message(patient, "doc")
    await upload_bytes(srv, patient, message["id"], b"0123456789", "application/octet-stream")
    got = await (await srv.request("GET", f"/v1/messages/{message['id']}", who=clinician)).json()
    url = got["attachments"][0]["download_url"]
    token = srv.token(*clinician)
    for spec in ("bytes=²-", "bytes=0-²", "bytes=-²", "bytes=١-"):
        status = await _raw_status(srv.port, f"GET {url} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                   f"{token}\r\nRange: {spec}\r\nConnection: close\r\n\r\n".encode())
        assert status == 200, spec  # an unusable Range is ignored: the whole file
