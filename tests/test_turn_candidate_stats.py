"""Classifying a selected candidate pair for mediasrv_media_peers{candidate,transport}."""

from __future__ import annotations

from mediasrv.media.candidate_stats import (
    CANDIDATE_TYPES,
    TRANSPORTS,
    classify_pair,
    count_peers,
    relay_transport,
    signalled_candidate,
)

# Relay candidates as Chromium signals them: the type preference (top byte) says how it reaches its relay.
SDP = """v=0\r
a=candidate:1 1 udp 58597887 127.0.2.1 64895 typ relay raddr 0.0.0.0 rport 0 generation 0\r
a=candidate:2 1 udp 25108735 127.0.2.1 62031 typ relay raddr 0.0.0.0 rport 0 generation 0\r
a=candidate:3 1 udp 8331263 127.0.2.1 49663 typ relay raddr 0.0.0.0 rport 0 generation 0\r
a=candidate:4 1 udp 2122260223 192.0.2.7 50000 typ host generation 0\r
"""


def test_relay_transport_from_libwebrtc_priority() -> None:
    assert relay_transport(58597887) == "udp"
    assert relay_transport(25108735) == "tcp"
    assert relay_transport(8331263) == "tls"
    assert relay_transport((0 << 24) | (65535 << 8) | 255) == "udp"  # aioice's relay candidates


def test_classify_pair() -> None:
    assert classify_pair("host", "udp", 2122260223) == ("host", "udp")
    assert classify_pair("host", "tcp", 0) == ("host", "tcp")  # ICE-TCP
    assert classify_pair("relay", "udp", 8331263) == ("relay", "tls")
    assert classify_pair("relay", "udp", 25108735) == ("relay", "tcp")
    assert classify_pair("srflx", "udp", 0) == ("srflx", "udp")
    assert classify_pair("weird", "sctp", 0) == ("host", "udp")


def test_signalled_candidate_names_a_peer_reflexive_remote() -> None:
    assert signalled_candidate(SDP, "127.0.2.1", 49663) == ("relay", 8331263)
    assert signalled_candidate(SDP, "127.0.2.1", 62031) == ("relay", 25108735)
    assert signalled_candidate(SDP, "127.0.2.1", 1) is None
    assert signalled_candidate("a=candidate:garbage\r\n", "127.0.2.1", 1) is None


def test_count_peers_lists_every_class() -> None:
    counts = count_peers([])
    assert set(counts) == {(k, t) for k in CANDIDATE_TYPES for t in TRANSPORTS}
    assert sum(counts.values()) == 0
