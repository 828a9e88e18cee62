//! The sans-IO SFU core: decrypted RTP/RTCP and the time go in, rewritten datagrams come out.
//!
//! One `Router` per room. Publishers' tracks are found by (transport, SSRC); every subscription has
//! its own SSRC, sequence-number and timestamp space (offsets fixed when its first packet is
//! forwarded), its own payload-type and header-extension mapping, and waits for a keyframe if it is
//! video. No sockets, threads, clocks or randomness from the OS: the caller passes `now_ms` and the
//! constructor takes a seed.

use std::sync::Arc;

use crate::fasthash::FastMap;
use crate::jitter::RtpFields;

use crate::codec_match::best_match;
use crate::keyframe::{is_keyframe_start, CodecKind};
use crate::nack_cache::{CachedPacket, Insert, NackCache, PacketToCache};
use crate::output::Output;
use crate::reception::ReceptionStats;
use crate::rtp::{self, HeaderOut, RtpView};
use crate::seq::{SeqCompressor, SeqUnwrapper};

mod downlink;
mod feedback;
pub mod layers;
mod rate;
mod red_recovery;
mod resend;
mod simulcast;
mod sink;
mod types;

use downlink::Downlink;
use rate::RateWindow;
use resend::ResendGate;
pub use sink::{Sink, SINK_TRANSPORT};

pub use feedback::{MAX_RETRANSMISSIONS_PER_RTCP, UPKEEP_MS};
pub use rate::RATE_SAMPLE_MS;
use red_recovery::{recover_red, Carrier};
pub use resend::DEFAULT_RTT_MS as DEFAULT_RESEND_RTT_MS;
pub use simulcast::{pick_layers, LayerInfo, SubscriptionLayers};

/// Events kept until `take_events`; beyond this they are counted in `events_dropped` instead.
pub const MAX_EVENTS: usize = 1024;
/// Sender reports per subscription remembered to match the LSR echoed in receiver reports.
const SR_HISTORY: usize = 4;
pub use types::*;

/// What a payload type of a track means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PtEntry {
    Unknown,
    /// `clock_rate` (≥ 1) is the codec's, kept in the entry: it is read for every packet, and the
    /// entry is already in cache when it is.
    Media {
        kind: CodecKind,
        clock_rate: u32,
    },
    Rtx {
        apt: u8,
    },
}

/// Packets lost on the way in that we NACK to the publisher: at most this many tracked per track,
/// each asked for up to `NACK_TRIES` times, `NACK_RETRY_MS` apart.
pub const MAX_MISSING_PER_TRACK: usize = 64;
pub const NACK_TRIES: u8 = 3;
pub const NACK_RETRY_MS: u64 = 40;

/// A packet of a publisher's stream that has not arrived (yet).
#[derive(Debug, Clone, Copy)]
struct Missing {
    ext: u64,
    next_ms: u64,
    tries: u8,
}

/// A packet arrived: it is no longer missing.
fn arrived(missing: &mut Vec<Missing>, ext: u64) {
    if !missing.is_empty() {
        missing.retain(|m| m.ext != ext);
    }
}

/// A jump from `prev_highest` to `ext` over sequence numbers: they are remembered for a NACK at
/// the next poll (the newest `MAX_MISSING_PER_TRACK` of them).
fn note_missing(missing: &mut Vec<Missing>, prev_highest: Option<u64>, ext: u64, now_ms: u64) {
    let Some(h) = prev_highest else {
        return;
    };
    let first = (h + 1).max(ext.saturating_sub(MAX_MISSING_PER_TRACK as u64));
    for e in first..ext {
        if missing.len() == MAX_MISSING_PER_TRACK {
            missing.remove(0);
        }
        missing.push(Missing {
            ext: e,
            next_ms: now_ms,
            tries: 0,
        });
    }
}

/// How often transport-cc feedback goes to a publisher that negotiated it.
pub const TWCC_FEEDBACK_INTERVAL_MS: u64 = 50;

/// Most SSRCs one track binds on the fly (media, RTX, and a few encoder restarts).
const MAX_SSRCS_PER_TRACK: usize = 8;

struct Publisher {
    rtcp_ssrc: u32,
    ext: ExtensionIds,
    tracks: Vec<TrackId>,
    remb_due: bool,
    last_remb_ms: Option<u64>,
    /// Recent RRTR blocks sent with our RRs: (middle 32 bits of their NTP time, when sent).
    rrtr_sent: [(u32, u64); SR_HISTORY],
    rrtr_next: usize,
    /// Round-trip time toward the publisher from its last DLRR echo (RFC 3611 4.5).
    rtt_us: Option<u64>,
    /// Arrivals of its transport-wide sequence numbers, for transport-cc feedback (created at the
    /// first packet carrying one, when the extension is negotiated).
    twcc: Option<Box<crate::twcc::TwccRecorder>>,
}

