//! Acknowledged bitrate: what the receiver actually got, over a sliding window of arrival time.
//! The rate controller decreases relative to it, and caps increases by it.

use std::collections::VecDeque;

const WINDOW_US: i64 = 500_000;
/// No estimate before this much arrival time is covered.
const MIN_SPAN_US: i64 = 150_000;

#[derive(Debug, Default)]
pub(crate) struct AckedRate {
    window: VecDeque<(i64, usize)>,
    bytes: usize,
    newest: Option<i64>,
}

impl AckedRate {
    pub fn add(&mut self, arrival_us: i64, size: usize) {
        let newest = match self.newest {
            Some(n) if arrival_us < n - 10 * WINDOW_US || arrival_us > n + 20 * WINDOW_US => {
                // The receiver's clock jumped: start over.
                self.window.clear();
                self.bytes = 0;
                arrival_us
            }
            Some(n) => n.max(arrival_us),
            None => arrival_us,
        };
        self.newest = Some(newest);
        self.window.push_back((arrival_us, size));
        self.bytes += size;
        while let Some(&(t, s)) = self.window.front() {
            if t >= newest - WINDOW_US {
                break;
            }
            self.window.pop_front();
            self.bytes -= s;
        }
    }

    /// Bits per second, once the window spans enough arrival time.
    pub fn rate_bps(&self) -> Option<f64> {
        let &(first_t, first_size) = self.window.front()?;
        let span = self.newest? - first_t;
        if span < MIN_SPAN_US {
            return None;
        }
        Some((self.bytes - first_size) as f64 * 8e6 / span as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_the_arrival_rate() {
        let mut a = AckedRate::default();
        // 1000 bytes every 4 ms = 2 Mbit/s.
        for i in 0..30 {
            a.add(i * 4_000, 1000);
        }
        assert_eq!(a.rate_bps(), None, "116 ms is too short");
        for i in 30..400 {
            a.add(i * 4_000, 1000);
        }
        assert_eq!(a.rate_bps(), Some(2_000_000.0));
        a.add(100_000_000_000, 1000);
        assert_eq!(a.rate_bps(), None);
    }
}
