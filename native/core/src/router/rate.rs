//! Windowed bitrate of a byte counter, sampled from the router's periodic `poll` (never per packet).

/// One sample every `RATE_SAMPLE_MS`; the rate spans the oldest kept sample to the newest, so at
/// most `RATE_SAMPLES - 1` intervals (2 s).
pub const RATE_SAMPLE_MS: u64 = 250;
const RATE_SAMPLES: usize = 9;

#[derive(Debug, Clone, Default)]
pub struct RateWindow {
    /// (time ms, counter) ring; `len` valid entries ending at `head`.
    samples: [(u64, u64); RATE_SAMPLES],
    head: usize,
    len: usize,
}

impl RateWindow {
    /// Whether a new sample is due at `now_ms`.
    pub fn due(&self, now_ms: u64) -> bool {
        self.len == 0 || now_ms >= self.samples[self.head].0.saturating_add(RATE_SAMPLE_MS)
    }

    /// Records the counter's value at `now_ms` and returns bits per second over the window
    /// (0 until two samples exist).
    pub fn sample(&mut self, now_ms: u64, bytes: u64) -> u64 {
        if self.len > 0 {
            self.head = (self.head + 1) % RATE_SAMPLES;
        }
        self.samples[self.head] = (now_ms, bytes);
        self.len = (self.len + 1).min(RATE_SAMPLES);
        let oldest = self.samples[(self.head + RATE_SAMPLES + 1 - self.len) % RATE_SAMPLES];
        let dt = now_ms.saturating_sub(oldest.0);
        if dt == 0 {
            return 0;
        }
        bytes.saturating_sub(oldest.1).saturating_mul(8000) / dt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_and_window_forgets_old_bursts() {
        let mut w = RateWindow::default();
        assert_eq!(w.sample(0, 0), 0);
        // 1000 bytes per 250 ms = 32 kbit/s
        let mut bps = 0;
        for i in 1..=8u64 {
            assert!(!w.due(i * 250 - 1));
            assert!(w.due(i * 250));
            bps = w.sample(i * 250, i * 1000);
        }
        assert_eq!(bps, 32_000);
        // a silent window: after 8 more samples with no new bytes the rate is 0
        for i in 9..=16u64 {
            bps = w.sample(i * 250, 8000);
        }
        assert_eq!(bps, 0);
        // half the window carries 4000 bytes → 16 kbit/s over 2 s
        for i in 17..=20u64 {
            bps = w.sample(i * 250, 8000 + (i - 16) * 1000);
        }
        assert_eq!(bps, 16_000);
    }
}
