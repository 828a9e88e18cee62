//! Picture size from an H.264 sequence parameter set (ITU-T H.264 7.3.2.1.1), read from the RTP
//! payload of a keyframe (RFC 6184: the SPS as a single NAL unit or inside a STAP-A). Used to learn
//! the height of each simulcast layer, as VP8 keyframe headers give it for VP8.
//!
//! The SPS comes from a publisher: every read is bounds-checked, emulation-prevention bytes are
//! skipped as the bits are read (no copy), and at most `MAX_SPS_BYTES` of it are looked at, so a
//! crafted one costs a bounded number of bit reads and never panics.

/// Profiles whose SPS carries chroma format, bit depths and scaling matrices.
const HIGH_PROFILES: [u8; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];
/// A real SPS is well under 100 bytes (a few hundred with scaling matrices).
const MAX_SPS_BYTES: usize = 1024;
/// Level 6.2 allows 139264 macroblocks a frame: at most about 16880 pixels a side.
const MAX_SIDE: u64 = 16_880;
/// The most `num_ref_frames_in_pic_order_cnt_cycle` may be.
const MAX_POC_CYCLE: u64 = 255;

const NAL_SPS: u8 = 7;
const NAL_STAP_A: u8 = 24;

/// Reads bits of a NAL unit's payload (RBSP), dropping each emulation-prevention byte (the 03 of
/// 00 00 03) as it comes.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    cur: u8,
    left: u8,
    zeros: u8,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data: &data[..data.len().min(MAX_SPS_BYTES)],
            pos: 0,
            cur: 0,
            left: 0,
            zeros: 0,
        }
    }

    fn bit(&mut self) -> Option<u64> {
        if self.left == 0 {
            let mut b = *self.data.get(self.pos)?;
            self.pos += 1;
            if self.zeros >= 2 && b == 3 {
                b = *self.data.get(self.pos)?;
                self.pos += 1;
                self.zeros = 0;
            }
            self.zeros = if b == 0 {
                self.zeros.saturating_add(1)
            } else {
                0
            };
            self.cur = b;
            self.left = 8;
        }
        self.left -= 1;
        Some(((self.cur >> self.left) & 1) as u64)
    }

    /// u(n), n <= 32.
    fn u(&mut self, n: u32) -> Option<u64> {
        let mut v = 0;
        for _ in 0..n {
            v = v << 1 | self.bit()?;
        }
        Some(v)
    }

    fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
    }

    /// ue(v): Exp-Golomb, at most 32 leading zeros (values below 2^32).
    fn ue(&mut self) -> Option<u64> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 32 {
                return None;
            }
        }
        Some((1u64 << zeros) - 1 + self.u(zeros)?)
    }

    /// se(v), only skipped here: its value never matters for the size.
    fn se(&mut self) -> Option<()> {
        self.ue().map(|_| ())
    }
}

/// scaling_list() (7.3.2.1.1.1): only its length in bits matters, which depends on the values.
fn skip_scaling_list(b: &mut Bits<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            let k = b.ue()? as i64;
            let delta = if k & 1 == 1 { (k + 1) / 2 } else { -(k / 2) };
            next = (last + delta).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// (width, height) in pixels from an SPS NAL unit (header byte included); None if it is not one,
/// is cut short or describes an impossible picture.
pub fn sps_size(nal: &[u8]) -> Option<(u16, u16)> {
    if nal.first()? & 0x1f != NAL_SPS {
        return None;
    }
    let mut b = Bits::new(&nal[1..]);
    let profile = b.u(8)? as u8;
    b.u(16)?; // constraint flags, level_idc
    b.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    let mut separate_planes = false;
    if HIGH_PROFILES.contains(&profile) {
        chroma_format = b.ue()?;
        if chroma_format > 3 {
            return None;
        }
        if chroma_format == 3 {
            separate_planes = b.flag()?;
        }
        b.ue()?; // bit_depth_luma_minus8
        b.ue()?; // bit_depth_chroma_minus8
        b.flag()?; // qpprime_y_zero_transform_bypass_flag
        if b.flag()? {
            // seq_scaling_matrix_present_flag: six 4x4 lists, then two (4:4:4: six) 8x8 lists.
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if b.flag()? {
                    skip_scaling_list(&mut b, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    b.ue()?; // log2_max_frame_num_minus4
    match b.ue()? {
        0 => {
            b.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            b.flag()?; // delta_pic_order_always_zero_flag
            b.se()?; // offset_for_non_ref_pic
            b.se()?; // offset_for_top_to_bottom_field
            let cycle = b.ue()?;
            if cycle > MAX_POC_CYCLE {
                return None;
            }
            for _ in 0..cycle {
                b.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    b.ue()?; // max_num_ref_frames
    b.flag()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = b.ue()? + 1;
    let height_map_units = b.ue()? + 1;
    let frame_mbs_only = b.flag()?;
    if !frame_mbs_only {
        b.flag()?; // mb_adaptive_frame_field_flag
    }
    b.flag()?; // direct_8x8_inference_flag
    let crop = if b.flag()? {
        (b.ue()?, b.ue()?, b.ue()?, b.ue()?)
    } else {
        (0, 0, 0, 0)
    };
    // Crop units (Table 6-1 and 7.4.2.1.1): in chroma samples, fields counting twice vertically.
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let (sub_w, sub_h) = match (chroma_format, separate_planes) {
        (1, _) => (2, 2),
        (2, _) => (2, 1),
        _ => (1, 1), // monochrome, 4:4:4, separate colour planes
    };
    let width = (width_mbs * 16).checked_sub(sub_w * (crop.0 + crop.1))?;
    let height = (field_factor * height_map_units * 16)
        .checked_sub(sub_h * field_factor * (crop.2 + crop.3))?;
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return None;
    }
    Some((width as u16, height as u16))
}

/// The picture size announced by the SPS in an H.264 RTP payload: a single SPS NAL unit, or the
/// first SPS inside a STAP-A. None for other payloads (an SPS in FU-A fragments is not assembled).
pub fn keyframe_size(payload: &[u8]) -> Option<(u16, u16)> {
    match payload.first()? & 0x1f {
        NAL_SPS => sps_size(payload),
        NAL_STAP_A => {
            let mut pos = 1;
            while pos + 2 < payload.len() {
                let size = u16::from_be_bytes([payload[pos], payload[pos + 1]]) as usize;
                let nal = payload.get(pos + 2..pos + 2 + size)?;
                if nal.first().is_some_and(|h| h & 0x1f == NAL_SPS) {
                    return sps_size(nal);
                }
                pos += 2 + size;
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
