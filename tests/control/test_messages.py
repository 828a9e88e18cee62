"""Messages: inbox, read, mark read, delete, attachments with probing, Range downloads, retention,
encryption at rest and an audit trail without patient content."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from ctl_helpers import Server, make_media, upload_bytes

from mediasrv.api.appkeys import DB, PROCESSOR, RETENTION

PATIENT = ("pat-ana", "patient")
CLINICIAN = ("dr-lee", "clinician")
ADMIN = ("ops", "admin")


async def _message(srv: Server, message_id: str, who: tuple[str, str] = CLINICIAN) -> dict:
    resp = await srv.request("GET", f"/v1/messages/{message_id}", who=who)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_inbox_read_mark_read_delete(srv: Server) -> None:
    sent = await srv.send_message(PATIENT, "dr-lee", subject="rash update", body="it is smaller now")
    resp = await srv.request("GET", "/v1/messages", who=CLINICIAN)
    inbox = (await resp.json())["messages"]
    assert [m["id"] for m in inbox] == [sent["id"]]
    assert inbox[0]["subject"] == "rash update" and "body" not in inbox[0]
    assert inbox[0]["read_at"] is None
    resp = await srv.request("GET", "/v1/messages?box=sent", who=PATIENT)
    assert [m["id"] for m in (await resp.json())["messages"]] == [sent["id"]]

    msg = await _message(srv, sent["id"])
    assert msg["body"] == "it is smaller now" and msg["sender"] == "pat-ana"
    resp = await srv.request("POST", f"/v1/messages/{sent['id']}/read", who=CLINICIAN)
    assert resp.status == 200
    resp = await srv.request("GET", "/v1/messages?unread=true", who=CLINICIAN)
    assert (await resp.json())["messages"] == []
    assert (await _message(srv, sent["id"]))["read_at"] is not None

    resp = await srv.request("DELETE", f"/v1/messages/{sent['id']}", who=CLINICIAN)
    assert resp.status == 204
    assert (await srv.request("GET", f"/v1/messages/{sent['id']}", who=PATIENT)).status == 404


async def test_sender_can_delete_too(srv: Server) -> None:
    sent = await srv.send_message(CLINICIAN, "pat-ana")
    assert (await srv.request("DELETE", f"/v1/messages/{sent['id']}", who=CLINICIAN)).status == 204


async def test_invalid_message_bodies_are_400(srv: Server) -> None:
    for body in ({"recipient": "x", "subject": "s"}, {"recipient": "", "subject": "s", "body": "b"},
                 {"recipient": "a/b", "subject": "s", "body": "b"},
                 {"recipient": "x", "subject": 5, "body": "b"},
                 {"recipient": "x", "subject": "s", "body": "b", "extra": 1},
                 {"recipient": "x", "subject": "s" * 201, "body": "b"}):
        resp = await srv.request("POST", "/v1/messages", who=PATIENT, json=body)
        assert resp.status == 400, body
    resp = await srv.request("POST", "/v1/messages", who=PATIENT, data=b"[1]",
                             headers={"Content-Type": "application/json"})
    assert resp.status == 400


async def test_video_messages_are_probed_and_thumbnailed(srv: Server) -> None:
    sent = await srv.send_message(PATIENT, "dr-lee", subject="video")
    webm = make_media("webm", "libvpx", "libopus")
    mp4 = make_media("mp4", "h264", "aac")
    await upload_bytes(srv, PATIENT, sent["id"], webm, "video/webm", "clip.webm")
    await upload_bytes(srv, PATIENT, sent["id"], mp4, "video/mp4", "clip.mp4")
    await srv.app[PROCESSOR].wait_idle()
    atts = {a["content_type"]: a for a in (await _message(srv, sent["id"]))["attachments"]}
    for ctype, codecs, container, data in (("video/webm", {"vp8", "opus"}, "webm", webm),
                                           ("video/mp4", {"h264", "aac"}, "mp4", mp4)):
        att = atts[ctype]
        assert att["state"] == "ready", att
        assert set(att["media"]["codecs"]) == codecs
        assert container in att["media"]["container"]
        assert 1.9 <= att["media"]["duration_s"] <= 2.2
        assert att["sha256"] == hashlib.sha256(data).hexdigest()
        resp = await srv.request("GET", att["thumbnail_url"], who=CLINICIAN)
        assert resp.status == 200 and resp.content_type == "image/jpeg"
        assert (await resp.read())[:2] == b"\xff\xd8"


async def test_audio_message_is_probed(srv: Server) -> None:
    sent = await srv.send_message(PATIENT, "dr-lee")
    webm = make_media("webm", "libvpx", "libopus")
    await upload_bytes(srv, PATIENT, sent["id"], webm, "audio/webm", "voice.webm")
    await srv.app[PROCESSOR].wait_idle()
    (att,) = (await _message(srv, sent["id"]))["attachments"]
    assert att["state"] == "ready" and "opus" in att["media"]["codecs"]


async def test_text_claiming_to_be_video_is_rejected_with_reason(srv: Server) -> None:
    sent = await srv.send_message(PATIENT, "dr-lee")
    await upload_bytes(srv, PATIENT, sent["id"], b"just some text, not a video\n" * 50,
                       "video/webm", "fake.webm")
    await srv.app[PROCESSOR].wait_idle()
    (att,) = (await _message(srv, sent["id"]))["attachments"]
    assert att["state"] == "rejected"
    assert "not a recognisable media container" in att["reason"]
    assert att["download_url"] is None
    resp = await srv.request("GET", f"/v1/messages/{sent['id']}/attachments/{att['id']}", who=CLINICIAN)
    assert resp.status == 409
    resp = await srv.request("GET", "/v1/audit?action=upload.rejected", who=ADMIN)
    (entry,) = (await resp.json())["entries"]
    assert entry["detail"]["attachment_id"] == att["id"]


async def test_range_downloads(srv: Server) -> None:
    sent = await srv.send_message(PATIENT, "dr-lee")
    data = os.urandom(300_000)
    await upload_bytes(srv, PATIENT, sent["id"], data, "application/pdf", "scan.pdf")
    (att,) = (await _message(srv, sent["id"]))["attachments"]
    assert att["state"] == "ready"
    url = att["download_url"]
    resp = await srv.request("GET", url, who=CLINICIAN, headers={"Range": "bytes=1000-70999"})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes 1000-70999/{len(data)}"
    assert await resp.read() == data[1000:71000]
    resp = await srv.request("GET", url, who=CLINICIAN, headers={"Range": "bytes=-500"})
    assert resp.status == 206 and await resp.read() == data[-500:]
    resp = await srv.request("GET", url, who=CLINICIAN, headers={"Range": "bytes=299990-"})
    assert await resp.read() == data[299990:]
    resp = await srv.request("GET", url, who=CLINICIAN, headers={"Range": f"bytes={len(data)}-"})
    assert resp.status == 416 and resp.headers["Content-Range"] == f"bytes */{len(data)}"
    resp = await srv.request("GET", url, who=CLINICIAN)
    assert resp.status == 200 and resp.headers["Accept-Ranges"] == "bytes"
    assert await resp.read() == data
    assert "scan.pdf" in resp.headers["Content-Disposition"]


async def test_blobs_and_database_hold_no_plaintext(srv: Server) -> None:
    marker = b"GLUCOSE-READING-7.9-MMOL"
    sent = await srv.send_message(PATIENT, "dr-lee", subject="SUBJECT-MARKER", body="BODY-MARKER-TEXT")
    await upload_bytes(srv, PATIENT, sent["id"], marker * 5000, "text/plain", "FILENAME-MARKER.txt")
    needles = [marker, b"SUBJECT-MARKER", b"BODY-MARKER-TEXT", b"FILENAME-MARKER"]
    files = [p for p in srv.settings.data_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".blob" for p in files)
    for path in files:
        content = path.read_bytes()
        for needle in needles:
            assert needle not in content, f"{needle!r} found in {path.name}"


async def test_audit_trail_has_actions_but_no_content(srv: Server) -> None:
    sent = await srv.send_message(PATIENT, "dr-lee", subject="SUBJ-X", body="BODY-X")
    await upload_bytes(srv, PATIENT, sent["id"], b"data" * 100, "application/octet-stream", "NAME-X.bin")
    msg = await _message(srv, sent["id"])
    await srv.request("GET", msg["attachments"][0]["download_url"], who=CLINICIAN)
    await srv.request("DELETE", f"/v1/messages/{sent['id']}", who=PATIENT)
    resp = await srv.request("GET", "/v1/audit?limit=100", who=ADMIN)
    entries = (await resp.json())["entries"]
    actions = [e["action"] for e in entries]
    for action in ("message.created", "upload.created", "upload.completed", "message.read",
                   "attachment.downloaded", "message.deleted"):
        assert action in actions
    assert all(e["address"] == "127.0.0.1" for e in entries if e["actor"] != "mediasrv")
    text = str(entries)
    for needle in ("SUBJ-X", "BODY-X", "NAME-X"):
        assert needle not in text
    # The audit table refuses edits (a trigger on either engine).
    for statement in ("DELETE FROM audit_log", "UPDATE audit_log SET actor = 'x'"):
        with pytest.raises(Exception, match="append-only"):
            await srv.app[DB].execute(statement)


async def test_audit_paging(srv: Server) -> None:
    for _ in range(5):
        await srv.send_message(PATIENT, "dr-lee")
    resp = await srv.request("GET", "/v1/audit?action=message.created&limit=2", who=ADMIN)
    page = await resp.json()
    assert len(page["entries"]) == 2
    resp = await srv.request("GET", f"/v1/audit?action=message.created&limit=10&before_id={page['next_before_id']}",
                             who=ADMIN)
    rest = (await resp.json())["entries"]
    assert len(rest) == 3
    assert max(e["id"] for e in rest) < min(e["id"] for e in page["entries"])


async def test_retention_purges_old_messages_with_their_blobs(srv: Server) -> None:
    old = await srv.send_message(PATIENT, "dr-lee")
    await upload_bytes(srv, PATIENT, old["id"], b"x" * 1000, "application/octet-stream")
    counts = await srv.app[RETENTION].purge(now=time.time() + 10 * 86400)
    assert counts["messages"] == 0
    counts = await srv.app[RETENTION].purge(now=time.time() + (srv.settings.retention_days + 1) * 86400)
    assert counts["messages"] == 1
    assert (await srv.request("GET", f"/v1/messages/{old['id']}", who=PATIENT)).status == 404
    assert not any((srv.settings.data_dir / "blobs").rglob("*.blob"))
