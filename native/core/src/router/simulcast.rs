//! Simulcast tracks in the router: one track whose spatial layers arrive on separate SSRCs (learned
//! from the RID header extension, or listed up front from `a=ssrc-group:SIM`). Every subscription
//! gets one layer through its own `LayerSelector`; the layer is picked from the subscriber's video
//! share (the downlink allocation; its REMB without one) and the resolution it asked for at most. Packets of a layer nobody receives
//! or waits for are dropped right after the SSRC lookup.
//!
//! A subscriber's NACKs are answered from the layers' own caches, each packet under the number and
//! with the VP8 descriptor it was first sent with. A loss on the way in, on a layer someone
//! receives, is NACKed to the publisher on that layer's SSRC; the repair arrives on the layer's
//! RTX stream (named by the repaired-RID extension or a FID group), is unwrapped into the layer's
//! cache and goes to the layer's subscribers under the number each kept free for it (the selector
//! leaves real loss as a hole). Sender reports to their subscribers come from the publisher's
//! report on the layer each one was last sent, in that subscriber's timestamp space. Each layer
//! keeps its own reception statistics: the publisher gets a receiver report block per layer SSRC.

use super::layers::{Decision, LayerDrop, LayerPacket, LayerSelector, MAX_SPATIAL_LAYERS};
use super::*;
use crate::rtcp::ReportBlock;

/// Most SSRCs one layered track learns, of media and of RTX each.
const MAX_LAYER_SSRCS: usize = 6;
/// How often each subscriber's target layers are recomputed.
const RETARGET_MS: u64 = 250;
/// Window over which a layer's bitrate is measured.
const RATE_WINDOW_MS: u64 = 1000;
/// A layer silent for this long is not picked (the publisher stopped sending it).
const LAYER_IDLE_MS: u64 = 1500;
/// Up-switch only when the higher layer uses at most this share of the estimate (in percent).
const UP_SWITCH_PERCENT: u64 = 85;
/// An up-switch that the subscriber's budget held back waits until the budget has allowed it for
/// this long: an estimate that jumps for a moment (a probe through a token bucket's burst) must not
/// put a layer the link cannot carry on it, and a switch costs a keyframe each way.
const UP_HOLD_MS: u64 = 2_000;
/// Output numbers remembered per subscriber (to find what a NACK names in the layers' caches).
const SENT_RING: usize = 1024;

struct LayerIn {
    ssrc: Option<u32>,
    /// Its RTX stream (RFC 4588): learned from the repaired-RID extension, or given (FID group).
    rtx_ssrc: Option<u32>,
    seq: SeqUnwrapper,
    /// Packets lost on the way in, NACKed to the publisher on this layer's SSRC.
    missing: Vec<Missing>,
    /// Packets that arrived only on the RTX stream.
    repaired: u64,
    /// This layer's recent packets, for retransmissions to its subscribers.
    cache: NackCache,
    window_start_ms: u64,
    window_bytes: u64,
    rate_bps: u64,
    height: Option<u16>,
    last_packet_ms: Option<u64>,
    /// The publisher's last sender report on this layer's SSRC: (NTP, RTP timestamp, when).
    last_sr: Option<(u64, u32, u64)>,
    /// Loss and jitter on the way in, for the receiver reports on this layer's SSRC.
    reception: ReceptionStats,
}

impl LayerIn {
    fn new(cache: NackCache) -> Self {
        Self {
            ssrc: None,
            rtx_ssrc: None,
            seq: SeqUnwrapper::new(),
            missing: Vec::new(),
            repaired: 0,
            cache,
            window_start_ms: 0,
            window_bytes: 0,
            rate_bps: 0,
            height: None,
            last_packet_ms: None,
            last_sr: None,
            reception: ReceptionStats::default(),
        }
    }
}

/// What a subscriber was sent under one output sequence number, to resend it when NACKed.
#[derive(Debug, Clone, Copy, Default)]
struct SentAs {
    seq: u16,
    layer: u8,
    src_ext: u64,
    ts_offset: u32,
    picture_id: Option<u16>,
    tl0: Option<u8>,
    valid: bool,
}

struct SubLayers {
    id: SubscriptionId,
    sel: LayerSelector,
    max_height: Option<u16>,
    was_paused: bool,
    /// When its budget last kept it below a layer it would otherwise get (see `UP_HOLD_MS`).
    budget_limited_ms: Option<u64>,
    /// Output sequence number -> source packet (allocated at the first packet sent).
    sent: Vec<SentAs>,
}

/// Simulcast state of one track.
pub(super) struct Layered {
    rid_ext: u8,
    /// The repaired-RID extension naming the layer an RTX packet repairs (0: not negotiated).
    repaired_rid_ext: u8,
    rids: Vec<Vec<u8>>,
    ssrc_layer: Vec<(u32, u8)>,
    rtx_ssrc_layer: Vec<(u32, u8)>,
    layers: Vec<LayerIn>,
    subs: Vec<SubLayers>,
    next_retarget_ms: u64,
    scratch: Vec<u8>,
}

