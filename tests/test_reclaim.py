"""Closed peer connections are freed soon after they close, not whenever the cyclic collector next
runs a full collection (rarely, on a busy server: the slow RSS growth of a soak)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from mediasrv.api import appkeys as keys
from mediasrv.media import reclaim
from mediasrv.media.host_addresses import configure_host_addresses

configure_host_addresses(["127.0.0.1"])


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    """Only explicit collections: what a server sees between its rare full collections."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_a_closed_connection_is_collected_once_within_the_interval(no_automatic_gc: None) -> None:
    r = reclaim.Reclaimer(min_interval_s=0.5, settle_s=0.05)
    first = _Cycle()
    alive = weakref.ref(first)
    del first
    r.closed()
    r.closed()  # one collection covers both
    await asyncio.sleep(0.2)
    assert alive() is None and r.collections == 1
    second = _Cycle()
    alive = weakref.ref(second)
    del second
    r.closed()
    await asyncio.sleep(0.2)
    assert alive() is not None, "not before the interval since the last collection"
    await asyncio.sleep(0.5)
    assert alive() is None and r.collections == 2


def _publisher_pc(server: Any) -> weakref.ref[Any]:
    (session,) = server.app[keys.SESSIONS].values()
    return weakref.ref(session.participant.publisher.pc)


async def test_a_whip_session_ended_frees_its_peer_connection(
        server: Any, no_automatic_gc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reclaim.RECLAIMER, "min_interval_s", 0.0)
    monkeypatch.setattr(reclaim.RECLAIMER, "settle_s", 0.2)
    before = reclaim.RECLAIMER.collections
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp",
               "Authorization": f"Bearer {server.token('pat-gc', 'patient', 'gc-room')}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/whip/gc-room", data=pc.localDescription.sdp, headers=headers) as resp:
            assert resp.status == 201, await resp.text()
            location = resp.headers["Location"]
        server_pc = _publisher_pc(server)
        async with http.delete(server.url + location, headers=headers) as resp:
            assert resp.status == 200
    await pc.close()
    for _ in range(40):
        if server_pc() is None:
            break
        await asyncio.sleep(0.05)
    assert server_pc() is None, "the server's closed RTCPeerConnection is still in memory"
    assert reclaim.RECLAIMER.collections > before
