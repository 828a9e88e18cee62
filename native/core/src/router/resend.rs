//! Retransmission discipline for one subscription: a packet is resent at most once per round trip
//! (a NACK repeated before the first resend could have arrived is not answered again), and resends
//! spend from a byte budget that refills at a share of what the subscriber's link can take, never
//! more than what the first transmissions leave of it. On a congested link this is what keeps NACKs
//! from turning into a retransmission storm that buries the media it tries to repair.

/// Resend times remembered per subscription (by compressed sequence number, modulo this).
const SLOTS: usize = 512;
/// Round trip assumed until the subscriber's reports give one.
pub const DEFAULT_RTT_MS: u64 = 100;
const MIN_RTT_MS: u64 = 5;
const MAX_RTT_MS: u64 = 1_000;
/// Largest share of the subscriber's estimated bandwidth retransmissions may use.
pub const MAX_SHARE_PERCENT: u64 = 25;
/// Share of the estimate retransmissions may always use, even when the first transmissions fill
/// it: on a limited link the estimate follows what gets through, so the media fills it by design,
/// and a lost packet nobody may resend costs a frozen picture until the next keyframe (which, on
/// such a link, is itself likely to lose a packet).
pub const REPAIR_FLOOR_PERCENT: u64 = 10;
/// The budget holds at most this much time's worth of its rate (the burst a NACK may trigger).
const BURST_MS: u64 = 250;
/// One packet can always be afforded once the bucket is full, however small the rate.
const MIN_BURST_BYTES: f64 = 1_500.0;

/// Why a NACKed packet was not resent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Resent less than a round trip ago.
    TooSoon,
    /// The subscription's retransmission budget is spent.
    OverBudget,
}

#[derive(Debug, Default)]
pub struct ResendGate {
    /// (compressed seq + 1, when last resent); 0 marks an empty slot. Allocated on the first NACK:
    /// most subscriptions (audio, a clean link) never need it.
    resent: Vec<(u64, u64)>,
    tokens: f64,
    refilled_ms: Option<u64>,
}

/// Retransmission rate a subscriber may be sent, bits per second: a share of its estimate, no
/// more than the estimate leaves after the first transmissions (`media_bps`), but the repair floor
/// while those roughly fit it. Media well over the estimate (a layer switch not yet made) is a
/// flood that resends would only add to.
pub fn allowance_bps(estimate_bps: u64, media_bps: u64) -> u64 {
    let share = estimate_bps / 100 * MAX_SHARE_PERCENT;
    let left = estimate_bps.saturating_sub(media_bps);
    let fits = media_bps <= estimate_bps + share;
    let floor = if fits {
        estimate_bps / 100 * REPAIR_FLOOR_PERCENT
    } else {
        0
    };
    share.min(left.max(floor))
}

impl ResendGate {
    /// Whether packet `c` (`bytes` on the wire) may be resent now; if so it is recorded as resent
    /// and its bytes are spent. `rtt_ms` is the subscriber's round trip (None: not known yet).
    pub fn admit(
        &mut self,
        c: u64,
        bytes: usize,
        now_ms: u64,
        rtt_ms: Option<u64>,
        allowance_bps: u64,
    ) -> Result<(), Refusal> {
        if self.resent.is_empty() {
            self.resent = vec![(0, 0); SLOTS];
        }
        let slot = (c % SLOTS as u64) as usize;
        let interval = rtt_ms
            .unwrap_or(DEFAULT_RTT_MS)
            .clamp(MIN_RTT_MS, MAX_RTT_MS);
        let (seen, at) = self.resent[slot];
        if seen == c + 1 && now_ms < at.saturating_add(interval) {
            return Err(Refusal::TooSoon);
        }
        self.refill(now_ms, allowance_bps);
        let cost = bytes as f64;
        if self.tokens < cost {
            return Err(Refusal::OverBudget);
        }
        self.tokens -= cost;
        self.resent[slot] = (c + 1, now_ms);
        Ok(())
    }

