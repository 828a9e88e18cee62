"""Writes complete encoded frames into WebM/Matroska with PyAV, without decoding, on one thread.

By default each recorded track gets its own file (tracks appear and end at any time during a visit).
Tracks that share a `TrackSpec.group` are muxed into one file instead (a recorded message: one
playable audio+video file). All files of one recording share one time origin, the recording start,
so their timestamps line up.

With a blob store (`RecordingWriter(directory, blobs=...)`, what the server uses) every file is
written straight into the encrypted blob store through `SealedOutput`: no plaintext ever reaches the
disk, and a finished file is a sealed blob. Without one, files are written under `directory`
(tools and tests).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import av

from mediasrv.recording.h264_sps import sps_dimensions
from mediasrv.recording.sealed_output import HEAD_BYTES, SealedOutput

log = logging.getLogger(__name__)

# codec name from SDP -> (PyAV codec name, container format, file suffix)
FORMATS = {
    "vp8": ("vp8", "webm", ".webm"),
    "opus": ("opus", "webm", ".webm"),
    "h264": ("h264", "matroska", ".mkv"),
}
# A group's file opens once every announced track of the group has its first frame, or when the
# frames buffered meanwhile span this much media time or this many bytes; tracks still without a
# frame then get a file of their own.
GROUP_WAIT_S = 5.0
GROUP_BUFFER_BYTES = 16 * 1024 * 1024
# Frames queued for the writer thread: when the disk cannot keep up, frames past this are dropped
# (counted) rather than held in memory without limit; a video track then resumes at a keyframe.
MAX_QUEUED_BYTES = 64 * 1024 * 1024


def container_for(codec: str) -> tuple[str, str, str]:
    try:
        return FORMATS[codec.lower()]
    except KeyError:
        raise ValueError(f"cannot record codec {codec!r}: expected VP8, H264 or opus") from None


def group_format(specs: list[TrackSpec]) -> tuple[str, str]:
    """(container format, suffix) holding every codec of `specs`: WebM if it can, else Matroska."""
    formats = {container_for(s.codec)[1] for s in specs}
    return ("webm", ".webm") if formats == {"webm"} else ("matroska", ".mkv")


@dataclass(frozen=True)
class TrackSpec:
    """One track to record.

    `group`: tracks with the same non-empty group are muxed into ONE file (one stream each), e.g.
    group=<participant> for a recorded message, so the recipient gets one playable audio+video file.
    The file opens when every track announced (`add_track`) for the group so far has its first frame
    (video dimensions come from the first keyframe), or after GROUP_WAIT_S of buffered media; a track
    added after its group's file opened, or still without a frame then, gets a file of its own.
    So announce all the tracks of a group before writing frames to any of them.
    None (the default): the track gets a file of its own.
    """

    key: str
    kind: str  # "audio" | "video"
    codec: str
    clock_rate: int
    channels: int = 2
    group: str | None = None


@dataclass
class TrackResult:
    """One written file. For a group, `spec` is its main track (the first video track, else the first
    track) and `tracks` lists every track in the file; frames/start_s/end_s cover all of them."""

    spec: TrackSpec
    path: Path  # the file's name; written there only without a blob store
    frames: int
    start_s: float | None  # first timestamp relative to the recording origin
    end_s: float | None
    blob_id: str | None = None  # the sealed, encrypted file (with a blob store)
    size: int = 0
    sha256: str | None = None
    tracks: tuple[TrackSpec, ...] = field(default_factory=tuple)


def _annexb_parameter_sets(frame: bytes) -> bytes:
    """SPS and PPS NAL units (with start codes) of an Annex B keyframe, for the stream's extradata."""
    out = b""
    for nal in frame.split(b"\x00\x00\x00\x01"):
        if nal and nal[0] & 0x1F in (7, 8):
            out += b"\x00\x00\x00\x01" + nal
    return out


