"""A browser in its own network namespace, for tests of restrictive networks (blocked UDP, only 443).

The test process already runs in a private namespace (`unshare -n`). `BrowserNetns` creates a second,
child namespace held open by a sleeping process, joined to the test's by a veth pair carrying 127.x
addresses (route_localnet on both ends): the test side is `HOST_ADDR` (127.0.2.1), the browser side
`BROWSER_ADDR` (127.0.2.2). The browser's own loopback is private to it, so anything it must reach
(HTTP, media, TURN) has to listen on `HOST_ADDR`, e.g. `media_bind_addresses=["127.0.2.1"]` and
`await listen_on(server, HOST_ADDR)` for the HTTP site. Firewall rules (nftables, output hook of the
browser's namespace, loopback always allowed) model the client's network:

    ns.block_udp()              # nothing UDP leaves the browser's machine; TCP anywhere
    ns.allow_only_tcp(443)      # only TCP to port 443 leaves (the strict hospital guest network)
    ns.open()                   # remove the rules

Usage from a test module (the fixtures are assigned to module names so pytest finds them;
tests/browser/test_turn_browser.py is a full example with coturn and a trusted test CA):

    from . import netns
    from .netns import HOST_ADDR, listen_on
    browser_netns, netns_browser, ns_home = netns.browser_netns, netns.netns_browser, netns.ns_home

    from tests.conftest import start_server

    async def test_x(netns_browser, browser_netns, tmp_path):
        browser_netns.allow_only_tcp(443)
        srv = await start_server(tmp_path / "d", media_bind_addresses=[HOST_ADDR])
        url = await listen_on(srv, HOST_ADDR)
        page = await (await netns_browser.new_context()).new_page()
        await goto(page, f"{url}/healthz")  # conftest.goto: reloads on ERR_NETWORK_CHANGED

`netns_browser` is Playwright's Chromium (same flags as conftest's `browser`) launched through a small
wrapper that `nsenter`s the namespace; its HOME is a temporary directory holding an NSS database, so
`trust_ca(ns_home, ca_pem)` makes it trust a test CA (used for a TURN server's TLS certificate).
`run_in(*argv)` runs any command inside the browser's namespace. Needs root (the test's `unshare -n`),
iproute2, util-linux (nsenter), nftables and, for `trust_ca`, libnss3-tools (certutil).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, async_playwright

from .conftest import CHROMIUM, FLAGS

HOST_ADDR = "127.0.2.1"
BROWSER_ADDR = "127.0.2.2"
_HOST_IF = "msbr0"
_NS_IF = "msbr1"
_TABLE = "mediasrv_browser"


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=10)


class BrowserNetns:
    """A child network namespace for a browser, veth-joined to the test's namespace."""

    def __init__(self) -> None:
        self._holder: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._holder is not None, "namespace not started"
        return self._holder.pid

    @property
    def netns_path(self) -> str:
        return f"/proc/{self.pid}/ns/net"

    def start(self) -> BrowserNetns:
        for tool in ("ip", "nsenter", "nft", "unshare"):
            if not shutil.which(tool):
                pytest.fail(f"{tool} not found: run scripts/bootstrap.sh with MEDIASRV_BOOTSTRAP_TEST=1")
        self._holder = subprocess.Popen(["unshare", "-n", "sleep", "infinity"])
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 5
        while os.readlink(self.netns_path) == own:  # unshare has not switched yet
            if time.monotonic() > deadline:
                raise RuntimeError("namespace holder did not start")
            time.sleep(0.01)
        _sh("ip", "link", "add", _HOST_IF, "type", "veth", "peer", "name", _NS_IF, "netns", str(self.pid))
        _sh("ip", "addr", "add", f"{HOST_ADDR}/30", "dev", _HOST_IF)
        _sh("ip", "link", "set", _HOST_IF, "up")
        # 127/8 is martian on anything but lo unless route_localnet is set on the interface.
        _write_sysctl(f"net/ipv4/conf/{_HOST_IF}/route_localnet", "1")
        _write_sysctl("net/ipv4/conf/all/route_localnet", "1")
        self.run_in("ip", "link", "set", "lo", "up")
        self.run_in("ip", "addr", "add", f"{BROWSER_ADDR}/30", "dev", _NS_IF)
        self.run_in("ip", "link", "set", _NS_IF, "up")
        self.run_in("sysctl", "-qw", f"net.ipv4.conf.{_NS_IF}.route_localnet=1",
                    "net.ipv4.conf.all.route_localnet=1")
        return self

    def run_in(self, *argv: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Runs a command inside the browser's namespace (raises on failure)."""
        return subprocess.run(["nsenter", f"--net={self.netns_path}", "--", *argv], check=True,
                              capture_output=True, timeout=15, input=input)

    def _rules(self, body: str) -> None:
        self.open()
        ruleset = (f"table inet {_TABLE} {{\n  chain output {{\n"
                   f"    type filter hook output priority 0; policy accept;\n"
                   f"    oifname \"lo\" accept\n{body}  }}\n}}\n")
        self.run_in("nft", "-f", "-", input=ruleset.encode())

    def block_udp(self) -> None:
        """Drops every UDP datagram the browser sends off its machine."""
        self._rules("    meta l4proto udp drop\n")

    def allow_only_tcp(self, port: int) -> None:
        """Only TCP to `port` leaves the browser's namespace; everything else outbound is dropped."""
        self._rules(f"    tcp dport {port} accept\n    drop\n")

    def open(self) -> None:
        """Removes the firewall rules."""
        subprocess.run(["nsenter", f"--net={self.netns_path}", "--", "nft", "delete", "table", "inet", _TABLE],
                       capture_output=True, timeout=10)

    def wrapper(self, directory: Path) -> Path:
        """An executable that runs Chromium inside the namespace (for Playwright's executable_path)."""
        path = directory / "chromium-in-netns"
        path.write_text(f"#!/bin/sh\nexec nsenter --net={self.netns_path} -- {CHROMIUM} \"$@\"\n")
        path.chmod(0o755)
        return path

    def close(self) -> None:
        if self._holder is not None:
            self._holder.kill()  # the namespace and its veth end go with it; the pair with them
            self._holder.wait()
            self._holder = None
        subprocess.run(["ip", "link", "del", _HOST_IF], capture_output=True, timeout=10)


def _write_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", name).write_text(value)


def trust_ca(home: Path, ca_pem: Path) -> None:
    """Adds `ca_pem` as a trusted CA to the NSS database Chromium reads for a browser whose HOME is `home`."""
    if not shutil.which("certutil"):
        pytest.fail("certutil not found: install libnss3-tools (scripts/bootstrap.sh with MEDIASRV_BOOTSTRAP_TEST=1)")
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True, exist_ok=True)
    if not (db / "cert9.db").exists():
        _sh("certutil", "-N", "-d", f"sql:{db}", "--empty-password")
    _sh("certutil", "-A", "-d", f"sql:{db}", "-n", f"mediasrv-test-{ca_pem.stem}", "-t", "C,,", "-i", str(ca_pem))


