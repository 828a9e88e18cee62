"""How connected peers reach the media port: the selected candidate pair's type and transport.

One place classifies a connection's selected pair (`classify`) and counts connections by it
(`count_peers`), for the `mediasrv_media_peers{candidate,transport}` gauge: candidate is the remote
candidate's type (host, srflx, prflx, relay), transport how the peer's packets travel to us or to its
relay: udp, tcp (ICE-TCP, or TURN over TCP) or tls (TURN over TLS).

A relayed peer's packets always reach us over UDP from the relay's address; how the peer reaches its
relay is read from the relay candidate's priority, whose type preference libwebrtc (every browser but
Firefox) sets by the client-to-relay protocol: 0 TLS, 1 TCP, higher UDP (RFC 8445 leaves it to the
agent). Agents that keep RFC 8445's relay type preference 0 with its single-interface local
preference 65535 (aioice, most non-browser stacks) say nothing about it and are counted as udp.

A peer's checks often reach aioice before (or instead of) the candidates its SDP signalled, so aioice
knows the pair's remote end as peer-reflexive; the signalled candidate with the same address, read
from the remote description, gives its real type and priority.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from aioice import Candidate
from aiortc import RTCPeerConnection

from mediasrv.media import aiortc_glue
from mediasrv.media.sdp import signalled_tcp_active_type

CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")
TRANSPORTS = ("udp", "tcp", "tls")
_RELAY_TRANSPORT_BY_TYPE_PREFERENCE = {0: "tls", 1: "tcp"}


def relay_transport(priority: int) -> str:
    """The client-to-relay protocol of a libwebrtc relay candidate, from its priority."""
    if (priority >> 8) & 0xFFFF == 0xFFFF:  # RFC 8445's default local preference: not libwebrtc's scheme
        return "udp"
    return _RELAY_TRANSPORT_BY_TYPE_PREFERENCE.get(priority >> 24, "udp")


def classify_pair(kind: str, transport: str, remote_priority: int) -> tuple[str, str]:
    """(candidate type, transport) from a selected pair's remote type, local transport and remote priority."""
    kind = kind if kind in CANDIDATE_TYPES else "host"
    transport = transport.lower() if transport.lower() in TRANSPORTS else "udp"
    if kind == "relay" and transport == "udp":
        transport = relay_transport(remote_priority)
    return kind, transport


def _dtls_transports(pc: RTCPeerConnection) -> list[Any]:
    found = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        found.append(pc.sctp.transport)
    return list(dict.fromkeys(found))  # bundled: usually one


def signalled_candidate(sdp: str, host: str, port: int) -> tuple[str, int] | None:
    """(type, priority) of the UDP candidate `sdp` signals at host:port, if it signals one."""
    for line in sdp.splitlines():
        if not line.startswith("a=candidate:"):
            continue
        try:
            cand = Candidate.from_sdp(line[len("a=candidate:"):].strip())
        except (ValueError, IndexError):
            continue
        if cand.host == host and cand.port == port and cand.transport.lower() == "udp":
            return cand.type, cand.priority
    return None


def classify(pc: RTCPeerConnection) -> tuple[str, str] | None:
    """The class of a connection's selected pair, None before ICE has nominated a pair."""
    for dtls in _dtls_transports(pc):
        selected = aiortc_glue.selected_candidate(dtls)
        pair = aiortc_glue.nominated_pair(dtls)
        if selected is None or pair is None:
            continue
        kind, transport, priority = selected[0], selected[1], pair.remote_candidate.priority
        remote = pc.remoteDescription
        if kind == "prflx" and transport == "udp" and remote is not None:
            signalled = signalled_candidate(remote.sdp, pair.remote_addr[0], pair.remote_addr[1])
            if signalled is not None:
                kind, priority = signalled
        elif kind == "prflx" and transport == "tcp" and remote is not None:
            # ICE-TCP: the peer's active candidate says port 9 and connects from another port.
            kind = signalled_tcp_active_type(remote.sdp, pair.remote_addr[0]) or kind
        return classify_pair(kind, transport, priority)
    return None


def count_peers(connections: Iterable[RTCPeerConnection]) -> Counter[tuple[str, str]]:
    """Connections by class of their selected pair; every class present, zeros included."""
    counts: Counter[tuple[str, str]] = Counter({(k, t): 0 for k in CANDIDATE_TYPES for t in TRANSPORTS})
    for pc in connections:
        cls = classify(pc)
        if cls is not None:
            counts[cls] += 1
    return counts
