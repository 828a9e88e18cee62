//! Zero-copy RTP header view (RFC 3550) with header-extension parsing (RFC 8285) and a writer for the
//! rewritten header the router sends.

use std::fmt;

pub const FIXED_HEADER_LEN: usize = 12;

/// Why a datagram is not an acceptable RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpError {
    TooShort,
    BadVersion,
    /// Second byte looks like an RTCP packet type (RFC 5761 demultiplexing range 192..=223).
    LooksLikeRtcp,
    TruncatedCsrc,
    TruncatedExtension,
    BadPadding,
}

impl fmt::Display for RtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            RtpError::TooShort => "shorter than the 12-byte RTP header",
            RtpError::BadVersion => "RTP version is not 2",
            RtpError::LooksLikeRtcp => "payload type is in the RTCP range",
            RtpError::TruncatedCsrc => "CSRC list runs past the end",
            RtpError::TruncatedExtension => "header extension runs past the end",
            RtpError::BadPadding => "padding length is zero or larger than the payload",
        };
        f.write_str(s)
    }
}

impl std::error::Error for RtpError {}

/// A validated view of an RTP packet; offsets index into the original buffer.
#[derive(Debug, Clone, Copy)]
pub struct RtpView<'a> {
    buf: &'a [u8],
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    csrc_count: usize,
    /// (profile, start, end) of the extension data words (after the 4-byte extension header).
    ext: Option<(u16, usize, usize)>,
    payload_start: usize,
    payload_end: usize,
}

impl<'a> RtpView<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        if buf.len() < FIXED_HEADER_LEN {
            return Err(RtpError::TooShort);
        }
        let b0 = buf[0];
        if b0 >> 6 != 2 {
            return Err(RtpError::BadVersion);
        }
        if (192..=223).contains(&buf[1]) {
            return Err(RtpError::LooksLikeRtcp);
        }
        let has_padding = b0 & 0x20 != 0;
        let has_ext = b0 & 0x10 != 0;
        let csrc_count = (b0 & 0x0f) as usize;
        let mut pos = FIXED_HEADER_LEN + 4 * csrc_count;
        if pos > buf.len() {
            return Err(RtpError::TruncatedCsrc);
        }
        let ext = if has_ext {
            if pos + 4 > buf.len() {
                return Err(RtpError::TruncatedExtension);
            }
            let profile = u16::from_be_bytes([buf[pos], buf[pos + 1]]);
            let words = u16::from_be_bytes([buf[pos + 2], buf[pos + 3]]) as usize;
            let start = pos + 4;
            let end = start + 4 * words;
            if end > buf.len() {
                return Err(RtpError::TruncatedExtension);
            }
            pos = end;
            Some((profile, start, end))
        } else {
            None
        };
        let mut payload_end = buf.len();
        if has_padding {
            let pad = buf[buf.len() - 1] as usize;
            if pad == 0 || pos + pad > buf.len() {
                return Err(RtpError::BadPadding);
            }
            payload_end -= pad;
        }
        Ok(Self {
            buf,
            marker: buf[1] & 0x80 != 0,
            payload_type: buf[1] & 0x7f,
            seq: u16::from_be_bytes([buf[2], buf[3]]),
            timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
            ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
            csrc_count,
            ext,
            payload_start: pos,
            payload_end,
        })
    }

    /// The CSRC list as raw bytes (4 per CSRC).
    pub fn csrc_bytes(&self) -> &'a [u8] {
        &self.buf[FIXED_HEADER_LEN..FIXED_HEADER_LEN + 4 * self.csrc_count]
    }

    pub fn csrc_count(&self) -> usize {
        self.csrc_count
    }

    /// The payload without padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.payload_start..self.payload_end]
    }

    pub fn padding_len(&self) -> usize {
        self.buf.len() - self.payload_end
    }

    pub fn header_len(&self) -> usize {
        self.payload_start
    }

    /// Iterates RFC 8285 extension elements (id, data); unknown profiles yield nothing.
    pub fn extensions(&self) -> ExtIter<'a> {
        match self.ext {
            Some((profile, start, end)) => {
                let form = if profile == 0xBEDE {
                    ExtForm::OneByte
                } else if profile & 0xFFF0 == 0x1000 {
                    ExtForm::TwoByte
                } else {
                    ExtForm::None
                };
                ExtIter {
                    data: &self.buf[start..end],
                    pos: 0,
                    form,
                }
            }
            None => ExtIter {
                data: &[],
                pos: 0,
                form: ExtForm::None,
            },
        }
    }

    /// Data of the extension element with `id` (0 means "not negotiated": always None).
    pub fn extension(&self, id: u8) -> Option<&'a [u8]> {
        if id == 0 {
            return None;
        }
        self.extensions().find(|(i, _)| *i == id).map(|(_, d)| d)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExtForm {
    OneByte,
    TwoByte,
    None,
}

