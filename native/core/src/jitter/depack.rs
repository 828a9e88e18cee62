//! Codec payload formats: where a frame starts, and how the payloads of one frame become the bytes a
//! muxer stores (VP8: payload descriptors stripped; H.264: Annex B NAL units; Opus: as is).

use std::mem::MaybeUninit;

/// Codecs the jitter buffer can assemble frames for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCodec {
    Vp8,
    H264,
    Opus,
}

impl FrameCodec {
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "VP8" => Some(Self::Vp8),
            "H264" => Some(Self::H264),
            "OPUS" => Some(Self::Opus),
            _ => None,
        }
    }

    /// Video frames depend on earlier frames; a lost frame breaks the chain until a keyframe.
    pub fn is_video(self) -> bool {
        !matches!(self, Self::Opus)
    }
}

/// Why a payload cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepackError {
    Empty,
    Truncated,
    UnsupportedNal(u8),
}

/// Length of the VP8 payload descriptor (RFC 7741 section 4.2), or None when truncated.
pub fn vp8_descriptor_len(p: &[u8]) -> Option<usize> {
    let b0 = *p.first()?;
    let mut pos = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(1)?;
        pos = 2;
        if x & 0x80 != 0 {
            let pid = *p.get(pos)?;
            pos += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            pos += 1;
        }
        if x & 0x30 != 0 {
            pos += 1;
        }
    }
    (pos <= p.len()).then_some(pos)
}

const NAL_IDR: u8 = 5;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

/// True when the packet begins a new frame: VP8 start of partition 0, H.264 anything but a FU-A
/// continuation, every Opus packet.
pub fn starts_frame(codec: FrameCodec, p: &[u8]) -> bool {
    match codec {
        FrameCodec::Opus => true,
        FrameCodec::Vp8 => p.first().is_some_and(|b0| b0 & 0x10 != 0 && b0 & 0x07 == 0),
        FrameCodec::H264 => match p.first().map(|b| b & 0x1f) {
            None | Some(0) => false,
            Some(NAL_FU_A) => p.get(1).is_some_and(|fu| fu & 0x80 != 0),
            Some(_) => true,
        },
    }
}

/// Where assembled frame bytes go: a growing `Vec`, a byte counter (to size the output exactly before
/// allocating it, and to validate the frame without copying), or a slice of exactly that size.
pub trait FrameOut {
    fn put(&mut self, bytes: &[u8]);
    fn put_byte(&mut self, b: u8);
}

impl FrameOut for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn put_byte(&mut self, b: u8) {
        self.push(b);
    }
}

/// Counts the bytes a frame assembles to.
#[derive(Debug, Default)]
pub struct ByteCount(pub usize);

impl FrameOut for ByteCount {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
    fn put_byte(&mut self, _: u8) {
        self.0 += 1;
    }
}

/// Fills a slice sized by a previous `ByteCount` pass over the same payloads. The slice may be
/// uninitialised (a fresh Python `bytes`): every byte is written before anyone reads it.
pub struct SliceOut<'a> {
    buf: &'a mut [MaybeUninit<u8>],
    pos: usize,
}

impl<'a> SliceOut<'a> {
    pub fn new(buf: &'a mut [MaybeUninit<u8>]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.pos
    }
}

impl FrameOut for SliceOut<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let dst = &mut self.buf[self.pos..self.pos + bytes.len()]; // bounds-checked
                                                                   // SAFETY: `dst` is exactly `bytes.len()` writable bytes that cannot overlap `bytes`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                dst.as_mut_ptr().cast::<u8>(),
                bytes.len(),
            )
        };
        self.pos += bytes.len();
    }
    fn put_byte(&mut self, b: u8) {
        self.buf[self.pos].write(b);
        self.pos += 1;
    }
}

/// Appends the payloads of one complete frame to `out` in the muxer's format and says whether the frame
/// is a keyframe.
pub fn assemble<'a>(
    codec: FrameCodec,
    payloads: impl Iterator<Item = &'a [u8]>,
    out: &mut impl FrameOut,
) -> Result<bool, DepackError> {
    match codec {
        FrameCodec::Opus => {
            for p in payloads {
                out.put(p);
            }
            Ok(true)
        }
        FrameCodec::Vp8 => {
            let mut first = true;
            let mut key = false;
            for p in payloads {
                let d = vp8_descriptor_len(p).ok_or(DepackError::Truncated)?;
                if first {
                    // VP8 payload header: P bit (inverse keyframe flag) is bit 0 of the first byte.
                    let h = *p.get(d).ok_or(DepackError::Truncated)?;
                    key = h & 0x01 == 0;
                    first = false;
                }
                out.put(&p[d..]);
            }
            if first {
                return Err(DepackError::Empty);
            }
            Ok(key)
        }
        FrameCodec::H264 => h264_assemble(payloads, out),
    }
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];

