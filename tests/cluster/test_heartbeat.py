"""The heartbeat and the registry against a real redis-server: a failed heartbeat is retried within
the period (not a full period later), and listing the nodes reads the registry's set of node ids
(expired members dropped) instead of scanning the keyspace; stop() ends the heartbeat loop even when
a Redis call loses the cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from mediasrv.cluster import Cluster, registry
from mediasrv.cluster.registry import NODES, NodeInfo
from mediasrv.config import Settings
from mediasrv.rooms import RoomManager
from tests.cluster.conftest import RedisServer

pytestmark = pytest.mark.slow


async def test_nodes_are_listed_from_the_registry_set_without_scanning(redis_server: RedisServer) -> None:
    r = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        await r.set("mediasrv:node:stray", "{}")  # an entry no node published: not listed
        await registry.publish(r, NodeInfo(id="brief", url="http://a", media_addresses=[]), 1500)
        await registry.publish(r, NodeInfo(id="lasting", url="http://b", media_addresses=["10.0.0.2"]), 60_000)
        await r.execute_command("CONFIG", "RESETSTAT")
        assert [n.id for n in await registry.nodes(r)] == ["brief", "lasting"]
        deadline = time.monotonic() + 30
        while await r.exists("mediasrv:node:brief"):  # its entry expires
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        (only,) = await registry.nodes(r)
        assert only.id == "lasting" and only.media_addresses == ["10.0.0.2"]
        assert await r.zrange(NODES, 0, -1) == ["lasting"]  # the expired member was dropped
        await registry.remove(r, "lasting")
        assert await registry.nodes(r) == [] and await r.exists(NODES) == 0
        stats = await r.info("commandstats")
        assert not any(name in stats for name in ("cmdstat_scan", "cmdstat_keys")), stats
    finally:
        await r.aclose()


async def test_a_failed_heartbeat_is_retried_within_the_period(
        redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=redis_server.url, node_id="hb", api_secret="s" * 40,
                        cluster_lease_ttl_s=30)
    period = settings.cluster_lease_ttl_s / 3
    cluster = Cluster(settings, RoomManager(settings, audit=None))
    waits: list[float] = []

    async def pause(delay: float) -> None:  # the loop's waits, recorded and shortened
        waits.append(delay)
        await asyncio.sleep(0.01)

    cluster._pause = pause
    real_publish = registry.publish
    beats = {"tried": 0, "ok": 0}

    async def flaky_publish(*args: Any) -> None:
        beats["tried"] += 1
        if beats["tried"] in (2, 3):  # the loop's first two heartbeats fail
            raise RedisConnectionError("connection reset")
        await real_publish(*args)
        beats["ok"] += 1

    monkeypatch.setattr(registry, "publish", flaky_publish)
    await cluster.start()
    try:
        deadline = time.monotonic() + 30
        while beats["ok"] < 3:
            assert time.monotonic() < deadline, beats
            await asyncio.sleep(0.01)
        # A period, then retries an eighth and a quarter of a period later, then a period again.
        assert waits[:4] == [period, period / 8, period / 4, period], waits
        assert cluster.heartbeat_failures == 2
        assert [n.id for n in await cluster.nodes()] == ["hb"]
        metrics = {m.name: m for m in cluster.collect()}
        assert metrics["mediasrv_cluster_heartbeat_failures"].samples[0].value == 2
    finally:
        await cluster.stop()
    # Retries stay short only while they are few: a longer outage retries once a period.
    assert [Cluster.heartbeat_delay(period, n) for n in range(6)] == [
        period, period / 8, period / 4, period / 2, period, period]


async def test_stop_ends_the_heartbeat_even_if_a_redis_call_loses_the_cancellation(
        redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Seen in CI: stop() cancelled the heartbeat task inside a Redis call that swallowed the
    # cancellation, and the loop (10 ms pauses in that test) went on until the test timed out.
    settings = Settings(data_dir=tmp_path, redis_url=redis_server.url, node_id="lost", api_secret="s" * 40,
                        cluster_lease_ttl_s=3)
    cluster = Cluster(settings, RoomManager(settings, audit=None))
    pauses_after_stop = []

    async def pause(delay: float) -> None:
        if cluster._stopping:
            pauses_after_stop.append(True)
            if len(pauses_after_stop) > 3:  # fail, rather than loop until the test times out
                raise RuntimeError("the heartbeat loop runs on after stop()")
        await asyncio.sleep(0.01)

    cluster._pause = pause
    real_nodes = registry.nodes
    in_call = asyncio.Event()
    swallowed = []
    calls_after_stop = []

    async def swallowing_nodes(*args: Any) -> list[NodeInfo]:
        nodes = await real_nodes(*args)
        in_call.set()
        if cluster._stopping:
            calls_after_stop.append(True)
        if swallowed:
            return nodes
        with contextlib.suppress(asyncio.CancelledError):  # what a client library with that bug does
            await asyncio.sleep(0.05)
            return nodes
        swallowed.append(True)
        return nodes

    monkeypatch.setattr(registry, "nodes", swallowing_nodes)
    await cluster.start()
    in_call.clear()
    await asyncio.wait_for(in_call.wait(), 5)
    await asyncio.wait_for(cluster.stop(), 5)  # (on its timeout, wait_for cancels stop() again)
    assert swallowed, "the cancellation came inside the call"
    assert cluster._task is not None and cluster._task.done()
    # The heartbeat that lost the cancellation was the last one: no other began after it.
    assert len(calls_after_stop) <= 1, len(calls_after_stop)
