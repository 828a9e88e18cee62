//! Arbitrary (hostile or broken) inputs: no panic, the estimate stays within its bounds.

use proptest::prelude::*;

use crate::bwe::{BweConfig, SendSideBwe};
use crate::twcc::{TwccFeedback, TwccPacket};

#[derive(Debug, Clone)]
enum Op {
    Sent(u16, u16, u32, bool),
    Feedback(u16, Vec<Option<i32>>),
    Rr(u8, Option<u32>),
    Remb(u64),
    Poll(u32),
    Probe,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u16>(), 0u16..1500, 0u32..50_000, any::<bool>()).prop_map(|(s, n, dt, p)| Op::Sent(s, n, dt, p)),
        2 => (any::<u16>(), prop::collection::vec(prop::option::of(any::<i32>()), 0..40))
            .prop_map(|(b, a)| Op::Feedback(b, a)),
        1 => (any::<u8>(), prop::option::of(any::<u32>())).prop_map(|(f, r)| Op::Rr(f, r)),
        1 => any::<u64>().prop_map(Op::Remb),
        1 => any::<u32>().prop_map(Op::Poll),
        1 => Just(Op::Probe),
    ]
}

proptest! {
    #[test]
    fn any_input_keeps_the_estimate_in_bounds(ops in prop::collection::vec(op(), 1..200)) {
        let cfg = BweConfig { min_bps: 30_000, start_bps: 500_000, max_bps: 3_000_000 };
        let mut b = SendSideBwe::new(cfg);
        let mut now = 1_000_000u64;
        for o in ops {
            match o {
                Op::Sent(seq, size, dt, probe) => {
                    now += dt as u64;
                    b.on_packet_sent(seq, size as usize, now, probe);
                }
                Op::Feedback(base, arrivals) => {
                    let fb = TwccFeedback {
                        base_seq: base,
                        packets: arrivals
                            .iter()
                            .enumerate()
                            .map(|(i, a)| TwccPacket {
                                seq: base.wrapping_add(i as u16),
                                arrival_us: a.map(|v| v as i64 * 250),
                            })
                            .collect(),
                        ..Default::default()
                    };
                    b.on_feedback(&fb, now);
                }
                Op::Rr(f, rtt) => b.on_receiver_report(f, rtt.map(u64::from), now),
                Op::Remb(r) => b.on_remb(r, now),
                Op::Poll(dt) => {
                    now += dt as u64;
                    b.poll(now);
                }
                Op::Probe => {
                    if let Some(p) = b.probe_wanted(now) {
                        prop_assert!(p.rate_bps <= cfg.max_bps);
                        prop_assert!(p.bytes > 0 && p.bytes < 1_000_000);
                    }
                }
            }
            let e = b.estimate_bps();
            prop_assert!((cfg.min_bps..=cfg.max_bps).contains(&e), "{}", e);
        }
    }
}
