"""What the media plane needs to know from a negotiated SDP: codecs, header extension ids, SSRCs."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

from aiortc import RTCRtpCodecParameters, RTCRtpTransceiver, codecs
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpHeaderExtensionParameters
from aiortc.sdp import MediaDescription, SessionDescription

from mediasrv.errors import MediasrvError
from mediasrv.media import aiortc_glue, red_sdp

TRANSPORT_CC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
# The id we offer it under, the same in every m-line (BUNDLE: one id space); aiortc uses 1-3.
TRANSPORT_CC_ID = 5
EXTENSION_NAMES = {
    "urn:ietf:params:rtp-hdrext:sdes:mid": "mid",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": "abs-send-time",
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level": "audio-level",
    TRANSPORT_CC_URI: "transport-cc",
}

CodecTuple = tuple[int, str, int, int | None, str]
MAX_SDP_BYTES = 64 * 1024

# The ranges the media plane can hold; an SDP number outside them is the client's error (400),
# refused before a participant, a transport or a router entry exists.
SSRC_MAX = 2**32 - 1
PAYLOAD_TYPE_MAX = 127
PORT_MAX = 65535
EXTENSION_ID_MIN, EXTENSION_ID_MAX = 1, 255
CLOCK_RATE_MAX = 2**32 - 1
CHANNELS_MAX = 255
BANDWIDTH_MAX = 2**32 - 1  # b= is in kbit/s (AS, CT) or bit/s (TIAS); 32 bits is ample
PRIORITY_MAX = 2**32 - 1
COMPONENT_MAX = 256
FMTP_INT_MAX = 2**32 - 1
_BANDWIDTH = re.compile(r"^b=([A-Za-z0-9-]+):(.*)$")


class SdpError(MediasrvError, ValueError):
    """The SDP cannot be used; the message says why (400 invalid_sdp)."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_sdp", message, 400)


# SDP texts that passed `check_offer_text` lately, with their parse: a WHIP offer is checked where it
# arrives, again before its room makes a peer connection and again before aiortc sees it, and each
# check is a full parse (0.1 ms for a small offer, ~1 ms for Chromium's simulcast one). More than
# one: during a ramp other connections' checks come between one offer's (one entry missed then).
_ACCEPTED: OrderedDict[str, SessionDescription] = OrderedDict()
_ACCEPTED_MAX = 32


def check_offer_text(text: str) -> SessionDescription:
    """Parse an SDP offer strictly enough to give a precise error before aiortc sees it. A text
    accepted lately is not parsed again (the checks depend on the text alone); a refused text is
    checked, and refused, every time. The parse returned is shared: read it, never change it."""
    desc = _ACCEPTED.get(text)
    if desc is not None:
        _ACCEPTED.move_to_end(text)
        return desc
    desc = _check_offer_text(text)
    _ACCEPTED[text] = desc
    if len(_ACCEPTED) > _ACCEPTED_MAX:
        _ACCEPTED.popitem(last=False)
    return desc


def take_parsed(text: str) -> SessionDescription | None:
    """The parse of a text `check_offer_text` accepted lately, given away (no longer shared, so
    the taker may change it: aiortc's `setRemoteDescription` does); None when there is none."""
    return _ACCEPTED.pop(text, None)


aiortc_glue.reuse_offer_parses(take_parsed)


def _check_offer_text(text: str) -> SessionDescription:
    if len(text) > MAX_SDP_BYTES:
        raise SdpError(f"SDP larger than {MAX_SDP_BYTES} bytes")
    if not text.startswith("v=0"):
        raise SdpError("SDP must start with 'v=0'")
    try:
        desc = SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises many types on garbage
        raise SdpError(f"SDP could not be parsed: {exc.__class__.__name__}: {exc}") from None
    check_numbers(desc)
    check_bandwidths(text)
    media = [m for m in desc.media if m.kind in ("audio", "video", "application")]
    if not media:
        raise SdpError("SDP has no audio, video or application m-line")
    for m in media:
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise SdpError(f"m-line mid={m.rtp.muxId!r} has no ICE credentials")
        if m.dtls is None or not m.dtls.fingerprints:
            raise SdpError(f"m-line mid={m.rtp.muxId!r} has no DTLS fingerprint")
    return desc


