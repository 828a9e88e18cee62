"""Drain (SIGTERM) and failover (kill -9) of a node, with real node processes and redis-server."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.cluster.conftest import Cluster, Node, admin, token
from tests.cluster.test_placement import join_following, next_event, ws_join

pytestmark = pytest.mark.slow


async def wait_exit(node: Node, timeout: float) -> int:
    code = await asyncio.to_thread(node.proc.wait, timeout)
    assert code == 0, node.output()
    return code


async def test_sigterm_drains_a_node_with_a_running_visit(cluster: Cluster) -> None:
    a, b = await cluster.start(2, drain_timeout_s=60)
    async with aiohttp.ClientSession() as http:
        ws, _, owner_url = await join_following(http, a.url, "drainme", token("dr", "clinician", "drainme"))
        owner = cluster.by_url(owner_url)
        other = b if owner is a else a
        owner.signal(signal.SIGTERM)
        draining = await next_event(ws, "server_draining")
        assert draining["seconds_left"] == 60 and draining["deadline"] > time.time() + 50
        async with http.get(owner.url + "/readyz") as r:
            assert r.status == 503 and (await r.json())["status"] == "draining"
        async with http.get(other.url + "/v1/cluster", headers=admin()) as r:
            states = {n["id"]: n["state"] for n in (await r.json())["nodes"]}
        assert states == {owner.name: "draining", other.name: "serving"}
        # No new room is placed on it: a first join there is sent to the serving node.
        for i in range(3):
            fresh, event = await ws_join(http, owner.url, f"fresh{i}", token("x", "clinician", f"fresh{i}"))
            assert event["type"] == "redirect" and event["node_url"] == other.url
            await fresh.close()
        # The running visit goes on, and the process stays while it does.
        await asyncio.sleep(1.0)
        await ws.send_json({"type": "ping", "request_id": "p"})
        assert (await next_event(ws, "pong"))["request_id"] == "p"
        assert owner.proc.poll() is None
        # The visit ends: the node exits, well before drain_timeout_s.
        await ws.send_json({"type": "leave"})
        await ws.close()
        assert await wait_exit(owner, 20) == 0


async def test_drain_timeout_closes_visits_and_a_second_sigterm_forces(cluster: Cluster) -> None:
    a, b = await cluster.start(2, drain_timeout_s=2)
    async with aiohttp.ClientSession() as http:
        ws, _, owner_url = await join_following(http, a.url, "long", token("dr", "clinician", "long"))
        owner = cluster.by_url(owner_url)
        owner.signal(signal.SIGTERM)
        await next_event(ws, "server_draining")
        closed = await next_event(ws, "room_closed", timeout=20)  # at the deadline
        assert closed["reason"] == "shutdown"
        assert await wait_exit(owner, 20) == 0
        # Its room was given up: the visit's next join lands on the other node.
        other = b if owner is a else a
        ws2, joined, where = await join_following(http, other.url, "long", token("dr", "clinician", "long"))
        assert where == other.url
        await ws2.close()
        # A second SIGTERM stops a node without waiting for its visits.
        ws3, _, owner_url = await join_following(http, other.url, "long", token("dr2", "clinician", "long"))
        assert owner_url == other.url
    c = cluster
    (n3,) = await c.start(1, drain_timeout_s=300)
    async with aiohttp.ClientSession() as http:
        ws4, _, url4 = await join_following(http, n3.url, "third", token("dr", "clinician", "third"))
        node = c.by_url(url4)
        node.signal(signal.SIGTERM)
        await next_event(ws4, "server_draining")
        node.signal(signal.SIGTERM)
        assert await wait_exit(node, 20) == 0
    await ws3.close()


async def rejoin(http: aiohttp.ClientSession, base: str, room: str, tok: str, give_up_s: float = 30) -> tuple[Any, dict[str, Any]]:
    """What a client does after losing its node: join again at a live node with the same token until
    the dead owner's lease has expired and the room is placed anew."""
    deadline = time.monotonic() + give_up_s
    while True:
        ws, event = await ws_join(http, base, room, tok)
        if event["type"] == "joined":
            return ws, event
        await ws.close()
        if event["type"] == "redirect":
            try:  # the owner may still be listed for a moment
                ws, event = await ws_join(http, event["node_url"], room, tok)
                if event["type"] == "joined":
                    return ws, event
                await ws.close()
            except aiohttp.ClientError:
                pass
        assert time.monotonic() < deadline, event
        await asyncio.sleep(0.2)


