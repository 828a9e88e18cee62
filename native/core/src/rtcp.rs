//! Compound RTCP parsing (RFC 3550, RFC 4585, RFC 5104, draft-alvestrand-rmcat-remb) and builders for
//! the feedback the router sends.

use std::fmt;

pub const PT_SR: u8 = 200;
pub const PT_RR: u8 = 201;
pub const PT_SDES: u8 = 202;
pub const PT_BYE: u8 = 203;
pub const PT_RTPFB: u8 = 205;
pub const PT_PSFB: u8 = 206;
pub const PT_XR: u8 = 207;
/// XR block types (RFC 3611 4.4, 4.5).
const XR_RRTR: u8 = 4;
const XR_DLRR: u8 = 5;

const REPORT_BLOCK_LEN: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpError {
    TooShort,
    BadVersion,
    /// Declared length runs past the datagram.
    Truncated,
    /// A packet type's fixed part or item count does not fit its declared length.
    BadLayout,
}

impl fmt::Display for RtcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            RtcpError::TooShort => "shorter than an RTCP header",
            RtcpError::BadVersion => "RTCP version is not 2",
            RtcpError::Truncated => "RTCP length runs past the end of the datagram",
            RtcpError::BadLayout => "RTCP packet body does not match its type",
        };
        f.write_str(s)
    }
}

impl std::error::Error for RtcpError {}

/// One reception report block (RFC 3550 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// 24-bit signed cumulative loss, sign-extended.
    pub cumulative_lost: i32,
    pub extended_highest_seq: u32,
    pub jitter: u32,
    pub last_sr: u32,
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    fn parse(b: &[u8]) -> Self {
        let lost = ((b[5] as i32) << 16 | (b[6] as i32) << 8 | b[7] as i32) << 8 >> 8;
        Self {
            ssrc: be32(&b[0..]),
            fraction_lost: b[4],
            cumulative_lost: lost,
            extended_highest_seq: be32(&b[8..]),
            jitter: be32(&b[12..]),
            last_sr: be32(&b[16..]),
            delay_since_last_sr: be32(&b[20..]),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.push(self.fraction_lost);
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32 & 0xff_ffff;
        out.extend_from_slice(&lost.to_be_bytes()[1..]);
        out.extend_from_slice(&self.extended_highest_seq.to_be_bytes());
        out.extend_from_slice(&self.jitter.to_be_bytes());
        out.extend_from_slice(&self.last_sr.to_be_bytes());
        out.extend_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

/// Report blocks stored as raw bytes; iterate to decode.
#[derive(Debug, Clone, Copy)]
pub struct ReportBlocks<'a>(&'a [u8]);

impl<'a> ReportBlocks<'a> {
    pub fn iter(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        self.0
            .chunks_exact(REPORT_BLOCK_LEN)
            .map(ReportBlock::parse)
    }
    pub fn len(&self) -> usize {
        self.0.len() / REPORT_BLOCK_LEN
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Generic NACK FCI entries (PID, BLP) as raw bytes; `seqs()` expands them.
#[derive(Debug, Clone, Copy)]
pub struct NackItems<'a>(&'a [u8]);

impl<'a> NackItems<'a> {
    /// Every lost sequence number the NACK names, in FCI order.
    pub fn seqs(&self) -> impl Iterator<Item = u16> + 'a {
        self.0.chunks_exact(4).flat_map(|c| {
            let pid = u16::from_be_bytes([c[0], c[1]]);
            let blp = u16::from_be_bytes([c[2], c[3]]);
            std::iter::once(pid).chain(
                (0..16u16)
                    .filter(move |i| blp & (1 << i) != 0)
                    .map(move |i| pid.wrapping_add(i + 1)),
            )
        })
    }
}

/// FIR FCI entries (SSRC, command sequence number).
#[derive(Debug, Clone, Copy)]
pub struct FirItems<'a>(&'a [u8]);

impl<'a> FirItems<'a> {
    pub fn iter(&self) -> impl Iterator<Item = (u32, u8)> + 'a {
        self.0.chunks_exact(8).map(|c| (be32(c), c[4]))
    }
}

