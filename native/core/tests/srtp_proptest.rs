//! Property tests: arbitrary, truncated and tampered packets never panic and are refused;
//! valid packets of any shape round-trip; a second delivery is always a replay.

use mediasrv_core::srtp::{Profile, SrtpContext, SrtpError, SRTP_MAX_TRAILER_LEN};
use proptest::prelude::*;

fn profile_strategy() -> impl Strategy<Value = Profile> {
    prop::sample::select(Profile::ALL.to_vec())
}

fn pair(profile: Profile) -> (SrtpContext, SrtpContext) {
    let ka: Vec<u8> = (0..profile.key_len() as u8).collect();
    let sa: Vec<u8> = (0..profile.salt_len() as u8).map(|i| i ^ 0x5a).collect();
    let kb: Vec<u8> = ka.iter().map(|b| b ^ 0xff).collect();
    let sb: Vec<u8> = sa.iter().map(|b| b ^ 0xff).collect();
    (
        SrtpContext::new(profile, &ka, &sa, &kb, &sb).unwrap(),
        SrtpContext::new(profile, &kb, &sb, &ka, &sa).unwrap(),
    )
}

/// A well-formed RTP packet with random CSRCs, optional extension and payload.
fn rtp_strategy() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..=15,
        any::<bool>(),
        0usize..4,
        any::<[u8; 11]>(),
        prop::collection::vec(any::<u8>(), 0..1300),
    )
        .prop_map(|(cc, has_ext, ext_words, fixed, payload)| {
            let mut p = vec![0x80 | cc | if has_ext { 0x10 } else { 0 }];
            p.extend_from_slice(&fixed);
            p.extend((0..usize::from(cc) * 4).map(|i| i as u8));
            if has_ext {
                p.extend_from_slice(&[0xbe, 0xde, 0, ext_words as u8]);
                p.extend((0..ext_words * 4).map(|i| i as u8));
            }
            p.extend_from_slice(&payload);
            p
        })
}

fn rtcp_strategy() -> impl Strategy<Value = Vec<u8>> {
    (any::<[u8; 8]>(), prop::collection::vec(any::<u8>(), 0..600)).prop_map(|(head, body)| {
        let mut p = vec![0x80 | (head[0] & 0x3f)];
        p.extend_from_slice(&head[1..]);
        p.extend_from_slice(&body);
        p
    })
}

fn protect(ctx: &mut SrtpContext, rtcp: bool, packet: &[u8]) -> Vec<u8> {
    let mut buf = packet.to_vec();
    buf.resize(packet.len() + SRTP_MAX_TRAILER_LEN, 0);
    let n = if rtcp {
        ctx.protect_rtcp(&mut buf, packet.len())
    } else {
        ctx.protect_rtp(&mut buf, packet.len())
    }
    .unwrap();
    buf.truncate(n);
    buf
}

fn unprotect(ctx: &mut SrtpContext, rtcp: bool, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = packet.to_vec();
    let n = if rtcp {
        ctx.unprotect_rtcp(&mut buf)
    } else {
        ctx.unprotect_rtp(&mut buf)
    }?;
    buf.truncate(n);
    Ok(buf)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_are_refused_without_panic(
        profile in profile_strategy(),
        rtcp in any::<bool>(),
        bytes in prop::collection::vec(any::<u8>(), 0..1500),
    ) {
        let (_, mut b) = pair(profile);
        prop_assert!(unprotect(&mut b, rtcp, &bytes).is_err());
        prop_assert_eq!(b.counters().dropped(), 1);
    }

    #[test]
    fn arbitrary_bytes_can_be_offered_for_protection(
        profile in profile_strategy(),
        rtcp in any::<bool>(),
        bytes in prop::collection::vec(any::<u8>(), 0..1500),
        room in 0usize..40,
    ) {
        let (mut a, _) = pair(profile);
        let mut buf = bytes.clone();
        buf.resize(bytes.len() + room, 0);
        let len = bytes.len();
        let result = if rtcp { a.protect_rtcp(&mut buf, len) } else { a.protect_rtp(&mut buf, len) };
        if let Ok(n) = result {
            prop_assert!(n <= buf.len());
        }
        // A length beyond the buffer is an error, not a panic.
        let over = buf.len() + 1;
        prop_assert!(a.protect_rtp(&mut buf, over).is_err());
    }

    #[test]
    fn valid_packets_round_trip_then_replay_is_refused(
        profile in profile_strategy(),
        rtp in rtp_strategy(),
        rtcp in rtcp_strategy(),
    ) {
        let (mut a, mut b) = pair(profile);
        let srtp = protect(&mut a, false, &rtp);
        prop_assert_eq!(unprotect(&mut b, false, &srtp)?, rtp);
        prop_assert_eq!(unprotect(&mut b, false, &srtp), Err(SrtpError::Replayed));
        let srtcp = protect(&mut a, true, &rtcp);
        prop_assert_eq!(unprotect(&mut b, true, &srtcp)?, rtcp);
        prop_assert_eq!(unprotect(&mut b, true, &srtcp), Err(SrtpError::Replayed));
    }

    #[test]
    fn tampering_with_any_byte_is_detected(
        profile in profile_strategy(),
        rtcp_packet in any::<bool>(),
        rtp in rtp_strategy(),
        rtcp in rtcp_strategy(),
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let (mut a, mut b) = pair(profile);
        let plain = if rtcp_packet { rtcp } else { rtp };
        let mut packet = protect(&mut a, rtcp_packet, &plain);
        let i = position.index(packet.len());
        packet[i] ^= flip;
        prop_assert!(unprotect(&mut b, rtcp_packet, &packet).is_err(), "byte {} of {}", i, packet.len());
        prop_assert_eq!(b.counters().dropped(), 1);
    }

    #[test]
    fn truncation_is_detected(
        profile in profile_strategy(),
        rtcp_packet in any::<bool>(),
        rtp in rtp_strategy(),
        rtcp in rtcp_strategy(),
        cut in any::<prop::sample::Index>(),
    ) {
        let (mut a, mut b) = pair(profile);
        let plain = if rtcp_packet { rtcp } else { rtp };
        let packet = protect(&mut a, rtcp_packet, &plain);
        let len = cut.index(packet.len());
        prop_assert!(unprotect(&mut b, rtcp_packet, &packet[..len]).is_err());
    }

    #[test]
    fn any_delivery_order_accepts_each_packet_once(
        profile in profile_strategy(),
        start in any::<u16>(),
        order in Just((1usize..64).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        let (mut a, mut b) = pair(profile);
        let packets: Vec<_> = (0..64u16).map(|i| {
            let seq = start.wrapping_add(i);
            let mut p = vec![0x80, 96];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 42]);
            p.extend_from_slice(&[i as u8; 20]);
            (p.clone(), protect(&mut a, false, &p))
        }).collect();
        // The stream's first packet arrives first (the receiver starts at ROC 0, as the
        // sender did); the rest arrive in any order, possibly across the sequence wrap.
        for k in std::iter::once(0).chain(order) {
            let (plain, srtp) = &packets[k];
            prop_assert_eq!(&unprotect(&mut b, false, srtp)?, plain, "packet {}", k);
            prop_assert!(unprotect(&mut b, false, srtp).is_err(), "second delivery of {}", k);
        }
    }
}
