"""A node that lost a room's lease (stopped past it while another node took the room over) gives the
room up when it wakes: its participants are sent to the new owner (a `redirect` event, then 4307),
and it writes nothing more of the visit's state, which stays the new owner's. A lease nobody took
meanwhile is simply taken back."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.cluster.conftest import Cluster, admin, token
from tests.cluster.test_placement import join_following, next_event

pytestmark = pytest.mark.slow

LEASE = "mediasrv:room-owner:"
VISIT = "mediasrv:visit:"


async def until(check: Any, what: str, bound: float = 30.0) -> None:
    """Poll `check()` (async) until true; a generous functional bound, not a timing assertion."""
    deadline = time.monotonic() + bound
    while not await check():
        assert time.monotonic() < deadline, f"not within {bound} s: {what}"
        await asyncio.sleep(0.1)


async def closed_code(ws: Any) -> int | None:
    """Read what is left on the socket until it closes: its close code."""
    async with asyncio.timeout(30):
        while not ws.closed:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                break
    return int(ws.close_code) if ws.close_code is not None else None


async def test_a_stalled_owner_gives_the_room_up_to_the_node_that_took_it(cluster: Cluster) -> None:
    a, b = await cluster.start(2)
    r = aioredis.from_url(cluster.redis.url, decode_responses=True)
    try:
        async with aiohttp.ClientSession() as http:
            clinician, _, owner_url = await join_following(http, a.url, "stall", token("dr", "clinician", "stall"))
            stalled = cluster.by_url(owner_url)
            other = b if stalled is a else a
            async with http.get(owner_url + "/v1/rooms/stall", headers=admin()) as resp:
                visit = (await resp.json())["visit_id"]
            await until(lambda: r.exists(VISIT + "stall"), "the owner saves the visit's state")

            stalled.signal(signal.SIGSTOP)
            try:
                # Its lease and registry entry lapse; the patient's join places the room on the other
                # node, which re-creates the same visit from its state and then changes its options.
                async def lapsed() -> bool:
                    return not await r.exists(LEASE + "stall", f"mediasrv:node:{stalled.name}")

                await until(lapsed, "the stopped node's lease expires")
                patient, _, where = await join_following(http, other.url, "stall", token("pat", "patient", "stall"))
                assert where == other.url
                async with http.post(other.url + "/v1/rooms", headers=admin(),
                                     json={"name": "stall", "recording_allowed": True}) as resp:
                    assert resp.status in (200, 201), await resp.text()
                    assert (await resp.json())["visit_id"] == visit

                async def saved_by_new_owner() -> bool:
                    return await r.hget(VISIT + "stall", "configured") == "1"

                await until(saved_by_new_owner, "the new owner saves the visit's state")
            finally:
                stalled.signal(signal.SIGCONT)

            # The woken node sends its participant to the new owner and closes the room.
            redirect = await next_event(clinician, "redirect", timeout=30)
            assert redirect["node_url"] == other.url
            assert redirect["url"] == other.url.replace("http", "ws", 1) + "/rooms/stall/ws"
            assert await closed_code(clinician) == 4307

            # The lease and the visit's state stay the new owner's over several heartbeats of the
            # woken node (every 0.5 s): it writes nothing more of them. (The lease is the new
            # owner's, or free for a moment should its heartbeat be late on a loaded machine.)
            for _ in range(15):
                assert await r.get(LEASE + "stall") != stalled.name
                state = await r.hgetall(VISIT + "stall")
                assert state["visit_id"] == visit and state["configured"] == "1", state
                assert json.loads(state["options"])["recording_allowed"] is True
                await asyncio.sleep(0.1)
            async with http.get(stalled.url + "/v1/rooms", headers=admin()) as resp:
                assert "stall" not in {room["name"] for room in (await resp.json())["rooms"]}

            # The clinician follows the redirect: the same visit, both participants on one node.
            clinician, joined, where = await join_following(http, redirect["node_url"], "stall",
                                                            token("dr", "clinician", "stall"))
            assert where == other.url
            async with http.get(other.url + "/v1/rooms/stall", headers=admin()) as resp:
                room = await resp.json()
            assert room["visit_id"] == visit
            assert {p["identity"] for p in room["participants"]} == {"dr", "pat"}
            await clinician.close()
            await patient.close()
    finally:
        await r.aclose()


async def test_a_stalled_owner_takes_back_a_lease_nobody_took(cluster: Cluster) -> None:
    a, _ = await cluster.start(2)
    r = aioredis.from_url(cluster.redis.url, decode_responses=True)
    try:
        async with aiohttp.ClientSession() as http:
            ws, _, owner_url = await join_following(http, a.url, "nap", token("dr", "clinician", "nap"))
            owner = cluster.by_url(owner_url)
            owner.signal(signal.SIGSTOP)
            try:
                async def lapsed() -> bool:
                    return not await r.exists(LEASE + "nap")

                await until(lapsed, "the stopped node's lease expires")
            finally:
                owner.signal(signal.SIGCONT)

            async def taken_back() -> bool:
                return await r.get(LEASE + "nap") == owner.name

            await until(taken_back, "the woken node renews its lease")
            # The visit goes on where it was: no redirect, the session answers.
            await ws.send_json({"type": "ping", "request_id": "p"})
            assert (await next_event(ws, "pong"))["request_id"] == "p"
            await ws.close()
    finally:
        await r.aclose()
