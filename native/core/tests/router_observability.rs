//! What the control plane reads from a router: round-trip times from subscribers' receiver reports,
//! windowed bitrates, and events (track started/stopped, keyframe requested) drained exactly once.

mod common;

use common::*;
use mediasrv_core::router::{
    KeyframeReason, Router, RouterConfig, RouterEvent, RATE_SAMPLE_MS, RTT_BUCKETS_MS,
};
use mediasrv_core::rtcp::{self, ReportBlock, RtcpPacket};

const SUB_A: SubscriptionId = SubscriptionId(100);
const SUB_SSRC_A: u32 = 0x5000_0001;

fn subscribe(r: &mut Router, sub: SubscriptionId, track: TrackId, ssrc: u32) {
    r.add_subscription(sub, track, SUB_T, ssrc, &sub_codecs(), sub_ext())
        .unwrap();
}

/// The NTP timestamp of the SR the router sent to `to`, if any.
fn sr_ntp(out: &[(TransportId, Vec<u8>)], to: TransportId) -> Option<u64> {
    out.iter().filter(|(t, _)| *t == to).find_map(|(_, d)| {
        rtcp::parse_compound(d).find_map(|p| match p {
            Ok(RtcpPacket::SenderReport { ntp, .. }) => Some(ntp),
            _ => None,
        })
    })
}

fn rr_from_subscriber(ssrc: u32, lsr: u32, dlsr: u32) -> Vec<u8> {
    let mut b = Vec::new();
    let block = ReportBlock {
        ssrc,
        last_sr: lsr,
        delay_since_last_sr: dlsr,
        ..Default::default()
    };
    rtcp::write_rr(&mut b, 0x7777_0001, &[block]);
    b
}

/// An audio subscription that has received a packet and the publisher's SR, so `poll` sends SRs.
fn audio_room_with_sr() -> Router {
    let mut r = room_with(RouterConfig {
        sender_reports: true,
        ..Default::default()
    });
    subscribe(&mut r, SUB_A, AUDIO_TRACK, SUB_SSRC_A);
    route(&mut r, PUB, &opus(0, 48_000), 0);
    let mut sr = Vec::new();
    rtcp::write_sr(&mut sr, AUDIO_SSRC, 10u64 << 32, 48_000, 1, 5, &[]);
    rtcp(&mut r, PUB, &sr, 1000);
    r
}

#[test]
fn subscriber_rtt_is_arrival_minus_sr_sent_minus_dlsr() {
    let mut r = audio_room_with_sr();
    let ntp = sr_ntp(&poll(&mut r, 1500), SUB_T).expect("SR sent at 1500 ms");
    let lsr = (ntp >> 16) as u32;
    assert_eq!(r.subscription_stats(SUB_A).unwrap().rtt_us, None);
    // The subscriber held our SR for 0.25 s (DLSR in 1/65536 s) and its RR arrives at 1830 ms:
    // 330 ms since we sent the SR, 250 ms of which it held it → 80 ms round trip.
    rtcp(
        &mut r,
        SUB_T,
        &rr_from_subscriber(SUB_SSRC_A, lsr, 65536 / 4),
        1830,
    );
    assert_eq!(r.subscription_stats(SUB_A).unwrap().rtt_us, Some(80_000));
    let s = r.stats();
    assert_eq!((s.rtt_samples, s.rtt_sum_us), (1, 80_000));
    let bucket = RTT_BUCKETS_MS.iter().position(|le| *le >= 80).unwrap();
    assert_eq!(s.rtt_buckets[bucket], 1);
    assert_eq!(s.rtt_buckets.iter().sum::<u64>(), 1);
}

#[test]
fn rtt_matches_an_older_sr_and_ignores_unknown_or_empty_lsr() {
    let mut r = audio_room_with_sr();
    let first = sr_ntp(&poll(&mut r, 1500), SUB_T).unwrap();
    let second = sr_ntp(&poll(&mut r, 2500), SUB_T).unwrap();
    assert_ne!(first, second);
    // An RR echoing the first SR arrives after the second went out: still measured from the first.
    rtcp(
        &mut r,
        SUB_T,
        &rr_from_subscriber(SUB_SSRC_A, (first >> 16) as u32, 65536),
        2540,
    );
    assert_eq!(r.subscription_stats(SUB_A).unwrap().rtt_us, Some(40_000));
    // No SR received yet (LSR 0) or an LSR we never sent: loss/jitter noted, RTT unchanged.
    rtcp(&mut r, SUB_T, &rr_from_subscriber(SUB_SSRC_A, 0, 0), 2600);
    rtcp(
        &mut r,
        SUB_T,
        &rr_from_subscriber(SUB_SSRC_A, 0x1234_5678, 0),
        2600,
    );
    assert_eq!(r.subscription_stats(SUB_A).unwrap().rtt_us, Some(40_000));
    assert_eq!(r.stats().rtt_samples, 1);
}

