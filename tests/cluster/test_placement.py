"""Registry, placement and redirects across two real nodes sharing a real redis-server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.cluster.conftest import Cluster, admin, token

pytestmark = pytest.mark.slow


async def ws_join(http: aiohttp.ClientSession, base: str, room: str, tok: str) -> tuple[Any, dict[str, Any]]:
    """Open the room protocol at `base` and join: (socket, first event)."""
    ws = await http.ws_connect(base.replace("http", "ws", 1) + f"/rooms/{room}/ws")
    await ws.send_json({"type": "join", "token": tok, "request_id": "j"})
    while True:  # the reply to the join (events of the room may come first, as a participant leaves)
        msg = await ws.receive(timeout=10)
        event = json.loads(msg.data)
        if event.get("request_id") == "j" or event["type"] in ("joined", "redirect", "error"):
            return ws, event


async def join_following(http: aiohttp.ClientSession, base: str, room: str, tok: str) -> tuple[Any, dict[str, Any], str]:
    """Join at `base`, following one redirect like the demo client: (socket, joined event, owner URL)."""
    ws, first = await ws_join(http, base, room, tok)
    if first["type"] == "redirect":
        await ws.close()
        base = first["node_url"]
        ws, first = await ws_join(http, base, room, tok)
    assert first["type"] == "joined", first
    return ws, first, base


async def next_event(ws: Any, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            event = json.loads(msg.data)
            if event["type"] == kind:
                return dict(event)


async def test_cluster_lists_nodes_and_load(cluster: Cluster) -> None:
    a, b = await cluster.start(2)
    async with aiohttp.ClientSession() as http:
        async with http.get(a.url + "/v1/cluster") as r:
            assert r.status == 401  # admin only
        async with http.get(b.url + "/v1/cluster", headers=admin()) as r:
            assert r.status == 200
            body = await r.json()
    assert body["enabled"] is True and body["node"] == "n2"
    nodes = {n["id"]: n for n in body["nodes"]}
    assert set(nodes) == {"n1", "n2"}
    assert nodes["n1"]["url"] == a.url and nodes["n1"]["media_addresses"] == ["127.0.0.2"]
    assert all(n["state"] == "serving" for n in nodes.values())
    assert set(nodes["n1"]["load"]) == {"cpu", "rooms", "participants", "forwarded_packets"}
    # Metrics say which node they come from.
    async with aiohttp.ClientSession() as http, http.get(a.url + "/metrics", headers=admin()) as r:
        assert 'mediasrv_node_info{node_id="n1",state="serving"} 1.0' in await r.text()


async def test_racing_first_joins_agree_on_one_owner(cluster: Cluster) -> None:
    """Two nodes asked at the same moment for the first join of a room: one owner, the other redirects."""
    a, b = await cluster.start(2)
    owners: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:
        for i in range(8):
            room = f"race{i}"
            (wa, ea), (wb, eb) = await asyncio.gather(
                ws_join(http, a.url, room, token("dr-a", "clinician", room)),
                ws_join(http, b.url, room, token("dr-b", "clinician", room)))
            kinds = sorted([ea["type"], eb["type"]])
            assert kinds == ["joined", "redirect"], (ea, eb)
            owner = a if ea["type"] == "joined" else b
            redirect = eb if ea["type"] == "joined" else ea
            assert redirect["node_url"] == owner.url
            assert redirect["url"] == owner.url.replace("http", "ws", 1) + f"/rooms/{room}/ws"
            redirected = wb if ea["type"] == "joined" else wa
            await redirected.receive(timeout=5)
            assert redirected.close_code == 4307
            owners[room] = owner.name
            await wa.close()
            await wb.close()
    r = aioredis.from_url(cluster.redis.url, decode_responses=True)
    try:
        # Each room's lease names the node that served it (released once the emptied room closed,
        # at most a heartbeat later, so only compare those still held).
        for room, name in owners.items():
            held = await r.get(f"mediasrv:room-owner:{room}")
            assert held in (None, name)
    finally:
        await r.aclose()


async def test_whip_and_whep_at_a_non_owner_are_redirected_with_307(cluster: Cluster) -> None:
    a, b = await cluster.start(2)
    async with aiohttp.ClientSession() as http:
        ws, _, owner_url = await join_following(http, a.url, "visit1", token("dr", "clinician", "visit1"))
        other = b if owner_url == a.url else a
        hdrs = {"Authorization": "Bearer " + token("cam", "clinician", "visit1"),
                "Content-Type": "application/sdp"}
        async with http.post(other.url + "/whip/visit1", data="v=0\r\n", headers=hdrs,
                             allow_redirects=False) as r:
            assert r.status == 307
            assert r.headers["Location"] == owner_url + "/whip/visit1"
            assert (await r.json())["error"]["code"] == "room_on_other_node"
        async with http.post(other.url + "/whep/visit1/dr?x=1", data="v=0\r\n", headers=hdrs,
                             allow_redirects=False) as r:
            assert r.status == 307
            assert r.headers["Location"] == owner_url + "/whep/visit1/dr?x=1"
        # The owner itself serves it (here: refuses the bogus offer, not a redirect).
        async with http.post(owner_url + "/whip/visit1", data="v=0\r\n", headers=hdrs,
                             allow_redirects=False) as r:
            assert r.status == 400
        await ws.close()


async def test_control_api_on_any_node_reaches_the_owner(cluster: Cluster) -> None:
    """Create, admit and close through the node that does not serve the room."""
    a, b = await cluster.start(2)
    async with aiohttp.ClientSession() as http:
        async with http.post(a.url + "/v1/rooms", headers=admin(),
                             json={"name": "clinic", "waiting_room": True}) as r:
            assert r.status == 201, await r.text()
            visit = (await r.json())["visit_id"]
        patient, joined, owner_url = await join_following(
            http, b.url, "clinic", token("pat", "patient", "clinic"))
        assert joined["admitted"] is False
        other = b if owner_url == a.url else a
        async with http.get(other.url + "/v1/rooms/clinic", headers=admin()) as r:
            assert r.status == 200
            body = await r.json()
            assert body["visit_id"] == visit and body["participants"][0]["identity"] == "pat"
        async with http.post(other.url + "/v1/rooms/clinic/participants/pat/admit", headers=admin()) as r:
            assert r.status == 204
        await next_event(patient, "admitted")
        async with http.post(other.url + "/v1/rooms/clinic/participants/nobody/admit", headers=admin()) as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "participant_not_found"
        async with http.delete(other.url + "/v1/rooms/clinic", headers=admin()) as r:
            assert r.status == 204
        closed = await next_event(patient, "room_closed")
        assert closed["reason"] == "closed_by_admin"
        async with http.get(other.url + "/v1/rooms/clinic", headers=admin()) as r:
            assert r.status == 404
        await patient.close()


async def test_single_node_has_no_cluster(tmp_path: Any) -> None:
    """Without redis_url: /readyz is 200, /v1/cluster says so, joins are served here."""
    from tests.conftest import start_server

    srv = await start_server(tmp_path / "data")
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(srv.url + "/readyz") as r:
                assert r.status == 200
            hdr = {"Authorization": "Bearer " + srv.token("ops", "admin")}
            async with http.get(srv.url + "/v1/cluster", headers=hdr) as r:
                assert (await r.json())["enabled"] is False
    finally:
        await srv.runner.cleanup()


async def test_participants_learn_of_nodes_that_start_die_or_drain(cluster: Cluster) -> None:
    """A client that joined a lone node hears of the node that starts later (where it can rejoin if
    its own node dies), and of one that stops serving."""
    (a,) = await cluster.start(1)
    async with aiohttp.ClientSession() as http:
        ws, joined, _ = await join_following(http, a.url, "early", token("dr", "clinician", "early"))
        assert joined["nodes"] == [a.url]
        (b,) = await cluster.start(1)
        event = await next_event(ws, "nodes", timeout=20)
        assert sorted(event["nodes"]) == sorted([a.url, b.url])
        b.proc.kill()
        event = await next_event(ws, "nodes", timeout=20)  # once its registry entry expired
        assert event["nodes"] == [a.url]
        await ws.close()
