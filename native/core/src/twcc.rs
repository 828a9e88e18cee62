//! Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01):
//! parsing the RTPFB FMT=15 packet a receiver sends into per-packet arrival times, building it
//! from a receive log, and `TwccRecorder`, the bounded receive log a publisher-side receiver keeps.
//!
//! Arrival times are in the feedback sender's clock, in microseconds: the 24-bit reference time
//! (64 ms units) plus the 250 µs deltas. Only differences between them mean anything.

use std::collections::BTreeMap;
use std::fmt;

use crate::rtcp::PT_RTPFB;

pub const FMT_TWCC: u8 = 15;
/// One reference-time unit (64 ms) and one delta tick (250 µs), in µs.
const REF_UNIT_US: i64 = 64_000;
const TICK_US: i64 = 250;
const TICKS_PER_REF: i64 = REF_UNIT_US / TICK_US;
/// More entries than any real receiver reports at once; refusing them keeps a hostile packet from
/// making the parser allocate megabytes (a 20-byte packet can declare 65535 statuses).
pub const MAX_STATUS_COUNT: usize = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwccError {
    /// Shorter than the RTCP header plus the fixed feedback fields.
    TooShort,
    /// Not version 2, not PT=205/FMT=15, or the length field disagrees with the datagram.
    NotTwcc,
    /// The chunks or deltas run past the end of the packet.
    Truncated,
    /// A reserved symbol, an empty run, or more statuses than `MAX_STATUS_COUNT`.
    BadLayout,
    /// (building) a delta does not fit the 16-bit field, or no packet to report.
    Unencodable,
}

impl fmt::Display for TwccError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TwccError::TooShort => "transport-cc feedback shorter than its fixed fields",
            TwccError::NotTwcc => "not a transport-cc feedback packet",
            TwccError::Truncated => "transport-cc chunks or deltas run past the packet",
            TwccError::BadLayout => "transport-cc packet status chunks are malformed",
            TwccError::Unencodable => "arrival times cannot be encoded as transport-cc deltas",
        })
    }
}

impl std::error::Error for TwccError {}

/// One reported packet: its transport-wide sequence number and, if it arrived, when (µs, in the
/// receiver's clock, a multiple of 250).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TwccPacket {
    pub seq: u16,
    pub arrival_us: Option<i64>,
}

/// A parsed (or to-be-built) feedback packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TwccFeedback {
    pub sender_ssrc: u32,
    pub media_ssrc: u32,
    pub base_seq: u16,
    /// 24-bit reference time in 64 ms units.
    pub reference_time: u32,
    pub fb_count: u8,
    /// One entry per sequence number from `base_seq`, in order.
    pub packets: Vec<TwccPacket>,
}

