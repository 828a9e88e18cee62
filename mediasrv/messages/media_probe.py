"""Probe a stored video/audio attachment with PyAV and make a thumbnail of a video.

Everything here blocks (demuxing and decoding): call it from a thread, never on the event loop.
The input is any seekable binary file-like object, e.g. the decrypting `BlobReader`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import av

log = logging.getLogger(__name__)

# Demux at most this many packets when a container does not state its duration.
MAX_SCAN_PACKETS = 200_000
THUMBNAIL_MAX_WIDTH = 320


class MediaSource(Protocol):
    """What PyAV reads a container from: a seekable binary file-like object."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...


class MediaRejected(ValueError):
    """The file is not playable media of the claimed kind; `reason` is safe to show and to audit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class StreamInfo:
    kind: str
    codec: str
    width: int | None = None
    height: int | None = None
    sample_rate: int | None = None
    channels: int | None = None


@dataclass
class ProbeResult:
    container: str
    duration_s: float
    size_bytes: int
    streams: list[StreamInfo] = field(default_factory=list)

    @property
    def codecs(self) -> list[str]:
        return [s.codec for s in self.streams]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "codecs": self.codecs}


def media_kind(content_type: str) -> str | None:
    """'video' or 'audio' for content types that must be probed, else None."""
    major = content_type.split("/", 1)[0].strip().lower()
    return major if major in ("video", "audio") else None


def _open(fileobj: MediaSource) -> av.container.InputContainer:
    fileobj.seek(0)
    try:
        return av.open(fileobj, mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise MediaRejected(f"not a recognisable media container ({type(exc).__name__})") from None


def _duration(container: av.container.InputContainer) -> float:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    end = Fraction(0)
    for n, packet in enumerate(container.demux()):
        if n >= MAX_SCAN_PACKETS:
            break
        if packet.pts is not None and packet.time_base is not None:
            end = max(end, (packet.pts + (packet.duration or 0)) * packet.time_base)
    return float(end)


def probe(fileobj: MediaSource, content_type: str, size_bytes: int) -> ProbeResult:
    """Describe the media and check it plays: the claimed kind of stream is there and decodes."""
    kind = media_kind(content_type)
    if kind is None:
        raise MediaRejected(f"content type {content_type!r} is not audio or video")
    with _open(fileobj) as container:
        streams = []
        for s in container.streams:
            # PyAV wraps each stream in the class of its media type ("video", "audio").
            if isinstance(s, av.VideoStream):
                vc = s.codec_context
                streams.append(StreamInfo("video", vc.name, width=vc.width, height=vc.height))
            elif isinstance(s, av.AudioStream):
                ac = s.codec_context
                streams.append(StreamInfo("audio", ac.name, sample_rate=ac.sample_rate,
                                          channels=ac.layout.nb_channels))
        if not any(s.kind == kind for s in streams):
            raise MediaRejected(f"claimed {kind} but the file has no {kind} stream")
        # Playable means: a stream of the claimed kind decodes (a frame comes out of it).
        wanted = [s for s in container.streams
                  if isinstance(s, av.VideoStream | av.AudioStream) and s.type == kind]
        if not any(_decodes_one_frame(container, s) for s in wanted):
            codecs = ", ".join(s.codec_context.name for s in wanted)
            raise MediaRejected(f"the {kind} stream ({codecs}) does not decode")
        container.seek(0)
        duration = _duration(container)
        if duration <= 0:
            raise MediaRejected("the media has no duration")
        return ProbeResult(container.format.name, round(duration, 3), size_bytes, streams)


def _decodes_one_frame(container: av.container.InputContainer,
                       stream: av.VideoStream | av.AudioStream) -> bool:
    container.seek(0)
    try:
        for n, packet in enumerate(container.demux(stream)):
            if n > 500:
                return False
            for _frame in packet.decode():
                return True
        for _frame in stream.codec_context.decode(None):
            return True
    except (av.FFmpegError, ValueError) as exc:
        log.debug("decode failed: %s", exc)
    return False


def thumbnail(fileobj: MediaSource, max_width: int = THUMBNAIL_MAX_WIDTH) -> bytes:
    """A JPEG of the first decodable video frame, at most `max_width` pixels wide."""
    with _open(fileobj) as container:
        if not container.streams.video:
            raise MediaRejected("no video stream to make a thumbnail from")
        try:
            frame = next(container.decode(video=0))
        except (StopIteration, av.FFmpegError) as exc:
            raise MediaRejected("no video frame decodes") from exc
    width = min(max_width, frame.width)
    # Even dimensions keep 4:2:0 chroma subsampling happy.
    width -= width % 2
    height = max(2, round(frame.height * width / frame.width))
    height -= height % 2
    small = frame.reformat(width=width, height=height, format="yuvj420p")
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    small.pts = 0
    packets = list(encoder.encode(small)) + list(encoder.encode(None))
    return b"".join(bytes(p) for p in packets)
