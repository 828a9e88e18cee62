"""The native plane's ICE-TCP side over real loopback TCP connections: RFC 4571 frames are datagrams
from (listener socket, remote address); only a connection whose first frame is a Binding request
authenticated for a registered ICE session reaches Python; a handed-over TCP peer's SRTP is routed
natively, and what the router sends it goes framed onto its connection; a subscriber that does not
read costs dropped frames on its own connection only (counted), never a blocked worker; limits and
deadlines close connections, counted by reason in mediasrv_media_datagrams_dropped_total."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from aioice import stun
from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry

from mediasrv.api.metrics import MediasrvCollector
from mediasrv.media.ice_tcp import FrameReader, FramingError, frame
from mediasrv.media.native_plane import NativePlane

mediasrv_native = pytest.importorskip("mediasrv_native")

PASSWORD = "our-ice-password-22chars"
PROFILE = "SRTP_AEAD_AES_128_GCM"
KEY_LEN, SALT_LEN = mediasrv_native.srtp_key_lengths(PROFILE)
SSRC = 0x0BAD_CAFE
OPUS = [(111, "opus", 48000, None)]


def check(username: str, password: str | None, use_candidate: bool = False) -> bytes:
    msg = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    msg.attributes["USERNAME"] = username
    msg.attributes["ICE-CONTROLLING"] = 1
    if use_candidate:
        msg.attributes["USE-CANDIDATE"] = None
    if password is not None:
        msg.add_message_integrity(password.encode())
    msg.add_fingerprint()
    return bytes(msg)


def opus(seq: int, payload: bytes = b"") -> bytes:
    return struct.pack("!BBHII", 0x80, 111, seq & 0xFFFF, seq * 960, SSRC) + (payload or bytes(80))


def wait_for(cond: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := cond():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {cond}")


def test_python_framing_round_trips_and_refuses_oversize() -> None:
    stream = frame(b"abc") + frame(b"") + frame(bytes(1500))
    reader = FrameReader()
    got = [f for i in range(0, len(stream), 7) for f in reader.feed(stream[i:i + 7])]
    assert got == [b"abc", b"", bytes(1500)]
    with pytest.raises(FramingError):
        FrameReader(max_frame=100).feed(b"\x00\x65" + bytes(101))
    with pytest.raises(FramingError):
        frame(bytes(65536))


class TcpPeer:
    """A remote ICE-TCP endpoint: a TCP connection to the plane plus the SRTP context the far side
    would have (keys mirrored with the plane's)."""

    def __init__(self, target: tuple[str, int], rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(target)
        self.sock.settimeout(3.0)
        self.reader = FrameReader()
        self.frames: list[bytes] = []
        self.our_key, self.our_salt = os.urandom(KEY_LEN), os.urandom(SALT_LEN)
        self.plane_key, self.plane_salt = os.urandom(KEY_LEN), os.urandom(SALT_LEN)
        self.srtp = mediasrv_native.SrtpSession(PROFILE, self.our_key, self.our_salt,
                                                self.plane_key, self.plane_salt)

    @property
    def addr(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def send(self, *payloads: bytes) -> None:
        self.sock.sendall(b"".join(frame(p) for p in payloads))

    def recv_frame(self) -> bytes:
        while not self.frames:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self.frames.extend(self.reader.feed(chunk))
        return self.frames.pop(0)

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True

    def register(self, plane: Any, transport: int, room: int, socket_index: int) -> None:
        plane.register_peer(transport, room, socket_index, *self.addr, PROFILE,
                            self.plane_key, self.plane_salt, self.our_key, self.our_salt)


class UdpPeer(TcpPeer):
    def __init__(self) -> None:  # noqa: D107 - the same keys, a UDP socket
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(3.0)
        self.our_key, self.our_salt = os.urandom(KEY_LEN), os.urandom(SALT_LEN)
        self.plane_key, self.plane_salt = os.urandom(KEY_LEN), os.urandom(SALT_LEN)
        self.srtp = mediasrv_native.SrtpSession(PROFILE, self.our_key, self.our_salt,
                                                self.plane_key, self.plane_salt)


def make_plane(**kw: Any) -> Any:
    return mediasrv_native.MediaPlane(["127.0.0.1"], 0, 2, poll_interval_ms=10, tcp_port=0, **kw)


@pytest.fixture
def plane() -> Iterator[Any]:
    p = make_plane()
    yield p
    p.close()


def tcp_target(plane: Any) -> tuple[int, tuple[str, int]]:
    [(index, host, port)] = plane.tcp_sockets()
    return index, (host, port)


def test_listener_socket_index_follows_the_udp_sockets(plane):
    assert len(plane.sockets()) == 1
    index, (host, port) = tcp_target(plane)
    assert index == 1 and host == "127.0.0.1" and port > 0
    plain = mediasrv_native.MediaPlane(["127.0.0.1"], 0, 1)
    assert plain.tcp_sockets() == [] and plain.stats()["tcp"]["open"] == 0
    plain.close()


def test_only_an_authenticated_first_frame_reaches_python_and_answers_go_back_framed(plane):
    index, target = tcp_target(plane)
    assert plane.register_ice_session(index, "ufrA", PASSWORD)
    good = TcpPeer(target)
    request = check("ufrA:theirs", PASSWORD)
    good.send(request)
    wait_for(lambda: plane.stats()["to_python"] == 1)
    [(socket_index, host, port, data)] = plane.take_datagrams()
    assert (socket_index, (host, port), data) == (index, good.addr, request)
    # Python answers: the datagram goes framed onto that connection.
    answer = b"\x01\x01\x00\x00" + request[4:20]
    assert plane.sendto(index, answer, *good.addr) == len(answer)
    assert good.recv_frame() == answer
    # DTLS from it goes up once Python admits the address (as aioice's first send does).
    plane.admit_source(index, *good.addr)
    good.send(b"\x16\xfe\xfd" + bytes(20))
    wait_for(lambda: plane.stats()["to_python"] == 2)
    # A connection that starts with anything else is closed, its frame counted where a datagram's is.
    for first, reason in [(b"\x16\xfe\xfd" + bytes(20), "unknown_source"),
                          (check("ufrA:theirs", "a-guessed-password-here"), "stun_integrity"),
                          (check("nobody:theirs", PASSWORD), "unknown_source")]:
        before = plane.stats()["dropped"][reason]
        bad = TcpPeer(target)
        bad.send(first)
        assert bad.closed_by_server()
        assert plane.stats()["dropped"][reason] == before + 1
    stats = plane.stats()
    assert stats["dropped"]["tcp_unauthenticated"] == 3 and stats["to_python"] == 2
    assert wait_for(lambda: plane.stats()["tcp"]["open"] == 1)
    # Sending to an address with no connection is a precise error, not a silent success.
    with pytest.raises(ValueError, match="no ICE-TCP connection"):
        plane.sendto(index, answer, "127.0.0.1", 9)


def authenticated(plane: Any, target: tuple[str, int], index: int, ufrag: str = "ufrA", **kw: Any) -> TcpPeer:
    plane.register_ice_session(index, ufrag, PASSWORD)
    peer = TcpPeer(target, **kw)
    before = plane.stats()["to_python"]
    peer.send(check(f"{ufrag}:theirs", PASSWORD))
    wait_for(lambda: plane.stats()["to_python"] == before + 1)
    plane.take_datagrams()
    return peer


def one_room(plane: Any, publisher: int, subscribers: list[int]) -> Any:
    router = mediasrv_native.Router(seed=1)
    router.add_publisher(publisher, 0xAAAA_0001, {})
    router.add_track(100, publisher, "audio", "0", OPUS, [SSRC])
    for i, t in enumerate(subscribers):
        router.add_subscription(101 + i, 100, t, 0x5000_0000 + t, OPUS, {})
    plane.attach_room(1, router)
    return router


def test_handed_over_tcp_peers_media_is_routed_natively_and_framed_back(plane):
    index, target = tcp_target(plane)
    pub = authenticated(plane, target, index)
    tcp_sub = authenticated(plane, target, index, "ufrB")
    udp_sub = UdpPeer()
    one_room(plane, 1, [2, 3])
    pub.register(plane, 1, 1, index)
    tcp_sub.register(plane, 2, 1, index)
    udp_sub.register(plane, 3, 1, 0)
    # Several packets in one TCP segment, and one split across two.
    packets = [pub.srtp.protect_rtp(opus(seq, bytes([seq]) * 60)) for seq in range(1, 21)]
    stream = b"".join(frame(p) for p in packets)
    pub.sock.sendall(stream[:1000])
    time.sleep(0.05)
    pub.sock.sendall(stream[1000:])
    for sub in (tcp_sub, udp_sub):
        recv = sub.recv_frame if sub is tcp_sub else (lambda s=sub: s.sock.recv(2048))
        got = [sub.srtp.unprotect_rtp(recv()) for _ in range(20)]
        assert [g[12:] for g in got] == [bytes([s]) * 60 for s in range(1, 21)]
    stats = plane.stats()
    assert stats["to_python"] == 2, "no media went up to Python"
    assert plane.peer_stats(1)["rtp_in"] == 20 and plane.peer_stats(2)["rtp_out"] == 20
    # RTCP the control plane sends to a TCP peer is protected and framed too.
    assert plane.send_media(2, struct.pack("!BBHI", 0x81, 201, 1, 0x1234) + bytes(24))
    assert tcp_sub.srtp.unprotect_rtcp(tcp_sub.recv_frame())[:2] == bytes([0x81, 201])


def test_a_tcp_publisher_in_a_room_on_worker_1_is_handed_to_that_worker():
    """With a port per worker thread 0 still reads every ICE-TCP connection: a TCP peer's media for
    a room on worker 1 goes there through its inbox (and eventfd), and worker 1 sends it on from
    its own UDP socket."""
    plane = make_plane(port_per_worker=True)
    try:
        assert plane.socket_workers() == [0, 1]
        index, target = tcp_target(plane)
        assert index == 2  # ICE-TCP listeners follow the UDP sockets
        pub = authenticated(plane, target, index)
        udp_sub = UdpPeer()
        assert plane.attach_room(99, mediasrv_native.Router(seed=2)) == 0
        one_room(plane, 1, [3])
        assert plane.stats()["worker_rooms"] == [1, 1]
        pub.register(plane, 1, 1, index)
        udp_sub.register(plane, 3, 1, 1)  # worker 1's UDP socket
        for seq in range(1, 21):
            pub.sock.sendall(frame(pub.srtp.protect_rtp(opus(seq, bytes([seq]) * 60))))
        got = []
        for _ in range(20):
            data, source = udp_sub.sock.recvfrom(2048)
            assert source == tuple(plane.sockets()[1])
            got.append(udp_sub.srtp.unprotect_rtp(data)[12:])
        assert got == [bytes([s]) * 60 for s in range(1, 21)]
        assert plane.stats()["handoffs"] >= 20
    finally:
        plane.close()


def test_ice_tcp_is_served_while_udp_keeps_thread_0_reading() -> None:
    """A worker that read datagrams reads again after its gather sleep without polling; thread 0
    must still look at its ICE-TCP listener and connections (it polls every pass while connections
    are open, and every timer interval for the listener; the 250 ms connection sweep reads them
    too). With UDP arriving every half millisecond, so that every pass reads something, a TCP peer
    still connects, authenticates, and its media is routed, and the UDP stream was read all along."""
    plane = make_plane(rx_coalesce_us=500)
    stop = threading.Event()
    noise = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_target = tuple(plane.sockets()[0])

    def blast() -> None:
        deadline = time.monotonic() + 20  # bounded, whatever happens to the test
        while not stop.is_set() and time.monotonic() < deadline:
            noise.sendto(b"\x80\x6f" + bytes(60), udp_target)  # RTP-looking, from no known peer
            time.sleep(0.0005)

    sender = threading.Thread(target=blast, daemon=True)
    sender.start()
    try:
        wait_for(lambda: plane.stats()["dropped"]["unknown_source"] > 100)
        before = plane.stats()["dropped"]["unknown_source"]
        index, target = tcp_target(plane)
        pub = authenticated(plane, target, index)
        tcp_sub = authenticated(plane, target, index, "ufrB")
        one_room(plane, 1, [2])
        pub.register(plane, 1, 1, index)
        tcp_sub.register(plane, 2, 1, index)
        for seq in range(1, 11):
            pub.send(pub.srtp.protect_rtp(opus(seq, bytes([seq]) * 60)))
        got = [tcp_sub.srtp.unprotect_rtp(tcp_sub.recv_frame())[12:] for _ in range(10)]
        assert got == [bytes([s]) * 60 for s in range(1, 11)]
        read_meanwhile = plane.stats()["dropped"]["unknown_source"] - before
        assert read_meanwhile > 20, read_meanwhile
    finally:
        stop.set()
        sender.join()
        noise.close()
        plane.close()


def test_a_subscriber_that_stops_reading_loses_frames_not_the_worker(plane):
    index, target = tcp_target(plane)
    pub = UdpPeer()
    stalled = authenticated(plane, target, index, rcvbuf=4096)
    healthy = UdpPeer()
    one_room(plane, 1, [2, 3])
    pub.register(plane, 1, 1, 0)
    stalled.register(plane, 2, 1, index)
    healthy.register(plane, 3, 1, 0)
    udp_target = tuple(plane.sockets()[0])
    sent = got = 0

    def drain(timeout: float) -> int:
        n = 0
        healthy.sock.settimeout(timeout)
        while True:
            try:
                healthy.sock.recv(2048)
            except TimeoutError:
                return n
            n += 1

    for seq in range(1, 3001):  # ~3.4 MB toward a reader that reads nothing
        pub.sock.sendto(pub.srtp.protect_rtp(opus(seq, bytes(1100))), udp_target)
        sent += 1
        if seq % 20 == 0:
            got += drain(0.01)
    got += drain(1.0)
    assert got >= sent * 0.99, "the healthy subscriber kept receiving"
    dropped = wait_for(lambda: plane.stats()["dropped"]["tcp_write_overflow"])
    assert dropped > 0
    # What was accepted (into the kernel, or the bounded 256 KiB buffer) arrives as whole frames.
    stalled.sock.settimeout(1.0)
    frames = 0
    while True:
        try:
            payload = stalled.recv_frame()
        except TimeoutError:
            break
        assert stalled.srtp.unprotect_rtp(payload)
        frames += 1
    assert frames + dropped >= sent * 0.99


def test_limits_deadlines_and_oversize_close_connections_counted_by_reason() -> None:
    plane = make_plane(tcp_max_connections=3, tcp_max_pending=2, tcp_max_per_session=1,
                       tcp_auth_timeout_ms=300, tcp_idle_timeout_ms=800)
    try:
        index, target = tcp_target(plane)
        first = authenticated(plane, target, index)  # open, authenticated
        again = TcpPeer(target)  # a second connection for the same session: closed
        again.send(check("ufrA:theirs", PASSWORD))
        assert again.closed_by_server()
        silent = [TcpPeer(target), TcpPeer(target)]  # two pending: the most allowed
        third = TcpPeer(target)  # refused: two pending already
        assert third.closed_by_server()
        assert plane.stats()["dropped"]["tcp_connection_limit"] == 2
        # the silent ones are closed at their deadline
        for s in silent:
            assert s.closed_by_server()
        assert plane.stats()["dropped"]["tcp_unauthenticated"] == 2
        # an oversize frame ends a connection
        big = authenticated(plane, target, index, "ufrB")
        big.sock.sendall(b"\x08\x01" + bytes(100))  # 2049 announced: over a 2048-byte slot
        assert big.closed_by_server()
        assert plane.stats()["dropped"]["tcp_frame_oversize"] == 1
        # the authenticated one, idle past the idle timeout
        assert first.closed_by_server()
        stats = plane.stats()
        assert stats["dropped"]["tcp_idle"] == 1
        assert stats["tcp"]["open"] == 0
    finally:
        plane.close()


async def test_aioice_view_sends_framed_and_drops_sends_toward_active_candidates() -> None:
    """The NativeDatagramTransport of a TCP listener, as aioice uses it: a check toward an active
    candidate (port 9) goes nowhere and claims nothing; an answer to a connected peer is framed."""
    plane = NativePlane(["127.0.0.1"], workers=1, tcp_port=0)
    try:
        [(index, target)] = plane.tcp_sockets.items()

        class Protocol:
            receiver = type("R", (), {"local_password": PASSWORD})()
            got: list[tuple[bytes, tuple[str, int]]] = []

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                self.got.append((data, addr))

            def connection_lost(self, exc: Any) -> None:
                pass

        protocol = Protocol()
        t = plane.tcp_transport("127.0.0.1", "ufrA", protocol)
        assert t is not None and t.is_tcp and t.get_extra_info("sockname") == target
        assert plane.tcp_transport("127.0.0.2", "ufrA", protocol) is None
        t.sendto(b"\x00\x01\x00\x00" + bytes(16), ("127.0.0.1", 9))
        assert plane.stats()["claimed_sources"] == 0 and not plane.drops
        peer = TcpPeer(target)
        peer.send(check("ufrA:theirs", PASSWORD))
        for _ in range(100):
            plane._drain()
            if protocol.got:
                break
            await asyncio.sleep(0.02)
        assert protocol.got and protocol.got[0][1] == peer.addr
        t.sendto(b"answer", peer.addr)
        assert peer.recv_frame() == b"answer"
        t.close()
    finally:
        plane.close()


async def test_tcp_drop_reasons_are_exported(plane) -> None:
    index, target = tcp_target(plane)
    bad = TcpPeer(target)
    bad.send(b"\x80" + bytes(40))
    assert bad.closed_by_server()

    view = SimpleNamespace(native=plane, drops=Counter(), moves=0, consent_lost=0, addresses_taken_over=0, addresses_in_use=0)
    rooms = SimpleNamespace(list=lambda: [], plane=view, retired_drops=Counter(), retired=Counter())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MediasrvCollector(rooms))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert 'mediasrv_media_datagrams_dropped_total{reason="tcp_unauthenticated"} 1.0' in text
    assert 'mediasrv_media_datagrams_dropped_total{reason="unknown_source"} 1.0' in text


class _Agent:
    """What the hold policy reads of an aioice Connection: role, password, nominated pairs."""

    def __init__(self, controlling: bool) -> None:
        self.local_password = PASSWORD
        self.ice_controlling = controlling
        self._nominated: dict[int, Any] = {}

    def nominate(self, transport: str) -> None:
        self._nominated[1] = SimpleNamespace(local_candidate=SimpleNamespace(transport=transport))


class _Protocol:
    def __init__(self, agent: _Agent) -> None:
        self.receiver = agent
        self.got: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append(data)

    def connection_lost(self, exc: Any) -> None:
        pass


async def test_a_controlling_agent_lets_udp_win_before_answering_over_tcp(monkeypatch) -> None:
    """The server as controlling agent nominates whatever succeeds first: checks over TCP wait while
    UDP has the lead, so a peer that reaches us over UDP is nominated there."""
    plane = NativePlane(["127.0.0.1"], workers=1, tcp_port=0)
    try:
        [index] = plane.tcp_sockets
        checks = {"ufrC": _Agent(True), "ufrD": _Agent(True), "ufrE": _Agent(False)}
        tcp = {u: _Protocol(a) for u, a in checks.items()}
        udp = {u: _Protocol(a) for u, a in checks.items()}
        for u in checks:
            plane.transport_for(index, u, tcp[u])
            plane.transport_for(0, u, udp[u])
        request = {u: check(f"{u}:theirs", PASSWORD) for u in checks}
        remote = ("127.0.0.1", 40000)

        # Only TCP so far: held for the head start, then answered.
        plane.dispatch(index, remote, request["ufrC"])
        assert tcp["ufrC"].got == [] and plane.tcp_checks_held == 1
        monkeypatch.setattr("mediasrv.media.native_plane.UDP_HEAD_START_S", 0.0)
        plane.dispatch(index, remote, request["ufrC"])
        assert len(tcp["ufrC"].got) == 1
        # A check over UDP came: TCP waits out the grace, and for good once UDP is nominated.
        plane.dispatch(0, ("127.0.0.1", 40001), request["ufrD"])
        assert len(udp["ufrD"].got) == 1
        plane.dispatch(index, remote, request["ufrD"])
        assert tcp["ufrD"].got == [] and plane.tcp_checks_held == 2
        checks["ufrD"].nominate("udp")
        monkeypatch.setattr("mediasrv.media.native_plane.UDP_GRACE_S", 0.0)
        plane.dispatch(index, remote, request["ufrD"])
        assert tcp["ufrD"].got == [] and plane.tcp_checks_held == 3
        checks["ufrD"].nominate("tcp")
        plane.dispatch(index, remote, request["ufrD"])
        assert len(tcp["ufrD"].got) == 1
        # A controlled agent (the peer decides) is never held back.
        monkeypatch.setattr("mediasrv.media.native_plane.UDP_HEAD_START_S", 10.0)
        plane.dispatch(index, remote, request["ufrE"])
        assert len(tcp["ufrE"].got) == 1 and plane.tcp_checks_held == 3
    finally:
        plane.close()



async def test_a_handed_over_peer_moves_between_udp_and_tcp() -> None:
    """A browser that nominates its ICE-TCP pair after its UDP one (or back) is followed: the
    authenticated USE-CANDIDATE check on the session's other transport moves the native route."""
    plane = NativePlane(["127.0.0.1"], workers=1, tcp_port=0)
    try:
        [(index, target)] = plane.tcp_sockets.items()
        agent = _Agent(False)  # the browser is controlling
        t_udp = plane.transport_for(0, "ufrM", _Protocol(agent))
        plane.transport_for(index, "ufrM", _Protocol(agent))
        one_room(plane.native, 1, [2])
        pub, mover = UdpPeer(), UdpPeer()
        pub.register(plane.native, 1, 1, 0)
        mover.register(plane.native, 2, 1, 0)
        plane.remember_peer(t_udp, 2, mover.addr, PASSWORD)
        udp_target = tuple(plane.sockets[0])

        async def forwarded(seq: int, recv: Callable[[], bytes]) -> bytes:
            pub.sock.sendto(pub.srtp.protect_rtp(opus(seq, bytes([seq]) * 50)), udp_target)
            return (await asyncio.to_thread(lambda: mover.srtp.unprotect_rtp(recv())))[12:]

        assert await forwarded(1, lambda: mover.sock.recv(2048)) == bytes([1]) * 50
        over_tcp = TcpPeer(target)
        over_tcp.send(check("ufrM:theirs", PASSWORD, use_candidate=True))
        for _ in range(200):
            if plane.moves == 1:
                break
            await asyncio.sleep(0.02)
        assert plane.moves == 1 and t_udp.peer == (2, over_tcp.addr) and t_udp.peer_socket == index
        assert await forwarded(2, over_tcp.recv_frame) == bytes([2]) * 50
        # and back to UDP
        mover.sock.sendto(check("ufrM:theirs", PASSWORD, use_candidate=True), udp_target)
        for _ in range(200):
            if plane.moves == 2:
                break
            await asyncio.sleep(0.02)
        assert plane.moves == 2 and t_udp.peer == (2, mover.addr) and t_udp.peer_socket == 0
        assert await forwarded(3, lambda: mover.sock.recv(2048)) == bytes([3]) * 50
        assert plane.native.peer_stats(2)["address_changes"] == 2
    finally:
        plane.close()