/// SSRC list of a REMB or BYE packet.
#[derive(Debug, Clone, Copy)]
pub struct SsrcList<'a>(&'a [u8]);

impl<'a> SsrcList<'a> {
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        self.0.chunks_exact(4).map(be32)
    }
}

/// One packet of a compound RTCP datagram.
#[derive(Debug, Clone, Copy)]
pub enum RtcpPacket<'a> {
    SenderReport {
        ssrc: u32,
        ntp: u64,
        rtp_timestamp: u32,
        packet_count: u32,
        octet_count: u32,
        reports: ReportBlocks<'a>,
    },
    ReceiverReport {
        ssrc: u32,
        reports: ReportBlocks<'a>,
    },
    SourceDescription,
    Bye {
        ssrcs: SsrcList<'a>,
    },
    Nack {
        sender_ssrc: u32,
        media_ssrc: u32,
        items: NackItems<'a>,
    },
    TransportCc {
        sender_ssrc: u32,
        media_ssrc: u32,
    },
    Pli {
        sender_ssrc: u32,
        media_ssrc: u32,
    },
    Fir {
        sender_ssrc: u32,
        items: FirItems<'a>,
    },
    Remb {
        sender_ssrc: u32,
        bitrate_bps: u64,
        ssrcs: SsrcList<'a>,
    },
    /// Extended report (RFC 3611); its blocks are checked to fit when parsed.
    ExtendedReport {
        ssrc: u32,
        blocks: XrBlocks<'a>,
    },
    /// A well-formed packet of a type the router does not act on.
    Other {
        packet_type: u8,
        fmt: u8,
    },
}

/// The report blocks of an XR packet (already checked to tile the packet exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XrBlocks<'a>(&'a [u8]);

/// One sub-block of a DLRR report: the receiver `ssrc` echoes `last_rr` (middle 32 bits of the NTP
/// time in our RRTR) after `delay` (1/65536 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DlrrItem {
    pub ssrc: u32,
    pub last_rr: u32,
    pub delay: u32,
}

impl<'a> XrBlocks<'a> {
    fn check(b: &[u8]) -> Result<(), RtcpError> {
        let mut rest = b;
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(RtcpError::BadLayout);
            }
            let len = (u16::from_be_bytes([rest[2], rest[3]]) as usize + 1) * 4;
            if len > rest.len() {
                return Err(RtcpError::BadLayout);
            }
            rest = &rest[len..];
        }
        Ok(())
    }

    /// (block type, block body) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &'a [u8])> + 'a {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            if rest.len() < 4 {
                return None;
            }
            let len = (u16::from_be_bytes([rest[2], rest[3]]) as usize + 1) * 4;
            let (block, tail) = rest.split_at(len.min(rest.len()));
            rest = tail;
            Some((block[0], &block[4..]))
        })
    }

    /// Sub-blocks of the DLRR blocks.
    pub fn dlrr(&self) -> impl Iterator<Item = DlrrItem> + 'a {
        self.iter()
            .filter(|(bt, _)| *bt == XR_DLRR)
            .flat_map(|(_, body)| body.chunks_exact(12))
            .map(|c| DlrrItem {
                ssrc: be32(c),
                last_rr: be32(&c[4..]),
                delay: be32(&c[8..]),
            })
    }

    /// The NTP timestamp of a receiver reference time block, if there is one.
    pub fn rrtr(&self) -> Option<u64> {
        self.iter()
            .find(|(bt, body)| *bt == XR_RRTR && body.len() >= 8)
            .map(|(_, b)| (be32(b) as u64) << 32 | be32(&b[4..]) as u64)
    }
}

/// Iterates the packets of a compound RTCP datagram; after the first error it yields nothing more.
pub struct RtcpIter<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

pub fn parse_compound(buf: &[u8]) -> RtcpIter<'_> {
    RtcpIter {
        buf,
        pos: 0,
        failed: false,
    }
}

