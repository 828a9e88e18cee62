"""The recorder: router sinks for the tracks of consenting participants, drained on a 20 ms tick.

A sink is a subscription of the room's native router whose packets go into a jitter buffer inside
the router instead of to a transport (native/src/router/): reordering, NACK and keyframe requests
happen there, on whichever datapath drives the router, and Python only pops complete frames in
batches. Each sink's frames go through a `pipeline.TrackRecorder` (timing from RTCP sender
reports) into the writer, never decoded.

The room tells the recording when its tracks change (`RoomRecording.tracks_changed`, called before
the router forgets a track, so a sink's last frames are still collected).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from mediasrv.clock import now_ms
from mediasrv.recording.consent import RecordingConsent
from mediasrv.recording.muxer import FORMATS, RecordingWriter, TrackSpec
from mediasrv.recording.pipeline import ARRIVAL, SENDER_REPORT, SenderClock, TrackRecorder
from mediasrv.recording.recorded_room import RecordedRoom, RecordedTrack
from mediasrv.recording.recording_store import RecordingStore

log = logging.getLogger(__name__)
TICK_S = 0.02
TARGET_DELAY_MS = 300
# codec name as negotiated (lower case) -> the name router.add_sink takes
SINK_CODECS = {"vp8": "VP8", "h264": "H264", "opus": "opus"}
NOT_MEDIA = frozenset({"rtx", "red", "ulpfec", "flexfec-03", "cn", "telephone-event"})
# Process totals, for /metrics (mediasrv_recording_*); per recording in Recorder.stats.
TOTALS: Counter[str] = Counter()


def recordable_codec(codecs: Sequence[tuple[Any, ...]]) -> tuple[str, int, int] | None:
    """(sink codec name, publisher payload type, clock rate) of the codec the publisher sends: the
    first media codec it negotiated. None when that codec cannot be stored without transcoding."""
    for codec in codecs:
        pt, name, clock_rate = codec[0], str(codec[1]).lower(), codec[2]
        if name in NOT_MEDIA:
            continue
        if name not in FORMATS:
            return None
        return SINK_CODECS[name], int(pt), int(clock_rate)
    return None


@dataclasses.dataclass
class _Sink:
    sub: int
    track_id: int
    owner: str
    recorder: TrackRecorder


class Recorder:
    def __init__(self, room: RecordedRoom, store: RecordingStore, recording_id: str,
                 consent: RecordingConsent, *, one_file_per_participant: bool = False) -> None:
        self.room, self.store, self.recording_id, self.consent = room, store, recording_id, consent
        # A recorded message: the sender's tracks muxed into one file (TrackSpec.group).
        self.one_file_per_participant = one_file_per_participant
        self.owners: dict[str, str] = {}  # writer key -> participant
        # Straight into the encrypted blob store: no plaintext file at any point.
        self.writer: RecordingWriter = store.new_writer(recording_id, owners=self.owners)
        self.origin_ms = now_ms()
        self.sinks: dict[int, _Sink] = {}  # by track id
        self.clocks: dict[str, SenderClock] = {}  # by participant: one sender clock each
        self.unrecordable: set[int] = set()  # tracks whose codec cannot be stored as is
        self.stats: Counter[str] = Counter()
        self._keys: Counter[str] = Counter()
        self._ticker: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self) -> None:
        self.update()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def wanted(self) -> set[int]:
        """Tracks to record: published, unmuted, by an admitted participant who consented."""
        state = self.consent.state
        if state is None:
            return set()
        out = set()
        for tid, track in self.room.tracks.items():
            owner = self.room.participants.get(track.owner)
            if owner is not None and owner.admitted and not track.muted and state.may_record(track.owner):
                out.add(tid)
        return out

    def update(self) -> None:
        """Add sinks for newly wanted tracks, finish the sinks of tracks no longer wanted."""
        if self._stopped:
            return
        wanted = self.wanted()
        for tid in sorted(set(self.sinks) - wanted, key=self._video_first):
            self._end(tid)
        for tid in sorted(wanted - set(self.sinks) - self.unrecordable):
            self._add(self.room.tracks[tid])

    def _video_first(self, tid: int) -> int:
        # A participant's audio start waits for their video: settle video before audio.
        sink = self.sinks.get(tid)
        return 0 if sink is not None and sink.recorder.spec.kind == "video" else 1

    def _add(self, track: RecordedTrack) -> None:
        codec = recordable_codec(track.codecs)
        if codec is None:
            self.unrecordable.add(track.id)
            self.stats["tracks_unrecordable"] += 1
            log.warning("recording %s: track %d has no codec we can store without transcoding (%s)",
                        self.recording_id, track.id, [c[1] for c in track.codecs])
            return
        name, payload_type, clock_rate = codec
        sub = self.room.new_subscription_id()
        try:
            self.room.router.add_sink(sub, track.id, name, payload_type, target_delay_ms=TARGET_DELAY_MS)
        except (ValueError, KeyError) as exc:
            self.unrecordable.add(track.id)
            log.warning("recording %s: no sink for track %d: %s", self.recording_id, track.id, exc)
            return
        base = f"{track.owner}-{track.source}-{track.id}"
        self._keys[base] += 1
        key = base if self._keys[base] == 1 else f"{base}-{self._keys[base]}"
        spec = TrackSpec(key=key, kind=track.kind, codec=name, clock_rate=clock_rate,
                         group=track.owner if self.one_file_per_participant else None)
        clock = self.clocks.setdefault(track.owner, SenderClock())
        self.sinks[track.id] = _Sink(sub, track.id, track.owner,
                                     TrackRecorder(spec, self.writer, self.origin_ms, clock))
        self.owners[key] = track.owner
        self.stats["tracks"] += 1

    def _end(self, track_id: int) -> None:
        sink = self.sinks.pop(track_id)
        router = self.room.router
        try:
            given_up = router.sink_stats(sink.sub)
            frames = router.finish_sink(sink.sub)
        except (KeyError, ValueError):  # the router forgot it already: keep what was written
            given_up, frames = {}, []
        self._account(sink.recorder, sink.recorder.finish(frames, now_ms()), given_up)
        if not any(s.owner == sink.owner for s in self.sinks.values()):
            # Nothing of theirs left: if they come back (maybe from another device, another clock),
            # their offset is estimated afresh.
            self.clocks.pop(sink.owner, None)

    def _account(self, rec: TrackRecorder, stats: dict[str, int], sink_stats: dict[str, Any]) -> None:
        counts = {
            "frames_recorded": stats.get("frames_written", 0),
            "frames_given_up": int(sink_stats.get("frames_incomplete", 0))
            + int(sink_stats.get("frames_undecodable", 0)),
            "frames_before_start": stats.get("frames_before_video", 0) + stats.get("frames_before_origin", 0),
            "tracks_aligned_by_sender_report": int(rec.alignment == SENDER_REPORT),
            "tracks_aligned_by_arrival": int(rec.alignment == ARRIVAL),
            "sender_reports_distrusted": stats.get("sender_reports_distrusted", 0),
        }
        self.stats.update(counts)
        TOTALS.update(counts)

    async def _tick(self) -> None:
        while True:
            try:
                await asyncio.sleep(TICK_S)
                self.drain(now_ms())
            except asyncio.CancelledError:
                return
            except Exception:  # one bad tick must not end the recording
                log.exception("recording %s: tick failed", self.recording_id)

    def drain(self, now: int) -> None:
        """Pull every sink's complete frames (video first, see _video_first)."""
        router = self.room.router
        for tid in sorted(self.sinks, key=self._video_first):
            sink = self.sinks[tid]
            try:
                frames = router.sink_frames(sink.sub, now)
                sync = router.sink_sync(sink.sub)
            except (KeyError, ValueError):
                log.warning("recording %s: sink of track %d vanished", self.recording_id, tid)
                self._end(tid)
                continue
            clock = sink.recorder.clock
            if not clock.frozen:
                with contextlib.suppress(KeyError, ValueError):
                    rtt = router.track_stats(sink.track_id)["rtt"]  # seconds, from the publisher's DLRR
                    if rtt is not None:
                        clock.one_way_ms = rtt * 500
            try:
                sink.recorder.push(frames, sync, now)
            except Exception:  # one track's trouble must not hold up the others
                self.stats["frames_dropped_on_error"] += len(frames)
                log.exception("recording %s: track %d", self.recording_id, tid)

    async def abort(self) -> None:
        """A start that failed: release the sinks and the writer thread, keep nothing."""
        self._stopped = True
        if self._ticker is not None:
            self._ticker.cancel()
        for sink in self.sinks.values():
            with contextlib.suppress(KeyError, ValueError):  # the router forgot it already
                self.room.router.finish_sink(sink.sub)
        self.sinks.clear()
        for result in await asyncio.to_thread(self.writer.close):
            if result.blob_id is not None:
                self.store.blobs.delete(result.blob_id)

    async def stop(self) -> list[dict[str, Any]]:
        """End the recording: finish every sink, seal the files."""
        self._stopped = True
        if self._ticker is not None:
            self._ticker.cancel()
        for tid in sorted(self.sinks, key=self._video_first):
            try:
                self._end(tid)
            except Exception:  # the other tracks' files are still sealed and filed
                log.exception("recording %s: ending track %d", self.recording_id, tid)
        results = await asyncio.to_thread(self.writer.close)
        writer_counts = {"frames_dropped_backlog": self.writer.frames_dropped, "writer_errors": self.writer.errors,
                         "frames_rejected": self.writer.frames_rejected}
        self.stats.update(writer_counts)
        TOTALS.update(writer_counts)
        log.info("recording %s stopped: %s", self.recording_id, dict(self.stats))
        files = []
        for result in results:
            f = await self.store.add_file(self.recording_id, self.owners.get(result.spec.key, ""), result)
            if f is not None:
                files.append(f)
        await self.store.finish(self.recording_id)
        return [dataclasses.asdict(f) for f in files]
