"""The media plane keeps no state for sources that have not proven they hold a session's ICE
password, and drops what such sources send (non-STUN) natively, counted by reason."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from aioice import stun
from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry

from mediasrv.api.metrics import MediasrvCollector
from mediasrv.media.native_plane import NativePlane

PASSWORD = "our-ice-password-22chars"


class Receiver:
    local_password = PASSWORD


class Peer:
    """Stands in for aioice's StunProtocol: answers what it is given, as aioice does after its own
    integrity check."""

    def __init__(self) -> None:
        self.receiver = Receiver()
        self.got: list[tuple[bytes, tuple[str, int]]] = []
        self.transport: Any = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append((data, addr))
        if self.transport is not None:
            self.transport.sendto(b"\x01\x01\x00\x00" + data[4:20], addr)  # a success response

    def connection_lost(self, exc: Any) -> None:
        pass


def check(username: str, password: str | None) -> bytes:
    msg = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    msg.attributes["USERNAME"] = username
    msg.attributes["ICE-CONTROLLING"] = 1
    if password is not None:
        msg.add_message_integrity(password.encode())
    msg.add_fingerprint()
    return bytes(msg)


@pytest.fixture
async def plane() -> Any:
    p = NativePlane(["127.0.0.1"], workers=1)
    yield p
    p.close()


async def wait_for(cond: Any) -> None:
    for _ in range(250):
        if cond():
            return
        await asyncio.sleep(0.02)


def spoofed_sockets(n: int) -> list[socket.socket]:
    out = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.{1 + i // 250}.{2 + i % 250}", 0))
        out.append(s)
    return out


async def test_stun_without_integrity_from_many_sources_keeps_no_state(plane):
    peer = Peer()
    t = plane.transport_for(0, "ufrA", peer)
    peer.transport = t
    assert plane.stats()["native_sessions"] == 1
    target = plane.sockets[0]
    sources = spoofed_sockets(2000)
    try:
        for i, s in enumerate(sources):
            s.sendto(check("ufrA:theirs", None if i % 2 else "a-guessed-password-here"), target)
        s.sendto(check("ufrB:theirs", PASSWORD), target)  # a session that does not exist
        await wait_for(lambda: plane.native.stats()["datagrams_in"] >= 2001)
        stats = plane.native.stats()
        # Dropped in Rust: Python never parsed them, aioice never saw them (no reflection).
        assert stats["dropped"]["stun_integrity"] == 2000
        assert stats["dropped"]["unknown_source"] == 1
        assert stats["to_python"] == 0 and not plane.drops
        assert peer.got == []
        assert plane.stats()["claimed_sources"] == 0
        assert stats["admitted_sources"] == 0
        # The real peer, with the password, is answered and remembered; then freed on close.
        real = sources[0]
        real.sendto(check("ufrA:theirs", PASSWORD), target)
        await wait_for(lambda: plane.native.stats()["to_python"] >= 1)
        plane._drain()
        assert len(peer.got) == 1
        assert plane.stats()["claimed_sources"] == 1 and plane.native.stats()["admitted_sources"] == 1
        t.close()
        assert plane.stats() == {"claimed_sources": 0, "sessions": 0, "native_sessions": 0}
        assert plane.native.stats()["admitted_sources"] == 0
        # After close the session's checks are unknown again, even with the right password.
        real.sendto(check("ufrA:theirs", PASSWORD), target)
        await wait_for(lambda: plane.native.stats()["dropped"]["unknown_source"] >= 2)
        assert plane.native.stats()["to_python"] == 1
    finally:
        for s in sources:
            s.close()


async def test_the_python_check_still_holds_for_what_reaches_it(plane):
    """Defence in depth: a check that reaches Python (e.g. from an admitted address) is checked
    there too, and one without the password is dropped as stun_integrity."""
    peer = Peer()
    t = plane.transport_for(0, "ufrA", peer)
    peer.transport = t
    plane.dispatch(0, ("127.0.0.9", 4000), check("ufrA:theirs", "a-guessed-password-here"))
    assert plane.drops["stun_integrity"] == 1 and peer.got == []
    plane.dispatch(0, ("127.0.0.9", 4000), check("ufrA:theirs", PASSWORD))
    assert len(peer.got) == 1
    t.close()


async def test_claims_per_session_are_bounded(plane):
    t = plane.transport_for(0, "ufrA", Peer())
    for port in range(50000, 50100):
        t.sendto(b"\x00\x01\x00\x00" + bytes(16), ("127.0.0.1", port))
    assert plane.stats()["claimed_sources"] <= 16
    assert plane.native.stats()["admitted_sources"] <= 16
    t.close()
    assert plane.stats()["claimed_sources"] == 0 and plane.native.stats()["admitted_sources"] == 0


async def test_garbage_from_an_unknown_source_is_dropped_natively_and_exported(plane):
    plane.transport_for(0, "ufrA", Peer())
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.5", 0))
    rtp = b"\x80\x60\x00\x01" + bytes(8) + bytes(100)
    for _ in range(500):
        s.sendto(rtp, plane.sockets[0])
    s.sendto(b"\x16\xfe\xfd" + bytes(20), plane.sockets[0])  # DTLS from an unclaimed address too
    await wait_for(lambda: plane.native.stats()["datagrams_in"] >= 501)
    s.close()
    stats = plane.native.stats()
    assert stats["datagrams_in"] == 501
    assert stats["dropped"]["unknown_source"] == 501
    assert stats["to_python"] == 0 and plane.drops["unknown_source"] == 0

    rooms = SimpleNamespace(list=lambda: [], plane=plane, retired_drops=Counter(), retired=Counter())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MediasrvCollector(rooms))  # type: ignore[arg-type]
    lines = set(generate_latest(registry).decode().splitlines())
    assert 'mediasrv_media_datagrams_dropped_total{reason="unknown_source"} 501.0' in lines