# The size written into the header only labels the file (players take it from the bitstream), but
# PyAV opens an encoder for it, which allocates for that size (libvpx: ~1.7 GB at 8192x8192) and
# refuses some (0, odd sizes for libx264's 4:2:0). A size from a publisher's bitstream is therefore
# used only when plausible, rounded up to even; else the default is.
DEFAULT_SIZE = (640, 480)
MAX_HEADER_PIXELS = 4096 * 2304


def _dimensions(codec: str, frame: bytes) -> tuple[int, int]:
    """The muxer needs dimensions for the header; players read the real ones from the bitstream."""
    size: tuple[int, int] | None = None
    if codec == "vp8" and len(frame) >= 10 and frame[0] & 1 == 0 and frame[3:6] == b"\x9d\x01\x2a":
        # VP8 keyframe header (RFC 6386 9.1): 14-bit width and height after the start code.
        size = int.from_bytes(frame[6:8], "little") & 0x3FFF, int.from_bytes(frame[8:10], "little") & 0x3FFF
    if codec == "h264":
        for nal in frame.split(b"\x00\x00\x00\x01"):
            if nal and nal[0] & 0x1F == 7 and (size := sps_dimensions(nal)) is not None:
                break
    if size is None:
        return DEFAULT_SIZE
    width, height = size[0] + size[0] % 2, size[1] + size[1] % 2
    if width < 2 or height < 2 or width * height > MAX_HEADER_PIXELS:
        return DEFAULT_SIZE
    return width, height


Frame = tuple[int, bool, bytes]


@dataclass
class _Track:
    spec: TrackSpec
    pending: list[Frame] = field(default_factory=list)  # buffered until the file opens
    stream: Any = None
    first_pts: int | None = None
    last_pts: int | None = None
    frames: int = 0
    ended: bool = False


