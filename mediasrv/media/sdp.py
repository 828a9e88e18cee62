"""What the media plane needs to know from a negotiated SDP: codecs, header extension ids, SSRCs."""

from __future__ import annotations

import re

from aiortc import RTCRtpTransceiver
from aiortc.sdp import MediaDescription, SessionDescription

from mediasrv.errors import MediasrvError
from mediasrv.media import aiortc_glue

EXTENSION_NAMES = {
    "urn:ietf:params:rtp-hdrext:sdes:mid": "mid",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": "abs-send-time",
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level": "audio-level",
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01": "transport-cc",
}

CodecTuple = tuple[int, str, int, int | None, str]
MAX_SDP_BYTES = 64 * 1024


class SdpError(MediasrvError, ValueError):
    """The SDP cannot be used; the message says why (400 invalid_sdp)."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_sdp", message, 400)


def check_offer_text(text: str) -> SessionDescription:
    """Parse an SDP offer strictly enough to give a precise error before aiortc sees it."""
    if len(text) > MAX_SDP_BYTES:
        raise SdpError(f"SDP larger than {MAX_SDP_BYTES} bytes")
    if not text.startswith("v=0"):
        raise SdpError("SDP must start with 'v=0'")
    try:
        desc = SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises many types on garbage
        raise SdpError(f"SDP could not be parsed: {exc.__class__.__name__}: {exc}") from None
    media = [m for m in desc.media if m.kind in ("audio", "video", "application")]
    if not media:
        raise SdpError("SDP has no audio, video or application m-line")
    for m in media:
        if not m.ice.usernameFragment or not m.ice.password:
            raise SdpError(f"m-line mid={m.rtp.muxId!r} has no ICE credentials")
        if m.dtls is None or not m.dtls.fingerprints:
            raise SdpError(f"m-line mid={m.rtp.muxId!r} has no DTLS fingerprint")
    return desc


def codec_tuples(transceiver: RTCRtpTransceiver) -> list[CodecTuple]:
    """Negotiated codecs as (payload_type, name, clock_rate, apt, fmtp).

    The fmtp lets the router match H.264 packetization-mode/profile and VP9 profile across peers.
    """
    out: list[CodecTuple] = []
    for codec in aiortc_glue.negotiated_codecs(transceiver):
        name = codec.mimeType.split("/", 1)[1]
        apt = codec.parameters.get("apt") if name.lower() == "rtx" else None
        fmtp = ";".join(f"{k}={v}" if v is not None else k for k, v in codec.parameters.items())
        out.append((codec.payloadType, name, codec.clockRate, int(apt) if apt is not None else None, fmtp))
    return out


def extension_ids(media: list[MediaDescription]) -> dict[str, int]:
    """Header extension ids by short name (with BUNDLE all m-lines share one id space)."""
    ids: dict[str, int] = {}
    for m in media:
        for ext in m.rtp.headerExtensions:
            name = EXTENSION_NAMES.get(ext.uri)
            if name:
                ids[name] = ext.id
    return ids


def media_by_mid(desc: SessionDescription) -> dict[str, MediaDescription]:
    return {m.rtp.muxId: m for m in desc.media if m.rtp.muxId}


def ssrcs_of(media: MediaDescription) -> list[int]:
    return sorted({s.ssrc for s in media.ssrc})


_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host.*)$", re.M)


def announce_addresses(sdp: str, mapping: dict[str, str]) -> str:
    """Rewrite host candidates from bound addresses to announced ones (e.g. behind 1:1 NAT)."""
    if not mapping:
        return sdp
    return _CANDIDATE.sub(lambda m: m.group(1) + mapping.get(m.group(2), m.group(2)) + m.group(3), sdp)
