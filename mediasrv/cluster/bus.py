"""Commands between nodes over Redis pub/sub: a node listens on its own command channel and on its own
reply channel; a request carries an id the owner's reply echoes, and waits for it with a timeout.

Every command and reply is signed: an HMAC-SHA256 with a key derived from the API secret (HKDF, its
own label), over the message with its kind, sender, target node, time and a random nonce. A node
runs only commands addressed to it, signed with the cluster's key, at most `MAX_AGE_S` old (or
ahead) and not seen before; anything else is dropped, counted by reason and logged without its
content. Redis still sees every command and the visit state in clear: it must stay private."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.asyncio import Redis

from mediasrv import clock

log = logging.getLogger(__name__)
COMMANDS = "mediasrv:commands:"
REPLIES = "mediasrv:replies:"
KEY_INFO = b"mediasrv cluster command signing v1"
# How far a message's time may be from the receiver's clock (the nodes' clocks agree, NTP); nonces
# are remembered this long past their time, so a copy is refused until its time is out of range.
MAX_AGE_S = 30.0
# A message stamped more than this before the node started is a copy: nothing of this process was
# listening when it was sent (this much apart for the clocks' difference). Without it a restart
# would forget the nonces and let a copy of a command from the 30 s before it run again.
START_SKEW_S = 1.0
REJECT_REASONS = ("unsigned", "bad_signature", "malformed", "wrong_node", "expired", "replayed")
LOG_EVERY_S = 10.0  # at most one log line per reason this often (a flood must not flood the log)

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class NodeUnreachable(Exception):
    """No node listens on the owner's command channel (it died, or is not yet subscribed)."""


def signing_key(api_secret: str) -> bytes:
    """The commands' HMAC key: derived from the API secret for this use only."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_INFO).derive(api_secret.encode())


def seal(key: bytes, kind: str, sender: str, to: str, body: dict[str, Any]) -> str:
    """The wire form of a signed message: {"m": <the message as JSON text>, "sig": <hex HMAC>}."""
    message = json.dumps({**body, "kind": kind, "from": sender, "to": to, "ts": clock.wall(),
                          "nonce": secrets.token_hex(16)}, separators=(",", ":"))
    return json.dumps({"m": message, "sig": hmac.new(key, message.encode(), hashlib.sha256).hexdigest()})


class Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CommandBus:
    def __init__(self, redis: Redis, node_id: str, *, secret: str) -> None:
        self.redis = redis
        self.node_id = node_id
        self.handler: Handler | None = None
        self._key = signing_key(secret)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._seen: dict[str, float] = {}  # nonce -> until when it is remembered (wall time)
        self._not_before = clock.wall() - START_SKEW_S
        self.rejected: Counter[str] = Counter({reason: 0 for reason in REJECT_REASONS})
        self._logged: dict[str, float] = {}  # reason -> when last logged (monotonic)

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
            body = seal(self._key, "command", self.node_id, node_id, {"id": rid, "op": op, "args": args})
            if await self.redis.publish(COMMANDS + node_id, body) == 0:
                raise NodeUnreachable(node_id)
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(rid, None)

    # --- receiving ----------------------------------------------------------------------------------
    def open(self, raw: Any, kind: str) -> dict[str, Any]:
        """The message in `raw` if it is a `kind` for this node, signed, fresh and new; else Rejected."""
        try:
            wire = json.loads(raw)
        except (TypeError, ValueError):
            raise Rejected("unsigned") from None
        if not isinstance(wire, dict) or not isinstance(wire.get("m"), str) or not isinstance(wire.get("sig"), str):
            raise Rejected("unsigned")
        expected = hmac.new(self._key, wire["m"].encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, wire["sig"]):
            raise Rejected("bad_signature")
        try:
            data = json.loads(wire["m"])
        except ValueError:
            raise Rejected("malformed") from None
        if not isinstance(data, dict):
            raise Rejected("malformed")
        ts, nonce = data.get("ts"), data.get("nonce")
        if (not isinstance(ts, (int, float)) or isinstance(ts, bool) or not isinstance(nonce, str)
                or not isinstance(data.get("from"), str)):
            raise Rejected("malformed")
        if data.get("kind") != kind or data.get("to") != self.node_id:
            raise Rejected("wrong_node")
        now = clock.wall()
        if not abs(now - ts) <= MAX_AGE_S:  # also NaN
            raise Rejected("expired")
        if nonce in self._seen or ts < self._not_before:
            raise Rejected("replayed")
        if len(self._seen) > 1000:
            self._seen = {n: until for n, until in self._seen.items() if until > now}
        self._seen[nonce] = ts + 2 * MAX_AGE_S
        return data

    def _refuse(self, reason: str, channel_kind: str) -> None:
        self.rejected[reason] += 1
        now = time.monotonic()
        if now - self._logged.get(reason, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[reason] = now
            # Nothing of the message itself: it may carry identities.
            log.warning("cluster: a %s on this node's channel was refused (%s); %d refused for this "
                        "reason so far", channel_kind, reason, self.rejected[reason])

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
            channel = msg["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            kind = "reply" if channel == REPLIES + self.node_id else "command"
            try:
                data = self.open(msg["data"], kind)
            except Rejected as exc:
                self._refuse(exc.reason, kind)
                continue
            if kind == "reply":
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
        sender = str(data["from"])
        await self.redis.publish(REPLIES + sender,
                                 seal(self._key, "reply", self.node_id, sender, {"id": data.get("id"), "result": result}))
