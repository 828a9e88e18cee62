//! Behaviour of the router that subscribers rely on, driven through its sans-IO API.

mod common;

use common::*;
use mediasrv_core::router::{DropReason, ExtensionIds, MediaKind, RouterConfig};
use mediasrv_core::rtcp::{self, RtcpPacket};
use mediasrv_core::rtp::RtpView;

const SUB_A: SubscriptionId = SubscriptionId(100);
const SUB_B: SubscriptionId = SubscriptionId(101);
const SUB_SSRC_A: u32 = 0x5000_0001;
const SUB_SSRC_B: u32 = 0x5000_0002;

fn subscribe_video(
    r: &mut mediasrv_core::router::Router,
    sub: SubscriptionId,
    transport: TransportId,
    ssrc: u32,
) {
    r.add_subscription(sub, VIDEO_TRACK, transport, ssrc, &sub_codecs(), sub_ext())
        .unwrap();
}

fn subscribe_audio(
    r: &mut mediasrv_core::router::Router,
    sub: SubscriptionId,
    transport: TransportId,
    ssrc: u32,
) {
    r.add_subscription(sub, AUDIO_TRACK, transport, ssrc, &sub_codecs(), sub_ext())
        .unwrap();
}

fn plis_in(out: &[(TransportId, Vec<u8>)]) -> Vec<(TransportId, u32, u32)> {
    let mut v = Vec::new();
    for (t, b) in out {
        for p in rtcp::parse_compound(b) {
            if let Ok(RtcpPacket::Pli {
                sender_ssrc,
                media_ssrc,
            }) = p
            {
                v.push((*t, sender_ssrc, media_ssrc));
            }
        }
    }
    v
}

