//! Send-side bandwidth estimation per subscriber (GCC family), sans-IO.
//!
//! The router tells `SendSideBwe` what it sent (transport-wide sequence number, size, time) and
//! hands it the transport-cc feedback the subscriber returns. From the feedback come:
//! - the delay signal: packets grouped into 5 ms bursts (`arrival`), the trend of their one-way
//!   delay change and an overuse detector with an adaptive threshold (`trendline`), driving an
//!   AIMD rate controller (`aimd`) relative to the acknowledged bitrate (`acked`);
//! - the loss signal: a ceiling that drops above 10 % loss and rises under 2 % (`loss`);
//! - probe results: clusters of padding (`probe`) that find capacity again after the link was
//!   limited.
//!
//! Subscribers without transport-cc fall back to their REMB, bounded by the loss their receiver
//! reports say. Times are microseconds of the caller's monotonic clock.

mod acked;
mod aimd;
mod arrival;
mod loss;
mod probe;
mod trendline;

#[cfg(test)]
mod tests;

pub use probe::ProbeRequest;

use crate::twcc::TwccFeedback;
use acked::AckedRate;
use aimd::Aimd;
use arrival::InterArrival;
use loss::{LossBound, LossVerdict};
use probe::Prober;
use trendline::Trendline;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BweConfig {
    pub min_bps: u64,
    pub start_bps: u64,
    pub max_bps: u64,
}

/// What the delay detector sees (exported for stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BweState {
    #[default]
    Normal,
    Overusing,
    Underusing,
}

/// Sent packets remembered for feedback, by sequence number modulo this. Allocated on the first
/// packet sent with a transport-wide sequence number: a subscriber that negotiated no
/// transport-cc never needs it (its estimate comes from REMB and receiver reports).
const HISTORY: usize = 2048;
/// No feedback for this long while sending: the path may be dead, halve.
const FEEDBACK_TIMEOUT_US: u64 = 1_000_000;
/// Feedback silent at least this long and then back: the path was out (a lift, a tunnel, a
/// network change), which says nothing of its capacity. The packets lost meanwhile are not
/// congestion, the drops the silence made are forgotten, and a probe at the estimate from before
/// the silence finds out at once what the path carries now.
const OUTAGE_US: u64 = 2_000_000;
/// No probe for half this after a large drop (the bottleneck's queue is still draining).
const PROBE_INTERVAL_US: u64 = 2_500_000;
/// Probing while the sender wants more than the estimate, on a link not limited lately: this
/// often, doubled after each probe that found nothing, at most `MAX_PROBE_BACKOFF` times
/// (10 s -> 80 s). Within `RECENTLY_LIMITED_US` of a large drop probes are gentle instead
/// (`GENTLE_STEPS`).
const MAX_PROBE_BACKOFF: u32 = 3;
const PROBE_INTERVAL_IDLE_US: u64 = 10_000_000;
const RECENTLY_LIMITED_US: u64 = 60_000_000;
/// A cut below this share of the recent high is a large drop: the link got worse, and probing
/// later finds out when it recovers. (The ordinary 0.85 sawtooth at capacity is not one.)
const LARGE_DROP: f64 = 0.66;
const HIGH_WINDOW_US: u64 = 5_000_000;
/// A probe that got this share of its target through is followed by one at twice its result.
const PROBE_SUCCESS: f64 = 0.7;
/// On a link limited lately, probes are gentle (`Prober::start_gentle`): a small step over the
/// estimate first, larger ones after each success (slow start), back to the first after a
/// failure, and this long after the last cluster when the last one failed. A probe there that
/// overfills the bottleneck's queue puts its excess ahead of the audio, and a receiver's jitter
/// buffer remembers each such delay peak for tens of seconds; a small step queues a little at
/// most, and often is how the link's return is found soon.
const GENTLE_STEPS: [f64; 3] = [1.25, 1.5, 2.0];
const GENTLE_INTERVAL_US: u64 = 2_000_000;
/// No gentle probe this soon after a large drop: the audio is still getting over the step's queue.
const GENTLE_QUIET_US: u64 = 4_000_000;
const DEFAULT_RTT_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    seq: u16,
    valid: bool,
    reported: bool,
    size: u32,
    send_us: u64,
    cluster: Option<u32>,
}

