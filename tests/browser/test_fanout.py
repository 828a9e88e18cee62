"""Fan-out and loss recovery through the native media plane, with real Chromium peers.

One WHIP publisher, several WHEP viewers: every viewer decodes video, every packet after the DTLS
handshake is handled by the Rust workers (not by aiortc), and the router owns RTCP. With the
loss-simulation setting, the plane drops a share of the publisher's RTP on arrival; the router
NACKs the publisher, Chromium retransmits (RTX), and the viewers keep decoding.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.conftest import Server, start_server

from .conftest import eventually, goto, inbound
from .test_visit import _metrics
from .test_whip_whep import WHEP_SUBSCRIBE, WHIP_PUBLISH

pytestmark = pytest.mark.browser


@pytest.fixture
async def lossy_server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await start_server(tmp_path / "data", media_test_drop_ppm=30_000)  # 3 % of publisher RTP
    try:
        yield srv
    finally:
        await srv.runner.cleanup()


async def publish(browser: Browser, server: Server, room: str) -> Page:
    page = await (await browser.new_context()).new_page()
    await goto(page, f"{server.url}/healthz")
    await page.evaluate(WHIP_PUBLISH, [f"{server.url}/whip/{room}", server.token("cam", "clinician", room)])
    return page


async def view(browser: Browser, server: Server, room: str, n: int) -> list[Page]:
    pages = []
    for i in range(n):
        page = await (await browser.new_context()).new_page()
        await goto(page, f"{server.url}/healthz")
        await page.evaluate(WHEP_SUBSCRIBE, [f"{server.url}/whep/{room}/cam",
                                             server.token(f"viewer-{i}", "observer", room)])
        pages.append(page)
    return pages


async def frames(page: Page) -> int:
    s = await inbound(page, "window.whep.pc")
    return s["video"]["framesDecoded"] if s["video"] else 0


async def all_decoding(pages: list[Page], at_least: int) -> bool:
    counts = await asyncio.gather(*(frames(p) for p in pages))
    return all(c > at_least for c in counts) and bool(counts)


def transports(server: Server, room_name: str, session: str) -> list[Any]:
    room = server.rooms.get(room_name)
    return [t for p in room.participants.values() if p.session == session
            for t in (p.publisher, p.subscriber) if t is not None]


async def test_one_publisher_eight_viewers_all_decode_on_the_native_plane(server, browser):
    await publish(browser, server, "lecture")
    viewers = await view(browser, server, "lecture", 8)
    await eventually(lambda: all_decoding(viewers, 10), timeout=60, what="8 viewers decoding")

    plane = server.rooms.plane
    assert plane is not None, "the native datapath is the default"
    (cam,) = transports(server, "lecture", "whip")
    subscribers = transports(server, "lecture", "whep")
    assert len(subscribers) == 8 and cam.handed_over and all(t.handed_over for t in subscribers)
    pub = plane.native.peer_stats(cam.handle)
    assert pub["rtp_in"] > 0 and pub["srtp_rtp_unprotected"] > 0
    for t in subscribers:
        s = plane.native.peer_stats(t.handle)
        assert s["rtp_out"] > 0 and s["srtp_rtp_protected"] > 0, t.handle
    # The router owns RTCP: sender reports to viewers, receiver reports/REMB to the publisher.
    router = server.rooms.get("lecture").router.stats()
    # Media reached the router natively, apart from the few packets before the handover.
    assert pub["rtp_in"] >= 0.9 * router["rtp_packets_in"]
    assert router["sr_out"] > 0 and router["rr_out"] > 0 and router["remb_out"] > 0
    # Scrape-time counters: the plane's datagrams and each of the 16 subscriptions (audio + video).
    metrics = {line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
               for line in (await _metrics(server)).splitlines() if line and not line.startswith("#")}
    assert metrics["mediasrv_media_datagrams_sent_total"] >= router["rtp_packets_out"] > 0
    per_sub = [k for k, v in metrics.items() if k.startswith("mediasrv_subscription_packets_total") and v > 0]
    assert len(per_sub) == 16
    # Round trip toward the publisher: Chromium answers the RRTR in our receiver reports with a DLRR
    # (RFC 3611), for audio and video alike.
    room = server.rooms.get("lecture")

    async def publisher_rtt() -> Any:
        rtts = [room.router.track_stats(t.id)["rtt"] for t in room.tracks.values()]
        return all(r is not None for r in rtts) and rtts

    rtts = await eventually(publisher_rtt, timeout=20, what="publisher RTT from DLRR")
    assert len(rtts) == 2 and all(0 <= r < 1.0 for r in rtts), rtts


async def test_publisher_loss_is_recovered_with_nack_and_rtx(lossy_server, browser):
    server = lossy_server
    await publish(browser, server, "ward")
    viewers = await view(browser, server, "ward", 2)
    await eventually(lambda: all_decoding(viewers, 30), timeout=60, what="viewers decoding under loss")
    room = server.rooms.get("ward")
    video = next(t for t in room.tracks.values() if t.kind == "video")

    async def recovered() -> Any:
        s = room.router.track_stats(video.id)
        return s["nacks_out"] > 0 and s["rtx_packets"] > 0 and s

    track = await eventually(recovered, timeout=30, what="NACKs to the publisher answered with RTX")
    assert track["nack_seqs_out"] >= track["nacks_out"]
    assert server.rooms.plane.native.stats()["dropped"]["test_loss"] > 0
    # Still decoding after the losses: frames keep coming on every viewer.
    before = await asyncio.gather(*(frames(p) for p in viewers))
    await asyncio.sleep(2.0)
    after = await asyncio.gather(*(frames(p) for p in viewers))
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
