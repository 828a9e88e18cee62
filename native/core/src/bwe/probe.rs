//! Probing: short clusters of padding that lift the total send rate to a target, to find out
//! whether the path carries more than the estimate. The result is what the receiver got during
//! the cluster: when it kept up with the send rate the path has at least that much room.

use std::collections::VecDeque;

/// A probe to send now: `bytes` of padding (or retransmissions) marked as probe packets, toward a
/// total send rate of `rate_bps` for the cluster `cluster`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRequest {
    pub cluster: u32,
    pub rate_bps: u64,
    pub bytes: usize,
}

/// A cluster lasts at least this long and carries at least `MIN_CLUSTER_BYTES`.
const MIN_DURATION_US: u64 = 30_000;
const MIN_CLUSTER_BYTES: u64 = 7_200;
const MIN_PACKETS: usize = 5;
/// Padding is requested in slices of at least this many bytes.
const MIN_SLICE_BYTES: u64 = 200;
const SLICE_AHEAD_US: u64 = 5_000;
const GRACE_US: u64 = 250_000;
/// Caller gaps beyond this (it stopped asking for a while) do not stretch clusters further.
const MAX_CALL_GAP_US: u64 = 125_000;
/// A cluster whose feedback has not come back this long after it ended is judged on what has.
const RESULT_TIMEOUT_US: u64 = 1_000_000;
/// Received rate below this share of the sent rate: the path is full, its capacity is near the
/// received rate.
const SATURATED: f64 = 0.9;
pub(crate) const SATURATED_MARGIN: f64 = 0.95;
/// A cluster whose packets' one-way delay grew by more than this (the least delay of its last
/// quarter against that of its first) queued at the bottleneck: the path did not carry its rate,
/// whatever its arrival rate says. A token bucket passes a short cluster at once on its saved-up
/// burst, so the arrival rate alone is fooled by it; the queue it leaves behind is not.
const GROWTH_LIMIT_US: i64 = 15_000;
/// A gentle cluster stops once a burst of its packets waited this much longer than its first
/// ones (a queue ahead of the audio of ~400 bytes at 300 kbit/s, and growing).
const GENTLE_ABORT_US: i64 = 10_000;
/// A packet this much later than the cluster's first ones waited in a queue: from it on, arrivals
/// are spaced by the bottleneck's rate (the burst is spent).
const QUEUED_US: i64 = 4_000;
/// A token bucket's burst as gentle clusters allow for it (the browser tests' tc tbf has 6000
/// bytes, home routers similar): a gentle cluster (on a link limited lately) carries twice this
/// more than the estimate would, so that the burst alone cannot pass it, and its success counts
/// only what it carried beyond this (a cluster that fits in a few kB proves no higher rate).
const GENTLE_BURST_BYTES: u64 = 6_000;
const GENTLE_MAX_DURATION_US: u64 = 1_200_000;

#[derive(Debug)]
struct Cluster {
    id: u32,
    target_bps: u64,
    start_us: u64,
    end_us: u64,
    /// What the cluster carries in all (media and padding): its rate over its duration.
    total_bytes: u64,
    sent_bytes: u64,
    sent: usize,
    reported: usize,
    lost: usize,
    acked: Vec<(u64, i64, usize)>,
    /// A gentle cluster stops as soon as feedback shows its packets queueing.
    gentle: bool,
    /// Least one-way delay of its packets reported so far (receiver clock minus ours).
    min_delay_us: Option<i64>,
    /// Delays of its packets reported lately, by send time, over `window_us`: the least of them
    /// says whether a queue is building. Within a caller's poll interval, packets sent after a
    /// lump of padding (or a video frame) wait behind it; the first ones after the queue left by
    /// earlier lumps drained do not, so a queue that persists over a whole interval is one that
    /// grows.
    recent: VecDeque<(u64, i64)>,
    window_us: u64,
    aborted: bool,
}

/// The least window over which a gentle cluster's delays are compared.
const MIN_WINDOW_US: u64 = 2_000;

/// What a cluster measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProbeResult {
    pub target_bps: u64,
    pub bps: f64,
    /// The path carried the cluster's rate without a queue building (and, for a gentle cluster,
    /// all of it was sent): `bps` is a rate the path has room for, not its saturated rate.
    pub success: bool,
    /// `bps` measured the path's own rate: a success, or arrivals spaced by a queue (not all of
    /// them passed at once on a token bucket's burst).
    pub reliable: bool,
    pub gentle: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Prober {
    next_id: u32,
    /// The cluster being sent now.
    active: Option<Cluster>,
    /// Sent, waiting for feedback (a few at most).
    measuring: VecDeque<Cluster>,
    last_end_us: Option<u64>,
    /// How often the caller asks for padding (smoothed): a cluster spans at least two such
    /// gaps, else a caller with a coarse timer would send it as one slice at a fraction of
    /// its rate.
    call_gap_us: u64,
    last_call_us: Option<u64>,
}

