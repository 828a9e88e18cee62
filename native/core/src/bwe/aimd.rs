//! AIMD rate control on the delay signal: increase while the path shows no queue growth
//! (multiplicatively far from the last known capacity, additively near it), decrease to a fraction
//! of the acknowledged rate when it does, hold while the queue drains.

use super::BweState;

/// Decrease to this share of the acknowledged rate.
const BETA: f64 = 0.85;
/// Multiplicative increase per second far from convergence.
const GROWTH_PER_S: f64 = 1.08;
/// Increases never lead the acknowledged rate by more than this factor (plus a margin).
const MAX_LEAD: f64 = 1.5;
const LEAD_MARGIN_BPS: f64 = 10_000.0;
const MIN_ADDITIVE_BPS_PER_S: f64 = 4_000.0;
/// Capacity estimate: exponential average of the acked rate at decreases, and its spread.
const CAPACITY_ALPHA: f64 = 0.05;
const CAPACITY_STDS: f64 = 3.0;
/// How long a probe result outweighs a lower acked rate (the acked window's length, doubled).
const PROBE_MEMORY_US: u64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Hold,
    Increase,
    Decrease,
}

#[derive(Debug)]
pub(crate) struct Aimd {
    estimate: f64,
    phase: Phase,
    last_change_us: Option<u64>,
    last_decrease_us: Option<u64>,
    capacity: Option<f64>,
    capacity_var: f64,
    /// Last probe result and when: right after a probe the acked window still shows the older,
    /// lower rate, so a decrease then starts from the probe's measurement instead.
    probed: Option<(f64, u64)>,
    min: f64,
    max: f64,
}

impl Aimd {
    pub fn new(start: u64, min: u64, max: u64) -> Self {
        Self {
            estimate: start as f64,
            phase: Phase::Increase,
            last_change_us: None,
            last_decrease_us: None,
            capacity: None,
            capacity_var: 0.4,
            probed: None,
            min: min as f64,
            max: max as f64,
        }
    }

    pub fn estimate(&self) -> f64 {
        self.estimate
    }

    /// A measurement (a probe) says the path carries at least `bps`.
    pub fn raise_to(&mut self, bps: f64, now_us: u64) {
        self.probed = Some((bps, now_us));
        if bps > self.estimate {
            self.estimate = bps.min(self.max);
            self.last_change_us = Some(now_us);
        }
    }

    /// A measurement (a probe's queue draining) says the path carries `bps` and no more: the
    /// estimate goes no higher, and increases from there are the additive ones near capacity.
    pub fn cap_to(&mut self, bps: f64, now_us: u64) {
        if self.estimate > bps {
            self.estimate = bps.max(self.min);
            self.last_change_us = Some(now_us);
        }
        self.update_capacity(bps);
    }

    /// Feedback timeout: halve, at most once per second.
    pub fn back_off(&mut self, now_us: u64) -> bool {
        if self
            .last_decrease_us
            .is_some_and(|t| now_us < t + 1_000_000)
        {
            return false;
        }
        self.estimate = (self.estimate / 2.0).max(self.min);
        self.last_decrease_us = Some(now_us);
        self.phase = Phase::Hold;
        true
    }

    /// One update per feedback; returns true when it decreased.
    pub fn update(
        &mut self,
        usage: BweState,
        acked: Option<f64>,
        rtt_us: u64,
        now_us: u64,
    ) -> bool {
        match usage {
            BweState::Overusing => self.phase = Phase::Decrease,
            BweState::Normal if self.phase == Phase::Hold => {
                self.phase = Phase::Increase;
                self.last_change_us = Some(now_us);
            }
            BweState::Underusing => self.phase = Phase::Hold,
            BweState::Normal => {}
        }
        let mut decreased = false;
        match self.phase {
            Phase::Hold => {}
            Phase::Increase => self.increase(acked, rtt_us, now_us),
            Phase::Decrease => {
                // Give the last decrease a round trip to show before cutting again.
                let wait = rtt_us.clamp(10_000, 200_000);
                if self.last_decrease_us.is_none_or(|t| now_us >= t + wait) {
                    self.decrease(acked, now_us);
                    decreased = true;
                } else {
                    self.phase = Phase::Hold;
                }
            }
        }
        self.estimate = self.estimate.clamp(self.min, self.max);
        decreased
    }

