//! Standing queue: the delay detector (`trendline`) sees a queue *grow*. A queue that filled and
//! then stays full — a deep buffer the sender overshot into, a token bucket whose saved-up burst
//! let a probe through at line rate — no longer grows, so it never fires, and everything sent
//! waits behind it, audio included. Receivers' jitter buffers follow those delays for tens of
//! seconds. This watches the one-way delay itself: the least delay of the last 200 ms (what even
//! the luckiest packet waited) over the least of the last 10 s is the queue that stands.
//!
//! Delays are arrival (remote clock) minus send time (local clock): only differences mean anything.

use std::collections::VecDeque;

/// The queue counts as standing when the luckiest packet of this span waited.
const RECENT_US: i64 = 200_000;
/// The path's own delay: the least of this span (a route change is adopted after it).
const FLOOR_US: i64 = 10_000_000;
/// A standing queue above this is cut down once the link is known to be limited...
pub(crate) const HIGH_US: i64 = 25_000;
/// ... and one above this (a full buffer) makes it known to be.
pub(crate) const DEEP_US: i64 = 100_000;
/// A standing queue under this has drained.
pub(crate) const DRAINED_US: i64 = 5_000;
/// A sustained probe is stopped as soon as the newest 50 ms show a queue above this.
pub(crate) const PROBE_STOP_US: i64 = 15_000;
/// A delay change beyond this is a clock jump (receiver restart), not a queue: start over.
const MAX_JUMP_US: i64 = 10_000_000;

/// The least value of a sliding window of time, in amortised O(1): a deque of candidates whose
/// values increase from front to back (an older, larger value can never be the minimum again).
#[derive(Debug, Default)]
struct WindowedMin {
    span_us: i64,
    candidates: VecDeque<(i64, i64)>,
}

impl WindowedMin {
    fn new(span_us: i64) -> Self {
        Self {
            span_us,
            candidates: VecDeque::new(),
        }
    }

    fn add(&mut self, at_us: i64, value: i64) {
        while self.candidates.back().is_some_and(|&(_, v)| v >= value) {
            self.candidates.pop_back();
        }
        self.candidates.push_back((at_us, value));
        while self
            .candidates
            .front()
            .is_some_and(|&(t, _)| t < at_us - self.span_us)
        {
            self.candidates.pop_front();
        }
    }

    fn min(&self) -> Option<i64> {
        self.candidates.front().map(|&(_, v)| v)
    }
}

/// The least delay per 50 ms of arrival time, for the last `BUCKETS` of them.
const BUCKET_US: i64 = 50_000;
const BUCKETS: usize = (RECENT_US / BUCKET_US) as usize;
/// The newest bucket this far under the oldest: the queue is draining (a probe's, or one a cut
/// already dealt with), nothing to cut.
const DRAINING_US: i64 = 5_000;

/// What stands on the path now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Standing {
    /// The least delay of the last 200 ms over the floor.
    pub queue_us: i64,
    /// The least delay of the last 50 ms over the floor: a queue starting to build.
    pub newest_us: i64,
    pub draining: bool,
}

#[derive(Debug)]
pub(crate) struct StandingQueue {
    buckets: VecDeque<(i64, i64)>,
    floor: WindowedMin,
    last_delay: Option<i64>,
    newest_arrival: i64,
}

impl Default for StandingQueue {
    fn default() -> Self {
        Self {
            buckets: VecDeque::new(),
            floor: WindowedMin::new(FLOOR_US),
            last_delay: None,
            newest_arrival: i64::MIN,
        }
    }
}

impl StandingQueue {
    /// A packet the receiver got: when it was sent (local µs) and arrived (remote µs).
    pub fn add(&mut self, send_us: u64, arrival_us: i64) {
        let delay = arrival_us.saturating_sub(send_us as i64);
        if self
            .last_delay
            .is_some_and(|d| delay.saturating_sub(d).saturating_abs() > MAX_JUMP_US)
        {
            *self = Self::default();
        }
        self.last_delay = Some(delay);
        // Reordered feedback: windows move with the newest arrival only.
        self.newest_arrival = self.newest_arrival.max(arrival_us);
        self.floor.add(self.newest_arrival, delay);
        let index = self.newest_arrival.div_euclid(BUCKET_US);
        match self.buckets.back_mut() {
            Some((i, least)) if *i == index => *least = (*least).min(delay),
            _ => self.buckets.push_back((index, delay)),
        }
        while self
            .buckets
            .front()
            .is_some_and(|&(i, _)| i + BUCKETS as i64 <= index)
        {
            self.buckets.pop_front();
        }
    }

    /// The queue that stood for the last 200 ms (None until a packet arrived in at least three
    /// of its four 50 ms).
    pub fn standing(&self) -> Option<Standing> {
        if self.buckets.len() + 1 < BUCKETS {
            return None;
        }
        let least = self.buckets.iter().map(|b| b.1).min()?;
        let (first, last) = (self.buckets.front()?.1, self.buckets.back()?.1);
        let floor = self.floor.min()?;
        Some(Standing {
            queue_us: least - floor,
            newest_us: last - floor,
            draining: last < first - DRAINING_US,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl StandingQueue {
        fn queue_us(&self) -> Option<i64> {
            self.standing().map(|s| s.queue_us)
        }
    }

    /// Packets every 10 ms with the given queueing delay (ms) from `t0` ms on.
    fn feed(q: &mut StandingQueue, t0: u64, delays_ms: &[u64]) {
        for (i, d) in delays_ms.iter().enumerate() {
            let send = (t0 + 10 * i as u64) * 1_000;
            q.add(send, 5_000_000_000 + (send + 30_000 + d * 1_000) as i64);
        }
    }

    #[test]
    fn a_queue_that_stands_is_seen_and_jitter_is_not() {
        let mut q = StandingQueue::default();
        feed(&mut q, 0, &[0; 5]);
        assert_eq!(
            q.standing(),
            None,
            "not before three of the four 50 ms had packets"
        );
        feed(&mut q, 50, &[0; 100]);
        assert_eq!(q.queue_us(), Some(0));
        // Jitter: every packet 0-30 ms late, but some always on time: no standing queue.
        let jitter: Vec<u64> = (0..100).map(|i| (i * 7) % 31).collect();
        feed(&mut q, 1_100, &jitter);
        assert!(q.queue_us().unwrap() < 10_000, "{:?}", q.queue_us());
        // A full buffer: 250 ms for everyone, for 300 ms.
        feed(&mut q, 2_100, &[250; 30]);
        assert_eq!(q.queue_us(), Some(250_000));
        assert!(!q.standing().unwrap().draining);
        // It drains: seen so while it comes down, gone once a packet got through without waiting.
        feed(
            &mut q,
            2_400,
            &[230, 220, 210, 200, 190, 180, 170, 160, 150, 140],
        );
        assert_eq!(q.standing().map(|s| s.draining), Some(true));
        feed(&mut q, 2_500, &[60, 0]);
        assert_eq!(q.queue_us(), Some(0));
    }

    #[test]
    fn the_floor_follows_a_longer_route_and_a_clock_jump_restarts() {
        let mut q = StandingQueue::default();
        feed(&mut q, 0, &[0; 100]);
        // The path itself got 50 ms longer: a queue at first, the new floor after 10 s.
        feed(&mut q, 1_000, &[50; 1_200]);
        assert_eq!(q.queue_us(), Some(0));
        // The receiver's clock jumped by an hour: nothing to judge until 200 ms were seen again.
        let send = 13_000_000u64;
        q.add(send, 3_600_000_000_000 + send as i64);
        assert_eq!(q.standing(), None);
    }
}
