//! RTP header parsing (RFC 3550, RFC 8285 extensions): never panics, every view stays inside the
//! datagram, keyframe detection and the H.264 SPS reader cope with any payload, and what parses
//! survives a rewrite through the router's packet writer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mediasrv_core::jitter::RtpFields;
use mediasrv_core::keyframe::{is_keyframe_start, CodecKind};
use mediasrv_core::rtp::{write_packet, HeaderOut, RtpView};

const KINDS: [CodecKind; 6] = [
    CodecKind::Vp8,
    CodecKind::Vp9,
    CodecKind::H264,
    CodecKind::Av1,
    CodecKind::Rtx,
    CodecKind::Other,
];

fuzz_target!(|data: &[u8]| {
    let Ok(v) = RtpView::parse(data) else { return };
    assert_eq!(
        v.header_len() + v.payload().len() + v.padding_len(),
        data.len()
    );
    assert_eq!(v.csrc_bytes().len(), 4 * v.csrc_count());
    assert!(v.payload_type < 128);
    let fields = RtpFields::of(&v);
    assert_eq!((fields.seq, fields.ssrc), (v.seq, v.ssrc));
    let exts: Vec<(u8, &[u8])> = v.extensions().collect();
    for (id, d) in &exts {
        assert!(*id != 0);
        assert!(d.len() <= data.len());
    }
    // Lookups by id find the first element with it; 0 and unused ids find nothing.
    for id in [0u8, 1, 2, 3, 14, 15, 255] {
        let first = exts.iter().find(|(i, _)| *i == id).map(|(_, d)| *d);
        assert_eq!(v.extension(id), if id == 0 { None } else { first });
    }
    for k in KINDS {
        let _ = is_keyframe_start(k, v.payload());
    }
    // The H.264 SPS reader (simulcast layer heights): the payload as a packet and as an SPS.
    for size in [
        mediasrv_core::h264::keyframe_size(v.payload()),
        mediasrv_core::h264::sps_size(v.payload()),
    ]
    .into_iter()
    .flatten()
    {
        assert!(size.0 > 0 && size.1 > 0 && size.0 <= 16_880 && size.1 <= 16_880);
    }
    // Rewrite as the router does (one-byte extensions only) and read it back.
    let mut out = Vec::new();
    let h = HeaderOut {
        marker: v.marker,
        payload_type: v.payload_type,
        seq: v.seq,
        timestamp: v.timestamp,
        ssrc: v.ssrc,
        csrc_bytes: v.csrc_bytes(),
        extensions: &exts,
    };
    write_packet(&mut out, &h, v.payload());
    let w = mediasrv_fuzz::assert_rtp(&out);
    assert_eq!(
        (w.marker, w.payload_type, w.seq, w.timestamp, w.ssrc),
        (v.marker, v.payload_type, v.seq, v.timestamp, v.ssrc)
    );
    assert_eq!(w.csrc_bytes(), v.csrc_bytes());
    assert_eq!(w.payload(), v.payload());
    let writable: Vec<(u8, &[u8])> = exts
        .iter()
        .copied()
        .filter(|(id, d)| (1..=14).contains(id) && (1..=16).contains(&d.len()))
        .collect();
    assert_eq!(w.extensions().collect::<Vec<_>>(), writable);
});
