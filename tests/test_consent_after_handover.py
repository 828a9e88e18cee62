"""ICE consent after the handover: the media of a handed-over peer runs in the native plane, and so
does its consent freshness (RFC 7675): the plane answers the peer's checks and sends its own, aioice's
consent task is stopped, and a peer that stops answering is still found dead and its visit slot
freed; the connected peer costs the event loop no aiortc RTP/RTCP loop and no consent task."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import aioice.ice
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from mediasrv.api import appkeys as keys
from mediasrv.media import aiortc_glue
from mediasrv.media.host_addresses import configure_host_addresses
from tests.conftest import start_server

configure_host_addresses(["127.0.0.1"])


async def _publish(server: Any, room: str, identity: str) -> tuple[RTCPeerConnection, Any]:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp",
               "Authorization": f"Bearer {server.token(identity, 'patient', room)}"}
    async with aiohttp.ClientSession() as http, http.post(
            f"{server.url}/whip/{room}", data=pc.localDescription.sdp, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        answer = await resp.text()
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    (session,) = server.app[keys.SESSIONS].values()
    publisher = session.participant.publisher
    for _ in range(400):
        if publisher.handed_over and all(t.receiver._RTCRtpReceiver__started for t in publisher.pc.getTransceivers()):
            break
        await asyncio.sleep(0.05)
    assert publisher.handed_over
    return pc, publisher


def _silence(pc: RTCPeerConnection) -> None:
    """The client's host vanishes: its ICE sockets close, nothing more is sent or answered."""
    connection = pc.getTransceivers()[0].sender.transport.transport._connection
    for protocol in connection._protocols:
        protocol.transport.close()


@pytest.fixture
async def quick_consent_server(tmp_path: Any) -> Any:
    """A server whose plane checks consent every 0.16-0.24 s and gives up after 1.5 s (not 5 / 30)."""
    srv = await start_server(tmp_path / "data", ice_consent_interval_s=0.2, ice_consent_timeout_s=1.5)
    try:
        yield srv
    finally:
        await srv.runner.cleanup()


async def test_a_silent_peer_after_the_handover_is_found_dead(
        quick_consent_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = quick_consent_server
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)  # the client checks often too
    pc, publisher = await _publish(server, "consent-room", "pat-consent")
    try:
        # The server's agent runs no consent task: the plane checks instead.
        dtls = next(iter(publisher._dtls))
        assert aiortc_glue.ice_connection(dtls)._query_consent_task is None
        plane = server.rooms.plane
        stats: dict[str, int] = {}
        for _ in range(200):  # the plane's checks are answered, the client's answered natively
            stats = plane.native.peer_stats(publisher.handle) or {}
            if stats.get("consent_responses", 0) >= 3 and stats.get("checks_answered", 0) >= 3:
                break
            await asyncio.sleep(0.05)
        assert stats["consent_responses"] >= 3 and stats["checks_answered"] >= 3, stats
        assert stats["checks_refused"] == 0
        assert publisher.connected, "consent holds while the peer answers"
        assert plane.consent_lost == 0
        _silence(pc)
        # No answer for 1.5 s: the plane reports the peer, its ICE agent is closed, the
        # participant leaves and its session and plane peer go.
        for _ in range(300):
            if not server.app[keys.SESSIONS] and publisher.closed:
                break
            await asyncio.sleep(0.05)
        assert publisher.closed and not server.app[keys.SESSIONS]
        assert plane.consent_lost == 1
        headers = {"Authorization": f"Bearer {server.token('ops', 'admin')}"}
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics", headers=headers) as resp:
            assert "mediasrv_media_consent_expired_total 1.0" in await resp.text()
        assert plane.native.peer_stats(publisher.handle) is None
        room = server.rooms.get("consent-room")
        assert room is None or "pat-consent" not in room.participants
    finally:
        await pc.close()


async def test_consent_of_a_quiet_but_present_peer_holds(
        quick_consent_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that sends nothing but answers the plane's checks keeps its connection well past the
    timeout (its own agent's checks are far apart: consent rests on the plane's checks alone)."""
    server = quick_consent_server
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 60)
    pc, publisher = await _publish(server, "quiet-room", "pat-quiet")
    try:
        plane = server.rooms.plane
        for _ in range(200):
            stats = plane.native.peer_stats(publisher.handle) or {}
            if stats.get("consent_responses", 0) >= 12:  # >= 2.4 s of checks, timeout 1.5 s
                break
            await asyncio.sleep(0.05)
        assert stats["consent_responses"] >= 12, stats
        assert publisher.connected and not publisher.closed
        assert plane.consent_lost == 0
        await publisher.close()
    finally:
        await pc.close()


async def test_a_handed_over_peer_runs_no_aiortc_loop(server: Any) -> None:
    pc, publisher = await _publish(server, "loops-room", "pat-loops")
    try:
        for t in publisher.pc.getTransceivers():
            # No task: aiortc's loop slots hold a finished future, not a running task.
            for task in (t.receiver._RTCRtpReceiver__rtcp_task, t.sender._RTCRtpSender__rtcp_task,
                         t.sender._RTCRtpSender__rtp_task):
                assert task is None or (task.done() and not isinstance(task, asyncio.Task))
        loops = [task for task in asyncio.all_tasks()
                 if getattr(task.get_coro(), "__qualname__", "").endswith(
                     ("RTCRtpReceiver._run_rtcp", "RTCRtpSender._run_rtcp", "RTCRtpSender._run_rtp"))]
        assert len(loops) == 4, "only the client's two senders run loops"
        consent = [task for task in asyncio.all_tasks()
                   if getattr(task.get_coro(), "__qualname__", "").endswith("Connection.query_consent")]
        assert len(consent) == 1, "only the client's agent checks consent in Python"
        await publisher.close()
    finally:
        await pc.close()
