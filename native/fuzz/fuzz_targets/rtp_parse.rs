//! RTP header parsing (RFC 3550, RFC 8285 extensions): never panics, every view stays inside the
//! datagram, keyframe detection and the H.264 SPS reader cope with any payload, and what parses
//! survives a rewrite through the router's packet writer. The payload is also read as RFC 2198 RED:
//! what parses has its blocks inside the payload, and the router's rewrite of its block payload
//! types changes nothing else.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mediasrv_core::jitter::RtpFields;
use mediasrv_core::keyframe::{is_keyframe_start, CodecKind};
use mediasrv_core::red::{RedForward, RedPayload};
use mediasrv_core::rtp::{write_packet, HeaderOut, RtpView};

const KINDS: [CodecKind; 7] = [
    CodecKind::Vp8,
    CodecKind::Vp9,
    CodecKind::H264,
    CodecKind::Av1,
    CodecKind::Rtx,
    CodecKind::Red,
    CodecKind::Other,
];

/// RED read from `payload`: blocks inside it, a mapped copy differing only in the block types.
fn check_red(payload: &[u8], seed: u8) {
    let Ok(r) = RedPayload::parse(payload) else {
        return;
    };
    assert!(r.header_len() <= r.primary_offset && r.primary_offset < payload.len());
    assert_eq!(r.primary(payload).len(), payload.len() - r.primary_offset);
    assert!(r.pt_offsets().all(|i| i < r.header_len()));
    assert_eq!(
        payload[r.header_len() - 1],
        r.primary_pt,
        "primary header: F=0"
    );
    // A map that moves some types, drops others (0xff) and keeps the rest.
    let mut map = [0u8; 128];
    for (pt, to) in map.iter_mut().enumerate() {
        *to = match (pt as u8).wrapping_add(seed) % 3 {
            0 => pt as u8,
            1 => (pt as u8).wrapping_add(seed) & 0x7f,
            _ => 0xff,
        };
    }
    let (same, all) = r.mapping(payload, &map);
    match r.forward_as(payload, &map, 100) {
        RedForward::AsIs(pt) | RedForward::Rewritten(pt) => assert_eq!(pt, 100),
        RedForward::Primary(pt) => assert_eq!((pt, all), (map[r.primary_pt as usize], false)),
        RedForward::NotNegotiated => assert!(!all && map[r.primary_pt as usize] == 0xff),
    }
    if all {
        let mut out = vec![seed];
        r.write_mapped(payload, &map, &mut out);
        assert_eq!(out.len(), payload.len() + 1);
        let offsets: Vec<usize> = r.pt_offsets().collect();
        for (i, (a, b)) in payload.iter().zip(&out[1..]).enumerate() {
            if offsets.contains(&i) {
                assert_eq!((b & 0x80, b & 0x7f), (a & 0x80, map[(a & 0x7f) as usize]));
            } else {
                assert_eq!(a, b);
            }
        }
        assert_eq!(same, out[1..] == *payload);
    }
}

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
    check_red(v.payload(), v.seq as u8);
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
