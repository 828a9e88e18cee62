"""Every place mediasrv leans on aiortc's or aioice's internals, for the server and the load generator.

aiortc and aioice do SDP, ICE and DTLS for us, but taking a connection's datapath over (native
plane, load-generator pump, Python datapath) needs things they do not publish: the DTLS session's
keying material and role, the nominated candidate pair, the RTP hooks of a DTLS transport, an RTP
sender's SSRC, two patched aioice functions (host address discovery, host candidate gathering), a
receiver's decoder thread left unstarted, senders and receivers without their periodic loops (and,
while the server negotiates, video receivers without a bitrate estimator: a name replaced in
aiortc's receiver module), and DTLS connections sharing one certificate and OpenSSL context, their
buffers freed while idle (the server's connections never generate their own: a name replaced in
aiortc's peer-connection module), and remote descriptions that take the parse our checks made of
the same text, and local descriptions that take the object createOffer/createAnswer made of it (the
module's `sdp` name replaced there too), read without a round trip through text.
Nothing else in mediasrv touches an underscore attribute of theirs.

Each function names what it does and, in its docstring, the library behaviour it relies on (checked
against aiortc 1.16 / aioice 0.13). tests/test_aiortc_glue.py pins each of them against the installed
versions, so an upgrade that moves one fails there, naming the function here that needs a look.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
import types
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import aioice.ice
import aiortc.jitterbuffer
import aiortc.rate
import aiortc.rtcpeerconnection
import aiortc.rtcrtpreceiver
import aiortc.sdp
import mediasrv_native
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aiortc import (
    RTCCertificate,
    RTCConfiguration,
    RTCDtlsTransport,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from OpenSSL import SSL

RtpHandler = Callable[[bytes, int], Coroutine[Any, Any, None]]  # (decrypted RTP, arrival time in ms)
RtcpHandler = Callable[[bytes], Coroutine[Any, Any, None]]  # decrypted RTCP (compound)
RtpSend = Callable[[bytes], Coroutine[Any, Any, None]]
HostAddressPolicy = Callable[[bool, bool], list[str]]  # (use_ipv4, use_ipv6) -> addresses


# --- negotiated media -------------------------------------------------------------------------------
def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs (with RTX) both sides agreed on for this transceiver, in preference order.

    aiortc keeps them in `RTCRtpTransceiver._codecs`, set by set{Local,Remote}Description."""
    return transceiver._codecs


def sender_ssrc(sender: RTCRtpSender) -> int:
    """The SSRC aiortc announced in the SDP for this sender's media (`RTCRtpSender._ssrc`, a
    random 32-bit value drawn at construction)."""
    return sender._ssrc


def sender_rtx_ssrc(sender: RTCRtpSender) -> int:
    """The RTX SSRC aiortc announces beside it (`RTCRtpSender._rtx_ssrc`, in the FID group of the
    SDP whenever an rtx codec is negotiated)."""
    return sender._rtx_ssrc


# --- a DTLS transport's RTP datapath -----------------------------------------------------------------
def intercept_rtp(dtls: RTCDtlsTransport, handler: RtpHandler) -> None:
    """Send this transport's decrypted RTP to `handler` instead of aiortc's receivers.

    aiortc's receive loop calls `self._handle_rtp_data(data, arrival_time_ms=...)` by attribute
    lookup, so an instance attribute shadows the method."""
    dtls._handle_rtp_data = handler  # type: ignore[method-assign, assignment]


def intercept_rtcp(dtls: RTCDtlsTransport, handler: RtcpHandler) -> None:
    """Send this transport's decrypted RTCP to `handler` instead of aiortc's senders and receivers
    (aiortc's receive loop calls `self._handle_rtcp_data(data)` by attribute lookup)."""
    dtls._handle_rtcp_data = handler  # type: ignore[method-assign, assignment]


def replace_srtp_send(dtls: RTCDtlsTransport, send: RtpSend) -> None:
    """Route every RTP/RTCP packet aiortc's senders and receivers would protect and send through
    `send` instead (they all call `self.transport._send_rtp(data)` on the DTLS transport)."""
    dtls._send_rtp = send  # type: ignore[method-assign, assignment]


