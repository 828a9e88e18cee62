//! Sequences of Router operations (two rooms): publishers, tracks (single-layer or simulcast, with
//! layer RTX streams and height caps), subscriptions and recording sinks added and removed, RTP and
//! RTCP fed in (built from structured fields or raw bytes), time passing, timers, keyframe
//! requests, sink pops. A model of what is registered is kept beside each router,
//! and after every step:
//!
//! * nothing panics (debug assertions and overflow checks are on);
//! * every datagram out is well-formed RTP or RTCP;
//! * media goes only to a live, non-sink subscription of that room, under its SSRC, of a track
//!   published by the transport the packet came in on; retransmissions only to the subscriber that
//!   asked; RTCP only to the room's publishers or live subscribers (a sender report under one of
//!   the subscriber's SSRCs);
//! * removed tracks and subscriptions have no stats; the out counters match what was written.
#![no_main]
use std::collections::{HashMap, HashSet};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mediasrv_core::ids::{SubscriptionId, TrackId, TransportId};
use mediasrv_core::jitter::{FrameCodec, JitterConfig};
use mediasrv_core::output::Output;
use mediasrv_core::router::{Codec, ExtensionIds, MediaKind, Router, RouterConfig, SINK_TRANSPORT};
use mediasrv_core::rtcp::{self, DlrrItem, ReportBlock, PT_SR};
use mediasrv_core::rtp::{write_packet, HeaderOut};
use mediasrv_fuzz::{assert_rtcp, assert_rtp};

const SSRCS: [u32; 8] = [0, 1, 1111, 2222, 3333, 0xdead_beef, 0x8000_0000, u32::MAX];
const PTS: [u8; 10] = [96, 97, 98, 100, 102, 111, 127, 0, 35, 120];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ssrc {
    Known(u8),
    Any(u32),
}

impl Ssrc {
    fn get(self) -> u32 {
        match self {
            Ssrc::Known(i) => SSRCS[i as usize % SSRCS.len()],
            Ssrc::Any(s) => s,
        }
    }
}

fn pt(i: u8) -> u8 {
    PTS[i as usize % PTS.len()]
}

#[derive(Arbitrary, Debug)]
enum CodecSel {
    Vp8 {
        pt: u8,
        rtx_pt: Option<u8>,
    },
    H264 {
        pt: u8,
        mode1: bool,
        profile: bool,
    },
    Vp9 {
        pt: u8,
    },
    Av1 {
        pt: u8,
    },
    Opus {
        pt: u8,
    },
    /// An RTX codec, apt pointing anywhere (or nowhere).
    Rtx {
        pt: u8,
        apt: Option<u8>,
    },
    Other {
        pt: u8,
        clock_rate: u32,
    },
}

fn codecs(sel: &[CodecSel]) -> Vec<Codec> {
    let mk = |pt: u8, name: &str, clock_rate: u32, apt: Option<u8>, fmtp: Option<String>| Codec {
        payload_type: pt,
        name: name.into(),
        clock_rate,
        apt,
        fmtp,
    };
    let mut out = Vec::new();
    for c in sel.iter().take(6) {
        match *c {
            CodecSel::Vp8 { pt: p, rtx_pt } => {
                out.push(mk(pt(p), "VP8", 90_000, None, None));
                if let Some(r) = rtx_pt {
                    out.push(mk(pt(r), "rtx", 90_000, Some(pt(p)), None));
                }
            }
            CodecSel::H264 {
                pt: p,
                mode1,
                profile,
            } => {
                let fmtp = format!(
                    "packetization-mode={};profile-level-id={}",
                    mode1 as u8,
                    if profile { "42e01f" } else { "640c1f" }
                );
                out.push(mk(pt(p), "H264", 90_000, None, Some(fmtp)));
            }
            CodecSel::Vp9 { pt: p } => out.push(mk(pt(p), "VP9", 90_000, None, None)),
            CodecSel::Av1 { pt: p } => out.push(mk(pt(p), "AV1", 90_000, None, None)),
            CodecSel::Opus { pt: p } => out.push(mk(pt(p), "opus", 48_000, None, None)),
            CodecSel::Rtx { pt: p, apt } => out.push(mk(pt(p), "rtx", 90_000, apt.map(pt), None)),
            CodecSel::Other { pt: p, clock_rate } => {
                out.push(mk(pt(p), "PCMU", clock_rate, None, None))
            }
        }
    }
    out
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Vp8Key,
    Vp8Delta,
    Vp8Continuation,
    H264Idr,
    H264StapA,
    H264FuStart,
    H264FuEnd,
    H264NonIdr,
    Opus,
    Empty,
    Raw(Vec<u8>),
}