struct Subscription {
    id: SubscriptionId,
    transport: TransportId,
    ssrc: u32,
    /// Publisher media payload type → subscriber payload type (0xff: not negotiated).
    pt_map: [u8; 128],
    ext: ExtensionIds,
    gated: bool,
    /// Video held back: the subscriber's link has too little room for it (audio keeps flowing).
    paused: bool,
    started: bool,
    start_c: u64,
    seq_offset: u16,
    ts_offset: u32,
    next_seq: u16,
    next_ts: u32,
    /// Last first-transmission sent: (seq, timestamp, now_ms); used to continue after a resync.
    last_out: Option<(u16, u32, u64)>,
    last_sr_sent_ms: Option<u64>,
    /// Recent SRs sent: (middle 32 bits of their NTP timestamp, when sent), for RTT (RFC 3550 6.4.1).
    sr_sent: [(u32, u64); SR_HISTORY],
    sr_sent_next: usize,
    rate: RateWindow,
    /// Which packets were resent when, and the retransmission budget.
    resend: ResendGate,
    stats: SubscriptionStats,
    /// A recording sink: the stream goes into this jitter buffer instead of to a transport.
    sink: Option<Box<Sink>>,
    /// The subscriber's RTX payload type for this stream's codec, if it negotiated one.
    rtx_pt: Option<u8>,
    /// Its RTX stream, once its SSRC is known (`set_subscription_rtx`): bandwidth probes go there
    /// as padding, so they never disturb the media stream's numbering.
    rtx: Option<downlink::RtxStream>,
    /// A video track's (the pacer may hold its packets; audio's never).
    video: bool,
}

struct Track {
    id: TrackId,
    transport: TransportId,
    kind: MediaKind,
    mid: Option<String>,
    codecs: Vec<Codec>,
    pt_table: [PtEntry; 128],
    media_ssrc: Option<u32>,
    rtx_ssrc: Option<u32>,
    /// SSRCs indexed for this track (SDP ones and those bound on the fly).
    ssrcs: Vec<u32>,
    seq: SeqUnwrapper,
    gaps: SeqCompressor,
    cache: NackCache,
    subs: Vec<Subscription>,
    last_pli_ms: Option<u64>,
    pli_pending: bool,
    /// Some subscription is a recording sink, whose jitter buffer `poll` runs every time (set
    /// when one is attached, recounted at each upkeep).
    has_sink: bool,
    reception: ReceptionStats,
    /// Payload type of the last media packet (its clock rate drives sender reports).
    last_media_pt: Option<u8>,
    /// Gaps in the publisher's sequence to NACK (video only).
    missing: Vec<Missing>,
    /// When the last packet of the track arrived (drives `TrackStopped`).
    last_packet_ms: u64,
    rate: RateWindow,
    stats: TrackStats,
    /// Simulcast layers on separate SSRCs (`set_track_layers`); routed by `simulcast`.
    layered: Option<Box<simulcast::Layered>>,
}

impl Track {
    fn clock_rate(&self, media_pt: u8) -> u32 {
        match self.pt_table[media_pt as usize & 0x7f] {
            PtEntry::Media { clock_rate, .. } => clock_rate,
            _ => 90_000,
        }
    }

    /// Media SSRC to name in feedback to the publisher (the bound one, else the first from SDP).
    fn feedback_ssrc(&self) -> Option<u32> {
        self.media_ssrc.or_else(|| self.ssrcs.first().copied())
    }

    fn waiting_subs(&self) -> bool {
        self.subs.iter().any(|s| s.gated && !s.started)
    }
}

/// The router's own NTP-format clock for RRTR blocks: `now_ms` plus one second (so a compact
/// timestamp is never 0, which means "none" in an echo). Only differences of it matter.
fn router_ntp(now_ms: u64) -> u64 {
    (((now_ms as u128 + 1000) << 32) / 1000) as u64
}

/// Round trip from an echo (RFC 3550 6.4.1 / RFC 3611 4.5): time since we sent the timestamp, on our
/// clock, minus the peer's hold `delay` (1/65536 s); 0 if the peer claims to have held it longer.
fn rtt_from_echo(history: &[(u32, u64)], echoed: u32, delay: u32, now_ms: u64) -> Option<u64> {
    if echoed == 0 {
        return None;
    }
    let &(_, sent_ms) = history.iter().find(|(compact, _)| *compact == echoed)?;
    let delay_us = delay as u64 * 1_000_000 / 65536;
    Some(
        now_ms
            .saturating_sub(sent_ms)
            .saturating_mul(1000)
            .saturating_sub(delay_us),
    )
}

/// splitmix64: deterministic, seedable, enough for random start sequence numbers and timestamps.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

pub struct Router {
    cfg: RouterConfig,
    rng: Rng,
    publishers: FastMap<TransportId, Publisher>,
    tracks: FastMap<TrackId, Track>,
    track_by_ssrc: FastMap<(TransportId, u32), TrackId>,
    sub_track: FastMap<SubscriptionId, TrackId>,
    sub_by_ssrc: FastMap<(TransportId, u32), SubscriptionId>,
    /// Subscriber transports' transport-wide sequence numbers, estimates and allocation.
    downlinks: FastMap<TransportId, Downlink>,
    stats: RouterStats,
    events: Vec<RouterEvent>,
    /// A RED payload with its blocks' payload types rewritten for one subscriber (reused).
    red_scratch: Vec<u8>,
    /// What each downlink receives must be counted again (`allocate`): tracks, subscriptions or
    /// transports came or went, or a subscription's bitrate was sampled.
    allocation_stale: bool,
    /// Next time the slower track upkeep is due (`poll`).
    next_upkeep_ms: u64,
}

fn push_event(events: &mut Vec<RouterEvent>, stats: &mut RouterStats, e: RouterEvent) {
    if events.len() < MAX_EVENTS {
        events.push(e);
    } else {
        stats.events_dropped += 1;
    }
}