async def send_srtp(dtls: RTCDtlsTransport, packet: bytes) -> None:
    """Protect `packet` (RTP or RTCP, told apart by its payload type) with the transport's SRTP
    context and send it: `RTCDtlsTransport._send_rtp`. Raises ConnectionError when not connected."""
    await dtls._send_rtp(packet)


async def request_keyframe(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Send a PLI for `media_ssrc` from this receiver (`RTCRtpReceiver._send_rtcp_pli`; a no-op
    until aiortc has given the receiver its RTCP SSRC)."""
    await receiver._send_rtcp_pli(media_ssrc)


# --- DTLS-SRTP keys ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SrtpKeys:
    profile: str  # OpenSSL name, e.g. "SRTP_AEAD_AES_128_GCM"
    tx_key: bytes
    tx_salt: bytes
    rx_key: bytes
    rx_salt: bytes


def split_srtp_keying_material(
    profile: str, material: bytes, key_len: int, salt_len: int, role: str
) -> SrtpKeys:
    """RFC 5764 4.2: the exporter output is client key, server key, client salt, server salt. The
    DTLS server sends with the server half; anything else is the client (as aiortc decides)."""
    client = (material[:key_len], material[2 * key_len:2 * key_len + salt_len])
    server = (material[key_len:2 * key_len], material[2 * key_len + salt_len:2 * (key_len + salt_len)])
    tx, rx = (server, client) if role == "server" else (client, server)
    return SrtpKeys(profile, tx[0], tx[1], rx[0], rx[1])


def dtls_role(dtls: RTCDtlsTransport) -> str:
    """"client" or "server" once the handshake has started (`RTCDtlsTransport._role`; "auto" before)."""
    return dtls._role


def dtls_srtp_keys(dtls: RTCDtlsTransport) -> SrtpKeys | None:
    """The SRTP keys this side sends and receives with, from the DTLS session; None before the
    handshake. Raises ValueError for an SRTP profile the native SRTP does not implement.

    aiortc keeps the pyOpenSSL connection in `RTCDtlsTransport._ssl`; its
    `get_selected_srtp_profile()` and `export_keying_material(label, length)` are pyOpenSSL's."""
    ssl = dtls._ssl
    if ssl is None:
        return None
    profile = ssl.get_selected_srtp_profile().decode()
    key_len, salt_len = mediasrv_native.srtp_key_lengths(profile)
    material = ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (key_len + salt_len))
    return split_srtp_keying_material(profile, material, key_len, salt_len, dtls_role(dtls))


# --- ICE ----------------------------------------------------------------------------------------------
def nominated_pair(dtls: RTCDtlsTransport) -> aioice.ice.CandidatePair | None:
    """The nominated candidate pair of the transport's (single, RTP/RTCP-muxed) ICE component.

    aiortc's RTCIceTransport keeps the aioice Connection in `_connection`; aioice keeps nominated
    pairs by component in `Connection._nominated`. The pair's `protocol` (a StunProtocol, whose
    `transport` is the socket's), `remote_addr` and `remote_candidate` are public."""
    return dtls.transport._connection._nominated.get(1)


def local_ice_password(dtls: RTCDtlsTransport) -> str:
    """Our ICE password for the transport (to check a STUN request's MESSAGE-INTEGRITY ourselves):
    `Connection.local_password` of aiortc's private `RTCIceTransport._connection`."""
    return dtls.transport._connection.local_password


@dataclass(frozen=True)
class IceParameters:
    """What it takes to run a connection's ICE consent freshness (RFC 7675) outside aioice."""

    local_ufrag: str
    local_password: str
    remote_ufrag: str
    remote_password: str
    controlling: bool
    tie_breaker: int
    priority: int  # PRIORITY of our checks: a peer-reflexive candidate's on our component


def ice_connection(dtls: RTCDtlsTransport) -> aioice.ice.Connection:
    """The aioice agent behind the transport (aiortc's private `RTCIceTransport._connection`)."""
    return dtls.transport._connection


