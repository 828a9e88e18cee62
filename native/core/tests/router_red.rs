//! Opus RED (RFC 2198) through the router: passed on to subscribers that negotiated RED (payload
//! type rewritten, also inside the blocks), unwrapped to its primary Opus block for the others and
//! for recording sinks, malformed RED dropped and counted; a frame lost on the way in recovered
//! from the next packet's redundancy for those that get the primary alone; and Opus DTX gaps (timestamp jumps with
//! no packets) are not loss.

mod common;

use common::*;
use mediasrv_core::jitter::{FrameCodec, JitterBuffer, JitterConfig, JitterEvent, RtpFields};
use mediasrv_core::router::{DropReason, MediaKind, Router, RouterConfig};
use mediasrv_core::rtcp::{self, RtcpPacket};

const RED_TRACK: TrackId = TrackId(12);
const RED_SSRC: u32 = 4444;
/// Chromium's numbers: red 63 (fmtp 111/111), opus 111.
const RED_PT: u8 = 63;
const SUB_RED_PT: u8 = 100;
const SUB_RED: SubscriptionId = SubscriptionId(100);
const SUB_PLAIN: SubscriptionId = SubscriptionId(101);
const SUB_SAME: SubscriptionId = SubscriptionId(102);
const SINK: SubscriptionId = SubscriptionId(500);
const SUB_T3: TransportId = TransportId(4);

/// A router with the common room plus an audio track whose publisher negotiated RED first.
fn red_room() -> Router {
    let mut r = room_with(RouterConfig::default());
    r.add_track(
        RED_TRACK,
        PUB,
        MediaKind::Audio,
        Some("2".into()),
        vec![
            codec(RED_PT, "red", 48_000, None),
            codec(OPUS_PT, "opus", 48_000, None),
        ],
        &[RED_SSRC],
    )
    .unwrap();
    r
}

/// Subscribers: one with RED under other numbers (red 100 with opus 109, as our own offers
/// number them differently from Chromium), one without RED, one with Chromium's numbers.
fn subscribe(r: &mut Router) {
    let with_red = [
        codec(SUB_OPUS_PT, "opus", 48_000, None),
        codec(SUB_RED_PT, "red", 48_000, None),
    ];
    r.add_subscription(SUB_RED, RED_TRACK, SUB_T, 0x5000_0001, &with_red, sub_ext())
        .unwrap();
    let plain = [codec(SUB_OPUS_PT, "opus", 48_000, None)];
    r.add_subscription(SUB_PLAIN, RED_TRACK, SUB_T2, 0x5000_0002, &plain, sub_ext())
        .unwrap();
    let same = [
        codec(RED_PT, "red", 48_000, None),
        codec(OPUS_PT, "opus", 48_000, None),
    ];
    r.add_subscription(SUB_SAME, RED_TRACK, SUB_T3, 0x5000_0003, &same, sub_ext())
        .unwrap();
}

/// A RED payload as Chromium sends it: the previous frame (20 ms back) as a redundant block,
/// then the primary frame. `prev` None: the primary alone.
fn red_payload(prev: Option<&[u8]>, primary: &[u8]) -> Vec<u8> {
    let blocks: Vec<(u16, Vec<u8>)> = prev.map(|p| (960, p.to_vec())).into_iter().collect();
    red_blocks(&blocks, primary)
}

fn opus_frame(n: u16) -> Vec<u8> {
    vec![0xfc, n as u8, 0x11, 0x22, 0x33]
}

fn red(seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    Pkt::new(RED_PT, seq, ts, RED_SSRC, payload).bytes()
}

fn to(out: &[(TransportId, Vec<u8>)], t: TransportId) -> Vec<(u16, u32, u32, u8, Vec<u8>)> {
    out.iter()
        .filter(|(x, _)| *x == t)
        .map(|(_, b)| fields(b))
        .collect()
}