#[test]
fn rtt_below_clock_resolution_is_zero_not_negative() {
    let mut r = audio_room_with_sr();
    let ntp = sr_ntp(&poll(&mut r, 1500), SUB_T).unwrap();
    // DLSR claims more time than has passed (the subscriber's clock runs fast).
    rtcp(
        &mut r,
        SUB_T,
        &rr_from_subscriber(SUB_SSRC_A, (ntp >> 16) as u32, 65536),
        1600,
    );
    assert_eq!(r.subscription_stats(SUB_A).unwrap().rtt_us, Some(0));
}

#[test]
fn bitrates_are_windowed_over_received_and_sent_bytes() {
    let mut r = room();
    subscribe(&mut r, SUB_A, AUDIO_TRACK, SUB_SSRC_A);
    let mut in_bytes = 0u64;
    let mut out_bytes = 0u64;
    // 50 packets a second for 2 s, polled every 10 ms (so samples fall exactly every 250 ms).
    for i in 0..=100u64 {
        let now = i * 20;
        let pkt = opus(i as u16, i as u32 * 960);
        in_bytes += pkt.len() as u64;
        out_bytes += route(&mut r, PUB, &pkt, now)
            .iter()
            .map(|(_, d)| d.len() as u64)
            .sum::<u64>();
        poll(&mut r, now);
        poll(&mut r, now + 10);
    }
    let ts = r.track_stats(AUDIO_TRACK).unwrap();
    let ss = r.subscription_stats(SUB_A).unwrap();
    assert_eq!(ts.bytes, in_bytes);
    assert_eq!(ss.bytes, out_bytes);
    // Samples at 0, 250, …, 2000 ms: the window covers 2000 ms and the 100 packets after the first.
    let per_packet_in = opus(1, 0).len() as u64;
    assert_eq!(ts.bitrate_bps, 100 * per_packet_in * 8 * 1000 / 2000);
    let per_packet_out = out_bytes / 101;
    assert_eq!(ss.bitrate_bps, 100 * per_packet_out * 8 * 1000 / 2000);
    // Silence: a full window later both rates are zero.
    for i in 1..=(2000 / RATE_SAMPLE_MS) {
        poll(&mut r, 2000 + i * RATE_SAMPLE_MS);
    }
    assert_eq!(r.track_stats(AUDIO_TRACK).unwrap().bitrate_bps, 0);
    assert_eq!(r.subscription_stats(SUB_A).unwrap().bitrate_bps, 0);
}

#[test]
fn track_started_and_stopped_are_reported_once_each() {
    let mut r = room_with(RouterConfig {
        track_timeout_ms: 3000,
        ..Default::default()
    });
    assert!(r.take_events().is_empty());
    for i in 0..10u16 {
        route(&mut r, PUB, &opus(i, i as u32 * 960), i as u64 * 20);
    }
    poll(&mut r, 200);
    assert_eq!(
        r.take_events(),
        vec![RouterEvent::TrackStarted { track: AUDIO_TRACK }]
    );
    assert!(r.track_stats(AUDIO_TRACK).unwrap().active);
    assert!(r.take_events().is_empty(), "drained");
    poll(&mut r, 180 + 2999);
    assert!(r.take_events().is_empty(), "not yet silent for 3 s");
    poll(&mut r, 180 + 3000);
    poll(&mut r, 180 + 6000);
    assert_eq!(
        r.take_events(),
        vec![RouterEvent::TrackStopped { track: AUDIO_TRACK }]
    );
    assert!(!r.track_stats(AUDIO_TRACK).unwrap().active);
    // It resumes: started again.
    route(&mut r, PUB, &opus(10, 9600), 7000);
    route(&mut r, PUB, &opus(11, 10560), 7020);
    assert_eq!(
        r.take_events(),
        vec![RouterEvent::TrackStarted { track: AUDIO_TRACK }]
    );
    let s = r.stats();
    assert_eq!((s.tracks_started, s.tracks_stopped), (2, 1));
}

