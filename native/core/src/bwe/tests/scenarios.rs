//! Scenarios: each asserts figures a broken estimator would miss. Capacity 2 Mbit/s unless said,
//! 30 ms one-way delay, the sender wanting 10 Mbit/s (always limited by the estimate).

use super::link::{cfg, jitter_buffer_targets, Link, Sample, Sim};
use crate::bwe::{BweConfig, BweState, SendSideBwe};

const S: u64 = 1_000_000;
const CAP: u64 = 2_000_000;

fn show(name: &str, sim: &Sim) {
    println!("{name}: {}", sim.trace(5));
}

fn mean_estimate(sim: &Sim, from: u64, to: u64) -> u64 {
    let v: Vec<u64> = sim
        .samples_between(from, to)
        .map(|s| s.estimate_bps)
        .collect();
    v.iter().sum::<u64>() / v.len() as u64
}

fn steady(cap: u64) -> Sim {
    Sim::new(Link::new(cap, 300_000, 30_000), cfg(300_000), 10_000_000)
}

#[test]
fn a_steady_link_converges_with_bounded_queue() {
    let mut sim = steady(CAP);
    sim.run_until(30 * S);
    show("steady", &sim);
    // The GCC sawtooth: cut to 0.85 x acked at overuse, creep back up. Every sample from the
    // convergence time on is within -20 % / +10 % of the capacity, the mean within 10 %.
    let t = sim
        .settled_at(0, 30 * S, |s| {
            (1_600_000..=2_200_000).contains(&s.estimate_bps)
        })
        .expect("converges");
    let mean = mean_estimate(&sim, 5 * S, 30 * S);
    let max_q = sim
        .samples_between(5 * S, 30 * S)
        .map(|s| s.queue_us)
        .max()
        .unwrap();
    println!(
        "steady: within -20/+10 % from {:.1} s, mean 5-30 s {} kbit/s, max queue {} ms, tail drops {}",
        t as f64 / 1e6,
        mean / 1000,
        max_q / 1000,
        sim.link.dropped_queue
    );
    assert!(t <= 2 * S, "converged at {t}");
    assert!((1_800_000..=2_200_000).contains(&mean), "{mean}");
    assert!(max_q < 100_000, "{max_q}");
    assert_eq!(sim.link.dropped_queue, 0);
}

#[test]
fn a2_unpaced_video_frames_converge_too() {
    // 30 frames a second, each sent as one burst (no pacer, as the router forwards them).
    let mut sim = steady(CAP);
    sim.frame_interval_us = 33_000;
    sim.run_until(30 * S);
    show("frames", &sim);
    let min = sim
        .samples_between(5 * S, 30 * S)
        .map(|s| s.estimate_bps)
        .min()
        .unwrap();
    let mean = mean_estimate(&sim, 5 * S, 30 * S);
    let max_q = sim
        .samples_between(5 * S, 30 * S)
        .map(|s| s.queue_us)
        .max()
        .unwrap();
    println!(
        "frames: 5-30 s min {} mean {} kbit/s, max queue {} ms, tail drops {}",
        min / 1000,
        mean / 1000,
        max_q / 1000,
        sim.link.dropped_queue
    );
    assert!(min >= 1_300_000, "{min}");
    assert!((1_600_000..=2_200_000).contains(&mean), "{mean}");
    assert!(max_q < 150_000, "{max_q}");
}

#[test]
fn b_step_down_is_followed_within_two_seconds() {
    let mut sim = steady(CAP);
    sim.run_until(10 * S);
    sim.link.capacity_bps = 300_000;
    sim.run_until(20 * S);
    show("step down", &sim);
    let t = sim
        .first_at(10 * S, |s| s.estimate_bps < 330_000)
        .expect("follows the step");
    let late = sim
        .samples_between(13 * S, 20 * S)
        .map(|s| s.estimate_bps)
        .max()
        .unwrap();
    let mean = mean_estimate(&sim, 13 * S, 20 * S);
    println!(
        "step down: below 330 kbit/s {:.1} s after the step; 13-20 s max {} mean {} kbit/s",
        (t - 10 * S) as f64 / 1e6,
        late / 1000,
        mean / 1000
    );
    assert!(t <= 12 * S, "{t}");
    // Stays near the new capacity, without collapsing.
    assert!(late <= 400_000, "{late}");
    assert!(mean >= 200_000, "{mean}");
}