/// Layers of one simulcast track as the router sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerInfo {
    pub ssrc: Option<u32>,
    pub bitrate_bps: u64,
    pub height: Option<u16>,
    /// Its RTX stream's SSRC, once known.
    pub rtx_ssrc: Option<u32>,
    /// Packets lost on the way in that its RTX stream brought.
    pub repaired: u64,
    /// Slots of its retransmission ring (it grows to hold `nack_history_ms` of media).
    pub cache_packets: usize,
    /// Packets lost on the way in (RFC 3550 cumulative: expected less received; repairs count
    /// as received) and interarrival jitter in RTP units, as reported to the publisher.
    pub lost: i64,
    pub jitter: u32,
}

/// A subscription's layer state: (spatial, temporal) it receives (None while waiting for the
/// first keyframe), and the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriptionLayers {
    pub current: Option<(u8, u8)>,
    pub target: (u8, u8),
    pub max_height: Option<u16>,
    pub spatial_switches: u64,
    pub temporal_switches: u64,
    pub dropped_temporal: u64,
    pub vp8_malformed: u64,
}

/// The layers a subscriber should get: the highest spatial layer that is active, fits its cap
/// (a layer of unknown height only when it is the lowest) and its estimate (with headroom to go
/// up); on the lowest layer, fewer temporal layers when even that exceeds the estimate.
pub fn pick_layers(
    layers: &[(u64, Option<u16>, bool)],
    budget_bps: Option<u64>,
    max_height: Option<u16>,
    current_spatial: Option<u8>,
) -> (u8, u8) {
    let fits_cap = |s: usize, h: Option<u16>| match (max_height, h) {
        (None, _) => true,
        (Some(cap), Some(h)) => h <= cap,
        (Some(_), None) => s == 0,
    };
    let fits_budget = |s: usize, rate: u64| match budget_bps {
        None => true,
        Some(b) if current_spatial.is_some_and(|c| s > c as usize) => {
            rate <= b / 100 * UP_SWITCH_PERCENT
        }
        Some(b) => rate <= b,
    };
    let spatial = (1..layers.len())
        .rev()
        .find(|&s| {
            let (rate, h, active) = layers[s];
            active && fits_cap(s, h) && fits_budget(s, rate)
        })
        .unwrap_or(0);
    let temporal = match (spatial, budget_bps, layers.first()) {
        (0, Some(b), Some(&(rate, _, _))) if rate > b => {
            // TL0 is about 60 % of an L1T3 stream's rate, TL0+TL1 about 80 %.
            if b >= rate / 10 * 8 {
                1
            } else {
                0
            }
        }
        _ => layers::MAX_TEMPORAL_LAYER,
    };
    (spatial as u8, temporal)
}

impl Layered {
    /// The layer of a media packet: by its SSRC once known, else its RID (which binds the SSRC).
    /// A RID on a new SSRC is a new stream on its layer (the publisher restarted it): the layer's
    /// input starts over (numbering, cache, losses, reports; true in the second field) and the old
    /// SSRC and its RTX SSRC are forgotten.
    fn layer_of(&mut self, v: &RtpView<'_>) -> Option<(u8, bool)> {
        if let Some(&(_, l)) = self.ssrc_layer.iter().find(|(s, _)| *s == v.ssrc) {
            return Some((l, false));
        }
        let rid = v.extension(self.rid_ext)?;
        let layer = self.rids.iter().position(|r| r.as_slice() == rid)? as u8;
        self.ssrc_layer.retain(|(_, l)| *l != layer);
        if self.ssrc_layer.len() >= MAX_LAYER_SSRCS {
            return None;
        }
        self.ssrc_layer.push((v.ssrc, layer));
        let li = &mut self.layers[layer as usize];
        let restarted = li.ssrc.is_some();
        if restarted {
            // The old stream's RTX too: a late repair from it would fill the new stream's loss
            // with another frame's payload. The new RTX stream binds by its repaired-RID.
            self.rtx_ssrc_layer.retain(|(_, l)| *l != layer);
            li.rtx_ssrc = None;
            li.seq = SeqUnwrapper::new();
            li.cache = li.cache.emptied();
            li.missing.clear();
            li.reception = ReceptionStats::default();
            li.last_sr = None; // the old stream's NTP/RTP mapping says nothing of the new one
            for s in &mut self.subs {
                if s.sel.current().is_some_and(|c| c.0 == layer) {
                    s.sel.restart(); // on at the new stream's keyframe, numbering on
                }
            }
        }
        li.ssrc = Some(v.ssrc);
        Some((layer, restarted))
    }

