//! A simulated bottleneck in front of a subscriber: what a congested home link does to the
//! packets a server sends it. Each packet first meets random loss, then a FIFO link of a fixed
//! rate with a bounded queue (as `tc tbf rate R latency L` shapes): it leaves the link once the
//! packets before it have, plus its own serialisation time, and is dropped at the tail when it
//! would wait longer than the queue allows. Sans-IO: the caller says when each packet arrived and
//! learns when (if ever) it "arrives" behind the bottleneck.

use crate::synth::Rng;

/// IPv4 + UDP headers: what a link carries beyond the datagram the socket sees.
pub const WIRE_OVERHEAD_BYTES: u64 = 28;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImpairConfig {
    /// Link rate in bits per second; 0 means no rate limit (loss only).
    pub rate_bps: u64,
    /// Longest time a packet may wait in the queue before the link drops it.
    pub queue_us: u64,
    /// Random loss before the link, 0..=1.
    pub loss: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub delivered: u64,
    pub delivered_bytes: u64,
    pub dropped_loss: u64,
    pub dropped_queue: u64,
    /// Longest queueing delay a delivered packet had.
    pub max_queue_us: u64,
}

#[derive(Debug, Clone)]
pub struct Link {
    pub cfg: ImpairConfig,
    /// When the link finishes sending what is queued on it.
    free_at_us: u64,
    rng: Rng,
    pub counters: LinkCounters,
}

impl Link {
    pub fn new(cfg: ImpairConfig, seed: u64) -> Self {
        Self {
            cfg,
            free_at_us: 0,
            rng: Rng::new(seed),
            counters: LinkCounters::default(),
        }
    }

    /// A datagram of `bytes` reached the link at `arrival_us`: the time it leaves the link, or
    /// None when it is lost (randomly, or at the tail of a full queue).
    pub fn offer(&mut self, arrival_us: u64, bytes: usize) -> Option<u64> {
        if self.cfg.loss > 0.0 {
            // 53 random bits: a uniform float in [0, 1).
            let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            if u < self.cfg.loss {
                self.counters.dropped_loss += 1;
                return None;
            }
        }
        let wire_bits = (bytes as u64 + WIRE_OVERHEAD_BYTES) * 8;
        // No rate (0): no serialisation time and no queue.
        let release = match (wire_bits * 1_000_000).checked_div(self.cfg.rate_bps) {
            None => arrival_us,
            Some(serialise_us) => {
                let done = self.free_at_us.max(arrival_us) + serialise_us;
                if done - arrival_us > self.cfg.queue_us {
                    self.counters.dropped_queue += 1;
                    return None;
                }
                self.free_at_us = done;
                done
            }
        };
        self.counters.delivered += 1;
        self.counters.delivered_bytes += bytes as u64;
        self.counters.max_queue_us = self.counters.max_queue_us.max(release - arrival_us);
        Some(release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(rate_bps: u64, queue_ms: u64, loss: f64) -> Link {
        Link::new(
            ImpairConfig {
                rate_bps,
                queue_us: queue_ms * 1000,
                loss,
            },
            7,
        )
    }

    /// Offer `bps` of 1000-byte packets for `secs`; returns the delivered bit rate.
    fn drive(l: &mut Link, bps: u64, secs: u64) -> f64 {
        let bits = (1000 + WIRE_OVERHEAD_BYTES) * 8;
        let gap = bits * 1_000_000 / bps;
        let mut t = 0;
        let mut last = 0;
        while t < secs * 1_000_000 {
            if let Some(r) = l.offer(t, 1000) {
                assert!(r >= t && r >= last, "FIFO: releases never go back");
                last = r;
            }
            t += gap;
        }
        (l.counters.delivered * bits) as f64 / secs as f64
    }

    #[test]
    fn overload_delivers_the_link_rate_and_drops_at_the_tail() {
        let mut l = link(300_000, 250, 0.0);
        let got = drive(&mut l, 1_000_000, 20);
        assert!((got - 300_000.0).abs() < 0.02 * 300_000.0, "{got}");
        assert!(l.counters.dropped_queue > 0 && l.counters.dropped_loss == 0);
        assert!(l.counters.max_queue_us <= 250_000);
        assert!(l.counters.max_queue_us > 200_000, "the queue fills");
    }

    #[test]
    fn under_the_rate_nothing_is_dropped_or_queued_long() {
        let mut l = link(1_000_000, 250, 0.0);
        drive(&mut l, 500_000, 5);
        assert_eq!(l.counters.dropped_queue, 0);
        assert!(l.counters.max_queue_us < 10_000);
    }

    #[test]
    fn random_loss_hits_its_fraction() {
        let mut l = link(0, 0, 0.05);
        for t in 0..20_000 {
            assert!(l.offer(t, 100).is_none_or(|r| r == t), "no rate: no delay");
        }
        let frac = l.counters.dropped_loss as f64 / 20_000.0;
        assert!((frac - 0.05).abs() < 0.01, "{frac}");
    }
}
