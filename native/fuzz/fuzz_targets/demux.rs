//! The media plane's receive path for datagrams on the shared port: RFC 7983 first-byte
//! classification, the RTP/RTCP split (RFC 5761), SRTP/SRTCP unprotect with the peer's key, the
//! room's router, and protection of what the router sends, as the plane's worker does it.
//!
//! Each item of the input (see `mediasrv_fuzz::items`) is one datagram preceded by one byte whose
//! low bit says which peer sent it (publisher or subscriber); 20 ms pass between datagrams and
//! the router's timers run after each. Whatever the router writes must be well formed, addressed to
//! a peer of the room, and protectable. STUN is judged as the plane judges it from unknown sources.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mediasrv_core::output::Output;
use mediasrv_core::router::RouterConfig;
use mediasrv_core::srtp::{Profile, SRTP_MAX_TRAILER_LEN};
use mediasrv_core::stun::parse_binding_request;
use mediasrv_fuzz::room::{self, PUBLISHER, SUBSCRIBER};
use mediasrv_fuzz::{assert_rtcp, assert_rtp, items, seed_context, STUN_PASSWORD};
use mediasrv_plane::demux::{classify, is_rtcp, DatagramKind};

const STUN_UFRAG: &[u8] = b"abcd";

fuzz_target!(|data: &[u8]| {
    let cfg = RouterConfig {
        sender_reports: true,
        // A small ring: building three 1024-slot caches per input was most of the time, and a
        // small one has its wrap-around reached by short inputs.
        nack_cache_packets: 32,
        ..RouterConfig::default()
    };
    let mut router = room::router(cfg);
    let profile = Profile::Aes128CmHmacSha1_80;
    let mut peers = [seed_context(profile, false), seed_context(profile, false)];
    let (mut out, mut out_rtcp) = (Output::new(), Output::new());
    let mut now_ms = 1_000_000u64;
    for item in items(data) {
        let Some((&src, datagram)) = item.split_first() else {
            continue;
        };
        now_ms += 20;
        let peer = (src & 1) as usize;
        let transport = [PUBLISHER, SUBSCRIBER][peer];
        let kind = classify(datagram);
        let first = datagram.first().copied();
        match kind {
            DatagramKind::Stun => assert!(matches!(first, Some(0..=3))),
            DatagramKind::Dtls => assert!(matches!(first, Some(20..=63))),
            DatagramKind::Media => assert!(matches!(first, Some(128..=191))),
            DatagramKind::Other => assert!(!matches!(first, Some(0..=3 | 20..=63 | 128..=191))),
        }
        out.clear();
        out_rtcp.clear();
        if kind == DatagramKind::Stun {
            // As the plane judges STUN from a source it does not know: a Binding request naming
            // a session's ufrag, with that session's password (the seeds carry such requests).
            if let Ok(req) = parse_binding_request(datagram) {
                if req.local_ufrag == STUN_UFRAG {
                    let _ = req.integrity_holds(datagram, STUN_PASSWORD);
                }
            }
        }
        if kind == DatagramKind::Media {
            let mut packet = datagram.to_vec();
            let srtp = &mut peers[peer];
            if is_rtcp(&packet) {
                if let Ok(n) = srtp.unprotect_rtcp(&mut packet) {
                    router.handle_rtcp(transport, &packet[..n], now_ms, &mut out, &mut out_rtcp);
                }
            } else if let Ok(n) = srtp.unprotect_rtp(&mut packet) {
                router.route_rtp(transport, &packet[..n], now_ms, &mut out);
            }
        }
        router.poll(now_ms, &mut out_rtcp);
        for (dest, bytes) in out.iter() {
            // Media only ever goes to the subscriber; retransmissions too.
            assert_eq!(dest, SUBSCRIBER);
            let v = assert_rtp(bytes);
            assert!(room::SUB_SSRCS.contains(&v.ssrc), "unknown SSRC {}", v.ssrc);
            protect(&mut peers[1], bytes, false);
        }
        for (dest, bytes) in out_rtcp.iter() {
            assert!(dest == PUBLISHER || dest == SUBSCRIBER);
            assert_rtcp(bytes);
            protect(&mut peers[(dest == SUBSCRIBER) as usize], bytes, true);
        }
        let _ = router.take_events();
    }
});

fn protect(ctx: &mut mediasrv_core::srtp::SrtpContext, bytes: &[u8], rtcp: bool) {
    let mut slot = bytes.to_vec();
    slot.resize(bytes.len() + SRTP_MAX_TRAILER_LEN, 0);
    let res = if rtcp {
        ctx.protect_rtcp(&mut slot, bytes.len())
    } else {
        ctx.protect_rtp(&mut slot, bytes.len())
    };
    res.expect("what the router writes can be protected");
}
