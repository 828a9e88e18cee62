"""The WebSocket room protocol at /rooms/{room}/ws (see docs/signaling.md).

Every message is a JSON object with a "type". Requests may carry "request_id", echoed in the reply.
Bad messages get an "error" event and the session goes on; binary frames close it with 1003, a
failed join with 4401/4403/4409/4410, a join that never comes with 4408. In a cluster, a join to a
room another node serves gets a `redirect` event with that node's URL and the close code 4307; when
no node takes new rooms, the join is closed with 4503. Messages over the
connection's rate get a `rate_limited` error and are not handled; a client that keeps flooding is
closed with 4429, and so is a join past its identity's session cap (reason `too_many_sessions`).
A joined client silent for `room_ws_ping_s` is pinged; one from which nothing (not even a pong) came
for its idle limit is closed with 4000 `connection_lost` and leaves as `disconnected`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from mediasrv.api import appkeys as keys
from mediasrv.api.connection_caps import CapExceeded, Lease
from mediasrv.api.http_common import QUERY_TOKEN, NonFiniteNumber, dumps, loads, query_token_allowed
from mediasrv.api.ratelimit import RATE_LIMITED, MessageRateLimit
from mediasrv.api.v1.cluster import owner_url
from mediasrv.auth import Identity, bearer_token, verify_token
from mediasrv.authz import require_moderator
from mediasrv.clock import wall
from mediasrv.cluster import MOVED
from mediasrv.errors import AuthError, MediasrvError
from mediasrv.media.turn_credentials import ice_servers
from mediasrv.rooms import Participant, Room, RoomError

log = logging.getLogger(__name__)
JOIN_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 256 * 1024
MAX_CHAT_CHARS = 4000
MAX_VIDEO_HEIGHT = 4320  # a set_max_resolution cap, in pixels
CLOSE_BY_STATUS = {401: 4401, 403: 4403, 404: 4404, 409: 4409, 410: 4410, 503: 4503}
# The room is served by another node: rejoin at the `redirect` event's URL with the same token.
CLOSE_REDIRECT = 4307
CLOSE_RATE_LIMITED = 4429
# A client closing its socket to join again at once (its media failed): the others see it leave
# as `disconnected`, not `left`.
CLOSE_RECONNECTING = 4100
# A close waits this long for the client's close frame (a client that is gone sends none), and a
# frame to the client (an event, a ping) this long to be taken: a socket that takes nothing for it
# has a dead network behind a full buffer, and must not hold up the room's events to the others.
CLOSE_WAIT_S = 3.0
# Events waiting for one client past which its socket counts as stalled (a room's events come at
# human pace; thousands waiting mean its network is gone).
OUTBOX_MAX = 1000
# The longest a close waits for the client to take the events queued before it.
FLUSH_MAX_S = 3 * CLOSE_WAIT_S
# Room sockets the server gave up on its own: `silent` (nothing from the client for its idle limit),
# `stalled` (a frame to it not taken within CLOSE_WAIT_S, or OUTBOX_MAX events waiting for it).
SOCKETS_DROPPED: Counter[str] = Counter()


class ProtocolError(MediasrvError):
    """A message the protocol cannot take (malformed, out of order, naming unknown tracks)."""


def _field(msg: dict[str, Any], name: str, typ: type, required: bool = True) -> Any:
    value = msg.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        raise ProtocolError("invalid_message", f"'{name}' must be a {typ.__name__}")
    return value


def _visible(p: Participant, status: dict[str, Any]) -> dict[str, Any]:
    """A recording status without the others' identities while p waits to be admitted."""
    return status if p.admitted else {**status, "waiting_for": [], "refused": []}


def _track_ids(msg: dict[str, Any]) -> list[int]:
    ids = _field(msg, "track_ids", list)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ProtocolError("invalid_message", "'track_ids' must be a list of integers")
    return ids


