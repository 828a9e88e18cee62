"""The native media plane (mediasrv_native.MediaPlane) over real loopback UDP sockets.

Peers are handed over with known SRTP keys; the tests play publisher and subscribers with their own
sockets and SrtpSession contexts (the keys mirrored), and check what a user relies on: media is
forwarded and decryptable, bad datagrams are dropped and counted (never a crash), STUN/DTLS and
unknown senders reach Python, and no packet crosses rooms even when publishers share an SSRC.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

mediasrv_native = pytest.importorskip("mediasrv_native")

PROFILE = "SRTP_AEAD_AES_128_GCM"
KEY_LEN, SALT_LEN = mediasrv_native.srtp_key_lengths(PROFILE)
SSRC = 0x0BAD_CAFE
OPUS = [(111, "opus", 48000, None)]


def keys() -> tuple[bytes, bytes]:
    return os.urandom(KEY_LEN), os.urandom(SALT_LEN)


def opus(seq: int, payload: bytes = b"") -> bytes:
    return struct.pack("!BBHII", 0x80, 111, seq & 0xFFFF, seq * 960, SSRC) + (payload or bytes(80))


class Peer:
    """A remote endpoint: a UDP socket plus the SRTP context the far side would have."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2.0)
        self.our_key, self.our_salt = keys()  # what this peer protects with (the plane's rx)
        self.plane_key, self.plane_salt = keys()  # what the plane protects with toward it
        self.srtp = mediasrv_native.SrtpSession(PROFILE, self.our_key, self.our_salt,
                                                self.plane_key, self.plane_salt)

    @property
    def addr(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def register(self, plane: Any, transport: int, room: int) -> None:
        plane.register_peer(transport, room, 0, *self.addr, PROFILE,
                            self.plane_key, self.plane_salt, self.our_key, self.our_salt)

    def recv_rtp(self) -> bytes:
        return self.srtp.unprotect_rtp(self.sock.recv(2048))

    def nothing_waiting(self) -> bool:
        self.sock.settimeout(0.3)
        try:
            self.sock.recv(2048)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(2.0)
        return False


def wait_for(check: Callable[[], Any], timeout: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {check}")


def room_router(room_id: int, publisher: int, subscribers: list[int]) -> Any:
    router = mediasrv_native.Router(seed=room_id)
    router.add_publisher(publisher, 0xAAAA_0000 + room_id, {})
    router.add_track(room_id * 100, publisher, "audio", "0", OPUS, [SSRC])
    for i, t in enumerate(subscribers):
        router.add_subscription(room_id * 100 + 1 + i, room_id * 100, t, 0x5000_0000 + t, OPUS, {})
    return router


def room(plane: Any, room_id: int, publisher: int, subscribers: list[int]) -> Any:
    router = mediasrv_native.Router(seed=room_id)
    router.add_publisher(publisher, 0xAAAA_0000 + room_id, {})
    router.add_track(room_id * 100, publisher, "audio", "0", OPUS, [SSRC])
    for i, t in enumerate(subscribers):
        router.add_subscription(room_id * 100 + 1 + i, room_id * 100, t, 0x5000_0000 + t, OPUS, {})
    plane.attach_room(room_id, router)
    return router


@pytest.fixture
def plane() -> Iterator[Any]:
    p = mediasrv_native.MediaPlane(["127.0.0.1"], 0, 2, poll_interval_ms=10)
    yield p
    p.close()


@pytest.fixture
def one_room(plane: Any) -> tuple[Any, Any, Peer, list[Peer]]:
    pub, subs = Peer(), [Peer(), Peer()]
    router = room(plane, 1, 1, [2, 3])
    pub.register(plane, 1, 1)
    for i, s in enumerate(subs):
        s.register(plane, 2 + i, 1)
    return plane, router, pub, subs


def send(plane: Any, peer: Peer, datagram: bytes) -> None:
    peer.sock.sendto(datagram, tuple(plane.sockets()[0]))


def test_handed_over_media_is_forwarded_and_decryptable(one_room):
    plane, router, pub, subs = one_room
    for seq in range(1, 6):
        send(plane, pub, pub.srtp.protect_rtp(opus(seq, bytes([seq]) * 50)))
    for sub in subs:
        got = [sub.recv_rtp() for _ in range(5)]
        assert [g[12:] for g in got] == [bytes([s]) * 50 for s in range(1, 6)]
        ssrcs = {struct.unpack_from("!I", g, 8)[0] for g in got}
        assert len(ssrcs) == 1 and SSRC not in ssrcs  # the subscription's own SSRC
    stats = plane.stats()
    assert stats["srtp_rtp_unprotected"] == 5 and stats["srtp_rtp_protected"] == 10
    assert router.stats()["rtp_packets_out"] == 10


def test_wrong_key_replayed_truncated_and_garbage_are_dropped_and_counted(one_room):
    plane, router, pub, subs = one_room
    good = pub.srtp.protect_rtp(opus(1))
    send(plane, pub, good)
    send(plane, pub, good)  # replay
    send(plane, pub, good[:10])  # truncated
    stranger = mediasrv_native.SrtpSession(PROFILE, *keys(), *keys())
    send(plane, pub, stranger.protect_rtp(opus(2)))  # wrong key
    tampered = bytearray(pub.srtp.protect_rtp(opus(3)))
    tampered[-1] ^= 1
    send(plane, pub, bytes(tampered))
    send(plane, pub, pub.srtp.protect_rtp(opus(4)))
    dropped = wait_for(lambda: (d := plane.stats()["dropped"])["srtp_auth_failed"] >= 2 and d)
    assert dropped["srtp_replayed"] == 1 and dropped["srtp_too_short"] == 1
    for sub in subs:  # exactly the two good packets (1 and 4) arrive, the gap kept for the receiver
        first, second = (struct.unpack_from("!H", sub.recv_rtp(), 2)[0] for _ in range(2))
        assert second == (first + 3) & 0xFFFF
        assert sub.nothing_waiting()
    assert router.stats()["rtp_packets_in"] == 2


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(min_size=0, max_size=1600), min_size=1, max_size=8))
def test_fuzzed_datagrams_never_break_the_plane(one_room, datagrams):
    plane, router, pub, subs = one_room
    for d in datagrams:
        send(plane, pub, d)
    # Still alive and forwarding a valid packet afterwards.
    marker = os.urandom(16)
    send(plane, pub, pub.srtp.protect_rtp(opus(router.stats()["rtp_packets_in"] + 1000, marker)))
    for sub in subs:
        assert sub.recv_rtp()[12:] == marker
    plane.take_datagrams()


