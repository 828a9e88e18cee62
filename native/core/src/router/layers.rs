//! Per-subscriber layer selection for a simulcast (and VP8 temporally scalable) track.
//!
//! A publisher's simulcast track arrives as up to three RTP streams (spatial layers, 0 = lowest),
//! each with its own SSRC, sequence numbers, timestamps and VP8 picture IDs. A subscriber receives
//! one of them as a single stream: the selector decides for every packet whether it is forwarded
//! and with which sequence number, timestamp, picture ID and TL0PICIDX, so that
//! - a spatial switch happens only at a keyframe of the target layer (the old layer keeps flowing
//!   until then);
//! - a temporal down-switch happens at the next frame start, an up-switch only at a frame that is a
//!   layer-sync point (Y bit) or a TL0 frame, after which every frame of the new layers decodes;
//! - sequence numbers have no holes from dropped temporal layers (they are renumbered) but keep the
//!   holes of real loss (so the receiver's NACKs still name what is missing), and continue by one
//!   across a spatial switch; timestamps continue by the wall time elapsed;
//! - picture IDs are continuous (dropped frames take no number) and TL0PICIDX continues by one at a
//!   switch (the first frame of a new layer is a keyframe, a TL0 frame).
//!
//! Sans-IO like the rest of the router: the caller passes the time and the packet's fields.

use std::collections::VecDeque;

use crate::vp8::{self, PictureId, Vp8Descriptor};

/// Spatial layers a track may have (Chromium sends at most three simulcast encodings).
pub const MAX_SPATIAL_LAYERS: u8 = 3;
/// Highest VP8 temporal layer index (L1T3: TID 0, 1, 2).
pub const MAX_TEMPORAL_LAYER: u8 = 2;
/// Dropped inputs remembered per renumbered space; older ones are folded into the offset and
/// packets from before them are no longer forwarded (a retransmission that late is useless).
const MAX_DROPPED: usize = 512;

/// The VP8 fields the selector reads, from a parsed descriptor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vp8Fields {
    pub picture_id: Option<PictureId>,
    pub tl0_pic_idx: Option<u8>,
    pub temporal_id: Option<u8>,
    pub layer_sync: bool,
    pub starts_frame: bool,
}

impl From<&Vp8Descriptor> for Vp8Fields {
    fn from(d: &Vp8Descriptor) -> Self {
        Self {
            picture_id: d.picture_id,
            tl0_pic_idx: d.tl0_pic_idx,
            temporal_id: d.temporal_id,
            layer_sync: d.layer_sync,
            starts_frame: d.starts_frame(),
        }
    }
}

/// One packet of one of the track's layers, as the selector sees it.
#[derive(Debug, Clone, Copy)]
pub struct LayerPacket {
    /// Simulcast encoding index, 0 = lowest resolution.
    pub spatial: u8,
    pub seq: u16,
    pub timestamp: u32,
    /// First packet of a keyframe.
    pub keyframe: bool,
    /// VP8 descriptor fields; None for other codecs (no temporal layers, nothing to rewrite).
    pub vp8: Option<Vp8Fields>,
    pub clock_rate: u32,
    pub now_ms: u64,
}

/// What to write for a forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub seq: u16,
    pub timestamp: u32,
    /// New picture ID for the descriptor (modulo the field's width), when it carries one.
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
    /// This packet starts the subscriber's stream on a new spatial layer.
    pub switched: bool,
}

/// Why a packet is not forwarded to this subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerDrop {
    /// A spatial layer the subscriber is not receiving.
    OtherLayer,
    /// The target layer, but the subscriber waits for its keyframe to start on it.
    WaitingKeyframe,
    /// A temporal layer above the one the subscriber receives.
    TemporalAbove,
    /// From before the start of the current layer (or too late to renumber).
    TooOld,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Forward(Forward),
    Drop(LayerDrop),
}

/// Counters of one selector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    pub spatial_switches: u64,
    pub temporal_switches: u64,
    pub dropped_other_layer: u64,
    pub dropped_temporal: u64,
    /// VP8 packets whose descriptor could not be read (forwarded unchanged).
    pub vp8_malformed: u64,
}

