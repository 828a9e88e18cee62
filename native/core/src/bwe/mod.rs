//! Send-side bandwidth estimation per subscriber (GCC family), sans-IO.
//!
//! The router tells `SendSideBwe` what it sent (transport-wide sequence number, size, time) and
//! hands it the transport-cc feedback the subscriber returns. From the feedback come:
//! - the delay signal: packets grouped into 5 ms bursts (`arrival`), the trend of their one-way
//!   delay change and an overuse detector with an adaptive threshold (`trendline`), driving an
//!   AIMD rate controller (`aimd`) relative to the acknowledged bitrate (`acked`);
//! - the loss signal: a ceiling that drops above 10 % loss and rises under 2 % (`loss`);
//! - probe results: clusters of padding (`probe`) that find capacity again after the link was
//!   limited;
//! - the standing queue (`queue`): one-way delay over its floor that no longer grows, which the
//!   delay detector cannot see (a full token-bucket buffer the estimate settled into). Once one
//!   of 100 ms stood, the link counts as limited for 30 s: a standing queue over 25 ms is cut so
//!   it drains, the estimate comes back to 85 % of what the path delivered meanwhile and stays
//!   under 95 % of it until a probe finds more, no probe starts on top of a queue, and probes
//!   are sustained for a second (a bucket's saved-up burst lets a short cluster through at line
//!   rate) and stopped as soon as a queue builds under them, so a probe costs the audio tens of
//!   milliseconds, not a full buffer. Shallow standing queues elsewhere (a lossy link's) are left
//!   to the delay detector.
//!
//! Subscribers without transport-cc fall back to their REMB, bounded by the loss their receiver
//! reports say. Times are microseconds of the caller's monotonic clock.

