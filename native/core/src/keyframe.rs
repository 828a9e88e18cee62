//! Detects the first packet of a keyframe from RTP payload headers, without decoding anything.

/// Codec family, from the SDP codec name, as far as the router needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecKind {
    Vp8,
    Vp9,
    H264,
    Av1,
    Rtx,
    /// RFC 2198 redundant audio: blocks of another codec (Opus) in one payload.
    Red,
    /// Audio or anything else that needs no keyframe gating.
    Other,
}

impl CodecKind {
    pub fn from_name(name: &str) -> Self {
        match name.to_ascii_uppercase().as_str() {
            "VP8" => CodecKind::Vp8,
            "VP9" => CodecKind::Vp9,
            "H264" => CodecKind::H264,
            "AV1" | "AV1X" => CodecKind::Av1,
            "RTX" => CodecKind::Rtx,
            "RED" => CodecKind::Red,
            _ => CodecKind::Other,
        }
    }

    /// Whether a decoder can start at a keyframe detected by `is_keyframe_start`.
    pub fn gated(self) -> bool {
        matches!(
            self,
            CodecKind::Vp8 | CodecKind::Vp9 | CodecKind::H264 | CodecKind::Av1
        )
    }
}

/// True when `payload` is the first packet of a keyframe (a point where a new receiver can start).
pub fn is_keyframe_start(kind: CodecKind, payload: &[u8]) -> bool {
    match kind {
        CodecKind::Vp8 => vp8_keyframe_start(payload),
        CodecKind::Vp9 => vp9_keyframe_start(payload),
        CodecKind::H264 => h264_keyframe_start(payload),
        CodecKind::Av1 => payload.first().is_some_and(|b| b & 0x08 != 0), // N: new coded video sequence
        CodecKind::Rtx | CodecKind::Red | CodecKind::Other => false,
    }
}

/// RFC 7741: start of partition 0 whose VP8 payload header has the P bit clear (descriptor read by
/// `crate::vp8`).
fn vp8_keyframe_start(p: &[u8]) -> bool {
    crate::vp8::parse(p).is_ok_and(|d| d.keyframe)
}

/// RFC 9628 (VP9): B (beginning of frame) set, P (inter-picture predicted) clear, spatial layer 0.
fn vp9_keyframe_start(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let (i, pflag, l, f, b) = (
        b0 & 0x80 != 0,
        b0 & 0x40 != 0,
        b0 & 0x20 != 0,
        b0 & 0x10 != 0,
        b0 & 0x08 != 0,
    );
    if !b || pflag {
        return false;
    }
    let mut pos = 1;
    if i {
        let Some(&pid) = p.get(pos) else { return false };
        pos += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    if l {
        let Some(&layer) = p.get(pos) else {
            return false;
        };
        let sid = (layer >> 1) & 0x07;
        if sid != 0 {
            return false;
        }
        pos += if f { 1 } else { 2 };
    }
    pos < p.len()
}

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

/// RFC 6184: single NAL unit, STAP-A or the first FU-A fragment carrying an IDR slice or an SPS.
fn h264_keyframe_start(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        NAL_IDR | NAL_SPS => true,
        NAL_STAP_A => {
            let mut pos = 1;
            while pos + 2 < p.len() {
                let size = u16::from_be_bytes([p[pos], p[pos + 1]]) as usize;
                let nal = p[pos + 2] & 0x1f;
                if size > 0 && (nal == NAL_IDR || nal == NAL_SPS) {
                    return true;
                }
                pos += 2 + size;
            }
            false
        }
        NAL_FU_A => p
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && matches!(fu & 0x1f, NAL_IDR | NAL_SPS)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_and_interframe() {
        // X=1 S=1 PID=0; I=1 with 15-bit picture id; payload header P=0 (key)
        assert!(is_keyframe_start(
            CodecKind::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00]
        ));
        // same, P=1 (interframe)
        assert!(!is_keyframe_start(
            CodecKind::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x11, 0x02, 0x00]
        ));
        // continuation packet (S=0)
        assert!(!is_keyframe_start(
            CodecKind::Vp8,
            &[0x80, 0x80, 0x81, 0x23, 0x10]
        ));
        // minimal descriptor
        assert!(is_keyframe_start(CodecKind::Vp8, &[0x10, 0x9c]));
        // truncated
        assert!(!is_keyframe_start(CodecKind::Vp8, &[0x90, 0x80, 0x81]));
        assert!(!is_keyframe_start(CodecKind::Vp8, &[]));
    }

    #[test]
    fn h264_forms() {
        assert!(is_keyframe_start(CodecKind::H264, &[0x65, 0x88])); // IDR
        assert!(is_keyframe_start(CodecKind::H264, &[0x67, 0x42])); // SPS
        assert!(!is_keyframe_start(CodecKind::H264, &[0x41, 0x9a])); // non-IDR slice
                                                                     // STAP-A with SPS and PPS
        assert!(is_keyframe_start(
            CodecKind::H264,
            &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce]
        ));
        // STAP-A with only SEI
        assert!(!is_keyframe_start(
            CodecKind::H264,
            &[0x78, 0, 2, 0x06, 0x05]
        ));
        // FU-A start of IDR, and a middle fragment
        assert!(is_keyframe_start(CodecKind::H264, &[0x7c, 0x85, 0x88]));
        assert!(!is_keyframe_start(CodecKind::H264, &[0x7c, 0x05, 0x88]));
        // truncated STAP-A claims a huge NAL
        assert!(!is_keyframe_start(CodecKind::H264, &[0x78, 0xff]));
    }

    #[test]
    fn vp9_keyframe() {
        // I=1 (7-bit pid), B=1, P=0
        assert!(is_keyframe_start(CodecKind::Vp9, &[0x88, 0x01, 0xaa]));
        // P=1
        assert!(!is_keyframe_start(CodecKind::Vp9, &[0xc8, 0x01, 0xaa]));
        // L=1 flexible, spatial layer 1
        assert!(!is_keyframe_start(
            CodecKind::Vp9,
            &[0xb8, 0x01, 0x02, 0xaa]
        ));
    }

    #[test]
    fn audio_is_never_gated() {
        assert!(!CodecKind::from_name("opus").gated());
        assert!(CodecKind::from_name("vp8").gated());
        assert_eq!(CodecKind::from_name("rtx"), CodecKind::Rtx);
    }
}
