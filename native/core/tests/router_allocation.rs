//! Per-subscriber allocation: transport-wide sequence numbers on everything sent to a subscriber,
//! its estimate (REMB, or transport-cc feedback) shared audio first, video paused when it does not
//! fit and resumed (at a keyframe, numbering continuous) after the estimate has recovered for a
//! while; transport-cc feedback to publishers.

mod common;

use common::*;
use mediasrv_core::output::Output;
use mediasrv_core::router::{DropReason, ExtensionIds, Router, RouterEvent};
use mediasrv_core::rtcp::{self, RtcpPacket};
use mediasrv_core::rtp::RtpView;
use mediasrv_core::twcc::{TwccFeedback, TwccPacket};

const SUB_V: SubscriptionId = SubscriptionId(100);
const SUB_AU: SubscriptionId = SubscriptionId(101);
const SSRC_V: u32 = 0x5000_0001;
const SSRC_AU: u32 = 0x5000_0002;
const TWCC_ID: u8 = 7;

fn twcc_ext() -> ExtensionIds {
    ExtensionIds {
        transport_cc: TWCC_ID,
        ..sub_ext()
    }
}

fn subscribe(r: &mut Router, transport: TransportId, ext: ExtensionIds, base: u64) {
    let (v, a) = (SubscriptionId(base), SubscriptionId(base + 1));
    r.add_subscription(
        v,
        VIDEO_TRACK,
        transport,
        SSRC_V + base as u32,
        &sub_codecs(),
        ext,
    )
    .unwrap();
    r.add_subscription(
        a,
        AUDIO_TRACK,
        transport,
        SSRC_AU + base as u32,
        &sub_codecs(),
        ext,
    )
    .unwrap();
}

fn send_remb(r: &mut Router, from: TransportId, ssrc: u32, bps: u64, now: u64) {
    let mut remb = Vec::new();
    rtcp::write_remb(&mut remb, ssrc, bps, &[ssrc]);
    rtcp(r, from, &remb, now);
}

fn video_events(r: &mut Router) -> Vec<(bool, TransportId)> {
    r.take_events()
        .into_iter()
        .filter_map(|e| match e {
            RouterEvent::VideoPaused { transport, .. } => Some((true, transport)),
            RouterEvent::VideoResumed { transport, .. } => Some((false, transport)),
            _ => None,
        })
        .collect()
}

fn to(out: &[(TransportId, Vec<u8>)], t: TransportId) -> Vec<Vec<u8>> {
    out.iter()
        .filter(|(x, _)| *x == t)
        .map(|(_, b)| b.clone())
        .collect()
}

fn plis_to_publisher(out: &[(TransportId, Vec<u8>)]) -> usize {
    to(out, PUB)
        .iter()
        .flat_map(|b| rtcp::parse_compound(b).collect::<Vec<_>>())
        .filter(|p| matches!(p, Ok(RtcpPacket::Pli { .. })))
        .count()
}

fn twcc_seq(b: &[u8]) -> u16 {
    let v = RtpView::parse(b).unwrap();
    let d = v
        .extension(TWCC_ID)
        .expect("transport-wide sequence number");
    u16::from_be_bytes([d[0], d[1]])
}

