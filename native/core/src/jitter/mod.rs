//! Sans-IO jitter buffer for one received RTP stream: reorders packets by sequence number,
//! asks for retransmission of missing ones until a deadline, assembles complete frames (VP8, H.264,
//! Opus), releases them in order, gives up on frames that cannot complete and asks for a keyframe when
//! the decoding chain breaks. Used by the recorder; the caller supplies packets and the time.
//!
//! Timing model: a complete frame at the head of the buffer leaves at once (no added delay without
//! loss); a frame that waits behind a missing packet waits at most `target_delay_ms` from the moment
//! the packet was detected missing, then the incomplete frame is dropped and the buffer moves on.

pub mod depack;
#[cfg(test)]
mod tests;

use crate::rtp::RtpView;
use crate::seq::extend_u16;
pub use depack::FrameCodec;

/// Tuning of one buffer.
#[derive(Debug, Clone)]
pub struct JitterConfig {
    pub codec: FrameCodec,
    /// Longest wait for a missing packet before the frames it blocks are given up.
    pub target_delay_ms: u64,
    /// A still-missing packet is NACKed again after this long (about one round trip).
    pub nack_interval_ms: u64,
    pub max_nack_retries: u32,
    /// Minimum spacing of keyframe requests while the chain is broken.
    pub keyframe_interval_ms: u64,
    /// Packets held at most (rounded up to a power of two); a jump further ahead resets the buffer.
    pub capacity: usize,
}

impl JitterConfig {
    pub fn new(codec: FrameCodec) -> Self {
        Self {
            codec,
            target_delay_ms: 200,
            nack_interval_ms: 40,
            max_nack_retries: 4,
            keyframe_interval_ms: 500,
            capacity: 1024,
        }
    }
}

/// One complete frame, in the muxer's format (see `depack`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// RTP timestamp extended to 64 bits (monotonic across the u32 wrap); starts near 2^32.
    pub timestamp: u64,
    pub keyframe: bool,
    pub data: Vec<u8>,
    /// Arrival time of the frame's first packet.
    pub arrival_ms: u64,
}

/// A frame being released by `pop_frames_with`: its metadata and assembled size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    pub timestamp: u64,
    pub keyframe: bool,
    pub arrival_ms: u64,
    /// Exact length of the assembled frame.
    pub len: usize,
}

/// The payloads of a frame being released, still in the buffer's slots.
pub struct FrameParts<'a, P> {
    codec: FrameCodec,
    slots: &'a [Slot<P>],
    mask: u64,
    from: u64,
    to: u64,
}

impl<P: PacketBuf> FrameParts<'_, P> {
    /// Assembles the frame into `out`, which must be exactly `FrameInfo::len` bytes long.
    pub fn write_to(&self, out: &mut [u8]) {
        // SAFETY: initialised bytes are valid `MaybeUninit<u8>`; only u8 values are written back.
        let out = unsafe { &mut *(out as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
        self.write_to_uninit(out);
    }

    /// Same, into memory that may be uninitialised: all `FrameInfo::len` bytes are written.
    pub fn write_to_uninit(&self, out: &mut [std::mem::MaybeUninit<u8>]) {
        let mut w = depack::SliceOut::new(out);
        // Already validated when the frame was sized, so this cannot fail.
        let res = depack::assemble(
            self.codec,
            payloads(self.slots, self.mask, self.from, self.to),
            &mut w,
        );
        debug_assert!(res.is_ok() && w.written() == out.len());
    }
}

/// Non-padding payloads stored for the sequence numbers `from..=to`, in order.
fn payloads<P: PacketBuf>(
    slots: &[Slot<P>],
    mask: u64,
    from: u64,
    to: u64,
) -> impl Iterator<Item = &[u8]> {
    (from..=to)
        .map(move |seq| (seq, &slots[(seq & mask) as usize]))
        .filter(|(seq, s)| s.seq == *seq && !s.padding)
        .map(|(_, s)| s.payload())
}

/// Requests for the sender, produced by `poll`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JitterEvent {
    /// Sequence numbers to retransmit (RFC 4585 generic NACK).
    Nack(Vec<u16>),
    /// The decoding chain is broken: ask for a keyframe (PLI).
    KeyframeRequest,
}

