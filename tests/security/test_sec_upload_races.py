"""Concurrent requests on one upload never give it two writers or a 500."""

from __future__ import annotations

import asyncio
import hashlib

from ctl_helpers import TUS, create_upload

from mediasrv.api import appkeys as keys
from mediasrv.api.appkeys import MESSAGES, UPLOADS


async def test_concurrent_reopening_gives_one_writer(srv) -> None:
    patient = ("pat", "patient")
    message = await srv.send_message(patient, "doc")
    r = await create_upload(srv, patient, message["id"], 10)
    upload_id = r.headers["Location"].rsplit("/", 1)[1]
    state = srv.app[UPLOADS]
    await state.drop(upload_id)  # as after a restart: no open writer
    att = await srv.app[MESSAGES].get_attachment_by_upload(upload_id)
    a, b = await asyncio.gather(state.writer(srv.app[keys.BLOBS], att),
                                state.writer(srv.app[keys.BLOBS], att))
    assert a is b


async def test_heads_during_patches_after_restart_keep_the_blob_whole(srv) -> None:
    patient = ("pat", "patient")
    message = await srv.send_message(patient, "doc")
    data = bytes(range(256)) * 2048  # 512 KiB, several blob chunks
    r = await create_upload(srv, patient, message["id"], len(data))
    path = r.headers["Location"]
    await srv.restart()
    half = len(data) // 2
    patch = srv.request("PATCH", path, who=patient, data=data[:half], headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    heads = [srv.request("HEAD", path, who=patient, headers=TUS) for _ in range(3)]
    results = await asyncio.gather(patch, *heads)
    assert [x.status for x in results] == [204, 200, 200, 200]
    r = await srv.request("PATCH", path, who=patient, data=data[half:], headers={
        **TUS, "Upload-Offset": str(half), "Content-Type": "application/offset+octet-stream"})
    assert r.status == 204
    got = await (await srv.request("GET", f"/v1/messages/{message['id']}", who=("doc", "clinician"))).json()
    att = got["attachments"][0]
    assert att["sha256"] == hashlib.sha256(data).hexdigest()
    body = await (await srv.request("GET", att["download_url"], who=("doc", "clinician"))).read()
    assert body == data


async def test_deleting_a_message_while_its_attachment_uploads(srv) -> None:
    patient = ("pat", "patient")
    message = await srv.send_message(patient, "doc")
    total = 3 * 1024 * 1024
    r = await create_upload(srv, patient, message["id"], total)
    path = r.headers["Location"]
    first_sent, go_on = asyncio.Event(), asyncio.Event()

    async def slow_body():
        yield b"a" * (1024 * 1024 + 7)
        first_sent.set()
        await go_on.wait()
        yield b"b" * (1024 * 1024)

    patch = asyncio.ensure_future(srv.request("PATCH", path, who=patient, data=slow_body(), headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}))
    await first_sent.wait()
    await asyncio.sleep(0.2)  # the server has written the first megabyte into the blob
    delete = asyncio.ensure_future(srv.request("DELETE", f"/v1/messages/{message['id']}", who=patient))
    await asyncio.sleep(0.2)
    go_on.set()
    patched, deleted = await patch, await delete
    assert patched.status == 204, await patched.text()
    assert deleted.status == 204
    r = await srv.request("HEAD", path, who=patient, headers=TUS)
    assert r.status == 404
    blob_root = srv.settings.data_dir / "blobs"
    assert [p.name for p in blob_root.rglob("*") if p.is_file()] == []  # no orphaned blob or tail