    /// The layer an RTX packet repairs: by its SSRC once known, else the repaired-RID extension
    /// (which then binds the SSRC). None for an RTX stream of no known layer.
    fn rtx_layer_of(&mut self, v: &RtpView<'_>) -> Option<u8> {
        if let Some(&(_, l)) = self.rtx_ssrc_layer.iter().find(|(s, _)| *s == v.ssrc) {
            return Some(l);
        }
        let rid = v.extension(self.repaired_rid_ext)?;
        let layer = self.rids.iter().position(|r| r.as_slice() == rid)? as u8;
        if self.rtx_ssrc_layer.len() >= MAX_LAYER_SSRCS
            || self.ssrc_layer.iter().any(|(s, _)| *s == v.ssrc)
        {
            return None;
        }
        self.rtx_ssrc_layer.push((v.ssrc, layer));
        self.layers[layer as usize].rtx_ssrc = Some(v.ssrc);
        Some(layer)
    }

    /// A receiver report block for each layer heard from since the last report (a layer the
    /// publisher stopped sending is not reported), at most `room` of them; a layer's interval moves
    /// on only when its block is taken.
    pub(super) fn report_blocks(
        &mut self,
        now_ms: u64,
        room: usize,
        mut f: impl FnMut(ReportBlock),
    ) {
        let mut left = room;
        for li in &mut self.layers {
            if left == 0 {
                return;
            }
            let Some(ssrc) = li.ssrc.filter(|_| li.reception.heard_since_report()) else {
                continue;
            };
            let last_sr = li.last_sr.map(|(ntp, _, at)| (ntp, at));
            if let Some(rb) = li.reception.report_block(ssrc, now_ms, last_sr) {
                f(rb);
                left -= 1;
            }
        }
    }

    /// Loss on the way in over all layers, and the highest layer jitter (RTP units).
    pub(super) fn reception(&self) -> (i64, u32) {
        self.layers.iter().fold((0, 0), |(lost, jitter), l| {
            (lost + l.reception.lost(), jitter.max(l.reception.jitter()))
        })
    }

    /// Whether some layer has packets to NACK.
    pub(super) fn any_missing(&self) -> bool {
        self.layers.iter().any(|l| !l.missing.is_empty())
    }

    /// Each layer's missing packets with the SSRC to NACK them on; a layer nobody receives any
    /// more has nothing to NACK.
    pub(super) fn each_missing(&mut self, mut f: impl FnMut(&mut Vec<Missing>, Option<u32>)) {
        for (i, li) in self.layers.iter_mut().enumerate() {
            if li.missing.is_empty() {
                continue;
            }
            let received = self
                .subs
                .iter()
                .any(|s| s.sel.current().map(|c| c.0 as usize) == Some(i));
            f(&mut li.missing, li.ssrc.filter(|_| received));
        }
    }

    fn account(&mut self, layer: u8, bytes: usize, now_ms: u64) {
        let l = &mut self.layers[layer as usize];
        if now_ms >= l.window_start_ms + RATE_WINDOW_MS {
            let span = now_ms - l.window_start_ms;
            l.rate_bps = if l.last_packet_ms.is_some() && span < 2 * RATE_WINDOW_MS {
                l.window_bytes * 8000 / span.max(1)
            } else {
                0
            };
            l.window_start_ms = now_ms;
            l.window_bytes = 0;
        }
        l.window_bytes += bytes as u64;
        l.last_packet_ms = Some(now_ms);
    }

    /// Recomputes every subscriber's target; true if some subscriber now waits for a keyframe.
    fn retarget(
        &mut self,
        subs: &[Subscription],
        downlinks: &FastMap<TransportId, Downlink>,
        now_ms: u64,
    ) -> bool {
        self.subs.retain(|s| subs.iter().any(|x| x.id == s.id));
        let layers: Vec<(u64, Option<u16>, bool)> = self
            .layers
            .iter()
            .map(|l| {
                let active = l.last_packet_ms.is_some_and(|t| now_ms < t + LAYER_IDLE_MS);
                (l.rate_bps, l.height, active)
            })
            .collect();
        let mut wants = false;
        for sub in subs {
            let sl = self.sub_entry(sub);
            // The allocation's share for this video stream, else the subscriber's REMB.
            let budget = downlinks
                .get(&sub.transport)
                .and_then(|d| d.video_share())
                .or(sub.stats.remb_bps);
            let current = sl.sel.current().map(|c| c.0);
            let (mut s, mut t) = pick_layers(&layers, budget, sl.max_height, current);
            if let Some(c) = current {
                let unlimited = pick_layers(&layers, None, sl.max_height, current).0;
                if s <= c && unlimited > c {
                    sl.budget_limited_ms = Some(now_ms);
                } else if s > c
                    && sl
                        .budget_limited_ms
                        .is_some_and(|at| now_ms < at + UP_HOLD_MS)
                {
                    (s, t) = (c, layers::MAX_TEMPORAL_LAYER);
                }
            }
            sl.sel.set_target(s, t);
            wants |= sl.sel.wants_keyframe().is_some();
        }
        self.next_retarget_ms = now_ms + RETARGET_MS;
        wants
    }

