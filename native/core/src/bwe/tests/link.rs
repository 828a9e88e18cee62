//! A deterministic simulated path for the estimator: a sender pacing media at min(estimate,
//! demand) plus the padding probes ask for, a bottleneck link (capacity, FIFO queue with a
//! maximum queueing delay, propagation delay, seeded random loss), a receiver recording arrivals
//! in a `TwccRecorder`, and its feedback coming back after the propagation delay, parsed from
//! bytes like real feedback.

use std::collections::VecDeque;

use crate::bwe::{BweConfig, BweState, SendSideBwe};
use crate::twcc::{TwccFeedback, TwccRecorder};

pub const MEDIA_PACKET: usize = 1200;
/// Step of the simulation clock.
pub const TICK_US: u64 = 1_000;
/// Receiver clock offset: arrival times must only be used as differences.
const REMOTE_CLOCK_OFFSET_US: u64 = 7_777_777_777;

pub struct Link {
    pub capacity_bps: u64,
    /// Tail drop when a packet would wait longer than this.
    pub queue_limit_us: u64,
    pub delay_us: u64,
    pub loss: f64,
    /// Extra delay per packet, uniform in 0..jitter_us, order kept (a Wi-Fi-like path).
    pub jitter_us: u64,
    last_arrival_us: u64,
    rng: u64,
    busy_until_us: u64,
    pub dropped_queue: u64,
    pub dropped_random: u64,
}

impl Link {
    pub fn new(capacity_bps: u64, queue_limit_us: u64, delay_us: u64) -> Self {
        Self {
            capacity_bps,
            queue_limit_us,
            delay_us,
            loss: 0.0,
            jitter_us: 0,
            last_arrival_us: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            busy_until_us: 0,
            dropped_queue: 0,
            dropped_random: 0,
        }
    }

    fn random(&mut self) -> f64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn queue_delay_us(&self, now_us: u64) -> u64 {
        self.busy_until_us.saturating_sub(now_us)
    }

    /// When the packet arrives at the receiver, or None if the link drops it.
    fn send(&mut self, now_us: u64, size: usize) -> Option<u64> {
        if self.loss > 0.0 && self.random() < self.loss {
            self.dropped_random += 1;
            return None;
        }
        let start = self.busy_until_us.max(now_us);
        if start - now_us > self.queue_limit_us {
            self.dropped_queue += 1;
            return None;
        }
        self.busy_until_us = start + size as u64 * 8_000_000 / self.capacity_bps;
        let jitter = if self.jitter_us > 0 {
            (self.random() * self.jitter_us as f64) as u64
        } else {
            0
        };
        let arrival = (self.busy_until_us + self.delay_us + jitter).max(self.last_arrival_us);
        self.last_arrival_us = arrival;
        Some(arrival)
    }
}

/// One sample every 100 ms of simulated time.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub t_us: u64,
    pub estimate_bps: u64,
    pub queue_us: u64,
    pub state: BweState,
}

pub struct Sim {
    pub link: Link,
    pub bwe: SendSideBwe,
    recorder: TwccRecorder,
    pub now_us: u64,
    pub demand_bps: u64,
    seq: u16,
    budget: f64,
    in_flight: VecDeque<(u64, u16)>,
    feedback: VecDeque<(u64, Vec<u8>)>,
    pub samples: Vec<Sample>,
    pub probe_bytes: u64,
    pub media_bytes: u64,
    /// 0: media paced smoothly; else sent in bursts (video frames) this often, unpaced, as a
    /// forwarding server sends them.
    pub frame_interval_us: u64,
    /// 0: probes asked for every tick; else this often (a caller with a coarse timer).
    pub probe_poll_us: u64,
}

impl Sim {
    pub fn new(link: Link, cfg: BweConfig, demand_bps: u64) -> Self {
        Self {
            link,
            bwe: SendSideBwe::new(cfg),
            recorder: TwccRecorder::new(1, 2, 50_000),
            now_us: 0,
            demand_bps,
            seq: 65_000, // wraps within the first seconds
            budget: 0.0,
            in_flight: VecDeque::new(),
            feedback: VecDeque::new(),
            samples: Vec::new(),
            probe_bytes: 0,
            media_bytes: 0,
            frame_interval_us: 0,
            probe_poll_us: 0,
        }
    }

