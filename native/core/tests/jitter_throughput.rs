//! Throughput report of the jitter buffer without Python: packets pushed as the router feeds a
//! recording sink (header fields + a shared payload), frames released into owned buffers. Reports only, never
//! fails on timing: `cargo test --release --test jitter_throughput -- --ignored --nocapture`

use std::time::Instant;

use std::sync::Arc;

use mediasrv_core::jitter::{FrameCodec, JitterBuffer, JitterConfig, RtpFields};
use mediasrv_core::rtp::RtpView;

const PACKETS_PER_FRAME: usize = 3;
const CHUNK: usize = 192;
const BATCH: usize = 16;

/// VP8 in 1 KB packets, 3 per frame, with every seventh pair swapped (as the Python benchmark).
fn stream(frames: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut seq = 65000u16;
    for n in 0..frames {
        for i in 0..PACKETS_PER_FRAME {
            let marker = i == PACKETS_PER_FRAME - 1;
            let mut p = vec![0x80, (marker as u8) << 7 | 96];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&((n * 3000) as u32).to_be_bytes());
            p.extend_from_slice(&0x0BAD_CAFEu32.to_be_bytes());
            p.push(if i == 0 { 0x10 } else { 0 });
            if i == 0 {
                p.push(if n % 100 == 0 { 0 } else { 1 });
            }
            p.extend((0..1024).map(|b| b as u8));
            out.push(p);
            seq = seq.wrapping_add(1);
        }
    }
    for i in (0..out.len() - 1).step_by(7) {
        out.swap(i, i + 1);
    }
    out
}

#[test]
#[ignore = "throughput report; run in release with --ignored --nocapture"]
fn report_insert_and_release_throughput() {
    let packets: Vec<(RtpFields, Arc<Vec<u8>>)> = stream(6400)
        .iter()
        .map(|p| {
            let rtp = RtpView::parse(p).unwrap();
            (RtpFields::of(&rtp), Arc::new(rtp.payload().to_vec()))
        })
        .collect();
    let mut jb = JitterBuffer::with_packet_buf(JitterConfig::new(FrameCodec::Vp8));
    let (mut push_ns, mut pop_ns, mut frames, mut n) = (0u128, 0u128, 0usize, 0usize);
    let mut sink = Vec::new();
    for chunk in packets.chunks(CHUNK) {
        // in cache, as a packet just received is
        let warm: u64 = chunk
            .iter()
            .map(|(_, p)| p.iter().map(|b| *b as u64).sum::<u64>())
            .sum();
        std::hint::black_box(warm);
        for batch in chunk.chunks(BATCH) {
            let t0 = Instant::now();
            for (header, payload) in batch {
                jb.push_payload(*header, Arc::clone(payload), 0);
            }
            let t1 = Instant::now();
            frames += jb.pop_frames_with(0, |info, parts| {
                let mut data = vec![0; info.len];
                parts.write_to(&mut data);
                sink.push(data);
            });
            let t2 = Instant::now();
            sink.clear();
            push_ns += (t1 - t0).as_nanos();
            pop_ns += (t2 - t1).as_nanos();
            n += batch.len();
        }
    }
    assert_eq!(frames, 6400);
    println!(
        "jitter VP8 1 KB packets: push {:.0} ns/packet, release {:.0} ns/packet ({} packets)",
        push_ns as f64 / n as f64,
        pop_ns as f64 / n as f64,
        n
    );
}