    fn refill(&mut self, now_ms: u64, allowance_bps: u64) {
        let bytes_per_ms = allowance_bps as f64 / 8_000.0;
        let cap = if allowance_bps == 0 {
            0.0
        } else {
            (bytes_per_ms * BURST_MS as f64).max(MIN_BURST_BYTES)
        };
        self.tokens = match self.refilled_ms {
            Some(last) => {
                (self.tokens + bytes_per_ms * now_ms.saturating_sub(last) as f64).min(cap)
            }
            None => cap, // a subscription starts with a full bucket
        };
        self.refilled_ms = Some(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_is_resent_at_most_once_per_round_trip() {
        let mut g = ResendGate::default();
        let rate = 1_000_000;
        assert_eq!(g.admit(7, 1200, 1_000, Some(80), rate), Ok(()));
        assert_eq!(
            g.admit(7, 1200, 1_050, Some(80), rate),
            Err(Refusal::TooSoon)
        );
        assert_eq!(g.admit(8, 1200, 1_050, Some(80), rate), Ok(())); // another packet is fine
        assert_eq!(g.admit(7, 1200, 1_080, Some(80), rate), Ok(())); // a round trip later
                                                                     // Unknown RTT: the default applies.
        assert_eq!(g.admit(9, 1200, 2_000, None, rate), Ok(()));
        assert_eq!(
            g.admit(9, 1200, 2_000 + DEFAULT_RTT_MS - 1, None, rate),
            Err(Refusal::TooSoon)
        );
        assert_eq!(g.admit(9, 1200, 2_000 + DEFAULT_RTT_MS, None, rate), Ok(()));
        // A slot reused by a packet SLOTS later is not mistaken for the old one.
        assert_eq!(
            g.admit(7 + SLOTS as u64, 1200, 2_200, Some(80), rate),
            Ok(())
        );
    }

    #[test]
    fn resends_never_exceed_the_budget_rate() {
        let mut g = ResendGate::default();
        let rate = 400_000; // 50 kB/s
        let mut sent = 0u64;
        // A NACK storm: every ms, ten new packets asked for, for ten seconds.
        for ms in 0..10_000u64 {
            for k in 0..10 {
                if g.admit(ms * 10 + k, 1000, ms, Some(50), rate).is_ok() {
                    sent += 1000;
                }
            }
        }
        // Ten seconds at 50 kB/s plus the first burst (250 ms worth).
        let bound = 50_000 * 10 + 50 * BURST_MS;
        assert!(sent <= bound, "{sent} > {bound}");
        assert!(
            sent >= bound - 2_000,
            "the budget is used, not starved: {sent}"
        );
    }

    #[test]
    fn no_allowance_means_no_resends() {
        let mut g = ResendGate::default();
        for ms in 0..1_000 {
            assert_eq!(g.admit(ms, 100, ms, Some(50), 0), Err(Refusal::OverBudget));
        }
    }

    #[test]
    fn allowance_is_a_share_and_never_more_than_the_link_leaves() {
        assert_eq!(allowance_bps(1_000_000, 0), 250_000);
        assert_eq!(allowance_bps(1_000_000, 900_000), 100_000);
        // Media that fills the estimate still leaves the repair floor: a lost packet is resent.
        assert_eq!(allowance_bps(1_000_000, 1_000_000), 100_000);
        assert_eq!(allowance_bps(1_000_000, 1_250_000), 100_000);
        assert_eq!(allowance_bps(1_000_000, 1_260_000), 0);
        assert_eq!(allowance_bps(0, 100_000), 0);
        assert_eq!(allowance_bps(300_000, 1_500_000), 0); // congested: media alone is too much
        assert_eq!(allowance_bps(0, 0), 0);
    }

    #[test]
    fn a_small_rate_still_affords_one_packet_now_and_then() {
        let mut g = ResendGate::default();
        let rate = 8_000; // 1 kB/s
        assert_eq!(g.admit(1, 1200, 0, Some(50), rate), Ok(()));
        assert_eq!(
            g.admit(2, 1200, 10, Some(50), rate),
            Err(Refusal::OverBudget)
        );
        assert_eq!(g.admit(3, 1200, 1_500, Some(50), rate), Ok(()));
    }
}
