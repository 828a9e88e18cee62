"""The clinician sees the patient's connection turn poor, and recover, with real browsers.

As in test_downlink_pause.py: the clinician's browser on the server's machine, the patient's in its
own namespace, whose downlink (the veth toward it) is limited to 150 kbit/s with a token bucket (too
little for video after audio: the server pauses it). Every room message each page got is in its
`window.demo.events`; here the `connection_quality` ones.
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import pytest

from tests.conftest import start_server

from . import netns
from .conftest import eventually
from .netns import HOST_ADDR, listen_on

browser_netns, netns_browser, ns_home = netns.browser_netns, netns.netns_browser, netns.ns_home

pytestmark = pytest.mark.browser

LINK = "msbr0"  # the test side of the namespace's veth (netns.py): its egress is the patient's downlink
ROOM = "quality-1"
LIMIT_KBIT = 150
GOOD_LINK_S = 4  # watched on the clean link before the limit: nobody may be poor there

QUALITY = "() => window.demo.events.filter((e) => e.type === 'connection_quality')"
FRAMES = """
async () => {
  const pc = window.demo.room && window.demo.room.sub;
  let frames = 0;
  if (pc) (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
  });
  return frames;
}
"""
CAPTIONS = "() => [...document.querySelectorAll('#remotes figcaption')].map((c) => c.textContent)"


def _tc(*args: str) -> None:
    subprocess.run(["tc", *args], check=True, capture_output=True, timeout=10)


async def _open(browser: Any, server: Any, url: str, identity: str, role: str) -> Any:
    page = await (await browser.new_context()).new_page()
    token = server.token(identity, role, ROOM, name=identity)
    await page.goto(f"{url}/demo?room={ROOM}&identity={identity}&role={role}&autojoin=1#token={token}")
    await page.wait_for_function("window.demo && window.demo.joined", timeout=15000)
    return page


def _downlink(events: list[dict[str, Any]], identity: str) -> list[str]:
    return [e["quality"] for e in events if e["participant"] == identity and e["scope"] == "downlink"]


async def test_the_clinician_sees_the_patient_downlink_turn_poor_and_recover(
        browser, netns_browser, browser_netns, tmp_path):
    srv = await start_server(tmp_path / "data", media_bind_addresses=[HOST_ADDR])
    try:
        url = await listen_on(srv, HOST_ADDR)
        clinician = await _open(browser, srv, url, "dr-c", "clinician")
        patient = await _open(netns_browser, srv, url, "pat-c", "patient")

        async def decoding() -> Any:
            return await patient.evaluate(FRAMES) > 30
        await eventually(decoding, timeout=30, what="patient decodes the clinician")
        await asyncio.sleep(GOOD_LINK_S)
        clean = await clinician.evaluate(QUALITY)
        assert not [e for e in clean if e["quality"] in ("poor", "lost")], clean

        _tc("qdisc", "add", "dev", LINK, "root", "tbf", "rate", f"{LIMIT_KBIT}kbit", "burst", "6000",
            "latency", "250ms")
        loop = asyncio.get_running_loop()
        limited_at = loop.time()

        async def poor() -> Any:
            return "poor" in _downlink(await clinician.evaluate(QUALITY), "pat-c")
        await eventually(poor, timeout=30, what="the patient's downlink poor, as the clinician sees it")
        poor_s = loop.time() - limited_at
        poor_captions = await clinician.evaluate(CAPTIONS)
        room = srv.rooms.get(ROOM)
        poor_levels = dict(room.quality.levels())

        _tc("qdisc", "del", "dev", LINK, "root")
        cleared_at = loop.time()

        async def recovered() -> Any:
            levels = _downlink(await clinician.evaluate(QUALITY), "pat-c")
            return levels[-1] in ("good", "excellent") and levels[-1]
        back = await eventually(recovered, timeout=40, what="the patient's downlink better than poor again")
        back_s = loop.time() - cleared_at
        back_captions = await clinician.evaluate(CAPTIONS)
        seen_by_clinician = await clinician.evaluate(QUALITY)
        seen_by_patient = await patient.evaluate(QUALITY)
        print(f"\n[connection quality, {LIMIT_KBIT} kbit/s downlink] clinician told 'poor' {poor_s:.1f} s "
              f"after the limit, '{back}' {back_s:.1f} s after it cleared; levels while poor {poor_levels}; "
              f"events {[(e['participant'], e['scope'], e['quality']) for e in seen_by_clinician]}")

        assert poor_levels.get(("downlink", "poor"), 0) >= 1, poor_levels
        # The demo page shows it beside the patient's name, and takes it away again.
        assert "pat-c (camera) · connection poor" in poor_captions, poor_captions
        assert "pat-c (camera)" + ("" if back == "excellent" else f" · connection {back}") in back_captions
        # The patient is told of its own connection too, in the same order.
        assert _downlink(seen_by_patient, "pat-c")[:2] == _downlink(seen_by_clinician, "pat-c")[:2]
        # The clinician's own connections were never poor: only the patient's link was limited.
        assert not [e for e in seen_by_clinician if e["participant"] == "dr-c"
                    and e["quality"] in ("poor", "lost")], seen_by_clinician
        # Identities only: no display name in these events.
        assert all(set(e) <= {"type", "participant", "scope", "quality", "tracks"} for e in seen_by_clinician)
        await patient.context.close()
        await clinician.context.close()
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", LINK, "root"], capture_output=True, timeout=10)
        await srv.runner.cleanup()