#[test]
fn red_passes_through_with_payload_types_rewritten_and_is_unwrapped_for_the_others() {
    let mut r = red_room();
    subscribe(&mut r);
    let mut got: [Vec<_>; 3] = Default::default();
    for i in 0..5u16 {
        let prev = (i > 0).then(|| opus_frame(i - 1));
        let payload = red_payload(prev.as_deref(), &opus_frame(i));
        let out = route(
            &mut r,
            PUB,
            &red(700 + i, 48_000 + i as u32 * 960, &payload),
            i as u64 * 20,
        );
        assert_eq!(out.len(), 3, "one packet per subscriber");
        for (k, t) in [SUB_T, SUB_T2, SUB_T3].into_iter().enumerate() {
            let mut p = to(&out, t);
            assert_eq!(p.len(), 1);
            got[k].push(p.remove(0));
        }
        let [with_red, plain, same] = [
            &got[0][i as usize],
            &got[1][i as usize],
            &got[2][i as usize],
        ];
        // Same numbers: the subscriber's RED type, its opus type inside the blocks.
        assert_eq!(same.3, RED_PT);
        assert_eq!(same.4, payload, "nothing to rewrite: passed on as is");
        assert_eq!(with_red.3, SUB_RED_PT);
        let mut want = payload.clone();
        want[0] = if i > 0 {
            0x80 | SUB_OPUS_PT
        } else {
            SUB_OPUS_PT
        };
        if i > 0 {
            want[4] = SUB_OPUS_PT;
        }
        assert_eq!(
            with_red.4, want,
            "block payload types rewritten, all else unchanged"
        );
        // Without RED: the primary block alone, as opus.
        assert_eq!(plain.3, SUB_OPUS_PT);
        assert_eq!(plain.4, opus_frame(i));
    }
    // Each subscriber's numbering runs on exactly as the publisher's does.
    for g in &got {
        for w in g.windows(2) {
            assert_eq!(w[1].0, w[0].0.wrapping_add(1));
            assert_eq!(w[1].1.wrapping_sub(w[0].1), 960);
        }
    }
    assert_eq!(r.stats().dropped(DropReason::CodecNotNegotiated), 0);
    let st = r.subscription_stats(SUB_PLAIN).unwrap();
    assert_eq!(
        st.payload_bytes,
        5 * 5,
        "counts what was sent: the primaries"
    );
}

#[test]
fn plain_opus_from_a_red_publisher_goes_to_everyone_as_opus() {
    let mut r = red_room();
    subscribe(&mut r);
    let pkt = Pkt::new(OPUS_PT, 9, 960, RED_SSRC, &opus_frame(9)).bytes();
    let out = route(&mut r, PUB, &pkt, 0);
    let pts: Vec<u8> = [SUB_T, SUB_T2, SUB_T3]
        .into_iter()
        .map(|t| to(&out, t)[0].3)
        .collect();
    assert_eq!(pts, vec![SUB_OPUS_PT, SUB_OPUS_PT, OPUS_PT]);
}

#[test]
fn malformed_red_is_dropped_counted_and_leaves_no_gap() {
    let mut r = red_room();
    subscribe(&mut r);
    let good = route(
        &mut r,
        PUB,
        &red(1, 960, &red_payload(None, &opus_frame(1))),
        0,
    );
    assert_eq!(good.len(), 3);
    let bad: [&[u8]; 5] = [
        &[0x80 | OPUS_PT, 0x0f],                        // redundant header cut short
        &[0x80 | OPUS_PT, 0, 0, 200, OPUS_PT, 1, 2, 3], // block length beyond the payload
        &[0x80 | OPUS_PT, 0, 0, 0],                     // no primary header
        &[OPUS_PT],                                     // no primary data
        &[0x80 | OPUS_PT, 0, 0, 2, OPUS_PT, 1, 2],      // redundant data, primary empty
    ];
    for (i, b) in bad.iter().enumerate() {
        let out = route(&mut r, PUB, &red(2 + i as u16, 960 * (2 + i as u32), b), 20);
        assert!(out.is_empty(), "malformed RED {i} goes nowhere");
    }
    assert_eq!(
        r.stats().dropped(DropReason::MalformedRed),
        bad.len() as u64
    );
    let next = route(
        &mut r,
        PUB,
        &red(7, 960 * 7, &red_payload(None, &opus_frame(7))),
        40,
    );
    for t in [SUB_T, SUB_T2, SUB_T3] {
        let (a, b) = (to(&good, t)[0].0, to(&next, t)[0].0);
        assert_eq!(
            b,
            a.wrapping_add(1),
            "the dropped packets are cut out of the numbering"
        );
    }
}

