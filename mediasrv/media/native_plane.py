"""The Python face of the native media plane: UDP sockets shared by all peers, owned by Rust workers.

aioice is given `NativeDatagramTransport`s instead of sockets of its own: every ICE connection's
host candidate is one of the plane's shared sockets. With a port per media worker (the default),
that is the socket of the worker its room is pinned to (`gathering_for`), so the worker that routes
a room also reads its peers' datagrams; otherwise every peer is on the one port. The Rust side
queues STUN, DTLS and not-yet-handed-over media for Python and wakes the event loop through an
eventfd; this module demultiplexes them to the right aioice protocol, by remote address once known
and otherwise by the STUN USERNAME (our local ufrag), as mediasoup's WebRtcServer and LiveKit's UDP
mux do. A request found by its USERNAME reaches aioice only if its MESSAGE-INTEGRITY holds our ICE
password (checked in Rust first, against the ufrag/password pairs registered here, and again here);
an address becomes known (and admitted natively, so its DTLS reaches us) only when aioice sends
there, a bounded few per session, forgotten when the session closes. The plane drops anything but
STUN from other sources itself. After the DTLS handshake, `hand_over` gives the peer's SRTP keys and
address to the plane, and its media never reaches Python.

ICE consent freshness (RFC 7675) moves to the plane at the handover too: it is given the session's
ICE credentials and role, answers the peer's checks from its address and sends its own every 4-6 s
(`ice_consent_interval_s`), and aioice's consent task is stopped. A peer whose checks go unanswered
for `ice_consent_timeout_s` is reported once and its aioice agent closed here, as aioice closes it
on a consent failure, so the participant leaves the same way. STUN from any other address still
comes up to aioice (a NAT rebinding or a move between UDP and ICE-TCP: see `_follow`).

ICE-TCP (RFC 6544 passive candidates, RFC 4571 framing): with a TCP port set, each media address
also has a TCP listener in the plane, with a socket index of its own after the UDP ones. Every
frame arriving on one of its connections comes up here exactly like a datagram from (that socket
index, the connection's remote address), and what aioice sends to such an address is framed onto
that connection; so aioice runs ICE over TCP through the same `NativeDatagramTransport`, DTLS
follows, and `hand_over` hands a TCP peer over like a UDP one (its media is then written framed
onto its connection by the workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import mediasrv_native
from aioice import stun
from aiortc.rtcdtlstransport import RTCDtlsTransport

from mediasrv.config import Settings
from mediasrv.media import aiortc_glue

log = logging.getLogger(__name__)
Addr = tuple[str, int]

_room_keys = itertools.count(1)

# The media worker whose sockets aioice gathers host candidates on, set around a room's
# negotiation (`NativePlane.gathering_for`); aiortc gathers inside setLocalDescription, in the
# same task.
_gathering_worker: contextvars.ContextVar[int] = contextvars.ContextVar("gathering_worker", default=0)

# Remote addresses one ICE session may have claimed at once (its checks go to each of the peer's
# candidates); the least recently used is forgotten beyond it.
CLAIMS_PER_TRANSPORT = 16

# When the server is the controlling ICE agent (it offered the connection), aioice nominates the
# first pair whose check succeeds, whatever its priority: an ICE-TCP check answered a little before
# a UDP one would put a peer on TCP although UDP works. So such an agent leaves checks arriving over
# TCP unanswered while UDP keeps the lead: for UDP_HEAD_START_S after the session's first check, for
# UDP_GRACE_S after its first check over UDP (the peer reaches us over UDP), and for good once a UDP
# pair is nominated. A peer that can only use TCP is answered once the head start is over (its
# agent checks again every few tens of milliseconds).
UDP_HEAD_START_S = 0.3
UDP_GRACE_S = 2.0
BINDING_REQUEST = b"\x00\x01"


class NativeDatagramTransport(asyncio.DatagramTransport):
    """What aioice's StunProtocol sees as its socket: a view of one shared plane socket."""

    def __init__(self, plane: NativePlane, socket: int, ufrag: str, protocol: Any) -> None:
        super().__init__()
        self.plane = plane
        self.socket = socket
        self.ufrag = ufrag
        self.protocol = protocol
        self._closing = False
        # Set at handover: the peer's transport handle, its current address and our ICE password
        # (to authenticate a check from a new address before following the peer there).
        self.peer: tuple[int, Addr] | None = None
        self.password: str | None = None
        # The plane socket the peer is reached on now, when not this transport's own: a peer may
        # move between the session's UDP socket and its ICE-TCP listener.
        self.peer_socket: int | None = None
        # Remote addresses claimed for this transport, least recently used first.
        self.claimed: dict[Addr, None] = {}

    def ice_password(self) -> str | None:
        """Our ICE password for this session: set at handover, aioice's before."""
        if self.password is not None:
            return self.password
        password = getattr(getattr(self.protocol, "receiver", None), "local_password", None)
        return password if isinstance(password, str) else None

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing or addr is None:
            return
        remote = (str(addr[0]), int(addr[1]))
        if remote[1] == aiortc_glue.TCP_ACTIVE_PORT and self.is_tcp:
            return  # aioice's check toward an active candidate: only the peer connects (RFC 6544)
        self.plane.claim(self, remote)
        try:
            self.plane.native.sendto(self.socket, bytes(data), remote[0], remote[1])
        except (OSError, ValueError):
            self.plane.drops["send_failed"] += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self.plane.address_of(self.socket)
        return default

    @property
    def peer_socket_index(self) -> int:
        """The plane socket the handed-over peer is reached on now."""
        return self.socket if self.peer_socket is None else self.peer_socket

    @property
    def is_tcp(self) -> bool:
        """A view of an ICE-TCP listener (its sends go onto the connection from each address)."""
        return self.socket in self.plane.tcp_sockets

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.plane.release(self)
        asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()


