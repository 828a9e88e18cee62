"""Recordings are sealed into the encrypted blob store and listed from the database."""

from __future__ import annotations

import os
from pathlib import Path

from mediasrv.recording.muxer import TrackResult, TrackSpec
from mediasrv.recording.store import RecordingStore
from mediasrv.store.blobs import BlobStore
from mediasrv.store.db import Database


async def test_sealed_file_is_encrypted_listed_and_reads_back(tmp_path: Path) -> None:
    db = await Database(tmp_path / "db.sqlite").open()
    blobs = BlobStore(tmp_path / "blobs", os.urandom(32), chunk_size=4096)
    store = RecordingStore(db, blobs, tmp_path / "work")
    rid = await store.create("visit1", "dr-lee")
    work = store.new_work_dir(rid)
    plain = b"\x1aE\xdf\xa3" + os.urandom(10000)  # stands in for a WebM file
    (work / "v.webm").write_bytes(plain)
    spec = TrackSpec("v", "video", "VP8", 90000)
    f = await store.add_file(rid, "pat", TrackResult(spec, work / "v.webm", 30, 0.1, 1.1))
    assert f is not None and f.content_type == "video/webm" and f.size == len(plain)
    await store.finish(rid)

    assert not work.exists(), "no plaintext left behind"
    on_disk = blobs.path(f.blob_id).read_bytes()
    assert plain[:64] not in on_disk
    assert blobs.read_bytes(f.blob_id) == plain
    rec = await store.get(rid)
    assert rec is not None and rec["state"] == "ready" and rec["files"][0]["participant"] == "pat"
    assert [r["id"] for r in await store.list("visit1")] == [rid]
    await db.close()


async def test_recovery_keeps_uploads_in_progress_and_filed_recordings(tmp_path: Path) -> None:
    from mediasrv.recording.sealed_output import SealedOutput

    db = await Database(tmp_path / "db.sqlite").open()
    blobs = BlobStore(tmp_path / "blobs", os.urandom(32), chunk_size=4096)
    store = RecordingStore(db, blobs, tmp_path / "work")
    upload = blobs.create()  # a resumable upload, unfinished: not ours to delete
    upload.append(b"x" * 10000)
    upload.sync()
    rid = await store.create("visit1", "dr-lee")
    out = SealedOutput(blobs, head_bytes=1024)
    out.write(b"\x1aE\xdf\xa3" + os.urandom(5000))
    blob_id, size, sha = out.seal()
    spec = TrackSpec("v", "video", "VP8", 90000, group="pat")
    f = await store.add_file(rid, "pat", TrackResult(spec, tmp_path / "pat.webm", 30, 0.0, 1.0, blob_id, size, sha,
                                                     (spec, TrackSpec("a", "audio", "opus", 48000, group="pat"))))
    assert f is not None and (f.kind, f.codec, f.content_type, f.size) == ("video", "vp8+opus", "video/webm", size)
    orphan = SealedOutput(blobs, head_bytes=1024)  # sealed, but the crash came before its row
    orphan.write(os.urandom(3000))
    orphan_id, _, _ = orphan.seal()

    assert await store.recover() == {"interrupted": 1, "filed_after_crash": 0, "deleted_blobs": 1}
    assert blobs.exists(upload.blob_id) and blobs.exists(blob_id) and not blobs.exists(orphan_id)
    assert blobs.open_writer(upload.blob_id).size == 10000
    rec = await store.get(rid)
    assert rec is not None and rec["state"] == "interrupted" and len(rec["files"]) == 1
    await db.close()


async def test_recording_made_by_the_writer_downloads_through_the_api(tmp_path: Path) -> None:
    """The control API serves the sealed file (Range included) to an admin; a restart marks a
    recording a crash left running as interrupted and deletes its leftovers."""
    import asyncio
    import io

    import aiohttp
    import av

    from tests.conftest import start_server

    from .test_muxer import encode_opus

    audio = encode_opus(2)
    srv = await start_server(tmp_path / "data")
    try:
        store = srv.rooms.recording_store
        rid = await store.create("visit9", "dr-lee")
        writer = store.new_writer(rid)
        writer.add_track(TrackSpec("a", "audio", "opus", 48000))
        writer.write("a", audio)
        (result,) = await asyncio.to_thread(writer.close)
        f = await store.add_file(rid, "pat", result)
        await store.finish(rid)
        assert f is not None and f.content_type == "audio/webm"
        crashed = await store.create("visit9", "dr-lee")  # left running: no file, no finish
        left = store.new_writer(crashed)
        left.add_track(TrackSpec("a", "audio", "opus", 48000))
        left.write("a", audio * 30)  # past the in-memory head: an encrypted spill exists
        assert await asyncio.to_thread(left.drain, 30)

        admin = {"Authorization": f"Bearer {srv.token('ops', 'admin')}"}
        async with aiohttp.ClientSession(headers=admin) as s:
            async with s.get(f"{srv.url}/v1/recordings/{rid}") as r:
                assert r.status == 200
                (listed,) = (await r.json())["files"]
            url = f"{srv.url}/v1/recordings/{rid}/files/{listed['blob_id']}"
            async with s.get(url, headers={"Range": "bytes=0-3"}) as r:
                assert r.status == 206 and await r.read() == b"\x1a\x45\xdf\xa3"
            async with s.get(url) as r:
                assert r.status == 200 and r.content_type == "audio/webm"
                body = await r.read()
        assert len(body) == f.size
        with av.open(io.BytesIO(body)) as c:
            assert sum(1 for _ in c.decode(audio=0)) == len(audio)
    finally:
        await srv.runner.cleanup()

    srv = await start_server(tmp_path / "data")  # the restart after the crash
    try:
        store = srv.rooms.recording_store
        assert (await store.get(crashed))["state"] == "interrupted"
        assert (await store.get(rid))["state"] == "ready"
        assert not list((tmp_path / "data").rglob("recspill-*"))
    finally:
        await srv.runner.cleanup()
