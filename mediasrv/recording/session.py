"""The recorder: a hidden subscriber of the room, answered by an in-process aiortc client.

Recording is one more subscription, so the forwarding path stays untouched whichever datapath runs
(Python hook or native plane): the server offers the recorder the tracks of the participants who
consented, the recorder's client connection receives them over loopback, and each track's RTP goes
through a native jitter buffer into the muxer (`pipeline.TrackRecorder`), never decoded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.sdp import SessionDescription

from ..sfu.native_plane import LOCAL_CLIENT
from .consent import RecordingConsent
from .muxer import FORMATS, RecordingWriter, TrackSpec
from .pipeline import TrackRecorder
from .store import RecordingStore

if TYPE_CHECKING:
    from ..sfu.rooms import Participant, Room

log = logging.getLogger(__name__)
# "/" cannot appear in a token identity, so nobody can join (or replace) the recorder.
RECORDER_IDENTITY = "recorder/1"
TICK_S = 0.02
VIDEO_WAIT_MS = 5000  # longest a participant's audio waits for their first video frame


def now_ms() -> int:
    return int(time.monotonic() * 1000)


class Recorder:
    def __init__(self, room: Room, store: RecordingStore, recording_id: str,
                 consent: RecordingConsent) -> None:
        self.room, self.store, self.recording_id, self.consent = room, store, recording_id, consent
        self.writer = RecordingWriter(store.new_work_dir(recording_id))
        self.origin_ms = now_ms()
        self.pc: RTCPeerConnection | None = None
        self.participant: Participant | None = None
        self.streams: dict[int, tuple[dict[str, Any], dict[int, tuple[str, int]]]] = {}  # ssrc → (track, pt→codec)
        self.tracks: dict[int, TrackRecorder] = {}  # by track id
        self.owners: dict[int, str] = {}
        self.video_start: dict[str, int] = {}  # participant → arrival of their first video frame
        self._dtls: Any = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.participant = await self.room.join_hidden(RECORDER_IDENTITY, self._on_event)
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        await self.update()

    async def update(self) -> None:
        """Subscribe to exactly the tracks of participants who consented."""
        p = self.participant
        if p is None:
            return
        state = self.consent.state
        p.wanted = {tid for tid, t in self.room.tracks.items() if state and state.may_record(t.owner)}
        await self.room.sync_subscriptions(p)

    async def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "offer":
            await self._answer(event)
        elif kind in ("track_published", "track_unpublished", "participant_left", "admitted"):
            await self.update()

    async def _answer(self, event: dict[str, Any]) -> None:
        token = LOCAL_CLIENT.set(True)
        try:
            if self.pc is None:
                self.pc = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
            await self.pc.setRemoteDescription(RTCSessionDescription(event["sdp"], "offer"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        finally:
            LOCAL_CLIENT.reset(token)
        for t in self.pc.getTransceivers():
            dtls = t.receiver.transport
            if dtls is not None and dtls is not self._dtls:
                self._dtls = dtls
                dtls._handle_rtp_data = self._on_rtp  # type: ignore[method-assign]
                dtls._handle_rtcp_data = self._on_rtcp  # type: ignore[method-assign]
        self._map_streams(event["sdp"], event.get("tracks") or {})
        assert self.participant is not None
        await self.room.subscriber_answer(self.participant, self.pc.localDescription.sdp)

    def _map_streams(self, sdp: str, tracks: dict[str, dict[str, Any]]) -> None:
        for m in SessionDescription.parse(sdp).media:
            info = tracks.get(m.rtp.muxId or "")
            if info is None or m.direction == "inactive":
                continue
            codecs = {c.payloadType: (c.mimeType.split("/", 1)[1], c.clockRate) for c in m.rtp.codecs}
            for s in m.ssrc:
                self.streams[s.ssrc] = (info, codecs)

    async def _on_rtp(self, data: bytes, arrival_time_ms: int) -> None:
        if len(data) < 12:
            return
        entry = self.streams.get(int.from_bytes(data[8:12], "big"))
        if entry is None:
            return
        info, codecs = entry
        rec = self.tracks.get(info["id"])
        if rec is None:
            codec = codecs.get(data[1] & 0x7F)
            if codec is None or codec[0].lower() not in FORMATS:
                return  # rtx, or a codec we cannot store without transcoding
            spec = TrackSpec(key=f"{info['participant']}-{info['source']}-{info['id']}", kind=info["kind"],
                             codec=codec[0], clock_rate=codec[1])
            owner = info["participant"]
            rec = self.tracks[info["id"]] = TrackRecorder(
                spec, self.writer, self.origin_ms, send_rtcp=self._send_rtcp,
                keep=self._audio_gate(owner) if info["kind"] == "audio" else None,
                on_first_frame=(lambda arrival, o=owner: self.video_start.setdefault(o, arrival))
                if info["kind"] == "video" else None)
            self.owners[info["id"]] = info["participant"]
        rec.push(data, now_ms())

    def _audio_gate(self, owner: str):  # type: ignore[no-untyped-def]
        """A participant's audio starts with their first video frame (which waits for a keyframe),
        so both files of a participant start together; audio-only participants are not held."""
        first_seen: list[int] = []

        def keep(arrival_ms: int) -> bool:
            has_video = any(t.owner == owner and t.kind == "video" for t in self.room.tracks.values())
            start = self.video_start.get(owner)
            if not first_seen:
                first_seen.append(arrival_ms)
            gave_up = arrival_ms - first_seen[0] > VIDEO_WAIT_MS
            return not has_video or gave_up or (start is not None and arrival_ms >= start)

        return keep

    async def _on_rtcp(self, data: bytes) -> None:
        pass  # sender reports: alignment uses arrival times for now (docs/recording.md)

    def _send_rtcp(self, packet: bytes) -> None:
        dtls = self._dtls
        if dtls is not None:
            task = asyncio.ensure_future(dtls._send_rtp(packet))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _tick(self) -> None:
        try:
            while True:
                await asyncio.sleep(TICK_S)
                now = now_ms()
                for rec in list(self.tracks.values()):
                    rec.tick(now)
        except asyncio.CancelledError:
            pass

    async def stop(self) -> list[dict[str, Any]]:
        """End the recording: flush every track, seal the files, leave the room."""
        if self._ticker is not None:
            self._ticker.cancel()
        if self.participant is not None:
            await self.room.leave(self.participant.identity, reason="recording_stopped")
            self.participant = None
        if self.pc is not None:
            await self.pc.close()
        for rec in self.tracks.values():
            rec.finish()
        results = await asyncio.to_thread(self.writer.close)
        files = []
        owners = {rec.spec.key: self.owners[tid] for tid, rec in self.tracks.items()}
        for result in results:
            f = await self.store.add_file(self.recording_id, owners.get(result.spec.key, ""), result)
            if f is not None:
                files.append(f)
        await self.store.finish(self.recording_id)
        return [dataclasses.asdict(f) for f in files]
