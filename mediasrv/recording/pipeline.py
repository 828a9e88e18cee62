"""Per-track recording pipeline: RTP packets -> native jitter buffer -> timestamped frames -> writer.

Audio/video alignment is by arrival time: each track's first frame is placed at the moment it arrived
relative to the recording origin, later frames follow the track's own RTP clock. (Sender-report based
alignment is not wired yet; see docs/recording.md.)
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import mediasrv_native

from .muxer import RecordingWriter, TrackSpec

RTCP_RTPFB, RTCP_PSFB = 205, 206


def rtcp_nack(sender_ssrc: int, media_ssrc: int, seqs: list[int]) -> bytes:
    """Generic NACK (RFC 4585 6.2.1): one FCI per 17-packet window."""
    fcis = []
    seqs = sorted(set(seqs))
    while seqs:
        pid, blp = seqs[0], 0
        rest = []
        for s in seqs[1:]:
            d = (s - pid) & 0xFFFF
            if 1 <= d <= 16:
                blp |= 1 << (d - 1)
            else:
                rest.append(s)
        fcis.append(struct.pack("!HH", pid, blp))
        seqs = rest
    length = 2 + len(fcis)
    return struct.pack("!BBHII", 0x80 | 1, RTCP_RTPFB, length, sender_ssrc, media_ssrc) + b"".join(fcis)


def rtcp_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80 | 1, RTCP_PSFB, 2, sender_ssrc, media_ssrc)


class TrackRecorder:
    """Feeds one received track into the writer; `send_rtcp` carries NACK and PLI back upstream."""

    def __init__(self, spec: TrackSpec, writer: RecordingWriter, origin_ms: int,
                 send_rtcp: Callable[[bytes], None] | None = None, sender_ssrc: int = 1,
                 target_delay_ms: int = 300, keep: Callable[[int], bool] | None = None,
                 on_first_frame: Callable[[int], None] | None = None) -> None:
        self.spec = spec
        self.writer = writer
        self.origin_ms = origin_ms
        self.send_rtcp = send_rtcp
        self.sender_ssrc = sender_ssrc
        self.buffer = mediasrv_native.JitterBuffer(spec.codec, target_delay_ms=target_delay_ms)
        self.media_ssrc: int | None = None
        self._first: tuple[int, int] | None = None  # (extended RTP ts, pts) of the first frame
        # keep(arrival_ms): False drops a frame before the track's first (aligns a participant's
        # audio with the first video frame, which must wait for a keyframe)
        self.keep = keep
        self.on_first_frame = on_first_frame
        writer.add_track(spec)

    def push(self, packet: bytes, now_ms: int) -> None:
        if len(packet) >= 12:
            self.media_ssrc = int.from_bytes(packet[8:12], "big")
        self.buffer.push(packet, now_ms)

    def _pts(self, timestamp: int, arrival_ms: int) -> int:
        if self._first is None:
            pts0 = max(0, (arrival_ms - self.origin_ms) * self.spec.clock_rate // 1000)
            self._first = (timestamp, pts0)
        ts0, pts0 = self._first
        return pts0 + (timestamp - ts0)

    def _emit(self, frames: list[tuple[int, bool, bytes, int]]) -> None:
        if self._first is None and frames:
            while self.keep is not None and frames and not self.keep(frames[0][3]):
                frames.pop(0)
            if frames and self.on_first_frame is not None:
                self.on_first_frame(frames[0][3])
        self.writer.write(self.spec.key, [(self._pts(ts, arr), key, data) for ts, key, data, arr in frames])

    def tick(self, now_ms: int) -> None:
        """Release complete frames and send due NACK / PLI; call every few tens of milliseconds."""
        self._emit(self.buffer.pop_frames(now_ms))
        if self.send_rtcp is None or self.media_ssrc is None:
            return
        for kind, seqs in self.buffer.poll(now_ms):
            if kind == "nack":
                self.send_rtcp(rtcp_nack(self.sender_ssrc, self.media_ssrc, seqs))
            else:
                self.send_rtcp(rtcp_pli(self.sender_ssrc, self.media_ssrc))

    def finish(self) -> dict[str, int]:
        self._emit(self.buffer.flush())
        self.writer.end_track(self.spec.key)
        return dict(self.buffer.stats())
