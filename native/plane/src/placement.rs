//! Which worker a new room goes to: the one with the least load, never the one with the fewest
//! rooms (a 1:1 visit and a 1→50 fan-out are not the same load, and with one port for all
//! workers thread 0 also reads every socket for everyone). A room never moves once placed.
//!
//! Sans-IO: the plane feeds it a monotonic work counter per worker (it uses each worker thread's
//! CPU time in µs: what a packet costs differs by thread and batch size, the CPU time is the load
//! itself; packets per worker are exported as metrics) and the clock; rates come from the
//! difference between samples at least [`MIN_WINDOW_MS`] apart. A part of thread 0's counter may
//! be declared as receiving for everyone (`received`), which does not depend on placement; with
//! CPU time nothing can be counted apart, so it is estimated (see `receiving`). Rooms placed in
//! the last [`YOUNG_MS`] carry little media yet (ICE, DTLS and the first keyframe come first), so
//! they count at the mean load of a settled room, and at their share of thread 0's receiving;
//! without that a burst of new visits would all land on the worker that looked idle a second ago.

/// Rooms younger than this count at the estimated load of a settled room.
pub const YOUNG_MS: u64 = 5_000;
/// Shortest window a rate is measured over.
pub const MIN_WINDOW_MS: u64 = 500;

/// Index of the thread that reads every socket (its receive work does not depend on placement).
const RECEIVER: usize = 0;

#[derive(Debug, Clone)]
pub struct Placement {
    last_ms: Option<u64>,
    last_packets: Vec<u64>,
    last_received: u64,
    /// Packets a second per worker over the last window (thread 0's receiving included).
    rate: Vec<f64>,
    /// Of which thread 0's receiving.
    received_rate: f64,
    /// Placement times of the rooms still young, per worker.
    young: Vec<Vec<u64>>,
    /// Thread 0 reads every socket for everyone (one port for all workers); false when each
    /// worker reads its own sockets, and each worker's load then includes its rooms' receiving.
    shared_receiver: bool,
}

impl Placement {
    /// Placement for `workers` workers where thread 0 reads every socket for everyone.
    pub fn new(workers: usize) -> Self {
        Self::with_receiver(workers, true)
    }

    /// Placement where each worker reads its own sockets (`shared_receiver` false), or thread 0
    /// reads for everyone.
    pub fn with_receiver(workers: usize, shared_receiver: bool) -> Self {
        let workers = workers.max(1);
        Self {
            last_ms: None,
            last_packets: vec![0; workers],
            last_received: 0,
            rate: vec![0.0; workers],
            received_rate: 0.0,
            young: vec![Vec::new(); workers],
            shared_receiver,
        }
    }

    /// Takes a sample of the counters: `packets[w]` is worker w's work so far (monotonic), of
    /// which `received` is thread 0's receiving. Rates move once the window is long enough.
    pub fn sample(&mut self, now_ms: u64, packets: &[u64], received: u64) {
        let Some(last) = self.last_ms else {
            self.last_ms = Some(now_ms);
            self.last_packets = packets.to_vec();
            self.last_received = received;
            return;
        };
        let dt_ms = now_ms.saturating_sub(last);
        if dt_ms < MIN_WINDOW_MS || packets.len() != self.rate.len() {
            return;
        }
        let per_s = 1000.0 / dt_ms as f64;
        for (w, &p) in packets.iter().enumerate() {
            self.rate[w] = p.saturating_sub(self.last_packets[w]) as f64 * per_s;
        }
        self.received_rate = received.saturating_sub(self.last_received) as f64 * per_s;
        self.last_ms = Some(now_ms);
        self.last_packets.copy_from_slice(packets);
        self.last_received = received;
    }

    /// Packets a second each worker is expected to carry: its measured rate, plus its young rooms
    /// at the mean settled room's load (and, on thread 0, the receiving of every young room).
    pub fn expected(&self, now_ms: u64, rooms: &[u64]) -> Vec<f64> {
        let young: Vec<usize> = self
            .young
            .iter()
            .map(|times| {
                times
                    .iter()
                    .filter(|&&t| now_ms.saturating_sub(t) < YOUNG_MS)
                    .count()
            })
            .collect();
        let young_total: usize = young.iter().sum();
        let settled = rooms.iter().sum::<u64>().saturating_sub(young_total as u64);
        let total: f64 = self.rate.iter().sum();
        // The mean settled room; while every room is young (a burst of new visits), the mean over
        // all of them, so that young rooms already carrying media still weigh on their worker.
        let basis = if settled > 0 {
            settled
        } else {
            rooms.iter().sum::<u64>()
        };
        let received = self.receiving(rooms, &young);
        let (per_room, received_per_room) = if basis > 0 {
            (
                (total - received).max(0.0) / basis as f64,
                received / basis as f64,
            )
        } else {
            (0.0, 0.0)
        };
        self.rate
            .iter()
            .zip(&young)
            .enumerate()
            .map(|(w, (&rate, &y))| {
                let mut load = rate + y as f64 * per_room;
                if w == RECEIVER {
                    load += young_total as f64 * received_per_room;
                }
                load
            })
            .collect()
    }

