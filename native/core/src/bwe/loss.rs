//! Loss-based bound: a ceiling on the estimate that drops when the receiver loses more than 10 %,
//! holds between 2 and 10 % (links with some random loss), and rises when loss is under 2 %.

const LOW_LOSS: f64 = 0.02;
const HIGH_LOSS: f64 = 0.10;
/// Loss is judged over at least this many packets (TWCC) and this often at most.
const MIN_PACKETS: u64 = 20;
const MIN_INTERVAL_US: u64 = 200_000;
const INCREASE_INTERVAL_US: u64 = 1_000_000;
const DECREASE_BASE_US: u64 = 300_000;

#[derive(Debug)]
pub(crate) struct LossBound {
    bound: f64,
    received: u64,
    lost: u64,
    last_update_us: Option<u64>,
    last_increase_us: Option<u64>,
    last_decrease_us: Option<u64>,
    last_fraction: f64,
}

/// What one loss update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LossVerdict {
    Low,
    Hold,
    Decreased,
}

impl LossBound {
    pub fn new(start: f64) -> Self {
        Self {
            bound: start,
            received: 0,
            lost: 0,
            last_update_us: None,
            last_increase_us: None,
            last_decrease_us: None,
            last_fraction: 0.0,
        }
    }

    pub fn bound(&self) -> f64 {
        self.bound
    }

    pub fn fraction(&self) -> f64 {
        self.last_fraction
    }

    pub fn raise_to(&mut self, bps: f64) {
        self.bound = self.bound.max(bps);
    }

    /// Counts packets from feedback; updates once enough are in.
    pub fn add(
        &mut self,
        received: u64,
        lost: u64,
        estimate: f64,
        max: f64,
        rtt_us: u64,
        now_us: u64,
    ) -> Option<LossVerdict> {
        self.received += received;
        self.lost += lost;
        let total = self.received + self.lost;
        if total < MIN_PACKETS
            || self
                .last_update_us
                .is_some_and(|t| now_us < t + MIN_INTERVAL_US)
        {
            return None;
        }
        let fraction = self.lost as f64 / total as f64;
        self.received = 0;
        self.lost = 0;
        self.last_update_us = Some(now_us);
        Some(self.apply(fraction, estimate, max, rtt_us, now_us))
    }

    /// One loss figure (from TWCC or a receiver report) applied to the bound.
    pub fn apply(
        &mut self,
        fraction: f64,
        estimate: f64,
        max: f64,
        rtt_us: u64,
        now_us: u64,
    ) -> LossVerdict {
        self.last_fraction = fraction;
        if fraction < LOW_LOSS {
            if self
                .last_increase_us
                .is_none_or(|t| now_us >= t + INCREASE_INTERVAL_US)
            {
                self.bound = (self.bound * 1.08 + 1_000.0).min(max);
                self.last_increase_us = Some(now_us);
            }
            LossVerdict::Low
        } else if fraction > HIGH_LOSS {
            if self
                .last_decrease_us
                .is_some_and(|t| now_us < t + DECREASE_BASE_US + rtt_us)
            {
                return LossVerdict::Hold;
            }
            self.bound = self.bound.min(estimate) * (1.0 - 0.5 * fraction);
            self.last_decrease_us = Some(now_us);
            LossVerdict::Decreased
        } else {
            LossVerdict::Hold
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_loss_decreases_moderate_holds_low_rises() {
        let mut l = LossBound::new(2_000_000.0);
        // 25 % loss over 20 packets: bound = min(bound, estimate) * (1 - 0.125).
        assert_eq!(
            l.add(15, 5, 1_000_000.0, 5e6, 100_000, 1_000_000),
            Some(LossVerdict::Decreased)
        );
        assert_eq!(l.bound(), 875_000.0);
        // Again within 300 ms + RTT: held.
        assert_eq!(
            l.add(15, 5, 875_000.0, 5e6, 100_000, 1_250_000),
            Some(LossVerdict::Hold)
        );
        assert_eq!(l.bound(), 875_000.0);
        // 5 %: held.
        assert_eq!(
            l.add(19, 1, 875_000.0, 5e6, 100_000, 2_000_000),
            Some(LossVerdict::Hold)
        );
        // Too few packets: no verdict yet.
        assert_eq!(l.add(5, 0, 875_000.0, 5e6, 100_000, 3_000_000), None);
        assert_eq!(
            l.add(15, 0, 875_000.0, 5e6, 100_000, 3_000_000),
            Some(LossVerdict::Low)
        );
        assert_eq!(l.bound().round(), 946_000.0);
        assert!((l.fraction() - 0.0).abs() < 1e-9);
    }
}
