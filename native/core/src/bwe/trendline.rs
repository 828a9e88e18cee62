//! Delay trend and overuse detection: the accumulated change in one-way delay between groups is
//! smoothed, a line is fitted through the last samples, and its slope (is the queue growing?) is
//! compared with a threshold that adapts to the jitter the path normally shows.

use std::collections::VecDeque;

use super::arrival::GroupDelta;
use super::BweState;

/// Samples in the regression window.
const WINDOW: usize = 20;
const SMOOTHING: f64 = 0.9;
/// The slope (ms of delay per ms) is scaled by the sample count (up to this) and a gain.
const MAX_SCALE_SAMPLES: usize = 60;
const TREND_GAIN: f64 = 4.0;
/// Adaptive threshold: start, bounds, how fast it follows the trend up and down (per ms).
const THRESHOLD_START: f64 = 12.5;
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
/// Spikes this far above the threshold (a route change, a stall) do not move it.
const MAX_ADAPT_OFFSET: f64 = 15.0;
/// Overuse must last this long (ms of send time) before it is signalled.
const OVERUSE_TIME_MS: f64 = 10.0;

#[derive(Debug)]
pub(crate) struct Trendline {
    window: VecDeque<(f64, f64)>,
    first_at_ms: Option<f64>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    samples: usize,
    trend: f64,
    prev_trend: f64,
    threshold: f64,
    last_threshold_us: Option<u64>,
    /// Time spent above the threshold, ms of send spacing (None: not over it).
    over_ms: Option<f64>,
    over_count: u32,
    state: BweState,
}

impl Default for Trendline {
    fn default() -> Self {
        Self {
            window: VecDeque::with_capacity(WINDOW + 1),
            first_at_ms: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            samples: 0,
            trend: 0.0,
            prev_trend: 0.0,
            threshold: THRESHOLD_START,
            last_threshold_us: None,
            over_ms: None,
            over_count: 0,
            state: BweState::Normal,
        }
    }
}

impl Trendline {
    pub fn state(&self) -> BweState {
        self.state
    }

    #[cfg(test)]
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    pub fn update(&mut self, d: GroupDelta, now_us: u64) -> BweState {
        self.samples += 1;
        self.accumulated_ms += d.arrival_ms - d.send_ms;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        let first = *self.first_at_ms.get_or_insert(d.at_ms);
        self.window.push_back((d.at_ms - first, self.smoothed_ms));
        if self.window.len() > WINDOW {
            self.window.pop_front();
        }
        if self.window.len() == WINDOW {
            if let Some(slope) = fit_slope(&self.window) {
                self.trend = slope;
            }
        }
        self.detect(d.send_ms, now_us);
        self.state
    }

    fn detect(&mut self, send_ms: f64, now_us: u64) {
        if self.samples < 2 {
            return;
        }
        let modified = self.samples.min(MAX_SCALE_SAMPLES) as f64 * self.trend * TREND_GAIN;
        if modified > self.threshold {
            let over = self.over_ms.map_or(send_ms / 2.0, |t| t + send_ms);
            self.over_ms = Some(over);
            self.over_count += 1;
            if over > OVERUSE_TIME_MS && self.over_count > 1 && self.trend >= self.prev_trend {
                self.over_ms = Some(0.0);
                self.over_count = 0;
                self.state = BweState::Overusing;
            }
        } else {
            self.over_ms = None;
            self.over_count = 0;
            self.state = if modified < -self.threshold {
                BweState::Underusing
            } else {
                BweState::Normal
            };
        }
        self.prev_trend = self.trend;
        self.adapt_threshold(modified, now_us);
    }

    fn adapt_threshold(&mut self, modified: f64, now_us: u64) {
        let last = *self.last_threshold_us.get_or_insert(now_us);
        self.last_threshold_us = Some(now_us);
        if modified.abs() > self.threshold + MAX_ADAPT_OFFSET {
            return;
        }
        let k = if modified.abs() < self.threshold {
            K_DOWN
        } else {
            K_UP
        };
        let dt_ms = (now_us.saturating_sub(last) as f64 / 1000.0).min(100.0);
        self.threshold += k * (modified.abs() - self.threshold) * dt_ms;
        self.threshold = self.threshold.clamp(THRESHOLD_MIN, THRESHOLD_MAX);
    }
}

/// Least-squares slope of y over x; None when all x are equal.
fn fit_slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut num, mut den) = (0.0, 0.0);
    for &(x, y) in points {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    (den != 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut Trendline, n: usize, send_ms: f64, arrival_ms: f64, at: &mut f64) -> BweState {
        let mut s = BweState::Normal;
        for _ in 0..n {
            *at += arrival_ms;
            s = t.update(
                GroupDelta {
                    send_ms,
                    arrival_ms,
                    at_ms: *at,
                },
                (*at * 1000.0) as u64,
            );
        }
        s
    }

    #[test]
    fn growing_delay_is_overuse_shrinking_is_underuse() {
        let mut t = Trendline::default();
        let mut at = 0.0;
        assert_eq!(feed(&mut t, 40, 10.0, 10.0, &mut at), BweState::Normal);
        // Each group arrives 2 ms later than it was sent after the previous: queue growing.
        assert_eq!(feed(&mut t, 15, 10.0, 12.0, &mut at), BweState::Overusing);
        // Queue draining.
        assert_eq!(feed(&mut t, 30, 10.0, 7.0, &mut at), BweState::Underusing);
        assert_eq!(feed(&mut t, 60, 10.0, 10.0, &mut at), BweState::Normal);
    }

    #[test]
    fn threshold_adapts_to_jitter_within_bounds() {
        let mut t = Trendline::default();
        let mut at = 0.0;
        feed(&mut t, 200, 10.0, 10.0, &mut at);
        assert_eq!(t.threshold(), THRESHOLD_MIN);
        assert_eq!(
            fit_slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)].into_iter().collect()),
            Some(2.0)
        );
        assert_eq!(
            fit_slope(&[(1.0, 1.0), (1.0, 3.0)].into_iter().collect()),
            None
        );
    }
}
