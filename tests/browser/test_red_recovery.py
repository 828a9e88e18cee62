"""Audio lost on a publisher's uplink, recovered from RED at the server for a viewer without RED.

The clinician's Chromium runs in its own network namespace (tests/browser/netns.py) whose
uplink loses 10 % of the UDP datagrams it sends, at random (nftables `numgen random` on this side
of the veth). It publishes audio as RED (the demo page's default), each packet repeating the frame
before it. Two viewers on this machine's browser: one that negotiated RED (its own decoder fills a
lost frame from the next packet), one that left RED out of its answer (sent the primary alone):
the router fills the gap for it from the next packet's redundant block. The viewer without RED
must lose far fewer audio packets than the uplink did (it lost all of them before); the figures,
concealment included, are printed.
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import pytest
from playwright.async_api import Page

from tests.conftest import start_server

from . import netns
from .conftest import eventually, goto
from .netns import HOST_ADDR, listen_on
from .test_red_audio import REFUSE_RED, SMALL_VIDEO

browser_netns, netns_browser, ns_home = netns.browser_netns, netns.netns_browser, netns.ns_home

pytestmark = pytest.mark.browser

ROOM = "redloss"
LOSS_PCT = 10
_TABLE = "mediasrv_uplink_loss"
MEASURE_S = 15

AUDIO_IN = """
async () => {
  const pc = window.demo.room && window.demo.room.sub;
  if (!pc) return null;
  let out = null;
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio')
      out = {received: s.packetsReceived || 0, lost: s.packetsLost || 0,
             samples: s.totalSamplesReceived || 0, concealed: s.concealedSamples || 0};
  });
  return out;
}
"""


async def _page(browser: Any, srv: Any, url: str, identity: str, role: str, *scripts: str) -> Page:
    ctx = await browser.new_context()
    for script in scripts:
        await ctx.add_init_script(script)
    page = await ctx.new_page()
    token = srv.token(identity, role, ROOM, name=identity)
    await goto(page, f"{url}/demo?room={ROOM}&identity={identity}&role={role}&autojoin=1&simulcast=0"
                     f"#token={token}")
    await page.wait_for_function("window.demo && window.demo.joined", timeout=30000)
    return page


def _uplink_loss(pct: int) -> None:
    """Drops `pct` % of the UDP datagrams arriving from the browser's namespace, at random. On this
    side of the veth: a drop in the browser's own output hook is an error its send sees (and
    Chromium sends the packet again), not a loss on the way."""
    ruleset = (f"table inet {_TABLE} {{\n  chain prerouting {{\n"
               f"    type filter hook prerouting priority 0; policy accept;\n"
               f"    iifname \"{netns._HOST_IF}\" meta l4proto udp numgen random mod 100 < {pct} drop\n"
               f"  }}\n}}\n")
    subprocess.run(["nft", "-f", "-"], input=ruleset.encode(), check=True, capture_output=True, timeout=10)


def _no_loss() -> None:
    subprocess.run(["nft", "delete", "table", "inet", _TABLE], capture_output=True, timeout=10)


async def test_audio_lost_on_the_uplink_is_recovered_from_red_for_a_viewer_without_it(
        browser, netns_browser, browser_netns, tmp_path):
    # (UDP only: over ICE-TCP a drop is retransmitted, not lost.)
    srv = await start_server(tmp_path / "data", media_bind_addresses=[HOST_ADDR], ice_tcp=False)
    try:
        url = await listen_on(srv, HOST_ADDR)
        clinician = await _page(netns_browser, srv, url, "dr-red", "clinician", SMALL_VIDEO)
        with_red = await _page(browser, srv, url, "viewer-red", "observer")
        without_red = await _page(browser, srv, url, "viewer-opus", "observer", REFUSE_RED)

        async def hearing(page: Page) -> Any:
            s = await page.evaluate(AUDIO_IN)
            return s and s["received"] > 50 and s
        await eventually(lambda: hearing(with_red), timeout=40, what="RED viewer hearing")
        await eventually(lambda: hearing(without_red), timeout=40, what="Opus viewer hearing")

        room = srv.rooms.get(ROOM)
        audio = next(t for t in room.tracks.values() if t.kind == "audio")
        assert audio.codecs[0][1] == "red", "the clinician publishes RED"

        def track() -> dict[str, Any]:
            return room.router.track_stats(audio.id)
        before = {"track": track(), "red": await with_red.evaluate(AUDIO_IN),
                  "opus": await without_red.evaluate(AUDIO_IN)}
        _uplink_loss(LOSS_PCT)
        await asyncio.sleep(MEASURE_S)
        _no_loss()
        after = {"track": track(), "red": await with_red.evaluate(AUDIO_IN),
                 "opus": await without_red.evaluate(AUDIO_IN)}

        uplink_lost = after["track"]["lost"] - before["track"]["lost"]
        recovered = after["track"]["red_recovered"] - before["track"]["red_recovered"]
        sent = after["track"]["packets"] - before["track"]["packets"]
        lost = {k: after[k]["lost"] - before[k]["lost"] for k in ("red", "opus")}
        concealed = {k: (after[k]["concealed"] - before[k]["concealed"])
                     / max(1, after[k]["samples"] - before[k]["samples"]) for k in ("red", "opus")}
        print(f"uplink: {sent} audio packets arrived, {uplink_lost} lost ({LOSS_PCT} % dropped at random); "
              f"recovered at the server: {recovered}; viewers' packets lost: {lost}; "
              f"concealed: RED viewer {concealed['red']:.2%}, Opus viewer {concealed['opus']:.2%}")
        assert uplink_lost >= 20, "the uplink lost audio"
        # One redundant frame a packet: a frame stays lost only when the next one is lost too
        # (about 1 in 10 at 10 %); without the recovery the Opus viewer loses every one.
        assert recovered >= uplink_lost // 2, (recovered, uplink_lost)
        assert lost["opus"] <= uplink_lost // 3, (lost, uplink_lost)
        # (The RED viewer's packetsLost counts holes in the sequence, which its decoder then fills
        # from the redundancy: its figure is the uplink's; its concealment is what it heard.)
        assert room.router.stats()["dropped"]["malformed_red"] == 0
        for page in (clinician, with_red, without_red):
            await page.context.close()
    finally:
        _no_loss()
        await srv.runner.cleanup()
