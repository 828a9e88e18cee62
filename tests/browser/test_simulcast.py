"""Simulcast with real browsers: a Chromium publisher sends three layers (the demo's rid q/h/f,
1/4, 1/2 and full 1280x720), two Chromium viewers receive the same track, one of them capped to
the lowest layer over the room protocol: both decode, each at its own resolution (the capped one
at 320x180, the other at the top layer, 1280x720, which its estimator found by probing)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import Page

from .conftest import eventually, goto, inbound, open_demo
from .test_whip_whep import WHEP_SUBSCRIBE

pytestmark = pytest.mark.browser

VIDEO_TRACK_ID = """
() => {
  for (const e of window.demo.room.remoteTracks.values()) if (e.info && e.info.kind === 'video') return e.info.id;
  return null;
}
"""


# Per simulcast layer the publisher sends: its rid and what the server's receiver reports on it
# told the browser (a remote-inbound-rtp naming that outbound stream).
LAYER_REPORTS = """
async () => {
  const stats = await window.demo.room.pub.getStats();
  const byLocal = {};
  stats.forEach((s) => { if (s.type === 'remote-inbound-rtp') byLocal[s.localId] = s; });
  const out = [];
  stats.forEach((s) => {
    if (s.type !== 'outbound-rtp' || s.kind !== 'video') return;
    const r = byLocal[s.id];
    out.push({rid: s.rid, sent: s.packetsSent, lost: r ? r.packetsLost : null,
              rtt: r ? r.roundTripTime : null, reports: r ? r.roundTripTimeMeasurements : 0});
  });
  return out;
}
"""


async def _reported_layers(page: Page) -> list[dict[str, Any]] | None:
    layers = await page.evaluate(LAYER_REPORTS)
    return layers if len(layers) == 3 and all(x["reports"] for x in layers) else None


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
    # Each layer's retransmission ring holds half a second of its media (grown from 128 slots as
    # needed), never past its most.
    rings = [x["cache_packets"] for x in room.router.track_layers(video.id)]
    print(f"simulcast layer rings (slots, q/h/f): {rings}")
    assert all(128 <= n <= 512 for n in rings), rings
    # The publisher hears back on every layer it sends: a receiver report block per layer SSRC,
    # so Chromium knows each layer's loss and round trip (none lost on this link).
    reports = await eventually(lambda: _reported_layers(publisher), timeout=10, what="a report per layer")
    print(f"receiver reports per layer at the publisher: {reports}")
    assert sorted(x["rid"] for x in reports) == ["f", "h", "q"], reports
    assert all(x["lost"] == 0 and 0 <= x["rtt"] < 1.0 for x in reports), reports
    for page in (publisher, full, small):
        await page.context.close()


async def test_a_whep_viewer_caps_the_resolution_with_max_height(server, browser):
    publisher = await open_demo(browser, server, "simw", "dr-whep", "clinician")
    room = server.rooms.get("simw")
    video = await eventually(lambda: asyncio.sleep(0, next(
        (t for t in room.tracks.values() if t.kind == "video"), None)), timeout=20, what="video track")
    await eventually(lambda: asyncio.sleep(0, [x for x in room.router.track_layers(video.id) or [] if x["ssrc"]]),
                     timeout=20, what="layers seen")
    viewer = await (await browser.new_context()).new_page()
    await goto(viewer, f"{server.url}/healthz")
    token = server.token("obs-whep", "observer", "simw")
    # A cap that is no height is refused before anything is created.
    status = await viewer.evaluate(
        """async ([url, token]) => (await fetch(url, {method: 'POST', body: 'v=0',
             headers: {'Content-Type': 'application/sdp', 'Authorization': 'Bearer ' + token}})).status""",
        [f"{server.url}/whep/simw/dr-whep?max_height=0", token])
    assert status == 400
    assert await viewer.evaluate(WHEP_SUBSCRIBE, [f"{server.url}/whep/simw/dr-whep?max_height=180", token])

    async def at_180() -> Any:
        first = await inbound(viewer, "window.whep.pc")
        await asyncio.sleep(0.5)
        second = await inbound(viewer, "window.whep.pc")
        v1, v2 = first["video"], second["video"]
        return v1 and v2 and v2["framesDecoded"] > v1["framesDecoded"] > 0 and v2["frameHeight"] == 180 and v2
    got = await eventually(at_180, timeout=40, what="WHEP viewer on 180p")
    assert got["frameWidth"] == 320
    sub = next(s for p in room.participants.values() if p.session == "whep"
               for s in p.subscriptions.values() if s.track.id == video.id)
    assert room.router.subscription_layers(sub.id)["max_height"] == 180
    for page in (publisher, viewer):
        await page.context.close()
