use proptest::prelude::*;

use super::*;

fn rtp(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, if marker { 0x80 | 96 } else { 96 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// VP8 frame `n` split into `parts` packets; frame 0 and every `key_every`-th frame are keyframes.
/// Payload bytes after the descriptor encode (frame, part) so the output can be checked exactly.
fn vp8_frame(first_seq: u16, ts: u32, n: u8, parts: u8, key: bool) -> Vec<Vec<u8>> {
    (0..parts)
        .map(|i| {
            let desc = if i == 0 { 0x10 } else { 0x00 };
            let body = if i == 0 {
                vec![desc, if key { 0x00 } else { 0x01 }, n, i]
            } else {
                vec![desc, n, i]
            };
            rtp(first_seq.wrapping_add(i as u16), ts, i == parts - 1, &body)
        })
        .collect()
}

fn vp8_stream(first_seq: u16, first_ts: u32, frames: u8, parts: u8) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for n in 0..frames {
        let seq = first_seq.wrapping_add(n as u16 * parts as u16);
        let ts = first_ts.wrapping_add(n as u32 * 3000);
        out.extend(vp8_frame(seq, ts, n, parts, n == 0));
    }
    out
}

fn vp8() -> JitterBuffer {
    JitterBuffer::new(JitterConfig::new(FrameCodec::Vp8))
}

fn frame_numbers(frames: &[Frame]) -> Vec<u8> {
    frames.iter().map(|f| f.data[1]).collect()
}

#[test]
fn in_order_frames_leave_at_once_with_descriptors_stripped() {
    let mut jb = vp8();
    let mut out = Vec::new();
    for p in vp8_stream(100, 1000, 4, 3) {
        assert!(jb.push(&p, 0));
        out.extend(jb.pop_frames(0));
    }
    assert_eq!(frame_numbers(&out), [0, 1, 2, 3]);
    assert_eq!(out[0].data, [0x00, 0, 0, 0, 1, 0, 2]);
    assert!(out[0].keyframe && !out[1].keyframe);
    assert_eq!(out[1].timestamp - out[0].timestamp, 3000);
    assert_eq!(jb.stats().frames, 4);
    assert!(jb.poll(0).is_empty());
}

#[test]
fn reordered_packets_come_out_in_order() {
    let mut jb = vp8();
    let mut pkts = vp8_stream(500, 0, 6, 3);
    // swap neighbours and move one packet three places later
    pkts.swap(1, 2);
    pkts.swap(4, 6);
    let moved = pkts.remove(9);
    pkts.insert(12, moved);
    let mut out = Vec::new();
    for p in &pkts {
        jb.push(p, 5);
        out.extend(jb.pop_frames(5));
    }
    assert_eq!(frame_numbers(&out), [0, 1, 2, 3, 4, 5]);
    assert_eq!(jb.stats().recovered, 4);
    assert_eq!(jb.stats().frames_incomplete, 0);
}

/// A packet handle the buffer does not own a copy of (as the Python binding's `bytes` references).
struct Shared(std::rc::Rc<[u8]>);

impl PacketBuf for Shared {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
    const REUSABLE: bool = false;
}

#[test]
fn packets_kept_by_reference_give_the_same_frames_and_are_released() {
    let mut pkts = vp8_stream(65530, 0, 8, 3); // wraps
    pkts.swap(1, 2);
    pkts.swap(7, 9);
    let shared: Vec<std::rc::Rc<[u8]>> = pkts.iter().map(|p| p[..].into()).collect();
    let mut copied = vp8();
    let mut by_ref = JitterBuffer::<Shared>::with_packet_buf(JitterConfig::new(FrameCodec::Vp8));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (p, h) in pkts.iter().zip(&shared) {
        copied.push(p, 5);
        a.extend(copied.pop_frames(5));
        assert!(by_ref.push_packet(Shared(h.clone()), 5));
        b.extend(by_ref.pop_frames(5));
    }
    assert!(!by_ref.push_packet(Shared(shared[0].clone()), 5)); // late
    assert_eq!(frame_numbers(&b), [0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(a, b);
    // Released and rejected packets are not held on to.
    assert!(shared.iter().all(|h| std::rc::Rc::strong_count(h) == 1));
}

#[test]
fn duplicates_are_counted_and_ignored() {
    let mut jb = vp8();
    let pkts = vp8_stream(1, 0, 3, 2);
    let mut out = Vec::new();
    for p in &pkts {
        jb.push(p, 0);
        assert!(!jb.push(p, 0));
        out.extend(jb.pop_frames(0));
    }
    // a duplicate of a released packet is late
    assert!(!jb.push(&pkts[0], 0));
    assert_eq!(frame_numbers(&out), [0, 1, 2]);
    assert_eq!(jb.stats().duplicates + jb.stats().late, 7);
}

#[test]
fn sequence_wrap_at_65535() {
    let mut jb = vp8();
    let mut out = Vec::new();
    let mut pkts = vp8_stream(65530, 0, 5, 3); // seqs 65530..=65535, 0..=8
    pkts.swap(5, 6); // 65535 and 0 reordered across the wrap
    for p in &pkts {
        jb.push(p, 0);
        out.extend(jb.pop_frames(0));
    }
    assert_eq!(frame_numbers(&out), [0, 1, 2, 3, 4]);
    assert_eq!(jb.stats().late, 0);
}

#[test]
fn timestamp_wrap_stays_monotonic() {
    let mut jb = vp8();
    let mut out = Vec::new();
    for p in vp8_stream(7, u32::MAX - 4000, 4, 2) {
        jb.push(&p, 0);
        out.extend(jb.pop_frames(0));
    }
    let ts: Vec<u64> = out.iter().map(|f| f.timestamp).collect();
    assert_eq!(ts.len(), 4);
    for w in ts.windows(2) {
        assert_eq!(w[1] - w[0], 3000);
    }
    assert!(ts[3] > 1u64 << 33, "extended past the wrap: {ts:?}");
}

#[test]
fn loss_is_nacked_then_recovered_by_retransmission() {
    let mut jb = vp8();
    let pkts = vp8_stream(10, 0, 4, 3);
    let mut out = Vec::new();
    for (i, p) in pkts.iter().enumerate() {
        if i == 4 || i == 5 {
            continue; // burst of two in frame 1
        }
        jb.push(p, 0);
        out.extend(jb.pop_frames(0));
    }
    assert_eq!(frame_numbers(&out), [0]);
    assert_eq!(jb.poll(0), [JitterEvent::Nack(vec![14, 15])]);
    assert!(jb.poll(10).is_empty(), "not again before the interval");
    assert_eq!(jb.poll(40), [JitterEvent::Nack(vec![14, 15])]);
    jb.push(&pkts[5], 50);
    jb.push(&pkts[4], 60);
    out.extend(jb.pop_frames(60));
    assert_eq!(frame_numbers(&out), [0, 1, 2, 3]);
    assert!(jb.poll(100).is_empty());
    assert_eq!(jb.stats().recovered, 2);
}

#[test]
fn loss_burst_past_deadline_gives_up_and_requests_a_keyframe() {
    let mut jb = vp8();
    let mut out = Vec::new();
    // frames 0..6 of 3 packets; frames 2 and 3 lost entirely plus the first packet of frame 4
    let pkts = vp8_stream(200, 0, 6, 3);
    for (i, p) in pkts.iter().enumerate() {
        if (6..13).contains(&i) {
            continue;
        }
        jb.push(p, 0);
        out.extend(jb.pop_frames(0));
    }
    assert_eq!(frame_numbers(&out), [0, 1]);
    let nacked = match &jb.poll(0)[..] {
        [JitterEvent::Nack(s)] => s.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(nacked, (206..213).collect::<Vec<u16>>());
    out.extend(jb.pop_frames(199));
    assert_eq!(out.len(), 2, "still waiting within the target delay");
    out.extend(jb.pop_frames(200));
    // frame 5 is complete but a delta frame after a gap: undecodable, keyframe requested
    assert_eq!(frame_numbers(&out), [0, 1]);
    assert!(jb.stats().frames_incomplete >= 1);
    assert_eq!(jb.stats().frames_undecodable, 1);
    assert_eq!(jb.stats().lost, 7);
    assert_eq!(jb.poll(200), [JitterEvent::KeyframeRequest]);
    assert!(jb.poll(300).is_empty(), "rate limited");
    // a keyframe restores the chain
    for p in vp8_frame(218, 18000, 6, 2, true) {
        jb.push(&p, 400);
    }
    let after = jb.pop_frames(400);
    assert_eq!(frame_numbers(&after), [6]);
    assert!(after[0].keyframe);
    assert!(jb.poll(2000).is_empty());
}

#[test]
fn late_packet_after_give_up_is_dropped() {
    let mut jb = vp8();
    let pkts = vp8_stream(0, 0, 3, 2);
    jb.push(&pkts[0], 0);
    jb.push(&pkts[1], 0);
    jb.push(&pkts[3], 0);
    jb.push(&pkts[4], 0);
    jb.push(&pkts[5], 0);
    assert_eq!(jb.pop_frames(0).len(), 1);
    jb.pop_frames(1000);
    assert!(!jb.push(&pkts[2], 1001));
    assert_eq!(jb.stats().late, 1);
}

#[test]
fn first_frame_not_a_keyframe_asks_for_one() {
    let mut jb = vp8();
    for p in vp8_frame(1, 0, 9, 2, false) {
        jb.push(&p, 0);
    }
    assert!(jb.pop_frames(0).is_empty());
    assert_eq!(jb.poll(0), [JitterEvent::KeyframeRequest]);
    assert_eq!(jb.stats().keyframe_requests, 1);
}

#[test]
fn joining_mid_frame_drops_the_partial_frame() {
    let mut jb = vp8();
    let pkts = vp8_stream(0, 0, 3, 3);
    let mut out = Vec::new();
    for p in &pkts[1..] {
        jb.push(p, 0);
        out.extend(jb.pop_frames(0));
    }
    assert!(
        out.is_empty() && jb.stats().frames_incomplete == 0,
        "its start may still come"
    );
    out.extend(jb.pop_frames(1000));
    // frame 0 (the keyframe) lost its start; frames 1 and 2 are deltas with nothing to decode from
    assert!(out.is_empty());
    assert_eq!(jb.stats().frames_incomplete, 1);
    assert_eq!(jb.poll(0), [JitterEvent::KeyframeRequest]);
}

#[test]
fn h264_fu_a_and_stap_a_frames() {
    let mut jb = JitterBuffer::new(JitterConfig::new(FrameCodec::H264));
    let key = [
        rtp(1, 90, false, &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce]),
        rtp(2, 90, false, &[0x7c, 0x85, 1, 2]),
        rtp(3, 90, true, &[0x7c, 0x45, 3]),
    ];
    let delta = rtp(4, 3090, true, &[0x41, 0x9a, 7]);
    jb.push(&key[2], 0);
    jb.push(&key[0], 0);
    jb.push(&delta, 0);
    jb.push(&key[1], 0);
    let out = jb.pop_frames(0);
    assert_eq!(out.len(), 2);
    assert!(out[0].keyframe && !out[1].keyframe);
    assert_eq!(
        out[0].data,
        [0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 1, 2, 3]
    );
    assert_eq!(out[1].data, [0, 0, 0, 1, 0x41, 0x9a, 7]);
}

#[test]
fn opus_packets_are_frames_and_loss_never_needs_a_keyframe() {
    let mut jb = JitterBuffer::new(JitterConfig::new(FrameCodec::Opus));
    for i in 0..5u16 {
        if i == 2 {
            continue;
        }
        jb.push(&rtp(i, i as u32 * 960, i == 0, &[0xfc, i as u8]), 0);
    }
    assert_eq!(jb.pop_frames(0).len(), 2);
    assert_eq!(jb.pop_frames(500).len(), 2);
    assert_eq!(jb.stats().lost, 1);
    assert!(jb.poll(500).is_empty());
}

#[test]
fn padding_only_packets_fill_their_sequence_number() {
    let mut jb = vp8();
    let mut pkts = vp8_stream(0, 0, 2, 2);
    pkts.insert(2, rtp(2, 0, false, &[]));
    // renumber the second frame after the padding packet
    for (i, p) in pkts.iter_mut().enumerate().skip(3) {
        p[2..4].copy_from_slice(&(i as u16).to_be_bytes());
    }
    for p in &pkts {
        jb.push(p, 0);
    }
    assert_eq!(frame_numbers(&jb.pop_frames(0)), [0, 1]);
    assert_eq!(jb.stats().padding, 1);
}

#[test]
fn far_jump_resets() {
    let mut jb = vp8();
    for p in vp8_stream(0, 0, 1, 2) {
        jb.push(&p, 0);
    }
    assert_eq!(jb.pop_frames(0).len(), 1);
    for p in vp8_frame(30000, 9000, 5, 2, true) {
        jb.push(&p, 10);
    }
    assert_eq!(frame_numbers(&jb.pop_frames(10)), [5]);
    assert_eq!(jb.stats().resets, 1);
}

#[test]
fn flush_drops_the_trailing_incomplete_frame() {
    let mut jb = vp8();
    let pkts = vp8_stream(0, 0, 2, 3);
    for p in &pkts[..5] {
        jb.push(p, 0);
    }
    assert_eq!(jb.flush().len(), 1);
    assert_eq!(jb.stats().frames_incomplete, 1);
    assert_eq!(jb.buffered(), 0);
}

proptest! {
    #[test]
    fn never_panics_and_accounts_for_every_frame(
        ops in proptest::collection::vec((any::<u16>(), 0u32..20, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..8), 0u64..50), 0..300),
        codec in 0..3usize,
    ) {
        let codec = [FrameCodec::Vp8, FrameCodec::H264, FrameCodec::Opus][codec];
        let mut jb = JitterBuffer::new(JitterConfig { capacity: 64, ..JitterConfig::new(codec) });
        let mut now = 0;
        let mut released = 0u64;
        let base: u16 = 65500;
        for (seq, ts, marker, payload, dt) in ops {
            now += dt;
            let seq = base.wrapping_add(seq % 200);
            jb.push(&rtp(seq, ts.wrapping_mul(3000).wrapping_sub(6000), marker, &payload), now);
            jb.poll(now);
            released += jb.pop_frames(now).len() as u64;
        }
        released += jb.flush().len() as u64;
        prop_assert_eq!(jb.buffered(), 0);
        prop_assert_eq!(jb.stats().frames, released);
    }

    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut jb = vp8();
        jb.push(&data, 0);
        jb.pop_frames(1000);
        jb.flush();
    }
}

/// Core cost without Python: `cargo test --release --lib jitter::tests::core_throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn core_throughput() {
    let mut pkts = Vec::new();
    for n in 0..3000u32 {
        for mut p in vp8_frame((n * 3) as u16, n * 3000, n as u8, 3, n % 100 == 0) {
            p.extend_from_slice(&[0u8; 1000]);
            pkts.push(p);
        }
    }
    let mut jb = vp8();
    let mut frames = 0;
    for (i, p) in pkts.iter().enumerate().take(3000) {
        jb.push(p, i as u64); // warm up: every slot has held a packet once
        frames += jb.pop_frames(i as u64).len();
    }
    // As the Python binding does: each frame written once into the object that keeps it. Packets
    // are read just before their chunk is timed, as they are in cache right after being received.
    let mut out = Vec::new();
    let mut el = std::time::Duration::ZERO;
    for (k, chunk) in pkts[3000..].chunks(192).enumerate() {
        let warm: u64 = chunk.iter().flatten().map(|b| *b as u64).sum();
        std::hint::black_box(warm);
        let start = std::time::Instant::now();
        for (i, p) in chunk.iter().enumerate() {
            let now = (3000 + k * 192 + i) as u64;
            jb.push(p, now);
            frames += jb.pop_frames_with(now, |info, parts| {
                out.resize(info.len, 0);
                parts.write_to(&mut out);
            });
        }
        el += start.elapsed();
    }
    println!(
        "{frames} frames, {:.1} ns/packet",
        el.as_nanos() as f64 / (pkts.len() - 3000) as f64
    );
}

