//! Properties: parsers and the router never panic on arbitrary or mangled input, and forwarded
//! streams keep the publisher's sequence/timestamp spacing whatever the order of arrival.

mod common;

use common::*;
use mediasrv_core::keyframe::{is_keyframe_start, CodecKind};
use mediasrv_core::output::Output;
use mediasrv_core::rtcp;
use mediasrv_core::rtp::RtpView;
use proptest::prelude::*;

const SUB: SubscriptionId = SubscriptionId(100);
const SUB_SSRC: u32 = 0x5000_0001;

fn subscribed_room() -> mediasrv_core::router::Router {
    let mut r = room();
    r.add_subscription(SUB, VIDEO_TRACK, SUB_T, SUB_SSRC, &sub_codecs(), sub_ext())
        .unwrap();
    r.add_subscription(
        SubscriptionId(SUB.0 + 1),
        AUDIO_TRACK,
        SUB_T,
        SUB_SSRC + 1,
        &sub_codecs(),
        sub_ext(),
    )
    .unwrap();
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn rtp_parser_accepts_or_refuses_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(v) = RtpView::parse(&bytes) {
            prop_assert!(v.header_len() + v.payload().len() + v.padding_len() == bytes.len());
            for (id, data) in v.extensions() {
                prop_assert!(id != 0 && data.len() <= bytes.len());
            }
        }
    }

    #[test]
    fn rtcp_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        for p in rtcp::parse_compound(&bytes) {
            if let Ok(rtcp::RtcpPacket::Nack { items, .. }) = p {
                prop_assert!(items.seqs().count() <= bytes.len() * 17 / 4);
            }
        }
    }

    #[test]
    fn xr_parser_never_panics_and_blocks_stay_inside(
        body in proptest::collection::vec(any::<u8>(), 0..40).prop_map(|mut v| { v.truncate(v.len() / 4 * 4); v })
    ) {
        // A well-formed XR header around arbitrary block bytes (random bytes rarely make one).
        let mut pkt = vec![0x80, rtcp::PT_XR];
        pkt.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
        pkt.extend_from_slice(&body);
        if let Some(Ok(rtcp::RtcpPacket::ExtendedReport { blocks, .. })) = rtcp::parse_compound(&pkt).next() {
            let bytes: usize = blocks.iter().map(|(_, b)| b.len() + 4).sum();
            prop_assert!(bytes + 4 <= body.len());
            prop_assert!(blocks.dlrr().count() * 12 <= body.len());
            let _ = blocks.rrtr();
        }
    }

    #[test]
    fn keyframe_detection_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        for k in [CodecKind::Vp8, CodecKind::Vp9, CodecKind::H264, CodecKind::Av1, CodecKind::Other] {
            let _ = is_keyframe_start(k, &bytes);
        }
    }

    #[test]
    fn router_survives_arbitrary_datagrams(
        datagrams in proptest::collection::vec(
            (0u64..4, proptest::collection::vec(any::<u8>(), 0..120), any::<bool>()), 1..40)
    ) {
        let mut r = subscribed_room();
        let (mut a, mut b) = (Output::new(), Output::new());
        for (i, (transport, bytes, as_rtcp)) in datagrams.iter().enumerate() {
            a.clear();
            b.clear();
            if *as_rtcp {
                r.handle_rtcp(TransportId(*transport), bytes, i as u64 * 7, &mut a, &mut b);
            } else {
                r.route_rtp(TransportId(*transport), bytes, i as u64 * 7, &mut a);
            }
            for (_, p) in a.iter() {
                prop_assert!(RtpView::parse(p).is_ok(), "router emitted invalid RTP");
            }
            a.clear();
            r.poll(i as u64 * 7, &mut a);
        }
    }

    #[test]
    fn router_survives_mangled_valid_packets(
        flips in proptest::collection::vec((0usize..60, any::<u8>()), 1..6),
        cut in 0usize..60,
        seq in any::<u16>(),
    ) {
        let mut r = subscribed_room();
        let mut out = Output::new();
        r.route_rtp(PUB, &vp8(seq.wrapping_sub(1), 0, true, true), 0, &mut out);
        let mut p = Pkt::new(VP8_PT, seq, 9000, VIDEO_SSRC, &vp8_payload(true, false, 3))
            .ext(3, &[1, 2, 3]).ext(2, &[5]).bytes();
        for (i, x) in flips { let n = p.len(); p[i % n] ^= x; }
        p.truncate(p.len().saturating_sub(cut % 8));
        out.clear();
        r.route_rtp(PUB, &p, 1, &mut out);
        let mut nack = Vec::new();
        rtcp::write_nack(&mut nack, 1, SUB_SSRC, &[seq, seq.wrapping_add(1)]);
        let n = nack.len();
        for (i, x) in [(0usize, p[0]), (5, p[1])] { nack[i % n] ^= x; }
        let mut b = Output::new();
        out.clear();
        r.handle_rtcp(SUB_T, &nack, 2, &mut out, &mut b);
    }

    /// Plausible traffic (known SSRCs and payload types, random numbering, payloads, padding, RTX and
    /// feedback) keeps the router's accounting consistent: it only ever emits valid RTP, and never
    /// more first-transmission payload than it received times the number of subscribers.
    #[test]
    fn router_accounting_holds_under_plausible_traffic(
        ops in proptest::collection::vec((0u8..6, any::<u16>(), any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..40), 0u8..4), 1..80)
    ) {
        let mut r = subscribed_room();
        let (mut a, mut b) = (Output::new(), Output::new());
        for (i, (kind, seq, ts, payload, pad)) in ops.into_iter().enumerate() {
            let now = i as u64 * 13;
            a.clear();
            b.clear();
            let pkt = |pt, ssrc| Pkt::new(pt, seq, ts, ssrc, &payload).padding(pad * 4).bytes();
            match kind {
                0 => r.route_rtp(PUB, &pkt(VP8_PT, VIDEO_SSRC), now, &mut a),
                1 => r.route_rtp(PUB, &pkt(RTX_PT, RTX_SSRC), now, &mut a),
                2 => r.route_rtp(PUB, &pkt(OPUS_PT, AUDIO_SSRC), now, &mut a),
                3 => r.route_rtp(PUB, &pkt(payload.first().map_or(0, |x| x & 0x7f), ts), now, &mut a),
                4 => {
                    let mut nack = Vec::new();
                    rtcp::write_nack(&mut nack, 1, SUB_SSRC + (ts & 1), &[seq, seq.wrapping_add(3)]);
                    rtcp::write_pli(&mut nack, 1, SUB_SSRC);
                    r.handle_rtcp(SUB_T, &nack, now, &mut a, &mut b);
                }
                _ => r.poll(now, &mut b),
            }
            for (t, p) in a.iter() {
                prop_assert_eq!(t, SUB_T);
                prop_assert!(RtpView::parse(p).is_ok());
            }
            for (t, p) in b.iter() {
                prop_assert_eq!(t, PUB);
                prop_assert!(rtcp::validate_compound(p).is_ok());
            }
        }
        let s = r.stats();
        prop_assert!(s.payload_bytes_out <= 2 * s.payload_bytes_in);
        prop_assert!(s.retransmissions_out <= s.rtp_packets_out);
    }

    /// Recording sinks fed plausible traffic (random numbering, payloads, padding, RTX, SSRC
    /// switches, sender reports) and drained at random: nothing panics, nothing is sent toward the
    /// sinks' non-transport, and a sink never releases more frames than packets it took.
    #[test]
    fn sinks_survive_plausible_traffic(
        ops in proptest::collection::vec((0u8..7, any::<u16>(), any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..24), 0u8..4), 1..120)
    ) {
        use mediasrv_core::jitter::{FrameCodec, JitterConfig};
        use mediasrv_core::router::SINK_TRANSPORT;
        let mut r = subscribed_room();
        let small = |c| JitterConfig { capacity: 16, ..JitterConfig::new(c) };
        r.add_sink(SubscriptionId(200), VIDEO_TRACK, FrameCodec::Vp8, VP8_PT, small(FrameCodec::Vp8)).unwrap();
        r.add_sink(SubscriptionId(201), AUDIO_TRACK, FrameCodec::Opus, OPUS_PT, small(FrameCodec::Opus)).unwrap();
        let (mut a, mut b) = (Output::new(), Output::new());
        let mut released = [0u64; 2];
        for (i, (kind, seq, ts, payload, pad)) in ops.into_iter().enumerate() {
            let now = i as u64 * 13;
            a.clear();
            b.clear();
            let pkt = |pt, ssrc| Pkt::new(pt, seq, ts, ssrc, &payload).padding(pad * 4).bytes();
            match kind {
                0 => r.route_rtp(PUB, &pkt(VP8_PT, VIDEO_SSRC ^ (pad == 3 && seq % 7 == 0) as u32), now, &mut a),
                1 => r.route_rtp(PUB, &pkt(RTX_PT, RTX_SSRC), now, &mut a),
                2 => r.route_rtp(PUB, &pkt(OPUS_PT, AUDIO_SSRC), now, &mut a),
                3 => {
                    let mut sr = Vec::new();
                    let ssrc = if pad & 1 == 0 { VIDEO_SSRC } else { AUDIO_SSRC };
                    rtcp::write_sr(&mut sr, ssrc, (ts as u64) << 20, ts, 1, 5, &[]);
                    r.handle_rtcp(PUB, &sr, now, &mut a, &mut b);
                }
                4 => r.poll(now, &mut b),
                _ => {
                    for (k, sub) in [SubscriptionId(200), SubscriptionId(201)].into_iter().enumerate() {
                        released[k] += r.sink_mut(sub).unwrap().buffer().pop_frames(now).len() as u64;
                        let _ = r.sink_sync(sub);
                    }
                }
            }
            for (t, _) in a.iter().chain(b.iter()) {
                prop_assert_ne!(t, SINK_TRANSPORT);
            }
        }
        for (k, sub) in [SubscriptionId(200), SubscriptionId(201)].into_iter().enumerate() {
            released[k] += r.sink_mut(sub).unwrap().buffer().flush().len() as u64;
            let s = r.sink_stats(sub).unwrap();
            prop_assert_eq!(s.frames, released[k]);
            prop_assert!(s.frames <= s.packets);
            prop_assert_eq!(r.sink_mut(sub).unwrap().buffer().buffered(), 0);
        }
    }

    /// Whatever order packets arrive in (reordering, loss, duplicates, wrap), every forwarded packet's
    /// sequence number and timestamp differ from the first forwarded one's by exactly the publisher's
    /// difference.
    #[test]
    fn forwarded_numbering_preserves_publisher_spacing(
        start in any::<u16>(),
        ts0 in any::<u32>(),
        order in proptest::collection::vec(0u16..200, 1..150),
    ) {
        // A ring holding the test's 4 s of audio: later than that, a packet is too old to forward.
        let mut r = room_with(mediasrv_core::router::RouterConfig {
            nack_history_ms: 5_000,
            ..Default::default()
        });
        r.add_subscription(SUB, AUDIO_TRACK, SUB_T, SUB_SSRC, &sub_codecs(), sub_ext()).unwrap();
        let mut out = Output::new();
        let mut first: Option<(u16, u16, u32)> = None; // publisher offset, out seq, out ts
        let mut seen = std::collections::HashSet::new();
        for k in order {
            out.clear();
            let seq = start.wrapping_add(k);
            let ts = ts0.wrapping_add(k as u32 * 960);
            r.route_rtp(PUB, &opus(seq, ts), 0, &mut out);
            let fresh = seen.insert(k);
            match (first, out.len()) {
                (_, 0) => prop_assert!(!fresh || first.is_some_and(|(k0, _, _)| k < k0)),
                (None, 1) => first = Some((k, fields(out.get(0).1).0, fields(out.get(0).1).1)),
                (Some((k0, s0, t0)), 1) => {
                    let (s, t, ..) = fields(out.get(0).1);
                    prop_assert_eq!(s.wrapping_sub(s0), k.wrapping_sub(k0));
                    prop_assert_eq!(t.wrapping_sub(t0), (k.wrapping_sub(k0)) as u32 * 960);
                }
                _ => prop_assert!(false, "one subscriber, more than one packet"),
            }
        }
    }
}