#[test]
fn join_mid_stream_starts_at_keyframe_with_continuous_numbering() {
    let mut r = room();
    subscribe_video(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    let mut a = Vec::new();
    let mut b = Vec::new();
    for i in 0..60u16 {
        if i == 20 {
            subscribe_video(&mut r, SUB_B, SUB_T2, SUB_SSRC_B);
        }
        let seq = 1000 + i;
        let ts = 5000 + (i as u32 / 3) * 3000; // three packets per frame
        let start = i % 3 == 0;
        let key = start && (i == 0 || i == 33);
        for (t, pkt) in route(&mut r, PUB, &vp8(seq, ts, start, key), i as u64 * 10) {
            if t == SUB_T {
                a.push(fields(&pkt))
            } else {
                b.push(fields(&pkt))
            }
        }
    }
    assert_eq!(a.len(), 60);
    assert_eq!(b.len(), 60 - 33, "B starts at the keyframe of packet 33");
    for w in a.windows(2).chain(b.windows(2)) {
        assert_eq!(
            w[1].0,
            w[0].0.wrapping_add(1),
            "continuous sequence numbers"
        );
    }
    // timestamps keep their spacing and each subscriber has its own SSRC
    assert_eq!(b[3].1.wrapping_sub(b[0].1), 3000);
    assert!(a.iter().all(|p| p.2 == SUB_SSRC_A) && b.iter().all(|p| p.2 == SUB_SSRC_B));
    // independent random starting points, payload untouched
    assert_ne!(a[33].0, b[0].0);
    assert_eq!(a[33].4, b[0].4);
    let sb = r.subscription_stats(SUB_B).unwrap();
    assert_eq!(sb.dropped_waiting_keyframe, 13);
    assert_eq!(r.stats().dropped(DropReason::WaitingKeyframe), 13);
    assert!(!sb.waiting_keyframe);
}

#[test]
fn publisher_loss_stays_a_gap() {
    let mut r = room();
    subscribe_audio(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    let s1 = fields(&route(&mut r, PUB, &opus(10, 960), 0)[0].1);
    let s2 = fields(&route(&mut r, PUB, &opus(13, 4 * 960), 20)[0].1);
    assert_eq!(s2.0, s1.0.wrapping_add(3));
    assert_eq!(s2.1, s1.1.wrapping_add(3 * 960));
    // the late packet fills its place in the gap
    let late = fields(&route(&mut r, PUB, &opus(11, 2 * 960), 30)[0].1);
    assert_eq!(late.0, s1.0.wrapping_add(1));
}

#[test]
fn sequence_numbers_wrap_on_both_sides() {
    let mut r = room();
    subscribe_audio(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    // more than 2^16 packets: both the publisher's and the subscriber's numbers wrap at least once
    let mut prev: Option<u16> = None;
    let mut wraps = 0;
    for i in 0..70_000u32 {
        let seq = 65_000u16.wrapping_add(i as u16);
        let out = route(&mut r, PUB, &opus(seq, i * 960), i as u64 * 20);
        assert_eq!(out.len(), 1);
        let s = fields(&out[0].1).0;
        if let Some(p) = prev {
            assert_eq!(s, p.wrapping_add(1));
            if s < p {
                wraps += 1;
            }
        }
        prev = Some(s);
    }
    assert!(wraps >= 1);
    assert_eq!(r.stats().rtp_packets_out, 70_000);
}

#[test]
fn timestamps_wrap() {
    let mut r = room();
    subscribe_audio(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    let start = u32::MAX - 2 * 960;
    let mut outs = Vec::new();
    for i in 0..6u32 {
        let out = route(
            &mut r,
            PUB,
            &opus(i as u16, start.wrapping_add(i * 960)),
            i as u64 * 20,
        );
        outs.push(fields(&out[0].1).1);
    }
    for w in outs.windows(2) {
        assert_eq!(w[1].wrapping_sub(w[0]), 960);
    }
}

#[test]
fn payload_type_is_mapped_and_unknown_ones_dropped() {
    let mut r = room();
    subscribe_video(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    subscribe_audio(&mut r, SUB_B, SUB_T, SUB_SSRC_B);
    let v = route(&mut r, PUB, &vp8(1, 0, true, true), 0);
    assert_eq!(fields(&v[0].1).3, SUB_VP8_PT);
    let a = route(&mut r, PUB, &opus(1, 0), 0);
    assert_eq!(fields(&a[0].1).3, SUB_OPUS_PT);
    let unknown = Pkt::new(98, 2, 0, VIDEO_SSRC, &[1, 2, 3]).bytes();
    assert!(route(&mut r, PUB, &unknown, 0).is_empty());
    assert_eq!(r.stats().dropped(DropReason::UnknownPayloadType), 1);
}

#[test]
fn subscription_without_common_codec_is_refused() {
    let mut r = room();
    let err = r.add_subscription(
        SubscriptionId(1),
        VIDEO_TRACK,
        SUB_T,
        9,
        &[codec(100, "H264", 90_000, None)],
        sub_ext(),
    );
    assert!(err.unwrap_err().to_string().contains("no codec in common"));
}

#[test]
fn extensions_are_remapped_and_others_dropped() {
    let mut r = room();
    subscribe_audio(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    let pkt = Pkt::new(OPUS_PT, 1, 0, AUDIO_SSRC, &[9, 9, 9])
        .ext(1, b"1") // mid: dropped
        .ext(2, &[0x85]) // audio level → id 6
        .ext(3, &[1, 2, 3]) // abs-send-time → id 5
        .ext(4, &[0, 7]) // transport-cc: dropped
        .bytes();
    let out = route(&mut r, PUB, &pkt, 0);
    let v = RtpView::parse(&out[0].1).unwrap();
    let mut exts: Vec<_> = v.extensions().map(|(id, d)| (id, d.to_vec())).collect();
    exts.sort();
    assert_eq!(exts, vec![(5, vec![1, 2, 3]), (6, vec![0x85])]);
    assert_eq!(v.payload(), &[9, 9, 9]);

    // a subscriber that negotiated no extensions gets none
    r.add_subscription(
        SUB_B,
        AUDIO_TRACK,
        SUB_T2,
        SUB_SSRC_B,
        &sub_codecs(),
        ExtensionIds::default(),
    )
    .unwrap();
    let out = route(
        &mut r,
        PUB,
        &Pkt::new(OPUS_PT, 2, 960, AUDIO_SSRC, &[1])
            .ext(3, &[1, 2, 3])
            .bytes(),
        0,
    );
    let to_b = out.iter().find(|(t, _)| *t == SUB_T2).unwrap();
    assert_eq!(to_b.1[0] & 0x10, 0, "no extension block");
    assert_eq!(to_b.1.len(), 12 + 1);
}

#[test]
fn two_byte_extension_form_is_read() {
    let mut r = room();
    subscribe_audio(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    let mut p = vec![0x90, OPUS_PT, 0, 1, 0, 0, 0, 0];
    p.extend_from_slice(&AUDIO_SSRC.to_be_bytes());
    p.extend_from_slice(&[0x10, 0x00, 0, 2, 3, 3, 7, 8, 9, 0, 0, 0]);
    p.extend_from_slice(b"opus");
    let out = route(&mut r, PUB, &p, 0);
    let v = RtpView::parse(&out[0].1).unwrap();
    assert_eq!(v.extension(5), Some(&[7, 8, 9][..]));
    assert_eq!(v.payload(), b"opus");
}

#[test]
fn vp8_subscription_waits_for_keyframe_and_asks_for_one() {
    let mut r = room();
    subscribe_video(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    // the first poll after subscribing asks the publisher for a keyframe
    let plis = plis_in(&poll(&mut r, 0));
    assert_eq!(plis, vec![(PUB, PUB_RTCP_SSRC, VIDEO_SSRC)]);
    assert!(route(&mut r, PUB, &vp8(1, 0, true, false), 5).is_empty());
    assert!(route(&mut r, PUB, &vp8(2, 0, false, false), 6).is_empty());
    assert!(r.subscription_stats(SUB_A).unwrap().waiting_keyframe);
    // not re-requested before the retry interval
    assert!(plis_in(&poll(&mut r, 500)).is_empty());
    assert_eq!(plis_in(&poll(&mut r, 1000)).len(), 1);
    // a continuation packet of a keyframe does not start the stream, the frame start does
    assert!(route(&mut r, PUB, &vp8(3, 3000, false, true), 1001).is_empty());
    assert_eq!(route(&mut r, PUB, &vp8(4, 6000, true, true), 1002).len(), 1);
    assert_eq!(
        route(&mut r, PUB, &vp8(5, 9000, true, false), 1003).len(),
        1
    );
    let s = r.subscription_stats(SUB_A).unwrap();
    assert_eq!(
        (s.dropped_waiting_keyframe, s.keyframes, s.packets),
        (3, 1, 2)
    );
    assert!(
        plis_in(&poll(&mut r, 5000)).is_empty(),
        "no more PLIs once started"
    );
}

#[test]
fn h264_subscription_waits_for_idr() {
    let mut r = room();
    r.add_track(
        TrackId(20),
        PUB,
        MediaKind::Video,
        Some("2".into()),
        vec![codec(102, "H264", 90_000, None)],
        &[7777],
    )
    .unwrap();
    r.add_subscription(
        SUB_A,
        TrackId(20),
        SUB_T,
        SUB_SSRC_A,
        &[codec(125, "h264", 90_000, None)],
        sub_ext(),
    )
    .unwrap();
    let h264 = |seq: u16, payload: &[u8]| Pkt::new(102, seq, 0, 7777, payload).bytes();
    assert!(route(&mut r, PUB, &h264(1, &[0x41, 0x9a, 1]), 0).is_empty()); // P slice
    assert!(route(&mut r, PUB, &h264(2, &[0x7c, 0x05, 1]), 0).is_empty()); // FU-A middle of IDR
                                                                           // STAP-A carrying SPS + PPS starts the stream
    let out = route(
        &mut r,
        PUB,
        &h264(3, &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce]),
        0,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(fields(&out[0].1).3, 125);
}

#[test]
fn nack_is_answered_from_cache_in_subscriber_numbering() {
    let mut r = room();
    subscribe_video(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    let mut sent = Vec::new();
    for i in 0..10u16 {
        let out = route(
            &mut r,
            PUB,
            &vp8(500 + i, 90 * i as u32, true, i == 0),
            i as u64,
        );
        sent.push(out[0].1.clone());
    }
    let payload_out = r.stats().payload_bytes_out;
    let lost: Vec<u16> = [3usize, 4, 7].iter().map(|i| fields(&sent[*i]).0).collect();
    let mut nack = Vec::new();
    rtcp::write_nack(&mut nack, 0xBEEF, SUB_SSRC_A, &lost);
    let (rtp_out, rtcp_out) = rtcp(&mut r, SUB_T, &nack, 100);
    assert!(rtcp_out.is_empty());
    assert_eq!(rtp_out.len(), 3);
    for ((t, b), i) in rtp_out.iter().zip([3usize, 4, 7]) {
        assert_eq!(*t, SUB_T);
        assert_eq!(
            b, &sent[i],
            "retransmission is byte-identical to the first transmission"
        );
    }
    assert_eq!(r.stats().retransmissions_out, 3);
    assert_eq!(
        r.stats().payload_bytes_out,
        payload_out,
        "retransmissions are not first transmissions"
    );
    // a NACK for something never sent is a miss
    let mut nack = Vec::new();
    rtcp::write_nack(
        &mut nack,
        0xBEEF,
        SUB_SSRC_A,
        &[fields(&sent[9]).0.wrapping_add(5)],
    );
    assert!(rtcp(&mut r, SUB_T, &nack, 100).0.is_empty());
    assert_eq!(r.stats().dropped(DropReason::NackMiss), 1);
    assert_eq!(r.subscription_stats(SUB_A).unwrap().retransmissions, 3);
}

#[test]
fn nack_beyond_cache_is_a_miss() {
    let mut r = room_with(RouterConfig {
        nack_cache_packets: 8,
        ..Default::default()
    });
    subscribe_audio(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    let first = fields(&route(&mut r, PUB, &opus(0, 0), 0)[0].1).0;
    for i in 1..20u16 {
        route(&mut r, PUB, &opus(i, i as u32 * 960), 0);
    }
    let mut nack = Vec::new();
    rtcp::write_nack(&mut nack, 1, SUB_SSRC_A, &[first, first.wrapping_add(15)]);
    let (rtp_out, _) = rtcp(&mut r, SUB_T, &nack, 0);
    assert_eq!(rtp_out.len(), 1);
    assert_eq!(fields(&rtp_out[0].1).0, first.wrapping_add(15));
    assert_eq!(r.stats().dropped(DropReason::NackMiss), 1);
}

/// The retransmission ring keeps about `nack_history_ms` of a track, not a fixed count: 32 Opus
/// packets (0.64 s at 20 ms) are enough for 500 ms, so a NACK for 0.4 s back is answered and one
/// for 0.8 s back is a miss; video arriving every 2 ms grows its ring past its first 128 packets.
#[test]
fn the_ring_holds_its_history_in_time() {
    let mut r = room();
    subscribe_audio(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    subscribe_video(&mut r, SUB_B, SUB_T2, SUB_SSRC_B);
    let mut audio = Vec::new();
    for i in 0..100u16 {
        audio.push(fields(&route(&mut r, PUB, &opus(i, i as u32 * 960), i as u64 * 20)[0].1).0);
    }
    let mut nack = Vec::new();
    rtcp::write_nack(&mut nack, 1, SUB_SSRC_A, &[audio[79], audio[59]]);
    let (resent, _) = rtcp(&mut r, SUB_T, &nack, 2_000);
    assert_eq!(resent.len(), 1);
    assert_eq!(fields(&resent[0].1).0, audio[79]);
    assert_eq!(r.stats().dropped(DropReason::NackMiss), 1);

    let mut video = Vec::new();
    for i in 0..400u16 {
        let out = route(
            &mut r,
            PUB,
            &vp8(i, i as u32 / 10 * 3000, i % 10 == 0, i == 0),
            i as u64 * 2,
        );
        video.push(fields(&out[0].1).0);
    }
    let mut nack = Vec::new();
    rtcp::write_nack(&mut nack, 1, SUB_SSRC_B, &[video[399 - 200]]);
    let (resent, _) = rtcp(&mut r, SUB_T2, &nack, 800);
    assert_eq!(
        resent.len(),
        1,
        "200 packets (0.4 s) back is within the history"
    );
}

#[test]
fn pli_and_fir_reach_the_publisher_throttled() {
    let mut r = room();
    subscribe_video(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    subscribe_video(&mut r, SUB_B, SUB_T2, SUB_SSRC_B);
    route(&mut r, PUB, &vp8(1, 0, true, true), 0);
    let mut pli_a = Vec::new();
    rtcp::write_pli(&mut pli_a, 77, SUB_SSRC_A);
    let mut fir_b = Vec::new();
    rtcp::write_fir(&mut fir_b, 78, SUB_SSRC_B, 1);
    let (_, out) = rtcp(&mut r, SUB_T, &pli_a, 1000);
    assert_eq!(plis_in(&out), vec![(PUB, PUB_RTCP_SSRC, VIDEO_SSRC)]);
    // another subscriber's FIR 100 ms later is absorbed by the throttle
    assert!(rtcp(&mut r, SUB_T2, &fir_b, 1100).1.is_empty());
    assert_eq!(r.stats().plis_throttled, 1);
    // 200 ms after the first, a new request goes through
    assert_eq!(plis_in(&rtcp(&mut r, SUB_T2, &fir_b, 1200).1).len(), 1);
    let s = r.stats();
    assert_eq!((s.plis_in, s.firs_in, s.plis_out), (1, 2, 2));
    assert_eq!(r.subscription_stats(SUB_B).unwrap().firs, 2);
    // a PLI naming an SSRC that is not a subscription of that transport does nothing
    assert!(rtcp(&mut r, SUB_T2, &pli_a, 5000).1.is_empty());
}

#[test]
fn remb_goes_to_publisher_with_its_video_ssrcs() {
    let mut r = room_with(RouterConfig {
        max_bitrate_bps: 2_000_000,
        ..Default::default()
    });
    let rembs = |out: &[(TransportId, Vec<u8>)]| -> Vec<(TransportId, u32, u64, Vec<u32>)> {
        out.iter()
            .flat_map(|(t, b)| {
                rtcp::parse_compound(b).filter_map(move |p| match p {
                    Ok(RtcpPacket::Remb {
                        sender_ssrc,
                        bitrate_bps,
                        ssrcs,
                    }) => Some((*t, sender_ssrc, bitrate_bps, ssrcs.iter().collect())),
                    _ => None,
                })
            })
            .collect()
    };
    assert_eq!(
        rembs(&poll(&mut r, 0)),
        vec![(PUB, PUB_RTCP_SSRC, 2_000_000, vec![VIDEO_SSRC])]
    );
    assert!(rembs(&poll(&mut r, 500)).is_empty());
    assert_eq!(rembs(&poll(&mut r, 1000)).len(), 1);
    // a new video track is announced at once, with both SSRCs
    r.add_track(
        TrackId(30),
        PUB,
        MediaKind::Video,
        Some("3".into()),
        pub_video_codecs(),
        &[4444],
    )
    .unwrap();
    let got = rembs(&poll(&mut r, 1100));
    assert_eq!(got.len(), 1);
    let mut ssrcs = got[0].3.clone();
    ssrcs.sort();
    assert_eq!(ssrcs, vec![VIDEO_SSRC, 4444]);
    assert_eq!(r.stats().remb_out, 3);
}

fn rembs_to(out: &[(TransportId, Vec<u8>)], to: TransportId) -> Vec<u64> {
    out.iter()
        .filter(|(t, _)| *t == to)
        .flat_map(|(_, b)| {
            rtcp::parse_compound(b).filter_map(|p| match p {
                Ok(RtcpPacket::Remb { bitrate_bps, .. }) => Some(bitrate_bps),
                _ => None,
            })
        })
        .collect()
}

fn send_remb(
    r: &mut mediasrv_core::router::Router,
    from: TransportId,
    ssrc: u32,
    bps: u64,
    now_ms: u64,
) {
    let mut remb = Vec::new();
    rtcp::write_remb(&mut remb, ssrc, bps, &[ssrc]);
    rtcp(r, from, &remb, now_ms);
}

#[test]
fn one_viewer_s_downlink_shapes_the_publisher_s_video() {
    let mut r = room_with(RouterConfig {
        max_bitrate_bps: 2_000_000,
        ..Default::default()
    });
    subscribe_video(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    assert_eq!(
        rembs_to(&poll(&mut r, 0), PUB),
        vec![2_000_000],
        "no estimate yet: the maximum"
    );
    send_remb(&mut r, SUB_T, SUB_SSRC_A, 1_200_000, 100);
    assert!(
        rembs_to(&poll(&mut r, 200), PUB).is_empty(),
        "a rise waits for the interval"
    );
    assert_eq!(rembs_to(&poll(&mut r, 1000), PUB), vec![1_200_000]);
    // the patient's link collapses: the clinician's encoder is told at the next poll, not in a second
    send_remb(&mut r, SUB_T, SUB_SSRC_A, 280_000, 1100);
    assert_eq!(rembs_to(&poll(&mut r, 1110), PUB), vec![280_000]);
    assert_eq!(
        r.track_stats(VIDEO_TRACK).unwrap().target_bitrate_bps,
        Some(280_000)
    );
    // never below the minimum, never above the maximum
    send_remb(&mut r, SUB_T, SUB_SSRC_A, 10_000, 1200);
    assert_eq!(
        rembs_to(&poll(&mut r, 1210), PUB),
        vec![RouterConfig::default().min_bitrate_bps]
    );
    send_remb(&mut r, SUB_T, SUB_SSRC_A, 9_000_000, 1300);
    assert_eq!(rembs_to(&poll(&mut r, 2300), PUB), vec![2_000_000]);
}

#[test]
fn in_a_group_the_lowest_viewer_counts_down_to_the_floor() {
    let cfg = RouterConfig {
        max_bitrate_bps: 2_000_000,
        ..Default::default()
    };
    let floor = cfg.group_floor_bps;
    let mut r = room_with(cfg);
    subscribe_video(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    subscribe_video(&mut r, SUB_B, SUB_T2, SUB_SSRC_B);
    send_remb(&mut r, SUB_T, SUB_SSRC_A, 1_500_000, 0);
    send_remb(&mut r, SUB_T2, SUB_SSRC_B, 700_000, 0);
    assert_eq!(
        rembs_to(&poll(&mut r, 0), PUB),
        vec![700_000],
        "the lower of the two"
    );
    // one very poor viewer: the others keep the group floor
    send_remb(&mut r, SUB_T2, SUB_SSRC_B, 60_000, 100);
    assert_eq!(rembs_to(&poll(&mut r, 110), PUB), vec![floor]);
    // that viewer leaves: the remaining one's link counts again
    r.remove_subscription(SUB_B);
    assert_eq!(rembs_to(&poll(&mut r, 1110), PUB), vec![1_500_000]);
}

#[test]
fn rtx_is_unwrapped_to_the_original_packet() {
    let mut r = room();
    subscribe_video(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    let first = route(&mut r, PUB, &vp8(100, 0, true, true), 0);
    let base = fields(&first[0].1).0;
    // 101 lost; 102 arrives; then 101 comes as RTX (OSN 101) on the RTX SSRC
    route(&mut r, PUB, &vp8(102, 0, false, false), 1);
    let mut rtx_payload = 101u16.to_be_bytes().to_vec();
    rtx_payload.extend_from_slice(&vp8_payload(false, false, 101));
    let rtx = Pkt::new(RTX_PT, 7, 0, RTX_SSRC, &rtx_payload).bytes();
    let out = route(&mut r, PUB, &rtx, 2);
    assert_eq!(out.len(), 1);
    let (seq, _, ssrc, pt, payload) = fields(&out[0].1);
    assert_eq!(
        (seq, ssrc, pt),
        (base.wrapping_add(1), SUB_SSRC_A, SUB_VP8_PT)
    );
    assert_eq!(payload, vp8_payload(false, false, 101));
    // the same RTX again is a duplicate
    assert!(route(
        &mut r,
        PUB,
        &Pkt::new(RTX_PT, 8, 0, RTX_SSRC, &rtx_payload).bytes(),
        3
    )
    .is_empty());
    assert_eq!(r.stats().dropped(DropReason::Duplicate), 1);
    assert_eq!(r.track_stats(VIDEO_TRACK).unwrap().rtx_ssrc, Some(RTX_SSRC));
    // an RTX packet too short to hold an OSN
    assert!(route(
        &mut r,
        PUB,
        &Pkt::new(RTX_PT, 9, 0, RTX_SSRC, &[1]).bytes(),
        4
    )
    .is_empty());
    assert_eq!(r.stats().dropped(DropReason::RtxUnwrapFailed), 1);
    // padding-only RTX (bandwidth probing)
    assert!(route(
        &mut r,
        PUB,
        &Pkt::new(RTX_PT, 10, 0, RTX_SSRC, &[]).padding(200).bytes(),
        5
    )
    .is_empty());
    assert_eq!(r.stats().dropped(DropReason::PaddingOnly), 1);
}

#[test]
fn in_order_padding_leaves_no_gap_and_nacks_still_map() {
    let mut r = room();
    subscribe_video(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    let a = fields(&route(&mut r, PUB, &vp8(10, 0, true, true), 0)[0].1).0;
    for s in 11..14u16 {
        let pad = Pkt::new(VP8_PT, s, 0, VIDEO_SSRC, &[]).padding(255).bytes();
        assert!(route(&mut r, PUB, &pad, 1).is_empty());
    }
    let b = fields(&route(&mut r, PUB, &vp8(14, 3000, true, false), 2)[0].1).0;
    assert_eq!(
        b,
        a.wrapping_add(1),
        "padding removed from the subscriber's numbering"
    );
    let c = fields(&route(&mut r, PUB, &vp8(16, 3000, false, false), 3)[0].1).0;
    assert_eq!(c, a.wrapping_add(3), "a real loss (15) stays a gap");
    // NACKs on both sides of the padding run reach the right packets
    let mut nack = Vec::new();
    rtcp::write_nack(&mut nack, 1, SUB_SSRC_A, &[a, b]);
    let (rtp_out, _) = rtcp(&mut r, SUB_T, &nack, 4);
    let got: Vec<_> = rtp_out.iter().map(|(_, p)| fields(p)).collect();
    assert_eq!(got[0].0, a);
    assert_eq!(got[0].4, vp8_payload(true, true, 10));
    assert_eq!(got[1].0, b);
    assert_eq!(got[1].4, vp8_payload(true, false, 14));
}

#[test]
fn malformed_packets_are_counted_never_forwarded() {
    let mut r = room();
    subscribe_audio(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    let good = opus(1, 0);
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        good[..11].to_vec(),
        {
            let mut p = good.clone();
            p[0] = 0x40;
            p
        }, // version 1
        {
            let mut p = good.clone();
            p[0] |= 0x0f;
            p
        }, // CSRC list past the end
        {
            let mut p = good.clone();
            p[0] |= 0x10;
            p
        }, // extension header past the end
        {
            let mut p = good.clone();
            p[0] |= 0x20;
            *p.last_mut().unwrap() = 250;
            p
        }, // padding
    ];
    for c in &cases {
        assert!(route(&mut r, PUB, c, 0).is_empty());
    }
    assert_eq!(r.stats().dropped(DropReason::Malformed), cases.len() as u64);
    let unknown = Pkt::new(OPUS_PT, 1, 0, 0xdead, &[1]).bytes();
    assert!(route(&mut r, TransportId(99), &unknown, 0).is_empty());
    assert_eq!(r.stats().dropped(DropReason::UnknownSsrc), 1);
    // RTCP: truncated and bad version
    let mut pli = Vec::new();
    rtcp::write_pli(&mut pli, 1, SUB_SSRC_A);
    rtcp(&mut r, SUB_T, &pli[..10], 0);
    rtcp(&mut r, SUB_T, &[0x00, 201, 0, 1, 0, 0, 0, 0], 0);
    rtcp(&mut r, SUB_T, &[], 0);
    assert_eq!(r.stats().dropped(DropReason::MalformedRtcp), 3);
    assert_eq!(r.stats().rtp_packets_out, 0);
}

#[test]
fn same_ssrc_on_two_transports_is_kept_apart() {
    let mut r = room();
    r.add_publisher(TransportId(50), 0xCCCC, pub_ext());
    r.add_track(
        TrackId(60),
        TransportId(50),
        MediaKind::Audio,
        Some("0".into()),
        vec![codec(OPUS_PT, "opus", 48_000, None)],
        &[AUDIO_SSRC],
    )
    .unwrap();
    subscribe_audio(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    r.add_subscription(
        SUB_B,
        TrackId(60),
        SUB_T2,
        SUB_SSRC_B,
        &sub_codecs(),
        sub_ext(),
    )
    .unwrap();
    let from_pub = route(&mut r, PUB, &opus(1, 0), 0);
    let from_other = route(&mut r, TransportId(50), &opus(1, 0), 0);
    assert_eq!(
        from_pub.iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![SUB_T]
    );
    assert_eq!(
        from_other.iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![SUB_T2]
    );
}

#[test]
fn ssrcs_are_bound_on_the_fly_by_mid_then_by_unique_payload_type() {
    let mut r = mediasrv_core::router::Router::new(RouterConfig::default(), 1);
    r.add_publisher(PUB, 1, pub_ext());
    r.add_track(
        TrackId(1),
        PUB,
        MediaKind::Video,
        Some("v0".into()),
        pub_video_codecs(),
        &[],
    )
    .unwrap();
    r.add_track(
        TrackId(2),
        PUB,
        MediaKind::Video,
        Some("v1".into()),
        pub_video_codecs(),
        &[],
    )
    .unwrap();
    r.add_track(
        TrackId(3),
        PUB,
        MediaKind::Audio,
        Some("a0".into()),
        vec![codec(OPUS_PT, "opus", 48_000, None)],
        &[],
    )
    .unwrap();
    r.add_subscription(
        SUB_A,
        TrackId(2),
        SUB_T,
        SUB_SSRC_A,
        &sub_codecs(),
        sub_ext(),
    )
    .unwrap();
    r.add_subscription(
        SUB_B,
        TrackId(3),
        SUB_T,
        SUB_SSRC_B,
        &sub_codecs(),
        sub_ext(),
    )
    .unwrap();
    // same PT for both video tracks: without mid the SSRC cannot be placed
    let no_mid = Pkt::new(VP8_PT, 1, 0, 0x77, &vp8_payload(true, true, 0)).bytes();
    assert!(route(&mut r, PUB, &no_mid, 0).is_empty());
    assert_eq!(r.stats().dropped(DropReason::UnknownSsrc), 1);
    let with_mid = Pkt::new(VP8_PT, 2, 0, 0x77, &vp8_payload(true, true, 0))
        .ext(1, b"v1")
        .bytes();
    assert_eq!(route(&mut r, PUB, &with_mid, 0)[0].0, SUB_T);
    // later packets of the bound SSRC need no mid
    assert_eq!(
        route(
            &mut r,
            PUB,
            &Pkt::new(VP8_PT, 3, 0, 0x77, &[0, 1]).bytes(),
            0
        )
        .len(),
        1
    );
    // opus PT is unique to the audio track
    let a = route(
        &mut r,
        PUB,
        &Pkt::new(OPUS_PT, 1, 0, 0x99, &[1, 2]).bytes(),
        0,
    );
    assert_eq!(fields(&a[0].1).2, SUB_SSRC_B);
    assert_eq!(r.track_stats(TrackId(2)).unwrap().media_ssrc, Some(0x77));
}

#[test]
fn payload_bytes_out_equals_in_times_subscribers() {
    let mut r = room();
    subscribe_audio(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    subscribe_audio(&mut r, SUB_B, SUB_T2, SUB_SSRC_B);
    for i in 0..100u16 {
        route(&mut r, PUB, &opus(i, i as u32 * 960), i as u64);
        if i % 10 == 0 {
            route(&mut r, PUB, &opus(i, i as u32 * 960), i as u64); // network duplicate
        }
    }
    let s = r.stats();
    assert_eq!(s.payload_bytes_out, 2 * s.payload_bytes_in);
    assert_eq!(s.dropped(DropReason::Duplicate), 10);
}

#[test]
fn publisher_ssrc_change_continues_the_subscriber_stream() {
    let mut r = room();
    subscribe_video(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    let a = fields(&route(&mut r, PUB, &vp8(100, 1000, true, true), 0)[0].1);
    // the publisher restarts its encoder on a new SSRC bound by mid
    let fresh = |seq: u16, key: bool| {
        Pkt::new(VP8_PT, seq, 777_000, 0x4242, &vp8_payload(true, key, 1))
            .ext(1, b"0")
            .bytes()
    };
    assert!(
        route(&mut r, PUB, &fresh(9, false), 100).is_empty(),
        "waits for a keyframe again"
    );
    let b = fields(&route(&mut r, PUB, &fresh(10, true), 100)[0].1);
    assert_eq!(b.0, a.0.wrapping_add(1));
    assert_eq!(
        b.1,
        a.1.wrapping_add(9000),
        "timestamp advances by the elapsed 100 ms"
    );
}

#[test]
fn removing_things_stops_forwarding() {
    let mut r = room();
    subscribe_audio(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    subscribe_video(&mut r, SUB_B, SUB_T, SUB_SSRC_B);
    assert!(r.remove_subscription(SUB_A));
    assert!(!r.remove_subscription(SUB_A));
    assert!(route(&mut r, PUB, &opus(1, 0), 0).is_empty());
    assert!(r.remove_transport(SUB_T));
    assert!(r.subscription_stats(SUB_B).is_none());
    assert!(r.remove_transport(PUB));
    assert!(r.track_stats(VIDEO_TRACK).is_none());
    assert!(route(&mut r, PUB, &opus(2, 960), 0).is_empty());
    assert!(
        r.add_track(TrackId(1), PUB, MediaKind::Audio, None, vec![], &[])
            .is_err(),
        "publisher is gone"
    );
}

#[test]
fn sender_report_from_publisher_is_noted() {
    let mut r = room();
    let mut sr = Vec::new();
    rtcp::write_sr(
        &mut sr,
        VIDEO_SSRC,
        0x1122_3344_5566_7788,
        90_000,
        10,
        1000,
        &[],
    );
    let (a, b) = rtcp(&mut r, PUB, &sr, 1234);
    assert!(a.is_empty() && b.is_empty());
    assert_eq!(
        r.track_stats(VIDEO_TRACK).unwrap().last_sr,
        Some((0x1122_3344_5566_7788, 90_000, 1234))
    );
}

#[test]
fn one_nack_cannot_trigger_unbounded_retransmissions() {
    use mediasrv_core::router::MAX_RETRANSMISSIONS_PER_RTCP;
    // A ring that keeps all 12 s of these 600 packets.
    let mut r = room_with(RouterConfig {
        nack_history_ms: 20_000,
        ..Default::default()
    });
    subscribe_audio(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    let mut seqs = Vec::new();
    for i in 0..600u16 {
        seqs.push(fields(&route(&mut r, PUB, &opus(i, i as u32 * 960), 0)[0].1).0);
    }
    // 600 cached packets named in one compound datagram
    let mut nack = Vec::new();
    for chunk in seqs.chunks(17) {
        rtcp::write_nack(&mut nack, 1, SUB_SSRC_A, chunk);
    }
    let (rtp_out, _) = rtcp(&mut r, SUB_T, &nack, 0);
    assert_eq!(rtp_out.len(), MAX_RETRANSMISSIONS_PER_RTCP);
    assert_eq!(
        r.stats().dropped(DropReason::NackLimited),
        600 - MAX_RETRANSMISSIONS_PER_RTCP as u64
    );
}

#[test]
fn a_packet_is_resent_once_per_round_trip_however_often_it_is_asked_for() {
    let mut r = room();
    subscribe_audio(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    let first = fields(&route(&mut r, PUB, &opus(0, 0), 0)[0].1).0;
    route(&mut r, PUB, &opus(1, 960), 0);
    // the same packet named 1000 times in one datagram, and again 20 ms later
    let mut nack = Vec::new();
    for _ in 0..1000 {
        rtcp::write_nack(&mut nack, 1, SUB_SSRC_A, &[first]);
    }
    assert_eq!(rtcp(&mut r, SUB_T, &nack, 10).0.len(), 1);
    assert_eq!(rtcp(&mut r, SUB_T, &nack, 30).0.len(), 0);
    assert_eq!(r.stats().dropped(DropReason::NackTooSoon), 1999);
    assert_eq!(r.subscription_stats(SUB_A).unwrap().nack_too_soon, 1999);
    // no RTT known yet: a resend is allowed again after the default round trip
    let later = 10 + mediasrv_core::router::DEFAULT_RESEND_RTT_MS;
    let mut once = Vec::new();
    rtcp::write_nack(&mut once, 1, SUB_SSRC_A, &[first]);
    assert_eq!(rtcp(&mut r, SUB_T, &once, later).0.len(), 1);
    assert_eq!(r.subscription_stats(SUB_A).unwrap().retransmissions, 2);
}

/// A subscriber on a congested link NACKs everything it misses, every 20 ms, for ten seconds, while
/// the publisher sends ~1.3 Mbit/s of video. What is resent stays within the budget.
fn nack_storm(remb_bps: Option<u64>) -> (u64, u64, u64) {
    let mut r = room();
    subscribe_video(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    if let Some(bps) = remb_bps {
        let mut remb = Vec::new();
        rtcp::write_remb(&mut remb, SUB_SSRC_A, bps, &[SUB_SSRC_A]);
        rtcp(&mut r, SUB_T, &remb, 0);
    }
    let payload = |seq: u16, key: bool| {
        let mut p = vec![if key { 0x10 } else { 0x00 }, if key { 0x00 } else { 0x01 }];
        p.extend(std::iter::repeat_n(seq as u8, 1000));
        Pkt::new(VP8_PT, seq, seq as u32 * 900, VIDEO_SSRC, &p).bytes()
    };
    let mut sent: Vec<u16> = Vec::new();
    let mut resent_bytes = 0u64;
    let mut media_bytes = 0u64;
    let mut seq = 0u16;
    for ms in 0..10_000u64 {
        if ms % 6 == 0 {
            // ~167 packets/s of ~1 kB: ~1.3 Mbit/s
            for (_, b) in route(&mut r, PUB, &payload(seq, seq == 0), ms) {
                media_bytes += b.len() as u64;
                sent.push(fields(&b).0);
            }
            seq = seq.wrapping_add(1);
        }
        if ms % 100 == 0 {
            poll(&mut r, ms);
        }
        if ms % 20 == 0 && sent.len() > 1 {
            // everything of the last ~100 packets, as if all were lost
            let from = sent.len().saturating_sub(100);
            let mut nack = Vec::new();
            for chunk in sent[from..].chunks(16) {
                rtcp::write_nack(&mut nack, 1, SUB_SSRC_A, chunk);
            }
            for (_, b) in rtcp(&mut r, SUB_T, &nack, ms).0 {
                resent_bytes += b.len() as u64;
            }
        }
    }
    let st = r.subscription_stats(SUB_A).unwrap();
    assert_eq!(st.retransmissions, r.stats().retransmissions_out);
    (resent_bytes, media_bytes, st.nack_over_budget)
}

#[test]
fn retransmissions_stay_within_a_share_of_the_subscribers_estimate() {
    // A roomy link (10 Mbit/s): resends are held to a quarter of it, and each packet is resent
    // at most once per round trip (default 100 ms) instead of on every one of its NACKs.
    let (resent, media, over) = nack_storm(Some(10_000_000));
    let quarter_10s = 10_000_000 / 4 / 8 * 10;
    assert!(resent > 0 && resent <= quarter_10s + 80_000, "{resent}");
    // The storm asks for ~10x the media a second; the budget is used, not starved, and the rest
    // is refused and counted.
    assert!(resent >= quarter_10s * 9 / 10, "{resent}");
    assert!(over > 0 && resent < 3 * media, "{resent} vs media {media}");
}

#[test]
fn no_retransmissions_into_a_link_the_media_already_fills() {
    // The subscriber's REMB says 300 kbit/s while first transmissions run at ~1.3 Mbit/s: once the
    // media rate is measured, nothing more is sent into that link.
    let (resent, _, over) = nack_storm(Some(300_000));
    // Only what the budget allowed before the media rate was first measured may go out: at most
    // two seconds of a quarter of the estimate, plus the first burst.
    assert!(resent <= 2 * 300_000 / 4 / 8 + 3_000, "{resent}");
    assert!(over > 1_000, "refused NACKed packets are counted: {over}");
}

#[test]
fn duplicated_padding_does_not_shift_numbering_twice() {
    let mut r = room();
    subscribe_audio(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    let a = fields(&route(&mut r, PUB, &opus(10, 0), 0)[0].1).0;
    let pad = Pkt::new(OPUS_PT, 11, 0, AUDIO_SSRC, &[]).padding(4).bytes();
    route(&mut r, PUB, &pad, 1);
    route(&mut r, PUB, &pad, 2);
    let b = fields(&route(&mut r, PUB, &opus(12, 960), 3)[0].1).0;
    assert_eq!(b, a.wrapping_add(1));
    let late = route(&mut r, PUB, &opus(9, 0), 4);
    assert!(
        late.is_empty(),
        "older than the subscription's first packet"
    );
}

#[test]
fn receiver_report_to_publisher_carries_loss_and_sr_echo() {
    let mut r = room();
    subscribe_audio(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    for seq in [0u16, 1, 2, 4, 5] {
        route(&mut r, PUB, &opus(seq, seq as u32 * 960), seq as u64 * 20);
    }
    let mut sr = Vec::new();
    rtcp::write_sr(
        &mut sr,
        AUDIO_SSRC,
        0x0000_1234_5678_0000,
        4800,
        5,
        100,
        &[],
    );
    rtcp(&mut r, PUB, &sr, 1000);
    let out = poll(&mut r, 1250);
    let (t, datagram) = out
        .iter()
        .find(|(_, d)| d[1] == rtcp::PT_RR)
        .expect("an RR goes to the publisher");
    assert_eq!(*t, PUB);
    let block = match rtcp::parse_compound(datagram).next().unwrap().unwrap() {
        RtcpPacket::ReceiverReport { ssrc, reports } => {
            assert_eq!(ssrc, PUB_RTCP_SSRC);
            reports.iter().find(|b| b.ssrc == AUDIO_SSRC).unwrap()
        }
        p => panic!("{p:?}"),
    };
    assert_eq!(block.cumulative_lost, 1);
    assert_eq!(block.fraction_lost as u32, 256 / 6);
    assert_eq!(block.last_sr, 0x1234_5678);
    assert_eq!(block.delay_since_last_sr, 250 * 65536 / 1000);
    assert_eq!(r.track_stats(AUDIO_TRACK).unwrap().lost, 1);
}

#[test]
fn sender_reports_map_publisher_clock_into_subscriber_timestamps() {
    let mut r = room_with(RouterConfig {
        sender_reports: true,
        ..Default::default()
    });
    subscribe_audio(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    let first = fields(&route(&mut r, PUB, &opus(0, 48_000), 0)[0].1);
    assert!(
        poll(&mut r, 100).iter().all(|(_, d)| d[1] != rtcp::PT_SR),
        "no SR before the publisher's"
    );
    // publisher: RTP 48000 was NTP 10.0 s, reported at local time 1000 ms
    let mut sr = Vec::new();
    rtcp::write_sr(&mut sr, AUDIO_SSRC, 10u64 << 32, 48_000, 1, 5, &[]);
    rtcp(&mut r, PUB, &sr, 1000);
    let out = poll(&mut r, 1500);
    let (t, d) = out.iter().find(|(_, d)| d[1] == rtcp::PT_SR).unwrap();
    assert_eq!(*t, SUB_T);
    match rtcp::parse_compound(d).next().unwrap().unwrap() {
        RtcpPacket::SenderReport {
            ssrc,
            ntp,
            rtp_timestamp,
            packet_count,
            octet_count,
            ..
        } => {
            assert_eq!(ssrc, SUB_SSRC_A);
            assert_eq!(ntp, (10u64 << 32) + (1u64 << 31), "10.5 s");
            assert_eq!(
                rtp_timestamp,
                first.1.wrapping_add(24_000),
                "half a second after the mapped packet"
            );
            assert_eq!((packet_count, octet_count), (1, first.4.len() as u32));
        }
        p => panic!("{p:?}"),
    }
    assert!(
        poll(&mut r, 1600).iter().all(|(_, d)| d[1] != rtcp::PT_SR),
        "once per interval"
    );
}

#[test]
fn a_publisher_cannot_bind_unbounded_ssrcs() {
    let mut r = mediasrv_core::router::Router::new(RouterConfig::default(), 1);
    r.add_publisher(PUB, 1, pub_ext());
    r.add_track(
        TrackId(1),
        PUB,
        MediaKind::Audio,
        Some("a".into()),
        vec![codec(OPUS_PT, "opus", 48_000, None)],
        &[],
    )
    .unwrap();
    for ssrc in 0..100u32 {
        route(&mut r, PUB, &Pkt::new(OPUS_PT, 1, 0, ssrc, &[1]).bytes(), 0);
    }
    assert_eq!(r.stats().dropped(DropReason::UnknownSsrc), 92);
}

fn nacks_to(out: &[(TransportId, Vec<u8>)], to: TransportId) -> Vec<Vec<u16>> {
    out.iter()
        .filter(|(t, _)| *t == to)
        .flat_map(|(_, b)| {
            rtcp::parse_compound(b).filter_map(|p| match p {
                Ok(RtcpPacket::Nack {
                    sender_ssrc,
                    media_ssrc,
                    items,
                }) => {
                    assert_eq!((sender_ssrc, media_ssrc), (PUB_RTCP_SSRC, VIDEO_SSRC));
                    Some(items.seqs().collect())
                }
                _ => None,
            })
        })
        .collect()
}

#[test]
fn packets_lost_on_the_way_in_are_nacked_to_the_publisher_until_they_arrive() {
    let mut r = room();
    subscribe_video(&mut r, SUB_A, SUB_T, SUB_SSRC_A);
    route(&mut r, PUB, &vp8(100, 9000, true, true), 0);
    route(&mut r, PUB, &vp8(101, 9000, false, false), 1);
    // 102 and 103 are lost on the way in.
    route(&mut r, PUB, &vp8(104, 12000, true, false), 2);
    assert_eq!(nacks_to(&poll(&mut r, 10), PUB), vec![vec![102, 103]]);
    // 103 arrives late (as a plain reordered packet): only 102 is asked for again, after the retry delay.
    let fwd = route(&mut r, PUB, &vp8(103, 9000, false, false), 20);
    assert_eq!(fwd.len(), 1, "the late packet is forwarded");
    assert!(
        nacks_to(&poll(&mut r, 30), PUB).is_empty(),
        "not before the retry delay"
    );
    assert_eq!(nacks_to(&poll(&mut r, 60), PUB), vec![vec![102]]);
    assert_eq!(nacks_to(&poll(&mut r, 110), PUB), vec![vec![102]]);
    // Three tries, then the packet is given up on.
    assert!(nacks_to(&poll(&mut r, 200), PUB).is_empty());
    let s = r.track_stats(VIDEO_TRACK).unwrap();
    assert_eq!((s.nacks_out, s.nack_seqs_out), (3, 4));
    assert_eq!(r.stats().nacks_out, 3);
}

#[test]
fn audio_gaps_are_not_nacked() {
    let mut r = room();
    route(&mut r, PUB, &opus(10, 0), 0);
    route(&mut r, PUB, &opus(13, 960), 1);
    let out = poll(&mut r, 10);
    assert!(out
        .iter()
        .all(|(_, b)| rtcp::parse_compound(b).all(|p| !matches!(p, Ok(RtcpPacket::Nack { .. })))));
}
