"""Simulcast with real browsers: a Chromium publisher sends three layers (the demo's rid q/h/f,
1/4, 1/2 and full 1280x720), two Chromium viewers receive the same track, one of them capped to
the lowest layer over the room protocol: both decode, each at its own resolution (the capped one
at 320x180, the other at the top layer, 1280x720, which its estimator found by probing)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import Page

from .conftest import eventually, inbound, open_demo

pytestmark = pytest.mark.browser

VIDEO_TRACK_ID = """
() => {
  for (const e of window.demo.room.remoteTracks.values()) if (e.info && e.info.kind === 'video') return e.info.id;
  return null;
}
"""


async def _decoding_at(page: Page, height: int) -> dict[str, Any] | None:
    first = await inbound(page)
    await asyncio.sleep(0.5)
    second = await inbound(page)
    v1, v2 = first["video"], second["video"]
    if v1 and v2 and v2["framesDecoded"] > v1["framesDecoded"] > 0 and v2["frameHeight"] == height:
        return v2
    return None


async def _decoding_above(page: Page, height: int) -> dict[str, Any] | None:
    first = await inbound(page)
    await asyncio.sleep(0.5)
    second = await inbound(page)
    v1, v2 = first["video"], second["video"]
    if v1 and v2 and v2["framesDecoded"] > v1["framesDecoded"] > 0 and v2["frameHeight"] > height:
        return v2
    return None


async def test_viewers_get_the_layer_they_ask_for(server, browser):
    publisher = await open_demo(browser, server, "simc", "dr-sim", "clinician")
    full = await open_demo(browser, server, "simc", "obs-full", "observer")
    small = await open_demo(browser, server, "simc", "obs-small", "observer")

    room = server.rooms.get("simc")
    video = next(t for t in room.tracks.values() if t.kind == "video")
    # The offer's three rids made one track with three layers.
    layers = await eventually(
        lambda: asyncio.sleep(0, [x for x in room.router.track_layers(video.id) or [] if x["ssrc"]]),
        timeout=20, what="three layers seen")
    assert len(room.router.track_layers(video.id)) == 3

    track_id = await eventually(lambda: small.evaluate(VIDEO_TRACK_ID), timeout=20, what="video track offered")
    assert track_id == video.id
    reply = await small.evaluate("(id) => window.demo.room.setMaxResolution(id, 180)", track_id)
    assert reply["type"] == "max_resolution_set" and reply["height"] == 180

    low = await eventually(lambda: _decoding_at(small, 180), timeout=40, what="capped viewer on 180p")
    # The other viewer, uncapped on a good link, gets the top layer: probes (padding on its RTX
    # stream) show its estimator the room above what the lower layers send.
    high = await eventually(lambda: _decoding_at(full, 720), timeout=40, what="other viewer on 720p")
    assert low["frameWidth"] == 320 and high["frameWidth"] == 1280

    subs = {p.identity: p.subscriptions[video.id].id for p in room.participants.values()
            if video.id in p.subscriptions}
    assert room.router.subscription_layers(subs["obs-small"])["current"][0] == 0
    assert room.router.subscription_layers(subs["obs-full"])["current"][0] == 2
    heights = [x["height"] for x in room.router.track_layers(video.id)]
    assert heights == [180, 360, 720], (heights, layers)
    downlink = room.router.downlink_stats(next(p.subscriber.handle for p in room.participants.values()
                                               if p.identity == "obs-full"))
    assert downlink["padding_packets"] > 0, downlink
    # Lifting the cap brings the small viewer up as well.
    await small.evaluate("(id) => window.demo.room.setMaxResolution(id, null)", track_id)
    await eventually(lambda: _decoding_above(small, 180), timeout=30, what="uncapped viewer above 180p")
    for page in (publisher, full, small):
        await page.context.close()
