"""Room protocol rules that need no media: roles, limits, identity replacement, room closing."""

from __future__ import annotations

import asyncio

import aiohttp

from mediasrv.rooms import RoomOptions


async def _join(server, room, identity, role):
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(f"{server.url}/rooms/{room}/ws")
    await ws.send_json({"type": "join", "token": server.token(identity, role, room), "request_id": "j"})
    return session, ws, await ws.receive_json()


async def test_observers_cannot_publish(server):
    s, ws, joined = await _join(server, "r1", "watcher", "observer")
    assert joined["type"] == "joined" and joined["role"] == "observer"
    await ws.send_json({"type": "publish", "sdp": "v=0\r\n", "request_id": "p"})
    err = await ws.receive_json()
    assert (err["type"], err["code"], err["request_id"]) == ("error", "forbidden", "p")
    await s.close()


async def test_unknown_track_source_is_refused_before_negotiation(server):
    s, ws, _ = await _join(server, "r1", "pat", "patient")
    await ws.send_json({"type": "publish", "sdp": "v=0\r\n", "sources": {"0": "webcam"},
                        "request_id": "p"})
    err = await ws.receive_json()
    assert (err["code"], err["request_id"]) == ("invalid_source", "p") and "webcam" in err["message"]
    assert server.rooms.get("r1").participants["pat"].publisher is None
    await s.close()


async def test_admin_tokens_cannot_join_a_visit(server):
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(f"{server.url}/rooms/r1/ws")
    await ws.send_json({"type": "join", "token": server.token("ops", "admin")})
    assert (await ws.receive_json())["code"] == "forbidden"
    closing = await ws.receive()
    assert closing.data == 4403
    await session.close()


async def test_room_full_and_identity_replacement(server):
    server.rooms.create("small", RoomOptions(max_participants=2))
    s1, a, _ = await _join(server, "small", "dr", "clinician")
    s2, b, joined = await _join(server, "small", "pat", "patient")
    assert joined["type"] == "joined"
    assert (await a.receive_json())["type"] == "participant_joined"
    s3, c, refused = await _join(server, "small", "guest", "guest")
    assert refused["code"] == "room_full"
    assert (await c.receive()).data == 4409
    # the same identity joining again replaces the old session (a reload must not leave a ghost)
    s4, b2, joined2 = await _join(server, "small", "pat", "patient")
    assert joined2["type"] == "joined"
    msg = await b.receive_json()
    assert msg["code"] == "replaced"
    assert (await b.receive()).data == 4001
    assert sorted(server.rooms.get("small").participants) == ["dr", "pat"]
    for s in (s1, s2, s3, s4):
        await s.close()


async def test_closing_a_room_disconnects_everyone(server):
    s1, a, _ = await _join(server, "r9", "dr", "clinician")
    assert await server.rooms.close("r9", "visit_over")
    assert (await a.receive_json()) == {"type": "room_closed", "reason": "visit_over"}
    assert (await a.receive()).data == 4000
    assert server.rooms.get("r9") is None
    await s1.close()


async def test_join_timeout_closes_4408(server, monkeypatch):
    from mediasrv.api import room_protocol as roomws

    monkeypatch.setattr(roomws, "JOIN_TIMEOUT_S", 0.2)
    async with aiohttp.ClientSession() as s, s.ws_connect(f"{server.url}/rooms/r1/ws") as ws:
        assert (await ws.receive()).data == 4408


async def test_max_duration_warns_then_closes_the_room(server):
    server.rooms.create("short", RoomOptions(max_duration_s=2))
    s1, ws, joined = await _join(server, "short", "dr", "clinician")
    assert joined["type"] == "joined"
    warning = await ws.receive_json(timeout=10)
    assert warning["type"] == "room_ending" and 0 <= warning["seconds_left"] <= 2
    assert await ws.receive_json(timeout=10) == {"type": "room_closed", "reason": "max_duration"}
    assert (await ws.receive(timeout=10)).data == 4000
    assert server.rooms.get("short") is None
    await s1.close()


async def test_router_events_are_drained(server):
    room = server.rooms.get_or_create("ev")
    room.router.add_publisher(1, 7, {})
    room.router.add_track(1, 1, "audio", "0", [(111, "opus", 48000, None)], [0x1234])
    packet = bytes([0x80, 111, 0, 1]) + (1000).to_bytes(4, "big") + (0x1234).to_bytes(4, "big") + b"x" * 40
    room.router.route_rtp(1, packet, 10)
    room.transports[1] = object()  # the room wheel looks only at rooms with a connection
    await asyncio.sleep(0.3)  # it ticks every 100 ms
    del room.transports[1]
    assert room.router.take_events() == []  # already drained
    assert room.router.stats()["tracks_started"] == 1
    await server.rooms.close("ev", "done")