#[test]
fn c_step_up_is_found_by_probing() {
    step_up(0, 5);
}

#[test]
fn c4_step_up_with_probes_asked_every_20_ms() {
    // The media plane's poll interval.
    step_up(20_000, 5);
}

#[test]
fn c3_step_up_with_probes_asked_every_100_ms() {
    // Slower: such a caller sends each cluster in lumps of 100 ms, and a lump queues on its own
    // (the media sent after it waits behind it), so gentle clusters near the link's rate fail.
    step_up(100_000, 8);
}

fn step_up(probe_poll_us: u64, within_s: u64) {
    // 20 s limited to 300 kbit/s, then released.
    let mut sim = steady(CAP);
    sim.probe_poll_us = probe_poll_us;
    sim.run_until(10 * S);
    sim.link.capacity_bps = 300_000;
    sim.run_until(30 * S);
    let before = sim.bwe.estimate_bps();
    let probe_bytes_limited = sim.probe_bytes;
    sim.link.capacity_bps = CAP;
    sim.run_until(40 * S);
    show("step up", &sim);
    let t = sim
        .first_at(30 * S, |s| s.estimate_bps >= 1_700_000)
        .expect("finds the capacity");
    let mean = mean_estimate(&sim, 36 * S, 40 * S);
    println!(
        "step up (probes asked every {} ms): {} kbit/s before; 85 % of 2 Mbit/s {:.1} s after the \
         step, mean 36-40 s {} kbit/s; probe bytes while limited {}",
        probe_poll_us.max(1_000) / 1000,
        before / 1000,
        (t - 30 * S) as f64 / 1e6,
        mean / 1000,
        probe_bytes_limited
    );
    assert!(before <= 350_000, "{before}");
    assert!(t <= (30 + within_s) * S, "{t}");
    assert!(mean >= 1_600_000, "{mean}");
}

#[test]
fn c2_cold_start_below_capacity_probes_up() {
    // Capacity appears later without any drop first: the slower periodic probe finds it.
    let mut sim = steady(300_000);
    sim.run_until(20 * S);
    sim.link.capacity_bps = CAP;
    sim.run_until(40 * S);
    let t = sim
        .first_at(20 * S, |s| s.estimate_bps >= 1_700_000)
        .expect("finds the capacity");
    println!(
        "cold step up: 85 % {:.1} s after the step",
        (t - 20 * S) as f64 / 1e6
    );
    assert!(t <= 32 * S, "{t}");
}

#[test]
fn d_random_loss_of_five_percent_does_not_collapse() {
    let mut sim = steady(CAP);
    sim.link.loss = 0.05;
    sim.run_until(30 * S);
    show("5 % loss", &sim);
    let min = sim
        .samples_between(5 * S, 30 * S)
        .map(|s| s.estimate_bps)
        .min()
        .unwrap();
    let mean = mean_estimate(&sim, 5 * S, 30 * S);
    println!(
        "5 % loss: 5-30 s min {} mean {} kbit/s; lost {}",
        min / 1000,
        mean / 1000,
        sim.link.dropped_random
    );
    assert!(sim.link.dropped_random > 200);
    assert!(min >= 1_200_000, "{min}");
    assert!(mean >= 1_600_000, "{mean}");
}

#[test]
fn d2_jitter_is_not_congestion() {
    // 0-20 ms of random extra delay per packet (order kept): the adaptive threshold absorbs it.
    let mut sim = steady(CAP);
    sim.link.jitter_us = 20_000;
    sim.run_until(30 * S);
    show("jitter", &sim);
    let min = sim
        .samples_between(10 * S, 30 * S)
        .map(|s| s.estimate_bps)
        .min()
        .unwrap();
    let mean = mean_estimate(&sim, 10 * S, 30 * S);
    println!(
        "jitter 0-20 ms: 10-30 s min {} mean {} kbit/s",
        min / 1000,
        mean / 1000
    );
    assert!(min >= 1_000_000, "{min}");
    assert!(mean >= 1_500_000, "{mean}");
}

#[test]
fn e_twenty_percent_loss_decreases() {
    let mut sim = steady(CAP);
    sim.run_until(10 * S);
    let before = sim.bwe.estimate_bps();
    sim.link.loss = 0.2;
    sim.run_until(15 * S);
    show("20 % loss", &sim);
    let after = sim.bwe.estimate_bps();
    println!(
        "20 % loss: {} kbit/s before, {} kbit/s 5 s later, loss {:.2}",
        before / 1000,
        after / 1000,
        sim.bwe.loss_fraction()
    );
    assert!(before >= 1_600_000, "{before}");
    assert!(after <= before / 3, "{after}");
    assert!(sim.bwe.loss_fraction() > 0.1);
}