/// Counters since creation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub packets: u64,
    pub bytes: u64,
    pub duplicates: u64,
    /// Arrived after their place was released or given up.
    pub late: u64,
    pub malformed: u64,
    pub padding: u64,
    /// Detected missing and later received (retransmission or reordering).
    pub recovered: u64,
    /// Missing packets given up.
    pub lost: u64,
    pub nacks: u64,
    pub keyframe_requests: u64,
    pub frames: u64,
    pub keyframes: u64,
    /// Frames dropped because they could not complete in time or did not parse.
    pub frames_incomplete: u64,
    /// Complete frames dropped while waiting for a keyframe (undecodable).
    pub frames_undecodable: u64,
    /// Buffer emptied because of a sequence jump or an SSRC change.
    pub resets: u64,
}

const EMPTY: u64 = u64::MAX;

/// Where a stored packet's bytes live: an owned copy (`Vec<u8>`, what `push` makes), or a handle on
/// the caller's immutable buffer (the Python binding keeps a reference to the packet's `bytes`, so
/// a packet is copied only once, into its frame).
pub trait PacketBuf {
    fn bytes(&self) -> &[u8];
    /// Released buffers are worth reusing (owned copies); handles are simply dropped.
    const REUSABLE: bool;
}

impl PacketBuf for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    const REUSABLE: bool = true;
}

/// A payload shared with its producer (the router's NACK cache): held, never copied in.
impl PacketBuf for std::sync::Arc<Vec<u8>> {
    fn bytes(&self) -> &[u8] {
        self
    }
    const REUSABLE: bool = false;
}

/// One place of the ring: the packet stored for `seq` (if `seq` matches), and independently the
/// NACK state of a sequence number that maps here and has not arrived (both never hold at once for
/// the same number). Keeping the NACK state in the ring means no allocation per gap.
struct Slot<P> {
    seq: u64,
    missing: Option<Missing>,
    ts: u64,
    marker: bool,
    start: bool,
    padding: bool,
    arrival: u64,
    packet: Option<P>,
    /// The payload's range in the packet.
    payload_at: (usize, usize),
}

impl<P: PacketBuf> Slot<P> {
    fn empty() -> Self {
        Self {
            seq: EMPTY,
            missing: None,
            ts: 0,
            marker: false,
            start: false,
            padding: false,
            arrival: 0,
            packet: None,
            payload_at: (0, 0),
        }
    }

    fn payload(&self) -> &[u8] {
        self.packet
            .as_ref()
            .map_or(&[], |p| &p.bytes()[self.payload_at.0..self.payload_at.1])
    }
}

/// The RTP header fields the buffer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpFields {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
}

impl RtpFields {
    pub fn of(rtp: &RtpView<'_>) -> Self {
        Self {
            ssrc: rtp.ssrc,
            seq: rtp.seq,
            timestamp: rtp.timestamp,
            marker: rtp.marker,
        }
    }
}

/// Counted as the size of a packet given as fields + payload (a fixed RTP header).
const HEADER_LEN: usize = 12;

#[derive(Debug, Clone, Copy)]
struct Missing {
    seq: u64,
    since: u64,
    last_nack: Option<u64>,
    retries: u32,
}

/// The buffer of one stream; `P` is how stored packets are kept (see `PacketBuf`).
pub struct JitterBuffer<P: PacketBuf = Vec<u8>> {
    cfg: JitterConfig,
    slots: Vec<Slot<P>>,
    mask: u64,
    ssrc: Option<u32>,
    /// Extended sequence number of the next packet to release.
    head: u64,
    /// Highest extended sequence number stored (head - 1 when nothing is stored yet).
    highest: u64,
    started: bool,
    last_ts: Option<u64>,
    /// Sequence numbers in the window detected missing (their state is in the slots).
    n_missing: usize,
    /// Nothing released yet: a packet older than the first one can still move the head back.
    fresh: bool,
    /// Timestamp of the frame given up last, so its remaining packets count as one frame.
    dropped_ts: Option<u64>,
    waiting_keyframe: bool,
    keyframe_needed: bool,
    last_keyframe_request: Option<u64>,
    stats: JitterStats,
    /// Buffers of released slots (when `P::REUSABLE`), most recently freed last: LIFO, so the next
    /// packet is copied into memory that is still in cache rather than a slot a whole ring away.
    pool: Vec<P>,
}