/// Maps an input number space (sequence numbers or picture IDs of one layer, `bits` wide) onto the
/// output space, leaving out inputs that were dropped on purpose.
#[derive(Debug, Clone)]
struct Renumber {
    bits: u32,
    highest: Option<u64>,
    /// output = input - (dropped inputs before it) + base, modulo 2^bits.
    base: u64,
    dropped: VecDeque<u64>,
    /// Inputs at or below this are refused.
    floor: u64,
}

impl Renumber {
    fn new(bits: u32) -> Self {
        Self {
            bits,
            highest: None,
            base: 0,
            dropped: VecDeque::new(),
            floor: 0,
        }
    }

    fn mask(&self) -> u64 {
        (1u64 << self.bits) - 1
    }

    /// The extended value of `v` nearest the highest input seen (first cycle is 1, so late values
    /// never go below zero).
    fn extend(&self, v: u16) -> u64 {
        let m = self.mask();
        let v = v as u64 & m;
        match self.highest {
            None => (1 << self.bits) + v,
            Some(h) => {
                let half = 1u64 << (self.bits - 1);
                let delta = v.wrapping_sub(h) & m;
                if delta < half {
                    h + delta
                } else {
                    h.saturating_sub(m + 1 - delta)
                }
            }
        }
    }

    /// Starts a new input space: `first` becomes `out`, anything before `first` is refused.
    fn reset(&mut self, bits: u32, first: u16, out: u16) {
        self.bits = bits;
        self.highest = None;
        let ext = self.extend(first);
        self.highest = Some(ext);
        self.base = (out as u64).wrapping_sub(ext);
        self.dropped.clear();
        self.floor = ext - 1;
    }

    fn started(&self) -> bool {
        self.highest.is_some()
    }

    /// The output for input `v`, or None if it was dropped or is too old.
    fn map(&mut self, v: u16) -> Option<u16> {
        let ext = self.extend(v);
        if ext <= self.floor {
            return None;
        }
        let before = self.dropped.partition_point(|d| *d < ext);
        if self.dropped.get(before) == Some(&ext) {
            return None;
        }
        let before = before as u64;
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        Some((ext.wrapping_sub(before).wrapping_add(self.base) & self.mask()) as u16)
    }

    /// Leaves input `v` out of the output. Only the newest input can be left out without changing
    /// numbers already sent; an older one stays a hole (it looks like loss to the receiver).
    fn skip(&mut self, v: u16) {
        let ext = self.extend(v);
        if ext <= self.floor {
            return;
        }
        match self.highest {
            Some(h) if ext < h => return,
            Some(h) if ext == h && self.dropped.back() != Some(&ext) => return, // already mapped
            _ => {}
        }
        self.highest = Some(ext);
        if self.dropped.back() != Some(&ext) {
            self.dropped.push_back(ext);
        }
        if self.dropped.len() > MAX_DROPPED {
            let oldest = self.dropped.pop_front().expect("not empty");
            self.base = self.base.wrapping_sub(1);
            self.floor = oldest;
        }
    }
}

/// The layer state of one subscription to a layered track.
#[derive(Debug, Clone)]
pub struct LayerSelector {
    target_spatial: u8,
    target_temporal: u8,
    current_spatial: Option<u8>,
    current_temporal: u8,
    seq: Renumber,
    picture_id: Renumber,
    ts_offset: u32,
    tl0_offset: u8,
    /// Last output: (seq, timestamp, when), and the last picture ID and TL0PICIDX written.
    last_out: Option<(u16, u32, u64)>,
    last_picture_id: Option<u16>,
    last_tl0: Option<u8>,
    initial_seq: u16,
    initial_ts: u32,
    stats: LayerStats,
}

impl LayerSelector {
    /// A selector whose output starts at `initial_seq` / `initial_ts` (random per subscription).
    pub fn new(initial_seq: u16, initial_ts: u32) -> Self {
        Self {
            target_spatial: MAX_SPATIAL_LAYERS - 1,
            target_temporal: MAX_TEMPORAL_LAYER,
            current_spatial: None,
            current_temporal: MAX_TEMPORAL_LAYER,
            seq: Renumber::new(16),
            picture_id: Renumber::new(15),
            ts_offset: 0,
            tl0_offset: 0,
            last_out: None,
            last_picture_id: None,
            last_tl0: None,
            initial_seq,
            initial_ts,
            stats: LayerStats::default(),
        }
    }

