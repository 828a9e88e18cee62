"""Write the seed corpora: native/fuzz/corpus/<target>/seed-* and tests/fuzz/corpus/<target>/seed-*.

Seeds are well-formed packets so that mutations start past the header checks: RTP with the payload
formats the router and jitter buffer know (VP8, H.264, Opus, RTX), RTCP built by aiortc plus the
feedback messages it does not write (REMB, FIR, XR), SRTP/SRTCP protected by libsrtp (pylibsrtp) with
the fuzz targets' fixed keys, and STUN Binding requests made by aioice with MESSAGE-INTEGRITY. The
constants below must match native/fuzz/src/lib.rs. Run: `.venv/bin/python tests/fuzz/make_seeds.py`;
the output is deterministic. The arbitrary-driven targets (jitter, router_ops) get their seeds from a
merged fuzz run instead (scripts/fuzz.sh), since their input is a byte stream `arbitrary` decodes.
Python targets (tests/fuzz/targets.py): the published vitals vectors (tests/data/vitals_vectors.json),
the browser-like offer template and variants of it, and tus headers as tus clients send them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
from collections.abc import Iterable
from pathlib import Path

import pylibsrtp
from aioice import stun
from aiortc import rtp as artp

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "native" / "fuzz" / "corpus"
PY_CORPUS = ROOT / "tests" / "fuzz" / "corpus"

SEED_KEY = b"mediasrv-fuzz-seed-master-key-32"
SEED_SALT = b"fuzz-salt-14by"
STUN_PASSWORD = b"mediasrv-fuzz-ice-password"
# (libsrtp profile, key length, salt length) in the order of the core's Profile::ALL.
PROFILES = [
    (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14),
    (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 16, 14),
    (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12),
    (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32, 12),
]
# The demux target's room (mediasrv_fuzz::room).
VP8_SSRC, RTX_SSRC, H264_SSRC, OPUS_SSRC = 0x11111111, 0x22222222, 0x33333333, 0x44444444
VP8_PT, RTX_PT, H264_PT, OPUS_PT = 96, 97, 102, 111
SUB_SSRCS = [0x5B000001, 0x5B000002, 0x5B000003]
SUB_RTCP_SSRC = 0x5B0000FF
MID_ID, ABS_SEND_TIME_ID, AUDIO_LEVEL_ID = 1, 2, 3

VP8_KEY = bytes([0x90, 0x80, 0x05, 0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01]) + bytes(24)
VP8_DELTA = bytes([0x90, 0x80, 0x06, 0x11, 0x00]) + bytes(range(16))
VP8_CONT = bytes([0x80, 0x80, 0x06]) + bytes(range(20))
H264_STAP_A = bytes([0x78, 0, 4, 0x67, 0x42, 0xE0, 0x1F, 0, 2, 0x68, 0xCE, 0, 3, 0x65, 0x88, 0x84])
H264_FU_START = bytes([0x7C, 0x85, 0x88, 0x84, 0x21])
H264_FU_MID = bytes([0x7C, 0x05, 0x10, 0x11])
H264_FU_END = bytes([0x7C, 0x45, 0x21, 0x22])
H264_NON_IDR = bytes([0x41, 0x9A, 0x02, 0x03])
OPUS = bytes([0x78, 0x01, 0x02, 0x03, 0x04])


def rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, *, marker: bool = False,
        exts: Iterable[tuple[int, bytes]] = (), two_byte: bool = False, csrcs: Iterable[int] = (),
        padding: int = 0) -> bytes:
    """An RTP packet (RFC 3550) with RFC 8285 one- or two-byte header extensions."""
    csrcs = list(csrcs)
    body = b""
    for ext_id, data in exts:
        body += bytes([ext_id, len(data)]) + data if two_byte else bytes([(ext_id << 4) | (len(data) - 1)]) + data
    body += bytes(-len(body) % 4)
    first = 0x80 | (0x20 if padding else 0) | (0x10 if body else 0) | len(csrcs)
    out = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    out += b"".join(struct.pack("!I", c) for c in csrcs)
    if body:
        out += struct.pack("!HH", 0x1000 if two_byte else 0xBEDE, len(body) // 4) + body
    out += payload
    if padding:
        out += bytes(padding - 1) + bytes([padding])
    return out


def media_packets() -> list[bytes]:
    """A short publisher stream of the demux room: VP8 keyframe and deltas, RTX, H.264, Opus."""
    mid = lambda m: (MID_ID, m.encode())  # noqa: E731
    ast = (ABS_SEND_TIME_ID, b"\x12\x34\x56")
    out = [
        rtp(VP8_PT, 100, 9000, VP8_SSRC, VP8_KEY, exts=[mid("0"), ast]),
        rtp(VP8_PT, 101, 9000, VP8_SSRC, VP8_CONT, marker=True, exts=[mid("0")]),
        rtp(VP8_PT, 103, 12000, VP8_SSRC, VP8_DELTA, marker=True, exts=[ast]),
        rtp(RTX_PT, 1, 12000, RTX_SSRC, struct.pack("!H", 102) + VP8_CONT, exts=[mid("0")]),
        rtp(H264_PT, 500, 3000, H264_SSRC, H264_STAP_A, exts=[mid("1")]),
        rtp(H264_PT, 501, 3000, H264_SSRC, H264_FU_START),
        rtp(H264_PT, 502, 3000, H264_SSRC, H264_FU_MID),
        rtp(H264_PT, 503, 3000, H264_SSRC, H264_FU_END, marker=True),
        rtp(H264_PT, 504, 6000, H264_SSRC, H264_NON_IDR, marker=True),
        rtp(OPUS_PT, 7, 960, OPUS_SSRC, OPUS, exts=[mid("2"), (AUDIO_LEVEL_ID, b"\x9f")]),
        rtp(OPUS_PT, 8, 1920, OPUS_SSRC, OPUS, exts=[(AUDIO_LEVEL_ID, b"\x20")]),
    ]
    return out


def sdes_cname(ssrc: int, cname: bytes) -> bytes:
    item = bytes([1, len(cname)]) + cname + b"\x00"
    item += bytes(-len(item) % 4)
    return struct.pack("!BBHI", 0x81, 202, (4 + len(item)) // 4, ssrc) + item


def remb(sender: int, bitrate: int, ssrcs: list[int]) -> bytes:
    exp = 0
    while bitrate >= 1 << 18:
        bitrate >>= 1
        exp += 1
    fci = b"REMB" + struct.pack("!I", (len(ssrcs) << 24) | (exp << 18) | bitrate)
    fci += b"".join(struct.pack("!I", s) for s in ssrcs)
    return struct.pack("!BBHII", 0x8F, 206, (8 + len(fci)) // 4, sender, 0) + fci


def fir(sender: int, media: int, seq_nr: int) -> bytes:
    return struct.pack("!BBHIIIB3x", 0x84, 206, 4, sender, 0, media, seq_nr)


def xr_rrtr(ssrc: int, ntp: int) -> bytes:
    return struct.pack("!BBHIBBHQ", 0x80, 207, 4, ssrc, 4, 0, 2, ntp)


def xr_dlrr(ssrc: int, items: list[tuple[int, int, int]]) -> bytes:
    body = b"".join(struct.pack("!III", *i) for i in items)
    return struct.pack("!BBHIBBH", 0x80, 207, 2 + len(body) // 4, ssrc, 5, 0, len(body) // 4) + body


def rtcp_packets() -> list[bytes]:
    """Compound RTCP as peers send it: reports written by aiortc, feedback the router reads."""
    sender_info = artp.RtcpSenderInfo(ntp_timestamp=0xE1234567_89ABCDEF, rtp_timestamp=90000,
                                      packet_count=42, octet_count=4200)
    block = artp.RtcpReceiverInfo(ssrc=VP8_SSRC, fraction_lost=3, packets_lost=7, highest_sequence=70000,
                                  jitter=12, lsr=0x456789AB, dlsr=0x10000)
    sr = bytes(artp.RtcpSrPacket(ssrc=SUB_SSRCS[0], sender_info=sender_info, reports=[block]))
    rr = bytes(artp.RtcpRrPacket(ssrc=SUB_RTCP_SSRC, reports=[block]))
    nack = bytes(artp.RtcpRtpfbPacket(fmt=1, ssrc=SUB_RTCP_SSRC, media_ssrc=SUB_SSRCS[0], lost=[100, 101, 103, 120]))
    pli = bytes(artp.RtcpPsfbPacket(fmt=1, ssrc=SUB_RTCP_SSRC, media_ssrc=SUB_SSRCS[1]))
    bye = bytes(artp.RtcpByePacket(sources=[SUB_RTCP_SSRC]))
    sdes = sdes_cname(SUB_RTCP_SSRC, b"fuzz-cname")
    return [
        sr + sdes,
        rr + sdes,
        rr + nack,
        rr + pli,
        rr + remb(SUB_RTCP_SSRC, 1_500_000, SUB_SSRCS[:2]),
        rr + fir(SUB_RTCP_SSRC, SUB_SSRCS[0], 9),
        rr + xr_rrtr(SUB_RTCP_SSRC, 0xE1234567_00000000),
        rr + xr_dlrr(SUB_RTCP_SSRC, [(0x5EED0001, 0x456789AB, 0x8000)]),
        rr + bye,
    ]


def items(parts: Iterable[bytes]) -> bytes:
    """The targets' framing (mediasrv_fuzz::items): a big-endian u16 length before each part."""
    return b"".join(struct.pack("!H", len(p)) + p for p in parts)


