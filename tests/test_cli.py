"""The command line: `mediasrv token` and `mediasrv serve` as an operator runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from mediasrv.auth import verify_token


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mediasrv", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_token_command_mints_a_token_the_server_accepts(tmp_path):
    data = tmp_path / "data"
    out = _run("token", "--data-dir", str(data), "--room", "visit1", "--identity", "dr-lee",
               "--role", "clinician", "--ttl", "120")
    assert out.returncode == 0, out.stderr
    secret = (data / "api_secret").read_text().strip()
    ident = verify_token(secret, out.stdout.strip(), room="visit1")
    assert (ident.sub, ident.role) == ("dr-lee", "clinician")
    bad = _run("token", "--data-dir", str(data), "--room", "visit1", "--identity", "ops", "--role", "admin")
    assert bad.returncode == 2 and "admin tokens are not bound to a room" in bad.stderr


def test_token_uses_the_secret_from_the_environment(tmp_path):
    out = _run("token", "--data-dir", str(tmp_path), "--identity", "ops", "--role", "admin",
               env={"MEDIASRV_API_SECRET": "x" * 48})
    assert verify_token("x" * 48, out.stdout.strip()).is_admin


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int) -> None:
    for _ in range(50):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                assert r.status == 200
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"server never answered /healthz on port {port}")


def test_serve_starts_with_zero_config_and_says_where_it_listens(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mediasrv", "serve", "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "get a token" in line:
                break
        text = "".join(lines)
        assert f"listening on http://127.0.0.1:{port}" in text, text
        assert "generated API secret" in text and (tmp_path / "data" / "api_secret").exists()
        while "media (UDP, all peers): 127.0.0.1:" not in text and time.monotonic() < deadline:
            text += proc.stdout.readline()  # printed once the media plane has bound its port
        assert "media (UDP, all peers): 127.0.0.1:" in text, text
        _wait_healthy(port)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


def test_serve_on_port_zero_listens_on_a_free_port_and_says_which(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "mediasrv", "serve", "--port", "0"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        text = ""
        for _ in range(10):  # the data-dir notes come first
            text += proc.stdout.readline()
            if "listening on" in text:
                break
        assert "listening on http://127.0.0.1:" in text, text
        port = int(text.split("listening on http://127.0.0.1:")[1].split()[0])
        assert port != 0
        _wait_healthy(port)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


def test_serve_on_a_port_in_use_says_so_and_exits(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "mediasrv", "serve", "--port", str(port)],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_listening_on_a_name_with_two_addresses_uses_one_port_for_both(monkeypatch):
    """A host name may resolve to several addresses (as aiohttp, every one is listened on); with
    port 0 they share the port picked, so the printed URL works on each."""
    from mediasrv.cli import listen_http

    real = socket.getaddrinfo

    def two_addresses(host, port, *args, **kw):
        if host != "media.test":
            return real(host, port, *args, **kw)
        return [info for a in ("127.0.0.1", "127.0.0.2") for info in real(a, port, *args, **kw)]

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    sockets = listen_http("media.test", 0)
    try:
        assert [s.getsockname()[0] for s in sockets] == ["127.0.0.1", "127.0.0.2"]
        port = sockets[0].getsockname()[1]
        assert port != 0 and sockets[1].getsockname()[1] == port
        for address in ("127.0.0.1", "127.0.0.2"):
            with socket.create_connection((address, port), timeout=5):
                pass  # the listening socket of that address takes it (its backlog, not accepted)
    finally:
        for s in sockets:
            s.close()
