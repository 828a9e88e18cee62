"""What a visit must keep when its node dies, in Redis: its id, options and start (hence its
max-duration deadline), whether it was configured, who was admitted from the waiting room, and
whether a recording was running (so a new owner marks it interrupted). Recording consent is not
carried over: it was given for the recording that was interrupted, a new one asks again.

Writes name the node that makes them: a node writes (or forgets) a visit's state only while the room's
placement lease is its own or free, checked in the same Lua script as the write, so a node that lost
its lease (stalled past it while another node took the room over) cannot overwrite the new owner's."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from mediasrv.cluster.placement import PREFIX as LEASE

PREFIX = "mediasrv:visit:"
ADMITTED = ":admitted"

# KEYS: visit hash, admitted set, lease. ARGV: writer ('' = any), ttl_s, visit_id, created_at,
# options, configured, recording, then the admitted identities. 0 if another node holds the lease.
_SAVE = """
local holder = redis.call('GET', KEYS[3])
if ARGV[1] ~= '' and holder and holder ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'visit_id', ARGV[3], 'created_at', ARGV[4], 'options', ARGV[5],
           'configured', ARGV[6], 'recording', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[2])
for i = 8, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""

# KEYS: admitted set, lease. ARGV: writer, ttl_s, identity.
_ADMITTED = """
local holder = redis.call('GET', KEYS[2])
if ARGV[1] ~= '' and holder and holder ~= ARGV[1] then return 0 end
redis.call('SADD', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: visit hash, admitted set, lease. ARGV: the node ending the visit ('' = any), '1' to release
# its lease with the state (the name is free). 0, and nothing deleted, if another node holds it.
_FORGET = """
local holder = redis.call('GET', KEYS[3])
if ARGV[1] ~= '' and holder and holder ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
if holder and ARGV[2] == '1' then redis.call('DEL', KEYS[3]) end
return 1
"""


@dataclass
class VisitState:
    visit_id: str
    created_at: float
    options: dict[str, Any]
    configured: bool
    recording: str = ""  # "" | "running" | "interrupted"
    admitted: set[str] = field(default_factory=set)


class VisitStore:
    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s  # a visit's state outlives its last write this long
        self._save = redis.register_script(_SAVE)
        self._admitted = redis.register_script(_ADMITTED)
        self._forget = redis.register_script(_FORGET)

    async def save(self, room: str, state: VisitState, owner: str | None = None) -> bool:
        """Write the visit's state; with `owner`, only while the room's lease is that node's or free
        (False, and nothing written, when another node holds it)."""
        key = PREFIX + room
        args: list[str | int] = [owner or "", self.ttl_s, state.visit_id, repr(state.created_at),
                                 json.dumps(state.options), int(state.configured), state.recording,
                                 *sorted(state.admitted)]
        return bool(await self._save(keys=[key, key + ADMITTED, LEASE + room], args=args))

    async def admitted(self, room: str, identity: str, owner: str | None = None) -> bool:
        return bool(await self._admitted(keys=[PREFIX + room + ADMITTED, LEASE + room],
                                         args=[owner or "", self.ttl_s, identity]))

    async def load(self, room: str) -> VisitState | None:
        raw = await self.redis.hgetall(PREFIX + room)
        if not raw:
            return None
        data = {_text(k): _text(v) for k, v in raw.items()}
        if "visit_id" not in data:
            return None
        admitted = {_text(m) for m in await self.redis.smembers(PREFIX + room + ADMITTED)}
        return VisitState(
            visit_id=data["visit_id"], created_at=float(data.get("created_at", "0")),
            options=json.loads(data.get("options") or "{}"), configured=data.get("configured") == "1",
            recording=data.get("recording", ""), admitted=admitted)

    async def forget(self, room: str, owner: str | None = None, release: bool = False) -> bool:
        """The visit ended (closed, or its time was up): a later join starts a new one. With `owner`:
        only while the room's lease is that node's or free; `release` gives the lease up with it."""
        return bool(await self._forget(keys=[PREFIX + room, PREFIX + room + ADMITTED, LEASE + room],
                                       args=[owner or "", "1" if release else "0"]))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