    fn sub_entry(&mut self, sub: &Subscription) -> &mut SubLayers {
        let i = match self.subs.iter().position(|s| s.id == sub.id) {
            Some(i) => i,
            None => {
                self.subs.push(SubLayers {
                    id: sub.id,
                    sel: LayerSelector::new(sub.next_seq, sub.next_ts),
                    max_height: None,
                    was_paused: false,
                    budget_limited_ms: None,
                    sent: Vec::new(),
                });
                self.subs.len() - 1
            }
        };
        &mut self.subs[i]
    }

    /// A sender report from the publisher on one of the layers' SSRCs (each layer has its own RTP
    /// timestamp base); one on another SSRC is not a layer's.
    pub(super) fn on_sender_report(&mut self, ssrc: u32, ntp: u64, rtp_ts: u32, now_ms: u64) {
        let layer = self
            .ssrc_layer
            .iter()
            .find(|(s, _)| *s == ssrc)
            .map(|x| x.1);
        if let Some(li) = layer.and_then(|l| self.layers.get_mut(l as usize)) {
            li.last_sr = Some((ntp, rtp_ts, now_ms));
        }
    }

    /// What a sender report to subscription `sub` is based on: the publisher's last report on the
    /// layer of the last packet sent to it (`last_seq`), and the timestamp offset that packet was
    /// sent with. None until both are known.
    pub(super) fn report_basis(
        &self,
        sub: SubscriptionId,
        last_seq: u16,
    ) -> Option<((u64, u32, u64), u32)> {
        let sl = self.subs.iter().find(|x| x.id == sub)?;
        let e = sl.sent.get(last_seq as usize % SENT_RING)?;
        if !e.valid || e.seq != last_seq {
            return None;
        }
        let sr = self.layers.get(e.layer as usize)?.last_sr?;
        Some((sr, e.ts_offset))
    }

    /// Every layer keeps at least `ms` of packets from now on (a subscriber far away NACKs late).
    pub(super) fn want_history_ms(&mut self, ms: u64) {
        for li in &mut self.layers {
            li.cache.want_history_ms(ms);
        }
    }

    /// Answers a simulcast subscriber's NACK from the layers' caches: each packet resent under the
    /// number it was sent with, its VP8 descriptor rewritten as it was, through the shared path.
    pub(super) fn answer_nack(
        &mut self,
        sub: &mut Subscription,
        a: &mut feedback::NackAnswer<'_>,
        items: crate::rtcp::NackItems<'_>,
    ) {
        let Some(sl) = self.subs.iter().find(|x| x.id == sub.id) else {
            return;
        };
        for out_seq in items.seqs() {
            if !a.may_look(sub) {
                continue;
            }
            let entry = sl
                .sent
                .get(out_seq as usize % SENT_RING)
                .copied()
                .filter(|e| e.valid && e.seq == out_seq);
            let found = entry
                .and_then(|e| Some((e, self.layers.get(e.layer as usize)?.cache.get(e.src_ext)?)));
            let Some((e, p)) = found else {
                a.miss(sub);
                continue;
            };
            let sub_pt = sub.pt_map[p.payload_type as usize & 0x7f];
            if sub_pt == 0xff {
                a.unsendable();
                continue;
            }
            self.scratch.clear();
            self.scratch.extend_from_slice(p.payload());
            if e.picture_id.is_some() || e.tl0.is_some() {
                if let Ok(d) = crate::vp8::parse(&self.scratch) {
                    crate::vp8::rewrite(&mut self.scratch, &d, e.picture_id, e.tl0);
                }
            }
            sub.seq_offset = out_seq.wrapping_sub(e.src_ext as u16);
            sub.ts_offset = e.ts_offset;
            let m = MediaRef {
                c: e.src_ext,
                timestamp: p.timestamp,
                marker: p.marker,
                abs_send_time: p.abs_send_time,
                audio_level: None,
                csrc_bytes: p.csrc_bytes(),
                payload: &self.scratch,
                shared: None,
            };
            a.resend(sub, e.src_ext | (e.layer as u64) << 56, sub_pt, &m);
        }
    }

    /// SSRC to name in keyframe requests: the layer some subscriber waits for (the highest such),
    /// else the highest layer being received.
    fn feedback_ssrc(&self) -> Option<u32> {
        let waited = self
            .subs
            .iter()
            .filter_map(|s| s.sel.wants_keyframe())
            .max();
        let received = self
            .subs
            .iter()
            .filter_map(|s| s.sel.current().map(|c| c.0))
            .max();
        waited
            .or(received)
            .and_then(|l| self.layers.get(l as usize)?.ssrc)
    }
}

