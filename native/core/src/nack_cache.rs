//! Pre-allocated ring of a track's recent packets, indexed by extended sequence number, so that
//! subscribers' NACKs can be answered and duplicate (RTX) copies recognised.
//!
//! Payloads are shared (`Arc`): a recording sink keeps a reference to the cached payload instead of
//! a copy. A slot's buffer is reused in place when nobody else holds it (the usual case), so the
//! ring still allocates nothing per packet once warm.

use std::sync::Arc;

/// What the router needs to rewrite a cached packet for any subscriber.
#[derive(Debug, Clone, Default)]
pub struct CachedPacket {
    pub ext_seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    pub payload_type: u8,
    pub abs_send_time: Option<[u8; 3]>,
    pub audio_level: Option<u8>,
    csrcs: [[u8; 4]; 15],
    csrc_len: u8,
    payload: Arc<Vec<u8>>,
}

impl CachedPacket {
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
    /// The payload's buffer itself, to hold without copying.
    pub fn shared_payload(&self) -> &Arc<Vec<u8>> {
        &self.payload
    }
    pub fn csrc_bytes(&self) -> &[u8] {
        &self.csrcs.as_flattened()[..self.csrc_len as usize]
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
    slots: Vec<CachedPacket>,
    /// Which slots hold a packet (a slot's ext_seq alone can't say: 0 is a valid value).
    filled: Vec<bool>,
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
        let capacity = capacity.max(1);
        Self {
            slots: vec![CachedPacket::default(); capacity],
            filled: vec![false; capacity],
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn index(&self, ext_seq: u64) -> usize {
        (ext_seq % self.slots.len() as u64) as usize
    }

    pub fn insert(&mut self, p: &PacketToCache<'_>) -> Insert {
        let i = self.index(p.ext_seq);
        if self.filled[i] {
            let held = self.slots[i].ext_seq;
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
        slot.csrcs.as_flattened_mut()[..n].copy_from_slice(&p.csrc_bytes[..n]);
        slot.csrc_len = n as u8;
        match Arc::get_mut(&mut slot.payload) {
            Some(buf) => {
                buf.clear();
                buf.extend_from_slice(p.payload);
            }
            // Still held by a sink that has not released it: leave it to the sink.
            None => slot.payload = Arc::new(p.payload.to_vec()),
        }
        self.filled[i] = true;
        Insert::Stored
    }

    pub fn get(&self, ext_seq: u64) -> Option<&CachedPacket> {
        let i = self.index(ext_seq);
        (self.filled[i] && self.slots[i].ext_seq == ext_seq).then(|| &self.slots[i])
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
        let held = Arc::clone(c.get(0).unwrap().shared_payload());
        c.insert(&pkt(2, b"second")); // same slot
        assert_eq!(held.as_slice(), b"first");
        assert_eq!(c.get(2).unwrap().payload(), b"second");
        drop(held);
        let before = Arc::as_ptr(c.get(2).unwrap().shared_payload());
        c.insert(&pkt(4, b"third"));
        assert_eq!(
            Arc::as_ptr(c.get(4).unwrap().shared_payload()),
            before,
            "an unshared buffer is reused in place"
        );
    }
}
