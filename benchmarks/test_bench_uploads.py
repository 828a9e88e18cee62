"""Attachment upload and download through a real `mediasrv serve` on 127.0.0.1, against plain file I/O.

The server stores the bytes encrypted (AES-256-GCM chunks) behind tus; the baseline writes and reads
the same bytes with plain Python file I/O (1 MiB blocks, fsync) in the same run. The client streams
from a generator, so neither side holds the file in memory; the server's peak RSS (VmHWM from /proc)
is compared before and after the transfer.

    .venv/bin/python -m pytest loadtest/benchmarks/test_bench_uploads.py --benchmark-only -s
    MEDIASRV_BENCH_UPLOAD_MB=1024 .venv/bin/python -m pytest loadtest/benchmarks/test_bench_uploads.py -s

Nothing asserts on time; the only assertions are correctness (sha256) and that memory stays flat.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from mediasrv.auth import mint_token
from mediasrv.loadtest.procstat import sample

MiB = 1024 * 1024
SIZE_MB = int(os.environ.get("MEDIASRV_BENCH_UPLOAD_MB", "128"))
PATCH_MB = 64  # bytes per tus PATCH request
BLOCK = os.urandom(MiB)
SECRET = "bench-secret-" + "x" * 40
# Peak RSS may grow by buffers and caches, but not with the file size.
FLAT_RSS_LIMIT = 96 * MiB


def _blocks(n_mib: int) -> Iterator[bytes]:
    for i in range(n_mib):
        # Vary each block a little so identical blocks could never be deduplicated anywhere.
        yield i.to_bytes(8, "big") + BLOCK[8:]


def _expected_sha256(n_mib: int) -> str:
    h = hashlib.sha256()
    for block in _blocks(n_mib):
        h.update(block)
    return h.hexdigest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _plain_file_io(path: Path, n_mib: int) -> tuple[float, float]:
    """Seconds to write (with fsync) and to read back the same bytes with plain Python file I/O."""
    t0 = time.perf_counter()
    with open(path, "wb") as fh:
        for block in _blocks(n_mib):
            fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    t1 = time.perf_counter()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while data := fh.read(MiB):
            h.update(data)
    t2 = time.perf_counter()
    path.unlink()
    return t1 - t0, t2 - t1


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, int]]:
    port = _free_port()
    env = {**os.environ, "MEDIASRV_API_SECRET": SECRET, "MEDIASRV_LOG_LEVEL": "WARNING",
           "MEDIASRV_MAX_UPLOAD_BYTES": str(max(SIZE_MB, 1) * MiB * 2)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mediasrv", "serve", "--data-dir", str(tmp_path / "data"),
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "server died")
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _upload_and_download(url: str, n_mib: int) -> tuple[float, float, str]:
    patient = {"Authorization": "Bearer " + mint_token(SECRET, identity="pat-bench", role="patient")}
    clinician = {"Authorization": "Bearer " + mint_token(SECRET, identity="dr-bench", role="clinician")}
    with requests.Session() as s:
        msg = s.post(url + "/v1/messages", headers=patient,
                     json={"recipient": "dr-bench", "subject": "bench", "body": "bench"}).json()
        meta = "message " + base64.b64encode(msg["id"].encode()).decode()
        t0 = time.perf_counter()
        created = s.post(url + "/v1/uploads/", headers={
            **patient, "Tus-Resumable": "1.0.0", "Upload-Length": str(n_mib * MiB),
            "Upload-Metadata": meta})
        upload = url + created.headers["Location"]
        blocks = _blocks(n_mib)
        offset = 0
        while offset < n_mib * MiB:
            n = min(PATCH_MB, n_mib - offset // MiB)
            body = (next(blocks) for _ in range(n))
            resp = s.patch(upload, data=body, headers={
                **patient, "Tus-Resumable": "1.0.0", "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream"})  # chunked: streamed
            assert resp.status_code == 204, resp.text
            offset = int(resp.headers["Upload-Offset"])
        t1 = time.perf_counter()
        att = s.get(f"{url}/v1/messages/{msg['id']}", headers=patient).json()["attachments"][0]
        assert att["state"] == "ready"
        h = hashlib.sha256()
        t2 = time.perf_counter()
        with s.get(url + att["download_url"], headers=clinician, stream=True) as resp:
            for data in resp.iter_content(MiB):
                h.update(data)
        t3 = time.perf_counter()
    return t1 - t0, t3 - t2, h.hexdigest()


def test_upload_download_vs_plain_file_io(
    benchmark: pytest.FixtureRequest, server: tuple[str, int], tmp_path: Path,
    speedup_report: Callable[..., None],
) -> None:
    url, pid = server
    n_mib = SIZE_MB
    plain_write_s, plain_read_s = _plain_file_io(tmp_path / "plain.bin", n_mib)
    before = sample(pid)
    assert before is not None
    up_s, down_s, digest = benchmark.pedantic(
        _upload_and_download, args=(url, n_mib), rounds=1, iterations=1)
    after = sample(pid)
    assert after is not None
    assert digest == _expected_sha256(n_mib)
    growth = after.peak_rss_bytes - before.peak_rss_bytes
    mb = n_mib * MiB / 1e6
    info = {
        "size_mib": n_mib,
        "upload_MBps": round(mb / up_s, 1), "download_MBps": round(mb / down_s, 1),
        "plain_write_MBps": round(mb / plain_write_s, 1), "plain_read_MBps": round(mb / plain_read_s, 1),
        "upload_vs_plain_write": round(plain_write_s / up_s, 3),
        "download_vs_plain_read": round(plain_read_s / down_s, 3),
        "server_peak_rss_before_MiB": round(before.peak_rss_bytes / MiB, 1),
        "server_peak_rss_after_MiB": round(after.peak_rss_bytes / MiB, 1),
    }
    benchmark.extra_info.update(info)
    print("\nuploads:", info)
    speedup_report(f"tus upload {n_mib} MiB vs plain write", plain_write_s, up_s)
    speedup_report(f"download {n_mib} MiB vs plain read", plain_read_s, down_s)
    assert growth < FLAT_RSS_LIMIT, f"server peak RSS grew by {growth / MiB:.0f} MiB"
