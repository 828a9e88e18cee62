"""The encrypted blob store: round trips, resume after reopen/crash, tamper and truncation detection."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest

from mediasrv.storage.blobs import HEADER_LEN, TAG_LEN, BlobStore
from mediasrv.storage.crypto import IntegrityError

CHUNK = 64


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", os.urandom(32), chunk_size=CHUNK)


def _data(n: int) -> bytes:
    return bytes((i * 7 + i // 251) % 256 for i in range(n))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 17])
def test_round_trip_and_sha256(store: BlobStore, size: int) -> None:
    data = _data(size)
    blob_id, sha = store.write_bytes(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.read_bytes(blob_id) == data


def test_appends_of_any_size_and_ranges(store: BlobStore) -> None:
    data = _data(1000)
    writer = store.create()
    for piece in (data[:3], data[3:70], data[70:500], data[500:]):
        writer.append(piece)
    writer.finish()
    with store.open_reader(writer.blob_id) as reader:
        assert reader.length == 1000
        for start, end in ((0, 1), (63, 65), (64, 128), (999, 1000), (100, 900)):
            assert b"".join(reader.iter_range(start, end, block=50)) == data[start:end]
        reader.seek(-10, os.SEEK_END)
        assert reader.read() == data[-10:]


def test_plaintext_never_on_disk(store: BlobStore) -> None:
    marker = b"PATIENT-NOTE-" * 40
    writer = store.create()
    writer.append(marker[:100])
    writer.sync()  # the tail (incomplete last chunk) is on disk now too
    for path in store.root.rglob("*"):
        if path.is_file():
            assert b"PATIENT-NOTE" not in path.read_bytes()
    writer.append(marker[100:])
    writer.finish()
    for path in store.root.rglob("*"):
        if path.is_file():
            assert b"PATIENT-NOTE" not in path.read_bytes()


def test_resume_at_exact_offset_after_reopen(store: BlobStore) -> None:
    data = _data(10 * CHUNK + 33)
    writer = store.create()
    writer.append(data[:4 * CHUNK + 5])  # ends inside a chunk: the tail must survive
    writer.sync()
    writer.close()
    again = store.open_writer(writer.blob_id)
    assert again.size == 4 * CHUNK + 5
    again.append(data[again.size:])
    assert again.finish() == hashlib.sha256(data).hexdigest()
    assert store.read_bytes(writer.blob_id) == data


def test_crash_before_tail_rewrite_resumes_at_last_durable_byte(store: BlobStore) -> None:
    data = _data(6 * CHUNK)
    writer = store.create()
    writer.append(data[:CHUNK // 2])
    writer.sync()
    writer.append(data[CHUNK // 2: 3 * CHUNK + 10])
    writer._fh.flush()  # chunks reached the file, but the process "dies" before sync() rewrote the tail
    writer.close()
    again = store.open_writer(writer.blob_id)
    # The old tail is stale (its bytes went into chunk 0): resume after the last whole chunk.
    assert again.size == 3 * CHUNK
    again.append(data[again.size:])
    again.finish()
    assert store.read_bytes(writer.blob_id) == data


def test_torn_chunk_is_dropped(store: BlobStore) -> None:
    data = _data(4 * CHUNK)
    writer = store.create()
    writer.append(data[: 2 * CHUNK + 1])
    writer.sync()
    writer.close()
    with open(store.path(writer.blob_id), "ab") as fh:
        fh.write(b"\x00" * 20)  # half of a chunk record written before a crash
    again = store.open_writer(writer.blob_id)
    assert again.size == 2 * CHUNK + 1
    again.append(data[again.size:])
    again.finish()
    assert store.read_bytes(writer.blob_id) == data


def test_finished_blob_cannot_be_reopened_for_writing(store: BlobStore) -> None:
    blob_id, _ = store.write_bytes(b"done")
    with pytest.raises(ValueError):
        store.open_writer(blob_id)


def _records(store: BlobStore, blob_id: str) -> tuple[bytes, list[bytes]]:
    raw = store.path(blob_id).read_bytes()
    body = raw[HEADER_LEN:]
    size = CHUNK + TAG_LEN
    return raw[:HEADER_LEN], [body[i:i + size] for i in range(0, len(body), size)]


def test_truncation_is_detected(store: BlobStore) -> None:
    blob_id, _ = store.write_bytes(_data(4 * CHUNK + 9))
    header, records = _records(store, blob_id)
    store.path(blob_id).write_bytes(header + b"".join(records[:-1]))  # drop the final chunk
    with pytest.raises(IntegrityError), store.open_reader(blob_id) as reader:
        reader.read()


def test_reordering_is_detected(store: BlobStore) -> None:
    blob_id, _ = store.write_bytes(_data(4 * CHUNK + 9))
    header, records = _records(store, blob_id)
    records[0], records[1] = records[1], records[0]
    store.path(blob_id).write_bytes(header + b"".join(records))
    with pytest.raises(IntegrityError), store.open_reader(blob_id) as reader:
        reader.read()


def test_tampering_and_wrong_key_are_detected(store: BlobStore, tmp_path: Path) -> None:
    blob_id, _ = store.write_bytes(_data(3 * CHUNK))
    other = BlobStore(store.root, os.urandom(32), chunk_size=CHUNK)
    with pytest.raises(IntegrityError), other.open_reader(blob_id) as reader:
        reader.read()
    path = store.path(blob_id)
    raw = bytearray(path.read_bytes())
    raw[HEADER_LEN + 5] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError), store.open_reader(blob_id) as reader:
        reader.read()


def test_header_records_chunk_size(store: BlobStore) -> None:
    blob_id, _ = store.write_bytes(b"x")
    assert struct.unpack(">I", store.path(blob_id).read_bytes()[4:8])[0] == CHUNK


def test_malformed_ids_are_refused(store: BlobStore) -> None:
    for bad in ("../../etc/passwd", "short", "a" * 100, "abc/def" * 4):
        with pytest.raises(ValueError):
            store.path(bad)