impl JitterBuffer<Vec<u8>> {
    /// A buffer that keeps its own copy of every packet.
    pub fn new(cfg: JitterConfig) -> Self {
        Self::with_packet_buf(cfg)
    }

    /// Stores one RTP packet (already decrypted), copied. Returns false when it was dropped (and
    /// counted).
    pub fn push(&mut self, packet: &[u8], now_ms: u64) -> bool {
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(packet);
        self.push_packet(buf, now_ms)
    }

    /// Stores one RTP packet that `fill` writes into a (pooled) buffer: for a producer that builds
    /// the packet itself, such as the router writing a recording sink's stream, one copy fewer.
    pub fn push_with(&mut self, now_ms: u64, fill: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        fill(&mut buf);
        self.push_packet(buf, now_ms)
    }
}

impl<P: PacketBuf> JitterBuffer<P> {
    pub fn with_packet_buf(mut cfg: JitterConfig) -> Self {
        cfg.capacity = cfg.capacity.clamp(16, 1 << 16).next_power_of_two();
        let video = cfg.codec.is_video();
        Self {
            slots: (0..cfg.capacity).map(|_| Slot::empty()).collect(),
            mask: cfg.capacity as u64 - 1,
            cfg,
            ssrc: None,
            head: 0,
            highest: 0,
            started: false,
            last_ts: None,
            n_missing: 0,
            fresh: true,
            dropped_ts: None,
            waiting_keyframe: video,
            keyframe_needed: false,
            last_keyframe_request: None,
            stats: JitterStats::default(),
            pool: Vec::new(),
        }
    }

    pub fn stats(&self) -> &JitterStats {
        &self.stats
    }

    pub fn config(&self) -> &JitterConfig {
        &self.cfg
    }

    /// Packets stored and not yet released.
    pub fn buffered(&self) -> usize {
        if !self.started {
            return 0;
        }
        (self.head..=self.highest)
            .filter(|s| self.slot(*s).is_some())
            .count()
    }

    fn slot(&self, seq: u64) -> Option<&Slot<P>> {
        let s = &self.slots[(seq & self.mask) as usize];
        (s.seq == seq).then_some(s)
    }

    fn clear_slot(&mut self, seq: u64) {
        let s = &mut self.slots[(seq & self.mask) as usize];
        if s.seq == seq {
            s.seq = EMPTY;
            if let Some(p) = s.packet.take() {
                self.recycle(p);
            }
        }
    }

    fn recycle(&mut self, p: P) {
        if P::REUSABLE && self.pool.len() < self.slots.len() {
            self.pool.push(p);
        }
    }

    fn break_chain(&mut self) {
        if self.cfg.codec.is_video() {
            self.waiting_keyframe = true;
            self.keyframe_needed = true;
        }
    }

    fn reset(&mut self, seq: u64) {
        self.clear_all();
        self.head = seq;
        self.highest = seq.wrapping_sub(1);
        self.stats.resets += 1;
        self.break_chain();
    }

    fn extend_ts(&mut self, ts: u32) -> u64 {
        let ext = self
            .extend_timestamp(ts)
            .unwrap_or((1u64 << 32) + ts as u64);
        if self.last_ts.is_none_or(|l| ext > l) {
            self.last_ts = Some(ext);
        }
        ext
    }

    /// A 32-bit RTP timestamp of this stream extended like the timestamps of released frames (the
    /// nearest value to the newest one seen); None before the first packet.
    pub fn extend_timestamp(&self, ts: u32) -> Option<u64> {
        let last = self.last_ts?;
        let delta = ts.wrapping_sub(last as u32) as i32 as i64;
        Some((last as i64 + delta).max(0) as u64)
    }

