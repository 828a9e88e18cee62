//! SrtpContext behaviour through the public API: libsrtp's reference packets, round trips
//! for every profile, rollover counters across sequence wrap, replay refusal, per-SSRC state
//! and precise errors with counters.

use mediasrv_core::srtp::{Profile, SrtpContext, SrtpError, SRTP_MAX_TRAILER_LEN};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// RFC 3711 Appendix B.3 master key and salt (also libsrtp's `srtp_driver` test key).
const MASTER_KEY: &str = "e1f97a0d3e018be0d64fa32c06de4139";
const MASTER_SALT: &str = "0ec675ad498afeebb6960b3aabe6";

fn keys(profile: Profile, seed: u8) -> (Vec<u8>, Vec<u8>) {
    let key = (0..profile.key_len())
        .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
        .collect();
    let salt = (0..profile.salt_len())
        .map(|i| seed.wrapping_mul(17) ^ (i as u8 * 3))
        .collect();
    (key, salt)
}

/// A sender context and the receiver context of its peer, sharing keys crosswise.
fn pair(profile: Profile) -> (SrtpContext, SrtpContext) {
    let (ka, sa) = keys(profile, 1);
    let (kb, sb) = keys(profile, 2);
    let a = SrtpContext::new(profile, &ka, &sa, &kb, &sb).unwrap();
    let b = SrtpContext::new(profile, &kb, &sb, &ka, &sa).unwrap();
    (a, b)
}

fn rtp(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(7) ^ seq as u8));
    p
}

fn rtcp_sr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..20).map(|i| i as u8));
    p
}

fn protect_rtp(ctx: &mut SrtpContext, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = packet.to_vec();
    buf.resize(packet.len() + SRTP_MAX_TRAILER_LEN, 0);
    let n = ctx.protect_rtp(&mut buf, packet.len())?;
    buf.truncate(n);
    Ok(buf)
}