impl Prober {
    pub fn busy(&self) -> bool {
        self.active.is_some() || !self.measuring.is_empty()
    }

    pub fn last_end_us(&self) -> Option<u64> {
        self.last_end_us
    }

    pub fn start(&mut self, target_bps: u64, now_us: u64) {
        self.start_cluster(target_bps, 0, false, now_us);
    }

    /// A gentle cluster: a small step above `estimate_bps`, long enough to carry
    /// `GENTLE_EXCESS_BYTES` beyond what the estimate would (so a token bucket's burst cannot
    /// pass it all), and stopped as soon as its feedback shows a queue building: what it leaves
    /// in the bottleneck's queue is about the growth limit plus a feedback interval of its excess.
    pub fn start_gentle(&mut self, target_bps: u64, estimate_bps: u64, now_us: u64) {
        let excess = target_bps.saturating_sub(estimate_bps).max(1);
        let bytes = 2 * GENTLE_BURST_BYTES + target_bps * GENTLE_ABORT_US as u64 / 8_000_000;
        let duration = (bytes * 8_000_000 / excess).min(GENTLE_MAX_DURATION_US);
        self.start_cluster(target_bps, duration, true, now_us);
    }

    fn start_cluster(&mut self, target_bps: u64, min_duration: u64, gentle: bool, now_us: u64) {
        let duration = MIN_DURATION_US
            .max(min_duration)
            .max(MIN_CLUSTER_BYTES * 8_000_000 / target_bps.max(1))
            .max(2 * self.call_gap_us.min(MAX_CALL_GAP_US));
        self.next_id = self.next_id.wrapping_add(1);
        self.active = Some(Cluster {
            id: self.next_id,
            target_bps,
            start_us: now_us,
            end_us: now_us + duration,
            total_bytes: target_bps * duration / 8_000_000,
            sent_bytes: 0,
            sent: 0,
            reported: 0,
            lost: 0,
            acked: Vec::new(),
            gentle,
            min_delay_us: None,
            recent: VecDeque::new(),
            window_us: MIN_WINDOW_US.max(self.call_gap_us.min(MAX_CALL_GAP_US)),
            aborted: false,
        });
    }

    /// A cluster ends once it has carried its bytes, or at the latest `GRACE_US` after its nominal
    /// end (a caller polling coarsely sends it in fewer, larger slices).
    fn close_if_over(&mut self, now_us: u64) {
        if self.active.as_ref().is_some_and(|c| {
            c.sent_bytes >= c.total_bytes || c.aborted || now_us >= c.end_us + GRACE_US
        }) {
            if let Some(c) = self.active.take() {
                self.last_end_us = Some(now_us);
                if c.sent > 0 {
                    self.measuring.push_back(c);
                    if self.measuring.len() > 4 {
                        self.measuring.pop_front();
                    }
                }
            }
        }
    }

    /// A packet went out; returns the cluster it belongs to (every packet sent during a cluster
    /// counts toward it, media and padding alike).
    pub fn on_sent(&mut self, size: usize, now_us: u64) -> Option<u32> {
        self.close_if_over(now_us);
        let c = self.active.as_mut()?;
        c.sent_bytes += size as u64;
        c.sent += 1;
        let id = c.id;
        self.close_if_over(now_us);
        Some(id)
    }

    /// Padding due now to keep the active cluster at its rate.
    pub fn wanted(&mut self, now_us: u64) -> Option<ProbeRequest> {
        if let Some(last) = self.last_call_us {
            let gap = now_us.saturating_sub(last).min(MAX_CALL_GAP_US);
            self.call_gap_us = (3 * self.call_gap_us + gap) / 4;
        }
        self.last_call_us = Some(now_us);
        self.close_if_over(now_us);
        let c = self.active.as_ref()?;
        // Aim for the rate over the cluster so far plus a slice ahead, so that callers polling
        // every few ms still send the whole cluster on time (coarser callers send bigger slices).
        let elapsed = now_us.saturating_sub(c.start_us) + SLICE_AHEAD_US;
        let due = (c.target_bps * elapsed / 8_000_000)
            .max(MIN_SLICE_BYTES)
            .min(c.total_bytes);
        let left = due.saturating_sub(c.sent_bytes);
        if left == 0 || (left < MIN_SLICE_BYTES && due < c.total_bytes) {
            return None;
        }
        Some(ProbeRequest {
            cluster: c.id,
            rate_bps: c.target_bps,
            bytes: left as usize,
        })
    }