#[test]
fn a_poor_downlink_pauses_video_keeps_audio_and_resumes_at_a_keyframe() {
    let mut r = room();
    subscribe(&mut r, SUB_T, sub_ext(), 100);
    let first = route(&mut r, PUB, &vp8(0, 0, true, true), 0);
    let (seq0, ts0, ..) = fields(&to(&first, SUB_T)[0]);
    assert_eq!(to(&route(&mut r, PUB, &opus(0, 0), 0), SUB_T).len(), 1);
    send_remb(&mut r, SUB_T, SSRC_V + 100, 1_000_000, 10);
    poll(&mut r, 100);
    assert_eq!(video_events(&mut r), vec![]);
    assert_eq!(
        r.subscription_stats(SUB_V).unwrap().estimate_bps,
        Some(1_000_000)
    );

    // The link collapses to 120 kbit/s: less than the lowest usable video rate (150 kbit/s).
    send_remb(&mut r, SUB_T, SSRC_V + 100, 120_000, 200);
    poll(&mut r, 300);
    assert_eq!(video_events(&mut r), vec![(true, SUB_T)]);
    assert!(to(&route(&mut r, PUB, &vp8(1, 3000, true, false), 320), SUB_T).is_empty());
    assert_eq!(to(&route(&mut r, PUB, &opus(1, 960), 320), SUB_T).len(), 1);
    let st = r.subscription_stats(SUB_V).unwrap();
    assert!(st.paused);
    assert_eq!(st.dropped_paused, 1);
    assert!(!r.subscription_stats(SUB_AU).unwrap().paused);
    assert_eq!(r.stats().dropped(DropReason::VideoPaused), 1);
    assert!(r.downlink_stats(SUB_T).unwrap().video_paused);

    // Recovered: video resumes only after the estimate has held above 250 kbit/s for 2 s.
    send_remb(&mut r, SUB_T, SSRC_V + 100, 1_000_000, 1000);
    poll(&mut r, 1000);
    poll(&mut r, 2500);
    assert_eq!(video_events(&mut r), vec![]);
    // A dip below the resume threshold restarts the hold.
    send_remb(&mut r, SUB_T, SSRC_V + 100, 200_000, 2600);
    poll(&mut r, 2700);
    send_remb(&mut r, SUB_T, SSRC_V + 100, 1_000_000, 2800);
    poll(&mut r, 2900);
    poll(&mut r, 4800);
    assert_eq!(video_events(&mut r), vec![]);
    let out = poll(&mut r, 4900);
    assert_eq!(video_events(&mut r), vec![(false, SUB_T)]);
    assert_eq!(
        plis_to_publisher(&out),
        1,
        "a keyframe is asked for at once"
    );
    // The subscriber's decoder restarts at a keyframe, numbering continuous with before the pause.
    assert!(to(&route(&mut r, PUB, &vp8(2, 6000, true, false), 4910), SUB_T).is_empty());
    let key = route(&mut r, PUB, &vp8(3, 9000, true, true), 5000);
    let (seq, ts, ..) = fields(&to(&key, SUB_T)[0]);
    assert_eq!(seq, seq0.wrapping_add(1));
    assert_eq!(ts, ts0.wrapping_add(5000 * 90));
    assert!(!r.subscription_stats(SUB_V).unwrap().paused);
    assert_eq!(r.stats().video_pauses, 1);
    assert_eq!(r.stats().video_resumes, 1);
}

/// A link whose estimate keeps swinging across the thresholds (a probe lifts it, the resumed video
/// does not fit, it falls again): each pause within 10 s of a resume doubles the next resume's
/// hold (2, 4, 8, 16 s at most), unless the link is back well clear of the threshold; a pause long
/// after the last resume starts again at 2 s.
#[test]
fn video_that_keeps_pausing_after_it_resumes_waits_longer_each_time() {
    let mut r = room();
    subscribe(&mut r, SUB_T, sub_ext(), 100);
    route(&mut r, PUB, &vp8(0, 0, true, true), 0);
    send_remb(&mut r, SUB_T, SSRC_V + 100, 1_000_000, 10);
    poll(&mut r, 100);
    let mut now = 0;
    let mut holds = Vec::new();
    for _ in 0..6 {
        let (hold, resumed) = pause_and_recover(&mut r, now, 300_000);
        holds.push(hold);
        now = resumed + 1_000; // paused again a second after it resumed
    }
    assert_eq!(holds, [2_000, 4_000, 8_000, 16_000, 16_000, 16_000]);
    // The link comes back for real (twice the resume threshold and more): the configured hold.
    let (hold, resumed) = pause_and_recover(&mut r, now, 1_000_000);
    assert_eq!(hold, 2_000);
    // A pause long after the last resume: the configured hold again, whatever the share.
    let (hold, _) = pause_and_recover(&mut r, resumed + FLAP_WINDOW_MS, 300_000);
    assert_eq!(hold, 2_000);
}

/// Pauses the video (a REMB of 120 kbit/s just after `now`), then recovers to `bps` a second
/// after `now`; returns how long the recovery had to hold before video resumed, and when it did.
fn pause_and_recover(r: &mut Router, now: u64, bps: u64) -> (u64, u64) {
    send_remb(r, SUB_T, SSRC_V + 100, 120_000, now + 200);
    poll(r, now + 300);
    assert_eq!(video_events(r), vec![(true, SUB_T)]);
    let up = now + 1_000;
    send_remb(r, SUB_T, SSRC_V + 100, bps, up);
    poll(r, up);
    let mut t = up;
    loop {
        t += 100;
        poll(r, t);
        if video_events(r) == vec![(false, SUB_T)] {
            return (t - up, t);
        }
        assert!(t < up + 30_000, "video never resumed");
    }
}