class _File:
    """One output container with one stream per track; opened once its tracks are known."""

    def __init__(self, name: str, directory: Path, blobs: Any, head_bytes: int,
                 on_sealing: Callable[[TrackResult], None] | None = None) -> None:
        self.name = name
        self.directory, self.blobs, self.head_bytes = directory, blobs, head_bytes
        self.on_sealing = on_sealing
        self.tracks: dict[str, _Track] = {}
        self.container: Any = None
        self.target: SealedOutput | None = None
        self.path: Path | None = None
        self.buffered_bytes = 0
        self.failed = False
        self.rejected = 0  # frames the muxer refused (dropped, counted)

    @property
    def opened(self) -> bool:
        return self.container is not None

    def ready(self) -> bool:
        """Every track announced so far has a frame (or has ended), and at least one has a frame."""
        live = [t for t in self.tracks.values() if t.pending or not t.ended]
        return bool(live) and all(t.pending for t in live)

    def over_budget(self, wait_s: float, max_bytes: int) -> bool:
        if self.buffered_bytes > max_bytes:
            return True
        firsts = [t.pending[0][0] / t.spec.clock_rate for t in self.tracks.values() if t.pending]
        lasts = [t.pending[-1][0] / t.spec.clock_rate for t in self.tracks.values() if t.pending]
        return bool(firsts) and max(lasts) - min(firsts) > wait_s

    def open(self) -> list[_Track]:
        """Open with the tracks that have frames; returns the tracks left out (no frame yet)."""
        left_out = [t for t in self.tracks.values() if not t.pending]
        for t in left_out:
            del self.tracks[t.spec.key]
        specs = [t.spec for t in self.tracks.values()]
        fmt, suffix = group_format(specs)
        self.path = self.directory / f"{_safe_name(self.name)}{suffix}"
        if self.blobs is not None:
            self.target = SealedOutput(self.blobs, self.head_bytes)
            self.container = av.open(self.target, "w", format=fmt)
        else:
            self.container = av.open(str(self.path), "w", format=fmt)
        for t in self.tracks.values():
            t.stream = self._add_stream(t.spec, t.pending[0][2])
        return left_out

    def _add_stream(self, spec: TrackSpec, first_frame: bytes) -> Any:
        codec = container_for(spec.codec)[0]
        if spec.kind == "audio":
            stream = self.container.add_stream(codec, rate=spec.clock_rate)
            stream.codec_context.layout = "stereo" if spec.channels == 2 else "mono"
        else:
            stream = self.container.add_stream(codec)
            stream.codec_context.width, stream.codec_context.height = _dimensions(codec, first_frame)
            if codec == "h264":
                stream.codec_context.extradata = _annexb_parameter_sets(first_frame)
        stream.time_base = Fraction(1, spec.clock_rate)
        return stream

    def buffer(self, track: _Track, frames: list[Frame]) -> None:
        track.pending.extend(frames)
        self.buffered_bytes += sum(len(f[2]) for f in frames)

    def flush_pending(self) -> None:
        """Mux everything buffered before the file opened, in presentation order across tracks."""
        merged = sorted(((pts / t.spec.clock_rate, i, t, (pts, key, data))
                         for i, t in enumerate(self.tracks.values()) for pts, key, data in t.pending),
                        key=lambda x: (x[0], x[1]))
        for t in self.tracks.values():
            t.pending = []
        self.buffered_bytes = 0
        for _, _, t, frame in merged:
            self.mux_or_reject(t, frame)

    def mux_or_reject(self, track: _Track, frame: Frame) -> bool:
        """Mux one frame; a frame the muxer rejects (e.g. an empty payload) is dropped and counted
        (False), the next one is tried. A refused disk write loses the file: that error is raised."""
        try:
            self.mux(track, *frame)
        except Exception as exc:
            if self.target is not None and self.target.write_failed:
                raise
            self.rejected += 1
            if self.rejected == 1:  # once per file: a stream of bad frames must not flood the log
                # The recording id (the directory), never the file or track name: they name people.
                log.warning("recording %s: the muxer rejected a %s frame (pts %d, %d bytes): %r",
                            self.directory.name, track.spec.kind, frame[0], len(frame[2]), exc)
            return False
        return True

    def mux(self, track: _Track, pts: int, keyframe: bool, data: bytes) -> None:
        if track.last_pts is not None and pts <= track.last_pts:
            pts = track.last_pts + 1  # timestamps must increase; clock glitches never stop a recording
        packet = av.Packet(data)
        packet.stream = track.stream
        packet.pts = packet.dts = pts
        # The muxer rescales to its own time base (1/1000 for Matroska) once the header is written,
        # and interleaves the streams of one file by timestamp.
        packet.time_base = Fraction(1, track.spec.clock_rate)
        packet.is_keyframe = keyframe
        self.container.mux(packet)
        if track.first_pts is None:
            track.first_pts = pts
        track.last_pts = pts
        track.frames += 1

    def close(self) -> TrackResult | None:
        """Finish the container and seal it; None if it never opened (no frame at all)."""
        if not self.opened:
            return None
        blob_id, size, sha = None, 0, None
        if self.failed:
            # Frees it; what it writes goes nowhere (discarded target); the failure was counted.
            with contextlib.suppress(Exception):
                self.container.close()
            self.container = None
            return None
        try:
            self.container.close()
            if self.target is not None:
                if self.on_sealing is not None:
                    # What the file's row needs, written before the sealed blob exists: a crash
                    # between sealing and filing leaves a row that startup recovery completes.
                    try:
                        self.on_sealing(self._result(self.target.final_blob_id, 0, None))
                    except Exception:  # still sealed and filed normally; only the crash window stays
                        log.exception("recording %s: announcing a file before sealing failed",
                                      self.directory.name)
                blob_id, size, sha = self.target.seal()
        finally:
            self.container = None
            if self.target is not None and not self.target.sealed:
                self.target.discard()
        return self._result(blob_id, size, sha)

    def _result(self, blob_id: str | None, size: int, sha: str | None) -> TrackResult:
        tracks = list(self.tracks.values())
        main = next((t for t in tracks if t.spec.kind == "video"), tracks[0])
        starts = [t.first_pts / t.spec.clock_rate for t in tracks if t.first_pts is not None]
        ends = [t.last_pts / t.spec.clock_rate for t in tracks if t.last_pts is not None]
        assert self.path is not None
        return TrackResult(main.spec, self.path, sum(t.frames for t in tracks),
                           min(starts) if starts else None, max(ends) if ends else None,
                           blob_id, size, sha, tuple(t.spec for t in tracks))

    def abort(self) -> None:
        self.failed = True
        if self.target is not None:
            self.target.discard()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:100] or "track"


