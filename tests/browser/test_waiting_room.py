"""The waiting room is enforced in the media plane: until a clinician admits the patient, neither side
receives the other's media; after admission both decode."""

from __future__ import annotations

import asyncio

import pytest

from mediasrv.auth import Identity
from mediasrv.rooms import RoomOptions

from .conftest import eventually, inbound, open_demo

pytestmark = pytest.mark.browser


async def test_patient_waits_until_admitted(server, browser):
    room = server.rooms.create("clinic-7", RoomOptions(waiting_room=True))
    clinician = await open_demo(browser, server, "clinic-7", "dr-w", "clinician")
    patient = await open_demo(browser, server, "clinic-7", "pat-w", "patient")
    waiting = await eventually(
        lambda: clinician.evaluate("window.demo.events.filter((e) => e.type === 'participant_waiting')"),
        timeout=10, what="participant_waiting event")
    assert waiting[0]["participant"]["identity"] == "pat-w"
    assert (await patient.evaluate("window.demo.joined"))["admitted"] is False
    await asyncio.sleep(3)  # both publish meanwhile; nothing may flow either way
    assert await patient.evaluate("window.demo.room.remoteTracks.size") == 0
    assert await clinician.evaluate("window.demo.room.remoteTracks.size") == 0
    assert room.router.stats()["rtp_packets_out"] == 0
    assert room.router.stats()["rtp_packets_in"] > 0  # the patient's media reached the server

    clinician_ident = Identity(sub="dr-w", role="clinician", room="clinic-7", name=None, exp=0)
    assert await room.admit("pat-w", clinician_ident)

    async def decoding(page):
        v = (await inbound(page))["video"]
        return v and v["framesDecoded"] > 10

    await eventually(lambda: decoding(patient), timeout=30, what="patient decoding after admit")
    await eventually(lambda: decoding(clinician), timeout=30, what="clinician decoding after admit")
    events = await patient.evaluate("window.demo.events.map((e) => e.type)")
    assert "admitted" in events
    await patient.context.close()
    await clinician.context.close()
    await server.rooms.close("clinic-7", "done")