/// Routes one packet of a layered track (called by `route_rtp` once the track is known): media of
/// a layer, or a retransmission on a layer's RTX stream, unwrapped into that layer (RFC 4588) and
/// sent to the subscribers receiving the layer under the number each kept free for it.
pub(super) fn route_layered(
    t: &mut Track,
    stats: &mut RouterStats,
    downlinks: &mut FastMap<TransportId, Downlink>,
    v: &RtpView<'_>,
    abs_send_time_ext: u8,
    now_ms: u64,
    out: &mut Output,
) {
    let Some(l) = t.layered.as_deref_mut() else {
        return;
    };
    let (layer, seq, media_pt, payload, is_rtx) = match t.pt_table[v.payload_type as usize & 0x7f] {
        PtEntry::Media { .. } => {
            let Some((layer, restarted)) = l.layer_of(v) else {
                return stats.drop(DropReason::UnknownSsrc);
            };
            if restarted {
                t.pli_pending = true; // its subscribers wait for a keyframe of the new stream
            }
            (layer, v.seq, v.payload_type, v.payload(), false)
        }
        PtEntry::Rtx { apt } => {
            stats.rtx_in += 1;
            t.stats.rtx_packets += 1;
            if v.payload().is_empty() {
                t.stats.padding_only += 1; // bandwidth probing on the RTX stream
                return stats.drop(DropReason::PaddingOnly);
            }
            // The original sequence number, then the original payload (not empty).
            match (l.rtx_layer_of(v), v.payload()) {
                (Some(layer), [hi, lo, rest @ ..]) if !rest.is_empty() => {
                    (layer, u16::from_be_bytes([*hi, *lo]), apt, rest, true)
                }
                _ => return stats.drop(DropReason::RtxUnwrapFailed),
            }
        }
        PtEntry::Unknown => return stats.drop(DropReason::UnknownPayloadType),
    };
    let PtEntry::Media {
        kind, clock_rate, ..
    } = t.pt_table[media_pt as usize & 0x7f]
    else {
        return stats.drop(DropReason::RtxUnwrapFailed);
    };
    let li = &mut l.layers[layer as usize];
    let prev_highest = li.seq.highest();
    let src_ext = if is_rtx {
        // A repair names a packet already numbered (probing resends the newest); one from beyond
        // the newest is refused: it must not move the layer's sequence space.
        match li
            .seq
            .peek(seq)
            .filter(|e| prev_highest.is_some_and(|h| *e <= h))
        {
            Some(e) => e,
            None => return stats.drop(DropReason::RtxUnwrapFailed),
        }
    } else {
        li.seq.unwrap(seq)
    };
    // A repair counts as received only for a loss it repairs: an RTX probe may resend a packet
    // that came while nobody received the layer (never cached, so not seen as a duplicate).
    let repairs_loss = is_rtx && li.missing.iter().any(|m| m.ext == src_ext);
    super::arrived(&mut li.missing, src_ext);
    let receiving = |s: &SubLayers| s.sel.current().map(|c| c.0) == Some(layer);
    if is_rtx {
        if !l.subs.iter().any(receiving) {
            return; // nobody receives the layer any more: nothing to repair
        }
        if li.cache.contains(src_ext) {
            t.stats.duplicates += 1; // it came after all, or was repaired already
            return stats.drop(DropReason::Duplicate);
        }
    } else if !payload.is_empty() {
        l.account(layer, payload.len(), now_ms);
    }
    let is_key = is_keyframe_start(kind, payload);
    if is_key {
        t.stats.keyframes += 1;
        stats.keyframes_in += 1;
        let size = match kind {
            CodecKind::Vp8 => crate::vp8::parse(payload)
                .ok()
                .and_then(|d| crate::vp8::keyframe_size(payload, &d)),
            CodecKind::H264 => crate::h264::keyframe_size(payload),
            _ => None,
        };
        if let Some((_, h)) = size {
            l.layers[layer as usize].height = Some(h);
        }
    }
    t.stats.payload_bytes += payload.len() as u64;
    stats.payload_bytes_in += payload.len() as u64;
    t.last_media_pt = Some(media_pt);
    if l.subs.len() != t.subs.len() {
        l.next_retarget_ms = 0; // a subscription came or went
    }
    if now_ms >= l.next_retarget_ms && l.retarget(&t.subs, downlinks, now_ms) {
        t.pli_pending = true;
    }
    t.media_ssrc = l.feedback_ssrc();
    // One pass over the subscribers: does one receive this layer, or wait for it?
    let (mut received, mut wanted) = (is_rtx, is_rtx);
    for s in l.subs.iter() {
        if received {
            break;
        }
        received = receiving(s);
        wanted |= received || s.sel.target().0 == layer;
    }
    if !is_rtx && received {
        // Lost on the way in, on a layer someone receives: NACKed to the publisher at the next poll.
        let missing = &mut l.layers[layer as usize].missing;
        super::note_missing(missing, prev_highest, src_ext, now_ms);
    }
    // What the layer's receiver reports count: its media, and repairs of its losses.
    let counts = !is_rtx || repairs_loss;
    if payload.is_empty() {
        // Padding (probing): numbered, so not taken for a loss, and never forwarded.
        if counts {
            l.layers[layer as usize].reception.on_padding(src_ext);
        }
        t.stats.padding_only += 1;
        return stats.drop(DropReason::PaddingOnly);
    }
    // Nobody receives or waits for this layer: nothing more to do (but it arrived).
    if !wanted {
        if counts {
            l.layers[layer as usize]
                .reception
                .on_packet(src_ext, v.timestamp, now_ms, clock_rate);
        }
        return;
    }
    let abs_send_time: Option<[u8; 3]> = v
        .extension(abs_send_time_ext)
        .and_then(|d| d.try_into().ok());
    let li = &mut l.layers[layer as usize];
    let cached = PacketToCache {
        ext_seq: src_ext,
        timestamp: v.timestamp,
        marker: v.marker,
        payload_type: media_pt,
        abs_send_time,
        audio_level: None,
        csrc_bytes: v.csrc_bytes(),
        payload,
    };
    match li.cache.insert_timed(&cached, clock_rate) {
        Insert::Stored => {}
        Insert::Duplicate => {
            t.stats.duplicates += 1;
            return stats.drop(DropReason::Duplicate);
        }
        Insert::TooOld => {
            if counts {
                // Too late to forward, but it arrived: not a loss in the reports.
                li.reception
                    .on_packet(src_ext, v.timestamp, now_ms, clock_rate);
            }
            return stats.drop(DropReason::TooOld);
        }
    }
    if counts {
        li.reception
            .on_packet(src_ext, v.timestamp, now_ms, clock_rate);
    }
    if is_rtx {
        li.repaired += 1;
    }
    for sub in &mut t.subs {
        let Some(sl) = l.subs.iter_mut().find(|x| x.id == sub.id) else {
            continue; // new since the last layer choice: picked up at the next one
        };
        if is_rtx && !receiving(sl) {
            continue; // a repair goes only where the layer's stream already flows
        }
        if sub.paused {
            // The allocation paused this subscriber's video; it restarts at a keyframe.
            sub.stats.dropped_paused += 1;
            stats.drop(DropReason::VideoPaused);
            sl.was_paused = true;
            continue;
        }
        if std::mem::take(&mut sl.was_paused) {
            sl.sel.restart_after(sub.last_out);
            sl.budget_limited_ms = None; // the resume waited for a steady estimate already
        }
        let p = LayerPacket {
            spatial: layer,
            seq,
            timestamp: v.timestamp,
            keyframe: is_key,
            vp8: None,
            clock_rate,
            now_ms,
        };
        l.scratch.clear();
        l.scratch.extend_from_slice(payload);
        let decision = if kind == CodecKind::Vp8 {
            sl.sel.decide_vp8(p, &mut l.scratch)
        } else {
            sl.sel.decide(&p)
        };
        sub.started = sl.sel.wants_keyframe().is_none();
        sub.stats.waiting_keyframe = sl.sel.current().is_none();
        let f = match decision {
            Decision::Forward(f) => f,
            Decision::Drop(LayerDrop::WaitingKeyframe) => {
                sub.stats.dropped_waiting_keyframe += 1;
                stats.drop(DropReason::WaitingKeyframe);
                continue;
            }
            Decision::Drop(_) => continue,
        };
        let sub_pt = sub.pt_map[media_pt as usize & 0x7f];
        if sub_pt == 0xff {
            stats.drop(DropReason::CodecNotNegotiated);
            continue;
        }
        // The shared writer numbers packets `c + seq_offset`, `timestamp + ts_offset` (and stamps
        // the transport-wide sequence number): offsets that make it write the selector's numbers.
        sub.seq_offset = f.seq.wrapping_sub(seq);
        sub.ts_offset = f.timestamp.wrapping_sub(v.timestamp);
        let m = MediaRef {
            c: seq as u64,
            timestamp: v.timestamp,
            marker: v.marker,
            abs_send_time,
            audio_level: None,
            csrc_bytes: v.csrc_bytes(),
            payload: &l.scratch,
            shared: None,
        };
        let dl = downlinks.get_mut(&sub.transport);
        let (_, _, len) = write_for_sub(out, sub, dl, sub_pt, &m, now_ms);
        if sl.sent.is_empty() {
            sl.sent = vec![SentAs::default(); SENT_RING];
        }
        sl.sent[f.seq as usize % SENT_RING] = SentAs {
            seq: f.seq,
            layer,
            src_ext,
            ts_offset: sub.ts_offset,
            picture_id: f.picture_id,
            tl0: f.tl0_pic_idx,
            valid: true,
        };
        if sub
            .last_out
            .is_none_or(|(s, _, _)| crate::seq::seq_newer(f.seq, s))
        {
            sub.last_out = Some((f.seq, f.timestamp, now_ms));
            sub.stats.last_seq = Some(f.seq);
            sub.stats.last_timestamp = Some(f.timestamp);
        }
        sub.stats.packets += 1;
        sub.stats.bytes += len as u64;
        sub.stats.payload_bytes += payload.len() as u64;
        if is_key && f.switched {
            sub.stats.keyframes += 1;
        }
        if sub.sink.is_none() {
            stats.rtp_packets_out += 1;
            stats.rtp_bytes_out += len as u64;
            stats.payload_bytes_out += payload.len() as u64;
        }
    }
}

