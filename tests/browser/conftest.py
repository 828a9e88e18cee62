"""Real headless Chromium (Debian's package) driven by Playwright, against a real server.

These tests must run in a private network namespace with only loopback (scripts/test.sh runs pytest
inside `unshare -n`), so no media packet can leave 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright
from playwright.async_api import Error as PlaywrightError

CHROMIUM = os.environ.get("MEDIASRV_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]

pytestmark = pytest.mark.browser


def _only_loopback() -> bool:
    """True inside a network namespace whose only interface is lo."""
    try:
        return [name for _, name in socket.if_nameindex()] == ["lo"]
    except OSError:
        return False


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: run scripts/bootstrap.sh with MEDIASRV_BOOTSTRAP_TEST=1")
    if not _only_loopback() and not os.environ.get("MEDIASRV_ALLOW_HOST_NETWORK"):
        pytest.fail("browser tests must run inside `unshare -n` (see scripts/test.sh)")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


async def open_demo(browser: Browser, server: Any, room: str, identity: str, role: str,
                    extra: str = "") -> Page:
    ctx = await browser.new_context()
    page = await ctx.new_page()
    page.on("pageerror", lambda exc: print(f"[{identity}] page error: {exc}"))
    token = server.token(identity, role, room, name=identity)
    url = f"{server.url}/demo?room={room}&identity={identity}&role={role}&autojoin=1{extra}#token={token}"
    await goto(page, url)
    await page.wait_for_function("window.demo && window.demo.joined", timeout=15000)
    return page


async def goto(page: Page, url: str, attempts: int = 4) -> None:
    """page.goto, again when Chromium aborted it because an interface of its namespace changed (a
    test's veth, ifb or tun delay line coming up or going): the page never started, so loading it
    again is what a user's reload would do. Any other error is the test's to see."""
    for attempt in range(attempts):
        try:
            await page.goto(url)
            return
        except PlaywrightError as e:
            if "ERR_NETWORK_CHANGED" not in str(e) or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5 * (attempt + 1))


INBOUND_STATS = """
async () => {
  const pc = window.demo.room && window.demo.room.sub;
  const out = {video: null, audio: null};
  if (!pc) return out;
  (await pc.getStats()).forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    if (s.kind === 'video') out.video = {framesDecoded: s.framesDecoded || 0, frameWidth: s.frameWidth || 0,
      frameHeight: s.frameHeight || 0, packetsReceived: s.packetsReceived, packetsLost: s.packetsLost,
      nackCount: s.nackCount, pliCount: s.pliCount, bytesReceived: s.bytesReceived};
    if (s.kind === 'audio') out.audio = {totalSamplesReceived: s.totalSamplesReceived || 0,
      packetsReceived: s.packetsReceived, bytesReceived: s.bytesReceived};
  });
  return out;
}
"""


async def inbound(page: Page, pc_expr: str = "window.demo.room && window.demo.room.sub") -> dict[str, Any]:
    return await page.evaluate(INBOUND_STATS.replace("window.demo.room && window.demo.room.sub", pc_expr))


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 30.0, what: str = "") -> Any:
    """Poll `check` until it returns a truthy value; bounded in time (a functional bound, not perf)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what or check}: last={last!r}")
