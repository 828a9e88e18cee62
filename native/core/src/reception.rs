//! Receiver-side statistics of one incoming RTP stream (RFC 3550 6.4.1 and A.3/A.8), turned into
//! report blocks for receiver reports to the publisher.

use crate::rtcp::ReportBlock;

#[derive(Debug, Clone, Default)]
pub struct ReceptionStats {
    base_ext: Option<u64>,
    /// The first packet's wrap cycle: reports count cycles from it (RFC 3550 A.1 starts at 0,
    /// whatever extended numbering the caller uses).
    cycle_base: u64,
    highest_ext: u64,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Last transit time (arrival in RTP units minus RTP timestamp), wrapping.
    last_transit: Option<u32>,
    /// Interarrival jitter in RTP units, scaled by 16 as in RFC 3550 A.8.
    jitter_q4: u64,
}

impl ReceptionStats {
    /// Notes a first-time (not duplicate) media packet. `now_ms` is the arrival time; jitter is
    /// only updated for packets that advance the sequence (reordered ones would skew it).
    pub fn on_packet(&mut self, ext_seq: u64, timestamp: u32, now_ms: u64, clock_rate: u32) {
        if !self.count(ext_seq) {
            return;
        }
        let arrival = (now_ms as u128 * clock_rate as u128 / 1000) as u32;
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(last) = self.last_transit {
            let d = (transit.wrapping_sub(last) as i32).unsigned_abs() as u64;
            // J += (|D| - J) / 16, kept in Q4 fixed point.
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Notes a padding-only packet: numbered like media, so counted, but its timestamp is the last
    /// frame's (sent whenever probing needs it), so it says nothing of jitter.
    pub fn on_padding(&mut self, ext_seq: u64) {
        self.count(ext_seq);
    }

    /// Counts a packet; true when it advances the sequence.
    fn count(&mut self, ext_seq: u64) -> bool {
        self.received += 1;
        match self.base_ext {
            None => {
                self.base_ext = Some(ext_seq);
                self.highest_ext = ext_seq;
                self.cycle_base = ext_seq & !0xffff;
            }
            Some(base) if ext_seq < base => self.base_ext = Some(ext_seq),
            _ => {}
        }
        if ext_seq < self.highest_ext {
            return false;
        }
        self.highest_ext = ext_seq;
        true
    }

    pub fn jitter(&self) -> u32 {
        (self.jitter_q4 >> 4).min(u32::MAX as u64) as u32
    }

    pub fn expected(&self) -> u64 {
        self.base_ext.map_or(0, |b| self.highest_ext - b + 1)
    }

    /// Whether a packet came since the last report block (RFC 3550 6.4: only sources heard from
    /// since the last report are reported).
    pub fn heard_since_report(&self) -> bool {
        self.received > self.received_prior
    }

    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// A report block for `ssrc`; moves the "since last report" interval forward. `last_sr` is the
    /// publisher's last sender report (NTP timestamp, arrival ms).
    pub fn report_block(
        &mut self,
        ssrc: u32,
        now_ms: u64,
        last_sr: Option<(u64, u64)>,
    ) -> Option<ReportBlock> {
        self.base_ext?;
        let expected = self.expected();
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        let (last_sr, delay) = match last_sr {
            Some((ntp, at)) => {
                let delay = now_ms.saturating_sub(at).saturating_mul(65536) / 1000;
                ((ntp >> 16) as u32, delay.min(u32::MAX as u64) as u32)
            }
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: self.lost().clamp(-0x80_0000, 0x7f_ffff) as i32,
            extended_highest_seq: self.highest_ext.saturating_sub(self.cycle_base) as u32,
            jitter: self.jitter(),
            last_sr,
            delay_since_last_sr: delay,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_fraction_and_cumulative() {
        let mut s = ReceptionStats::default();
        for seq in [100u64, 101, 103, 104] {
            s.on_packet(seq, seq as u32 * 960, seq * 20, 48_000);
        }
        let rb = s.report_block(7, 0, None).unwrap();
        assert_eq!(rb.cumulative_lost, 1);
        assert_eq!(rb.fraction_lost as u32, 256 / 5); // 1 of 5 expected
        assert_eq!(rb.extended_highest_seq, 104);
        assert_eq!(rb.jitter, 0, "perfectly paced packets have no jitter");
        // next interval without loss
        s.on_packet(105, 105 * 960, 105 * 20, 48_000);
        assert_eq!(s.report_block(7, 0, None).unwrap().fraction_lost, 0);
    }

    #[test]
    fn jitter_grows_with_uneven_arrival_and_dlsr_is_in_65536ths() {
        let mut s = ReceptionStats::default();
        for i in 0..50u64 {
            let late = if i % 2 == 0 { 0 } else { 10 };
            s.on_packet(i, i as u32 * 960, i * 20 + late, 48_000);
        }
        assert!(s.jitter() > 100, "10 ms swings at 48 kHz: {}", s.jitter());
        let rb = s
            .report_block(1, 1500, Some((0x1122_3344_5566_7788, 1000)))
            .unwrap();
        assert_eq!(rb.last_sr, 0x3344_5566);
        assert_eq!(rb.delay_since_last_sr, 32768);
    }

    #[test]
    fn cycles_count_from_the_first_packet_and_go_up_on_a_wrap() {
        let mut s = ReceptionStats::default();
        // Extended numbers as SeqUnwrapper gives them (first packet in cycle 1).
        for ext in [0x1_fffeu64, 0x1_ffff, 0x2_0000, 0x2_0001] {
            s.on_packet(ext, 0, 0, 90_000);
        }
        let rb = s.report_block(1, 0, None).unwrap();
        assert_eq!(
            rb.extended_highest_seq, 0x1_0001,
            "one wrap: cycle 1, seq 1"
        );
        assert_eq!(rb.cumulative_lost, 0);
        assert!(!s.heard_since_report());
        s.on_packet(0x2_0002, 0, 20, 90_000);
        assert!(s.heard_since_report());
    }

    #[test]
    fn nothing_received_means_no_block() {
        assert!(ReceptionStats::default().report_block(1, 0, None).is_none());
    }
}
