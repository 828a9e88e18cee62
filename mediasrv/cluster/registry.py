"""The node registry: each node's entry (addresses, state, load) under a key that expires unless the
node refreshes it, so a dead node drops out of the cluster by itself. The ids of the nodes are kept
in one sorted set, scored by when their entry expires (Redis's clock), so listing the nodes reads
that set (dropping the members whose time has passed) and their entries: no scan of the keyspace."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

PREFIX = "mediasrv:node:"
NODES = "mediasrv:nodes"
SERVING = "serving"
DRAINING = "draining"

# KEYS[1] entry, KEYS[2] node set; ARGV: entry JSON, ttl_ms, node id.
_PUBLISH = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
return 1
"""

# KEYS[1] node set; ARGV[1] entry key prefix. The live entries, after dropping expired members.
_NODES = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local raw = redis.call('GET', ARGV[1] .. id)
  if raw then out[#out + 1] = raw end
end
return out
"""


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
    await redis.register_script(_PUBLISH)(keys=[PREFIX + info.id, NODES],
                                          args=[json.dumps(asdict(info)), ttl_ms, info.id])


async def remove(redis: Redis, node_id: str) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(PREFIX + node_id)
        pipe.zrem(NODES, node_id)
        await pipe.execute()


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
    found = [_parse(raw) for raw in await redis.register_script(_NODES)(keys=[NODES], args=[PREFIX])]
    return sorted((n for n in found if n is not None), key=lambda n: n.id)
