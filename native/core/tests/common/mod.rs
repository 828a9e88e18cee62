//! Packet builders and a small room fixture shared by the router tests.
#![allow(dead_code)]

pub use mediasrv_core::ids::{SubscriptionId, TrackId, TransportId};
use mediasrv_core::output::Output;
use mediasrv_core::router::{Codec, ExtensionIds, MediaKind, Router, RouterConfig};
use mediasrv_core::rtp::RtpView;

pub const PUB: TransportId = TransportId(1);
pub const SUB_T: TransportId = TransportId(2);
pub const SUB_T2: TransportId = TransportId(3);
pub const PUB_RTCP_SSRC: u32 = 0xAAAA_0001;
pub const VIDEO_TRACK: TrackId = TrackId(10);
pub const AUDIO_TRACK: TrackId = TrackId(11);
pub const VIDEO_SSRC: u32 = 1111;
pub const RTX_SSRC: u32 = 2222;
pub const AUDIO_SSRC: u32 = 3333;
pub const VP8_PT: u8 = 96;
pub const RTX_PT: u8 = 97;
pub const OPUS_PT: u8 = 111;
pub const SUB_VP8_PT: u8 = 120;
pub const SUB_OPUS_PT: u8 = 109;

pub fn codec(pt: u8, name: &str, clock: u32, apt: Option<u8>) -> Codec {
    Codec {
        payload_type: pt,
        name: name.into(),
        clock_rate: clock,
        apt,
        fmtp: None,
    }
}

pub fn pub_video_codecs() -> Vec<Codec> {
    vec![
        codec(VP8_PT, "VP8", 90_000, None),
        codec(RTX_PT, "rtx", 90_000, Some(VP8_PT)),
    ]
}

pub fn sub_codecs() -> Vec<Codec> {
    vec![
        codec(SUB_VP8_PT, "VP8", 90_000, None),
        codec(121, "rtx", 90_000, Some(SUB_VP8_PT)),
        codec(SUB_OPUS_PT, "opus", 48_000, None),
    ]
}

pub fn pub_ext() -> ExtensionIds {
    ExtensionIds {
        mid: 1,
        audio_level: 2,
        abs_send_time: 3,
        transport_cc: 4,
    }
}

pub fn sub_ext() -> ExtensionIds {
    ExtensionIds {
        mid: 9,
        abs_send_time: 5,
        audio_level: 6,
        transport_cc: 0,
    }
}

/// Builds an RTP packet with optional one-byte extensions and padding.
pub struct Pkt {
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub marker: bool,
    pub ext: Vec<(u8, Vec<u8>)>,
    pub payload: Vec<u8>,
    pub padding: u8,
}

impl Pkt {
    pub fn new(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Self {
        Self {
            pt,
            seq,
            ts,
            ssrc,
            marker: false,
            ext: vec![],
            payload: payload.to_vec(),
            padding: 0,
        }
    }
    pub fn ext(mut self, id: u8, data: &[u8]) -> Self {
        self.ext.push((id, data.to_vec()));
        self
    }
    pub fn padding(mut self, n: u8) -> Self {
        self.padding = n;
        self
    }
    pub fn bytes(&self) -> Vec<u8> {
        let mut p = vec![0x80, (self.marker as u8) << 7 | self.pt];
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.ts.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        if !self.ext.is_empty() {
            p[0] |= 0x10;
            let mut data = Vec::new();
            for (id, d) in &self.ext {
                data.push(id << 4 | (d.len() as u8 - 1));
                data.extend_from_slice(d);
            }
            while data.len() % 4 != 0 {
                data.push(0);
            }
            p.extend_from_slice(&[0xBE, 0xDE]);
            p.extend_from_slice(&((data.len() / 4) as u16).to_be_bytes());
            p.extend_from_slice(&data);
        }
        p.extend_from_slice(&self.payload);
        if self.padding > 0 {
            p[0] |= 0x20;
            p.extend(std::iter::repeat_n(0, self.padding as usize - 1));
            p.push(self.padding);
        }
        p
    }
}

/// VP8 payload: descriptor with S=1/PID=0 for frame starts, then the payload header (P bit = !key).
pub fn vp8_payload(start: bool, key: bool, filler: u8) -> Vec<u8> {
    let mut p = vec![
        if start { 0x10 } else { 0x00 },
        if key { 0x00 } else { 0x01 },
    ];
    p.extend(std::iter::repeat_n(filler, 40));
    p
}

pub fn vp8(seq: u16, ts: u32, start: bool, key: bool) -> Vec<u8> {
    Pkt::new(
        VP8_PT,
        seq,
        ts,
        VIDEO_SSRC,
        &vp8_payload(start, key, seq as u8),
    )
    .bytes()
}

pub fn opus(seq: u16, ts: u32) -> Vec<u8> {
    Pkt::new(OPUS_PT, seq, ts, AUDIO_SSRC, &[0xfc, seq as u8, 1, 2, 3]).bytes()
}

/// A router with one publisher (transport 1) publishing VP8 video (+rtx) and opus audio.
pub fn room() -> Router {
    room_with(RouterConfig::default())
}

pub fn room_with(cfg: RouterConfig) -> Router {
    let mut r = Router::new(cfg, 42);
    r.add_publisher(PUB, PUB_RTCP_SSRC, pub_ext());
    r.add_track(
        VIDEO_TRACK,
        PUB,
        MediaKind::Video,
        Some("0".into()),
        pub_video_codecs(),
        &[VIDEO_SSRC, RTX_SSRC],
    )
    .unwrap();
    r.add_track(
        AUDIO_TRACK,
        PUB,
        MediaKind::Audio,
        Some("1".into()),
        vec![codec(OPUS_PT, "opus", 48_000, None)],
        &[AUDIO_SSRC],
    )
    .unwrap();
    r
}

pub fn route(
    r: &mut Router,
    transport: TransportId,
    pkt: &[u8],
    now: u64,
) -> Vec<(TransportId, Vec<u8>)> {
    let mut out = Output::new();
    r.route_rtp(transport, pkt, now, &mut out);
    out.iter().map(|(t, b)| (t, b.to_vec())).collect()
}

pub type Datagrams = Vec<(TransportId, Vec<u8>)>;

pub fn rtcp(
    r: &mut Router,
    transport: TransportId,
    pkt: &[u8],
    now: u64,
) -> (Datagrams, Datagrams) {
    let mut a = Output::new();
    let mut b = Output::new();
    r.handle_rtcp(transport, pkt, now, &mut a, &mut b);
    (
        a.iter().map(|(t, x)| (t, x.to_vec())).collect(),
        b.iter().map(|(t, x)| (t, x.to_vec())).collect(),
    )
}

pub fn poll(r: &mut Router, now: u64) -> Vec<(TransportId, Vec<u8>)> {
    let mut out = Output::new();
    r.poll(now, &mut out);
    out.iter().map(|(t, b)| (t, b.to_vec())).collect()
}

/// (seq, timestamp, ssrc, pt, payload) of a forwarded packet.
pub fn fields(b: &[u8]) -> (u16, u32, u32, u8, Vec<u8>) {
    let v = RtpView::parse(b).expect("router emits valid RTP");
    (
        v.seq,
        v.timestamp,
        v.ssrc,
        v.payload_type,
        v.payload().to_vec(),
    )
}