def ice_parameters(dtls: RTCDtlsTransport) -> IceParameters | None:
    """Credentials, role and check priority of the transport's ICE agent, None before its remote
    credentials are known. `Connection.local_username`, `local_password`, `remote_username`,
    `remote_password` and `ice_controlling` are public; the tie-breaker is `Connection._tie_breaker`
    (a 64-bit int drawn at construction); aioice's own checks carry `candidate_priority(
    pair.component, "prflx")`, as RFC 8445 7.1.1 says."""
    connection = ice_connection(dtls)
    pair = nominated_pair(dtls)
    if connection.remote_username is None or connection.remote_password is None or pair is None:
        return None
    return IceParameters(
        local_ufrag=connection.local_username, local_password=connection.local_password,
        remote_ufrag=connection.remote_username, remote_password=connection.remote_password,
        controlling=bool(connection.ice_controlling), tie_breaker=int(connection._tie_breaker),
        priority=candidate_priority(pair.component, "prflx"))


def stop_consent_checks(dtls: RTCDtlsTransport) -> bool:
    """Stop aioice's consent freshness checks for this transport (someone else runs them now);
    True if they were running. aioice starts `query_consent()` as the task
    `Connection._query_consent_task` at the end of `connect()`; `close()` cancels it only if it is
    set and not done, so a cancelled and cleared one leaves close() as it was."""
    connection = ice_connection(dtls)
    task = connection._query_consent_task
    if task is None or task.done():
        return False
    task.cancel()
    connection._query_consent_task = None
    return True


async def close_ice(connection: aioice.ice.Connection) -> None:
    """Close the ICE agent as aioice does itself when consent expires (`query_consent` ends with
    `await self.close()`): aiortc's ICE transport, then the peer connection, go to closed/failed."""
    await connection.close()


def nominated_transport(connection: aioice.ice.Connection) -> str | None:
    """"udp" or "tcp" (our local candidate's transport) of the ICE agent's nominated pair of
    component 1, None before one (`Connection._nominated`, as `nominated_pair` reads it)."""
    pair = connection._nominated.get(1)
    return None if pair is None else pair.local_candidate.transport.lower()


def can_take_over_sockets() -> bool:
    """Whether the running loop lets `take_over_socket` stop it reading a socket (asyncio's
    selector loop has `_remove_reader`; uvloop has not)."""
    return hasattr(asyncio.get_running_loop(), "_remove_reader")


def take_over_socket(pair: aioice.ice.CandidatePair) -> Any:
    """Stop the event loop reading the pair's UDP socket and return it (asyncio's socket view: its
    `fileno()` is what to read): from now on the caller reads it, and aioice keeps sending on it.

    asyncio's public `remove_reader` refuses a descriptor a transport owns; the selector loop's
    `_remove_reader` does not."""
    sock = pair.protocol.transport.get_extra_info("socket")
    asyncio.get_running_loop()._remove_reader(sock.fileno())  # type: ignore[attr-defined]
    return sock


def use_host_addresses(policy: HostAddressPolicy) -> None:
    """Make every ICE agent in the process gather host candidates on `policy(use_ipv4, use_ipv6)`
    instead of aioice's interface discovery (which leaves loopback out).

    aioice's `Connection.gather_candidates` looks `get_host_addresses` up in `aioice.ice`'s
    module namespace on each call, so replacing it there takes effect for new connections."""
    aioice.ice.get_host_addresses = policy  # type: ignore[assignment]


class HostSockets(Protocol):
    """Where ICE agents gather host candidates when aioice should not open sockets of its own.

    It may also have `tcp_transport(address, ufrag, protocol)`, the same for an ICE-TCP listener
    (a datagram view of its connections: each remote address is one connection, each datagram one
    RFC 4571 frame); then each address also gets an ICE-TCP passive host candidate."""

    def host_transport(
        self, address: str, ufrag: str, protocol: asyncio.DatagramProtocol
    ) -> asyncio.DatagramTransport | None:
        """A transport on `address` for the agent with local ufrag `ufrag`, delivering to
        `protocol`; None if there is no socket on that address."""


# RFC 6544 4.2: local preference = direction preference (passive host: 4) << 13 | other
# preference; below a UDP host candidate's 65535, so a peer that can use UDP prefers it.
TCP_PASSIVE_LOCAL_PREFERENCE = (4 << 13) | 8191


# RFC 6544 4.5: an active candidate is signalled with port 9 (discard); nothing listens there.
TCP_ACTIVE_PORT = 9


