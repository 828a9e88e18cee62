"""A visit an admin closed stays closed in a cluster: its state in Redis does not bring it back, also
when a join comes before the owner's next heartbeat (or a heartbeat saved it once more)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import redis.asyncio as aioredis

from mediasrv.cluster.visit_state import VisitState, VisitStore
from tests.cluster.conftest import Cluster, admin, token
from tests.cluster.test_placement import join_following

pytestmark = pytest.mark.slow


async def test_join_right_after_a_close_starts_a_new_visit(cluster: Cluster) -> None:
    # Heartbeats 10 s apart: none runs between the steps below.
    a, _ = await cluster.start(2, cluster_lease_ttl_s=30)
    r = aioredis.from_url(cluster.redis.url, decode_responses=True)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(a.url + "/v1/rooms", headers=admin(), json={"name": "gone"}) as resp:
                assert resp.status == 201, await resp.text()
                room = await resp.json()
            # The visit's state as a heartbeat before the close left it.
            state = VisitState(visit_id=room["visit_id"], created_at=room["created_at"],
                               options=room["options"], configured=True)
            await VisitStore(r, 600).save("gone", state)
            async with http.delete(a.url + "/v1/rooms/gone", headers=admin()) as resp:
                assert resp.status == 204
            await VisitStore(r, 600).save("gone", state)  # a heartbeat racing the close saves it again
            # A token issued within about a millisecond of the close counts as from before it (token
            # times are rounded to the millisecond): on a quiet machine this test got there first.
            await asyncio.sleep(0.01)
            ws, _, owner_url = await join_following(http, a.url, "gone", token("dr", "clinician", "gone"))
            async with http.get(owner_url + "/v1/rooms/gone", headers=admin()) as resp:
                visit = (await resp.json())["visit_id"]
            assert visit != room["visit_id"]  # a new visit, not the closed one brought back
            await ws.close()
    finally:
        await r.aclose()
