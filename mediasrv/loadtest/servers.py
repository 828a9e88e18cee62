"""Servers the harness starts itself, each a subprocess bounded in time and stopped at the end.

`local_server(kind, ...)` yields a `Target` with the process id (for CPU and memory) and, for
mediasrv, a reader of its own counters (/metrics) to check the generator against.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp

from mediasrv.auth import mint_token
from mediasrv.loadtest.runner import Target

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
KINDS = ("mediasrv", "aiortc-sfu", "janus")


class ServerStartError(RuntimeError):
    """The server did not come up; the message includes the tail of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                async with http.get(url) as r:
                    if r.status < 500:
                        return
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.2)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise ServerStartError(f"{url} not ready (exit code {proc.poll()}):\n{tail}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def parse_prometheus(text: str) -> dict[str, float]:
    """Unlabelled samples and label-summed totals of a Prometheus text exposition (and the
    per-worker media samples under their labelled names)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
        if name.startswith(("mediasrv_worker_", "mediasrv_media_worker_")) and "{" in name_part:
            out[name_part] = float(value)  # per-worker samples kept by label too (balance)
    return out


def mediasrv_metrics(url: str, secret: str) -> Callable[[], Awaitable[str]]:
    """Reads mediasrv's /metrics (as text) with an admin token minted from the secret."""
    async def read() -> str:
        token = mint_token(secret, identity="loadtest", role="admin", ttl_s=600)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
                http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}) as r:
            r.raise_for_status()
            return await r.text()

    return read


def mediasrv_counters(url: str, secret: str) -> Callable[[], Awaitable[dict[str, float]]]:
    text = mediasrv_metrics(url, secret)

    async def read() -> dict[str, float]:
        return parse_prometheus(await text())

    return read


@contextlib.asynccontextmanager
async def local_server(kind: str, workdir: Path | None = None, host: str = "127.0.0.1") -> AsyncIterator[Target]:
    if kind not in KINDS:
        raise ValueError(f"unknown server kind {kind!r}; one of {', '.join(KINDS)}")
    if kind == "janus":
        from mediasrv.loadtest.janus import local_janus

        async with local_janus(workdir) as target:
            yield target
        return
    tmp = tempfile.TemporaryDirectory(prefix=f"loadtest-{kind}-") if workdir is None else None
    base = Path(tmp.name) if tmp else workdir
    assert base is not None
    base.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    secret = secrets.token_urlsafe(32)
    url = f"http://{host}:{port}"
    env = {**os.environ, "MEDIASRV_API_SECRET": secret, "MEDIASRV_LOG_LEVEL": "WARNING",
           "MEDIASRV_MEDIA_BIND_ADDRESSES": host, "MEDIASRV_MEDIA_ANNOUNCED_ADDRESSES": host}
    if kind == "mediasrv":
        cmd = [sys.executable, "-m", "mediasrv", "serve", "--host", host, "--port", str(port),
               "--data-dir", str(base / "data")]
        health = f"{url}/healthz"
    else:
        cmd = [sys.executable, "-m", "mediasrv.loadtest.baselines.aiortc_sfu", "--host", host, "--port", str(port)]
        health = f"{url}/healthz"
    log_path = base / f"{kind}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        await wait_http(health, proc, log_path)
        counters = mediasrv_counters(url, secret) if kind == "mediasrv" else None
        metrics = mediasrv_metrics(url, secret) if kind == "mediasrv" else None
        yield Target(name=kind, url=url, api_secret=secret, pid=proc.pid, counters=counters,
                     metrics_text=metrics)
    finally:
        stop_process(proc)
        if tmp:
            tmp.cleanup()