impl Payload {
    fn bytes(&self, filler: u8) -> Vec<u8> {
        let mut p = match self {
            Payload::Vp8Key => vec![0x90, 0x80, 0x05, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a],
            Payload::Vp8Delta => vec![0x90, 0x80, 0x06, 0x11],
            Payload::Vp8Continuation => vec![0x80, 0x80, 0x06],
            Payload::H264Idr => vec![0x65, 0x88, 0x84],
            Payload::H264StapA => vec![0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce, 0, 2, 0x65, 0x88],
            Payload::H264FuStart => vec![0x7c, 0x85, 0x88],
            Payload::H264FuEnd => vec![0x7c, 0x45, 0x21],
            Payload::H264NonIdr => vec![0x41, 0x9a],
            Payload::Opus => vec![0x78, 0x01],
            Payload::Empty => return Vec::new(),
            Payload::Raw(b) => return b.clone(),
        };
        p.extend(std::iter::repeat_n(0xab, filler as usize));
        p
    }
}

#[derive(Arbitrary, Debug)]
enum RtcpItem {
    Pli(Ssrc),
    Fir(Ssrc, u8),
    /// Sequence numbers relative to the room's last forwarded one.
    Nack(Ssrc, Vec<i8>),
    NackAbsolute(Ssrc, Vec<u16>),
    Remb(u64, Vec<Ssrc>),
    Rr(Vec<(Ssrc, u8, i32, u32)>),
    /// A receiver report echoing the last sender report the room sent (RTT).
    RrEcho {
        delay: u32,
    },
    Sr {
        ssrc: Ssrc,
        ntp: u64,
        rtp_ts: u32,
    },
    /// An XR DLRR echoing the last RRTR the room sent to a publisher (RTT toward it).
    DlrrEcho {
        delay: u32,
    },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Ext {
    Mid(u8),
    AbsSendTime([u8; 3]),
    AudioLevel(u8),
    /// A simulcast layer's RTP stream id (`RID_EXT`), or the one an RTX packet repairs.
    Rid(u8),
    RepairedRid(u8),
}

/// Header extension ids of simulcast layers' RTP stream ids (`Op::SetLayers`), and their values.
const RID_EXT: u8 = 10;
const REPAIRED_RID_EXT: u8 = 11;
const RIDS: [&str; 4] = ["q", "h", "f", "x"];

#[derive(Arbitrary, Debug)]
enum Op {
    AddPublisher {
        transport: u8,
        rtcp_ssrc: Ssrc,
        ext: bool,
    },
    AddTrack {
        track: u8,
        transport: u8,
        video: bool,
        mid: Option<u8>,
        codecs: Vec<CodecSel>,
        ssrcs: Vec<Ssrc>,
    },
    RemoveTrack(u8),
    /// Makes a track simulcast: layers named by rids (`RID_EXT`) or by SSRCs, their RTX streams
    /// by the repaired-RID extension or by SSRCs.
    SetLayers {
        track: u8,
        rids: u8,
        ssrcs: Vec<Ssrc>,
        repaired_rid: bool,
        rtx_ssrcs: Vec<Ssrc>,
    },
    MaxHeight {
        sub: u8,
        height: Option<u16>,
    },
    Subscribe {
        sub: u8,
        track: u8,
        transport: u8,
        ssrc: Ssrc,
        codecs: Vec<CodecSel>,
        ext: bool,
    },
    AddSink {
        sub: u8,
        track: u8,
        codec: u8,
        pt: u8,
    },
    Unsubscribe(u8),
    RemoveTransport(u8),
    Rtp {
        transport: u8,
        ssrc: Ssrc,
        pt: u8,
        seq_delta: i8,
        ts_delta: i16,
        marker: bool,
        payload: Payload,
        filler: u8,
        ext: Option<Ext>,
        /// Wrap as RTX: the original sequence number goes first in the payload.
        rtx_osn: Option<i8>,
    },
    RawRtp {
        transport: u8,
        bytes: Vec<u8>,
    },
    Rtcp {
        transport: u8,
        sender: Ssrc,
        items: Vec<RtcpItem>,
    },
    Advance(u16),
    Jump(u32),
    Poll,
    RequestKeyframe(u8),
    PopSink(u8),
    Events,
}

#[derive(Arbitrary, Debug)]
struct Input {
    sender_reports: bool,
    nack_cache: u8,
    pli_min_interval_ms: u8,
    track_timeout_ms: u16,
    /// What publishers may send, in kbit/s (0: the default); also a subscriber's estimate until
    /// its REMB, of which the retransmission budget is a share.
    max_bitrate_kbps: u16,
    /// Each step names a room (false: 0, true: 1) and an operation on it.
    steps: Vec<(bool, Op)>,
}

#[derive(Debug, Clone, Copy)]
struct SubInfo {
    track: TrackId,
    transport: TransportId,
    ssrc: u32,
    sink: bool,
}

/// What has been registered with one router, as far as the router said yes.
#[derive(Default)]
struct Model {
    publishers: HashSet<TransportId>,
    tracks: HashMap<TrackId, TransportId>,
    subs: HashMap<SubscriptionId, SubInfo>,
    removed_tracks: HashSet<TrackId>,
    removed_subs: HashSet<SubscriptionId>,
}

impl Model {
    fn remove_track(&mut self, t: TrackId) {
        if self.tracks.remove(&t).is_some() {
            self.removed_tracks.insert(t);
            let gone: Vec<_> = self
                .subs
                .iter()
                .filter(|(_, s)| s.track == t)
                .map(|(id, _)| *id)
                .collect();
            for s in gone {
                self.remove_sub(s);
            }
        }
    }