impl Router {
    /// Makes `track` a simulcast track: its layers, lowest resolution first, are named by the RID
    /// values in `rids` (read from header extension `rid_ext`) or, when `rids` is empty, are the
    /// SSRCs in `ssrcs` (from `a=ssrc-group:SIM`).
    pub fn set_track_layers(
        &mut self,
        track: TrackId,
        rid_ext: u8,
        rids: &[&str],
        ssrcs: &[u32],
    ) -> Result<(), RouterError> {
        let n = if rids.is_empty() {
            ssrcs.len()
        } else {
            rids.len()
        };
        if n == 0 || n > MAX_SPATIAL_LAYERS as usize {
            return Err(RouterError::Invalid(format!(
                "a simulcast track has 1 to {MAX_SPATIAL_LAYERS} layers, not {n}"
            )));
        }
        if !rids.is_empty() && (rid_ext == 0 || rid_ext == 15) {
            return Err(RouterError::Invalid(format!(
                "RID extension id {rid_ext} is not usable"
            )));
        }
        let transport = self
            .tracks
            .get(&track)
            .ok_or(RouterError::UnknownTrack(track))?
            .transport;
        for s in ssrcs {
            if self
                .track_by_ssrc
                .get(&(transport, *s))
                .is_some_and(|t| *t != track)
            {
                return Err(RouterError::SsrcInUse(*s));
            }
        }
        let t = self.tracks.get_mut(&track).expect("checked above");
        if t.kind != MediaKind::Video {
            return Err(RouterError::Invalid("only video tracks have layers".into()));
        }
        let mut layers: Vec<LayerIn> = (0..n)
            .map(|_| LayerIn::new(self.cfg.layer_cache()))
            .collect();
        let mut ssrc_layer = Vec::new();
        if rids.is_empty() {
            for (i, s) in ssrcs.iter().enumerate() {
                ssrc_layer.push((*s, i as u8));
                layers[i].ssrc = Some(*s);
            }
        }
        for s in ssrcs {
            if !t.ssrcs.contains(s) {
                t.ssrcs.push(*s);
            }
            self.track_by_ssrc.insert((transport, *s), track);
        }
        t.layered = Some(Box::new(Layered {
            rid_ext,
            rids: rids.iter().map(|r| r.as_bytes().to_vec()).collect(),
            ssrc_layer,
            layers,
            subs: Vec::new(),
            next_retarget_ms: 0,
            scratch: Vec::with_capacity(1500),
            repaired_rid_ext: 0,
            rtx_ssrc_layer: Vec::new(),
        }));
        Ok(())
    }