#[derive(Debug)]
pub struct SendSideBwe {
    cfg: BweConfig,
    history: Vec<Sent>,
    inter: InterArrival,
    trend: Trendline,
    aimd: Aimd,
    acked: AckedRate,
    loss: LossBound,
    /// Loss bound of the REMB/receiver-report path (no transport-cc).
    fallback: LossBound,
    prober: Prober,
    remb: Option<u64>,
    rtt_us: Option<u64>,
    demand: Option<u64>,
    twcc_seen: bool,
    last_feedback_us: Option<u64>,
    last_sent_us: Option<u64>,
    last_limited_us: Option<u64>,
    initial_probe_done: bool,
    state: BweState,
    /// Target of the next cluster after a successful one (started at the next `probe_wanted`,
    /// so the caller's padding, not media alone, makes it up).
    chained_probe: Option<u64>,
    /// Periodic probes that found nothing in a row (each doubles the wait for the next, up to
    /// `MAX_PROBE_BACKOFF`): on a link that stays limited, probe padding is load it queues.
    probe_backoff: u32,
    /// Index into `GENTLE_STEPS` of the next gentle probe, and whether it follows a success
    /// right away.
    gentle_step: usize,
    gentle_chained: bool,
    /// What the last gentle probe measured the path at (what a success carried, or the rate a
    /// failure's queue drained at): gentle steps start from it when the estimate is higher (the
    /// delay controller raises the estimate up to 1.5x what the media uses, which on a link the
    /// media does not fill goes unchallenged until a probe fills the link: a step from there
    /// overfills it). (Not from what the receiver gets before any probe: with the video paused
    /// that is the audio alone, and steps from it never reached the estimate.)
    path_bps: Option<u64>,
    /// The last large drop that was not a probe's fall back (gentle probes wait `GENTLE_QUIET_US`
    /// after it).
    last_step_down_us: Option<u64>,
    /// Highest estimate of the last few seconds and when it was set.
    high: (u64, u64),
    /// Since when feedback has been silent while sending, and the estimate then (`OUTAGE_US`).
    silent_since: Option<(u64, u64)>,
}

impl SendSideBwe {
    pub fn new(cfg: BweConfig) -> Self {
        let min = cfg.min_bps.max(1);
        let max = cfg.max_bps.max(min);
        let start = cfg.start_bps.clamp(min, max);
        let cfg = BweConfig {
            min_bps: min,
            start_bps: start,
            max_bps: max,
        };
        Self {
            cfg,
            history: Vec::new(),
            inter: InterArrival::default(),
            trend: Trendline::default(),
            aimd: Aimd::new(start, min, max),
            acked: AckedRate::default(),
            loss: LossBound::new(max as f64),
            fallback: LossBound::new(start as f64),
            prober: Prober::default(),
            remb: None,
            rtt_us: None,
            demand: None,
            twcc_seen: false,
            last_feedback_us: None,
            last_sent_us: None,
            last_limited_us: None,
            initial_probe_done: false,
            state: BweState::Normal,
            chained_probe: None,
            probe_backoff: 0,
            gentle_step: 0,
            gentle_chained: false,
            path_bps: None,
            last_step_down_us: None,
            high: (start, 0),
            silent_since: None,
        }
    }

    pub fn config(&self) -> BweConfig {
        self.cfg
    }

    /// What the sender would send if the link allowed (None: as much as `max_bps`). Probing is
    /// pointless above it.
    pub fn set_demand_bps(&mut self, bps: Option<u64>) {
        self.demand = bps;
    }

    pub fn on_packet_sent(&mut self, twcc_seq: u16, size_bytes: usize, now_us: u64, probe: bool) {
        let _ = probe; // every packet sent during a cluster counts toward it
        let cluster = self.prober.on_sent(size_bytes, now_us);
        if self.history.is_empty() {
            self.history = vec![Sent::default(); HISTORY];
        }
        self.history[twcc_seq as usize % HISTORY] = Sent {
            seq: twcc_seq,
            valid: true,
            reported: false,
            size: size_bytes.min(u32::MAX as usize) as u32,
            send_us: now_us,
            cluster,
        };
        self.last_sent_us = Some(now_us);
    }

