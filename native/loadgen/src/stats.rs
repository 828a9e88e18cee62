//! What the receiving side measures: per-stream loss from extended sequence numbers, interarrival
//! jitter (RFC 3550 6.4.1, computed on send-stamp transit times), and a latency histogram.

/// Histogram bucket width in microseconds; latencies above the last bucket land in it.
const BUCKET_US: u64 = 10;
const BUCKETS: usize = 200_000; // up to 2 s

#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    buckets: Vec<u32>,
    pub count: u64,
    pub sum_us: u64,
    pub max_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            count: 0,
            sum_us: 0,
            max_us: 0,
        }
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, us: u64) {
        let i = ((us / BUCKET_US) as usize).min(BUCKETS - 1);
        self.buckets[i] = self.buckets[i].saturating_add(1);
        self.count += 1;
        self.sum_us += us;
        self.max_us = self.max_us.max(us);
    }

    /// The `q`-quantile (0..=1) in microseconds (upper edge of its bucket), 0 when empty.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return (((i as u64) + 1) * BUCKET_US).min(self.max_us) as f64;
            }
        }
        self.max_us as f64
    }

    pub fn mean_us(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_us as f64 / self.count as f64
        }
    }

    pub fn clear(&mut self) {
        if self.count > 0 {
            self.buckets.iter_mut().for_each(|b| *b = 0);
        }
        self.count = 0;
        self.sum_us = 0;
        self.max_us = 0;
    }
}

/// Reception state of one incoming SSRC.
#[derive(Debug, Clone, Default)]
pub struct RxStream {
    /// Extended sequence numbers (offset by 2^32 so early reordering cannot underflow).
    first: Option<u64>,
    highest: u64,
    pub received: u64,
    pub bytes: u64,
    /// RFC 3550 jitter estimate in microseconds.
    pub jitter_us: f64,
    last_transit: Option<i64>,
}

impl RxStream {
    pub fn on_packet(&mut self, seq: u16, len: usize, transit_us: Option<i64>) {
        let ext = match self.first {
            None => {
                let e = (1u64 << 32) + u64::from(seq);
                self.first = Some(e);
                self.highest = e;
                e
            }
            Some(_) => {
                let delta = i64::from(seq.wrapping_sub(self.highest as u16) as i16);
                (self.highest as i64 + delta) as u64
            }
        };
        if ext > self.highest {
            self.highest = ext;
        }
        if let Some(first) = self.first {
            if ext < first {
                self.first = Some(ext);
            }
        }
        self.received += 1;
        self.bytes += len as u64;
        if let Some(transit) = transit_us {
            if let Some(last) = self.last_transit {
                let d = (transit - last).unsigned_abs() as f64;
                self.jitter_us += (d - self.jitter_us) / 16.0;
            }
            self.last_transit = Some(transit);
        }
    }

    /// Packets the sender numbered between the first and the highest seen.
    pub fn expected(&self) -> u64 {
        self.first.map_or(0, |f| self.highest - f + 1)
    }

    /// Expected minus received, never negative (duplicates can exceed expected).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_counts_gaps_across_wraparound() {
        let mut s = RxStream::default();
        for seq in [65530u16, 65531, 65533, 65535, 0, 1, 4] {
            s.on_packet(seq, 100, None);
        }
        assert_eq!(s.expected(), 11);
        assert_eq!(s.received, 7);
        assert_eq!(s.lost(), 4);
    }

    #[test]
    fn reordering_before_the_first_packet_is_not_loss() {
        let mut s = RxStream::default();
        for seq in [10u16, 9, 11, 12] {
            s.on_packet(seq, 1, None);
        }
        assert_eq!((s.expected(), s.lost()), (4, 0));
    }

    #[test]
    fn jitter_follows_transit_variation() {
        let mut s = RxStream::default();
        for (i, transit) in [1000, 3000, 1000, 3000, 1000].into_iter().enumerate() {
            s.on_packet(i as u16, 1, Some(transit));
        }
        assert!(s.jitter_us > 0.0 && s.jitter_us < 2000.0);
    }

    #[test]
    fn quantiles() {
        let mut h = LatencyHistogram::default();
        for us in 1..=1000 {
            h.record(us);
        }
        assert!((h.quantile_us(0.5) - 500.0).abs() <= 10.0);
        assert!((h.quantile_us(0.99) - 990.0).abs() <= 10.0);
        assert_eq!(h.quantile_us(1.0), 1000.0);
        h.clear();
        assert_eq!(h.quantile_us(0.5), 0.0);
    }
}
