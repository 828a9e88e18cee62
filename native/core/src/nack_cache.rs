//! Pre-allocated ring of a track's recent packets, indexed by extended sequence number, so that
//! subscribers' NACKs can be answered and duplicate (RTX) copies recognised.
//!
//! A slot owns its payload buffer and the next packet in that slot reuses it in place, so a warm
//! ring allocates nothing per packet. A recording sink keeps a reference to the cached payload
//! instead of a copy: the router lends it (`NackCache::lend`, which turns the slot's buffer into a
//! shared `Arc`, then reused in place like an owned one) only on tracks that have a sink, and takes
//! the buffers back when the track's last sink is gone (`NackCache::reclaim`). Owning rather than
//! always sharing saves each insert a second cache miss (the `Arc`'s header, elsewhere in memory)
//! and a locked compare-and-swap (`Arc::get_mut`).
//!
//! A router's ring starts small and grows (doubling, up to a most) only when it would otherwise
//! hold less than a given time of packets: an audio track or a modest video stream keeps a few
//! hundred KB less per track than a ring sized for the fastest stream, and a faster stream, or a
//! subscriber far away, still gets the history it needs.

use std::sync::Arc;

/// What the router needs to rewrite a cached packet for any subscriber. One cache line: every
/// packet a track receives writes a slot, and the rings of all tracks together are far larger
/// than the CPU's caches, so each write is a miss (the CSRCs, which browsers never send, are out
/// of line for that reason).
#[derive(Debug, Clone)]
#[repr(align(64))]
pub struct CachedPacket {
    pub ext_seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    pub payload_type: u8,
    pub abs_send_time: Option<[u8; 3]>,
    pub audio_level: Option<u8>,
    /// Reused in place like the payload: allocated once, by the first packet that has CSRCs.
    csrcs: Option<Box<Csrcs>>,
    payload: Payload,
}

/// A packet's CSRC list, out of line (browsers never send one).
#[derive(Debug, Clone)]
struct Csrcs {
    len: u8,
    /// At most 15 CSRCs (the header's 4-bit count).
    bytes: [u8; 60],
}

/// A slot's payload buffer: its own, or lent to a recording sink.
#[derive(Debug, Clone)]
enum Payload {
    Own(Vec<u8>),
    Lent(Arc<Vec<u8>>),
}

impl Payload {
    fn bytes(&self) -> &[u8] {
        match self {
            Payload::Own(v) => v,
            Payload::Lent(a) => a,
        }
    }

    /// Replaces the contents with `data`, in the same buffer unless a sink still holds it (then
    /// in a new one). A lent buffer stays shared: its track still has a sink, which will want the
    /// next packet's payload too.
    fn fill(&mut self, data: &[u8]) {
        let v = match self {
            Payload::Own(v) => v,
            Payload::Lent(a) => match Arc::get_mut(a) {
                Some(v) => v,
                None => {
                    *a = Arc::new(data.to_vec());
                    return;
                }
            },
        };
        v.clear();
        v.extend_from_slice(data);
    }

    /// Owned again if no sink holds it any more.
    fn reclaim(&mut self) {
        if let Payload::Lent(a) = self {
            if let Some(v) = Arc::get_mut(a) {
                *self = Payload::Own(std::mem::take(v));
            }
        }
    }
}

/// `ext_seq` of a slot that holds no packet. Real extended sequence numbers count cycles of 65 536
/// from 0 and never get near it; keeping the mark in the slot saves reading a second array.
const EMPTY: u64 = u64::MAX;

impl Default for CachedPacket {
    fn default() -> Self {
        Self {
            ext_seq: EMPTY,
            timestamp: 0,
            marker: false,
            payload_type: 0,
            abs_send_time: None,
            audio_level: None,
            csrcs: None,
            payload: Payload::Own(Vec::new()),
        }
    }
}

// A field added here must not push a slot onto a second line.
const _: () = assert!(std::mem::size_of::<CachedPacket>() == 64);

impl CachedPacket {
    pub fn payload(&self) -> &[u8] {
        self.payload.bytes()
    }
    /// The payload's buffer to hold without copying, if it was lent (`NackCache::lend`).
    pub fn lent_payload(&self) -> Option<&Arc<Vec<u8>>> {
        match &self.payload {
            Payload::Lent(a) => Some(a),
            Payload::Own(_) => None,
        }
    }
    pub fn csrc_bytes(&self) -> &[u8] {
        self.csrcs
            .as_deref()
            .map_or(&[], |c| &c.bytes[..usize::from(c.len)])
    }
}

