//! Exact packet sequences through the layer selector: simulcast switches, temporal drops, loss,
//! reordering and malformed descriptors.

use super::*;

const FRAME_MS: u64 = 33;
const FRAME_TS: u32 = 2970; // 33 ms at 90 kHz: a switch's wall-clock advance equals one frame

/// One simulcast encoding's RTP stream, VP8 with a full descriptor (15-bit picture ID, TL0PICIDX,
/// TID/Y), two packets per frame.
struct Stream {
    spatial: u8,
    seq: u16,
    ts: u32,
    pid: u16,
    tl0: u8,
}

struct Pkt {
    p: LayerPacket,
    payload: Vec<u8>,
}

impl Stream {
    fn new(spatial: u8, seq: u16, ts: u32, pid: u16, tl0: u8) -> Self {
        Self {
            spatial,
            seq,
            ts,
            pid,
            tl0,
        }
    }

    fn frame(&mut self, key: bool, tid: u8, sync: bool, now_ms: u64) -> Vec<Pkt> {
        if tid == 0 {
            self.tl0 = self.tl0.wrapping_add(1);
        }
        let mut out = Vec::new();
        for part in 0..2 {
            let b0 = if part == 0 { 0x90 } else { 0x80 };
            let vp8_byte = match (part, key) {
                (0, true) => 0x10,
                (0, false) => 0x11,
                _ => 0x00,
            };
            let payload = vec![
                b0,
                0xe0,
                0x80 | (self.pid >> 8) as u8,
                self.pid as u8,
                self.tl0,
                (tid << 6) | if sync { 0x20 } else { 0 },
                vp8_byte,
                0xaa,
            ];
            out.push(Pkt {
                p: LayerPacket {
                    spatial: self.spatial,
                    seq: self.seq,
                    timestamp: self.ts,
                    keyframe: false, // decide_vp8 reads it from the payload
                    vp8: None,
                    clock_rate: 90_000,
                    now_ms,
                },
                payload,
            });
            self.seq = self.seq.wrapping_add(1);
        }
        self.ts = self.ts.wrapping_add(FRAME_TS);
        self.pid = (self.pid + 1) & 0x7fff;
        out
    }
}

/// What a subscriber received: (spatial, seq, ts, picture ID, TL0PICIDX, TID, switched).
#[derive(Debug, Clone, Copy)]
struct Out {
    spatial: u8,
    seq: u16,
    ts: u32,
    pid: u16,
    tl0: u8,
    tid: u8,
    switched: bool,
}

fn feed(sel: &mut LayerSelector, pkts: Vec<Pkt>, got: &mut Vec<Out>) {
    for mut k in pkts {
        if let Decision::Forward(f) = sel.decide_vp8(k.p, &mut k.payload) {
            let d = vp8::parse(&k.payload).unwrap();
            assert_eq!(
                f.picture_id.map(|p| p & 0x7fff),
                Some(d.picture_id.unwrap().value)
            );
            assert_eq!(f.tl0_pic_idx, d.tl0_pic_idx);
            got.push(Out {
                spatial: k.p.spatial,
                seq: f.seq,
                ts: f.timestamp,
                pid: d.picture_id.unwrap().value,
                tl0: d.tl0_pic_idx.unwrap(),
                tid: d.temporal_id.unwrap(),
                switched: f.switched,
            });
        }
    }
}

/// Output is one continuous stream: seq +1 per packet, and per frame (first packet) ts +1 frame,
/// picture ID +1, TL0PICIDX +1 on TID 0 frames.
fn assert_continuous(got: &[Out]) {
    for w in got.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert_eq!(b.seq, a.seq.wrapping_add(1), "seq {a:?} -> {b:?}");
        if b.ts == a.ts {
            assert_eq!((b.pid, b.tl0), (a.pid, a.tl0), "same frame {a:?} -> {b:?}");
        } else {
            assert_eq!(b.pid, (a.pid + 1) & 0x7fff, "picture id {a:?} -> {b:?}");
            let tl0_step = u8::from(b.tid == 0);
            assert_eq!(b.tl0, a.tl0.wrapping_add(tl0_step), "tl0 {a:?} -> {b:?}");
        }
    }
}

