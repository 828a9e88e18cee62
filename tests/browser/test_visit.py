"""A live visit between two real browsers through mediasrv (the walking skeleton's main path)."""

from __future__ import annotations

import asyncio

import aiortc.codecs
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import pytest

from .conftest import eventually, inbound, open_demo

pytestmark = pytest.mark.browser


@pytest.fixture
def no_decoders(monkeypatch):
    """Count every decoder/encoder aiortc would create in the server process (there must be none)."""
    created: list[str] = []
    real_dec, real_enc = aiortc.codecs.get_decoder, aiortc.codecs.get_encoder

    def dec(codec):
        created.append(f"decoder {codec.mimeType}")
        return real_dec(codec)

    def enc(codec):
        created.append(f"encoder {codec.mimeType}")
        return real_enc(codec)

    monkeypatch.setattr(aiortc.rtcrtpreceiver, "get_decoder", dec)
    monkeypatch.setattr(aiortc.rtcrtpsender, "get_encoder", enc)
    return created


async def test_two_browsers_see_and_hear_each_other(server, browser, no_decoders):
    clinician = await open_demo(browser, server, "visit1", "dr-lee", "clinician")
    patient = await open_demo(browser, server, "visit1", "pat-1", "patient")

    async def decoding(page):
        first = await inbound(page)
        await asyncio.sleep(1.0)
        second = await inbound(page)
        v1, v2, a2 = first["video"], second["video"], second["audio"]
        return (v1 and v2 and a2 and v2["framesDecoded"] > v1["framesDecoded"] > 0
                and a2["totalSamplesReceived"] > 0 and second)

    for page in (clinician, patient):
        await eventually(lambda p=page: decoding(p), timeout=40, what="frames decoded")
    # Full resolution once the bandwidth estimate has ramped (the server sends REMB).
    for page in (clinician, patient):
        await eventually(lambda p=page: _wide(p), timeout=40, what="frame width >= 640")

    room = server.rooms.get("visit1")
    assert len(room.tracks) == 4
    stats = room.router.stats()
    assert stats["rtp_packets_out"] > 0 and stats["payload_bytes_out"] > 0
    # Forwarding, not transcoding: every forwarded payload byte was received first, unchanged in size;
    # with one subscriber per track, bytes out never exceed bytes in.
    assert stats["payload_bytes_out"] <= stats["payload_bytes_in"]
    assert no_decoders == []

    # Chat goes through the room protocol.
    await patient.fill("#chat input[name=text]", "my oximeter says 97")
    await patient.click("#chat button")
    await eventually(lambda: clinician.evaluate("window.demo.chat.length"), timeout=10, what="chat")
    assert (await clinician.evaluate("window.demo.chat[0]"))["text"] == "my oximeter says 97"

    # Closing the patient's page removes the participant and its tracks; gauges go back down.
    await patient.context.close()
    await eventually(lambda: _gone(server, "visit1", "pat-1"), timeout=40, what="participant removed")
    assert len(room.tracks) == 2
    await clinician.context.close()
    await eventually(lambda: _no_rooms(server), timeout=40, what="rooms gone")
    metrics = await _metrics(server)
    for gauge in ("mediasrv_rooms 0.0", 'mediasrv_participants{admitted="true"} 0.0',
                  'mediasrv_tracks{kind="video"} 0.0', "mediasrv_subscriptions 0.0"):
        assert gauge in metrics, gauge
    forwarded = [line for line in metrics.splitlines() if line.startswith("mediasrv_rtp_packets_forwarded_total")]
    assert float(forwarded[0].split()[1]) > 0  # counters of closed rooms are kept


async def _metrics(server):
    import aiohttp

    headers = {"Authorization": f"Bearer {server.token('ops', 'admin')}"}
    async with aiohttp.ClientSession() as s, s.get(f"{server.url}/metrics", headers=headers) as r:
        return await r.text()


async def _wide(page):
    v = (await inbound(page))["video"]
    return v and v["frameWidth"] >= 640 and v


async def _gone(server, room_name, identity):
    room = server.rooms.get(room_name)
    return room is None or identity not in room.participants


async def _no_rooms(server):
    return not server.rooms.list()


async def test_rooms_are_isolated(server, browser):
    a1 = await open_demo(browser, server, "room-a", "a1", "clinician")
    a2 = await open_demo(browser, server, "room-a", "a2", "patient")
    b1 = await open_demo(browser, server, "room-b", "b1", "patient")
    await eventually(lambda: _decoding(a2), timeout=40, what="room A media flowing")
    await asyncio.sleep(2.0)
    # b1 is alone in room B: it got no offer for anyone's tracks and decoded nothing.
    assert await b1.evaluate("window.demo.room.sub") is None
    assert await b1.evaluate("window.demo.room.remoteTracks.size") == 0
    rb = server.rooms.get("room-b")
    assert rb.router.stats()["rtp_packets_out"] == 0
    assert set(rb.participants) == {"b1"}
    for p in (a1, a2, b1):
        await p.context.close()


async def _decoding(page):
    v = (await inbound(page))["video"]
    return v and v["framesDecoded"] > 10
