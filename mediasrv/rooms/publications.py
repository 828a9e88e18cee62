"""What participants publish: the publisher connection's negotiation, tracks coming and going, and the
patient app's `vitals` data channel on that connection."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiortc.sdp import SessionDescription

from mediasrv.media.peer_transport import PeerTransport
from mediasrv.media.sdp import check_offer_text, codec_tuples, extension_ids, media_by_mid, ssrcs_of
from mediasrv.rooms.errors import RoomError
from mediasrv.rooms.models import SOURCES, Participant, Track, next_id
from mediasrv.vitals.live import VitalsChannel

if TYPE_CHECKING:
    from mediasrv.rooms.room import Room

log = logging.getLogger(__name__)


def rtcp_ssrc(handle: int) -> int:
    # Distinct per transport and never zero; only used as the sender SSRC of our feedback packets.
    return (0x5EED0000 + handle * 2654435761) & 0xFFFFFFFF or 1


class Publications:
    def __init__(self, room: Room) -> None:
        self.room = room

    def _publisher(self, p: Participant) -> PeerTransport:
        if p.publisher is None:
            p.publisher = self.room.new_transport(p, "publish")
            p.publisher.pc.on("datachannel", lambda channel: self._on_datachannel(p, channel))
        return p.publisher

    def _on_datachannel(self, p: Participant, channel: Any) -> None:
        """The patient app's `vitals` channel; other labels are refused (closed)."""
        room = self.room
        store = room.manager.vitals_store
        if channel.label != "vitals" or p.role != "patient" or store is None:
            # The role, not the identity: identities are patient data and stay out of logs.
            log.info("room %s: refusing data channel %r from a %s", room.name, channel.label[:40],
                     p.role)
            channel.close()
            return

        async def relay(event: dict[str, Any]) -> None:
            if p.admitted:
                await room.broadcast(event, only=lambda o: o.role == "clinician" and o.admitted)

        vitals = VitalsChannel(room.name, p.identity, store, room.settings.vitals_thresholds,
                               relay, channel.send, visit=room.visit_id)

        @channel.on("message")
        async def on_message(message: str | bytes) -> None:
            try:
                await vitals.on_message(message)
            except Exception:  # a storage hiccup must not end the visit
                log.exception("room %s: handling a vitals frame from the patient failed", room.name)

    async def publish(self, p: Participant, offer_sdp: str, sources: dict[str, str]) -> str:
        """Answer a publisher offer; tracks appear for each m-line the client sends on."""
        room = self.room
        if p.role == "observer":
            raise RoomError("forbidden", "observers cannot publish", 403)
        unknown = sorted({v for v in sources.values() if v not in SOURCES})
        if unknown:  # refused before negotiating, so nothing is left half set up
            raise RoomError("invalid_source", f"unknown track sources {unknown}; use {list(SOURCES)}", 400)
        if p.publisher is None:
            # A malformed offer is refused before a peer connection is made for it.
            check_offer_text(offer_sdp)
        transport = self._publisher(p)
        answer = await transport.accept_offer(offer_sdp)
        remote_desc = transport.remote_description()
        assert remote_desc is not None  # accept_offer set it
        remote = media_by_mid(remote_desc)
        local = SessionDescription.parse(answer)
        if not p.publisher_registered:
            room.router.add_publisher(transport.handle, rtcp_ssrc(transport.handle),
                                      extension_ids(local.media))
            p.publisher_registered = True
        by_mid = {t.mid: t for t in p.tracks.values()}
        new_tracks = []
        for tr in transport.transceivers():
            mid = tr.mid
            if mid is None or tr.kind not in ("audio", "video"):
                continue
            m = remote.get(mid)
            sending = m is not None and m.port != 0 and m.direction in ("sendrecv", "sendonly")
            existing = by_mid.get(mid)
            if m is not None and sending and existing is None:
                source = sources.get(mid) or ("microphone" if tr.kind == "audio" else "camera")
                track = Track(id=next_id(), owner=p.identity, kind=tr.kind, source=source, mid=mid,
                              transport=transport, codecs=codec_tuples(tr))
                room.router.add_track(track.id, transport.handle, tr.kind, mid, track.codecs,
                                      ssrcs_of(m))
                layers = transport.simulcast.get(mid)
                if layers is not None and tr.kind == "video":
                    try:
                        room.router.set_track_layers(track.id, layers.rid_ext or 0, layers.rids,
                                                     layers.sim_ssrcs, layers.repaired_rid_ext or 0,
                                                     layers.sim_rtx_ssrcs)
                    except ValueError as exc:  # e.g. a SIM group naming another track's SSRC
                        room.router.remove_track(track.id)
                        raise RoomError("invalid_sdp", f"simulcast of m-line mid={mid!r}: {exc}", 400) from None
                p.tracks[track.id] = track
                room.tracks[track.id] = track
                new_tracks.append(track)
            elif not sending and existing is not None:
                await self.remove_track(p, existing, notify=True)
        for track in new_tracks:
            await room.manager.audit_event_raw(p.identity, p.role, "publish", room=room.name,
                                               detail={"track_id": track.id, "kind": track.kind,
                                                       "source": track.source})
            if p.admitted:
                await room.broadcast({"type": "track_published", "track": track.describe()},
                                     exclude=p.identity)
        if new_tracks:
            await room.subscriptions.sync_all()
        return answer

    async def unpublish(self, p: Participant, track_id: int) -> bool:
        track = p.tracks.get(track_id)
        if track is None:
            return False
        await self.remove_track(p, track, notify=True)
        await self.room.subscriptions.sync_all()
        return True

    async def remove_track(self, p: Participant, track: Track, notify: bool) -> None:
        """Forget a track: its subscriptions stop, the recording finishes its file, the router drops it."""
        room = self.room
        p.tracks.pop(track.id, None)
        room.tracks.pop(track.id, None)
        room.subscriptions.deactivate_track(track.id)
        room.recording.tracks_changed()  # before the router forgets the track: its sink's last frames
        room.router.remove_track(track.id)
        if notify and p.admitted:
            await room.broadcast({"type": "track_unpublished", "track": track.describe()},
                                 exclude=p.identity)
