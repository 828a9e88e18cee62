"""The muxer writes real VP8/H.264 + Opus frames, without decoding, into encrypted blobs: grouped tracks
become one playable file with correct, interleaved timestamps; ungrouped tracks one file each."""

from __future__ import annotations

import io
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from mediasrv.recording.muxer import RecordingWriter, TrackResult, TrackSpec
from mediasrv.storage.blobs import BlobStore

FPS = 30
SECONDS = 3
Frames = list[tuple[int, bool, bytes]]  # (pts in the track clock, keyframe, data)


def encode_video(codec: str, seconds: int, size: tuple[int, int] = (320, 240)) -> Frames:
    """Real encoded video (libvpx or libx264, 90 kHz pts); H.264 as Annex B with 4-byte start codes."""
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = *size, "yuv420p"
    ctx.time_base = Fraction(1, FPS)
    ctx.gop_size = 45
    if codec == "libvpx":
        ctx.options = {"deadline": "realtime", "cpu-used": "8"}
    else:
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0"}
    out: Frames = []

    def take(packets: list[av.Packet]) -> None:
        out.extend((p.pts * 90000 // FPS, p.is_keyframe, bytes(p)) for p in packets)

    for i in range(seconds * FPS):
        img = np.full((size[1], size[0], 3), (i * 4) % 255, dtype=np.uint8)
        img[: size[1] // 2, : (i * 3) % size[0]] = 200
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        take(ctx.encode(frame))
    take(ctx.encode(None))
    return out


def encode_opus(seconds: int) -> Frames:
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.layout, ctx.format = 48000, "stereo", "s16"
    out: Frames = []
    for i in range(seconds * 50):
        samples = (np.sin(np.arange(960) / 10.0 + i) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(samples[None, :], 2, axis=0).reshape(1, -1),
                                           format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48000, i * 960
        out += [(p.pts, True, bytes(p)) for p in ctx.encode(frame)]
    return out


@pytest.fixture(scope="module")
def vp8() -> Frames:
    return encode_video("libvpx", SECONDS)


@pytest.fixture(scope="module")
def opus() -> Frames:
    return encode_opus(SECONDS)


def shifted(frames: Frames, by: int) -> Frames:
    return [(pts + by, key, data) for pts, key, data in frames]


def feed_like_ticks(writer: RecordingWriter, tracks: dict[str, tuple[int, Frames]], lag_s: dict[str, float]) -> None:
    """Writes each track in 20 ms batches as a recorder tick would; `lag_s` delays a track's
    release (a jitter buffer holding video longer), so batches reach the writer out of pts order."""
    end = max(frames[-1][0] / rate for rate, frames in tracks.values()) + max(lag_s.values()) + 0.04
    t = 0.0
    sent = dict.fromkeys(tracks, 0)
    while t < end:
        t += 0.02
        for key, (rate, frames) in tracks.items():
            i = sent[key]
            j = i
            while j < len(frames) and frames[j][0] / rate + lag_s.get(key, 0.0) <= t:
                j += 1
            writer.write(key, frames[i:j])
            sent[key] = j
    for key, (_rate, frames) in tracks.items():
        writer.write(key, frames[sent[key]:])
        writer.end_track(key)


def open_blob(blobs: BlobStore, result: TrackResult) -> av.container.InputContainer:
    assert result.blob_id is not None
    data = blobs.read_bytes(result.blob_id)
    assert len(data) == result.size
    return av.open(io.BytesIO(data))


def decoded_timestamps(container: av.container.InputContainer) -> tuple[dict[str, list[float]], list[float]]:
    """Per stream type: the timestamps (s) of every frame that decodes; plus all packet times in
    file order."""
    per_type: dict[str, list[float]] = {s.type: [] for s in container.streams}
    order = []
    for packet in container.demux():
        if packet.pts is None:
            continue
        ts = float(packet.pts * packet.time_base)
        order.append(ts)
        frames = packet.decode()
        assert frames, f"a {packet.stream.type} packet at {ts:.3f}s does not decode"
        per_type[packet.stream.type].append(ts)
    return per_type, order


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", os.urandom(32), chunk_size=16 * 1024)


def test_grouped_vp8_and_opus_become_one_playable_webm(tmp_path: Path, blobs: BlobStore, vp8: Frames,
                                                        opus: Frames) -> None:
    video, audio = shifted(vp8, 9000), shifted(opus, 4800)[2:]  # video from 100 ms, audio from 120 ms
    writer = RecordingWriter(tmp_path / "work", blobs=blobs, head_bytes=8 * 1024)  # small head: spills
    writer.add_track(TrackSpec("pat-video", "video", "VP8", 90000, group="pat"))
    writer.add_track(TrackSpec("pat-audio", "audio", "opus", 48000, group="pat"))
    feed_like_ticks(writer, {"pat-video": (90000, video), "pat-audio": (48000, audio)},
                    lag_s={"pat-video": 0.3, "pat-audio": 0.06})
    results = writer.close()
    assert writer.errors == 0
    assert len(results) == 1, "one file for the group"
    r = results[0]
    assert r.spec.kind == "video" and {t.key for t in r.tracks} == {"pat-video", "pat-audio"}
    assert r.path.suffix == ".webm" and r.frames == len(video) + len(audio)
    assert r.start_s == pytest.approx(0.1)
    assert r.end_s == pytest.approx(max(video[-1][0] / 90000, audio[-1][0] / 48000))
    assert not (tmp_path / "work").exists(), "nothing written outside the blob store"

    with open_blob(blobs, r) as c:
        assert c.format.name.startswith("matroska") and c.streams.video and c.streams.audio
        assert (c.streams.video[0].codec_context.name, c.streams.audio[0].codec_context.name) == ("vp8", "opus")
        assert c.streams.video[0].codec_context.width == 320
        assert c.duration is not None and c.duration / av.time_base == pytest.approx(SECONDS, abs=0.2)
        per_type, order = decoded_timestamps(c)
    # Every frame decodes, at the time it was written (Matroska keeps milliseconds).
    assert per_type["video"] == pytest.approx([pts / 90000 for pts, _, _ in video], abs=0.0011)
    assert per_type["audio"] == pytest.approx([pts / 48000 for pts, _, _ in audio], abs=0.0011)
    assert order == sorted(order), "audio and video are interleaved by timestamp"


def test_grouped_file_has_an_index_players_can_seek_with(tmp_path: Path, blobs: BlobStore, vp8: Frames,
                                                         opus: Frames) -> None:
    writer = RecordingWriter(tmp_path, blobs=blobs)
    writer.add_track(TrackSpec("v", "video", "VP8", 90000, group="g"))
    writer.add_track(TrackSpec("a", "audio", "opus", 48000, group="g"))
    writer.write("v", vp8)
    writer.write("a", opus)
    (r,) = writer.close()
    assert r.blob_id is not None
    assert b"\x1c\x53\xbb\x6b" in blobs.read_bytes(r.blob_id), "a Cues element (the seek index)"
    with open_blob(blobs, r) as c:
        c.seek(2 * 1_000_000, backward=True)  # to the keyframe before 2 s
        first = next(c.decode(video=0))
        assert first.time is not None and 1.0 <= first.time <= 2.0, first.time


def test_h264_and_opus_group_is_matroska_with_the_real_picture_size(tmp_path: Path, blobs: BlobStore,
                                                                    opus: Frames) -> None:
    video = encode_video("libx264", SECONDS, size=(640, 360))
    assert video[0][1] and b"\x00\x00\x00\x01" in video[0][2][:5]
    writer = RecordingWriter(tmp_path, blobs=blobs)
    writer.add_track(TrackSpec("a", "audio", "opus", 48000, group="m"))
    writer.add_track(TrackSpec("v", "video", "H264", 90000, group="m"))
    feed_like_ticks(writer, {"v": (90000, video), "a": (48000, opus)}, lag_s={"v": 0.2, "a": 0.0})
    (r,) = writer.close()
    assert writer.errors == 0 and r.path.suffix == ".mkv"
    with open_blob(blobs, r) as c:
        assert c.format.name.startswith("matroska")
        v = c.streams.video[0]
        assert (v.codec_context.name, v.codec_context.width, v.codec_context.height) == ("h264", 640, 360)
        per_type, order = decoded_timestamps(c)
    assert len(per_type["video"]) == len(video) and len(per_type["audio"]) == len(opus)
    assert order == sorted(order)


def test_a_group_track_without_frames_is_not_waited_for_forever(tmp_path: Path, blobs: BlobStore,
                                                                vp8: Frames, opus: Frames) -> None:
    writer = RecordingWriter(tmp_path, blobs=blobs, group_wait_s=0.5)
    writer.add_track(TrackSpec("a", "audio", "opus", 48000, group="p"))
    writer.add_track(TrackSpec("v", "video", "VP8", 90000, group="p"))
    writer.write("a", opus[:50])  # 1 s of audio: more than the wait, video still silent
    writer.write("v", shifted(vp8, 90000))  # the video arrives late: a file of its own
    writer.write("a", opus[50:])
    results = {r.spec.kind: r for r in writer.close()}
    assert writer.errors == 0 and set(results) == {"audio", "video"}
    assert results["audio"].frames == len(opus) and results["video"].frames == len(vp8)
    for r in results.values():
        with open_blob(blobs, r) as c:
            assert len(c.streams) == 1
            per_type, _ = decoded_timestamps(c)
            assert sum(map(len, per_type.values())) == r.frames


def test_ungrouped_tracks_get_one_file_each(tmp_path: Path, blobs: BlobStore, vp8: Frames,
                                           opus: Frames) -> None:
    writer = RecordingWriter(tmp_path, blobs=blobs)
    writer.add_track(TrackSpec("v", "video", "VP8", 90000))
    writer.add_track(TrackSpec("a", "audio", "opus", 48000))
    writer.add_track(TrackSpec("silent", "audio", "opus", 48000))  # never sends: no file
    writer.write("v", vp8)
    writer.write("a", opus)
    results = {r.spec.key: r for r in writer.close()}
    assert results["silent"].frames == 0 and results["silent"].blob_id is None
    for key, n in (("v", len(vp8)), ("a", len(opus))):
        with open_blob(blobs, results[key]) as c:
            assert len(c.streams) == 1
            per_type, _ = decoded_timestamps(c)
            assert sum(map(len, per_type.values())) == n


def test_without_a_blob_store_files_go_to_the_directory(tmp_path: Path, vp8: Frames) -> None:
    writer = RecordingWriter(tmp_path)
    writer.add_track(TrackSpec("v", "video", "VP8", 90000))
    writer.write("v", vp8)
    (r,) = writer.close()
    assert r.path == tmp_path / "v.webm" and r.blob_id is None
    with av.open(str(r.path)) as c:
        assert sum(1 for _ in c.decode(video=0)) == len(vp8)


def test_unknown_codec_and_bad_frames_are_counted_not_fatal(tmp_path: Path, blobs: BlobStore,
                                                            opus: Frames) -> None:
    writer = RecordingWriter(tmp_path, blobs=blobs)
    writer.add_track(TrackSpec("x", "video", "AV1", 90000))
    writer.add_track(TrackSpec("a", "audio", "opus", 48000))
    writer.write("x", [(0, True, b"\x00")])
    writer.write("a", opus)
    results = writer.close()
    assert writer.errors == 1
    assert [r.frames for r in results] == [len(opus)]
