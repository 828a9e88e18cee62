"""A visit from a network that drops UDP: both browsers reach the media port over ICE-TCP.

Chromium runs in its own network namespace (tests/browser/netns.py) whose firewall drops every UDP
datagram it sends; TCP is open. The server binds its media on the veth address and offers, beside
its UDP host candidate, an RFC 6544 passive TCP candidate on the media TCP port. The clinician and
the patient join through the demo page (room protocol: the server answers their publish offers and
offers their subscriber connections), so ICE-TCP is exercised with the server as the controlled
agent and as the controlling one. Both must decode the other's video and hear the audio, every
selected candidate pair must be host/TCP on both ends, and the server must have handed every
connection over to the native plane (the media never touched Python). The time from joining to the
first decoded video frame is printed for each side (reported, never asserted).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from playwright.async_api import Page

from mediasrv.media import aiortc_glue
from mediasrv.media.candidate_stats import count_peers
from tests.conftest import start_server

from . import netns
from .conftest import eventually, inbound, open_demo
from .netns import HOST_ADDR, listen_on

browser_netns, netns_browser, ns_home = netns.browser_netns, netns.netns_browser, netns.ns_home

pytestmark = pytest.mark.browser

SELECTED_PAIRS = """
async () => {
  const out = {};
  for (const [name, pc] of [['pub', window.demo.room.pub], ['sub', window.demo.room.sub]]) {
    if (!pc) continue;
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
    if (!pair) continue;
    const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
    out[name] = {local: [local.candidateType, local.protocol, local.tcpType || null],
                 remote: [remote.candidateType, remote.protocol, remote.address, remote.port]};
  }
  return out;
}
"""


async def _first_frame(page: Page, since: float) -> float:
    """Seconds from `since` until the page has decoded a video frame (polled every 50 ms)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        video = (await inbound(page))["video"]
        if video and video["framesDecoded"] > 0:
            return time.monotonic() - since
        await asyncio.sleep(0.05)
    raise AssertionError("no video frame decoded within 60 s")


async def _decoding(page: Page) -> Any:
    first = await inbound(page)
    await asyncio.sleep(1.0)
    second = await inbound(page)
    v1, v2, a2 = first["video"], second["video"], second["audio"]
    return (v1 and v2 and a2 and v2["framesDecoded"] > v1["framesDecoded"] > 0
            and a2["totalSamplesReceived"] > 0 and second)


@pytest.mark.parametrize("network", ["udp_blocked", "udp_open"])
async def test_visit_with_udp_blocked_connects_over_ice_tcp(netns_browser, browser_netns, tmp_path, network):
    """With UDP open the same visit stays on UDP: the TCP candidate's lower priority keeps it the
    fallback (and the figures give the UDP baseline for the join time)."""
    if network == "udp_blocked":
        browser_netns.block_udp()
    want = "tcp" if network == "udp_blocked" else "udp"
    # Consent checks every 0.4-0.6 s with a 3 s timeout, so the visit outlives it (see below).
    srv = await start_server(tmp_path / "data", media_bind_addresses=[HOST_ADDR],
                             ice_consent_interval_s=0.5, ice_consent_timeout_s=3.0)
    try:
        plane = srv.rooms.plane
        assert plane is not None
        [(_, (tcp_host, tcp_port))] = plane.tcp_sockets.items()
        view = SimpleNamespace(url=await listen_on(srv, HOST_ADDR), token=srv.token)
        clinician = await open_demo(netns_browser, view, "ward", "dr-tcp", "clinician")
        joined = time.monotonic()
        patient = await open_demo(netns_browser, view, "ward", "pat-tcp", "patient")
        patient_s, clinician_s = await asyncio.gather(_first_frame(patient, joined),
                                                      _first_frame(clinician, joined))
        print(f"\n{network} ({want}): patient joins -> first decoded frame: patient {patient_s:.2f} s, "
              f"clinician {clinician_s:.2f} s")
        for page in (clinician, patient):
            await eventually(lambda p=page: _decoding(p), timeout=40, what="video and audio decoded")

        # UDP: the port of the room's media worker.
        media_port = tcp_port if want == "tcp" else plane.room_addresses(srv.rooms.get("ward").plane_key)[0][1]
        # Every selected pair, seen from the browser: its active TCP candidate to our passive host
        # one. (Chromium lists its side as peer-reflexive: the address our check answers report is
        # its host address with the connection's ephemeral port, not the port 9 it signalled.)
        for page in (clinician, patient):
            pairs = await page.evaluate(SELECTED_PAIRS)
            assert set(pairs) == {"pub", "sub"}, pairs
            for pair in pairs.values():
                if want == "tcp":
                    assert pair["local"] in (["host", "tcp", "active"], ["prflx", "tcp", "active"]), pairs
                else:
                    assert pair["local"][1] == "udp", pairs
                assert pair["remote"] == ["host", want, tcp_host, media_port], pairs

        # Seen from the server: four connections, all handed over, all on the expected transport.
        room = srv.rooms.get("ward")
        transports = [t for p in room.participants.values() for t in (p.publisher, p.subscriber) if t]
        assert len(transports) == 4
        for t in transports:
            assert t.handed_over and t.selected_candidate() in (("host", want), ("prflx", want))
            if want == "tcp":
                # Its port-9 active candidate, read from its SDP, names it host when it connects from
                # the address it signalled; Chromium sometimes gathers on its namespace's own
                # loopback (127.0.0.1) and connects from the veth's address: peer-reflexive then.
                pair = aiortc_glue.nominated_pair(t.pc.getTransceivers()[0].receiver.transport)  # bundled
                assert pair is not None
                signalled = any(
                    line.split()[4] == pair.remote_addr[0] and "typ host tcptype active" in line
                    for line in t.pc.remoteDescription.sdp.splitlines()
                    if line.startswith("a=candidate:") and line.split()[2].lower() == "tcp")
                assert t.selected_candidate() == ("host" if signalled else "prflx", "tcp")
            stats = plane.native.peer_stats(t.handle)
            assert stats is not None and stats["rtp_in"] + stats["rtp_out"] > 0
        # ICE consent runs in the plane on the same path (framed onto the TCP connection when on
        # TCP): Chromium answers its checks past the timeout, and the plane answers Chromium's.
        async def consent_held() -> bool:
            stats = [plane.native.peer_stats(t.handle) or {} for t in transports]
            return all(s.get("consent_responses", 0) >= 8 and s.get("checks_answered", 0) >= 1 for s in stats)

        await eventually(consent_held, timeout=40, what="consent answered on every connection")
        assert plane.consent_lost == 0 and all(t.connected for t in transports)
        # ... and counted so in mediasrv_media_peers{candidate,transport}.
        counts = {k: n for k, n in count_peers(t.pc for t in transports).items() if n}
        assert sum(counts.values()) == 4 and {k[1] for k in counts} == {want}, counts
        assert counts == Counter(t.selected_candidate() for t in transports), counts
        native = plane.native.stats()
        if want == "tcp":
            assert native["tcp"]["open"] >= 4
        assert native["dropped"]["tcp_write_overflow"] == 0
        await clinician.context.close()
        await patient.context.close()
    finally:
        await srv.runner.cleanup()
