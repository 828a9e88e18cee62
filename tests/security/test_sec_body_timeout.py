"""Request bodies have a read timeout: a client that stops sending mid-body is answered 408 and
its connection closed, instead of holding a handler and a file descriptor for ever."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ctl_helpers import TUS, Server, create_upload, make_settings

# Long enough for a loaded machine to deliver the first byte, short enough to keep the tests quick.
TIMEOUT_S = 1.0
# How long a test waits for the server's answer: far above the setting, far below the default.
WAIT_S = 10.0


@pytest.fixture
async def slow_srv(tmp_path: Path) -> AsyncIterator[Server]:
    settings = make_settings(tmp_path / "data")
    settings.body_read_timeout_s = TIMEOUT_S
    srv = Server(settings)
    await srv.start()
    yield srv
    await srv.stop()


async def _stall(srv: Server, method: str, path: str, headers: dict[str, str], sent: bytes,
                 length: int = 100) -> bytes:
    """Send the headers and part of a body of `length` bytes, then nothing: all the server says."""
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}",
            *(f"{k}: {v}" for k, v in headers.items())]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + sent)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), WAIT_S)  # read() returns at EOF: closed
    finally:
        writer.close()


def _connections(srv: Server) -> int:
    assert srv.server is not None and srv.server.runner is not None
    server = srv.server.runner.server
    assert server is not None
    return len(server.connections)


async def _gone(srv: Server, before: int) -> None:
    """The stalled connection and its handler are gone (`before`: the test client's keep-alives)."""
    for _ in range(100):
        if _connections(srv) == before:
            return
        await asyncio.sleep(0.05)
    assert _connections(srv) == before


async def test_stalled_json_body_is_408_and_closed(slow_srv) -> None:
    srv = slow_srv
    before = _connections(srv)
    got = await _stall(srv, "POST", "/v1/rooms", {**srv.auth("admin", "admin"),
                                                  "Content-Type": "application/json"}, b"{")
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b'"body_timeout"' in got
    await _gone(srv, before)
    r = await srv.request("POST", "/v1/rooms", who=("admin", "admin"), json={"name": "visit1"})
    assert r.status == 201, await r.text()


async def test_stalled_sdp_body_is_408_and_closed(slow_srv) -> None:
    srv = slow_srv
    before = _connections(srv)
    got = await _stall(srv, "POST", "/whip/visit1", {**srv.auth("dr", "clinician", "visit1"),
                                                     "Content-Type": "application/sdp"}, b"v")
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b'"body_timeout"' in got
    await _gone(srv, before)
    r = await srv.request("GET", "/healthz")
    assert r.status == 200


async def test_stalled_tus_patch_keeps_what_arrived(slow_srv) -> None:
    srv = slow_srv
    patient = ("pat", "patient")
    message = await srv.send_message(patient, "doc")
    r = await create_upload(srv, patient, message["id"], 100)
    path = r.headers["Location"]
    before = _connections(srv)
    got = await _stall(srv, "PATCH", path, {**srv.auth(*patient), **TUS, "Upload-Offset": "0",
                                            "Content-Type": "application/offset+octet-stream"},
                       b"x" * 10)
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    await _gone(srv, before)
    r = await srv.request("HEAD", path, who=patient, headers=TUS)
    assert r.status == 200
    assert r.headers["Upload-Offset"] == "10"  # as after a disconnect: resume from there
    r = await srv.request("PATCH", path, who=patient, data=b"y" * 90, headers={
        **TUS, "Upload-Offset": "10", "Content-Type": "application/offset+octet-stream"})
    assert r.status == 204, await r.text()
    assert r.headers["Upload-Offset"] == "100"


async def test_tus_timeout_is_per_read_not_per_upload(slow_srv) -> None:
    """A slow upload that keeps sending is not cut off: the limit is on an idle gap."""
    srv = slow_srv
    patient = ("pat", "patient")
    message = await srv.send_message(patient, "doc")
    pieces = 5
    r = await create_upload(srv, patient, message["id"], pieces * 10)
    path = r.headers["Location"]

    async def slowly() -> AsyncIterator[bytes]:
        for _ in range(pieces):  # in all, longer than the timeout; each gap well under it
            yield b"z" * 10
            await asyncio.sleep(TIMEOUT_S / 3)

    r = await srv.request("PATCH", path, who=patient, data=slowly(), headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
        "Content-Length": str(pieces * 10)})
    assert r.status == 204, await r.text()
    assert r.headers["Upload-Offset"] == str(pieces * 10)
