"""Simulcast offers from Chromium: taken apart before aiortc, put back into its answer.

tests/data/chromium_simulcast_offer.sdp was captured from headless Chromium 156 (a sendonly audio
and a video transceiver with sendEncodings rid q/h/f, scaleResolutionDownBy 4/2/1).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from mediasrv.media.sdp import SdpError
from mediasrv.media.simulcast_sdp import (
    REPAIRED_RID_URI,
    RID_URI,
    SimulcastMedia,
    add_to_answer,
    strip_offer,
)

OFFER = (Path(__file__).parent / "data" / "chromium_simulcast_offer.sdp").read_bytes().decode()  # CRLF kept


def test_chromium_offer_is_understood_and_stripped() -> None:
    stripped, found = strip_offer(OFFER)
    assert list(found) == ["1"]
    media = found["1"]
    assert media.rids == ["q", "h", "f"]
    assert media.paused == set()
    assert (media.rid_ext, media.repaired_rid_ext) == (10, 11)
    assert media.layer_of_rid("f") == 2 and media.layer_of_rid("x") is None
    assert "a=rid:" not in stripped and "a=simulcast" not in stripped
    assert stripped.endswith("\r\n") and "\r\n\r\n" not in stripped
    # everything else is kept line for line
    kept = [line for line in OFFER.splitlines() if not line.startswith(("a=rid:", "a=simulcast:"))]
    assert stripped.splitlines() == kept


async def test_aiortc_answer_gets_the_receiving_side_back() -> None:
    stripped, found = strip_offer(OFFER)
    pc = RTCPeerConnection()
    try:
        await pc.setRemoteDescription(RTCSessionDescription(stripped, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        plain = pc.localDescription.sdp
    finally:
        await pc.close()
    assert "a=simulcast" not in plain  # what aiortc alone answers: the browser would send one layer
    answer = add_to_answer(plain, found)
    audio, video = answer.split("m=video", 1)
    assert "a=rid:" not in audio and RID_URI not in audio
    lines = video.splitlines()
    assert [line for line in lines if line.startswith("a=rid:")] == ["a=rid:q recv", "a=rid:h recv",
                                                                      "a=rid:f recv"]
    assert "a=simulcast:recv q;h;f" in lines
    assert f"a=extmap:10 {RID_URI}" in lines and f"a=extmap:11 {REPAIRED_RID_URI}" in lines
    assert "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid" in lines  # aiortc's own, untouched
    # aiortc still parses what we answer
    from aiortc.sdp import SessionDescription
    assert [m.kind for m in SessionDescription.parse(answer).media] == ["audio", "video"]


def test_answer_without_simulcast_offer_is_unchanged() -> None:
    assert add_to_answer("v=0\r\nm=video 9 X 96\r\na=mid:0\r\n", {}) == "v=0\r\nm=video 9 X 96\r\na=mid:0\r\n"


def test_paused_layers_and_alternatives() -> None:
    sdp = OFFER.replace("a=simulcast:send q;h;f", "a=simulcast:send q;~h,x;f")
    _, found = strip_offer(sdp)
    assert found["1"].rids == ["q", "h", "f"] and found["1"].paused == {"h"}
    answer = add_to_answer("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n", found)
    assert "a=simulcast:recv q;~h;f\r\n" in answer
    # the extensions follow a=mid when the answer has no extmap of its own
    assert answer.index(RID_URI) > answer.index("a=mid:1") and answer.index(RID_URI) < answer.index("a=rid:")


def test_ssrc_group_sim_is_read() -> None:
    sdp = ("v=0\nm=video 9 UDP/TLS/RTP/SAVPF 96\na=mid:v\na=ssrc-group:SIM 11 22 33\n"
           "a=ssrc-group:FID 11 44\na=ssrc:11 cname:x\n")
    stripped, found = strip_offer(sdp)
    # The FID group pairs layer 0 with its RTX stream (the router takes repairs from it).
    assert found == {"v": SimulcastMedia("v", sim_ssrcs=[11, 22, 33], sim_rtx_ssrcs=[44, 0, 0])}
    assert "SIM" not in stripped and "a=ssrc-group:FID 11 44\n" in stripped
    assert add_to_answer("v=0\nm=video 9 X 96\na=mid:v\n", found) == "v=0\nm=video 9 X 96\na=mid:v\n"


def test_offer_without_simulcast_is_unchanged() -> None:
    plain = "\r\n".join(line for line in OFFER.splitlines()
                        if not line.startswith(("a=rid:", "a=simulcast:"))) + "\r\n"
    assert strip_offer(plain) == (plain, {})


@pytest.mark.parametrize("change, message", [
    (("a=simulcast:send q;h;f", "a=simulcast:send a;b;c;d"), "without its a=rid"),
    (("a=rid:f send", "a=rid:f send\r\na=rid:g send"), None),  # an unused a=rid line is harmless
    (("a=simulcast:send q;h;f", "a=simulcast:recv q;h;f"), "we only receive simulcast"),
    (("a=simulcast:send q;h;f", "a=simulcast:send q;h;f;g"), "without its a=rid"),
    (("a=rid:f send", "a=rid:f recv"), "must be 'send'"),
    (("a=simulcast:send q;h;f", "a=simulcast:send q;q"), "listed twice"),
    (("a=simulcast:send q;h;f", "a=simulcast:send q;h;" + "f" * 40), "letters/digits"),
    ((f"a=extmap:10 {RID_URI}\r\n", ""), "header extension"),
    (("a=simulcast:send q;h;f\r\n", ""), "a=rid without a=simulcast"),
    # Values the router cannot take: refused here, before any track of the offer is set up.
    ((f"a=extmap:10 {RID_URI}", f"a=extmap:15 {RID_URI}"), "extension id"),
    ((f"a=extmap:10 {RID_URI}", f"a=extmap:300 {RID_URI}"), "extension id"),
    ((f"a=extmap:10 {RID_URI}", f"a=extmap:0 {RID_URI}"), "extension id"),
    ((f"a=extmap:10 {RID_URI}", f"a=extmap:{'9' * 5000} {RID_URI}"), "header extension"),  # no int() of it
])
def test_bad_simulcast_offers_are_refused(change: tuple[str, str], message: str | None) -> None:
    sdp = OFFER.replace(*change)
    assert sdp != OFFER
    if message is None:
        strip_offer(sdp)
        return
    with pytest.raises(SdpError, match=message):
        strip_offer(sdp)


@pytest.mark.parametrize("group", ["1 4294967296", "-1 2", "1 1"])
def test_ssrc_group_sim_outside_the_ssrc_range_is_refused(group: str) -> None:
    sdp = OFFER.replace("a=simulcast:send q;h;f\r\n", "").replace("a=rid:q send\r\n", "").replace(
        "a=rid:h send\r\n", "").replace("a=rid:f send\r\n", "")
    strip_offer(sdp.replace("a=mid:1\r\n", "a=mid:1\r\na=ssrc-group:SIM 1 2 3\r\n"))
    with pytest.raises(SdpError, match="SSRC"):
        strip_offer(sdp.replace("a=mid:1\r\n", f"a=ssrc-group:SIM {group}\r\na=mid:1\r\n"))


def test_four_layers_are_refused() -> None:
    sdp = OFFER.replace("a=rid:f send", "a=rid:f send\r\na=rid:g send").replace(
        "a=simulcast:send q;h;f", "a=simulcast:send q;h;f;g")
    with pytest.raises(SdpError, match="at most 3"):
        strip_offer(sdp)


@pytest.mark.parametrize("sdp", ["x", "", "v=0\r\ns=-\r\n"])
def test_offer_without_m_lines_is_left_to_the_sdp_checks(sdp: str) -> None:
    assert strip_offer(sdp)[1] == {}
    assert add_to_answer(sdp, {"0": SimulcastMedia("0", rids=["q"], rid_ext=10)}).startswith(sdp.rstrip("\r\n"))


@pytest.mark.parametrize("fid, rtx", [
    ("a=ssrc-group:FID 11 44\na=ssrc-group:FID 22 55\na=ssrc-group:FID 33 66\n", [44, 55, 66]),
    ("a=ssrc-group:FID 99 44\n", []),  # another stream's pair: no layer has RTX
    ("a=ssrc-group:FID 11 x\n", []),  # not a pair of numbers: left to aiortc
])
def test_fid_groups_pair_sim_layers_with_rtx(fid: str, rtx: list[int]) -> None:
    sdp = "v=0\nm=video 9 UDP/TLS/RTP/SAVPF 96\na=mid:v\na=ssrc-group:SIM 11 22 33\n" + fid
    assert strip_offer(sdp)[1]["v"].sim_rtx_ssrcs == rtx


@pytest.mark.parametrize("fid", ["a=ssrc-group:FID 11 22\n",
                                 "a=ssrc-group:FID 11 44\na=ssrc-group:FID 22 44\n"])
def test_fid_group_naming_another_layer_is_refused(fid: str) -> None:
    sdp = "v=0\nm=video 9 UDP/TLS/RTP/SAVPF 96\na=mid:v\na=ssrc-group:SIM 11 22 33\n" + fid
    with pytest.raises(SdpError, match="FID"):
        strip_offer(sdp)
