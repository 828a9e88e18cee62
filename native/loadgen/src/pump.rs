//! The I/O side of client mode: one worker thread owns the UDP sockets of all simulated peers,
//! sends each peer's streams on schedule (SRTP-protected in place, one `sendmmsg` per peer and
//! pass) and receives with epoll + `recvmmsg`. Passes are at least [`TICK_US`] apart so every
//! syscall moves a batch; kernel receive timestamps keep latency exact despite the batching.
//! STUN and DTLS datagrams are queued for Python (aioice answers consent checks, aiortc sees
//! close_notify); everything else is SRTP/SRTCP and is measured here.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mediasrv_core::rtcp::{parse_compound, RtcpPacket};
use mediasrv_core::srtp::SrtpContext;
use mediasrv_plane::clock::{realtime_us, thread_cpu_ns};
use mediasrv_plane::demux::{classify, DatagramKind};
use mediasrv_plane::udp::{enable_rx_timestamps, grow_rcvbuf, RecvBatch, SendBatch, Sent, BATCH};

use crate::receiver::{split_rtcp, Arrival, Receiver};
use crate::rtcp_count::{tally, RtcpTally};
use crate::stats::{LatencyHistogram, RxStream};
use crate::synth::{read_stamp, rtp_payload, SendStream, PACKET_BUF};

/// `recvmmsg` calls on one socket per pass before moving on (fairness between peers).
const RECV_ROUNDS: usize = 4;
/// Shortest time between two passes: the receive/send coalescing window.
pub const TICK_US: u64 = 2_000;
/// Control datagrams kept for Python per peer; older ones are dropped (and counted).
const CONTROL_QUEUE: usize = 256;
/// Longest wait in `epoll` when nothing is due, so stop requests are seen promptly.
const MAX_WAIT_US: u64 = 20_000;
/// Receive buffer asked for each socket: the generator must not be where packets get lost.
const RCVBUF_BYTES: libc::c_int = 4 << 20;

/// Microseconds on the generator's monotonic clock; send stamps and arrivals share it.
pub fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Totals over all peers since the pump started.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub send_errors: u64,
    pub keyframes_sent: u64,
    pub packets_received: u64,
    pub bytes_received: u64,
    pub unstamped_received: u64,
    pub srtp_errors: u64,
    pub rtcp_received: u64,
    pub control_received: u64,
    pub control_dropped: u64,
    /// Transport-cc feedback packets sent by subscribers (see [`Receiver`]).
    pub feedback_sent: u64,
    pub rtcp: RtcpTally,
}

pub struct Peer {
    sock: UdpSocket,
    remote: SocketAddr,
    srtp: SrtpContext,
    pub streams: Vec<SendStream>,
    pub rx: HashMap<u32, RxStream>,
    pub control: Vec<(Vec<u8>, SocketAddr)>,
    /// A subscriber's receiving side: impairment, transport-cc feedback, what it observes.
    pub receiver: Option<Receiver>,
}

/// How the pump thread itself is doing: its CPU and the longest gap between two passes (a
/// generator-side stall shows up here, not as latency, since arrivals carry kernel timestamps).
#[derive(Debug, Clone, Copy, Default)]
pub struct PumpStats {
    pub cpu_s: f64,
    pub passes: u64,
    pub max_gap_us: u64,
    pub interval_max_gap_us: u64,
}

#[derive(Default)]
pub struct State {
    pub pump: PumpStats,
    pub peers: HashMap<u64, Peer>,
    pub totals: Totals,
    /// Latency since the start, and since the last interval snapshot.
    pub latency: LatencyHistogram,
    pub interval_latency: LatencyHistogram,
    /// Streams and loss of peers already removed, so totals never go backwards.
    pub retired_expected: u64,
    pub retired_received: u64,
    /// Sending stopped (the end of a run): in-flight packets still arrive and are counted.
    pub paused: bool,
    next_id: u64,
}

impl State {
    /// (expected, received, streams receiving, mean jitter in µs) over every incoming stream.
    pub fn reception(&self) -> (u64, u64, usize, f64) {
        let (mut expected, mut received) = (self.retired_expected, self.retired_received);
        let (mut n, mut jitter) = (0usize, 0.0);
        for s in self.peers.values().flat_map(|p| p.rx.values()) {
            expected += s.expected();
            received += s.received;
            n += 1;
            jitter += s.jitter_us;
        }
        (
            expected,
            received,
            n,
            if n == 0 { 0.0 } else { jitter / n as f64 },
        )
    }
}

