//! Transport-cc feedback and the bandwidth estimator. The first byte picks the mode:
//!
//! * even: the rest is one RTCP datagram. `TwccFeedback::parse` and `parse_compound` never panic;
//!   a parsed feedback writes back and parses to the same entries; it is fed to an estimator that
//!   sent those sequence numbers, whose estimate stays within its bounds.
//! * odd: the rest is a receive log, 4 bytes per arrival (sequence number, µs since the previous
//!   arrival), into a `TwccRecorder` polled after each; every packet it emits parses, and the
//!   arrivals it reports are exactly the recorded ones that were not late.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mediasrv_core::bwe::{BweConfig, SendSideBwe};
use mediasrv_core::twcc::{TwccFeedback, TwccRecorder};

const CFG: BweConfig = BweConfig {
    min_bps: 30_000,
    start_bps: 300_000,
    max_bps: 3_000_000,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        for fb in TwccFeedback::parse_compound(rest).flatten() {
            if fb.packets.is_empty() {
                // Zero statuses parse (nothing to act on) but are not worth writing.
                continue;
            }
            let mut out = Vec::new();
            fb.write(&mut out).expect("a parsed feedback can be written");
            let (back, len) = TwccFeedback::parse(&out).expect("written feedback parses");
            assert_eq!(len, out.len());
            assert_eq!(back.packets, fb.packets);
            let mut bwe = SendSideBwe::new(CFG);
            let mut now = 1_000_000u64;
            for (i, p) in fb.packets.iter().enumerate() {
                now += (i as u64 % 7) * 1_000;
                bwe.on_packet_sent(p.seq, 1_000 + i % 300, now, i % 5 == 0);
            }
            for step in 0..3u64 {
                now += 40_000 * step;
                bwe.on_feedback(&fb, now);
                bwe.poll(now);
                let _ = bwe.probe_wanted(now);
                assert!((CFG.min_bps..=CFG.max_bps).contains(&bwe.estimate_bps()));
            }
        }
        if let Ok((fb, len)) = TwccFeedback::parse(rest) {
            assert!(len <= rest.len());
            assert!(fb.packets.len() <= mediasrv_core::twcc::MAX_STATUS_COUNT);
        }
        return;
    }
    let mut rec = TwccRecorder::new(1, 2, 20_000);
    let mut now = 1_000_000u64;
    let mut out = Vec::new();
    let mut recorded = 0u64;
    for c in rest.chunks_exact(4) {
        let seq = u16::from_be_bytes([c[0], c[1]]);
        now += u16::from_be_bytes([c[2], c[3]]) as u64;
        rec.record(seq, now);
        recorded += 1;
        rec.poll_feedback(now, &mut out);
        assert!(rec.pending() <= mediasrv_core::twcc::MAX_PENDING);
    }
    rec.poll_feedback(now + 1_000_000, &mut out);
    let mut reported = 0u64;
    for fb in TwccFeedback::parse_compound(&out) {
        let fb = fb.expect("recorder output parses");
        reported += fb.packets.iter().filter(|p| p.arrival_us.is_some()).count() as u64;
    }
    // Duplicates and late or given-up arrivals are not reported; nothing is invented.
    assert!(reported + rec.late_packets() <= recorded);
});
