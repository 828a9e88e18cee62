"""A simulated visit: publishers that send audio and video, and subscribers that watch each of them.

Every connection is real WebRTC setup with aiortc (SDP, ICE, DTLS); once connected, its datapath is
handed to the native pump, which sends synthetic media and measures what arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection

from mediasrv.loadtest.downlinks import Downlink, Impairment
from mediasrv.loadtest.handover import HandedOver, hand_over
from mediasrv.loadtest.signaling import Session, Signaling
from mediasrv.media import aiortc_glue

log = logging.getLogger(__name__)
MID_EXT = "urn:ietf:params:rtp-hdrext:sdes:mid"
TRANSPORT_CC_EXT = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
CONNECT_TIMEOUT_S = 20.0


@dataclass
class MediaPlan:
    video_kbps: int = 1000
    fps: int = 30
    keyframe_interval_s: float = 3.0
    audio: bool = True
    video: bool = True
    # Video follows the REMB the server sends each publisher, as a browser's encoder does.
    follow_remb: bool = False

    @property
    def tracks(self) -> int:
        return int(self.audio) + int(self.video)


class SilentTrack(MediaStreamTrack):
    """A track that never yields a frame: aiortc negotiates it but the pump sends the media."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._never = asyncio.Event()

    async def recv(self) -> Any:  # pragma: no cover - blocks until the sender stops
        await self._never.wait()
        raise asyncio.CancelledError


