"""WHIP in, WHEP out: one page publishes with WHIP, another subscribes with WHEP and decodes."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import eventually, goto, inbound

pytestmark = pytest.mark.browser

WHIP_PUBLISH = """
async ([url, token]) => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: {width: 1280, height: 720}});
  const pc = new RTCPeerConnection({bundlePolicy: 'max-bundle'});
  for (const t of stream.getTracks()) pc.addTransceiver(t, {direction: 'sendonly'});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((r) => { if (pc.iceGatheringState === 'complete') r();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r(); });
  const res = await fetch(url, {method: 'POST', body: pc.localDescription.sdp,
    headers: {'Content-Type': 'application/sdp', 'Authorization': 'Bearer ' + token}});
  if (res.status !== 201) throw new Error('WHIP ' + res.status + ' ' + await res.text());
  await pc.setRemoteDescription({type: 'answer', sdp: await res.text()});
  window.whip = {pc, location: res.headers.get('Location')};
  return window.whip.location;
}
"""

WHEP_SUBSCRIBE = """
async ([url, token]) => {
  const pc = new RTCPeerConnection({bundlePolicy: 'max-bundle'});
  // Play what arrives (Chromium counts received audio samples only for a track that plays out).
  pc.ontrack = (ev) => {
    const el = document.createElement(ev.track.kind);
    el.autoplay = true; el.muted = ev.track.kind === 'video'; el.srcObject = new MediaStream([ev.track]);
    document.body.appendChild(el);
  };
  pc.addTransceiver('audio', {direction: 'recvonly'});
  pc.addTransceiver('video', {direction: 'recvonly'});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((r) => { if (pc.iceGatheringState === 'complete') r();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r(); });
  const res = await fetch(url, {method: 'POST', body: pc.localDescription.sdp,
    headers: {'Content-Type': 'application/sdp', 'Authorization': 'Bearer ' + token}});
  if (res.status !== 201) throw new Error('WHEP ' + res.status + ' ' + await res.text());
  await pc.setRemoteDescription({type: 'answer', sdp: await res.text()});
  window.whep = {pc, location: res.headers.get('Location')};
  return window.whep.location;
}
"""


async def test_whip_publish_whep_subscribe(server, browser):
    ctx = await browser.new_context()
    pub = await ctx.new_page()
    await goto(pub, f"{server.url}/healthz")
    location = await pub.evaluate(WHIP_PUBLISH, [f"{server.url}/whip/studio",
                                                 server.token("cam-1", "clinician", "studio")])
    assert location.startswith("/whip/studio/")
    sub = await (await browser.new_context()).new_page()
    await goto(sub, f"{server.url}/healthz")
    whep = await sub.evaluate(WHEP_SUBSCRIBE, [f"{server.url}/whep/studio/cam-1",
                                               server.token("viewer-1", "observer", "studio")])
    assert whep.startswith("/whep/studio/cam-1/")

    async def decoding():
        s = await inbound(sub, "window.whep.pc")
        return s["video"] and s["video"]["framesDecoded"] > 20 and s["audio"] and \
            s["audio"]["totalSamplesReceived"] > 0 and s

    await eventually(decoding, timeout=40, what="WHEP viewer decoding")
    room = server.rooms.get("studio")
    assert {p.session for p in room.participants.values()} == {"whip", "whep"}

    # Byte-exact forwarding: stop the publisher's media, let the pipe drain, then the payload bytes
    # the viewer's browser counted equal the payload bytes the router forwarded to it.
    await pub.evaluate("Promise.all(window.whip.pc.getSenders().map((s) => s.replaceTrack(null)))")
    viewer = next(p for p in room.participants.values() if p.session == "whep")
    subs = {s.track.kind: s.id for s in viewer.subscriptions.values()}

    async def drained():
        first = await inbound(sub, "window.whep.pc")
        await asyncio.sleep(1.0)
        second = await inbound(sub, "window.whep.pc")
        counted = [(s[k]["bytesReceived"], s[k]["packetsReceived"]) for s in (first, second)
                   for k in ("audio", "video")]
        # (audio keeps producing concealment samples, so compare what arrived, not what played)
        return counted[:2] == counted[2:] and second

    got = await eventually(drained, timeout=20, what="media drained")
    for kind in ("audio", "video"):
        forwarded = room.router.subscription_stats(subs[kind])
        assert got[kind]["bytesReceived"] == forwarded["payload_bytes"] + \
            forwarded["retransmission_payload_bytes"], kind

    # Ending the WHIP session with DELETE removes the publisher and its tracks.
    status = await pub.evaluate(
        """async ([url, token]) => (await fetch(url, {method: 'DELETE',
             headers: {'Authorization': 'Bearer ' + token}})).status""",
        [server.url + location, server.token("cam-1", "clinician", "studio")])
    assert status == 200
    assert "cam-1" not in room.participants and not room.tracks
    await ctx.close()
    await sub.context.close()