pub struct Pump {
    pub state: Arc<Mutex<State>>,
    epoll: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl Pump {
    pub fn start() -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        // SAFETY: epoll_create1 returns a fresh descriptor or -1.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `ep` is a fresh descriptor nobody else owns.
        let epoll = Arc::new(unsafe { OwnedFd::from_raw_fd(ep) });
        let (s, st, e) = (state.clone(), stop.clone(), epoll.clone());
        let worker = std::thread::Builder::new()
            .name("loadgen-pump".into())
            .spawn(move || run(&s, &st, e.as_raw_fd()))?;
        Ok(Self {
            state,
            epoll,
            stop,
            worker: Some(worker),
        })
    }

    /// Take ownership of `fd` (a duplicate of the peer's socket) and start serving it.
    pub fn add_peer(
        &self,
        fd: OwnedFd,
        remote: SocketAddr,
        srtp: SrtpContext,
    ) -> std::io::Result<u64> {
        let sock = UdpSocket::from(fd);
        sock.set_nonblocking(true)?;
        grow_rcvbuf(&sock, RCVBUF_BYTES);
        enable_rx_timestamps(&sock);
        let mut st = self.state.lock().unwrap();
        st.next_id += 1;
        let id = st.next_id;
        epoll_ctl(
            self.epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            sock.as_raw_fd(),
            id,
        )?;
        st.peers.insert(
            id,
            Peer {
                sock,
                remote,
                srtp,
                streams: Vec::new(),
                rx: HashMap::new(),
                control: Vec::new(),
                receiver: None,
            },
        );
        Ok(id)
    }

    pub fn remove_peer(&self, id: u64) -> bool {
        let mut st = self.state.lock().unwrap();
        let Some(peer) = st.peers.remove(&id) else {
            return false;
        };
        // The socket's file is shared with aiortc's descriptor: closing ours alone would leave
        // it registered, so deregister explicitly.
        let _ = epoll_ctl(
            self.epoll.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            peer.sock.as_raw_fd(),
            id,
        );
        for s in peer.rx.values() {
            st.retired_expected += s.expected();
            st.retired_received += s.received;
        }
        true
    }

    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn epoll_ctl(epfd: RawFd, op: libc::c_int, fd: RawFd, id: u64) -> std::io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: id,
    };
    // SAFETY: both descriptors are valid; ev outlives the call.
    if unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn run(state: &Mutex<State>, stop: &AtomicBool, epfd: RawFd) {
    let mut rx = RecvBatch::with_kernel_timestamps();
    // One peer's due packets per flush, a `sendmmsg` at most every BATCH datagrams.
    let mut tx = SendBatch::with_slots(BATCH);
    let mut buf = vec![0u8; PACKET_BUF];
    // SAFETY: an all-zero epoll_event is valid.
    let mut events: Vec<libc::epoll_event> = vec![unsafe { std::mem::zeroed() }; 512];
    let mut ready: Vec<u64> = Vec::new();
    let mut keyframe_for = Vec::new();
    let mut last_pass: Option<u64> = None;
    while !stop.load(Ordering::Relaxed) {
        let pass_start = now_us();
        let next_due;
        {
            let mut guard = state.lock().unwrap();
            let st = &mut *guard;
            if let Some(prev) = last_pass {
                let gap = pass_start - prev;
                st.pump.max_gap_us = st.pump.max_gap_us.max(gap);
                st.pump.interval_max_gap_us = st.pump.interval_max_gap_us.max(gap);
            }
            st.pump.passes += 1;
            // Kernel stamps are CLOCK_REALTIME; arrivals are kept on the monotonic `now_us`.
            let realtime_offset = realtime_us() - pass_start as i64;
            receive_ready(st, &ready, &mut rx, realtime_offset, &mut keyframe_for);
            ready.clear();
            let now = now_us();
            release_received(st, now, &mut buf);
            let mut due = u64::MAX;
            if !st.paused {
                for peer in st.peers.values_mut() {
                    send_due(peer, now, &mut buf, &mut tx, &mut st.totals);
                    for s in &peer.streams {
                        due = due.min(s.next_due_us);
                    }
                }
            }
            next_due = due;
            st.pump.cpu_s = thread_cpu_ns() as f64 / 1e9;
        }
        last_pass = Some(pass_start);
        // Coalescing: never start passes closer than TICK_US, so each one finds a batch of
        // datagrams to read and frames to send (arrivals carry kernel timestamps, so latency is
        // unaffected; sends go at most TICK_US late and are stamped when they go).
        let earliest = pass_start + TICK_US;
        let now = now_us();
        if earliest > now {
            std::thread::sleep(Duration::from_micros(earliest - now));
        }
        let wait_us = next_due
            .min(pass_start + MAX_WAIT_US)
            .saturating_sub(now_us());
        let ts = libc::timespec {
            tv_sec: (wait_us / 1_000_000) as libc::time_t,
            tv_nsec: ((wait_us % 1_000_000) * 1000) as libc::c_long,
        };
        // SAFETY: events is a valid buffer of its length; epfd lives as long as the pump.
        let n = unsafe {
            libc::epoll_pwait2(
                epfd,
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                &ts,
                std::ptr::null(),
            )
        };
        ready.extend(events.iter().take(n.max(0) as usize).map(|e| e.u64));
    }
}

