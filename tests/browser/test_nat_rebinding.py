"""A viewer whose NAT rebinds mid-call keeps receiving: the native plane follows it.

A small UDP "NAT" runs in the test between one Chromium viewer and the server: the browser talks to the
NAT's inside port (the WHEP answer's candidate is rewritten to it) and the NAT forwards from an outside
socket. Rebinding closes that outside socket and forwards from a new one, as a home router or a
carrier-grade NAT does when a mapping expires: the server sees the same peer at a new address. Once
the browser's next authenticated, nominating ICE check arrives from there, the plane moves the
peer's route and our sends to the new address, and the viewer's video resumes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import eventually, goto, inbound
from .test_fanout import frames, publish, transports
from .test_visit import _metrics
from .test_whip_whep import WHEP_SUBSCRIBE

pytestmark = pytest.mark.browser

Addr = tuple[str, int]

# WHEP as in test_whip_whep, except that the server is reachable only through the NAT: the answer's
# candidates are rewritten to point at the NAT's inside port.
WHEP_VIA = WHEP_SUBSCRIBE.replace("async ([url, token]) =>", "async ([url, token, natPort]) =>").replace(
    "sdp: await res.text()",
    "sdp: (await res.text()).replace(/^(a=candidate:\\S+ \\d+ udp \\d+ \\S+ )\\d+/gim, "
    "(m, head) => head + natPort)")
assert WHEP_VIA.count("natPort") == 2


class _Inside(asyncio.DatagramProtocol):
    def __init__(self, nat: Nat) -> None:
        self.nat = nat

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.nat.browser = addr
        if self.nat.outside is not None:
            self.nat.outside.sendto(data, self.nat.server)


class _Outside(asyncio.DatagramProtocol):
    def __init__(self, nat: Nat) -> None:
        self.nat = nat

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        if self.nat.inside is not None and self.nat.browser is not None:
            self.nat.inside.sendto(data, self.nat.browser)


class Nat:
    """Forwards between one browser (inside) and the server's media port (outside), on loopback."""

    def __init__(self, server: Addr) -> None:
        self.server = server
        self.browser: Addr | None = None
        self.inside: asyncio.DatagramTransport | None = None
        self.outside: asyncio.DatagramTransport | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.inside, _ = await loop.create_datagram_endpoint(lambda: _Inside(self), local_addr=("127.0.0.1", 0))
        await self.rebind()
        return self.inside.get_extra_info("sockname")[1]

    async def rebind(self) -> Addr:
        """A new outside mapping; the old one is gone (datagrams to it are lost)."""
        if self.outside is not None:
            self.outside.close()
        loop = asyncio.get_running_loop()
        self.outside, _ = await loop.create_datagram_endpoint(lambda: _Outside(self),
                                                              local_addr=("127.0.0.1", 0))
        return self.outside.get_extra_info("sockname")[:2]

    def close(self) -> None:
        for t in (self.inside, self.outside):
            if t is not None:
                t.close()


async def test_viewer_behind_a_rebinding_nat_keeps_receiving(server, browser) -> None:
    plane = server.rooms.plane
    assert plane is not None
    await publish(browser, server, "ward")
    # The viewer's media goes to the room's media worker port.
    (server_addr,) = plane.room_addresses(server.rooms.get("ward").plane_key)
    nat = Nat(server_addr)
    port = await nat.start()
    try:
        viewer = await (await browser.new_context()).new_page()
        await goto(viewer, f"{server.url}/healthz")
        await viewer.evaluate(WHEP_VIA, [f"{server.url}/whep/ward/cam", server.token("nurse", "observer", "ward"),
                                         port])
        await eventually(lambda: frames_above(viewer, 10), timeout=60, what="viewer decoding through the NAT")
        (sub,) = transports(server, "ward", "whep")
        assert sub.handed_over
        first_outside = nat.outside.get_extra_info("sockname")[:2]
        assert plane.native.peer_stats(sub.handle)["address_changes"] == 0

        new_outside = await nat.rebind()
        assert new_outside != first_outside
        stalled_at = await frames(viewer)

        async def resumed() -> Any:
            return await frames(viewer) > stalled_at + 30

        await eventually(resumed, timeout=30, what="video resuming after the NAT rebound")
        assert plane.native.peer_stats(sub.handle)["address_changes"] == 1
        assert plane.moves >= 1
        metrics = await _metrics(server)
        assert any(line.startswith("mediasrv_media_peer_moves_total ") and float(line.split()[1]) >= 1
                   for line in metrics.splitlines())
        assert (await inbound(viewer, "window.whep.pc"))["video"]["framesDecoded"] > stalled_at
    finally:
        nat.close()


async def frames_above(page: Any, n: int) -> bool:
    return await frames(page) > n
