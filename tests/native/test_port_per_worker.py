"""A UDP port per media worker: each visit's peers are given the port of the worker its room is
pinned to, so that worker reads, routes and sends all of the visit's media and nothing is handed
between threads. Real aiortc peers over UDP: a WHIP publisher and a WHEP viewer in each of two
rooms, one room on each worker; the viewers decode what the plane forwarded. With one port for
all (`media_port_per_worker = false`) the same visits work through the hand-over path."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamTrack

from mediasrv.media.host_addresses import configure_host_addresses
from tests.conftest import Server, start_server

pytest.importorskip("mediasrv_native")
configure_host_addresses(["127.0.0.1"])


async def _post(server: Server, path: str, token: str, sdp: str) -> tuple[int, str]:
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as s, s.post(f"{server.url}{path}", data=sdp, headers=headers) as r:
        return r.status, await r.text()


def _udp_port(answer: str) -> int:
    found = re.search(r"^a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host", answer, re.M)
    assert found, answer
    return int(found.group(1))


async def _visit(server: Server, room: str, pcs: list[RTCPeerConnection]) -> tuple[list[int], MediaStreamTrack]:
    """A publisher and a viewer in `room`; the UDP ports the server answered with, and the
    viewer's track."""
    publisher = RTCPeerConnection()
    pcs.append(publisher)
    publisher.addTransceiver(VideoStreamTrack(), direction="sendonly")
    await publisher.setLocalDescription(await publisher.createOffer())
    status, answer = await _post(server, f"/whip/{room}", server.token(f"dr-{room}", "clinician", room),
                                 publisher.localDescription.sdp)
    assert status == 201, answer
    ports = [_udp_port(answer)]
    await publisher.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    viewer = RTCPeerConnection()
    pcs.append(viewer)
    viewer.addTransceiver("video", direction="recvonly")
    tracks: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
    viewer.on("track", tracks.put_nowait)
    await viewer.setLocalDescription(await viewer.createOffer())
    status, answer = await _post(server, f"/whep/{room}/dr-{room}", server.token(f"pat-{room}", "patient", room),
                                 viewer.localDescription.sdp)
    assert status == 201, answer
    ports.append(_udp_port(answer))
    await viewer.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return ports, await asyncio.wait_for(tracks.get(), 10)


async def _decodes(track: MediaStreamTrack, frames: int = 10) -> None:
    for _ in range(frames):
        frame = await asyncio.wait_for(track.recv(), 30)
    assert (frame.width, frame.height) == (640, 480)


async def _two_visits(server: Server) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Two visits, each decoding at its viewer, all four peers handed over: the UDP ports each
    room's peers were given, and the worker each room is pinned to (read while the visits last:
    a room closes when its last participant leaves)."""
    plane = server.rooms.plane
    assert plane is not None
    pcs: list[RTCPeerConnection] = []
    try:
        ports = {}
        for room in ("visit-a", "visit-b"):
            ports[room], track = await _visit(server, room, pcs)
            await _decodes(track)
        deadline = time.monotonic() + 10
        while not all(p.handed_over for r in ("visit-a", "visit-b")
                      for part in server.rooms.get(r).participants.values()
                      for p in (part.publisher, part.subscriber) if p is not None):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        return ports, {room: plane._room_keys[server.rooms.get(room).plane_key] for room in ports}
    finally:
        for pc in pcs:
            await pc.close()


async def test_each_visit_uses_the_port_of_its_rooms_worker(tmp_path: Any) -> None:
    server = await start_server(tmp_path / "data", media_workers=2)
    try:
        plane = server.rooms.plane
        assert plane is not None
        assert plane.native.socket_workers() == [0, 1]
        worker_port = {w: port for (_, port), w in zip(plane.sockets, plane.native.socket_workers(), strict=True)}
        ports, workers = await _two_visits(server)
        assert sorted(workers.values()) == [0, 1]  # no traffic yet when placed: one room each
        for room, (publisher_port, viewer_port) in ports.items():
            assert publisher_port == viewer_port == worker_port[workers[room]], (ports, workers)
        stats = plane.native.stats()
        assert stats["handoffs"] == 0  # each worker read its own rooms' datagrams
        assert all(packets > 0 for packets in stats["worker_packets"]), stats["worker_packets"]
    finally:
        await server.runner.cleanup()


async def test_with_one_port_for_all_the_other_workers_media_is_handed_over(tmp_path: Any) -> None:
    server = await start_server(tmp_path / "data", media_workers=2, media_port_per_worker=False)
    try:
        plane = server.rooms.plane
        assert plane is not None and len(plane.sockets) == 1
        ports, workers = await _two_visits(server)
        assert sorted(workers.values()) == [0, 1]
        assert {p for pair in ports.values() for p in pair} == {plane.sockets[0][1]}
        assert plane.native.stats()["handoffs"] > 0  # worker 1's room's media, read by thread 0
    finally:
        await server.runner.cleanup()