/// As in `downlink.rs`: pauses within this long of a resume count as the resume not fitting.
const FLAP_WINDOW_MS: u64 = 10_000;

#[test]
fn transport_wide_numbers_are_contiguous_across_audio_video_and_resends_per_subscriber() {
    let mut r = room();
    subscribe(&mut r, SUB_T, twcc_ext(), 100);
    subscribe(&mut r, SUB_T2, twcc_ext(), 200);
    let mut seqs = Vec::new();
    let mut seqs2 = Vec::new();
    let mut first_video = None;
    for (i, pkt) in [
        vp8(0, 0, true, true),
        opus(0, 0),
        vp8(1, 0, false, false),
        opus(1, 960),
    ]
    .iter()
    .enumerate()
    {
        let out = route(&mut r, PUB, pkt, i as u64 * 10);
        for b in to(&out, SUB_T) {
            if first_video.is_none() {
                first_video = Some(fields(&b).0);
            }
            seqs.push(twcc_seq(&b));
        }
        seqs2.extend(to(&out, SUB_T2).iter().map(|b| twcc_seq(b)));
    }
    // A NACK from the first subscriber: the resend takes its next number.
    let mut nack = Vec::new();
    rtcp::write_nack(&mut nack, 1, SSRC_V + 100, &[first_video.unwrap()]);
    let (resent, _) = rtcp(&mut r, SUB_T, &nack, 200);
    assert_eq!(resent.len(), 1);
    seqs.push(twcc_seq(&resent[0].1));
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(
        seqs2,
        vec![1, 2, 3, 4],
        "each subscriber transport has its own counter"
    );
    // Without transport-cc nothing is stamped.
    let mut plain = room();
    subscribe(&mut plain, SUB_T, sub_ext(), 100);
    let out = route(&mut plain, PUB, &vp8(0, 0, true, true), 0);
    assert_eq!(RtpView::parse(&out[0].1).unwrap().extension(TWCC_ID), None);
}

#[test]
fn publishers_that_negotiated_transport_cc_get_feedback() {
    let mut r = room();
    subscribe(&mut r, SUB_T, sub_ext(), 100);
    let tcc = pub_ext().transport_cc;
    for i in 0..10u16 {
        let p = Pkt::new(OPUS_PT, i, i as u32 * 960, AUDIO_SSRC, &[1, 2, 3])
            .ext(tcc, &(500 + i).to_be_bytes())
            .bytes();
        route(&mut r, PUB, &p, i as u64 * 20);
    }
    let out = poll(&mut r, 200);
    let fbs: Vec<TwccFeedback> = to(&out, PUB)
        .iter()
        .flat_map(|b| TwccFeedback::parse_compound(b).collect::<Vec<_>>())
        .map(Result::unwrap)
        .collect();
    assert_eq!(fbs.len(), 1);
    assert_eq!(fbs[0].base_seq, 500);
    assert_eq!(fbs[0].packets.len(), 10);
    assert!(fbs[0].packets.iter().all(|p| p.arrival_us.is_some()));
    let d =
        |i: usize| fbs[0].packets[i].arrival_us.unwrap() - fbs[0].packets[0].arrival_us.unwrap();
    assert_eq!(d(9), 180_000, "arrival times as the router saw them");
    assert_eq!(r.stats().twcc_out, 1);
}

/// A bottleneck between the router and one subscriber: a FIFO of `cap_bps` that drops what would
/// wait more than `max_queue_us`, plus 20 ms of propagation.
struct Link {
    cap_bps: u64,
    free_at_us: u64,
    max_queue_us: u64,
    /// (transport-wide seq, send time, arrival) of everything sent, in order.
    sent: Vec<(u16, u64, Option<u64>)>,
    reported: usize,
    bytes: u64,
}

impl Link {
    /// An idle link of `cap_bps` with a 250 ms queue.
    fn new(cap_bps: u64) -> Self {
        Self {
            cap_bps,
            free_at_us: 0,
            max_queue_us: 250_000,
            sent: Vec::new(),
            reported: 0,
            bytes: 0,
        }
    }

