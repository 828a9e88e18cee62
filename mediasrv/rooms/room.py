"""Rooms (one visit each), participants, published tracks and subscriptions.

A participant has up to two PeerTransports, as LiveKit does: a publisher connection the client offers,
and a subscriber connection the server offers (server-initiated renegotiation needs no glare handling
this way). WHIP sessions only publish; WHEP sessions only subscribe (the client offers there).
Media never passes through Python objects here: the room's native Router forwards it; this module only
tells the router what exists.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import mediasrv_native
from aiortc import RTCRtpTransceiver
from aiortc.sdp import SessionDescription

from mediasrv.auth import Identity
from mediasrv.clock import now_ms
from mediasrv.config import Settings
from mediasrv.media import aiortc_glue
from mediasrv.media.native_plane import NativePlane
from mediasrv.media.peer_transport import ForwardedTrack, PeerTransport
from mediasrv.media.sdp import CodecTuple, codec_tuples, extension_ids, media_by_mid, ssrcs_of
from mediasrv.recording.controller import RoomRecording
from mediasrv.recording.recording_store import RecordingStore
from mediasrv.vitals.live import VitalsChannel

log = logging.getLogger(__name__)
_ids = itertools.count(1)
SOURCES = ("camera", "microphone", "screen", "screen_audio", "instrument")
POLL_INTERVAL_S = 0.1
EventSink = Callable[[dict[str, Any]], Awaitable[None]]


class RoomError(Exception):
    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass
class RoomOptions:
    waiting_room: bool = False
    max_participants: int | None = None
    max_duration_s: int | None = None
    recording_allowed: bool = False


@dataclass
class Track:
    id: int
    owner: str
    kind: str
    source: str
    mid: str
    transport: PeerTransport
    muted: bool = False
    codecs: list[CodecTuple] = field(default_factory=list)  # as negotiated with the publisher

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "participant": self.owner, "kind": self.kind,
                "source": self.source, "muted": self.muted}


@dataclass
class Subscription:
    id: int
    track: Track
    transport: PeerTransport
    transceiver: RTCRtpTransceiver
    active: bool = False  # known to the router


@dataclass
class Participant:
    identity: str
    role: str
    name: str | None
    session: str  # "room" | "whip" | "whep"
    admitted: bool = True
    events: EventSink | None = None
    auto_subscribe: bool = True
    wanted: set[int] = field(default_factory=set)
    whep_target: str | None = None
    publisher: PeerTransport | None = None
    subscriber: PeerTransport | None = None
    tracks: dict[int, Track] = field(default_factory=dict)
    subscriptions: dict[int, Subscription] = field(default_factory=dict)  # by track id
    joined_at: float = field(default_factory=time.time)
    negotiating: bool = False
    renegotiate_again: bool = False
    on_removed: Callable[[str], Awaitable[None]] | None = None

    def describe(self) -> dict[str, Any]:
        return {"identity": self.identity, "role": self.role, "name": self.name,
                "session": self.session, "admitted": self.admitted,
                "tracks": [t.describe() for t in self.tracks.values()]}

    async def send(self, event: dict[str, Any]) -> None:
        if self.events is not None:
            try:
                await self.events(event)
            except Exception:  # a dead socket must not break the room
                log.debug("event to %s failed", self.identity, exc_info=True)


class Room:
    def __init__(self, name: str, options: RoomOptions, settings: Settings, manager: RoomManager) -> None:
        self.name = name
        self.options = options
        self.settings = settings
        self.manager = manager
        self.created_at = time.time()
        self.explicit = False  # created through the control API: survives being empty
        # On the native plane the router also owns RTCP (sender reports) and a worker polls it.
        plane = manager.plane
        self.router = mediasrv_native.Router(max_bitrate_bps=settings.max_video_bitrate,
                                             sender_reports=plane is not None)
        self.plane_key = plane.attach_room(self.router) if plane is not None else None
        self.participants: dict[str, Participant] = {}
        self.tracks: dict[int, Track] = {}
        self.transports: dict[int, PeerTransport] = {}
        self.drops: Counter[str] = Counter()
        self.closed = False
        self.recording = RoomRecording(self, manager.recording_store)
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._warned = False

    # --- description ----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "options": asdict(self.options), "created_at": self.created_at,
                "participants": [p.describe() for p in self.participants.values()],
                "recording": self.recording.status()}

    def count_drop(self, reason: str) -> None:
        self.drops[reason] += 1

    async def broadcast(self, event: dict[str, Any], *, exclude: str | None = None,
                        only: Callable[[Participant], bool] | None = None) -> None:
        for p in list(self.participants.values()):
            if p.identity != exclude and (only is None or only(p)):
                await p.send(event)

    # --- membership -------------------------------------------------------------------------------
    async def join(self, ident: Identity, session: str, events: EventSink | None = None,
                   auto_subscribe: bool = True, address: str | None = None) -> Participant:
        if self.closed:
            raise RoomError("room_closed", "the room is closed", 410)
        old = self.participants.get(ident.sub)
        if old is not None:
            await old.send({"type": "error", "code": "replaced",
                            "message": "the same identity joined again elsewhere"})
            await self.leave(ident.sub, reason="replaced")
        limit = self.options.max_participants
        if limit is not None and len(self.participants) >= limit:
            raise RoomError("room_full", f"the room allows {limit} participants", 409)
        waiting = self.options.waiting_room and ident.role in ("patient", "guest")
        p = Participant(identity=ident.sub, role=ident.role, name=ident.name, session=session,
                        admitted=not waiting, events=events, auto_subscribe=auto_subscribe)
        self.participants[p.identity] = p
        await self.manager.audit_event(ident, "join", room=self.name, address=address,
                                       detail={"kind": session})
        info = {"type": "participant_joined", "participant": p.describe()}
        if p.admitted:
            await self.broadcast(info, exclude=p.identity)
        else:
            await self.broadcast({**info, "type": "participant_waiting"}, exclude=p.identity,
                                 only=lambda o: o.role == "clinician")
        await self.recording.joined(p.identity)
        return p

    async def leave(self, identity: str, reason: str = "left") -> bool:
        p = self.participants.pop(identity, None)
        if p is None:
            return False
        for track in list(p.tracks.values()):
            await self._unpublish(p, track, notify=True)
        for sub in list(p.subscriptions.values()):
            self._deactivate(sub)
        for t in (p.publisher, p.subscriber):
            if t is not None:
                self.router.remove_transport(t.handle)
                self.transports.pop(t.handle, None)
                await t.close()
        self.recording.left(p.identity)
        await self.manager.audit_event_raw(p.identity, p.role, "leave", room=self.name,
                                           detail={"reason": reason, "kind": p.session})
        if p.admitted:
            await self.broadcast({"type": "participant_left", "identity": identity, "reason": reason})
        if p.on_removed is not None:
            await p.on_removed(reason)
        if not self.participants and not self.explicit:
            await self.manager.close(self.name, "empty")
        return True

    async def admit(self, identity: str, by: Identity) -> bool:
        p = self.participants.get(identity)
        if p is None:
            return False
        if not p.admitted:
            p.admitted = True
            await self.manager.audit_event(by, "admit", room=self.name, target=identity)
            await p.send({"type": "admitted"})
            await self.broadcast({"type": "participant_joined", "participant": p.describe()},
                                 exclude=identity)
            for track in p.tracks.values():
                await self.broadcast({"type": "track_published", "track": track.describe()},
                                     exclude=identity)
            await self.sync_all()
        return True

    async def remove(self, identity: str, by: Identity) -> bool:
        p = self.participants.get(identity)
        if p is None:
            return False
        await self.manager.audit_event(by, "remove", room=self.name, target=identity)
        await p.send({"type": "removed", "by": by.sub})
        return await self.leave(identity, reason="removed")

    async def mute_track(self, identity: str, track_id: int, by: Identity) -> bool:
        p = self.participants.get(identity)
        track = p.tracks.get(track_id) if p else None
        if p is None or track is None:
            return False
        track.muted = True
        self.recording.tracks_changed()
        await self.manager.audit_event(by, "mute", room=self.name, target=identity,
                                       detail={"track_id": track_id})
        for other in self.participants.values():
            sub = other.subscriptions.get(track_id)
            if sub is not None:
                self._deactivate(sub)
        await self.broadcast({"type": "track_muted", "track": track.describe(), "by": by.sub})
        return True

    # --- publishing -------------------------------------------------------------------------------
    def _publisher(self, p: Participant) -> PeerTransport:
        if p.publisher is None:
            p.publisher = self._new_transport(p, "publish")
            p.publisher.pc.on("datachannel", lambda channel: self._on_datachannel(p, channel))
        return p.publisher

    def _on_datachannel(self, p: Participant, channel: Any) -> None:
        """The patient app's `vitals` channel; other labels are refused (closed)."""
        store = self.manager.vitals_store
        if channel.label != "vitals" or p.role != "patient" or store is None:
            log.info("room %s: refusing data channel %r from %s (%s)", self.name, channel.label,
                     p.identity, p.role)
            channel.close()
            return

        async def relay(event: dict[str, Any]) -> None:
            if p.admitted:
                await self.broadcast(event, only=lambda o: o.role == "clinician" and o.admitted)

        vitals = VitalsChannel(self.name, p.identity, store, self.settings.vitals_thresholds,
                               relay, channel.send)

        @channel.on("message")
        async def on_message(message: str | bytes) -> None:
            try:
                await vitals.on_message(message)
            except Exception:  # a storage hiccup must not end the visit
                log.exception("room %s: vitals frame from %s", self.name, p.identity)

    def _new_transport(self, p: Participant, direction: str) -> PeerTransport:
        t = PeerTransport(self, p.identity, direction)
        self.transports[t.handle] = t

        async def failed(transport: PeerTransport) -> None:
            log.info("room %s: %s connection of %s failed", self.name, direction, p.identity)
            if self.participants.get(p.identity) is p:
                await self.leave(p.identity, reason="connection_lost")

        async def connected(transport: PeerTransport) -> None:
            # Subscriptions start forwarding only once SRTP is up, so the first packet a
            # subscriber is sent is also the first one it can receive.
            for sub in p.subscriptions.values():
                if sub.transport is transport and self._may_receive(p, sub.track):
                    self._activate(sub)

        t.on_failed = failed
        t.on_connected = connected
        return t

    async def publish(self, p: Participant, offer_sdp: str, sources: dict[str, str]) -> str:
        """Answer a publisher offer; tracks appear for each m-line the client sends on."""
        if p.role == "observer":
            raise RoomError("forbidden", "observers cannot publish", 403)
        unknown = sorted({v for v in sources.values() if v not in SOURCES})
        if unknown:  # refused before negotiating, so nothing is left half set up
            raise RoomError("invalid_source", f"unknown track sources {unknown}; use {list(SOURCES)}", 400)
        transport = self._publisher(p)
        answer = await transport.accept_offer(offer_sdp)
        remote = media_by_mid(SessionDescription.parse(transport.pc.remoteDescription.sdp))
        local = SessionDescription.parse(answer)
        if not getattr(transport, "registered", False):
            self.router.add_publisher(transport.handle, _rtcp_ssrc(transport.handle),
                                      extension_ids(local.media))
            transport.registered = True  # type: ignore[attr-defined]
        by_mid = {t.mid: t for t in p.tracks.values()}
        new_tracks = []
        for tr in transport.transceivers():
            mid = tr.mid
            if mid is None or tr.kind not in ("audio", "video"):
                continue
            m = remote.get(mid)
            sending = m is not None and m.port != 0 and m.direction in ("sendrecv", "sendonly")
            existing = by_mid.get(mid)
            if sending and existing is None:
                source = sources.get(mid) or ("microphone" if tr.kind == "audio" else "camera")
                track = Track(id=next(_ids), owner=p.identity, kind=tr.kind, source=source, mid=mid,
                              transport=transport, codecs=codec_tuples(tr))
                self.router.add_track(track.id, transport.handle, tr.kind, mid, track.codecs,
                                      ssrcs_of(m))
                p.tracks[track.id] = track
                self.tracks[track.id] = track
                new_tracks.append(track)
            elif not sending and existing is not None:
                await self._unpublish(p, existing, notify=True)
        for track in new_tracks:
            await self.manager.audit_event_raw(p.identity, p.role, "publish", room=self.name,
                                               detail={"track_id": track.id, "kind": track.kind,
                                                       "source": track.source})
            if p.admitted:
                await self.broadcast({"type": "track_published", "track": track.describe()},
                                     exclude=p.identity)
        if new_tracks:
            await self.sync_all()
        return answer

    async def unpublish(self, p: Participant, track_id: int) -> bool:
        track = p.tracks.get(track_id)
        if track is None:
            return False
        await self._unpublish(p, track, notify=True)
        await self.sync_all()
        return True

    async def _unpublish(self, p: Participant, track: Track, notify: bool) -> None:
        p.tracks.pop(track.id, None)
        self.tracks.pop(track.id, None)
        for other in self.participants.values():
            sub = other.subscriptions.get(track.id)
            if sub is not None:
                self._deactivate(sub)
        self.recording.tracks_changed()  # before the router forgets the track: its sink's last frames
        self.router.remove_track(track.id)
        if notify and p.admitted:
            await self.broadcast({"type": "track_unpublished", "track": track.describe()},
                                 exclude=p.identity)

    # --- subscribing ------------------------------------------------------------------------------
    def _may_receive(self, p: Participant, track: Track) -> bool:
        owner = self.participants.get(track.owner)
        return (p.admitted and owner is not None and owner.admitted and track.owner != p.identity
                and not track.muted)

    def desired_tracks(self, p: Participant) -> set[int]:
        if p.session == "whep":
            return set()
        want = set(p.wanted)
        if p.auto_subscribe:
            want |= {tid for tid, t in self.tracks.items() if t.owner != p.identity}
        return {tid for tid in want if tid in self.tracks and self._may_receive(p, self.tracks[tid])}

    def _deactivate(self, sub: Subscription) -> None:
        if sub.active:
            self.router.remove_subscription(sub.id)
            sub.active = False

    def _activate(self, sub: Subscription) -> None:
        if sub.active or sub.transceiver.mid is None or not sub.transport.connected:
            return
        remote = sub.transport.pc.remoteDescription
        if remote is None:
            return
        media = SessionDescription.parse(remote.sdp).media
        ssrc = aiortc_glue.sender_ssrc(sub.transceiver.sender)
        self.router.add_subscription(sub.id, sub.track.id, sub.transport.handle,
                                     ssrc, codec_tuples(sub.transceiver), extension_ids(media))
        sub.active = True

    def new_subscription_id(self) -> int:
        """Router subscription ids (the recorder's sinks are subscriptions too) share one allocator."""
        return next(_ids)

    async def sync_all(self) -> None:
        self.recording.tracks_changed()
        for p in list(self.participants.values()):
            if p.session == "whep":
                self._bind_whep(p)
            else:
                await self.sync_subscriptions(p)

    async def sync_subscriptions(self, p: Participant) -> None:
        """Bring p's subscriber connection in line with what p should receive (room protocol)."""
        if p.session != "room" or p.events is None:
            return
        desired = self.desired_tracks(p)
        current = set(p.subscriptions)
        if desired == current:
            # re-activate subscriptions deactivated by a mute that was lifted, etc.
            for sub in p.subscriptions.values():
                self._activate(sub)
            return
        if p.negotiating:
            p.renegotiate_again = True
            return
        if p.subscriber is None:
            p.subscriber = self._new_transport(p, "subscribe")
        for tid in current - desired:
            sub = p.subscriptions.pop(tid)
            self._deactivate(sub)
            sub.transceiver.direction = "inactive"
            sub.transceiver.sender.replaceTrack(None)
        for tid in desired - current:
            track = self.tracks[tid]
            tr = p.subscriber.add_sender(track.kind)
            p.subscriptions[tid] = Subscription(id=next(_ids), track=track, transport=p.subscriber,
                                                transceiver=tr)
        p.negotiating = True
        offer = await p.subscriber.create_offer()
        mids = {s.transceiver.mid: s.track.describe() for s in p.subscriptions.values()}
        await p.send({"type": "offer", "sdp": offer, "tracks": mids})

    async def subscriber_answer(self, p: Participant, answer_sdp: str) -> None:
        if p.subscriber is None or not p.negotiating:
            raise RoomError("unexpected_answer", "no subscriber offer is outstanding", 409)
        await p.subscriber.accept_answer(answer_sdp)
        p.negotiating = False
        for sub in p.subscriptions.values():
            if self._may_receive(p, sub.track):
                self._activate(sub)
        if p.renegotiate_again:
            p.renegotiate_again = False
            await self.sync_subscriptions(p)

    async def whep_subscribe(self, p: Participant, target: str, offer_sdp: str) -> str:
        """Answer a WHEP offer: each offered audio/video m-line carries one of target's tracks."""
        p.whep_target = target
        transport = p.subscriber = self._new_transport(p, "subscribe")

        def add_senders() -> None:
            for tr in transport.transceivers():
                if tr.kind in ("audio", "video") and tr.sender.track is None:
                    tr.sender.replaceTrack(_forwarded(tr.kind))
                    tr.direction = "sendonly"

        answer = await transport.accept_offer(offer_sdp, before_answer=add_senders)
        self._bind_whep(p)
        return answer

    def _bind_whep(self, p: Participant) -> None:
        """Give each free WHEP m-line a track of the target of the same kind (late binding)."""
        if p.subscriber is None or p.subscriber.pc.remoteDescription is None:
            return
        taken = {s.transceiver for s in p.subscriptions.values()}
        for sub in list(p.subscriptions.values()):
            if sub.track.id not in self.tracks:
                p.subscriptions.pop(sub.track.id)
                taken.discard(sub.transceiver)
        for tr in p.subscriber.transceivers():
            if tr in taken or tr.kind not in ("audio", "video") or tr.mid is None:
                continue
            for track in self.tracks.values():
                if (track.owner == p.whep_target and track.kind == tr.kind
                        and track.id not in p.subscriptions and self._may_receive(p, track)):
                    sub = Subscription(id=next(_ids), track=track, transport=p.subscriber, transceiver=tr)
                    p.subscriptions[track.id] = sub
                    self._activate(sub)
                    break
        for sub in p.subscriptions.values():
            if self._may_receive(p, sub.track):
                self._activate(sub)

    # --- datapath glue ------------------------------------------------------------------------------
    async def deliver_rtp(self, out: list[tuple[int, bytes]]) -> None:
        for handle, packet in out:
            transport = self.transports.get(handle)
            if transport is None or not await transport.send(packet):
                self.drops["transport_not_ready"] += 1

    async def _run(self) -> None:
        """Periodic router work (REMB, keyframe requests) and the room's time limit."""
        try:
            while not self.closed:
                await asyncio.sleep(POLL_INTERVAL_S)
                if self.plane_key is None:
                    out = self.router.poll(now_ms())
                    if out:
                        await self.deliver_rtp(out)
                # The router counts these for /metrics itself; draining keeps its queue short.
                for kind, track, reason in self.router.take_events():
                    log.debug("room %s: %s track=%s reason=%s", self.name, kind, track, reason)
                await self._check_duration()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("room %s: periodic task failed", self.name)

    async def _check_duration(self) -> None:
        limit = self.options.max_duration_s
        if not limit:
            return
        left = self.created_at + limit - time.time()
        warn_at = min(60.0, limit / 5)
        if left <= warn_at and not self._warned:
            self._warned = True
            await self.broadcast({"type": "room_ending", "seconds_left": max(0, round(left))})
        if left <= 0:
            await self.manager.close(self.name, "max_duration")

    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self.recording.stop(None, reason=f"room_closed:{reason}")
        except Exception:  # the room closes regardless; the recording is marked by its store
            log.exception("room %s: stopping the recording", self.name)
        await self.broadcast({"type": "room_closed", "reason": reason})
        for identity in list(self.participants):
            await self.leave(identity, reason=f"room_closed:{reason}")
        self.manager.retire_stats(self.router.stats())
        if self.plane_key is not None and self.manager.plane is not None:
            self.manager.plane.detach_room(self.plane_key)
        if self._task is not asyncio.current_task():
            self._task.cancel()