fn layers() -> [Stream; 3] {
    [
        Stream::new(0, 1000, 5_000, 100, 7),
        Stream::new(1, 30_000, 4_000_000_000, 20_000, 200),
        Stream::new(2, 65_530, 123, 32_760, 254), // sequence numbers, picture IDs and TL0 wrap
    ]
}

#[test]
fn simulcast_switches_wait_for_keyframes_and_stay_continuous() {
    let mut streams = layers();
    let mut sel = LayerSelector::new(500, 9_000);
    let mut got = Vec::new();
    let mut ticks = Vec::new();
    // target spatial per tick, and which layer sends a keyframe at which tick
    let keyframes = [(2, 1), (0, 6), (1, 9), (0, 0)];
    for tick in 0..14u64 {
        match tick {
            0 => sel.set_target(2, 2),
            4 => sel.set_target(0, 2),
            8 => sel.set_target(1, 2),
            _ => {}
        }
        let now = 1_000 + tick * FRAME_MS;
        let before = got.len();
        for s in streams.iter_mut() {
            let key = keyframes.contains(&(s.spatial, tick));
            feed(&mut sel, s.frame(key, 0, false, now), &mut got);
        }
        let layers: Vec<u8> = got[before..].iter().map(|o| o.spatial).collect();
        ticks.push(layers);
    }
    // Layer 2 from its keyframe at tick 1 (tick 0: nothing; layer 0's keyframe is not the target);
    // the switch down waits for layer 0's keyframe at tick 6, the switch up for layer 1's at tick 9
    // (that tick's layer 0 frame arrived first and still went out).
    let expected: Vec<Vec<u8>> = (0..14)
        .map(|t| match t {
            0 => vec![],
            1..=5 => vec![2, 2],
            6..=8 => vec![0, 0],
            9 => vec![0, 0, 1, 1],
            _ => vec![1, 1],
        })
        .collect();
    assert_eq!(ticks, expected);
    assert_eq!(got[0].seq, 500);
    assert_eq!(got[0].ts, 9_000);
    assert_eq!(got[0].pid, 32_761); // the first picture ID is the publisher's own
    assert_continuous(&got);
    let switches: Vec<(usize, u8)> = got
        .iter()
        .enumerate()
        .filter(|(_, o)| o.switched)
        .map(|(i, o)| (i, o.spatial))
        .collect();
    assert_eq!(switches, vec![(0, 2), (10, 0), (18, 1)]);
    assert_eq!(sel.stats().spatial_switches, 2);
    assert_eq!(sel.current(), Some((1, 2)));
    assert_eq!(sel.wants_keyframe(), None);
    // Timestamps advance one frame (the switch down by the 33 ms elapsed since the last packet);
    // the switch up came right after a frame of the same capture instant: one tick later.
    let frame_ts: Vec<u32> = got.iter().step_by(2).map(|o| o.ts).collect();
    let steps: Vec<u32> = frame_ts
        .windows(2)
        .map(|w| w[1].wrapping_sub(w[0]))
        .collect();
    let mut expected_steps = vec![FRAME_TS; 13];
    expected_steps[8] = 1;
    assert_eq!(steps, expected_steps);
}

#[test]
fn waiting_for_a_keyframe_is_reported_and_other_layers_dropped() {
    let mut streams = layers();
    let mut sel = LayerSelector::new(0, 0);
    sel.set_target(1, 2);
    assert_eq!(sel.wants_keyframe(), Some(1));
    let mut k = streams[1].frame(false, 0, false, 0).remove(0);
    assert_eq!(
        sel.decide_vp8(k.p, &mut k.payload),
        Decision::Drop(LayerDrop::WaitingKeyframe)
    );
    let mut k = streams[0].frame(true, 0, false, 0).remove(0);
    assert_eq!(
        sel.decide_vp8(k.p, &mut k.payload),
        Decision::Drop(LayerDrop::OtherLayer)
    );
    assert_eq!(sel.current(), None);
}