def test_stun_dtls_and_admitted_senders_reach_python(one_room):
    plane, _router, pub, _subs = one_room
    stranger = Peer()
    send(plane, stranger, stranger.srtp.protect_rtp(opus(1)))  # not admitted: dropped natively
    wait_for(lambda: plane.stats()["dropped"]["unknown_source"] == 1)
    assert plane.stats()["dropped"]["unknown_source"] == 1
    assert plane.admit_source(0, *stranger.addr)  # an address an ICE agent answered
    stun = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12)
    dtls = b"\x16\xfe\xfd" + bytes(10)
    send(plane, pub, stun)  # from a handed-over address: still for aioice
    send(plane, pub, dtls)
    send(plane, stranger, stranger.srtp.protect_rtp(opus(1)))  # not handed over: for aiortc
    got: list[tuple[int, str, int, bytes]] = []
    wait_for(lambda: got.extend(plane.take_datagrams()) or len(got) >= 3)
    assert [(g[1], g[2], g[3][:3]) for g in got] == [
        (*pub.addr, stun[:3]), (*pub.addr, dtls[:3]), (*stranger.addr, got[2][3][:3])]
    assert plane.stats()["to_python"] == 3


def test_no_packet_crosses_rooms_even_with_the_same_ssrc(plane):
    pubs = {1: Peer(), 2: Peer()}
    subs = {1: Peer(), 2: Peer()}
    for r in (1, 2):
        room(plane, r, 10 * r, [10 * r + 1])
        pubs[r].register(plane, 10 * r, r)
        subs[r].register(plane, 10 * r + 1, r)
    for seq in range(1, 4):
        for r in (1, 2):  # same SSRC, room number in the payload
            send(plane, pubs[r], pubs[r].srtp.protect_rtp(opus(seq, bytes([r]) * 40)))
    for r in (1, 2):
        assert {subs[r].recv_rtp()[12:] for _ in range(3)} == {bytes([r]) * 40}
        assert subs[r].nothing_waiting()


