"""Recording path without a network: real VP8 and Opus encoded by PyAV, packetized into RTP, reordered
and partly lost, through the native jitter buffer and the muxer into WebM files that must decode."""

from __future__ import annotations

import random
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from mediasrv.recording.muxer import RecordingWriter, TrackSpec
from mediasrv.recording.pipeline import TrackRecorder, rtcp_nack

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


def deliver(packets: list[bytes], rec: TrackRecorder, sent: list[bytes], step_ms: float,
            lose: set[int]) -> None:
    """Reorders neighbours and withholds `lose` packets until the recorder NACKs them."""
    rng = random.Random(5)
    order = list(range(len(packets)))
    for i in range(0, len(order) - 1, 5):
        if rng.random() < 0.5:
            order[i], order[i + 1] = order[i + 1], order[i]
    held = {}
    now = 0.0
    for i in order:
        now += step_ms
        seq = int.from_bytes(packets[i][2:4], "big")
        if i in lose:
            held[seq] = packets[i]
        else:
            rec.push(packets[i], int(now))
        rec.tick(int(now))
        for pkt in list(sent):
            # answer NACKs like a sender with a retransmission cache
            if pkt[1] == 205:
                pid, blp = struct.unpack_from("!HH", pkt, 12)
                for s in [pid] + [(pid + b + 1) & 0xFFFF for b in range(16) if blp >> b & 1]:
                    if s in held:
                        rec.push(held.pop(s), int(now))
            sent.remove(pkt)


def test_vp8_and_opus_recorded_through_loss_and_reordering(tmp_path: Path) -> None:
    video = encode_vp8(SECONDS)
    audio = encode_opus(SECONDS)
    sent: list[bytes] = []
    writer = RecordingWriter(tmp_path)
    vrec = TrackRecorder(TrackSpec("video", "video", "VP8", 90000), writer, origin_ms=0,
                         send_rtcp=sent.append)
    arec = TrackRecorder(TrackSpec("audio", "audio", "opus", 48000), writer, origin_ms=0)
    vpk = packetize_vp8(video, 65500)  # crosses the sequence wrap
    deliver(vpk, vrec, sent, 1000 * SECONDS / len(vpk), lose={10, 11, 40})
    for i, (ts, data) in enumerate(audio):
        arec.push(rtp(100 + i, ts + 123456, i == 0, data, 111, 9), i * 20)
        arec.tick(i * 20)
    vstats, astats = vrec.finish(), arec.finish()
    results = {r.spec.key: r for r in writer.close()}
    assert writer.errors == 0
    assert vstats["recovered"] >= 3 and vstats["frames_incomplete"] == 0
    assert vstats["frames"] == len(video)
    assert astats["frames"] == len(audio)

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


def test_nack_packs_up_to_seventeen_sequence_numbers_per_entry() -> None:
    pkt = rtcp_nack(1, 2, [3, 4, 19, 20])
    assert struct.unpack("!BBHII", pkt[:12]) == (0x81, 205, 4, 1, 2)  # length in words - 1
    assert struct.unpack_from("!HHHH", pkt, 12) == (3, 0b1000_0000_0000_0001, 20, 0)
