"""Recorded media never reaches the disk in plaintext: not while recording, not after, not after a crash
(which leaves only encrypted leftovers that startup recovery deletes)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import av
import pytest

from mediasrv.recording.muxer import RecordingWriter, TrackSpec
from mediasrv.recording.recording_store import RecordingStore
from mediasrv.recording.sealed_output import FINAL_PREFIX, SPILL_PREFIX
from mediasrv.storage.blobs import BlobStore
from mediasrv.storage.database import Database

MARKER = b"PHI-PLAINTEXT-"
FRAME_BYTES = 4000
BATCHES, PER_BATCH = 20, 25  # 500 frames of each track: ~4 MB, well past the in-memory head


def frame(track: str, i: int) -> bytes:
    """A recognisable payload: the marker, then filler that is as recognisable (no run of zeros)."""
    head = MARKER + f"{track}-{i:05d}-".encode()
    return head + (head * (FRAME_BYTES // len(head) + 1))[: FRAME_BYTES - len(head)]


def plaintext_on_disk(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and MARKER in p.read_bytes()]


def storage(data: Path, key: bytes) -> tuple[Database, BlobStore, Path]:
    data.mkdir(parents=True, exist_ok=True)
    return Database(data / "db.sqlite"), BlobStore(data / "blobs", key, chunk_size=16 * 1024), data / "work"


def write_batch(writer: RecordingWriter, n: int) -> None:
    for track, step in (("v", 3000), ("a", 960)):
        writer.write(track, [(i * step, i % 30 == 0, frame(track, i))
                             for i in range(n * PER_BATCH, (n + 1) * PER_BATCH)])


async def test_no_plaintext_frame_is_ever_on_disk(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db, blobs, work = storage(data, os.urandom(32))
    await db.open()
    store = RecordingStore(db, blobs, work)
    rid = await store.create("visit", "dr")
    writer = store.new_writer(rid)
    writer.add_track(TrackSpec("v", "video", "VP8", 90000, group="pat"))
    writer.add_track(TrackSpec("a", "audio", "opus", 48000, group="pat"))
    for n in range(BATCHES):
        write_batch(writer, n)
        assert await asyncio.to_thread(writer.drain, 10)
        assert plaintext_on_disk(data) == [], f"after batch {n}"
    assert list(data.rglob(f"{SPILL_PREFIX}*.blob")), "the file outgrew the in-memory head"
    results = await asyncio.to_thread(writer.close)
    assert writer.errors == 0 and len(results) == 1
    f = await store.add_file(rid, "pat", results[0])
    await store.finish(rid)
    assert f is not None and f.content_type == "video/webm" and f.codec == "vp8+opus"
    assert plaintext_on_disk(data) == []
    assert not list(data.rglob(f"{SPILL_PREFIX}*")), "the spill is gone once sealed"
    # The check above would have caught plaintext: the sealed file holds every marked frame.
    sealed = blobs.read_bytes(f.blob_id)
    assert all(frame(t, i) in sealed for t in ("v", "a") for i in range(BATCHES * PER_BATCH))
    rec = await store.get(rid)
    assert rec is not None and rec["state"] == "ready" and [x["blob_id"] for x in rec["files"]] == [f.blob_id]
    await db.close()


CRASHES = ("mid_visit", "after_sealing", "while_sealing")


async def record_then_crash(data: Path, key: bytes, when: str) -> None:
    """Run in a subprocess (CRASHING_RECORDER): prints the recording id, records 12 batches of both
    tracks into one file, then the process dies (`os._exit(9)`, no cleanup): `mid_visit` with the
    file still open, `after_sealing` once it was sealed but before its row was filed,
    `while_sealing` right after the sealed blob's first chunk."""
    assert when in CRASHES, when
    db, blobs, work = storage(data, key)
    await db.open()
    store = RecordingStore(db, blobs, work)
    rid = await store.create("visit", "dr")
    print(rid, flush=True)
    if when == "while_sealing":
        create = blobs.create

        def create_then_crash(blob_id: str | None = None) -> Any:
            w = create(blob_id)
            if blob_id and blob_id.startswith(FINAL_PREFIX):
                append = w.append

                def append_then_crash(data: Any) -> None:
                    append(data)
                    w.sync()
                    os._exit(9)

                w.append = append_then_crash
            return w

        blobs.create = create_then_crash  # type: ignore[method-assign]
    writer = store.new_writer(rid, owners={"v": "pat", "a": "pat"})
    writer.add_track(TrackSpec("v", "video", "VP8", 90000, group="pat"))
    writer.add_track(TrackSpec("a", "audio", "opus", 48000, group="pat"))
    for n in range(12):
        write_batch(writer, n)
    if when == "mid_visit":
        await asyncio.to_thread(writer.drain, 30)
    else:
        await asyncio.to_thread(writer.close)  # ends the tracks: the file is sealed
    os._exit(9)


