"""Control commands for a room served by another node: recording start/stop answered by the owner,
and clear errors when the owner cannot answer (504 while it is stopped, 503 when nobody listens)."""

from __future__ import annotations

import signal

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.cluster.conftest import Cluster, admin, token
from tests.cluster.test_placement import join_following

pytestmark = pytest.mark.slow


async def test_recording_commands_reach_the_owner(cluster: Cluster) -> None:
    a, b = await cluster.start(2)
    async with aiohttp.ClientSession() as http:
        async with http.post(a.url + "/v1/rooms", headers=admin(),
                             json={"name": "rec", "recording_allowed": True}) as r:
            assert r.status == 201
        ws, _, owner_url = await join_following(http, a.url, "rec", token("pat", "patient", "rec"))
        other = b if owner_url == a.url else a
        # The patient has not consented: the owner refuses, and the other node says the same (a
        # node without the room would answer 404 room_not_found).
        answers = []
        for node_url in (other.url, owner_url):
            async with http.post(node_url + "/v1/rooms/rec/recording", headers=admin()) as r:
                answers.append((r.status, (await r.json())["error"]["code"]))
        assert answers[0] == answers[1] == (409, "consent_missing"), answers
        async with http.delete(other.url + "/v1/rooms/rec/recording", headers=admin()) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "not_recording"
        await ws.close()


async def test_an_owner_that_does_not_answer_is_a_504_then_a_503(cluster: Cluster) -> None:
    # A long lease: the stopped owner stays listed (and its lease held) through the test.
    a, b = await cluster.start(2, cluster_command_timeout_s=0.5, cluster_lease_ttl_s=30)
    async with aiohttp.ClientSession() as http:
        ws, _, owner_url = await join_following(http, a.url, "stuck", token("dr", "clinician", "stuck"))
        owner = cluster.by_url(owner_url)
        other = b if owner is a else a
        owner.signal(signal.SIGSTOP)  # alive for Redis (subscribed), but answering nothing
        try:
            async with http.get(other.url + "/v1/rooms/stuck", headers=admin()) as r:
                assert r.status == 504, await r.text()
                assert (await r.json())["error"]["code"] == "owner_timeout"
            # Its command channel gone (as when it died before its lease expired): 503.
            rc = aioredis.from_url(cluster.redis.url, decode_responses=True)
            try:
                await rc.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            finally:
                await rc.aclose()
            async with http.get(other.url + "/v1/rooms/stuck", headers=admin()) as r:
                assert r.status == 503, await r.text()
                assert (await r.json())["error"]["code"] == "owner_unreachable"
                assert r.headers["Retry-After"] == "2"
        finally:
            owner.signal(signal.SIGCONT)
        await ws.close()
