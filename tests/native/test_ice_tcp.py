"""ICE-TCP end to end with real aiortc peers that have no UDP at all: a WHIP publisher and a WHEP
viewer each offer only an RFC 6544 active TCP candidate (mediasrv.media.ice_tcp), so ICE, DTLS and
then SRTP all run over TCP connections to the server's passive candidate on the media TCP port. The
server hands both over to the native plane like UDP peers; the viewer's aiortc decodes the video
the plane forwarded, framed onto its connection."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamTrack

from mediasrv.media.candidate_stats import count_peers
from mediasrv.media.host_addresses import configure_host_addresses
from mediasrv.media.ice_tcp import tcp_active_gathering
from tests.conftest import Server, start_server

pytest.importorskip("mediasrv_native")
configure_host_addresses(["127.0.0.1"])


async def _offer(pc: RTCPeerConnection) -> str:
    with tcp_active_gathering():
        await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp


async def _post(server: Server, path: str, token: str, sdp: str) -> tuple[int, str]:
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as s, s.post(f"{server.url}{path}", data=sdp, headers=headers) as r:
        return r.status, await r.text()


async def _connected(*pcs: RTCPeerConnection, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while any(pc.connectionState != "connected" for pc in pcs):
        assert all(pc.connectionState not in ("failed", "closed") for pc in pcs), \
            [pc.connectionState for pc in pcs]
        assert time.monotonic() < deadline, [pc.connectionState for pc in pcs]
        await asyncio.sleep(0.05)


@pytest.fixture
async def tcp_server(tmp_path: Any) -> Any:
    srv = await start_server(tmp_path / "data", ice_tcp=True)
    try:
        yield srv
    finally:
        await srv.runner.cleanup()


async def test_publisher_and_viewer_without_udp_connect_over_ice_tcp_and_decode(tcp_server: Server) -> None:
    server = tcp_server
    plane = server.rooms.plane
    assert plane is not None and plane.tcp_sockets
    [(_, tcp_port)] = plane.tcp_sockets.values()
    started = time.monotonic()

    publisher = RTCPeerConnection()
    publisher.addTransceiver(VideoStreamTrack(), direction="sendonly")
    offer = await _offer(publisher)
    assert " udp " not in offer and "tcptype active" in offer
    status, answer = await _post(server, "/whip/clinic", server.token("dr-tcp", "clinician", "clinic"), offer)
    assert status == 201, answer
    # The server offers its ICE-TCP passive candidate, below its UDP one.
    udp = re.search(r"^a=candidate:\S+ 1 udp (\d+) 127\.0\.0\.1 \d+ typ host", answer, re.M)
    tcp = re.search(rf"^a=candidate:\S+ 1 tcp (\d+) 127\.0\.0\.1 {tcp_port} typ host tcptype passive", answer, re.M)
    assert udp and tcp, answer
    assert int(tcp.group(1)) < int(udp.group(1))
    await publisher.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    viewer = RTCPeerConnection()
    viewer.addTransceiver("video", direction="recvonly")
    tracks: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
    viewer.on("track", tracks.put_nowait)
    status, answer = await _post(server, "/whep/clinic/dr-tcp", server.token("pat-tcp", "patient", "clinic"),
                                 await _offer(viewer))
    assert status == 201, answer
    await viewer.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await _connected(publisher, viewer)

    track = await asyncio.wait_for(tracks.get(), 10)
    frame = await asyncio.wait_for(track.recv(), 30)
    first_frame_s = time.monotonic() - started
    decoded = 1
    while decoded < 15:
        frame = await asyncio.wait_for(track.recv(), 10)
        decoded += 1
    assert (frame.width, frame.height) == (640, 480)
    print(f"\nICE-TCP (aiortc peers, no UDP): join -> first decoded frame {first_frame_s:.2f} s")

    # Both were handed over to the native plane over TCP: their media never reached Python.
    room = server.rooms.get("clinic")
    transports = {p.session: (p.publisher or p.subscriber) for p in room.participants.values()}
    for t in transports.values():
        assert t is not None and t.handed_over
        assert t.selected_candidate() == ("host", "tcp")
    assert count_peers(t.pc for t in transports.values() if t)[("host", "tcp")] == 2
    stats = plane.native.stats()
    assert stats["tcp"]["open"] == 2 and stats["tcp"]["accepted"] == 2
    pub_stats = plane.native.peer_stats(transports["whip"].handle)
    sub_stats = plane.native.peer_stats(transports["whep"].handle)
    assert pub_stats is not None and sub_stats is not None
    assert pub_stats["rtp_in"] > 0 and sub_stats["rtp_out"] > 0
    assert stats["dropped"]["tcp_write_overflow"] == 0
    await publisher.close()
    await viewer.close()


async def test_without_ice_tcp_no_tcp_candidate_is_offered(tmp_path: Any) -> None:
    server = await start_server(tmp_path / "data", ice_tcp=False)
    try:
        assert server.rooms.plane is not None and not server.rooms.plane.tcp_sockets
        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        status, answer = await _post(server, "/whip/clinic", server.token("dr-udp", "clinician", "clinic"),
                                     pc.localDescription.sdp)
        assert status == 201 and " udp " in answer and " tcp " not in answer
        await pc.close()
    finally:
        await server.runner.cleanup()


async def test_announced_tcp_port_replaces_the_bound_one(tmp_path: Any) -> None:
    server = await start_server(tmp_path / "data", ice_tcp=True, media_tcp_announced_port=443)
    try:
        assert server.rooms.plane is not None
        [(_, bound)] = server.rooms.plane.tcp_sockets.values()
        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        status, answer = await _post(server, "/whip/clinic", server.token("dr-443", "clinician", "clinic"),
                                     pc.localDescription.sdp)
        assert status == 201
        assert re.search(r"^a=candidate:\S+ 1 tcp \d+ 127\.0\.0\.1 443 typ host tcptype passive", answer, re.M)
        assert f" {bound} typ host tcptype" not in answer
        await pc.close()
    finally:
        await server.runner.cleanup()


def _free_udp_and_tcp_port(udp_ports: int = 8) -> int:
    """A port number free for both UDP and TCP on 127.0.0.1 (a free UDP port's number may be a
    TCP connection's ephemeral port of an earlier test), with the next UDP ports free too (one per
    media worker)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                if port + udp_ports <= 65535 and all(_udp_free(p) for p in range(port + 1, port + udp_ports)):
                    return port
    raise RuntimeError("no port free for both UDP and TCP")


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_the_tcp_port_follows_the_udp_port_unless_set(tmp_path: Any) -> None:
    port = _free_udp_and_tcp_port()
    server = await start_server(tmp_path / "data", ice_tcp=True, media_udp_port=port)
    try:
        assert server.rooms.plane is not None
        # UDP: one port per media worker from the configured one on; ICE-TCP on that one.
        workers = server.rooms.plane.native.workers
        assert server.rooms.plane.sockets == [("127.0.0.1", port + w) for w in range(workers)]
        assert list(server.rooms.plane.tcp_sockets.values()) == [("127.0.0.1", port)]
    finally:
        await server.runner.cleanup()
