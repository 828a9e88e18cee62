"""Commands between nodes over Redis pub/sub: a node listens on its own command channel and on its own
reply channel; a request carries an id the owner's reply echoes, and waits for it with a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

log = logging.getLogger(__name__)
COMMANDS = "mediasrv:commands:"
REPLIES = "mediasrv:replies:"

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class NodeUnreachable(Exception):
    """No node listens on the owner's command channel (it died, or is not yet subscribed)."""


class CommandBus:
    def __init__(self, redis: Redis, node_id: str) -> None:
        self.redis = redis
        self.node_id = node_id
        self.handler: Handler | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._pubsub.subscribe(COMMANDS + self.node_id, REPLIES + self.node_id)
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._running):
            task.cancel()
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()

    async def request(self, node_id: str, op: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Run `op` on node `node_id`: its answer, NodeUnreachable, or TimeoutError."""
        rid = secrets.token_hex(8)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            body = json.dumps({"id": rid, "from": self.node_id, "op": op, "args": args})
            if await self.redis.publish(COMMANDS + node_id, body) == 0:
                raise NodeUnreachable(node_id)
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(rid, None)

    async def _listen(self) -> None:
        while True:
            try:
                msg = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis gone for a moment: the client reconnects on the next call
                log.warning("cluster: command channel read failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            if msg is None or msg.get("type") != "message":
                continue
            try:
                data = json.loads(msg["data"])
            except (TypeError, ValueError):
                continue
            if not isinstance(data, dict):  # valid JSON but no message: ignored, the listener goes on
                continue
            channel = msg["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            if channel == REPLIES + self.node_id:
                rid, result = data.get("id"), data.get("result")
                fut = self._pending.get(rid) if isinstance(rid, str) else None
                if fut is not None and not fut.done():
                    fut.set_result(result if isinstance(result, dict) else {})
            else:
                task = asyncio.get_running_loop().create_task(self._serve(data))
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def _serve(self, data: dict[str, Any]) -> None:
        try:
            if self.handler is None:
                result: dict[str, Any] = {"status": 503, "code": "not_ready", "message": "node starting"}
            else:
                args = data.get("args")
                result = await self.handler(str(data.get("op")), args if isinstance(args, dict) else {})
        except Exception:
            log.exception("cluster: command %r failed", data.get("op"))
            result = {"status": 500, "code": "internal_error", "message": "the owner node failed"}
        await self.redis.publish(REPLIES + str(data.get("from")),
                                 json.dumps({"id": data.get("id"), "result": result}))
