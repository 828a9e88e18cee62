"""How simulated clients negotiate with a server. Each dialect does the whole offer/answer on an
aiortc peer connection: WHIP/WHEP (mediasrv, the aiortc baseline) and Janus's VideoRoom over its
REST API (see `janus.py`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urljoin

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

from mediasrv.auth import mint_token

TOKEN_TTL_S = 3600


class SignalingError(RuntimeError):
    """The server refused or failed a negotiation step; the message has the HTTP status and body."""


@dataclass
class Session:
    """A negotiated connection the server knows about; `close` ends it."""

    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    # Seconds the offer's HTTP exchange took as the client saw it (request sent to answer read),
    # where one request carries the negotiation (WHIP/WHEP): the server's share of setup.
    http_s: float | None = None


class Signaling(Protocol):
    name: str

    async def publish(self, pc: RTCPeerConnection, room: str, identity: str) -> Session: ...

    async def subscribe(self, pc: RTCPeerConnection, room: str, viewer: str, target: str) -> Session: ...

    async def close(self, session: Session) -> None: ...

    async def aclose(self) -> None: ...


async def local_offer(pc: RTCPeerConnection) -> str:
    # aiortc gathers all candidates inside setLocalDescription, so the SDP is complete.
    await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp


MAX_REDIRECTS = 3


class WhipWhep:
    """RFC 9725 WHIP for publishers, WHEP for subscribers, bearer tokens minted from the secret."""

    name = "whip"

    def __init__(self, base_url: str, api_secret: str | None) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.api_secret = api_secret
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    def _headers(self, room: str, identity: str, role: str) -> dict[str, str]:
        h = {"Content-Type": "application/sdp"}
        if self.api_secret:
            token = mint_token(self.api_secret, identity=identity, role=role, room=room, ttl_s=TOKEN_TTL_S)
            h["Authorization"] = f"Bearer {token}"
        return h

    async def _exchange(self, pc: RTCPeerConnection, path: str, headers: dict[str, str]) -> Session:
        offer = await local_offer(pc)
        url = urljoin(self.base_url, path)
        sent = time.monotonic()
        # A cluster's entry node sends a room it does not serve to its owner (307). Followed here, not
        # by aiohttp, which drops the Authorization header on a redirect to another host.
        for _ in range(MAX_REDIRECTS + 1):
            async with self.http.post(url, data=offer.encode(), headers=headers, allow_redirects=False) as r:
                body = await r.text()
                location = r.headers.get("Location")
                if r.status in (307, 308) and location:
                    url = urljoin(url, location)
                    continue
                if r.status != 201:
                    raise SignalingError(f"POST {path}: {r.status} {body[:200]}")
                break
        else:
            raise SignalingError(f"POST {path}: more than {MAX_REDIRECTS} redirects")
        http_s = time.monotonic() - sent
        await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        auth = {k: v for k, v in headers.items() if k == "Authorization"}
        return Session(url=urljoin(url, location) if location else None, headers=auth, http_s=http_s)

    async def publish(self, pc: RTCPeerConnection, room: str, identity: str) -> Session:
        return await self._exchange(pc, f"whip/{room}", self._headers(room, identity, "patient"))

    async def subscribe(self, pc: RTCPeerConnection, room: str, viewer: str, target: str) -> Session:
        for kind in ("audio", "video"):
            pc.addTransceiver(kind, direction="recvonly")
        return await self._exchange(pc, f"whep/{room}/{target}", self._headers(room, viewer, "observer"))

    async def close(self, session: Session) -> None:
        if session.url:
            try:
                async with self.http.delete(session.url, headers=session.headers) as r:
                    await r.read()
            except aiohttp.ClientError:
                pass  # the server may already be gone; teardown must not fail

    async def aclose(self) -> None:
        await self.http.close()
