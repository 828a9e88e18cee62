"""A subscriber whose link cannot carry video is told so: the router pauses its video (audio goes
on) and the room sends it `stream_paused`, then `stream_resumed` once its estimate has recovered.
And transport-cc is negotiated: offered by the server, answered only when the peer offered it."""

from __future__ import annotations

import asyncio
import struct
import time
from types import SimpleNamespace
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from mediasrv.media.sdp import TRANSPORT_CC_URI
from mediasrv.rooms.models import Participant, Subscription, Track

PUB, SUB = 10_001, 10_002
TRACK, SUB_ID = 9_001, 9_002
SUB_SSRC = 0x5000_0001


def remb(ssrc: int, bps: int) -> bytes:
    """A REMB (RTCP PSFB FMT=15) naming `ssrc`, as a subscriber's browser sends it."""
    exp = 0
    while bps >> exp > 0x3FFFF:
        exp += 1
    body = struct.pack("!II", 1, 0) + b"REMB" + bytes([1, (exp << 2) | (bps >> exp >> 16),
                                                        (bps >> exp >> 8) & 0xFF, (bps >> exp) & 0xFF])
    body += struct.pack("!I", ssrc)
    return bytes([0x80 | 15, 206]) + struct.pack("!H", (len(body) + 4) // 4 - 1) + body


async def _wait_for(messages: list[dict[str, Any]], kind: str, timeout_s: float = 6.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [m for m in messages if m["type"] == kind]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {kind} in {messages}")


async def test_a_subscriber_is_told_when_its_video_pauses_and_resumes(server) -> None:
    room = server.rooms.get_or_create("bw")
    router = room.router
    router.add_publisher(PUB, 7, {})
    router.add_track(TRACK, PUB, "video", "0", [(96, "VP8", 90000, None)], [0x1234])
    router.add_subscription(SUB_ID, TRACK, SUB, SUB_SSRC, [(96, "VP8", 90000, None)], {})
    messages: list[dict[str, Any]] = []

    async def sink(event: dict[str, Any]) -> None:
        messages.append(event)

    transport: Any = SimpleNamespace(owner="patient", handle=SUB)
    patient = Participant(identity="patient", role="patient", name=None, session="room", events=sink)
    track = Track(id=TRACK, owner="clinician", kind="video", source="camera", mid="0", transport=transport)
    patient.subscriptions[TRACK] = Subscription(id=SUB_ID, track=track, transport=transport,
                                                transceiver=None,  # type: ignore[arg-type]
                                                active=True)
    room.participants["patient"] = patient
    room.transports[SUB] = transport
    try:
        # The patient's link: 100 kbit/s, less than the lowest usable video rate.
        router.handle_rtcp(SUB, remb(SUB_SSRC, 100_000), 0)
        paused = await _wait_for(messages, "stream_paused")
        assert paused == {"type": "stream_paused", "reason": "bandwidth", "track_ids": [TRACK]}
        stats = router.subscription_stats(SUB_ID)
        assert stats["paused"] and stats["estimate_bps"] == 100_000
        assert router.downlink_stats(SUB)["video_paused"]
        # Recovered: resumed after the hold (2 s by default).
        router.handle_rtcp(SUB, remb(SUB_SSRC, 2_000_000), 0)
        resumed = await _wait_for(messages, "stream_resumed")
        assert resumed == {"type": "stream_resumed", "reason": "bandwidth", "track_ids": [TRACK]}
        assert not router.subscription_stats(SUB_ID)["paused"]
        assert router.stats()["video_pauses"] == 1 and router.stats()["video_resumes"] == 1
    finally:
        del room.participants["patient"]
        del room.transports[SUB]
        await server.rooms.close("bw", "done")


def _strip_transport_cc(sdp: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True)
                   if TRANSPORT_CC_URI not in line and "transport-cc" not in line)


async def _answer(offer: str) -> str:
    pc = RTCPeerConnection()
    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


async def test_transport_cc_is_offered_and_answered_only_when_offered() -> None:
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio", direction="sendonly")
        pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
    finally:
        await pc.close()
    # One id for the extension in both m-lines (BUNDLE), and the feedback type on each codec.
    assert offer.count(f"a=extmap:5 {TRANSPORT_CC_URI}") == 2
    assert "a=rtcp-fb:96 transport-cc" in offer and "a=rtcp-fb:97 transport-cc" in offer  # opus, VP8
    answer = await _answer(offer)
    assert answer.count(f"a=extmap:5 {TRANSPORT_CC_URI}") == 2
    assert "a=rtcp-fb:97 transport-cc" in answer
    plain = await _answer(_strip_transport_cc(offer))
    assert TRANSPORT_CC_URI not in plain and "transport-cc" not in plain