    /// Sets the layers the subscriber should receive; they take effect at the next switch point.
    pub fn set_target(&mut self, spatial: u8, temporal: u8) {
        self.target_spatial = spatial.min(MAX_SPATIAL_LAYERS - 1);
        self.target_temporal = temporal.min(MAX_TEMPORAL_LAYER);
    }

    pub fn target(&self) -> (u8, u8) {
        (self.target_spatial, self.target_temporal)
    }

    /// The spatial and temporal layer being forwarded (None before the first keyframe).
    pub fn current(&self) -> Option<(u8, u8)> {
        self.current_spatial.map(|s| (s, self.current_temporal))
    }

    /// The spatial layer whose keyframe the selector waits for, if it waits (ask for a PLI on it).
    pub fn wants_keyframe(&self) -> Option<u8> {
        (self.current_spatial != Some(self.target_spatial)).then_some(self.target_spatial)
    }

    pub fn stats(&self) -> LayerStats {
        self.stats
    }

    /// Waits for a keyframe again (after packets were held back), continuing the output numbering.
    pub fn restart(&mut self) {
        self.current_spatial = None;
    }

    /// Like `restart`, but numbering on after `last` (seq, timestamp, ms) when the subscriber was
    /// sent something outside the selector meanwhile (probe padding while its video was paused).
    pub fn restart_after(&mut self, last: Option<(u16, u32, u64)>) {
        self.restart();
        if let (Some(l), Some(mine)) = (last, self.last_out) {
            if crate::seq::seq_newer(l.0, mine.0) {
                self.last_out = Some(l);
            }
        }
    }

    /// Decides the fate of one packet of any layer of the track.
    pub fn decide(&mut self, p: &LayerPacket) -> Decision {
        if self.current_spatial != Some(p.spatial) {
            if p.spatial != self.target_spatial {
                self.stats.dropped_other_layer += 1;
                return Decision::Drop(LayerDrop::OtherLayer);
            }
            if !p.keyframe {
                return Decision::Drop(if self.current_spatial.is_none() {
                    LayerDrop::WaitingKeyframe
                } else {
                    self.stats.dropped_other_layer += 1;
                    LayerDrop::OtherLayer
                });
            }
            self.switch_to(p);
            return self.forward(p, true);
        }
        if let Some(v) = p.vp8 {
            if let Some(tid) = v.temporal_id {
                if v.starts_frame {
                    self.temporal_switch_point(tid, v.layer_sync);
                }
                if tid > self.current_temporal {
                    self.seq.skip(p.seq);
                    if let Some(pid) = v.picture_id {
                        self.picture_id.skip(pid.value);
                    }
                    self.stats.dropped_temporal += 1;
                    return Decision::Drop(LayerDrop::TemporalAbove);
                }
            }
        }
        self.forward(p, false)
    }

    /// Parses, decides and rewrites a VP8 packet's payload in place. A descriptor that cannot be
    /// read is counted and the packet decided without VP8 fields (forwarded unchanged if on the
    /// current layer; it cannot start a switch since its keyframe flag is unknown).
    pub fn decide_vp8(&mut self, mut p: LayerPacket, payload: &mut [u8]) -> Decision {
        let d = match vp8::parse(payload) {
            Ok(d) => d,
            Err(_) => {
                self.stats.vp8_malformed += 1;
                p.vp8 = None;
                p.keyframe = false;
                return self.decide(&p);
            }
        };
        p.vp8 = Some(Vp8Fields::from(&d));
        p.keyframe = d.keyframe;
        let decision = self.decide(&p);
        if let Decision::Forward(f) = decision {
            vp8::rewrite(payload, &d, f.picture_id, f.tl0_pic_idx);
        }
        decision
    }