class RoomSession:
    def __init__(self, request: web.Request, ws: web.WebSocketResponse, room_name: str) -> None:
        self.request = request
        self.ws = ws
        self.room_name = room_name
        self.rooms = request.app[keys.ROOMS]
        self.settings = request.app[keys.SETTINGS]
        self.room: Room | None = None
        self.participant: Participant | None = None
        self.ident: Identity | None = None
        self.lease: Lease | None = None
        # Events wait here for the one task that writes them (`_write`), so whoever sends (another
        # participant's handler, a room broadcast) never waits on this client's network.
        self._outbox: deque[str] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._flushed = asyncio.Event()
        self._flushed.set()
        self._accepting = True  # False once closing, cut or failed: nothing more is queued
        self._cut = False  # given up by the server (stalled or silent): counted once
        # What the others are told when this session ends: "left" once either side closed it on
        # purpose (`leave`, a close frame, the server's close), "disconnected" while its socket
        # just went away (an outage, pings unanswered, a send stalled) or the client closed it saying it
        # will be back (CLOSE_RECONNECTING) or the server closed it on its own error (1011).
        self.left_reason = "disconnected"

    async def send(self, event: dict[str, Any]) -> None:
        """Queues an event for this client and returns at once; events go out in the order sent."""
        if self.ws.closed or not self._accepting:
            return
        if len(self._outbox) >= OUTBOX_MAX:
            self._stalled(f"has {OUTBOX_MAX} events waiting")
            return
        self._outbox.append(dumps(event))
        self._flushed.clear()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name=f"room-ws-writer {self.room_name}")

    async def _write(self) -> None:
        try:
            while self._outbox:
                try:
                    async with asyncio.timeout(CLOSE_WAIT_S):
                        await self.ws.send_str(self._outbox[0])
                except TimeoutError:
                    self._stalled(f"took no event for {CLOSE_WAIT_S:g} s")
                    return
                except Exception:  # the socket is closing or gone: nothing more gets through
                    log.debug("room %s: writing an event failed", self.room_name, exc_info=True)
                    self._accepting = False
                    return
                if self._outbox:  # (emptied meanwhile if the socket was given up)
                    self._outbox.popleft()
        finally:
            self._outbox.clear()
            self._flushed.set()

    def _stalled(self, why: str) -> None:
        """Cuts a socket that takes nothing (counted once, whichever frame found it)."""
        self._accepting = False
        if self._cut:
            return
        self._cut = True
        log.info("room %s: dropping a socket that %s", self.room_name, why)
        SOCKETS_DROPPED["stalled"] += 1
        self._outbox.clear()
        self.abort()

    async def flush(self) -> None:
        """Takes no more events and waits until the queued ones are written (each frame has
        CLOSE_WAIT_S, see `_write`); a client still taking them after FLUSH_MAX_S has the rest dropped."""
        self._accepting = False
        try:
            async with asyncio.timeout(FLUSH_MAX_S):
                await self._flushed.wait()
        except TimeoutError:
            self.stop_writing()

    def stop_writing(self) -> None:
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()

    def abort(self) -> None:
        """Cuts the connection without a close handshake (its receive loop then ends, and the
        participant leaves as `disconnected`)."""
        if (transport := self.request.transport) is not None:
            transport.abort()

    async def give_up(self) -> None:
        """Ends the session of a client from which nothing came for its idle limit: the others are
        told at once, then the socket is closed without waiting long on a peer that is gone."""
        SOCKETS_DROPPED["silent"] += 1
        self.left_reason = "disconnected"  # its network went away, not the client
        # Its events go nowhere now: not written, and the socket not counted as stalled too.
        self._accepting, self._cut = False, True
        self.stop_writing()
        await asyncio.shield(self.leave())
        try:
            async with asyncio.timeout(CLOSE_WAIT_S + 1):
                await self.ws.close(code=4000, message=b"connection_lost", drain=False)
        except (TimeoutError, ConnectionError):
            self.abort()

    async def control_frame(self, frame: Awaitable[None]) -> bool:
        """Sends a ping or pong; False when the socket is gone or took nothing for CLOSE_WAIT_S
        (then it is cut, and the caller ends the session)."""
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                await frame
        except ConnectionError:
            return False
        except TimeoutError:
            self._stalled(f"took no ping or pong for {CLOSE_WAIT_S:g} s")
            return False
        return True

    async def close(self, code: int, message: str) -> None:
        """Closes after the events queued before it (an error or `redirect` that says why)."""
        if code != WSCloseCode.INTERNAL_ERROR:
            self.left_reason = "left"
        await self.flush()
        await self.ws.close(code=code, message=message.encode()[:120])

    def idle_limit_s(self) -> float:
        """How long the client may be silent before its session is given up: the idle timeout,
        or while one of its media connections is up at least twice ICE consent's timeout (consent
        watches the network then; an outage shorter than it must not end the visit)."""
        s = self.settings
        p = self.participant
        media = p is not None and any(t is not None and t.connected for t in (p.publisher, p.subscriber))
        return max(s.room_ws_idle_timeout_s, 2 * s.ice_consent_timeout_s) if media else s.room_ws_idle_timeout_s

    # --- join ---------------------------------------------------------------------------------------
    async def join(self, token: str, msg: dict[str, Any]) -> bool:
        """Joins the room; False when the client was sent to the node that serves it."""
        self.ident = verify_token(self.settings.api_secret, token, room=self.room_name)
        if self.ident.is_admin:
            raise AuthError(403, "forbidden", "admin tokens cannot join a visit; use a room token")
        try:
            owner = await owner_url(self.request, self.room_name)
        except MediasrvError as exc:
            raise RoomError(exc.code, exc.message, exc.status) from None
        if owner is not None:
            ws_url = "ws" + owner.removeprefix("http") + self.request.path
            await self.send({"type": "redirect", "request_id": msg.get("request_id"), "url": ws_url,
                             "node_url": owner})
            await self.close(CLOSE_REDIRECT, "redirect")
            return False
        auto = msg.get("auto_subscribe", True)
        if not isinstance(auto, bool):
            raise ProtocolError("invalid_message", "'auto_subscribe' must be a boolean")
        # One place under the identity's cap while this session lasts (its HTTP connection already
        # counts for the address); past the cap the join is refused and the socket closed 4429.
        self.lease = self.request.app[keys.CONNECTION_CAPS].acquire(
            "room", address=None, identity=self.ident.sub, token=None)
        self.room = self.rooms.get_or_create(self.room_name, self.ident)
        self.participant = await self.room.join(
            self.ident, "room", events=self.send, auto_subscribe=auto,
            address=self.request.remote,
        )
        self.participant.on_removed = self._removed
        await self.send({
            "type": "joined", "request_id": msg.get("request_id"), "room": self.room_name,
            "identity": self.ident.sub, "role": self.ident.role, "admitted": self.participant.admitted,
            # TURN servers for this connection (empty without TURN), credentials valid as long as the token
            "iceServers": ice_servers(self.settings, self.ident.sub, self.ident.exp, wall()),
            **self.room.visible_state(self.participant),  # empty in the waiting room
            # In a cluster: the serving nodes' URLs, where to rejoin if this node goes away.
            **({"nodes": cluster.peers} if (cluster := self.request.app.get(keys.CLUSTER)) else {}),
        })
        if not self.participant.admitted:
            await self.send({"type": "waiting", "message": "a clinician will admit you shortly"})
            if cluster is not None:  # admitted before its visit moved to this node: admitted again
                await cluster.readmit(self.room, self.participant)
        await self.room.sync_subscriptions(self.participant)
        return True

    async def _removed(self, reason: str) -> None:
        if reason == f"room_closed:{MOVED}":  # another node serves the room now (`redirect` sent)
            await self.close(CLOSE_REDIRECT, "redirect")
        elif reason != "left":
            await self.close(4000 if reason != "replaced" else 4001, reason)

    # --- messages after join ------------------------------------------------------------------------
    async def handle(self, msg: dict[str, Any]) -> None:
        assert self.room is not None and self.participant is not None and self.ident is not None
        room, p = self.room, self.participant
        kind = msg["type"]
        rid = msg.get("request_id")
        if kind == "publish":
            sdp = _field(msg, "sdp", str)
            sources = msg.get("sources") or {}
            if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
                raise ProtocolError("invalid_message", "'sources' must map mid to a source label")
            answer = await room.publish(p, sdp, sources)
            await self.send({"type": "publish_answer", "request_id": rid, "sdp": answer,
                             "tracks": [t.describe() for t in p.tracks.values()]})
        elif kind == "unpublish":
            track_id = _field(msg, "track_id", int)
            if not await room.unpublish(p, track_id):
                raise ProtocolError("unknown_track", f"you publish no track {track_id}")
            await self.send({"type": "unpublished", "request_id": rid, "track_id": track_id})
        elif kind == "answer":
            await room.subscriber_answer(p, _field(msg, "sdp", str))
        elif kind in ("subscribe", "unsubscribe"):
            ids = _track_ids(msg)
            # In the waiting room no track is known (which ids exist is the visit's business too).
            unknown = [i for i in ids if i not in room.tracks or not p.admitted]
            if unknown:
                raise ProtocolError("unknown_track", f"no such tracks: {unknown}")
            if kind == "subscribe":
                p.wanted |= set(ids)
            else:
                p.wanted -= set(ids)
                if p.auto_subscribe and ids:
                    p.auto_subscribe = False
                    p.wanted |= {t for t in room.tracks if t not in ids and room.tracks[t].owner != p.identity}
            await room.sync_subscriptions(p)
            await self.send({"type": f"{kind}d", "request_id": rid, "track_ids": ids})
        elif kind == "set_max_resolution":
            track_id = _field(msg, "track", int)
            height = msg.get("height")
            if height is not None and (not isinstance(height, int) or isinstance(height, bool)
                                       or not 1 <= height <= MAX_VIDEO_HEIGHT):
                raise ProtocolError("invalid_message", f"'height' must be 1..{MAX_VIDEO_HEIGHT} or null")
            if track_id not in room.tracks or not p.admitted:
                raise ProtocolError("unknown_track", f"no such track: {track_id}")
            room.subscriptions.set_max_height(p, track_id, height)
            await self.send({"type": "max_resolution_set", "request_id": rid, "track": track_id,
                             "height": height})
        elif kind == "chat":
            text = _field(msg, "text", str)
            if not text.strip() or len(text) > MAX_CHAT_CHARS:
                raise ProtocolError("invalid_message", f"chat text must be 1..{MAX_CHAT_CHARS} characters")
            if not p.admitted:
                raise ProtocolError("not_admitted", "wait until you are admitted to chat")
            event = {"type": "chat", "from": p.identity, "name": p.name, "text": text, "ts": time.time()}
            await room.broadcast(event, only=lambda o: o.admitted)
        elif kind == "start_recording":
            status = await room.recording.request(self.ident)
            await self.send({"type": "recording_status", "request_id": rid, **_visible(p, status)})
        elif kind == "recording_consent":
            granted = _field(msg, "granted", bool)
            await room.recording.answer(p.identity, granted)
            await self.send({"type": "recording_status", "request_id": rid,
                             **_visible(p, room.recording.status())})
        elif kind == "stop_recording":
            require_moderator(self.ident, self.room_name, "only a clinician can stop the recording")
            if await room.recording.stop(self.ident) is None:
                raise ProtocolError("not_recording", "the room is not being recorded")
        elif kind == "ping":
            await self.send({"type": "pong", "request_id": rid})
        elif kind == "leave":
            await self.close(1000, "left")
        elif kind == "join":
            raise ProtocolError("already_joined", "this session has joined already")
        else:
            raise ProtocolError("unknown_type", f"unknown message type {kind!r}")

    async def leave(self) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None
        room, p = self.room, self.participant
        if room is not None and p is not None and room.participants.get(p.identity) is p:
            p.on_removed = None
            await room.leave(p.identity, reason=self.left_reason)


