"""Sessions whose media connection never comes up (no ICE, no DTLS) are closed and freed after
`session_setup_timeout_s`: the participant leaves with reason `setup_timeout`, its room slot, WHIP/WHEP
session and recorded-message room go with it. A connection that did come up is left alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from mediasrv.api import appkeys as keys
from mediasrv.api.whip_whep import MESSAGE_ROOM_PREFIX
from mediasrv.config import ConfigError, load_settings
from mediasrv.media.host_addresses import configure_host_addresses

configure_host_addresses(["127.0.0.1"])
DEADLINE_S = 1.0


async def _offer() -> RTCPeerConnection:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc


async def _whip(server: Any, path: str, token: str, pc: RTCPeerConnection) -> tuple[int, str, str | None]:
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as s, \
            s.post(f"{server.url}{path}", data=pc.localDescription.sdp, headers=headers) as r:
        return r.status, await r.text(), r.headers.get("Location")


async def _eventually(check: Callable[[], bool], what: str) -> None:
    for _ in range(200):  # generous: the deadline is 1 s
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_whip_sessions_that_never_connect_are_reaped(server: Any) -> None:
    server.settings.session_setup_timeout_s = DEADLINE_S
    sessions = server.app[keys.SESSIONS]
    # A publisher that completes ICE and DTLS ...
    good = await _offer()
    status, answer, _ = await _whip(server, "/whip/visit", server.token("dr-lee", "clinician", "visit"), good)
    assert status == 201
    await good.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await _eventually(lambda: good.connectionState == "connected", "the good client connects")
    # ... and one that posts an offer and never does anything else.
    silent = await _offer()
    status, _, location = await _whip(server, "/whip/visit", server.token("pat-x", "patient", "visit"), silent)
    assert status == 201 and location is not None
    room = server.rooms.get("visit")
    assert sorted(room.participants) == ["dr-lee", "pat-x"] and len(sessions) == 2

    await _eventually(lambda: "pat-x" not in room.participants, "the silent session is reaped")
    assert location.rsplit("/", 1)[1] not in sessions
    audit = await server.app[keys.AUDIT].query(action="leave", limit=10)
    assert [(a["actor"], a["detail"]["reason"]) for a in audit] == [("pat-x", "setup_timeout")]
    # The connected session's deadline has passed too: it is untouched.
    assert list(room.participants) == ["dr-lee"] and len(sessions) == 1
    assert good.connectionState == "connected"
    await good.close()
    await silent.close()


async def test_a_room_protocol_connection_that_never_connects_ends_the_session(server: Any) -> None:
    server.settings.session_setup_timeout_s = DEADLINE_S
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(f"{server.url}/rooms/visit/ws")
        await ws.send_json({"type": "join", "token": server.token("pat-y", "patient", "visit")})
        assert (await ws.receive_json())["type"] == "joined"
        pc = await _offer()
        await ws.send_json({"type": "publish", "sdp": pc.localDescription.sdp})
        assert (await ws.receive_json())["type"] == "publish_answer"
        closing = await asyncio.wait_for(ws.receive(), 10)
        assert (closing.data, closing.extra) == (4000, "setup_timeout")
        assert server.rooms.get("visit") is None  # its last participant went: the room closed
        await pc.close()


async def test_a_recorded_message_that_never_connects_is_freed(server: Any) -> None:
    server.settings.session_setup_timeout_s = DEADLINE_S
    pc = await _offer()
    status, _, _ = await _whip(server, "/whip/messages/dr-inbox", server.token("pat-z", "patient"), pc)
    assert status == 201
    assert len(server.app[keys.SESSIONS]) == 1

    def message_rooms() -> list[str]:
        return [n for n in server.rooms.rooms if n.startswith(MESSAGE_ROOM_PREFIX)]

    assert len(message_rooms()) == 1
    await _eventually(lambda: not message_rooms(), "the message room is closed")
    assert server.app[keys.SESSIONS] == {}
    await pc.close()


def test_the_deadline_is_a_setting() -> None:
    assert load_settings(env={}).session_setup_timeout_s == 20.0
    assert load_settings(env={"MEDIASRV_SESSION_SETUP_TIMEOUT_S": "5.5"}).session_setup_timeout_s == 5.5
    with pytest.raises(ConfigError):
        load_settings(env={"MEDIASRV_SESSION_SETUP_TIMEOUT_S": "0"})