/// The ring's bookkeeping: `n_missing` counts exactly the slots holding NACK state, every such
/// state belongs to a number inside [head, highest] (none left behind below head or ahead of
/// highest), each number of that window is either stored or missing (never both, never neither),
/// and nothing is stored outside the window.
fn check_ring<P: PacketBuf>(jb: &JitterBuffer<P>) -> Result<(), String> {
    let held = jb.slots.iter().filter(|s| s.missing.is_some()).count();
    if held != jb.n_missing {
        return Err(format!(
            "n_missing {} but {held} slots hold NACK state",
            jb.n_missing
        ));
    }
    let window = |seq: u64| jb.started && seq >= jb.head && seq <= jb.highest;
    for (i, s) in jb.slots.iter().enumerate() {
        if let Some(m) = s.missing {
            if (m.seq & jb.mask) as usize != i || !window(m.seq) {
                return Err(format!(
                    "missing {} in slot {i} outside [{}, {}]",
                    m.seq, jb.head, jb.highest
                ));
            }
        }
        if s.seq != EMPTY && !window(s.seq) {
            return Err(format!(
                "packet {} stored outside [{}, {}]",
                s.seq, jb.head, jb.highest
            ));
        }
    }
    if jb.started && jb.highest >= jb.head {
        if jb.highest - jb.head >= jb.slots.len() as u64 {
            return Err(format!(
                "window [{}, {}] wider than the ring",
                jb.head, jb.highest
            ));
        }
        for seq in jb.head..=jb.highest {
            let stored = jb.slot(seq).is_some();
            let missing = jb.missing_at(seq).is_some();
            if stored == missing {
                return Err(format!("{seq}: stored {stored}, missing {missing}"));
            }
        }
    }
    Ok(())
}