    fn find(&mut self, id: u32) -> Option<&mut Cluster> {
        if let Some(c) = self.active.as_mut().filter(|c| c.id == id) {
            return Some(c);
        }
        self.measuring.iter_mut().find(|c| c.id == id)
    }

    pub fn on_report(&mut self, id: u32, send_us: u64, arrival_us: Option<i64>, size: usize) {
        let active = self.active.as_ref().is_some_and(|c| c.id == id);
        if let Some(c) = self.find(id) {
            c.reported += 1;
            match arrival_us {
                Some(a) => {
                    c.acked.push((send_us, a, size));
                    let delay = a - send_us as i64;
                    let least = *c.min_delay_us.get_or_insert(delay);
                    c.min_delay_us = Some(least.min(delay));
                    if c.gentle {
                        c.recent.push_back((send_us, delay));
                        let newest = c.recent.iter().map(|r| r.0).max().unwrap_or(send_us);
                        while c.recent.front().is_some_and(|r| r.0 + c.window_us < newest) {
                            c.recent.pop_front();
                        }
                    }
                    let lately = c.recent.iter().map(|r| r.1).min().unwrap_or(delay);
                    // A gentle cluster that queues has its answer: stop adding to the queue.
                    if active && c.gentle && lately - least > GENTLE_ABORT_US {
                        c.aborted = true;
                    }
                }
                None => c.lost += 1,
            }
        }
    }

    /// Results of clusters that are fully reported (or timed out).
    pub fn take_results(&mut self, now_us: u64) -> Vec<ProbeResult> {
        let mut out = Vec::new();
        while let Some(c) = self.measuring.front() {
            if c.reported < c.sent && now_us < c.end_us + GRACE_US + RESULT_TIMEOUT_US {
                break;
            }
            if let Some(c) = self.measuring.pop_front() {
                if let Some((bps, success, reliable)) = measure(&c) {
                    out.push(ProbeResult {
                        target_bps: c.target_bps,
                        bps,
                        success,
                        reliable,
                        gentle: c.gentle,
                    });
                }
            }
        }
        out
    }
}