#[test]
fn a_recording_sink_gets_the_primary_opus() {
    let mut r = red_room();
    r.add_sink(
        SINK,
        RED_TRACK,
        FrameCodec::Opus,
        OPUS_PT,
        JitterConfig::new(FrameCodec::Opus),
    )
    .unwrap();
    for i in 0..3u16 {
        let prev = (i > 0).then(|| opus_frame(i - 1));
        let payload = red_payload(prev.as_deref(), &opus_frame(i));
        assert!(route(
            &mut r,
            PUB,
            &red(10 + i, 960 * i as u32, &payload),
            i as u64 * 20
        )
        .is_empty());
    }
    let frames: Vec<Vec<u8>> = r
        .sink_mut(SINK)
        .unwrap()
        .buffer()
        .pop_frames(100)
        .into_iter()
        .map(|f| f.data)
        .collect();
    assert_eq!(frames, vec![opus_frame(0), opus_frame(1), opus_frame(2)]);
}

#[test]
fn a_resent_red_packet_goes_only_where_it_went_unchanged() {
    let mut r = red_room();
    subscribe(&mut r);
    let out = route(
        &mut r,
        PUB,
        &red(50, 960, &red_payload(Some(&[1]), &opus_frame(2))),
        0,
    );
    for (sub_ssrc, t, answered) in [
        (0x5000_0001, SUB_T, false),
        (0x5000_0002, SUB_T2, false),
        (0x5000_0003, SUB_T3, true),
    ] {
        let seq = to(&out, t)[0].0;
        let mut nack = Vec::new();
        rtcp::write_nack(&mut nack, 0x7777, sub_ssrc, &[seq]);
        let (rtp_out, _) = rtcp(&mut r, t, &nack, 10);
        assert_eq!(!rtp_out.is_empty(), answered, "transport {t:?}");
    }
}

/// Opus with DTX: 20 ms packets, then 2 s without any (one DTX packet at its start), the
/// timestamp jumping over it while the sequence runs on.
fn dtx_stream() -> Vec<(u16, u32, u64)> {
    let mut v = Vec::new();
    for i in 0..10u16 {
        v.push((100 + i, 960 * i as u32, 20 * i as u64));
    }
    for i in 10..20u16 {
        let after = i - 10;
        v.push((100 + i, 960 * (i as u32 + 100), 2200 + 20 * after as u64));
    }
    v
}

#[test]
fn a_dtx_gap_is_not_loss_in_the_router() {
    let mut r = room();
    r.add_subscription(
        SUB_PLAIN,
        AUDIO_TRACK,
        SUB_T,
        0x5000_0009,
        &sub_codecs(),
        sub_ext(),
    )
    .unwrap();
    let mut sent = Vec::new();
    let mut rtcp_out = Vec::new();
    let mut now = 0;
    for (seq, ts, at) in dtx_stream() {
        // Polls through the silence as the plane's timer does.
        while now < at {
            rtcp_out.extend(poll(&mut r, now));
            now += 10;
        }
        for (_, b) in route(&mut r, PUB, &opus(seq, ts), at) {
            sent.push(fields(&b));
        }
    }
    rtcp_out.extend(poll(&mut r, now + 100));
    assert_eq!(sent.len(), 20, "every packet forwarded");
    for w in sent.windows(2) {
        assert_eq!(w[1].0, w[0].0.wrapping_add(1), "sequence continuous");
    }
    assert_eq!(
        sent[10].1.wrapping_sub(sent[9].1),
        960 * 101,
        "timestamp jump kept"
    );
    let nacks = rtcp_out
        .iter()
        .flat_map(|(_, b)| rtcp::parse_compound(b))
        .filter(|p| matches!(p, Ok(RtcpPacket::Nack { .. })))
        .count();
    assert_eq!(nacks, 0, "no NACK for a DTX gap");
    assert_eq!(r.stats().nacks_out, 0);
    assert_eq!(r.track_stats(AUDIO_TRACK).unwrap().lost, 0);
    assert_eq!(
        r.stats().tracks_stopped,
        0,
        "2 s of DTX is not a stopped track"
    );
}

