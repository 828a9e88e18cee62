"""The node registry: each node's entry (addresses, state, load) under a key that expires unless the
node refreshes it, so a dead node drops out of the cluster by itself."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

PREFIX = "mediasrv:node:"
SERVING = "serving"
DRAINING = "draining"


@dataclass
class NodeInfo:
    id: str
    url: str  # the node's HTTP (signaling and control API) base URL
    media_addresses: list[str]
    state: str = SERVING
    started_at: float = 0.0
    updated_at: float = 0.0
    load: dict[str, float] = field(default_factory=dict)  # cpu, rooms, participants, forwarded_packets

    def score(self) -> float:
        """Placement's measure of how busy the node is: participants first, then rooms, then CPU."""
        return (self.load.get("participants", 0.0) + 2 * self.load.get("rooms", 0.0)
                + self.load.get("cpu", 0.0) / 10)


async def publish(redis: Redis, info: NodeInfo, ttl_ms: int) -> None:
    await redis.set(PREFIX + info.id, json.dumps(asdict(info)), px=ttl_ms)


async def remove(redis: Redis, node_id: str) -> None:
    await redis.delete(PREFIX + node_id)


def _parse(raw: Any) -> NodeInfo | None:
    try:
        data = json.loads(raw)
        return NodeInfo(**data)
    except (TypeError, ValueError):
        return None


async def get(redis: Redis, node_id: str) -> NodeInfo | None:
    raw = await redis.get(PREFIX + node_id)
    return _parse(raw) if raw is not None else None


async def nodes(redis: Redis) -> list[NodeInfo]:
    keys = [k async for k in redis.scan_iter(match=PREFIX + "*", count=200)]
    if not keys:
        return []
    found = [_parse(raw) for raw in await redis.mget(keys) if raw is not None]
    return sorted((n for n in found if n is not None), key=lambda n: n.id)