def _rtcp_ssrc(handle: int) -> int:
    # Distinct per transport and never zero; only used as the sender SSRC of our feedback packets.
    return (0x5EED0000 + handle * 2654435761) & 0xFFFFFFFF or 1


def _forwarded(kind: str) -> ForwardedTrack:
    return ForwardedTrack(kind)


class RoomManager:
    def __init__(self, settings: Settings, audit: Any) -> None:
        self.settings = settings
        self.audit = audit
        self.rooms: dict[str, Room] = {}
        self.vitals_store: Any = None  # mediasrv.vitals.vitals_store.VitalsStore, set by the app
        self.recording_store: RecordingStore | None = None  # set by the app
        # Counters of closed rooms' routers, so exported totals never go backwards.
        self.retired: Counter[str] = Counter()
        self.retired_drops: Counter[str] = Counter()
        self.plane: NativePlane | None = None  # the native media plane (datapath = "native")

    async def start(self) -> None:
        from mediasrv.media.host_addresses import configure_host_addresses
        from mediasrv.media.native_plane import start_media_plane

        configure_host_addresses(self.settings.media_bind_addresses)
        self.plane = start_media_plane(self.settings)

    async def shutdown(self) -> None:
        for name in list(self.rooms):
            await self.close(name, "shutdown")
        if self.plane is not None:
            from mediasrv.media.native_plane import stop_media_plane

            stop_media_plane(self.plane)
            self.plane = None

    def get(self, name: str) -> Room | None:
        return self.rooms.get(name)

    def list(self) -> list[Room]:
        return list(self.rooms.values())

    def create(self, name: str, options: RoomOptions | None = None) -> Room:
        if name in self.rooms:
            raise KeyError(name)
        room = Room(name, options or RoomOptions(), self.settings, self)
        room.explicit = options is not None
        self.rooms[name] = room
        return room

    def get_or_create(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None or room.closed:
            room = Room(name, RoomOptions(), self.settings, self)
            self.rooms[name] = room
        return room

    async def close(self, name: str, reason: str) -> bool:
        room = self.rooms.pop(name, None)
        if room is None:
            return False
        await room.close(reason)
        return True

    def retire_stats(self, stats: dict[str, Any]) -> None:
        for key, value in stats.items():
            if key == "dropped":
                self.retired_drops.update(value)
            elif isinstance(value, int):
                self.retired[key] += value

    async def audit_event(self, who: Identity, action: str, **kw: Any) -> None:
        await self.audit_event_raw(who.sub, who.role, action, **kw)

    async def audit_event_raw(self, actor: str, role: str, action: str, **kw: Any) -> None:
        try:
            await self.audit.record(actor=actor, role=role, action=action, **kw)
        except Exception:
            log.exception("audit record failed (%s %s)", actor, action)
