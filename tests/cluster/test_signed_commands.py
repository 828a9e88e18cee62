"""Commands between nodes are signed: a command or reply published straight to Redis without the
cluster's key (unsigned, signed with another key, for another node, too old, or a replayed copy of a
real one) does nothing, and is counted by reason. With real nodes: a forged close leaves the visit
open, and the owner's /metrics counts it."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from mediasrv import clock
from mediasrv.cluster.bus import COMMANDS, REPLIES, CommandBus, seal, signing_key
from tests.cluster.conftest import Cluster, RedisServer, admin, token
from tests.cluster.test_placement import join_following

pytestmark = pytest.mark.slow
SECRET = "signed-bus-test-secret"


def signed_at(key: bytes, message: dict[str, Any]) -> str:
    text = json.dumps(message)
    return json.dumps({"m": text, "sig": hmac.new(key, text.encode(), hashlib.sha256).hexdigest()})


async def test_only_signed_fresh_new_commands_for_this_node_run(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    owner_redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    asker_redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    spy = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    owner = CommandBus(owner_redis, "owner", secret=SECRET)
    asker = CommandBus(asker_redis, "asker", secret=SECRET)
    ran: list[dict[str, Any]] = []

    async def handler(op: str, args: dict[str, Any]) -> dict[str, Any]:
        ran.append({"op": op, **args})
        return {"status": 204}

    owner.handler = handler
    await owner.start()
    await asker.start()
    sniff = spy.pubsub(ignore_subscribe_messages=True)
    await sniff.subscribe(COMMANDS + "owner")
    try:
        # A real command runs (and is seen on the channel by anyone subscribed to Redis).
        assert await asker.request("owner", "close", {"room": "r1"}, timeout=5) == {"status": 204}
        captured = None
        while captured is None:
            msg = await sniff.get_message(timeout=5)
            captured = msg["data"] if msg else None
        key, wrong = signing_key(SECRET), signing_key("another-secret")
        now = clock.wall()
        body = {"id": "x", "op": "close", "args": {"room": "r2"}, "kind": "command", "from": "asker",
                "to": "owner", "nonce": "n1"}
        forged = {
            "unsigned": json.dumps({"id": "x", "from": "asker", "op": "close", "args": {"room": "r2"}}),
            "bad_signature": seal(wrong, "command", "asker", "owner", {"id": "x", "op": "close",
                                                                       "args": {"room": "r2"}}),
            "wrong_node": seal(key, "command", "asker", "elsewhere", {"id": "x", "op": "close",
                                                                      "args": {"room": "r2"}}),
            "expired": signed_at(key, {**body, "ts": now - 120}),
            "malformed": signed_at(key, {**body, "ts": "soon"}),
            "replayed": captured,
        }
        for wire in forged.values():
            await asker_redis.publish(COMMANDS + "owner", wire)
        # A forged reply does not answer a pending request either.
        await owner_redis.publish(REPLIES + "asker", json.dumps({"id": "x", "result": {"status": 500}}))
        assert await asker.request("owner", "get", {"room": "r3"}, timeout=5) == {"status": 204}
        # The bus handles messages in order: once the last request ran, the forged ones were refused.
        assert ran == [{"op": "close", "room": "r1"}, {"op": "get", "room": "r3"}]
        for reason in forged:
            assert owner.rejected[reason] == 1, (reason, owner.rejected)
        assert asker.rejected["unsigned"] == 1

        # The owner restarts (a new process: no nonces remembered) a few seconds later: the copy,
        # still within 30 s of its time, is refused all the same, and real commands run.
        await owner.stop()
        later = clock.wall() + 3
        monkeypatch.setattr(clock, "wall", lambda: later)
        owner = CommandBus(owner_redis, "owner", secret=SECRET)
        owner.handler = handler
        await owner.start()
        await asker_redis.publish(COMMANDS + "owner", captured)
        assert await asker.request("owner", "get", {"room": "r4"}, timeout=5) == {"status": 204}
        assert ran[2:] == [{"op": "get", "room": "r4"}]
        assert owner.rejected["replayed"] == 1, owner.rejected
    finally:
        await sniff.aclose()
        await asker.stop()
        await owner.stop()
        for r in (owner_redis, asker_redis, spy):
            await r.aclose()


async def test_a_forged_close_published_to_redis_leaves_the_visit_open(cluster: Cluster) -> None:
    a, b = await cluster.start(2)
    r = aioredis.from_url(cluster.redis.url, decode_responses=True)
    try:
        async with aiohttp.ClientSession() as http:
            ws, _, owner_url = await join_following(http, a.url, "forge", token("dr", "clinician", "forge"))
            owner = cluster.by_url(owner_url)
            # What a command looked like before signing, published by anyone who reaches Redis.
            by = {"sub": "mallory", "role": "admin", "room": None, "name": None, "exp": 0}
            for op in ("close", "remove"):
                listeners = await r.publish(COMMANDS + owner.name, json.dumps(
                    {"id": op, "from": "nobody", "op": op, "args": {"room": "forge", "identity": "dr", "by": by}}))
                assert listeners == 1
            # A real command through the other node is answered (and so ran after the forged ones).
            other = b if owner is a else a
            async with http.get(other.url + "/v1/rooms/forge", headers=admin()) as resp:
                assert resp.status == 200
                assert [p["identity"] for p in (await resp.json())["participants"]] == ["dr"]
            await ws.send_json({"type": "ping", "request_id": "p"})
            while (event := json.loads((await ws.receive(timeout=10)).data))["type"] != "pong":
                assert event["type"] not in ("room_closed", "removed"), event
            async with http.get(owner.url + "/metrics", headers=admin()) as resp:
                text = await resp.text()
            assert 'mediasrv_cluster_commands_rejected_total{reason="unsigned"} 2.0' in text, text[-2000:]
            await ws.close()
    finally:
        await r.aclose()
