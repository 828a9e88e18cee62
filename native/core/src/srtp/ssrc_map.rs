//! Per-SSRC state of one SRTP direction.
//!
//! A peer uses a handful of SSRCs (audio, video, their RTX, a few simulcast layers), and every
//! packet looks its own up. The first [`INLINE`] live in the context itself and are found by a
//! short scan: no hashing and no separate table to miss cache on, which a hash map costs twice
//! per lookup (control bytes, then the bucket) on a context that other peers' packets have
//! pushed out of cache. Further SSRCs (up to the context's cap) spill into a hash map with
//! SipHash, since the peer chooses them.

use std::collections::HashMap;

/// SSRCs kept inline per map.
pub const INLINE: usize = 8;

pub struct SsrcMap<V> {
    len: u8,
    keys: [u32; INLINE],
    values: [V; INLINE],
    spill: HashMap<u32, V>,
}

impl<V: Default> Default for SsrcMap<V> {
    fn default() -> Self {
        Self {
            len: 0,
            keys: [0; INLINE],
            values: std::array::from_fn(|_| V::default()),
            spill: HashMap::new(),
        }
    }
}

impl<V: Default> SsrcMap<V> {
    pub fn len(&self) -> usize {
        usize::from(self.len) + self.spill.len()
    }

    #[inline]
    fn position(&self, ssrc: u32) -> Option<usize> {
        self.keys[..usize::from(self.len)]
            .iter()
            .position(|&k| k == ssrc)
    }

    #[inline]
    pub fn get(&self, ssrc: u32) -> Option<&V> {
        match self.position(ssrc) {
            Some(i) => Some(&self.values[i]),
            None if self.spill.is_empty() => None,
            None => self.spill.get(&ssrc),
        }
    }

    /// The SSRC's state, created (default) if it has none.
    #[inline]
    pub fn get_or_default(&mut self, ssrc: u32) -> &mut V {
        if let Some(i) = self.position(ssrc) {
            return &mut self.values[i];
        }
        if usize::from(self.len) < INLINE && !self.spill.contains_key(&ssrc) {
            let i = usize::from(self.len);
            self.len += 1;
            self.keys[i] = ssrc;
            self.values[i] = V::default();
            return &mut self.values[i];
        }
        self.spill.entry(ssrc).or_default()
    }

    #[inline]
    pub fn insert(&mut self, ssrc: u32, value: V) {
        *self.get_or_default(ssrc) = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssrcs_past_the_inline_ones_spill_and_stay_distinct() {
        let mut m: SsrcMap<u64> = SsrcMap::default();
        assert_eq!(m.len(), 0);
        assert_eq!(
            m.get(0),
            None,
            "SSRC 0 is a valid key, absent until inserted"
        );
        for ssrc in 0..20u32 {
            m.insert(ssrc.wrapping_mul(0x9e37_79b9), u64::from(ssrc) + 100);
        }
        assert_eq!(m.len(), 20);
        for ssrc in 0..20u32 {
            assert_eq!(
                m.get(ssrc.wrapping_mul(0x9e37_79b9)),
                Some(&(u64::from(ssrc) + 100))
            );
        }
        assert_eq!(m.get(7), None);
        *m.get_or_default(0) += 1; // inline (key 0 is the first inserted)
        *m.get_or_default(19u32.wrapping_mul(0x9e37_79b9)) += 1; // spilled
        assert_eq!(m.get(0), Some(&101));
        assert_eq!(m.get(19u32.wrapping_mul(0x9e37_79b9)), Some(&120));
        assert_eq!(m.len(), 20, "updating never adds");
    }

    #[test]
    fn a_new_ssrc_gets_default_state() {
        let mut m: SsrcMap<u64> = SsrcMap::default();
        assert_eq!(*m.get_or_default(42), 0);
        *m.get_or_default(42) = 9;
        assert_eq!(m.get(42), Some(&9));
        assert_eq!(m.len(), 1);
    }
}
