//! VP8 RTP payload descriptor (RFC 7741 section 4.2): the fields a forwarder reads to switch
//! layers (picture ID, TL0PICIDX, temporal layer, layer-sync bit, keyframe) and rewrites in place
//! so a receiver sees one continuous stream across switches.
//!
//! ```text
//!  byte 0: |X|R|N|S|R| PID |      X: extension byte follows; S: start of partition; PID: partition
//!  byte 1: |I|L|T|K| RSV   |      (if X) I: picture ID, L: TL0PICIDX, T: TID/Y, K: KEYIDX present
//!          |M| PictureID   |      (if I) M=1: 15-bit picture ID over two bytes, else 7 bits
//!          |  TL0PICIDX    |      (if L)
//!          |TID|Y| KEYIDX  |      (if T or K)
//! ```

/// Why a payload's descriptor cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vp8Error {
    Empty,
    /// The descriptor claims more bytes than the payload holds (or leaves no VP8 data).
    Truncated,
}

/// Picture ID as carried: its value and whether the field is 15 bits wide (else 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PictureId {
    pub value: u16,
    pub long: bool,
}

impl PictureId {
    /// Number of bits of the field (7 or 15).
    pub fn bits(self) -> u32 {
        if self.long {
            15
        } else {
            7
        }
    }
}

/// A parsed descriptor: field values plus where the rewritable ones sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    pub non_reference: bool,
    pub start_of_partition: bool,
    pub partition_index: u8,
    pub picture_id: Option<PictureId>,
    pub tl0_pic_idx: Option<u8>,
    /// Temporal layer index, when the T bit is set.
    pub temporal_id: Option<u8>,
    /// Y: this frame depends only on TL0 frames, so a receiver may switch up to its layer here.
    pub layer_sync: bool,
    pub key_idx: Option<u8>,
    /// Bytes of descriptor before the VP8 payload.
    pub len: usize,
    /// First packet of a keyframe: start of partition 0 and the payload header's P bit clear.
    pub keyframe: bool,
    picture_id_at: usize,
    tl0_at: usize,
}

impl Vp8Descriptor {
    /// First packet of a frame (start of partition 0).
    pub fn starts_frame(&self) -> bool {
        self.start_of_partition && self.partition_index == 0
    }
}

/// Reads the descriptor of an RTP payload. A descriptor that leaves no VP8 payload byte is
/// `Truncated` (a packet made only of a descriptor carries nothing a decoder can use).
pub fn parse(p: &[u8]) -> Result<Vp8Descriptor, Vp8Error> {
    let b0 = *p.first().ok_or(Vp8Error::Empty)?;
    let mut d = Vp8Descriptor {
        non_reference: b0 & 0x20 != 0,
        start_of_partition: b0 & 0x10 != 0,
        partition_index: b0 & 0x07,
        picture_id: None,
        tl0_pic_idx: None,
        temporal_id: None,
        layer_sync: false,
        key_idx: None,
        len: 1,
        keyframe: false,
        picture_id_at: 0,
        tl0_at: 0,
    };
    let byte = |i: usize| p.get(i).copied().ok_or(Vp8Error::Truncated);
    if b0 & 0x80 != 0 {
        let x = byte(1)?;
        let mut pos = 2;
        if x & 0x80 != 0 {
            let hi = byte(pos)?;
            d.picture_id_at = pos;
            d.picture_id = Some(if hi & 0x80 != 0 {
                let lo = byte(pos + 1)?;
                pos += 2;
                PictureId {
                    value: u16::from_be_bytes([hi & 0x7f, lo]),
                    long: true,
                }
            } else {
                pos += 1;
                PictureId {
                    value: hi as u16,
                    long: false,
                }
            });
        }
        if x & 0x40 != 0 {
            d.tl0_at = pos;
            d.tl0_pic_idx = Some(byte(pos)?);
            pos += 1;
        }
        if x & 0x30 != 0 {
            let t = byte(pos)?;
            if x & 0x20 != 0 {
                d.temporal_id = Some(t >> 6);
                d.layer_sync = t & 0x20 != 0;
            }
            if x & 0x10 != 0 {
                d.key_idx = Some(t & 0x1f);
            }
            pos += 1;
        }
        d.len = pos;
    }
    let header = *p.get(d.len).ok_or(Vp8Error::Truncated)?;
    d.keyframe = d.starts_frame() && header & 0x01 == 0;
    Ok(d)
}

/// Writes a new picture ID and/or TL0PICIDX into `payload`, whose descriptor `d` was parsed from it.
/// The picture ID keeps the field's width (the value is taken modulo 2^7 or 2^15); a field the
/// packet does not carry is left absent.
pub fn rewrite(payload: &mut [u8], d: &Vp8Descriptor, picture_id: Option<u16>, tl0: Option<u8>) {
    if let (Some(pid), Some(new)) = (d.picture_id, picture_id) {
        let at = d.picture_id_at;
        if pid.long {
            let v = new & 0x7fff;
            payload[at] = 0x80 | (v >> 8) as u8;
            payload[at + 1] = v as u8;
        } else {
            payload[at] = (new & 0x7f) as u8;
        }
    }
    if let (Some(_), Some(new)) = (d.tl0_pic_idx, tl0) {
        payload[d.tl0_at] = new;
    }
}