#[test]
fn a_dtx_gap_is_not_loss_in_the_jitter_buffer() {
    let mut jb: JitterBuffer<Vec<u8>> = JitterBuffer::new(JitterConfig::new(FrameCodec::Opus));
    let mut frames = 0;
    let mut now = 0;
    for (seq, ts, at) in dtx_stream() {
        while now < at {
            for e in jb.poll(now) {
                assert!(
                    !matches!(e, JitterEvent::Nack(_)),
                    "NACK at {now} ms: {e:?}"
                );
                assert_ne!(e, JitterEvent::KeyframeRequest);
            }
            frames += jb.pop_frames(now).len();
            now += 10;
        }
        let header = RtpFields {
            ssrc: AUDIO_SSRC,
            seq,
            timestamp: ts,
            marker: false,
        };
        jb.push_payload(header, opus_frame(seq), at);
    }
    frames += jb.pop_frames(now + 1000).len();
    assert_eq!(frames, 20);
    let s = jb.stats();
    assert_eq!(
        (s.lost, s.nacks, s.resets, s.frames_incomplete),
        (0, 0, 0, 0)
    );
}

#[test]
fn a_tight_link_gets_the_primary_alone_and_red_again_once_it_has_room() {
    // SUB_T watches the video and takes the RED audio; its REMB says how much its link carries.
    // At 2 Mbit/s it gets RED; at 230 kbit/s (the video's share near the resume threshold: the
    // redundancy's ~30 kbit/s would decide whether paused video can come back) the primary alone,
    // as its opus, numbering unbroken; at 2 Mbit/s again, RED again.
    let mut r = red_room();
    subscribe(&mut r);
    r.add_subscription(
        SubscriptionId(103),
        VIDEO_TRACK,
        SUB_T,
        0x5000_0004,
        &sub_codecs(),
        sub_ext(),
    )
    .unwrap();
    let mut got = Vec::new();
    let mut lean_at = Vec::new();
    for i in 0..600u16 {
        let now = i as u64 * 20;
        // The link's REMB every 500 ms: 2 Mbit/s, 230 kbit/s from 4 s, 2 Mbit/s from 8 s.
        if now.is_multiple_of(500) {
            let bps = if (4_000..8_000).contains(&now) {
                230_000
            } else {
                2_000_000
            };
            let mut remb = Vec::new();
            rtcp::write_remb(&mut remb, 0x5000_0001, bps, &[0x5000_0001]);
            rtcp(&mut r, SUB_T, &remb, now);
        }
        let prev = (i > 0).then(|| opus_frame(i - 1));
        let payload = red_payload(prev.as_deref(), &opus_frame(i));
        // Frame 350 (7 s: the tight link) is lost on the way in; the next packet's block fills it.
        if i != 350 {
            let out = route(&mut r, PUB, &red(900 + i, i as u32 * 960, &payload), now);
            got.extend(to(&out, SUB_T).into_iter().map(|p| (now, p)));
        }
        poll(&mut r, now);
        lean_at.push((now, r.downlink_stats(SUB_T).unwrap().red_lean));
    }
    let pt_at = |t: u64| got.iter().find(|(n, _)| *n >= t).unwrap().1 .3;
    assert_eq!(pt_at(3_000), SUB_RED_PT, "room for RED");
    assert_eq!(
        pt_at(6_000),
        SUB_OPUS_PT,
        "the primary alone on the tight link"
    );
    let lean_one = got.iter().find(|(n, _)| *n == 6_000).unwrap();
    assert_eq!(lean_one.1 .4, opus_frame(300), "as plain opus");
    assert_eq!(
        pt_at(11_000),
        SUB_RED_PT,
        "RED again once the link has room"
    );
    // One switch each way (no flapping), and the numbering runs on across them, with no hole
    // where frame 350 was lost: it came from frame 351's redundancy.
    let switches = lean_at.windows(2).filter(|w| w[0].1 != w[1].1).count();
    assert_eq!(switches, 2, "{lean_at:?}");
    for w in got.windows(2) {
        assert_eq!(w[1].1 .0, w[0].1 .0.wrapping_add(1));
    }
    assert!(got.iter().any(|(_, p)| p.4 == opus_frame(350)));
    assert_eq!(r.stats().red_recovered, 1);
    assert_eq!(r.stats().dropped(DropReason::CodecNotNegotiated), 0);
}

