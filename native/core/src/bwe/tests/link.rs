//! A deterministic simulated path for the estimator: a sender pacing media at min(estimate,
//! demand) plus the padding probes ask for, a bottleneck link (capacity, FIFO queue with a
//! maximum queueing delay, propagation delay, seeded random loss), a receiver recording arrivals
//! in a `TwccRecorder`, and its feedback coming back after the propagation delay, parsed from
//! bytes like real feedback. Optionally the link is a token bucket with a burst (as tc's tbf
//! shapes the browser tests' downlink) and an audio stream goes along, outside the estimate, with
//! a model of the receiver's audio jitter buffer (`JitterBufferModel`).

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
    /// 0: the link serves a FIFO at its capacity. Else a token bucket of this depth: bytes the
    /// link saved up while idle pass at once (the tc tbf of the browser tests has 6000 bytes).
    pub burst_bytes: u64,
    tokens: f64,
    tokens_at_us: u64,
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
            burst_bytes: 0,
            tokens: 0.0,
            tokens_at_us: 0,
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
        self.busy_until_us = if self.burst_bytes == 0 {
            start + size as u64 * 8_000_000 / self.capacity_bps
        } else {
            // Tokens saved up since the last departure (at most the burst) pay for the packet;
            // what they do not cover it waits for.
            let bytes_per_us = self.capacity_bps as f64 / 8e6;
            let saved = start.saturating_sub(self.tokens_at_us) as f64 * bytes_per_us;
            let tokens = (self.tokens + saved).min(self.burst_bytes as f64);
            let short = size as f64 - tokens;
            if short <= 0.0 {
                self.tokens = -short;
                self.tokens_at_us = start;
                start
            } else {
                let wait = (short / bytes_per_us).ceil() as u64;
                self.tokens = 0.0;
                self.tokens_at_us = start + wait;
                start + wait
            }
        };
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
    /// 0: no audio; else an audio packet of `AUDIO_PACKET` bytes this often, sent first and
    /// whatever the estimate (audio first), counted by transport-cc like the rest.
    pub audio_interval_us: u64,
    /// Audio packets that arrived: (send time, queueing delay on the link).
    pub audio: Vec<(u64, u64)>,
    audio_in_flight: VecDeque<(u64, u64)>,
    /// Probe packets in the link's queue: (departure, size), and the most bytes of them it held
    /// at once (reset it to measure a period).
    probes_queued: VecDeque<(u64, usize)>,
    pub probe_queue_peak_bytes: usize,
    /// Media is sent at this share of the estimate (the router's pacer: 0.9).
    pub media_share: f64,
}