// Status symbols.
const NOT_RECEIVED: u8 = 0;
const SMALL_DELTA: u8 = 1;
const LARGE_DELTA: u8 = 2;

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl TwccFeedback {
    /// Parses one RTCP packet (header included; `buf` may extend past it, as in a compound).
    /// Returns the feedback and the packet's length in bytes.
    pub fn parse(buf: &[u8]) -> Result<(TwccFeedback, usize), TwccError> {
        if buf.len() < 20 {
            return Err(TwccError::TooShort);
        }
        if buf[0] >> 6 != 2 || buf[0] & 0x1f != FMT_TWCC || buf[1] != PT_RTPFB {
            return Err(TwccError::NotTwcc);
        }
        let total = (be16(&buf[2..]) as usize + 1) * 4;
        if total > buf.len() {
            return Err(TwccError::NotTwcc);
        }
        if total < 20 {
            return Err(TwccError::TooShort);
        }
        let mut end = total;
        if buf[0] & 0x20 != 0 {
            // Padding: the last byte counts the padding bytes (including itself).
            let pad = buf[total - 1] as usize;
            if pad == 0 || pad > total - 20 {
                return Err(TwccError::BadLayout);
            }
            end -= pad;
        }
        let p = &buf[..end];
        let base_seq = be16(&p[12..]);
        let count = be16(&p[14..]) as usize;
        if count > MAX_STATUS_COUNT {
            return Err(TwccError::BadLayout);
        }
        let reference_time = u32::from_be_bytes([0, p[16], p[17], p[18]]);
        let fb_count = p[19];

        // Chunks: collect one symbol per status.
        let mut symbols: Vec<u8> = Vec::with_capacity(count);
        let mut pos = 20;
        while symbols.len() < count {
            if pos + 2 > p.len() {
                return Err(TwccError::Truncated);
            }
            let chunk = be16(&p[pos..]);
            pos += 2;
            let left = count - symbols.len();
            if chunk & 0x8000 == 0 {
                let sym = ((chunk >> 13) & 3) as u8;
                let run = (chunk & 0x1fff) as usize;
                if sym == 3 || run == 0 {
                    return Err(TwccError::BadLayout);
                }
                symbols.extend(std::iter::repeat_n(sym, run.min(left)));
            } else if chunk & 0x4000 == 0 {
                for i in 0..14.min(left) {
                    symbols.push(((chunk >> (13 - i)) & 1) as u8);
                }
            } else {
                for i in 0..7.min(left) {
                    let sym = ((chunk >> (12 - 2 * i)) & 3) as u8;
                    if sym == 3 {
                        return Err(TwccError::BadLayout);
                    }
                    symbols.push(sym);
                }
            }
        }

        // Deltas, one per received packet, each relative to the previous arrival.
        let mut ticks = reference_time as i64 * TICKS_PER_REF;
        let mut packets = Vec::with_capacity(count);
        for (i, &sym) in symbols.iter().enumerate() {
            let arrival_us = match sym {
                NOT_RECEIVED => None,
                SMALL_DELTA => {
                    let d = *p.get(pos).ok_or(TwccError::Truncated)?;
                    pos += 1;
                    ticks += d as i64;
                    Some(ticks * TICK_US)
                }
                _ => {
                    if pos + 2 > p.len() {
                        return Err(TwccError::Truncated);
                    }
                    ticks += be16(&p[pos..]) as i16 as i64;
                    pos += 2;
                    Some(ticks * TICK_US)
                }
            };
            packets.push(TwccPacket {
                seq: base_seq.wrapping_add(i as u16),
                arrival_us,
            });
        }
        Ok((
            TwccFeedback {
                sender_ssrc: be32(&p[4..]),
                media_ssrc: be32(&p[8..]),
                base_seq,
                reference_time,
                fb_count,
                packets,
            },
            total,
        ))
    }

    /// Every transport-cc feedback in a compound RTCP datagram, in order. Other packets are
    /// skipped; the walk stops at the first packet whose header does not fit.
    pub fn parse_compound(
        buf: &[u8],
    ) -> impl Iterator<Item = Result<TwccFeedback, TwccError>> + '_ {
        let mut pos = 0usize;
        let mut failed = false;
        std::iter::from_fn(move || loop {
            if failed || pos + 4 > buf.len() {
                return None;
            }
            let rest = &buf[pos..];
            let len = (be16(&rest[2..]) as usize + 1) * 4;
            if rest[0] >> 6 != 2 || len > rest.len() {
                failed = true;
                return Some(Err(TwccError::NotTwcc));
            }
            pos += len;
            if rest[0] & 0x1f == FMT_TWCC && rest[1] == PT_RTPFB {
                return Some(TwccFeedback::parse(&rest[..len]).map(|(fb, _)| fb));
            }
        })
    }

    /// Appends this feedback as one RTCP packet. Arrival times are taken in 250 µs ticks (rounded
    /// down); fails if a delta from the previous arrival (or from the reference time, for the
    /// first) does not fit a signed 16-bit tick count, or there are too many statuses.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), TwccError> {
        let n = self.packets.len();
        if n == 0 || n > MAX_STATUS_COUNT {
            return Err(TwccError::Unencodable);
        }
        let mut symbols = Vec::with_capacity(n);
        let mut deltas: Vec<u8> = Vec::with_capacity(n * 2);
        let mut prev = (self.reference_time & 0xff_ffff) as i64 * TICKS_PER_REF;
        for p in &self.packets {
            match p.arrival_us {
                None => symbols.push(NOT_RECEIVED),
                Some(a) => {
                    let t = a.div_euclid(TICK_US);
                    let d = t - prev;
                    prev = t;
                    if (0..=255).contains(&d) {
                        symbols.push(SMALL_DELTA);
                        deltas.push(d as u8);
                    } else if (i16::MIN as i64..=i16::MAX as i64).contains(&d) {
                        symbols.push(LARGE_DELTA);
                        deltas.extend_from_slice(&(d as i16).to_be_bytes());
                    } else {
                        return Err(TwccError::Unencodable);
                    }
                }
            }
        }
        let start = out.len();
        out.extend_from_slice(&[0x80 | FMT_TWCC, PT_RTPFB, 0, 0]);
        out.extend_from_slice(&self.sender_ssrc.to_be_bytes());
        out.extend_from_slice(&self.media_ssrc.to_be_bytes());
        out.extend_from_slice(&self.base_seq.to_be_bytes());
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(&self.reference_time.to_be_bytes()[1..]);
        out.push(self.fb_count);
        write_chunks(&symbols, out);
        out.extend_from_slice(&deltas);
        while !(out.len() - start).is_multiple_of(4) {
            out.push(0);
        }
        let words = (out.len() - start) / 4 - 1;
        out[start + 2..start + 4].copy_from_slice(&(words as u16).to_be_bytes());
        Ok(())
    }
}