impl<'a> Iterator for RtcpIter<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let r = parse_one(rest);
        match r {
            Ok((pkt, len)) => {
                self.pos += len;
                Some(Ok(pkt))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Checks a whole compound datagram (every packet well formed) without acting on it.
pub fn validate_compound(buf: &[u8]) -> Result<usize, RtcpError> {
    if buf.is_empty() {
        return Err(RtcpError::TooShort);
    }
    let mut n = 0;
    for p in parse_compound(buf) {
        p?;
        n += 1;
    }
    Ok(n)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn parse_one(buf: &[u8]) -> Result<(RtcpPacket<'_>, usize), RtcpError> {
    if buf.len() < 4 {
        return Err(RtcpError::TooShort);
    }
    if buf[0] >> 6 != 2 {
        return Err(RtcpError::BadVersion);
    }
    let has_padding = buf[0] & 0x20 != 0;
    let count = buf[0] & 0x1f;
    let pt = buf[1];
    let total = (u16::from_be_bytes([buf[2], buf[3]]) as usize + 1) * 4;
    if total > buf.len() {
        return Err(RtcpError::Truncated);
    }
    let mut body_end = total;
    if has_padding {
        let pad = buf[total - 1] as usize;
        if pad == 0 || pad > total - 4 {
            return Err(RtcpError::BadLayout);
        }
        body_end -= pad;
    }
    let body = &buf[4..body_end];
    let need = |n: usize| {
        if body.len() < n {
            Err(RtcpError::BadLayout)
        } else {
            Ok(())
        }
    };
    let pkt = match pt {
        PT_SR => {
            need(24 + count as usize * REPORT_BLOCK_LEN)?;
            RtcpPacket::SenderReport {
                ssrc: be32(body),
                ntp: (be32(&body[4..]) as u64) << 32 | be32(&body[8..]) as u64,
                rtp_timestamp: be32(&body[12..]),
                packet_count: be32(&body[16..]),
                octet_count: be32(&body[20..]),
                reports: ReportBlocks(&body[24..24 + count as usize * REPORT_BLOCK_LEN]),
            }
        }
        PT_RR => {
            need(4 + count as usize * REPORT_BLOCK_LEN)?;
            RtcpPacket::ReceiverReport {
                ssrc: be32(body),
                reports: ReportBlocks(&body[4..4 + count as usize * REPORT_BLOCK_LEN]),
            }
        }
        PT_SDES => RtcpPacket::SourceDescription,
        PT_XR => {
            need(4)?;
            XrBlocks::check(&body[4..])?;
            RtcpPacket::ExtendedReport {
                ssrc: be32(body),
                blocks: XrBlocks(&body[4..]),
            }
        }
        PT_BYE => {
            need(4 * count as usize)?;
            RtcpPacket::Bye {
                ssrcs: SsrcList(&body[..4 * count as usize]),
            }
        }
        PT_RTPFB => {
            need(8)?;
            let (sender_ssrc, media_ssrc) = (be32(body), be32(&body[4..]));
            match count {
                1 => {
                    let fci = &body[8..];
                    if fci.is_empty() || !fci.len().is_multiple_of(4) {
                        return Err(RtcpError::BadLayout);
                    }
                    RtcpPacket::Nack {
                        sender_ssrc,
                        media_ssrc,
                        items: NackItems(fci),
                    }
                }
                15 => RtcpPacket::TransportCc {
                    sender_ssrc,
                    media_ssrc,
                },
                f => RtcpPacket::Other {
                    packet_type: pt,
                    fmt: f,
                },
            }
        }
        PT_PSFB => {
            need(8)?;
            let (sender_ssrc, media_ssrc) = (be32(body), be32(&body[4..]));
            let fci = &body[8..];
            match count {
                1 => RtcpPacket::Pli {
                    sender_ssrc,
                    media_ssrc,
                },
                4 => {
                    if fci.is_empty() || !fci.len().is_multiple_of(8) {
                        return Err(RtcpError::BadLayout);
                    }
                    RtcpPacket::Fir {
                        sender_ssrc,
                        items: FirItems(fci),
                    }
                }
                15 if fci.len() >= 4 && &fci[..4] == b"REMB" => {
                    need(16)?;
                    let n = fci[4] as usize;
                    let exp = fci[5] >> 2;
                    let mantissa =
                        ((fci[5] & 3) as u64) << 16 | (fci[6] as u64) << 8 | fci[7] as u64;
                    if fci.len() < 8 + 4 * n {
                        return Err(RtcpError::BadLayout);
                    }
                    RtcpPacket::Remb {
                        sender_ssrc,
                        bitrate_bps: mantissa.checked_shl(exp as u32).unwrap_or(u64::MAX),
                        ssrcs: SsrcList(&fci[8..8 + 4 * n]),
                    }
                }
                f => RtcpPacket::Other {
                    packet_type: pt,
                    fmt: f,
                },
            }
        }
        other => RtcpPacket::Other {
            packet_type: other,
            fmt: count,
        },
    };
    Ok((pkt, total))
}

// ---------------------------------------------------------------------------------------------
// Builders. Each appends one RTCP packet to `out`; concatenating several makes a compound packet.

fn header(out: &mut Vec<u8>, count: u8, pt: u8, words_after_header: usize) {
    out.push(0x80 | (count & 0x1f));
    out.push(pt);
    out.extend_from_slice(&(words_after_header as u16).to_be_bytes());
}

/// Extended report with one receiver reference time block (RFC 3611 4.4): asks the media sender
/// to echo `ntp` in a DLRR block, which gives us the round-trip time toward it.
pub fn write_xr_rrtr(out: &mut Vec<u8>, ssrc: u32, ntp: u64) {
    header(out, 0, PT_XR, 4);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&[XR_RRTR, 0, 0, 2]);
    out.extend_from_slice(&ntp.to_be_bytes());
}

/// Extended report with one DLRR block (RFC 3611 4.5) of the given sub-blocks.
pub fn write_xr_dlrr(out: &mut Vec<u8>, ssrc: u32, items: &[DlrrItem]) {
    let items = &items[..items.len().min(64)];
    header(out, 0, PT_XR, 2 + 3 * items.len());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&[XR_DLRR, 0]);
    out.extend_from_slice(&((3 * items.len()) as u16).to_be_bytes());
    for i in items {
        out.extend_from_slice(&i.ssrc.to_be_bytes());
        out.extend_from_slice(&i.last_rr.to_be_bytes());
        out.extend_from_slice(&i.delay.to_be_bytes());
    }
}

/// Picture Loss Indication (RFC 4585 6.3.1).
pub fn write_pli(out: &mut Vec<u8>, sender_ssrc: u32, media_ssrc: u32) {
    header(out, 1, PT_PSFB, 2);
    out.extend_from_slice(&sender_ssrc.to_be_bytes());
    out.extend_from_slice(&media_ssrc.to_be_bytes());
}

/// Full Intra Request (RFC 5104 4.3.1) for one media SSRC.
pub fn write_fir(out: &mut Vec<u8>, sender_ssrc: u32, media_ssrc: u32, seq_nr: u8) {
    header(out, 4, PT_PSFB, 4);
    out.extend_from_slice(&sender_ssrc.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&media_ssrc.to_be_bytes());
    out.extend_from_slice(&[seq_nr, 0, 0, 0]);
}

/// Generic NACK (RFC 4585 6.2.1); `seqs` should be sorted in sequence order for compact packing.
pub fn write_nack(out: &mut Vec<u8>, sender_ssrc: u32, media_ssrc: u32, seqs: &[u16]) {
    let start = out.len();
    header(out, 1, PT_RTPFB, 0);
    out.extend_from_slice(&sender_ssrc.to_be_bytes());
    out.extend_from_slice(&media_ssrc.to_be_bytes());
    let mut i = 0;
    while i < seqs.len() {
        let pid = seqs[i];
        let mut blp: u16 = 0;
        i += 1;
        while i < seqs.len() {
            let d = seqs[i].wrapping_sub(pid);
            if d == 0 {
                i += 1;
                continue;
            }
            if !(1..=16).contains(&d) {
                break;
            }
            blp |= 1 << (d - 1);
            i += 1;
        }
        out.extend_from_slice(&pid.to_be_bytes());
        out.extend_from_slice(&blp.to_be_bytes());
    }
    let words = (out.len() - start) / 4 - 1;
    out[start + 2..start + 4].copy_from_slice(&(words as u16).to_be_bytes());
}

/// Receiver Estimated Maximum Bitrate (draft-alvestrand-rmcat-remb-03).
pub fn write_remb(out: &mut Vec<u8>, sender_ssrc: u32, bitrate_bps: u64, ssrcs: &[u32]) {
    let ssrcs = &ssrcs[..ssrcs.len().min(255)];
    let mut exp = 0u32;
    while (bitrate_bps >> exp) > 0x3_ffff {
        exp += 1;
    }
    let exp = exp.min(63);
    let mantissa = (bitrate_bps >> exp).min(0x3_ffff) as u32;
    header(out, 15, PT_PSFB, 4 + ssrcs.len());
    out.extend_from_slice(&sender_ssrc.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(b"REMB");
    out.push(ssrcs.len() as u8);
    out.push(((exp as u8) << 2) | (mantissa >> 16) as u8);
    out.extend_from_slice(&(mantissa as u16).to_be_bytes());
    for s in ssrcs {
        out.extend_from_slice(&s.to_be_bytes());
    }
}

/// Sender Report (RFC 3550 6.4.1) with up to 31 report blocks.
pub fn write_sr(
    out: &mut Vec<u8>,
    ssrc: u32,
    ntp: u64,
    rtp_timestamp: u32,
    packet_count: u32,
    octet_count: u32,
    reports: &[ReportBlock],
) {
    let reports = &reports[..reports.len().min(31)];
    header(out, reports.len() as u8, PT_SR, 6 + 6 * reports.len());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&ntp.to_be_bytes());
    out.extend_from_slice(&rtp_timestamp.to_be_bytes());
    out.extend_from_slice(&packet_count.to_be_bytes());
    out.extend_from_slice(&octet_count.to_be_bytes());
    for r in reports {
        r.write(out);
    }
}

/// Receiver Report (RFC 3550 6.4.2) with up to 31 report blocks.
pub fn write_rr(out: &mut Vec<u8>, ssrc: u32, reports: &[ReportBlock]) {
    let reports = &reports[..reports.len().min(31)];
    header(out, reports.len() as u8, PT_RR, 1 + 6 * reports.len());
    out.extend_from_slice(&ssrc.to_be_bytes());
    for r in reports {
        r.write(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xr_rrtr_and_dlrr_round_trip_and_bad_blocks_are_refused() {
        let mut b = Vec::new();
        write_xr_rrtr(&mut b, 7, 0x0102_0304_0506_0708);
        let item = DlrrItem {
            ssrc: 7,
            last_rr: 0x0304_0506,
            delay: 65536,
        };
        write_xr_dlrr(&mut b, 9, &[item, item]);
        let pkts: Vec<_> = parse_compound(&b).collect::<Result<_, _>>().unwrap();
        match pkts[0] {
            RtcpPacket::ExtendedReport { ssrc, blocks } => {
                assert_eq!(ssrc, 7);
                assert_eq!(blocks.rrtr(), Some(0x0102_0304_0506_0708));
                assert_eq!(blocks.dlrr().count(), 0);
            }
            ref p => panic!("{p:?}"),
        }
        match pkts[1] {
            RtcpPacket::ExtendedReport { ssrc, blocks } => {
                assert_eq!(ssrc, 9);
                assert_eq!(blocks.dlrr().collect::<Vec<_>>(), vec![item, item]);
                assert_eq!(blocks.rrtr(), None);
            }
            ref p => panic!("{p:?}"),
        }
        // a block claiming more words than the packet holds
        let mut bad = Vec::new();
        write_xr_rrtr(&mut bad, 7, 1);
        bad[11] = 3;
        assert!(matches!(
            parse_compound(&bad).next(),
            Some(Err(RtcpError::BadLayout))
        ));
    }

    fn only(buf: &[u8]) -> RtcpPacket<'_> {
        let v: Vec<_> = parse_compound(buf).collect();
        assert_eq!(v.len(), 1);
        v[0].unwrap()
    }

    #[test]
    fn pli_round_trip() {
        let mut b = Vec::new();
        write_pli(&mut b, 1, 2);
        assert_eq!(b.len(), 12);
        assert!(matches!(
            only(&b),
            RtcpPacket::Pli {
                sender_ssrc: 1,
                media_ssrc: 2
            }
        ));
    }

    #[test]
    fn fir_round_trip() {
        let mut b = Vec::new();
        write_fir(&mut b, 1, 77, 5);
        match only(&b) {
            RtcpPacket::Fir { sender_ssrc, items } => {
                assert_eq!(sender_ssrc, 1);
                assert_eq!(items.iter().collect::<Vec<_>>(), vec![(77, 5)]);
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn nack_packs_and_expands() {
        let seqs = [65534u16, 65535, 0, 5, 40];
        let mut b = Vec::new();
        write_nack(&mut b, 9, 10, &seqs);
        // 65534 with bits for 65535, 0 and 5 (d=7); 40 on its own
        assert_eq!(b.len(), 12 + 8);
        match only(&b) {
            RtcpPacket::Nack {
                sender_ssrc: 9,
                media_ssrc: 10,
                items,
            } => {
                assert_eq!(items.seqs().collect::<Vec<_>>(), seqs.to_vec());
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn remb_encodes_exponent_and_mantissa() {
        let mut b = Vec::new();
        write_remb(&mut b, 3, 2_500_000, &[0x1111, 0x2222]);
        match only(&b) {
            RtcpPacket::Remb {
                sender_ssrc: 3,
                bitrate_bps,
                ssrcs,
            } => {
                // 2.5 Mb/s needs exponent 4: mantissa 156250, exact
                assert_eq!(bitrate_bps, 2_500_000);
                assert_eq!(ssrcs.iter().collect::<Vec<_>>(), vec![0x1111, 0x2222]);
            }
            p => panic!("{p:?}"),
        }
        // lossy encodings round down, never up
        let mut b = Vec::new();
        write_remb(&mut b, 3, 1_000_001, &[1]);
        if let RtcpPacket::Remb { bitrate_bps, .. } = only(&b) {
            assert!(bitrate_bps <= 1_000_001 && bitrate_bps > 999_990);
        } else {
            panic!()
        }
    }

    #[test]
    fn sr_rr_round_trip_in_compound() {
        let rb = ReportBlock {
            ssrc: 5,
            fraction_lost: 12,
            cumulative_lost: -3,
            extended_highest_seq: 70000,
            jitter: 9,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 65536,
        };
        let mut b = Vec::new();
        write_sr(&mut b, 1, 0x0102_0304_0506_0708, 99, 10, 1000, &[rb]);
        write_rr(&mut b, 2, &[rb, rb]);
        let v: Vec<_> = parse_compound(&b).map(|p| p.unwrap()).collect();
        match v[0] {
            RtcpPacket::SenderReport {
                ssrc,
                ntp,
                rtp_timestamp,
                packet_count,
                octet_count,
                reports,
            } => {
                assert_eq!((ssrc, ntp, rtp_timestamp), (1, 0x0102_0304_0506_0708, 99));
                assert_eq!((packet_count, octet_count), (10, 1000));
                assert_eq!(reports.iter().collect::<Vec<_>>(), vec![rb]);
            }
            p => panic!("{p:?}"),
        }
        match v[1] {
            RtcpPacket::ReceiverReport { ssrc: 2, reports } => assert_eq!(reports.len(), 2),
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn truncated_and_bad_version_are_errors() {
        let mut b = Vec::new();
        write_pli(&mut b, 1, 2);
        assert_eq!(validate_compound(&b[..8]), Err(RtcpError::Truncated));
        let mut bad = b.clone();
        bad[0] = 0x40 | 1;
        assert_eq!(validate_compound(&bad), Err(RtcpError::BadVersion));
        assert_eq!(validate_compound(&[]), Err(RtcpError::TooShort));
        // SR whose count claims more report blocks than the length holds
        let mut sr = Vec::new();
        write_sr(&mut sr, 1, 0, 0, 0, 0, &[]);
        sr[0] |= 3;
        assert_eq!(validate_compound(&sr), Err(RtcpError::BadLayout));
    }

    #[test]
    fn transport_cc_is_recognised() {
        let b = [0x8f, 205, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        assert!(matches!(
            only(&b),
            RtcpPacket::TransportCc {
                sender_ssrc: 1,
                media_ssrc: 2
            }
        ));
    }
}