class NativePlane:
    def __init__(self, addresses: list[str], port: int = 0, workers: int = 0, drop_ppm: int = 0, *,
                 port_per_worker: bool = False, rx_coalesce_us: int = 500,
                 tcp_port: int | None = None, tcp_max_connections: int = 1024,
                 consent_interval_s: float = 5.0, consent_timeout_s: float = 30.0) -> None:
        self.native = mediasrv_native.MediaPlane(addresses, port, workers, port_per_worker=port_per_worker,
                                                 drop_ppm=drop_ppm, rx_coalesce_us=rx_coalesce_us, tcp_port=tcp_port,
                                                 tcp_max_connections=tcp_max_connections)
        self.sockets: list[Addr] = self.native.sockets()
        # UDP socket index by (host, the worker reading it): one per worker with a port per worker.
        self._by_host = {(host, w): i for i, ((host, _), w) in
                         enumerate(zip(self.sockets, self.native.socket_workers(), strict=True))}
        # ICE-TCP listeners by socket index (empty without ICE-TCP), and by host.
        self.tcp_sockets: dict[int, Addr] = {i: (host, port) for i, host, port in self.native.tcp_sockets()}
        self._tcp_by_host = {host: i for i, (host, _) in self.tcp_sockets.items()}
        self._by_addr: dict[tuple[int, Addr], NativeDatagramTransport] = {}
        self._by_ufrag: dict[tuple[int, str], NativeDatagramTransport] = {}
        self.drops: Counter[str] = Counter()
        # Addresses one session's agent had claimed that an authenticated check of another session
        # came from (a reused client port): given to that session.
        self.addresses_taken_over = 0
        # ... and those it could not be given: the old session's handed-over peer is still there.
        self.addresses_in_use = 0
        self.moves = 0  # handed-over peers followed to a new address
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.native.wake_fd, self._drain)
        self._room_keys: dict[int, int] = {}
        # Per ICE session (local ufrag): when its first check, and its first check over UDP, came.
        self._first_check: dict[str, float] = {}
        self._first_udp_check: dict[str, float] = {}
        self.tcp_checks_held = 0  # checks over TCP left unanswered for UDP's sake
        # ICE session (local ufrag) -> the transport holding its handed-over peer, so a check on
        # the session's other transport (UDP <-> TCP) can move the peer there.
        self._handed: dict[str, NativeDatagramTransport] = {}
        # ICE consent run by the plane: its timers, the aioice agent of each such handed-over
        # peer (closed when the plane reports its consent lost), and the closes under way.
        self.consent_interval_ms = max(1, round(consent_interval_s * 1000))
        self.consent_timeout_ms = max(self.consent_interval_ms + 1, round(consent_timeout_s * 1000))
        self._consent_agents: dict[int, Any] = {}
        self._closing_agents: set[asyncio.Task[None]] = set()
        self.consent_lost = 0

    # --- aioice integration ----------------------------------------------------------------------
    def socket_for(self, host: str) -> int | None:
        """The UDP socket on `host` of the worker being gathered for (see `gathering_for`)."""
        socket = self._by_host.get((host, _gathering_worker.get()))
        return self._by_host.get((host, 0)) if socket is None else socket

    def room_addresses(self, room_key: int) -> list[Addr]:
        """The UDP (host, port)s the peers of room `room_key` are reached on: its worker's sockets."""
        worker = self._room_keys.get(room_key, 0)
        return [self.sockets[i] for (_, w), i in self._by_host.items() if w == worker] or self.sockets

    @contextlib.contextmanager
    def gathering_for(self, room_key: int | None) -> Iterator[None]:
        """While the block runs, ICE agents gather host candidates on the sockets of the worker the
        room `room_key` is pinned to (worker 0's without one)."""
        token = _gathering_worker.set(self._room_keys.get(room_key, 0) if room_key is not None else 0)
        try:
            yield
        finally:
            _gathering_worker.reset(token)

    def address_of(self, socket: int) -> Addr:
        """The bound (host, port) of a UDP socket or ICE-TCP listener, by socket index."""
        return self.tcp_sockets[socket] if socket in self.tcp_sockets else self.sockets[socket]

    def tcp_transport(self, address: str, ufrag: str, protocol: Any) -> NativeDatagramTransport | None:
        """aioice's ICE-TCP passive host "socket" on `address` for the agent with local ufrag `ufrag`:
        what it sends to an address goes framed onto the connection from there. None without
        ICE-TCP on that address."""
        socket = self._tcp_by_host.get(address)
        return None if socket is None else self.transport_for(socket, ufrag, protocol)

    def host_transport(self, address: str, ufrag: str, protocol: Any) -> NativeDatagramTransport | None:
        """aioice's host socket on `address` for the agent with local ufrag `ufrag` (see
        aiortc_glue.gather_host_candidates_on); None if the plane does not bind that address."""
        socket = self.socket_for(address)
        return None if socket is None else self.transport_for(socket, ufrag, protocol)

    def transport_for(self, socket: int, ufrag: str, protocol: Any) -> NativeDatagramTransport:
        t = NativeDatagramTransport(self, socket, ufrag, protocol)
        self._by_ufrag[(socket, ufrag)] = t
        # The plane checks Binding requests from unknown sources against this session itself, so a
        # spoofed check costs a Rust HMAC, not a trip through Python.
        password = t.ice_password()
        if password is not None:
            self.native.register_ice_session(socket, ufrag, password)
        return t

    def claim(self, t: NativeDatagramTransport, remote: Addr) -> None:
        """aioice sends to `remote` (a check to a signalled candidate, or an answer to a check that
        passed its integrity check): what comes from there is now this session's."""
        if remote in t.claimed:
            t.claimed[remote] = t.claimed.pop(remote)  # most recently used last
            return
        owner = self._by_addr.get((t.socket, remote))
        if owner is not None and not owner.is_closing():
            return
        self._by_addr[(t.socket, remote)] = t
        t.claimed[remote] = None
        self.native.admit_source(t.socket, remote[0], remote[1])
        while len(t.claimed) > CLAIMS_PER_TRANSPORT:
            self._unclaim(t, next(iter(t.claimed)))

    def _unclaim(self, t: NativeDatagramTransport, remote: Addr) -> None:
        del t.claimed[remote]
        if self._by_addr.get((t.socket, remote)) is t:
            del self._by_addr[(t.socket, remote)]
            self.native.forget_source(t.socket, remote[0], remote[1])

    def release(self, t: NativeDatagramTransport) -> None:
        if t.peer is not None:
            self._consent_agents.pop(t.peer[0], None)
        self._first_check.pop(t.ufrag, None)
        self._first_udp_check.pop(t.ufrag, None)
        if self._handed.get(t.ufrag) is t:
            del self._handed[t.ufrag]
        if self._by_ufrag.get((t.socket, t.ufrag)) is t:
            del self._by_ufrag[(t.socket, t.ufrag)]
            self.native.forget_ice_session(t.socket, t.ufrag)
        for remote in list(t.claimed):
            self._unclaim(t, remote)

    def stats(self) -> dict[str, int]:
        """Per-source and per-session state held here (sizes, for tests and metrics)."""
        return {"claimed_sources": len(self._by_addr), "sessions": len(self._by_ufrag),
                "native_sessions": int(self.native.stats()["ice_sessions"])}

    def _drain(self) -> None:
        for socket, host, port, data in self.native.take_datagrams():
            self.dispatch(socket, (host, port), data)
        for handle in self.native.take_consent_lost():
            self._consent_expired(handle)

    def _consent_expired(self, handle: int) -> None:
        """The plane got no answer to its consent checks for the timeout: close the peer's ICE
        agent, as aioice does when its own consent checks fail (the connection goes to closed, the
        participant leaves)."""
        agent = self._consent_agents.pop(handle, None)
        if agent is None:
            return
        self.consent_lost += 1
        log.info("transport %d: ICE consent expired, closing", handle)
        task = self._loop.create_task(aiortc_glue.close_ice(agent))
        self._closing_agents.add(task)
        task.add_done_callback(self._closing_agents.discard)

    def dispatch(self, socket: int, remote: Addr, data: bytes) -> None:
        """Deliver one datagram to the aioice protocol it belongs to, or drop and count it."""
        t = self._by_addr.get((socket, remote))
        if t is None or t.is_closing():
            t = self._by_username(socket, data)
            if t is None:
                return
        elif data[:2] == BINDING_REQUEST and _local_ufrag(data) not in (None, t.ufrag):
            t = self._new_peer_at(t, socket, remote, data)
            if t is None:
                return
        if data[:2] == BINDING_REQUEST and self._udp_keeps_the_lead(t):
            self.tcp_checks_held += 1
            return
        try:
            t.protocol.datagram_received(data, remote)
        except Exception:  # a malformed datagram must never break the loop's reader
            self.drops["protocol_error"] += 1
            log.debug("a datagram was refused", exc_info=True)  # no address: it may identify a patient
        holder = t if t.peer is not None else self._handed.get(t.ufrag)
        if (holder is not None and holder.peer is not None and data[:1] in (b"\x00", b"\x01")
                and (socket, remote) != (holder.peer_socket_index, holder.peer[1])):
            self._follow(holder, socket, remote, data)

    def _new_peer_at(self, owner: NativeDatagramTransport, socket: int, remote: Addr,
                     data: bytes) -> NativeDatagramTransport | None:
        """A check for another session from an address `owner` claimed: another peer is at that
        address now (its client got the port a peer of `owner` had, or a NAT gave it the mapping).
        Authenticated, the check goes to its own session, and the address with it, unless `owner`'s
        handed-over peer is still at that address (its media is routed there natively: the newcomer
        cannot have it while that peer lasts)."""
        t = self._by_username(socket, data)
        if t is None:
            return None
        if owner.peer is not None and (owner.peer_socket_index, owner.peer[1]) == (socket, remote):
            self.addresses_in_use += 1
        elif remote in owner.claimed:
            self._unclaim(owner, remote)
            self.addresses_taken_over += 1
        return t

    def _udp_keeps_the_lead(self, t: NativeDatagramTransport) -> bool:
        """Whether to leave this check (a Binding request reaching `t`) unanswered for now: see
        UDP_HEAD_START_S. Only ever true for checks over ICE-TCP to a controlling agent."""
        now = self._loop.time()
        first = self._first_check.setdefault(t.ufrag, now)
        if not t.is_tcp:
            self._first_udp_check.setdefault(t.ufrag, now)
            return False
        connection = getattr(t.protocol, "receiver", None)
        if connection is None or getattr(connection, "ice_controlling", False) is not True:
            return False
        nominated = aiortc_glue.nominated_transport(connection)
        if nominated is not None:
            return nominated == "udp"
        first_udp = self._first_udp_check.get(t.ufrag)
        if first_udp is not None:
            return now - first_udp < UDP_GRACE_S
        return now - first < UDP_HEAD_START_S

    def _follow(self, t: NativeDatagramTransport, socket: int, remote: Addr, data: bytes) -> None:
        """A handed-over peer nominating a new address (its NAT rebound, or it moved network): an
        ICE Binding request from there with USE-CANDIDATE, authenticated with the session's ICE
        credentials, moves its native route and our sends there. Checks without USE-CANDIDATE (a
        browser keeping backup paths alive) move nothing."""
        assert t.peer is not None and t.password is not None
        try:
            message = stun.parse_message(data)
        except ValueError:
            return
        username = message.attributes.get("USERNAME")
        if (message.message_class != stun.Class.REQUEST or message.message_method != stun.Method.BINDING
                or "USE-CANDIDATE" not in message.attributes or not isinstance(username, str)
                or username.partition(":")[0] != t.ufrag
                or not message.check_message_integrity(t.password.encode("utf8"))):
            return
        handle = t.peer[0]
        try:
            moved = self.native.update_peer_address(handle, socket, remote[0], remote[1])
        except ValueError:  # its ICE-TCP connection closed meanwhile
            return
        if moved:
            log.info("transport %d moved to a new address", handle)  # addresses stay out of logs
            t.peer = (handle, remote)
            t.peer_socket = socket
            self.moves += 1

    def _by_username(self, socket: int, data: bytes) -> NativeDatagramTransport | None:
        """The session a Binding request from an unknown address is for, if it is authenticated
        with that session's ICE password; otherwise None, counted by reason."""
        message = _parse_stun(data)
        username = message.attributes.get("USERNAME") if message is not None else None
        t = self._by_ufrag.get((socket, username.partition(":")[0])) if isinstance(username, str) else None
        if (message is None or t is None or t.is_closing()
                or message.message_class != stun.Class.REQUEST):
            self.drops["unknown_source"] += 1
            return None
        password = t.ice_password()
        if password is None or not message.check_message_integrity(password.encode("utf8")):
            self.drops["stun_integrity"] += 1
            return None
        return t

    # --- rooms and handover ----------------------------------------------------------------------
    def attach_room(self, router: Any) -> int:
        """Pin a room's router to a worker; returns the key peers of that room register under."""
        key = next(_room_keys)
        self._room_keys[key] = self.native.attach_room(key, router)
        return key

    def detach_room(self, key: int) -> None:
        self._room_keys.pop(key, None)
        self.native.detach_room(key)

    def hand_over(self, handle: int, room_key: int, dtls: RTCDtlsTransport) -> bool:
        """Give a connected peer's SRTP keys and address to the plane; False if it cannot be."""
        pair = aiortc_glue.nominated_pair(dtls)
        transport = getattr(pair.protocol, "transport", None) if pair else None
        if pair is None or not isinstance(transport, NativeDatagramTransport):
            return False
        keys = aiortc_glue.dtls_srtp_keys(dtls)
        if keys is None:
            return False
        host, port = pair.remote_addr
        self.native.register_peer(handle, room_key, transport.socket, host, port, keys.profile,
                                  keys.tx_key, keys.tx_salt, keys.rx_key, keys.rx_salt)
        self.remember_peer(transport, handle, (str(host), int(port)), aiortc_glue.local_ice_password(dtls))
        self._take_over_consent(handle, dtls)
        return True

    def _take_over_consent(self, handle: int, dtls: RTCDtlsTransport) -> bool:
        """The plane runs the handed-over peer's consent checks from now on, and aioice stops its
        own (a task, timers and a datagram through the event loop every few seconds per peer).
        If the plane cannot, aioice keeps them."""
        ice = aiortc_glue.ice_parameters(dtls)
        if ice is None or not self.native.start_consent(
                handle, ice.local_ufrag, ice.local_password, ice.remote_ufrag, ice.remote_password,
                ice.controlling, ice.tie_breaker, ice.priority,
                interval_ms=self.consent_interval_ms, timeout_ms=self.consent_timeout_ms):
            return False
        aiortc_glue.stop_consent_checks(dtls)
        self._consent_agents[handle] = aiortc_glue.ice_connection(dtls)
        return True

    def remember_peer(self, transport: NativeDatagramTransport, handle: int, remote: Addr, password: str) -> None:
        """`transport`'s session is handed over as `handle`, reached at `remote` on its socket:
        authenticated nominations from elsewhere (either of the session's transports) move it."""
        transport.peer = (handle, remote)
        transport.peer_socket = None
        transport.password = password
        self._handed[transport.ufrag] = transport

    def close(self) -> None:
        self._loop.remove_reader(self.native.wake_fd)
        self.native.close()


