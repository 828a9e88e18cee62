//! The jitter buffer (reordering, loss, NACK and keyframe requests, frame release) driven by a
//! stream of RTP packets, times and pops. Released frames are written through the same uninitialised
//! -slice path the Python binding uses, and must be exactly `FrameInfo::len` bytes (checked by the
//! core's debug assertion, on in fuzz builds); counters never run backwards; nothing held exceeds
//! the capacity.
#![no_main]
use std::mem::MaybeUninit;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mediasrv_core::jitter::{FrameCodec, JitterBuffer, JitterConfig, JitterEvent};
use mediasrv_core::rtp::{write_packet, HeaderOut};

#[derive(Arbitrary, Debug)]
enum Op {
    /// A packet `seq_delta` after the last one (wrapping), with this payload.
    Packet {
        seq_delta: i8,
        ts_delta: i16,
        marker: bool,
        ssrc_switch: bool,
        payload: Vec<u8>,
    },
    /// Raw bytes as an RTP packet.
    Raw(Vec<u8>),
    Advance(u16),
    Pop,
    Poll,
    Flush,
    GiveUpHead,
}

#[derive(Arbitrary, Debug)]
struct Input {
    codec: u8,
    capacity: u8,
    target_delay_ms: u8,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let codec = [FrameCodec::Vp8, FrameCodec::H264, FrameCodec::Opus][input.codec as usize % 3];
    let mut cfg = JitterConfig::new(codec);
    cfg.capacity = input.capacity as usize;
    cfg.target_delay_ms = input.target_delay_ms as u64 * 4;
    let mut jb = JitterBuffer::new(cfg);
    let (mut seq, mut ts, mut ssrc) = (65_500u16, 4_294_960_000u32, 1u32);
    let mut now_ms = 1_000u64;
    let mut frames = 0u64;
    let mut pkt = Vec::new();
    for op in input.ops {
        let before = jb.stats().clone();
        match op {
            Op::Packet {
                seq_delta,
                ts_delta,
                marker,
                ssrc_switch,
                payload,
            } => {
                seq = seq.wrapping_add(seq_delta as u16);
                ts = ts.wrapping_add(ts_delta as u32);
                if ssrc_switch {
                    ssrc = ssrc.wrapping_add(1);
                }
                pkt.clear();
                let h = HeaderOut {
                    marker,
                    payload_type: 96,
                    seq,
                    timestamp: ts,
                    ssrc,
                    csrc_bytes: &[],
                    extensions: &[],
                };
                write_packet(&mut pkt, &h, &payload);
                jb.push(&pkt, now_ms);
            }
            Op::Raw(bytes) => {
                jb.push(&bytes, now_ms);
            }
            Op::Advance(ms) => now_ms += ms as u64,
            Op::Pop => {
                jb.pop_frames_with(now_ms, |info, parts| {
                    let mut out = vec![MaybeUninit::<u8>::uninit(); info.len];
                    parts.write_to_uninit(&mut out);
                    frames += 1;
                });
            }
            Op::Poll => {
                for e in jb.poll(now_ms) {
                    if let JitterEvent::Nack(seqs) = e {
                        assert!(!seqs.is_empty());
                    }
                }
            }
            Op::Flush => {
                let _ = jb.flush();
                assert!(!jb.has_pending());
            }
            Op::GiveUpHead => jb.give_up_head(),
        }
        let after = jb.stats();
        assert!(after.packets >= before.packets && after.frames >= before.frames);
        assert!(jb.buffered() <= jb.config().capacity);
    }
    assert!(jb.stats().frames >= frames);
});
