//! A simulcast track through the router: three VP8 layers on SSRCs learned from the RID header
//! extension, one subscriber whose layer follows its resolution cap and its REMB, with keyframe
//! requests for the layer it waits for answered by the simulated publisher.

mod common;

use common::*;
use mediasrv_core::output::Output;
use mediasrv_core::router::{MediaKind, Router, RouterConfig};
use mediasrv_core::rtcp;
use mediasrv_core::rtp::RtpView;
use mediasrv_core::vp8;

const RID_EXT: u8 = 10;
const SSRCS: [u32; 3] = [0x1000, 0x2000, 0x3000];
const RIDS: [&str; 3] = ["q", "h", "f"];
const SIZES: [(u16, u16); 3] = [(320, 180), (640, 360), (1280, 720)];
const FILL: [usize; 3] = [100, 300, 900]; // bytes per packet: about 50, 150 and 430 kbit/s
const SUB: SubscriptionId = SubscriptionId(1);
const SUB_SSRC: u32 = 0x5000;

struct Layer {
    seq: u16,
    ts: u32,
    pid: u16,
    key_due: bool,
}

fn frame(l: usize, st: &mut Layer) -> Vec<Vec<u8>> {
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
    for (i, mut payload) in [
        first,
        vec![0x80, 0x80, 0x80 | (st.pid >> 8) as u8, st.pid as u8, 0],
    ]
    .into_iter()
    .enumerate()
    {
        payload.extend(std::iter::repeat_n(l as u8, FILL[l]));
        let mut p = Pkt::new(VP8_PT, st.seq, st.ts, SSRCS[l], &payload)
            .ext(1, b"1")
            .ext(RID_EXT, RIDS[l].as_bytes());
        p.marker = i == 1;
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
        let mut r = Router::new(cfg, 7);
        r.add_publisher(PUB, PUB_RTCP_SSRC, pub_ext());
        r.add_track(
            VIDEO_TRACK,
            PUB,
            MediaKind::Video,
            Some("1".into()),
            pub_video_codecs(),
            &[],
        )
        .unwrap();
        r.set_track_layers(VIDEO_TRACK, RID_EXT, &RIDS, &[])
            .unwrap();
        r.add_subscription(SUB, VIDEO_TRACK, SUB_T, SUB_SSRC, &sub_codecs(), sub_ext())
            .unwrap();
        let layers = [
            Layer {
                seq: 100,
                ts: 1000,
                pid: 10,
                key_due: true,
            },
            Layer {
                seq: 65_000,
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
        }
    }

    /// One frame of every layer, then the router's periodic work; PLIs make the named layer send a
    /// keyframe next.
    fn tick(&mut self) {
        let mut out = Output::new();
        for l in 0..3 {
            for pkt in frame(l, &mut self.layers[l]) {
                self.r.route_rtp(PUB, &pkt, self.now, &mut out);
            }
        }
        self.r.poll(self.now, &mut out);
        for (t, b) in out.iter() {
            if t == SUB_T && (200..=207).contains(&b[1]) {
                for p in rtcp::parse_compound(b) {
                    if let Ok(rtcp::RtcpPacket::SenderReport {
                        ssrc,
                        ntp,
                        rtp_timestamp,
                        ..
                    }) = p
                    {
                        assert_eq!(ssrc, SUB_SSRC);
                        self.srs.push((ntp, rtp_timestamp));
                    }
                }
            } else if t == SUB_T {
                let v = RtpView::parse(b).unwrap();
                assert_eq!(v.ssrc, SUB_SSRC);
                let d = vp8::parse(v.payload()).unwrap();
                let layer = *v.payload().last().unwrap();
                self.got.push((
                    layer,
                    v.seq,
                    v.timestamp,
                    d.picture_id.unwrap().value,
                    d.keyframe,
                ));
            } else if t == PUB && b.len() >= 12 && b[1] == 206 && b[0] & 0x1f == 1 {
                let media = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
                self.plis.push(media);
                if let Some(l) = SSRCS.iter().position(|s| *s == media) {
                    self.layers[l].key_due = true;
                }
            }
        }
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
