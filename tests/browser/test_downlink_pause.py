"""A patient whose downlink cannot carry video: audio goes on, video pauses, and comes back.

As in test_poor_downlink.py the clinician publishes from a browser on the server's machine and the
patient watches from a browser in its own namespace, whose downlink (the veth toward it) is limited
with a token bucket, here to 150 kbit/s: after audio, less than the lowest usable video rate. Both
browsers negotiate transport-cc, so the server's estimate of the patient's link comes from the
patient's transport-cc feedback. What the server sent the patient is read from the router's
counters (media, retransmissions, probe padding); what the patient heard and saw, and the room
messages it got, from its page.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import start_server

from . import netns, shaped_link
from .conftest import eventually
from .netns import HOST_ADDR, listen_on
from .shaped_link import PATIENT_STATS, decoding, link_counters, open_page

browser_netns, netns_browser, ns_home = netns.browser_netns, netns.netns_browser, netns.ns_home

pytestmark = pytest.mark.browser

ROOM = "pause-1"
LIMIT_KBIT = 150
SETTLE_S = 5  # after the limit: time for the estimate to follow it
STEADY_S = 15  # then: what the server sends into the link is measured

ROOM_EVENTS = "() => window.demo.events.filter((e) => e.type.startsWith('stream_'))"


def _sent_to(server: Any, identity: str) -> int:
    """Bytes the router has sent the participant's subscriber connection: media, resends, padding."""
    room = server.rooms.get(ROOM)
    p = room.participants[identity]
    total = 0
    for sub in p.subscriptions.values():
        s = room.router.subscription_stats(sub.id)
        total += s["bytes"] + s["retransmission_payload_bytes"]
    if p.subscriber is not None:
        d = room.router.downlink_stats(p.subscriber.handle)
        total += d["padding_bytes"] if d else 0
    return total


async def test_video_pauses_on_a_link_too_poor_for_it_and_audio_goes_on(
        browser, netns_browser, browser_netns, tmp_path):
    srv = await start_server(tmp_path / "data", media_bind_addresses=[HOST_ADDR])
    try:
        url = await listen_on(srv, HOST_ADDR)
        clinician = await open_page(browser, srv, url, ROOM, "dr-q", "clinician")
        patient = await open_page(netns_browser, srv, url, ROOM, "pat-q", "patient")
        await decoding(patient)
        room = srv.rooms.get(ROOM)
        transport = room.participants["pat-q"].subscriber
        assert room.router.downlink_stats(transport.handle)["transport_cc"]
        assert await patient.evaluate(ROOM_EVENTS) == [], "a good link: nothing paused"

        shaped_link.token_bucket(LIMIT_KBIT)
        limited_at = asyncio.get_running_loop().time()

        async def paused() -> Any:
            return [e for e in await patient.evaluate(ROOM_EVENTS) if e["type"] == "stream_paused"]
        [pause] = await eventually(paused, timeout=SETTLE_S + STEADY_S, what="stream_paused")
        pause_s = asyncio.get_running_loop().time() - limited_at
        await asyncio.sleep(max(0.0, SETTLE_S - pause_s))
        before, sent_before = await patient.evaluate(PATIENT_STATS), _sent_to(srv, "pat-q")
        q_before = link_counters()
        await asyncio.sleep(STEADY_S)
        after, sent_after = await patient.evaluate(PATIENT_STATS), _sent_to(srv, "pat-q")
        q_after = link_counters()
        estimate = room.router.downlink_stats(transport.handle)["estimate_bps"]

        shaped_link.clear()
        cleared = await patient.evaluate(PATIENT_STATS)
        t0 = asyncio.get_running_loop().time()

        async def flowing_again() -> Any:
            s = await patient.evaluate(PATIENT_STATS)
            return s["video"]["frames"] - cleared["video"]["frames"] >= 30 and s
        await eventually(flowing_again, timeout=30, what="video back after the link clears")
        recovered_s = asyncio.get_running_loop().time() - t0
        events = await patient.evaluate(ROOM_EVENTS)

        sent_kbit = (sent_after - sent_before) * 8 / 1000 / STEADY_S
        dropped = q_after[2] - q_before[2]
        offered = q_after[1] - q_before[1] + dropped
        concealed = ((after["audio"]["concealed"] - before["audio"]["concealed"])
                     / max(1, after["audio"]["samples"] - before["audio"]["samples"]))
        frames_paused = after["video"]["frames"] - before["video"]["frames"]
        print(f"\n[downlink {LIMIT_KBIT} kbit/s] stream_paused {pause_s:.1f} s after the limit; then the "
              f"server sent {sent_kbit:.0f} kbit/s into the link (estimate {estimate} bit/s), the link "
              f"dropped {dropped} of {offered} packets; audio concealed {concealed:.2%}; "
              f"{frames_paused} video frames in {STEADY_S} s; video back {recovered_s:.1f} s after the "
              f"link cleared; events {[e['type'] for e in events]}")

        assert pause == {"type": "stream_paused", "reason": "bandwidth", "track_ids": pause["track_ids"]}
        assert pause["track_ids"], pause
        # While paused the server sends the link what it carries (audio and probes), not more...
        assert sent_kbit < LIMIT_KBIT, sent_kbit
        assert dropped <= offered // 20, (dropped, offered)
        # ...the patient keeps hearing the clinician, and video is held back.
        assert concealed < 0.03, concealed
        assert frames_paused < 2 * STEADY_S, frames_paused
        # Once the link clears, the video resumes (at a keyframe) and the patient is told.
        assert [e["type"] for e in events][-1] == "stream_resumed", events
        await patient.context.close()
        await clinician.context.close()
    finally:
        shaped_link.clear()
        await srv.runner.cleanup()
