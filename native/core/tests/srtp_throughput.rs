//! Throughput report of the native SRTP path without Python, in place on one buffer.
//! Reports only, never fails on timing:
//! `cargo test --release --test srtp_throughput -- --ignored --nocapture`

use std::time::Instant;

use mediasrv_core::srtp::{Profile, SrtpContext, SRTP_MAX_TRAILER_LEN};

const PACKET_SIZE: usize = 1200;
/// Packets per round; the best of `ROUNDS` rounds is reported, as the machine is shared.
const PACKETS: u32 = 10_000;
const ROUNDS: u32 = 20;

#[test]
#[ignore = "throughput report; run in release with --ignored --nocapture"]
fn report_protect_unprotect_throughput() {
    for profile in Profile::ALL {
        let key = vec![7u8; profile.key_len()];
        let salt = vec![9u8; profile.salt_len()];
        let mut tx = SrtpContext::new(profile, &key, &salt, &key, &salt).unwrap();
        let mut rx = SrtpContext::new(profile, &key, &salt, &key, &salt).unwrap();
        let mut buf = vec![0xa5u8; PACKET_SIZE + SRTP_MAX_TRAILER_LEN];
        buf[..12].copy_from_slice(&[0x80, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);

        let (mut protect_ns, mut unprotect_ns) = (u128::MAX, u128::MAX);
        let mut seq = 0u16;
        for _ in 0..ROUNDS {
            let (mut round_protect, mut round_unprotect) = (0u128, 0u128);
            for _ in 0..PACKETS {
                seq = seq.wrapping_add(1);
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                let t0 = Instant::now();
                let n = tx.protect_rtp(&mut buf, PACKET_SIZE).unwrap();
                let t1 = Instant::now();
                let m = rx.unprotect_rtp(&mut buf[..n]).unwrap();
                let t2 = Instant::now();
                assert_eq!(m, PACKET_SIZE);
                round_protect += (t1 - t0).as_nanos();
                round_unprotect += (t2 - t1).as_nanos();
            }
            protect_ns = protect_ns.min(round_protect);
            unprotect_ns = unprotect_ns.min(round_unprotect);
        }
        let per = |ns: u128| ns as f64 / f64::from(PACKETS);
        println!(
            "{:<24} protect {:>6.0} ns  unprotect {:>6.0} ns  ({:.2} Gbit/s protect)",
            profile.openssl_name(),
            per(protect_ns),
            per(unprotect_ns),
            PACKET_SIZE as f64 * 8.0 / per(protect_ns),
        );
    }
}
