"""A recorded message is created only when something was recorded: a sender who ends the session
before any media, or whose connection goes while the recording is starting, leaves no empty message
(and no room or recorder behind)."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiortc import RTCPeerConnection

from mediasrv.api import appkeys as keys
from mediasrv.api.whip_whep import MESSAGE_ROOM_PREFIX
from mediasrv.media.host_addresses import configure_host_addresses

configure_host_addresses(["127.0.0.1"])


async def _offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def _post_message(server: Any, sender: str, recipient: str) -> tuple[int, Any, str | None]:
    pc, sdp = await _offer()
    try:
        headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {server.token(sender, 'patient')}"}
        async with aiohttp.ClientSession() as s, \
                s.post(f"{server.url}/whip/messages/{recipient}", data=sdp, headers=headers) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body, r.headers.get("Location")
    finally:
        await pc.close()


async def _inbox(server: Any, recipient: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {server.token(recipient, 'clinician')}"}
    async with aiohttp.ClientSession() as s, s.get(f"{server.url}/v1/messages", headers=headers) as r:
        assert r.status == 200
        return (await r.json())["messages"]


def _message_rooms(server: Any) -> list[str]:
    return [name for name in server.rooms.rooms if name.startswith(MESSAGE_ROOM_PREFIX)]


async def test_a_sender_who_ends_before_any_media_leaves_no_message(server: Any) -> None:
    status, _, location = await _post_message(server, "pat-q", "dr-inbox")
    assert status == 201 and location is not None
    headers = {"Authorization": f"Bearer {server.token('pat-q', 'patient')}"}
    async with aiohttp.ClientSession() as s, s.delete(server.url + location, headers=headers) as r:
        assert r.status == 200
    assert await _inbox(server, "dr-inbox") == [], "no message without a recording"
    audit = await server.app[keys.AUDIT].query(action="message.not_created", limit=10)
    assert len(audit) == 1 and audit[0]["actor"] == "pat-q"
    assert _message_rooms(server) == []


async def test_a_sender_gone_while_the_recording_starts_leaves_no_message_and_nothing_running(server: Any) -> None:
    store = server.rooms.recording_store
    create = store.create
    started: list[str] = []

    async def create_while_the_sender_goes(room: str, started_by: str, visit: str | None = None) -> str:
        rid = await create(room, started_by, visit=visit)
        started.append(rid)
        # The sender's connection fails while the recording row is being written.
        await server.rooms.get(room).leave(started_by, reason="connection_lost")
        return rid

    store.create = create_while_the_sender_goes
    status, body, _ = await _post_message(server, "pat-r", "dr-inbox2")
    assert (status, body["error"]["code"]) == (409, "sender_gone")
    assert await _inbox(server, "dr-inbox2") == []
    assert _message_rooms(server) == [], "the private room is closed, its recorder with it"
    (rid,) = started
    assert (await store.get(rid))["state"] == "cancelled"