/// L1T3 frame pattern: TID 0, 2, 1, 2, ...; the Y bit only in the first cycle.
fn l1t3(s: &mut Stream, n: u64, now: u64) -> Vec<Pkt> {
    let tid = [0, 2, 1, 2][(n % 4) as usize];
    s.frame(n == 0, tid, n < 4 && tid != 0, now)
}

#[test]
fn temporal_layers_drop_and_switch_at_sync_points() {
    let mut s = Stream::new(0, 65_500, 0, 32_700, 250);
    let mut sel = LayerSelector::new(40_000, 77);
    sel.set_target(0, 0);
    let mut got = Vec::new();
    let mut tids_per_frame = Vec::new();
    for n in 0..24u64 {
        match n {
            9 => sel.set_target(0, 2), // mid-cycle, no Y bits any more: waits for TL0 at frame 12
            17 => sel.set_target(0, 1), // down at the next frame start
            _ => {}
        }
        let before = got.len();
        feed(&mut sel, l1t3(&mut s, n, n * FRAME_MS), &mut got);
        tids_per_frame.push(got[before..].first().map(|o| o.tid));
    }
    let fwd: Vec<u64> = (0..24u64)
        .filter(|n| tids_per_frame[*n as usize].is_some())
        .collect();
    assert_eq!(fwd, vec![0, 4, 8, 12, 13, 14, 15, 16, 18, 20, 22]);
    // seq and picture ID have no holes for the dropped frames; TL0PICIDX counts TID 0 frames
    for w in got.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert_eq!(b.seq, a.seq.wrapping_add(1));
        if b.ts != a.ts {
            assert_eq!(b.pid, (a.pid + 1) & 0x7fff);
            assert_eq!(b.tl0, a.tl0.wrapping_add(u8::from(b.tid == 0)));
        }
    }
    assert_eq!(got[0].seq, 40_000);
    assert_eq!(got.len(), 22);
    assert_eq!(sel.stats().dropped_temporal, 26);
    assert_eq!(sel.stats().temporal_switches, 2);
    assert_eq!(sel.current(), Some((0, 1)));
}

#[test]
fn temporal_up_switch_at_a_layer_sync_frame() {
    let mut s = Stream::new(0, 10, 0, 5, 0);
    let mut sel = LayerSelector::new(0, 0);
    sel.set_target(0, 0);
    let mut got = Vec::new();
    feed(&mut sel, l1t3(&mut s, 0, 0), &mut got); // key, TID 0
    sel.set_target(0, 2);
    // frame 1: TID 2 with Y: up to 2 right there, no wait for the next TL0 frame
    feed(&mut sel, l1t3(&mut s, 1, 33), &mut got);
    assert_eq!(got.len(), 4);
    assert_eq!(got[2].tid, 2);
    assert_continuous(&got);
}

#[test]
fn loss_stays_a_hole_and_late_packets_keep_their_number() {
    let mut s = Stream::new(0, 100, 0, 1, 0);
    let mut sel = LayerSelector::new(0, 0);
    sel.set_target(0, 2);
    let mut got = Vec::new();
    feed(&mut sel, s.frame(true, 0, false, 0), &mut got); // seq 100, 101
    let mut f = s.frame(false, 0, false, 33); // seq 102, 103: 102 lost for now
    let late = f.remove(0);
    feed(&mut sel, f, &mut got);
    let seqs: Vec<u16> = got.iter().map(|o| o.seq).collect();
    assert_eq!(seqs, vec![0, 1, 3]); // the receiver sees a hole at 2 and can NACK it
    feed(&mut sel, vec![late], &mut got); // the retransmission arrives
    assert_eq!(got[3].seq, 2);
    // packets from before the stream's start are refused
    let mut old = Stream::new(0, 90, 0, 0, 0)
        .frame(false, 0, false, 40)
        .remove(0);
    assert_eq!(
        sel.decide_vp8(old.p, &mut old.payload),
        Decision::Drop(LayerDrop::TooOld)
    );
}