    fn send(&mut self, seq: u16, size: usize, now_us: u64) {
        self.bytes += size as u64;
        let start = self.free_at_us.max(now_us);
        let arrival = if start - now_us > self.max_queue_us {
            None
        } else {
            self.free_at_us = start + size as u64 * 8_000_000 / self.cap_bps;
            Some(self.free_at_us + 20_000)
        };
        self.sent.push((seq, now_us, arrival));
    }

    /// Feedback for what has arrived by `now_us` (losses before the newest arrival included).
    fn feedback(&mut self, now_us: u64) -> Option<Vec<u8>> {
        let mut end = self.reported;
        for (i, (_, _, a)) in self.sent.iter().enumerate().skip(self.reported) {
            match a {
                Some(a) if *a <= now_us => end = i + 1,
                Some(_) => break,
                None => {}
            }
        }
        if end == self.reported {
            return None;
        }
        let slice = &self.sent[self.reported..end];
        let first = slice.iter().find_map(|p| p.2)?;
        let fb = TwccFeedback {
            sender_ssrc: 1,
            media_ssrc: SSRC_V,
            base_seq: slice[0].0,
            reference_time: (first / 64_000) as u32,
            fb_count: self.reported as u8,
            packets: slice
                .iter()
                .map(|(seq, _, a)| TwccPacket {
                    seq: *seq,
                    arrival_us: a.map(|a| a as i64),
                })
                .collect(),
        };
        self.reported = end;
        let mut b = Vec::new();
        fb.write(&mut b).unwrap();
        Some(b)
    }
}

#[test]
fn transport_cc_feedback_drives_the_estimate_pause_and_resume() {
    let mut r = room();
    subscribe(&mut r, SUB_T, twcc_ext(), 100);
    let mut link = Link::new(3_000_000);
    let (mut vseq, mut aseq) = (0u16, 0u16);
    let mut events = Vec::new();
    let mut into_link_while_limited = 0u64;
    let mut last_video_seq: Option<u16> = None;
    // Holes in the sequence: video the pacer dropped while draining the step down, no other.
    let mut holes = 0u64;
    for ms in 0..40_000u64 {
        let now_us = ms * 1000;
        // ~800 kbit/s of video (a keyframe every 2 s) and 50 packets/s of audio.
        if ms % 10 == 0 {
            let key = ms % 2000 == 0;
            let mut payload = vp8_payload(true, key, vseq as u8);
            payload.resize(1000, 0);
            let p = Pkt::new(VP8_PT, vseq, (ms * 90) as u32, VIDEO_SSRC, &payload).bytes();
            vseq = vseq.wrapping_add(1);
            for b in to(&route(&mut r, PUB, &p, ms), SUB_T) {
                // One continuous sequence across the pause (media, probe padding, media again).
                let seq = fields(&b).0;
                if let Some(last) = last_video_seq {
                    holes += seq.wrapping_sub(last.wrapping_add(1)) as u64;
                }
                last_video_seq = Some(seq);
                link.send(twcc_seq(&b), b.len(), now_us);
            }
        }
        if ms % 20 == 0 {
            for b in to(
                &route(&mut r, PUB, &opus(aseq, (ms * 48) as u32), ms),
                SUB_T,
            ) {
                link.send(twcc_seq(&b), b.len(), now_us);
            }
            aseq = aseq.wrapping_add(1);
        }
        if ms % 20 == 5 {
            poll(&mut r, ms);
            let mut out = Output::new();
            r.probe(ms, &mut out);
            for (_, b) in out.iter() {
                // Padding continues the paused stream's numbering.
                let (seq, ..) = fields(b);
                if let Some(last) = last_video_seq {
                    holes += seq.wrapping_sub(last.wrapping_add(1)) as u64;
                }
                last_video_seq = Some(seq);
                link.send(twcc_seq(b), b.len(), now_us);
            }
            events.extend(video_events(&mut r).into_iter().map(|e| (ms, e.0)));
        }
        if ms % 50 == 0 {
            if let Some(fb) = link.feedback(now_us) {
                rtcp(&mut r, SUB_T, &fb, ms);
            }
        }
        // 10-30 s: the link drops to 150 kbit/s.
        if ms == 10_000 {
            link.cap_bps = 150_000;
        }
        if ms == 12_000 {
            into_link_while_limited = link.bytes;
        }
        if ms == 30_000 {
            into_link_while_limited = (link.bytes - into_link_while_limited) * 8 / 18;
            link.cap_bps = 3_000_000;
        }
    }
    let est = r.subscription_stats(SUB_V).unwrap().estimate_bps;
    println!("events {events:?}, limited {into_link_while_limited} bit/s, estimate {est:?}");
    let paused_at = events.iter().find(|e| e.1).expect("video paused").0;
    assert!((10_000..30_000).contains(&paused_at), "{events:?}");
    let resumed_at = events
        .iter()
        .find(|e| !e.1 && e.0 > paused_at)
        .expect("video resumed")
        .0;
    // Back within a few seconds of simulated time once the link clears (probes find the room,
    // then the 2 s hold).
    assert!((30_000..36_000).contains(&resumed_at), "{events:?}");
    // Little more than the link rate went into it once the estimate had followed it down.
    assert!(
        into_link_while_limited < 150_000 * 13 / 10,
        "{into_link_while_limited}"
    );
    assert!(r.downlink_stats(SUB_T).unwrap().padding_packets > 0);
    assert_eq!(holes, r.downlink_stats(SUB_T).unwrap().paced_dropped);
}