    pub fn on_feedback(&mut self, fb: &TwccFeedback, now_us: u64) {
        self.twcc_seen = true;
        self.last_feedback_us = Some(now_us);
        let outage = self
            .silent_since
            .take()
            .filter(|(since, _)| now_us >= since + OUTAGE_US);
        // After an outage, what was sent before the first packet that got through again was lost
        // to the outage, not to congestion.
        let back_from_us = match outage {
            Some(_) => self.first_arrived_send_us(fb),
            None => None,
        };
        let (mut received, mut lost) = (0u64, 0u64);
        let mut min_rtt: Option<u64> = None;
        let mut overused = false;
        for p in &fb.packets {
            let Some(slot) = self.history.get_mut(p.seq as usize % HISTORY) else {
                continue; // nothing sent with a transport-wide number yet
            };
            if !slot.valid || slot.seq != p.seq || slot.reported {
                continue;
            }
            slot.reported = true;
            let s = *slot;
            if let Some(c) = s.cluster {
                self.prober
                    .on_report(c, s.send_us, p.arrival_us, s.size as usize);
            }
            let Some(arrival) = p.arrival_us else {
                if back_from_us.is_none_or(|b| s.send_us >= b) {
                    lost += 1;
                }
                continue;
            };
            received += 1;
            self.acked.add(arrival, s.size as usize);
            if now_us >= s.send_us {
                let rtt = now_us - s.send_us;
                min_rtt = Some(min_rtt.map_or(rtt, |m| m.min(rtt)));
            }
            if let Some(d) = self.inter.add(s.send_us, arrival) {
                overused |= self.trend.update(d, now_us) == BweState::Overusing;
            }
        }
        if received + lost == 0 {
            return;
        }
        if let Some(r) = min_rtt {
            self.rtt_sample(r);
        }
        self.state = if overused {
            BweState::Overusing
        } else {
            self.trend.state()
        };
        let rtt = self.rtt();
        let acked = self.acked.rate_bps();
        self.aimd.update(self.state, acked, rtt, now_us);
        let est = self.aimd.estimate();
        self.loss
            .add(received, lost, est, self.cfg.max_bps as f64, rtt, now_us);
        self.apply_probe_results(now_us);
        self.track_drops(now_us);
        if let (Some((_, before)), true) = (outage, received > 0) {
            self.after_outage(before, now_us);
        }
    }

    /// When the first packet reported as arrived in `fb` was sent (packets not yet reported).
    fn first_arrived_send_us(&self, fb: &TwccFeedback) -> Option<u64> {
        fb.packets
            .iter()
            .filter(|p| p.arrival_us.is_some())
            .filter_map(|p| {
                let slot = self.history.get(p.seq as usize % HISTORY)?;
                (slot.valid && slot.seq == p.seq && !slot.reported).then_some(slot.send_us)
            })
            .min()
    }

    /// The path is back after an outage: the estimate's fall during the silence was no sign of
    /// the link (no gentle probing for it, no back-off), and a probe at the estimate from before
    /// the silence goes out next (twice its result after, as after any probe that got through).
    fn after_outage(&mut self, before_bps: u64, now_us: u64) {
        self.last_limited_us = None;
        self.last_step_down_us = None;
        self.path_bps = None;
        self.gentle_step = 0;
        self.gentle_chained = false;
        self.probe_backoff = 0;
        self.high = (self.estimate_bps(), now_us);
        self.chained_probe = Some(before_bps.min(self.cfg.max_bps));
    }

