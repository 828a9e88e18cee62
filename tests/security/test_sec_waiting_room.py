"""The waiting room shows nothing of the visit: a participant not yet admitted learns no identities,
names, tracks, chat or recording events; once admitted it is given the visit's current state."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection

from mediasrv.auth import Identity
from mediasrv.media.host_addresses import configure_host_addresses
from mediasrv.rooms import RoomOptions

configure_host_addresses(["127.0.0.1"])


async def _join(server: Any, room: str, identity: str, role: str, name: str) -> tuple[Any, Any, dict[str, Any]]:
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(f"{server.url}/rooms/{room}/ws")
    token = server.token(identity, role, room, name=name)
    await ws.send_json({"type": "join", "token": token, "request_id": "j"})
    return session, ws, await ws.receive_json()


async def _until(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        msg = await asyncio.wait_for(ws.receive_json(), 10)
        if msg["type"] == kind:
            return msg


async def _publish(ws: Any) -> tuple[RTCPeerConnection, list[dict[str, Any]]]:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    await ws.send_json({"type": "publish", "sdp": pc.localDescription.sdp, "request_id": "p"})
    answer = await _until(ws, "publish_answer")
    return pc, answer["tracks"]


async def test_a_waiting_patient_learns_nothing_until_admitted(server: Any) -> None:
    server.rooms.create("visit", RoomOptions(waiting_room=True))
    s1, dr, _ = await _join(server, "visit", "dr-lee", "clinician", "Dr Lee")
    pc, tracks = await _publish(dr)
    s2, pat, joined = await _join(server, "visit", "pat-ana", "patient", "Ana")
    assert joined["type"] == "joined" and joined["admitted"] is False
    assert joined["participants"] == [] and joined["tracks"] == []
    assert (await pat.receive_json())["type"] == "waiting"
    assert (await _until(dr, "participant_waiting"))["participant"]["identity"] == "pat-ana"

    # While the patient waits: another clinician joins, the clinician chats and publishes more.
    s3, nurse, _ = await _join(server, "visit", "rn-kim", "clinician", "Nurse Kim")
    await dr.send_json({"type": "chat", "text": "the patient is next"})
    await _until(nurse, "chat")
    await nurse.send_json({"type": "ping", "request_id": "sync"})
    await _until(nurse, "pong")

    await server.rooms.get("visit").admit("pat-ana", Identity("dr-lee", "clinician", "visit", "Dr Lee", 0))
    # The first thing the patient hears after `waiting` is its admission, carrying the visit.
    admitted = await asyncio.wait_for(pat.receive_json(), 10)
    assert admitted["type"] == "admitted", admitted
    assert sorted((p["identity"], p["name"]) for p in admitted["participants"]) == [
        ("dr-lee", "Dr Lee"), ("rn-kim", "Nurse Kim")]
    assert [t["id"] for t in admitted["tracks"]] == [t["id"] for t in tracks]
    # and its subscriber connection is offered the clinician's track
    offer = await _until(pat, "offer")
    assert [t["id"] for t in offer["tracks"].values()] == [t["id"] for t in tracks]
    # from now on it hears the visit
    await dr.send_json({"type": "chat", "text": "welcome"})
    assert (await _until(pat, "chat"))["text"] == "welcome"
    await pc.close()
    for s in (s1, s2, s3):
        await s.close()


async def test_a_waiting_patient_gets_no_events_of_people_coming_and_going(server: Any) -> None:
    server.rooms.create("visit2", RoomOptions(waiting_room=True))
    s1, dr, _ = await _join(server, "visit2", "dr-lee", "clinician", "Dr Lee")
    s2, pat, _ = await _join(server, "visit2", "pat-ana", "patient", "Ana")
    assert (await pat.receive_json())["type"] == "waiting"
    s3, guest, joined = await _join(server, "visit2", "guest-1", "guest", "Guest")
    assert joined["participants"] == []
    s4, nurse, _ = await _join(server, "visit2", "rn-kim", "clinician", "Nurse Kim")
    await nurse.close()
    await s4.close()
    await _until(dr, "participant_left")
    await pat.send_json({"type": "ping", "request_id": "sync"})
    assert (await asyncio.wait_for(pat.receive_json(), 10))["type"] == "pong"
    for s in (s1, s2, s3):
        await s.close()


async def test_an_admitted_patient_who_drops_is_not_kept_waiting_again_but_a_removed_one_is(server: Any) -> None:
    """An outage drops the patient; joining again (the demo page does so by itself) it goes
    straight back into the visit the clinician let it into. Removed by the clinician, it waits
    again, like anyone the clinician has not let in."""
    server.rooms.create("visit3", RoomOptions(waiting_room=True))
    s1, dr, _ = await _join(server, "visit3", "dr-lee", "clinician", "Dr Lee")
    s2, pat, joined = await _join(server, "visit3", "pat-ana", "patient", "Ana")
    assert joined["admitted"] is False
    lee = Identity("dr-lee", "clinician", "visit3", "Dr Lee", 0)
    await server.rooms.get("visit3").admit("pat-ana", lee)
    await _until(dr, "participant_joined")
    await s2.close()  # the socket gone without a close frame
    assert (await _until(dr, "participant_left"))["reason"] == "disconnected"

    s3, pat, joined = await _join(server, "visit3", "pat-ana", "patient", "Ana")
    assert joined["type"] == "joined" and joined["admitted"] is True
    assert joined["participants"], "given the visit's state at once"
    assert (await _until(dr, "participant_joined"))["participant"]["identity"] == "pat-ana"

    await server.rooms.get("visit3").remove("pat-ana", lee)
    assert (await _until(dr, "participant_left"))["reason"] == "removed"
    s4, pat, joined = await _join(server, "visit3", "pat-ana", "patient", "Ana")
    assert joined["admitted"] is False
    assert (await pat.receive_json())["type"] == "waiting"
    for s in (s1, s3, s4):
        await s.close()
