"""Logs are quiet and carry no patient data: a client that drops mid-body is one line (no
traceback), and the log records of a visit or a recorded message name no identity, display name or
file name, only ids (session, transport, recording, room)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiortc import RTCPeerConnection

from mediasrv.app import create_app
from mediasrv.auth import mint_token
from mediasrv.config import load_settings, prepare_data_dir
from mediasrv.media.host_addresses import configure_host_addresses

configure_host_addresses(["127.0.0.1"])

# People in these flows: none of these strings may appear in any log record.
PATIENT, CLINICIAN, RECIPIENT = "jane-roe-1962", "dr-ada-quill", "dr-inbox-marlow"
PATIENT_NAME, CLINICIAN_NAME = "Jane Roe", "Ada Quill"
PUBLISHER, VIEWER = "pub-ezra-pound", "sub-mary-shelley"
PEOPLE = (PATIENT, CLINICIAN, RECIPIENT, PATIENT_NAME, CLINICIAN_NAME, PUBLISHER, VIEWER)


def _rendered(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info:
        text += logging.Formatter().formatException(record.exc_info)
    return text


def _named(records: list[logging.LogRecord]) -> list[str]:
    # aiohttp's access log is off in `mediasrv serve` (WHEP paths name the viewed participant);
    # the test server has it on, so it is left out here.
    return [f"{r.name}: {_rendered(r)}" for r in records
            if r.name != "aiohttp.access" and any(p in _rendered(r) for p in PEOPLE)]


@pytest.fixture
async def prod_server(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """A server run as `mediasrv serve` runs it: aiohttp does not cancel a handler whose client
    went away (the test server does), so the handler sees the dropped connection as an error."""
    settings = load_settings(env={}, data_dir=tmp_path / "data")
    prepare_data_dir(settings)
    runner = web.AppRunner(create_app(settings), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"127.0.0.1:{port}", settings.api_secret
    finally:
        await runner.cleanup()


async def _drop_mid_body(addr: str, path: str, token: str, ctype: str) -> None:
    host, port = addr.split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write((f"POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000\r\n"
                  f"Content-Type: {ctype}\r\nAuthorization: Bearer {token}\r\n\r\n{{").encode())
    await writer.drain()
    await asyncio.sleep(0.3)  # the handler is reading the body
    writer.close()
    await asyncio.sleep(0.5)  # the server notices and the handler ends


@pytest.mark.parametrize("path,ctype", [("/v1/messages", "application/json"),
                                        (f"/whip/messages/{RECIPIENT}", "application/sdp")])
async def test_a_client_dropping_mid_body_is_one_line_without_traceback(
        prod_server: tuple[str, str], caplog: pytest.LogCaptureFixture, path: str, ctype: str) -> None:
    addr, secret = prod_server
    token = mint_token(secret, identity=PATIENT, role="patient", ttl_s=600)
    caplog.set_level(logging.INFO)
    caplog.clear()
    await _drop_mid_body(addr, path, token, ctype)
    records = list(caplog.records)
    assert len(records) == 1, [f"{r.name}: {_rendered(r)}" for r in records]
    (record,) = records
    assert record.exc_info is None and "\n" not in record.getMessage()
    assert "client disconnected" in record.getMessage()
    assert _named(records) == []  # the path template, not the recipient in the path


async def _offer(*kinds: str) -> RTCPeerConnection:
    pc = RTCPeerConnection()
    for kind in kinds:
        pc.addTransceiver(kind, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc


async def test_a_visit_logs_no_identity_or_name(server: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    room = "visit-q1"
    http = aiohttp.ClientSession()
    sockets = []
    for who, role, name in ((CLINICIAN, "clinician", CLINICIAN_NAME), (PATIENT, "patient", PATIENT_NAME)):
        ws = await http.ws_connect(f"{server.url}/rooms/{room}/ws")
        await ws.send_json({"type": "join", "token": server.token(who, role, room, name=name)})
        assert (await ws.receive_json())["type"] in ("joined", "waiting")
        sockets.append(ws)
    # A WHIP publisher and a WHEP viewer (offer, answer, transports), then both gone.
    pub_headers = {"Content-Type": "application/sdp",
                   "Authorization": f"Bearer {server.token(PUBLISHER, 'patient', room, name=PATIENT_NAME)}"}
    view_headers = {"Content-Type": "application/sdp",
                    "Authorization": f"Bearer {server.token(VIEWER, 'observer', room)}"}
    pub, view = await _offer("audio", "video"), RTCPeerConnection()
    view.addTransceiver("video", direction="recvonly")
    await view.setLocalDescription(await view.createOffer())
    async with http.post(f"{server.url}/whip/{room}", data=pub.localDescription.sdp, headers=pub_headers) as r:
        assert r.status == 201, await r.text()
        pub_url = server.url + r.headers["Location"]
    async with http.post(f"{server.url}/whep/{room}/{PUBLISHER}", data=view.localDescription.sdp,
                         headers=view_headers) as r:
        assert r.status == 201, await r.text()
        view_url = server.url + r.headers["Location"]
    await asyncio.sleep(0.5)
    for url, headers in ((view_url, view_headers), (pub_url, pub_headers)):
        async with http.delete(url, headers=headers) as r:
            assert r.status == 200
    for pc in (pub, view):
        await pc.close()
    for ws in sockets:
        await ws.close()
    await http.close()
    await server.rooms.close(room, "visit_over")
    assert any(r.name.startswith("mediasrv.") for r in caplog.records), "the flow logs (transport states)"
    assert _named(caplog.records) == []


async def test_a_recorded_message_logs_no_sender_or_recipient(
        server: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pc = await _offer("audio", "video")
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {server.token(PATIENT, 'patient')}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{server.url}/whip/messages/{RECIPIENT}", data=pc.localDescription.sdp,
                          headers=headers) as r:
            assert r.status == 201, await r.text()
            location = r.headers["Location"]
        # The sender ends before any media: nothing recorded, a warning that used to name both.
        async with s.delete(server.url + location, headers=headers) as r:
            assert r.status == 200
    await pc.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "mediasrv.api.recorded_messages"]
    assert messages and "nothing was recorded" in messages[0]
    assert _named(caplog.records) == []