def test_unregistered_peer_falls_back_to_python(one_room):
    plane, router, pub, _subs = one_room
    assert plane.unregister_peer(1) and not plane.unregister_peer(1)
    plane.admit_source(0, *pub.addr)  # still an address its ICE session talks to
    send(plane, pub, pub.srtp.protect_rtp(opus(1)))
    assert wait_for(plane.take_datagrams)[0][1:3] == pub.addr
    assert router.stats()["rtp_packets_in"] == 0
    assert not plane.send_media(1, opus(2))


def test_python_sent_rtcp_is_protected_for_the_peer(one_room):
    plane, _router, _pub, subs = one_room
    pli = struct.pack("!BBHII", 0x81, 206, 2, 1, 0x5000_0002)
    assert plane.send_media(2, pli)
    assert subs[0].srtp.unprotect_rtcp(subs[0].sock.recv(2048)) == pli


def test_bad_registrations_are_precise_errors(plane):
    with pytest.raises(ValueError, match="not attached"):
        plane.register_peer(1, 99, 0, "127.0.0.1", 5000, PROFILE, *keys(), *keys())
    room(plane, 1, 1, [])
    with pytest.raises(ValueError, match="SRTP"):
        plane.register_peer(1, 1, 0, "127.0.0.1", 5000, "SRTP_NULL", *keys(), *keys())
    with pytest.raises(ValueError):
        plane.register_peer(1, 1, 0, "127.0.0.1", 5000, PROFILE, b"short", b"", *keys())
    with pytest.raises(ValueError, match="IP address"):
        plane.register_peer(1, 1, 0, "example.org", 5000, PROFILE, *keys(), *keys())
    with pytest.raises(ValueError, match="socket"):
        plane.register_peer(1, 1, 7, "127.0.0.1", 5000, PROFILE, *keys(), *keys())
    with pytest.raises(ValueError):
        mediasrv_native.MediaPlane([], 0, 1)


def test_rooms_spread_over_workers_and_both_forward(plane):
    assert plane.workers == 2
    pubs, subs = {1: Peer(), 2: Peer()}, {1: Peer(), 2: Peer()}
    for r in (1, 2):
        room(plane, r, 10 * r, [10 * r + 1])
        pubs[r].register(plane, 10 * r, r)
        subs[r].register(plane, 10 * r + 1, r)
        send(plane, pubs[r], pubs[r].srtp.protect_rtp(opus(1, bytes([r]) * 30)))
    for r in (1, 2):
        assert subs[r].recv_rtp()[12:] == bytes([r]) * 30
    assert plane.stats()["handoffs"] >= 1  # one room is on worker 1, fed by the receiving thread


def test_a_peer_that_moves_is_followed_once_its_new_address_is_confirmed(one_room):
    """NAT rebinding: the publisher's and a subscriber's packets start coming from new ports. Until
    the control plane confirms the new address (after an authenticated ICE check from it), their media
    goes to Python and ours keeps the old address; afterwards both directions are native again."""
    plane, router, pub, subs = one_room
    sub = subs[0]
    send(plane, pub, pub.srtp.protect_rtp(opus(1)))
    assert sub.recv_rtp()[12:] == bytes(80) and subs[1].recv_rtp()
    moved_pub, moved_sub = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(
        socket.AF_INET, socket.SOCK_DGRAM)
    for s in (moved_pub, moved_sub):
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
    before = plane.peer_stats(1)["rtp_in"]
    plane.admit_source(0, *moved_pub.getsockname())  # aioice answered its check from there
    plane.admit_source(0, *pub.addr)
    moved_pub.sendto(pub.srtp.protect_rtp(opus(2)), tuple(plane.sockets()[0]))
    got = wait_for(lambda: plane.take_datagrams())
    assert [(host, port) for _, host, port, _ in got] == [moved_pub.getsockname()]  # not routed natively
    assert plane.peer_stats(1)["rtp_in"] == before
    assert plane.update_peer_address(1, 0, *moved_pub.getsockname())
    assert plane.update_peer_address(2, 0, *moved_sub.getsockname())
    assert not plane.update_peer_address(99, 0, "127.0.0.1", 9), "not a handed-over transport"
    moved_pub.sendto(pub.srtp.protect_rtp(opus(3, b"\x03" * 40)), tuple(plane.sockets()[0]))
    assert sub.srtp.unprotect_rtp(moved_sub.recv(2048))[12:] == b"\x03" * 40  # sent to the new address
    assert sub.nothing_waiting(), "nothing goes to the old address any more"
    assert subs[1].recv_rtp()[12:] == b"\x03" * 40
    assert plane.peer_stats(1)["rtp_in"] == before + 1
    assert plane.peer_stats(1)["address_changes"] == plane.peer_stats(2)["address_changes"] == 1
    # The old address is no longer this peer: its datagrams go to Python, not to the router.
    send(plane, pub, pub.srtp.protect_rtp(opus(4)))
    assert wait_for(lambda: plane.take_datagrams())
    assert plane.peer_stats(1)["rtp_in"] == before + 1
    moved_pub.close()
    moved_sub.close()


