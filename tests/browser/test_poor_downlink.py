"""A patient on a poor downlink: the server does not flood it, and the clinician's encoder follows it.

The clinician publishes from a browser on the server's machine; the patient watches from a browser in
its own network namespace whose downlink (the veth toward it) is limited with a token bucket, the way
home Wi-Fi or a rural link would be. What the server offers that link is read from the qdisc's own
counters; what the patient hears and sees from its getStats().
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

import pytest

from tests.conftest import start_server

from . import netns, shaped_link
from .conftest import eventually
from .delay_line import DelayLine
from .netns import HOST_ADDR, listen_on
from .shaped_link import PATIENT_STATS, decoding, leaf_counters, link_counters, open_page

browser_netns, netns_browser, ns_home = netns.browser_netns, netns.netns_browser, netns.ns_home

pytestmark = pytest.mark.browser

ROOM = "poor-1"
LIMIT_KBIT = 300
BASELINE_S = 8
LIMITED_S = 25


def _video_target(server: Any, identity: str) -> int | None:
    room = server.rooms.get(ROOM)
    for track in room.tracks.values():
        if track.kind == "video" and track.owner == identity:
            return room.router.track_stats(track.id)["target_bitrate_bps"]  # type: ignore[no-any-return]
    return None


async def test_a_patient_on_a_poor_downlink_is_not_flooded_and_keeps_audio(
        browser, netns_browser, browser_netns, tmp_path):
    srv = await start_server(tmp_path / "data", media_bind_addresses=[HOST_ADDR])
    try:
        url = await listen_on(srv, HOST_ADDR)
        clinician = await open_page(browser, srv, url, ROOM, "dr-p", "clinician")
        patient = await open_page(netns_browser, srv, url, ROOM, "pat-p", "patient")
        await decoding(patient)
        await asyncio.sleep(BASELINE_S)
        target_before = _video_target(srv, "dr-p")

        # The patient's downlink drops to 300 kbit/s with a 250 ms queue.
        shaped_link.token_bucket(LIMIT_KBIT)
        before = await patient.evaluate(PATIENT_STATS)
        # The target asked of the clinician's encoder, once a second while limited: the median
        # says where it settled (a probe may lift it for a moment).
        targets = []
        for _ in range(int(LIMITED_S)):
            await asyncio.sleep(1)
            targets.append(_video_target(srv, "dr-p"))
        after = await patient.evaluate(PATIENT_STATS)
        sent_bytes, sent_packets, dropped = link_counters()
        settled = [t for t in targets[len(targets) // 3:] if t is not None]
        target_limited = statistics.median(settled) if settled else None
        sub_stats = [srv.rooms.get(ROOM).router.subscription_stats(s.id)
                     for s in srv.rooms.get(ROOM).participants["pat-p"].subscriptions.values()]

        # The link clears: video comes back.
        shaped_link.clear()
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
        shaped_link.clear()
        await srv.runner.cleanup()


LOSSY_KBIT, LOSS_PCT, DELAY_MS = 500, 2, 80
async def test_a_patient_on_a_lossy_delayed_downlink_keeps_audio_and_video(
        browser, netns_browser, browser_netns, tmp_path):
    srv = await start_server(tmp_path / "data", media_bind_addresses=[HOST_ADDR])
    try:
        url = await listen_on(srv, HOST_ADDR)
        # Everything toward the patient is 80 ms late (a user-space delay line: no netem here).
        with DelayLine(browser_netns, DELAY_MS):
            clinician = await open_page(browser, srv, url, ROOM, "dr-p", "clinician")
            patient = await open_page(netns_browser, srv, url, ROOM, "pat-p", "patient")
            await decoding(patient, timeout=40)
            # 500 kbit/s with 2 % random loss.
            shaped_link.lossy(LOSSY_KBIT, LOSS_PCT)
            await asyncio.sleep(BASELINE_S)
            before = await patient.evaluate(PATIENT_STATS)
            counters_before = leaf_counters()
            await asyncio.sleep(LIMITED_S)
            after = await patient.evaluate(PATIENT_STATS)
            counters = leaf_counters()
            rtt = await patient.evaluate("""async () => {
              let rtt = null;
              (await window.demo.room.sub.getStats()).forEach((s) => {
                if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime !== undefined)
                  rtt = s.currentRoundTripTime;
              });
              return rtt;
            }""")
            sub_stats = [srv.rooms.get(ROOM).router.subscription_stats(s.id)
                         for s in srv.rooms.get(ROOM).participants["pat-p"].subscriptions.values()]
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
        shaped_link.clear()
        await srv.runner.cleanup()
