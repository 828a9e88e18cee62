"""Opus RED between real browsers: a Chromium publisher that prefers RED sends it; a viewer that
negotiated RED receives RED (the server's offer numbers Opus 96, the publisher's blocks say 111:
the router rewrites them), a viewer that left RED out of its answer receives plain Opus. Both play
audio."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from .conftest import eventually, goto

pytestmark = pytest.mark.browser

# Small video: the audio is what is tested, and the machine is small.
SMALL_VIDEO = """
(() => {
  const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (c) =>
    gum(Object.assign({}, c, c && c.video ? {video: {width: 320, height: 180, frameRate: 15}} : {}));
})();
"""

# The publisher puts audio/red first (what a page does to turn RED on) before each offer.
PREFER_RED = """
(() => {
  const offer = RTCPeerConnection.prototype.createOffer;
  RTCPeerConnection.prototype.createOffer = function (...args) {
    const codecs = RTCRtpReceiver.getCapabilities('audio').codecs;
    const red = codecs.filter((c) => c.mimeType.toLowerCase() === 'audio/red');
    for (const t of this.getTransceivers()) {
      if (t.sender.track && t.sender.track.kind === 'audio') {
        t.setCodecPreferences([...red, ...codecs.filter((c) => !red.includes(c))]);
      }
    }
    return offer.apply(this, args);
  };
})();
"""

# A viewer that does not take RED: its answers leave it out.
REFUSE_RED = """
(() => {
  const answer = RTCPeerConnection.prototype.createAnswer;
  RTCPeerConnection.prototype.createAnswer = function (...args) {
    const codecs = RTCRtpReceiver.getCapabilities('audio').codecs
      .filter((c) => c.mimeType.toLowerCase() !== 'audio/red');
    for (const t of this.getTransceivers()) {
      if (t.receiver.track.kind === 'audio') t.setCodecPreferences(codecs);
    }
    return answer.apply(this, args);
  };
})();
"""

# The audio RTP stream of a connection ('inbound-rtp' or 'outbound-rtp') and its codec.
AUDIO_STATS = """
async ([which, type]) => {
  const pc = window.demo.room && window.demo.room[which];
  if (!pc) return null;
  const stats = await pc.getStats();
  let out = null;
  stats.forEach((s) => {
    if (s.type === type && s.kind === 'audio' && s.codecId) {
      const c = stats.get(s.codecId);
      out = {mimeType: c ? c.mimeType : null, packets: s.packetsReceived ?? s.packetsSent,
             bytes: s.bytesReceived ?? s.bytesSent,
             samples: s.totalSamplesReceived ?? null};
    }
  });
  return out;
}
"""


async def _page(browser: Browser, server: Any, identity: str, role: str, *scripts: str) -> Page:
    ctx = await browser.new_context()
    for script in scripts:
        await ctx.add_init_script(script)
    page = await ctx.new_page()
    page.on("pageerror", lambda exc: print(f"[{identity}] page error: {exc}"))
    token = server.token(identity, role, "redroom", name=identity)
    await goto(page, f"{server.url}/demo?room=redroom&identity={identity}&role={role}&autojoin=1&simulcast=0"
                    f"#token={token}")
    await page.wait_for_function("window.demo && window.demo.joined", timeout=15000)
    return page


ANSWERED_RED = """() => /a=rtpmap:\\d+ red\\/48000/.test(window.demo.room.sub.localDescription.sdp)"""


async def test_red_publisher_to_a_red_viewer_and_to_one_without_red(server, browser):
    publisher = await _page(browser, server, "dr-red", "clinician", SMALL_VIDEO, PREFER_RED)
    with_red = await _page(browser, server, "viewer-red", "observer")
    without_red = await _page(browser, server, "viewer-opus", "observer", REFUSE_RED)

    async def hearing(page: Page):
        s = await page.evaluate(AUDIO_STATS, ["sub", "inbound-rtp"])
        return s and (s["packets"] or 0) > 50 and (s["samples"] or 0) > 0 and s

    # Chromium's getStats names the codec it decodes (the primary Opus) for a RED stream too, so
    # what went on the wire shows in the payload size: RED carries the previous frame as well.
    red_stats = await eventually(lambda: hearing(with_red), timeout=40, what="RED viewer playing audio")
    opus_stats = await eventually(lambda: hearing(without_red), timeout=40, what="Opus viewer playing audio")
    sent = await publisher.evaluate(AUDIO_STATS, ["pub", "outbound-rtp"])
    print(f"publisher {sent}; RED viewer {red_stats}; Opus viewer {opus_stats}")
    assert await with_red.evaluate(ANSWERED_RED) and not await without_red.evaluate(ANSWERED_RED)

    room = server.rooms.get("redroom")
    audio = next(t for t in room.tracks.values() if t.kind == "audio")
    assert audio.codecs[0][1] == "red", "the answer put RED first, as the offer did"
    subs = {p.identity: sub.id for p in room.participants.values() for sub in p.subscriptions.values()
            if sub.track.id == audio.id}

    async def snapshot() -> dict[str, tuple[int, int]]:
        out = {}
        for name, page in (("viewer-red", with_red), ("viewer-opus", without_red)):
            s = await page.evaluate(AUDIO_STATS, ["sub", "inbound-rtp"])
            out[name] = (s["bytes"], s["packets"])
            st = room.router.subscription_stats(subs[name])
            out["server " + name] = (st["payload_bytes"], st["packets"])
        return out

    # The same packets in both (the tone of the fake microphone comes and goes): RED carries the
    # previous frame as well, so about twice the payload of the primaries alone.
    before = await snapshot()
    await asyncio.sleep(3)
    after = await snapshot()
    size = {k: (after[k][0] - before[k][0]) / max(after[k][1] - before[k][1], 1) for k in after}
    print("payload bytes per packet", size)
    for where in ("", "server "):
        assert size[where + "viewer-red"] > 1.5 * size[where + "viewer-opus"] > 0, size
    assert room.router.stats()["dropped"]["malformed_red"] == 0
