//! Recording sinks: a subscription whose stream lands in a jitter buffer inside the router.

mod common;

use common::*;
use mediasrv_core::jitter::{FrameCodec, JitterConfig};
use mediasrv_core::router::{KeyframeReason, Router, RouterConfig, UPKEEP_MS};
use mediasrv_core::rtcp::{self, RtcpPacket};

const SINK_V: SubscriptionId = SubscriptionId(500);
const SINK_A: SubscriptionId = SubscriptionId(501);
const VIEWER: SubscriptionId = SubscriptionId(100);

fn sinks(r: &mut Router) {
    r.add_sink(
        SINK_V,
        VIDEO_TRACK,
        FrameCodec::Vp8,
        VP8_PT,
        JitterConfig::new(FrameCodec::Vp8),
    )
    .unwrap();
    r.add_sink(
        SINK_A,
        AUDIO_TRACK,
        FrameCodec::Opus,
        OPUS_PT,
        JitterConfig::new(FrameCodec::Opus),
    )
    .unwrap();
}

fn frames(r: &mut Router, sub: SubscriptionId, now: u64) -> Vec<(u64, bool, Vec<u8>)> {
    r.sink_mut(sub)
        .unwrap()
        .buffer()
        .pop_frames(now)
        .into_iter()
        .map(|f| (f.timestamp, f.keyframe, f.data))
        .collect()
}

/// A VP8 frame of two packets: (first seq, timestamp, keyframe).
fn vp8_frame(seq: u16, ts: u32, key: bool) -> [Vec<u8>; 2] {
    let mut last = Pkt::new(VP8_PT, seq + 1, ts, VIDEO_SSRC, &vp8_payload(false, key, 7));
    last.marker = true;
    [vp8(seq, ts, true, key), last.bytes()]
}

fn plis_for(out: &[(TransportId, Vec<u8>)], media_ssrc: u32) -> usize {
    out.iter()
        .flat_map(|(_, b)| rtcp::parse_compound(b))
        .filter(|p| matches!(p, Ok(RtcpPacket::Pli { media_ssrc: m, .. }) if *m == media_ssrc))
        .count()
}

#[test]
fn sink_gets_whole_frames_and_nothing_goes_out() {
    let mut r = room();
    sinks(&mut r);
    for (i, p) in vp8_frame(10, 9000, true).iter().enumerate() {
        assert!(
            route(&mut r, PUB, p, i as u64).is_empty(),
            "no datagram for a sink"
        );
    }
    assert!(route(&mut r, PUB, &opus(5, 960), 3).is_empty());
    let v = frames(&mut r, SINK_V, 5);
    assert_eq!(v.len(), 1);
    assert!(v[0].1, "keyframe");
    // Descriptors stripped: payload header byte + 40 filler, twice.
    assert_eq!(v[0].2.len(), 2 * 41);
    let a = frames(&mut r, SINK_A, 5);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].2, vec![0xfc, 5, 1, 2, 3]);
    let stats = r.sink_stats(SINK_V).unwrap();
    assert_eq!((stats.packets, stats.frames), (2, 1));
}

#[test]
fn video_sink_starts_at_a_keyframe_and_asks_for_one() {
    let mut r = room();
    sinks(&mut r);
    let out = poll(&mut r, 0);
    assert_eq!(
        plis_for(&out, VIDEO_SSRC),
        1,
        "new sink: PLI to the publisher"
    );
    for p in vp8_frame(1, 3000, false) {
        route(&mut r, PUB, &p, 1);
    }
    assert!(
        frames(&mut r, SINK_V, 2).is_empty(),
        "delta frame before a keyframe"
    );
    for p in vp8_frame(3, 6000, true) {
        route(&mut r, PUB, &p, 3);
    }
    let v = frames(&mut r, SINK_V, 4);
    assert_eq!(v.len(), 1);
    assert!(v[0].1);
}

#[test]
fn a_frame_lost_upstream_gives_up_then_requests_a_keyframe_from_the_publisher() {
    let mut r = room();
    sinks(&mut r);
    poll(&mut r, 0); // the new-subscriber PLI
    for p in vp8_frame(1, 3000, true) {
        route(&mut r, PUB, &p, 10);
    }
    assert_eq!(frames(&mut r, SINK_V, 10).len(), 1);
    // Frame 2 loses its first packet for good; frame 3 arrives complete.
    route(&mut r, PUB, &vp8_frame(3, 6000, false)[1], 20);
    for p in vp8_frame(5, 9000, false) {
        route(&mut r, PUB, &p, 30);
    }
    assert!(
        frames(&mut r, SINK_V, 40).is_empty(),
        "waits for the missing packet"
    );
    // Past the target delay: frame 2 is given up, frame 3 is undecodable without it.
    assert!(frames(&mut r, SINK_V, 400).is_empty());
    let stats = r.sink_stats(SINK_V).unwrap();
    assert_eq!(stats.frames_incomplete, 1);
    assert_eq!(
        stats.nacks, 0,
        "the router NACKs the publisher, not the sink"
    );
    let out = poll(&mut r, 1500);
    assert_eq!(plis_for(&out, VIDEO_SSRC), 1);
    assert_eq!(r.stats().keyframe_requests(KeyframeReason::Recorder), 1);
}

