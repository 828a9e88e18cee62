"""Recorded messages: one sender may leave only `max_message_sessions_per_sender` at once (each is a
peer connection, a private room and a recorder); more is 429 too_many_sessions."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection

from mediasrv.media.host_addresses import configure_host_addresses

configure_host_addresses(["127.0.0.1"])


async def _post(server: Any, sender: str, sdp: str) -> tuple[int, Any, str | None]:
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {server.token(sender, 'patient')}"}
    async with aiohttp.ClientSession() as s, \
            s.post(f"{server.url}/whip/messages/dr-inbox", data=sdp, headers=headers) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body, r.headers.get("Location")


async def test_one_sender_cannot_open_unbounded_message_sessions(server: Any) -> None:
    limit = server.settings.max_message_sessions_per_sender
    assert limit == 2
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    results = [await _post(server, "pat-m", sdp) for _ in range(limit + 1)]
    assert [r[0] for r in results] == [201] * limit + [429]
    assert results[-1][1]["error"]["code"] == "too_many_sessions"
    # another sender is not affected
    status, _, other = await _post(server, "pat-n", sdp)
    assert status == 201
    # ending one of them makes room for another
    headers = {"Authorization": f"Bearer {server.token('pat-m', 'patient')}"}
    async with aiohttp.ClientSession() as s, s.delete(server.url + results[0][2], headers=headers) as r:
        assert r.status == 200
    assert (await _post(server, "pat-m", sdp))[0] == 201
    await pc.close()


async def test_concurrent_requests_do_not_pass_the_limit_together(server: Any) -> None:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    results = await asyncio.gather(*(_post(server, "pat-c", pc.localDescription.sdp) for _ in range(5)))
    assert sorted(r[0] for r in results) == [201, 201, 429, 429, 429]
    await pc.close()