/// The parts of a media packet needed to write it for a subscriber.
struct MediaRef<'a> {
    c: u64,
    timestamp: u32,
    marker: bool,
    abs_send_time: Option<[u8; 3]>,
    audio_level: Option<u8>,
    csrc_bytes: &'a [u8],
    payload: &'a [u8],
    /// The payload's buffer in the NACK cache, which a recording sink holds instead of copying.
    shared: Option<&'a std::sync::Arc<Vec<u8>>>,
}

impl<'a> MediaRef<'a> {
    fn from_cached(p: &'a CachedPacket, c: u64) -> Self {
        Self {
            c,
            timestamp: p.timestamp,
            marker: p.marker,
            abs_send_time: p.abs_send_time,
            audio_level: p.audio_level,
            csrc_bytes: p.csrc_bytes(),
            payload: p.payload(),
            shared: p.lent_payload(),
        }
    }

    /// The same packet with another payload (a RED packet's rewritten or primary form), which a
    /// recording sink then copies.
    fn with_payload<'b>(&self, payload: &'b [u8]) -> MediaRef<'b>
    where
        'a: 'b,
    {
        MediaRef {
            payload,
            shared: None,
            ..*self
        }
    }
}

/// Writes `m` as the subscription's packet: to its transport through `out`, or into its sink.
fn write_for_sub(
    out: &mut Output,
    sub: &mut Subscription,
    dl: Option<&mut Downlink>,
    sub_pt: u8,
    m: &MediaRef<'_>,
    now_ms: u64,
) -> (u16, u32, usize) {
    let seq = (m.c as u16).wrapping_add(sub.seq_offset);
    let ts = m.timestamp.wrapping_add(sub.ts_offset);
    let level;
    let mut exts: [(u8, &[u8]); 3] = [(0, &[]), (0, &[]), (0, &[])];
    let mut n = 0;
    // Every packet to a transport-cc subscriber carries the next transport-wide sequence number;
    // a paced one gets it when the pacer lets it go (0 until then).
    let mut dl = dl.filter(|_| sub.sink.is_none());
    let paced = sub.video && dl.as_deref().is_some_and(|d| d.pacer.active());
    let twcc = match dl.as_deref_mut() {
        Some(d) if paced => (d.twcc_id != 0).then_some((d.twcc_id, 0)),
        Some(d) => d.next_seq().map(|s| (d.twcc_id, s)),
        None => None,
    };
    let twcc_bytes = twcc.map_or([0; 2], |(_, s)| s.to_be_bytes());
    if let Some((id, _)) = twcc {
        exts[n] = (id, &twcc_bytes[..]);
        n += 1;
    }
    if let (Some(v), id) = (&m.abs_send_time, sub.ext.abs_send_time) {
        if id != 0 {
            exts[n] = (id, &v[..]);
            n += 1;
        }
    }
    if let (Some(v), id) = (m.audio_level, sub.ext.audio_level) {
        if id != 0 {
            level = [v];
            exts[n] = (id, &level[..]);
            n += 1;
        }
    }
    let h = HeaderOut {
        marker: m.marker,
        payload_type: sub_pt,
        seq,
        timestamp: ts,
        ssrc: sub.ssrc,
        csrc_bytes: m.csrc_bytes,
        extensions: &exts[..n],
    };
    let mut len = 0;
    match (sub.sink.as_deref_mut(), dl.as_deref_mut()) {
        (Some(sink), _) => {
            let header = RtpFields {
                ssrc: sub.ssrc,
                seq,
                timestamp: ts,
                marker: m.marker,
            };
            let payload = m
                .shared
                .map_or_else(|| Arc::new(m.payload.to_vec()), Arc::clone);
            sink.push(header, payload, now_ms);
            len = 12 + m.payload.len();
        }
        // (`paced` only with a downlink: its pacer holds the packet.)
        (None, Some(d)) if paced => {
            let mut buf = d.pacer.buffer();
            rtp::write_packet(&mut buf, &h, m.payload);
            len = buf.len();
            // Where the writer put the transport-wide number (it is the first extension).
            let twcc_at = twcc.and_then(|(id, _)| {
                let v = RtpView::parse(&buf).ok()?;
                let at = v.extension(id)?.as_ptr() as usize - buf.as_ptr() as usize;
                Some(at)
            });
            d.pacer.push(buf, twcc_at);
            return (seq, ts, len);
        }
        (None, _) => out.push_with(sub.transport, |buf| {
            let start = buf.len();
            rtp::write_packet(buf, &h, m.payload);
            len = buf.len() - start;
        }),
    }
    if let Some(d) = dl {
        if let Some((_, s)) = twcc {
            d.bwe.on_packet_sent(
                s,
                len + downlink::PACKET_OVERHEAD_BYTES,
                now_ms * 1000,
                false,
            );
        }
        d.pacer.spent(len);
    }
    (seq, ts, len)
}

