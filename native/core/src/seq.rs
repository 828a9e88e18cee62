//! Wrap-aware arithmetic for RTP sequence numbers (u16) and timestamps (u32), and the removal of
//! padding packets from a forwarded sequence space.

use std::collections::VecDeque;

/// True when `a` is newer than `b` in u16 sequence space (RFC 3550 A.1 style, half-range rule).
#[inline]
pub fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// True when `a` is newer than `b` in u32 timestamp space.
#[inline]
pub fn ts_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

/// Extends a u16 value to 64 bits relative to a reference extended value: the result is the extended
/// value closest to `reference` whose low 16 bits are `value`. Never goes below zero.
#[inline]
pub fn extend_u16(reference: u64, value: u16) -> u64 {
    let delta = value.wrapping_sub(reference as u16) as i16 as i64;
    let ext = reference as i64 + delta;
    if ext < 0 {
        // Before the first cycle: only possible when the reference is near zero; take the next cycle.
        (ext + 0x1_0000) as u64
    } else {
        ext as u64
    }
}

/// Unwraps a stream of u16 sequence numbers into a monotonic 64-bit space, tolerating reordering.
/// The first value is placed in cycle 1 so that late packets from "before" it never go negative.
#[derive(Debug, Clone, Default)]
pub struct SeqUnwrapper {
    highest: Option<u64>,
}

impl SeqUnwrapper {
    pub fn new() -> Self {
        Self { highest: None }
    }

    /// Extended value of `seq`; updates the highest value seen when `seq` is newer.
    pub fn unwrap(&mut self, seq: u16) -> u64 {
        match self.highest {
            None => {
                let ext = 0x1_0000 + seq as u64;
                self.highest = Some(ext);
                ext
            }
            Some(h) => {
                let ext = extend_u16(h, seq);
                if ext > h {
                    self.highest = Some(ext);
                }
                ext
            }
        }
    }

    /// Extended value of `seq` without updating state (None before the first packet).
    pub fn peek(&self, seq: u16) -> Option<u64> {
        self.highest.map(|h| extend_u16(h, seq))
    }

    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

/// Removes padding-only packets from the sequence space without leaving gaps: "compressed" sequence
/// numbers (c) skip every padding packet that arrived in order. Segments record from which extended
/// sequence number on how many packets have been removed.
#[derive(Debug, Default)]
pub struct SeqCompressor {
    segments: VecDeque<(u64, u64)>,
    base_removed: u64,
}

const MAX_SEGMENTS: usize = 256;

impl SeqCompressor {
    pub fn removed_at(&self, ext: u64) -> u64 {
        self.segments
            .iter()
            .rev()
            .find(|(from, _)| *from <= ext)
            .map_or(self.base_removed, |s| s.1)
    }

    pub fn compress(&self, ext: u64) -> u64 {
        ext.saturating_sub(self.removed_at(ext))
    }

    pub fn decompress(&self, c: u64) -> u64 {
        let removed = self
            .segments
            .iter()
            .rev()
            .find(|(from, removed)| from - removed <= c)
            .map_or(self.base_removed, |s| s.1);
        c + removed
    }

    /// Drop `ext` (a padding packet newer than anything received) from the sequence space.
    pub fn remove(&mut self, ext: u64) {
        match self.segments.back_mut() {
            Some(last) if last.0 == ext => {
                last.0 = ext + 1;
                last.1 += 1;
            }
            _ => {
                let removed = self.removed_at(ext) + 1;
                if self.segments.len() == MAX_SEGMENTS {
                    if let Some((_, r)) = self.segments.pop_front() {
                        self.base_removed = r;
                    }
                }
                self.segments.push_back((ext + 1, removed));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_across_wrap() {
        assert!(seq_newer(1, 65535));
        assert!(!seq_newer(65535, 1));
        assert!(!seq_newer(7, 7));
        assert!(ts_newer(5, u32::MAX - 5));
        assert!(!ts_newer(u32::MAX - 5, 5));
    }

    #[test]
    fn unwrap_across_wrap_and_reorder() {
        let mut u = SeqUnwrapper::new();
        let a = u.unwrap(65534);
        let b = u.unwrap(65535);
        let c = u.unwrap(1); // 0 lost or reordered
        let d = u.unwrap(0); // late
        assert_eq!(b, a + 1);
        assert_eq!(c, a + 3);
        assert_eq!(d, a + 2);
        assert_eq!(u.highest(), Some(c));
    }

    #[test]
    fn late_packet_before_first_stays_positive() {
        let mut u = SeqUnwrapper::new();
        let a = u.unwrap(0);
        let late = u.unwrap(65535);
        assert_eq!(late + 1, a);
    }
}
