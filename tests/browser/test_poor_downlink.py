"""A patient on a poor downlink: the server does not flood it, and the clinician's encoder follows it.

The clinician publishes from a browser on the server's machine; the patient watches from a browser in
its own network namespace whose downlink (the veth toward it) is limited with a token bucket, the way
home Wi-Fi or a rural link would be. What the server offers that link is read from the qdisc's own
counters; what the patient hears and sees from its getStats().
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
from typing import Any

import pytest

from tests.conftest import start_server

from . import netns
from .conftest import eventually
from .netns import HOST_ADDR, listen_on

browser_netns, netns_browser, ns_home = netns.browser_netns, netns.netns_browser, netns.ns_home

pytestmark = pytest.mark.browser

LINK = "msbr0"  # the test side of the veth: its egress is the patient's downlink
LIMIT_KBIT = 300
BASELINE_S = 8
LIMITED_S = 25

PATIENT_STATS = """
async () => {
  const pc = window.demo.room && window.demo.room.sub;
  const out = {audio: null, video: null};
  if (!pc) return out;
  (await pc.getStats()).forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    if (s.kind === 'audio') out.audio = {samples: s.totalSamplesReceived || 0,
                                         concealed: s.concealedSamples || 0};
    if (s.kind === 'video') out.video = {frames: s.framesDecoded || 0, height: s.frameHeight || 0};
  });
  return out;
}
"""


def _tc(*args: str) -> None:
    subprocess.run(["tc", *args], check=True, capture_output=True, timeout=10)


def _link_counters() -> tuple[int, int, int]:
    """(bytes sent, packets sent, packets dropped) by the downlink's root qdisc."""
    out = subprocess.run(["tc", "-s", "-j", "qdisc", "show", "dev", LINK], check=True, capture_output=True,
                         timeout=10).stdout
    root = next(q for q in json.loads(out) if q.get("root"))
    return root["bytes"], root["packets"], root["drops"]


async def _open(browser: Any, server: Any, url: str, identity: str, role: str) -> Any:
    page = await (await browser.new_context()).new_page()
    token = server.token(identity, role, "poor-1", name=identity)
    await page.goto(f"{url}/demo?room=poor-1&identity={identity}&role={role}&autojoin=1#token={token}")
    await page.wait_for_function("window.demo && window.demo.joined", timeout=15000)
    return page


def _video_target(server: Any, identity: str) -> int | None:
    room = server.rooms.get("poor-1")
    for track in room.tracks.values():
        if track.kind == "video" and track.owner == identity:
            return room.router.track_stats(track.id)["target_bitrate_bps"]  # type: ignore[no-any-return]
    return None


async def test_a_patient_on_a_poor_downlink_is_not_flooded_and_keeps_audio(
        browser, netns_browser, browser_netns, tmp_path):
    srv = await start_server(tmp_path / "data", media_bind_addresses=[HOST_ADDR])
    try:
        url = await listen_on(srv, HOST_ADDR)
        clinician = await _open(browser, srv, url, "dr-p", "clinician")
        patient = await _open(netns_browser, srv, url, "pat-p", "patient")

        async def decoding() -> Any:
            s = await patient.evaluate(PATIENT_STATS)
            return s["video"] and s["video"]["frames"] > 30 and s
        await eventually(decoding, timeout=30, what="patient decodes the clinician")
        await asyncio.sleep(BASELINE_S)
        target_before = _video_target(srv, "dr-p")

        # The patient's downlink drops to 300 kbit/s with a 250 ms queue.
        _tc("qdisc", "add", "dev", LINK, "root", "tbf", "rate", f"{LIMIT_KBIT}kbit", "burst", "6000",
            "latency", "250ms")
        before = await patient.evaluate(PATIENT_STATS)
        # The target asked of the clinician's encoder, once a second while limited: the median
        # says where it settled (a probe may lift it for a moment).
        targets = []
        for _ in range(int(LIMITED_S)):
            await asyncio.sleep(1)
            targets.append(_video_target(srv, "dr-p"))
        after = await patient.evaluate(PATIENT_STATS)
        sent_bytes, sent_packets, dropped = _link_counters()
        settled = [t for t in targets[len(targets) // 3:] if t is not None]
        target_limited = statistics.median(settled) if settled else None
        sub_stats = [srv.rooms.get("poor-1").router.subscription_stats(s.id)
                     for s in srv.rooms.get("poor-1").participants["pat-p"].subscriptions.values()]

        # The link clears: video comes back.
        _tc("qdisc", "del", "dev", LINK, "root")
        cleared = await patient.evaluate(PATIENT_STATS)
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def flowing_again() -> Any:
            s = await patient.evaluate(PATIENT_STATS)
            return s["video"]["frames"] - cleared["video"]["frames"] >= 30 and s
        await eventually(flowing_again, timeout=30, what="video back after the link clears")
        recovered_s = loop.time() - t0

        offered_kbit = sent_bytes * 8 / 1000 / LIMITED_S  # what left the qdisc, ≈ the limit
        drop_share = dropped / max(1, sent_packets + dropped)
        concealed = ((after["audio"]["concealed"] - before["audio"]["concealed"])
                     / max(1, after["audio"]["samples"] - before["audio"]["samples"]))
        fps = (after["video"]["frames"] - before["video"]["frames"]) / LIMITED_S
        print(f"\n[poor downlink {LIMIT_KBIT} kbit/s] qdisc sent {offered_kbit:.0f} kbit/s, dropped "
              f"{dropped} of {sent_packets + dropped} packets ({drop_share:.1%}); audio concealed "
              f"{concealed:.1%}; video {fps:.1f} fps at {after['video']['height']}p while limited; REMB "
              f"target for the clinician's video {target_before} -> median {target_limited} bit/s "
              f"(range {min(settled, default=None)}-{max(settled, default=None)}); video "
              f"back {recovered_s:.1f} s after the link cleared; retransmissions "
              f"{sum(s['retransmissions'] for s in sub_stats)}, NACKs refused too soon "
              f"{sum(s['nack_too_soon'] for s in sub_stats)}, over budget "
              f"{sum(s['nack_over_budget'] for s in sub_stats)}")

        # The clinician's encoder was asked to fit the patient's link (REMB at the maximum before).
        # With transport-cc the estimate of a link the encoder does not fill may sit up to the
        # estimator's headroom above what it carries (a probe or the acked-rate bound).
        assert target_limited is not None and target_limited < 1.5 * LIMIT_KBIT * 1000, target_limited
        # ...so the server no longer pours more than the link into it: nearly every packet gets
        # through (22 % dropped with the REMB left at the maximum, 99 % before retransmissions had
        # a budget).
        assert drop_share < 0.10, (dropped, sent_packets)
        # Video keeps moving (about one frame a second with the REMB at the maximum) and the patient
        # keeps hearing the clinician (9 % concealed with the REMB at the maximum).
        assert after["video"]["frames"] - before["video"]["frames"] >= 3 * LIMITED_S, (before, after)
        assert concealed < 0.06, concealed
        await patient.context.close()
        await clinician.context.close()
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", LINK, "root"], capture_output=True, timeout=10)
        await srv.runner.cleanup()
