//! SRTP/SRTCP unprotect with a fixed key (RFC 3711, RFC 7714), on a sequence of datagrams so the
//! replay window and rollover counter see history. The first byte picks the profile and the mode:
//!
//! * raw: each datagram is unprotected as received (the seeds are real packets protected by
//!   libsrtp with the seed key, so mutations of them reach past the header checks);
//! * protect-then-mutate: each datagram is a plaintext packet; it is protected with the peer's
//!   key, optionally damaged (the last two bytes of the item say where and how), and unprotected.
//!   An undamaged packet must come back exactly, once (a second time is a replay); a damaged one
//!   must never be accepted.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mediasrv_core::srtp::{SrtpError, SRTP_MAX_TRAILER_LEN};
use mediasrv_fuzz::{items, profile, seed_context};
use mediasrv_plane::demux::is_rtcp;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let profile = profile(mode);
    let mut rx = seed_context(profile, false);
    if mode & 0x80 == 0 {
        for d in items(rest) {
            let mut buf = d.to_vec();
            let rtcp = is_rtcp(&buf);
            let res = if rtcp {
                rx.unprotect_rtcp(&mut buf)
            } else {
                rx.unprotect_rtp(&mut buf)
            };
            if let Ok(n) = res {
                assert!(n <= d.len());
                // Authentic: a second copy is a replay.
                let mut again = d.to_vec();
                let res2 = if rtcp {
                    rx.unprotect_rtcp(&mut again)
                } else {
                    rx.unprotect_rtp(&mut again)
                };
                assert!(res2.is_err(), "a replayed packet was accepted");
            }
        }
        let c = rx.counters();
        let _ = (c.dropped(), c.pairs());
        return;
    }
    let mut tx = seed_context(profile, true);
    // A damaged packet moves the sender's history on but not the receiver's: after one, their
    // rollover counter guesses may differ, which SRTP cannot tell from an attack.
    let mut diverged = false;
    for d in items(rest) {
        // The last two bytes choose the damage: position and xor mask (0: none), or a truncation.
        let (plain, how) = match d.len() {
            0..=2 => (d, [0, 0]),
            n => (&d[..n - 2], [d[n - 2], d[n - 1]]),
        };
        let rtcp = is_rtcp(plain);
        let mut buf = plain.to_vec();
        buf.resize(plain.len() + SRTP_MAX_TRAILER_LEN, 0);
        let protected = if rtcp {
            tx.protect_rtcp(&mut buf, plain.len())
        } else {
            tx.protect_rtp(&mut buf, plain.len())
        };
        let Ok(n) = protected else { continue };
        buf.truncate(n);
        let damaged = match how {
            [_, 0] => false,
            [pos, 0xff] => {
                let cut = pos as usize % n;
                buf.truncate(cut);
                true
            }
            [pos, mask] => {
                buf[pos as usize % n] ^= mask;
                true
            }
        };
        let original = buf.clone();
        let res = if rtcp {
            rx.unprotect_rtcp(&mut buf)
        } else {
            rx.unprotect_rtp(&mut buf)
        };
        match res {
            Ok(m) => {
                assert!(!damaged, "a damaged packet was accepted: {how:?}");
                assert_eq!(&buf[..m], plain, "round trip changed the packet");
                let mut again = original;
                let res2 = if rtcp {
                    rx.unprotect_rtcp(&mut again)
                } else {
                    rx.unprotect_rtp(&mut again)
                };
                assert!(res2.is_err(), "a replayed packet was accepted");
            }
            Err(e) => {
                // Undamaged packets fail only for reasons of history, never authentication.
                if !damaged && !diverged {
                    assert!(
                        matches!(
                            e,
                            SrtpError::Replayed | SrtpError::TooOld | SrtpError::IndexExhausted
                        ),
                        "undamaged packet refused: {e:?}"
                    );
                }
            }
        }
        diverged |= damaged;
    }
});