/// Fields of a packet to store; the payload and CSRCs are copied into the slot's own buffers.
pub struct PacketToCache<'a> {
    pub ext_seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    pub payload_type: u8,
    pub abs_send_time: Option<[u8; 3]>,
    pub audio_level: Option<u8>,
    pub csrc_bytes: &'a [u8],
    pub payload: &'a [u8],
}

pub struct NackCache {
    /// A slot holds a packet unless its `ext_seq` is [`EMPTY`].
    slots: Vec<CachedPacket>,
    /// Most slots the ring may grow to (`insert_timed`).
    max_capacity: usize,
    /// Least media time of packets to keep (`insert_timed`): a packet less than this apart from
    /// the new one about to be overwritten grows the ring instead.
    history_ms: u64,
}

/// Result of offering a packet to the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    Stored,
    /// The same sequence number is already cached (an RTX copy or a network duplicate).
    Duplicate,
    /// Older than everything the ring can hold any more; not stored.
    TooOld,
}

impl NackCache {
    /// `capacity` slots; payload buffers grow on first use to the largest packet and are then reused.
    pub fn new(capacity: usize) -> Self {
        Self::growing(capacity, capacity, 0)
    }

    /// `initial` slots, doubled (up to `max`) whenever `insert_timed` would overwrite a packet
    /// less than `history_ms` of media older.
    pub fn growing(initial: usize, max: usize, history_ms: u64) -> Self {
        let capacity = initial.max(1);
        Self {
            slots: vec![CachedPacket::default(); capacity],
            max_capacity: max.max(capacity),
            history_ms,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn max_capacity(&self) -> usize {
        self.max_capacity
    }

    pub fn history_ms(&self) -> u64 {
        self.history_ms
    }

    /// Keep at least `ms` of packets from now on (never less than asked at construction: callers
    /// raise it for subscribers with long round trips).
    pub fn want_history_ms(&mut self, ms: u64) {
        self.history_ms = self.history_ms.max(ms);
    }

    /// The same cache emptied, keeping its current size and history (a new sequence space).
    pub fn emptied(&self) -> Self {
        Self::growing(self.capacity(), self.max_capacity, self.history_ms)
    }

    /// Doubles the ring (up to its most), keeping every cached packet.
    fn grow(&mut self) {
        let capacity = (self.slots.len() * 2).min(self.max_capacity);
        let mut slots = vec![CachedPacket::default(); capacity];
        for slot in std::mem::take(&mut self.slots) {
            if slot.ext_seq != EMPTY {
                let i = (slot.ext_seq % capacity as u64) as usize;
                if slots[i].ext_seq == EMPTY || slots[i].ext_seq < slot.ext_seq {
                    slots[i] = slot;
                }
            }
        }
        self.slots = slots;
    }

    /// `insert`, first growing the ring if the packet in the slot (older, to be overwritten, or
    /// newer, making this one too old) is less than the history to keep away from this one in media
    /// time: RTP timestamps at `clock_rate` Hz, so a worker that falls behind and handles a second
    /// of packets at once does not grow rings that still span their second of media.
    pub fn insert_timed(&mut self, p: &PacketToCache<'_>, clock_rate: u32) -> Insert {
        let per_ms = u64::from(clock_rate / 1000).max(1);
        loop {
            let i = self.index(p.ext_seq);
            let held = &self.slots[i];
            let apart = u64::from((p.timestamp.wrapping_sub(held.timestamp) as i32).unsigned_abs());
            let young = held.ext_seq != EMPTY
                && held.ext_seq != p.ext_seq
                && apart / per_ms < self.history_ms;
            if !young || self.slots.len() >= self.max_capacity {
                break;
            }
            self.grow();
        }
        self.insert(p)
    }

    fn index(&self, ext_seq: u64) -> usize {
        (ext_seq % self.slots.len() as u64) as usize
    }

    pub fn insert(&mut self, p: &PacketToCache<'_>) -> Insert {
        if p.ext_seq == EMPTY {
            return Insert::TooOld;
        }
        let i = self.index(p.ext_seq);
        let held = self.slots[i].ext_seq;
        if held != EMPTY {
            if held == p.ext_seq {
                return Insert::Duplicate;
            }
            if held > p.ext_seq {
                return Insert::TooOld;
            }
        }
        let slot = &mut self.slots[i];
        slot.ext_seq = p.ext_seq;
        slot.timestamp = p.timestamp;
        slot.marker = p.marker;
        slot.payload_type = p.payload_type;
        slot.abs_send_time = p.abs_send_time;
        slot.audio_level = p.audio_level;
        let n = p.csrc_bytes.len().min(60);
        if n > 0 || slot.csrcs.is_some() {
            let c = slot.csrcs.get_or_insert_with(|| {
                Box::new(Csrcs {
                    len: 0,
                    bytes: [0; 60],
                })
            });
            c.bytes[..n].copy_from_slice(&p.csrc_bytes[..n]);
            c.len = n as u8;
        }
        slot.payload.fill(p.payload);
        Insert::Stored
    }

    /// Takes back the buffers lent to a sink that no longer holds them (call when a track's last
    /// sink is gone: until then a lent slot stays shared).
    pub fn reclaim(&mut self) {
        for slot in &mut self.slots {
            slot.payload.reclaim();
        }
    }

    /// The payload of `ext_seq`, shared from now on (its buffer becomes an `Arc`), for a recording
    /// sink to hold instead of a copy.
    pub fn lend(&mut self, ext_seq: u64) -> Option<&Arc<Vec<u8>>> {
        let i = self.index(ext_seq);
        let slot = &mut self.slots[i];
        if ext_seq == EMPTY || slot.ext_seq != ext_seq {
            return None;
        }
        if let Payload::Own(v) = &mut slot.payload {
            slot.payload = Payload::Lent(Arc::new(std::mem::take(v)));
        }
        slot.lent_payload()
    }

    pub fn get(&self, ext_seq: u64) -> Option<&CachedPacket> {
        let i = self.index(ext_seq);
        (ext_seq != EMPTY && self.slots[i].ext_seq == ext_seq).then(|| &self.slots[i])
    }

    /// Whether `ext_seq` has been seen (still cached).
    pub fn contains(&self, ext_seq: u64) -> bool {
        self.get(ext_seq).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(ext_seq: u64, payload: &[u8]) -> PacketToCache<'_> {
        PacketToCache {
            ext_seq,
            timestamp: ext_seq as u32 * 10,
            marker: false,
            payload_type: 96,
            abs_send_time: None,
            audio_level: None,
            csrc_bytes: &[],
            payload,
        }
    }

    #[test]
    fn stores_finds_and_dedupes() {
        let mut c = NackCache::new(4);
        assert_eq!(c.insert(&pkt(10, b"a")), Insert::Stored);
        assert_eq!(c.insert(&pkt(10, b"a")), Insert::Duplicate);
        assert_eq!(c.get(10).unwrap().payload(), b"a");
        assert!(c.get(11).is_none());
        assert!(c.get(6).is_none()); // same slot, different seq
    }

    #[test]
    fn an_empty_slot_matches_no_sequence_number() {
        let mut c = NackCache::new(4);
        for seq in [0, 1, 3, u64::MAX] {
            assert!(c.get(seq).is_none(), "{seq}");
        }
        let never = PacketToCache {
            ext_seq: u64::MAX,
            ..pkt(0, b"x")
        };
        assert_eq!(c.insert(&never), Insert::TooOld);
        assert_eq!(c.insert(&pkt(0, b"a")), Insert::Stored);
        assert_eq!(c.get(0).unwrap().payload(), b"a");
        assert!(c.get(4).is_none() && c.get(u64::MAX).is_none());
    }

    #[test]
    fn ring_overwrites_oldest_and_refuses_stale() {
        let mut c = NackCache::new(4);
        for s in 0..8 {
            c.insert(&pkt(s, &[s as u8]));
        }
        assert!(c.get(3).is_none());
        assert_eq!(c.get(7).unwrap().payload(), &[7]);
        assert_eq!(c.insert(&pkt(2, b"late")), Insert::TooOld);
    }

    #[test]
    fn a_held_payload_is_never_overwritten() {
        let mut c = NackCache::new(2);
        c.insert(&pkt(0, b"first"));
        assert!(
            c.get(0).unwrap().lent_payload().is_none(),
            "owned until lent"
        );
        assert!(c.lend(2).is_none() && c.lend(u64::MAX).is_none());
        let held = Arc::clone(c.lend(0).unwrap());
        assert_eq!(Arc::as_ptr(c.lend(0).unwrap()), Arc::as_ptr(&held));
        c.insert(&pkt(2, b"second")); // same slot
        assert_eq!(held.as_slice(), b"first");
        assert_eq!(c.get(2).unwrap().payload(), b"second");
        // Lent again and let go: reused in place, still shared while the track has a sink.
        let before = Arc::clone(c.lend(2).unwrap());
        let buffer = before.as_ptr();
        drop(before);
        c.insert(&pkt(4, b"third"));
        let slot = c.get(4).unwrap();
        assert_eq!(slot.payload(), b"third");
        assert_eq!(
            slot.payload().as_ptr(),
            buffer,
            "the released buffer is reused in place"
        );
        assert!(slot.lent_payload().is_some());
        // The sink gone: every buffer nobody holds is owned again, one still held stays shared.
        let still = Arc::clone(c.lend(4).unwrap());
        c.insert(&pkt(5, b"fourth"));
        c.lend(5);
        c.insert(&pkt(6, b"fifth")); // slot 0: `still` holds the buffer of 4
        assert_eq!(still.as_slice(), b"third");
        c.reclaim();
        assert!(c.get(5).unwrap().lent_payload().is_none());
        assert!(c.get(6).unwrap().lent_payload().is_none());
        assert_eq!(c.get(5).unwrap().payload(), b"fourth");
    }

    #[test]
    fn csrcs_are_kept_and_cleared_per_packet() {
        let mut c = NackCache::new(4);
        let four = [1u8, 2, 3, 4];
        let with = PacketToCache {
            csrc_bytes: &four,
            ..pkt(0, b"a")
        };
        c.insert(&with);
        c.insert(&pkt(4, b"b")); // same slot, no CSRCs
        assert!(c.get(4).unwrap().csrc_bytes().is_empty());
        c.insert(&PacketToCache { ext_seq: 8, ..with });
        assert_eq!(c.get(8).unwrap().csrc_bytes(), &four);
    }

    #[test]
    fn grows_to_keep_the_history_and_no_further() {
        // 1 kHz clock, 4 slots, 100 ms to keep, at most 16: a packet every 10 ms needs 10 slots.
        let at = |s: u64, ts: u32| PacketToCache {
            timestamp: ts,
            ..pkt(s, b"x")
        };
        let mut c = NackCache::growing(4, 16, 100);
        for s in 0..40 {
            assert_eq!(c.insert_timed(&at(s, s as u32 * 10), 1000), Insert::Stored);
        }
        assert_eq!(c.capacity(), 16);
        assert!((24..40).all(|s| c.contains(s)) && !c.contains(23));
        // A packet every 50 ms needs 2 slots: a ring that never grew stays at 4.
        let mut slow = NackCache::growing(4, 16, 100);
        for s in 0..40 {
            slow.insert_timed(&at(s, s as u32 * 50), 1000);
        }
        assert_eq!(slow.capacity(), 4);
        // Ten packets of one frame (one timestamp): capped at the most.
        let mut burst = NackCache::growing(2, 8, 100);
        for s in 0..10 {
            burst.insert_timed(&at(s, 7), 1000);
        }
        assert_eq!(burst.capacity(), 8);
        assert!((2..10).all(|s| burst.contains(s)));
        // Timestamps wrap: still 10 ms apart.
        let mut wrap = NackCache::growing(4, 16, 100);
        for s in 0..40 {
            wrap.insert_timed(&at(s, (u32::MAX - 200).wrapping_add(s as u32 * 10)), 1000);
        }
        assert_eq!(wrap.capacity(), 16);
    }

    #[test]
    fn growing_keeps_every_packet_and_still_refuses_stale_ones() {
        // pkt() stamps 10 per sequence number: 10 ms apart at 1 kHz.
        let mut c = NackCache::growing(4, 64, 1_000);
        for s in [0u64, 1, 2, 3, 5, 6] {
            c.insert_timed(&pkt(s, &[s as u8]), 1000);
        }
        assert_eq!(c.capacity(), 8);
        for s in [0u64, 1, 2, 3, 5, 6] {
            assert_eq!(c.get(s).unwrap().payload(), &[s as u8], "seq {s}");
        }
        assert_eq!(c.insert_timed(&pkt(4, b"late"), 1000), Insert::Stored);
        assert_eq!(c.insert_timed(&pkt(12, b"ahead"), 1000), Insert::Stored);
        assert_eq!(c.capacity(), 16, "12 would have pushed 4 out");
        assert_eq!(c.insert_timed(&pkt(28, b"ahead"), 1000), Insert::Stored);
        assert_eq!(c.capacity(), 32, "12 would have made 28 too old");
        assert_eq!(c.get(12).unwrap().payload(), b"ahead");
        assert_eq!(c.insert_timed(&pkt(5, b"again"), 1000), Insert::Duplicate);
        // A longer history asked later grows the ring again; a shorter one cannot shrink it.
        let mut short = NackCache::growing(4, 64, 20);
        for s in 0..8u64 {
            short.insert_timed(&pkt(s, b"x"), 1000);
        }
        assert_eq!(short.capacity(), 4);
        short.want_history_ms(10);
        short.want_history_ms(100);
        for s in 8..40u64 {
            short.insert_timed(&pkt(s, b"x"), 1000);
        }
        assert_eq!((short.capacity(), short.history_ms()), (16, 100));
        let e = short.emptied();
        assert_eq!((e.capacity(), e.history_ms()), (16, 100));
        assert!(!e.contains(39));
    }
}