def session(profile: int, key_len: int, salt_len: int) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=SEED_KEY[:key_len] + SEED_SALT[:salt_len],
                              ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    return pylibsrtp.Session(policy)


def is_rtcp(packet: bytes) -> bool:
    return 192 <= packet[1] <= 223


def protect(s: pylibsrtp.Session, packet: bytes) -> bytes:
    return s.protect_rtcp(packet) if is_rtcp(packet) else s.protect(packet)


def stun_request(username: str, password: bytes, txid: bytes) -> bytes:
    msg = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST,
                       transaction_id=txid)
    msg.attributes["USERNAME"] = username
    msg.attributes["PRIORITY"] = 1853817087
    msg.attributes["ICE-CONTROLLING"] = 0x1122334455667788
    msg.add_message_integrity(password)
    msg.add_fingerprint()
    return bytes(msg)


def seeds() -> dict[str, list[bytes]]:
    media, rtcp = media_packets(), rtcp_packets()
    twobyte = rtp(VP8_PT, 9, 9, VP8_SSRC, VP8_DELTA, exts=[(1, b"0"), (20, b"x" * 20), (2, b"")], two_byte=True)
    padded = rtp(OPUS_PT, 10, 10, OPUS_SSRC, OPUS, csrcs=[1, 2], padding=4)
    # Opus RED (RFC 2198) as Chromium sends it: one redundant block (20 ms back, 3 bytes), the primary.
    red = rtp(63, 11, 11, OPUS_SSRC, bytes([0x80 | OPUS_PT, 0x0F, 0x00, 3, OPUS_PT]) + b"\xaa\xbb\xcc" + OPUS)
    out: dict[str, list[bytes]] = {"rtp_parse": [*media, twobyte, padded, red], "rtcp_parse": rtcp}

    srtp: list[bytes] = []
    for n, (profile, key_len, salt_len) in enumerate(PROFILES):
        s = session(profile, key_len, salt_len)
        srtp.append(bytes([n]) + items(protect(s, p) for p in [*media, *rtcp]))
        # protect-then-mutate mode: plaintext items, the last two bytes of each say how to damage it
        srtp.append(bytes([0x80 | n]) + items(p + b"\x00\x00" for p in [*media[:4], *rtcp[:3]]))
        srtp.append(bytes([0x80 | n]) + items([media[0] + b"\x05\x01", media[1] + b"\x00\x00"]))
    out["srtp_unprotect"] = srtp

    pub = session(*PROFILES[0])
    sub = session(*PROFILES[0])
    stun_dgram = stun_request("abcd:wxyz", STUN_PASSWORD, b"\x01" * 12)
    dtls_hello = bytes([22, 0xFE, 0xFD]) + bytes(10) + b"\x00\x10" + bytes(16)
    feedback = [rtcp[2], rtcp[3], rtcp[4], rtcp[5], rtcp[1]]
    demux = [b"\x00" + protect(pub, p) for p in media]
    demux += [b"\x01" + protect(sub, p) for p in feedback]
    out["demux"] = [
        items(demux),
        items([b"\x00" + stun_dgram, b"\x01" + dtls_hello, *demux[:3], *demux[-3:]]),
    ]

    out["stun"] = [
        b"\x00" + stun_request("abcd:wxyz", STUN_PASSWORD, b"\x02" * 12),
        b"\x00" + stun_request("a" * 40 + ":" + "b" * 40, STUN_PASSWORD, b"\x03" * 12),
        b"\x01" + items([b"abcd:wxyz", STUN_PASSWORD, b"\x07\x01"]),
        b"\x01" + items([b"ufrag", b"", b"\x00\x00"]),
    ]

    # ICE-TCP streams (RFC 4571): limit 1500 and 100 (the second ends at an oversize frame), 4 KiB buffer
    tcp_peer = session(*PROFILES[0])
    stream = items([stun_dgram, *[protect(tcp_peer, p) for p in media[:3]], dtls_hello])
    out["tcp_framing"] = [bytes([3, 2, 1]) + stream, bytes([2, 2, 200]) + stream]

    out["depack"] = [
        b"\x00" + items([VP8_KEY, VP8_CONT, VP8_CONT]),
        b"\x00" + items([VP8_DELTA]),
        b"\x01" + items([H264_STAP_A]),
        b"\x01" + items([H264_FU_START, H264_FU_MID, H264_FU_END]),
        b"\x01" + items([H264_NON_IDR]),
        b"\x02" + items([OPUS]),
    ]
    return out


