//! ICE consent freshness (RFC 7675) for one handed-over peer, sans-IO: the caller asks when a
//! check is due, sends it (a Binding request on the selected pair, see `stun::consent_request`)
//! under a transaction id it drew, reports each authenticated success response, and polls for
//! expiry. Checks go out every 0.8–1.2 × the interval (RFC 7675 5.1, randomized so many peers do
//! not check in step); consent expires when no response has arrived for the timeout (30 s),
//! counting from when consent was last known (the handover: ICE and DTLS had just succeeded).
//! No retransmissions: a lost check is covered by the next one.

use crate::stun::TransactionId;

/// Checks kept awaiting their answer; older ones are forgotten (a timeout holds 6–8 checks).
const PENDING: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsentTimers {
    /// Mean time between checks, ms (RFC 7675: 5 s).
    pub interval_ms: u64,
    /// Consent expires this long after the last response, ms (RFC 7675: 30 s).
    pub timeout_ms: u64,
}

impl Default for ConsentTimers {
    fn default() -> Self {
        Self {
            interval_ms: 5_000,
            timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Consent {
    timers: ConsentTimers,
    /// When consent was last granted (a valid response, or the start).
    granted_ms: u64,
    next_check_ms: u64,
    /// Checks sent and not answered yet: (transaction id, sent at).
    pending: Vec<(TransactionId, u64)>,
    rng: u64,
    lost: bool,
    pub checks_sent: u64,
    pub responses: u64,
}

impl Consent {
    /// Consent held as of `now_ms`; `seed` randomizes the check times (not the transaction ids,
    /// which the caller draws from a secure source: they are what makes a response unforgeable
    /// off-path).
    pub fn new(timers: ConsentTimers, now_ms: u64, seed: u64) -> Self {
        let mut c = Self {
            timers: ConsentTimers {
                interval_ms: timers.interval_ms.max(1),
                timeout_ms: timers.timeout_ms.max(1),
            },
            granted_ms: now_ms,
            next_check_ms: now_ms,
            pending: Vec::with_capacity(PENDING),
            rng: seed | 1,
            lost: false,
            checks_sent: 0,
            responses: 0,
        };
        c.next_check_ms = now_ms + c.jittered_interval();
        c
    }

    /// interval × [0.8, 1.2], uniformly.
    fn jittered_interval(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let i = self.timers.interval_ms;
        i * 4 / 5 + self.rng % (i * 2 / 5 + 1)
    }

    /// True when a check should be sent now (never once consent is lost).
    pub fn check_due(&self, now_ms: u64) -> bool {
        !self.lost && now_ms >= self.next_check_ms
    }

    /// A check went out under `transaction_id`; the next one is scheduled from now.
    pub fn sent(&mut self, transaction_id: TransactionId, now_ms: u64) {
        let horizon = now_ms.saturating_sub(self.timers.timeout_ms);
        self.pending.retain(|&(_, at)| at >= horizon);
        if self.pending.len() == PENDING {
            self.pending.remove(0);
        }
        self.pending.push((transaction_id, now_ms));
        self.checks_sent += 1;
        self.next_check_ms = now_ms + self.jittered_interval();
    }

    /// Whether `transaction_id` is one of our checks still awaiting an answer.
    pub fn is_pending(&self, transaction_id: &TransactionId) -> bool {
        self.pending.iter().any(|(t, _)| t == transaction_id)
    }

    /// An authenticated success response arrived from the peer's address: true (consent granted
    /// again) if it answers one of our pending checks. Too late once consent is lost.
    pub fn on_response(&mut self, transaction_id: &TransactionId, now_ms: u64) -> bool {
        if self.lost {
            return false;
        }
        let Some(i) = self.pending.iter().position(|(t, _)| t == transaction_id) else {
            return false;
        };
        self.pending.remove(i);
        self.granted_ms = self.granted_ms.max(now_ms);
        self.responses += 1;
        true
    }

    /// The next check goes out at once (the peer moved to a new address: confirm it there).
    pub fn check_soon(&mut self, now_ms: u64) {
        self.next_check_ms = self.next_check_ms.min(now_ms);
    }

    /// True exactly once: on the first call at or past the timeout since consent was last granted.
    pub fn poll_expired(&mut self, now_ms: u64) -> bool {
        if self.lost || now_ms < self.granted_ms + self.timers.timeout_ms {
            return false;
        }
        self.lost = true;
        self.pending.clear();
        true
    }

    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// When the next check is due (or consent would expire, if sooner), ms.
    pub fn next_deadline(&self) -> u64 {
        self.next_check_ms
            .min(self.granted_ms + self.timers.timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid(n: u8) -> TransactionId {
        [n; 12]
    }

    fn rfc() -> ConsentTimers {
        ConsentTimers::default()
    }

    #[test]
    fn checks_go_out_every_four_to_six_seconds() {
        let mut c = Consent::new(rfc(), 1_000, 42);
        assert!(!c.check_due(1_000));
        let mut now = 1_000;
        let mut last = now;
        let mut gaps = Vec::new();
        for n in 0..200u8 {
            while !c.check_due(now) {
                now += 1;
            }
            gaps.push(now - last);
            last = now;
            c.sent(tid(n), now);
            assert!(c.on_response(&tid(n), now + 20));
        }
        assert!(gaps.iter().all(|g| (4_000..=6_000).contains(g)), "{gaps:?}");
        // Spread over the whole window, not one fixed value.
        assert!(gaps.iter().any(|&g| g < 4_400) && gaps.iter().any(|&g| g > 5_600));
        assert_eq!((c.checks_sent, c.responses), (200, 200));
        assert!(!c.poll_expired(now));
    }

    #[test]
    fn expires_thirty_seconds_after_the_last_response_exactly_once() {
        let mut c = Consent::new(rfc(), 0, 7);
        let mut now = 0;
        let mut n = 0;
        // Answered until t = 10 s.
        while now < 10_000 {
            if c.check_due(now) {
                c.sent(tid(n), now);
                c.on_response(&tid(n), now + 50);
                n += 1;
            }
            now += 10;
        }
        let granted = c.granted_ms;
        assert!(granted > 4_000 && granted <= 10_050);
        // Then silence: checks keep going out until the expiry.
        let sent_before = c.checks_sent;
        while now < granted + 30_000 {
            assert!(!c.poll_expired(now), "at {now}");
            if c.check_due(now) {
                c.sent(tid(n), now);
                n += 1;
            }
            now += 10;
        }
        assert!(c.checks_sent - sent_before >= 4);
        assert!(c.poll_expired(granted + 30_000));
        assert!(c.is_lost());
        assert!(!c.poll_expired(granted + 30_001));
        assert!(!c.check_due(granted + 60_000), "no checks once lost");
        // A late answer does not bring it back.
        assert!(!c.on_response(&tid(n - 1), granted + 30_010));
    }

    #[test]
    fn the_start_counts_as_consent() {
        let mut c = Consent::new(rfc(), 500, 1);
        assert!(!c.poll_expired(30_499));
        assert!(c.poll_expired(30_500));
    }

    #[test]
    fn only_answers_to_pending_checks_count() {
        let mut c = Consent::new(rfc(), 0, 3);
        c.sent(tid(1), 5_000);
        assert!(!c.on_response(&tid(2), 5_010), "never sent");
        assert!(c.on_response(&tid(1), 5_010));
        assert!(!c.on_response(&tid(1), 5_020), "answered already");
        assert_eq!(c.responses, 1);
        // Checks older than the timeout are forgotten when the next one goes out.
        c.sent(tid(3), 6_000);
        c.sent(tid(4), 36_001);
        assert!(!c.is_pending(&tid(3)));
        assert!(c.is_pending(&tid(4)));
        // And at most PENDING are kept.
        for n in 10..40 {
            c.sent(tid(n), 36_002);
        }
        assert!(!c.is_pending(&tid(4)) && c.is_pending(&tid(39)));
    }

    #[test]
    fn a_response_refreshes_from_its_arrival() {
        let mut c = Consent::new(rfc(), 0, 9);
        c.sent(tid(1), 20_000);
        assert!(c.on_response(&tid(1), 29_000));
        assert!(!c.poll_expired(58_999));
        assert!(c.poll_expired(59_000));
    }

    #[test]
    fn short_timers_for_tests_and_check_soon() {
        let t = ConsentTimers {
            interval_ms: 200,
            timeout_ms: 1_000,
        };
        let mut c = Consent::new(t, 0, 5);
        assert!(!c.check_due(159));
        assert!(c.check_due(240));
        c.sent(tid(1), 240);
        assert!(!c.check_due(241));
        c.check_soon(300);
        assert!(c.check_due(300));
        assert!(c.next_deadline() <= 300);
        assert!(c.poll_expired(1_000));
    }
}