def _in_range(value: object, low: int, high: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SdpError(f"{what} {value!r} is out of range {low}..{high}")
    return value


def check_numbers(desc: SessionDescription) -> None:
    """Every number the parser read from the SDP is within the range the media plane can hold."""
    for m in desc.media:
        where = f"m-line mid={m.rtp.muxId!r}"
        _in_range(m.port, 0, PORT_MAX, f"{where}: port")
        if m.rtcp_port is not None:
            _in_range(m.rtcp_port, 0, PORT_MAX, f"{where}: a=rtcp port")
        if m.sctp_port is not None:
            _in_range(m.sctp_port, 0, PORT_MAX, f"{where}: a=sctp-port")
        if m.sctpCapabilities is not None:
            _in_range(m.sctpCapabilities.maxMessageSize, 0, FMTP_INT_MAX, f"{where}: a=max-message-size")
        if m.kind in ("audio", "video"):
            for pt in m.fmt:
                _in_range(pt, 0, PAYLOAD_TYPE_MAX, f"{where}: payload type")
        for codec in m.rtp.codecs:
            _check_codec(codec.payloadType, codec.clockRate, codec.channels, codec.parameters, where)
        for ext in m.rtp.headerExtensions:
            _in_range(ext.id, EXTENSION_ID_MIN, EXTENSION_ID_MAX, f"{where}: extension id")
        for ssrc in m.ssrc:
            _in_range(ssrc.ssrc, 0, SSRC_MAX, f"{where}: SSRC")
        for group in m.ssrc_group:
            for member in group.items:
                _in_range(member, 0, SSRC_MAX, f"{where}: ssrc-group {group.semantic} member SSRC")
        for cand in m.ice_candidates:
            _in_range(cand.port, 0, PORT_MAX, f"{where}: candidate port")
            _in_range(cand.priority, 0, PRIORITY_MAX, f"{where}: candidate priority")
            _in_range(cand.component, 1, COMPONENT_MAX, f"{where}: candidate component")
            if cand.relatedPort is not None:
                _in_range(cand.relatedPort, 0, PORT_MAX, f"{where}: candidate rport")


def _check_codec(pt: object, clock_rate: object, channels: object, parameters: Mapping[str, object],
                 where: str) -> None:
    _in_range(pt, 0, PAYLOAD_TYPE_MAX, f"{where}: payload type")
    _in_range(clock_rate, 1, CLOCK_RATE_MAX, f"{where}: clock rate of payload type {pt}")
    if channels is not None:
        _in_range(channels, 1, CHANNELS_MAX, f"{where}: channels of payload type {pt}")
    for name, value in parameters.items():
        if name == "apt":
            _in_range(value, 0, PAYLOAD_TYPE_MAX, f"{where}: apt of payload type {pt}")
        elif isinstance(value, int):
            _in_range(value, 0, FMTP_INT_MAX, f"{where}: fmtp {name} of payload type {pt}")


def check_bandwidths(text: str) -> None:
    """`b=<type>:<value>` lines (aiortc does not read them, but they must still be numbers in range)."""
    for line in text.splitlines():
        found = _BANDWIDTH.match(line.strip())
        if line.startswith("b=") and found is None:
            raise SdpError(f"bandwidth line {line[:40]!r} is not 'b=<type>:<value>'")
        if found is not None:
            value = found.group(2)
            if not value.isascii() or not value.isdigit() or int(value) > BANDWIDTH_MAX:
                raise SdpError(f"bandwidth {found.group(1)} {value[:40]!r} is out of range 0..{BANDWIDTH_MAX}")


def negotiate_transport_cc() -> None:
    """Let aiortc negotiate transport-wide congestion control: the transport-cc header extension
    and `a=rtcp-fb:* transport-cc`. aiortc neither offers nor accepts them, but the native plane
    implements both ends (numbers on all it sends a subscriber and runs its estimator on the
    feedback; feedback to publishers, whose own congestion control then runs on it). Added to
    aiortc's tables, they are in the offers we make, and in our answers only when the peer offered
    them (aiortc answers with what both sides list). Idempotent."""
    for kind in ("audio", "video"):
        extensions = codecs.HEADER_EXTENSIONS[kind]
        if not any(e.uri == TRANSPORT_CC_URI for e in extensions):
            extensions.append(RTCRtpHeaderExtensionParameters(id=TRANSPORT_CC_ID, uri=TRANSPORT_CC_URI))
        for codec in codecs.CODECS[kind]:
            if not codecs.is_rtx(codec) and RTCRtcpFeedback(type="transport-cc") not in codec.rtcpFeedback:
                codec.rtcpFeedback.append(RTCRtcpFeedback(type="transport-cc"))


negotiate_transport_cc()
red_sdp.negotiate_red()  # after transport-cc: Chromium lists no feedback for RED


def codec_tuples(transceiver: RTCRtpTransceiver) -> list[CodecTuple]:
    """Negotiated codecs as (payload_type, name, clock_rate, apt, fmtp).

    The fmtp lets the router match H.264 packetization-mode/profile and VP9 profile across peers.
    """
    out: list[CodecTuple] = []
    for codec in aiortc_glue.negotiated_codecs(transceiver):
        name = codec.mimeType.split("/", 1)[1]
        _check_codec(codec.payloadType, codec.clockRate, None, codec.parameters, "negotiated codec")
        apt = codec.parameters.get("apt") if name.lower() == "rtx" else None
        fmtp = ";".join(f"{k}={v}" if v is not None else k for k, v in codec.parameters.items())
        out.append((payload_type(codec), name, codec.clockRate, int(apt) if apt is not None else None, fmtp))
    return out


def payload_type(codec: RTCRtpCodecParameters) -> int:
    """A negotiated codec's payload type: aiortc gives one to every codec it negotiates (the field
    is optional only for codecs not negotiated yet)."""
    if codec.payloadType is None:
        raise ValueError(f"codec {codec.mimeType} has no payload type: it was not negotiated")
    return codec.payloadType


def extension_ids(media: list[MediaDescription]) -> dict[str, int]:
    """Header extension ids by short name (with BUNDLE all m-lines share one id space)."""
    ids: dict[str, int] = {}
    for m in media:
        for ext in m.rtp.headerExtensions:
            name = EXTENSION_NAMES.get(ext.uri)
            if name:
                ids[name] = _in_range(ext.id, EXTENSION_ID_MIN, EXTENSION_ID_MAX, f"{name} extension id")
    return ids


def media_by_mid(desc: SessionDescription) -> dict[str, MediaDescription]:
    return {m.rtp.muxId: m for m in desc.media if m.rtp.muxId}


def ssrcs_of(media: MediaDescription) -> list[int]:
    return sorted({_in_range(s.ssrc, 0, SSRC_MAX, "SSRC") for s in media.ssrc})


_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host.*)$", re.M)


