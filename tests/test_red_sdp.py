"""Opus RED in SDP: a RED offer gets a RED answer (first when the offer put it first), our offers
list RED, and a subscriber that leaves RED out of its answer gets plain Opus from the router.

tests/data/chromium_red_offer.sdp was captured from headless Chromium 156: a sendonly audio
transceiver with `setCodecPreferences` putting audio/red first (Chromium's default order is
`111 63 ...`: Opus, then RED).
"""

from __future__ import annotations

from pathlib import Path

import mediasrv_native
import pytest
from aiortc import RTCPeerConnection, RTCRtpCodecParameters, RTCSessionDescription
from aiortc.sdp import SessionDescription

from mediasrv.media import red_sdp
from mediasrv.media.peer_transport import ForwardedTrack
from mediasrv.media.sdp import codec_tuples

RED_FIRST = (Path(__file__).parent / "data" / "chromium_red_offer.sdp").read_bytes().decode()
_RED_LINES = "a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\n"
_OPUS_FMTP = "a=fmtp:111 minptime=10;useinbandfec=1\r\n"
# Chromium's default offer: the same lines with Opus first (aiortc reads the order of the rtpmaps).
OPUS_FIRST = RED_FIRST.replace("SAVPF 63 111 ", "SAVPF 111 63 ").replace(_RED_LINES, "").replace(
    _OPUS_FMTP, _OPUS_FMTP + _RED_LINES)


async def _answer(offer: str) -> tuple[str, list[tuple[int, str, int, int | None, str]]]:
    pc = RTCPeerConnection()
    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp, codec_tuples(pc.getTransceivers()[0])
    finally:
        await pc.close()


def _audio_formats(sdp: str) -> list[int]:
    return next(m for m in SessionDescription.parse(sdp).media if m.kind == "audio").fmt


async def test_a_red_first_offer_gets_red_first_in_the_answer() -> None:
    answer, negotiated = await _answer(RED_FIRST)
    assert _audio_formats(answer)[:2] == [63, 111]
    lines = answer.splitlines()
    assert "a=rtpmap:63 red/48000/2" in lines and "a=fmtp:63 111/111" in lines
    assert negotiated[0] == (63, "red", 48000, None, "111/111")
    assert negotiated[1][:3] == (111, "opus", 48000)


async def test_chromium_default_order_keeps_opus_first_with_red_beside_it() -> None:
    answer, negotiated = await _answer(OPUS_FIRST)
    assert _audio_formats(answer)[:2] == [111, 63]
    assert [c[1] for c in negotiated[:2]] == ["opus", "red"]


@pytest.mark.parametrize("fmtp", ["a=fmtp:63 0/0", "a=fmtp:63 112/112", "a=fmtp:63 abc", ""])
async def test_red_over_something_other_than_accepted_opus_is_left_out(fmtp: str) -> None:
    offer = RED_FIRST.replace("a=fmtp:63 111/111\r\n", fmtp + "\r\n" if fmtp else "")
    answer, negotiated = await _answer(offer)
    assert 63 not in _audio_formats(answer) and "red" not in answer
    assert negotiated[0][1] == "opus"


async def test_offers_to_subscribers_list_red_after_opus() -> None:
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver(ForwardedTrack("audio"), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
    finally:
        await pc.close()
    assert _audio_formats(offer)[:2] == [96, red_sdp.RED_PAYLOAD_TYPE]
    assert "a=rtpmap:63 red/48000/2" in offer.splitlines()
    assert "a=fmtp:63 96/96" in offer.splitlines()


def test_negotiate_red_is_idempotent() -> None:
    red_sdp.negotiate_red()
    red_sdp.negotiate_red()
    from aiortc import codecs
    assert sum(red_sdp.is_red(c) for c in codecs.CODECS["audio"]) == 1


def test_block_types() -> None:
    def red(params: dict[str, str | int | None]) -> RTCRtpCodecParameters:
        return RTCRtpCodecParameters(mimeType="audio/red", clockRate=48000, parameters=params)

    assert red_sdp.block_types(red({"111/111": None})) == [111, 111]
    assert red_sdp.block_types(red({"111": None})) == [111]
    for bad in ({}, {"a": None}, {"111/111": "x"}, {"111/": None}, {"1/2": None, "3": None}):
        assert red_sdp.block_types(red(bad)) is None


# --- what the router makes of the negotiated codecs ---------------------------------------------------
PUB, VIEWER_RED, VIEWER_PLAIN = 1, 2, 3


def _rtp(seq: int, payload: bytes) -> bytes:
    return bytes([0x80, 63]) + seq.to_bytes(2, "big") + (960 * seq).to_bytes(4, "big") + \
        (0x1234).to_bytes(4, "big") + payload


def _red_packet(seq: int, primary: bytes) -> bytes:
    return _rtp(seq, bytes([0x80 | 111, 0x0F, 0x00, 2, 111, 0xAA, 0xBB]) + primary)  # one 2-byte redundant block


async def test_the_router_sends_red_to_a_red_subscriber_and_plain_opus_to_one_that_stripped_it() -> None:
    _, publisher = await _answer(RED_FIRST)
    pc = RTCPeerConnection()
    try:
        tr = pc.addTransceiver(ForwardedTrack("audio"), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        # A browser answers with the codecs it takes; one that strips RED answers Opus alone.
        browser = offer.replace("a=setup:actpass", "a=setup:active").replace("sendonly", "recvonly")
        await pc.setRemoteDescription(RTCSessionDescription(browser, "answer"))
        with_red = codec_tuples(tr)
    finally:
        await pc.close()
    assert [c[1] for c in with_red[:2]] == ["opus", "red"]
    without_red = [c for c in with_red if c[1] != "red"]

    router = mediasrv_native.Router(seed=1)
    router.add_publisher(PUB, 0xAAAA, {})
    router.add_track(7, PUB, "audio", "1", publisher, [0x1234])
    router.add_subscription(70, 7, VIEWER_RED, 0x5001, with_red, {})
    router.add_subscription(71, 7, VIEWER_PLAIN, 0x5002, without_red, {})
    out = dict(router.route_rtp(PUB, _red_packet(5, b"\xfc\x01\x02"), 0))
    red_out, plain_out = out[VIEWER_RED], out[VIEWER_PLAIN]
    assert red_out[1] & 0x7F == 63
    # The blocks' Opus type is the subscriber's (96), the rest unchanged.
    assert red_out[12:] == bytes([0x80 | 96, 0x0F, 0x00, 2, 96, 0xAA, 0xBB, 0xFC, 0x01, 0x02])
    assert plain_out[1] & 0x7F == 96
    assert plain_out[12:] == b"\xfc\x01\x02", "the primary block alone"
    assert router.stats()["dropped"]["malformed_red"] == 0
    assert router.route_rtp(PUB, _rtp(6, bytes([0x80 | 111, 0, 0, 200, 111, 1, 2])), 20) == []  # length > payload
    assert router.stats()["dropped"]["malformed_red"] == 1


def test_a_red_publisher_is_recorded_as_its_opus() -> None:
    from mediasrv.recording.recorder import recordable_codec

    negotiated = [(63, "red", 48000, None, "111/111"), (111, "opus", 48000, None, "minptime=10")]
    assert recordable_codec(negotiated) == ("opus", 111, 48000)
