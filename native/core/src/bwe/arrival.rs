//! Inter-arrival grouping: packets sent within a short burst form a group, and the estimator looks
//! at how the spacing of consecutive groups changed between sending and arrival. Single packets
//! are too noisy (cross traffic, scheduling), groups much less so.

/// Packets sent within this span of a group's first packet belong to it.
const GROUP_SPAN_US: u64 = 5_000;
/// A packet arriving this soon after the previous one, and earlier than its send spacing says,
/// was queued behind it: same burst.
const BURST_ARRIVAL_US: i64 = 5_000;
/// A burst never grows beyond this (keeps measurements coming at high rates).
const MAX_BURST_US: i64 = 100_000;
/// An arrival clock jump bigger than this (receiver restart, clock wrap) restarts grouping.
const MAX_ARRIVAL_JUMP_US: i64 = 10_000_000;

#[derive(Debug, Clone, Copy)]
struct Group {
    first_send: u64,
    last_send: u64,
    first_arrival: i64,
    last_arrival: i64,
}

impl Group {
    fn new(send: u64, arrival: i64) -> Self {
        Self {
            first_send: send,
            last_send: send,
            first_arrival: arrival,
            last_arrival: arrival,
        }
    }

    fn takes(&self, send: u64, arrival: i64) -> bool {
        if send.saturating_sub(self.first_send) <= GROUP_SPAN_US {
            return true;
        }
        let arrival_delta = arrival - self.last_arrival;
        let send_delta = send as i64 - self.last_send as i64;
        arrival_delta - send_delta < 0
            && arrival_delta <= BURST_ARRIVAL_US
            && arrival - self.first_arrival < MAX_BURST_US
    }
}

/// How the spacing between two consecutive groups changed on the way (ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GroupDelta {
    pub send_ms: f64,
    pub arrival_ms: f64,
    /// Arrival time of the later group (remote clock, ms).
    pub at_ms: f64,
}

#[derive(Debug, Default)]
pub(crate) struct InterArrival {
    current: Option<Group>,
    previous: Option<Group>,
}

impl InterArrival {
    /// Adds one acknowledged packet (in send order); returns a delta when it closes a group.
    pub fn add(&mut self, send_us: u64, arrival_us: i64) -> Option<GroupDelta> {
        let Some(cur) = self.current.as_mut() else {
            self.current = Some(Group::new(send_us, arrival_us));
            return None;
        };
        if send_us < cur.first_send {
            return None; // reordered in send time: already accounted for
        }
        if (arrival_us - cur.last_arrival).abs() > MAX_ARRIVAL_JUMP_US {
            self.previous = None;
            self.current = Some(Group::new(send_us, arrival_us));
            return None;
        }
        if cur.takes(send_us, arrival_us) {
            cur.last_send = cur.last_send.max(send_us);
            cur.last_arrival = cur.last_arrival.max(arrival_us);
            return None;
        }
        let done = std::mem::replace(cur, Group::new(send_us, arrival_us));
        let delta = self.previous.and_then(|prev| {
            let arrival = done.last_arrival - prev.last_arrival;
            (arrival >= 0).then(|| GroupDelta {
                send_ms: (done.last_send as i64 - prev.last_send as i64) as f64 / 1000.0,
                arrival_ms: arrival as f64 / 1000.0,
                at_ms: done.last_arrival as f64 / 1000.0,
            })
        });
        self.previous = Some(done);
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_send_time_and_reports_spacing_change() {
        let mut ia = InterArrival::default();
        // Group A: sent 0..4 ms; group B: 10..14 ms; group C at 20 ms closes B.
        assert_eq!(ia.add(0, 50_000), None);
        assert_eq!(ia.add(4_000, 54_000), None);
        assert_eq!(ia.add(10_000, 62_000), None); // closes A, no previous
        assert_eq!(ia.add(14_000, 66_000), None);
        let d = ia.add(20_000, 80_000).unwrap(); // closes B
        assert_eq!(d.send_ms, 10.0);
        assert_eq!(d.arrival_ms, 12.0);
        assert_eq!(d.at_ms, 66.0);
    }

    #[test]
    fn queued_burst_joins_the_group() {
        let mut ia = InterArrival::default();
        ia.add(0, 10_000);
        // Sent 8 ms later but arrived 1 ms later: it waited in a queue behind the first.
        ia.add(8_000, 11_000);
        assert_eq!(ia.current.unwrap().last_send, 8_000);
        // A send-time reordering is ignored.
        assert_eq!(ia.add(0, 20_000), None);
    }
}