class PassiveTcpCandidate(Candidate):
    """An ICE-TCP passive host candidate (RFC 6544): it accepts connections and never opens one.

    aioice pairs a local candidate with each signalled remote one for which `can_pair_with` holds:
    here only a peer's active TCP candidates (RFC 6544 6.2). The checks aioice starts on such a
    pair are addressed to port 9 and go nowhere (the plane's ICE-TCP transport drops them); the
    pair only keeps aioice from declaring failure while the peer connects. The pair that works
    forms when the peer's check arrives on its connection: aioice's peer-reflexive path
    (`Connection.check_incoming`) answers it and sends its triggered check back over the same
    connection, and the peer nominates it."""

    def can_pair_with(self, other: Candidate) -> bool:
        return (other.transport.lower() == "tcp" and other.tcptype == "active"
                and super().can_pair_with(other))


def passive_tcp_candidate(component: int, host: str, port: int) -> PassiveTcpCandidate:
    return PassiveTcpCandidate(
        foundation=candidate_foundation("host", "tcp", host), component=component, transport="tcp",
        priority=candidate_priority(component, "host", TCP_PASSIVE_LOCAL_PREFERENCE),
        host=host, port=port, type="host", tcptype="passive",
    )


def selected_candidate(dtls: RTCDtlsTransport) -> tuple[str, str, str] | None:
    """(remote candidate type, transport, remote address) of the transport's nominated pair, None
    before one. The transport ("udp" or "tcp") is our local candidate's: aioice learns a peer's
    ICE-TCP address as a peer-reflexive candidate that it marks "udp"; the type is the remote
    candidate's as aioice knows it (host, srflx, prflx, relay)."""
    pair = nominated_pair(dtls)
    if pair is None:
        return None
    return pair.remote_candidate.type, pair.local_candidate.transport.lower(), pair.remote_addr[0]


# getattr: if aioice drops it, tests/test_aiortc_glue.py says so instead of every import failing.
_aioice_component_candidates: Any = getattr(aioice.ice.Connection, "get_component_candidates", None)
_host_sockets: HostSockets | None = None


def gather_host_candidates_on(sockets: HostSockets | None) -> None:
    """Make aioice's host-candidate gathering use `sockets` (None restores aioice's own sockets).

    Replaces `aioice.ice.Connection.get_component_candidates(self, component, addresses, timeout)`,
    which `gather_candidates` calls once per component; STUN/TURN gathering stays aioice's."""
    global _host_sockets
    _host_sockets = sockets
    aioice.ice.Connection.get_component_candidates = (  # type: ignore[method-assign]
        _shared_socket_candidates if sockets is not None else _aioice_component_candidates
    )


ComponentGatherer = Callable[[aioice.ice.Connection, int, list[str]], Awaitable[list[Candidate]]]


@contextlib.contextmanager
def component_gathering(gather: ComponentGatherer) -> Iterator[None]:
    """While the block runs, aioice agents gather their candidates with `gather(connection,
    component, addresses)` (for mediasrv's own clients, e.g. an ICE-TCP active candidate); the
    gathering in place before is restored after. Same replaced function as
    `gather_host_candidates_on`."""
    previous = aioice.ice.Connection.get_component_candidates
    aioice.ice.Connection.get_component_candidates = gather  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        aioice.ice.Connection.get_component_candidates = previous  # type: ignore[method-assign]


def add_host_protocol(connection: aioice.ice.Connection, protocol: aioice.ice.StunProtocol,
                      candidate: Candidate) -> None:
    """Make `protocol` (already given its transport) one of the agent's local candidates, as aioice
    does with each host socket: its `local_candidate`, and appended to `Connection._protocols`."""
    protocol.local_candidate = candidate
    connection._protocols.append(protocol)