async def listen_on(server: Any, addr: str) -> str:
    """Adds an HTTP site on `addr` (ephemeral port) to a running test server; returns its base URL."""
    site = web.TCPSite(server.runner, addr, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return f"http://{addr}:{port}"


def _in_private_namespace() -> bool:
    try:
        return "lo" in [name for _, name in socket.if_nameindex()] and os.geteuid() == 0
    except OSError:
        return False


@pytest.fixture
def browser_netns() -> Iterator[BrowserNetns]:
    if not _in_private_namespace():
        pytest.fail("browser namespace tests must run as root inside `unshare -n` (see scripts/test.sh)")
    ns = BrowserNetns().start()
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def ns_home(tmp_path: Path) -> Path:
    """The HOME of `netns_browser` (where `trust_ca` puts a test CA)."""
    home = tmp_path / "browser-home"
    home.mkdir()
    return home


@pytest.fixture
async def netns_browser(browser_netns: BrowserNetns, ns_home: Path, tmp_path: Path) -> AsyncIterator[Browser]:
    """Chromium running inside `browser_netns`."""
    env = {k: v for k, v in os.environ.items() if k not in ("HOME",)}
    env["HOME"] = str(ns_home)
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(browser_netns.wrapper(tmp_path)), args=FLAGS,
                                     headless=True, env=env)
        try:
            yield b
        finally:
            await b.close()