/// Sends RED packets `seqs` (frame n at 700 + n, 20 ms apart, each repeating the frame before it
/// as Chromium does) and returns what each subscriber got, by transport.
fn send_frames(r: &mut Router, frames: &[u16]) -> Vec<(TransportId, Vec<u8>)> {
    let mut all = Vec::new();
    for &n in frames {
        let prev = (n > 0).then(|| opus_frame(n - 1));
        let payload = red_payload(prev.as_deref(), &opus_frame(n));
        let ts = 48_000 + u32::from(n) * 960;
        all.extend(route(
            r,
            PUB,
            &red(700 + n, ts, &payload),
            u64::from(n) * 20,
        ));
    }
    all
}

/// A frame lost on the way in is in the next RED packet: a subscriber that gets the primary alone
/// (no RED negotiated) is sent it from there, under the lost packet's number and timestamp, before
/// the next frame; the RED subscribers are not (their own decoder has the block), and the late
/// original is a duplicate.
#[test]
fn a_frame_lost_on_the_way_in_is_recovered_from_red_for_plain_subscribers() {
    let mut r = red_room();
    subscribe(&mut r);
    let out = send_frames(&mut r, &[0, 1, 2, 4, 5]); // frame 3 lost
    let plain = to(&out, SUB_T2);
    assert_eq!(plain.len(), 6, "frames 0-5, frame 3 recovered");
    let first_seq = plain[0].0;
    for (k, p) in plain.iter().enumerate() {
        assert_eq!(p.0, first_seq.wrapping_add(k as u16), "in order, no hole");
        assert_eq!(p.1.wrapping_sub(plain[0].1), k as u32 * 960);
        assert_eq!((p.3, &p.4), (SUB_OPUS_PT, &opus_frame(k as u16)));
    }
    assert_eq!(
        to(&out, SUB_T).len(),
        5,
        "a RED subscriber gets the RED packets only"
    );
    assert_eq!(to(&out, SUB_T3).len(), 5);
    assert_eq!(r.stats().red_recovered, 1);
    assert_eq!(r.track_stats(RED_TRACK).unwrap().red_recovered, 1);
    // The original arriving late is not sent again.
    let late = red(703, 48_000 + 3 * 960, &red_payload(None, &opus_frame(3)));
    assert!(route(&mut r, PUB, &late, 120).is_empty());
    assert_eq!(r.stats().dropped(DropReason::Duplicate), 1);
}

/// Two frames lost and one redundant block: evenly spaced frames say the block is the second
/// of them, which is recovered; the first stays lost. Across a DTX gap (frames not evenly spaced)
/// and with fewer blocks than numbers missing, which number a block is would be a guess: nothing
/// is made up.
#[test]
fn a_gap_longer_than_the_redundancy_gets_the_frames_its_blocks_hold() {
    let mut r = red_room();
    subscribe(&mut r);
    let out = send_frames(&mut r, &[0, 1, 4, 5]); // frames 2 and 3 lost
    let plain = to(&out, SUB_T2);
    let frames: Vec<Vec<u8>> = plain.iter().map(|p| p.4.clone()).collect();
    let want: Vec<Vec<u8>> = [0, 1, 3, 4, 5].into_iter().map(opus_frame).collect();
    assert_eq!(frames, want);
    assert_eq!(
        plain[2].0,
        plain[0].0.wrapping_add(3),
        "frame 3 under its own number"
    );
    assert_eq!(plain[2].1, plain[0].1.wrapping_add(3 * 960));
    assert_eq!(r.stats().red_recovered, 1);

    // Frame 10 at 0, 11 lost, DTX, 12 (lost) 20 frames later, 13 the next frame: three numbers
    // apart, 21 frames of time, one block (frame 12) between.
    let mut r = red_room();
    subscribe(&mut r);
    let at = |n: u16, frame: u32, prev: Option<u16>| {
        let prev = prev.map(opus_frame);
        red(
            800 + n,
            frame * 960,
            &red_payload(prev.as_deref(), &opus_frame(n)),
        )
    };
    let mut got = route(&mut r, PUB, &at(10, 0, None), 0);
    got.extend(route(&mut r, PUB, &at(13, 21, Some(12)), 420));
    assert_eq!(to(&got, SUB_T2).len(), 2);
    assert_eq!(r.stats().red_recovered, 0);
}

