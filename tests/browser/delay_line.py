"""A user-space delay line for a test's veth (this kernel has no netem qdisc).

Packets the test's namespace routes to `BROWSER_ADDR` go into a tun device instead of the veth; a
child process reads them, holds each for `delay_ms` and sends it out of the veth with a packet
socket, so the veth's qdisc (rate limit, random-loss filter) still applies after the delay. Only
the downlink toward the browser is delayed; what the browser sends comes back directly.

    with DelayLine(netns, delay_ms=80):
        ...
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from . import netns

TUN_NAME = "msdl0"
_TUNSETIFF = 0x400454CA
_IFF_TUN, _IFF_NO_PI = 0x0001, 0x1000
_ETH_P_IP = 0x0800


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=10)


class DelayLine:
    """Delays everything the test's namespace sends to the browser's by `delay_ms`."""

    def __init__(self, browser_netns: netns.BrowserNetns, delay_ms: int) -> None:
        self.browser_netns = browser_netns
        self.delay_ms = delay_ms
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DelayLine:
        link = json.loads(self.browser_netns.run_in("ip", "-j", "link", "show", "dev", netns._NS_IF).stdout)
        peer_mac = link[0]["address"]
        # The child creates the tun device (it lives as long as the child holds it open).
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.browser.delay_line", TUN_NAME, netns._HOST_IF, peer_mac,
             str(self.delay_ms)], stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])
        assert self._proc.stdout is not None
        if self._proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("delay line did not start")
        netns._write_sysctl(f"net/ipv4/conf/{TUN_NAME}/route_localnet", "1")
        _ip("link", "set", TUN_NAME, "up")
        _ip("route", "add", f"{netns.BROWSER_ADDR}/32", "dev", TUN_NAME)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        subprocess.run(["ip", "route", "del", f"{netns.BROWSER_ADDR}/32", "dev", TUN_NAME],
                       capture_output=True, timeout=10)
        if self._proc is not None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


def _run(tun_name: str, out_if: str, peer_mac: str, delay_ms: int) -> None:
    tun = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tun, _TUNSETIFF, struct.pack("16sH", tun_name.encode(), _IFF_TUN | _IFF_NO_PI))
    out = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(_ETH_P_IP))
    dest = (out_if, _ETH_P_IP, 0, 0, bytes.fromhex(peer_mac.replace(":", "")))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    held: list[tuple[float, int, bytes]] = []  # (due, arrival order, packet)
    n = 0
    delay = delay_ms / 1000
    while True:
        now = time.monotonic()
        while held and held[0][0] <= now:
            # A full veth queue loses the packet, as on a real link.
            with contextlib.suppress(OSError):
                out.sendto(heapq.heappop(held)[2], dest)
        timeout = max(0.0, held[0][0] - now) if held else 1.0
        ready, _, _ = select.select([tun], [], [], timeout)
        if ready:
            packet = os.read(tun, 65536)
            n += 1
            heapq.heappush(held, (time.monotonic() + delay, n, packet))


if __name__ == "__main__":
    _run(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