def _local_ufrag(data: bytes) -> str | None:
    """Our ufrag in a Binding request's USERNAME ("ours:theirs"), if it has one."""
    message = _parse_stun(data)
    username = message.attributes.get("USERNAME") if message is not None else None
    return username.partition(":")[0] if isinstance(username, str) else None


def _parse_stun(data: bytes) -> stun.Message | None:
    if not data or data[0] > 3:
        return None
    try:
        return stun.parse_message(data)
    except ValueError:
        return None


def install(plane: NativePlane | None) -> None:
    """Make aioice gather on `plane` (None restores its own sockets)."""
    aiortc_glue.gather_host_candidates_on(plane)


def start_media_plane(settings: Settings) -> NativePlane | None:
    """Start the native media plane (datapath = "native") and make aioice gather on it."""
    if settings.datapath != "native":
        install(None)
        return None
    plane = NativePlane(settings.media_bind_addresses, settings.media_udp_port,
                        settings.media_workers, settings.media_test_drop_ppm,
                        port_per_worker=settings.media_port_per_worker,
                        rx_coalesce_us=settings.media_rx_coalesce_us,
                        tcp_port=(settings.media_tcp_port or settings.media_udp_port) if settings.ice_tcp else None,
                        tcp_max_connections=settings.ice_tcp_max_connections,
                        consent_interval_s=settings.ice_consent_interval_s,
                        consent_timeout_s=settings.ice_consent_timeout_s)
    install(plane)
    return plane


def stop_media_plane(plane: NativePlane) -> None:
    install(None)
    plane.close()