/// One step of the NACK-state property test.
#[derive(Debug, Clone)]
enum Op {
    /// A packet: sequence offset from the stream's base, frame number, marker, payload kind.
    Packet {
        seq: u16,
        frame: u32,
        marker: bool,
        kind: u8,
        ssrc: u8,
        shared: bool,
    },
    Pop,
    Poll,
    GiveUpHead,
    Flush,
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u16..300, 0u32..40, any::<bool>(), 0u8..4, prop_oneof![9 => Just(0u8), 1 => Just(1u8)], any::<bool>())
            .prop_map(|(seq, frame, marker, kind, ssrc, shared)| Op::Packet { seq, frame, marker, kind, ssrc, shared }),
        // A far jump (past the ring) or a wrap of the 16-bit number.
        1 => (200u16..=u16::MAX, any::<bool>()).prop_map(|(seq, marker)| Op::Packet { seq, frame: 50, marker, kind: 1, ssrc: 0, shared: false }),
        3 => Just(Op::Pop),
        2 => Just(Op::Poll),
        1 => Just(Op::GiveUpHead),
        1 => Just(Op::Flush),
        2 => (0u64..400).prop_map(Op::Wait),
    ]
}

fn vp8_payload(kind: u8, frame: u32) -> Vec<u8> {
    match kind {
        0 => vec![],                        // padding
        1 => vec![0x10, 0x00, frame as u8], // frame start, keyframe
        2 => vec![0x10, 0x01, frame as u8], // frame start, delta
        _ => vec![0x00, frame as u8],       // continuation
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever arrives (reordering around the first packet, duplicates, far jumps, SSRC
    /// changes, padding, gives-up, flushes) the NACK state kept in the ring stays exact.
    #[test]
    fn nack_state_in_the_ring_stays_exact(
        ops in proptest::collection::vec(op(), 0..400),
        base in any::<u16>(),
        capacity in prop_oneof![Just(16usize), Just(64)],
    ) {
        let cfg = JitterConfig { capacity, ..JitterConfig::new(FrameCodec::Vp8) };
        let mut jb = JitterBuffer::<std::sync::Arc<Vec<u8>>>::with_packet_buf(cfg.clone());
        let mut owned = JitterBuffer::new(cfg);
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Packet { seq, frame, marker, kind, ssrc, shared } => {
                    let seq = base.wrapping_add(seq);
                    let ts = frame.wrapping_mul(3000);
                    let payload = vp8_payload(kind, frame);
                    let header = RtpFields { ssrc: 0x1234_5678 + ssrc as u32, seq, timestamp: ts, marker };
                    jb.push_payload(header, std::sync::Arc::new(payload.clone()), now);
                    let mut p = rtp(seq, ts, marker, &payload);
                    p[8..12].copy_from_slice(&header.ssrc.to_be_bytes());
                    if shared {
                        owned.push_with(now, |b| b.extend_from_slice(&p));
                    } else {
                        owned.push(&p, now);
                    }
                }
                Op::Pop => {
                    let a = jb.pop_frames(now);
                    let b = owned.pop_frames(now);
                    prop_assert_eq!(a, b, "both ways of storing give the same frames");
                }
                Op::Poll => {
                    prop_assert_eq!(jb.poll(now), owned.poll(now));
                }
                Op::GiveUpHead => {
                    jb.give_up_head();
                    owned.give_up_head();
                }
                Op::Flush => {
                    prop_assert_eq!(jb.flush(), owned.flush());
                }
                Op::Wait(ms) => now += ms,
            }
            if let Err(e) = check_ring(&jb) {
                return Err(TestCaseError::fail(e));
            }
            if let Err(e) = check_ring(&owned) {
                return Err(TestCaseError::fail(e));
            }
            prop_assert_eq!(jb.stats(), owned.stats());
        }
        jb.flush();
        prop_assert_eq!(jb.n_missing, 0, "a flushed buffer holds no NACK state");
        prop_assert_eq!(jb.buffered(), 0);
    }
}