/// Iterator over header-extension elements; stops quietly at malformed data.
pub struct ExtIter<'a> {
    data: &'a [u8],
    pos: usize,
    form: ExtForm,
}

impl<'a> Iterator for ExtIter<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.pos >= self.data.len() {
                return None;
            }
            match self.form {
                ExtForm::None => return None,
                ExtForm::OneByte => {
                    let b = self.data[self.pos];
                    if b == 0 {
                        self.pos += 1; // padding byte
                        continue;
                    }
                    let id = b >> 4;
                    // 15 is reserved, and id 0 is only ever the padding byte 0x00: either means the
                    // rest cannot be trusted, so stop processing (RFC 8285 4.2)
                    if id == 15 || id == 0 {
                        self.pos = self.data.len();
                        return None;
                    }
                    let len = (b & 0x0f) as usize + 1;
                    let start = self.pos + 1;
                    let end = start + len;
                    if end > self.data.len() {
                        self.pos = self.data.len();
                        return None;
                    }
                    self.pos = end;
                    return Some((id, &self.data[start..end]));
                }
                ExtForm::TwoByte => {
                    let id = self.data[self.pos];
                    if id == 0 {
                        self.pos += 1;
                        continue;
                    }
                    if self.pos + 2 > self.data.len() {
                        self.pos = self.data.len();
                        return None;
                    }
                    let len = self.data[self.pos + 1] as usize;
                    let start = self.pos + 2;
                    let end = start + len;
                    if end > self.data.len() {
                        self.pos = self.data.len();
                        return None;
                    }
                    self.pos = end;
                    return Some((id, &self.data[start..end]));
                }
            }
        }
    }
}

/// Fields of an outgoing RTP header; extensions are (id, data) pairs written in one-byte form.
pub struct HeaderOut<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub csrc_bytes: &'a [u8],
    pub extensions: &'a [(u8, &'a [u8])],
}

