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
from .delay_line import DelayLine
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


LOSSY_KBIT, LOSS_PCT, DELAY_MS = 500, 2, 80
# Classic BPF for the loss filter: A = a random 32-bit number; "match" (into the drop class) when
# it is at most LOSS_PCT % of 2^32.
_RANDOM_LOSS_BPF = "4,32 0 0 4294963256,37 1 0 {k},6 0 0 4294967295,6 0 0 0"


def _lossy_link(rate_kbit: int, loss_pct: int) -> None:
    """The downlink as an HTB class of `rate_kbit` with a 250 ms byte FIFO, and a classic-BPF
    filter sending `loss_pct` % of packets at random into a class that drops them."""
    _tc("qdisc", "add", "dev", LINK, "root", "handle", "1:", "htb", "default", "10")
    _tc("class", "add", "dev", LINK, "parent", "1:", "classid", "1:10", "htb", "rate", f"{rate_kbit}kbit",
        "ceil", f"{rate_kbit}kbit")
    _tc("qdisc", "add", "dev", LINK, "parent", "1:10", "handle", "10:", "bfifo", "limit",
        str(rate_kbit * 1000 // 8 // 4))
    _tc("class", "add", "dev", LINK, "parent", "1:", "classid", "1:20", "htb", "rate", "8bit", "ceil", "8bit")
    _tc("qdisc", "add", "dev", LINK, "parent", "1:20", "handle", "20:", "bfifo", "limit", "1")
    k = loss_pct * 2**32 // 100
    _tc("filter", "add", "dev", LINK, "parent", "1:", "protocol", "ip", "prio", "1", "bpf", "bytecode",
        _RANDOM_LOSS_BPF.format(k=k), "flowid", "1:20")


def _class_counters() -> dict[str, tuple[int, int]]:
    """(packets sent, packets dropped) per leaf queue of the downlink: "10:" the link, "20:" the
    drop class."""
    out = subprocess.run(["tc", "-s", "-j", "qdisc", "show", "dev", LINK], check=True, capture_output=True,
                         timeout=10).stdout
    return {q["handle"]: (q["packets"], q["drops"]) for q in json.loads(out)}


async def test_a_patient_on_a_lossy_delayed_downlink_keeps_audio_and_video(
        browser, netns_browser, browser_netns, tmp_path):
    srv = await start_server(tmp_path / "data", media_bind_addresses=[HOST_ADDR])
    try:
        url = await listen_on(srv, HOST_ADDR)
        # Everything toward the patient is 80 ms late (a user-space delay line: no netem here).
        with DelayLine(browser_netns, DELAY_MS):
            clinician = await _open(browser, srv, url, "dr-p", "clinician")
            patient = await _open(netns_browser, srv, url, "pat-p", "patient")

            async def decoding() -> Any:
                s = await patient.evaluate(PATIENT_STATS)
                return s["video"] and s["video"]["frames"] > 30 and s
            await eventually(decoding, timeout=40, what="patient decodes the clinician")
            # 500 kbit/s with 2 % random loss.
            _lossy_link(LOSSY_KBIT, LOSS_PCT)
            await asyncio.sleep(BASELINE_S)
            before = await patient.evaluate(PATIENT_STATS)
            counters_before = _class_counters()
            await asyncio.sleep(LIMITED_S)
            after = await patient.evaluate(PATIENT_STATS)
            counters = _class_counters()
            rtt = await patient.evaluate("""async () => {
              let rtt = null;
              (await window.demo.room.sub.getStats()).forEach((s) => {
                if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime !== undefined)
                  rtt = s.currentRoundTripTime;
              });
              return rtt;
            }""")
            sub_stats = [srv.rooms.get("poor-1").router.subscription_stats(s.id)
                         for s in srv.rooms.get("poor-1").participants["pat-p"].subscriptions.values()]
            await patient.context.close()
            await clinician.context.close()

        lost = counters["20:"][1] - counters_before["20:"][1]
        through = counters["10:"][0] - counters_before["10:"][0]
        congested = counters["10:"][1] - counters_before["10:"][1]
        concealed = ((after["audio"]["concealed"] - before["audio"]["concealed"])
                     / max(1, after["audio"]["samples"] - before["audio"]["samples"]))
        fps = (after["video"]["frames"] - before["video"]["frames"]) / LIMITED_S
        print(f"\n[lossy downlink {LOSSY_KBIT} kbit/s, {LOSS_PCT} % loss, {DELAY_MS} ms] round trip "
              f"{rtt}; {lost} packets lost at random, {congested} dropped by the queue, {through} "
              f"through; audio concealed {concealed:.1%}; video {fps:.1f} fps at "
              f"{after['video']['height']}p; retransmissions {sum(s['retransmissions'] for s in sub_stats)}, "
              f"NACKs {sum(s['nacks'] for s in sub_stats)}")
        # The loss filter and the delay line worked: losses at about the rate asked, a round
        # trip of at least the delay.
        assert lost > 0 and rtt is not None and rtt >= DELAY_MS / 1000, (lost, rtt)
        # Retransmissions repaired the losses instead of congesting the link further.
        assert sum(s["retransmissions"] for s in sub_stats) > 0
        assert concealed < 0.03, concealed
        assert fps >= 10, (before, after)
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", LINK, "root"], capture_output=True, timeout=10)
        await srv.runner.cleanup()
