//! The plane's STUN check for datagrams from unknown sources (RFC 5389 Binding requests): parsing
//! never panics and never reads past the datagram, the ufrag is a prefix of USERNAME inside the
//! datagram, and MESSAGE-INTEGRITY holds only for the password the request was made with.
//!
//! The first byte picks the mode:
//!
//! * even: the rest is one datagram, parsed as received and checked against a fixed password (the
//!   seeds are requests made with it, so mutations reach the HMAC);
//! * odd: the rest is `username`, `password` and a damage pair framed as `mediasrv_fuzz::items`; a
//!   request is built, must parse and pass with that password, and once a byte the HMAC covers is
//!   changed it must not pass any more.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mediasrv_core::stun::{binding_request, parse_binding_request};
use mediasrv_fuzz::{items, STUN_PASSWORD};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if let Ok(req) = parse_binding_request(rest) {
            let u = req.local_ufrag;
            let start = u.as_ptr() as usize - rest.as_ptr() as usize;
            assert!(start + u.len() <= rest.len(), "ufrag outside the datagram");
            assert!(!u.contains(&b':'));
            let _ = req.integrity_holds(rest, STUN_PASSWORD);
            let _ = req.integrity_holds(rest, b"");
        }
        return;
    }
    let mut parts = items(rest);
    let username = parts.next().unwrap_or_default();
    let password = parts.next().unwrap_or_default();
    let damage = parts.next().unwrap_or_default();
    if username.len() > 512 {
        return;
    }
    let mut m = binding_request(username, password, [0x5a; 12]);
    let req = parse_binding_request(&m).expect("a built request parses");
    let want = username.split(|&b| b == b':').next().unwrap_or(username);
    assert_eq!(req.local_ufrag, want);
    assert!(req.integrity_holds(&m, password));
    // HMAC keys shorter than a block are zero-padded: "x" and "x\0" are the same key.
    let key_end = password.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if &password[..key_end] != b"x" {
        assert!(!req.integrity_holds(&m, b"x"), "another password passed");
    }
    // Damage one byte the HMAC covers (header type/transaction id and the attributes before
    // MESSAGE-INTEGRITY; the length field is rewritten by the check itself).
    if let [pos, mask, ..] = *damage {
        if mask != 0 {
            let covered = m.len() - 24 - 8; // MESSAGE-INTEGRITY (24) and FINGERPRINT (8) follow
            let mut i = pos as usize % covered;
            if (2..4).contains(&i) {
                i += 2;
            }
            m[i] ^= mask;
            if let Ok(r) = parse_binding_request(&m) {
                assert!(!r.integrity_holds(&m, password), "a changed byte at {i} kept integrity");
            }
        }
    }
});
