"""Room socket liveness: the server pings a silent client and gives up a session from which
nothing, not even a pong, came for its idle limit (the others see `disconnected`); a client that
answers pings stays however quiet it is; a participant with media up gets ICE consent's margin."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from mediasrv.api.room_protocol import RoomSession
from tests.conftest import start_server

PING_S, IDLE_S = 0.2, 0.7


@pytest.fixture
async def quick(tmp_path):
    srv = await start_server(tmp_path / "data", room_ws_ping_s=PING_S, room_ws_idle_timeout_s=IDLE_S)
    try:
        yield srv
    finally:
        await srv.runner.cleanup()


async def _join(server, identity: str, role: str, **kw: Any) -> tuple[aiohttp.ClientSession, Any]:
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(f"{server.url}/rooms/live/ws", **kw)
    await ws.send_json({"type": "join", "token": server.token(identity, role, "live")})
    while (msg := await ws.receive(timeout=5)).type != aiohttp.WSMsgType.TEXT:
        pass
    assert msg.json()["type"] == "joined"
    return session, ws


async def _next_event(ws: Any, timeout: float) -> dict[str, Any]:
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            return msg.json()
        assert msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg


async def _read_into(ws: Any, events: asyncio.Queue[Any]) -> None:
    """Reads a socket the way a browser does, all the time (aiohttp answers pings while it reads);
    text events and the close go to `events`."""
    while True:
        msg = await ws.receive()
        if msg.type == aiohttp.WSMsgType.TEXT:
            await events.put(msg.json())
        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            await events.put(msg.type)
            return


async def test_a_quiet_client_that_answers_pings_stays(quick):
    s1, clinician = await _join(quick, "dr", "clinician")
    s2, patient = await _join(quick, "pat", "patient")
    assert (await _next_event(clinician, 5))["type"] == "participant_joined"
    heard: dict[str, asyncio.Queue[Any]] = {"dr": asyncio.Queue(), "pat": asyncio.Queue()}
    readers = [asyncio.create_task(_read_into(ws, heard[who])) for who, ws in (("dr", clinician), ("pat", patient))]
    # Nothing said for four idle limits: both answer the server's pings, both stay.
    await asyncio.sleep(4 * IDLE_S)
    assert all(q.empty() for q in heard.values()), {k: q.qsize() for k, q in heard.items()}
    assert not any(r.done() for r in readers)
    await patient.send_json({"type": "ping", "request_id": 1})
    assert await asyncio.wait_for(heard["pat"].get(), 5) == {"type": "pong", "request_id": 1}
    assert set(quick.rooms.get("live").participants) == {"dr", "pat"}
    for s in (s1, s2):
        await s.close()
    await asyncio.wait(readers, timeout=5)


async def test_a_client_whose_network_went_away_leaves_as_disconnected(quick):
    s1, clinician = await _join(quick, "dr", "clinician")
    # The patient's socket stays open but nothing comes back from it: its pings go unanswered.
    s2, patient = await _join(quick, "pat", "patient", autoping=False)
    assert (await _next_event(clinician, 5))["type"] == "participant_joined"
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    left = await _next_event(clinician, 10)
    waited = loop.time() - t0
    assert left == {"type": "participant_left", "identity": "pat", "reason": "disconnected"}
    assert waited >= IDLE_S, waited
    # What the patient's socket saw: pings, then the close saying why.
    kinds = []
    while (msg := await patient.receive(timeout=5)).type not in (aiohttp.WSMsgType.CLOSE,
                                                                  aiohttp.WSMsgType.CLOSED):
        kinds.append(msg.type)
    assert aiohttp.WSMsgType.PING in kinds
    assert (msg.type, msg.data, msg.extra) == (aiohttp.WSMsgType.CLOSE, 4000, "connection_lost")
    assert set(quick.rooms.get("live").participants) == {"dr"}
    for s in (s1, s2):
        await s.close()


async def test_a_client_ping_gets_a_pong(quick):
    s1, ws = await _join(quick, "dr", "clinician", autoping=False)
    await ws.ping(b"are you there")
    while (msg := await ws.receive(timeout=5)).type != aiohttp.WSMsgType.PONG:
        pass
    assert msg.data == b"are you there"
    await s1.close()


def test_media_up_gets_ice_consents_margin() -> None:
    settings = SimpleNamespace(room_ws_idle_timeout_s=25.0, ice_consent_timeout_s=30.0)
    session: Any = RoomSession.__new__(RoomSession)
    session.settings = settings
    session.participant = None
    assert session.idle_limit_s() == 25.0  # before the join
    up, down = SimpleNamespace(connected=True), SimpleNamespace(connected=False)
    session.participant = SimpleNamespace(publisher=None, subscriber=None)  # the waiting room
    assert session.idle_limit_s() == 25.0
    session.participant = SimpleNamespace(publisher=down, subscriber=None)  # still connecting
    assert session.idle_limit_s() == 25.0
    session.participant = SimpleNamespace(publisher=down, subscriber=up)
    assert session.idle_limit_s() == 60.0
