"""What operators see of the native router: RTT, bitrate and events through the binding, and the
Prometheus series the collector builds from them at scrape time."""

from __future__ import annotations

import struct
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mediasrv.api.metrics import MediasrvCollector

mediasrv_native = pytest.importorskip("mediasrv_native")

PUB, SUB_T = 1, 2
AUDIO, VIDEO = 11, 10
AUDIO_SSRC, VIDEO_SSRC = 3333, 1111
SUB_AUDIO, SUB_VIDEO = 100, 101
SUB_AUDIO_SSRC, SUB_VIDEO_SSRC = 0x5001, 0x5002
SUB_CODECS = [(120, "VP8", 90000, None), (109, "opus", 48000, None)]


def opus(seq: int, ts: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 111, seq, ts, AUDIO_SSRC) + b"\xfc" + bytes(60)


def sender_report(ssrc: int, ntp: int, rtp_ts: int) -> bytes:
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, ntp >> 32, ntp & 0xFFFFFFFF, rtp_ts, 1, 61)


def receiver_report(about_ssrc: int, lsr: int, dlsr: int) -> bytes:
    return struct.pack("!BBHI", 0x81, 201, 7, 0x7777) + struct.pack("!IIIIII", about_ssrc, 0, 0, 0, lsr, dlsr)


def dlrr(to_ssrc: int, last_rr: int, delay: int) -> bytes:
    return struct.pack("!BBHI", 0x80, 207, 5, AUDIO_SSRC) + bytes([5, 0, 0, 3]) + struct.pack(
        "!III", to_ssrc, last_rr, delay)


def rrtr_ntp_to(out: list[tuple[int, bytes]], transport: int) -> int:
    """The NTP time in the RRTR block of the compound RTCP sent to `transport`."""
    (d,) = [d for t, d in out if t == transport and d[1] == 201]
    pos = 0
    while pos < len(d):
        length = (int.from_bytes(d[pos + 2:pos + 4], "big") + 1) * 4
        if d[pos + 1] == 207 and d[pos + 8] == 4:
            return int.from_bytes(d[pos + 12:pos + 20], "big")
        pos += length
    raise AssertionError("no RRTR")


def sr_ntp_to(out: list[tuple[int, bytes]], transport: int) -> int:
    (d,) = [d for t, d in out if t == transport and d[1] == 200]
    return int.from_bytes(d[8:16], "big")