    /// Notes large drops of the estimate (what makes probing worthwhile later).
    fn track_drops(&mut self, now_us: u64) {
        let est = self.estimate_bps();
        let (high, at) = self.high;
        if est >= high || now_us >= at + HIGH_WINDOW_US {
            self.high = (est, now_us);
        } else if (est as f64) < LARGE_DROP * high as f64 {
            self.last_limited_us = Some(now_us);
            let after_probe = self.prober.busy()
                || self
                    .prober
                    .last_end_us()
                    .is_some_and(|t| now_us < t + GENTLE_INTERVAL_US);
            if !after_probe {
                self.last_step_down_us = Some(now_us);
                self.path_bps = None;
            }
            // One drop, noted once: the next is measured from here (else every update until
            // the window ends would note it again, long after any probe).
            self.high = (est, now_us);
            self.probe_backoff = 0; // a new drop: the link may come back soon
            self.gentle_step = 0;
            self.gentle_chained = false;
        }
    }

    fn apply_probe_results(&mut self, now_us: u64) {
        for r in self.prober.take_results(now_us) {
            if r.gentle {
                // A success says the path carries its rate: take it and step further. A failure
                // whose packets queued says what the queue drained at: the path's rate. The
                // estimate goes down to it when it had crept above the link; up only after a
                // larger step than the first (the link came back: the first steps succeeded).
                // The next probe is the smallest step again.
                if r.success {
                    self.aimd.raise_to(r.bps, now_us);
                    self.loss.raise_to(r.bps);
                    // (Never below where the step started: what a burst could have carried is
                    // not counted, so a small step's result may come out under it.)
                    let from = self.path_bps.unwrap_or(0);
                    self.path_bps = Some(from.max(r.bps as u64));
                } else if r.reliable {
                    let rate = r.bps / probe::SATURATED_MARGIN;
                    if self.gentle_step > 0 {
                        self.aimd.raise_to(rate, now_us);
                        self.loss.raise_to(rate);
                    }
                    self.aimd.cap_to(rate, now_us);
                    self.path_bps = Some(rate as u64);
                }
                if r.success {
                    self.gentle_step = (self.gentle_step + 1).min(GENTLE_STEPS.len() - 1);
                    self.gentle_chained = true;
                } else {
                    self.gentle_step = 0;
                    self.gentle_chained = false;
                }
                continue;
            }
            // What got through is no longer in doubt for either controller.
            self.aimd.raise_to(r.bps, now_us);
            self.loss.raise_to(r.bps);
            // Room for more: probe again at twice what got through, right away.
            if r.bps >= PROBE_SUCCESS * r.target_bps as f64 {
                self.chained_probe = Some((2.0 * r.bps) as u64);
                self.probe_backoff = 0;
            } else {
                self.probe_backoff = (self.probe_backoff + 1).min(MAX_PROBE_BACKOFF);
            }
        }
    }

    fn probe_allowed(&self, target: u64) -> bool {
        let est = self.estimate_bps();
        est < self.cfg.max_bps
            && self.demand.is_none_or(|d| d > est)
            && target > est
            && self.state != BweState::Overusing
            && self.remb.is_none_or(|r| r > est)
    }

    pub fn on_receiver_report(&mut self, fraction_lost: u8, rtt_us: Option<u64>, now_us: u64) {
        if let Some(r) = rtt_us {
            self.rtt_sample(r);
        }
        if self.twcc_seen {
            return; // transport-cc counts losses packet by packet
        }
        let est = self.estimate_bps() as f64;
        let rtt = self.rtt();
        let verdict = self.fallback.apply(
            fraction_lost as f64 / 256.0,
            est,
            self.cfg.max_bps as f64,
            rtt,
            now_us,
        );
        // The receiver vouches for its REMB and the link is clean: take it.
        if verdict == LossVerdict::Low {
            if let Some(r) = self.remb {
                self.fallback.raise_to(r as f64);
            }
        }
        self.track_drops(now_us);
    }

    pub fn on_remb(&mut self, bps: u64, now_us: u64) {
        let _ = now_us;
        self.remb = Some(bps);
    }

    /// Time passes: feedback timeout, probe results that timed out. (Clusters start only from
    /// `probe_wanted`: a caller that cannot send padding now never has one running.)
    pub fn poll(&mut self, now_us: u64) {
        if self.twcc_seen {
            let silent = self
                .last_feedback_us
                .is_some_and(|t| now_us >= t + FEEDBACK_TIMEOUT_US);
            let sending = self
                .last_sent_us
                .is_some_and(|t| now_us < t + FEEDBACK_TIMEOUT_US);
            if silent && sending {
                if self.silent_since.is_none() {
                    let since = self.last_feedback_us.unwrap_or(now_us);
                    self.silent_since = Some((since, self.estimate_bps()));
                }
                self.aimd.back_off(now_us);
            }
        }
        self.track_drops(now_us);
        self.apply_probe_results(now_us);
    }

