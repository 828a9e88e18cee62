"""One UDP port for all peers: datagrams for aioice are demultiplexed by remote address once known,
and by the STUN USERNAME (our local ufrag) before that."""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace
from typing import Any

import pytest
from aioice import stun

from mediasrv.media.native_plane import NativePlane

PASSWORD = "our-ice-password-22chars"


class Recorder:
    def __init__(self) -> None:
        self.receiver = SimpleNamespace(local_password=PASSWORD)  # as aioice's StunProtocol has
        self.got: list[tuple[bytes, tuple[str, int]]] = []
        self.lost = False

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append((data, addr))

    def connection_lost(self, exc: Any) -> None:
        self.lost = True


def binding_request(username: str, password: str | None = PASSWORD) -> bytes:
    msg = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    msg.attributes["USERNAME"] = username
    if password is not None:
        msg.add_message_integrity(password.encode())
    return bytes(msg)


DTLS = b"\x16\xfe\xfd" + bytes(20)


@pytest.fixture
async def plane() -> Any:
    p = NativePlane(["127.0.0.1"], workers=1)
    yield p
    p.close()


async def test_binding_request_finds_its_connection_by_ufrag_then_by_address(plane):
    a, b = Recorder(), Recorder()
    plane.transport_for(0, "ufrA", a)
    tb = plane.transport_for(0, "ufrB", b)
    remote = ("127.0.0.1", 40000)
    request = binding_request("ufrB:theirs")
    plane.dispatch(0, remote, request)
    tb.sendto(b"\x01\x01" + request[2:], remote)  # aioice answers the check: the address is claimed
    plane.dispatch(0, remote, DTLS)  # no USERNAME, but the address is known now
    assert b.got == [(request, remote), (DTLS, remote)] and a.got == []
    plane.dispatch(0, ("127.0.0.1", 40001), DTLS)  # unknown address, not STUN
    plane.dispatch(0, ("127.0.0.1", 40002), binding_request("nobody:theirs"))
    plane.dispatch(0, ("127.0.0.1", 40003), b"\x00\x01\x00")  # truncated STUN
    assert plane.drops["unknown_source"] == 3
    plane.dispatch(0, ("127.0.0.1", 40004), binding_request("ufrB:theirs", None))  # no integrity
    plane.dispatch(0, ("127.0.0.1", 40004), DTLS)  # the unauthenticated check claimed nothing
    assert plane.drops["stun_integrity"] == 1 and plane.drops["unknown_source"] == 4
    assert len(b.got) == 2
    tb.close()
    await asyncio.sleep(0)
    assert b.lost
    plane.dispatch(0, remote, DTLS)  # the closed connection's address is forgotten
    assert plane.drops["unknown_source"] == 5 and len(b.got) == 2


async def test_sending_claims_the_remote_address(plane):
    a = Recorder()
    ta = plane.transport_for(0, "ufrA", a)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(2.0)
    ta.sendto(b"\x00\x01hello", peer.getsockname())  # our connectivity check goes out first
    data, src = peer.recvfrom(100)  # already sent: sendto is synchronous
    assert data == b"\x00\x01hello" and src == plane.sockets[0]
    peer.sendto(DTLS, src)  # the answer comes back through the plane's eventfd to aioice
    for _ in range(100):
        if a.got:
            break
        await asyncio.sleep(0.02)
    assert a.got == [(DTLS, peer.getsockname())]
    peer.close()


def nominating_check(username: str, password: str | None, use_candidate: bool = True) -> bytes:
    msg = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    msg.attributes["USERNAME"] = username
    msg.attributes["ICE-CONTROLLING"] = 1
    if use_candidate:
        msg.attributes["USE-CANDIDATE"] = None
    if password is not None:
        msg.add_message_integrity(password.encode())
    msg.add_fingerprint()
    return bytes(msg)


async def test_a_handed_over_peer_is_followed_only_on_an_authenticated_nomination(plane):
    """Only a Binding request with USE-CANDIDATE and the session's MESSAGE-INTEGRITY moves a peer:
    an attacker without the ICE password, or the browser's pings on backup paths, move nothing."""
    import mediasrv_native

    router = mediasrv_native.Router()
    plane.native.attach_room(1, router)
    key, salt = bytes(16), bytes(12)
    old, new = ("127.0.0.1", 41000), ("127.0.0.1", 41001)
    plane.native.register_peer(7, 1, 0, *old, "SRTP_AEAD_AES_128_GCM", key, salt, key, salt)
    t = plane.transport_for(0, "ufrA", Recorder())
    t.peer, t.password = (7, old), "our-ice-password-22chars"
    for attempt in (nominating_check("ufrA:theirs", None),  # unauthenticated
                    nominating_check("ufrA:theirs", "a-guessed-password-here"),
                    nominating_check("ufrB:theirs", t.password),  # another session's username
                    nominating_check("ufrA:theirs", t.password, use_candidate=False)):  # a backup ping
        plane.dispatch(0, new, attempt)
    assert plane.moves == 0 and plane.native.peer_stats(7)["address_changes"] == 0
    plane.dispatch(0, new, nominating_check("ufrA:theirs", t.password))
    assert plane.moves == 1 and t.peer == (7, new)
    assert plane.native.peer_stats(7)["address_changes"] == 1
    plane.dispatch(0, new, nominating_check("ufrA:theirs", t.password))  # already there
    assert plane.moves == 1


async def test_a_new_session_checking_from_an_address_another_claimed_gets_it(plane):
    """A client port that one session's agent sent to is reused by another client (its peer left,
    a NAT handed the mapping on): that client's authenticated checks reach its own session, and
    the address follows them; an unauthenticated one moves nothing."""
    a, b = Recorder(), Recorder()
    ta = plane.transport_for(0, "ufrA", a)
    tb = plane.transport_for(0, "ufrB", b)
    remote = ("127.0.0.1", 40010)
    ta.sendto(binding_request("theirs:ufrA"), remote)  # A's check toward its (old) peer: claimed
    plane.dispatch(0, remote, binding_request("ufrB:theirs", "wrong-password-22chars"))
    plane.dispatch(0, remote, DTLS)
    assert b.got == [] and len(a.got) == 1 and plane.drops["stun_integrity"] == 1
    request = binding_request("ufrB:theirs")
    plane.dispatch(0, remote, request)
    tb.sendto(b"\x01\x01" + request[2:], remote)  # B answers: the address is B's now
    plane.dispatch(0, remote, DTLS)
    assert b.got == [(request, remote), (DTLS, remote)] and len(a.got) == 1
    assert plane.addresses_taken_over == 1
    ta.close()
    tb.close()
