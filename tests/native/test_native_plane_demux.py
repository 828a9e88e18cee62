"""One UDP port for all peers: datagrams for aioice are demultiplexed by remote address once known,
and by the STUN USERNAME (our local ufrag) before that."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aioice import stun

from mediasrv.sfu.native_plane import NativePlane


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[bytes, tuple[str, int]]] = []
        self.lost = False

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append((data, addr))

    def connection_lost(self, exc: Any) -> None:
        self.lost = True


def binding_request(username: str) -> bytes:
    msg = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    msg.attributes["USERNAME"] = username
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
    plane.dispatch(0, remote, DTLS)  # no USERNAME, but the address is known now
    assert b.got == [(request, remote), (DTLS, remote)] and a.got == []
    plane.dispatch(0, ("127.0.0.1", 40001), DTLS)  # unknown address, not STUN
    plane.dispatch(0, ("127.0.0.1", 40002), binding_request("nobody:theirs"))
    plane.dispatch(0, ("127.0.0.1", 40003), b"\x00\x01\x00")  # truncated STUN
    assert plane.drops["unknown_source"] == 3
    tb.close()
    await asyncio.sleep(0)
    assert b.lost
    plane.dispatch(0, remote, DTLS)  # the closed connection's address is forgotten
    assert plane.drops["unknown_source"] == 4 and len(b.got) == 2


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
