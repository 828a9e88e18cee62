"""Room socket liveness: the server pings a silent client and gives up a session from which
nothing, not even a pong, came for its idle limit (the others see `disconnected`); a client that
answers pings stays however quiet it is; a participant with media up gets ICE consent's margin."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mediasrv.api.room_protocol import Liveness, RoomSession
from tests.conftest import start_server

PING_S, IDLE_S = 0.25, 1.2  # wide enough that a busy test machine never stalls the loop past it


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
    dropped_before = await _dropped(s1, quick, "silent")
    loop = asyncio.get_running_loop()
    joined_at = loop.time()  # before its join, from which on the server counts its silence
    s2, patient = await _join(quick, "pat", "patient", autoping=False)
    assert (await _next_event(clinician, 5))["type"] == "participant_joined"
    left = await _next_event(clinician, 10)
    assert left == {"type": "participant_left", "identity": "pat", "reason": "disconnected"}
    assert loop.time() - joined_at >= IDLE_S  # not before its idle limit
    # What the patient's socket saw: a ping every PING_S of silence, then the close saying why.
    kinds = []
    while (msg := await patient.receive(timeout=5)).type not in (aiohttp.WSMsgType.CLOSE,
                                                                  aiohttp.WSMsgType.CLOSED):
        kinds.append(msg.type)
    assert kinds.count(aiohttp.WSMsgType.PING) >= 2, kinds
    assert (msg.type, msg.data, msg.extra) == (aiohttp.WSMsgType.CLOSE, 4000, "connection_lost")
    assert set(quick.rooms.get("live").participants) == {"dr"}
    assert await _dropped(s1, quick, "silent") == dropped_before + 1
    for s in (s1, s2):
        await s.close()


async def _dropped(session: aiohttp.ClientSession, server: Any, reason: str) -> float:
    admin = {"Authorization": f"Bearer {server.token('ops', 'admin', None)}"}
    async with session.get(f"{server.url}/metrics", headers=admin) as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mediasrv_room_sockets_dropped_total" and sample.labels["reason"] == reason:
                return sample.value
    raise AssertionError("mediasrv_room_sockets_dropped_total missing")


async def _chat_until_left(ws: Any, events: asyncio.Queue[Any]) -> tuple[Any, int]:
    """Chats 4000 characters at a time until someone leaves; the event that says so, and how
    many chats were sent."""
    for i in range(3000):  # at most 12 MB; a stalled socket's buffers hold far less
        await ws.send_json({"type": "chat", "text": "x" * 4000})
        while not events.empty():
            if (event := events.get_nowait()).get("type") == "participant_left":
                return event, i + 1
        if i % 50 == 49:
            await asyncio.sleep(0)
    while (event := await events.get()).get("type") != "participant_left":
        pass  # the last chats are still on their way: the leave comes after them
    return event, 3000


async def test_a_socket_that_takes_nothing_does_not_hold_up_the_room(tmp_path):
    """A client whose network died with its buffers full: events to it stall. The room's other
    participants keep getting theirs, and the stalled one is cut within seconds (`disconnected`)."""
    # Pings far apart: only the stalled send may cut the patient here.
    srv = await start_server(tmp_path / "data", room_ws_messages_per_s=0, room_ws_ping_s=60,
                             room_ws_idle_timeout_s=120)
    try:
        s1, clinician = await _join(srv, "dr", "clinician")
        # aiohttp stops reading a socket whose messages nobody takes (its queue is full), so the
        # server's send buffer to it fills: what a dead network looks like from the server.
        s2, _patient = await _join(srv, "pat", "patient")
        dropped_before = await _dropped(s1, srv, "stalled")
        events: asyncio.Queue[Any] = asyncio.Queue()
        reader = asyncio.create_task(_read_into(clinician, events))
        assert (await asyncio.wait_for(events.get(), 5))["type"] == "participant_joined"
        async with asyncio.timeout(20):  # without the cut, the clinician's own sends stall too
            left, _ = await _chat_until_left(clinician, events)
        assert left == {"type": "participant_left", "identity": "pat", "reason": "disconnected"}
        # The clinician still gets the room's events, at once.
        await clinician.send_json({"type": "chat", "text": "still here"})
        while (await asyncio.wait_for(events.get(), 5)).get("text") != "still here":
            pass
        assert set(srv.rooms.get("live").participants) == {"dr"}
        assert await _dropped(s1, srv, "stalled") == dropped_before + 1
        for s in (s1, s2):
            await s.close()
        await asyncio.wait([reader], timeout=5)
    finally:
        await srv.runner.cleanup()


async def test_a_stalled_socket_holds_up_no_one_else(tmp_path, monkeypatch):
    """Events to a participant whose socket takes nothing wait in its own queue: the others, even
    those after it in the room, get every event at once, and the sender is never held up. The
    stalled one is cut once its queue is full, whatever the send timeout."""
    from mediasrv.api import room_protocol

    # A send timeout far beyond the test's: only the full queue may cut the patient here, and a
    # broadcast that waited on the patient's socket would make the test time out.
    monkeypatch.setattr(room_protocol, "CLOSE_WAIT_S", 60.0)
    monkeypatch.setattr(room_protocol, "OUTBOX_MAX", 200)
    srv = await start_server(tmp_path / "data", room_ws_messages_per_s=0, room_ws_ping_s=120,
                             room_ws_idle_timeout_s=240)
    sessions = []
    try:
        s1, clinician = await _join(srv, "dr", "clinician")
        s2, _patient = await _join(srv, "pat", "patient")  # joined before the interpreter: sent to first
        s3, interpreter = await _join(srv, "int", "interpreter")
        sessions = [s1, s2, s3]
        dropped_before = await _dropped(s1, srv, "stalled")
        heard: dict[str, asyncio.Queue[Any]] = {"dr": asyncio.Queue(), "int": asyncio.Queue()}
        readers = [asyncio.create_task(_read_into(ws, heard[who]))
                   for who, ws in (("dr", clinician), ("int", interpreter))]
        while (await asyncio.wait_for(heard["dr"].get(), 5)).get("type") != "participant_joined":
            pass
        async with asyncio.timeout(30):
            left, sent = await _chat_until_left(clinician, heard["dr"])
            assert left == {"type": "participant_left", "identity": "pat", "reason": "disconnected"}
            await clinician.send_json({"type": "chat", "text": "end"})
            chats = []  # what the interpreter got, in order, up to the last chat
            while (event := await heard["int"].get()).get("text") != "end":
                if event.get("type") == "chat":
                    chats.append(event["text"])
        assert chats == ["x" * 4000] * sent  # every chat the clinician sent, none held back
        assert await _dropped(s1, srv, "stalled") == dropped_before + 1
        assert set(srv.rooms.get("live").participants) == {"dr", "int"}
        for r in readers:
            r.cancel()
    finally:
        for s in sessions:
            await s.close()
        await srv.runner.cleanup()


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


def test_liveness_pings_each_ping_period_of_silence_and_gives_up_at_the_limit() -> None:
    live = Liveness(ping_s=10.0, now=100.0)
    assert live.wait_s(100.0, 25.0) == 10.0
    assert not live.ping_due(109.9) and live.ping_due(110.0)
    live.pinged = 110.0
    assert live.wait_s(110.0, 25.0) == 10.0  # next ping at 120
    live.pinged = 120.0
    assert live.wait_s(120.0, 25.0) == 5.0  # the limit (125) comes before the next ping
    assert not live.gone(124.9, 25.0) and live.gone(125.0, 25.0)
    live.heard = 121.0  # a pong: silence counts from it, the next ping a period after it
    assert not live.gone(140.0, 25.0)
    assert live.wait_s(121.0, 25.0) == 10.0
    assert live.wait_s(200.0, 25.0) > 0  # never 0: aiohttp reads a 0 timeout as none