fn unprotect_rtp(ctx: &mut SrtpContext, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = packet.to_vec();
    let n = ctx.unprotect_rtp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn protect_rtcp(ctx: &mut SrtpContext, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = packet.to_vec();
    buf.resize(packet.len() + SRTP_MAX_TRAILER_LEN, 0);
    let n = ctx.protect_rtcp(&mut buf, packet.len())?;
    buf.truncate(n);
    Ok(buf)
}

fn unprotect_rtcp(ctx: &mut SrtpContext, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = packet.to_vec();
    let n = ctx.unprotect_rtcp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn reference_context() -> SrtpContext {
    let (k, s) = (unhex(MASTER_KEY), unhex(MASTER_SALT));
    SrtpContext::new(Profile::Aes128CmHmacSha1_80, &k, &s, &k, &s).unwrap()
}

/// libsrtp's `srtp_driver` reference SRTP packet for AES_CM_128_HMAC_SHA1_80.
#[test]
fn aes_cm_matches_libsrtp_reference_rtp_packet() {
    let plain = unhex("800f1234decafbadcafebabeabababababababababababababababab");
    let expected =
        unhex("800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb");
    let mut ctx = reference_context();
    assert_eq!(protect_rtp(&mut ctx, &plain).unwrap(), expected);
    assert_eq!(
        unprotect_rtp(&mut reference_context(), &expected).unwrap(),
        plain
    );
}

/// libsrtp's reference SRTCP packet: the first index of a stream is 1, E bit set.
#[test]
fn aes_cm_matches_libsrtp_reference_rtcp_packet() {
    let plain = unhex("81c8000bcafebabeabababababababababababababababab");
    let expected =
        unhex("81c8000bcafebabe7128035be487b9bdbef89041f977a5a880000001993e08cd54d6c1230798");
    let mut ctx = reference_context();
    assert_eq!(protect_rtcp(&mut ctx, &plain).unwrap(), expected);
    assert_eq!(
        unprotect_rtcp(&mut reference_context(), &expected).unwrap(),
        plain
    );
}

#[test]
fn every_profile_round_trips_rtp_and_rtcp_with_the_right_overhead() {
    for profile in Profile::ALL {
        let (mut a, mut b) = pair(profile);
        for seq in 0..50u16 {
            let plain = rtp(seq, 0x1234_5678, 1200);
            let protected = protect_rtp(&mut a, &plain).unwrap();
            assert_eq!(
                protected.len(),
                plain.len() + profile.rtp_trailer_len(),
                "{profile:?}"
            );
            assert_eq!(protected[..12], plain[..12], "header stays clear");
            assert_ne!(
                protected[12..plain.len()],
                plain[12..],
                "payload is encrypted"
            );
            assert_eq!(
                unprotect_rtp(&mut b, &protected).unwrap(),
                plain,
                "{profile:?}"
            );

            let report = rtcp_sr(0x1234_5678);
            let protected = protect_rtcp(&mut a, &report).unwrap();
            assert_eq!(
                protected.len(),
                report.len() + profile.rtcp_trailer_len(),
                "{profile:?}"
            );
            assert_eq!(
                unprotect_rtcp(&mut b, &protected).unwrap(),
                report,
                "{profile:?}"
            );
        }
        assert_eq!(b.counters().rtp_unprotected, 50);
        assert_eq!(b.counters().rtcp_unprotected, 50);
        assert_eq!(a.counters().rtp_protected, 50);
        assert_eq!(b.counters().dropped(), 0);
    }
}

#[test]
fn rollover_counter_advances_across_the_sequence_wrap() {
    for profile in Profile::ALL {
        let (mut a, mut b) = pair(profile);
        let seqs: Vec<u16> = (65530..=65535).chain(0..6).collect();
        let mut protected = Vec::new();
        for &seq in &seqs {
            protected.push(protect_rtp(&mut a, &rtp(seq, 7, 100)).unwrap());
        }
        assert_eq!(a.tx_roc(7), Some(1));
        // Deliver everything except 65534, which arrives late, after the wrap.
        for (p, &seq) in protected.iter().zip(&seqs) {
            if seq != 65534 {
                assert_eq!(
                    unprotect_rtp(&mut b, p).unwrap(),
                    rtp(seq, 7, 100),
                    "{profile:?} seq {seq}"
                );
            }
        }
        assert_eq!(b.rx_roc(7), Some(1));
        let late = &protected[4];
        assert_eq!(unprotect_rtp(&mut b, late).unwrap(), rtp(65534, 7, 100));
        assert_eq!(
            b.rx_roc(7),
            Some(1),
            "a late packet does not move the ROC back"
        );
        assert_eq!(b.counters().roc_rollovers, 1);
    }
}

#[test]
fn replayed_rtp_and_rtcp_are_refused_and_counted() {
    for profile in Profile::ALL {
        let (mut a, mut b) = pair(profile);
        let p = protect_rtp(&mut a, &rtp(10, 1, 64)).unwrap();
        let c = protect_rtcp(&mut a, &rtcp_sr(1)).unwrap();
        unprotect_rtp(&mut b, &p).unwrap();
        unprotect_rtcp(&mut b, &c).unwrap();
        assert_eq!(unprotect_rtp(&mut b, &p), Err(SrtpError::Replayed));
        assert_eq!(unprotect_rtcp(&mut b, &c), Err(SrtpError::Replayed));
        assert_eq!(b.counters().replayed, 2);
    }
}

#[test]
fn reordering_inside_the_window_is_accepted_and_older_is_refused() {
    let (mut a, mut b) = pair(Profile::AeadAes128Gcm);
    let packets: Vec<_> = (0..300u16)
        .map(|s| protect_rtp(&mut a, &rtp(s, 9, 32)).unwrap())
        .collect();
    unprotect_rtp(&mut b, &packets[299]).unwrap();
    unprotect_rtp(&mut b, &packets[299 - 100]).unwrap();
    unprotect_rtp(&mut b, &packets[299 - 127]).unwrap();
    assert_eq!(
        unprotect_rtp(&mut b, &packets[299 - 128]),
        Err(SrtpError::TooOld)
    );
    assert_eq!(unprotect_rtp(&mut b, &packets[0]), Err(SrtpError::TooOld));
    assert_eq!(b.counters().too_old, 2);
}

#[test]
fn failed_authentication_changes_no_state() {
    for profile in Profile::ALL {
        let (mut a, mut b) = pair(profile);
        let (mut stranger, _) = {
            let (k, s) = keys(profile, 99);
            (SrtpContext::new(profile, &k, &s, &k, &s).unwrap(), ())
        };
        // A forged packet far ahead must not advance the window or create the stream.
        let forged = protect_rtp(&mut stranger, &rtp(40000, 5, 64)).unwrap();
        assert_eq!(unprotect_rtp(&mut b, &forged), Err(SrtpError::AuthFailed));
        assert_eq!(b.stream_counts().1, 0);
        let genuine = protect_rtp(&mut a, &rtp(1, 5, 64)).unwrap();
        assert_eq!(unprotect_rtp(&mut b, &genuine).unwrap(), rtp(1, 5, 64));
        let forged = protect_rtp(&mut stranger, &rtp(2, 5, 64)).unwrap();
        assert_eq!(unprotect_rtp(&mut b, &forged), Err(SrtpError::AuthFailed));
        let genuine = protect_rtp(&mut a, &rtp(2, 5, 64)).unwrap();
        assert_eq!(unprotect_rtp(&mut b, &genuine).unwrap(), rtp(2, 5, 64));
        let forged_rtcp = protect_rtcp(&mut stranger, &rtcp_sr(5)).unwrap();
        assert_eq!(
            unprotect_rtcp(&mut b, &forged_rtcp),
            Err(SrtpError::AuthFailed)
        );
        assert_eq!(b.counters().auth_failed, 3);
    }
}

#[test]
fn each_ssrc_keeps_its_own_rollover_and_window() {
    let (mut a, mut b) = pair(Profile::Aes128CmHmacSha1_80);
    let audio = protect_rtp(&mut a, &rtp(65535, 111, 40)).unwrap();
    let video = protect_rtp(&mut a, &rtp(3, 222, 40)).unwrap();
    let audio2 = protect_rtp(&mut a, &rtp(0, 111, 40)).unwrap();
    for p in [&audio, &video, &audio2] {
        unprotect_rtp(&mut b, p).unwrap();
    }
    assert_eq!(b.rx_roc(111), Some(1));
    assert_eq!(b.rx_roc(222), Some(0));
    assert_eq!(b.rx_roc(333), None);
    assert_eq!(b.stream_counts(), (0, 2));
    // The same sequence number on another SSRC is not a replay.
    let video3 = protect_rtp(&mut a, &rtp(0, 222, 40)).unwrap();
    unprotect_rtp(&mut b, &video3).unwrap();
}

#[test]
fn malformed_input_gets_precise_errors() {
    let (mut a, mut b) = pair(Profile::Aes128CmHmacSha1_80);
    assert_eq!(unprotect_rtp(&mut b, &[0x80; 5]), Err(SrtpError::TooShort));
    assert_eq!(
        unprotect_rtcp(&mut b, &[0x80; 10]),
        Err(SrtpError::TooShort)
    );
    let mut v1 = rtp(1, 1, 40);
    v1[0] = 0x40;
    assert_eq!(protect_rtp(&mut a, &v1), Err(SrtpError::BadVersion));
    let protected = protect_rtp(&mut a, &rtp(1, 1, 40)).unwrap();
    let mut bad = protected.clone();
    bad[0] = 0x00;
    assert_eq!(unprotect_rtp(&mut b, &bad), Err(SrtpError::BadVersion));
    // Extension header claiming more words than the packet holds.
    let mut ext = rtp(2, 1, 8);
    ext[0] |= 0x10;
    ext.splice(12..12, [0xbe, 0xde, 0x00, 0x40]);
    assert_eq!(protect_rtp(&mut a, &ext), Err(SrtpError::TooShort));
    // No room for the trailer.
    let mut tight = rtp(3, 1, 40);
    let len = tight.len();
    assert_eq!(
        a.protect_rtp(&mut tight, len),
        Err(SrtpError::BufferTooSmall)
    );
    assert_eq!(
        a.protect_rtp(&mut tight, len + 1),
        Err(SrtpError::BufferTooSmall)
    );
    let c = b.counters();
    assert_eq!((c.too_short, c.bad_version), (2, 1));
    let c = a.counters();
    assert_eq!((c.too_short, c.bad_version, c.buffer_too_small), (1, 1, 2));
}

#[test]
fn stream_cap_bounds_state_per_context() {
    let (mut a, mut b) = pair(Profile::AeadAes256Gcm);
    b.set_max_streams(2);
    for ssrc in 1..=3u32 {
        let p = protect_rtp(&mut a, &rtp(1, ssrc, 16)).unwrap();
        let r = unprotect_rtp(&mut b, &p);
        assert_eq!(r.is_ok(), ssrc <= 2, "ssrc {ssrc}");
    }
    assert_eq!(b.counters().too_many_streams, 1);
}

#[test]
fn key_and_profile_errors() {
    assert_eq!(
        Profile::from_openssl_name("SRTP_NULL"),
        Err(SrtpError::UnknownProfile)
    );
    for profile in Profile::ALL {
        assert_eq!(
            Profile::from_openssl_name(profile.openssl_name()),
            Ok(profile)
        );
        let (k, s) = keys(profile, 3);
        assert!(SrtpContext::new(profile, &k[1..], &s, &k, &s).is_err());
        assert!(SrtpContext::new(profile, &k, &s, &k, &s[1..]).is_err());
    }
}
