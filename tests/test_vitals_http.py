"""Vitals over HTTP: asynchronous uploads, the visit's series as JSON and FHIR, authorization, and
encryption at rest."""

from __future__ import annotations

import sqlite3

import aiohttp
import pytest

from mediasrv.vitals.envelope import build_upload, encode

HR = encode("heart_rate", bytes([0x00, 61]), device_time_ms=1_790_000_000_000)
TEMP = encode("temperature", bytes([0x00, 0x6E, 0x01, 0x00, 0xFF]))  # 36.6 Cel (366 × 10^-1)


async def _req(method, url, token=None, json=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.request(method, url, json=json, headers=headers) as r:
        return r.status, await r.json()


async def test_upload_then_read_back_as_fhir(server):
    # Readings for a room belong to one of its visits: the room is open.
    status, _ = await _req("POST", f"{server.url}/v1/rooms", server.token("ops", "admin"), {"name": "visit9"})
    assert status == 201
    patient = server.token("pat-9", "patient", "visit9")
    status, body = await _req("POST", f"{server.url}/v1/vitals", patient,
                              build_upload([HR, TEMP], room="visit9"))
    assert (status, body) == (201, {"stored": 2})
    clinician = server.token("dr-9", "clinician", "visit9")
    status, series = await _req("GET", f"{server.url}/v1/rooms/visit9/vitals", clinician)
    assert status == 200
    assert [(r["patient"], r["kind"]) for r in series["readings"]] == [("pat-9", "heart_rate"),
                                                                         ("pat-9", "temperature")]
    assert series["readings"][1]["reading"]["temperature"] == pytest.approx(36.6)
    status, bundle = await _req("GET", f"{server.url}/v1/rooms/visit9/vitals?format=fhir", clinician)
    assert status == 200 and bundle["resourceType"] == "Bundle" and bundle["total"] == 2
    codes = {e["resource"]["code"]["coding"][0]["code"] for e in bundle["entry"]}
    assert codes == {"8867-4", "8310-5"}
    from fhir.resources.R4B.bundle import Bundle

    Bundle.model_validate(bundle)

    # Stored encrypted: the database file holds no reading in clear.
    db = sqlite3.connect(server.settings.data_dir / "mediasrv.sqlite3")
    blobs = [row[0] for row in db.execute("SELECT sealed FROM vitals_readings")]
    assert len(blobs) == 2 and all(b"heart_rate_bpm" not in b and b"36.6" not in b for b in blobs)
    # The audit log says who read and uploaded, with counts only.
    audit = [tuple(r) for r in db.execute("SELECT actor, action, detail FROM audit_log")]
    assert ("pat-9", "vitals_upload", '{"count": 2}') in audit
    assert any(a[:2] == ("dr-9", "vitals_read") for a in audit)


@pytest.mark.parametrize(
    "who, body, status, code",
    [
        (("pat-1", "patient", "r1"), {"patient": "someone-else", "room": "r1"}, 403, "forbidden"),
        (("obs", "observer", "r1"), {"patient": "pat-1", "room": "r1"}, 403, "forbidden"),
        (("dr", "clinician", "r1"), {"patient": "pat-1", "room": "r2"}, 403, "forbidden"),
        (("pat-1", "patient", "r1"), {"room": "r1", "envelopes": ["***"]}, 400, "invalid_upload"),
        (("pat-1", "patient", "r1"), {"room": "r1", "envelopes": []}, 400, "invalid_upload"),
    ],
)
async def test_upload_refusals(server, who, body, status, code):
    identity, role, room = who
    payload = {**build_upload([HR]), **body}
    got, err = await _req("POST", f"{server.url}/v1/vitals", server.token(identity, role, room), payload)
    assert (got, err["error"]["code"]) == (status, code)


async def test_undecodable_payload_stores_nothing(server):
    bad = encode("heart_rate", bytes([0x01, 61]))  # flags announce a 16-bit value, 8 bits follow
    token = server.token("pat-2", "patient", "r1")
    status, err = await _req("POST", f"{server.url}/v1/vitals", token, build_upload([HR, bad], room="r1"))
    assert status == 400 and err["error"]["code"] == "invalid_envelopes" and "#1" in err["error"]["message"]
    status, series = await _req("GET", f"{server.url}/v1/rooms/r1/vitals", server.token("dr", "clinician", "r1"))
    assert series["readings"] == []


async def test_reading_the_series_needs_a_clinician_of_that_room(server):
    for token, status in [(server.token("pat", "patient", "r1"), 403),
                          (server.token("dr", "clinician", "r2"), 403), (None, 401),
                          (server.token("ops", "admin"), 200)]:
        got, _ = await _req("GET", f"{server.url}/v1/rooms/r1/vitals", token)
        assert got == status
