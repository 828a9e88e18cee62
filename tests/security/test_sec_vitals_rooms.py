"""Vitals uploads cannot write into the series of a room the token is not for."""

from __future__ import annotations

from mediasrv.vitals.envelope import build_upload, encode

HR = encode("heart_rate", bytes([0x00, 61]))


async def _room_series(srv, room: str) -> list:
    r = await srv.request("GET", f"/v1/rooms/{room}/vitals", who=("dr", "clinician", room))
    assert r.status == 200
    return (await r.json())["readings"]


async def test_messaging_token_of_a_patient_cannot_write_into_a_visit(srv) -> None:
    r = await srv.request("POST", "/v1/vitals", who=("pat", "patient"),
                          json=build_upload([HR], room="someone-elses-visit"))
    assert r.status == 403
    assert (await r.json())["error"]["code"] == "wrong_room"
    assert await _room_series(srv, "someone-elses-visit") == []


async def test_messaging_token_uploads_outside_any_room_and_room_tokens_into_their_room(srv) -> None:
    r = await srv.request("POST", "/v1/vitals", who=("pat", "patient"), json=build_upload([HR]))
    assert r.status == 201
    r = await srv.request("POST", "/v1/vitals", who=("pat", "patient", "v1"),
                          json=build_upload([HR], room="v1"))
    assert r.status == 201
    assert len(await _room_series(srv, "v1")) == 1
    r = await srv.request("POST", "/v1/vitals", who=("pat", "patient", "v1"),
                          json=build_upload([HR], room="v2"))
    assert r.status == 403