def python_seeds() -> dict[str, list[bytes]]:
    sys.path.insert(0, str(ROOT))
    from tests.fuzz.targets import OFFER, OFFER_LINES, VITAL_KINDS

    vectors = json.loads((ROOT / "tests" / "data" / "vitals_vectors.json").read_text())
    vital = []
    for v in vectors["characteristics"]:
        code = int(v["uuid16"], 16)
        vital.append(bytes([VITAL_KINDS.index(code)]) + bytes.fromhex(v["payload"]))
    offers = [b"\x00" + OFFER.encode()]
    for line in ("a=ssrc:4294967295 cname:x", "b=AS:4294967295", "a=rtpmap:127 VP8/90000",
                 "a=fmtp:97 apt=128", "a=candidate:1 1 udp 1 127.0.0.1 65535 typ host"):
        at = OFFER_LINES.index("a=ssrc:2003 cname:fuzz")
        offers.append(bytes([2 * at + 1]) + line.encode())  # odd, below 0x80: replaces line `at`
    meta = "filename " + base64.b64encode(b"scan.pdf").decode() + ",filetype " + \
        base64.b64encode(b"application/pdf").decode() + ",is_confidential"
    digest = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
    tus_headers = [
        "\x00".join(["1048576", meta, "sha256 " + digest]),
        "\x00".join(["0", "", "sha1 " + base64.b64encode(hashlib.sha1(b"").digest()).decode()]),
    ]
    return {"vitals": vital, "sdp": offers, "tus": [b"\x00" + h.encode("latin-1") for h in tus_headers]}


def write(root: Path, corpora: dict[str, list[bytes]]) -> None:
    for target, blobs in corpora.items():
        d = root / target
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("seed-*"):
            old.unlink()
        for blob in blobs:
            (d / f"seed-{hashlib.sha1(blob).hexdigest()[:16]}").write_bytes(blob)
        print(f"{target}: {len(blobs)} seeds")


def main() -> int:
    write(CORPUS, seeds())
    write(PY_CORPUS, python_seeds())
    return 0


if __name__ == "__main__":
    sys.exit(main())
