"""tus across nodes: two mediasrv nodes on different loopback addresses share one PostgreSQL database
and one blob directory; an upload is written by one node at a time and resumes on the other at the
exact offset, also after the node writing it is killed (a real process, SIGKILL)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from ctl_helpers import TUS, Server, create_upload, make_settings
from tusclient import client as tus_client
from tusclient.uploader import Uploader

from tests.pg_cluster import PostgresCluster

PATIENT = ("pat-ana", "patient")
CLINICIAN = "dr-lee"
KiB, MiB = 1024, 1024 * 1024
SECRET = "node-shared-secret-" + "x" * 40
OFFSET_TYPE = {"Content-Type": "application/offset+octet-stream"}


def _shared(tmp_path: Path, database_url: str, lease_s: float) -> dict[str, Any]:
    """What the nodes of one cluster share: database, blob directory, secrets."""
    key = base64.b64encode(hashlib.sha256(str(tmp_path).encode()).digest()).decode()
    blobs = tmp_path / "shared-blobs"
    blobs.mkdir(exist_ok=True)
    return {"database_url": database_url, "blob_dir": str(blobs), "api_secret": SECRET,
            "storage_key": key, "upload_lease_s": lease_s}


async def _node(tmp_path: Path, name: str, host: str, shared: dict[str, Any]) -> Server:
    srv = Server(make_settings(tmp_path / name, **shared), host=host)
    await srv.start()
    return srv


@pytest.fixture
async def nodes(tmp_path: Path, pg_cluster: PostgresCluster) -> AsyncIterator[tuple[Server, Server]]:
    shared = _shared(tmp_path, pg_cluster.new_database(), lease_s=30.0)
    a = await _node(tmp_path, "a", "127.0.0.2", shared)
    b = await _node(tmp_path, "b", "127.0.0.3", shared)
    yield a, b
    await a.stop()
    await b.stop()


async def _head(srv: Server, upload: str) -> aiohttp.ClientResponse:
    return await srv.request("HEAD", upload, who=PATIENT, headers=TUS)


async def _patch(srv: Server, upload: str, offset: int, data: bytes) -> aiohttp.ClientResponse:
    return await srv.request("PATCH", upload, who=PATIENT, data=data,
                             headers={**TUS, **OFFSET_TYPE, "Upload-Offset": str(offset)})


async def _download(srv: Server, message_id: str) -> tuple[dict[str, Any], bytes]:
    resp = await srv.request("GET", f"/v1/messages/{message_id}", who=PATIENT)
    (att,) = (await resp.json())["attachments"]
    resp = await srv.request("GET", att["download_url"], who=(CLINICIAN, "clinician"))
    assert resp.status == 200
    return att, await resp.read()


async def test_an_upload_written_in_turns_by_two_nodes_is_byte_exact(nodes: tuple[Server, Server]) -> None:
    a, b = nodes
    data = os.urandom(MiB + 777)
    msg = await a.send_message(PATIENT, CLINICIAN)
    upload = (await create_upload(a, PATIENT, msg["id"], len(data))).headers["Location"]
    offset, step, turn = 0, 100 * KiB + 13, 0  # pieces not aligned to the blob's 64 KiB chunks
    while offset < len(data):
        writer, other = (a, b) if turn % 2 == 0 else (b, a)
        resp = await _patch(writer, upload, offset, data[offset: offset + step])
        assert resp.status == 204, await resp.text()
        offset = int(resp.headers["Upload-Offset"])
        if offset < len(data):  # the other node reopens the blob at exactly this offset
            resp = await _head(other, upload)
            assert resp.status == 200 and int(resp.headers["Upload-Offset"]) == offset
        turn += 1
    assert turn == 11
    for node in (a, b):
        att, got = await _download(node, msg["id"])
        assert att["state"] == "ready" and att["sha256"] == hashlib.sha256(data).hexdigest()
        assert got == data


async def test_while_one_node_writes_the_other_answers_423(nodes: tuple[Server, Server]) -> None:
    a, b = nodes
    data = os.urandom(300 * KiB)
    msg = await a.send_message(PATIENT, CLINICIAN)
    upload = (await create_upload(a, PATIENT, msg["id"], len(data))).headers["Location"]
    go_on = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield data[: 100 * KiB]
        await go_on.wait()
        yield data[100 * KiB:]

    assert a.session is not None
    patch_on_a = asyncio.create_task(a.session.patch(upload, data=slow_body(), headers={
        **TUS, **OFFSET_TYPE, **a.auth(*PATIENT), "Upload-Offset": "0", "Content-Length": str(len(data))}))
    for _ in range(500):  # until A's request holds the upload
        if _claimed(a, upload):
            break
        await asyncio.sleep(0.01)
    for resp in (await _head(b, upload), await _patch(b, upload, 0, b"x")):
        assert resp.status == 423
        assert resp.headers["Tus-Resumable"] == "1.0.0" and resp.headers["Retry-After"] == "1"
    assert (await resp.json())["error"]["code"] == "upload_busy"  # the PATCH's body (HEAD has none)
    # A request on the node that writes waits its turn instead (the same node's lock).
    go_on.set()
    resp = await patch_on_a
    assert resp.status == 204 and resp.headers["Upload-Offset"] == str(len(data))
    _att, got = await _download(b, msg["id"])
    assert got == data


def _claimed(srv: Server, upload: str) -> bool:
    from mediasrv.api.appkeys import UPLOADS

    return upload.rsplit("/", 1)[1] in srv.app[UPLOADS]._claims


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def _start_process_node(tmp_path: Path, host: str, shared: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port(host)
    env = {**os.environ, **{f"MEDIASRV_{k.upper()}": str(v) for k, v in shared.items()},
           "MEDIASRV_MEDIA_BIND_ADDRESSES": host, "MEDIASRV_RETENTION_PURGE_INTERVAL_S": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "mediasrv.cli", "serve", "--host", host, "--port", str(port),
                             "--data-dir", str(tmp_path / "node-a")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://{host}:{port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            try:
                async with session.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        return proc, url
            except aiohttp.ClientError:
                pass
            assert proc.poll() is None, "node A exited"
            await asyncio.sleep(0.05)
    raise AssertionError("node A did not start")


async def test_tuspy_resumes_on_node_b_after_node_a_is_killed_mid_patch(
        tmp_path: Path, pg_cluster: PostgresCluster) -> None:
    lease_s = 1.5
    shared = _shared(tmp_path, pg_cluster.new_database(), lease_s)
    proc, a_url = await _start_process_node(tmp_path, "127.0.0.2", shared)
    b = await _node(tmp_path, "b", "127.0.0.3", shared)
    try:
        data = os.urandom(6 * MiB + 4321)
        path = tmp_path / "scan.bin"
        path.write_bytes(data)
        msg = await b.send_message(PATIENT, CLINICIAN)
        headers = b.auth(*PATIENT)
        # Through A: tuspy, 512 KiB chunks, stopped at 2 MiB.
        first = Uploader(file_path=str(path), client=tus_client.TusClient(a_url + "/v1/uploads/", headers=headers),
                         chunk_size=512 * KiB, metadata={"message": msg["id"], "filename": "scan.bin"})
        await asyncio.to_thread(first.upload, stop_at=2 * MiB)
        upload = first.url.split(a_url, 1)[1]

        # A PATCH into A that stalls after 1.5 MiB; A is killed while it holds the upload.
        host, port = a_url.rsplit("//", 1)[1].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write((f"PATCH {upload} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {headers['Authorization']}\r\n"
                      f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {2 * MiB}\r\n"
                      f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(data) - 2 * MiB}\r\n\r\n"
                      ).encode() + data[2 * MiB: 2 * MiB + 3 * MiB // 2])
        await writer.drain()
        for _ in range(500):  # until A holds the claim
            row = await _lease(b, upload)
            if row is not None and row["holder"]:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # A appends what arrived
        killed_at = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        writer.transport.abort()

        # B: busy while A's claim lives, then the upload is B's at the offset A left on disk.
        resp = await _head(b, upload)
        assert resp.status == 423
        for _ in range(1000):
            resp = await _head(b, upload)
            if resp.status != 423:
                break
            await asyncio.sleep(0.02)
        waited = time.monotonic() - killed_at
        assert resp.status == 200
        offset = int(resp.headers["Upload-Offset"])
        assert 2 * MiB <= offset <= 2 * MiB + 3 * MiB // 2
        assert waited < lease_s + 5

        second = await asyncio.to_thread(
            Uploader, file_path=str(path), client=tus_client.TusClient(b.url + "/v1/uploads/", headers=headers),
            url=b.url + upload, chunk_size=1 * MiB)
        assert second.offset == offset
        await asyncio.to_thread(second.upload)
        att, got = await _download(b, msg["id"])
        assert att["state"] == "ready" and att["sha256"] == hashlib.sha256(data).hexdigest()
        assert got == data
        print(f"\nnode A killed holding the upload at {offset} bytes durable; node B took it over "
              f"{waited:.2f} s later (upload_lease_s={lease_s})")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await b.stop()


async def _lease(srv: Server, upload: str) -> Any:
    from mediasrv.api.appkeys import DB

    return await srv.app[DB].fetchone("SELECT holder, expires_at FROM upload_leases WHERE upload_id = ?",
                                      (upload.rsplit("/", 1)[1],))


async def test_the_pending_quota_holds_across_nodes_creating_at_once(
        tmp_path: Path, pg_cluster: PostgresCluster) -> None:
    """Both nodes create an upload for the same sender at the same moment, each of which fits the
    quota alone but not together: exactly one is created, every round, and no blob is left over."""
    shared = {**_shared(tmp_path, pg_cluster.new_database(), lease_s=30.0),
              "upload_quota_pending_bytes": 1000 * KiB, "upload_quota_daily_bytes": 0}
    a = await _node(tmp_path, "a", "127.0.0.2", shared)
    b = await _node(tmp_path, "b", "127.0.0.3", shared)
    try:
        for _ in range(8):
            msg = await a.send_message(PATIENT, CLINICIAN)
            first, second = await asyncio.gather(create_upload(a, PATIENT, msg["id"], 600 * KiB),
                                                 create_upload(b, PATIENT, msg["id"], 600 * KiB))
            assert sorted([first.status, second.status]) == [201, 413]
            created = first if first.status == 201 else second
            node = a if created is first else b
            resp = await node.request("DELETE", created.headers["Location"], who=PATIENT, headers=TUS)
            assert resp.status == 204
        assert list(Path(shared["blob_dir"]).rglob("*.blob")) == []
    finally:
        await a.stop()
        await b.stop()