/// Run-length chunks for runs of 7 or more equal symbols, otherwise a status vector: 14 one-bit
/// symbols when the next ones are all "not received"/"small delta", else 7 two-bit symbols.
fn write_chunks(symbols: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < symbols.len() {
        let s = symbols[i];
        let run = symbols[i..]
            .iter()
            .take(0x1fff)
            .take_while(|&&x| x == s)
            .count();
        if run >= 7 || i + run == symbols.len() && run > 1 {
            out.extend_from_slice(&(((s as u16) << 13) | run as u16).to_be_bytes());
            i += run;
            continue;
        }
        let take14 = (symbols.len() - i).min(14);
        if symbols[i..i + take14].iter().all(|&x| x <= SMALL_DELTA) {
            let mut chunk = 0x8000u16;
            for (k, &x) in symbols[i..i + take14].iter().enumerate() {
                chunk |= (x as u16) << (13 - k);
            }
            out.extend_from_slice(&chunk.to_be_bytes());
            i += take14;
        } else {
            let take7 = (symbols.len() - i).min(7);
            let mut chunk = 0xc000u16;
            for (k, &x) in symbols[i..i + take7].iter().enumerate() {
                chunk |= (x as u16) << (12 - 2 * k);
            }
            out.extend_from_slice(&chunk.to_be_bytes());
            i += take7;
        }
    }
}

/// Receive log of one transport-wide sequence space: records each packet's (sequence number,
/// arrival time) and emits feedback at most every `interval_us`. Memory is bounded: at most
/// `MAX_PENDING` unreported packets are kept (the oldest go first), and a jump far ahead in the
/// sequence space (a restarted sender) starts reporting afresh.
#[derive(Debug)]
pub struct TwccRecorder {
    sender_ssrc: u32,
    media_ssrc: u32,
    interval_us: u64,
    /// Unreported arrivals by unwrapped sequence number.
    pending: BTreeMap<i64, u64>,
    /// Highest unwrapped sequence number seen (the unwrapping reference).
    last_ext: Option<i64>,
    /// First sequence number the next feedback covers; earlier arrivals are late and dropped.
    next_ext: Option<i64>,
    last_emit_us: Option<u64>,
    fb_count: u8,
    late: u64,
}

/// Unreported packets kept at most (~5 s of a 2 Mbit/s stream).
pub const MAX_PENDING: usize = 1024;
/// A feedback never spans more sequence numbers than this; a bigger gap restarts the log there.
const MAX_SPAN: i64 = 4096;
/// Statuses per feedback packet: keeps a packet under ~1.2 kB whatever the deltas.
const MAX_PER_PACKET: usize = 400;

impl TwccRecorder {
    pub fn new(sender_ssrc: u32, media_ssrc: u32, interval_us: u64) -> Self {
        Self {
            sender_ssrc,
            media_ssrc,
            interval_us,
            pending: BTreeMap::new(),
            last_ext: None,
            next_ext: None,
            last_emit_us: None,
            fb_count: 0,
            late: 0,
        }
    }

