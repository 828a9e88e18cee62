//! A simulcast track through the router: three VP8 layers on SSRCs learned from the RID header
//! extension, one subscriber whose layer follows its resolution cap and its REMB, with keyframe
//! requests for the layer it waits for answered by the simulated publisher; losses on the way in
//! NACKed per layer and repaired from the layers' RTX streams; H.264 layer heights from the SPS.

mod common;

use common::*;
use mediasrv_core::output::Output;
use mediasrv_core::router::{Codec, DropReason, MediaKind, Router, RouterConfig, NACK_TRIES};
use mediasrv_core::rtcp;
use mediasrv_core::rtp::RtpView;
use mediasrv_core::vp8;

const RID_EXT: u8 = 10;
const RRID_EXT: u8 = 11;
const SSRCS: [u32; 3] = [0x1000, 0x2000, 0x3000];
const RTX_SSRCS: [u32; 3] = [0x1100, 0x2100, 0x3100];
const RIDS: [&str; 3] = ["q", "h", "f"];
const SIZES: [(u16, u16); 3] = [(320, 180), (640, 360), (1280, 720)];
const FILL: [usize; 3] = [100, 300, 900]; // bytes per packet: about 50, 150 and 430 kbit/s
const SUB: SubscriptionId = SubscriptionId(1);
const SUB_SSRC: u32 = 0x5000;
const SUB2: SubscriptionId = SubscriptionId(2);
const SUB2_SSRC: u32 = 0x6000;

/// A router with the publisher and its video track (`codecs`, SSRCs from SDP), not yet layered.
fn publishing(cfg: RouterConfig, seed: u64, codecs: Vec<Codec>, ssrcs: &[u32]) -> Router {
    let mut r = Router::new(cfg, seed);
    r.add_publisher(PUB, PUB_RTCP_SSRC, pub_ext());
    r.add_track(
        VIDEO_TRACK,
        PUB,
        MediaKind::Video,
        Some("1".into()),
        codecs,
        ssrcs,
    )
    .unwrap();
    r
}

struct Layer {
    seq: u16,
    ts: u32,
    pid: u16,
    key_due: bool,
}

fn frame(l: usize, st: &mut Layer) -> Vec<Vec<u8>> {
    frame_of(l, st, 2)
}

