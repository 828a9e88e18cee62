use super::*;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// SPS NAL units libx264 wrote (through PyAV) for these sizes: baseline 320x180 (cropped from
/// 192), high 1280x720, high 4:4:4 641x481 (cropped on both axes), interlaced 640x360 (fields),
/// high 4:2:2 1920x1080. All carry emulation-prevention bytes.
const X264: [(&str, (u16, u16)); 5] = [
    (
        "6742c00dd901419f9e10000003001000000303c0f142a480",
        (320, 180),
    ),
    (
        "6764001facd9405005ba10000003001000000303c0f1831960",
        (1280, 720),
    ),
    (
        "67f4001e919b281487fc210842000003000200000300781e2c5b2c",
        (641, 481),
    ),
    (
        "6764001eacd940a063f3c2000003000200000300783e28532c",
        (640, 360),
    ),
    (
        "677a0028bcd940780227e2610000030001000003003c0f183196",
        (1920, 1080),
    ),
];

#[test]
fn sizes_from_real_encoders() {
    for (hex, size) in X264 {
        assert_eq!(sps_size(&unhex(hex)), Some(size), "{hex}");
    }
}

/// Writes RBSP bits and escapes them into a NAL unit, as an encoder does.
#[derive(Default)]
struct Writer(Vec<bool>);