#[test]
fn f_deep_queue_delay_reacts_before_loss() {
    // 1 s of buffer: a loss-only controller would fill it before reacting.
    let mut sim = Sim::new(Link::new(CAP, 1_000_000, 20_000), cfg(300_000), 10_000_000);
    sim.run_until(10 * S);
    sim.link.capacity_bps = 1_000_000;
    sim.run_until(25 * S);
    show("bufferbloat", &sim);
    let t = sim
        .first_at(10 * S, |s| s.estimate_bps < 1_000_000)
        .expect("reacts");
    let max_q = sim
        .samples_between(10 * S, 25 * S)
        .map(|s| s.queue_us)
        .max()
        .unwrap();
    let overuse = sim
        .samples_between(10 * S, 12 * S)
        .any(|s: &Sample| s.state == BweState::Overusing);
    println!(
        "bufferbloat: below capacity {:.1} s after the drop, max queue {} ms, tail drops {}",
        (t - 10 * S) as f64 / 1e6,
        max_q / 1000,
        sim.link.dropped_queue
    );
    assert!(t <= 11 * S, "{t}");
    assert!(overuse);
    assert_eq!(
        sim.link.dropped_queue, 0,
        "no packet reached the tail of the buffer"
    );
    assert!(max_q < 400_000, "{max_q}");
    let mean = mean_estimate(&sim, 15 * S, 25 * S);
    assert!((750_000..=1_100_000).contains(&mean), "{mean}");
}

#[test]
fn g_remb_and_receiver_reports_without_transport_cc() {
    let mut b = SendSideBwe::new(BweConfig {
        min_bps: 50_000,
        start_bps: 300_000,
        max_bps: 2_500_000,
    });
    let mut now = 0;
    b.on_packet_sent(1, 1200, now, false);
    assert_eq!(b.estimate_bps(), 300_000);
    b.on_remb(800_000, now);
    assert_eq!(b.estimate_bps(), 300_000, "nothing vouches for more yet");
    now += S;
    b.on_receiver_report(0, Some(80_000), now);
    assert_eq!(b.estimate_bps(), 800_000, "clean link: the REMB");
    assert_eq!(b.rtt_us(), Some(80_000));
    // 25 % loss, one report a second: down by ~12 % each time.
    let mut last = b.estimate_bps();
    for _ in 0..5 {
        now += S;
        b.on_receiver_report(64, None, now);
        let e = b.estimate_bps();
        assert!(e < last, "{e} after {last}");
        last = e;
    }
    assert!(last < 450_000, "{last}");
    // 5 %: held.
    now += S;
    b.on_receiver_report(13, None, now);
    assert_eq!(b.estimate_bps(), last);
    // Clean again: back to the REMB; a lower REMB caps it at once.
    now += S;
    b.on_receiver_report(0, None, now);
    assert_eq!(b.estimate_bps(), 800_000);
    b.on_remb(200_000, now);
    assert_eq!(b.estimate_bps(), 200_000);
    b.on_remb(10_000, now);
    assert_eq!(b.estimate_bps(), 50_000, "never below min_bps");
    // Without transport-cc feedback nothing is probed.
    b.poll(now);
    assert_eq!(b.probe_wanted(now), None);
    assert_eq!(b.state(), BweState::Normal);
}

#[test]
fn h_feedback_stops_estimate_halves() {
    let mut sim = steady(CAP);
    sim.run_until(10 * S);
    let before = sim.bwe.estimate_bps();
    // The path dies (everything lost, no feedback): halve once a second, down to min.
    sim.link.loss = 1.0;
    sim.run_until(12 * S + S / 2);
    let after = sim.bwe.estimate_bps();
    println!("dead path: {} -> {} kbit/s", before / 1000, after / 1000);
    assert!(after <= before / 3, "{after}");
    assert!(after >= 50_000);
}