    fn send(&mut self, size: usize, probe: bool) {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.bwe.on_packet_sent(seq, size, self.now_us, probe);
        if let Some(arrival) = self.link.send(self.now_us, size) {
            self.in_flight.push_back((arrival, seq));
        }
    }

    fn tick(&mut self) {
        self.now_us += TICK_US;
        let now = self.now_us;
        while self.in_flight.front().is_some_and(|&(a, _)| a <= now) {
            let Some((a, seq)) = self.in_flight.pop_front() else {
                break;
            };
            self.recorder.record(seq, a + REMOTE_CLOCK_OFFSET_US);
        }
        let mut out = Vec::new();
        if self
            .recorder
            .poll_feedback(now + REMOTE_CLOCK_OFFSET_US, &mut out)
            > 0
        {
            self.feedback.push_back((now + self.link.delay_us, out));
        }
        while self.feedback.front().is_some_and(|&(t, _)| t <= now) {
            let Some((_, bytes)) = self.feedback.pop_front() else {
                break;
            };
            for fb in TwccFeedback::parse_compound(&bytes) {
                self.bwe.on_feedback(&fb.expect("feedback parses"), now);
            }
        }
        self.bwe.poll(now);
        let rate = self.bwe.estimate_bps().min(self.demand_bps) as f64;
        let burst = if self.frame_interval_us == 0 {
            4.0 * MEDIA_PACKET as f64
        } else {
            f64::INFINITY
        };
        self.budget = (self.budget + rate / 8.0 * TICK_US as f64 / 1e6).min(burst);
        let frame_due = self.frame_interval_us == 0 || now.is_multiple_of(self.frame_interval_us);
        while frame_due && self.budget >= MEDIA_PACKET as f64 {
            self.budget -= MEDIA_PACKET as f64;
            self.media_bytes += MEDIA_PACKET as u64;
            self.send(MEDIA_PACKET, false);
        }
        let probe_due = self.probe_poll_us == 0 || now.is_multiple_of(self.probe_poll_us);
        if let Some(req) = probe_due.then(|| self.bwe.probe_wanted(now)).flatten() {
            let mut left = req.bytes;
            while left > 0 {
                let size = left.min(MEDIA_PACKET);
                left -= size;
                self.probe_bytes += size as u64;
                self.send(size, true);
            }
        }
        if now.is_multiple_of(100_000) {
            self.samples.push(Sample {
                t_us: now,
                estimate_bps: self.bwe.estimate_bps(),
                queue_us: self.link.queue_delay_us(now),
                state: self.bwe.state(),
            });
        }
    }

    pub fn run_until(&mut self, t_us: u64) {
        while self.now_us < t_us {
            self.tick();
        }
    }

    pub fn samples_between(&self, from_us: u64, to_us: u64) -> impl Iterator<Item = &Sample> {
        self.samples
            .iter()
            .filter(move |s| s.t_us >= from_us && s.t_us <= to_us)
    }

    /// First sample time from which `pred` holds for every later sample up to `to_us`.
    pub fn settled_at(
        &self,
        from_us: u64,
        to_us: u64,
        pred: impl Fn(&Sample) -> bool,
    ) -> Option<u64> {
        let mut since = None;
        for s in self.samples_between(from_us, to_us) {
            if pred(s) {
                since.get_or_insert(s.t_us);
            } else {
                since = None;
            }
        }
        since
    }

    /// First sample time at or after `from_us` where `pred` holds.
    pub fn first_at(&self, from_us: u64, pred: impl Fn(&Sample) -> bool) -> Option<u64> {
        self.samples_between(from_us, u64::MAX)
            .find(|s| pred(s))
            .map(|s| s.t_us)
    }

    /// A compact trace for failure messages: (s, kbit/s, queue ms) every `every` samples.
    pub fn trace(&self, every: usize) -> String {
        self.samples
            .iter()
            .step_by(every)
            .map(|s| {
                format!(
                    "{:.1}s:{}k/{}ms",
                    s.t_us as f64 / 1e6,
                    s.estimate_bps / 1000,
                    s.queue_us / 1000
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub fn cfg(start_bps: u64) -> BweConfig {
    BweConfig {
        min_bps: 50_000,
        start_bps,
        max_bps: 5_000_000,
    }
}