impl Router {
    pub fn new(cfg: RouterConfig, seed: u64) -> Self {
        Self {
            cfg,
            rng: Rng(seed),
            publishers: FastMap::default(),
            tracks: FastMap::default(),
            track_by_ssrc: FastMap::default(),
            sub_track: FastMap::default(),
            sub_by_ssrc: FastMap::default(),
            downlinks: FastMap::default(),
            stats: RouterStats::default(),
            events: Vec::new(),
            red_scratch: Vec::new(),
            allocation_stale: true,
            next_upkeep_ms: 0,
        }
    }

    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    /// Events since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<RouterEvent> {
        std::mem::take(&mut self.events)
    }

    // ------------------------------------------------------------------ control

    /// Declares (or updates) a publishing transport: the SSRC it uses for our RTCP toward it and its
    /// negotiated header-extension ids.
    pub fn add_publisher(&mut self, transport: TransportId, rtcp_ssrc: u32, ext: ExtensionIds) {
        let p = self
            .publishers
            .entry(transport)
            .or_insert_with(|| Publisher {
                rtcp_ssrc,
                ext,
                tracks: Vec::new(),
                remb_due: true,
                last_remb_ms: None,
                rrtr_sent: [(0, 0); SR_HISTORY],
                rrtr_next: 0,
                rtt_us: None,
                twcc: None,
            });
        p.rtcp_ssrc = rtcp_ssrc;
        p.ext = ext;
    }

    pub fn add_track(
        &mut self,
        track: TrackId,
        transport: TransportId,
        kind: MediaKind,
        mid: Option<String>,
        codecs: Vec<Codec>,
        ssrcs: &[u32],
    ) -> Result<(), RouterError> {
        self.allocation_stale = true;
        if self.tracks.contains_key(&track) {
            return Err(RouterError::Duplicate("track", track.0));
        }
        if !self.publishers.contains_key(&transport) {
            return Err(RouterError::UnknownTransport(transport));
        }
        let mut pt_table = [PtEntry::Unknown; 128];
        for c in &codecs {
            if c.payload_type > 127 {
                return Err(RouterError::Invalid(format!(
                    "payload type {} > 127",
                    c.payload_type
                )));
            }
            if pt_table[c.payload_type as usize] != PtEntry::Unknown {
                return Err(RouterError::Invalid(format!(
                    "payload type {} listed twice",
                    c.payload_type
                )));
            }
            let ck = CodecKind::from_name(&c.name);
            pt_table[c.payload_type as usize] = if ck == CodecKind::Rtx {
                let apt = c.apt.ok_or_else(|| {
                    RouterError::Invalid(format!("rtx payload type {} has no apt", c.payload_type))
                })?;
                PtEntry::Rtx { apt }
            } else {
                PtEntry::Media {
                    kind: ck,
                    clock_rate: c.clock_rate.max(1),
                }
            };
        }
        for c in &codecs {
            if let Some(apt) = c
                .apt
                .filter(|_| CodecKind::from_name(&c.name) == CodecKind::Rtx)
            {
                if !matches!(pt_table.get(apt as usize), Some(PtEntry::Media { .. })) {
                    return Err(RouterError::Invalid(format!(
                        "rtx payload type {} names apt {apt}, which is not a media codec of the track",
                        c.payload_type
                    )));
                }
            }
        }
        for s in ssrcs {
            if self.track_by_ssrc.contains_key(&(transport, *s)) {
                return Err(RouterError::SsrcInUse(*s));
            }
        }
        for s in ssrcs {
            self.track_by_ssrc.insert((transport, *s), track);
        }
        let publisher = self.publishers.get_mut(&transport).expect("checked above");
        publisher.tracks.push(track);
        if kind == MediaKind::Video && !ssrcs.is_empty() {
            publisher.remb_due = true;
        }
        self.tracks.insert(
            track,
            Track {
                id: track,
                transport,
                kind,
                mid,
                codecs,
                pt_table,
                media_ssrc: None,
                rtx_ssrc: None,
                ssrcs: ssrcs.to_vec(),
                seq: SeqUnwrapper::new(),
                gaps: SeqCompressor::default(),
                cache: self.cfg.track_cache(kind),
                subs: Vec::new(),
                last_pli_ms: None,
                pli_pending: false,
                has_sink: false,
                reception: ReceptionStats::default(),
                last_media_pt: None,
                missing: Vec::new(),
                last_packet_ms: 0,
                rate: RateWindow::default(),
                stats: TrackStats::default(),
                layered: None,
            },
        );
        Ok(())
    }

    /// Removes a track and its subscriptions; false if it did not exist.
    pub fn remove_track(&mut self, track: TrackId) -> bool {
        self.allocation_stale = true;
        let Some(t) = self.tracks.remove(&track) else {
            return false;
        };
        for s in &t.ssrcs {
            self.track_by_ssrc.remove(&(t.transport, *s));
        }
        for sub in &t.subs {
            self.sub_track.remove(&sub.id);
            self.sub_by_ssrc.remove(&(sub.transport, sub.ssrc));
        }
        if let Some(p) = self.publishers.get_mut(&t.transport) {
            p.tracks.retain(|x| *x != track);
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    pub fn add_subscription(
        &mut self,
        sub: SubscriptionId,
        track: TrackId,
        transport: TransportId,
        ssrc: u32,
        codecs: &[Codec],
        ext: ExtensionIds,
    ) -> Result<(), RouterError> {
        self.allocation_stale = true;
        if self.sub_track.contains_key(&sub) {
            return Err(RouterError::Duplicate("subscription", sub.0));
        }
        if self.sub_by_ssrc.contains_key(&(transport, ssrc)) {
            return Err(RouterError::SsrcInUse(ssrc));
        }
        let t = self
            .tracks
            .get_mut(&track)
            .ok_or(RouterError::UnknownTrack(track))?;
        let mut pt_map = [0xffu8; 128];
        let mut any = false;
        for pc in t
            .codecs
            .iter()
            .filter(|c| CodecKind::from_name(&c.name) != CodecKind::Rtx)
        {
            let found = best_match(pc, codecs);
            if let Some(sc) = found {
                pt_map[pc.payload_type as usize] = sc.payload_type;
                any = true;
            }
        }
        if !any {
            return Err(RouterError::Invalid(format!(
                "subscription {sub}: no codec in common with track {track}"
            )));
        }
        // The subscriber's rtx codec whose apt is one of the codecs it receives this track in.
        let rtx_pt = codecs
            .iter()
            .filter(|c| CodecKind::from_name(&c.name) == CodecKind::Rtx)
            .find(|c| c.apt.is_some_and(|apt| pt_map.contains(&apt)))
            .map(|c| c.payload_type);
        let gated = t.kind == MediaKind::Video
            && t.pt_table
                .iter()
                .any(|e| matches!(e, PtEntry::Media { kind, .. } if kind.gated()));
        let next_seq = self.rng.next() as u16;
        let next_ts = self.rng.next() as u32;
        let mut paused = false;
        if transport != SINK_TRANSPORT {
            let cfg = &self.cfg;
            let dl = self
                .downlinks
                .entry(transport)
                .or_insert_with(|| Downlink::new(cfg, ext.transport_cc));
            if ext.transport_cc != 0 {
                dl.twcc_id = ext.transport_cc;
            }
            paused = dl.video_paused && t.kind == MediaKind::Video;
        }
        t.subs.push(Subscription {
            id: sub,
            transport,
            ssrc,
            pt_map,
            ext,
            gated,
            paused,
            started: false,
            start_c: 0,
            seq_offset: 0,
            ts_offset: 0,
            next_seq,
            next_ts,
            last_out: None,
            last_sr_sent_ms: None,
            sr_sent: [(0, 0); SR_HISTORY],
            sr_sent_next: 0,
            rate: RateWindow::default(),
            resend: ResendGate::default(),
            stats: SubscriptionStats {
                ssrc,
                waiting_keyframe: gated,
                paused,
                ..Default::default()
            },
            sink: None,
            rtx_pt,
            rtx: None,
            video: t.kind == MediaKind::Video,
        });
        if gated {
            t.pli_pending = true; // poll() asks the publisher for a keyframe right away
        }
        self.sub_track.insert(sub, track);
        self.sub_by_ssrc.insert((transport, ssrc), sub);
        Ok(())
    }

    /// The SSRC of the RTX stream the subscriber announced for `sub` (its SDP's FID group). With
    /// an RTX payload type negotiated, probes toward a downlink whose video flows are sent there
    /// as padding. Returns whether the subscription can carry them.
    pub fn set_subscription_rtx(
        &mut self,
        sub: SubscriptionId,
        ssrc: u32,
    ) -> Result<bool, RouterError> {
        let track = self
            .sub_track
            .get(&sub)
            .ok_or_else(|| RouterError::Invalid(format!("unknown subscription {sub}")))?;
        let t = self
            .tracks
            .get_mut(track)
            .ok_or(RouterError::UnknownTrack(*track))?;
        let next_seq = self.rng.next() as u16;
        let s = t
            .subs
            .iter_mut()
            .find(|s| s.id == sub)
            .ok_or_else(|| RouterError::Invalid(format!("unknown subscription {sub}")))?;
        if ssrc == s.ssrc {
            return Err(RouterError::SsrcInUse(ssrc));
        }
        s.rtx = s
            .rtx_pt
            .map(|pt| downlink::RtxStream::new(ssrc, pt, next_seq));
        Ok(s.rtx.is_some())
    }

    pub fn remove_subscription(&mut self, sub: SubscriptionId) -> bool {
        self.allocation_stale = true;
        let Some(track) = self.sub_track.remove(&sub) else {
            return false;
        };
        if let Some(t) = self.tracks.get_mut(&track) {
            if let Some(i) = t.subs.iter().position(|s| s.id == sub) {
                let s = t.subs.swap_remove(i);
                self.sub_by_ssrc.remove(&(s.transport, s.ssrc));
            }
        }
        true
    }

    /// Removes everything published or subscribed on `transport`; false if nothing was there.
    pub fn remove_transport(&mut self, transport: TransportId) -> bool {
        self.allocation_stale = true;
        let mut any = self.publishers.remove(&transport).is_some();
        any |= self.downlinks.remove(&transport).is_some();
        let published: Vec<TrackId> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.transport == transport)
            .map(|(id, _)| *id)
            .collect();
        for t in published {
            any |= self.remove_track(t);
        }
        let subscribed: Vec<SubscriptionId> = self
            .sub_by_ssrc
            .iter()
            .filter(|((tr, _), _)| *tr == transport)
            .map(|(_, s)| *s)
            .collect();
        for s in subscribed {
            any |= self.remove_subscription(s);
        }
        any
    }

    pub fn track_stats(&self, track: TrackId) -> Option<TrackStats> {
        self.tracks.get(&track).map(|t| {
            let mut s = t.stats.clone();
            s.media_ssrc = t.media_ssrc;
            s.rtx_ssrc = t.rtx_ssrc;
            s.subscriptions = t.subs.len();
            (s.lost, s.jitter) = match t.layered.as_deref() {
                Some(l) => l.reception(),
                None => (t.reception.lost(), t.reception.jitter()),
            };
            s.rtt_us = self.publishers.get(&t.transport).and_then(|p| p.rtt_us);
            s
        })
    }

    pub fn subscription_stats(&self, sub: SubscriptionId) -> Option<SubscriptionStats> {
        let t = self.tracks.get(self.sub_track.get(&sub)?)?;
        t.subs.iter().find(|s| s.id == sub).map(|s| {
            let mut st = s.stats.clone();
            st.estimate_bps = self.downlinks.get(&s.transport).and_then(|d| d.estimate());
            st.paused = s.paused;
            st
        })
    }

    /// A subscriber transport's estimate and allocation (None: it subscribes to nothing).
    pub fn downlink_stats(&self, transport: TransportId) -> Option<DownlinkStats> {
        self.downlinks.get(&transport).map(|d| DownlinkStats {
            transport_cc: d.twcc_id != 0,
            estimate_bps: d.estimate(),
            audio_bps: d.audio_bps,
            video_streams: d.video_streams,
            video_paused: d.video_paused,
            pauses: d.pauses,
            padding_packets: d.padding_packets,
            padding_bytes: d.padding_bytes,
            pacing: d.pacer.active(),
            paced: d.pacer.paced,
            paced_dropped: d.pacer.dropped,
            red_lean: d.red_lean,
        })
    }

    // ------------------------------------------------------------------ RTP

    /// Finds the track for an unknown SSRC: the mid header extension first, else a payload type that
    /// only one track of the transport uses.
    fn bind_ssrc(&mut self, transport: TransportId, v: &RtpView<'_>) -> Option<TrackId> {
        let p = self.publishers.get(&transport)?;
        let mut found = None;
        if let Some(mid) = v.extension(p.ext.mid) {
            found = p.tracks.iter().copied().find(|id| {
                self.tracks[id]
                    .mid
                    .as_deref()
                    .is_some_and(|m| m.as_bytes() == mid)
            });
        }
        if found.is_none() {
            let mut candidates =
                p.tracks.iter().copied().filter(|id| {
                    self.tracks[id].pt_table[v.payload_type as usize] != PtEntry::Unknown
                });
            let first = candidates.next();
            if candidates.next().is_none() {
                found = first;
            }
        }
        let id = found?;
        let t = self.tracks.get_mut(&id)?;
        // Bounds the state a publisher can make us keep by spraying SSRCs.
        if t.ssrcs.len() >= MAX_SSRCS_PER_TRACK {
            return None;
        }
        t.ssrcs.push(v.ssrc);
        self.track_by_ssrc.insert((transport, v.ssrc), id);
        Some(id)
    }

    /// Routes one RTP packet from a publisher; forwarded copies are appended to `out`.
    pub fn route_rtp(
        &mut self,
        transport: TransportId,
        packet: &[u8],
        now_ms: u64,
        out: &mut Output,
    ) {
        self.stats.rtp_packets_in += 1;
        self.stats.rtp_bytes_in += packet.len() as u64;
        let v = match RtpView::parse(packet) {
            Ok(v) => v,
            Err(_) => return self.stats.drop(DropReason::Malformed),
        };
        let track_id = match self.track_by_ssrc.get(&(transport, v.ssrc)) {
            Some(id) => *id,
            None => match self.bind_ssrc(transport, &v) {
                Some(id) => id,
                None => return self.stats.drop(DropReason::UnknownSsrc),
            },
        };
        let ext_ids = match self.publishers.get_mut(&transport) {
            Some(p) => {
                if let Some(d) = v.extension(p.ext.transport_cc).filter(|d| d.len() == 2) {
                    let twcc = p.twcc.get_or_insert_with(|| {
                        Box::new(crate::twcc::TwccRecorder::new(
                            p.rtcp_ssrc,
                            v.ssrc,
                            TWCC_FEEDBACK_INTERVAL_MS * 1000,
                        ))
                    });
                    twcc.record(u16::from_be_bytes([d[0], d[1]]), now_ms * 1000);
                }
                p.ext
            }
            None => ExtensionIds::default(),
        };
        let Router {
            tracks,
            stats,
            publishers,
            events,
            downlinks,
            red_scratch,
            ..
        } = self;
        let Some(t) = tracks.get_mut(&track_id) else {
            return stats.drop(DropReason::UnknownSsrc);
        };
        t.stats.packets += 1;
        t.stats.bytes += packet.len() as u64;
        t.last_packet_ms = now_ms;
        if !t.stats.active {
            t.stats.active = true;
            stats.tracks_started += 1;
            push_event(events, stats, RouterEvent::TrackStarted { track: track_id });
        }
        if t.layered.is_some() {
            let abs_send_time = ext_ids.abs_send_time;
            return simulcast::route_layered(t, stats, downlinks, &v, abs_send_time, now_ms, out);
        }

        // Resolve RTX to the original packet.
        let (seq, media_pt, payload, is_rtx) = match t.pt_table[v.payload_type as usize] {
            PtEntry::Unknown => return stats.drop(DropReason::UnknownPayloadType),
            PtEntry::Rtx { apt } => {
                stats.rtx_in += 1;
                t.stats.rtx_packets += 1;
                if t.rtx_ssrc.is_none() && Some(v.ssrc) != t.media_ssrc {
                    t.rtx_ssrc = Some(v.ssrc);
                }
                let p = v.payload();
                if p.is_empty() {
                    t.stats.padding_only += 1;
                    return stats.drop(DropReason::PaddingOnly);
                }
                if p.len() <= 2 || t.media_ssrc.is_none() {
                    return stats.drop(DropReason::RtxUnwrapFailed);
                }
                (u16::from_be_bytes([p[0], p[1]]), apt, &p[2..], true)
            }
            PtEntry::Media { .. } => {
                if t.media_ssrc != Some(v.ssrc) {
                    if Some(v.ssrc) == t.rtx_ssrc {
                        // Media PT on the RTX SSRC: the SSRC roles were guessed wrong; swap them.
                        t.rtx_ssrc = None;
                    }
                    let switching = t.media_ssrc.is_some();
                    t.media_ssrc = Some(v.ssrc);
                    if t.kind == MediaKind::Video {
                        if let Some(p) = publishers.get_mut(&t.transport) {
                            p.remb_due = true;
                        }
                    }
                    if switching {
                        // New sequence space: restart unwrapping; subscribers continue seamlessly.
                        t.seq = SeqUnwrapper::new();
                        t.gaps = SeqCompressor::default();
                        t.cache = t.cache.emptied();
                        t.reception = ReceptionStats::default();
                        // The old stream's NTP/RTP mapping says nothing about the new timestamps.
                        t.stats.last_sr = None;
                        for s in &mut t.subs {
                            s.started = false;
                            s.stats.waiting_keyframe = s.gated;
                        }
                    }
                }
                (v.seq, v.payload_type, v.payload(), false)
            }
        };
        let codec_kind = match t.pt_table[media_pt as usize & 0x7f] {
            PtEntry::Media { kind, .. } => kind,
            _ => return stats.drop(DropReason::RtxUnwrapFailed),
        };
        let prev_highest = t.seq.highest();
        let ext = t.seq.unwrap(seq);
        t.stats.last_seq = Some(seq);
        arrived(&mut t.missing, ext);
        if !is_rtx && t.kind == MediaKind::Video {
            note_missing(&mut t.missing, prev_highest, ext, now_ms);
        }

        if payload.is_empty() {
            // Padding only (bandwidth probing): never forwarded. When it is the newest packet, no
            // subscriber has anything numbered after it yet, so it can be cut out of the sequence space.
            if !is_rtx && prev_highest.is_none_or(|h| ext > h) {
                t.gaps.remove(ext);
                let clock_rate = t.clock_rate(media_pt);
                t.reception.on_packet(ext, v.timestamp, now_ms, clock_rate);
            }
            t.stats.padding_only += 1;
            return stats.drop(DropReason::PaddingOnly);
        }
        // RED's block headers are read once here; per subscriber they decide between passing it
        // on and sending its primary block alone. One that does not fit its payload goes nowhere
        // (and, when newest, out of the sequence space, as padding does).
        let red = match codec_kind {
            CodecKind::Red => match crate::red::RedPayload::parse(payload) {
                Ok(r) => Some(r),
                Err(_) => {
                    if !is_rtx && prev_highest.is_none_or(|h| ext > h) {
                        t.gaps.remove(ext);
                    }
                    return stats.drop(DropReason::MalformedRed);
                }
            },
            _ => None,
        };

        let abs_send_time = v
            .extension(ext_ids.abs_send_time)
            .and_then(|d| d.try_into().ok());
        let audio_level = v
            .extension(ext_ids.audio_level)
            .and_then(|d| d.first().copied());
        let clock_rate = t.clock_rate(media_pt);
        match t.cache.insert_timed(
            &PacketToCache {
                ext_seq: ext,
                timestamp: v.timestamp,
                marker: v.marker,
                payload_type: media_pt,
                abs_send_time,
                audio_level,
                csrc_bytes: v.csrc_bytes(),
                payload,
            },
            clock_rate,
        ) {
            Insert::Stored => {}
            Insert::Duplicate => {
                t.stats.duplicates += 1;
                return stats.drop(DropReason::Duplicate);
            }
            Insert::TooOld => return stats.drop(DropReason::TooOld),
        }

        let is_key = codec_kind.gated() && is_keyframe_start(codec_kind, payload);
        if is_key {
            t.stats.keyframes += 1;
            stats.keyframes_in += 1;
        }
        t.stats.payload_bytes += payload.len() as u64;
        stats.payload_bytes_in += payload.len() as u64;
        t.reception.on_packet(ext, v.timestamp, now_ms, clock_rate);
        t.last_media_pt = Some(media_pt);

        if let (Some(r), false, Some(h)) = (&red, is_rtx, prev_highest) {
            if ext > h + 1 {
                let carrier = Carrier {
                    red: r,
                    payload,
                    pt: media_pt,
                    timestamp: v.timestamp,
                    csrc_bytes: v.csrc_bytes(),
                };
                recover_red(t, stats, downlinks, out, &carrier, h, ext, now_ms);
            }
        }
        let m = MediaRef {
            c: t.gaps.compress(ext),
            timestamp: v.timestamp,
            marker: v.marker,
            abs_send_time,
            audio_level,
            csrc_bytes: v.csrc_bytes(),
            payload,
            // Only a recording sink holds a payload instead of copying it.
            shared: if t.has_sink { t.cache.lend(ext) } else { None },
        };
        let media = Media {
            m,
            pt: media_pt,
            red: red.as_ref(),
            is_key,
            clock_rate,
        };
        forward(
            &mut t.subs,
            stats,
            downlinks,
            red_scratch,
            out,
            &media,
            now_ms,
        );
    }
}