/// The browser tests' downlink before its limit: 2.5 Mbit/s with a token bucket's 6000 bytes of
/// burst, Opus every 20 ms ahead of video frames every 33 ms, paced by the router at nine tenths
/// of the estimate, probes polled every 20 ms as the media plane does; run 20 s to settle.
fn browser_link_sim() -> Sim {
    let mut sim = Sim::new(
        Link::new(2_500_000, 250_000, 20_000),
        cfg(300_000),
        2_500_000,
    );
    sim.link.burst_bytes = 6_000;
    sim.audio_interval_us = 20_000;
    sim.frame_interval_us = 33_000;
    sim.media_share = 0.9;
    sim.probe_poll_us = 20_000;
    sim.run_until(20 * S);
    sim
}

#[test]
fn gentle_probes_on_a_token_bucket_link() {
    // The browser tests' downlink: 2.5 Mbit/s, then a token bucket of 300 kbit/s with 6000 bytes
    // of burst and a 250 ms queue for 40 s, then 2.5 Mbit/s again. Video frames every 33 ms
    // (unpaced), Opus every 20 ms ahead of them. Probes go on while limited, gently: what they
    // put in the bucket's queue ahead of the audio stays under ~2 kB (53 ms at 300 kbit/s), and
    // they find the link's return within seconds.
    let mut sim = browser_link_sim();
    sim.link.capacity_bps = 300_000;
    sim.run_until(35 * S);
    let probe_before = sim.probe_bytes;
    sim.probe_queue_peak_bytes = 0;
    sim.run_until(60 * S);
    let probe_queued = sim.probe_queue_peak_bytes;
    let probe_limited = sim.probe_bytes - probe_before;
    let targets = jitter_buffer_targets(&sim.audio);
    let settled: Vec<u64> = sim
        .audio
        .iter()
        .filter(|a| (35 * S..60 * S).contains(&a.0))
        .map(|a| a.1)
        .collect();
    let max_queue_us = settled.iter().copied().max().unwrap_or(0);
    let limited_estimate = mean_estimate(&sim, 35 * S, 60 * S);
    let jitter_limited = mean_target_ms(&targets, 35 * S, 60 * S);
    sim.link.capacity_bps = 2_500_000;
    sim.run_until(75 * S);
    show("gentle probes", &sim);
    let back = sim.seconds_to_reach(60 * S, 1_500_000);
    println!(
        "gentle probes: 35-60 s estimate mean {} kbit/s, probe padding {probe_limited} bytes, \
         at most {probe_queued} bytes of it in the link's queue; audio queued up to {} ms, jitter \
         buffer target {jitter_limited} ms; 1.5 Mbit/s {back:?} s after the link clears",
        limited_estimate / 1000,
        max_queue_us / 1000,
    );
    assert!(probe_limited > 0, "probes go on while limited");
    assert!(probe_queued <= 2_000, "{probe_queued} bytes");
    assert!(
        (200_000..=330_000).contains(&limited_estimate),
        "{limited_estimate}"
    );
    assert!(back.is_some_and(|b| b <= 8.0), "{back:?}");
}

/// Mean of the modelled audio jitter buffer target over [from, to).
fn mean_target_ms(targets: &[(u64, u64)], from: u64, to: u64) -> u64 {
    let v: Vec<u64> = targets
        .iter()
        .filter(|t| t.0 > from && t.0 <= to)
        .map(|t| t.1)
        .collect();
    v.iter().sum::<u64>() / v.len().max(1) as u64 / 1000
}

#[test]
fn the_jitter_buffer_model_follows_peaks_and_forgets_them() {
    // Audio every 20 ms: a steady delay, however long, costs nothing; one 200 ms peak a second
    // for 10 s raises the target to it at once; it is forgotten over tens of seconds.
    let mut audio = Vec::new();
    for i in 0..5_000u64 {
        let t = i * 20_000;
        let peak = (10 * S..20 * S).contains(&t) && t % S == 0;
        audio.push((t, if peak { 250_000 } else { 50_000 }));
    }
    let targets = jitter_buffer_targets(&audio);
    assert_eq!(mean_target_ms(&targets, 5 * S, 10 * S), 20);
    let peaks = mean_target_ms(&targets, 15 * S, 20 * S);
    assert!(peaks >= 200, "{peaks} ms; {targets:?}");
    // Remembered for a while after the last peak (NetEq's long memory, which is why a step
    // down's first seconds weigh on the audio long after), gone 45 s after it.
    assert!(mean_target_ms(&targets, 25 * S, 30 * S) >= 200);
    assert_eq!(mean_target_ms(&targets, 65 * S, 100 * S), 20);
}