def test_rooms_go_to_the_worker_with_less_load_and_the_metrics_show_it(plane):
    """Placement follows load, not room counts: while room 1 keeps worker 0 busy, the next two
    rooms (idle yet) both go to worker 1. The per-worker counters behind the metrics move with it."""
    import threading

    pub, sub = Peer(), Peer()
    assert plane.attach_room(1, room_router(1, 10, [11])) == 0
    pub.register(plane, 10, 1)
    sub.register(plane, 11, 1)
    stop = threading.Event()

    def feed() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            send(plane, pub, pub.srtp.protect_rtp(opus(seq)))
            time.sleep(0.002)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        # Worker 0's load (its CPU time) is measured over windows of at least half a second.
        wait_for(lambda: plane.stats()["worker_packets"][0] > 200, timeout=10)
        time.sleep(1.2)
        placed = [plane.attach_room(r, room_router(r, 10 * r, [10 * r + 1])) for r in (2, 3)]
    finally:
        stop.set()
        feeder.join()
    assert placed == [1, 1]  # by room count the third room would have gone back to worker 0
    stats = plane.stats()
    assert stats["worker_rooms"] == [1, 2]
    assert stats["worker_packets"][0] > stats["worker_packets"][1] == 0
    assert stats["worker_syscalls"][0] > 0 and stats["syscalls"] == sum(stats["worker_syscalls"])


def test_the_receive_gather_stops_waiting_when_its_waits_find_nothing():
    """After a partial read a worker sleeps a short gather window so its next read finds several
    datagrams. Datagrams further apart than the longest window (one every 15 ms here, against 4 ×
    500 µs) make each wait come back empty, a wake-up for nothing: the worker then reads each one
    as it lands and waits only as a probe now and then. A steady stream makes the waits pay again,
    and they resume."""
    plane = mediasrv_native.MediaPlane(["127.0.0.1"], 0, 1, poll_interval_ms=10)
    try:
        pub = Peer()
        room(plane, 1, 1, [])
        pub.register(plane, 1, 1)
        seq = 0

        def publish() -> None:
            nonlocal seq
            seq += 1
            send(plane, pub, pub.srtp.protect_rtp(opus(seq)))

        def gathers() -> tuple[int, int]:
            stats = plane.stats()
            return stats["worker_gather_waits"][0], stats["worker_gather_empty"][0]

        sparse = 120
        for _ in range(sparse):
            publish()
            time.sleep(0.015)
        wait_for(lambda: plane.peer_stats(1)["rtp_in"] == seq)
        waits, empty = gathers()
        assert 1 <= waits <= sparse // 4, f"{waits} waits for {sparse} datagrams arriving alone"
        assert empty >= waits - 1

        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            publish()
            time.sleep(0.0003)
        wait_for(lambda: plane.peer_stats(1)["rtp_in"] == seq)
        steady_waits, steady_empty = (a - b for a, b in zip(gathers(), (waits, empty), strict=True))
        assert steady_waits >= 50, f"{steady_waits} waits over {seq - sparse} datagrams in a stream"
        assert steady_empty < steady_waits / 2
    finally:
        plane.close()
