"""Opus RED (RFC 2198 redundant audio, `red/48000/2`) in aiortc's codec negotiation.

Chromium offers `a=rtpmap:63 red/48000/2` with `a=fmtp:63 111/111` (each block Opus 111) in every
audio m-line: second, after Opus, by default; first when the page prefers it
(`setCodecPreferences`), and then it sends RED when the answer lists it first too. aiortc does not
know RED: its answer would leave it out. `negotiate_red` adds RED to aiortc's audio codec table,
after Opus, so our offers to subscribers list it (`fmtp` naming our Opus number) and a browser that
supports it accepts it; and it teaches aiortc's matching (`find_common_codecs`) to accept a
remote RED whose blocks are a codec that was accepted, copying the peer's payload type and fmtp
(as aiortc does for RTX), in the position the peer gave it. The answer therefore lists RED first
exactly when the offer did.

The router does the rest (native/core/src/red.rs): RED from a publisher goes on as RED to
subscribers that negotiated it and as its primary Opus block to the others and to recordings.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

import aiortc.rtcpeerconnection
from aiortc import RTCRtpCodecParameters, codecs

RED_MIME = "audio/red"
# Our number for RED in offers (Chromium's; not used by aiortc's own tables).
RED_PAYLOAD_TYPE = 63
# `fmtp` of RED: the payload types of its blocks, e.g. "111/111" (RFC 2198 section 5).
_BLOCK_TYPES = re.compile(r"^\d{1,3}(?:/\d{1,3}){0,31}$")

CommonCodecs = Callable[[list[RTCRtpCodecParameters], list[RTCRtpCodecParameters]],
                        list[RTCRtpCodecParameters]]


def is_red(codec: RTCRtpCodecParameters) -> bool:
    return codec.mimeType.lower() == RED_MIME


def block_types(codec: RTCRtpCodecParameters) -> list[int] | None:
    """The payload types a RED codec's fmtp names (aiortc keeps "111/111" as a key without a
    value); None when it names none or is not of that form."""
    if len(codec.parameters) != 1:
        return None
    (key, value), = codec.parameters.items()
    if value is not None or not _BLOCK_TYPES.match(key):
        return None
    return [int(pt) for pt in key.split("/")]


def common_codecs_with_red(original: CommonCodecs) -> CommonCodecs:
    """aiortc's codec matching plus RED: a remote RED is kept (its payload type and fmtp) when we
    list RED and every block type it names is an Opus codec both sides accepted."""

    def find_common_codecs(local: list[RTCRtpCodecParameters],
                           remote: list[RTCRtpCodecParameters]) -> list[RTCRtpCodecParameters]:
        common = original(local, [c for c in remote if not is_red(c)])
        ours = next((c for c in local if is_red(c)), None)
        if ours is None or not any(is_red(c) for c in remote):
            return common
        opus = {c.payloadType for c in common if c.mimeType.lower() == "audio/opus"}
        by_type = {c.payloadType: c for c in common}
        out: list[RTCRtpCodecParameters] = []
        for c in remote:
            if is_red(c):
                blocks = block_types(c)
                if blocks and all(pt in opus for pt in blocks) and c.clockRate == ours.clockRate:
                    red = copy.deepcopy(c)
                    red.rtcpFeedback = [fb for fb in c.rtcpFeedback if fb in ours.rtcpFeedback]
                    out.append(red)
            elif (match := by_type.pop(c.payloadType, None)) is not None:
                out.append(match)
        return out + list(by_type.values())  # anything matched under another number keeps its place

    find_common_codecs.mediasrv_red = True  # type: ignore[attr-defined]
    return find_common_codecs


def negotiate_red() -> None:
    """Add RED to aiortc's audio codecs (after Opus) and its matching. Idempotent."""
    audio = codecs.CODECS["audio"]
    if not any(is_red(c) for c in audio):
        opus = next(i for i, c in enumerate(audio) if c.mimeType.lower() == "audio/opus")
        pt = audio[opus].payloadType
        audio.insert(opus + 1, RTCRtpCodecParameters(
            mimeType=RED_MIME, clockRate=48000, channels=2, payloadType=RED_PAYLOAD_TYPE,
            parameters={f"{pt}/{pt}": None}))
    # aiortc calls it by its module-level name while negotiating (setRemoteDescription).
    current = aiortc.rtcpeerconnection.find_common_codecs
    if not getattr(current, "mediasrv_red", False):
        aiortc.rtcpeerconnection.find_common_codecs = common_codecs_with_red(current)  # type: ignore[assignment]
