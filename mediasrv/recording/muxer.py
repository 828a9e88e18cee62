"""Writes complete encoded frames into WebM/Matroska files with PyAV, without decoding, on one thread.

Each recorded track gets its own file (tracks can appear and end at any time during a visit); all
files of one recording share one time origin, the recording start, so their timestamps line up.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

log = logging.getLogger(__name__)

# codec name from SDP -> (PyAV codec name, container format, file suffix)
FORMATS = {
    "vp8": ("vp8", "webm", ".webm"),
    "opus": ("opus", "webm", ".webm"),
    "h264": ("h264", "matroska", ".mkv"),
}


def container_for(codec: str) -> tuple[str, str, str]:
    try:
        return FORMATS[codec.lower()]
    except KeyError:
        raise ValueError(f"cannot record codec {codec!r}: expected VP8, H264 or opus") from None


@dataclass(frozen=True)
class TrackSpec:
    key: str
    kind: str  # "audio" | "video"
    codec: str
    clock_rate: int
    channels: int = 2


def _annexb_parameter_sets(frame: bytes) -> bytes:
    """SPS and PPS NAL units (with start codes) of an Annex B keyframe, for the stream's extradata."""
    out = b""
    for nal in frame.split(b"\x00\x00\x00\x01"):
        if nal and nal[0] & 0x1F in (7, 8):
            out += b"\x00\x00\x00\x01" + nal
    return out


class _Output:
    def __init__(self, spec: TrackSpec, path: Path) -> None:
        self.spec = spec
        self.path = path
        self.container: av.container.OutputContainer | None = None
        self.stream: av.stream.Stream | None = None
        self.last_pts: int | None = None
        self.frames = 0
        self.first_pts: int | None = None

    def _open(self, first_frame: bytes) -> None:
        codec, fmt, _ = container_for(self.spec.codec)
        self.container = av.open(str(self.path), "w", format=fmt)
        if self.spec.kind == "audio":
            stream = self.container.add_stream(codec, rate=self.spec.clock_rate)
            stream.codec_context.layout = "stereo" if self.spec.channels == 2 else "mono"
        else:
            stream = self.container.add_stream(codec)
            # The muxer needs dimensions; the real ones are in the bitstream a player reads.
            stream.codec_context.width, stream.codec_context.height = _dimensions(codec, first_frame)
            if codec == "h264":
                stream.codec_context.extradata = _annexb_parameter_sets(first_frame)
        stream.time_base = Fraction(1, self.spec.clock_rate)
        self.stream = stream

    def write(self, pts: int, keyframe: bool, data: bytes) -> None:
        if self.container is None:
            self._open(data)
        assert self.stream is not None and self.container is not None
        if self.last_pts is not None and pts <= self.last_pts:
            pts = self.last_pts + 1  # timestamps must increase; clock glitches never stop a recording
        packet = av.Packet(data)
        packet.stream = self.stream
        packet.pts = packet.dts = pts
        # The muxer rescales to its own time base (1/1000 for Matroska) once the header is written.
        packet.time_base = Fraction(1, self.spec.clock_rate)
        packet.is_keyframe = keyframe
        self.container.mux(packet)
        if self.first_pts is None:
            self.first_pts = pts
        self.last_pts = pts
        self.frames += 1

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None


def _dimensions(codec: str, frame: bytes) -> tuple[int, int]:
    if codec == "vp8" and len(frame) >= 10 and frame[0] & 1 == 0 and frame[3:6] == b"\x9d\x01\x2a":
        # VP8 keyframe header (RFC 6386 9.1): 14-bit width and height after the start code.
        return int.from_bytes(frame[6:8], "little") & 0x3FFF, int.from_bytes(frame[8:10], "little") & 0x3FFF
    return 640, 480


@dataclass
class TrackResult:
    spec: TrackSpec
    path: Path
    frames: int
    start_s: float | None  # first timestamp relative to the recording origin
    end_s: float | None


class RecordingWriter:
    """Owns the output files of one recording; every PyAV call happens on its thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._queue: queue.SimpleQueue[tuple[str, object] | None] = queue.SimpleQueue()
        self._outputs: dict[str, _Output] = {}
        self._results: list[TrackResult] = []
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="recording-mux", daemon=True)
        self._thread.start()

    def add_track(self, spec: TrackSpec) -> None:
        self._queue.put(("add", spec))

    def write(self, key: str, frames: list[tuple[int, bool, bytes]]) -> None:
        """Queue (pts in the track clock from the recording origin, keyframe, data) frames."""
        if frames:
            self._queue.put(("write", (key, frames)))

    def end_track(self, key: str) -> None:
        self._queue.put(("end", key))

    def close(self, timeout: float | None = None) -> list[TrackResult]:
        """Ends every track and waits for the files (blocking: call it from a thread)."""
        self._queue.put(None)
        self._thread.join(timeout)
        return self._results

    def _end(self, key: str) -> None:
        out = self._outputs.pop(key, None)
        if out is None:
            return
        try:
            out.close()
        except Exception:
            self.errors += 1
            log.exception("closing %s failed", out.path)
        rate = out.spec.clock_rate
        self._results.append(TrackResult(
            out.spec, out.path, out.frames,
            None if out.first_pts is None else out.first_pts / rate,
            None if out.last_pts is None else out.last_pts / rate))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            op, arg = item
            try:
                if op == "add":
                    assert isinstance(arg, TrackSpec)
                    suffix = container_for(arg.codec)[2]
                    self._outputs[arg.key] = _Output(arg, self.directory / f"{arg.key}{suffix}")
                elif op == "write":
                    key, frames = arg  # type: ignore[misc]
                    out = self._outputs.get(key)
                    if out is not None:
                        for pts, keyframe, data in frames:
                            out.write(pts, keyframe, data)
                elif op == "end":
                    self._end(str(arg))
            except Exception:  # one bad frame or track must not end the whole recording
                self.errors += 1
                log.exception("recording writer: %s failed", op)
        for key in list(self._outputs):
            self._end(key)
