"""A visit ended by its time limit leaves the room store like one an admin closed, and the table of
closes (which refuses tokens issued before a close) forgets a close once no token issued before it can
still be valid, moving the wall clock (mediasrv.clock.wall) instead of waiting."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from ctl_helpers import Server

from mediasrv import clock
from mediasrv.api import appkeys as keys
from mediasrv.rooms import manager as rooms_manager

ADMIN = ("root", "admin")


async def _join(srv: Server, room: str, token: str) -> dict:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{srv.url}/rooms/{room}/ws") as ws:
        await ws.send_json({"type": "join", "token": token, "request_id": "j"})
        return await ws.receive_json()


async def test_a_visit_ended_by_its_max_duration_leaves_the_store_and_its_tokens(srv: Server) -> None:
    r = await srv.request("POST", "/v1/rooms", who=ADMIN, json={"name": "timed", "max_duration_s": 600})
    assert r.status == 201
    old = srv.token("pat-ana", "patient", "timed")
    manager = srv.app[keys.ROOMS]
    manager.get("timed").created_at -= 601  # its time is up
    for _ in range(200):
        if manager.get("timed") is None:
            break
        await asyncio.sleep(0.02)
    assert manager.get("timed") is None
    for _ in range(2):  # before and after a restart: not re-created from the store, old tokens refused
        assert (await srv.request("GET", "/v1/rooms/timed", who=ADMIN)).status == 404
        reply = await _join(srv, "timed", old)
        assert reply.get("code") == "room_closed", reply
        await srv.restart()
    assert (await _join(srv, "timed", srv.token("pat-ana", "patient", "timed")))["type"] == "joined"


async def test_a_join_while_the_visit_is_closing_does_not_open_a_new_visit_with_an_old_token(
        srv: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await srv.request("POST", "/v1/rooms", who=ADMIN, json={"name": "closing"})).status == 201
    old = srv.token("pat-ana", "patient", "closing")
    manager = srv.app[keys.ROOMS]
    room = manager.get("closing")
    release = asyncio.Event()
    close = room.close

    async def slow_close(reason: str) -> None:  # the room's close awaits (peers, recordings...)
        await release.wait()
        await close(reason)
    monkeypatch.setattr(room, "close", slow_close)
    ending = asyncio.create_task(manager.end("closing", "closed"))
    for _ in range(200):
        if manager.get("closing") is None:
            break
        await asyncio.sleep(0.01)
    assert manager.get("closing") is None, "the room left the table while its close runs"
    reply = await _join(srv, "closing", old)
    assert reply.get("code") == "room_closed", reply
    release.set()
    assert await ending
    assert manager.get("closing") is None


async def test_closes_are_forgotten_once_no_token_from_before_them_can_be_valid(
        srv: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = srv.app[keys.ROOMS]
    horizon = srv.settings.max_token_ttl_s + 5
    assert (await srv.request("POST", "/v1/rooms", who=ADMIN, json={"name": "gone"})).status == 201
    old = srv.token("pat-ana", "patient", "gone")
    assert (await srv.request("DELETE", "/v1/rooms/gone", who=ADMIN)).status == 204
    closed = manager.closed_at["gone"]
    assert (await _join(srv, "gone", old))["code"] == "room_closed"

    # Just inside the horizon the close is kept (another close triggers a prune).
    monkeypatch.setattr(clock, "wall", lambda: closed + horizon - 1)
    assert (await srv.request("POST", "/v1/rooms", who=ADMIN, json={"name": "other"})).status == 201
    assert (await srv.request("DELETE", "/v1/rooms/other", who=ADMIN)).status == 204
    assert "gone" in manager.closed_at
    assert "gone" in await manager.room_store.close_times()

    # Past it, no token issued before the close can still be valid: the close is forgotten...
    monkeypatch.setattr(clock, "wall", lambda: closed + horizon + 1)
    assert (await srv.request("POST", "/v1/rooms", who=ADMIN, json={"name": "third"})).status == 201
    assert (await srv.request("DELETE", "/v1/rooms/third", who=ADMIN)).status == 204
    assert "gone" not in manager.closed_at
    assert "gone" not in await manager.room_store.close_times()
    # ...and a token that old is refused all the same (even one minted with a longer lifetime).
    long_lived = srv.token("pat-ana", "patient", "gone", ttl_s=10 * horizon, now=closed - 1)
    assert (await _join(srv, "gone", long_lived))["code"] == "token_too_old"
    await srv.restart()
    assert "gone" not in srv.app[keys.ROOMS].closed_at
    monkeypatch.undo()
    assert (await _join(srv, "gone", srv.token("pat-ana", "patient", "gone")))["type"] == "joined"


async def test_ended_visits_are_forgotten_once_no_token_from_their_time_can_be_valid(
        srv: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # The visits table says which visits a token may read data of; a visit that ended before every
    # token still valid was issued can be read through none, so it goes (else it grows forever).
    manager = srv.app[keys.ROOMS]
    store = manager.room_store
    horizon = srv.settings.max_token_ttl_s + 5

    async def visit(name: str) -> str:
        assert (await srv.request("POST", "/v1/rooms", who=ADMIN, json={"name": name})).status == 201
        return manager.get(name).visit_id

    old = await visit("old")
    assert (await srv.request("DELETE", "/v1/rooms/old", who=ADMIN)).status == 204
    ended = clock.wall()
    monkeypatch.setattr(clock, "wall", lambda: ended + horizon - 1)
    recent = await visit("recent")
    assert (await srv.request("DELETE", "/v1/rooms/recent", who=ADMIN)).status == 204
    assert await store.visit_room(old) == "old", "a token from its last seconds may still be valid"

    # Past the horizon, a visit that simply ends (its room emptied, no admin) prunes, at most every
    # PRUNE_INTERVAL_S: not yet...
    monkeypatch.setattr(clock, "wall", lambda: ended + horizon + 1)
    await visit("third")
    assert await manager.close("third", "empty")
    assert await store.visit_room(old) == "old"
    # ...then once the interval has passed.
    manager._pruned_at -= rooms_manager.PRUNE_INTERVAL_S
    await visit("fourth")
    assert await manager.close("fourth", "empty")
    assert await store.visit_room(old) is None
    assert await store.visit_room(recent) == "recent"
    # Running visits are never pruned, however old.
    running = await visit("running")
    monkeypatch.setattr(clock, "wall", lambda: ended + 10 * horizon)
    manager._pruned_at -= rooms_manager.PRUNE_INTERVAL_S
    await visit("fifth")
    assert await manager.close("fifth", "empty")
    assert await store.visit_room(running) == "running"
    assert await store.visit_room(recent) is None


async def test_a_room_token_without_iat_is_refused(srv: Server) -> None:
    import jwt

    token = jwt.encode({"sub": "pat", "role": "patient", "room": "walk", "exp": int(time.time()) + 60},
                       srv.settings.api_secret, algorithm="HS256")
    assert (await _join(srv, "walk", token))["code"] == "token_too_old"