async def _shared_socket_candidates(
    self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int = 5
) -> list[Candidate]:
    """aioice's host-candidate gathering on `_host_sockets`' transports instead of new sockets.

    Does what aioice's own does for each host socket: a `StunProtocol(connection)` made the
    transport's protocol, given its `local_candidate`, and appended to `Connection._protocols`
    (which aioice reads to pair candidates, send checks and close)."""
    sockets = _host_sockets
    if sockets is None or self.stun_server or self.turn_server:
        return await _aioice_component_candidates(self, component, addresses, timeout)
    candidates = []
    tcp_transport: Callable[[str, str, Any], asyncio.DatagramTransport | None] | None = getattr(
        sockets, "tcp_transport", None)
    for address in addresses:
        protocol = aioice.ice.StunProtocol(self)
        transport = sockets.host_transport(address, self.local_username, protocol)
        if transport is None:
            continue
        protocol.connection_made(transport)
        host, port = transport.get_extra_info("sockname")
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host), component=component,
            transport="udp", priority=candidate_priority(component, "host"),
            host=host, port=port, type="host",
        )
        self._protocols.append(protocol)
        candidates.append(protocol.local_candidate)
    # ICE-TCP candidates after the UDP ones: aiortc puts the first candidate in the m-line.
    for address in addresses:
        if tcp_transport is None:
            break
        protocol = aioice.ice.StunProtocol(self)
        transport = tcp_transport(address, self.local_username, protocol)
        if transport is None:
            continue
        protocol.connection_made(transport)
        host, port = transport.get_extra_info("sockname")
        protocol.local_candidate = passive_tcp_candidate(component, host, port)
        self._protocols.append(protocol)
        candidates.append(protocol.local_candidate)
    return candidates


# --- receivers without a decoder ---------------------------------------------------------------------
class _NoDecoderQueue(queue.Queue[Any]):
    """Stands in for a receiver's decoder input queue: marks the receiver as one whose decoder thread
    is never started, drops frames, and ends the receiver's track when aiortc stops the decoder (as
    aiortc's decoder thread does on its way out)."""

    def __init__(self, track_queue: asyncio.Queue[Any]) -> None:
        super().__init__()
        self._track_queue = track_queue
        self.dropped = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            self._track_queue.put_nowait(None)  # aiortc stops its decoder on the event loop
        else:
            self.dropped += 1