mod acked;
mod aimd;
mod arrival;
mod loss;
mod probe;
mod queue;
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
use queue::StandingQueue;
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
/// Probing while the sender wants more than the estimate: this often after a large drop (the
/// link may recover any moment), rarer otherwise.
const PROBE_INTERVAL_US: u64 = 2_500_000;
/// Most doublings of the probe interval after probes that found nothing (2.5 s -> 20 s).
const MAX_PROBE_BACKOFF: u32 = 3;
const PROBE_INTERVAL_IDLE_US: u64 = 10_000_000;
const RECENTLY_LIMITED_US: u64 = 60_000_000;
/// A cut below this share of the recent high is a large drop: the link got worse, and probing
/// later finds out when it recovers. (The ordinary 0.85 sawtooth at capacity is not one.)
const LARGE_DROP: f64 = 0.66;
const HIGH_WINDOW_US: u64 = 5_000_000;
/// A probe that got this share of its target through is followed by one at twice its result.
const PROBE_SUCCESS: f64 = 0.7;
const DEFAULT_RTT_US: u64 = 100_000;
/// A video packet with its SRTP and IP/UDP overhead, in bits.
const FULL_PACKET_BITS: f64 = 1_250.0 * 8.0;
/// A standing queue is cut to drain in about this long (the cut leaves 50-85 % of the acked rate).
const QUEUE_DRAIN_US: f64 = 500_000.0;
/// Under a capacity a standing queue showed, the estimate keeps this share of it...
const QUEUE_CAP_SHARE: f64 = 0.95;
/// ... and comes back to this share of it once the cut drained the queue.
const RESTORE_SHARE: f64 = 0.85;
/// For this long after a full buffer stood or a standing queue was cut, the link is known to be
/// limited and probes are sustained: a token bucket's saved-up burst passes a short cluster at
/// line rate (a 7.2 kB one even at twice a 300 kbit/s bucket's rate), so a short probe cannot
/// tell it from room.
const LIMITED_US: u64 = 30_000_000;
/// A sustained probe lasts this long: at 1.5x a 300 kbit/s bucket with 6 kB of burst, the
/// burst hides its first ~0.3 s.
const SUSTAINED_US: u64 = 1_000_000;
/// Its target over the estimate, each time (not 2x: after a success just under the link's rate,
/// 2x would go far over it, and the queue built before the probe is stopped grows with the
/// excess)...
const SUSTAINED_STEP: f64 = 1.5;
/// ... and this many in a row that find room say the limit is gone: short probes again.
const SUSTAINED_TO_CLEAR: usize = 2;
/// ... counting as room only when the path kept up with it and most of its rate got through
/// (not all: a caller that asks for padding coarsely sends under it).
const LIMITED_PROBE_SUCCESS: f64 = 0.85;
/// A sustained probe aims at least this far over the rate the path delivered when the queue
/// stood; one that gets that through says the limit is gone.
const LIMIT_GONE: f64 = 1.25;
/// After a cluster, its own queue has this long (and a round trip) to drain before a queue that
/// stands is the estimate's.
const PROBE_DRAIN_US: u64 = 250_000;

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
    /// Highest estimate of the last few seconds and when it was set.
    high: (u64, u64),
    standing: StandingQueue,
    last_queue_cut_us: Option<u64>,
    /// What the path delivered when a queue last stood on it, until a probe finds more.
    queue_cap: Option<f64>,
    /// When a standing queue last filled a deep buffer (see `queue::DEEP_US`).
    deep_queue_us: Option<u64>,
    /// What the path delivered at the last standing-queue cut (kept while the link is limited).
    limit_bps: Option<f64>,
    /// The sustained probe running (its cluster), stopped as soon as a queue builds under it.
    sustained: Option<u32>,
    /// Sustained probes in a row that found room.
    sustained_held: usize,
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
            high: (start, 0),
            standing: StandingQueue::default(),
            last_queue_cut_us: None,
            queue_cap: None,
            deep_queue_us: None,
            limit_bps: None,
            sustained: None,
            sustained_held: 0,
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
                lost += 1;
                continue;
            };
            received += 1;
            self.acked.add(arrival, s.size as usize);
            self.standing.add(s.send_us, arrival);
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
        if let Some(acked) = acked {
            self.cut_standing_queue(acked, rtt, now_us);
        }
        let est = self.aimd.estimate();
        self.loss
            .add(received, lost, est, self.cfg.max_bps as f64, rtt, now_us);
        self.apply_probe_results(now_us);
        self.track_drops(now_us);
    }

    /// A queue stands on the path that the delay detector cannot see (see `queue`): cut so it
    /// drains, and stay under what the path delivered meanwhile.
    fn cut_standing_queue(&mut self, acked: f64, rtt: u64, now_us: u64) {
        let Some(standing) = self.standing.standing() else {
            return;
        };
        // What a full-size packet takes to pass the path at the rate it delivers is no queue:
        // the floor may come from a smaller packet, or a faster moment of the path.
        let serialization = (FULL_PACKET_BITS * 1e6 / acked.max(1.0)) as i64;
        if standing.queue_us - serialization > queue::DEEP_US {
            // A full buffer, whoever deals with it (the delay detector may have cut already).
            self.deep_queue_us = Some(now_us);
        }
        if let Some(id) = self.sustained {
            if standing.newest_us - serialization > queue::PROBE_STOP_US {
                // The sustained probe builds a queue: the path has no room for it. Stopped now,
                // the padding's share of that queue drains within a round trip.
                self.prober.abort(id, now_us);
                self.sustained = None;
                self.sustained_held = 0;
                self.chained_probe = None;
                self.probe_backoff = (self.probe_backoff + 1).min(MAX_PROBE_BACKOFF);
            }
        }
        if self.prober.busy() || standing.draining {
            return; // a cluster queues on purpose
        }
        let queue = standing.queue_us - serialization;
        // While a queue stands, what the path delivers is its capacity: the cap follows it down
        // (at a cut the acked rate may still count faster moments from before the queue).
        if queue > queue::HIGH_US {
            self.queue_cap = self.queue_cap.map(|c| c.min(acked));
            self.limit_bps = self.queue_cap;
        }
        // The cut drained the queue: back near what the path delivered at it. (The cut is deep
        // so that the queue drains fast, not because the path carries that little; additive
        // increase would take seconds to climb back, the video starved meanwhile.)
        if let (Some(cap), Some(cut_at)) = (self.queue_cap, self.last_queue_cut_us) {
            if queue < queue::DRAINED_US && now_us >= cut_at + rtt {
                self.aimd.restore_to(RESTORE_SHARE * cap, now_us);
            }
        }
        let probed_lately = self
            .prober
            .last_end_us()
            .is_some_and(|t| now_us < t + rtt + PROBE_DRAIN_US);
        // Outside a limited spell only a full buffer counts: a shallow standing queue is what
        // a lossy or jittery link shows too, and the delay detector deals with it.
        let high = if self.limited(now_us) {
            queue::HIGH_US
        } else {
            queue::DEEP_US
        };
        if probed_lately || queue <= high {
            return;
        }
        // The last cut shows once the queue it drains has gone and a round trip has passed.
        let settle = rtt + queue as u64 + 100_000;
        if self.last_queue_cut_us.is_some_and(|t| now_us < t + settle) {
            return;
        }
        // The deeper the queue, the deeper the cut: it drains in about half a second.
        let share = (1.0 - queue as f64 / QUEUE_DRAIN_US).clamp(0.5, 0.85);
        self.aimd.cut_to(share * acked, acked, now_us);
        // What the path delivered with a queue standing is its capacity: stay under it until a
        // probe finds more (creeping over it again is how the queue came).
        // (The least of what it delivered at the cuts since a probe last found room: right
        // after a token bucket let a burst through, the acked rate runs above the link's.)
        self.queue_cap = Some(self.queue_cap.map_or(acked, |c| c.min(acked)));
        self.limit_bps = self.queue_cap;
        self.last_queue_cut_us = Some(now_us);
        self.chained_probe = None;
    }

    /// A full buffer stood on the path lately: standing queues are cut early and probes are
    /// sustained ones.
    fn limited(&self, now_us: u64) -> bool {
        self.deep_queue_us
            .max(self.last_queue_cut_us)
            .is_some_and(|t| now_us < t + LIMITED_US)
    }

    /// Notes large drops of the estimate (what makes probing worthwhile later).
    fn track_drops(&mut self, now_us: u64) {
        let est = self.estimate_bps();
        let (high, at) = self.high;
        if est >= high || now_us >= at + HIGH_WINDOW_US {
            self.high = (est, now_us);
        } else if (est as f64) < LARGE_DROP * high as f64 {
            self.last_limited_us = Some(now_us);
            self.probe_backoff = 0; // a new drop: the link may come back soon
        }
    }

    fn apply_probe_results(&mut self, now_us: u64) {
        let limited = self.limited(now_us);
        if !self.prober.busy() {
            self.sustained = None;
        }
        for r in self.prober.take_results(now_us) {
            let success = if limited {
                !r.saturated && r.bps >= LIMITED_PROBE_SUCCESS * r.target_bps as f64
            } else {
                r.bps >= PROBE_SUCCESS * r.target_bps as f64
            };
            // What got through is no longer in doubt for either controller (on a limited link
            // only when the probe got through whole: less says the path is full).
            let est = self.estimate_bps() as f64;
            if r.bps > est && (success || !limited) {
                self.queue_cap = None;
                self.aimd.raise_to(r.bps, now_us);
                self.loss.raise_to(r.bps);
            }
            // Room for more: probe again right away, higher.
            if success {
                // On a limited link another sustained step, until enough of them found room or
                // one got well past the old limit (nearly its whole 1.25x target): the limit is
                // gone, short probes again.
                let limit_gone = self
                    .limit_bps
                    .is_some_and(|l| r.bps >= 0.95 * LIMIT_GONE * l);
                let factor = if limited {
                    self.sustained_held += 1;
                    if limit_gone || self.sustained_held >= SUSTAINED_TO_CLEAR {
                        self.last_queue_cut_us = None;
                        self.deep_queue_us = None;
                        self.limit_bps = None;
                        self.sustained_held = 0;
                        2.0
                    } else {
                        SUSTAINED_STEP
                    }
                } else {
                    2.0
                };
                self.chained_probe = Some((factor * r.bps) as u64);
                self.probe_backoff = 0;
            } else {
                self.probe_backoff = (self.probe_backoff + 1).min(MAX_PROBE_BACKOFF);
                self.sustained_held = 0;
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
            // Never on top of a queue: what it carries would wait, and the audio behind it.
            && self
                .standing
                .standing()
                .is_none_or(|q| q.queue_us < queue::HIGH_US / 2)
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
        if let Some(target) = self.chained_probe.take() {
            let target = target.min(self.cfg.max_bps);
            if self.probe_allowed(target) {
                self.start_probe(target, now_us);
                return;
            }
        }
        let est = self.estimate_bps();
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
        let recent = self
            .last_limited_us
            .is_some_and(|t| now_us < t + RECENTLY_LIMITED_US);
        let interval = if self.limited(now_us) {
            // Sustained probes back off once at most: each is stopped at the first queue it
            // builds, and a link that comes back should be found within seconds.
            PROBE_INTERVAL_US << self.probe_backoff.min(1)
        } else if recent {
            PROBE_INTERVAL_US << self.probe_backoff
        } else {
            PROBE_INTERVAL_IDLE_US << self.probe_backoff
        };
        let due = self
            .prober
            .last_end_us()
            .is_none_or(|t| now_us >= t + interval);
        // Only while the last cut is a while back: right after it the queue is still draining.
        let settled = self
            .last_limited_us
            .is_none_or(|t| now_us >= t + PROBE_INTERVAL_US / 2);
        let target = if self.limited(now_us) {
            self.sustained_held = 0;
            let over_limit = self.limit_bps.map_or(0.0, |l| LIMIT_GONE * l);
            (SUSTAINED_STEP * est as f64).max(over_limit)
        } else {
            2.0 * est as f64
        };
        let target = (target as u64).min(self.cfg.max_bps);
        if due && settled && self.probe_allowed(target) {
            self.start_probe(target, now_us);
        }
    }

    /// A cluster toward `target`: sustained, and watched for the queue it builds, on a link
    /// limited lately.
    fn start_probe(&mut self, target: u64, now_us: u64) {
        if self.limited(now_us) {
            self.sustained = Some(self.prober.start_for(target, SUSTAINED_US, now_us));
        } else {
            self.prober.start(target, now_us);
        }
    }

    pub fn estimate_bps(&self) -> u64 {
        let remb = self.remb.map_or(f64::INFINITY, |r| r as f64);
        let est = if self.twcc_seen {
            let cap = self
                .queue_cap
                .map_or(f64::INFINITY, |c| QUEUE_CAP_SHARE * c);
            self.aimd
                .estimate()
                .min(self.loss.bound())
                .min(remb)
                .min(cap)
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