/// A RED payload with the given redundant blocks (timestamp offset, data) in the given order.
fn red_blocks(blocks: &[(u16, Vec<u8>)], primary: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    for (offset, data) in blocks {
        p.extend_from_slice(&[
            0x80 | OPUS_PT,
            (offset >> 6) as u8,
            ((offset & 0x3f) << 2) as u8 | (data.len() >> 8) as u8,
            data.len() as u8,
        ]);
    }
    p.push(OPUS_PT);
    for (_, data) in blocks {
        p.extend_from_slice(data);
    }
    p.extend_from_slice(primary);
    p
}

/// Frames as plain-Opus subscribers got them (payloads), in order.
fn plain_frames(out: &[(TransportId, Vec<u8>)]) -> Vec<Vec<u8>> {
    to(out, SUB_T2).into_iter().map(|p| p.4).collect()
}

/// Redundancy distance 2 (two blocks), two frames lost: both come back, each under its own
/// number, whatever order the blocks are written in.
#[test]
fn two_blocks_fill_two_lost_frames_in_timestamp_order() {
    let mut r = red_room();
    subscribe(&mut r);
    let mut out = send_frames(&mut r, &[0, 1]);
    // Frames 2 and 3 lost; frame 4 carries both, newest block first.
    let carrier = red_blocks(
        &[(960, opus_frame(3)), (1920, opus_frame(2))],
        &opus_frame(4),
    );
    out.extend(route(
        &mut r,
        PUB,
        &red(704, 48_000 + 4 * 960, &carrier),
        80,
    ));
    let frames: Vec<Vec<u8>> = (0..5).map(opus_frame).collect();
    assert_eq!(plain_frames(&out), frames);
    let plain = to(&out, SUB_T2);
    for (k, p) in plain.iter().enumerate() {
        assert_eq!(p.0, plain[0].0.wrapping_add(k as u16));
        assert_eq!(p.1, plain[0].1.wrapping_add(k as u32 * 960));
    }
    assert_eq!(r.stats().red_recovered, 2);
}

/// Two blocks (2 and 1 frames back) after a gap of 19 numbers that spans a DTX jump (38 frames of
/// time): evenly spaced, each number would be two frames, so the nearest block is not one number
/// back. Which numbers the blocks are is a guess: nothing is recovered.
#[test]
fn blocks_across_a_dtx_jump_are_not_guessed_at() {
    let mut r = red_room();
    subscribe(&mut r);
    let at = |n: u16, frame: u32, blocks: &[(u16, Vec<u8>)]| {
        red(900 + n, frame * 960, &red_blocks(blocks, &opus_frame(n)))
    };
    let mut got = route(&mut r, PUB, &at(0, 0, &[]), 0);
    let carrier = at(19, 38, &[(1920, opus_frame(17)), (960, opus_frame(18))]);
    got.extend(route(&mut r, PUB, &carrier, 760));
    assert_eq!(plain_frames(&got), [opus_frame(0), opus_frame(19)]);
    assert_eq!(r.stats().red_recovered, 0);
}

/// Everyone receives RED: their decoders recover the frame from the next packet themselves, so the
/// server makes up nothing, and a frame that was only late still goes out when it comes.
#[test]
fn with_only_red_subscribers_a_late_frame_is_still_forwarded() {
    let mut r = red_room();
    let with_red = [
        codec(SUB_OPUS_PT, "opus", 48_000, None),
        codec(SUB_RED_PT, "red", 48_000, None),
    ];
    r.add_subscription(SUB_RED, RED_TRACK, SUB_T, 0x5000_0001, &with_red, sub_ext())
        .unwrap();
    let mut out = send_frames(&mut r, &[0, 1, 3]);
    assert_eq!(r.stats().red_recovered, 0);
    let late = red_payload(Some(&opus_frame(1)), &opus_frame(2));
    out.extend(route(&mut r, PUB, &red(702, 48_000 + 2 * 960, &late), 70));
    assert_eq!(to(&out, SUB_T).len(), 4, "frame 2 forwarded when it came");
    assert_eq!(r.stats().dropped(DropReason::Duplicate), 0);
}