    /// Arrivals that came after their sequence number was already reported (as lost).
    pub fn late_packets(&self) -> u64 {
        self.late
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn record(&mut self, seq: u16, arrival_us: u64) {
        let ext = match self.last_ext {
            None => seq as i64,
            Some(last) => last + seq.wrapping_sub(last as u16) as i16 as i64,
        };
        if self.last_ext.is_none_or(|l| ext > l) {
            self.last_ext = Some(ext);
        }
        let next = *self.next_ext.get_or_insert(ext);
        if ext < next {
            self.late += 1;
            return;
        }
        if ext - next >= MAX_SPAN {
            // Far ahead: report from here on; what lies between is given up.
            self.pending.retain(|&k, _| k > ext - MAX_SPAN);
            let first = self.pending.keys().next().copied().unwrap_or(ext);
            self.next_ext = Some(first);
        }
        self.pending.entry(ext).or_insert(arrival_us);
        while self.pending.len() > MAX_PENDING {
            if let Some((k, _)) = self.pending.pop_first() {
                self.next_ext = Some(k + 1);
            }
        }
    }

    /// When `poll_feedback` next has something to send (None: nothing recorded).
    pub fn next_timeout(&self) -> Option<u64> {
        if self.pending.is_empty() {
            return None;
        }
        Some(self.last_emit_us.map_or(0, |t| t + self.interval_us))
    }

    /// Appends feedback packets for everything recorded since the last one, if the interval has
    /// passed. Returns how many packets were appended.
    pub fn poll_feedback(&mut self, now_us: u64, out: &mut Vec<u8>) -> usize {
        if self.pending.is_empty()
            || self
                .last_emit_us
                .is_some_and(|t| now_us < t + self.interval_us)
        {
            return 0;
        }
        self.last_emit_us = Some(now_us);
        let mut n = 0;
        while let Some(fb) = self.take_feedback() {
            if fb.write(out).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// The next feedback from the log: from `next_ext` to the highest received packet, split where
    /// a packet gets too long or an arrival delta does not fit.
    fn take_feedback(&mut self) -> Option<TwccFeedback> {
        let (&first_rx, &first_arrival) = self.pending.iter().next()?;
        // Leading losses are reported, but never so many that the first arrival misses the packet.
        let start = self
            .next_ext
            .unwrap_or(first_rx)
            .min(first_rx)
            .max(first_rx - (MAX_PER_PACKET as i64 - 1));
        let last_rx = *self.pending.keys().next_back()?;
        let reference_time = (first_arrival as i64 / REF_UNIT_US) & 0xff_ffff;
        let mut prev_ticks = first_arrival as i64 / REF_UNIT_US * TICKS_PER_REF;
        let mut packets = Vec::new();
        let mut ext = start;
        while ext <= last_rx && packets.len() < MAX_PER_PACKET {
            let arrival_us = match self.pending.get(&ext) {
                None => None,
                Some(&a) => {
                    let t = a as i64 / TICK_US;
                    if !(i16::MIN as i64..=i16::MAX as i64).contains(&(t - prev_ticks)) {
                        break;
                    }
                    prev_ticks = t;
                    // Written in the reference-time-wrapped clock so the 24-bit field matches.
                    let wrapped =
                        t - (first_arrival as i64 / REF_UNIT_US - reference_time) * TICKS_PER_REF;
                    Some(wrapped * TICK_US)
                }
            };
            packets.push(TwccPacket {
                seq: ext as u16,
                arrival_us,
            });
            ext += 1;
        }
        // Never end on losses: they are reported once a later packet arrives.
        while packets.last().is_some_and(|p| p.arrival_us.is_none()) {
            packets.pop();
            ext -= 1;
        }
        self.pending = self.pending.split_off(&ext);
        self.next_ext = Some(ext);
        let fb = TwccFeedback {
            sender_ssrc: self.sender_ssrc,
            media_ssrc: self.media_ssrc,
            base_seq: start as u16,
            reference_time: reference_time as u32,
            fb_count: self.fb_count,
            packets,
        };
        self.fb_count = self.fb_count.wrapping_add(1);
        Some(fb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn parses_run_length_and_small_deltas() {
        // base 10, 3 statuses, ref 1 (64 ms), count 7; run of 3 "small delta"; deltas 4, 8, 0 ticks.
        let b = hex("8fcd0006 00000001 00000002 000a0003 00000107 2003 04 08 00 000000");
        let (fb, len) = TwccFeedback::parse(&b).unwrap();
        assert_eq!(len, 28);
        assert_eq!((fb.sender_ssrc, fb.media_ssrc), (1, 2));
        assert_eq!((fb.base_seq, fb.reference_time, fb.fb_count), (10, 1, 7));
        let got: Vec<_> = fb.packets.iter().map(|p| (p.seq, p.arrival_us)).collect();
        assert_eq!(
            got,
            vec![
                (10, Some(64_000 + 1_000)),
                (11, Some(64_000 + 3_000)),
                (12, Some(64_000 + 3_000))
            ]
        );
    }

    #[test]
    fn parses_status_vectors_and_large_negative_delta() {
        // base 65534, 17 statuses: a 1-bit vector (14: received, lost, received, 11 lost), then a
        // 2-bit vector (large delta, lost, small delta).
        let one_bit: u16 = 0x8000 | (1 << 13) | (1 << 11);
        let two_bit: u16 = 0xc000 | (2 << 12) | (1 << 8);
        let mut b = hex("8fcd0000 00000001 00000002 fffe0011 00000001");
        b.extend_from_slice(&one_bit.to_be_bytes());
        b.extend_from_slice(&two_bit.to_be_bytes());
        b.extend_from_slice(&[1, 2]); // small deltas
        b.extend_from_slice(&(-4i16).to_be_bytes()); // large negative delta: -1 ms
        b.push(3);
        b.extend_from_slice(&[0, 0, 0]);
        let words = b.len() / 4 - 1;
        b[3] = words as u8;
        let (fb, _) = TwccFeedback::parse(&b).unwrap();
        assert_eq!(fb.packets.len(), 17);
        let got: Vec<_> = fb
            .packets
            .iter()
            .filter(|p| p.arrival_us.is_some())
            .map(|p| (p.seq, p.arrival_us.unwrap()))
            .collect();
        assert_eq!(got, vec![(65534, 250), (0, 750), (12, -250), (14, 500)]);
        assert_eq!(fb.packets[16].seq, 14);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let good = hex("8fcd0006 00000001 00000002 000a0003 00000107 2003 04 08 00 000000");
        assert!(TwccFeedback::parse(&good).is_ok());
        // Every truncation of the datagram fails cleanly.
        for n in 0..good.len() {
            assert!(TwccFeedback::parse(&good[..n]).is_err(), "prefix {n}");
        }
        let mut b = good.clone();
        b[1] = 206;
        assert_eq!(TwccFeedback::parse(&b), Err(TwccError::NotTwcc));
        let mut b = good.clone();
        b[0] = 0x81; // FMT 1 (NACK)
        assert_eq!(TwccFeedback::parse(&b), Err(TwccError::NotTwcc));
        // Declared length says 2 words when the deltas need more.
        let mut b = good.clone();
        b[3] = 4;
        assert_eq!(TwccFeedback::parse(&b[..20]), Err(TwccError::Truncated));
        // More statuses than the chunks and deltas supply.
        let mut b = good.clone();
        b[15] = 9;
        b[21] = 9;
        assert_eq!(TwccFeedback::parse(&b), Err(TwccError::Truncated));
        // Reserved symbol in a run-length chunk, and an empty run.
        let mut b = good.clone();
        b[20] = 0x60;
        assert_eq!(TwccFeedback::parse(&b), Err(TwccError::BadLayout));
        let mut b = good.clone();
        b[20..22].copy_from_slice(&[0x20, 0x00]);
        assert_eq!(TwccFeedback::parse(&b), Err(TwccError::BadLayout));
        // Too many statuses for any real receiver.
        let mut b = good.clone();
        b[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(TwccFeedback::parse(&b), Err(TwccError::BadLayout));
        // Padding bit with a bad count.
        let mut b = good.clone();
        b[0] |= 0x20;
        assert_eq!(TwccFeedback::parse(&b), Err(TwccError::BadLayout));
    }

    #[test]
    fn round_trip_mixed_symbols() {
        let mut packets = Vec::new();
        let mut t = 1_000_000i64;
        for i in 0..200u16 {
            let arrival_us = match i % 23 {
                0..=2 => None,
                5 => {
                    t += 100_000; // large delta
                    Some(t)
                }
                7 => {
                    t -= 2_000; // reordered: negative delta
                    Some(t)
                }
                _ => {
                    t += 250 * (i as i64 % 9);
                    Some(t)
                }
            };
            packets.push(TwccPacket {
                seq: 65500u16.wrapping_add(i),
                arrival_us,
            });
        }
        // The first arrival must be within a signed 16-bit tick count of the reference time.
        let fb = TwccFeedback {
            sender_ssrc: 9,
            media_ssrc: 10,
            base_seq: 65500,
            reference_time: 15,
            fb_count: 200,
            packets,
        };
        let mut out = vec![0xde, 0xad];
        fb.write(&mut out).unwrap();
        assert_eq!(out.len() % 4, 2);
        let (back, len) = TwccFeedback::parse(&out[2..]).unwrap();
        assert_eq!(len, out.len() - 2);
        assert_eq!(back, fb);
        // Long runs use run-length chunks.
        let runs = TwccFeedback {
            packets: (0..3000u16)
                .map(|i| TwccPacket {
                    seq: i,
                    arrival_us: if (1000..2500).contains(&i) {
                        None
                    } else {
                        Some(960_000 + i as i64 * 250)
                    },
                })
                .collect(),
            reference_time: 15,
            ..Default::default()
        };
        let mut out = Vec::new();
        runs.write(&mut out).unwrap();
        assert!(out.len() < 20 + 16 + 1500, "{}", out.len());
        assert_eq!(TwccFeedback::parse(&out).unwrap().0, runs);
    }

    #[test]
    fn unencodable_delta_is_refused() {
        let fb = TwccFeedback {
            packets: vec![
                TwccPacket {
                    seq: 1,
                    arrival_us: Some(0),
                },
                TwccPacket {
                    seq: 2,
                    arrival_us: Some(9_000_000),
                },
            ],
            ..Default::default()
        };
        assert_eq!(fb.write(&mut Vec::new()), Err(TwccError::Unencodable));
        assert_eq!(
            TwccFeedback::default().write(&mut Vec::new()),
            Err(TwccError::Unencodable)
        );
    }

    #[test]
    fn compound_walk_finds_feedback_among_other_packets() {
        let mut buf = Vec::new();
        crate::rtcp::write_rr(&mut buf, 5, &[]);
        let fb = TwccFeedback {
            base_seq: 7,
            packets: vec![TwccPacket {
                seq: 7,
                arrival_us: Some(1000),
            }],
            ..Default::default()
        };
        fb.write(&mut buf).unwrap();
        crate::rtcp::write_pli(&mut buf, 1, 2);
        let all: Vec<_> = TwccFeedback::parse_compound(&buf).collect();
        assert_eq!(all, vec![Ok(fb)]);
        assert!(crate::rtcp::validate_compound(&buf).is_ok());
        let cut = &buf[..buf.len() - 3];
        assert!(TwccFeedback::parse_compound(cut).any(|r| r.is_err()));
    }

    fn decode(out: &[u8]) -> Vec<TwccFeedback> {
        TwccFeedback::parse_compound(out)
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn recorder_reports_losses_across_wrap_at_its_interval() {
        let mut r = TwccRecorder::new(1, 2, 100_000);
        let mut out = Vec::new();
        let base = 5_000_000u64;
        // 65530..=65535, 0..=9 with 65533 and 2 lost, 4 arriving before 3.
        let mut seqs: Vec<u16> = (65530..=65535).chain(0..=9).collect();
        seqs.retain(|&s| s != 65533 && s != 2);
        seqs.swap(7, 8);
        for (i, &s) in seqs.iter().enumerate() {
            r.record(s, base + i as u64 * 1_000);
        }
        assert_eq!(r.poll_feedback(base, &mut out), 1);
        let fbs = decode(&out);
        assert_eq!(fbs.len(), 1);
        let fb = &fbs[0];
        assert_eq!(fb.base_seq, 65530);
        assert_eq!(fb.packets.len(), 16);
        let lost: Vec<u16> = fb
            .packets
            .iter()
            .filter(|p| p.arrival_us.is_none())
            .map(|p| p.seq)
            .collect();
        assert_eq!(lost, vec![65533, 2]);
        // Arrival differences survive (the absolute base is the 64 ms-aligned reference time).
        let a = |s: u16| {
            fb.packets
                .iter()
                .find(|p| p.seq == s)
                .unwrap()
                .arrival_us
                .unwrap()
        };
        assert_eq!(a(65531) - a(65530), 1_000);
        assert_eq!(a(3) - a(4), 1_000);
        // Next feedback continues after 9; a late 2 is counted, not reported.
        r.record(2, base + 200_000);
        r.record(12, base + 210_000);
        out.clear();
        assert_eq!(r.poll_feedback(base + 50_000, &mut out), 0, "interval");
        assert_eq!(r.next_timeout(), Some(base + 100_000));
        assert_eq!(r.poll_feedback(base + 100_000, &mut out), 1);
        let fb = &decode(&out)[0];
        assert_eq!(fb.base_seq, 10);
        assert_eq!(fb.fb_count, 1);
        let st: Vec<bool> = fb.packets.iter().map(|p| p.arrival_us.is_some()).collect();
        assert_eq!(st, vec![false, false, true]);
        assert_eq!(r.late_packets(), 1);
        assert_eq!(r.pending(), 0);
        assert_eq!(r.next_timeout(), None);
    }

    #[test]
    fn recorder_memory_is_bounded_and_big_gaps_split() {
        let mut r = TwccRecorder::new(1, 2, 100_000);
        for i in 0..5000u32 {
            r.record((i * 3) as u16, 1_000_000 + i as u64 * 100);
        }
        assert!(r.pending() <= MAX_PENDING);
        // A jump far ahead does not produce a feedback spanning thousands of losses.
        r.record(40_000, 3_000_000);
        let mut out = Vec::new();
        r.poll_feedback(3_000_000, &mut out);
        for fb in decode(&out) {
            assert!(fb.packets.len() <= MAX_PER_PACKET);
        }
        // Arrivals 20 s apart (beyond a 16-bit delta) go in separate packets.
        let mut r = TwccRecorder::new(1, 2, 0);
        r.record(1, 1_000_000);
        r.record(2, 21_000_000);
        let mut out = Vec::new();
        assert_eq!(r.poll_feedback(30_000_000, &mut out), 2);
        let fbs = decode(&out);
        assert_eq!((fbs[0].base_seq, fbs[1].base_seq), (1, 2));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics(mut b in prop::collection::vec(any::<u8>(), 0..300), fix in any::<bool>()) {
                if fix && b.len() >= 20 {
                    // Mostly-valid headers reach the chunk and delta code.
                    b[0] = 0x8f;
                    b[1] = PT_RTPFB;
                    let words = (b.len() / 4 - 1) as u16;
                    b[2..4].copy_from_slice(&words.to_be_bytes());
                }
                let _ = TwccFeedback::parse(&b);
                let _ = TwccFeedback::parse_compound(&b).count();
            }

            #[test]
            fn write_then_parse_round_trips(
                base in any::<u16>(),
                reference_time in 0u32..0x100_0000,
                steps in prop::collection::vec(prop::option::of(-8_000i64..40_000), 1..300),
            ) {
                let mut t = reference_time as i64 * REF_UNIT_US;
                let packets: Vec<TwccPacket> = steps
                    .iter()
                    .enumerate()
                    .map(|(i, d)| TwccPacket {
                        seq: base.wrapping_add(i as u16),
                        arrival_us: d.map(|d| {
                            t += d / TICK_US * TICK_US;
                            t
                        }),
                    })
                    .collect();
                let fb = TwccFeedback { base_seq: base, reference_time, packets, ..Default::default() };
                let mut out = Vec::new();
                if fb.write(&mut out).is_ok() {
                    prop_assert_eq!(TwccFeedback::parse(&out).unwrap(), (fb, out.len()));
                }
            }

            #[test]
            fn recorder_reports_every_arrival_once(
                start in any::<u16>(),
                gaps in prop::collection::vec((1u16..4, 0u64..30_000), 1..500),
            ) {
                let mut r = TwccRecorder::new(1, 2, 20_000);
                let (mut seq, mut now) = (start, 1_000_000u64);
                let mut expected = Vec::new();
                let mut out = Vec::new();
                for (g, dt) in gaps {
                    seq = seq.wrapping_add(g);
                    now += dt;
                    r.record(seq, now);
                    expected.push((seq, now));
                    r.poll_feedback(now, &mut out);
                }
                r.poll_feedback(now + 1_000_000, &mut out);
                let got: Vec<(u16, i64)> = TwccFeedback::parse_compound(&out)
                    .flat_map(|f| f.unwrap().packets)
                    .filter_map(|p| p.arrival_us.map(|a| (p.seq, a)))
                    .collect();
                prop_assert_eq!(got.len(), expected.len());
                // Arrival differences are kept to the 250 us tick.
                for w in 0..got.len().saturating_sub(1) {
                    let d_got = got[w + 1].1 - got[w].1;
                    let d_exp = expected[w + 1].1 as i64 / 250 * 250 - expected[w].1 as i64 / 250 * 250;
                    prop_assert_eq!(got[w].0, expected[w].0);
                    prop_assert_eq!(d_got, d_exp);
                }
            }
        }
    }
}