fn h264_assemble<'a>(
    payloads: impl Iterator<Item = &'a [u8]>,
    out: &mut impl FrameOut,
) -> Result<bool, DepackError> {
    let mut key = false;
    let mut in_fu = false;
    let mut any = false;
    for p in payloads {
        let b0 = *p.first().ok_or(DepackError::Empty)?;
        any = true;
        match b0 & 0x1f {
            1..=23 => {
                key |= b0 & 0x1f == NAL_IDR;
                out.put(&START_CODE);
                out.put(p);
                in_fu = false;
            }
            NAL_STAP_A => {
                let mut pos = 1;
                while pos < p.len() {
                    let size_bytes = p.get(pos..pos + 2).ok_or(DepackError::Truncated)?;
                    let size = u16::from_be_bytes([size_bytes[0], size_bytes[1]]) as usize;
                    let nal = p
                        .get(pos + 2..pos + 2 + size)
                        .ok_or(DepackError::Truncated)?;
                    if let Some(h) = nal.first() {
                        key |= h & 0x1f == NAL_IDR;
                        out.put(&START_CODE);
                        out.put(nal);
                    }
                    pos += 2 + size;
                }
                in_fu = false;
            }
            NAL_FU_A => {
                let fu = *p.get(1).ok_or(DepackError::Truncated)?;
                let nal_type = fu & 0x1f;
                if fu & 0x80 != 0 {
                    key |= nal_type == NAL_IDR;
                    out.put(&START_CODE);
                    out.put_byte((b0 & 0xe0) | nal_type); // reconstructed NAL header: F, NRI, type
                    in_fu = true;
                } else if !in_fu {
                    return Err(DepackError::Truncated); // continuation without its start
                }
                out.put(&p[2..]);
                if fu & 0x40 != 0 {
                    in_fu = false;
                }
            }
            other => return Err(DepackError::UnsupportedNal(other)),
        }
    }
    if !any {
        return Err(DepackError::Empty);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_descriptor_stripped_and_keyframe_flag() {
        let p1: &[u8] = &[0x90, 0x80, 0x05, 0x10, 0xaa]; // X, I with 7-bit pid; header P=0
        let p2: &[u8] = &[0x80, 0x80, 0x05, 0xbb, 0xcc];
        let mut out = Vec::new();
        let key = assemble(FrameCodec::Vp8, [p1, p2].into_iter(), &mut out).unwrap();
        assert!(key);
        assert_eq!(out, [0x10, 0xaa, 0xbb, 0xcc]);
        assert!(starts_frame(FrameCodec::Vp8, p1));
        assert!(!starts_frame(FrameCodec::Vp8, p2));
    }

    #[test]
    fn h264_stap_a_and_fu_a_to_annex_b() {
        let stap: &[u8] = &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce];
        let fu1: &[u8] = &[0x7c, 0x85, 0x01, 0x02];
        let fu2: &[u8] = &[0x7c, 0x45, 0x03];
        let mut out = Vec::new();
        let key = assemble(FrameCodec::H264, [stap, fu1, fu2].into_iter(), &mut out).unwrap();
        assert!(key);
        assert_eq!(
            out,
            [0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 1, 2, 3]
        );
        assert!(starts_frame(FrameCodec::H264, fu1));
        assert!(!starts_frame(FrameCodec::H264, fu2));
    }

    #[test]
    fn h264_bad_input_is_an_error() {
        let mut out = Vec::new();
        assert!(assemble(
            FrameCodec::H264,
            [&[0x7c, 0x05, 1][..]].into_iter(),
            &mut out
        )
        .is_err());
        assert!(assemble(
            FrameCodec::H264,
            [&[0x78, 0, 9, 1][..]].into_iter(),
            &mut out
        )
        .is_err());
        assert!(assemble(FrameCodec::H264, [&[0x7f][..]].into_iter(), &mut out).is_err());
    }
}