    fn temporal_switch_point(&mut self, tid: u8, sync: bool) {
        let before = self.current_temporal;
        if self.target_temporal < self.current_temporal {
            self.current_temporal = self.target_temporal;
        } else if self.target_temporal > self.current_temporal {
            if tid == 0 {
                // After a TL0 frame every higher-layer frame references only frames from here on.
                self.current_temporal = self.target_temporal;
            } else if sync && tid > self.current_temporal && tid <= self.target_temporal {
                self.current_temporal = tid;
            }
        }
        if self.current_temporal != before {
            self.stats.temporal_switches += 1;
        }
    }

    /// Starts forwarding `p`'s layer at its keyframe: every output space continues by one step.
    fn switch_to(&mut self, p: &LayerPacket) {
        let (next_seq, next_ts) = match self.last_out {
            Some((seq, ts, ms)) => {
                let elapsed = p.now_ms.saturating_sub(ms);
                let advance = (elapsed.saturating_mul(p.clock_rate as u64) / 1000)
                    .clamp(1, u32::MAX as u64 / 2) as u32;
                (seq.wrapping_add(1), ts.wrapping_add(advance))
            }
            None => (self.initial_seq, self.initial_ts),
        };
        self.seq.reset(16, p.seq, next_seq);
        self.ts_offset = next_ts.wrapping_sub(p.timestamp);
        if let Some(v) = p.vp8 {
            if let Some(pid) = v.picture_id {
                let out = self
                    .last_picture_id
                    .map_or(pid.value, |l| l.wrapping_add(1));
                self.picture_id.reset(pid.bits(), pid.value, out);
            }
            if let Some(tl0) = v.tl0_pic_idx {
                let out = self.last_tl0.map_or(tl0, |l| l.wrapping_add(1));
                self.tl0_offset = out.wrapping_sub(tl0);
            }
        }
        if self.current_spatial.is_some() {
            self.stats.spatial_switches += 1;
        }
        self.current_spatial = Some(p.spatial);
        // A keyframe is a TL0 frame: every temporal layer up to the target decodes from here.
        self.current_temporal = self.target_temporal;
    }

    fn forward(&mut self, p: &LayerPacket, switched: bool) -> Decision {
        let Some(seq) = self.seq.map(p.seq) else {
            return Decision::Drop(LayerDrop::TooOld);
        };
        let timestamp = p.timestamp.wrapping_add(self.ts_offset);
        let mut picture_id = None;
        let mut tl0_pic_idx = None;
        if let Some(v) = p.vp8 {
            if let Some(pid) = v.picture_id {
                if !self.picture_id.started() {
                    // Picture IDs appeared after the start: continue from the last one written.
                    let out = self
                        .last_picture_id
                        .map_or(pid.value, |l| l.wrapping_add(1));
                    self.picture_id.reset(pid.bits(), pid.value, out);
                }
                picture_id = self.picture_id.map(pid.value);
                if let Some(out) = picture_id {
                    if self
                        .last_picture_id
                        .is_none_or(|l| newer(out, l, pid.bits()))
                    {
                        self.last_picture_id = Some(out);
                    }
                }
            }
            if let Some(tl0) = v.tl0_pic_idx {
                let out = tl0.wrapping_add(self.tl0_offset);
                if self
                    .last_tl0
                    .is_none_or(|l| out != l && out.wrapping_sub(l) < 0x80)
                {
                    self.last_tl0 = Some(out);
                }
                tl0_pic_idx = Some(out);
            }
        }
        if self
            .last_out
            .is_none_or(|(s, _, _)| crate::seq::seq_newer(seq, s))
        {
            self.last_out = Some((seq, timestamp, p.now_ms));
        }
        Decision::Forward(Forward {
            seq,
            timestamp,
            picture_id,
            tl0_pic_idx,
            switched,
        })
    }
}

/// `a` is newer than `b` in a `bits`-wide wrapping space.
fn newer(a: u16, b: u16, bits: u32) -> bool {
    let m = (1u32 << bits) - 1;
    let d = (a as u32).wrapping_sub(b as u32) & m;
    d != 0 && d < (1u32 << (bits - 1))
}

#[cfg(test)]
mod tests;
