"""What a recording must survive in front of patients: a publisher that restarts its stream under a new
SSRC, hostile or odd bitstream headers, a slow disk, and a stop that races the start."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import mediasrv_native
import numpy as np
import pytest

from mediasrv.auth import Identity
from mediasrv.recording import h264_sps
from mediasrv.recording.controller import RoomRecording
from mediasrv.recording.muxer import RecordingWriter, TrackSpec
from mediasrv.recording.pipeline import SENDER_REPORT, SenderClock, TrackRecorder
from mediasrv.storage.blobs import BlobStore

from .router_feed import replay
from .test_alignment import Writer
from .test_pipeline import encode_vp8, packetize_vp8
from .test_recorder_sinks import FakeRoom, FakeStore
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
    for now in replay(r, PUB, events, T0_MS, until_ms=T0_MS + 4000):
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


def _encode_h264_444(width: int, height: int, n: int) -> list[bytes]:
    """Real H.264 with odd dimensions (4:4:4 allows them): what a screen share can send."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv444p"
    ctx.time_base = Fraction(1, 30)
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency"}
    out: list[bytes] = []
    for i in range(n):
        img = np.full((height, width, 3), i * 20 % 255, np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv444p")
        frame.pts = i
        out += [bytes(p) for p in ctx.encode(frame)]
    return out + [bytes(p) for p in ctx.encode(None)]


def _record(tmp_path: Path, spec: TrackSpec, frames: list[tuple[int, bool, bytes]]) -> Path:
    w = RecordingWriter(tmp_path)
    w.add_track(spec)
    w.write(spec.key, frames)
    w.end_track(spec.key)
    (result,) = w.close()
    assert result.frames == len(frames), "every frame is in the file"
    return result.path


def test_h264_with_odd_picture_size_is_recorded(tmp_path: Path) -> None:
    frames = _encode_h264_444(641, 481, 10)
    path = _record(tmp_path, TrackSpec("v", "video", "h264", 90000),
                   [(i * 3000, i == 0, data) for i, data in enumerate(frames)])
    with av.open(str(path)) as c:
        decoded = list(c.decode(video=0))
    assert len(decoded) == len(frames)
    assert (decoded[0].width, decoded[0].height) == (641, 481)


@pytest.mark.parametrize("size", [(0, 0), (16383, 16383)])
def test_vp8_keyframe_with_a_crafted_picture_size_is_still_recorded(tmp_path: Path, size: tuple[int, int]) -> None:
    """The header size only labels the file; a publisher's bogus one must not lose the track (nor
    make the muxer reserve gigabytes for an encoder it never uses)."""
    frames = encode_vp8(1)
    key = bytearray(frames[0][1])
    key[6:10] = size[0].to_bytes(2, "little") + size[1].to_bytes(2, "little")
    frames[0] = (frames[0][0], bytes(key))
    path = _record(tmp_path, TrackSpec("v", "video", "vp8", 90000),
                   [(ts, i == 0, data) for i, (ts, data) in enumerate(frames)])
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert 0 < stream.codec_context.width <= 4096 and 0 < stream.codec_context.height <= 4096
        assert sum(1 for p in c.demux(video=0) if p.size) == len(frames)


def test_crafted_sps_is_parsed_in_bounded_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """An SPS announcing 2^32 - 1 picture-order cycle entries, followed by a megabyte of one-bit
    codes, must be given up on after a bounded number of bits, not parsed bit by bit to the end."""
    bits = "01000010" + "0" * 8 + "00011111" + "1" + "1" + "010" + "1" + "1" + "1"  # ..., poc_type 1
    bits += "0" * 31 + "1" + "1" * 30 + "0"  # num_ref_frames_in_pic_order_cnt_cycle = 2^32 - 2
    bits += "0" * (-len(bits) % 8)
    nal = b"\x67" + int(bits, 2).to_bytes(len(bits) // 8, "big") + b"\xff" * 1_000_000
    reads = 0
    real_u = h264_sps._Bits.u

    def counting_u(self: h264_sps._Bits, n: int) -> int:
        nonlocal reads
        reads += 1
        return real_u(self, n)

    monkeypatch.setattr(h264_sps._Bits, "u", counting_u)
    assert h264_sps.sps_dimensions(nal) is None
    assert reads < 100_000  # a real SPS is a few hundred bits


def test_real_sps_still_parsed() -> None:
    for nal in _encode_h264_444(641, 481, 1)[0].split(b"\x00\x00\x00\x01"):
        if nal and nal[0] & 0x1F == 7:
            assert h264_sps.sps_dimensions(nal) == (641, 481)


class _Options:
    recording_allowed = True


class _Manager:
    def __init__(self) -> None:
        self.audit: list[str] = []

    async def audit_event_raw(self, actor: str, role: str, action: str, **_: Any) -> None:
        self.audit.append(action)


@dataclass
class _Participant:
    identity: str
    admitted: bool = True


class _Room(FakeRoom):
    def __init__(self) -> None:
        super().__init__()
        self.name, self.options, self.manager = "visit", _Options(), _Manager()
        self.sent: list[dict[str, Any]] = []

    async def audit_event_raw(self, *args: Any, **kw: Any) -> None:
        await self.manager.audit_event_raw(*args, **kw)

    async def broadcast(self, message: dict[str, Any], only: Any = None) -> None:
        self.sent.append(message)


class _SlowStore(FakeStore):
    """The database insert of a new recording takes a while (a busy disk)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.states: dict[str, str] = {}
        self.writers: list[RecordingWriter] = []

    async def create(self, room: str, started_by: str, visit: str | None = None) -> str:
        rid = f"rec{len(self.states)}"
        self.states[rid] = "recording"
        await self.gate.wait()
        return rid

    def new_writer(self, recording_id: str, **_: Any) -> RecordingWriter:
        self.writers.append(super().new_writer(recording_id))
        return self.writers[-1]

    async def finish(self, recording_id: str, state: str = "ready") -> None:
        self.states[recording_id] = state


async def test_stop_while_the_recording_is_starting_leaves_nothing_running(tmp_path: Path) -> None:
    """A clinician stops (or the room closes) while the start is still being filed: the recording
    must not start afterwards (no indicator, no recorder, no writer thread) and is not left open."""
    room, store = _Room(), _SlowStore(tmp_path)
    rec = RoomRecording(room, store)  # type: ignore[arg-type]
    dr = Identity(sub="dr", role="clinician", room="visit", name="Dr", exp=0)
    room.participants["dr"] = _Participant("dr")  # type: ignore[assignment]
    starting = asyncio.ensure_future(rec.request(dr))  # alone in the room: starts at once
    await asyncio.sleep(0.01)
    assert await rec.stop(dr) is None  # nothing running yet
    store.gate.set()
    await starting
    assert not rec.running and rec.recorder is None
    assert {"type": "recording_started", "recording_id": "rec0"} not in room.sent
    assert all(not w._thread.is_alive() for w in store.writers)
    assert store.states == {"rec0": "cancelled"} or store.states == {}


class _SlowDiskBlobs:
    """A blob store whose writes block until `disk.set()`: a disk that stopped keeping up."""

    def __init__(self, root: Path) -> None:
        self.store = BlobStore(root, b"k" * 32)
        self.disk = threading.Event()

    def create(self, blob_id: str | None = None) -> Any:
        writer = self.store.create(blob_id)
        append = writer.append

        def slow_append(data: Any) -> None:
            self.disk.wait()
            append(data)

        writer.append = slow_append
        return writer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_writer_backlog_is_bounded_when_the_disk_is_slow(tmp_path: Path) -> None:
    """Frames keep coming at the media rate whatever the disk does: past a bound, frames are dropped
    and counted instead of queueing without limit, video resumes at a keyframe, and what was kept is
    written once the disk recovers."""
    blobs = _SlowDiskBlobs(tmp_path)
    w = RecordingWriter(tmp_path / "work", blobs=blobs, head_bytes=4096, max_queued_bytes=1_000_000)
    w.add_track(TrackSpec("v", "video", "vp8", 90000))
    video = encode_vp8(3)
    frame_bytes = 40_000  # padded: the bound is reached after ~25 frames
    peak = 0
    for i, (ts, data) in enumerate(video):
        if i == 35:  # the disk recovers
            assert w.frames_dropped > 0
            blobs.disk.set()
            assert w.drain(timeout=60)
        w.write("v", [(ts, i % 45 == 0, data + bytes(frame_bytes))])
        peak = max(peak, w.queued_bytes)
    assert peak <= 1_000_000
    w.end_track("v")
    (result,) = w.close()
    assert result.frames == len(video) - w.frames_dropped
    with blobs.store.open_reader(result.blob_id) as r, av.open(io.BytesIO(r.read())) as c:
        packets = [p for p in c.demux(video=0) if p.size]
    assert len(packets) == result.frames
    # Resumed at a keyframe: after the first gap, the next packet is one.
    pts = [p.pts for p in packets]
    gap = next(i for i in range(1, len(pts)) if pts[i] - pts[i - 1] > 40)
    assert packets[gap].is_keyframe


def test_full_disk_fails_the_file_once_and_leaves_no_spill(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """ENOSPC while spilling: that file is given up (counted once, not one error per batch for the
    rest of the visit), its encrypted spill is deleted, and the recording still closes."""
    blobs = _SlowDiskBlobs(tmp_path)
    blobs.disk.set()
    full = threading.Event()
    create = blobs.create

    def create_on_full_disk(blob_id: str | None = None) -> Any:
        writer = create(blob_id)
        append = writer.append

        def append_or_enospc(data: Any) -> None:
            if full.is_set():
                raise OSError(28, "No space left on device")
            append(data)

        writer.append = append_or_enospc
        return writer

    blobs.create = create_on_full_disk  # type: ignore[method-assign]
    w = RecordingWriter(tmp_path / "work", blobs=blobs, head_bytes=4096)
    w.add_track(TrackSpec("v", "video", "vp8", 90000))
    video = encode_vp8(2)
    for i, (ts, data) in enumerate(video):
        if i == 10:
            assert w.drain(timeout=60)
            full.set()
        w.write("v", [(ts, i % 45 == 0, data + bytes(5000))])
    w.end_track("v")
    (result,) = w.close()
    assert result.blob_id is None
    assert w.errors == 1
    assert not list(tmp_path.glob("*/recspill-*")), "the spill of the failed file is deleted"


def test_a_frame_the_muxer_rejects_costs_only_itself(tmp_path: Path) -> None:
    """A frame PyAV refuses (a timestamp past int64: OverflowError on the packet) in a batch, both
    while the file is opening (frames buffered until then) and once it is open: every other frame of
    those batches is in the file, in order, and decodes; the bad ones are counted, the file is kept."""
    from .test_muxer import encode_opus

    audio = encode_opus(2)
    first, second = audio[:50], audio[50:]
    w = RecordingWriter(tmp_path, blobs=BlobStore(tmp_path / "blobs", b"k" * 32))
    w.add_track(TrackSpec("a", "audio", "opus", 48000))
    w.write("a", first[:10] + [(2**63, True, b"bad")] + first[10:])  # flushed as the file opens
    assert w.drain(30)
    w.write("a", second[:20] + [(2**63, True, b"bad")] + second[20:])  # muxed into the open file
    w.end_track("a")
    (result,) = w.close(30)
    assert (w.frames_rejected, w.errors) == (2, 0)
    assert result.blob_id is not None and result.frames == len(audio)
    with av.open(io.BytesIO(w.blobs.read_bytes(result.blob_id))) as c:
        packets = [p for p in c.demux(audio=0) if p.size]
        assert [bytes(p) for p in packets] == [d for _, _, d in audio]
        assert sum(1 for p in packets for _ in c.streams.audio[0].codec_context.decode(p)) == len(audio)
