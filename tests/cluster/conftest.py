"""A real cluster for the tests: a redis-server and mediasrv nodes as subprocesses, each node on its
own loopback address (127.0.0.2, 127.0.0.3, ...), all inside the test run's network namespace."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mediasrv.auth import mint_token

SECRET = "cluster-test-secret-" + "x" * 40
STORAGE_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # 32 bytes, base64
LEASE_TTL_S = 1.5  # short, so failover tests wait little


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed (scripts/bootstrap.sh installs it)")
        self.port = free_port("127.0.0.1")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Node:
    """One `mediasrv serve` process of the cluster."""

    def __init__(self, name: str, host: str, data_dir: Path, redis_url: str, cpu: int | None = None,
                 **settings: Any) -> None:
        self.name = name
        self.host = host
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.data_dir = data_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASRV_")}
        env.update({
            "MEDIASRV_REDIS_URL": redis_url, "MEDIASRV_NODE_ID": name,
            "MEDIASRV_API_SECRET": SECRET, "MEDIASRV_STORAGE_KEY": STORAGE_KEY,
            "MEDIASRV_MEDIA_BIND_ADDRESSES": host, "MEDIASRV_CLUSTER_LEASE_TTL_S": str(LEASE_TTL_S),
            "MEDIASRV_LOG_LEVEL": "WARNING",
        })
        env.update({"MEDIASRV_" + k.upper(): str(v) for k, v in settings.items()})
        self.log = open(data_dir.parent / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop)
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []  # benchmarks: one core each
        self.proc = subprocess.Popen(
            [*pin, sys.executable, "-m", "mediasrv", "serve", "--host", host, "--port", str(self.port),
             "--data-dir", str(data_dir)], env=env, stdout=self.log, stderr=subprocess.STDOUT)

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"node {self.name} exited: {self.output()}")
                try:
                    async with http.get(self.url + "/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node {self.name} did not start: {self.output()}")
                await asyncio.sleep(0.1)

    def output(self) -> str:
        self.log.flush()
        return (self.data_dir.parent / f"{self.name}.log").read_text(errors="replace")[-3000:]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def token(identity: str, role: str, room: str | None = None, ttl_s: int = 600, **kw: Any) -> str:
    return mint_token(SECRET, identity=identity, role=role, room=room, ttl_s=ttl_s, **kw)


def admin() -> dict[str, str]:
    return {"Authorization": "Bearer " + token("ops", "admin")}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


class Cluster:
    def __init__(self, tmp_path: Path, redis: RedisServer) -> None:
        self.tmp_path = tmp_path
        self.redis = redis
        self.nodes: list[Node] = []

    async def start(self, count: int = 2, cpus: list[int] | None = None, **settings: Any) -> list[Node]:
        new = [Node(f"n{len(self.nodes) + i + 1}", f"127.0.0.{len(self.nodes) + i + 2}",
                    self.tmp_path / f"data{len(self.nodes) + i + 1}", self.redis.url,
                    cpu=cpus[i] if cpus else None, **settings)
               for i in range(count)]
        self.nodes += new
        await asyncio.gather(*(n.wait_ready() for n in new))
        return new

    def by_url(self, url: str) -> Node:
        return next(n for n in self.nodes if url.startswith(n.url))

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


@pytest.fixture
async def cluster(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, redis_server)
    try:
        yield c
    finally:
        c.stop()