/// Appends an RTP packet (header + payload, no padding) to `out`. Extension elements whose id is not
/// 1..=14 or whose data is not 1..=16 bytes cannot use the one-byte form and are skipped.
pub fn write_packet(out: &mut Vec<u8>, h: &HeaderOut<'_>, payload: &[u8]) {
    let csrc_count = (h.csrc_bytes.len() / 4).min(15);
    let usable = |(id, d): &&(u8, &[u8])| (1..=14).contains(id) && (1..=16).contains(&d.len());
    let has_ext = h.extensions.iter().any(|e| usable(&e));
    out.push(0x80 | if has_ext { 0x10 } else { 0 } | csrc_count as u8);
    out.push(if h.marker { 0x80 } else { 0 } | (h.payload_type & 0x7f));
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.extend_from_slice(&h.timestamp.to_be_bytes());
    out.extend_from_slice(&h.ssrc.to_be_bytes());
    out.extend_from_slice(&h.csrc_bytes[..csrc_count * 4]);
    if has_ext {
        let ext_hdr = out.len();
        out.extend_from_slice(&[0xBE, 0xDE, 0, 0]);
        let data_start = out.len();
        for (id, d) in h.extensions.iter().filter(|e| usable(e)) {
            out.push((id << 4) | (d.len() as u8 - 1));
            out.extend_from_slice(d);
        }
        while !(out.len() - data_start).is_multiple_of(4) {
            out.push(0);
        }
        let words = ((out.len() - data_start) / 4) as u16;
        out[ext_hdr + 2..ext_hdr + 4].copy_from_slice(&words.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(ext: &[u8], profile: u16, csrcs: u8, padding: u8) -> Vec<u8> {
        let mut p = vec![
            0x80 | csrcs,
            96,
            0x12,
            0x34,
            0,
            0,
            0x10,
            0,
            0xde,
            0xad,
            0xbe,
            0xef,
        ];
        if padding > 0 {
            p[0] |= 0x20;
        }
        for i in 0..csrcs {
            p.extend_from_slice(&[0, 0, 0, i + 1]);
        }
        if !ext.is_empty() {
            p[0] |= 0x10;
            p.extend_from_slice(&profile.to_be_bytes());
            p.extend_from_slice(&((ext.len() / 4) as u16).to_be_bytes());
            p.extend_from_slice(ext);
        }
        p.extend_from_slice(b"payload");
        for i in 0..padding {
            p.push(if i + 1 == padding { padding } else { 0 });
        }
        p
    }

    #[test]
    fn parses_fixed_header_fields() {
        let p = packet(&[], 0, 0, 0);
        let v = RtpView::parse(&p).unwrap();
        assert_eq!(v.payload_type, 96);
        assert_eq!(v.seq, 0x1234);
        assert_eq!(v.timestamp, 0x1000);
        assert_eq!(v.ssrc, 0xdeadbeef);
        assert_eq!(v.payload(), b"payload");
    }

    #[test]
    fn one_byte_extensions_with_padding_bytes() {
        // id 1 len 1 (2 bytes), a padding byte, id 3 len 3 (abs-send-time), total 8 bytes
        let ext = [0x11, 0xaa, 0xbb, 0x00, 0x32, 1, 2, 3];
        let p = packet(&ext, 0xBEDE, 2, 0);
        let v = RtpView::parse(&p).unwrap();
        let got: Vec<_> = v.extensions().collect();
        assert_eq!(got, vec![(1, &[0xaa, 0xbb][..]), (3, &[1, 2, 3][..])]);
        assert_eq!(v.csrc_count(), 2);
        assert_eq!(v.payload(), b"payload");
    }

    #[test]
    fn one_byte_element_with_id_0_ends_the_extensions() {
        // id 1 len 1, then 0x01 (id 0 with a length: not padding, invalid), then id 2: found by
        // fuzzing, the iterator yielded an element with id 0 that no writer can express
        let ext = [0x10, 0x60, 0x01, 0x00, 0x00, 0x20, 0x77, 0x00];
        let p = packet(&ext, 0xBEDE, 0, 0);
        let v = RtpView::parse(&p).unwrap();
        let got: Vec<_> = v.extensions().collect();
        assert_eq!(got, vec![(1, &[0x60][..])]);
        assert_eq!(v.extension(2), None);
    }

    #[test]
    fn two_byte_extensions() {
        let ext = [5, 2, 9, 9, 0, 0, 0, 0];
        let p = packet(&ext, 0x1000, 0, 0);
        let v = RtpView::parse(&p).unwrap();
        assert_eq!(v.extension(5), Some(&[9, 9][..]));
        assert_eq!(v.extension(0), None);
    }

    #[test]
    fn padding_is_excluded_from_payload() {
        let p = packet(&[], 0, 0, 4);
        let v = RtpView::parse(&p).unwrap();
        assert_eq!(v.payload(), b"payload");
        assert_eq!(v.padding_len(), 4);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(RtpView::parse(&[0x80; 11]).unwrap_err(), RtpError::TooShort);
        let mut p = packet(&[], 0, 0, 0);
        p[0] = 0x40;
        assert_eq!(RtpView::parse(&p).unwrap_err(), RtpError::BadVersion);
        let mut p = packet(&[], 0, 0, 0);
        p[0] |= 0x0f;
        assert_eq!(RtpView::parse(&p).unwrap_err(), RtpError::TruncatedCsrc);
        let p = packet(&[1, 2, 3, 4], 0xBEDE, 0, 0);
        assert_eq!(
            RtpView::parse(&p[..18]).unwrap_err(),
            RtpError::TruncatedExtension
        );
        let mut p = packet(&[], 0, 0, 0);
        p[0] |= 0x20;
        *p.last_mut().unwrap() = 200;
        assert_eq!(RtpView::parse(&p).unwrap_err(), RtpError::BadPadding);
        let mut p = packet(&[], 0, 0, 0);
        p[1] = 200;
        assert_eq!(RtpView::parse(&p).unwrap_err(), RtpError::LooksLikeRtcp);
    }

    #[test]
    fn writer_round_trips() {
        let aset = [1u8, 2, 3];
        let exts: [(u8, &[u8]); 2] = [(3, &aset), (15, &[1])]; // id 15 is not writable: skipped
        let csrcs = [0, 0, 0, 7];
        let h = HeaderOut {
            marker: true,
            payload_type: 111,
            seq: 65535,
            timestamp: u32::MAX,
            ssrc: 42,
            csrc_bytes: &csrcs,
            extensions: &exts,
        };
        let mut out = Vec::new();
        write_packet(&mut out, &h, b"xyz");
        let v = RtpView::parse(&out).unwrap();
        assert!(v.marker);
        assert_eq!(
            (v.payload_type, v.seq, v.timestamp, v.ssrc),
            (111, 65535, u32::MAX, 42)
        );
        assert_eq!(v.csrc_bytes(), &csrcs);
        assert_eq!(v.extensions().collect::<Vec<_>>(), vec![(3, &aset[..])]);
        assert_eq!(v.payload(), b"xyz");
    }
}
