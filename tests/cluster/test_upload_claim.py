"""A tus PATCH whose node loses its claim on the upload mid-request writes nothing more: node A is
stopped (SIGSTOP) past `upload_lease_s` while it holds the upload, node B takes the upload over, and
when A wakes the rest of A's PATCH is refused with 423 upload_busy, the blob untouched by A. B sees
the bytes A had written before the stop (a take-over moves the upload's generation on, so B's own
older writer is not trusted), and the upload completes through B byte-exact."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cluster.conftest import Cluster, token
from tests.pg_cluster import PostgresCluster

pytestmark = pytest.mark.slow

KiB, MiB = 1024, 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_TYPE = {"Content-Type": "application/offset+octet-stream"}


def patient() -> dict[str, str]:  # minted when used: a token made at collection may expire first
    return {"Authorization": "Bearer " + token("pat-ana", "patient")}


def clinician() -> dict[str, str]:
    return {"Authorization": "Bearer " + token("dr-lee", "clinician")}


def _blob_files(blob_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(blob_dir.rglob("*")) if p.is_file()}


async def _until(check: Any, what: str, bound: float = 30.0) -> Any:
    deadline = time.monotonic() + bound
    while not (result := await check()):
        assert time.monotonic() < deadline, f"not within {bound} s: {what}"
        await asyncio.sleep(0.05)
    return result


async def test_a_patch_that_lost_its_claim_stops_writing(
        cluster: Cluster, pg_cluster: PostgresCluster, tmp_path: Path) -> None:
    blob_dir = tmp_path / "shared-blobs"
    blob_dir.mkdir()
    a, b = await cluster.start(2, database_url=pg_cluster.new_database(), blob_dir=str(blob_dir),
                               upload_lease_s=1.5, retention_purge_interval_s=0)
    first, held = 100 * KiB + 7, 3 * MiB // 2  # B's first PATCH; what A receives before its stop
    data = os.urandom(first + held + 64 * KiB + 300 * KiB)
    async with aiohttp.ClientSession() as http:
        async with http.post(b.url + "/v1/messages", headers=patient(),
                             json={"recipient": "dr-lee", "subject": "scan", "body": "text"}) as r:
            assert r.status == 201, await r.text()
            message = (await r.json())["id"]
        meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}"
                        for k, v in {"message": message, "filename": "scan.bin"}.items())
        async with http.post(b.url + "/v1/uploads/", headers={
                **patient(), **TUS, "Upload-Length": str(len(data)), "Upload-Metadata": meta}) as r:
            assert r.status == 201, await r.text()
            upload = r.headers["Location"]
        # B writes a first piece and keeps its writer open (its view: `first` bytes).
        async with http.patch(b.url + upload, data=data[:first], headers={
                **patient(), **TUS, **OFFSET_TYPE, "Upload-Offset": "0"}) as r:
            assert r.status == 204, await r.text()

        # A PATCH into A for the rest, of which A receives `held` bytes, then nothing more for now.
        rest = data[first:first + held + 64 * KiB]
        host, port = a.url.rsplit("//", 1)[1].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write((f"PATCH {upload} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      f"Authorization: {patient()['Authorization']}\r\nTus-Resumable: 1.0.0\r\n"
                      f"Upload-Offset: {first}\r\nContent-Type: application/offset+octet-stream\r\n"
                      f"Content-Length: {len(rest)}\r\n\r\n").encode() + rest[:held])
        await writer.drain()
        (blob,) = [p for p in blob_dir.rglob("*.blob")]

        async def a_wrote() -> bool:  # its first 1 MiB batch is in the blob file
            return blob.stat().st_size > first + 512 * KiB

        await _until(a_wrote, "node A appends what it received")

        a.signal(signal.SIGSTOP)
        try:
            async def b_took_over() -> int | None:  # 423 while A's claim lives
                async with http.head(b.url + upload, headers={**patient(), **TUS}) as r:
                    return int(r.headers["Upload-Offset"]) if r.status == 200 else None

            offset = await _until(b_took_over, "node B takes the upload over")
            # B reopened the blob: it sees the bytes A wrote, not its own older view.
            assert offset > first + 512 * KiB
            before = _blob_files(blob_dir)
        finally:
            a.signal(signal.SIGCONT)

        # A wakes and receives the end of its request's body: nothing of it is written.
        writer.write(rest[held:])
        await writer.drain()
        async with asyncio.timeout(30):
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            assert head.startswith("HTTP/1.1 423"), head
            length = int(next(line.split(":", 1)[1] for line in head.split("\r\n")
                              if line.lower().startswith("content-length:")))
            body = json.loads(await reader.readexactly(length))
        writer.close()
        assert body["error"]["code"] == "upload_busy"
        assert _blob_files(blob_dir) == before
        async with http.head(b.url + upload, headers={**patient(), **TUS}) as r:
            assert r.status == 200 and int(r.headers["Upload-Offset"]) == offset

        # The client resumes at B from the durable offset: the upload is byte-exact.
        async with http.patch(b.url + upload, data=data[offset:], headers={
                **patient(), **TUS, **OFFSET_TYPE, "Upload-Offset": str(offset)}) as r:
            assert r.status == 204, await r.text()
            assert int(r.headers["Upload-Offset"]) == len(data)
        async with http.get(b.url + f"/v1/messages/{message}", headers=patient()) as r:
            (att,) = (await r.json())["attachments"]
        async with http.get(b.url + att["download_url"], headers=clinician()) as r:
            assert r.status == 200
            got = await r.read()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
