"""SRTP protect + unprotect of 1.2 KB RTP packets: mediasrv_native vs libsrtp (pylibsrtp).

Both run through their Python bindings in the same process, on the same packets, timed the
same way; the figure of merit is the ratio, recorded in extra_info (no timing asserts).
Run: .venv/bin/python -m pytest loadtest/benchmarks/test_bench_srtp.py --benchmark-only
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable

import pytest

mediasrv_native = pytest.importorskip("mediasrv_native")
pylibsrtp = pytest.importorskip("pylibsrtp")

PACKET_SIZE = 1200
PACKETS_PER_ROUND = 2048
ROUNDS = 15
SSRC = 0x5EED5EED

LIBSRTP_PROFILES = {
    "SRTP_AES128_CM_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "SRTP_AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "SRTP_AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}

# Sequence numbers increase within a round; each round starts on fresh sessions, so no
# packet is ever a replay.
PACKETS = [
    struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, SSRC) + os.urandom(PACKET_SIZE - 12)
    for seq in range(PACKETS_PER_ROUND)
]

Pair = tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]


def native_pair(profile: str) -> Pair:
    key_len, salt_len = mediasrv_native.srtp_key_lengths(profile)
    key, salt = os.urandom(key_len), os.urandom(salt_len)
    session = mediasrv_native.SrtpSession(profile, key, salt, key, salt)
    return session.protect_rtp, session.unprotect_rtp


def libsrtp_pair(profile: str) -> Pair:
    key_len, salt_len = mediasrv_native.srtp_key_lengths(profile)
    master = os.urandom(key_len + salt_len)
    policy = pylibsrtp.Policy
    tx = pylibsrtp.Session(
        policy(
            key=master, ssrc_type=policy.SSRC_ANY_OUTBOUND, srtp_profile=LIBSRTP_PROFILES[profile]
        )
    )
    rx = pylibsrtp.Session(
        policy(
            key=master, ssrc_type=policy.SSRC_ANY_INBOUND, srtp_profile=LIBSRTP_PROFILES[profile]
        )
    )
    return tx.protect, rx.unprotect


def run_round(protect: Callable[[bytes], bytes], unprotect: Callable[[bytes], bytes]) -> None:
    for packet in PACKETS:
        unprotect(protect(packet))


def best_round_seconds(make_pair: Callable[[str], Pair], profile: str) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        protect, unprotect = make_pair(profile)
        start = time.perf_counter()
        run_round(protect, unprotect)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("profile", list(LIBSRTP_PROFILES))
def test_bench_srtp_protect_unprotect(benchmark, speedup_report, profile: str) -> None:
    # Sanity: both sides really round-trip before anything is timed.
    for make_pair in (native_pair, libsrtp_pair):
        protect, unprotect = make_pair(profile)
        assert unprotect(protect(PACKETS[0])) == PACKETS[0]

    # Interleave the two measurements so machine noise hits both alike.
    libsrtp_s = min(best_round_seconds(libsrtp_pair, profile) for _ in range(2))
    native_s = min(best_round_seconds(native_pair, profile) for _ in range(2))

    benchmark.pedantic(run_round, setup=lambda: (native_pair(profile), {}), rounds=ROUNDS)

    per_packet = 1e6 / PACKETS_PER_ROUND
    benchmark.extra_info.update(
        {
            "profile": profile,
            "packet_bytes": PACKET_SIZE,
            "native_us_per_protect_unprotect": round(native_s * per_packet, 3),
            "libsrtp_us_per_protect_unprotect": round(libsrtp_s * per_packet, 3),
            "speedup_vs_libsrtp": round(libsrtp_s / native_s, 2),
        }
    )
    speedup_report(
        f"SRTP protect+unprotect 1.2KB {profile}",
        libsrtp_s / PACKETS_PER_ROUND,
        native_s / PACKETS_PER_ROUND,
    )
