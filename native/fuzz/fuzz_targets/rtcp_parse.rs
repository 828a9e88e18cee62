//! Compound RTCP parsing: never panics, `validate_compound` agrees with the iterator, every item
//! iterator stays inside the packet, and reports, NACKs, PLIs and FIRs survive a round trip
//! through the builders the router uses.
#![no_main]
use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use mediasrv_core::rtcp::{self, parse_compound, validate_compound, RtcpPacket};

fn only(buf: &[u8]) -> RtcpPacket<'_> {
    let mut it = parse_compound(buf);
    let p = it
        .next()
        .expect("one packet")
        .expect("builder output parses");
    assert!(it.next().is_none());
    p
}

fuzz_target!(|data: &[u8]| {
    let mut n_ok = 0;
    let mut failed = false;
    for item in parse_compound(data) {
        let p = match item {
            Ok(p) => p,
            Err(_) => {
                failed = true;
                continue;
            }
        };
        assert!(!failed, "nothing is yielded after an error");
        n_ok += 1;
        let mut b = Vec::new();
        match p {
            RtcpPacket::SenderReport {
                ssrc,
                ntp,
                rtp_timestamp,
                packet_count,
                octet_count,
                reports,
            } => {
                let blocks: Vec<_> = reports.iter().collect();
                assert_eq!(blocks.len(), reports.len());
                rtcp::write_sr(
                    &mut b,
                    ssrc,
                    ntp,
                    rtp_timestamp,
                    packet_count,
                    octet_count,
                    &blocks,
                );
                match only(&b) {
                    RtcpPacket::SenderReport {
                        ssrc: s2,
                        ntp: n2,
                        rtp_timestamp: t2,
                        reports: r2,
                        ..
                    } => {
                        assert_eq!((s2, n2, t2), (ssrc, ntp, rtp_timestamp));
                        assert_eq!(r2.iter().collect::<Vec<_>>(), blocks);
                    }
                    other => panic!("SR came back as {other:?}"),
                }
            }
            RtcpPacket::ReceiverReport { ssrc, reports } => {
                let blocks: Vec<_> = reports.iter().collect();
                rtcp::write_rr(&mut b, ssrc, &blocks);
                match only(&b) {
                    RtcpPacket::ReceiverReport {
                        ssrc: s2,
                        reports: r2,
                    } => {
                        assert_eq!(s2, ssrc);
                        assert_eq!(r2.iter().collect::<Vec<_>>(), blocks);
                    }
                    other => panic!("RR came back as {other:?}"),
                }
            }
            RtcpPacket::Nack {
                sender_ssrc,
                media_ssrc,
                items,
            } => {
                // Round trips of NACKs of hundreds of losses cost more than they find (sorting
                // thousands of numbers per input under comparison tracing): the builder is checked
                // on lists a router would send.
                let seqs: Vec<u16> = items.seqs().take(65).collect();
                if seqs.len() > 64 {
                    continue;
                }
                rtcp::write_nack(&mut b, sender_ssrc, media_ssrc, &seqs);
                match only(&b) {
                    RtcpPacket::Nack {
                        media_ssrc: m2,
                        items: i2,
                        ..
                    } => {
                        assert_eq!(m2, media_ssrc);
                        let want: BTreeSet<u16> = seqs.iter().copied().collect();
                        assert_eq!(i2.seqs().collect::<BTreeSet<u16>>(), want);
                    }
                    other => panic!("NACK came back as {other:?}"),
                }
            }
            RtcpPacket::Pli {
                sender_ssrc,
                media_ssrc,
            } => {
                rtcp::write_pli(&mut b, sender_ssrc, media_ssrc);
                assert!(
                    matches!(only(&b), RtcpPacket::Pli { media_ssrc: m, .. } if m == media_ssrc)
                );
            }
            RtcpPacket::Fir { sender_ssrc, items } => {
                for (ssrc, seq_nr) in items.iter() {
                    b.clear();
                    rtcp::write_fir(&mut b, sender_ssrc, ssrc, seq_nr);
                    match only(&b) {
                        RtcpPacket::Fir { items: i2, .. } => {
                            assert_eq!(i2.iter().collect::<Vec<_>>(), vec![(ssrc, seq_nr)])
                        }
                        other => panic!("FIR came back as {other:?}"),
                    }
                }
            }
            RtcpPacket::Remb {
                sender_ssrc,
                bitrate_bps,
                ssrcs,
            } => {
                let list: Vec<u32> = ssrcs.iter().collect();
                rtcp::write_remb(&mut b, sender_ssrc, bitrate_bps, &list);
                match only(&b) {
                    RtcpPacket::Remb {
                        bitrate_bps: b2,
                        ssrcs: s2,
                        ..
                    } => {
                        // The mantissa keeps 18 bits: at most a rounding down.
                        assert!(b2 <= bitrate_bps);
                        assert_eq!(s2.iter().collect::<Vec<_>>(), list);
                    }
                    other => panic!("REMB came back as {other:?}"),
                }
            }
            RtcpPacket::ExtendedReport { blocks, .. } => {
                for (_, body) in blocks.iter() {
                    assert!(body.len() <= data.len());
                }
                let _ = blocks.dlrr().count();
                let _ = blocks.rrtr();
            }
            RtcpPacket::Bye { ssrcs } => {
                let _ = ssrcs.iter().count();
            }
            RtcpPacket::SourceDescription
            | RtcpPacket::TransportCc { .. }
            | RtcpPacket::Other { .. } => {}
        }
        if !b.is_empty() {
            mediasrv_fuzz::assert_rtcp(&b);
        }
    }
    match validate_compound(data) {
        Ok(n) => {
            assert!(!failed);
            assert_eq!(n, n_ok);
        }
        Err(_) => assert!(failed || data.is_empty()),
    }
});
