"""The command bus keeps serving after messages it cannot use arrive on its channels."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from mediasrv.cluster.bus import COMMANDS, REPLIES, CommandBus
from tests.cluster.conftest import RedisServer

pytestmark = pytest.mark.slow


async def test_listener_survives_json_that_is_not_an_object(redis_server: RedisServer) -> None:
    owner_redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    asker_redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    owner = CommandBus(owner_redis, "owner", secret="bus-test-secret")
    asker = CommandBus(asker_redis, "asker", secret="bus-test-secret")

    async def handler(op: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"status": 200, "body": {"op": op, "args": args}}

    owner.handler = handler
    await owner.start()
    await asker.start()
    try:
        # Valid JSON that is not an object, on both kinds of channel (and odd field types).
        for junk in ([1], "x", 3, None, {"id": [], "result": 1}, {"op": "get", "args": [1], "from": "asker"}):
            await asker_redis.publish(COMMANDS + "owner", json.dumps(junk))
            await owner_redis.publish(REPLIES + "asker", json.dumps(junk))
        await asyncio.sleep(0.3)
        reply = await asker.request("owner", "get", {"room": "r"}, timeout=5)
        assert reply == {"status": 200, "body": {"op": "get", "args": {"room": "r"}}}
    finally:
        await asker.stop()
        await owner.stop()
        await owner_redis.aclose()
        await asker_redis.aclose()
