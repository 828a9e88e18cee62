"""The clinician sees the patient's connection turn poor, and recover, with real browsers.

As in test_downlink_pause.py: the clinician's browser on the server's machine, the patient's in its
own namespace, whose downlink (the veth toward it) is limited to 150 kbit/s with a token bucket (too
little for video after audio: the server pauses it). Every room message each page got is in its
`window.demo.events`; here the `connection_quality` ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import start_server

from . import netns, shaped_link
from .conftest import eventually
from .netns import HOST_ADDR, listen_on
from .shaped_link import decoding, open_page

browser_netns, netns_browser, ns_home = netns.browser_netns, netns.netns_browser, netns.ns_home

pytestmark = pytest.mark.browser

ROOM = "quality-1"
LIMIT_KBIT = 150
GOOD_LINK_S = 4  # watched on the clean link before the limit: nobody may be poor there

QUALITY = "() => window.demo.events.filter((e) => e.type === 'connection_quality')"
CAPTIONS = "() => [...document.querySelectorAll('#remotes figcaption')].map((c) => c.textContent)"


def _downlink(events: list[dict[str, Any]], identity: str) -> list[str]:
    return [e["quality"] for e in events if e["participant"] == identity and e["scope"] == "downlink"]


async def test_the_clinician_sees_the_patient_downlink_turn_poor_and_recover(
        browser, netns_browser, browser_netns, tmp_path):
    srv = await start_server(tmp_path / "data", media_bind_addresses=[HOST_ADDR])
    try:
        url = await listen_on(srv, HOST_ADDR)
        clinician = await open_page(browser, srv, url, ROOM, "dr-c", "clinician")
        patient = await open_page(netns_browser, srv, url, ROOM, "pat-c", "patient")
        await decoding(patient)
        await asyncio.sleep(GOOD_LINK_S)
        clean = await clinician.evaluate(QUALITY)
        assert not [e for e in clean if e["quality"] in ("poor", "lost")], clean

        shaped_link.token_bucket(LIMIT_KBIT)
        loop = asyncio.get_running_loop()
        limited_at = loop.time()

        async def poor() -> Any:
            return "poor" in _downlink(await clinician.evaluate(QUALITY), "pat-c")
        await eventually(poor, timeout=30, what="the patient's downlink poor, as the clinician sees it")
        poor_s = loop.time() - limited_at
        poor_captions = await clinician.evaluate(CAPTIONS)
        room = srv.rooms.get(ROOM)
        poor_levels = dict(room.quality.levels())

        shaped_link.clear()
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
        shaped_link.clear()
        await srv.runner.cleanup()