    /// Stores one RTP packet (already decrypted), keeping `packet` itself. Returns false when it was
    /// dropped (and counted).
    pub fn push_packet(&mut self, packet: P, now_ms: u64) -> bool {
        let parsed = RtpView::parse(packet.bytes()).map(|rtp| {
            let bytes = packet.bytes();
            let payload = rtp.payload();
            let from = payload.as_ptr() as usize - bytes.as_ptr() as usize;
            (RtpFields::of(&rtp), from, from + payload.len())
        });
        let Ok((header, from, to)) = parsed else {
            self.stats.malformed += 1;
            self.recycle(packet);
            return false;
        };
        let len = packet.bytes().len();
        let Some(seq) = self.accept(&header, &packet.bytes()[from..to], len, now_ms) else {
            self.recycle(packet);
            return false;
        };
        self.store(seq, packet, (from, to));
        true
    }

    /// Stores one packet given by its header fields and its payload alone (`payload.bytes()` is the
    /// whole payload): for a producer that has parsed the packet already and shares the payload's
    /// buffer, such as the router feeding a recording sink from its NACK cache (no copy, no parse).
    pub fn push_payload(&mut self, header: RtpFields, payload: P, now_ms: u64) -> bool {
        let len = payload.bytes().len();
        let Some(seq) = self.accept(&header, payload.bytes(), HEADER_LEN + len, now_ms) else {
            self.recycle(payload);
            return false;
        };
        self.store(seq, payload, (0, len));
        true
    }

    fn store(&mut self, seq: u64, packet: P, payload_at: (usize, usize)) {
        let slot = &mut self.slots[(seq & self.mask) as usize];
        slot.payload_at = payload_at;
        if let Some(old) = slot.packet.replace(packet) {
            self.recycle(old);
        }
    }

    /// Checks and places one packet: everything `push_packet` does except storing the bytes.
    /// Returns its extended sequence number.
    fn accept(
        &mut self,
        rtp: &RtpFields,
        payload: &[u8],
        packet_len: usize,
        now_ms: u64,
    ) -> Option<u64> {
        self.stats.packets += 1;
        self.stats.bytes += packet_len as u64;
        if self.ssrc.is_some_and(|s| s != rtp.ssrc) {
            // A new source (stream restart): nothing stored belongs to it.
            self.started = false;
            self.last_ts = None;
            self.stats.resets += 1;
            self.break_chain();
        }
        self.ssrc = Some(rtp.ssrc);
        let seq = if self.started {
            extend_u16(self.highest, rtp.seq)
        } else {
            let s = 0x1_0000 + rtp.seq as u64;
            self.clear_all();
            self.head = s;
            self.highest = s - 1;
            self.started = true;
            self.fresh = true;
            s
        };
        if seq < self.head && self.fresh && self.highest - seq < self.slots.len() as u64 {
            // Reordered around the very first packet: start earlier.
            for m in seq + 1..self.head {
                self.mark_missing(m, now_ms);
            }
            self.head = seq;
        }
        if seq < self.head {
            self.stats.late += 1;
            return None;
        }
        if seq >= self.head + self.slots.len() as u64 {
            self.reset(seq);
        }
        if self.slot(seq).is_some() {
            self.stats.duplicates += 1;
            return None;
        }
        let padding = payload.is_empty();
        if padding {
            self.stats.padding += 1;
        }
        let start = !padding && depack::starts_frame(self.cfg.codec, payload);
        let ts = self.extend_ts(rtp.timestamp);
        let slot = &mut self.slots[(seq & self.mask) as usize];
        slot.seq = seq;
        slot.ts = ts;
        slot.marker = rtp.marker;
        slot.start = start;
        slot.padding = padding;
        slot.arrival = now_ms;
        if seq > self.highest || self.highest < self.head {
            for m in (self.highest.wrapping_add(1)).max(self.head)..seq {
                self.mark_missing(m, now_ms);
            }
            self.highest = seq;
        } else if self.take_missing(seq) {
            self.stats.recovered += 1;
        }
        Some(seq)
    }

    /// True when a missing packet in `[from, to]` has waited past the target delay.
    fn expired(&self, from: u64, to: u64, now_ms: u64) -> bool {
        self.n_missing > 0
            && (from..=to).any(|seq| {
                self.missing_at(seq)
                    .is_some_and(|m| now_ms >= m.since.saturating_add(self.cfg.target_delay_ms))
            })
    }

