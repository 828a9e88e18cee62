"""tus 1.0 uploads: discovery, creation, checksums, offsets, termination, expiration, resume.

The resume test drives tuspy (the tus client from PyPI) against a real server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

from ctl_helpers import TUS, Server, checksum, create_upload, tus_metadata
from tusclient import client as tus_client
from tusclient.uploader import Uploader

from mediasrv.api.appkeys import BLOBS, MESSAGES, RETENTION, UPLOADS

PATIENT = ("pat-ana", "patient")
CLINICIAN = "dr-lee"
MiB = 1024 * 1024


class Sha256Uploader(Uploader):
    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)


async def _head_offset(srv: Server, upload: str, who: tuple[str, str] = PATIENT) -> int:
    resp = await srv.request("HEAD", upload, who=who, headers=TUS)
    assert resp.status == 200
    return int(resp.headers["Upload-Offset"])


async def _interrupted_patch(srv: Server, upload: str, offset: int, total: bytes, send: int) -> None:
    """A PATCH that announces `len(total)` bytes, sends `send` of them, then the connection drops."""
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    head = (
        f"PATCH {upload} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
        f"Authorization: Bearer {srv.token(*PATIENT)}\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {len(total)}\r\n\r\n"
    ).encode()
    writer.write(head + total[:send])
    await writer.drain()
    writer.transport.abort()


async def test_options_discovery(srv: Server) -> None:
    resp = await srv.request("OPTIONS", "/v1/uploads/")
    assert resp.status == 204
    assert resp.headers["Tus-Version"] == "1.0.0"
    assert set(resp.headers["Tus-Extension"].split(",")) == {
        "creation", "creation-with-upload", "checksum", "termination", "expiration"}
    assert int(resp.headers["Tus-Max-Size"]) == srv.settings.max_upload_bytes
    assert set(resp.headers["Tus-Checksum-Algorithm"].split(",")) == {"sha1", "sha256"}


async def test_missing_tus_resumable_is_412(srv: Server) -> None:
    msg = await srv.send_message(PATIENT, CLINICIAN)
    resp = await srv.request("POST", "/v1/uploads/", who=PATIENT, headers={
        "Upload-Length": "10", "Upload-Metadata": tus_metadata(message=msg["id"])})
    assert resp.status == 412
    assert resp.headers["Tus-Version"] == "1.0.0"


async def test_upload_larger_than_max_size_is_413(srv: Server) -> None:
    msg = await srv.send_message(PATIENT, CLINICIAN)
    resp = await create_upload(srv, PATIENT, msg["id"], srv.settings.max_upload_bytes + 1)
    assert resp.status == 413


async def test_wrong_checksum_is_460_and_offset_stays(srv: Server) -> None:
    msg = await srv.send_message(PATIENT, CLINICIAN)
    upload = (await create_upload(srv, PATIENT, msg["id"], 1000)).headers["Location"]
    good = os.urandom(400)
    for algo in ("sha1", "sha256"):
        resp = await srv.request("PATCH", upload, who=PATIENT, data=good, headers={
            **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
            "Upload-Checksum": checksum(algo, good + b"x")})
        assert resp.status == 460
        assert (await resp.json())["error"]["code"] == "checksum_mismatch"
        assert await _head_offset(srv, upload) == 0
    resp = await srv.request("PATCH", upload, who=PATIENT, data=good, headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
        "Upload-Checksum": checksum("sha256", good)})
    assert resp.status == 204
    assert resp.headers["Upload-Offset"] == "400"
    resp = await srv.request("PATCH", upload, who=PATIENT, data=b"z", headers={
        **TUS, "Upload-Offset": "400", "Content-Type": "application/offset+octet-stream",
        "Upload-Checksum": "md5 AAAA"})
    assert resp.status == 400
    assert await _head_offset(srv, upload) == 400


async def test_wrong_offset_is_409(srv: Server) -> None:
    msg = await srv.send_message(PATIENT, CLINICIAN)
    upload = (await create_upload(srv, PATIENT, msg["id"], 100)).headers["Location"]
    resp = await srv.request("PATCH", upload, who=PATIENT, data=b"a" * 10, headers={
        **TUS, "Upload-Offset": "5", "Content-Type": "application/offset+octet-stream"})
    assert resp.status == 409
    assert await _head_offset(srv, upload) == 0


async def test_body_past_upload_length_is_413(srv: Server) -> None:
    msg = await srv.send_message(PATIENT, CLINICIAN)
    upload = (await create_upload(srv, PATIENT, msg["id"], 10)).headers["Location"]
    resp = await srv.request("PATCH", upload, who=PATIENT, data=b"a" * 11, headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert resp.status == 413
    assert await _head_offset(srv, upload) == 0


async def test_patch_needs_offset_content_type(srv: Server) -> None:
    msg = await srv.send_message(PATIENT, CLINICIAN)
    upload = (await create_upload(srv, PATIENT, msg["id"], 10)).headers["Location"]
    resp = await srv.request("PATCH", upload, who=PATIENT, data=b"a", headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "text/plain"})
    assert resp.status == 415


async def test_termination(srv: Server) -> None:
    msg = await srv.send_message(PATIENT, CLINICIAN)
    upload = (await create_upload(srv, PATIENT, msg["id"], 100)).headers["Location"]
    resp = await srv.request("DELETE", upload, who=PATIENT, headers=TUS)
    assert resp.status == 204
    assert (await srv.request("HEAD", upload, who=PATIENT, headers=TUS)).status == 404
    assert not any((srv.settings.data_dir / "blobs").rglob("*.blob"))


async def test_expiration_header_expired_upload_and_purge(srv: Server) -> None:
    msg = await srv.send_message(PATIENT, CLINICIAN)
    created = await create_upload(srv, PATIENT, msg["id"], 100)
    upload = created.headers["Location"]
    assert "GMT" in created.headers["Upload-Expires"]
    store = srv.app[MESSAGES]
    att = await store.get_attachment_by_upload(upload.rsplit("/", 1)[1])
    assert att is not None
    await store.update_attachment(att.id, expires_at=time.time() - 1)
    assert (await srv.request("HEAD", upload, who=PATIENT, headers=TUS)).status == 410
    counts = await srv.app[RETENTION].purge()
    assert counts["uploads"] == 1
    assert (await srv.request("HEAD", upload, who=PATIENT, headers=TUS)).status == 404
    assert not any((srv.settings.data_dir / "blobs").rglob("*.blob"))


async def test_creation_with_upload(srv: Server) -> None:
    msg = await srv.send_message(PATIENT, CLINICIAN)
    data = os.urandom(3000)
    resp = await srv.request("POST", "/v1/uploads/", who=PATIENT, data=data[:1000], headers={
        **TUS, "Upload-Length": "3000", "Content-Type": "application/offset+octet-stream",
        "Upload-Checksum": checksum("sha1", data[:1000]),
        "Upload-Metadata": tus_metadata(message=msg["id"], filename="a.bin")})
    assert resp.status == 201
    assert resp.headers["Upload-Offset"] == "1000"
    upload = resp.headers["Location"]
    resp = await srv.request("PATCH", upload, who=PATIENT, data=data[1000:], headers={
        **TUS, "Upload-Offset": "1000", "Content-Type": "application/offset+octet-stream"})
    assert resp.status == 204
    assert resp.headers["Upload-Offset"] == "3000"


async def test_tuspy_50mb_interrupted_and_resumed_across_restart(srv: Server, tmp_path: Path) -> None:
    size = 50 * MiB
    data = os.urandom(size)
    path = tmp_path / "recording.bin"
    path.write_bytes(data)
    msg = await srv.send_message(PATIENT, CLINICIAN, subject="my readings")
    headers = {**srv.auth(*PATIENT)}

    # First half with sha1 checksums (tuspy's default), 4 MiB chunks; then the client stops.
    client = tus_client.TusClient(srv.url + "/v1/uploads/", headers=headers)
    first = Uploader(file_path=str(path), client=client, chunk_size=4 * MiB, upload_checksum=True,
                     metadata={"message": msg["id"], "filename": "recording.bin",
                               "content_type": "application/octet-stream"})
    await asyncio.to_thread(first.upload, stop_at=24 * MiB)
    upload_url = first.url
    upload_path = upload_url.split(srv.url, 1)[1]
    assert await _head_offset(srv, upload_path) == 24 * MiB

    # The network drops in the middle of an unchecked request: what arrived is kept.
    await _interrupted_patch(srv, upload_path, 24 * MiB, data[24 * MiB: 30 * MiB], send=3 * MiB + 123)
    for _ in range(500):  # wait (bounded) until the server has noticed the drop and flushed
        offset = await _head_offset(srv, upload_path)
        lock = srv.app[UPLOADS].locks.get(upload_path.rsplit("/", 1)[1])
        if offset > 24 * MiB and (lock is None or not lock.locked()):
            break
        await asyncio.sleep(0.02)
    assert 24 * MiB < offset <= 24 * MiB + 3 * MiB + 123

    # A real restart: a new app instance on the same data directory.
    await srv.restart()
    assert await _head_offset(srv, upload_path) == offset
    # Resume with tuspy from the server's offset, sha256 checksums, 10 MiB chunks (staged path).
    client = tus_client.TusClient(srv.url + "/v1/uploads/", headers=headers)
    # (the constructor asks the server for the offset: keep it off the server's event loop)
    second = await asyncio.to_thread(
        Sha256Uploader, file_path=str(path), client=client, url=srv.url + upload_path,
        chunk_size=10 * MiB, upload_checksum=True)
    assert second.offset == offset
    await asyncio.to_thread(second.upload)

    resp = await srv.request("GET", f"/v1/messages/{msg['id']}", who=PATIENT)
    (att,) = (await resp.json())["attachments"]
    assert att["state"] == "ready"
    assert att["sha256"] == hashlib.sha256(data).hexdigest()
    resp = await srv.request("GET", att["download_url"], who=(CLINICIAN, "clinician"))
    assert resp.status == 200
    assert hashlib.sha256(await resp.read()).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_an_upload_whose_bytes_are_all_in_but_not_sealed_is_finished_by_head(srv: Server) -> None:
    """Its writer's node lost the claim (or stopped) between the last write and the seal: a client
    reads offset = length and sends nothing more, so the HEAD finishes the upload."""
    msg = await srv.send_message(PATIENT, CLINICIAN)
    upload = (await create_upload(srv, PATIENT, msg["id"], 3000)).headers["Location"]
    data = os.urandom(3000)
    store, state = srv.app[MESSAGES], srv.app[UPLOADS]
    att = await store.get_attachment_by_upload(upload.rsplit("/", 1)[1])
    async with state.claim(store, att.upload_id):  # the bytes land, durable, but no seal
        writer = await state.writer(srv.app[BLOBS], att)
        await asyncio.to_thread(writer.append, data)
        await asyncio.to_thread(writer.sync)
    assert (await store.get_attachment(att.id)).state == "uploading"
    assert await _head_offset(srv, upload) == 3000
    current = await store.get_attachment(att.id)
    assert current.state != "uploading", current.state
    for _ in range(100):  # then processed like any completed upload
        current = await store.get_attachment(att.id)
        if current.state in ("ready", "rejected"):
            break
        await asyncio.sleep(0.05)
    assert current.state == "ready", current.state
    assert await _head_offset(srv, upload) == 3000
