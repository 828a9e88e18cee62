//! The jitter buffer's depacketizers (VP8 RFC 7741, H.264 RFC 6184, Opus): frame-start detection and
//! frame assembly never panic, and the three writers agree: assembling into a `Vec`, counting with
//! `ByteCount` and filling an uninitialised slice of exactly that size (the unsafe path the Python
//! binding uses) give the same result and the same bytes.
//!
//! Input: one byte choosing the codec, then the frame's payloads framed as `mediasrv_fuzz::items`.
#![no_main]
use std::mem::MaybeUninit;

use libfuzzer_sys::fuzz_target;
use mediasrv_core::jitter::depack::{
    assemble, starts_frame, vp8_descriptor_len, ByteCount, FrameCodec, SliceOut,
};
use mediasrv_fuzz::items;

const CODECS: [FrameCodec; 3] = [FrameCodec::Vp8, FrameCodec::H264, FrameCodec::Opus];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let codec = CODECS[sel as usize % CODECS.len()];
    let payloads: Vec<&[u8]> = items(rest).collect();
    for p in &payloads {
        let _ = starts_frame(codec, p);
        if let Some(n) = vp8_descriptor_len(p) {
            assert!(n <= p.len());
        }
    }
    let mut vec = Vec::new();
    let by_vec = assemble(codec, payloads.iter().copied(), &mut vec);
    let mut count = ByteCount::default();
    let by_count = assemble(codec, payloads.iter().copied(), &mut count);
    assert_eq!(by_vec, by_count);
    if by_vec.is_err() {
        return;
    }
    assert_eq!(vec.len(), count.0);
    let mut buf: Vec<MaybeUninit<u8>> = vec![MaybeUninit::uninit(); count.0];
    let mut slice = SliceOut::new(&mut buf);
    let by_slice = assemble(codec, payloads.iter().copied(), &mut slice);
    assert_eq!(by_slice, by_vec);
    assert_eq!(slice.written(), count.0);
    // SAFETY: `written() == len` — every byte was initialised by the assembler.
    let bytes: Vec<u8> = buf.iter().map(|b| unsafe { b.assume_init() }).collect();
    assert_eq!(bytes, vec);
});