/// One packet of a track on its way to the subscribers.
struct Media<'a> {
    m: MediaRef<'a>,
    /// Its payload type (the publisher's).
    pt: u8,
    /// Its RED block headers, when it is a RED packet.
    red: Option<&'a crate::red::RedPayload>,
    is_key: bool,
    clock_rate: u32,
}

/// How a RED packet goes to `sub`: as RED (rewritten if its types differ) when it negotiated RED
/// and its link has room, else its primary block alone (`Downlink::update_red_lean`).
fn red_forward(
    r: &crate::red::RedPayload,
    payload: &[u8],
    sub: &Subscription,
    sub_pt: u8,
    downlinks: &FastMap<TransportId, Downlink>,
) -> crate::red::RedForward {
    use crate::red::RedForward;
    let lean = downlinks.get(&sub.transport).is_some_and(|d| d.red_lean);
    match r.forward_as(payload, &sub.pt_map, if lean { 0xff } else { sub_pt }) {
        RedForward::NotNegotiated if lean => r.forward_as(payload, &sub.pt_map, sub_pt),
        f => f,
    }
}

/// Sends one packet to every subscription of its track, each in its own numbering.
fn forward(
    subs: &mut [Subscription],
    stats: &mut RouterStats,
    downlinks: &mut FastMap<TransportId, Downlink>,
    red_scratch: &mut Vec<u8>,
    out: &mut Output,
    media: &Media<'_>,
    now_ms: u64,
) {
    let Media {
        m,
        pt: media_pt,
        red,
        is_key,
        clock_rate,
    } = media;
    let (payload, is_key) = (m.payload, *is_key);
    for sub in subs {
        if sub.paused {
            sub.stats.dropped_paused += 1;
            stats.drop(DropReason::VideoPaused);
            continue;
        }
        if !sub.started {
            if sub.gated && !is_key {
                sub.stats.dropped_waiting_keyframe += 1;
                stats.drop(DropReason::WaitingKeyframe);
                continue;
            }
            // Fix the offsets: continue after the previous stream if there was one, else start
            // from the random values chosen at subscription time.
            if let Some((last_seq, last_ts, last_ms)) = sub.last_out {
                let elapsed = now_ms.saturating_sub(last_ms);
                let advance = (elapsed.saturating_mul(*clock_rate as u64) / 1000)
                    .clamp(1, u32::MAX as u64 / 2) as u32;
                sub.next_seq = last_seq.wrapping_add(1);
                sub.next_ts = last_ts.wrapping_add(advance);
            }
            sub.started = true;
            sub.start_c = m.c;
            sub.seq_offset = sub.next_seq.wrapping_sub(m.c as u16);
            sub.ts_offset = sub.next_ts.wrapping_sub(m.timestamp);
            sub.stats.waiting_keyframe = false;
        } else if m.c < sub.start_c {
            stats.drop(DropReason::BeforeSubscriptionStart);
            continue;
        }
        let mut sub_pt = sub.pt_map[*media_pt as usize & 0x7f];
        // A RED packet's payload as this subscriber gets it, when not the original.
        let mut sent: Option<&[u8]> = None;
        if let Some(r) = red {
            use crate::red::RedForward;
            sub_pt = match red_forward(r, payload, sub, sub_pt, downlinks) {
                RedForward::AsIs(pt) => pt,
                RedForward::Rewritten(pt) => {
                    red_scratch.clear();
                    r.write_mapped(payload, &sub.pt_map, red_scratch);
                    sent = Some(&red_scratch[..]);
                    pt
                }
                RedForward::Primary(pt) => {
                    sent = Some(r.primary(payload));
                    pt
                }
                RedForward::NotNegotiated => 0xff,
            };
        }
        if sub_pt == 0xff {
            stats.drop(DropReason::CodecNotNegotiated);
            continue;
        }
        send_one(out, sub, stats, downlinks, sub_pt, m, sent, is_key, now_ms);
    }
}