#[test]
fn keyframe_requests_carry_their_reason_and_throttled_ones_are_not_events() {
    let mut r = room_with(RouterConfig {
        pli_min_interval_ms: 200,
        keyframe_retry_ms: 1000,
        ..Default::default()
    });
    route(&mut r, PUB, &vp8(1, 0, true, false), 0);
    r.take_events();
    r.add_subscription(
        SUB_A,
        VIDEO_TRACK,
        SUB_T,
        SUB_SSRC_A,
        &sub_codecs(),
        sub_ext(),
    )
    .unwrap();
    poll(&mut r, 10); // new subscriber waits for a keyframe
    poll(&mut r, 500); // still waiting, retry not due
    poll(&mut r, 1010); // retry
    let mut pli = Vec::new();
    rtcp::write_pli(&mut pli, 0x7777_0001, SUB_SSRC_A);
    rtcp(&mut r, SUB_T, &pli, 1100); // throttled: 90 ms after the last
    rtcp(&mut r, SUB_T, &pli, 1300);
    let mut fir = Vec::new();
    rtcp::write_fir(&mut fir, 0x7777_0001, SUB_SSRC_A, 1);
    rtcp(&mut r, SUB_T, &fir, 1600);
    let mut out = mediasrv_core::output::Output::new();
    assert!(r.request_keyframe(VIDEO_TRACK, 1900, &mut out));
    let reasons: Vec<KeyframeReason> = r
        .take_events()
        .into_iter()
        .map(|e| match e {
            RouterEvent::KeyframeRequested { track, reason } => {
                assert_eq!(track, VIDEO_TRACK);
                reason
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            KeyframeReason::NewSubscriber,
            KeyframeReason::Retry,
            KeyframeReason::SubscriberPli,
            KeyframeReason::SubscriberFir,
            KeyframeReason::Requested,
        ]
    );
    let s = r.stats();
    assert_eq!(s.plis_out, 5);
    assert_eq!(s.plis_throttled, 1);
    for reason in KeyframeReason::ALL {
        // Recording sinks' requests are covered in router_sink.rs.
        let expected = u64::from(reason != KeyframeReason::Recorder);
        assert_eq!(s.keyframe_requests(reason), expected, "{reason:?}");
    }
}

#[test]
fn events_are_bounded_when_nobody_drains_them() {
    let mut r = room_with(RouterConfig {
        track_timeout_ms: 10,
        ..Default::default()
    });
    let max = mediasrv_core::router::MAX_EVENTS as u64;
    // Each start/stop cycle makes two events; silence is noticed at the router's upkeep.
    let step = 2 * mediasrv_core::router::UPKEEP_MS;
    for i in 0..max {
        route(&mut r, PUB, &opus(i as u16, i as u32 * 960), i * step);
        poll(&mut r, i * step + step / 2);
    }
    assert_eq!(r.take_events().len() as u64, max);
    assert_eq!(r.stats().events_dropped, max);
}

/// The NTP timestamp of the RRTR block the router sent to `to`, if any.
fn rrtr_ntp(out: &[(TransportId, Vec<u8>)], to: TransportId) -> Option<u64> {
    out.iter().filter(|(t, _)| *t == to).find_map(|(_, d)| {
        rtcp::parse_compound(d).find_map(|p| match p {
            Ok(RtcpPacket::ExtendedReport { blocks, .. }) => blocks.rrtr(),
            _ => None,
        })
    })
}

fn dlrr_from_publisher(to_ssrc: u32, last_rr: u32, delay: u32) -> Vec<u8> {
    let mut b = Vec::new();
    let item = rtcp::DlrrItem {
        ssrc: to_ssrc,
        last_rr,
        delay,
    };
    rtcp::write_xr_dlrr(&mut b, AUDIO_SSRC, &[item]);
    b
}

#[test]
fn publisher_rtt_comes_from_its_dlrr_echo_of_our_rrtr() {
    let mut r = room();
    route(&mut r, PUB, &opus(0, 0), 0);
    let ntp = rrtr_ntp(&poll(&mut r, 100), PUB).expect("RRTR rides with the RR");
    assert_eq!(r.track_stats(AUDIO_TRACK).unwrap().rtt_us, None);
    let lrr = (ntp >> 16) as u32;
    // Addressed to another receiver: ignored.
    rtcp(&mut r, PUB, &dlrr_from_publisher(0x1234, lrr, 0), 200);
    assert_eq!(r.track_stats(AUDIO_TRACK).unwrap().rtt_us, None);
    // Held 0.5 s by the publisher, back 560 ms after we sent it → 60 ms.
    rtcp(
        &mut r,
        PUB,
        &dlrr_from_publisher(PUB_RTCP_SSRC, lrr, 65536 / 2),
        660,
    );
    assert_eq!(r.track_stats(AUDIO_TRACK).unwrap().rtt_us, Some(60_000));
    // Every track of that publisher shares the transport's round trip.
    assert_eq!(r.track_stats(VIDEO_TRACK).unwrap().rtt_us, Some(60_000));
    assert_eq!(
        r.stats().rtt_samples,
        0,
        "the histogram is subscribers' only"
    );
}