    /// The RTX streams of a simulcast track's layers: an RTX packet names the layer it repairs in
    /// header extension `repaired_rid_ext` (RID simulcast; 0: not negotiated), or `rtx_ssrcs[i]`
    /// is layer i's RTX SSRC (the FID groups of `a=ssrc-group:SIM` layers; 0: none). Without
    /// either, a layer's RTX packets are dropped and its losses cost a keyframe request.
    pub fn set_track_layer_rtx(
        &mut self,
        track: TrackId,
        repaired_rid_ext: u8,
        rtx_ssrcs: &[u32],
    ) -> Result<(), RouterError> {
        if repaired_rid_ext == 15 {
            return Err(RouterError::Invalid(
                "repaired-RID extension id 15 is not usable".into(),
            ));
        }
        let t = self
            .tracks
            .get(&track)
            .ok_or(RouterError::UnknownTrack(track))?;
        let transport = t.transport;
        let l = t
            .layered
            .as_deref()
            .ok_or_else(|| RouterError::Invalid(format!("track {track} has no layers")))?;
        if rtx_ssrcs.len() > l.layers.len() {
            return Err(RouterError::Invalid(format!(
                "{} RTX SSRCs for {} layers",
                rtx_ssrcs.len(),
                l.layers.len()
            )));
        }
        for (i, s) in rtx_ssrcs.iter().enumerate().filter(|(_, s)| **s != 0) {
            let layer_media = l.ssrc_layer.iter().any(|(m, _)| m == s);
            let repeated = rtx_ssrcs[..i].contains(s);
            if layer_media || repeated {
                return Err(RouterError::Invalid(format!(
                    "RTX SSRC {s} is also a layer's media or another layer's RTX"
                )));
            }
            if self
                .track_by_ssrc
                .get(&(transport, *s))
                .is_some_and(|x| *x != track)
            {
                return Err(RouterError::SsrcInUse(*s));
            }
        }
        let t = self.tracks.get_mut(&track).expect("checked above");
        let l = t.layered.as_deref_mut().expect("checked above");
        l.repaired_rid_ext = repaired_rid_ext;
        for (i, s) in rtx_ssrcs.iter().enumerate().filter(|(_, s)| **s != 0) {
            l.rtx_ssrc_layer.retain(|(x, _)| x != s);
            l.rtx_ssrc_layer.push((*s, i as u8));
            l.layers[i].rtx_ssrc = Some(*s);
            if !t.ssrcs.contains(s) {
                t.ssrcs.push(*s);
            }
            self.track_by_ssrc.insert((transport, *s), track);
        }
        Ok(())
    }