/// Runs 8 s of ~800 kbit/s video and audio into a 3 Mbit/s link toward a transport-cc subscriber
/// whose estimate starts at 300 kbit/s; with `rtx` its video subscription has an RTX stream for
/// probes. Returns the final estimate and the RTX packets seen (all padding-only on `RTX_SUB`).
fn good_link_estimate(rtx: bool) -> (u64, usize) {
    const RTX_SUB: u32 = 0x6000_0001;
    let mut r = room_with(mediasrv_core::router::RouterConfig {
        bwe_start_bps: 300_000,
        ..Default::default()
    });
    subscribe(&mut r, SUB_T, twcc_ext(), 100);
    if rtx {
        assert!(r
            .set_subscription_rtx(SubscriptionId(100), RTX_SUB)
            .unwrap());
    }
    let mut link = Link::new(3_000_000);
    let (mut vseq, mut aseq) = (0u16, 0u16);
    let mut last_video_seq: Option<u16> = None;
    let mut last_rtx_seq: Option<u16> = None;
    let mut rtx_packets = 0;
    for ms in 0..8_000u64 {
        let now_us = ms * 1000;
        let mut sent: Vec<Vec<u8>> = Vec::new();
        if ms % 10 == 0 {
            let mut payload = vp8_payload(true, ms % 2000 == 0, vseq as u8);
            payload.resize(1000, 0);
            let p = Pkt::new(VP8_PT, vseq, (ms * 90) as u32, VIDEO_SSRC, &payload).bytes();
            vseq = vseq.wrapping_add(1);
            sent.extend(to(&route(&mut r, PUB, &p, ms), SUB_T));
        }
        if ms % 20 == 0 {
            sent.extend(to(
                &route(&mut r, PUB, &opus(aseq, (ms * 48) as u32), ms),
                SUB_T,
            ));
            aseq = aseq.wrapping_add(1);
        }
        if ms % 20 == 5 {
            poll(&mut r, ms);
            let mut out = Output::new();
            r.probe(ms, &mut out);
            sent.extend(out.iter().map(|(_, b)| b.to_vec()));
        }
        for b in sent {
            let v = RtpView::parse(&b).unwrap();
            if v.ssrc == RTX_SUB {
                // Padding only, RTX payload type, numbered on its own.
                assert_eq!(v.payload_type, 121);
                assert!(v.payload().is_empty() && v.padding_len() > 0);
                if let Some(last) = last_rtx_seq {
                    assert_eq!(v.seq, last.wrapping_add(1));
                }
                last_rtx_seq = Some(v.seq);
                rtx_packets += 1;
            } else if v.ssrc == SSRC_V + 100 {
                // The media's numbering is untouched by the probes.
                if let Some(last) = last_video_seq {
                    assert_eq!(v.seq, last.wrapping_add(1), "at {ms} ms");
                }
                last_video_seq = Some(v.seq);
            }
            link.send(twcc_seq(&b), b.len(), now_us);
        }
        if ms % 50 == 0 {
            if let Some(fb) = link.feedback(now_us) {
                rtcp(&mut r, SUB_T, &fb, ms);
            }
        }
    }
    let est = r
        .subscription_stats(SubscriptionId(100))
        .unwrap()
        .estimate_bps
        .unwrap();
    (est, rtx_packets)
}

