"""Per-track recording pipeline: complete frames from a router sink -> presentation times -> writer.

Sans-IO: the recorder (recorder.py) pulls frames and the sender-report sync point from the router
and passes them in with the time; this module only does timing and hands frames to the writer.
NACK, PLI and frame assembly happen in the router's sink (native jitter buffer).

Timing (docs/recording.md, "Alignment"):
- sender time of a frame = NTP time of the publisher's last sender report
  + (frame timestamp - that report's RTP timestamp) / clock rate: where the frame sits on the
  sender's wallclock, which one publisher's audio and video share (that is lip sync);
- server time = sender time + the participant's offset, the smallest (arrival - sender time) seen
  over their first frames (the least-delayed frame), then frozen: participants with different
  sender clocks land on one server timeline;
- pts = server time - recording origin, in the track's clock. Every file of a recording shares
  the origin.
A track whose first sender report does not come within `sync_wait_ms` falls back to arrival time
(first frame at its arrival, then its RTP clock) and says so (`alignment == "arrival"`).
"""

from __future__ import annotations

import logging
from collections import Counter

from mediasrv.recording.muxer import RecordingWriter, TrackSpec

log = logging.getLogger(__name__)

Frame = tuple[int, bool, bytes, int]  # (extended RTP timestamp, keyframe, data, arrival_ms)
SyncPoint = tuple[float, int]  # (sender NTP seconds, extended RTP timestamp sampled then)

OFFSET_ESTIMATE_MS = 1000  # how long a participant's offset keeps improving before it is frozen
# Chrome sends audio sender reports every ~5 s (the first about 2.5 s in), so waiting less would
# push a freshly published microphone onto the arrival-time fallback.
SYNC_WAIT_MS = 5000
VIDEO_WAIT_MS = 5000  # longest a participant's audio waits for their first video frame
# A sender report whose NTP<->RTP mapping disagrees with the current one by more than this is not
# trusted until the next report confirms it. Consecutive reports of one stream agree to well under a
# millisecond; a disagreeing one is e.g. the router re-basing the old SSRC's report onto a restarted
# stream (new SSRC, new RTP base) before the new stream's own report arrived.
SYNC_JUMP_MS = 250

SENDER_REPORT, ARRIVAL = "sender_report", "arrival"


class SenderClock:
    """One participant's sender wallclock mapped onto the server's monotonic clock.

    Also carries what their tracks share for the start rule: how many video tracks are being
    recorded and the server time of the first video frame written.
    """

    def __init__(self, estimate_ms: int = OFFSET_ESTIMATE_MS) -> None:
        self.estimate_ms = estimate_ms
        self.offset_ms: float | None = None  # server ms - sender ms
        self.frozen = False
        self._first_arrival: int | None = None
        # Half the publisher's round trip (RRTR/DLRR), when known: the one-way delay inside the
        # least delay seen, taken off at freeze time so frames sit at their capture time.
        self.one_way_ms: float | None = None
        self.video_tracks = 0
        self.video_start_ms: float | None = None

    def observe(self, arrival_ms: int, sender_ms: float) -> None:
        """One frame's arrival against its sender time; the least-delayed one sets the offset."""
        if self.frozen:
            return
        diff = arrival_ms - sender_ms
        if self.offset_ms is None or diff < self.offset_ms:
            self.offset_ms = diff
        if self._first_arrival is None or arrival_ms < self._first_arrival:
            self._first_arrival = arrival_ms

    def ready(self, now_ms: int, force: bool = False) -> bool:
        """True once the offset is frozen (estimate window over, or `force` at end of stream)."""
        if not self.frozen and self.offset_ms is not None and self._first_arrival is not None \
                and (force or now_ms - self._first_arrival >= self.estimate_ms):
            self.frozen = True
            if self.one_way_ms is not None:
                # Participants on slower paths no longer land later than they spoke.
                self.offset_ms -= self.one_way_ms
        return self.frozen


