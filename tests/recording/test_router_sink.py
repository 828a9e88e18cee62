"""A real `mediasrv_native.Router` with recording sinks: a publisher's VP8 and Opus RTP and its RTCP
sender reports go in through route_rtp / handle_rtcp (as either datapath feeds them); the recorder's
side (`sink_frames`, `sink_sync`, `TrackRecorder`) must place audio and video as the sender sampled
them, across the 32-bit timestamp wrap."""

from __future__ import annotations

import struct

import mediasrv_native
import pytest

from mediasrv.recording.muxer import TrackSpec
from mediasrv.recording.pipeline import SENDER_REPORT, SenderClock, TrackRecorder

from .router_feed import replay
from .test_alignment import Writer
from .test_pipeline import encode_opus, encode_vp8, packetize_vp8, rtp

PUB = 1
VIDEO_TRACK, AUDIO_TRACK = 10, 11
VIDEO_SINK, AUDIO_SINK = 100, 101
VSSRC, ASSRC = 0x1111, 0x2222
NTP0 = 3_900_000_000.0  # the sender's wallclock (NTP seconds) at its first sample
T0_MS = 50_000  # server clock then
DELAY_MS = 7  # network delay of every packet
VBASE, ABASE = 2**32 - 45_000, 77_777  # the video RTP clock wraps half a second in


def sender_report(ssrc: int, ntp_s: float, rtp_ts: int) -> bytes:
    ntp = int(ntp_s * 2**32)
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, ntp >> 32, ntp & 0xFFFFFFFF,
                       rtp_ts & 0xFFFFFFFF, 0, 0)


def router_with_sinks() -> mediasrv_native.Router:
    r = mediasrv_native.Router(seed=7)
    r.add_publisher(PUB, 0x5EED, {})
    r.add_track(VIDEO_TRACK, PUB, "video", "0", [(96, "VP8", 90000, None), (97, "rtx", 90000, 96)], [VSSRC])
    r.add_track(AUDIO_TRACK, PUB, "audio", "1", [(111, "opus", 48000, None)], [ASSRC])
    r.add_sink(VIDEO_SINK, VIDEO_TRACK, "VP8", 96)
    r.add_sink(AUDIO_SINK, AUDIO_TRACK, "opus", 111)
    return r


def test_sink_frames_and_sender_reports_align_audio_and_video() -> None:
    video = encode_vp8(2)  # 90 kHz timestamps from 0, 30 fps
    opus = encode_opus(2)
    audio = [(ts - opus[0][0], data) for ts, data in opus]
    # (server arrival ms, transport packet) in time order; each packet leaves when its frame is sampled
    events: list[tuple[float, bytes]] = []
    for p in packetize_vp8([((ts + VBASE) & 0xFFFFFFFF, d) for ts, d in video], 1000):
        ts = (int.from_bytes(p[4:8], "big") - VBASE) & 0xFFFFFFFF
        events.append((T0_MS + ts / 90 + DELAY_MS, bytes(p[:8]) + struct.pack("!I", VSSRC) + p[12:]))
    for i, (ts, data) in enumerate(audio):
        events.append((T0_MS + ts / 48 + DELAY_MS, rtp(500 + i, ts + ABASE, i == 0, data, 111, ASSRC)))
    # Sender reports, sampled at 0.1 s (video: before the wrap) and 0.3 s (audio), sent then
    events.append((T0_MS + 100 + DELAY_MS, sender_report(VSSRC, NTP0 + 0.1, VBASE + 9000)))
    events.append((T0_MS + 300 + DELAY_MS, sender_report(ASSRC, NTP0 + 0.3, ABASE + 14400)))
    events.sort(key=lambda e: e[0])

    r = router_with_sinks()
    w, clock = Writer(), SenderClock()
    origin = T0_MS - 200
    vrec = TrackRecorder(TrackSpec("v", "video", "VP8", 90000), w, origin, clock)
    arec = TrackRecorder(TrackSpec("a", "audio", "opus", 48000), w, origin, clock)
    syncs: dict[int, tuple[float, int] | None] = {}
    forwarded: list[object] = []
    for now in replay(r, PUB, events, T0_MS, until_ms=T0_MS + 3000, forwarded=forwarded):
        for sub, rec in ((VIDEO_SINK, vrec), (AUDIO_SINK, arec)):
            syncs[sub] = r.sink_sync(sub)
            rec.push(r.sink_frames(sub, now), syncs[sub], now)
    vrec.finish(r.finish_sink(VIDEO_SINK), now)
    arec.finish(r.finish_sink(AUDIO_SINK), now)
    assert forwarded == [], "a sink sends nothing to any transport"

    v_sync, a_sync = syncs[VIDEO_SINK], syncs[AUDIO_SINK]
    assert v_sync is not None and a_sync is not None
    assert v_sync[0] == pytest.approx(NTP0 + 0.1, abs=1e-6) and a_sync[0] == pytest.approx(NTP0 + 0.3, abs=1e-6)
    assert vrec.alignment == arec.alignment == SENDER_REPORT
    v, a = w.frames["v"], w.frames["a"]
    assert len(v) == len(video) and len(a) == len(audio)
    assert [key for _, key, _ in v][:1] == [True], "the video file starts at a keyframe"
    # Every frame sits at its sampling time + the least delay after the origin, whichever RTP base
    # it came with and across the wrap (within the 1 ms resolution of arrival times)...
    for i, (pts, _, _) in enumerate(v):
        assert pts / 90 == pytest.approx(200 + DELAY_MS + video[i][0] / 90, abs=1.0)
    for i, (pts, _, _) in enumerate(a):
        assert pts / 48 == pytest.approx(200 + DELAY_MS + audio[i][0] / 48, abs=1.0)
    # ...and frames sampled together (every 100 ms: video frame 3k, audio frame 5k) line up exactly.
    for k in range(len(video) // 3):
        assert v[3 * k][0] / 90 == pytest.approx(a[5 * k][0] / 48, abs=0.05)


def test_sink_requests_are_checked() -> None:
    r = router_with_sinks()
    with pytest.raises(ValueError):
        r.add_sink(200, VIDEO_TRACK, "VP9", 96)
    with pytest.raises(ValueError):
        r.add_sink(201, VIDEO_TRACK, "opus", 96)  # not the codec of that payload type
    with pytest.raises((ValueError, KeyError)):
        r.add_sink(202, 999, "VP8", 96)
    assert r.sink_sync(VIDEO_SINK) is None, "no sender report yet"
    with pytest.raises(KeyError):
        r.sink_frames(12345, 0)
