//! Packet index estimation (RFC 3711 §3.3.1, Appendix A) and the sliding replay window
//! (RFC 3711 §3.3.2).

use super::SrtpError;

/// Largest SRTP rollover counter; past it the 48-bit index space is exhausted.
const MAX_ROC: u64 = u32::MAX as u64;

/// Estimate the 48-bit packet index of `seq` given the highest index seen so far on the
/// stream (`None` for a new stream, whose rollover counter starts at 0).
///
/// Errors with [`SrtpError::TooOld`] when the guess would fall before index 0 (a packet from
/// before the stream started) and [`SrtpError::IndexExhausted`] past the last rollover.
#[inline]
pub fn estimate_index(highest: Option<u64>, seq: u16) -> Result<u64, SrtpError> {
    let Some(highest) = highest else {
        return Ok(u64::from(seq));
    };
    let roc = highest >> 16;
    let s_l = highest as u16;
    let roc_guess = if s_l < 0x8000 {
        if seq > s_l && seq - s_l > 0x8000 {
            roc.checked_sub(1).ok_or(SrtpError::TooOld)?
        } else {
            roc
        }
    } else if s_l - 0x8000 > seq {
        roc + 1
    } else {
        roc
    };
    if roc_guess > MAX_ROC {
        return Err(SrtpError::IndexExhausted);
    }
    Ok((roc_guess << 16) | u64::from(seq))
}

/// Sliding window of the last [`ReplayWindow::SIZE`] accepted indices below the highest one.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// Highest accepted index, if any.
    highest: Option<u64>,
    /// Bit k set: index `highest - k` was accepted.
    seen: u128,
}

impl ReplayWindow {
    pub const SIZE: u64 = 128;

    pub fn new() -> Self {
        Self::default()
    }

    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Whether `index` may be accepted; does not change the window.
    #[inline]
    pub fn check(&self, index: u64) -> Result<(), SrtpError> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if index > highest {
            return Ok(());
        }
        let age = highest - index;
        if age >= Self::SIZE {
            Err(SrtpError::TooOld)
        } else if self.seen >> age & 1 == 1 {
            Err(SrtpError::Replayed)
        } else {
            Ok(())
        }
    }

    /// Record `index` as accepted. Call only after [`check`](Self::check) and authentication.
    #[inline]
    pub fn accept(&mut self, index: u64) {
        match self.highest {
            Some(highest) if index <= highest => {
                let age = highest - index;
                if age < Self::SIZE {
                    self.seen |= 1 << age;
                }
            }
            Some(highest) => {
                let shift = index - highest;
                self.seen = if shift >= Self::SIZE {
                    0
                } else {
                    self.seen << shift
                };
                self.seen |= 1;
                self.highest = Some(index);
            }
            None => {
                self.seen = 1;
                self.highest = Some(index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_follows_sequence_wrap_both_ways() {
        assert_eq!(estimate_index(None, 65535), Ok(65535));
        // Wrap forward: seq 2 after 65535 belongs to ROC 1.
        assert_eq!(estimate_index(Some(65535), 2), Ok(65536 + 2));
        // Late packet from before the wrap keeps ROC 0.
        assert_eq!(estimate_index(Some(65536 + 2), 65534), Ok(65534));
        // Before the very start of the stream: unknowable, refused.
        assert_eq!(estimate_index(Some(10), 65530), Err(SrtpError::TooOld));
        // Ordinary forward progress.
        assert_eq!(estimate_index(Some(3 << 16 | 100), 101), Ok(3 << 16 | 101));
        assert_eq!(
            estimate_index(Some(MAX_ROC << 16 | 0xffff), 0),
            Err(SrtpError::IndexExhausted)
        );
    }

    #[test]
    fn window_refuses_replays_and_ancient_packets() {
        let mut w = ReplayWindow::new();
        assert!(w.check(1000).is_ok());
        w.accept(1000);
        assert_eq!(w.check(1000), Err(SrtpError::Replayed));
        assert!(w.check(999).is_ok());
        w.accept(999);
        assert_eq!(w.check(999), Err(SrtpError::Replayed));
        assert!(w.check(1000 - 127).is_ok());
        assert_eq!(w.check(1000 - 128), Err(SrtpError::TooOld));
        w.accept(1200);
        assert_eq!(w.check(1000), Err(SrtpError::TooOld));
        assert_eq!(w.check(1200), Err(SrtpError::Replayed));
        assert!(w.check(1199).is_ok());
        assert!(w.check(5000).is_ok());
    }
}