class TrackRecorder:
    """One sink's frames -> (pts, keyframe, data) in the writer.

    Frames are held until the track's timing is settled: its sender report is known and the
    participant's offset frozen (or the fallback to arrival time is taken). With
    `audio_follows_video`, a participant's audio also waits (at most `video_wait_ms`) for their first
    video frame and starts at the same server time, so each participant's files start together.
    """

    def __init__(self, spec: TrackSpec, writer: RecordingWriter, origin_ms: int, clock: SenderClock,
                 *, sync_wait_ms: int = SYNC_WAIT_MS, video_wait_ms: int = VIDEO_WAIT_MS,
                 audio_follows_video: bool = True) -> None:
        self.spec = spec
        self.writer = writer
        self.origin_ms = origin_ms
        self.clock = clock
        self.sync_wait_ms = sync_wait_ms
        self.video_wait_ms = video_wait_ms
        self.gated = audio_follows_video and spec.kind == "audio"
        self.sync: SyncPoint | None = None
        self._last_sync_seen: SyncPoint | None = None  # what the sink last said (maybe not trusted)
        self._candidate: SyncPoint | None = None  # a disagreeing report, waiting for confirmation
        self.alignment: str | None = None  # SENDER_REPORT | ARRIVAL once settled
        self.pending: list[Frame] = []
        self.started = False
        self.stats: Counter[str] = Counter()
        self._first_seen: int | None = None  # arrival of the first frame (bounds the waits)
        self._anchor: tuple[int, int] | None = None  # (timestamp, arrival) for the fallback
        self._ended = False
        if spec.kind == "video":
            clock.video_tracks += 1
        writer.add_track(spec)

    def sender_ms(self, timestamp: int) -> float:
        assert self.sync is not None
        ntp_s, sync_ts = self.sync
        return ntp_s * 1000.0 + (timestamp - sync_ts) * 1000.0 / self.spec.clock_rate

    def _agrees(self, a: SyncPoint, b: SyncPoint) -> bool:
        predicted_ms = a[0] * 1000.0 + (b[1] - a[1]) * 1000.0 / self.spec.clock_rate
        return abs(predicted_ms - b[0] * 1000.0) <= SYNC_JUMP_MS

    def _new_sync(self, sync: SyncPoint) -> None:
        """Adopt a sender report if it continues the current mapping, or if it is the second in a
        row to contradict it (the sender's clock really moved); else hold it as a candidate."""
        if self.sync is None or self._agrees(self.sync, sync):
            self._candidate = None
        elif self._candidate is not None and self._agrees(self._candidate, sync):
            self._candidate = None
            self.stats["sender_report_jumps"] += 1
            # Kind and codec, not the key: the key names the participant.
            log.warning("recording %s/%s track: sender clock moved, following it",
                        self.spec.kind, self.spec.codec)
        else:
            self._candidate = sync
            self.stats["sender_reports_distrusted"] += 1
            return
        first = self.sync is None
        self.sync = sync
        if first and self.alignment is None:  # held frames can now inform the offset
            for ts, _, _, arrival in self.pending:
                self.clock.observe(arrival, self.sender_ms(ts))

    def push(self, frames: list[Frame], sync: SyncPoint | None, now_ms: int) -> None:
        """Frames from the sink (in order) and its current sync point; writes what is settled."""
        if sync is not None and sync != self._last_sync_seen:
            self._last_sync_seen = sync
            self._new_sync(sync)
        for frame in frames:
            self.pending.append(frame)
            if self.sync is not None and self.alignment != ARRIVAL:
                self.clock.observe(frame[3], self.sender_ms(frame[0]))
        self._release(now_ms, final=False)

    def finish(self, frames: list[Frame], now_ms: int) -> dict[str, int]:
        """End of stream: the sink's last frames; everything held is settled and written."""
        if self._ended:
            return dict(self.stats)
        self.pending.extend(frames)
        if self.sync is not None and self.alignment is None:
            for ts, _, _, arrival in frames:
                self.clock.observe(arrival, self.sender_ms(ts))
        self._release(now_ms, final=True)
        self._ended = True
        if self.spec.kind == "video":
            self.clock.video_tracks -= 1
        self.writer.end_track(self.spec.key)
        return dict(self.stats)

    def _settle(self, now_ms: int, final: bool) -> bool:
        if self.alignment is not None:
            return True
        assert self._first_seen is not None
        if self.sync is not None and self.clock.ready(now_ms, force=final):
            self.alignment = SENDER_REPORT
        elif self.sync is None and (final or now_ms - self._first_seen >= self.sync_wait_ms):
            self.alignment = ARRIVAL
            log.warning("recording %s/%s track: no sender report after %d ms, aligned by arrival time",
                        self.spec.kind, self.spec.codec, now_ms - self._first_seen)
        return self.alignment is not None

    def _waits_for_video(self, now_ms: int, final: bool) -> bool:
        assert self._first_seen is not None
        return (self.gated and not self.started and not final and self.clock.video_tracks > 0
                and self.clock.video_start_ms is None and now_ms - self._first_seen < self.video_wait_ms)

    def _server_ms(self, timestamp: int, arrival_ms: int) -> float:
        if self.alignment == SENDER_REPORT:
            assert self.clock.offset_ms is not None
            return self.sender_ms(timestamp) + self.clock.offset_ms
        if self._anchor is None:
            self._anchor = (timestamp, arrival_ms)
        ts0, arrival0 = self._anchor
        return arrival0 + (timestamp - ts0) * 1000.0 / self.spec.clock_rate

    def _release(self, now_ms: int, final: bool) -> None:
        if not self.pending:
            return
        if self._first_seen is None:
            self._first_seen = self.pending[0][3]
        if not self._settle(now_ms, final) or self._waits_for_video(now_ms, final):
            return
        rate = self.spec.clock_rate
        out: list[tuple[int, bool, bytes]] = []
        for ts, keyframe, data, arrival in self.pending:
            server = self._server_ms(ts, arrival)
            if not self.started and self.gated and self.clock.video_start_ms is not None \
                    and server < self.clock.video_start_ms:
                self.stats["frames_before_video"] += 1
                continue
            if server < self.origin_ms and self.spec.kind == "audio":
                self.stats["frames_before_origin"] += 1  # sampled before the recording started
                continue
            # Video starts at a keyframe, which is kept even if sampled a hair before the origin.
            pts = max(0, round((server - self.origin_ms) * rate / 1000.0))
            if not self.started:
                self.started = True
                if self.spec.kind == "video" and self.clock.video_start_ms is None:
                    self.clock.video_start_ms = server
            out.append((pts, keyframe, data))
        self.pending.clear()
        self.stats["frames_written"] += len(out)
        self.writer.write(self.spec.key, out)
