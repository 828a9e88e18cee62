"""Attachments are served as downloads: a sender-chosen text/html never renders on our origin."""

from __future__ import annotations

from ctl_helpers import tus_metadata, upload_bytes

PAGE = b"<script>fetch('/v1/messages').then(r => r.text()).then(alert)</script>"


async def test_html_attachment_without_filename_is_not_rendered_inline(srv) -> None:
    patient, clinician = ("pat", "patient"), ("doc", "clinician")
    message = await srv.send_message(patient, "doc")
    r = await srv.request("POST", "/v1/uploads/", who=patient, data=PAGE, headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": str(len(PAGE)),
        "Content-Type": "application/offset+octet-stream",
        # no filename: the disposition used to be omitted, so a browser rendered the page inline
        "Upload-Metadata": tus_metadata(message=message["id"], content_type="text/html"),
    })
    assert r.status == 201
    got = await (await srv.request("GET", f"/v1/messages/{message['id']}", who=clinician)).json()
    url = got["attachments"][0]["download_url"]
    r = await srv.request("GET", url, who=clinician)
    assert r.status == 200 and await r.read() == PAGE
    assert r.headers["Content-Disposition"].startswith("attachment")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in r.headers["Content-Security-Policy"]
    r = await srv.request("GET", url, who=clinician, headers={"Range": "bytes=0-3"})
    assert r.status == 206 and r.headers["Content-Disposition"].startswith("attachment")


async def test_named_attachment_keeps_its_file_name(srv) -> None:
    patient = ("pat", "patient")
    message = await srv.send_message(patient, "doc")
    await upload_bytes(srv, patient, message["id"], b"%PDF-1.4", "application/pdf", filename="scan é.pdf")
    got = await (await srv.request("GET", f"/v1/messages/{message['id']}", who=("doc", "clinician"))).json()
    r = await srv.request("GET", got["attachments"][0]["download_url"], who=("doc", "clinician"))
    assert r.headers["Content-Disposition"] == "attachment; filename*=UTF-8''scan%20%C3%A9.pdf"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