    /// Thread 0's receiving for everyone, a second: the declared counter's rate or, when the
    /// load is CPU time (nothing declared), an estimate. Routing a room costs about the same on
    /// every worker, so the other workers' load per settled room is that cost, and what thread 0
    /// spends beyond it for its own rooms is receiving. Young rooms on the others make the cost
    /// per room look low and the receiving high, which errs toward sparing thread 0.
    fn receiving(&self, rooms: &[u64], young: &[usize]) -> f64 {
        if !self.shared_receiver {
            return 0.0;
        }
        if self.received_rate > 0.0 || self.rate.len() < 2 || rooms.len() != self.rate.len() {
            return self.received_rate;
        }
        let settled = |w: usize| rooms[w].saturating_sub(young[w] as u64);
        let others = RECEIVER + 1..self.rate.len();
        let others_rate: f64 = others.clone().map(|w| self.rate[w]).sum();
        let mut others_rooms: u64 = others.clone().map(settled).sum();
        let mut own_rooms = settled(RECEIVER);
        if others_rooms == 0 {
            // All young (a burst of new visits): their partial loads still tell the ratio.
            others_rooms = others.map(|w| rooms[w]).sum();
            own_rooms = rooms[RECEIVER];
        }
        if others_rooms == 0 {
            return 0.0;
        }
        let per_room = others_rate / others_rooms as f64;
        (self.rate[RECEIVER] - own_rooms as f64 * per_room).max(0.0)
    }