async def wait_connected(pc: RTCPeerConnection, timeout: float = CONNECT_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed"):
            raise ConnectionError(f"peer connection {pc.connectionState}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"not connected after {timeout:.0f} s ({pc.connectionState})")
        await asyncio.sleep(0.02)


def extension_id(sdp: str, uri: str) -> int | None:
    m = re.search(rf"^a=extmap:(\d+)(?:/\w+)? {re.escape(uri)}\s*$", sdp, re.M)
    return int(m.group(1)) if m else None


def mid_extension_id(sdp: str) -> int | None:
    return extension_id(sdp, MID_EXT)


async def _ignore_rtp(data: bytes, arrival_time_ms: int) -> None:
    return None


def _mute_aiortc_media(pc: RTCPeerConnection) -> None:
    """Media arriving before the hand-over must not reach aiortc's receivers (they would try to
    decode the synthetic VP8); the pump counts from its first packet on."""
    for t in pc.getTransceivers():
        if t.receiver.transport is not None:
            aiortc_glue.intercept_rtp(t.receiver.transport, _ignore_rtp)


@dataclass
class Connection:
    role: str  # "publisher" | "subscriber"
    pc: RTCPeerConnection
    session: Session | None = None
    handed: HandedOver | None = None
    setup_s: float | None = None
    # When its setup began (time.monotonic()), and how long each phase took: `answer` (our offer,
    # the server's answer over HTTP, applying it), `connected` (ICE and DTLS), `handover` (to the
    # pump); with WHIP/WHEP also `answer_http`, the part of `answer` spent in the HTTP exchange.
    started: float = 0.0
    phases_s: dict[str, float] = field(default_factory=dict)


@dataclass
class Visit:
    room: str
    publishers: int
    subscribers: int
    plan: MediaPlan
    signaling: Signaling
    pump: Any
    # A visit as telehealth has it: every participant publishes and watches every other one
    # (`subscribers` is then unused); otherwise separate viewers watch every publisher.
    mutual: bool = False
    # Subscribers receive like browsers toward congestion control (transport-cc feedback; see
    # downlinks.py); the viewers in `impaired` (indices in this visit) do so behind `impairment`.
    feedback: bool = False
    impairment: Impairment | None = None
    impaired: frozenset[int] = frozenset()
    connections: list[Connection] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    downlinks: list[Downlink] = field(default_factory=list)

    def identity(self, kind: str, i: int) -> str:
        return f"{self.room}-{kind}{i}"

    async def start(self) -> None:
        """Publishers first (WHEP needs its target in the room), then every subscriber connection."""
        await asyncio.gather(*(self._publisher(i) for i in range(self.publishers)))
        if self.mutual:
            await asyncio.gather(*(self._subscriber(i, p, viewer="pub") for i in range(self.publishers)
                                   for p in range(self.publishers) if p != i))
            return
        await asyncio.gather(*(self._subscriber(i, p) for i in range(self.subscribers)
                               for p in range(self.publishers)))

    def streams_watched(self) -> int:
        """(viewer, publisher) pairs: each carries the publisher's audio and video."""
        if self.mutual:
            return self.publishers * (self.publishers - 1)
        return self.publishers * self.subscribers

    async def _connect(self, role: str, negotiate: Any) -> Connection | None:
        t0 = time.monotonic()
        conn = Connection(role, RTCPeerConnection(RTCConfiguration(iceServers=[])), started=t0)
        self.connections.append(conn)
        try:
            conn.session = await negotiate(conn.pc)
            _mute_aiortc_media(conn.pc)
            t1 = time.monotonic()
            await wait_connected(conn.pc)
            t2 = time.monotonic()
            conn.handed = await hand_over(conn.pc, self.pump)
        except Exception as exc:  # counted and reported; one failed client must not stop the run
            self.failures.append(f"{role} in {self.room}: {exc.__class__.__name__}: {exc}")
            log.debug("setup failed", exc_info=True)
            return None
        t3 = time.monotonic()
        conn.setup_s = t3 - t0
        conn.phases_s = {"answer": t1 - t0, "connected": t2 - t1, "handover": t3 - t2}
        if conn.session.http_s is not None:
            conn.phases_s["answer_http"] = conn.session.http_s
        return conn

    async def _publisher(self, i: int) -> None:
        async def negotiate(pc: RTCPeerConnection) -> Session:
            if self.plan.audio:
                pc.addTransceiver(SilentTrack("audio"), direction="sendonly")
            if self.plan.video:
                pc.addTransceiver(SilentTrack("video"), direction="sendonly")
            return await self.signaling.publish(pc, self.room, self.identity("pub", i))

        conn = await self._connect("publisher", negotiate)
        if conn is None or conn.handed is None:
            return
        ext_id = mid_extension_id(conn.pc.remoteDescription.sdp)
        for t in conn.pc.getTransceivers():
            codecs = aiortc_glue.negotiated_codecs(t)
            codec = next((c for c in codecs if c.mimeType.split("/")[1].lower() != "rtx"), None)
            if codec is None:
                continue
            name = codec.mimeType.split("/")[1].lower()
            peer, ssrc, pt = conn.handed.peer_id, aiortc_glue.sender_ssrc(t.sender), codec.payloadType
            mid_kw = {"mid_ext_id": ext_id, "mid": t.mid} if ext_id and t.mid else {}
            if t.kind == "video" and name == "vp8":
                self.pump.add_video(peer, ssrc, pt, self.plan.video_kbps, fps=self.plan.fps,
                                    keyframe_interval_s=self.plan.keyframe_interval_s,
                                    follow_remb=self.plan.follow_remb, **mid_kw)
            elif t.kind == "audio" and name == "opus":
                self.pump.add_audio(peer, ssrc, pt, **mid_kw)
            else:
                self.failures.append(f"publisher in {self.room}: negotiated {name}, not VP8/Opus")

    async def _subscriber(self, i: int, publisher: int, viewer: str = "sub") -> None:
        target = self.identity("pub", publisher)

        async def negotiate(pc: RTCPeerConnection) -> Session:
            return await self.signaling.subscribe(pc, self.room, self.identity(viewer, i), target)

        conn = await self._connect("subscriber", negotiate)
        if conn is not None and conn.handed is not None and self.feedback:
            self._receive_like_a_browser(conn, i, viewer, target)

    def _receive_like_a_browser(self, conn: Connection, i: int, viewer: str, target: str) -> None:
        assert conn.handed is not None
        ext = extension_id(conn.pc.remoteDescription.sdp, TRANSPORT_CC_EXT)
        video_pts = [c.payloadType for t in conn.pc.getTransceivers() if t.kind == "video"
                     for c in aiortc_glue.negotiated_codecs(t)]
        imp = self.impairment if i in self.impaired and self.impairment is not None else None
        self.pump.set_receiver(conn.handed.peer_id, video_pts, transport_cc_ext_id=ext,
                               impair_rate_bps=imp.rate_bps if imp else 0,
                               impair_queue_ms=imp.queue_ms if imp else 250,
                               impair_loss_pct=imp.loss_pct if imp else 0.0)
        self.downlinks.append(Downlink(conn.handed.peer_id, self.room, self.identity(viewer, i), target,
                                       imp is not None))

    def set_up(self) -> list[Connection]:
        """The connections whose setup completed."""
        return [c for c in self.connections if c.setup_s is not None]

    def setup_times(self) -> list[float]:
        return [c.setup_s for c in self.set_up() if c.setup_s is not None]

    async def stop(self) -> None:
        for conn in self.connections:
            if conn.handed is not None:
                await conn.handed.release()
        for conn in reversed(self.connections):
            if conn.session is not None:
                await self.signaling.close(conn.session)
            with contextlib.suppress(Exception):
                await conn.pc.close()
