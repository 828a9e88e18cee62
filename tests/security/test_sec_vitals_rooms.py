"""Vitals uploads cannot write into the series of a room the token is not for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ctl_helpers import Server, make_settings

from mediasrv.vitals.envelope import build_upload, encode

HR = encode("heart_rate", bytes([0x00, 61]))


@pytest.fixture
async def srv(tmp_path: Path, database_url: str) -> AsyncIterator[Server]:
    """Visits, vitals, recordings and the audit log on both engines (SQLite, PostgreSQL)."""
    srv = Server(make_settings(tmp_path / "data", database_url=database_url))
    await srv.start()
    yield srv
    await srv.stop()


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
    assert (await srv.request("POST", "/v1/rooms", who=("root", "admin"), json={"name": "v1"})).status == 201
    r = await srv.request("POST", "/v1/vitals", who=("pat", "patient", "v1"),
                          json=build_upload([HR], room="v1"))
    assert r.status == 201
    assert len(await _room_series(srv, "v1")) == 1
    r = await srv.request("POST", "/v1/vitals", who=("pat", "patient", "v1"),
                          json=build_upload([HR], room="v2"))
    assert r.status == 403


# --- readings are kept per visit: a later visit under the same room name sees none of an earlier one's

ADMIN = ("root", "admin")


async def _minted(srv, identity: str, role: str, room: str) -> dict:
    r = await srv.request("POST", "/v1/tokens", who=ADMIN, json={"identity": identity, "role": role, "room": room})
    assert r.status == 201
    return await r.json()


async def _read(srv, room: str, token: str, query: str = ""):
    assert srv.session is not None
    return await srv.session.get(f"/v1/rooms/{room}/vitals{query}", headers={"Authorization": f"Bearer {token}"})


async def _upload(srv, room: str, token: str) -> None:
    assert srv.session is not None
    async with srv.session.post("/v1/vitals", json=build_upload([HR], room=room),
                                headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 201


async def test_a_later_visit_of_a_configured_room_does_not_read_an_earlier_patients_vitals(srv) -> None:
    first = await (await srv.request("POST", "/v1/rooms", who=ADMIN, json={"name": "clinic"})).json()
    patient = await _minted(srv, "pat-ana", "patient", "clinic")
    await _upload(srv, "clinic", patient["token"])
    earlier_doctor = await _minted(srv, "dr-lee", "clinician", "clinic")
    assert (await srv.request("DELETE", "/v1/rooms/clinic", who=ADMIN)).status == 204
    second = await (await srv.request("POST", "/v1/rooms", who=ADMIN, json={"name": "clinic"})).json()
    assert second["visit_id"] != first["visit_id"]
    later = await _minted(srv, "dr-lee", "clinician", "clinic")

    r = await _read(srv, "clinic", later["token"])
    assert r.status == 200 and (await r.json())["readings"] == []
    r = await _read(srv, "clinic", later["token"], f"?visit={first['visit_id']}")
    assert r.status == 403 and (await r.json())["error"]["code"] == "wrong_visit"
    # The earlier visit's own clinician still reads it, after the room closed.
    r = await _read(srv, "clinic", earlier_doctor["token"])
    readings = (await r.json())["readings"]
    assert [x["visit"] for x in readings] == [first["visit_id"]]

    # Admins read every visit of the name, or pick one.
    admin = srv.token("root", "admin")
    assert len((await (await _read(srv, "clinic", admin)).json())["readings"]) == 1
    r = await _read(srv, "clinic", admin, f"?visit={second['visit_id']}")
    assert (await r.json())["readings"] == []
    r = await _read(srv, "clinic", admin, f"?visit={first['visit_id']}&format=fhir")
    assert r.status == 200 and len((await r.json())["entry"]) == 1
    assert (await _read(srv, "clinic", admin, "?visit=a%20b")).status == 400


async def test_an_ad_hoc_room_recreated_after_it_emptied_is_a_new_visit(srv) -> None:
    import asyncio

    import aiohttp

    patient = srv.token("pat-ana", "patient", "walkin")
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{srv.url}/rooms/walkin/ws") as ws:
        await ws.send_json({"type": "join", "token": patient, "request_id": "j"})
        assert (await ws.receive_json())["type"] == "joined"
        await _upload(srv, "walkin", patient)
    room = srv.app[__import__("mediasrv.api.appkeys", fromlist=["ROOMS"]).ROOMS]
    for _ in range(100):  # the room closes once its last participant has left
        if room.get("walkin") is None:
            break
        await asyncio.sleep(0.02)
    assert room.get("walkin") is None
    await asyncio.sleep(0.01)
    later = srv.token("dr-kim", "clinician", "walkin")
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{srv.url}/rooms/walkin/ws") as ws:
        await ws.send_json({"type": "join", "token": later, "request_id": "j"})
        assert (await ws.receive_json())["type"] == "joined"
        r = await _read(srv, "walkin", later)
        assert r.status == 200 and (await r.json())["readings"] == []
    r = await _read(srv, "walkin", srv.token("root", "admin"))
    assert len((await r.json())["readings"]) == 1


async def test_audit_entries_of_a_visit_carry_its_visit_id(srv) -> None:
    created = await (await srv.request("POST", "/v1/rooms", who=ADMIN, json={"name": "audited"})).json()
    patient = await _minted(srv, "pat-ana", "patient", "audited")
    await _upload(srv, "audited", patient["token"])
    r = await srv.request("GET", "/v1/audit?action=vitals_upload", who=ADMIN)
    entries = (await r.json())["entries"]
    assert entries and entries[0]["visit"] == created["visit_id"] and entries[0]["room"] == "audited"
    assert (await srv.request("DELETE", "/v1/rooms/audited", who=ADMIN)).status == 204
    r = await srv.request("GET", f"/v1/audit?visit={created['visit_id']}", who=ADMIN)
    assert {e["action"] for e in (await r.json())["entries"]} == {"room.created", "vitals_upload", "room.closed"}
    r = await srv.request("GET", "/v1/audit?visit=another", who=ADMIN)
    assert (await r.json())["entries"] == []


async def test_readings_stored_before_visits_were_kept_still_open(tmp_path) -> None:
    import json
    import os
    import sqlite3

    from mediasrv.storage.crypto import RecordCipher
    from mediasrv.storage.database import Database
    from mediasrv.vitals.vitals_store import VitalsStore

    cipher = RecordCipher(os.urandom(32))
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)  # the table as it was: no visit column, the old associated data
    old.execute("CREATE TABLE vitals_readings (id INTEGER PRIMARY KEY AUTOINCREMENT, room TEXT, patient TEXT "
                "NOT NULL, kind TEXT NOT NULL, received_at REAL NOT NULL, device_time_ms INTEGER, sealed BLOB NOT NULL)")
    aad = json.dumps(["vitals", "old-room", "pat", "heart_rate", 1000.0]).encode()
    old.execute("INSERT INTO vitals_readings (room, patient, kind, received_at, sealed) VALUES (?, ?, ?, ?, ?)",
                ("old-room", "pat", "heart_rate", 1000.0, cipher.seal(json.dumps({"bpm": 61}).encode(), aad)))
    old.commit()
    old.close()

    db = await Database(path).open()
    try:
        store = VitalsStore(db, cipher)
        rows = await store.page(room="old-room")
        assert [(visit, r.values) for _, visit, r in rows] == [(None, {"bpm": 61})]
        assert await store.page(room="old-room", visits=["v1"]) == []
        await store.add_many([("old-room", "pat", "heart_rate", {"bpm": 70}, None)], visit="v1")
        rows = await store.page(room="old-room", visits=["v1"])
        assert [(visit, r.values) for _, visit, r in rows] == [("v1", {"bpm": 70})]
        # The visit is bound into the sealed reading: moving a row to another visit does not open.
        await db.execute("UPDATE vitals_readings SET visit = 'v2' WHERE visit = 'v1'")
        try:
            await store.page(room="old-room", visits=["v2"])
            raise AssertionError("a reading moved to another visit must not open")
        except Exception as exc:
            assert not isinstance(exc, AssertionError)
    finally:
        await db.close()


async def test_recordings_keep_their_visit_and_a_visit_token_sees_only_its_own(srv) -> None:
    from mediasrv.api import appkeys as keys
    from mediasrv.auth import mint_token

    store = srv.app[keys.ROOMS].recording_store
    earlier = await store.create("clinic", "dr-lee", visit="visit-a")
    later = await store.create("clinic", "dr-lee", visit="visit-b")
    r = await srv.request("GET", "/v1/recordings?visit=visit-a", who=ADMIN)
    assert [x["id"] for x in (await r.json())["recordings"]] == [earlier]
    token = mint_token(srv.settings.api_secret, identity="dr-lee", role="clinician", room="clinic", visit="visit-b")
    headers = {"Authorization": f"Bearer {token}"}
    r = await srv.request("GET", "/v1/recordings", headers=headers)
    assert [(x["id"], x["visit"]) for x in (await r.json())["recordings"]] == [(later, "visit-b")]
    assert (await srv.request("GET", f"/v1/recordings/{earlier}", headers=headers)).status == 404
    assert (await srv.request("GET", f"/v1/recordings/{later}", headers=headers)).status == 200
    assert (await srv.request("GET", "/v1/recordings?visit=visit-a", headers=headers)).status == 403


async def test_a_token_from_before_a_close_does_not_read_the_visits_after_it(srv) -> None:
    import asyncio

    import aiohttp

    old_doctor = srv.token("dr-lee", "clinician", "drop-in")  # no visit claim: an ad-hoc room
    await asyncio.sleep(0.01)
    assert (await srv.request("POST", "/v1/rooms", who=ADMIN, json={"name": "drop-in"})).status == 201
    assert (await srv.request("DELETE", "/v1/rooms/drop-in", who=ADMIN)).status == 204
    await asyncio.sleep(0.01)
    patient = srv.token("pat-bo", "patient", "drop-in")
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{srv.url}/rooms/drop-in/ws") as ws:
        await ws.send_json({"type": "join", "token": patient, "request_id": "j"})
        assert (await ws.receive_json())["type"] == "joined"
        await _upload(srv, "drop-in", patient)
        r = await _read(srv, "drop-in", old_doctor)
        assert r.status == 200 and (await r.json())["readings"] == []
        r = await _read(srv, "drop-in", srv.token("dr-kim", "clinician", "drop-in"))
        assert len((await r.json())["readings"]) == 1
    # Once that visit is over too, still nothing for the old token.
    await asyncio.sleep(0.1)
    r = await _read(srv, "drop-in", old_doctor)
    assert r.status == 200 and (await r.json())["readings"] == []