def _parse(data: str) -> dict[str, Any]:
    try:
        msg = loads(data)
    except NonFiniteNumber as exc:
        raise ProtocolError("invalid_json", f"message has a number JSON cannot carry: {exc}") from None
    except ValueError as exc:
        raise ProtocolError("invalid_json", f"message is not JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("invalid_json", "message nests JSON too deeply") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("invalid_message", "a message is a JSON object with a string 'type'")
    return msg


@query_token_allowed  # browsers cannot set an Authorization header on a WebSocket upgrade
async def room_ws(request: web.Request) -> web.StreamResponse:
    room_name = request.match_info["room"]
    query_token = request.query.get(QUERY_TOKEN, "") or bearer_token(request.headers.get("Authorization"))
    settings = request.app[keys.SETTINGS]
    if query_token:  # fail before the upgrade, with an HTTP status, when we can
        verify_token(settings.api_secret, query_token, room=room_name)
    # Liveness is the receive loop's (pings and pongs handled there, `RoomSession.idle_limit_s`):
    # aiohttp's heartbeat has one fixed limit, and a visit with media needs a longer one than the
    # waiting room.
    ws = web.WebSocketResponse(autoping=False, max_msg_size=MAX_MESSAGE_BYTES, timeout=CLOSE_WAIT_S)
    await ws.prepare(request)
    session = RoomSession(request, ws, room_name)
    try:
        await _serve(session, query_token)
    finally:
        # aiohttp cancels the handler once the client's connection is gone: the leave (which frees
        # the participant's place and closes an emptied ad-hoc room) must run to its end regardless.
        try:
            await asyncio.shield(session.leave())
            if not ws.closed:
                await session.flush()
                await ws.close()
        finally:
            session.stop_writing()  # also when a second cancellation cut the above short
    return ws


def _request_id(data: str) -> Any:
    """The request_id of a message that will not be handled (None when it is not readable)."""
    try:
        return _parse(data).get("request_id")
    except ProtocolError:
        return None


class Liveness:
    """When to ping a quiet client and when to give it up, from the loop's time: a ping once
    `ping_s` passed since the last frame from the client and the last ping, the client gone once
    nothing came for its idle limit (a pong counts: the caller sets `heard` on every frame)."""

    def __init__(self, ping_s: float, now: float) -> None:
        self.ping_s = ping_s
        self.heard = now
        self.pinged = now

    def wait_s(self, now: float, limit_s: float) -> float:
        """How long to wait for the next frame before acting (> 0: aiohttp reads 0 as no limit)."""
        due = min(max(self.heard, self.pinged) + self.ping_s, self.heard + limit_s)
        return max(due - now, 0.001)

    def gone(self, now: float, limit_s: float) -> bool:
        return now - self.heard >= limit_s

    def ping_due(self, now: float) -> bool:
        return now >= max(self.heard, self.pinged) + self.ping_s


async def _serve(session: RoomSession, query_token: str) -> None:
    ws = session.ws
    joined = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + JOIN_TIMEOUT_S
    s = session.settings
    limit = MessageRateLimit(s.room_ws_messages_per_s, s.room_ws_burst, s.room_ws_close_after_refused,
                             now=loop.time())
    live = Liveness(s.room_ws_ping_s, loop.time())
    while not ws.closed:
        now = loop.time()
        timeout = live.wait_s(now, session.idle_limit_s()) if joined else deadline - now
        if timeout <= 0 and not joined:  # the last message came at the deadline, and was no join
            await session.close(4408, "join timeout")
            return
        try:
            msg = await ws.receive(timeout=timeout)
        except TimeoutError:
            if ws.closed:  # closed meanwhile by another task (a removal, consent lost)
                return
            if not joined:
                await session.close(4408, "join timeout")
                return
            now = loop.time()
            if live.gone(now, session.idle_limit_s()):
                await session.give_up()
                return
            if live.ping_due(now):
                live.pinged = now
                if not await session.control_frame(ws.ping()):
                    return
            continue
        live.heard = loop.time()
        if msg.type == WSMsgType.PONG:
            continue
        if msg.type == WSMsgType.CLOSE:
            if msg.data != CLOSE_RECONNECTING:
                session.left_reason = "left"
            return
        if msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED):
            return
        if msg.type == WSMsgType.ERROR:
            return
        if msg.type not in (WSMsgType.TEXT, WSMsgType.PING):
            await session.close(WSCloseCode.UNSUPPORTED_DATA, "binary frames are not part of the protocol")
            return
        if not limit.admit(loop.time()):
            RATE_LIMITED["refused"] += 1
            if limit.exhausted:
                RATE_LIMITED["closed"] += 1
                log.info("room %s: closing a WebSocket that kept exceeding the message rate", session.room_name)
                await session.close(CLOSE_RATE_LIMITED, "rate_limited")
                return
            if msg.type == WSMsgType.PING:
                continue  # not answered: a ping is no request
            await session.send({"type": "error", "request_id": _request_id(msg.data), "code": "rate_limited",
                                "message": f"more than {s.room_ws_messages_per_s:g} messages a second "
                                           f"(bursts of {s.room_ws_burst}); this one was not handled"})
            continue
        if msg.type == WSMsgType.PING:  # a client's own ping (browsers send none): answered
            if not await session.control_frame(ws.pong(msg.data)):
                return
            continue
        rid = None
        data: dict[str, Any] | None = None
        try:
            data = _parse(msg.data)
            rid = data.get("request_id")
            if not joined:
                if data["type"] != "join":
                    raise ProtocolError("not_joined", "the first message must be 'join'")
                token = data.get("token") or query_token
                if not isinstance(token, str):
                    raise AuthError(401, "missing_token", "join needs a token")
                if not await session.join(token, data):
                    return
                joined = True
            else:
                await session.handle(data)
        except MediasrvError as exc:
            await session.send({"type": "error", "request_id": rid, "code": exc.code, "message": exc.message})
            close = _close_code(exc, joined)
            if close is not None:
                await session.close(close, exc.code)
                return
        except Exception:
            # A bug, not the client's doing: logged once here, told to the client as JSON like any
            # other error, and the session ends (1011) so its participant is cleaned up by the caller.
            log.exception("room %s: unexpected error handling a %r message", session.room_name,
                          data.get("type") if data else None)
            await session.send({"type": "error", "request_id": rid, "code": "internal_error",
                                "message": "internal server error"})
            await session.close(WSCloseCode.INTERNAL_ERROR, "internal_error")
            return


def _close_code(exc: MediasrvError, joined: bool) -> int | None:
    """The one place the room protocol maps errors to the session's fate (after the "error" event):
    a refused join (token, room full or closed) ends the session with a close code from the status;
    once joined, only the room going away (410) does. Any other error (a bad message, an SDP, a
    consent or permission refusal) leaves the session open."""
    if isinstance(exc, CapExceeded):
        return CLOSE_RATE_LIMITED  # the reason says which cap: too_many_sessions
    if not isinstance(exc, AuthError | RoomError):
        return None
    if not joined:
        return CLOSE_BY_STATUS.get(exc.status, 4400)
    return 4410 if exc.status == 410 else None


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/rooms/{room}/ws", room_ws)
