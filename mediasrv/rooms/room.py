"""A room: one visit, composed of its membership, publications and subscriptions.

A participant has up to two PeerTransports, as LiveKit does: a publisher connection the client offers,
and a subscriber connection the server offers (server-initiated renegotiation needs no glare handling
this way). WHIP sessions only publish; WHEP sessions only subscribe (the client offers there).
Media never passes through Python objects here: the room's native Router forwards it; the room only
tells the router what exists. The room also owns the recording and the events it broadcasts. Its
periodic work is the router's events, drained by the process's one room wheel (rooms/wheel.py) on
the native plane, and by a task of its own that also polls the router on the Python datapath; its
time limit is a timer, not a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import mediasrv_native

from mediasrv.auth import Identity
from mediasrv.clock import now_ms
from mediasrv.config import Settings
from mediasrv.media.native_plane import NativePlane
from mediasrv.media.peer_transport import PeerTransport
from mediasrv.recording.controller import RoomRecording
from mediasrv.rooms.membership import Membership
from mediasrv.rooms.models import EventSink, Participant, RoomOptions, Track, next_id
from mediasrv.rooms.publications import Publications
from mediasrv.rooms.quality_monitor import QualityMonitor
from mediasrv.rooms.subscriptions import Subscriptions
from mediasrv.rooms.wheel import WHEEL

if TYPE_CHECKING:
    from mediasrv.rooms.manager import RoomManager

log = logging.getLogger(__name__)
POLL_INTERVAL_S = 0.1
# Packets of each track kept for retransmission (and to recognise RTX copies). A track's ring starts
# small (32 audio packets, 128 video: 0.6-0.8 s at 1.5 Mbit/s) and doubles only while it holds less
# than NACK_HISTORY_MS of media (by RTP timestamps), or less than 4 round trips of a subscriber that
# NACKs, up to NACK_HISTORY_PACKETS (the fixed size it had before: 1-1.7 s of video at 2.5-1.5
# Mbit/s). Payloads are most of a small visit's memory: a fixed 256 packets a track held ~0.8 MB a
# 1:1 visit, most of it not needed.
NACK_HISTORY_PACKETS = 256
NACK_HISTORY_MS = 500


class Room:
    def __init__(self, name: str, options: RoomOptions, settings: Settings, manager: RoomManager) -> None:
        self.name = name
        self.options = options
        self.settings = settings
        self.manager = manager
        self.closed = False
        self._duration_timer: asyncio.TimerHandle | None = None
        self._warned = False
        # Work that a tick or a timer started and that awaits (a client told of a paused video).
        self._spawned: set[asyncio.Task[None]] = set()
        self._telling: asyncio.Task[None] | None = None
        self.created_at = time.time()  # (arms the time limit's timer)
        self.explicit = False  # created through the control API: survives being empty
        # Tells this visit from an earlier or later one under the same name (tokens may carry it).
        self.visit_id = secrets.token_urlsafe(16)
        # On the native plane the router also owns RTCP (sender reports) and a worker polls it.
        plane = manager.plane
        self.router = mediasrv_native.Router(max_bitrate_bps=settings.max_video_bitrate,
                                             nack_cache_packets=NACK_HISTORY_PACKETS,
                                             nack_history_ms=NACK_HISTORY_MS,
                                             min_bitrate_bps=settings.min_video_bitrate,
                                             group_floor_bps=settings.video_group_floor,
                                             video_pause_bps=settings.video_pause_bitrate,
                                             video_resume_bps=settings.video_resume_bitrate,
                                             video_resume_hold_ms=round(settings.video_resume_hold_s * 1000),
                                             pacing=settings.downlink_pacing,
                                             bwe_start_bps=settings.bwe_start_bitrate,
                                             sender_reports=plane is not None)
        self.plane_key = plane.attach_room(self.router) if plane is not None else None
        self.participants: dict[str, Participant] = {}
        # Who the waiting room let in during this visit: one who drops (an outage) and joins again
        # is not kept waiting a second time. A removal forgets them.
        self.admitted: set[str] = set()
        self.tracks: dict[int, Track] = {}
        self.transports: dict[int, PeerTransport] = {}
        self.drops: Counter[str] = Counter()
        self.membership = Membership(self)
        self.publications = Publications(self)
        self.subscriptions = Subscriptions(self)
        self.recording = RoomRecording(self, manager.recording_store)
        self.quality = QualityMonitor(self)  # connection quality, read from the router once a second
        # The Python datapath polls the router itself; on the plane a worker does, and the wheel
        # drains the events.
        self._task: asyncio.Task[None] | None = None
        if self.plane_key is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        else:
            WHEEL.add(self)

    # --- what handlers call -----------------------------------------------------------------------
    async def join(self, ident: Identity, session: str, events: EventSink | None = None,
                   auto_subscribe: bool = True, address: str | None = None) -> Participant:
        return await self.membership.join(ident, session, events, auto_subscribe, address)

    async def leave(self, identity: str, reason: str = "left") -> bool:
        return await self.membership.leave(identity, reason)

    async def admit(self, identity: str, by: Identity) -> bool:
        return await self.membership.admit(identity, by)

    async def remove(self, identity: str, by: Identity) -> bool:
        return await self.membership.remove(identity, by)

    async def mute_track(self, identity: str, track_id: int, by: Identity) -> bool:
        return await self.membership.mute_track(identity, track_id, by)

    async def publish(self, p: Participant, offer_sdp: str, sources: dict[str, str]) -> str:
        return await self.publications.publish(p, offer_sdp, sources)

    async def unpublish(self, p: Participant, track_id: int) -> bool:
        return await self.publications.unpublish(p, track_id)

    def may_receive(self, p: Participant, track: Track) -> bool:
        return self.subscriptions.may_receive(p, track)

    async def sync_subscriptions(self, p: Participant) -> None:
        await self.subscriptions.sync(p)

    async def subscriber_answer(self, p: Participant, answer_sdp: str) -> None:
        await self.subscriptions.subscriber_answer(p, answer_sdp)

    async def whep_subscribe(self, p: Participant, target: str, offer_sdp: str) -> str:
        return await self.subscriptions.whep_subscribe(p, target, offer_sdp)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "visit_id": self.visit_id, "options": asdict(self.options),
                "created_at": self.created_at, "configured": self.explicit,
                "participants": [p.describe() for p in self.participants.values()],
                "recording": self.recording.status()}

    def visible_state(self, p: Participant) -> dict[str, Any]:
        """The others and the tracks p may know of: nothing while p waits to be admitted."""
        if not p.admitted:
            return {"participants": [], "tracks": []}
        return {"participants": [o.describe() for o in self.participants.values()
                                 if o.admitted and o is not p],
                "tracks": [t.describe() for t in self.tracks.values() if self.may_receive(p, t)]}

    async def broadcast(self, event: dict[str, Any], *, exclude: str | None = None,
                        only: Callable[[Participant], bool] | None = None,
                        waiting_too: bool = False) -> None:
        """Send an event to the admitted participants (or those `only` picks among them); those in
        the waiting room learn nothing of the visit, only that it ends (`waiting_too`).
        An event sink queues and returns (`EventSink`), so a participant whose network stalls
        delays no one else's copy."""
        for p in list(self.participants.values()):
            if (p.identity != exclude and (p.admitted or waiting_too)
                    and (only is None or only(p))):
                await p.send(event)

    # --- what the recording needs (RecordedRoom) --------------------------------------------------
    def new_subscription_id(self) -> int:
        """Router subscription ids (the recorder's sinks are subscriptions too) share one allocator."""
        return next_id()

    async def audit_event_raw(self, actor: str, role: str, action: str, **kw: Any) -> None:
        kw.setdefault("visit", self.visit_id)
        await self.manager.audit_event_raw(actor, role, action, **kw)

    # --- what its transports need (TransportHost) -------------------------------------------------
    @property
    def plane(self) -> NativePlane | None:
        return self.manager.plane

    def count_drop(self, reason: str) -> None:
        self.drops[reason] += 1

    async def deliver_rtp(self, out: list[tuple[int, bytes]]) -> None:
        for handle, packet in out:
            transport = self.transports.get(handle)
            if transport is None or not await transport.send(packet):
                self.drops["transport_not_ready"] += 1

    def new_transport(self, p: Participant, direction: str) -> PeerTransport:
        t = PeerTransport(self, p.identity, direction)
        self.transports[t.handle] = t

        async def failed(transport: PeerTransport) -> None:
            log.info("room %s: %s connection %d of a %s failed", self.name, direction,
                     transport.handle, p.role)
            if self.participants.get(p.identity) is p:
                await self.leave(p.identity, reason="connection_lost")

        async def connected(transport: PeerTransport) -> None:
            self.subscriptions.transport_connected(p, transport)

        async def setup_timeout(transport: PeerTransport) -> None:
            # Leaving frees everything the participant holds (its slot, WHIP/WHEP session, message).
            if self.participants.get(p.identity) is p:
                await self.leave(p.identity, reason="setup_timeout")
            else:
                await transport.close()

        t.on_failed = failed
        t.on_connected = connected
        t.on_setup_timeout = setup_timeout
        return t

    # --- lifecycle --------------------------------------------------------------------------------
    @property
    def created_at(self) -> float:
        return self._created_at

    @created_at.setter
    def created_at(self, when: float) -> None:
        self._created_at = when  # a room restored from the store started earlier than this object
        self._arm_duration()

    @property
    def busy(self) -> bool:
        """Whether the wheel's tick has anything to look at: a room without a connection has no
        router traffic, so no events."""
        return bool(self.transports)

    def tick(self) -> None:
        """Drain the router's events (it counts them for /metrics itself; draining keeps its queue
        short) and tell clients what concerns them; connection quality once a second."""
        changes = []
        for kind, subject, reason in self.router.take_events():
            log.debug("room %s: %s %s reason=%s", self.name, kind, subject, reason)
            if kind in ("video_paused", "video_resumed"):
                changes.append((kind == "video_paused", subject, reason or ""))
        if changes:
            # In order, after what earlier ticks had to tell.
            self._telling = asyncio.get_running_loop().create_task(self._tell(self._telling, changes))
            self._spawned.add(self._telling)
            self._telling.add_done_callback(self._spawned.discard)
        told = self.quality.poll(time.monotonic())
        if told:
            self._spawn(self.quality.deliver(told))

    async def _tell(self, before: asyncio.Task[None] | None, changes: list[tuple[bool, int, str]]) -> None:
        if before is not None:
            with contextlib.suppress(Exception):
                await before
        for paused, handle, reason in changes:
            await self._video_allocation(paused, handle, reason)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    async def _run(self) -> None:
        """The Python datapath's router work (REMB, keyframe requests, NACKs) and its events."""
        try:
            while not self.closed:
                await asyncio.sleep(POLL_INTERVAL_S)
                out = self.router.poll(now_ms())
                if out:
                    await self.deliver_rtp(out)
                self.tick()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("room %s: periodic task failed", self.name)

    async def _video_allocation(self, paused: bool, handle: int, reason: str) -> None:
        """The router paused (or resumed) the video it sends on a subscriber connection: tell that
        participant which tracks, and why (`stream_paused` / `stream_resumed`)."""
        transport = self.transports.get(handle)
        p = self.participants.get(transport.owner) if transport is not None else None
        if p is None:
            return
        track_ids = sorted(s.track.id for s in p.subscriptions.values()
                           if s.transport is transport and s.track.kind == "video")
        if track_ids:
            await p.send({"type": "stream_paused" if paused else "stream_resumed", "reason": reason,
                          "track_ids": track_ids})

    def _arm_duration(self) -> None:
        """A timer for the time limit's next step (the warning, then the end)."""
        if self._duration_timer is not None:
            self._duration_timer.cancel()
            self._duration_timer = None
        limit = self.options.max_duration_s
        if not limit or self.closed:
            return
        left = self._created_at + limit - time.time()
        due = left if self._warned else left - min(60.0, limit / 5)
        self._duration_timer = asyncio.get_running_loop().call_later(max(0.0, due), self._duration_due)

    def _duration_due(self) -> None:
        self._duration_timer = None

        async def step() -> None:
            await self._check_duration()
            if not self.closed and self._duration_timer is None:
                self._arm_duration()

        self._spawn(step())

    async def _check_duration(self) -> None:
        limit = self.options.max_duration_s
        if not limit:
            return
        left = self._created_at + limit - time.time()
        warn_at = min(60.0, limit / 5)
        if left <= warn_at and not self._warned:
            self._warned = True
            await self.broadcast({"type": "room_ending", "seconds_left": max(0, round(left))},
                                 waiting_too=True)
        if left <= 0:
            # Like an admin's close: the room leaves the store and its tokens no longer open it.
            await self.manager.end(self.name, "max_duration")

    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        WHEEL.discard(self)
        if self._duration_timer is not None:
            self._duration_timer.cancel()
            self._duration_timer = None
        try:
            await self.recording.stop(None, reason=f"room_closed:{reason}")
        except Exception:  # the room closes regardless; the recording is marked by its store
            log.exception("room %s: stopping the recording", self.name)
        await self.broadcast({"type": "room_closed", "reason": reason}, waiting_too=True)
        for identity in list(self.participants):
            await self.leave(identity, reason=f"room_closed:{reason}")
        self.manager.retire_stats(self.router.stats())
        if self.plane_key is not None and self.manager.plane is not None:
            self.manager.plane.detach_room(self.plane_key)
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