    fn missing_at(&self, seq: u64) -> Option<&Missing> {
        self.slots[(seq & self.mask) as usize]
            .missing
            .as_ref()
            .filter(|m| m.seq == seq)
    }

    fn mark_missing(&mut self, seq: u64, now_ms: u64) {
        let s = &mut self.slots[(seq & self.mask) as usize];
        if s.missing.is_none_or(|m| m.seq != seq) {
            self.n_missing += s.missing.is_none() as usize;
            s.missing = Some(Missing {
                seq,
                since: now_ms,
                last_nack: None,
                retries: 0,
            });
        }
    }

    /// Forgets that `seq` is missing; true if it was.
    fn take_missing(&mut self, seq: u64) -> bool {
        let s = &mut self.slots[(seq & self.mask) as usize];
        if s.missing.is_some_and(|m| m.seq == seq) {
            s.missing = None;
            self.n_missing -= 1;
            return true;
        }
        false
    }

    /// Empties every slot, packets and NACK state alike. The packets are let go at once: a shared
    /// payload held here would keep the router's NACK cache from reusing its buffer.
    fn clear_all(&mut self) {
        for i in 0..self.slots.len() {
            let s = &mut self.slots[i];
            s.seq = EMPTY;
            s.missing = None;
            if let Some(p) = s.packet.take() {
                self.recycle(p);
            }
        }
        self.n_missing = 0;
    }

    /// Drops the packets from head up to the next frame start with a newer timestamp.
    fn give_up(&mut self) {
        self.fresh = false;
        let dropped_ts = self.slot(self.head).map(|s| s.ts);
        if dropped_ts.is_none() || dropped_ts != self.dropped_ts {
            self.stats.frames_incomplete += 1;
        }
        self.dropped_ts = dropped_ts;
        loop {
            if self.take_missing(self.head) {
                self.stats.lost += 1;
            }
            self.clear_slot(self.head);
            self.head += 1;
            if self.head > self.highest {
                break;
            }
            match self.slot(self.head) {
                Some(s) if s.start && Some(s.ts) != dropped_ts => break,
                _ => {}
            }
        }
        self.break_chain();
    }