#[test]
fn a_sinks_keyframe_request_goes_out_at_the_next_poll_not_the_next_upkeep() {
    let mut r = room();
    sinks(&mut r);
    poll(&mut r, 0);
    for p in vp8_frame(1, 3000, true) {
        route(&mut r, PUB, &p, 10);
    }
    assert_eq!(frames(&mut r, SINK_V, 10).len(), 1);
    route(&mut r, PUB, &vp8_frame(3, 6000, false)[1], 20);
    // The router's slower upkeep runs at this poll, and not again before 400 ms.
    let upkeep_at = 3 * UPKEEP_MS;
    assert!(upkeep_at < 400 && 400 < upkeep_at + UPKEEP_MS);
    assert_eq!(plis_for(&poll(&mut r, upkeep_at), VIDEO_SSRC), 0);
    // Frame 2 is given up: the recording needs a keyframe, asked for at the very next poll.
    assert!(frames(&mut r, SINK_V, 400).is_empty());
    assert_eq!(plis_for(&poll(&mut r, 400), VIDEO_SSRC), 1);
    assert_eq!(r.stats().keyframe_requests(KeyframeReason::Recorder), 1);
}

#[test]
fn retransmission_from_the_publisher_completes_the_sinks_frame() {
    let mut r = room();
    sinks(&mut r);
    for p in vp8_frame(1, 3000, true) {
        route(&mut r, PUB, &p, 0);
    }
    let [first, second] = vp8_frame(3, 6000, false);
    route(&mut r, PUB, &second, 10);
    assert_eq!(frames(&mut r, SINK_V, 20).len(), 1, "only the keyframe");
    // The router NACKs the gap upstream; the RTX answer reaches the sink.
    let nacks = poll(&mut r, 20);
    assert!(nacks
        .iter()
        .flat_map(|(_, b)| rtcp::parse_compound(b))
        .any(|p| matches!(p, Ok(RtcpPacket::Nack { .. }))));
    let mut rtx_payload = 3u16.to_be_bytes().to_vec();
    rtx_payload.extend_from_slice(&first[12..]);
    route(
        &mut r,
        PUB,
        &Pkt::new(RTX_PT, 1, 6000, RTX_SSRC, &rtx_payload).bytes(),
        30,
    );
    let v = frames(&mut r, SINK_V, 40);
    assert_eq!(v.len(), 1);
    assert!(!v[0].1);
    assert_eq!(r.sink_stats(SINK_V).unwrap().recovered, 1);
}

#[test]
fn sink_sync_maps_the_publishers_sender_report_into_frame_timestamps() {
    let mut r = room_with(RouterConfig {
        sender_reports: true,
        ..Default::default()
    });
    sinks(&mut r);
    route(&mut r, PUB, &opus(0, 48_000), 0);
    let a = frames(&mut r, SINK_A, 0);
    assert_eq!(r.sink_sync(SINK_A), None, "no SR yet");
    // publisher: RTP 48000 (the frame above) was sampled at NTP 10.0 s
    let mut sr = Vec::new();
    rtcp::write_sr(&mut sr, AUDIO_SSRC, 10u64 << 32, 48_000, 1, 5, &[]);
    rtcp(&mut r, PUB, &sr, 1000);
    let (ntp, ts) = r.sink_sync(SINK_A).unwrap();
    assert_eq!(ntp, 10u64 << 32);
    assert_eq!(
        ts, a[0].0,
        "the SR's RTP time is the frame's timestamp in sink terms"
    );
    // Later frames and the mapping share one extended timestamp space.
    route(&mut r, PUB, &opus(1, 48_960), 20);
    let b = frames(&mut r, SINK_A, 20);
    assert_eq!(b[0].0 - ts, 960);
    // No SR toward the sink's (non-)transport.
    assert!(poll(&mut r, 2000)
        .iter()
        .all(|(t, _)| *t != mediasrv_core::router::SINK_TRANSPORT));
}

