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
const SATURATED_MARGIN: f64 = 0.95;

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
}

/// What a cluster measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProbeResult {
    pub target_bps: u64,
    pub bps: f64,
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
        let duration = MIN_DURATION_US
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
        });
    }

    /// A cluster ends once it has carried its bytes, or at the latest `GRACE_US` after its nominal
    /// end (a caller polling coarsely sends it in fewer, larger slices).
    fn close_if_over(&mut self, now_us: u64) {
        if self
            .active
            .as_ref()
            .is_some_and(|c| c.sent_bytes >= c.total_bytes || now_us >= c.end_us + GRACE_US)
        {
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
        if let Some(c) = self.find(id) {
            c.reported += 1;
            match arrival_us {
                Some(a) => c.acked.push((send_us, a, size)),
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
                if let Some(bps) = measure(&c) {
                    out.push(ProbeResult {
                        target_bps: c.target_bps,
                        bps,
                    });
                }
            }
        }
        out
    }
}

fn measure(c: &Cluster) -> Option<f64> {
    if c.acked.len() < MIN_PACKETS || c.acked.len() * 5 < c.sent * 4 {
        return None;
    }
    let first_send = c.acked.iter().map(|a| a.0).min()?;
    let last_send = c.acked.iter().map(|a| a.0).max()?;
    let first_arrival = c.acked.iter().map(|a| a.1).min()?;
    let last_arrival = c.acked.iter().map(|a| a.1).max()?;
    let bytes: usize = c.acked.iter().map(|a| a.2).sum();
    let last_sent_size = c.acked.iter().max_by_key(|a| a.0)?.2;
    let first_arrived_size = c.acked.iter().min_by_key(|a| a.1)?.2;
    let send_span = last_send.saturating_sub(first_send).max(1_000) as f64;
    let arrival_span = (last_arrival - first_arrival).max(1_000) as f64;
    let send_bps = (bytes - last_sent_size) as f64 * 8e6 / send_span;
    let recv_bps = (bytes - first_arrived_size) as f64 * 8e6 / arrival_span;
    Some(if recv_bps < SATURATED * send_bps {
        SATURATED_MARGIN * recv_bps
    } else {
        send_bps.min(recv_bps)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_paces_padding_and_measures_the_path() {
        let mut p = Prober::default();
        p.start(1_200_000, 0); // 7200 bytes at 1.2 Mbit/s: 48 ms
        let mut now = 0;
        let mut sends = Vec::new();
        while now < 60_000 {
            if let Some(r) = p.wanted(now) {
                let mut left = r.bytes;
                while left > 0 {
                    let size = left.min(1200);
                    left -= size;
                    let id = p.on_sent(size, now).unwrap();
                    assert_eq!(id, r.cluster);
                    sends.push((now, size));
                }
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
        assert!(!p.busy());
    }
}