    fn schedule_probe(&mut self, now_us: u64) {
        if self.prober.busy() || self.last_sent_us.is_none() {
            return;
        }
        let est = self.estimate_bps();
        // Only while the last cut is a while back: right after it the queue is still draining.
        let settled = self
            .last_limited_us
            .is_none_or(|t| now_us >= t + PROBE_INTERVAL_US / 2);
        let recent = self
            .last_limited_us
            .is_some_and(|t| now_us < t + RECENTLY_LIMITED_US);
        if recent && self.initial_probe_done {
            self.chained_probe = None;
            let due = self.gentle_chained
                || self
                    .prober
                    .last_end_us()
                    .is_none_or(|t| now_us >= t + GENTLE_INTERVAL_US);
            let step = GENTLE_STEPS[self.gentle_step];
            let base = self
                .path_bps
                .map_or(est, |k| k.clamp(self.cfg.min_bps, est));
            let target = ((step * base as f64) as u64).min(self.cfg.max_bps);
            let quiet = self
                .last_step_down_us
                .is_none_or(|t| now_us >= t + GENTLE_QUIET_US);
            if due && quiet && self.probe_allowed(target.max(est + 1)) {
                self.gentle_chained = false;
                self.prober.start_gentle(target, base, now_us);
            }
            return;
        }
        if let Some(target) = self.chained_probe.take() {
            let target = target.min(self.cfg.max_bps);
            if self.probe_allowed(target) {
                self.prober.start(target, now_us);
                return;
            }
        }
        if !self.initial_probe_done {
            // Before transport-cc feedback there is nothing to measure a probe with.
            if self.twcc_seen {
                self.initial_probe_done = true;
                let target = (3 * est).min(self.cfg.max_bps);
                if self.probe_allowed(target) {
                    self.prober.start(target, now_us);
                }
            }
            return;
        }
        let interval = PROBE_INTERVAL_IDLE_US << self.probe_backoff;
        let due = self
            .prober
            .last_end_us()
            .is_none_or(|t| now_us >= t + interval);
        let target = (2 * est).min(self.cfg.max_bps);
        if due && settled && self.probe_allowed(target) {
            self.prober.start(target, now_us);
        }
    }

    pub fn estimate_bps(&self) -> u64 {
        let remb = self.remb.map_or(f64::INFINITY, |r| r as f64);
        let est = if self.twcc_seen {
            self.aimd.estimate().min(self.loss.bound()).min(remb)
        } else {
            self.fallback.bound().min(remb)
        };
        (est as u64).clamp(self.cfg.min_bps, self.cfg.max_bps)
    }

    /// Padding due now for a probe cluster, starting one when probing is worthwhile (see the
    /// module docs); send `bytes` marked `probe`. Call it every few ms while padding can be sent.
    pub fn probe_wanted(&mut self, now_us: u64) -> Option<ProbeRequest> {
        self.schedule_probe(now_us);
        self.prober.wanted(now_us)
    }

    pub fn state(&self) -> BweState {
        self.state
    }

    /// Smoothed round-trip time (feedback-based or from receiver reports), if any.
    pub fn rtt_us(&self) -> Option<u64> {
        self.rtt_us
    }

    /// Loss fraction of the last loss update (0.0..=1.0).
    pub fn loss_fraction(&self) -> f64 {
        if self.twcc_seen {
            self.loss.fraction()
        } else {
            self.fallback.fraction()
        }
    }

    fn rtt(&self) -> u64 {
        self.rtt_us.unwrap_or(DEFAULT_RTT_US)
    }

    fn rtt_sample(&mut self, r: u64) {
        self.rtt_us = Some(match self.rtt_us {
            None => r,
            Some(s) => (7 * s + r) / 8,
        });
    }
}
