"""Recordings are sealed into the encrypted blob store and listed from the database."""

from __future__ import annotations

import os
from pathlib import Path

from mediasrv.recording.muxer import TrackResult, TrackSpec
from mediasrv.recording.recording_store import RecordingStore
from mediasrv.storage.blobs import BlobStore
from mediasrv.storage.database import open_database


async def test_sealed_file_is_encrypted_listed_and_reads_back(tmp_path: Path, database_url: str) -> None:
    db = await open_database(database_url, tmp_path / "db.sqlite").open()
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


async def test_recovery_keeps_uploads_in_progress_and_filed_recordings(tmp_path: Path, database_url: str) -> None:
    from mediasrv.recording.sealed_output import SealedOutput

    db = await open_database(database_url, tmp_path / "db.sqlite").open()
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


async def test_a_clinician_sees_only_the_recordings_of_a_room_name_they_took_part_in(tmp_path: Path) -> None:
    """Room names are reused for later visits: a clinician's token for the name lists and downloads
    only the recordings they started or took part in; another visit's recording of that name answers
    404 (as if absent); an admin sees all of them."""
    import asyncio

    import aiohttp

    from tests.conftest import start_server

    from .test_muxer import encode_opus

    audio = encode_opus(1)
    srv = await start_server(tmp_path / "data")
    try:
        store = srv.rooms.recording_store
        recs = {}
        for visit, clinician, patient in (("earlier", "dr-old", "pat-1"), ("today", "dr-new", "pat-2")):
            rid = await store.create("clinic-room", clinician)
            await store.add_participants(rid, [clinician, patient, f"dr-second-{visit}"])
            writer = store.new_writer(rid, owners={"a": patient})
            writer.add_track(TrackSpec("a", "audio", "opus", 48000))
            writer.write("a", audio)
            (result,) = await asyncio.to_thread(writer.close)
            f = await store.add_file(rid, patient, result)
            await store.finish(rid)
            assert f is not None
            recs[visit] = (rid, f.blob_id)

        async def seen_by(identity: str, role: str, room: str | None) -> tuple[list[str], dict[str, int]]:
            headers = {"Authorization": f"Bearer {srv.token(identity, role, room)}"}
            async with aiohttp.ClientSession(headers=headers) as s:
                async with s.get(f"{srv.url}/v1/recordings") as r:
                    assert r.status == 200
                    listed = [x["id"] for x in (await r.json())["recordings"]]
                statuses = {}
                for visit, (rid, blob_id) in recs.items():
                    async with s.get(f"{srv.url}/v1/recordings/{rid}") as r:
                        meta = r.status
                    async with s.get(f"{srv.url}/v1/recordings/{rid}/files/{blob_id}") as r:
                        statuses[visit] = (meta, r.status)
            return sorted(listed), statuses

        earlier, today = recs["earlier"][0], recs["today"][0]
        assert await seen_by("dr-new", "clinician", "clinic-room") == (
            [today], {"earlier": (404, 404), "today": (200, 200)})
        assert await seen_by("dr-second-today", "clinician", "clinic-room") == (
            [today], {"earlier": (404, 404), "today": (200, 200)}), "took part without starting it"
        assert await seen_by("dr-old", "clinician", "clinic-room") == (
            [earlier], {"earlier": (200, 200), "today": (404, 404)})
        assert await seen_by("ops", "admin", None) == (
            sorted([earlier, today]), {"earlier": (200, 200), "today": (200, 200)})
    finally:
        await srv.runner.cleanup()


async def test_a_cluster_node_recovers_only_its_own_recordings(tmp_path: Path, pg_cluster: object) -> None:
    """Two nodes share a PostgreSQL database and a blob directory: node B starting up (recovery)
    marks only its own crashed recording interrupted; node A's running recording and the blob it
    is writing stay untouched."""
    from mediasrv.recording.sealed_output import SealedOutput
    from tests.pg_cluster import PostgresCluster

    assert isinstance(pg_cluster, PostgresCluster)
    url = pg_cluster.new_database()
    db_a, db_b = await open_database(url, Path()).open(), await open_database(url, Path()).open()
    blobs = BlobStore(tmp_path / "shared-blobs", os.urandom(32), chunk_size=4096)
    node_a = RecordingStore(db_a, blobs, tmp_path / "work-a", node="a")
    node_b = RecordingStore(db_b, blobs, tmp_path / "work-b", node="b")
    try:
        running = await node_a.create("visit1", "dr-lee")
        part = SealedOutput(blobs, head_bytes=1024)  # A's file being sealed: no row yet
        part.write(os.urandom(3000))
        part_id, _, _ = part.seal()
        crashed = await node_b.create("visit2", "dr-ray")

        result = await node_b.recover()
        assert result["interrupted"] == 1 and result["deleted_blobs"] == 0
        assert (await node_a.get(running) or {})["state"] == "recording"
        assert (await node_b.get(crashed) or {})["state"] == "interrupted"
        assert blobs.exists(part_id)
    finally:
        await db_a.close()
        await db_b.close()
