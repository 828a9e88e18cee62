"""What a visit must keep when its node dies, in Redis: its id, options and start (hence its
max-duration deadline), whether it was configured, who was admitted from the waiting room, and
whether a recording was running (so a new owner marks it interrupted). Recording consent is not
carried over: it was given for the recording that was interrupted, a new one asks again."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

PREFIX = "mediasrv:visit:"
ADMITTED = ":admitted"


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

    async def save(self, room: str, state: VisitState) -> None:
        key = PREFIX + room
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={
                "visit_id": state.visit_id, "created_at": repr(state.created_at),
                "options": json.dumps(state.options), "configured": int(state.configured),
                "recording": state.recording,
            })
            pipe.expire(key, self.ttl_s)
            if state.admitted:
                pipe.sadd(key + ADMITTED, *sorted(state.admitted))
            pipe.expire(key + ADMITTED, self.ttl_s)
            await pipe.execute()

    async def admitted(self, room: str, identity: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(PREFIX + room + ADMITTED, identity)
            pipe.expire(PREFIX + room + ADMITTED, self.ttl_s)
            await pipe.execute()

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

    async def forget(self, room: str) -> None:
        """The visit ended (closed, or its time was up): a later join starts a new one."""
        await self.redis.delete(PREFIX + room, PREFIX + room + ADMITTED)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
