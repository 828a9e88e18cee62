"""ICE consent after the handover: the media of a handed-over peer runs in the native plane, but a
peer that stops answering consent checks (RFC 7675) is still found dead and its visit slot freed;
and the connected peer costs the event loop no aiortc RTP/RTCP loop."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import aioice.ice
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from mediasrv.api import appkeys as keys
from mediasrv.media.host_addresses import configure_host_addresses

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


async def test_a_silent_peer_after_the_handover_is_found_dead(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)  # a check every 0.16-0.24 s, not ~5 s
    pc, publisher = await _publish(server, "consent-room", "pat-consent")
    try:
        await asyncio.sleep(1.0)
        assert publisher.connected, "consent holds while the peer answers"
        _silence(pc)
        # 6 unanswered checks (each given up after 0.5 s) close the ICE connection; the
        # participant leaves and its session and plane peer go.
        for _ in range(300):
            if not server.app[keys.SESSIONS] and publisher.closed:
                break
            await asyncio.sleep(0.05)
        assert publisher.closed and not server.app[keys.SESSIONS]
        room = server.rooms.get("consent-room")
        assert room is None or "pat-consent" not in room.participants
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
        await publisher.close()
    finally:
        await pc.close()