    /// Releases every frame that is complete, in order, and gives up on blocked frames whose missing
    /// packets are past their deadline. Each released frame goes to `sink` with its payloads still in
    /// the buffer, so the caller writes the frame's bytes exactly once, straight into the object it
    /// keeps (the Python binding: a `bytes`). Returns the number of frames released.
    pub fn pop_frames_with(
        &mut self,
        now_ms: u64,
        mut sink: impl FnMut(&FrameInfo, &FrameParts<'_, P>),
    ) -> usize {
        let mut released = 0;
        while self.started && self.head <= self.highest {
            let Some(first) = self.slot(self.head) else {
                if self.expired(self.head, self.head, now_ms) {
                    self.give_up();
                    continue;
                }
                break;
            };
            if first.padding {
                self.clear_slot(self.head);
                self.head += 1;
                continue;
            }
            if !first.start {
                // Middle of a frame whose beginning was lost or never received; right after the
                // start, the beginning may still arrive out of order.
                if self.fresh && now_ms < first.arrival.saturating_add(self.cfg.target_delay_ms) {
                    break;
                }
                self.give_up();
                continue;
            }
            let ts = first.ts;
            let arrival = first.arrival;
            let mut end = None;
            let mut i = self.head;
            while i <= self.highest {
                let Some(s) = self.slot(i) else { break };
                if s.ts != ts {
                    end = Some(i - 1);
                    break;
                }
                if s.marker || !self.cfg.codec.is_video() {
                    end = Some(i);
                    break;
                }
                i += 1;
            }
            let Some(end) = end else {
                if self.expired(self.head, self.highest.min(i), now_ms) {
                    self.give_up();
                    continue;
                }
                break;
            };
            // Validate and size the frame without copying; the bytes are written once, by the sink.
            let mut size = depack::ByteCount::default();
            let res = depack::assemble(
                self.cfg.codec,
                payloads(&self.slots, self.mask, self.head, end),
                &mut size,
            );
            let from = self.head;
            self.fresh = false;
            let emit = match res {
                Err(_) => {
                    self.stats.malformed += 1;
                    self.stats.frames_incomplete += 1;
                    self.break_chain();
                    None
                }
                Ok(keyframe) => {
                    let video = self.cfg.codec.is_video();
                    if video && self.waiting_keyframe && !keyframe {
                        self.stats.frames_undecodable += 1;
                        self.keyframe_needed = true;
                        None
                    } else {
                        if video && keyframe {
                            self.waiting_keyframe = false;
                            self.keyframe_needed = false;
                        }
                        self.stats.frames += 1;
                        self.stats.keyframes += (video && keyframe) as u64;
                        Some(keyframe)
                    }
                }
            };
            if let Some(keyframe) = emit {
                let info = FrameInfo {
                    timestamp: ts,
                    keyframe,
                    arrival_ms: arrival,
                    len: size.0,
                };
                let parts = FrameParts {
                    codec: self.cfg.codec,
                    slots: &self.slots,
                    mask: self.mask,
                    from,
                    to: end,
                };
                sink(&info, &parts);
                released += 1;
            }
            for s in from..=end {
                self.clear_slot(s);
            }
            self.head = end + 1;
        }
        released
    }

    /// Releases every frame that is complete, in order (see `pop_frames_with`), as owned frames.
    pub fn pop_frames(&mut self, now_ms: u64) -> Vec<Frame> {
        let mut out = Vec::new();
        self.pop_frames_with(now_ms, |info, parts| {
            let mut data = vec![0; info.len];
            parts.write_to(&mut data);
            out.push(Frame {
                timestamp: info.timestamp,
                keyframe: info.keyframe,
                data,
                arrival_ms: info.arrival_ms,
            });
        });
        out
    }

    /// End of stream: releases what is complete and drops the rest.
    pub fn flush(&mut self) -> Vec<Frame> {
        let mut out = self.pop_frames(u64::MAX);
        // A trailing frame whose last packet never came: give it up too.
        while self.has_pending() {
            self.give_up_head();
            out.extend(self.pop_frames(u64::MAX));
        }
        out
    }

    /// Packets are still held after `pop_frames` (at end of stream: an incomplete trailing frame).
    pub fn has_pending(&self) -> bool {
        self.started && self.head <= self.highest
    }

    /// Drops the frame at the head (as when its deadline passes); for end of stream.
    pub fn give_up_head(&mut self) {
        if self.has_pending() {
            self.give_up();
        }
    }

    /// NACKs due now and a keyframe request when the chain is broken.
    pub fn poll(&mut self, now_ms: u64) -> Vec<JitterEvent> {
        let mut events = Vec::new();
        let mut seqs = Vec::new();
        let (delay, interval, max) = (
            self.cfg.target_delay_ms,
            self.cfg.nack_interval_ms,
            self.cfg.max_nack_retries,
        );
        // Missing numbers are always inside [head, highest]; nothing to scan when none are, or
        // when nothing may be NACKed (a recording sink: that scan would run at every router poll).
        let last = if self.started && self.n_missing > 0 && max > 0 {
            self.highest
        } else {
            0
        };
        for seq in self.head..=last {
            let Some(m) = self.slots[(seq & self.mask) as usize]
                .missing
                .as_mut()
                .filter(|m| m.seq == seq)
            else {
                continue;
            };
            let useful = now_ms < m.since.saturating_add(delay);
            let due = m
                .last_nack
                .is_none_or(|t| now_ms >= t.saturating_add(interval));
            if useful && due && m.retries < max {
                m.retries += 1;
                m.last_nack = Some(now_ms);
                seqs.push(seq as u16);
            }
        }
        if !seqs.is_empty() {
            self.stats.nacks += seqs.len() as u64;
            events.push(JitterEvent::Nack(seqs));
        }
        if self.keyframe_needed
            && self
                .last_keyframe_request
                .is_none_or(|t| now_ms >= t.saturating_add(self.cfg.keyframe_interval_ms))
        {
            self.last_keyframe_request = Some(now_ms);
            self.stats.keyframe_requests += 1;
            events.push(JitterEvent::KeyframeRequest);
        }
        events
    }
}