class _NotStarted:
    """What `threading.Thread` gives aiortc's receiver for a decoder that must not run."""

    def start(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass


class _DecoderThreads:
    """`threading` as `aiortc.rtcrtpreceiver` sees it: a decoder thread whose input queue is a
    `_NoDecoderQueue` is not created; everything else is the real module's."""

    def __getattr__(self, name: str) -> Any:
        return getattr(threading, name)

    @staticmethod
    def Thread(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - threading's name
        thread_args = kwargs.get("args", ())
        if (kwargs.get("target") is aiortc.rtcrtpreceiver.decoder_worker and len(thread_args) > 1
                and isinstance(thread_args[1], _NoDecoderQueue)):
            return _NotStarted()
        return threading.Thread(*args, **kwargs)


def skip_decoder(receiver: RTCRtpReceiver) -> bool:
    """Never start this receiver's decoder thread (call before the connection is up): for a receiver
    whose RTP is taken at the DTLS transport (`intercept_rtp`), so no frame can reach the decoder,
    and one idle thread per received track is only churn (and a glibc arena each).

    aiortc's `RTCRtpReceiver.receive` creates `threading.Thread(target=decoder_worker, args=(loop,
    self.__decoder_queue, self._track._queue, self.__decoder_error))` and starts it, looking
    `threading` up in `aiortc.rtcrtpreceiver`'s namespace; `__stop_decoder` puts None on that queue
    and joins the thread; frames would be put there as (codec, frame). The receiver's queue is
    replaced by a marked one, and `aiortc.rtcrtpreceiver.threading` by a view of `threading` that
    does not create a thread for a marked queue (other receivers are untouched). A receiver with no
    remote track yet (`_track`, set by setRemoteDescription) or whose decoder already runs
    (`__decoder_thread`) is left as it is: returns whether this one will run without a decoder."""
    track = receiver._track
    if track is None or receiver._RTCRtpReceiver__decoder_thread is not None:  # type: ignore[attr-defined]
        return False
    if not isinstance(aiortc.rtcrtpreceiver.threading, _DecoderThreads):
        aiortc.rtcrtpreceiver.threading = _DecoderThreads()  # type: ignore[assignment]
    if not isinstance(receiver._RTCRtpReceiver__decoder_queue, _NoDecoderQueue):  # type: ignore[attr-defined]
        receiver._RTCRtpReceiver__decoder_queue = _NoDecoderQueue(track._queue)  # type: ignore[attr-defined]
    return True


# --- DTLS memory ------------------------------------------------------------------------------------
class _ReleasingContexts:
    """A certificate's `_create_ssl_context` whose contexts free idle record buffers."""

    def __init__(self, create: Callable[..., SSL.Context]) -> None:
        self.create = create

    def __call__(self, srtp_profiles: list[Any]) -> SSL.Context:
        ctx = self.create(srtp_profiles=srtp_profiles)
        ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
        return ctx


class _SharedContexts(_ReleasingContexts):
    """One context per SRTP profile list for every connection of the certificate: OpenSSL keeps
    ~20 KB per context. Without a session cache (nothing resumes DTLS-SRTP sessions), so finished
    handshakes leave nothing behind in the shared context."""

    def __init__(self, create: Callable[..., SSL.Context]) -> None:
        super().__init__(create)
        self.made: dict[tuple[bytes, ...], SSL.Context] = {}

    def __call__(self, srtp_profiles: list[Any]) -> SSL.Context:
        key = tuple(p.openssl_profile for p in srtp_profiles)
        ctx = self.made.get(key)
        if ctx is None:
            ctx = super().__call__(srtp_profiles)
            ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            self.made[key] = ctx
        return ctx


def shared_certificate() -> RTCCertificate:
    """A new certificate for many peer connections (`use_certificate`), whose OpenSSL contexts are
    made once and free idle buffers. aiortc's `RTCCertificate._create_ssl_context(srtp_profiles)`
    builds a fresh `SSL.Context` with the certificate and key each time; the instance's is wrapped."""
    cert = RTCCertificate.generateCertificate()
    cert._create_ssl_context = _SharedContexts(cert._create_ssl_context)  # type: ignore[method-assign]
    # Every answer and DTLS transport asks for the fingerprints, which aiortc hashes anew each time
    # (three digests of the certificate, ~0.03 ms a call); the certificate never changes.
    fingerprints = tuple(cert.getFingerprints())
    cert.getFingerprints = lambda: list(fingerprints)  # type: ignore[method-assign]
    return cert


def use_certificate(pc: RTCPeerConnection, cert: RTCCertificate) -> bool:
    """Give this peer connection `cert` instead of the one it generated (call before it has a
    transceiver): its DTLS transports then share the certificate's contexts.

    `RTCPeerConnection.__init__` generates `__certificates = [RTCCertificate.generateCertificate()]`
    and hands that list to each `RTCDtlsTransport` it creates (with a transceiver or an SCTP
    transport); `localDescription` takes the fingerprints from the transports' certificates.
    Returns whether the connection will use `cert`."""
    if pc.getTransceivers() or pc.sctp is not None:
        return False
    pc._RTCPeerConnection__certificates = [cert]  # type: ignore[attr-defined]
    return True


# Set while `peer_connection_with` builds a connection: the certificate its __init__ gets instead of
# generating one (an EC key and a self-signed certificate, ~5 % of the event loop's CPU at a
# 50-visit ramp, replaced by the shared one right after).
_certificate_for_new: contextvars.ContextVar[RTCCertificate | None] = contextvars.ContextVar(
    "certificate_for_new", default=None)


class _CertificateSource:
    """What aiortc's rtcpeerconnection module calls `RTCCertificate`: it only calls
    `generateCertificate()` on it (in `RTCPeerConnection.__init__`)."""

    @staticmethod
    def generateCertificate() -> RTCCertificate:  # noqa: N802 - aiortc's name
        cert = _certificate_for_new.get()
        return cert if cert is not None else RTCCertificate.generateCertificate()


aiortc.rtcpeerconnection.RTCCertificate = _CertificateSource  # type: ignore[misc, assignment]


def _no_parse_made(text: str) -> aiortc.sdp.SessionDescription | None:
    return None


# Where aiortc's peer connections get a parse made already (`reuse_offer_parses`).
_take_parsed: Callable[[str], aiortc.sdp.SessionDescription | None] = _no_parse_made


def reuse_offer_parses(take: Callable[[str], aiortc.sdp.SessionDescription | None]) -> None:
    """Lets `setRemoteDescription` use a parse of the same text made before (`take` gives it away,
    or None to parse as usual): every remote offer is parsed by our checks first."""
    global _take_parsed
    _take_parsed = take


# Descriptions `createOffer`/`createAnswer` made lately, by the text they gave out: the
# `setLocalDescription` of that same text takes the object instead of parsing the text back.
_MADE: OrderedDict[str, aiortc.sdp.SessionDescription] = OrderedDict()
_MADE_MAX = 8


class _OfferParsedOnce(aiortc.sdp.SessionDescription):
    """What aiortc's rtcpeerconnection module calls `sdp.SessionDescription`: its `parse` (in
    `setRemoteDescription` and `setLocalDescription`) takes a parse made already, if any. Instances
    are the descriptions `createOffer`/`createAnswer` build; the first `str()` of one (theirs, in
    `wrap_session_description`) remembers it under its text, which parses back to the same
    description but for `type`, which `setLocalDescription` sets itself."""

    _given_out = False

    @classmethod
    def parse(cls, sdp: str) -> aiortc.sdp.SessionDescription:
        return _take_parsed(sdp) or _MADE.pop(sdp, None) or aiortc.sdp.SessionDescription.parse(sdp)

    def __str__(self) -> str:
        text = super().__str__()
        if not self._given_out:
            self._given_out = True
            _MADE[text] = self
            if len(_MADE) > _MADE_MAX:
                _MADE.popitem(last=False)
        return text


_sdp_for_peer_connections = types.ModuleType(aiortc.sdp.__name__)
_sdp_for_peer_connections.__dict__.update(vars(aiortc.sdp))
_sdp_for_peer_connections.SessionDescription = _OfferParsedOnce  # type: ignore[attr-defined]
aiortc.rtcpeerconnection.sdp = _sdp_for_peer_connections


def peer_connection_with(cert: RTCCertificate, configuration: RTCConfiguration) -> RTCPeerConnection:
    """A new RTCPeerConnection that uses `cert` (see `use_certificate`) and never generates a
    certificate of its own."""
    token = _certificate_for_new.set(cert)
    try:
        return RTCPeerConnection(configuration)
    finally:
        _certificate_for_new.reset(token)


def release_idle_dtls_buffers(dtls: RTCDtlsTransport) -> bool:
    """OpenSSL frees this DTLS connection's record buffers whenever they are empty
    (`SSL_MODE_RELEASE_BUFFERS`; call before the connection starts): once the media is handed over,
    DTLS carries nothing but a rare close_notify or data-channel record, and its idle buffers were
    tens of KB per connection.

    aiortc's `RTCDtlsTransport.start` builds its `SSL.Connection` from
    `self.__local_certificate._create_ssl_context(srtp_profiles=...)`, and keeps it in `_ssl` (None
    before). The certificate is the peer connection's own (`RTCPeerConnection` makes one each) or a
    `shared_certificate`, so that instance's method is wrapped. Returns whether this connection will
    free its buffers."""
    if dtls._ssl is not None:
        return False
    cert = dtls._RTCDtlsTransport__local_certificate  # type: ignore[attr-defined]
    if not isinstance(cert._create_ssl_context, _ReleasingContexts):
        cert._create_ssl_context = _ReleasingContexts(cert._create_ssl_context)
    return True


# --- senders and receivers without periodic tasks ---------------------------------------------------
def _finished_task() -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


def _skip_task(obj: object, cls: str, method: str, events: tuple[str, ...]) -> None:
    """Make `obj.<method>()` return an already finished future, with the events aiortc's `stop()`
    waits on already set: `send`/`receive` then `asyncio.ensure_future` it (a future is returned as
    is: no task, no wake-up), and `stop` cancels it (a no-op) and finds the loop started and exited."""
    setattr(obj, method, lambda *args: _finished_task())
    for event in events:
        getattr(obj, f"_{cls}__{event}").set()


def idle_sender(sender: RTCRtpSender) -> bool:
    """No RTP or RTCP loop for this sender (call before the connection is up): for a sender whose
    media and RTCP someone else produces (the native plane sends the sender reports of its SSRC),
    so its `_run_rtp` would only wait on a track that never yields and its `_run_rtcp` build a
    sender report every 0.5-1.5 s that is then thrown away.

    aiortc's `RTCRtpSender.send` runs `self.__rtp_task = asyncio.ensure_future(self._run_rtp(codec))`
    and the same for `_run_rtcp()`, by attribute lookup; `stop` waits for `__rtp_started` and
    `__rtcp_started`, cancels both tasks and waits for `__rtp_exited` and `__rtcp_exited`. A sender
    already started (`__started`) is left as it is: returns whether this one runs without loops."""
    if sender._RTCRtpSender__started:  # type: ignore[attr-defined]
        return False
    _skip_task(sender, "RTCRtpSender", "_run_rtp", ("rtp_started", "rtp_exited"))
    _skip_task(sender, "RTCRtpSender", "_run_rtcp", ("rtcp_started", "rtcp_exited"))
    return True


# While set (around the server's own negotiation), aiortc's video receivers are made without a
# remote bitrate estimator: it is a 1 000-bucket rate window (~1 000 objects, ~7 % of the event
# loop's CPU per connection set up at a 50-visit ramp), and the server's receivers never see RTP
# (`intercept_rtp`), so `idle_receiver` would only drop it again.
_lean_receivers: contextvars.ContextVar[bool] = contextvars.ContextVar("lean_receivers", default=False)


def _remote_bitrate_estimator() -> aiortc.rate.RemoteBitrateEstimator | None:
    return None if _lean_receivers.get() else aiortc.rate.RemoteBitrateEstimator()


# aiortc's RTCRtpReceiver.__init__ calls `RemoteBitrateEstimator()` from its module's namespace for
# video, and its RTP path checks the attribute for None.
aiortc.rtcrtpreceiver.RemoteBitrateEstimator = _remote_bitrate_estimator  # type: ignore[assignment, misc]


@contextlib.contextmanager
def lean_receivers() -> Iterator[None]:
    """Receivers aiortc makes inside the block get no remote bitrate estimator (see above)."""
    token = _lean_receivers.set(True)
    try:
        yield
    finally:
        _lean_receivers.reset(token)


def idle_receiver(receiver: RTCRtpReceiver, rtcp_loop: bool = False) -> bool:
    """Drop what this receiver would only use for RTP it is given (call before the connection is
    up; its RTP is taken at the DTLS transport, `intercept_rtp`): the video bitrate estimator (a
    1 000-bucket rate window, ~1 000 objects), the NACK generator and the 512-slot jitter buffer,
    all only touched by `_handle_rtp_packet`, which checks the first two for None. Without
    `rtcp_loop`, its RTCP loop does not run either: it wakes every 0.5-1.5 s to send receiver
    reports about the RTP it has seen, and it sees none.

    aiortc's `RTCRtpReceiver.__init__` makes `__jitter_buffer`, `__nack_generator` and
    `__remote_bitrate_estimator`; `receive` runs `self.__rtcp_task = asyncio.ensure_future(
    self._run_rtcp())`, and `stop` waits for `__rtcp_started`, cancels the task and waits for
    `__rtcp_exited`. A receiver already started is left as it is: returns whether this one is idle."""
    if receiver._RTCRtpReceiver__started:  # type: ignore[attr-defined]
        return False
    receiver._RTCRtpReceiver__remote_bitrate_estimator = None  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__nack_generator = None  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__jitter_buffer = aiortc.jitterbuffer.JitterBuffer(capacity=2)  # type: ignore[attr-defined]
    if not rtcp_loop:
        _skip_task(receiver, "RTCRtpReceiver", "_run_rtcp", ("rtcp_started", "rtcp_exited"))
    return True


def remote_description(pc: RTCPeerConnection) -> aiortc.sdp.SessionDescription | None:
    """The remote description as the connection keeps it, parsed (read it, never change it).
    `pc.remoteDescription` serializes it to a text, which the caller would then parse again.

    `RTCPeerConnection.__remoteDescription()` returns the pending or current description that
    `setRemoteDescription` parsed; the public property wraps `str()` of it."""
    return pc._RTCPeerConnection__remoteDescription()  # type: ignore[attr-defined]