async def test_kill_9_of_the_owner_moves_the_visit_with_its_waiting_room_state(cluster: Cluster) -> None:
    a, b = await cluster.start(2)
    async with aiohttp.ClientSession() as http:
        async with http.post(a.url + "/v1/rooms", headers=admin(),
                             json={"name": "clinic", "waiting_room": True, "max_duration_s": 3600}) as r:
            assert r.status == 201
            created = await r.json()
        pat_token = token("pat", "patient", "clinic")
        patient, joined, owner_url = await join_following(http, a.url, "clinic", pat_token)
        assert joined["admitted"] is False
        async with http.post(a.url + "/v1/rooms/clinic/participants/pat/admit", headers=admin()) as r:
            assert r.status == 204
        await next_event(patient, "admitted")
        owner = cluster.by_url(owner_url)
        survivor = b if owner is a else a
        r2 = aioredis.from_url(cluster.redis.url, decode_responses=True)
        try:
            async with asyncio.timeout(10):  # the visit's state is in Redis (the next heartbeat)
                while not await r2.exists("mediasrv:visit:clinic"):
                    await asyncio.sleep(0.1)
        finally:
            await r2.aclose()

        owner.proc.kill()
        killed = time.monotonic()
        await asyncio.to_thread(owner.proc.wait, 10)
        assert owner.proc.returncode == -9
        ws, again = await rejoin(http, survivor.url, "clinic", pat_token)
        moved_s = time.monotonic() - killed
        # The same visit, with its options and its start (so its time limit), and the patient is
        # admitted again without a clinician having to do it.
        await next_event(ws, "admitted")
        async with http.get(survivor.url + "/v1/rooms/clinic", headers=admin()) as r:
            room = await r.json()
        assert room["visit_id"] == created["visit_id"]
        assert room["options"]["waiting_room"] is True and room["options"]["max_duration_s"] == 3600
        assert room["created_at"] == pytest.approx(created["created_at"])
        assert room["configured"] is True
        print(f"\nkill -9 of the owner -> patient rejoined on the survivor: {moved_s:.2f} s")
        # Someone who was never admitted still waits.
        guest, gjoined, _ = await join_following(http, survivor.url, "clinic", token("g", "guest", "clinic"))
        assert gjoined["admitted"] is False
        await guest.close()
        await ws.close()


async def test_a_recording_cut_by_kill_9_is_marked_interrupted_on_the_new_owner(cluster: Cluster) -> None:
    a, b = await cluster.start(2)
    async with aiohttp.ClientSession() as http:
        async with http.post(a.url + "/v1/rooms", headers=admin(),
                             json={"name": "recd", "recording_allowed": True}) as r:
            assert r.status == 201
        dr_token = token("dr", "clinician", "recd")
        ws, _, owner_url = await join_following(http, a.url, "recd", dr_token)
        await ws.send_json({"type": "start_recording", "request_id": "s"})
        await next_event(ws, "recording_status")
        await ws.send_json({"type": "recording_consent", "granted": True, "request_id": "c"})
        r2 = aioredis.from_url(cluster.redis.url, decode_responses=True)
        try:
            async with asyncio.timeout(15):  # running, as the owner's heartbeat tells Redis
                while not (await r2.hget("mediasrv:visit:recd", "recording") or "").startswith("running:"):
                    await asyncio.sleep(0.1)
            recording_id = (await r2.hget("mediasrv:visit:recd", "recording")).split(":", 1)[1]
            owner = cluster.by_url(owner_url)
            survivor = b if owner is a else a
            owner.proc.kill()
            await asyncio.to_thread(owner.proc.wait, 10)
            ws2, _ = await rejoin(http, survivor.url, "recd", dr_token)
            assert await r2.hget("mediasrv:visit:recd", "recording") == f"interrupted:{recording_id}"
        finally:
            await r2.aclose()
        async with http.get(survivor.url + "/v1/audit", params={"action": "recording.interrupted"},
                            headers=admin()) as r:
            entries = (await r.json())["entries"]
        assert len(entries) == 1 and entries[0]["room"] == "recd"
        await ws2.close()