/// An Opus packet with its RTP, SRTP and IP/UDP overhead.
pub const AUDIO_PACKET: usize = 150;

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
            audio_interval_us: 0,
            audio: Vec::new(),
            audio_in_flight: VecDeque::new(),
            probes_queued: VecDeque::new(),
            probe_queue_peak_bytes: 0,
            media_share: 1.0,
        }
    }

    fn send(&mut self, size: usize, probe: bool) -> Option<u64> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.bwe.on_packet_sent(seq, size, self.now_us, probe);
        let arrival = self.link.send(self.now_us, size)?;
        self.in_flight.push_back((arrival, seq));
        let now = self.now_us;
        while self.probes_queued.front().is_some_and(|&(d, _)| d <= now) {
            self.probes_queued.pop_front();
        }
        let departure = self.link.busy_until_us;
        if probe && departure > now {
            self.probes_queued.push_back((departure, size));
            let queued = self.probes_queued.iter().map(|p| p.1).sum::<usize>();
            self.probe_queue_peak_bytes = self.probe_queue_peak_bytes.max(queued);
        }
        Some(arrival)
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
        while self.audio_in_flight.front().is_some_and(|&(a, _)| a <= now) {
            if let Some((a, sent)) = self.audio_in_flight.pop_front() {
                self.audio.push((sent, a - sent - self.link.delay_us));
            }
        }
        self.bwe.poll(now);
        if self.audio_interval_us > 0 && now.is_multiple_of(self.audio_interval_us) {
            self.media_bytes += AUDIO_PACKET as u64;
            if let Some(arrival) = self.send(AUDIO_PACKET, false) {
                self.audio_in_flight.push_back((arrival, now));
            }
        }
        // Audio first: video gets what the estimate leaves it.
        let audio_bps = (AUDIO_PACKET as u64 * 8_000_000)
            .checked_div(self.audio_interval_us)
            .unwrap_or(0);
        let rate = ((self.bwe.estimate_bps() as f64 * self.media_share) as u64)
            .saturating_sub(audio_bps)
            .min(self.demand_bps) as f64;
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

    /// Seconds from `from_us` to the first sample where the estimate reaches `bps`.
    pub fn seconds_to_reach(&self, from_us: u64, bps: u64) -> Option<f64> {
        self.first_at(from_us, |s| s.estimate_bps >= bps)
            .map(|t| (t - from_us) as f64 / 1e6)
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

/// A receiver's adaptive audio jitter buffer, after what libwebrtc's NetEq does (its delay
/// manager): each packet's delay over the least of the last 2 s; the largest of those in each
/// 500 ms goes into a histogram of 20 ms buckets that forgets 1.7 % per update (faster at first);
/// the buffer aims at its 95th percentile. Not NetEq's arithmetic, its behaviour: a delay peak
/// raises the target at once and is forgotten over tens of seconds, a steady queue costs nothing.
/// Input: (send time, delay) per audio packet in sending order; output: (time, target) per 500 ms.
pub fn jitter_buffer_targets(audio: &[(u64, u64)]) -> Vec<(u64, u64)> {
    const HISTORY_US: u64 = 2_000_000;
    const INTERVAL_US: u64 = 500_000;
    const BUCKET_US: u64 = 20_000;
    const BUCKETS: usize = 100;
    const FORGET: f64 = 0.983;
    let mut recent: VecDeque<(u64, u64)> = VecDeque::new();
    let mut hist = [0.0f64; BUCKETS];
    let mut updates = 0u32;
    let mut out = Vec::new();
    let mut interval: Option<(u64, u64)> = None; // (index, largest relative delay)
    let mut flush = |index: u64, peak: u64, hist: &mut [f64; BUCKETS], updates: &mut u32| {
        *updates += 1;
        let forget = FORGET.min(1.0 - 2.0 / (*updates as f64 + 1.0)).max(0.0);
        for h in hist.iter_mut() {
            *h *= forget;
        }
        hist[((peak / BUCKET_US) as usize).min(BUCKETS - 1)] += 1.0 - forget;
        let total: f64 = hist.iter().sum();
        let mut acc = 0.0;
        let bucket = hist
            .iter()
            .position(|h| {
                acc += h;
                acc >= 0.95 * total
            })
            .unwrap_or(BUCKETS - 1);
        out.push(((index + 1) * INTERVAL_US, (bucket as u64 + 1) * BUCKET_US));
    };
    for &(t, delay) in audio {
        while recent.front().is_some_and(|&(rt, _)| rt + HISTORY_US < t) {
            recent.pop_front();
        }
        recent.push_back((t, delay));
        let least = recent.iter().map(|r| r.1).min().unwrap_or(delay);
        let rel = delay - least;
        let index = t / INTERVAL_US;
        match interval {
            Some((i, peak)) if i == index => interval = Some((i, peak.max(rel))),
            Some((i, peak)) => {
                flush(i, peak, &mut hist, &mut updates);
                interval = Some((index, rel));
            }
            None => interval = Some((index, rel)),
        }
    }
    out
}

pub fn cfg(start_bps: u64) -> BweConfig {
    BweConfig {
        min_bps: 50_000,
        start_bps,
        max_bps: 5_000_000,
    }
}