impl Writer {
    fn u(&mut self, n: u32, v: u64) -> &mut Self {
        for i in (0..n).rev() {
            self.0.push(v >> i & 1 == 1);
        }
        self
    }
    fn ue(&mut self, v: u64) -> &mut Self {
        let n = 64 - (v + 1).leading_zeros();
        self.u(n - 1, 0).u(n, v + 1)
    }
    fn se(&mut self, v: i64) -> &mut Self {
        self.ue(if v > 0 {
            2 * v as u64 - 1
        } else {
            2 * v.unsigned_abs()
        })
    }
    fn nal(&mut self) -> Vec<u8> {
        self.u(1, 1);
        while !self.0.len().is_multiple_of(8) {
            self.0.push(false);
        }
        let rbsp: Vec<u8> = self
            .0
            .chunks(8)
            .map(|c| c.iter().fold(0u8, |a, b| a << 1 | *b as u8))
            .collect();
        let mut out = vec![0x67];
        let mut zeros = 0;
        for b in rbsp {
            if zeros >= 2 && b <= 3 {
                out.push(3);
                zeros = 0;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            out.push(b);
        }
        out
    }
}

/// A high-profile SPS with scaling matrices (one list "use default", one spelled out, whose
/// deltas decide how many codes follow), picture order type 1 and bottom cropping.
fn high_with_scaling(chroma: u64, frame_mbs_only: bool, crop_bottom: u64) -> Vec<u8> {
    let mut w = Writer::default();
    w.u(8, 100).u(16, 0x001f).ue(0);
    w.ue(chroma);
    if chroma == 3 {
        w.u(1, 0);
    }
    w.ue(0).ue(0).u(1, 0).u(1, 1); // bit depths, bypass, scaling matrix present
    let lists = if chroma == 3 { 12 } else { 8 };
    for i in 0..lists {
        match i {
            0 => {
                w.u(1, 1).se(-8); // next scale 0: use the default list, nothing more
            }
            1 => {
                w.u(1, 1);
                for k in 0..16 {
                    w.se(if k % 2 == 0 { 3 } else { -2 });
                }
            }
            6 => {
                w.u(1, 1);
                w.se(5).se(-13); // reaches 0 after two codes: the rest repeat the last value
            }
            _ => {
                w.u(1, 0);
            }
        }
    }
    w.ue(0).ue(1).u(1, 0).se(-1).se(2).ue(3).se(1).se(-1).se(7); // poc type 1, cycle of 3
    w.ue(2).u(1, 0); // refs, gaps
    let height_units = if frame_mbs_only { 68 } else { 34 };
    w.ue(119).ue(height_units - 1).u(1, frame_mbs_only as u64);
    if !frame_mbs_only {
        w.u(1, 1);
    }
    w.u(1, 1); // direct_8x8_inference_flag
    w.u(1, 1).ue(0).ue(0).ue(0).ue(crop_bottom);
    w.u(1, 0); // no VUI
    w.nal()
}

#[test]
fn scaling_lists_picture_order_cycle_and_cropping() {
    // 1920x1088 coded, cropped by 8 lines (4:2:0: 2 lines a unit) to 1080.
    assert_eq!(sps_size(&high_with_scaling(1, true, 4)), Some((1920, 1080)));
    // Interlaced: the crop unit doubles again.
    assert_eq!(
        sps_size(&high_with_scaling(1, false, 2)),
        Some((1920, 1080))
    );
    // 4:2:2 (one line a unit vertically), 4:4:4 (twelve lists), monochrome.
    assert_eq!(sps_size(&high_with_scaling(2, true, 8)), Some((1920, 1080)));
    assert_eq!(sps_size(&high_with_scaling(3, true, 8)), Some((1920, 1080)));
    assert_eq!(sps_size(&high_with_scaling(0, true, 8)), Some((1920, 1080)));
    // Cropping everything away, or more, is no picture.
    assert_eq!(sps_size(&high_with_scaling(1, true, 544)), None);
    assert_eq!(sps_size(&high_with_scaling(1, true, 1_000_000)), None);
}

#[test]
fn in_rtp_payloads() {
    let sps = unhex(X264[0].0);
    let pps = [0x68, 0xce, 0x3c, 0x80];
    assert_eq!(keyframe_size(&sps), Some((320, 180)));
    let mut stap = vec![0x78];
    for nal in [&pps[..], &sps[..]] {
        stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        stap.extend_from_slice(nal);
    }
    assert_eq!(keyframe_size(&stap), Some((320, 180)));
    // An aggregate whose size runs past the payload, one without an SPS, an IDR slice, nothing.
    assert_eq!(keyframe_size(&stap[..stap.len() - 1]), None);
    assert_eq!(keyframe_size(&stap[..1 + 2 + pps.len()]), None);
    assert_eq!(keyframe_size(&[0x65, 0x88, 0x84]), None);
    assert_eq!(keyframe_size(&[]), None);
    assert_eq!(sps_size(&pps), None);
}

#[test]
fn cut_short_or_crafted_input_is_refused() {
    for (hex, size) in X264 {
        let nal = unhex(hex);
        for n in 0..nal.len() {
            // Cut before the cropping fields: nothing; later cuts only lose VUI.
            let got = sps_size(&nal[..n]);
            assert!(got.is_none() || got == Some(size), "{hex}[..{n}]: {got:?}");
        }
        assert_eq!(sps_size(&nal[..4]), None);
    }
    // A picture order cycle of 2^32 - 2 entries is refused outright.
    let mut w = Writer::default();
    w.u(8, 66)
        .u(16, 0x001f)
        .ue(0)
        .ue(0)
        .ue(1)
        .u(1, 0)
        .se(0)
        .se(0);
    w.ue(u32::MAX as u64 - 1);
    let mut nal = w.nal();
    nal.extend(std::iter::repeat_n(0xff, 100_000));
    assert_eq!(sps_size(&nal), None);
    // Exp-Golomb codes longer than 32 bits, and a chroma format that does not exist.
    assert_eq!(sps_size(&[0x67, 66, 0, 31, 0, 0, 0, 0, 0, 0x80]), None);
    let mut w = Writer::default();
    w.u(8, 100).u(16, 0).ue(0).ue(4);
    assert_eq!(sps_size(&w.nal()), None);
}

#[test]
fn the_largest_sizes_are_bounded() {
    let mut w = Writer::default();
    w.u(8, 66).u(16, 0x001f).ue(0).ue(0).ue(2).ue(1).u(1, 0);
    w.ue(1054).ue(1054).u(1, 1).u(1, 1).u(1, 0);
    assert_eq!(sps_size(&w.nal()), Some((16_880, 16_880)));
    let mut w = Writer::default();
    w.u(8, 66).u(16, 0x001f).ue(0).ue(0).ue(2).ue(1).u(1, 0);
    w.ue(u32::MAX as u64).ue(10).u(1, 1).u(1, 1).u(1, 0);
    assert_eq!(sps_size(&w.nal()), None);
}

proptest::proptest! {
    #[test]
    fn arbitrary_payloads_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let _ = keyframe_size(&data);
        let mut sps = data.clone();
        if let Some(b) = sps.first_mut() {
            *b = 0x67;
        }
        if let Some((w, h)) = sps_size(&sps) {
            proptest::prop_assert!(w > 0 && h > 0 && w as u64 <= MAX_SIDE && h as u64 <= MAX_SIDE);
        }
    }
}
