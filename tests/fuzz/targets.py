"""Python fuzz targets: each takes one input (bytes) and raises AssertionError (or anything else
unexpected) when the code under test misbehaves. Driven by atheris (tests/fuzz/atheris_main.py,
coverage-guided, `scripts/fuzz.sh`) and by hypothesis (tests/fuzz/test_fuzz_python.py, in pytest).

* vitals: the Cython decoders (mediasrv._vitals through mediasrv.vitals) against the plain-Python
  reference decoder: same reading or both ValueError; batch rows agree with single decodes; the
  JSON form has no non-finite numbers. Nothing but ValueError may escape.
* sdp: `check_offer_text` and what runs after it on an accepted offer: every failure is the
  project's SdpError (`invalid_sdp`, 400); accepted numbers are within the plane's ranges.
* tus: the tus header parsers: integers, Upload-Metadata, Upload-Checksum; every failure is an
  HttpError with a 4xx status.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

from mediasrv import vitals
from mediasrv.api.http_common import HttpError
from mediasrv.api.v1 import tus
from mediasrv.media import sdp
from mediasrv.vitals import reference

VITAL_KINDS = [*vitals.KINDS.values(), 0x2A00, 0xFFFF]

# A WebRTC offer as a browser sends it (audio + video, BUNDLE, RTX, simulcast-free), the sdp
# target's template: inputs either replace it whole or splice fuzz text into one of its lines.
OFFER = "\r\n".join([
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS stream",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0",
    "c=IN IP4 0.0.0.0",
    "b=AS:64",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host generation 0",
    "a=candidate:2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active",
    "a=ice-ufrag:abcd",
    "a=ice-pwd:0123456789abcdefghijklmn",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
    "a=setup:actpass",
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:3 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=sendonly",
    "a=msid:stream audio0",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:0 PCMU/8000",
    "a=ssrc:1001 cname:fuzz",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102",
    "c=IN IP4 0.0.0.0",
    "b=TIAS:1500000",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:abcd",
    "a=ice-pwd:0123456789abcdefghijklmn",
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
    "a=setup:actpass",
    "a=mid:1",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=sendonly",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtpmap:96 VP8/90000",
    "a=rtcp-fb:96 nack",
    "a=rtcp-fb:96 nack pli",
    "a=rtcp-fb:96 ccm fir",
    "a=rtpmap:97 rtx/90000",
    "a=fmtp:97 apt=96",
    "a=rtpmap:102 H264/90000",
    "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    "a=ssrc-group:FID 2002 2003",
    "a=ssrc:2002 cname:fuzz",
    "a=ssrc:2003 cname:fuzz",
    "",
])
OFFER_LINES = OFFER.split("\r\n")


def _decode(fn: Any, kind: int, payload: bytes) -> Any:
    try:
        return fn(kind, payload)
    except ValueError:
        return ValueError


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, np.ndarray | list | tuple) and isinstance(b, np.ndarray | list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def vitals_target(data: bytes) -> None:
    if not data:
        return
    kind = VITAL_KINDS[data[0] % len(VITAL_KINDS)]
    payload = data[1:]
    got = _decode(vitals.decode, kind, payload)
    want = _decode(reference.decode, kind, payload)
    if got is ValueError or want is ValueError:
        assert got is want, f"kind {kind:#x}: Cython {got!r} but reference {want!r}"
    else:
        assert _same(got, want), f"kind {kind:#x}: Cython {got!r} != reference {want!r}"
        json.dumps(vitals.jsonable(got), allow_nan=False, default=str)
    if kind in vitals.KIND_NAMES:
        halves = [payload, payload[: len(payload) // 2], b""]
        batch = vitals.decode_batch(kind, halves, errors="mark")
        for i, part in enumerate(halves):
            ok = _decode(vitals.decode, kind, part) is not ValueError
            assert bool(batch.records[i]["ok"]) == ok, f"batch row {i} ok={batch.records[i]['ok']}"
    # The raw-number decoders take any whole number of values.
    raw2 = payload[: len(payload) // 2 * 2]
    values, codes = vitals.decode_sfloat_array(raw2, with_special=True)
    assert len(values) == len(codes) == len(raw2) // 2
    for i in range(min(len(values), 4)):
        value, special = reference.sfloat(int.from_bytes(raw2[2 * i : 2 * i + 2], "little"))
        assert _same(float(values[i]), value) and vitals.SPECIAL_NAMES[codes[i]] == special
    raw4 = payload[: len(payload) // 4 * 4]
    assert len(vitals.decode_float_array(raw4)) == len(raw4) // 4


def _offer_text(data: bytes) -> str:
    """Mode byte: even, the input is the whole SDP; odd, it replaces (or follows) one template line."""
    if not data:
        return ""
    text = data[1:].decode("utf-8", "surrogateescape")
    if data[0] % 2 == 0:
        return text
    lines = list(OFFER_LINES)
    at = (data[0] // 2) % len(lines)
    if data[0] & 0x80:
        lines.insert(at, text)
    else:
        lines[at] = text
    return "\r\n".join(lines)


def sdp_target(data: bytes) -> None:
    text = _offer_text(data)
    try:
        desc = sdp.check_offer_text(text)
        for m in desc.media:
            for ssrc in sdp.ssrcs_of(m):
                assert 0 <= ssrc <= sdp.SSRC_MAX
            for pt in m.fmt if m.kind in ("audio", "video") else ():
                assert isinstance(pt, int) and 0 <= pt <= sdp.PAYLOAD_TYPE_MAX
            assert 0 <= m.port <= sdp.PORT_MAX
        for ext_id in sdp.extension_ids(desc.media).values():
            assert sdp.EXTENSION_ID_MIN <= ext_id <= sdp.EXTENSION_ID_MAX
        sdp.media_by_mid(desc)
        sdp.announce_addresses(text, {"127.0.0.1": "192.0.2.1"})
        sdp.announce_tcp_port(text, 9, 443)
    except sdp.SdpError as exc:
        assert exc.code == "invalid_sdp" and exc.status == 400


class _Request:
    """What the tus header parsers read of a request."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


_DIGITS = re.compile(r"^[0-9]+$")


def _http_error(exc: HttpError) -> None:
    assert 400 <= exc.status < 500, f"tus header error with status {exc.status}"


def tus_target(data: bytes) -> None:
    """Input: a selector byte, then header values separated by NUL bytes (latin-1, as HTTP has them)."""
    if not data:
        return
    fields = data[1:].decode("latin-1").split("\x00")
    raw = fields[0]
    try:
        got = tus._header_int(_Request({"Upload-Length": raw}), "Upload-Length")
        assert got is not None and 0 <= got < 10**19 and _DIGITS.match(raw) and int(raw) == got
    except HttpError as exc:
        _http_error(exc)
    try:
        meta = tus.parse_metadata(fields[1] if len(fields) > 1 else raw)
        for key, value in meta.items():
            assert tus._META_KEY.match(key) and isinstance(value, str)
    except HttpError as exc:
        _http_error(exc)
    try:
        parsed = tus.parse_checksum(fields[2] if len(fields) > 2 else raw)
        if parsed is not None:
            algo, digest = parsed
            assert len(digest) == tus.CHECKSUMS[algo]().digest_size
    except HttpError as exc:
        _http_error(exc)


TARGETS = {"vitals": vitals_target, "sdp": sdp_target, "tus": tus_target}
