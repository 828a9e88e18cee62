//! Forwarding throughput of the router core alone (no sockets, no SRTP): 1.2 KB VP8 packets from one
//! publisher to 1, 10 and 50 subscribers. Reports forwarded packets per CPU-second of this thread and
//! the per-subscriber cost relative to 1→1 measured in the same run; it asserts nothing.
//! Run: `cargo bench --bench router_forward`.

use std::time::Instant;

use mediasrv_core::ids::{SubscriptionId, TrackId, TransportId};
use mediasrv_core::output::Output;
use mediasrv_core::router::{Codec, ExtensionIds, MediaKind, Router, RouterConfig};

/// CPU time of the calling thread in nanoseconds (Linux schedstat), falling back to wall time.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn packet(seq: u16, ts: u32) -> Vec<u8> {
    let mut p = vec![0x90, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&1111u32.to_be_bytes());
    // one-byte extensions: abs-send-time (id 3) and transport-cc (id 4)
    p.extend_from_slice(&[0xBE, 0xDE, 0, 2, 0x32, 1, 2, 3, 0x41, 0, 7, 0]);
    p.extend_from_slice(&[
        0x90,
        0x80,
        0x80 | (seq >> 8) as u8,
        seq as u8,
        if seq == 0 { 0x10 } else { 0x11 },
    ]);
    p.resize(1200, 0xab);
    p
}

fn run(subscribers: u64, packets: u32) -> (f64, f64) {
    let mut r = Router::new(
        RouterConfig {
            nack_cache_packets: 1024,
            ..Default::default()
        },
        7,
    );
    let ext = ExtensionIds {
        mid: 1,
        abs_send_time: 3,
        audio_level: 2,
        transport_cc: 4,
    };
    let vp8 = |pt| Codec {
        payload_type: pt,
        name: "VP8".into(),
        clock_rate: 90_000,
        apt: None,
        fmtp: None,
    };
    r.add_publisher(TransportId(1), 9, ext);
    r.add_track(
        TrackId(1),
        TransportId(1),
        MediaKind::Video,
        Some("0".into()),
        vec![vp8(96)],
        &[1111],
    )
    .unwrap();
    for s in 0..subscribers {
        r.add_subscription(
            SubscriptionId(100 + s),
            TrackId(1),
            TransportId(1000 + s),
            5000 + s as u32,
            &[vp8(120)],
            ext,
        )
        .unwrap();
    }
    let mut pkts: Vec<Vec<u8>> = (0..1024u32)
        .map(|i| packet(i as u16, i / 4 * 3000))
        .collect();
    let mut out = Output::new();
    // warm-up: first packet is a keyframe start, buffers grow to their working size
    for p in &pkts[..64] {
        out.clear();
        r.route_rtp(TransportId(1), p, 0, &mut out);
    }
    let (cpu0, wall0) = (thread_cpu_ns(), Instant::now());
    let mut forwarded = 0u64;
    for i in 0..packets {
        let p = &mut pkts[(i % 1024) as usize];
        let seq = (64 + i) as u16;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        out.clear();
        r.route_rtp(TransportId(1), p, i as u64 / 100, &mut out);
        forwarded += out.len() as u64;
    }
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = match (cpu0, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
        _ => wall,
    };
    assert_eq!(forwarded, packets as u64 * subscribers);
    (forwarded as f64 / cpu, cpu)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let total_out = if quick { 500_000 } else { 5_000_000 };
    let mut baseline = None;
    println!(
        "{:>6} {:>16} {:>12} {:>14}",
        "fanout", "forwarded/cpu-s", "cpu s", "vs 1→1 per pkt"
    );
    for n in [1u64, 10, 50] {
        let (rate, cpu) = run(n, (total_out / n) as u32);
        let base = *baseline.get_or_insert(rate);
        println!(
            "{:>6} {:>16.0} {:>12.3} {:>13.2}x",
            format!("1→{n}"),
            rate,
            cpu,
            rate / base
        );
    }
}