/// Width and height from a keyframe's VP8 frame header (RFC 6386 9.1: 3-byte frame tag, start code
/// 9d 01 2a, then 14-bit width and height, little-endian), for the first packet of a keyframe.
pub fn keyframe_size(payload: &[u8], d: &Vp8Descriptor) -> Option<(u16, u16)> {
    if !d.keyframe {
        return None;
    }
    let h = payload.get(d.len..d.len + 10)?;
    if h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([h[6], h[7]]) & 0x3fff;
    let ht = u16::from_le_bytes([h[8], h[9]]) & 0x3fff;
    Some((w, ht))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_descriptor_15_bit() {
        // X S PID0 | I L T K | M pid=0x1234 | TL0=7 | TID=2 Y=1 KEYIDX=5 | P=0 (key)
        let p = [0x90, 0xf0, 0x92, 0x34, 0x07, 0xa5, 0x10, 0x02];
        let d = parse(&p).unwrap();
        assert_eq!(
            d.picture_id,
            Some(PictureId {
                value: 0x1234,
                long: true
            })
        );
        assert_eq!(d.tl0_pic_idx, Some(7));
        assert_eq!(d.temporal_id, Some(2));
        assert!(d.layer_sync);
        assert_eq!(d.key_idx, Some(5));
        assert_eq!(d.len, 6);
        assert!(d.keyframe && d.starts_frame());
    }

    #[test]
    fn short_picture_id_and_rewrite_keeps_width() {
        // X N S | I | pid=0x55 | inter frame
        let mut p = [0xb0, 0x80, 0x55, 0x01];
        let d = parse(&p).unwrap();
        assert!(d.non_reference && !d.keyframe);
        assert_eq!(d.picture_id.unwrap().bits(), 7);
        rewrite(&mut p, &d, Some(0x1ff), Some(9)); // no TL0 field: ignored
        assert_eq!(p, [0xb0, 0x80, 0x7f, 0x01]);
    }

    #[test]
    fn rewrite_15_bit_and_tl0() {
        let mut p = [0x90, 0xe0, 0x80, 0x01, 0x10, 0x40, 0x9d];
        let d = parse(&p).unwrap();
        rewrite(&mut p, &d, Some(0x8123), Some(0xff)); // 0x8123 mod 2^15
        let back = parse(&p).unwrap();
        assert_eq!(back.picture_id.unwrap().value, 0x0123);
        assert_eq!(back.tl0_pic_idx, Some(0xff));
        assert_eq!(back.temporal_id, Some(1));
        assert!(!back.layer_sync);
        assert_eq!(p[6], 0x9d); // payload untouched
    }

    #[test]
    fn keyframe_dimensions() {
        // descriptor 0x10 | frame tag (key) | start code | 640 x 360
        let p = [
            0x10, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01, 0x00,
        ];
        let d = parse(&p).unwrap();
        assert_eq!(keyframe_size(&p, &d), Some((640, 360)));
        assert_eq!(keyframe_size(&p[..10], &d), None); // truncated
        let mut bad = p;
        bad[4] = 0;
        assert_eq!(keyframe_size(&bad, &d), None); // no start code
    }

    #[test]
    fn minimal_descriptor() {
        let d = parse(&[0x10, 0x9c]).unwrap();
        assert!(d.keyframe);
        assert_eq!(d.len, 1);
        assert_eq!(d.picture_id, None);
        assert_eq!(d.temporal_id, None);
        // continuation of partition 1: never a keyframe start
        assert!(!parse(&[0x11, 0x9c]).unwrap().keyframe);
    }

    #[test]
    fn malformed_is_an_error_not_a_panic() {
        assert_eq!(parse(&[]), Err(Vp8Error::Empty));
        for p in [
            &[0x80][..],
            &[0x90, 0x80],
            &[0x90, 0x80, 0x81],
            &[0x90, 0x40],
            &[0x90, 0x20],
            &[0x90, 0xf0, 0x92, 0x34, 0x07, 0xa5], // no VP8 byte after the descriptor
        ] {
            assert_eq!(parse(p), Err(Vp8Error::Truncated), "{p:02x?}");
        }
        // every two-byte start, followed by short tails: parse never panics
        for b0 in 0..=255u8 {
            for b1 in 0..=255u8 {
                for tail in [&[][..], &[0x80], &[0x80, 0x01], &[0x00, 0x00, 0x00]] {
                    let mut p = vec![b0, b1];
                    p.extend_from_slice(tail);
                    let _ = parse(&p[..1]);
                    let _ = parse(&p);
                }
            }
        }
    }
}
