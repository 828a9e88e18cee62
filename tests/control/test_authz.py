"""Authorization matrix of the control API, and the room routes against the live RoomManager."""

from __future__ import annotations

import time

from ctl_helpers import TUS, Server, create_upload, upload_bytes

from mediasrv.api import appkeys as keys
from mediasrv.auth import Identity

PATIENT = ("pat-ana", "patient")
OTHER_PATIENT = ("pat-bob", "patient")
CLINICIAN = ("dr-lee", "clinician")
ADMIN = ("ops", "admin")


async def test_other_patient_cannot_list_read_download_or_upload(srv: Server) -> None:
    sent = await srv.send_message(PATIENT, "dr-lee", subject="private")
    await upload_bytes(srv, PATIENT, sent["id"], b"secret" * 100, "application/octet-stream")
    msg = await (await srv.request("GET", f"/v1/messages/{sent['id']}", who=PATIENT)).json()
    att = msg["attachments"][0]
    for box in ("inbox", "sent"):
        resp = await srv.request("GET", f"/v1/messages?box={box}", who=OTHER_PATIENT)
        assert (await resp.json())["messages"] == []
    base = f"/v1/messages/{sent['id']}"
    for method, path in (("GET", base), ("GET", att["download_url"]), ("POST", f"{base}/read"),
                         ("DELETE", base)):
        assert (await srv.request(method, path, who=OTHER_PATIENT)).status == 404, (method, path)
    # Uploads: only the sender creates them; an upload URL alone is not enough.
    assert (await create_upload(srv, OTHER_PATIENT, sent["id"], 10)).status == 404
    assert (await create_upload(srv, CLINICIAN, sent["id"], 10)).status == 403
    upload = (await create_upload(srv, PATIENT, sent["id"], 10)).headers["Location"]
    assert (await srv.request("HEAD", upload, who=OTHER_PATIENT, headers=TUS)).status == 404
    assert (await srv.request("HEAD", upload, headers=TUS)).status == 401
    resp = await srv.request("PATCH", upload, who=CLINICIAN, data=b"x", headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert resp.status == 404
    assert (await srv.request("DELETE", upload, who=OTHER_PATIENT, headers=TUS)).status == 404
    # The recipient reads but cannot mark someone else's message read or upload to it; admins read.
    assert (await srv.request("POST", f"{base}/read", who=PATIENT)).status == 403
    assert (await srv.request("GET", base, who=ADMIN)).status == 200
    assert (await srv.request("GET", att["download_url"], who=ADMIN)).status == 200


async def test_expired_and_forged_tokens_fail(srv: Server) -> None:
    expired = srv.token("pat-ana", "patient", ttl_s=60, now=time.time() - 3600)
    resp = await srv.request("GET", "/v1/messages", headers={"Authorization": f"Bearer {expired}"})
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "token_expired"
    forged = srv.token("pat-ana", "patient")[:-4] + "AAAA"
    resp = await srv.request("GET", "/v1/messages", headers={"Authorization": f"Bearer {forged}"})
    assert resp.status == 401
    assert (await srv.request("GET", "/v1/messages")).status == 401


async def test_message_roles_and_room_tokens(srv: Server) -> None:
    body = {"recipient": "dr-lee", "subject": "s", "body": "b"}
    for who in (("g", "guest"), ("o", "observer"), ("i", "interpreter"), ADMIN):
        assert (await srv.request("POST", "/v1/messages", who=who, json=body)).status == 403
    resp = await srv.request("POST", "/v1/messages", json=body,
                             headers=srv.auth("pat-ana", "patient", room="visit1"))
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "room_token"


async def test_only_admins_mint_tokens(srv: Server) -> None:
    req = {"identity": "pat-ana", "role": "patient"}
    for who in (PATIENT, CLINICIAN):
        assert (await srv.request("POST", "/v1/tokens", who=who, json=req)).status == 403
    resp = await srv.request("POST", "/v1/tokens", who=ADMIN, json={**req, "ttl_s": 120})
    assert resp.status == 201
    minted = await resp.json()
    assert minted["room"] is None and minted["role"] == "patient"
    # The minted messaging token works, and carries sub and role but no room.
    resp = await srv.request("GET", "/v1/messages",
                             headers={"Authorization": f"Bearer {minted['token']}"})
    assert resp.status == 200
    resp = await srv.request("POST", "/v1/tokens", who=ADMIN,
                             json={"identity": "x", "role": "admin", "room": "r1"})
    assert resp.status == 400
    resp = await srv.request("POST", "/v1/tokens", who=ADMIN,
                             json={"identity": "x", "role": "patient", "ttl_s": 10**9})
    assert resp.status == 400


async def test_room_routes_and_authorization(srv: Server) -> None:
    room_req = {"name": "visit1", "waiting_room": True, "max_participants": 4,
                "max_duration_s": 1800, "recording_allowed": False}
    for who in (PATIENT, CLINICIAN):
        assert (await srv.request("POST", "/v1/rooms", who=who, json=room_req)).status == 403
    resp = await srv.request("POST", "/v1/rooms", who=ADMIN, json=room_req)
    assert resp.status == 201
    assert (await resp.json())["options"]["waiting_room"] is True
    assert (await srv.request("POST", "/v1/rooms", who=ADMIN, json=room_req)).status == 409
    assert (await srv.request("GET", "/v1/rooms", who=CLINICIAN)).status == 403
    rooms = (await (await srv.request("GET", "/v1/rooms", who=ADMIN)).json())["rooms"]
    assert [r["name"] for r in rooms] == ["visit1"]

    # A patient waits in the room (joined through the media plane's own entry point).
    room = srv.app[keys.ROOMS].get("visit1")
    await room.join(Identity("pat-ana", "patient", "visit1", None, int(time.time()) + 60), "test")
    clinician = srv.auth("dr-lee", "clinician", room="visit1")
    patient = srv.auth("pat-ana", "patient", room="visit1")
    other_clinician = srv.auth("dr-kim", "clinician", room="visit2")
    admit = "/v1/rooms/visit1/participants/pat-ana/admit"
    assert (await srv.request("POST", admit, headers=patient)).status == 403
    assert (await srv.request("POST", admit, headers=other_clinician)).status == 403
    assert (await srv.request("GET", "/v1/rooms/visit1", headers=patient)).status == 403
    desc = await (await srv.request("GET", "/v1/rooms/visit1", headers=clinician)).json()
    assert [(p["identity"], p["admitted"]) for p in desc["participants"]] == [("pat-ana", False)]
    assert (await srv.request("POST", admit, headers=clinician)).status == 204
    desc = await (await srv.request("GET", "/v1/rooms/visit1", headers=clinician)).json()
    assert desc["participants"][0]["admitted"] is True
    resp = await srv.request("POST", "/v1/rooms/visit1/participants/nobody/admit", headers=clinician)
    assert resp.status == 404
    mute = "/v1/rooms/visit1/participants/pat-ana/tracks/99/mute"
    assert (await srv.request("POST", mute, headers=patient)).status == 403
    assert (await srv.request("POST", mute, headers=clinician)).status == 404  # no such track
    remove = "/v1/rooms/visit1/participants/pat-ana"
    assert (await srv.request("DELETE", remove, headers=patient)).status == 403
    assert (await srv.request("DELETE", remove, headers=clinician)).status == 204
    assert (await srv.request("DELETE", "/v1/rooms/visit1", headers=clinician)).status == 403
    assert (await srv.request("DELETE", "/v1/rooms/visit1", who=ADMIN)).status == 204
    assert (await srv.request("GET", "/v1/rooms/visit1", who=ADMIN)).status == 404
    resp = await srv.request("GET", "/v1/audit?room=visit1", who=ADMIN)
    actions = {e["action"] for e in (await resp.json())["entries"]}
    assert {"room.created", "admit", "remove", "room.closed"} <= actions


async def test_invalid_room_requests_are_400(srv: Server) -> None:
    for body in ({"name": ""}, {"name": "a/b"}, {"name": "r", "max_participants": 0},
                 {"name": "r", "waiting_room": "yes"}, {"name": "r", "max_duration_s": True},
                 {"name": "r", "bogus": 1}):
        assert (await srv.request("POST", "/v1/rooms", who=ADMIN, json=body)).status == 400, body


async def test_text_query_parameters_with_control_characters_are_400(srv: Server) -> None:
    """A NUL in a filter reached PostgreSQL as a query parameter, which refuses it: a 500 (found by
    the schemathesis run). Every free-text filter refuses control characters up front, on both
    databases, and an ordinary value still filters."""
    for path, param in (("/v1/recordings", "room"), ("/v1/audit", "room"), ("/v1/audit", "action"),
                        ("/v1/audit", "visit"), ("/v1/rooms/ward-1/vitals", "patient")):
        for bad in ("a\x00b", "tab\there", "x" * 300, ""):
            resp = await srv.request("GET", path, who=ADMIN, params={param: bad})
            assert resp.status == 400, (path, param, bad, resp.status)
            assert (await resp.json())["error"]["code"] == "invalid_query"
        assert (await srv.request("GET", path, who=ADMIN, params={param: "ward-1"})).status == 200
    # ... and a room name in the path (it reached the vitals query the same way).
    resp = await srv.request("GET", "/v1/rooms/a%00b/vitals", who=ADMIN)
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_field"
    assert (await srv.request("GET", "/v1/rooms/a%00b/vitals")).status == 401
    for path in ("/v1/recordings/a%00b", "/v1/recordings/a%00b/files/x", "/v1/recordings/abc/files/x%00y"):
        assert (await srv.request("GET", path, who=ADMIN)).status == 404, path