def announce_addresses(sdp: str, mapping: dict[str, str]) -> str:
    """Rewrite host candidates from bound addresses to announced ones (e.g. behind 1:1 NAT)."""
    if not mapping:
        return sdp
    return _CANDIDATE.sub(lambda m: m.group(1) + mapping.get(m.group(2), m.group(2)) + m.group(3), sdp)


_TCP_PASSIVE = re.compile(r"^(a=candidate:\S+ \d+ tcp \d+ \S+ )(\d+)( typ host .*\btcptype passive\b.*)$",
                          re.M | re.I)


def announce_tcp_port(sdp: str, bound: int, announced: int) -> str:
    """Announce ICE-TCP passive candidates on port `bound` at `announced` instead (a firewall maps
    it, e.g. 443 -> the media TCP port)."""
    if not announced or announced == bound:
        return sdp
    return _TCP_PASSIVE.sub(lambda m: m.group(1) + (str(announced) if int(m.group(2)) == bound
                                                    else m.group(2)) + m.group(3), sdp)


def signalled_tcp_active_type(sdp: str, address: str) -> str | None:
    """The type of an ICE-TCP active candidate signalled in `sdp` with `address` (None if there is
    none). Such a candidate says port 9 and connects from an ephemeral port (RFC 6544), so the
    passive side's ICE agent only ever learns it as peer-reflexive; this names what it is."""
    try:
        desc = SessionDescription.parse(sdp)
    except Exception:  # a description aiortc accepted parses; anything else names nothing
        return None
    for m in desc.media:
        for c in m.ice_candidates:
            if (c.protocol or "").lower() == "tcp" and c.tcpType == "active" and c.ip == address:
                return c.type
    return None
