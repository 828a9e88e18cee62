"""Room placement: a room belongs to the node named by its lease key. The first join claims it for the
least-loaded serving node in one Lua script (so two nodes racing on a first join agree on one owner);
the owner renews the lease while it hosts the room, and a dead owner's lease expires by itself."""

from __future__ import annotations

from redis.asyncio import Redis

PREFIX = "mediasrv:room-owner:"
RECENT = "mediasrv:recent-placements:"

# KEYS[1] lease; ARGV: ttl_ms, recent_ms, then (node id, load score) pairs. The load of a candidate
# counts the rooms placed on it recently too, which its registry entry may not show yet.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner then return owner end
local best, best_score = nil, nil
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local score = tonumber(ARGV[i + 1]) + 2 * tonumber(redis.call('GET', ARGV[2] .. id) or '0')
  if best == nil or score < best_score then best, best_score = id, score end
end
if best == nil then return false end
redis.call('SET', KEYS[1], best, 'PX', ARGV[1])
redis.call('INCR', ARGV[2] .. best)
redis.call('PEXPIRE', ARGV[2] .. best, 3000)
return best
"""

# KEYS[1] lease; ARGV: node id, ttl_ms. Renew our own lease, take a lapsed one back; 0 if another
# node holds it now.
_RENEW = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not owner then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""

# KEYS[1] lease; ARGV[1] the owner it must still name.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Placement:
    def __init__(self, redis: Redis, ttl_ms: int) -> None:
        self.redis = redis
        self.ttl_ms = ttl_ms
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def owner(self, room: str) -> str | None:
        value = await self.redis.get(PREFIX + room)
        return str(value) if value is not None else None

    async def claim(self, room: str, candidates: list[tuple[str, float]]) -> str | None:
        """The room's owner: the one already holding it, else the least loaded of `candidates`."""
        args: list[str | int | float] = [self.ttl_ms, RECENT]
        for node_id, score in candidates:
            args += [node_id, score]
        owner = await self._claim(keys=[PREFIX + room], args=args)
        return str(owner) if owner else None

    async def renew(self, room: str, node_id: str) -> bool:
        return bool(await self._renew(keys=[PREFIX + room], args=[node_id, self.ttl_ms]))

    async def release(self, room: str, node_id: str) -> bool:
        """Give the room up (a dead or draining node's): the next join places it anew."""
        return bool(await self._release(keys=[PREFIX + room], args=[node_id]))