#[test]
fn probes_on_the_rtx_stream_find_a_good_links_capacity_while_video_flows() {
    let (without, none) = good_link_estimate(false);
    let (with, rtx_packets) = good_link_estimate(true);
    println!("estimate after 8 s on a 3 Mbit/s link: {without} bit/s without RTX probes, {with} with ({rtx_packets} padding packets)");
    assert_eq!(none, 0);
    assert!(rtx_packets > 0);
    // Probing finds the room the media alone (~850 kbit/s) never shows the estimator.
    assert!(with > 2_000_000, "{with}");
    assert!(with > without * 3 / 2, "{with} vs {without}");
}

/// 20 s of ~120 kbit/s video with a 14 kB keyframe every 2 s, and 50 packets/s of audio, into a
/// 300 kbit/s link with a 250 ms queue toward a transport-cc subscriber. Returns the audio's mean
/// and worst time in the link's queue over the last 10 s (ms), and the video packets the pacer
/// dropped.
fn audio_delay_behind_keyframes(pacing: bool) -> (f64, u64, u64) {
    let mut r = room_with(mediasrv_core::router::RouterConfig {
        bwe_start_bps: 300_000,
        pacing,
        ..Default::default()
    });
    subscribe(&mut r, SUB_T, twcc_ext(), 100);
    let mut link = Link::new(300_000);
    let (mut vseq, mut aseq) = (0u16, 0u16);
    let mut audio_seqs = std::collections::HashSet::new();
    for ms in 0..20_000u64 {
        let now_us = ms * 1000;
        let mut sent: Vec<Vec<u8>> = Vec::new();
        if ms % 2000 == 0 {
            for i in 0..12 {
                let mut payload = vp8_payload(i == 0, true, vseq as u8);
                payload.resize(1200, 0);
                let p = Pkt::new(VP8_PT, vseq, (ms * 90) as u32, VIDEO_SSRC, &payload).bytes();
                vseq = vseq.wrapping_add(1);
                sent.extend(to(&route(&mut r, PUB, &p, ms), SUB_T));
            }
        } else if ms % 10 == 0 {
            let mut payload = vp8_payload(true, false, vseq as u8);
            payload.resize(150, 0);
            let p = Pkt::new(VP8_PT, vseq, (ms * 90) as u32, VIDEO_SSRC, &payload).bytes();
            vseq = vseq.wrapping_add(1);
            sent.extend(to(&route(&mut r, PUB, &p, ms), SUB_T));
        }
        if ms % 20 == 0 {
            for b in to(
                &route(&mut r, PUB, &opus(aseq, (ms * 48) as u32), ms),
                SUB_T,
            ) {
                if ms >= 10_000 {
                    audio_seqs.insert(twcc_seq(&b));
                }
                sent.push(b);
            }
            aseq = aseq.wrapping_add(1);
        }
        if ms % 20 == 5 {
            poll(&mut r, ms);
            let mut out = Output::new();
            r.probe(ms, &mut out);
            sent.extend(out.iter().map(|(_, b)| b.to_vec()));
        }
        for b in sent {
            link.send(twcc_seq(&b), b.len(), now_us);
        }
        if ms % 50 == 0 {
            if let Some(fb) = link.feedback(now_us) {
                rtcp(&mut r, SUB_T, &fb, ms);
            }
        }
    }
    let delays: Vec<u64> = link
        .sent
        .iter()
        .filter(|(seq, _, _)| audio_seqs.contains(seq))
        .filter_map(|(_, sent, arrived)| arrived.map(|a| (a - sent - 20_000) / 1000))
        .collect();
    let mean = delays.iter().sum::<u64>() as f64 / delays.len().max(1) as f64;
    let worst = delays.iter().copied().max().unwrap_or(0);
    let dropped = r.downlink_stats(SUB_T).unwrap().paced_dropped;
    (mean, worst, dropped)
}

#[test]
fn pacing_keeps_keyframes_from_queueing_the_audio_on_a_limited_link() {
    let (mean_off, worst_off, _) = audio_delay_behind_keyframes(false);
    let (mean_on, worst_on, dropped) = audio_delay_behind_keyframes(true);
    println!(
        "audio in the link's queue: {mean_off:.0} ms mean, {worst_off} ms worst unpaced; \
         {mean_on:.0} / {worst_on} ms paced ({dropped} video packets dropped by the pacer)"
    );
    assert!(worst_on * 2 < worst_off, "{worst_on} vs {worst_off}");
    assert!(mean_on < mean_off, "{mean_on} vs {mean_off}");
}
