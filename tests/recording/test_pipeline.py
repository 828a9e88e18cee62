"""Recording path without a network: real VP8 and Opus encoded by PyAV, packetized into RTP, reordered
and partly lost, assembled by the native jitter buffer (what a router sink runs, NACKs answered from
the sent packets), timed from sender reports by `TrackRecorder` and muxed into WebM files that must
decode, with the durations and the audio/video start the sender produced."""

from __future__ import annotations

import random
import struct
from fractions import Fraction
from pathlib import Path

import av
import mediasrv_native
import numpy as np
import pytest

from mediasrv.recording.muxer import RecordingWriter, TrackSpec
from mediasrv.recording.pipeline import SENDER_REPORT, SenderClock, TrackRecorder

FPS = 30
SECONDS = 3


def encode_vp8(seconds: int) -> list[tuple[int, bytes]]:
    ctx = av.CodecContext.create("libvpx", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 320, 240, "yuv420p"
    ctx.time_base = Fraction(1, FPS)
    ctx.options = {"deadline": "realtime", "cpu-used": "8"}
    ctx.gop_size = 45
    out = []
    for i in range(seconds * FPS):
        img = np.full((240, 320, 3), (i * 4) % 255, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [(p.pts * 3000, bytes(p)) for p in ctx.encode(frame)]
    out += [(p.pts * 3000, bytes(p)) for p in ctx.encode(None)]
    return out


def encode_opus(seconds: int) -> list[tuple[int, bytes]]:
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.layout, ctx.format = 48000, "stereo", "s16"
    out = []
    for i in range(seconds * 50):
        samples = (np.sin(np.arange(960) / 10.0 + i) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(samples[None, :], 2, axis=0).reshape(1, -1),
                                           format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48000, i * 960
        out += [(p.pts, bytes(p)) for p in ctx.encode(frame)]
    return out


def rtp(seq: int, ts: int, marker: bool, payload: bytes, pt: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF,
                       ssrc) + payload


def packetize_vp8(frames: list[tuple[int, bytes]], seq0: int) -> list[bytes]:
    out, seq = [], seq0
    for ts, data in frames:
        chunks = [data[i:i + 900] for i in range(0, len(data), 900)]
        for i, chunk in enumerate(chunks):
            out.append(rtp(seq, ts, i == len(chunks) - 1, (b"\x10" if i == 0 else b"\x00") + chunk, 96, 7))
            seq += 1
    return out


class Sink:
    """A jitter buffer fed like the router feeds a sink: NACKs answered from the held packets."""

    def __init__(self, codec: str) -> None:
        self.jb = mediasrv_native.JitterBuffer(codec, target_delay_ms=300)
        self.held: dict[int, bytes] = {}

    def push(self, packet: bytes, now: int) -> None:
        self.jb.push(packet, now)

    def frames(self, now: int) -> list[tuple[int, bool, bytes, int]]:
        for kind, seqs in self.jb.poll(now):
            for s in seqs if kind == "nack" else []:
                if s in self.held:
                    self.jb.push(self.held.pop(s), now)
        return self.jb.pop_frames(now)


def schedule(packets: list[bytes], rate: int, base: int, t0_ms: int, delay_ms: int) -> list[tuple[float, bytes]]:
    """(arrival ms, packet): sent when sampled (t0_ms + (ts - base) / rate), paced 0.2 ms apart,
    arriving `delay_ms` later; some packets are held back behind their successor."""
    out, last = [], -1.0
    for p in packets:
        ts = int.from_bytes(p[4:8], "big")
        t = t0_ms + delay_ms + ((ts - base) & 0xFFFFFFFF) * 1000 / rate
        last = max(t, last + 0.2)
        out.append((last, p))
    rng = random.Random(5)
    for i in range(0, len(out) - 1, 5):
        if rng.random() < 0.5:
            (_, pa), (tb, pb) = out[i], out[i + 1]
            out[i], out[i + 1] = (tb, pb), (tb + 0.1, pa)  # held back, never sent early
    return out


def test_vp8_and_opus_recorded_through_loss_and_reordering(tmp_path: Path) -> None:
    video = encode_vp8(SECONDS)
    opus = encode_opus(SECONDS)
    audio = [(ts - opus[0][0], data) for ts, data in opus]  # sampled from 0 (no encoder delay)
    writer = RecordingWriter(tmp_path)
    clock = SenderClock()
    origin = 1000
    vrec = TrackRecorder(TrackSpec("video", "video", "VP8", 90000), writer, origin, clock)
    arec = TrackRecorder(TrackSpec("audio", "audio", "opus", 48000), writer, origin, clock)
    vsink, asink = Sink("VP8"), Sink("opus")
    vbase, abase = 3_000_000_000, 123456  # the video timestamps cross the 32-bit wrap
    vpk = packetize_vp8([((ts + vbase) & 0xFFFFFFFF, data) for ts, data in video], 65500)  # and the seq
    apk = [rtp(100 + i, ts + abase, i == 0, data, 111, 9) for i, (ts, data) in enumerate(audio)]
    # Both tracks sampled from server time 1.1 s on, when the sender's NTP clock read 5000 s. Sink
    # timestamps are extended (2^32 + first), so the sync points are in that space too.
    v_sync, a_sync = (5000.0, 2**32 + vbase), (5000.0, 2**32 + abase)
    lose = {vpk[i] for i in (10, 11, 40)}
    events = sorted([(t, p, vsink) for t, p in schedule(vpk, 90000, vbase, 1100, 12)]
                    + [(t, p, asink) for t, p in schedule(apk, 48000, abase, 1100, 5)], key=lambda e: e[0])
    now = 1100
    while events:
        now += 20
        while events and events[0][0] <= now:
            t, packet, sink = events.pop(0)
            if packet in lose:
                sink.held[int.from_bytes(packet[2:4], "big")] = packet
            else:
                sink.push(packet, int(t))  # the router stamps each packet as it comes in
        for rec, sink, sync in ((vrec, vsink, v_sync), (arec, asink, a_sync)):
            rec.push(sink.frames(now), sync, now)
    end = now + 500
    vstats = vrec.finish(vsink.frames(end) + vsink.jb.flush(), end)
    astats = arec.finish(asink.frames(end) + asink.jb.flush(), end)
    results = {r.spec.key: r for r in writer.close()}
    assert writer.errors == 0
    assert vsink.jb.stats()["recovered"] >= 3 and vsink.jb.stats()["frames_incomplete"] == 0
    assert vrec.alignment == arec.alignment == SENDER_REPORT
    assert vstats["frames_written"] == len(video)
    assert astats["frames_written"] == len(audio)
    # both were sampled from 1.1 s; the least-delayed frames (audio) took 5 ms: 0.105 s after the origin
    assert results["video"].start_s == pytest.approx(0.105, abs=0.002)
    assert results["audio"].start_s == pytest.approx(0.105, abs=0.002)

    decoded = {}
    for key, r in results.items():
        assert r.path.suffix == ".webm"
        with av.open(str(r.path)) as c:
            s = c.streams[0]
            n = 0
            for packet in c.demux(s):
                for _ in packet.decode():
                    n += 1
            decoded[key] = (n, float(c.duration or 0) / av.time_base)
    assert decoded["video"][0] == len(video), "every recorded video frame decodes"
    assert decoded["audio"][0] == len(audio)
    assert decoded["video"][1] == pytest.approx(SECONDS, abs=0.5)
    assert decoded["audio"][1] == pytest.approx(SECONDS, abs=0.5)
