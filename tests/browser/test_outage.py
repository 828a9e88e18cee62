"""A patient's network goes away for longer than ICE consent lasts (a lift, a tunnel, a router
restart), then comes back: the visit resumes by itself.

The patient's Chromium runs in its own network namespace (tests/browser/netns.py); for the outage
its firewall drops everything it sends (UDP and TCP alike), for longer than the server's consent
timeout, so the server gives its connections up and the participant leaves ("connection_lost").
Once the network is back, the page must notice (its room connection closed, or its peer
connections failed), join again with the same token and publish again, without a user's reload:
both sides then decode the other's video again. An outage shorter than consent costs nothing: ICE
rides it out, nobody leaves, the page does not rejoin. The time from the network's return to the first
frame decoded again is printed (reported, never asserted).
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from playwright.async_api import Page

from mediasrv.auth import Identity
from mediasrv.rooms import RoomOptions
from tests.conftest import start_server

from . import netns
from .conftest import eventually, open_demo
from .netns import HOST_ADDR, listen_on

browser_netns, netns_browser, ns_home = netns.browser_netns, netns.netns_browser, netns.ns_home

pytestmark = pytest.mark.browser


VIDEO_FRAMES = """
async () => {
  const pc = window.demo.room && window.demo.room.sub;
  let frames = 0;
  if (pc) (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
  });
  return frames;
}
"""


async def _decoding(page: Page) -> bool:
    """Frames decoded over a second on the page's subscriber connection (all its video streams:
    one that stopped at the outage stays in the stats, frozen, beside the new one)."""
    first = await page.evaluate(VIDEO_FRAMES)
    await asyncio.sleep(1.0)
    return bool(await page.evaluate(VIDEO_FRAMES) > first)


def _record_leaves(room: Any) -> list[tuple[str, str]]:
    """Who leaves the room, and why, in order (they leave as before)."""
    left: list[tuple[str, str]] = []
    room_leave = room.leave

    async def leave(identity: str, reason: str = "left") -> bool:
        left.append((identity, reason))
        return await room_leave(identity, reason)
    room.leave = leave
    return left


@pytest.mark.parametrize(("outage_s", "consent_timeout_s"), [(15.0, 5.0), (12.0, 20.0)],
                         ids=["longer_than_consent", "shorter_than_consent"])
async def test_a_patient_back_from_an_outage_is_in_the_visit_again(
        browser, netns_browser, browser_netns, tmp_path, outage_s, consent_timeout_s):
    """Longer than the server's consent timeout: the server gives the patient's connections up and
    the page joins again by itself. Shorter: ICE rides it out, nobody leaves or rejoins, and video
    comes back within seconds (the estimator takes the silence for an outage, not congestion: a 12 s
    one used to leave the patient's video paused for over a minute)."""
    long_outage = outage_s > consent_timeout_s
    srv = await start_server(tmp_path / "data", media_bind_addresses=[HOST_ADDR],
                             ice_consent_interval_s=1.0, ice_consent_timeout_s=consent_timeout_s)
    try:
        view = SimpleNamespace(url=await listen_on(srv, HOST_ADDR), token=srv.token)
        clinician = await open_demo(browser, view, "outage", "dr-out", "clinician", "&simulcast=0")
        patient = await open_demo(netns_browser, view, "outage", "pat-out", "patient", "&simulcast=0")
        for page in (clinician, patient):
            await eventually(lambda p=page: _decoding(p), timeout=40, what="video decoded")
        room = srv.rooms.get("outage")
        left = _record_leaves(room)

        browser_netns._rules("    drop\n")  # nothing leaves the patient's machine
        if long_outage:
            await eventually(lambda: asyncio.sleep(0, "pat-out" not in room.participants),
                             timeout=outage_s, what="the server gives the patient's connections up")
            # Consent gave the media up first (the socket's idle limit would have at 25 s).
            assert left == [("pat-out", "connection_lost")], left
            assert not await _decoding(clinician), "no video from the patient during the outage"
            notice = await clinician.text_content("#notice")
            assert notice and "pat-out lost their connection" in notice, notice
            await asyncio.sleep(max(0.0, outage_s - consent_timeout_s))
        else:
            await asyncio.sleep(outage_s)
        browser_netns.open()
        back = time.monotonic()

        await eventually(lambda: asyncio.sleep(0, "pat-out" in room.participants), timeout=60,
                         what="the patient in the visit")
        await eventually(lambda: _decoding(patient), timeout=60, what="the patient decodes the clinician again")
        patient_s = time.monotonic() - back
        await eventually(lambda: _decoding(clinician), timeout=60, what="the clinician decodes the patient again")
        reconnects = await patient.evaluate("window.demo.reconnects || 0")
        assert await clinician.text_content("#notice") == "", "the notice goes once the patient is back"
        print(f"\noutage {outage_s:.0f} s (consent timeout {consent_timeout_s:.0f} s): patient decoding again "
              f"{patient_s:.1f} s after the network returned, clinician {time.monotonic() - back:.1f} s; "
              f"page reconnects: {reconnects}; left: {left}")
        assert reconnects == (1 if long_outage else 0)
        if not long_outage:
            assert left == [], "an outage shorter than consent costs nobody the visit"
        for page in (clinician, patient):
            await page.context.close()
    finally:
        browser_netns.open()
        await srv.runner.cleanup()


async def test_a_removed_patient_does_not_come_back_by_itself(browser, tmp_path):
    """Ended on purpose (removed by the clinician): the page closes its media and stays out; no
    failure of the closed connections brings it back."""
    srv = await start_server(tmp_path / "data")
    try:
        clinician = await open_demo(browser, srv, "removal", "dr-rm", "clinician", "&simulcast=0")
        patient = await open_demo(browser, srv, "removal", "pat-rm", "patient", "&simulcast=0")
        await eventually(lambda: _decoding(patient), timeout=40, what="video decoded")
        room = srv.rooms.get("removal")
        await room.remove("pat-rm", Identity("dr-rm", "clinician", "removal", "dr-rm", 0))
        states = """() => [window.demo.room.pub && window.demo.room.pub.connectionState,
                           window.demo.room.sub && window.demo.room.sub.connectionState,
                           window.demo.reconnects || 0, document.querySelector('#status').textContent]"""
        await eventually(lambda: patient.evaluate(f"() => ({states})()[1] === 'closed'"), timeout=10,
                         what="the patient's media closed")
        await asyncio.sleep(8)
        pub, sub, reconnects, status = await patient.evaluate(states)
        assert (pub, sub, reconnects) == ("closed", "closed", 0), (pub, sub, reconnects, status)
        assert status.startswith("disconnected (4000)"), status
        assert "pat-rm" not in room.participants
        for page in (clinician, patient):
            await page.context.close()
    finally:
        await srv.runner.cleanup()


WAITING_SOCKET = """
([url, token]) => new Promise((resolve) => {
  // A patient in the waiting room before any camera: the room socket alone, and quiet.
  window.events = [];
  const ws = new WebSocket(url);
  ws.onopen = () => ws.send(JSON.stringify({type: 'join', token}));
  ws.onmessage = (e) => { const m = JSON.parse(e.data); window.events.push(m.type); if (m.type === 'joined') resolve(); };
  ws.onclose = (e) => { window.wsClosed = e.code; };
})
"""


async def test_a_waiting_patient_whose_network_went_away_leaves_the_list(netns_browser, browser_netns, tmp_path):
    """A quiet Chromium in the waiting room stays (it answers the server's pings by itself); once
    its network is gone, the clinician's waiting list loses it at the idle limit (`disconnected`),
    not a minute and a half later."""
    ping_s, idle_s = 1.0, 4.0
    srv = await start_server(tmp_path / "data", room_ws_ping_s=ping_s, room_ws_idle_timeout_s=idle_s)
    try:
        url = await listen_on(srv, HOST_ADDR)
        room = srv.rooms.create("waiting", RoomOptions(waiting_room=True))
        left = _record_leaves(room)

        page = await (await netns_browser.new_context()).new_page()
        await page.goto(f"{url}/demo")
        token = srv.token("pat-wait", "patient", "waiting")
        ws_url = url.replace("http://", "ws://") + "/rooms/waiting/ws"
        await asyncio.wait_for(page.evaluate(WAITING_SOCKET, [ws_url, token]), 15)
        await asyncio.sleep(2 * idle_s)  # nothing said for two idle limits (eight pings answered)
        assert "pat-wait" in room.participants and not room.participants["pat-wait"].admitted
        assert left == [] and await page.evaluate("window.wsClosed === undefined")

        browser_netns._rules("    drop\n")  # the patient's laptop lid closes
        cut = time.monotonic()
        await eventually(lambda: asyncio.sleep(0, "pat-wait" not in room.participants), timeout=idle_s + 10,
                         what="the waiting patient gone from the room")
        gone_s = time.monotonic() - cut
        print(f"\nwaiting patient gone {gone_s:.1f} s after its network (idle limit {idle_s:.0f} s, "
              f"ping every {ping_s:.0f} s of silence)")
        assert left == [("pat-wait", "disconnected")], left
        await page.context.close()
    finally:
        browser_netns.open()
        await srv.runner.cleanup()