/// One frame of layer `l` in `packets` packets (at least 2).
fn frame_of(l: usize, st: &mut Layer, packets: usize) -> Vec<Vec<u8>> {
    let key = std::mem::take(&mut st.key_due);
    let mut first = vec![0x90, 0x80, 0x80 | (st.pid >> 8) as u8, st.pid as u8];
    if key {
        let (w, h) = SIZES[l];
        first.extend_from_slice(&[0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
        first.extend_from_slice(&w.to_le_bytes());
        first.extend_from_slice(&h.to_le_bytes());
    } else {
        first.push(0x01);
    }
    let mut out = Vec::new();
    let rest = vec![0x80, 0x80, 0x80 | (st.pid >> 8) as u8, st.pid as u8, 0];
    let payloads = std::iter::once(first).chain(std::iter::repeat_n(rest, packets.max(2) - 1));
    for (i, mut payload) in payloads.enumerate() {
        payload.extend(std::iter::repeat_n(l as u8, FILL[l]));
        let mut p = Pkt::new(VP8_PT, st.seq, st.ts, SSRCS[l], &payload)
            .ext(1, b"1")
            .ext(RID_EXT, RIDS[l].as_bytes());
        p.marker = i == packets.max(2) - 1;
        out.push(p.bytes());
        st.seq = st.seq.wrapping_add(1);
    }
    st.ts = st.ts.wrapping_add(2970);
    st.pid = (st.pid + 1) & 0x7fff;
    out
}

/// What the subscriber received: (layer, seq, ts, picture id, first packet of a keyframe).
type Got = (u8, u16, u32, u16, bool);

struct Sim {
    r: Router,
    layers: [Layer; 3],
    now: u64,
    got: Vec<Got>,
    plis: Vec<u32>,
    /// Sender reports the subscriber got: (NTP, RTP timestamp).
    srs: Vec<(u64, u32)>,
    /// What a second subscriber (`SUB2`, on `SUB_T2`) received, if there is one.
    got2: Vec<Got>,
    /// NACKs to the publisher: (media SSRC, sequence numbers).
    nacks: Vec<(u32, Vec<u16>)>,
    /// Packets to lose on the way in, (layer, seq), and those lost so far.
    lose: Vec<(usize, u16)>,
    lost: Vec<(usize, Vec<u8>)>,
    /// Report blocks of the receiver reports to the publisher.
    rrs: Vec<rtcp::ReportBlock>,
    /// A layer the publisher restarted under another SSRC: its packets carry this one.
    renamed: [Option<u32>; 3],
}

impl Sim {
    fn new() -> Self {
        // Pausing (the allocation's floor) well below the lowest layer, so layers are what moves.
        let cfg = RouterConfig {
            video_pause_bps: 35_000,
            video_resume_bps: 45_000,
            video_resume_hold_ms: 300,
            sender_reports: true,
            ..RouterConfig::default()
        };
        let mut r = publishing(cfg, 7, pub_video_codecs(), &[]);
        r.set_track_layers(VIDEO_TRACK, RID_EXT, &RIDS, &[])
            .unwrap();
        r.set_track_layer_rtx(VIDEO_TRACK, RRID_EXT, &[]).unwrap();
        r.add_subscription(SUB, VIDEO_TRACK, SUB_T, SUB_SSRC, &sub_codecs(), sub_ext())
            .unwrap();
        Self::with_router(r)
    }

    fn with_router(r: Router) -> Self {
        let layers = [
            Layer {
                seq: 100,
                ts: 1000,
                pid: 10,
                key_due: true,
            },
            Layer {
                seq: 65_500,
                ts: 2_000_000,
                pid: 20_000,
                key_due: true,
            },
            Layer {
                seq: 30_000,
                ts: 4_000_000_000,
                pid: 32_700,
                key_due: true,
            },
        ];
        Self {
            r,
            layers,
            now: 0,
            got: Vec::new(),
            plis: Vec::new(),
            srs: Vec::new(),
            got2: Vec::new(),
            nacks: Vec::new(),
            lose: Vec::new(),
            lost: Vec::new(),
            rrs: Vec::new(),
            renamed: [None; 3],
        }
    }

    /// Sends `packets` from the publisher and sorts what comes out: media to the subscribers,
    /// their sender reports, PLIs and NACKs to the publisher (a PLI makes the layer it names send
    /// a keyframe next).
    fn take(&mut self, out: &Output) {
        for (t, b) in out.iter() {
            if (t == SUB_T || t == SUB_T2) && (200..=207).contains(&b[1]) {
                for p in rtcp::parse_compound(b) {
                    if let Ok(rtcp::RtcpPacket::SenderReport {
                        ssrc,
                        ntp,
                        rtp_timestamp,
                        ..
                    }) = p
                    {
                        if t == SUB_T {
                            assert_eq!(ssrc, SUB_SSRC);
                            self.srs.push((ntp, rtp_timestamp));
                        }
                    }
                }
            } else if t == SUB_T || t == SUB_T2 {
                let v = RtpView::parse(b).unwrap();
                assert_eq!(v.ssrc, if t == SUB_T { SUB_SSRC } else { SUB2_SSRC });
                let d = vp8::parse(v.payload()).unwrap();
                let layer = *v.payload().last().unwrap();
                let g = (
                    layer,
                    v.seq,
                    v.timestamp,
                    d.picture_id.unwrap().value,
                    d.keyframe,
                );
                if t == SUB_T {
                    self.got.push(g);
                } else {
                    self.got2.push(g);
                }
            } else if t == PUB {
                for p in rtcp::parse_compound(b).flatten() {
                    match p {
                        rtcp::RtcpPacket::Pli { media_ssrc, .. } => {
                            self.plis.push(media_ssrc);
                            let renamed = self.renamed.iter().position(|s| *s == Some(media_ssrc));
                            if let Some(l) = SSRCS.iter().position(|s| *s == media_ssrc).or(renamed)
                            {
                                self.layers[l].key_due = true;
                            }
                        }
                        rtcp::RtcpPacket::Nack {
                            media_ssrc, items, ..
                        } => self.nacks.push((media_ssrc, items.seqs().collect())),
                        rtcp::RtcpPacket::ReceiverReport { reports, .. } => {
                            self.rrs.extend(reports.iter())
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// The RTX packet repairing `original` of layer `l` (RFC 4588: the original sequence number,
    /// then its payload), naming the layer in the repaired-RID extension.
    fn rtx(l: usize, original: &[u8], rtx_seq: u16) -> Vec<u8> {
        Self::rtx_pkt(l, original, rtx_seq)
            .ext(1, b"1")
            .ext(RRID_EXT, RIDS[l].as_bytes())
            .bytes()
    }

    /// The same without header extensions (the RTX SSRC alone says which layer it repairs).
    fn rtx_pkt(l: usize, original: &[u8], rtx_seq: u16) -> Pkt {
        let v = RtpView::parse(original).unwrap();
        let mut payload = v.seq.to_be_bytes().to_vec();
        payload.extend_from_slice(v.payload());
        let mut p = Pkt::new(RTX_PT, rtx_seq, v.timestamp, RTX_SSRCS[l], &payload);
        p.marker = v.marker;
        p
    }

    /// Routes one packet from the publisher now, returning what went to the subscribers.
    fn send(&mut self, pkt: &[u8]) -> usize {
        let before = self.got.len() + self.got2.len();
        let mut out = Output::new();
        self.r.route_rtp(PUB, pkt, self.now, &mut out);
        self.take(&out);
        self.got.len() + self.got2.len() - before
    }

    /// One frame of every layer, then the router's periodic work; PLIs make the named layer send a
    /// keyframe next.
    fn tick(&mut self) {
        let mut out = Output::new();
        for l in 0..3 {
            for mut pkt in frame(l, &mut self.layers[l]) {
                if let Some(ssrc) = self.renamed[l] {
                    pkt[8..12].copy_from_slice(&ssrc.to_be_bytes());
                }
                let seq = RtpView::parse(&pkt).unwrap().seq;
                if let Some(i) = self.lose.iter().position(|x| *x == (l, seq)) {
                    self.lose.remove(i);
                    self.lost.push((l, pkt));
                    continue;
                }
                self.r.route_rtp(PUB, &pkt, self.now, &mut out);
            }
        }
        self.r.poll(self.now, &mut out);
        self.take(&out);
        self.now += 33;
    }

    fn run(&mut self, ticks: usize) -> Vec<u8> {
        let start = self.got.len();
        for _ in 0..ticks {
            self.tick();
        }
        self.got[start..].iter().map(|g| g.0).collect()
    }

    fn remb(&mut self, bps: u64) {
        let mut b = Vec::new();
        rtcp::write_remb(&mut b, 0xdead, bps, &[SUB_SSRC]);
        let mut out = Output::new();
        let mut rtp_out = Output::new();
        self.r
            .handle_rtcp(SUB_T, &b, self.now, &mut out, &mut rtp_out);
    }
}

fn last_layer(layers: &[u8]) -> u8 {
    *layers.last().expect("the subscriber receives video")
}

#[test]
fn subscriber_layer_follows_cap_and_estimate_with_one_continuous_stream() {
    let mut s = Sim::new();
    // Unconstrained: up to the top layer once all three are seen, at its keyframe.
    assert_eq!(last_layer(&s.run(30)), 2);
    assert!(s.plis.contains(&SSRCS[2]));
    assert_eq!(s.r.track_layers(VIDEO_TRACK).unwrap()[2].height, Some(720));
    // A 360p tile: layer 1; the top layer is then not forwarded at all.
    s.r.set_subscription_max_height(SUB, Some(360)).unwrap();
    let capped = s.run(30);
    assert_eq!(last_layer(&capped), 1);
    let after_switch = capped.iter().position(|l| *l == 1).unwrap();
    assert!(capped[after_switch..].iter().all(|l| *l == 1));
    // Cap lifted, then a subscriber REMB of 200 kbit/s: layer 1 (150 kbit/s) fits, layer 2 not.
    s.r.set_subscription_max_height(SUB, None).unwrap();
    assert_eq!(last_layer(&s.run(30)), 2);
    s.remb(200_000);
    assert_eq!(last_layer(&s.run(30)), 1);
    s.remb(40_000);
    assert_eq!(last_layer(&s.run(30)), 0);
    let st = s.r.subscription_layers(SUB).unwrap();
    assert_eq!(st.current.map(|c| c.0), Some(0));
    assert_eq!(st.spatial_switches, 5, "{st:?}");
    // Below the allocation's floor the video pauses; with room again it restarts at a keyframe of
    // the top layer and the numbering simply continues.
    s.remb(10_000);
    s.run(10);
    assert!(s.r.subscription_stats(SUB).unwrap().paused);
    assert!(s.run(10).is_empty());
    s.remb(5_000_000);
    assert_eq!(last_layer(&s.run(40)), 2);
    assert!(!s.r.subscription_stats(SUB).unwrap().paused);

    // One stream: sequence numbers +1 per packet, picture IDs +1 per frame, timestamps rising, and
    // every change of layer starts with that layer's keyframe.
    for w in s.got.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert_eq!(b.1, a.1.wrapping_add(1), "{a:?} -> {b:?}");
        if b.2 == a.2 {
            assert_eq!(b.3, a.3);
        } else {
            assert_eq!(b.3, (a.3 + 1) & 0x7fff, "{a:?} -> {b:?}");
            assert!(b.2.wrapping_sub(a.2) < 0x8000_0000, "{a:?} -> {b:?}");
        }
        if a.0 != b.0 {
            assert!(b.4, "layer change without a keyframe: {a:?} -> {b:?}");
        }
    }
    assert!(s.got[0].4);
}

#[test]
fn nacked_packets_are_resent_as_they_were_sent() {
    let mut s = Sim::new();
    s.run(30); // on the top layer
    let mut sent = Output::new();
    for pkt in frame(2, &mut s.layers[2]) {
        s.r.route_rtp(PUB, &pkt, s.now, &mut sent);
    }
    let originals: Vec<Vec<u8>> = sent
        .iter()
        .filter(|(t, _)| *t == SUB_T)
        .map(|(_, b)| b.to_vec())
        .collect();
    assert_eq!(originals.len(), 2);
    let seqs: Vec<u16> = originals
        .iter()
        .map(|b| RtpView::parse(b).unwrap().seq)
        .collect();
    let mut nack = Vec::new();
    rtcp::write_nack(
        &mut nack,
        0xdead,
        SUB_SSRC,
        &[seqs[1], seqs[0], seqs[0].wrapping_sub(5000)],
    );
    let mut rtp_out = Output::new();
    let mut rtcp_out = Output::new();
    s.r.handle_rtcp(SUB_T, &nack, s.now + 5, &mut rtp_out, &mut rtcp_out);
    let resent: Vec<Vec<u8>> = rtp_out.iter().map(|(_, b)| b.to_vec()).collect();
    assert_eq!(
        resent.len(),
        2,
        "the two cached packets; the old one is a miss"
    );
    for r in &resent {
        let v = RtpView::parse(r).unwrap();
        let orig = originals
            .iter()
            .map(|b| RtpView::parse(b).unwrap())
            .find(|o| o.seq == v.seq)
            .unwrap();
        assert_eq!(
            (v.ssrc, v.timestamp, v.payload()),
            (orig.ssrc, orig.timestamp, orig.payload())
        );
    }
    let st = s.r.subscription_stats(SUB).unwrap();
    assert_eq!((st.retransmissions, st.nack_misses), (2, 1));
    // Asked again within the round trip: not resent twice.
    let mut again = Output::new();
    s.r.handle_rtcp(SUB_T, &nack, s.now + 10, &mut again, &mut rtcp_out);
    assert_eq!(again.iter().count(), 0);
}

/// A layer's retransmission ring holds `nack_history_ms` (500 ms) of its media, not a fixed
/// count: layers at two packets a frame keep their first 128 slots (4 s of media here); the top
/// layer sending 30 packets a frame grows its ring until it holds its half-second, and a NACK for
/// 0.4 s back is answered.
#[test]
fn each_layers_ring_holds_its_history_in_media_time() {
    let mut s = Sim::new();
    s.run(300); // 10 s, the subscriber on the top layer
    let slots = |s: &Sim| -> Vec<usize> {
        let layers = s.r.track_layers(VIDEO_TRACK).unwrap();
        layers.iter().map(|l| l.cache_packets).collect()
    };
    assert_eq!(slots(&s), [128, 128, 128]);
    let start = s.got.len();
    for _ in 0..20 {
        for pkt in frame_of(2, &mut s.layers[2], 30) {
            s.send(&pkt);
            s.now += 1;
        }
    }
    assert_eq!(s.got.len() - start, 600, "all forwarded on the top layer");
    let top = slots(&s)[2];
    assert_eq!(
        top, 512,
        "600 packets in 0.63 s of media: grown to its most"
    );
    assert_eq!(&slots(&s)[..2], [128, 128], "the other layers did not grow");
    // 13 frames back (0.43 s of media, 390 packets): still cached.
    let asked = s.got[s.got.len() - 390].1;
    let mut nack = Vec::new();
    rtcp::write_nack(&mut nack, 0xdead, SUB_SSRC, &[asked]);
    let (mut rtp_out, mut rtcp_out) = (Output::new(), Output::new());
    s.r.handle_rtcp(SUB_T, &nack, s.now, &mut rtp_out, &mut rtcp_out);
    let resent: Vec<u16> = rtp_out
        .iter()
        .map(|(_, b)| RtpView::parse(b).unwrap().seq)
        .collect();
    assert_eq!(resent, [asked]);
}

#[test]
fn layers_from_an_ssrc_group_and_bad_layer_settings() {
    let mut r = Router::new(RouterConfig::default(), 1);
    r.add_publisher(PUB, PUB_RTCP_SSRC, pub_ext());
    r.add_track(
        VIDEO_TRACK,
        PUB,
        MediaKind::Video,
        None,
        pub_video_codecs(),
        &[],
    )
    .unwrap();
    assert!(r.set_track_layers(VIDEO_TRACK, RID_EXT, &[], &[]).is_err());
    assert!(r
        .set_track_layers(VIDEO_TRACK, RID_EXT, &["a", "b", "c", "d"], &[])
        .is_err());
    assert!(r.set_track_layers(VIDEO_TRACK, 0, &["a"], &[]).is_err());
    r.set_track_layers(VIDEO_TRACK, 0, &[], &SSRCS).unwrap();
    r.add_subscription(SUB, VIDEO_TRACK, SUB_T, SUB_SSRC, &sub_codecs(), sub_ext())
        .unwrap();
    // No RID extension needed: the SSRCs name the layers. A keyframe of the lowest layer starts the
    // subscriber (the only layer seen so far).
    let mut st = Layer {
        seq: 1,
        ts: 1,
        pid: 1,
        key_due: true,
    };
    let mut out = Output::new();
    for pkt in frame(0, &mut st) {
        let v = RtpView::parse(&pkt).unwrap();
        let bare = Pkt::new(VP8_PT, v.seq, v.timestamp, v.ssrc, v.payload()).bytes();
        r.route_rtp(PUB, &bare, 0, &mut out);
    }
    assert_eq!(out.iter().filter(|(t, _)| *t == SUB_T).count(), 2);
    assert_eq!(r.subscription_layers(SUB).unwrap().current, Some((0, 2)));
    // A single-layer track has no layers to report; a cap on it is accepted and changes nothing.
    assert_eq!(r.track_layers(TrackId(999)), None);
}

/// NTP seconds (32.32 fixed point) as f64.
fn ntp_s(ntp: u64) -> f64 {
    ntp as f64 / 4_294_967_296.0
}

#[test]
fn sender_reports_map_the_layer_each_subscriber_receives() {
    let mut s = Sim::new();
    assert_eq!(last_layer(&s.run(30)), 2);
    assert!(s.srs.is_empty(), "no report before the publisher's");
    // The publisher reports every layer at one wallclock instant: each layer's next frame (the
    // same captured frame on all three, under each layer's own timestamp base) is at NTP 1000 s.
    let ntp0: u64 = 1000 << 32;
    let check = |s: &mut Sim, layer: usize| {
        for (ssrc, st) in SSRCS.iter().zip(&s.layers) {
            let mut b = Vec::new();
            rtcp::write_sr(&mut b, *ssrc, ntp0, st.ts, 0, 0, &[]);
            let (mut out, mut rtp_out) = (Output::new(), Output::new());
            s.r.handle_rtcp(PUB, &b, s.now, &mut out, &mut rtp_out);
        }
        let first = s.got.len();
        s.srs.clear();
        s.run(200); // past the report interval
        let (ntp, rtp) = *s.srs.last().expect("a sender report to the subscriber");
        // The first frame the subscriber got after the publisher's reports is the one they put at
        // NTP 1000 s; the subscriber's report (in its own timestamp space) puts it there too.
        let (got_layer, _, ts, _, _) = s.got[first];
        assert_eq!(got_layer as usize, layer);
        let at = ntp_s(ntp) + (ts.wrapping_sub(rtp) as i32) as f64 / 90_000.0;
        assert!((at - 1000.0).abs() < 0.002, "layer {layer}: {at}");
    };
    check(&mut s, 2);
    // A 360p cap moves the subscriber to layer 1 (another timestamp base): its reports follow.
    s.r.set_subscription_max_height(SUB, Some(360)).unwrap();
    assert_eq!(last_layer(&s.run(30)), 1);
    check(&mut s, 1);
}

/// The newest report block on each layer's SSRC since `from`.
fn layer_blocks(rrs: &[rtcp::ReportBlock]) -> [Option<rtcp::ReportBlock>; 3] {
    SSRCS.map(|ssrc| rrs.iter().rev().find(|b| b.ssrc == ssrc).copied())
}

#[test]
fn receiver_reports_tell_the_publisher_each_layers_loss() {
    let mut s = Sim::new();
    assert_eq!(last_layer(&s.run(40)), 2);
    // Every layer is reported on its own SSRC, the ones nobody receives too (they arrive all
    // the same), up to its newest sequence number (layer 1 wrapped: one cycle up).
    let blocks = layer_blocks(&s.rrs).map(|b| b.expect("a block per layer"));
    assert!(blocks
        .iter()
        .all(|b| b.cumulative_lost == 0 && b.fraction_lost == 0));
    assert_eq!(blocks[1].extended_highest_seq >> 16, 1);
    assert!(s.rrs.iter().all(|b| SSRCS.contains(&b.ssrc)));
    // A sender report on layer 1 is echoed in that layer's block only.
    let ntp: u64 = (77 << 32) | (0x1234 << 16);
    let mut b = Vec::new();
    rtcp::write_sr(&mut b, SSRCS[1], ntp, s.layers[1].ts, 0, 0, &[]);
    let (mut out, mut rtp_out) = (Output::new(), Output::new());
    s.r.handle_rtcp(PUB, &b, s.now, &mut out, &mut rtp_out);
    // One packet lost on the way in on layer 0 (nobody receives it) and one on layer 2, which
    // its RTX stream repairs once NACKed: received after all.
    let lost0 = s.layers[0].seq.wrapping_add(1);
    let lost2 = s.layers[2].seq.wrapping_add(1);
    s.lose.extend([(0, lost0), (2, lost2)]);
    s.run(2);
    assert!(s
        .nacks
        .iter()
        .any(|(ssrc, q)| *ssrc == SSRCS[2] && q.contains(&lost2)));
    let (_, original) = s.lost.iter().find(|(l, _)| *l == 2).unwrap().clone();
    s.send(&Sim::rtx(2, &original, 900));
    s.rrs.clear();
    s.run(35);
    let blocks = layer_blocks(&s.rrs).map(|b| b.expect("a block per layer"));
    assert_eq!(blocks.map(|b| b.cumulative_lost), [1, 0, 0]);
    assert!(blocks[0].fraction_lost > 0);
    assert_eq!((blocks[1].fraction_lost, blocks[2].fraction_lost), (0, 0));
    assert_eq!(blocks[1].last_sr, (ntp >> 16) as u32);
    assert_eq!((blocks[0].last_sr, blocks[2].last_sr), (0, 0));
    // A loss on layer 2 never repaired; then RTX resending packets that did arrive (a probe, or
    // the repair again) and, late, the lost one after its NACKs were given up: none is counted.
    let lost2 = s.layers[2].seq.wrapping_add(1);
    s.lose.push((2, lost2));
    s.rrs.clear();
    s.run(35);
    let blocks = layer_blocks(&s.rrs).map(|b| b.expect("a block per layer"));
    assert_eq!(blocks.map(|b| b.cumulative_lost), [1, 0, 1]);
    assert!(blocks[2].fraction_lost > 0);
    let past_loss = (blocks[2].extended_highest_seq as u16).wrapping_sub(lost2);
    assert!((1..100).contains(&past_loss), "the block covers the loss");
    let (_, late) = s.lost.iter().rfind(|(l, _)| *l == 2).unwrap().clone();
    s.send(&Sim::rtx(2, &original, 901));
    s.send(&Sim::rtx(2, &late, 902));
    s.rrs.clear();
    s.run(35);
    let blocks = layer_blocks(&s.rrs).map(|b| b.expect("a block per layer"));
    assert_eq!(blocks.map(|b| b.cumulative_lost), [1, 0, 1]);
    // The track's and each layer's statistics say the same.
    assert_eq!(s.r.track_stats(VIDEO_TRACK).unwrap().lost, 2);
    let layers = s.r.track_layers(VIDEO_TRACK).unwrap();
    assert_eq!(
        layers.iter().map(|l| l.lost).collect::<Vec<_>>(),
        vec![1, 0, 1]
    );
}

/// The subscriber's packets in sequence-number order from `from` on: (seq, layer byte, ts).
fn by_seq(got: &[Got]) -> Vec<Got> {
    let mut v = got.to_vec();
    v.sort_by_key(|g| g.1.wrapping_sub(got[0].1));
    v
}

#[test]
fn a_loss_on_a_layer_is_nacked_on_its_ssrc_and_repaired_from_its_rtx() {
    let mut s = Sim::new();
    assert_eq!(last_layer(&s.run(30)), 2);
    s.nacks.clear();
    let first = s.got.len();
    // The second packet of layer 2's next frame is lost between the publisher and us.
    let lost_seq = s.layers[2].seq.wrapping_add(1);
    s.lose.push((2, lost_seq));
    s.run(2);
    assert_eq!(s.nacks, vec![(SSRCS[2], vec![lost_seq])]);
    // The subscriber's stream has a hole there: one number kept free.
    let got = by_seq(&s.got[first..]);
    let hole = got
        .windows(2)
        .position(|w| w[1].1 != w[0].1.wrapping_add(1));
    let hole = hole.expect("a hole where the lost packet goes");
    let (before, after) = (got[hole], got[hole + 1]);
    assert_eq!(after.1, before.1.wrapping_add(2));
    // The repair comes on the layer's RTX stream (SSRC learned from the repaired-RID extension)
    // and goes to the subscriber in the hole: its number, the frame's timestamp and picture ID.
    let (_, original) = s.lost.pop().unwrap();
    assert_eq!(s.send(&Sim::rtx(2, &original, 500)), 1);
    let repaired = *s.got.last().unwrap();
    assert_eq!(
        repaired,
        (2, before.1.wrapping_add(1), before.2, before.3, false)
    );
    let info = &s.r.track_layers(VIDEO_TRACK).unwrap()[2];
    assert_eq!((info.rtx_ssrc, info.repaired), (Some(RTX_SSRCS[2]), 1));
    // Repaired: not NACKed again. The same repair twice is a duplicate, not sent twice.
    s.run(4);
    assert_eq!(s.nacks, vec![(SSRCS[2], vec![lost_seq])]);
    let dups = s.r.track_stats(VIDEO_TRACK).unwrap().duplicates;
    assert_eq!(s.send(&Sim::rtx(2, &original, 501)), 0);
    assert_eq!(s.r.track_stats(VIDEO_TRACK).unwrap().duplicates, dups + 1);
    // The subscriber's own NACK of the repaired number is answered with the same packet.
    let mut nack = Vec::new();
    rtcp::write_nack(&mut nack, 0xdead, SUB_SSRC, &[repaired.1]);
    let (mut rtp_out, mut rtcp_out) = (Output::new(), Output::new());
    s.r.handle_rtcp(SUB_T, &nack, s.now, &mut rtp_out, &mut rtcp_out);
    let resent: Vec<_> = rtp_out.iter().map(|(_, b)| b.to_vec()).collect();
    assert_eq!(resent.len(), 1);
    let v = RtpView::parse(&resent[0]).unwrap();
    assert_eq!((v.seq, v.timestamp), (repaired.1, repaired.2));
    assert_eq!(
        vp8::parse(v.payload()).unwrap().picture_id.unwrap().value,
        repaired.3
    );

    // Padding on the layer's own SSRC takes a number: it is not taken for a loss.
    s.nacks.clear();
    let pad_seq = s.layers[2].seq;
    s.layers[2].seq = pad_seq.wrapping_add(1);
    let pad = Pkt::new(VP8_PT, pad_seq, s.layers[2].ts, SSRCS[2], &[])
        .ext(1, b"1")
        .ext(RID_EXT, b"f")
        .padding(100)
        .bytes();
    assert_eq!(s.send(&pad), 0);
    s.run(4);
    assert_eq!(s.nacks, vec![]);
    // A loss never repaired is asked for NACK_TRIES times, then given up on.
    let lost_seq = s.layers[2].seq;
    s.lose.push((2, lost_seq));
    s.run(12);
    let asked = s
        .nacks
        .iter()
        .filter(|(_, q)| q.contains(&lost_seq))
        .count();
    assert_eq!(asked, NACK_TRIES as usize);
    assert!(s.nacks.iter().all(|(ssrc, _)| *ssrc == SSRCS[2]));
    let st = s.r.track_stats(VIDEO_TRACK).unwrap();
    assert_eq!((st.nacks_out, st.nack_seqs_out), (4, 4));
}

#[test]
fn rtx_that_cannot_be_placed_is_dropped_and_counted() {
    let mut s = Sim::new();
    assert_eq!(last_layer(&s.run(30)), 2);
    // Losses on a layer nobody receives are not NACKed; its repairs go nowhere.
    let lost_seq = s.layers[0].seq;
    s.lose.push((0, lost_seq));
    s.run(4);
    assert!(
        s.nacks.iter().all(|(ssrc, _)| *ssrc != SSRCS[0]),
        "{:?}",
        s.nacks
    );
    let (_, original) = s.lost.pop().unwrap();
    assert_eq!(s.send(&Sim::rtx(0, &original, 1)), 0);
    assert_eq!(s.r.track_layers(VIDEO_TRACK).unwrap()[0].repaired, 0);

    let unwrap_failed = |s: &Sim| s.r.stats().dropped(DropReason::RtxUnwrapFailed);
    let before = unwrap_failed(&s);
    let top = s.layers[2].seq.wrapping_sub(1);
    let rtx = |payload: &[u8], rrid: &[u8], ssrc: u32| {
        Pkt::new(RTX_PT, 7, 1, ssrc, payload)
            .ext(1, b"1")
            .ext(RRID_EXT, rrid)
            .bytes()
    };
    // Too short to hold an original sequence number and payload.
    assert_eq!(s.send(&rtx(&[0x12], b"f", RTX_SSRCS[2])), 0);
    assert_eq!(s.send(&rtx(&top.to_be_bytes(), b"f", RTX_SSRCS[2])), 0);
    // A rid that is no layer's, on a new SSRC; no repaired-RID at all.
    assert_eq!(s.send(&rtx(&[0, 1, 2], b"x", 0x7777)), 0);
    let bare = Pkt::new(RTX_PT, 7, 1, 0x7778, &[0, 1, 2])
        .ext(1, b"1")
        .bytes();
    assert_eq!(s.send(&bare), 0);
    // An original sequence number beyond the newest the layer sent.
    let mut ahead = top.wrapping_add(100).to_be_bytes().to_vec();
    ahead.extend_from_slice(&[0x90, 0x80, 0x80, 1, 1, 2]);
    assert_eq!(s.send(&rtx(&ahead, b"f", RTX_SSRCS[2])), 0);
    assert_eq!(unwrap_failed(&s), before + 5);
    // Padding on the RTX stream (bandwidth probes) is padding, not a failed repair.
    let padding = Pkt::new(RTX_PT, 8, 1, RTX_SSRCS[2], &[])
        .ext(1, b"1")
        .padding(200)
        .bytes();
    assert_eq!(s.send(&padding), 0);
    // Probing resends the newest packet on the RTX stream: a duplicate, not a failed repair.
    let dups = s.r.stats().dropped(DropReason::Duplicate);
    let mut newest = top.to_be_bytes().to_vec();
    newest.extend_from_slice(&[0x80, 0x80, 0x80, 1, 2]);
    assert_eq!(s.send(&rtx(&newest, b"f", RTX_SSRCS[2])), 0);
    assert_eq!(s.r.stats().dropped(DropReason::Duplicate), dups + 1);
    assert_eq!(unwrap_failed(&s), before + 5);
    // The stream carries on, in one numbering.
    let first = s.got.len();
    s.run(5);
    let got = &s.got[first..];
    assert!(got.windows(2).all(|w| w[1].1 == w[0].1.wrapping_add(1)));
}

#[test]
fn two_subscribers_on_two_layers_each_get_their_layers_repair_in_their_numbering() {
    // Layers from a=ssrc-group:SIM, their RTX streams from the FID groups (no RTP stream ids).
    let all: Vec<u32> = SSRCS.iter().chain(&RTX_SSRCS).copied().collect();
    let mut r = publishing(RouterConfig::default(), 3, pub_video_codecs(), &all);
    r.set_track_layers(VIDEO_TRACK, 0, &[], &SSRCS).unwrap();
    assert!(r
        .set_track_layer_rtx(VIDEO_TRACK, 0, &[1, 2, 3, 4])
        .is_err());
    assert!(r.set_track_layer_rtx(VIDEO_TRACK, 0, &[SSRCS[1]]).is_err());
    assert!(r.set_track_layer_rtx(VIDEO_TRACK, 15, &[]).is_err());
    r.set_track_layer_rtx(VIDEO_TRACK, 0, &RTX_SSRCS).unwrap();
    r.add_subscription(SUB, VIDEO_TRACK, SUB_T, SUB_SSRC, &sub_codecs(), sub_ext())
        .unwrap();
    r.add_subscription(
        SUB2,
        VIDEO_TRACK,
        SUB_T2,
        SUB2_SSRC,
        &sub_codecs(),
        sub_ext(),
    )
    .unwrap();
    r.set_subscription_max_height(SUB2, Some(180)).unwrap();
    let mut s = Sim::with_router(r);
    s.run(30);
    assert_eq!(
        last_layer(&s.got.iter().map(|g| g.0).collect::<Vec<_>>()),
        2
    );
    assert_eq!(
        last_layer(&s.got2.iter().map(|g| g.0).collect::<Vec<_>>()),
        0
    );
    let (first, first2) = (s.got.len(), s.got2.len());
    let lost = [
        s.layers[0].seq.wrapping_add(1),
        s.layers[2].seq.wrapping_add(1),
    ];
    s.lose.extend([(0, lost[0]), (2, lost[1])]);
    s.run(2);
    s.nacks.sort();
    assert_eq!(
        s.nacks,
        vec![(SSRCS[0], vec![lost[0]]), (SSRCS[2], vec![lost[1]])]
    );
    // Repairs on the FID-group SSRCs, without any stream id: each only to its layer's viewer.
    for (l, original) in std::mem::take(&mut s.lost) {
        s.send(&Sim::rtx_pkt(l, &original, 40).bytes());
    }
    for got in [by_seq(&s.got[first..]), by_seq(&s.got2[first2..])] {
        assert!(
            got.windows(2).all(|w| w[1].1 == w[0].1.wrapping_add(1)),
            "no hole left: {got:?}"
        );
        assert!(got.iter().all(|g| g.0 == got[0].0));
    }
    let layers = s.r.track_layers(VIDEO_TRACK).unwrap();
    let repaired: Vec<u64> = layers.iter().map(|l| l.repaired).collect();
    assert_eq!(repaired, [1, 0, 1]);
    assert_eq!(layers[1].rtx_ssrc, Some(RTX_SSRCS[1]));
}

/// H.264 SPS NAL units (libx264) for 320x180, 640x360 and 1280x720.
const H264_SPS: [&str; 3] = [
    "6742c00dd901419f9e10000003001000000303c0f142a480",
    "6764001eacd940a063f3c2000003000200000300783e28532c",
    "6764001facd9405005ba10000003001000000303c0f1831960",
];

#[test]
fn h264_layer_heights_come_from_the_sps_so_a_cap_picks_the_layer_that_fits() {
    const H264_PT: u8 = 102;
    let fmtp = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
    let h264 = |pt| Codec {
        fmtp: Some(fmtp.into()),
        ..codec(pt, "H264", 90_000, None)
    };
    let mut r = publishing(RouterConfig::default(), 5, vec![h264(H264_PT)], &[]);
    r.set_track_layers(VIDEO_TRACK, RID_EXT, &RIDS, &[])
        .unwrap();
    r.add_subscription(SUB, VIDEO_TRACK, SUB_T, SUB_SSRC, &[h264(99)], sub_ext())
        .unwrap();
    r.set_subscription_max_height(SUB, Some(360)).unwrap();
    let mut seq = [0u16; 3];
    let mut got_layers = Vec::new();
    for round in 0..4u32 {
        let now = round as u64 * 300;
        for l in 0..3 {
            // A keyframe: SPS and PPS in a STAP-A, then the IDR slice (its last byte: the layer).
            let sps: Vec<u8> = (0..H264_SPS[l].len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&H264_SPS[l][i..i + 2], 16).unwrap())
                .collect();
            let mut stap = vec![0x78];
            for nal in [&sps[..], &[0x68, 0xce, 0x3c, 0x80]] {
                stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
                stap.extend_from_slice(nal);
            }
            let idr = [0x65, 0x88, 0x84, l as u8];
            for (i, payload) in [&stap[..], &idr[..]].into_iter().enumerate() {
                let mut p = Pkt::new(H264_PT, seq[l], round * 3000, SSRCS[l], payload)
                    .ext(1, b"1")
                    .ext(RID_EXT, RIDS[l].as_bytes());
                p.marker = i == 1;
                seq[l] += 1;
                let mut out = Output::new();
                r.route_rtp(PUB, &p.bytes(), now, &mut out);
                for (t, b) in out.iter() {
                    let v = RtpView::parse(b).unwrap();
                    if t == SUB_T && v.payload()[0] == 0x65 {
                        got_layers.push(v.payload()[3]);
                    }
                }
            }
        }
    }
    let heights: Vec<Option<u16>> = r
        .track_layers(VIDEO_TRACK)
        .unwrap()
        .iter()
        .map(|l| l.height)
        .collect();
    assert_eq!(heights, [Some(180), Some(360), Some(720)]);
    assert_eq!(
        r.subscription_layers(SUB).unwrap().current.map(|c| c.0),
        Some(1)
    );
    assert_eq!(got_layers.last(), Some(&1));
    assert!(!got_layers.contains(&2));
}

#[test]
fn a_recording_sink_on_a_simulcast_track_is_synced_by_its_layers_report() {
    use mediasrv_core::jitter::{FrameCodec, JitterConfig};
    const SINK: SubscriptionId = SubscriptionId(9);
    let mut s = Sim::new();
    s.r.add_sink(
        SINK,
        VIDEO_TRACK,
        FrameCodec::Vp8,
        VP8_PT,
        JitterConfig::new(FrameCodec::Vp8),
    )
    .unwrap();
    s.run(30);
    assert_eq!(
        s.r.sink_sync(SINK),
        None,
        "no report from the publisher yet"
    );
    for (ssrc, st) in SSRCS.iter().zip(&s.layers) {
        let mut b = Vec::new();
        rtcp::write_sr(&mut b, *ssrc, 1000 << 32, st.ts, 0, 0, &[]);
        let (mut out, mut rtp_out) = (Output::new(), Output::new());
        s.r.handle_rtcp(PUB, &b, s.now, &mut out, &mut rtp_out);
    }
    s.run(5);
    let (ntp, _) = s.r.sink_sync(SINK).expect("the sink's layer has a report");
    assert_eq!(ntp, 1000 << 32);
}

#[test]
fn a_moment_of_more_estimate_does_not_switch_up() {
    let mut s = Sim::new();
    assert_eq!(last_layer(&s.run(30)), 2);
    s.remb(200_000);
    assert_eq!(last_layer(&s.run(30)), 1);
    // A spike (a probe through a token bucket's burst, say) for half a second, then back.
    s.remb(5_000_000);
    s.run(15);
    s.remb(200_000);
    let layers = s.run(60);
    assert!(layers.iter().all(|l| *l == 1), "{layers:?}");
    // More room that lasts: up after the hold.
    s.remb(5_000_000);
    let layers = s.run(30); // 1 s: still held
    assert_eq!(last_layer(&layers), 1);
    assert_eq!(last_layer(&s.run(60)), 2);
}

#[test]
fn a_layer_the_publisher_stopped_sending_is_not_reported() {
    let mut s = Sim::new();
    assert_eq!(last_layer(&s.run(40)), 2);
    // Nothing of layer 2 arrives for over a report interval (the publisher stopped its top layer).
    let next = s.layers[2].seq;
    s.lose
        .extend((0..400u16).map(|i| (2, next.wrapping_add(i))));
    // The first report after the stop still covers the packets that came before it.
    s.rrs.clear();
    for _ in 0..60 {
        if !s.rrs.is_empty() {
            break;
        }
        s.run(1);
    }
    assert!(!s.rrs.is_empty());
    s.rrs.clear();
    s.run(35);
    assert!(
        s.rrs.iter().any(|b| b.ssrc == SSRCS[0]) && s.rrs.iter().any(|b| b.ssrc == SSRCS[1]),
        "the layers still coming are reported"
    );
    assert!(
        s.rrs.iter().all(|b| b.ssrc != SSRCS[2]),
        "no stale block for the stopped layer: {:?}",
        s.rrs
    );
}

#[test]
fn a_layer_restarted_under_a_new_ssrc_goes_on_seamlessly() {
    let mut s = Sim::new();
    assert_eq!(last_layer(&s.run(40)), 2);
    // The publisher restarts its top layer: another SSRC, another sequence space.
    const NEW: u32 = 0x5000;
    s.renamed[2] = Some(NEW);
    s.layers[2].seq = 9_000;
    s.plis.clear();
    s.nacks.clear();
    let first = s.got.len();
    s.run(40);
    assert!(
        s.plis.contains(&NEW),
        "a keyframe asked of the new stream: {:?}",
        s.plis
    );
    assert!(
        s.nacks.is_empty(),
        "no loss seen in the jump: {:?}",
        s.nacks
    );
    // The subscriber's numbering goes on without a gap, and it gets the new stream's frames.
    let got = by_seq(&s.got[first..]);
    assert!(got.windows(2).all(|w| w[1].1 == w[0].1.wrapping_add(1)));
    assert_eq!(got.last().unwrap().0, 2);
    // The reports name the new SSRC, from its own start: nothing lost.
    s.rrs.clear();
    s.run(35);
    let new = s
        .rrs
        .iter()
        .rfind(|b| b.ssrc == NEW)
        .expect("a block for the new SSRC");
    assert_eq!((new.cumulative_lost, new.fraction_lost), (0, 0));
    let range = 9_000..u32::from(s.layers[2].seq);
    assert!(
        range.contains(&new.extended_highest_seq),
        "cycle 0: {new:?}"
    );
    assert!(
        s.rrs.iter().all(|b| b.ssrc != SSRCS[2]),
        "the old SSRC is no longer reported"
    );
}

#[test]
fn a_repair_from_a_restarted_layers_old_stream_is_not_forwarded() {
    let mut s = Sim::new();
    assert_eq!(last_layer(&s.run(40)), 2);
    // The old stream's RTX SSRC is known (a repair came on it, naming its layer).
    let sent = frame(2, &mut s.layers[2]);
    for p in &sent {
        s.send(p);
    }
    s.send(&Sim::rtx(2, &sent[0], 500));
    // A packet of the old stream, kept to be "repaired" late.
    let old = frame(2, &mut s.layers[2]).remove(0);
    let old_seq = RtpView::parse(&old).unwrap().seq;
    // The layer restarts under a new SSRC whose numbers soon pass the old packet's, and loses its
    // own packet of that number: NACKed, awaited.
    s.renamed[2] = Some(0x5000);
    s.layers[2].seq = old_seq.wrapping_sub(20);
    s.lose.push((2, old_seq));
    s.nacks.clear();
    for _ in 0..30 {
        if s.nacks
            .iter()
            .any(|(ssrc, q)| *ssrc == 0x5000 && q.contains(&old_seq))
        {
            break;
        }
        s.run(1);
    }
    assert!(
        s.nacks.iter().any(|(ssrc, _)| *ssrc == 0x5000),
        "the new stream's loss is NACKed"
    );
    assert_eq!(
        s.got.last().map(|g| g.0),
        Some(2),
        "the subscriber is on the new stream"
    );
    // A late retransmission of the old stream (its RTX SSRC, no extensions) is no repair of the
    // new one's loss (another frame's payload): nothing reaches the subscriber.
    let rtx = Sim::rtx_pkt(2, &old, 777).bytes();
    assert_eq!(s.send(&rtx), 0);
}