    /// The worker for a new room (`rooms[w]`: rooms on each worker now): least expected load,
    /// then fewest young rooms, then fewest rooms, then the lowest index.
    pub fn choose(&mut self, now_ms: u64, packets: &[u64], received: u64, rooms: &[u64]) -> usize {
        self.sample(now_ms, packets, received);
        for times in &mut self.young {
            times.retain(|&t| now_ms.saturating_sub(t) < YOUNG_MS);
        }
        let expected = self.expected(now_ms, rooms);
        let w = (0..expected.len())
            .min_by(|&a, &b| {
                expected[a]
                    .total_cmp(&expected[b])
                    .then(self.young[a].len().cmp(&self.young[b].len()))
                    .then(rooms.get(a).cmp(&rooms.get(b)))
                    .then(a.cmp(&b))
            })
            .unwrap_or(0);
        self.young[w].push(now_ms);
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_any_traffic_rooms_alternate() {
        let mut p = Placement::new(2);
        let mut rooms = [0u64, 0];
        let mut order = Vec::new();
        for i in 0..4 {
            let w = p.choose(i * 10, &[0, 0], 0, &rooms);
            rooms[w] += 1;
            order.push(w);
        }
        assert_eq!(order, [0, 1, 0, 1]);
    }

    #[test]
    fn the_busier_worker_gets_nothing_until_the_other_catches_up() {
        let mut p = Placement::new(2);
        p.sample(0, &[0, 0], 0);
        // One second later: worker 0 did 3000 packets (1000 of them receiving), worker 1 did 1000.
        p.sample(1000, &[3000, 1000], 1000);
        assert_eq!(p.expected(1000, &[1, 1]), [3000.0, 1000.0]);
        // Settled rooms: 2; per room (4000 - 1000 receiving) / 2 = 1500, receiving 500.
        let rooms = [1u64, 1];
        assert_eq!(p.choose(1000, &[3000, 1000], 1000, &rooms), 1);
        // Now worker 1 expects 1000 + 1500 = 2500 and worker 0 3000 + 500 (the young room's
        // receiving): still worker 1.
        assert_eq!(p.expected(1000, &[1, 2]), [3500.0, 2500.0]);
        assert_eq!(p.choose(1000, &[3000, 1000], 1000, &[1, 2]), 1);
        // 1000 + 2 × 1500 = 4000 against 3000 + 2 × 500 = 4000: a tie, the fewer young rooms wins.
        assert_eq!(p.choose(1000, &[3000, 1000], 1000, &[1, 3]), 0);
    }

    #[test]
    fn in_a_burst_of_new_rooms_young_rooms_count_at_the_mean_of_all() {
        let mut p = Placement::new(2);
        p.sample(0, &[0, 0], 0);
        // Two young rooms, one per worker; worker 0 also receives for both.
        assert_eq!(p.choose(0, &[0, 0], 0, &[0, 0]), 0);
        assert_eq!(p.choose(0, &[0, 0], 0, &[1, 0]), 1);
        p.sample(1000, &[3000, 1000], 1000);
        // No settled room: per room (4000 - 1000) / 2 = 1500, receiving 500.
        assert_eq!(
            p.expected(1000, &[1, 1]),
            [3000.0 + 1500.0 + 2.0 * 500.0, 1000.0 + 1500.0]
        );
        assert_eq!(p.choose(1000, &[3000, 1000], 1000, &[1, 1]), 1);
    }

    #[test]
    fn young_rooms_stop_counting_after_the_window() {
        let mut p = Placement::new(2);
        p.sample(0, &[0, 0], 0);
        p.sample(1000, &[1000, 1000], 0);
        assert_eq!(p.choose(1000, &[1000, 1000], 0, &[1, 1]), 0);
        // Young: worker 0 expects 1000 + 1000 (per room: 2000 / 2 settled).
        assert_eq!(p.expected(1000, &[2, 1]), [2000.0, 1000.0]);
        // After YOUNG_MS its measured rate carries it instead.
        assert_eq!(p.expected(1000 + YOUNG_MS, &[2, 1]), [1000.0, 1000.0]);
    }

    #[test]
    fn short_windows_keep_the_last_rate() {
        let mut p = Placement::new(2);
        p.sample(0, &[0, 0], 0);
        p.sample(1000, &[500, 100], 0);
        p.sample(1000 + MIN_WINDOW_MS - 1, &[10_000, 100], 0);
        assert_eq!(p.expected(2000, &[1, 1]), [500.0, 100.0]);
        p.sample(1000 + MIN_WINDOW_MS, &[10_000, 100], 0);
        assert_eq!(
            p.expected(2000, &[1, 1])[0],
            9500.0 * 1000.0 / MIN_WINDOW_MS as f64
        );
    }

    /// 25 1:1 visits arriving in 5 s, as `compare --mode visits --rooms 25` starts them: each
    /// room's media ramps up over its first second; routing a room costs `ROUTE` µs of CPU a
    /// second on its worker, and reading it `READ` µs a second: on thread 0 wherever the room was
    /// placed when thread 0 reads for everyone, else on the room's own worker (the ratio measured
    /// at 25 visits: 0.068 s and 0.027 s per room over 20 s). Returns the rooms per worker and how
    /// far apart the workers' loads end up.
    fn burst_of_visits(mut p: Placement, shared_receiver: bool) -> ([u64; 2], f64) {
        const ROUTE: f64 = 3_400.0;
        const READ: f64 = 1_350.0;
        let mut placed: Vec<(usize, u64)> = Vec::new(); // (worker, placed at)
        let mut cpu = [0.0f64; 2];
        let mut last_ms = 0;
        let mut rooms = [0u64; 2];
        for now in (0..=10_000u64).step_by(50) {
            for &(w, at) in &placed {
                let full = ((now - at) as f64 / 1000.0).min(1.0);
                let dt = (now - last_ms) as f64 / 1000.0;
                cpu[w] += ROUTE * full * dt;
                cpu[if shared_receiver { 0 } else { w }] += READ * full * dt;
            }
            last_ms = now;
            let counters = [cpu[0] as u64, cpu[1] as u64];
            if now % 200 == 0 && placed.len() < 25 {
                let w = p.choose(now, &counters, 0, &rooms);
                rooms[w] += 1;
                placed.push((w, now));
            } else {
                p.sample(now, &counters, 0);
            }
        }
        let load = if shared_receiver {
            [
                rooms[0] as f64 * ROUTE + 25.0 * READ,
                rooms[1] as f64 * ROUTE,
            ]
        } else {
            [
                rooms[0] as f64 * (ROUTE + READ),
                rooms[1] as f64 * (ROUTE + READ),
            ]
        };
        (rooms, (load[0] - load[1]).abs() / load[0].min(load[1]))
    }

    #[test]
    fn a_burst_of_visits_ends_up_balanced_with_thread_0_reading_for_everyone() {
        let (rooms, spread) = burst_of_visits(Placement::new(2), true);
        assert!(
            spread <= 0.20,
            "rooms {rooms:?}, {:.0} % apart",
            spread * 100.0
        );
    }

    #[test]
    fn with_a_socket_per_worker_no_receiving_is_charged_to_thread_0() {
        let (rooms, spread) = burst_of_visits(Placement::with_receiver(2, false), false);
        assert!(
            spread <= 0.10,
            "rooms {rooms:?}, {:.0} % apart",
            spread * 100.0
        );
        // Charging thread 0 for reading it no longer does skews the same burst.
        let (skewed, _) = burst_of_visits(Placement::new(2), false);
        assert!(skewed[0] < rooms[0], "{skewed:?} vs {rooms:?}");
    }

    #[test]
    fn a_busy_worker_is_skipped_and_ties_go_to_the_one_without_young_rooms() {
        let mut p = Placement::new(3);
        let first = p.choose(0, &[0, 0, 0], 0, &[0, 0, 0]);
        p.sample(1000, &[0, 9000, 0], 0);
        let second = p.choose(1000, &[0, 9000, 0], 0, &[1, 0, 0]);
        assert_eq!(first, 0);
        assert_eq!(second, 2);
    }
}
