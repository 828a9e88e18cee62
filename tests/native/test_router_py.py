"""Python binding of the native router (mediasrv_native.Router): the API the control plane calls."""

from __future__ import annotations

import struct

import pytest

mediasrv_native = pytest.importorskip("mediasrv_native")

PUB, SUB_T = 1, 2
VIDEO, AUDIO = 10, 11
VIDEO_SSRC, RTX_SSRC, AUDIO_SSRC = 1111, 2222, 3333
PUB_CODECS = [(96, "VP8", 90000, None), (97, "rtx", 90000, 96)]
SUB_CODECS = [(120, "VP8", 90000, None), (121, "rtx", 90000, 120), (109, "opus", 48000, None)]


def rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, ext: bytes = b"") -> bytes:
    first = 0x90 if ext else 0x80
    header = struct.pack("!BBHII", first, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    if ext:
        ext += b"\0" * (-len(ext) % 4)
        header += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    return header + payload


def vp8(seq: int, ts: int, key: bool) -> bytes:
    return rtp(96, seq, ts, VIDEO_SSRC, bytes([0x10, 0x00 if key else 0x01]) + bytes(100))


def opus(seq: int, ts: int) -> bytes:
    return rtp(111, seq, ts, AUDIO_SSRC, b"\xfc" + bytes(60), ext=bytes([0x30, 0x7F]))


def parse(packet: bytes) -> tuple[int, int, int, int]:
    _, pt, seq, ts, ssrc = struct.unpack("!BBHII", packet[:12])
    return pt & 0x7F, seq, ts, ssrc


@pytest.fixture
def router() -> mediasrv_native.Router:
    r = mediasrv_native.Router(max_bitrate_bps=2_000_000, nack_cache_packets=256)
    r.add_publisher(PUB, 0xAAAA, {"mid": 1, "abs-send-time": 2, "audio-level": 3})
    r.add_track(VIDEO, PUB, "video", "0", PUB_CODECS, [VIDEO_SSRC, RTX_SSRC])
    r.add_track(AUDIO, PUB, "audio", "1", [(111, "opus", 48000, None)], [AUDIO_SSRC])
    return r


def test_forwards_audio_rewritten_for_each_subscriber(router: mediasrv_native.Router) -> None:
    router.add_subscription(100, AUDIO, SUB_T, 0x5001, SUB_CODECS, {"audio-level": 7})
    router.add_subscription(101, AUDIO, 3, 0x5002, SUB_CODECS, {})
    first = router.route_rtp(PUB, opus(10, 960), 0)
    second = router.route_rtp(PUB, opus(11, 1920), 20)
    assert sorted(t for t, _ in first) == [SUB_T, 3]
    by_transport = {t: p for t, p in first}
    pt, seq, ts, ssrc = parse(by_transport[SUB_T])
    assert (pt, ssrc) == (109, 0x5001)
    # the audio level travels under the subscriber's id; the payload is untouched
    assert by_transport[SUB_T][12:16] == struct.pack("!HH", 0xBEDE, 1)
    assert by_transport[SUB_T][16:18] == bytes([0x70, 0x7F])
    assert by_transport[3][0] & 0x10 == 0
    assert by_transport[3].endswith(b"\xfc" + bytes(60))
    pt2, seq2, ts2, _ = parse(dict(second)[SUB_T])
    assert (seq2 - seq) % 65536 == 1 and (ts2 - ts) % 2**32 == 960
    stats = router.stats()
    assert stats["payload_bytes_out"] == 2 * stats["payload_bytes_in"] > 0
    assert router.subscription_stats(100)["packets"] == 2


def test_video_waits_for_keyframe_and_poll_asks_for_one(router: mediasrv_native.Router) -> None:
    router.add_subscription(100, VIDEO, SUB_T, 0x5001, SUB_CODECS, {})
    rtcp = router.poll(0)
    # REMB and PLI to the publisher, both naming the video SSRC
    assert all(t == PUB for t, _ in rtcp)
    kinds = sorted((p[0] & 0x1F, p[1]) for _, p in rtcp)
    assert kinds == [(1, 206), (15, 206)]
    pli = next(p for _, p in rtcp if p[0] & 0x1F == 1)
    assert struct.unpack("!II", pli[4:12]) == (0xAAAA, VIDEO_SSRC)
    assert router.route_rtp(PUB, vp8(1, 0, key=False), 10) == []
    assert router.stats()["dropped"]["waiting_keyframe"] == 1
    assert router.subscription_stats(100)["waiting_keyframe"] is True
    out = router.route_rtp(PUB, vp8(2, 3000, key=True), 20)
    assert len(out) == 1 and parse(out[0][1])[0] == 120
    assert router.track_stats(VIDEO)["keyframes"] == 1


def test_nack_gets_retransmission_and_pli_is_throttled(router: mediasrv_native.Router) -> None:
    router.add_subscription(100, VIDEO, SUB_T, 0x5001, SUB_CODECS, {})
    sent = [router.route_rtp(PUB, vp8(i, 0, key=i == 0), i)[0][1] for i in range(5)]
    lost_seq = parse(sent[2])[1]
    nack = struct.pack("!BBHIIHH", 0x81, 205, 3, 0x5001, 0x5001, lost_seq, 0)
    rtp_out, rtcp_out = router.handle_rtcp(SUB_T, nack, 100)
    assert rtp_out == [(SUB_T, sent[2])] and rtcp_out == []
    pli = struct.pack("!BBHII", 0x81, 206, 2, 0x5001, 0x5001)
    assert len(router.handle_rtcp(SUB_T, pli, 1000)[1]) == 1
    assert router.handle_rtcp(SUB_T, pli, 1100)[1] == []
    assert len(router.request_keyframe(VIDEO, 1300)) == 1
    stats = router.stats()
    assert (stats["nacks_in"], stats["retransmissions_out"], stats["plis_in"]) == (1, 1, 2)


def test_garbage_is_counted_not_raised(router: mediasrv_native.Router) -> None:
    for junk in (b"", b"\x80", bytes(range(40)), b"\xff" * 1500):
        assert router.route_rtp(PUB, junk, 0) == []
        assert router.handle_rtcp(PUB, junk, 0) == ([], [])
    dropped = router.stats()["dropped"]
    assert dropped["malformed"] >= 3 and dropped["malformed_rtcp"] >= 3
    assert router.route_rtp(99, vp8(1, 0, key=True), 0) == []
    assert router.stats()["dropped"]["unknown_ssrc"] == 1


def test_bad_arguments_raise_precise_errors(router: mediasrv_native.Router) -> None:
    with pytest.raises(ValueError, match="kind"):
        router.add_track(1, PUB, "data", None, PUB_CODECS, [])
    with pytest.raises(ValueError, match="add_publisher"):
        router.add_track(1, 42, "video", None, PUB_CODECS, [])
    with pytest.raises(ValueError, match="payload type 300"):
        router.add_track(1, PUB, "video", None, [(300, "VP8", 90000, None)], [])
    with pytest.raises(ValueError, match="already exists"):
        router.add_track(VIDEO, PUB, "video", None, PUB_CODECS, [])
    with pytest.raises(ValueError, match="unknown track"):
        router.add_subscription(1, 999, SUB_T, 1, SUB_CODECS, {})
    with pytest.raises(ValueError, match="no codec in common"):
        router.add_subscription(1, VIDEO, SUB_T, 1, [(100, "H264", 90000, None)], {})
    with pytest.raises(ValueError, match="codec must be"):
        router.add_track(1, PUB, "video", None, [(96, "VP8")], [])
    with pytest.raises(KeyError):
        router.track_stats(999)


def test_removal_and_isolation_between_routers(router: mediasrv_native.Router) -> None:
    other = mediasrv_native.Router()
    other.add_publisher(PUB, 1, {})
    other.add_track(AUDIO, PUB, "audio", None, [(111, "opus", 48000, None)], [AUDIO_SSRC])
    router.add_subscription(100, AUDIO, SUB_T, 0x5001, SUB_CODECS, {})
    # same transport id, track id and SSRC in another room: nothing crosses
    assert other.route_rtp(PUB, opus(1, 0), 0) == []
    assert len(router.route_rtp(PUB, opus(1, 0), 0)) == 1
    assert router.remove_transport(SUB_T) is True
    assert router.route_rtp(PUB, opus(2, 960), 20) == []
    assert router.remove_track(AUDIO) is True and router.remove_track(AUDIO) is False


def test_h264_fmtp_picks_the_matching_subscriber_payload_type() -> None:
    r = mediasrv_native.Router()
    r.add_publisher(PUB, 1, {})
    mode1 = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
    r.add_track(VIDEO, PUB, "video", "0", [(102, "H264", 90000, None, mode1)], [VIDEO_SSRC])
    r.add_subscription(100, VIDEO, SUB_T, 0x5001, [
        (100, "H264", 90000, None, "packetization-mode=0;profile-level-id=42e01f"),
        (104, "H264", 90000, None, "packetization-mode=1;profile-level-id=42e01f"),
    ], {})
    idr = rtp(102, 1, 0, VIDEO_SSRC, bytes([0x65, 0x88]) + bytes(50))
    out = r.route_rtp(PUB, idr, 0)
    assert [parse(p)[0] for _, p in out] == [104]


def test_poll_reports_reception_and_optional_sender_reports() -> None:
    r = mediasrv_native.Router(sender_reports=True)
    r.add_publisher(PUB, 0xAAAA, {})
    r.add_track(AUDIO, PUB, "audio", "1", [(111, "opus", 48000, None)], [AUDIO_SSRC])
    r.add_subscription(100, AUDIO, SUB_T, 0x5001, SUB_CODECS, {})
    for seq in (0, 1, 3):  # 2 is lost
        r.route_rtp(PUB, opus(seq, seq * 960), seq * 20)
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, AUDIO_SSRC, 5, 0, 0, 3, 300)
    assert r.handle_rtcp(PUB, sr, 100) == ([], [])
    out = r.poll(200)
    to_pub = [p for t, p in out if t == PUB]
    to_sub = [p for t, p in out if t == SUB_T]
    assert len(to_pub) == 1 and to_pub[0][1] == 201  # RR
    ssrc, lost = struct.unpack("!I", to_pub[0][8:12])[0], struct.unpack("!I", b"\0" + to_pub[0][13:16])[0]
    assert (ssrc, lost) == (AUDIO_SSRC, 1)
    assert len(to_sub) == 1 and to_sub[0][1] == 200  # SR on the subscription's SSRC
    assert struct.unpack("!I", to_sub[0][4:8])[0] == 0x5001
    assert r.stats()["rr_out"] == 1 and r.stats()["sr_out"] == 1
    assert r.track_stats(AUDIO)["lost"] == 1