#[test]
fn malformed_descriptors_forward_unchanged_and_count() {
    let mut s = Stream::new(0, 1, 0, 1, 0);
    let mut sel = LayerSelector::new(0, 0);
    sel.set_target(0, 2);
    let mut got = Vec::new();
    feed(&mut sel, s.frame(true, 0, false, 0), &mut got);
    for bad in [&[][..], &[0x90], &[0x90, 0xe0, 0x81], &[0x90, 0x20]] {
        let mut payload = bad.to_vec();
        let p = LayerPacket {
            spatial: 0,
            seq: s.seq,
            timestamp: s.ts,
            keyframe: true, // not believed: the descriptor is unreadable
            vp8: None,
            clock_rate: 90_000,
            now_ms: 40,
        };
        s.seq += 1;
        assert!(matches!(
            sel.decide_vp8(p, &mut payload),
            Decision::Forward(_)
        ));
        assert_eq!(payload, bad);
    }
    assert_eq!(sel.stats().vp8_malformed, 4);
    // An unreadable packet of another layer never starts a switch.
    sel.set_target(1, 2);
    let mut payload: [u8; 0] = [];
    let p = LayerPacket {
        spatial: 1,
        seq: 9,
        timestamp: 0,
        keyframe: true,
        vp8: None,
        clock_rate: 90_000,
        now_ms: 50,
    };
    assert_eq!(
        sel.decide_vp8(p, &mut payload),
        Decision::Drop(LayerDrop::OtherLayer)
    );
}

#[test]
fn arbitrary_inputs_never_panic() {
    let mut sel = LayerSelector::new(0, 0);
    let mut x = 0x1234_5678_9abc_def0u64;
    for i in 0..20_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if i % 997 == 0 {
            sel.set_target((x >> 8) as u8 % 4, (x >> 16) as u8 % 4);
        }
        let len = (x % 9) as usize;
        let mut payload: Vec<u8> = x.to_le_bytes()[..len.min(8)].to_vec();
        let p = LayerPacket {
            spatial: (x >> 24) as u8 % 3,
            seq: (x >> 32) as u16,
            timestamp: (x >> 40) as u32,
            keyframe: false,
            vp8: None,
            clock_rate: 90_000,
            now_ms: i,
        };
        let _ = sel.decide_vp8(p, &mut payload);
    }
}

#[test]
fn h264_layers_switch_on_keyframes_without_vp8_fields() {
    let mut sel = LayerSelector::new(7, 7);
    sel.set_target(1, 2);
    let pkt = |spatial, seq, timestamp, keyframe, now_ms| LayerPacket {
        spatial,
        seq,
        timestamp,
        keyframe,
        vp8: None,
        clock_rate: 90_000,
        now_ms,
    };
    let seqs: Vec<Option<u16>> = [
        pkt(1, 50, 1000, false, 0),
        pkt(1, 51, 1000, true, 0),
        pkt(1, 52, 3970, false, 33),
        pkt(0, 9, 77, true, 33),
    ]
    .iter()
    .map(|p| match sel.decide(p) {
        Decision::Forward(f) => Some(f.seq),
        Decision::Drop(_) => None,
    })
    .collect();
    assert_eq!(seqs, vec![None, Some(7), Some(8), None]);
    sel.set_target(0, 2);
    let Decision::Forward(f) = sel.decide(&pkt(0, 10, 5000, true, 66)) else {
        panic!("switch at layer 0's keyframe")
    };
    assert_eq!((f.seq, f.timestamp, f.switched), (9, 7 + 2970 + 2970, true));
}
