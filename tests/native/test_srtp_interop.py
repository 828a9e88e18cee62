"""Native SRTP (mediasrv_native.SrtpSession) against libsrtp (pylibsrtp), both directions.

For every profile, packets protected by one side are unprotected by the other, RTP and RTCP,
across a sequence-number wrap (rollover counter 0 -> 1) and on two SSRCs at once.
"""

from __future__ import annotations

import os
import struct

import pytest

mediasrv_native = pytest.importorskip("mediasrv_native")
pylibsrtp = pytest.importorskip("pylibsrtp")
Policy = pylibsrtp.Policy
Session = pylibsrtp.Session

PROFILES = {
    "SRTP_AES128_CM_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "SRTP_AES128_CM_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "SRTP_AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "SRTP_AEAD_AES_256_GCM": Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}
SSRCS = (0x11223344, 0xCAFEBABE)
# Crosses 65535 -> 0, so the second half is protected with rollover counter 1.
WRAP_SEQS = [*range(65526, 65536), *range(0, 10)]


def rtp(seq: int, ssrc: int, size: int = 1200) -> bytes:
    header = struct.pack("!BBHII", 0x80, 96, seq, seq * 3000 & 0xFFFFFFFF, ssrc)
    return header + bytes((seq + i) & 0xFF for i in range(size - len(header)))


def rtcp_sender_report(ssrc: int, n: int) -> bytes:
    body = struct.pack("!IIIII", 0xE0000000 + n, n, n * 3000, n, n * 1200)
    return struct.pack("!BBHI", 0x80, 200, 6, ssrc) + body


class Peers:
    """Our session and a libsrtp peer with crosswise keys."""

    def __init__(self, profile: str) -> None:
        key_len, salt_len = mediasrv_native.srtp_key_lengths(profile)
        self.ours_key, self.ours_salt = os.urandom(key_len), os.urandom(salt_len)
        self.theirs_key, self.theirs_salt = os.urandom(key_len), os.urandom(salt_len)
        self.ours = mediasrv_native.SrtpSession(
            profile, self.ours_key, self.ours_salt, self.theirs_key, self.theirs_salt
        )
        libsrtp_profile = PROFILES[profile]
        self.libsrtp_rx = Session(
            Policy(
                key=self.ours_key + self.ours_salt,
                ssrc_type=Policy.SSRC_ANY_INBOUND,
                srtp_profile=libsrtp_profile,
            )
        )
        self.libsrtp_tx = Session(
            Policy(
                key=self.theirs_key + self.theirs_salt,
                ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                srtp_profile=libsrtp_profile,
            )
        )


@pytest.mark.parametrize("profile", list(PROFILES))
def test_key_lengths_match_libsrtp(profile: str) -> None:
    key_len, salt_len = mediasrv_native.srtp_key_lengths(profile)
    # libsrtp wants at least master key + salt bytes for the profile; the exact split is
    # checked by the interop tests below, which key both sides from the same bytes.
    Policy(key=bytes(key_len + salt_len), srtp_profile=PROFILES[profile])
    with pytest.raises(ValueError):
        Policy(key=bytes(key_len + salt_len - 1), srtp_profile=PROFILES[profile])


@pytest.mark.parametrize("profile", list(PROFILES))
def test_rtp_ours_to_libsrtp_across_wrap(profile: str) -> None:
    peers = Peers(profile)
    for seq in WRAP_SEQS:
        for ssrc in SSRCS:
            plain = rtp(seq, ssrc)
            protected = peers.ours.protect_rtp(plain)
            assert peers.libsrtp_rx.unprotect(protected) == plain
    for ssrc in SSRCS:
        assert peers.ours.tx_roc(ssrc) == 1
    assert peers.ours.stats()["rtp_protected"] == len(WRAP_SEQS) * len(SSRCS)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_rtp_libsrtp_to_ours_across_wrap(profile: str) -> None:
    peers = Peers(profile)
    for seq in WRAP_SEQS:
        for ssrc in SSRCS:
            plain = rtp(seq, ssrc)
            assert peers.ours.unprotect_rtp(peers.libsrtp_tx.protect(plain)) == plain
    for ssrc in SSRCS:
        assert peers.ours.rx_roc(ssrc) == 1
    stats = peers.ours.stats()
    assert stats["rtp_unprotected"] == len(WRAP_SEQS) * len(SSRCS)
    assert stats["rx_streams"] == len(SSRCS)
    assert stats["dropped"] == 0


@pytest.mark.parametrize("profile", list(PROFILES))
def test_rtp_ciphertext_is_byte_identical_to_libsrtp(profile: str) -> None:
    """Same keys, same packet index: both implementations must emit the same bytes."""
    peers = Peers(profile)
    twin = mediasrv_native.SrtpSession(
        profile, peers.theirs_key, peers.theirs_salt, peers.ours_key, peers.ours_salt
    )
    for seq in WRAP_SEQS:
        plain = rtp(seq, SSRCS[0], size=200)
        assert twin.protect_rtp(plain) == peers.libsrtp_tx.protect(plain)
    # Both number a stream's SRTCP packets from 1, so SRTCP matches byte for byte too.
    for n in range(5):
        report = rtcp_sender_report(SSRCS[1], n)
        assert twin.protect_rtcp(report) == peers.libsrtp_tx.protect_rtcp(report)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_rtcp_both_directions(profile: str) -> None:
    peers = Peers(profile)
    for n in range(20):
        for ssrc in SSRCS:
            report = rtcp_sender_report(ssrc, n)
            assert peers.libsrtp_rx.unprotect_rtcp(peers.ours.protect_rtcp(report)) == report
            assert peers.ours.unprotect_rtcp(peers.libsrtp_tx.protect_rtcp(report)) == report
    stats = peers.ours.stats()
    assert stats["rtcp_protected"] == stats["rtcp_unprotected"] == 40


@pytest.mark.parametrize("profile", list(PROFILES))
def test_tampered_and_replayed_libsrtp_packets_raise_precise_errors(profile: str) -> None:
    peers = Peers(profile)
    protected = peers.libsrtp_tx.protect(rtp(1000, SSRCS[0]))
    tampered = bytearray(protected)
    tampered[40] ^= 0x01
    with pytest.raises(ValueError, match="authentication failed"):
        peers.ours.unprotect_rtp(bytes(tampered))
    peers.ours.unprotect_rtp(protected)
    with pytest.raises(ValueError, match="replayed packet"):
        peers.ours.unprotect_rtp(protected)

    report = peers.libsrtp_tx.protect_rtcp(rtcp_sender_report(SSRCS[0], 1))
    peers.ours.unprotect_rtcp(report)
    with pytest.raises(ValueError, match="replayed packet"):
        peers.ours.unprotect_rtcp(report)
    with pytest.raises(ValueError, match="packet too short"):
        peers.ours.unprotect_rtp(protected[:12])
    stats = peers.ours.stats()
    assert (stats["auth_failed"], stats["replayed"], stats["too_short"]) == (1, 2, 1)


def test_constructor_rejects_bad_profile_and_key_sizes() -> None:
    with pytest.raises(ValueError, match="unknown SRTP protection profile"):
        mediasrv_native.SrtpSession("SRTP_NULL_NULL", b"", b"", b"", b"")
    with pytest.raises(ValueError, match="unknown SRTP protection profile"):
        mediasrv_native.srtp_key_lengths("AES_CM_128_HMAC_SHA1_80")
    with pytest.raises(ValueError, match="32-byte keys and 12-byte salts"):
        mediasrv_native.SrtpSession(
            "SRTP_AEAD_AES_256_GCM", bytes(16), bytes(12), bytes(32), bytes(12)
        )
