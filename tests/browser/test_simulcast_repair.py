"""Simulcast over a lossy uplink: the patient publishes its camera in three layers (the demo's
rid q/h/f) from a browser in its own network namespace whose uplink drops 5 % of packets at
random; the clinician watches from this machine. The server NACKs what it misses on the layers the
clinician receives, naming each layer's SSRC, and takes the repairs from the layers' RTX streams,
whose SSRCs it learns from the repaired-RID header extension Chromium puts on them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import start_server

from . import netns
from .conftest import eventually
from .netns import HOST_ADDR, BrowserNetns, listen_on
from .shaped_link import _RANDOM_LOSS_BPF, PATIENT_STATS, decoding, open_page

browser_netns, netns_browser, ns_home = netns.browser_netns, netns.netns_browser, netns.ns_home

pytestmark = pytest.mark.browser

ROOM = "sim-repair"
LOSS_PCT = 5
UPLINK = "msbr1"  # the browser's end of the veth: its egress is the patient's uplink


def _uplink_loss(ns: BrowserNetns, pct: int) -> None:
    """`pct` % of what the patient sends dropped at random (an HTB class that drops, chosen by a
    random-number BPF filter: this kernel has no netem)."""
    def tc(*args: str) -> None:
        ns.run_in("tc", *args)
    tc("qdisc", "add", "dev", UPLINK, "root", "handle", "1:", "htb", "default", "10")
    tc("class", "add", "dev", UPLINK, "parent", "1:", "classid", "1:10", "htb", "rate", "100mbit")
    tc("class", "add", "dev", UPLINK, "parent", "1:", "classid", "1:20", "htb", "rate", "8bit", "ceil", "8bit")
    tc("qdisc", "add", "dev", UPLINK, "parent", "1:20", "handle", "20:", "bfifo", "limit", "1")
    tc("filter", "add", "dev", UPLINK, "parent", "1:", "protocol", "ip", "prio", "1", "bpf", "bytecode",
       _RANDOM_LOSS_BPF.format(k=pct * 2**32 // 100), "flowid", "1:20")


async def test_losses_on_a_simulcast_uplink_are_repaired_per_layer(
        browser, netns_browser, browser_netns, tmp_path):
    srv = await start_server(tmp_path / "data", media_bind_addresses=[HOST_ADDR])
    try:
        url = await listen_on(srv, HOST_ADDR)
        clinician = await open_page(browser, srv, url, ROOM, "dr-r", "clinician")
        patient = await open_page(netns_browser, srv, url, ROOM, "pat-r", "patient")
        await decoding(clinician)
        room = srv.rooms.get(ROOM)
        video = next(t for t in room.tracks.values() if t.kind == "video" and t.owner == "pat-r")
        assert room.router.track_layers(video.id) is not None, "the patient's camera is simulcast"
        _uplink_loss(browser_netns, LOSS_PCT)

        def repaired() -> list[dict[str, Any]]:
            return [x for x in room.router.track_layers(video.id) or [] if x["repaired"] > 0]

        layers = await eventually(lambda: asyncio.sleep(0, repaired()), timeout=40,
                                  what="a layer's losses repaired from its RTX stream")
        # Each repaired layer's RTX stream was told apart from its media stream.
        ssrcs = {x["ssrc"] for x in room.router.track_layers(video.id)}
        assert all(x["rtx_ssrc"] and x["rtx_ssrc"] not in ssrcs for x in layers), layers
        stats = room.router.track_stats(video.id)
        assert stats["nacks_out"] > 0 and stats["nack_seqs_out"] > 0, stats
        # The clinician keeps decoding the patient through the loss.
        before = await clinician.evaluate(PATIENT_STATS)
        await asyncio.sleep(2)
        after = await clinician.evaluate(PATIENT_STATS)
        assert after["video"]["frames"] - before["video"]["frames"] >= 10, (before, after)
        for page in (patient, clinician):
            await page.context.close()
    finally:
        await srv.runner.cleanup()
