//! Counting the RTCP a server sends to a client: feedback (NACK, PLI, FIR, REMB) and reports.
//! The walk is the core's compound-packet parser; malformed input ends it, never panics.

use mediasrv_core::rtcp::{parse_compound, RtcpPacket};

#[derive(Debug, Clone, Copy, Default)]
pub struct RtcpTally {
    pub nacks: u64,
    pub plis: u64,
    pub firs: u64,
    pub rembs: u64,
    pub sender_reports: u64,
    pub receiver_reports: u64,
}

/// Count the packets of one compound RTCP datagram; returns the media SSRCs asked for a keyframe.
pub fn tally(buf: &[u8], t: &mut RtcpTally, keyframe_for: &mut Vec<u32>) {
    for packet in parse_compound(buf) {
        let Ok(packet) = packet else {
            return;
        };
        match packet {
            RtcpPacket::SenderReport { .. } => t.sender_reports += 1,
            RtcpPacket::ReceiverReport { .. } => t.receiver_reports += 1,
            RtcpPacket::Nack { .. } => t.nacks += 1,
            RtcpPacket::Pli { media_ssrc, .. } => {
                t.plis += 1;
                keyframe_for.push(media_ssrc);
            }
            RtcpPacket::Fir { items, .. } => {
                t.firs += 1;
                // the first FCI entry names the media sender asked for a keyframe
                keyframe_for.extend(items.iter().next().map(|(ssrc, _)| ssrc));
            }
            RtcpPacket::Remb { .. } => t.rembs += 1,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_compound_feedback_and_stops_on_garbage() {
        let mut buf = vec![0x80, 201, 0, 1, 0, 0, 0, 1]; // RR, no blocks
        buf.extend([0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 9]); // PLI for ssrc 9
        buf.extend([0x81, 205, 0, 3, 0, 0, 0, 1, 0, 0, 0, 9, 0, 5, 0, 0]); // NACK
        buf.extend([0x81, 206, 0, 50]); // truncated
        buf.extend([0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 7]); // never reached
        let mut t = RtcpTally::default();
        let mut kf = Vec::new();
        tally(&buf, &mut t, &mut kf);
        assert_eq!((t.receiver_reports, t.plis, t.nacks), (1, 1, 1));
        assert_eq!(kf, vec![9]);
    }

    #[test]
    fn fir_and_remb() {
        // FIR asking ssrc 5 for a keyframe
        let mut buf = vec![
            0x84, 206, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 3, 0, 0, 0,
        ];
        buf.extend([0x8f, 206, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0]); // REMB, one SSRC
        buf.extend(b"REMB");
        buf.extend([1, 0x08, 0, 0, 0, 0, 0, 5]);
        let mut t = RtcpTally::default();
        let mut kf = Vec::new();
        tally(&buf, &mut t, &mut kf);
        assert_eq!((t.firs, t.rembs), (1, 1));
        assert_eq!(kf, vec![5]);
    }
}
