//! The committed seeds are what `tests/fuzz/make_seeds.py` says they are: SRTP packets libsrtp
//! protected with the fuzz key authenticate here, and the STUN requests aioice made pass the
//! integrity check with the fuzz password. If the keys drift apart the fuzzers would only ever see
//! packets failing authentication; this catches that. Run: `cd native/fuzz && cargo test`.
use std::fs;
use std::path::PathBuf;

use mediasrv_core::stun::parse_binding_request;
use mediasrv_fuzz::{items, profile, seed_context, STUN_PASSWORD};
use mediasrv_plane::demux::{classify, is_rtcp, DatagramKind};

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut out: Vec<Vec<u8>> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")
        })
        .map(|p| fs::read(p).unwrap())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds for {target}");
    out
}

fn unprotect(ctx: &mut mediasrv_core::srtp::SrtpContext, d: &[u8]) -> bool {
    let mut buf = d.to_vec();
    if is_rtcp(&buf) {
        ctx.unprotect_rtcp(&mut buf).is_ok()
    } else {
        ctx.unprotect_rtp(&mut buf).is_ok()
    }
}

#[test]
fn srtp_seeds_authenticate_with_the_fuzz_key() {
    let mut raw = 0;
    for s in seeds("srtp_unprotect") {
        if s[0] & 0x80 != 0 {
            continue;
        }
        raw += 1;
        let mut rx = seed_context(profile(s[0]), false);
        for d in items(&s[1..]) {
            assert!(unprotect(&mut rx, d), "profile {} seed item refused", s[0]);
        }
    }
    assert_eq!(raw, 4, "one raw seed per profile");
}

#[test]
fn demux_seeds_reach_the_router() {
    let p = profile(0);
    for s in seeds("demux") {
        let mut peers = [seed_context(p, false), seed_context(p, false)];
        for item in items(&s) {
            let (&src, d) = item.split_first().unwrap();
            if classify(d) == DatagramKind::Media {
                assert!(
                    unprotect(&mut peers[(src & 1) as usize], d),
                    "demux seed item refused"
                );
            }
        }
    }
}

#[test]
fn stun_seeds_pass_the_integrity_check() {
    for s in seeds("stun").iter().filter(|s| s[0] & 1 == 0) {
        let req = parse_binding_request(&s[1..]).expect("seed parses");
        assert!(req.integrity_holds(&s[1..], STUN_PASSWORD));
    }
}
