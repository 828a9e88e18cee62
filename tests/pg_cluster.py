"""A throwaway PostgreSQL server for tests: initdb into a temporary directory, `postgres` on
127.0.0.1 at a free port (run as the `postgres` user when the tests run as root, which initdb
refuses), durability off (fsync) since nothing outlives the session, an empty schema per test.

    url = pg_cluster.new_database()   # postgresql://postgres@127.0.0.1:<port>/postgres?options=-csearch_path%3Dt<n>

`pg_cluster` is a session fixture (one server for every test of a run); tests that need it skip when
no PostgreSQL is installed (scripts/bootstrap.sh installs Debian's `postgresql`). `database_url` is
the setting of a test that runs on both engines: '' (SQLite in its data dir), then a new PostgreSQL
database. tests/conftest.py makes both fixtures available everywhere.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def postgres_bindir() -> Path | None:
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))
    return Path(dirs[-1]) if dirs else None


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    def __init__(self, bindir: Path, host: str = "127.0.0.1") -> None:
        self.bindir, self.host = bindir, host
        self.root = Path(tempfile.mkdtemp(prefix="mediasrv-pg-"))
        self.data = self.root / "data"
        self.port = _free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count()
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def start(self) -> PostgresCluster:
        subprocess.run([*self._as, str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        settings = {"listen_addresses": self.host, "port": str(self.port),
                    "unix_socket_directories": str(self.root), "fsync": "off",
                    "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "200",
                    "shared_buffers": "32MB", "log_min_messages": "fatal"}
        args = [a for k, v in settings.items() for a in ("-c", f"{k}={v}")]
        self.proc = subprocess.Popen([*self._as, str(self.bindir / "postgres"), "-D", str(self.data), *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.sql("SELECT 1")
                return self
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("postgres did not start") from None
                time.sleep(0.05)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=2) as conn:
            cur = conn.execute(statement.encode())
            return list(cur.fetchall()) if cur.description else []

    def new_database(self) -> str:
        """The URL of a new, empty database: a schema of its own, first on the search path (a
        schema takes milliseconds; a CREATE DATABASE, 0.1-0.2 s)."""
        name = f"t{next(self._names)}"
        self.sql(f"CREATE SCHEMA {name}")
        return self.url() + f"?options=-csearch_path%3D{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT to the postmaster itself (not runuser): fast shutdown, clients disconnected.
            try:
                pid = int((self.data / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGINT)
                self.proc.wait(15)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    cluster = PostgresCluster(bindir).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return ""
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.new_database()
