"""A plain aiortc SFU, written the way a Python developer would: WHIP in, WHEP out, and an RTP
forwarding hook on each publisher's DTLS transport that rewrites SSRC and payload type per
subscriber and sends through the subscriber's aiortc SRTP session. No decoding, no native code.

    python -m mediasrv.loadtest.baselines.aiortc_sfu --host 127.0.0.1 --port 8090

Tokens are accepted without verification (it is a benchmark baseline); the identity is the
token's `sub`. Only for the comparison harness.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field
from typing import Any

import jwt
import uvloop
from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RtpPacket, is_rtcp

from mediasrv.media import aiortc_glue
from mediasrv.media.sdp import payload_type


class SilentTrack(MediaStreamTrack):
    """Gives the subscriber's sender a track; the hook sends the packets instead."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._never = asyncio.Event()

    async def recv(self) -> Any:  # pragma: no cover
        await self._never.wait()


@dataclass
class Outbound:
    dtls: Any
    ssrc: int
    payload_types: dict[str, int]  # codec name -> negotiated payload type


@dataclass
class Publisher:
    pc: RTCPeerConnection
    kinds_by_pt: dict[int, tuple[str, str]] = field(default_factory=dict)  # pt -> (kind, codec)
    subscribers: dict[str, dict[str, Outbound]] = field(default_factory=dict)  # session -> kind -> out
    receivers: dict[str, Any] = field(default_factory=dict)  # kind -> RTCRtpReceiver
    ssrcs: dict[str, int] = field(default_factory=dict)  # kind -> SSRC last seen from the publisher


class Sfu:
    def __init__(self) -> None:
        self.publishers: dict[tuple[str, str], Publisher] = {}
        self.sessions: dict[str, tuple[RTCPeerConnection, tuple[str, str] | None]] = {}

    @staticmethod
    def identity(request: web.Request) -> str:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        try:
            return str(jwt.decode(token, options={"verify_signature": False})["sub"])
        except (jwt.PyJWTError, KeyError):
            return "anonymous-" + secrets.token_hex(3)

    async def whip(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        key = (room, self.identity(request))
        offer = await request.text()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        pub = Publisher(pc)
        for t in pc.getTransceivers():
            for c in aiortc_glue.negotiated_codecs(t):
                pub.kinds_by_pt[payload_type(c)] = (t.kind, c.mimeType.split("/")[1].lower())
            pub.receivers[t.kind] = t.receiver
            aiortc_glue.intercept_rtp(t.receiver.transport, self._forwarder(pub))
        self.publishers[key] = pub
        session = secrets.token_hex(8)
        self.sessions[session] = (pc, key)
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers={"Location": f"/whip/{room}/{session}"})

    def _forwarder(self, pub: Publisher) -> Any:
        async def on_rtp(data: bytes, arrival_time_ms: int) -> None:
            if is_rtcp(data):
                return
            packet = RtpPacket.parse(data)
            kind, codec = pub.kinds_by_pt.get(packet.payload_type, (None, None))
            if kind is None:
                return
            pub.ssrcs[kind] = packet.ssrc
            for outs in list(pub.subscribers.values()):
                out = outs.get(kind)
                if out is None or codec not in out.payload_types:
                    continue
                packet.ssrc = out.ssrc
                packet.payload_type = out.payload_types[codec]
                with contextlib.suppress(ConnectionError):
                    await aiortc_glue.send_srtp(out.dtls, packet.serialize())

        return on_rtp

    async def whep(self, request: web.Request) -> web.Response:
        room, target = request.match_info["room"], request.match_info["identity"]
        pub = self.publishers.get((room, target))
        if pub is None:
            raise web.HTTPNotFound(text="unknown publisher")
        offer = await request.text()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        for t in pc.getTransceivers():
            if t.kind in ("audio", "video"):
                t.sender.replaceTrack(SilentTrack(t.kind))
                t.direction = "sendonly"
        await pc.setLocalDescription(await pc.createAnswer())
        session = secrets.token_hex(8)
        outs = {}
        for t in pc.getTransceivers():
            if t.kind in ("audio", "video"):
                codecs = aiortc_glue.negotiated_codecs(t)
                pts = {c.mimeType.split("/")[1].lower(): payload_type(c) for c in codecs}
                outs[t.kind] = Outbound(t.sender.transport, aiortc_glue.sender_ssrc(t.sender), pts)

        @pc.on("connectionstatechange")
        async def connected() -> None:
            if pc.connectionState == "connected":
                pub.subscribers[session] = outs
                # ask the publisher for a keyframe so the new viewer can start decoding
                receiver, ssrc = pub.receivers.get("video"), pub.ssrcs.get("video")
                if receiver is not None and ssrc is not None:
                    await aiortc_glue.request_keyframe(receiver, ssrc)

        self.sessions[session] = (pc, None)
        pub.subscribers.pop(session, None)
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers={"Location": f"/whep/{room}/{target}/{session}"})

    async def delete(self, request: web.Request) -> web.Response:
        session = request.match_info["session"]
        pc, key = self.sessions.pop(session, (None, None))
        if pc is None:
            raise web.HTTPNotFound()
        for pub in self.publishers.values():
            pub.subscribers.pop(session, None)
        if key is not None:
            self.publishers.pop(key, None)
        await pc.close()
        return web.Response(status=200)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8090)
    # aiohttp's default. With uvloop this SFU's latency grew to seconds at low CPU in our runs
    # (UDP sends stalling and bursting), so the baseline uses what a Python developer gets by default.
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio's loop")
    args = ap.parse_args()
    # aioice leaves loopback out of its host candidates; announce the address we serve on.
    aiortc_glue.use_host_addresses(lambda use_ipv4, use_ipv6: [args.host])
    sfu = Sfu()
    app = web.Application()
    app.router.add_post("/whip/{room}", sfu.whip)
    app.router.add_post("/whep/{room}/{identity}", sfu.whep)
    app.router.add_delete("/whip/{room}/{session}", sfu.delete)
    app.router.add_delete("/whep/{room}/{identity}/{session}", sfu.delete)
    app.router.add_get("/healthz", sfu.healthz)
    if args.uvloop:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
