"""What a recording must survive in front of patients: a publisher that restarts its stream under a new
SSRC, hostile or odd bitstream headers, a slow disk, and a stop that races the start."""

from __future__ import annotations

import struct

import mediasrv_native
import pytest

from mediasrv.recording.muxer import TrackSpec
from mediasrv.recording.pipeline import SENDER_REPORT, SenderClock, TrackRecorder

from .test_alignment import Writer
from .test_pipeline import encode_vp8, packetize_vp8
from .test_router_sink import (
    DELAY_MS,
    PUB,
    T0_MS,
    VBASE,
    VIDEO_SINK,
    VIDEO_TRACK,
    VSSRC,
    sender_report,
)

VSSRC2 = 0x3333
VBASE2 = 1_234_567  # the restarted stream's random RTP base
NTP0 = 3_900_000_000.0


def _video_packets(frames: list[tuple[int, bytes]], base: int, seq0: int, ssrc: int) -> list[tuple[float, bytes]]:
    """(arrival ms, packet) for frames sampled at their (sender) timestamp, with RTP base `base`."""
    out = []
    for p in packetize_vp8([((ts + base) & 0xFFFFFFFF, d) for ts, d in frames], seq0):
        ts = (int.from_bytes(p[4:8], "big") - base) & 0xFFFFFFFF
        out.append((T0_MS + ts / 90 + DELAY_MS, bytes(p[:8]) + struct.pack("!I", ssrc) + p[12:]))
    return out


def test_publisher_restarting_under_a_new_ssrc_keeps_every_frame_at_its_sampling_time() -> None:
    """The browser restarts its encoder under a new SSRC (new RTP base) at a keyframe; the old SSRC's
    sender report must not be applied to the new stream's timestamps before its own report comes."""
    video = encode_vp8(3)  # keyframes at 0 s and 1.5 s (frame 45)
    switch = 45
    assert video[switch][0] == 135_000
    events = _video_packets(video[:switch], VBASE, 1000, VSSRC)
    events += _video_packets(video[switch:], VBASE2 - 135_000, 40_000, VSSRC2)
    events.append((T0_MS + 100 + DELAY_MS, sender_report(VSSRC, NTP0 + 0.1, VBASE + 9000)))
    # The new stream's first report: sampled at 2.5 s, i.e. 1 s after the restart.
    events.append((T0_MS + 2500 + DELAY_MS, sender_report(VSSRC2, NTP0 + 2.5, VBASE2 + 90_000)))
    events.sort(key=lambda e: e[0])

    r = mediasrv_native.Router(seed=7)
    r.add_publisher(PUB, 0x5EED, {})
    r.add_track(VIDEO_TRACK, PUB, "video", "0", [(96, "VP8", 90000, None)], [VSSRC, VSSRC2])
    r.add_sink(VIDEO_SINK, VIDEO_TRACK, "VP8", 96)
    w, origin = Writer(), T0_MS - 200
    rec = TrackRecorder(TrackSpec("v", "video", "VP8", 90000), w, origin, SenderClock())
    now = T0_MS
    while events or now < T0_MS + 4000:
        now += 20
        while events and events[0][0] <= now:
            t, packet = events.pop(0)
            if packet[1] == 200:
                r.handle_rtcp(PUB, packet, int(t))
            else:
                r.route_rtp(PUB, packet, int(t))
        rec.push(r.sink_frames(VIDEO_SINK, now), r.sink_sync(VIDEO_SINK), now)
    rec.finish(r.finish_sink(VIDEO_SINK), now)

    assert rec.alignment == SENDER_REPORT
    got = w.frames["v"]
    assert len(got) == len(video)
    # Every frame at its sampling time + the delay after the origin: before the switch, between the
    # switch and the new stream's first report (the old report no longer describes the timestamps),
    # and after it. 25 ms: the router re-bases the new stream from arrival times in whole ms.
    for i, (pts, _, _) in enumerate(got):
        assert pts / 90 == pytest.approx(200 + DELAY_MS + video[i][0] / 90, abs=25), f"frame {i}"