/// What the path carried of the cluster (bits per second), whether it carried all of it without
/// queueing, and whether the rate is the path's own (see `ProbeResult`).
fn measure(c: &Cluster) -> Option<(f64, bool, bool)> {
    if c.acked.len() < MIN_PACKETS || c.acked.len() * 5 < c.sent * 4 {
        return None;
    }
    let mut acked = c.acked.clone();
    acked.sort_unstable_by_key(|a| a.0);
    let first_send = acked.first()?.0;
    let last_send = acked.last()?.0;
    let first_arrival = acked.iter().map(|a| a.1).min()?;
    let last_arrival = acked.iter().map(|a| a.1).max()?;
    let bytes: usize = acked.iter().map(|a| a.2).sum();
    let last_sent_size = acked.last()?.2;
    let first_arrived_size = acked.iter().min_by_key(|a| a.1)?.2;
    let send_span = last_send.saturating_sub(first_send).max(1_000) as f64;
    let arrival_span = (last_arrival - first_arrival).max(1_000) as f64;
    let send_bps = (bytes - last_sent_size) as f64 * 8e6 / send_span;
    let recv_bps = (bytes - first_arrived_size) as f64 * 8e6 / arrival_span;
    // Queue growth over the cluster: least delay of its last quarter against its first's (the
    // least, so that jitter, which only adds, does not count).
    let delay = |a: &(u64, i64, usize)| a.1 - a.0 as i64;
    let quarter = (acked.len() / 4).max(1);
    let base = acked[..quarter].iter().map(delay).min()?;
    let late = acked[acked.len() - quarter..].iter().map(delay).min()?;
    let queued = late - base > GROWTH_LIMIT_US || c.aborted || c.lost * 20 > c.sent;
    let complete = !c.gentle || c.sent_bytes * 10 >= c.total_bytes * 9;
    if !queued && recv_bps >= SATURATED * send_bps {
        // (A gentle cluster that could not send its excess proved nothing either way.)
        let mut bps = send_bps.min(recv_bps);
        if c.gentle {
            bps -= GENTLE_BURST_BYTES as f64 * 8e6 / send_span.max(arrival_span);
        }
        return complete.then_some((bps, true, true));
    }
    // Saturated: the rate of the arrivals once packets were queueing (a token bucket's burst,
    // which arrives at once, spent), else of them all.
    let beyond = acked
        .iter()
        .position(|a| delay(a) > base + QUEUED_US)
        .map(|i| &acked[i..])
        .filter(|q| q.len() >= MIN_PACKETS)
        .and_then(|q| {
            let first = q.iter().map(|a| a.1).min()?;
            let last = q.iter().map(|a| a.1).max()?;
            let first_size = q.iter().min_by_key(|a| a.1)?.2;
            let b: usize = q.iter().map(|a| a.2).sum();
            (last - first >= 1_000).then(|| (b - first_size) as f64 * 8e6 / (last - first) as f64)
        });
    let rate = beyond.map_or(recv_bps, |b| b.min(recv_bps));
    Some((
        SATURATED_MARGIN * rate.min(send_bps),
        false,
        beyond.is_some(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The padding a cluster wants now, sent in packets of at most `packet` bytes: (size, the
    /// cluster `on_sent` counted it toward) for each.
    fn send_wanted(p: &mut Prober, now: u64, packet: usize) -> Vec<(usize, Option<u32>, u32)> {
        let Some(r) = p.wanted(now) else {
            return Vec::new();
        };
        let mut sent = Vec::new();
        let mut left = r.bytes;
        while left > 0 {
            let size = left.min(packet);
            left -= size;
            sent.push((size, p.on_sent(size, now), r.cluster));
        }
        sent
    }

    #[test]
    fn cluster_paces_padding_and_measures_the_path() {
        let mut p = Prober::default();
        p.start(1_200_000, 0); // 7200 bytes at 1.2 Mbit/s: 48 ms
        let mut now = 0;
        let mut sends = Vec::new();
        while now < 60_000 {
            for (size, id, cluster) in send_wanted(&mut p, now, 1200) {
                assert_eq!(id, Some(cluster));
                sends.push((now, size));
            }
            now += 5_000;
        }
        assert_eq!(p.wanted(now), None);
        assert!(p.busy());
        let total: usize = sends.iter().map(|s| s.1).sum();
        assert!((7_000..=8_400).contains(&total), "{total}");
        // A 600 kbit/s bottleneck: arrivals spaced by size / 600k.
        let mut t = 20_000i64;
        for &(s, size) in &sends {
            t = t.max(s as i64 + 20_000) + (size as i64 * 8_000_000 / 600_000);
            p.on_report(1, s, Some(t), size);
        }
        let r = p.take_results(now);
        assert_eq!(r.len(), 1);
        assert!((540_000.0..=600_000.0).contains(&r[0].bps), "{:?}", r);
        assert!(!r[0].success);
        assert!(!p.busy());
    }
    /// A gentle cluster at 375 kbit/s over an estimate of 300 kbit/s through a token bucket
    /// (6000 bytes of burst, full at the start) of `rate_bps`: feedback every 50 ms, 20 ms away.
    fn gentle_through_bucket(rate_bps: u64) -> Option<ProbeResult> {
        let mut p = Prober::default();
        p.start_gentle(375_000, 300_000, 0);
        let (mut tokens, mut tokens_at, mut busy) = (6_000.0f64, 0u64, 0u64);
        let mut pending: Vec<(u64, u64, usize)> = Vec::new(); // (send, arrival, size)
        let mut now = 0;
        let mut results = Vec::new();
        while now < 3_000_000 {
            for (size, ..) in send_wanted(&mut p, now, 1_000) {
                let start = busy.max(now);
                let saved = (start - tokens_at) as f64 * rate_bps as f64 / 8e6;
                let have = (tokens + saved).min(6_000.0);
                let depart = if have >= size as f64 {
                    tokens = have - size as f64;
                    tokens_at = start;
                    start
                } else {
                    let wait = ((size as f64 - have) * 8e6 / rate_bps as f64).ceil() as u64;
                    tokens = 0.0;
                    tokens_at = start + wait;
                    start + wait
                };
                busy = depart;
                pending.push((now, depart + 20_000, size));
            }
            if now % 50_000 == 0 {
                let (due, rest): (Vec<_>, Vec<_>) =
                    pending.into_iter().partition(|x| x.1 + 20_000 <= now);
                pending = rest;
                for (send, arrival, size) in due {
                    p.on_report(1, send, Some(arrival as i64), size);
                }
                results.extend(p.take_results(now));
            }
            now += 1_000;
        }
        results.first().copied()
    }

    #[test]
    fn gentle_cluster_is_not_fooled_by_a_token_buckets_burst() {
        // The bucket takes 300 kbit/s: the cluster's 12 kB beyond the estimate do not fit its
        // 6 kB burst, its packets queue, it stops early and reports the bucket's rate.
        let r = gentle_through_bucket(300_000);
        let r = r.expect("a result");
        assert!(!r.success && r.reliable && r.gentle, "{r:?}");
        assert!((270_000.0..=300_000.0).contains(&r.bps), "{r:?}");
        // It takes 400 kbit/s: a success, worth its rate less what a burst could have carried.
        let r = gentle_through_bucket(400_000);
        let r = r.expect("a result");
        assert!(r.success, "{r:?}");
        assert!((320_000.0..=345_000.0).contains(&r.bps), "{r:?}");
    }
}