class RecordingWriter:
    """Owns the output files of one recording; every PyAV call happens on its thread.

    `blobs`: the encrypted blob store to write into (then nothing is written under `directory`).
    `on_sealing`: called on the writer thread with a file's result (final blob id, no size/sha yet)
    just before that blob is sealed; it may block (RecordingStore writes the pending row).
    """

    def __init__(self, directory: Path, blobs: Any = None, *, head_bytes: int = HEAD_BYTES,
                 group_wait_s: float = GROUP_WAIT_S, group_buffer_bytes: int = GROUP_BUFFER_BYTES,
                 max_queued_bytes: int = MAX_QUEUED_BYTES,
                 on_sealing: Callable[[TrackResult], None] | None = None) -> None:
        self.directory = directory
        self.blobs = blobs
        self.on_sealing = on_sealing
        self.head_bytes = head_bytes
        self.group_wait_s, self.group_buffer_bytes = group_wait_s, group_buffer_bytes
        self._queue: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()
        self._files: dict[str, _File] = {}  # by group name (an ungrouped track is a group of one)
        self._file_of: dict[str, _File] = {}  # by track key
        self._results: list[TrackResult] = []
        self.errors = 0
        self.max_queued_bytes = max_queued_bytes
        self.queued_bytes = 0  # frame bytes handed to write() and not yet muxed
        self.frames_dropped = 0  # dropped because the backlog was full (the disk is too slow)
        self.frames_rejected = 0  # frames the muxer refused, each dropped alone (see _File.mux_or_reject)
        self._queued_lock = threading.Lock()
        self._video: set[str] = set()  # keys of video tracks (caller side)
        self._resync: set[str] = set()  # video tracks that lost frames: wait for a keyframe
        self._thread = threading.Thread(target=self._run, name="recording-mux", daemon=True)
        self._thread.start()

    def add_track(self, spec: TrackSpec) -> None:
        if spec.kind == "video":
            self._video.add(spec.key)
        self._queue.put(("add", spec))

    def write(self, key: str, frames: list[tuple[int, bool, bytes]]) -> None:
        """Queue (pts in the track clock from the recording origin, keyframe, data) frames. Never
        blocks: with `max_queued_bytes` already waiting, the frames are dropped and counted."""
        if key in self._resync:  # after a drop, video continues only from a keyframe
            start = next((i for i, f in enumerate(frames) if f[1]), len(frames))
            self.frames_dropped += start
            frames = frames[start:]
        if not frames:
            return
        size = sum(len(f[2]) for f in frames)
        with self._queued_lock:
            full = self.queued_bytes + size > self.max_queued_bytes
            if not full:
                self.queued_bytes += size
        if full:
            if not self.frames_dropped:
                log.warning("recording writer: %d bytes waiting for the disk, dropping frames", self.queued_bytes)
            self.frames_dropped += len(frames)
            if key in self._video:
                self._resync.add(key)
            return
        self._resync.discard(key)
        self._queue.put(("write", (key, frames, size)))

    def end_track(self, key: str) -> None:
        self._queue.put(("end", key))

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far has been written (blocking: call it from a thread)."""
        done = threading.Event()
        self._queue.put(("call", done.set))
        return done.wait(timeout)

    def close(self, timeout: float | None = None) -> list[TrackResult]:
        """Ends every track and waits for the files (blocking: call it from a thread)."""
        self._queue.put(None)
        self._thread.join(timeout)
        return self._results

    # --- writer thread ------------------------------------------------------------------------
    def _add(self, spec: TrackSpec) -> None:
        if spec.key in self._file_of:
            return
        container_for(spec.codec)  # unknown codecs fail here, before any frame
        slot, name = (f"group:{spec.group}", spec.group) if spec.group else (f"track:{spec.key}", spec.key)
        f = self._files.get(slot)
        if f is None or f.opened:
            if f is not None:  # the group's file is already open: this late track gets its own
                slot, name = f"track:{spec.key}", f"{name}-{spec.key}"
            f = self._files[slot] = _File(name, self.directory, self.blobs, self.head_bytes, self.on_sealing)
        f.tracks[spec.key] = _Track(spec)
        self._file_of[spec.key] = f

    def _write(self, key: str, frames: list[Frame]) -> None:
        f = self._file_of.get(key)
        if f is None or f.failed:
            return
        track = f.tracks[key]
        if f.opened:
            try:
                for frame in frames:  # one bad frame costs only itself, not the rest of its batch
                    f.mux_or_reject(track, frame)
            except Exception:
                f.abort()  # the disk refused bytes: the file is lost; say so once, not per batch
                raise
            return
        f.buffer(track, frames)
        if f.ready() or f.over_budget(self.group_wait_s, self.group_buffer_bytes):
            self._open(f)

    def _open(self, f: _File) -> None:
        try:
            left_out = f.open()
        except Exception:
            f.abort()
            raise
        for t in left_out:  # their own file, opened with their first frame
            del self._file_of[t.spec.key]
            self._add(t.spec)
            if t.ended:
                self._end(t.spec.key)
        try:
            f.flush_pending()
        except Exception:
            f.abort()  # the disk refused bytes (mux_or_reject raises nothing else)
            raise

    def _end(self, key: str) -> None:
        f = self._file_of.get(key)
        if f is None:
            return
        f.tracks[key].ended = True
        if not f.opened and f.ready():
            self._run_guarded("open", lambda: self._open(f))
        if all(t.ended for t in f.tracks.values()):
            self._close_file(f)

    def _close_file(self, f: _File) -> None:
        for key in f.tracks:
            self._file_of.pop(key, None)
        self._files = {n: g for n, g in self._files.items() if g is not f}
        result = None
        self.frames_rejected += f.rejected
        try:
            result = f.close()
        except Exception:
            self.errors += 1
            log.exception("recording %s: closing a file failed", f.directory.name)
        if result is None:  # no frame at all (or a failed file): report the tracks as empty
            for t in f.tracks.values():
                self._results.append(TrackResult(t.spec, self.directory / t.spec.key, t.frames, None, None))
        else:
            self._results.append(result)

    def _run_guarded(self, op: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # one bad frame or track must not end the whole recording
            self.errors += 1
            log.exception("recording writer: %s failed", op)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            op, arg = item
            if op == "add":
                self._run_guarded(op, partial(self._add, arg))
            elif op == "write":
                key, frames, size = arg
                self._run_guarded(op, partial(self._write, key, frames))
                with self._queued_lock:
                    self.queued_bytes -= size
            elif op == "end":
                self._run_guarded(op, partial(self._end, str(arg)))
            elif op == "call":
                self._run_guarded(op, arg)
        for f in list({id(f): f for f in self._file_of.values()}.values()):
            for t in f.tracks.values():
                t.ended = True
            if not f.opened and any(t.pending for t in f.tracks.values()):
                self._run_guarded("open", partial(self._open, f))
            self._close_file(f)