#[test]
fn a_sink_does_not_disturb_a_real_subscriber() {
    let mut r = room();
    sinks(&mut r);
    r.add_subscription(
        VIEWER,
        VIDEO_TRACK,
        SUB_T,
        0x5000_0001,
        &sub_codecs(),
        sub_ext(),
    )
    .unwrap();
    let mut out = Vec::new();
    for p in vp8_frame(1, 3000, true) {
        out.extend(route(&mut r, PUB, &p, 0));
    }
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|(t, _)| *t == SUB_T));
    assert_eq!(frames(&mut r, SINK_V, 1).len(), 1);
    // Egress counters describe the network: the viewer's two packets, not the sink's.
    let bytes: usize = out.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(r.stats().rtp_packets_out, 2);
    assert_eq!(r.stats().rtp_bytes_out, bytes as u64);
}

#[test]
fn bad_sink_requests_are_refused() {
    let mut r = room();
    let cfg = || JitterConfig::new(FrameCodec::Vp8);
    assert!(
        r.add_sink(
            SubscriptionId(1),
            TrackId(999),
            FrameCodec::Vp8,
            VP8_PT,
            cfg()
        )
        .is_err(),
        "unknown track"
    );
    assert!(
        r.add_sink(SubscriptionId(1), VIDEO_TRACK, FrameCodec::Vp8, 55, cfg())
            .is_err(),
        "unknown PT"
    );
    assert!(
        r.add_sink(
            SubscriptionId(1),
            VIDEO_TRACK,
            FrameCodec::H264,
            VP8_PT,
            cfg()
        )
        .is_err(),
        "codec mismatch"
    );
    r.add_sink(
        SubscriptionId(1),
        VIDEO_TRACK,
        FrameCodec::Vp8,
        VP8_PT,
        cfg(),
    )
    .unwrap();
    assert!(
        r.add_sink(
            SubscriptionId(1),
            AUDIO_TRACK,
            FrameCodec::Opus,
            OPUS_PT,
            cfg()
        )
        .is_err(),
        "duplicate"
    );
    assert!(r.remove_subscription(SubscriptionId(1)));
    assert!(r.sink_mut(SubscriptionId(1)).is_none());
}

#[test]
fn a_new_publisher_ssrc_forgets_the_old_streams_sender_report() {
    let mut r = room();
    sinks(&mut r);
    route(&mut r, PUB, &opus(0, 48_000), 0);
    frames(&mut r, SINK_A, 0);
    let mut sr = Vec::new();
    rtcp::write_sr(&mut sr, AUDIO_SSRC, 10u64 << 32, 48_000, 1, 5, &[]);
    rtcp(&mut r, PUB, &sr, 10);
    assert!(r.sink_sync(SINK_A).is_some());
    // The encoder restarts under a new SSRC with an unrelated timestamp base.
    let restarted = Pkt::new(OPUS_PT, 9000, 7_777_777, AUDIO_SSRC + 1, &[0xfc, 1]).bytes();
    route(&mut r, PUB, &restarted, 20);
    assert_eq!(
        r.sink_sync(SINK_A),
        None,
        "no mapping until the new stream reports"
    );
}

#[test]
fn sink_sync_holds_across_the_sinks_timestamp_wrap() {
    let mut r = room();
    sinks(&mut r);
    let mut pub_ts = 48_000u32;
    route(&mut r, PUB, &opus(0, pub_ts), 0);
    let first = frames(&mut r, SINK_A, 0)[0].0;
    // The sink's 32-bit timestamp is the publisher's plus a random offset; step the publisher's
    // clock (by less than half the range, as a real stream does) until the sink's wraps.
    let mut seq = 0;
    let mut sink_ts = first;
    let mut before_wrap = (pub_ts, sink_ts);
    while sink_ts >> 32 == first >> 32 {
        before_wrap = (pub_ts, sink_ts);
        seq += 1;
        pub_ts = pub_ts.wrapping_add(1 << 30);
        route(&mut r, PUB, &opus(seq, pub_ts), seq as u64);
        let f = frames(&mut r, SINK_A, seq as u64);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0 - sink_ts, 1 << 30, "frame timestamps stay monotonic");
        sink_ts = f[0].0;
    }
    // An SR naming the newest frame, then one naming the frame before the wrap (older than the
    // newest packet): both land on the frames' own extended timestamps.
    for (i, (rtp, expect)) in [(pub_ts, sink_ts), before_wrap].into_iter().enumerate() {
        let mut sr = Vec::new();
        rtcp::write_sr(&mut sr, AUDIO_SSRC, (10 + i as u64) << 32, rtp, 1, 5, &[]);
        rtcp(&mut r, PUB, &sr, 100 + i as u64);
        assert_eq!(r.sink_sync(SINK_A), Some(((10 + i as u64) << 32, expect)));
    }
}