/// A shared payload (the router's NACK cache buffer) is let go as soon as its packet leaves the
/// buffer, also when everything is dropped at once (a far jump, a new SSRC), so the cache can
/// reuse its buffer in place instead of allocating one.
#[test]
fn payloads_are_released_when_the_buffer_is_emptied_at_once() {
    use std::sync::Arc;
    let cfg = JitterConfig {
        capacity: 16,
        ..JitterConfig::new(FrameCodec::Vp8)
    };
    let fields = |ssrc: u32, seq: u16| RtpFields {
        ssrc,
        seq,
        timestamp: seq as u32 * 3000,
        marker: false,
    };
    let held = Arc::new(vec![0x10, 0x00, 1]); // keyframe start, no marker: stays buffered

    let mut jb = JitterBuffer::<Arc<Vec<u8>>>::with_packet_buf(cfg.clone());
    assert!(jb.push_payload(fields(1, 100), Arc::clone(&held), 0));
    assert_eq!(Arc::strong_count(&held), 2);
    // Far past the ring (and into another slot): everything is dropped.
    assert!(jb.push_payload(fields(1, 100 + 1000 + 1), Arc::new(vec![0x10, 0x00, 2]), 0));
    assert_eq!(jb.stats().resets, 1);
    assert_eq!(
        Arc::strong_count(&held),
        1,
        "a reset lets go of the payloads it dropped"
    );

    let mut jb = JitterBuffer::<Arc<Vec<u8>>>::with_packet_buf(cfg);
    assert!(jb.push_payload(fields(1, 100), Arc::clone(&held), 0));
    assert!(jb.push_payload(fields(2, 7), Arc::new(vec![0x10, 0x00, 2]), 0));
    assert_eq!(
        Arc::strong_count(&held),
        1,
        "a new SSRC lets go of the old stream's payloads"
    );
}