def room_router() -> Any:
    """Audio flowing to one subscriber (with an RTT measured: 80 ms) and a video subscription
    waiting for a keyframe that never comes (keyframe requests sent)."""
    r = mediasrv_native.Router(sender_reports=True, seed=1)
    r.add_publisher(PUB, 0xAAAA, {})
    r.add_track(AUDIO, PUB, "audio", "1", [(111, "opus", 48000, None)], [AUDIO_SSRC])
    r.add_track(VIDEO, PUB, "video", "0", [(96, "VP8", 90000, None)], [VIDEO_SSRC])
    r.add_subscription(SUB_AUDIO, AUDIO, SUB_T, SUB_AUDIO_SSRC, SUB_CODECS, {})
    r.add_subscription(SUB_VIDEO, VIDEO, SUB_T, SUB_VIDEO_SSRC, SUB_CODECS, {})
    for i in range(101):
        r.route_rtp(PUB, opus(i, i * 960), i * 20)
        out = r.poll(i * 20)
        r.poll(i * 20 + 10)
    # the publisher echoes the RRTR of our last RR after holding it 250 ms → 50 ms round trip
    lrr = (rrtr_ntp_to(out, PUB) >> 16) & 0xFFFFFFFF
    r.handle_rtcp(PUB, dlrr(0xAAAA, lrr, 65536 // 4), 2300)
    r.handle_rtcp(PUB, sender_report(AUDIO_SSRC, 10 << 32, 0), 2010)
    # sender reports go out with the router's upkeep, every 125 ms of its clock
    ntp = sr_ntp_to(r.poll(2125), SUB_T)
    # held 250 ms by the subscriber, back 330 ms after we sent it → 80 ms round trip
    r.handle_rtcp(SUB_T, receiver_report(SUB_AUDIO_SSRC, (ntp >> 16) & 0xFFFFFFFF, 65536 // 4), 2455)
    return r


def test_binding_reports_rtt_bitrate_and_events_once() -> None:
    r = room_router()
    sub = r.subscription_stats(SUB_AUDIO)
    assert sub["rtt"] == pytest.approx(0.080)
    assert sub["bitrate_bps"] > 0
    track = r.track_stats(AUDIO)
    assert track["active"] is True
    assert track["rtt"] == pytest.approx(0.050)
    # 61-byte payload + 12-byte header, 50 packets a second
    assert track["bitrate_bps"] == 73 * 8 * 50
    assert r.subscription_stats(SUB_VIDEO)["rtt"] is None
    events = r.take_events()
    # retried every keyframe_retry_ms (1 s) while the video subscription still waits
    assert events == [("track_started", AUDIO, None), ("keyframe_requested", VIDEO, "new_subscriber"),
                      ("keyframe_requested", VIDEO, "retry"), ("keyframe_requested", VIDEO, "retry")]
    assert r.take_events() == []
    stats = r.stats()
    assert stats["keyframe_requests_new_subscriber"] == 1 and stats["keyframe_requests_retry"] == 2
    assert stats["rtt_samples"] == 1 and stats["rtt_sum_us"] == 80_000
    assert stats["rtt_bucket_100ms"] == 1
    r.remove_subscription(SUB_VIDEO)  # no more keyframe retries
    r.poll(2020 + 3000)
    assert r.take_events() == [("track_stopped", AUDIO, None)]


def scrape(router: Any) -> str:
    tracks = {AUDIO: SimpleNamespace(id=AUDIO, kind="audio"), VIDEO: SimpleNamespace(id=VIDEO, kind="video")}
    viewer = SimpleNamespace(admitted=True, subscriptions={
        AUDIO: SimpleNamespace(id=SUB_AUDIO, active=True), VIDEO: SimpleNamespace(id=SUB_VIDEO, active=True)})
    room = SimpleNamespace(name="visit1", closed=False, router=router, tracks=tracks,
                           participants={"pat": viewer}, transports={}, drops=Counter(),
                           recording=SimpleNamespace(running=False, recorder=None),
                           quality=SimpleNamespace(levels=Counter))
    # A closed room's counters live on in the retired totals.
    rooms = SimpleNamespace(list=lambda: [room], plane=None, retired_drops=Counter(),
                            retired=Counter({"rtt_bucket_5ms": 2, "rtt_samples": 2, "rtt_sum_us": 6000,
                                             "keyframe_requests_subscriber_pli": 4}))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MediasrvCollector(rooms))  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def test_metrics_expose_rtt_bitrate_keyframe_and_track_series() -> None:
    text = scrape(room_router())
    sub = 'room="visit1",subscription="100",track="11"'
    lines = set(text.splitlines())
    assert f'mediasrv_subscription_rtt_seconds{{kind="audio",{sub}}} 0.08' in lines
    assert f'mediasrv_track_bitrate_bps{{kind="audio",room="visit1",track="11"}} {73 * 8 * 50}.0' in lines
    assert any(line.startswith(f'mediasrv_subscription_bitrate_bps{{kind="audio",{sub}}}') for line in lines)
    # histogram: 2 retired samples ≤ 5 ms, the live 80 ms one in the 100 ms bucket
    assert 'mediasrv_subscriber_rtt_seconds_bucket{le="0.005"} 2.0' in lines
    assert 'mediasrv_subscriber_rtt_seconds_bucket{le="0.05"} 2.0' in lines
    assert 'mediasrv_subscriber_rtt_seconds_bucket{le="0.1"} 3.0' in lines
    assert 'mediasrv_subscriber_rtt_seconds_bucket{le="+Inf"} 3.0' in lines
    assert "mediasrv_subscriber_rtt_seconds_count 3.0" in lines
    assert "mediasrv_subscriber_rtt_seconds_sum 0.086" in lines
    assert 'mediasrv_keyframe_requests_total{reason="new_subscriber"} 1.0' in lines
    assert 'mediasrv_keyframe_requests_total{reason="retry"} 2.0' in lines
    assert 'mediasrv_keyframe_requests_total{reason="subscriber_pli"} 4.0' in lines
    assert "mediasrv_tracks_started_total 1.0" in lines
    assert 'mediasrv_tracks_receiving{kind="audio"} 1.0' in lines
    assert 'mediasrv_track_rtt_seconds{kind="audio",room="visit1",track="11"} 0.05' in lines
    assert 'mediasrv_tracks_receiving{kind="video"} 0.0' in lines