    /// The most a subscriber wants of a simulcast track's height (None: no cap). Takes effect at
    /// the next layer choice (within a quarter second) and the target layer's next keyframe.
    pub fn set_subscription_max_height(
        &mut self,
        sub: SubscriptionId,
        max_height: Option<u16>,
    ) -> Result<(), RouterError> {
        let track = *self
            .sub_track
            .get(&sub)
            .ok_or_else(|| RouterError::Invalid(format!("unknown subscription {sub}")))?;
        let t = self
            .tracks
            .get_mut(&track)
            .ok_or(RouterError::UnknownTrack(track))?;
        let (Some(l), Some(s)) = (
            t.layered.as_deref_mut(),
            t.subs.iter().find(|s| s.id == sub),
        ) else {
            return Ok(()); // a single-layer track: nothing to choose from
        };
        l.sub_entry(s).max_height = max_height;
        l.next_retarget_ms = 0;
        Ok(())
    }

    /// Per-layer bitrate and height of a simulcast track (None for other tracks).
    pub fn track_layers(&self, track: TrackId) -> Option<Vec<LayerInfo>> {
        let l = self.tracks.get(&track)?.layered.as_deref()?;
        Some(
            l.layers
                .iter()
                .map(|x| LayerInfo {
                    ssrc: x.ssrc,
                    bitrate_bps: x.rate_bps,
                    height: x.height,
                    rtx_ssrc: x.rtx_ssrc,
                    repaired: x.repaired,
                    cache_packets: x.cache.capacity(),
                    lost: x.reception.lost(),
                    jitter: x.reception.jitter(),
                })
                .collect(),
        )
    }

    /// A subscription's layers (None when its track is not a simulcast track).
    pub fn subscription_layers(&self, sub: SubscriptionId) -> Option<SubscriptionLayers> {
        let t = self.tracks.get(self.sub_track.get(&sub)?)?;
        let sl = t.layered.as_deref()?.subs.iter().find(|s| s.id == sub)?;
        let st = sl.sel.stats();
        Some(SubscriptionLayers {
            current: sl.sel.current(),
            target: sl.sel.target(),
            max_height: sl.max_height,
            spatial_switches: st.spatial_switches,
            temporal_switches: st.temporal_switches,
            dropped_temporal: st.dropped_temporal,
            vp8_malformed: st.vp8_malformed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::pick_layers;

    const L: [(u64, Option<u16>, bool); 3] = [
        (150_000, Some(180), true),
        (500_000, Some(360), true),
        (1_500_000, Some(720), true),
    ];

    #[test]
    fn picks_by_cap_and_budget() {
        assert_eq!(pick_layers(&L, None, None, None), (2, 2));
        assert_eq!(pick_layers(&L, None, Some(360), None), (1, 2));
        assert_eq!(pick_layers(&L, None, Some(200), Some(2)), (0, 2));
        assert_eq!(pick_layers(&L, Some(1_000_000), None, Some(2)), (1, 2));
        // going up needs headroom: 1.6 Mbit/s fits 1.5 Mbit/s but not with 15 % spare
        assert_eq!(pick_layers(&L, Some(1_600_000), None, Some(1)), (1, 2));
        assert_eq!(pick_layers(&L, Some(1_600_000), None, Some(2)), (2, 2));
        // below the lowest layer: fewer temporal layers
        assert_eq!(pick_layers(&L, Some(130_000), None, Some(0)), (0, 1));
        assert_eq!(pick_layers(&L, Some(50_000), None, Some(0)), (0, 0));
    }

    #[test]
    fn inactive_and_unknown_layers() {
        let mut l = L;
        l[2].2 = false; // the publisher stopped sending its top layer
        assert_eq!(pick_layers(&l, None, None, None), (1, 2));
        let unknown = [(0, None, true), (0, None, true)];
        assert_eq!(pick_layers(&unknown, None, Some(360), None), (0, 2));
        assert_eq!(pick_layers(&unknown, None, None, None), (1, 2));
    }
}
