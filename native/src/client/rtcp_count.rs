//! Counting the RTCP a server sends to a client: feedback (NACK, PLI, FIR, REMB) and reports.
//! A minimal walk over the compound packet; malformed input ends the walk, never panics.

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
    let mut pos = 0;
    while pos + 4 <= buf.len() {
        let b0 = buf[pos];
        if b0 >> 6 != 2 {
            return;
        }
        let fmt = b0 & 0x1f;
        let pt = buf[pos + 1];
        let len = (usize::from(u16::from_be_bytes([buf[pos + 2], buf[pos + 3]])) + 1) * 4;
        if pos + len > buf.len() {
            return;
        }
        let media_ssrc = buf
            .get(pos + 8..pos + 12)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        match (pt, fmt) {
            (200, _) => t.sender_reports += 1,
            (201, _) => t.receiver_reports += 1,
            (205, 1) => t.nacks += 1,
            (206, 1) => {
                t.plis += 1;
                keyframe_for.extend(media_ssrc);
            }
            (206, 4) => {
                t.firs += 1;
                // FCI: SSRC of the media sender, then seq nr
                if let Some(b) = buf.get(pos + 12..pos + 16) {
                    keyframe_for.push(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                }
            }
            (206, 15) => t.rembs += 1,
            _ => {}
        }
        pos += len;
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
        let mut t = RtcpTally::default();
        let mut kf = Vec::new();
        tally(&buf, &mut t, &mut kf);
        assert_eq!((t.receiver_reports, t.plis, t.nacks), (1, 1, 1));
        assert_eq!(kf, vec![9]);
    }
}
