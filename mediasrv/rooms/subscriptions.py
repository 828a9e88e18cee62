"""What participants receive: which tracks each should get, the subscriber connection's (server-offered)
renegotiation, WHEP sessions' late binding, and telling the router which subscriptions forward."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mediasrv.media import aiortc_glue
from mediasrv.media.peer_transport import ForwardedTrack, PeerTransport
from mediasrv.media.sdp import codec_tuples, extension_ids
from mediasrv.rooms.errors import RoomError
from mediasrv.rooms.models import Participant, Subscription, Track, next_id

if TYPE_CHECKING:
    from mediasrv.rooms.room import Room


class Subscriptions:
    def __init__(self, room: Room) -> None:
        self.room = room

    # --- who receives what ----------------------------------------------------------------------
    def may_receive(self, p: Participant, track: Track) -> bool:
        owner = self.room.participants.get(track.owner)
        return (p.admitted and owner is not None and owner.admitted and track.owner != p.identity
                and not track.muted)

    def desired_tracks(self, p: Participant) -> set[int]:
        if p.session == "whep":
            return set()
        tracks = self.room.tracks
        want = set(p.wanted)
        if p.auto_subscribe:
            want |= {tid for tid, t in tracks.items() if t.owner != p.identity}
        return {tid for tid in want if tid in tracks and self.may_receive(p, tracks[tid])}

    # --- the router's side ------------------------------------------------------------------------
    def deactivate(self, sub: Subscription) -> None:
        if sub.active:
            self.room.router.remove_subscription(sub.id)
            sub.active = False

    def deactivate_track(self, track_id: int) -> None:
        """Stop forwarding a track to everyone (unpublished or muted)."""
        for other in self.room.participants.values():
            sub = other.subscriptions.get(track_id)
            if sub is not None:
                self.deactivate(sub)

    def activate(self, sub: Subscription) -> None:
        if sub.active or sub.transceiver.mid is None or not sub.transport.connected:
            return
        remote = sub.transport.remote_description()
        if remote is None:
            return
        media = remote.media
        sender = sub.transceiver.sender
        self.room.router.add_subscription(sub.id, sub.track.id, sub.transport.handle,
                                          aiortc_glue.sender_ssrc(sender), codec_tuples(sub.transceiver),
                                          extension_ids(media), rtx_ssrc=aiortc_glue.sender_rtx_ssrc(sender))
        sub.active = True
        viewer = self.room.participants.get(sub.transport.owner)
        if viewer is not None:
            cap = viewer.max_heights.get(sub.track.id,
                                         viewer.video_max_height if sub.track.kind == "video" else None)
            if cap is not None:
                self.room.router.set_subscription_max_height(sub.id, cap)

    def set_max_height(self, p: Participant, track_id: int, height: int | None) -> None:
        """The most of a track's video height p wants (None: no cap); kept across resubscribes."""
        if height is None:
            p.max_heights.pop(track_id, None)
        else:
            p.max_heights[track_id] = height
        sub = p.subscriptions.get(track_id)
        if sub is not None and sub.active:
            self.room.router.set_subscription_max_height(sub.id, height)

    def transport_connected(self, p: Participant, transport: PeerTransport) -> None:
        # Subscriptions start forwarding only once SRTP is up, so the first packet a
        # subscriber is sent is also the first one it can receive.
        for sub in p.subscriptions.values():
            if sub.transport is transport and self.may_receive(p, sub.track):
                self.activate(sub)

    # --- negotiation ------------------------------------------------------------------------------
    async def sync_all(self) -> None:
        self.room.recording.tracks_changed()
        for p in list(self.room.participants.values()):
            if p.session == "whep":
                self.bind_whep(p)
            else:
                await self.sync(p)

    async def sync(self, p: Participant) -> None:
        """Bring p's subscriber connection in line with what p should receive (room protocol)."""
        if p.session != "room" or p.events is None:
            return
        desired = self.desired_tracks(p)
        current = set(p.subscriptions)
        if desired == current:
            # re-activate subscriptions deactivated by a mute that was lifted, etc.
            for sub in p.subscriptions.values():
                self.activate(sub)
            return
        if p.negotiating:
            p.renegotiate_again = True
            return
        if p.subscriber is None:
            p.subscriber = self.room.new_transport(p, "subscribe")
        for tid in current - desired:
            sub = p.subscriptions.pop(tid)
            self.deactivate(sub)
            sub.transceiver.direction = "inactive"
            sub.transceiver.sender.replaceTrack(None)
        for tid in desired - current:
            track = self.room.tracks[tid]
            tr = p.subscriber.add_sender(track.kind)
            p.subscriptions[tid] = Subscription(id=next_id(), track=track, transport=p.subscriber,
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
            if self.may_receive(p, sub.track):
                self.activate(sub)
        if p.renegotiate_again:
            p.renegotiate_again = False
            await self.sync(p)

    # --- WHEP -------------------------------------------------------------------------------------
    async def whep_subscribe(self, p: Participant, target: str, offer_sdp: str) -> str:
        """Answer a WHEP offer: each offered audio/video m-line carries one of target's tracks."""
        p.whep_target = target
        transport = p.subscriber = self.room.new_transport(p, "subscribe")

        def add_senders() -> None:
            for tr in transport.transceivers():
                if tr.kind in ("audio", "video") and tr.sender.track is None:
                    tr.sender.replaceTrack(ForwardedTrack(tr.kind))
                    tr.direction = "sendonly"

        answer = await transport.accept_offer(offer_sdp, before_answer=add_senders)
        self.bind_whep(p)
        return answer

    def bind_whep(self, p: Participant) -> None:
        """Give each free WHEP m-line a track of the target of the same kind (late binding)."""
        if p.subscriber is None or p.subscriber.remote_description() is None:
            return
        tracks = self.room.tracks
        taken = {s.transceiver for s in p.subscriptions.values()}
        for sub in list(p.subscriptions.values()):
            if sub.track.id not in tracks:
                p.subscriptions.pop(sub.track.id)
                taken.discard(sub.transceiver)
        for tr in p.subscriber.transceivers():
            if tr in taken or tr.kind not in ("audio", "video") or tr.mid is None:
                continue
            for track in tracks.values():
                if (track.owner == p.whep_target and track.kind == tr.kind
                        and track.id not in p.subscriptions and self.may_receive(p, track)):
                    sub = Subscription(id=next_id(), track=track, transport=p.subscriber, transceiver=tr)
                    p.subscriptions[track.id] = sub
                    self.activate(sub)
                    break
        for sub in p.subscriptions.values():
            if self.may_receive(p, sub.track):
                self.activate(sub)