CRASHING_RECORDER = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from test_muxer_sealed import record_then_crash
    asyncio.run(record_then_crash(Path(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[4]))
""")


async def crash_a_recorder(data: Path, key: bytes, when: str) -> str:
    """Runs record_then_crash in a real process; returns the id of the recording it crashed in."""
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", CRASHING_RECORDER, str(data), key.hex(),
                         str(Path(__file__).parent), when], capture_output=True, timeout=120)
    assert proc.returncode == 9, proc.stderr.decode(errors="replace")
    return proc.stdout.decode().strip()


async def test_a_crash_leaves_only_encrypted_leftovers_which_startup_removes(tmp_path: Path) -> None:
    data, key = tmp_path / "data", os.urandom(32)
    rid = await crash_a_recorder(data, key, "mid_visit")
    assert plaintext_on_disk(data) == []
    assert list(data.rglob(f"{SPILL_PREFIX}*.tail")), "an unfinished, encrypted spill is what is left"

    db, blobs, work = storage(data, key)
    await db.open()
    store = RecordingStore(db, blobs, work)
    (work / "old-rid").mkdir(parents=True)
    (work / "old-rid" / "v.webm").write_bytes(MARKER)  # a plaintext working file of older versions
    recovered = await store.recover()
    assert recovered["interrupted"] == 1 and recovered["deleted_blobs"] >= 1
    assert not list(data.rglob("rec*.*")) and plaintext_on_disk(data) == []
    rec = await store.get(rid)
    assert rec is not None and rec["state"] == "interrupted" and rec["files"] == []
    assert await store.recover() == {"interrupted": 0, "filed_after_crash": 0, "deleted_blobs": 0}
    await db.close()


@pytest.mark.parametrize("crash", ["after_sealing", "while_sealing"])
async def test_a_crash_around_sealing_keeps_a_sealed_file_and_never_exposes_a_partial_one(
        tmp_path: Path, crash: str) -> None:
    """A real crash (the process `os._exit`s) right after a file was sealed, before its row was
    filed: startup recovery checks the blob and files it, so the visit is not lost. A crash while
    the blob was being sealed: the partial blob is deleted and nothing is listed."""
    data, key = tmp_path / "data", os.urandom(32)
    rid = await crash_a_recorder(data, key, crash)
    assert plaintext_on_disk(data) == []

    db, blobs, work = storage(data, key)
    await db.open()
    store = RecordingStore(db, blobs, work)
    recovered = await store.recover()
    rec = await store.get(rid)
    assert rec is not None and rec["state"] == "interrupted"
    assert not list(data.rglob(f"{SPILL_PREFIX}*")) and not list(data.rglob("*.tail"))
    if crash == "while_sealing":
        assert recovered["filed_after_crash"] == 0 and rec["files"] == []
        assert not list(data.rglob("rec*.*")), "the partial blob is deleted"
    else:
        assert recovered["filed_after_crash"] == 1
        (f,) = rec["files"]
        assert (f["participant"], f["kind"], f["codec"], f["content_type"]) == ("pat", "video", "vp8+opus", "video/webm")
        assert f["frames"] == 2 * 12 * PER_BATCH
        sealed = blobs.read_bytes(f["blob_id"])
        assert len(sealed) == f["size"] and hashlib.sha256(sealed).hexdigest() == f["sha256"]
        assert all(frame(t, i) in sealed for t in ("v", "a") for i in range(12 * PER_BATCH))
        with av.open(io.BytesIO(sealed)) as c:  # the frames are marker payloads, not decodable media
            assert {s.type for s in c.streams} == {"video", "audio"}
            assert c.duration is not None, "the muxer finished the file (cues, duration)"
    assert await store.recover() == {"interrupted": 0, "filed_after_crash": 0, "deleted_blobs": 0}
    await db.close()