    fn remove_sub(&mut self, s: SubscriptionId) {
        if self.subs.remove(&s).is_some() {
            self.removed_subs.insert(s);
        }
    }

    /// A live subscription that sends to `dest` under `ssrc`.
    fn live_sub(&self, dest: TransportId, ssrc: u32) -> Option<&SubInfo> {
        self.subs
            .values()
            .find(|s| !s.sink && s.transport == dest && s.ssrc == ssrc)
    }
}

struct Room {
    router: Router,
    model: Model,
    seq: u16,
    ts: u32,
    last_out_seq: u16,
    last_sr_compact: u32,
    last_rrtr: Option<(TransportId, u32, u32)>,
}

fn transport(i: u8) -> TransportId {
    TransportId(i as u64 % 4 + 1)
}

fn ext_ids(on: bool) -> ExtensionIds {
    if on {
        ExtensionIds {
            mid: 1,
            abs_send_time: 2,
            audio_level: 3,
            transport_cc: 4,
        }
    } else {
        ExtensionIds::default()
    }
}

/// Checks RTCP the room sent and remembers what a peer could echo.
fn check_rtcp_out(room: &mut Room, out: &Output) {
    for (dest, bytes) in out.iter() {
        assert_rtcp(bytes);
        let m = &room.model;
        let to_sub = m.subs.values().any(|s| !s.sink && s.transport == dest);
        assert!(
            m.publishers.contains(&dest) || to_sub,
            "RTCP to {dest}, neither a publisher nor a subscriber of this room"
        );
        for p in rtcp::parse_compound(bytes).flatten() {
            match p {
                rtcp::RtcpPacket::SenderReport { ssrc, ntp, .. } => {
                    assert!(
                        m.live_sub(dest, ssrc).is_some(),
                        "SR for SSRC {ssrc} to {dest}"
                    );
                    assert_eq!(bytes[1], PT_SR);
                    room.last_sr_compact = (ntp >> 16) as u32;
                }
                rtcp::RtcpPacket::ExtendedReport { ssrc, blocks } => {
                    if let Some(ntp) = blocks.rrtr() {
                        room.last_rrtr = Some((dest, ssrc, (ntp >> 16) as u32));
                    }
                }
                _ => {}
            }
        }
    }
}

fn build_rtcp(room: &Room, sender: u32, items: &[RtcpItem]) -> Vec<u8> {
    let mut b = Vec::new();
    for item in items.iter().take(8) {
        match item {
            RtcpItem::Pli(s) => rtcp::write_pli(&mut b, sender, s.get()),
            RtcpItem::Fir(s, n) => rtcp::write_fir(&mut b, sender, s.get(), *n),
            RtcpItem::Nack(s, rel) => {
                let seqs: Vec<u16> = rel
                    .iter()
                    .take(64)
                    .map(|d| room.last_out_seq.wrapping_add(*d as u16))
                    .collect();
                if !seqs.is_empty() {
                    rtcp::write_nack(&mut b, sender, s.get(), &seqs);
                }
            }
            RtcpItem::NackAbsolute(s, seqs) => {
                if !seqs.is_empty() {
                    rtcp::write_nack(&mut b, sender, s.get(), &seqs[..seqs.len().min(64)]);
                }
            }
            RtcpItem::Remb(bps, ssrcs) => {
                let list: Vec<u32> = ssrcs.iter().map(|s| s.get()).collect();
                rtcp::write_remb(&mut b, sender, *bps, &list);
            }
            RtcpItem::Rr(blocks) => {
                let blocks: Vec<ReportBlock> = blocks
                    .iter()
                    .map(|(s, fraction, lost, jitter)| ReportBlock {
                        ssrc: s.get(),
                        fraction_lost: *fraction,
                        cumulative_lost: *lost,
                        extended_highest_seq: room.seq as u32,
                        jitter: *jitter,
                        last_sr: 0,
                        delay_since_last_sr: 0,
                    })
                    .collect();
                rtcp::write_rr(&mut b, sender, &blocks);
            }
            RtcpItem::RrEcho { delay } => {
                let blocks: Vec<ReportBlock> = room
                    .model
                    .subs
                    .values()
                    .map(|s| ReportBlock {
                        ssrc: s.ssrc,
                        last_sr: room.last_sr_compact,
                        delay_since_last_sr: *delay,
                        ..Default::default()
                    })
                    .collect();
                rtcp::write_rr(&mut b, sender, &blocks);
            }
            RtcpItem::Sr { ssrc, ntp, rtp_ts } => {
                rtcp::write_sr(&mut b, ssrc.get(), *ntp, *rtp_ts, 1, 100, &[])
            }
            RtcpItem::DlrrEcho { delay } => {
                if let Some((_, ours, last_rr)) = room.last_rrtr {
                    let item = DlrrItem {
                        ssrc: ours,
                        last_rr,
                        delay: *delay,
                    };
                    rtcp::write_xr_dlrr(&mut b, sender, &[item]);
                }
            }
            RtcpItem::Raw(bytes) => b.extend_from_slice(bytes),
        }
    }
    b
}

fuzz_target!(|input: Input| {
    let cfg = RouterConfig {
        sender_reports: input.sender_reports,
        nack_cache_packets: input.nack_cache as usize + 1,
        pli_min_interval_ms: input.pli_min_interval_ms as u64,
        track_timeout_ms: input.track_timeout_ms as u64,
        max_bitrate_bps: match input.max_bitrate_kbps {
            0 => RouterConfig::default().max_bitrate_bps,
            k => k as u64 * 1000,
        },
        ..RouterConfig::default()
    };
    let mut rooms: Vec<Room> = (0..2)
        .map(|i| Room {
            router: Router::new(cfg.clone(), i),
            model: Model::default(),
            seq: 1000,
            ts: 90_000,
            last_out_seq: 0,
            last_sr_compact: 0,
            last_rrtr: None,
        })
        .collect();
    let mut now_ms = 5_000u64;
    let (mut out, mut out2) = (Output::new(), Output::new());
    for (room_sel, op) in input.steps {
        let room = &mut rooms[room_sel as usize];
        out.clear();
        out2.clear();
        match op {
            Op::AddPublisher {
                transport: t,
                rtcp_ssrc,
                ext,
            } => {
                room.router
                    .add_publisher(transport(t), rtcp_ssrc.get(), ext_ids(ext));
                room.model.publishers.insert(transport(t));
            }
            Op::AddTrack {
                track,
                transport: t,
                video,
                mid,
                codecs: cs,
                ssrcs,
            } => {
                let id = TrackId(track as u64 % 6 + 1);
                let kind = if video {
                    MediaKind::Video
                } else {
                    MediaKind::Audio
                };
                let ssrcs: Vec<u32> = ssrcs.iter().take(4).map(|s| s.get()).collect();
                let res = room.router.add_track(
                    id,
                    transport(t),
                    kind,
                    mid.map(|m| (m % 4).to_string()),
                    codecs(&cs),
                    &ssrcs,
                );
                if res.is_ok() {
                    assert!(room.model.publishers.contains(&transport(t)));
                    assert!(!room.model.tracks.contains_key(&id));
                    room.model.tracks.insert(id, transport(t));
                    room.model.removed_tracks.remove(&id);
                }
            }
            Op::RemoveTrack(track) => {
                let id = TrackId(track as u64 % 6 + 1);
                let existed = room.router.remove_track(id);
                assert_eq!(existed, room.model.tracks.contains_key(&id));
                room.model.remove_track(id);
            }
            Op::SetLayers {
                track,
                rids,
                ssrcs,
                repaired_rid,
                rtx_ssrcs,
            } => {
                let id = TrackId(track as u64 % 6 + 1);
                let rids = &RIDS[..rids as usize % 4];
                let ssrcs: Vec<u32> = ssrcs.iter().take(4).map(|s| s.get()).collect();
                let rtx: Vec<u32> = rtx_ssrcs.iter().take(4).map(|s| s.get()).collect();
                let repaired = if repaired_rid { REPAIRED_RID_EXT } else { 0 };
                if room
                    .router
                    .set_track_layers(id, RID_EXT, rids, &ssrcs)
                    .is_ok()
                {
                    assert!(room.model.tracks.contains_key(&id));
                    let _ = room.router.set_track_layer_rtx(id, repaired, &rtx);
                }
            }
            Op::MaxHeight { sub, height } => {
                let id = SubscriptionId(sub as u64 % 8 + 1);
                let res = room.router.set_subscription_max_height(id, height);
                assert_eq!(res.is_ok(), room.model.subs.contains_key(&id));
            }
            Op::Subscribe {
                sub,
                track,
                transport: t,
                ssrc,
                codecs: cs,
                ext,
            } => {
                let id = SubscriptionId(sub as u64 % 8 + 1);
                let track = TrackId(track as u64 % 6 + 1);
                let res = room.router.add_subscription(
                    id,
                    track,
                    transport(t),
                    ssrc.get(),
                    &codecs(&cs),
                    ext_ids(ext),
                );
                if res.is_ok() {
                    assert!(room.model.tracks.contains_key(&track));
                    assert!(!room.model.subs.contains_key(&id));
                    let info = SubInfo {
                        track,
                        transport: transport(t),
                        ssrc: ssrc.get(),
                        sink: false,
                    };
                    room.model.subs.insert(id, info);
                    room.model.removed_subs.remove(&id);
                }
            }
            Op::AddSink {
                sub,
                track,
                codec,
                pt: p,
            } => {
                let id = SubscriptionId(sub as u64 % 8 + 1);
                let track = TrackId(track as u64 % 6 + 1);
                let codec =
                    [FrameCodec::Vp8, FrameCodec::H264, FrameCodec::Opus][codec as usize % 3];
                let res = room
                    .router
                    .add_sink(id, track, codec, pt(p), JitterConfig::new(codec));
                if res.is_ok() {
                    assert!(room.model.tracks.contains_key(&track));
                    assert!(room.router.is_sink(id));
                    let info = SubInfo {
                        track,
                        transport: SINK_TRANSPORT,
                        ssrc: 0,
                        sink: true,
                    };
                    room.model.subs.insert(id, info);
                    room.model.removed_subs.remove(&id);
                }
            }
            Op::Unsubscribe(sub) => {
                let id = SubscriptionId(sub as u64 % 8 + 1);
                let existed = room.router.remove_subscription(id);
                assert_eq!(existed, room.model.subs.contains_key(&id));
                room.model.remove_sub(id);
            }
            Op::RemoveTransport(t) => {
                let t = transport(t);
                room.router.remove_transport(t);
                room.model.publishers.remove(&t);
                let tracks: Vec<_> = room
                    .model
                    .tracks
                    .iter()
                    .filter(|(_, tr)| **tr == t)
                    .map(|(id, _)| *id)
                    .collect();
                for id in tracks {
                    room.model.remove_track(id);
                }
                let subs: Vec<_> = room
                    .model
                    .subs
                    .iter()
                    .filter(|(_, s)| s.transport == t)
                    .map(|(id, _)| *id)
                    .collect();
                for id in subs {
                    room.model.remove_sub(id);
                }
            }
            Op::Rtp {
                transport: t,
                ssrc,
                pt: p,
                seq_delta,
                ts_delta,
                marker,
                payload,
                filler,
                ext,
                rtx_osn,
            } => {
                room.seq = room.seq.wrapping_add(seq_delta as u16);
                room.ts = room.ts.wrapping_add(ts_delta as u32);
                let mut body = payload.bytes(filler);
                if let Some(d) = rtx_osn {
                    let osn = room.seq.wrapping_sub(d as u16);
                    let mut wrapped = osn.to_be_bytes().to_vec();
                    wrapped.extend_from_slice(&body);
                    body = wrapped;
                }
                let mid_bytes;
                let level;
                let exts: Vec<(u8, &[u8])> = match &ext {
                    Some(Ext::Mid(m)) => {
                        mid_bytes = (m % 4).to_string();
                        vec![(1, mid_bytes.as_bytes())]
                    }
                    Some(Ext::AbsSendTime(v)) => vec![(2, &v[..])],
                    Some(Ext::AudioLevel(v)) => {
                        level = [*v];
                        vec![(3, &level[..])]
                    }
                    Some(Ext::Rid(r)) => vec![(RID_EXT, RIDS[*r as usize % 4].as_bytes())],
                    Some(Ext::RepairedRid(r)) => {
                        vec![(REPAIRED_RID_EXT, RIDS[*r as usize % 4].as_bytes())]
                    }
                    None => Vec::new(),
                };
                let mut pkt = Vec::new();
                let h = HeaderOut {
                    marker,
                    payload_type: pt(p),
                    seq: room.seq,
                    timestamp: room.ts,
                    ssrc: ssrc.get(),
                    csrc_bytes: &[],
                    extensions: &exts,
                };
                write_packet(&mut pkt, &h, &body);
                route(room, transport(t), &pkt, now_ms, &mut out);
            }
            Op::RawRtp {
                transport: t,
                bytes,
            } => route(room, transport(t), &bytes, now_ms, &mut out),
            Op::Rtcp {
                transport: t,
                sender,
                items,
            } => {
                let t = transport(t);
                let pkt = build_rtcp(room, sender.get(), &items);
                let before = room.router.stats().retransmissions_out;
                room.router
                    .handle_rtcp(t, &pkt, now_ms, &mut out, &mut out2);
                assert_eq!(
                    room.router.stats().retransmissions_out - before,
                    out.len() as u64
                );
                let mut resent = HashSet::new();
                for (dest, bytes) in out.iter() {
                    assert_eq!(dest, t, "a retransmission went to a peer that did not ask");
                    let v = assert_rtp(bytes);
                    assert!(
                        room.model.live_sub(dest, v.ssrc).is_some(),
                        "retransmission for SSRC {}",
                        v.ssrc
                    );
                    // However often one feedback packet names it, a packet is resent once.
                    assert!(
                        resent.insert((v.ssrc, v.seq)),
                        "SSRC {} seq {} resent twice at once",
                        v.ssrc,
                        v.seq
                    );
                }
                for (dest, _) in out2.iter() {
                    assert!(
                        room.model.publishers.contains(&dest),
                        "keyframe request to {dest}"
                    );
                }
                check_rtcp_out(room, &out2);
            }
            Op::Advance(ms) => now_ms += ms as u64,
            Op::Jump(ms) => now_ms += ms as u64,
            Op::Poll => {
                room.router.poll(now_ms, &mut out);
                check_rtcp_out(room, &out);
            }
            Op::RequestKeyframe(track) => {
                let id = TrackId(track as u64 % 6 + 1);
                let sent = room.router.request_keyframe(id, now_ms, &mut out);
                assert!(!sent || room.model.tracks.contains_key(&id));
                for (dest, _) in out.iter() {
                    assert_eq!(Some(&dest), room.model.tracks.get(&id));
                }
                check_rtcp_out(room, &out);
            }
            Op::PopSink(sub) => {
                let id = SubscriptionId(sub as u64 % 8 + 1);
                let is_sink = room.model.subs.get(&id).is_some_and(|s| s.sink);
                assert_eq!(room.router.sink_mut(id).is_some(), is_sink);
                if let Some(sink) = room.router.sink_mut(id) {
                    let _ = sink.buffer().pop_frames(now_ms);
                    let _ = sink.buffer().poll(now_ms);
                }
                let _ = (room.router.sink_stats(id), room.router.sink_sync(id));
            }
            Op::Events => {
                let events = room.router.take_events();
                assert!(events.len() <= mediasrv_core::router::MAX_EVENTS);
            }
        }
        for id in &room.model.removed_tracks {
            assert!(
                room.router.track_stats(*id).is_none(),
                "removed track {id} has stats"
            );
        }
        for id in &room.model.removed_subs {
            assert!(
                room.router.subscription_stats(*id).is_none(),
                "removed subscription {id} has stats"
            );
        }
        for id in room.model.tracks.keys() {
            assert!(room.router.track_stats(*id).is_some());
        }
        for id in room.model.subs.keys() {
            assert!(room.router.subscription_stats(*id).is_some());
        }
    }
});

/// Routes one RTP packet and checks where the copies went.
fn route(room: &mut Room, from: TransportId, pkt: &[u8], now_ms: u64, out: &mut Output) {
    let before = room.router.stats().rtp_packets_out;
    room.router.route_rtp(from, pkt, now_ms, out);
    assert_eq!(
        room.router.stats().rtp_packets_out - before,
        out.len() as u64
    );
    for (dest, bytes) in out.iter() {
        let v = assert_rtp(bytes);
        let sub = room.model.live_sub(dest, v.ssrc).unwrap_or_else(|| {
            panic!(
                "media to {dest} under SSRC {}: no such live subscription",
                v.ssrc
            )
        });
        assert_eq!(
            room.model.tracks.get(&sub.track),
            Some(&from),
            "media to a subscription of a track that {from} does not publish"
        );
        room.last_out_seq = v.seq;
    }
}
