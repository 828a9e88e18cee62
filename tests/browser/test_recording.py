"""A consented browser visit is recorded without transcoding, and refusals are enforced."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import av
import pytest

from mediasrv.api import appkeys as keys
from mediasrv.rooms import RoomOptions

from .conftest import eventually, open_demo

pytestmark = pytest.mark.browser
RECORD_S = 20


async def _events(page, kind):
    return await page.evaluate(f"window.demo.events.filter((e) => e.type === '{kind}')")


async def test_a_consented_visit_is_recorded(server, browser):
    server.rooms.create("rec-1", RoomOptions(recording_allowed=True))
    clinician = await open_demo(browser, server, "rec-1", "dr-r", "clinician")
    patient = await open_demo(browser, server, "rec-1", "pat-r", "patient")
    status = await clinician.evaluate("window.demo.room.request({type: 'start_recording'})")
    assert status["recording"] is False and status["waiting_for"] == ["pat-r"]
    await eventually(lambda: _events(patient, "recording_consent_request"), timeout=10, what="consent asked")
    await patient.evaluate("window.demo.room.request({type: 'recording_consent', granted: true})")
    started = await eventually(lambda: _events(clinician, "recording_started"), timeout=10, what="started")
    assert await _events(patient, "recording_started"), "everyone sees the recording indicator"
    await asyncio.sleep(RECORD_S)
    await clinician.evaluate("window.demo.room.send({type: 'stop_recording'})")
    await eventually(lambda: _events(patient, "recording_stopped"), timeout=30, what="stopped")

    # Every track was placed from the publisher's RTCP sender reports, none by arrival time.
    stats = server.rooms.get("rec-1").recording.last_stats
    assert stats["tracks_aligned_by_sender_report"] == stats["tracks"] == 4, stats
    assert stats["tracks_aligned_by_arrival"] == 0, stats
    store = server.rooms.recording_store
    rec = await store.get(started[0]["recording_id"])
    assert rec["state"] == "ready"
    files = rec["files"]
    assert {(f["participant"], f["kind"]) for f in files} == {
        ("dr-r", "audio"), ("dr-r", "video"), ("pat-r", "audio"), ("pat-r", "video")}
    blobs = server.app[keys.BLOBS]
    starts, lengths = {}, {}
    for f in files:
        data = await asyncio.to_thread(blobs.read_bytes, f["blob_id"])
        assert data[:4] == b"\x1a\x45\xdf\xa3"  # EBML: WebM / Matroska
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams[0]
            decoded = sum(1 for _ in container.decode(stream))  # every frame decodes
            assert decoded == f["frames"] > 0, f
        # Each file runs to the stop. It starts at the first keyframe after the start (audio
        # follows its participant's video): the keyframe asked for at the start may take a couple
        # of seconds on a loaded machine, so the start is bounded, not exact.
        assert abs(f["end_s"] - RECORD_S) < 1.5, f
        assert 0 <= f["start_s"] < 4, f
        starts[(f["participant"], f["kind"])] = f["start_s"]
        lengths[(f["participant"], f["kind"])] = f["end_s"] - f["start_s"]
    # Each file starts at its first frame after the start: audio and video of one participant
    # begin within a few packet intervals (Chromium's Opus may be in DTX silence, the first
    # video frame kept waits for a keyframe); their clocks come from the sender reports above.
    for who in ("dr-r", "pat-r"):
        assert abs(starts[(who, "audio")] - starts[(who, "video")]) < 0.25, starts
        assert abs(lengths[(who, "audio")] - lengths[(who, "video")]) < 0.5, lengths
    # Downloads go through the control API, audited.
    admin = {"Authorization": f"Bearer {server.token('ops', 'admin')}"}
    async with aiohttp.ClientSession() as s:
        url = f"{server.url}/v1/recordings/{rec['id']}/files/{files[0]['blob_id']}"
        async with s.get(url, headers={**admin, "Range": "bytes=0-3"}) as r:
            assert r.status == 206 and await r.read() == b"\x1a\x45\xdf\xa3"
        async with s.get(url, headers={"Authorization": f"Bearer {server.token('pat-r', 'patient', 'rec-1')}"}) as r:
            assert r.status == 403
    await patient.context.close()
    await clinician.context.close()


async def test_recording_needs_everyones_consent(server, browser):
    server.rooms.create("rec-2", RoomOptions(recording_allowed=True))
    clinician = await open_demo(browser, server, "rec-2", "dr-q", "clinician")
    patient = await open_demo(browser, server, "rec-2", "pat-q", "patient")
    admin = {"Authorization": f"Bearer {server.token('ops', 'admin')}"}
    async with aiohttp.ClientSession() as s, \
            s.post(f"{server.url}/v1/rooms/rec-2/recording", headers=admin) as r:
        body = await r.json()
        assert r.status == 409 and body["error"]["code"] == "consent_missing"
        assert "pat-q" in body["error"]["message"] and "dr-q" in body["error"]["message"]
    await eventually(lambda: _events(patient, "recording_consent_request"), timeout=10, what="asked")
    await patient.evaluate("window.demo.room.request({type: 'recording_consent', granted: false})")
    refused = await eventually(lambda: _events(clinician, "recording_refused"), timeout=10, what="refusal")
    assert refused[0]["refused_by"] == ["pat-q"]
    assert not server.rooms.get("rec-2").recording.running
    # a room that does not allow recording refuses at once
    server.rooms.create("rec-3")
    c3 = await open_demo(browser, server, "rec-3", "dr-z", "clinician")
    err = await c3.evaluate(
        "window.demo.room.request({type: 'start_recording'}).then(() => null, (e) => e.code)")
    assert err == "recording_not_allowed"
    for page in (patient, clinician, c3):
        await page.context.close()