/// Writes one packet for `sub` (its payload replaced by `sent` when given) and counts it.
#[allow(clippy::too_many_arguments)]
fn send_one(
    out: &mut Output,
    sub: &mut Subscription,
    stats: &mut RouterStats,
    downlinks: &mut FastMap<TransportId, Downlink>,
    sub_pt: u8,
    m: &MediaRef<'_>,
    sent: Option<&[u8]>,
    is_key: bool,
    now_ms: u64,
) {
    let dl = downlinks.get_mut(&sub.transport);
    let sent_len = sent.map_or(m.payload.len(), <[u8]>::len);
    let (seq, ts, len) = match sent {
        Some(p) => write_for_sub(out, sub, dl, sub_pt, &m.with_payload(p), now_ms),
        None => write_for_sub(out, sub, dl, sub_pt, m, now_ms),
    };
    let newest = sub
        .last_out
        .is_none_or(|(s, _, _)| crate::seq::seq_newer(seq, s));
    if newest {
        sub.last_out = Some((seq, ts, now_ms));
        sub.stats.last_seq = Some(seq);
        sub.stats.last_timestamp = Some(ts);
    }
    sub.stats.packets += 1;
    sub.stats.bytes += len as u64;
    sub.stats.payload_bytes += sent_len as u64;
    if is_key {
        sub.stats.keyframes += 1;
    }
    if sub.sink.is_none() {
        // Sent on the network; a recording sink's copy never leaves the server.
        stats.rtp_packets_out += 1;
        stats.rtp_bytes_out += len as u64;
        stats.payload_bytes_out += sent_len as u64;
    }
}