/// Figures, not a check: what the audio of a subscriber meets when a token bucket limits its
/// link (docs/adaptation.md). The estimator settles at the bucket's rate, so the bucket's buffer
/// stays full much of the time and the modelled jitter buffer stays at 240-260 ms; a
/// standing-queue cut brought it to 100-140 ms here but not in the browser (see the docs).
#[test]
#[ignore = "figures: cargo test -p mediasrv-core --lib token_bucket -- --ignored --nocapture"]
fn audio_through_a_token_bucket_step_down() {
    for (frames, burst) in [(0, 6_000), (33_000, 6_000), (0, 0)] {
        token_bucket_step_down(frames, burst);
    }
}

fn token_bucket_step_down(frame_interval_us: u64, burst: u64) {
    // The browser test's downlink: tc tbf at 300 kbit/s, 6000 bytes of burst, a 250 ms queue;
    // video demand 2.5 Mbit/s sent as frames every 33 ms; Opus every 20 ms, audio first.
    let mut sim = Sim::new(
        Link::new(3_000_000, 250_000, 20_000),
        cfg(300_000),
        2_500_000,
    );
    sim.link.burst_bytes = burst;
    sim.audio_interval_us = 20_000;
    sim.frame_interval_us = frame_interval_us;
    sim.run_until(20 * S);
    sim.link.capacity_bps = 300_000;
    sim.run_until(60 * S);
    let targets = jitter_buffer_targets(&sim.audio);
    let windows: Vec<u64> = (0..8)
        .map(|w| mean_target_ms(&targets, 20 * S + w * 5 * S, 25 * S + w * 5 * S))
        .collect();
    let mut queue: Vec<u64> = sim
        .audio
        .iter()
        .filter(|a| a.0 >= 25 * S)
        .map(|a| a.1 / 1000)
        .collect();
    queue.sort_unstable();
    println!(
        "token bucket step down (frames {frame_interval_us} us, burst {burst}): jitter buffer target before {} ms, by 5 s after the step {:?} ms; \
         audio queueing p50/p90/max {}/{}/{} ms from 5 s after; drops {}; {}",
        mean_target_ms(&targets, 10 * S, 20 * S),
        windows,
        queue[queue.len() / 2],
        queue[queue.len() * 9 / 10],
        queue[queue.len() - 1],
        sim.link.dropped_queue,
        sim.trace(10)
    );
}

#[test]
fn gentle_probes_find_the_link_again_with_audio_alone() {
    // Video paused on a 150 kbit/s token bucket: only audio flows (and probe padding). After the
    // link returns to 2.5 Mbit/s the estimate must climb on probes alone.
    let mut sim = browser_link_sim();
    sim.link.capacity_bps = 150_000;
    sim.run_until(22 * S);
    sim.demand_bps = 0; // paused
    sim.run_until(45 * S);
    sim.link.capacity_bps = 2_500_000;
    sim.run_until(60 * S);
    show("paused", &sim);
    let back = sim.seconds_to_reach(45 * S, 1_000_000);
    println!("paused: 1 Mbit/s {back:?} s after the link clears");
    assert!(back.is_some_and(|b| b <= 8.0), "{back:?}");
}

#[test]
fn an_outage_is_not_congestion() {
    // The path goes dark for 12 s (nothing through, no feedback: a lift, a tunnel), then comes
    // back as it was. The estimate halves through the silence (the path may be congested to
    // death), but once feedback returns a probe at the estimate from before finds the link at
    // once: before, the silence's fall counted as a large drop, gentle probes crept up from the
    // floor and 1.5 Mbit/s took 11.9 s (the browser's paused video, ~60 s).
    let mut sim = browser_link_sim();
    let before = sim.bwe.estimate_bps();
    sim.link.loss = 1.0;
    sim.run_until(32 * S);
    let during = sim.bwe.estimate_bps();
    sim.link.loss = 0.0;
    sim.run_until(33 * S);
    let after_first = sim.bwe.estimate_bps();
    sim.run_until(60 * S);
    show("outage", &sim);
    let back = sim.seconds_to_reach(32 * S, 1_500_000);
    println!(
        "outage: {} kbit/s before, {} at its end, {} 1 s after; 1.5 Mbit/s {back:?} s after the path returned",
        before / 1000,
        during / 1000,
        after_first / 1000
    );
    assert!(during <= before / 8, "halved through the silence: {during}");
    assert!(back.is_some_and(|b| b <= 3.0), "{back:?}");
}
