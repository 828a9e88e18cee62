"""Consent over the room protocol when a participant leaves (and rejoins) a visit being recorded or asked."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from mediasrv.api import appkeys as keys
from mediasrv.rooms import RoomOptions


async def _join(server: Any, room: str, identity: str, role: str) -> tuple[aiohttp.ClientSession, Any, list[Any]]:
    """Joins; also returns what came before the `joined` reply (a consent request may: it is sent
    as the participant enters the room)."""
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(f"{server.url}/rooms/{room}/ws")
    await ws.send_json({"type": "join", "token": server.token(identity, role, room), "request_id": "j"})
    before = []
    async with asyncio.timeout(5):
        while (msg := await ws.receive_json())["type"] != "joined":
            before.append(msg)
    assert msg["identity"] == identity
    return session, ws, before


async def _next(ws: Any, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next message of type `kind` (others skipped); fails if none comes within `timeout`."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive_json()
            if msg["type"] == kind:
                return msg


async def test_a_participant_who_rejoins_a_recorded_visit_is_asked_again(server: Any) -> None:
    server.rooms.create("visit-rj", RoomOptions(recording_allowed=True))
    recording = server.rooms.get("visit-rj").recording
    s_dr, dr, _ = await _join(server, "visit-rj", "dr", "clinician")
    s_pat, pat, _ = await _join(server, "visit-rj", "pat", "patient")
    await dr.send_json({"type": "start_recording", "request_id": "s"})
    assert (await _next(dr, "recording_status"))["waiting_for"] == ["pat"]
    assert (await _next(pat, "recording_consent_request"))["recording"] is False
    await pat.send_json({"type": "recording_consent", "granted": True})
    await _next(pat, "recording_started")
    assert recording.running and recording.consent.state.may_record("pat")

    await pat.send_json({"type": "leave"})
    await s_pat.close()
    await _next(dr, "participant_left")
    s_pat, pat, before = await _join(server, "visit-rj", "pat", "patient")
    asked = next((m for m in before if m["type"] == "recording_consent_request"), None) \
        or await _next(pat, "recording_consent_request")
    assert asked == {"type": "recording_consent_request", "by": "dr", "recording": True}
    assert not recording.consent.state.may_record("pat"), "not recorded until they answer again"
    assert recording.status()["waiting_for"] == ["pat"]
    await pat.send_json({"type": "recording_consent", "granted": True, "request_id": "c"})
    assert (await _next(pat, "recording_status"))["waiting_for"] == []
    assert recording.running and recording.consent.state.may_record("pat")
    store, rid = server.rooms.recording_store, recording.recording_id
    assert await store.visible_to(rid, "dr") and await store.visible_to(rid, "pat"), "participants kept"
    assert not await store.visible_to(rid, "dr-elsewhere")
    await s_pat.close()
    await s_dr.close()


async def _until(ws: Any, kind: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every message up to and including the next one of type `kind`."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while not seen or seen[-1]["type"] != kind:
            seen.append(await ws.receive_json())
    return seen


async def test_the_last_unanswered_participant_leaving_starts_the_recording(server: Any) -> None:
    """The interpreter never answers and leaves; the patient granted: the recording starts as the
    clinician asked — everyone still there gets the indicator (after `participant_left`), it is
    audited, and the interpreter is not among the recording's participants."""
    server.rooms.create("visit-lv", RoomOptions(recording_allowed=True))
    recording = server.rooms.get("visit-lv").recording
    s_dr, dr, _ = await _join(server, "visit-lv", "dr", "clinician")
    s_pat, pat, _ = await _join(server, "visit-lv", "pat", "patient")
    s_int, interp, _ = await _join(server, "visit-lv", "interp", "guest")
    await dr.send_json({"type": "start_recording", "request_id": "s"})
    assert (await _next(dr, "recording_status"))["waiting_for"] == ["interp", "pat"]
    await _next(interp, "recording_consent_request")
    await pat.send_json({"type": "recording_consent", "granted": True, "request_id": "c"})
    assert (await _next(pat, "recording_status"))["waiting_for"] == ["interp"]
    assert not recording.running

    await interp.send_json({"type": "leave"})
    await s_int.close()
    seen = [m["type"] for m in await _until(dr, "recording_started")]
    assert "participant_left" in seen and seen.index("participant_left") < seen.index("recording_started")
    started = await _next(pat, "recording_started")
    assert recording.running and started["recording_id"] == recording.recording_id
    audit = await server.app[keys.AUDIT].query(action="recording_start", room="visit-lv", limit=10)
    assert len(audit) == 1 and audit[0]["actor"] == "dr"
    store, rid = server.rooms.recording_store, recording.recording_id
    assert await store.visible_to(rid, "pat") and not await store.visible_to(rid, "interp")
    await dr.send_json({"type": "stop_recording", "request_id": "x"})
    await _next(pat, "recording_stopped")
    await s_pat.close()
    await s_dr.close()