fn send_due(peer: &mut Peer, now: u64, buf: &mut [u8], tx: &mut SendBatch, totals: &mut Totals) {
    let Peer {
        sock,
        remote,
        srtp,
        streams,
        ..
    } = peer;
    let account = |sent: Sent, totals: &mut Totals| {
        totals.packets_sent += sent.datagrams;
        totals.bytes_sent += sent.bytes;
        totals.send_errors += sent.errors;
    };
    for s in streams.iter_mut() {
        while s.next_due_us <= now {
            let kf_before = s.keyframes_sent;
            s.next_frame(
                now_us(),
                buf,
                &mut |b, len| match srtp.protect_rtp(b, len) {
                    Ok(n) => {
                        if tx.is_full() {
                            account(tx.flush(sock), totals);
                        }
                        tx.push(&b[..n], remote, 0);
                    }
                    Err(_) => totals.send_errors += 1,
                },
            );
            totals.keyframes_sent += s.keyframes_sent - kf_before;
        }
    }
    account(tx.flush(sock), totals);
}

fn receive_ready(
    st: &mut State,
    ready: &[u64],
    rx: &mut RecvBatch,
    realtime_offset: i64,
    keyframe_for: &mut Vec<u32>,
) {
    let State {
        peers,
        totals,
        latency,
        interval_latency,
        ..
    } = st;
    for id in ready {
        let Some(peer) = peers.get_mut(id) else {
            continue;
        };
        for _ in 0..RECV_ROUNDS {
            let n = rx.recv(&peer.sock).unwrap_or(0);
            let now = now_us();
            for i in 0..n {
                let Some(from) = rx.addr(i) else { continue };
                let arrival = rx
                    .kernel_rx_us(i)
                    .map_or(now, |k| ((k - realtime_offset).max(0) as u64).min(now));
                let (buf, len) = rx.slot_mut(i);
                handle_datagram(
                    peer,
                    &mut buf[..len],
                    from,
                    arrival,
                    totals,
                    latency,
                    interval_latency,
                    keyframe_for,
                );
            }
            if n < BATCH {
                break; // drained; level-triggered epoll reports anything left next pass
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn handle_datagram(
    peer: &mut Peer,
    buf: &mut [u8],
    from: SocketAddr,
    arrival: u64,
    totals: &mut Totals,
    latency: &mut LatencyHistogram,
    interval_latency: &mut LatencyHistogram,
    keyframe_for: &mut Vec<u32>,
) {
    let n = buf.len();
    match classify(buf) {
        DatagramKind::Stun | DatagramKind::Dtls => {
            totals.control_received += 1;
            if peer.control.len() >= CONTROL_QUEUE {
                peer.control.remove(0);
                totals.control_dropped += 1;
            }
            peer.control.push((buf.to_vec(), from));
        }
        // RFC 5761: RTP avoids payload types 64..=95, so a second byte there or in 192..=223 is RTCP
        DatagramKind::Media if n >= 2 && (64..=95).contains(&(buf[1] & 0x7f)) => {
            match peer.srtp.unprotect_rtcp(buf) {
                Ok(len) => {
                    totals.rtcp_received += 1;
                    keyframe_for.clear();
                    tally(&buf[..len], &mut totals.rtcp, keyframe_for);
                    for s in peer.streams.iter_mut() {
                        if keyframe_for.contains(&s.ssrc) {
                            s.force_keyframe = true;
                        }
                    }
                    if peer.streams.iter().any(|s| s.follow_remb) {
                        follow_remb(&buf[..len], &mut peer.streams);
                    }
                }
                Err(_) => totals.srtp_errors += 1,
            }
        }
        DatagramKind::Media => match peer.srtp.unprotect_rtp(buf) {
            Ok(len) => {
                let p = &buf[..len];
                if let Some(r) = &mut peer.receiver {
                    // Through the subscriber's link first; counted once out of it.
                    match r.classify(p) {
                        Some(a) => r.on_arrival(a, arrival, n),
                        None => totals.srtp_errors += 1,
                    }
                    return;
                }
                let a = Arrival {
                    ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
                    seq: u16::from_be_bytes([p[2], p[3]]),
                    len,
                    sent_us: rtp_payload(p).and_then(read_stamp),
                    twcc_seq: None,
                    video: false,
                    padding_only: false,
                };
                account_rtp(&mut peer.rx, totals, latency, interval_latency, arrival, &a);
            }
            Err(_) => totals.srtp_errors += 1,
        },
        DatagramKind::Other => {}
    }
}

/// REMBs in a compound RTCP datagram, applied to the streams they name.
fn follow_remb(rtcp: &[u8], streams: &mut [SendStream]) {
    for packet in parse_compound(rtcp) {
        let Ok(RtcpPacket::Remb {
            bitrate_bps, ssrcs, ..
        }) = packet
        else {
            continue;
        };
        for ssrc in ssrcs.iter() {
            for s in streams.iter_mut().filter(|s| s.ssrc == ssrc) {
                s.on_remb(bitrate_bps);
            }
        }
    }
}

/// Counts one received RTP packet (out of the subscriber's link, if it has one) at `at_us`.
fn account_rtp(
    rx: &mut HashMap<u32, RxStream>,
    totals: &mut Totals,
    latency: &mut LatencyHistogram,
    interval_latency: &mut LatencyHistogram,
    at_us: u64,
    a: &Arrival,
) {
    totals.packets_received += 1;
    totals.bytes_received += a.len as u64;
    if a.padding_only && !rx.contains_key(&a.ssrc) {
        // Probe padding on a stream that carries no media (an RTX SSRC): not a received stream.
        totals.unstamped_received += 1;
        return;
    }
    let transit = a.sent_us.map(|s| at_us as i64 - s as i64);
    if let Some(t) = transit {
        let us = t.max(0) as u64;
        latency.record(us);
        interval_latency.record(us);
    } else {
        totals.unstamped_received += 1;
    }
    rx.entry(a.ssrc)
        .or_default()
        .on_packet(a.seq, a.len, transit);
}

/// Subscribers' packets out of their links by `now`, and their transport-cc feedback.
fn release_received(st: &mut State, now: u64, buf: &mut [u8]) {
    let State {
        peers,
        totals,
        latency,
        interval_latency,
        ..
    } = st;
    let mut fb = Vec::new();
    for peer in peers.values_mut() {
        let Peer {
            sock,
            remote,
            srtp,
            rx,
            receiver,
            ..
        } = peer;
        let Some(r) = receiver else { continue };
        r.take_due(now, &mut |t, a| {
            account_rtp(rx, totals, latency, interval_latency, t, a)
        });
        fb.clear();
        if r.poll_feedback(now, &mut fb) == 0 {
            continue;
        }
        for packet in split_rtcp(&fb) {
            if packet.len() + 32 > buf.len() {
                continue;
            }
            buf[..packet.len()].copy_from_slice(packet);
            match srtp.protect_rtcp(buf, packet.len()) {
                Ok(n) => match sock.send_to(&buf[..n], *remote) {
                    Ok(_) => totals.feedback_sent += 1,
                    Err(_) => totals.send_errors += 1,
                },
                Err(_) => totals.send_errors += 1,
            }
        }
    }
}

/// Duplicate `fd` so the pump owns its own descriptor of the same socket.
pub fn dup_fd(fd: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: dup on a caller-provided descriptor; a failure is returned as an error.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}