    fn increase(&mut self, acked: Option<f64>, rtt_us: u64, now_us: u64) {
        let last = *self.last_change_us.get_or_insert(now_us);
        let dt_s = (now_us.saturating_sub(last) as f64 / 1e6).min(1.0);
        self.last_change_us = Some(now_us);
        if let (Some(a), Some(c)) = (acked, self.capacity) {
            if a > c + CAPACITY_STDS * (self.capacity_var * c).sqrt() {
                self.capacity = None; // capacity went up: search again
            }
        }
        let add = if self.capacity.is_some() {
            // Near the known capacity: about one packet per response time.
            let response_s = (rtt_us as f64 / 1e6) + 0.1;
            let frame_bits = self.estimate / 30.0;
            let packets = (frame_bits / (1200.0 * 8.0)).ceil().max(1.0);
            (frame_bits / packets / response_s).max(MIN_ADDITIVE_BPS_PER_S) * dt_s
        } else {
            (self.estimate * (GROWTH_PER_S.powf(dt_s) - 1.0)).max(1_000.0 * dt_s)
        };
        let mut next = self.estimate + add;
        if let Some(a) = acked {
            let cap = MAX_LEAD * a + LEAD_MARGIN_BPS;
            if next > cap {
                // Already leading the acked rate: hold (an increase never lowers).
                next = self.estimate.max(cap).min(next);
            }
        }
        self.estimate = next;
    }

    fn decrease(&mut self, acked: Option<f64>, now_us: u64) {
        let mut base = acked.unwrap_or(self.estimate);
        if let Some((p, at)) = self.probed {
            if now_us < at + PROBE_MEMORY_US {
                base = base.max(p);
            }
        }
        let mut next = BETA * base;
        if next > self.estimate {
            next = match self.capacity {
                Some(c) => BETA * c,
                None => self.estimate,
            };
        }
        self.estimate = next.min(self.estimate);
        if let Some(a) = acked {
            self.update_capacity(a);
        }
        self.last_decrease_us = Some(now_us);
        self.last_change_us = Some(now_us);
        self.phase = Phase::Hold;
    }

    fn update_capacity(&mut self, acked: f64) {
        let c = match self.capacity {
            Some(c) => (1.0 - CAPACITY_ALPHA) * c + CAPACITY_ALPHA * acked,
            None => acked,
        };
        // Normalised variance, bounded so neither a lucky streak nor one outlier dominates.
        let norm = c.max(1.0);
        self.capacity_var = ((1.0 - CAPACITY_ALPHA) * self.capacity_var
            + CAPACITY_ALPHA * (c - acked).powi(2) / norm)
            .clamp(0.4, 2.5);
        self.capacity = Some(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplicative_far_additive_near_decrease_on_overuse() {
        let mut a = Aimd::new(1_000_000, 50_000, 10_000_000);
        let mut now = 0;
        for _ in 0..10 {
            now += 100_000;
            a.update(BweState::Normal, Some(1_000_000.0), 50_000, now);
        }
        // ~8 % a second, capped at 1.5x the acked rate.
        let e = a.estimate();
        assert!((1_070_000.0..1_090_000.0).contains(&e), "{e}");
        now += 100_000;
        assert!(a.update(BweState::Overusing, Some(1_000_000.0), 50_000, now));
        assert_eq!(a.estimate(), 850_000.0);
        // Within a round trip: no second cut.
        assert!(!a.update(BweState::Overusing, Some(1_000_000.0), 50_000, now + 20_000));
        // Near convergence: additive, a few tens of kbit/s a second.
        let before = a.estimate();
        for _ in 0..10 {
            now += 100_000;
            a.update(BweState::Normal, Some(850_000.0), 50_000, now);
        }
        let gained = a.estimate() - before;
        assert!((10_000.0..70_000.0).contains(&gained), "{gained}");
        // Does not grow while it leads the acked rate by more than 1.5x.
        let before = a.estimate();
        for _ in 0..300 {
            now += 100_000;
            a.update(BweState::Normal, Some(200_000.0), 50_000, now);
        }
        assert_eq!(a.estimate(), before);
    }
}
