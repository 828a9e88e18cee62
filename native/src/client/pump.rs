//! The I/O side of client mode: one worker thread owns the UDP sockets of all simulated peers,
//! sends each peer's streams on schedule (SRTP-protected in place) and receives with `poll(2)`.
//! STUN and DTLS datagrams are queued for Python (aioice answers consent checks, aiortc sees
//! close_notify); everything else is SRTP/SRTCP and is measured here.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::rtcp_count::{tally, RtcpTally};
use super::stats::{LatencyHistogram, RxStream};
use super::synth::{read_stamp, rtp_payload, SendStream, PACKET_BUF};
use crate::srtp::SrtpContext;

/// Datagrams read from one socket per wake-up before moving on (fairness between peers).
const RECV_BURST: usize = 64;
/// Control datagrams kept for Python per peer; older ones are dropped (and counted).
const CONTROL_QUEUE: usize = 256;
/// Longest sleep in `poll` when nothing is due, so stop requests are seen promptly.
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
    pub rtcp: RtcpTally,
}

pub struct Peer {
    sock: UdpSocket,
    remote: SocketAddr,
    srtp: SrtpContext,
    pub streams: Vec<SendStream>,
    pub rx: HashMap<u32, RxStream>,
    pub control: Vec<(Vec<u8>, SocketAddr)>,
}

#[derive(Default)]
pub struct State {
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
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl Pump {
    pub fn start() -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        let worker = std::thread::Builder::new()
            .name("loadgen-pump".into())
            .spawn(move || run(&s, &st))?;
        Ok(Self {
            state,
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
        grow_rcvbuf(&sock);
        let mut st = self.state.lock().unwrap();
        st.next_id += 1;
        let id = st.next_id;
        st.peers.insert(
            id,
            Peer {
                sock,
                remote,
                srtp,
                streams: Vec::new(),
                rx: HashMap::new(),
                control: Vec::new(),
            },
        );
        Ok(id)
    }

    pub fn remove_peer(&self, id: u64) -> bool {
        let mut st = self.state.lock().unwrap();
        let Some(peer) = st.peers.remove(&id) else {
            return false;
        };
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

fn grow_rcvbuf(sock: &UdpSocket) {
    let fd = sock.as_raw_fd();
    let size = RCVBUF_BYTES;
    let p = &size as *const libc::c_int as *const libc::c_void;
    let n = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: fd is a valid socket we own; the option value is a c_int that outlives the calls.
    unsafe {
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, p, n) != 0 {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, p, n);
        }
    }
}

fn run(state: &Mutex<State>, stop: &AtomicBool) {
    let mut buf = vec![0u8; PACKET_BUF];
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut fd_peers: Vec<u64> = Vec::new();
    // Peers whose sockets the last poll reported readable: only those are read (no EAGAIN sweep).
    let mut ready: Vec<u64> = Vec::new();
    let mut keyframe_for = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let wait_us;
        {
            let mut guard = state.lock().unwrap();
            let st = &mut *guard;
            receive_ready(st, &ready, &mut buf, &mut keyframe_for);
            ready.clear();
            let now = now_us();
            let mut next_due = u64::MAX;
            if !st.paused {
                for peer in st.peers.values_mut() {
                    send_due(peer, now, &mut buf, &mut st.totals);
                    for s in &peer.streams {
                        next_due = next_due.min(s.next_due_us);
                    }
                }
            }
            wait_us = next_due.saturating_sub(now_us()).min(MAX_WAIT_US);
            fds.clear();
            fd_peers.clear();
            for (id, p) in &st.peers {
                fds.push(libc::pollfd {
                    fd: p.sock.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                fd_peers.push(*id);
            }
        }
        if fds.is_empty() {
            std::thread::sleep(Duration::from_micros(wait_us.max(1000)));
            continue;
        }
        // Microsecond timeout (ppoll): a millisecond poll would spin for the last millisecond
        // before every frame. With something due now, only look at readiness.
        let ts = libc::timespec {
            tv_sec: (wait_us / 1_000_000) as libc::time_t,
            tv_nsec: ((wait_us % 1_000_000) * 1000) as libc::c_long,
        };
        // SAFETY: fds is a valid array of pollfd for the duration of the call. The sockets stay
        // open: peers are only removed by the lock holder, and a closed fd just reports POLLNVAL.
        unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        ready.extend(
            fds.iter()
                .zip(&fd_peers)
                .filter(|(f, _)| f.revents & libc::POLLIN != 0)
                .map(|(_, id)| *id),
        );
    }
}

fn send_due(peer: &mut Peer, now: u64, buf: &mut [u8], totals: &mut Totals) {
    let Peer {
        sock,
        remote,
        srtp,
        streams,
        ..
    } = peer;
    for s in streams.iter_mut() {
        while s.next_due_us <= now {
            let kf_before = s.keyframes_sent;
            s.next_frame(
                now_us(),
                buf,
                &mut |b, len| match srtp.protect_rtp(b, len) {
                    Ok(n) => match sock.send_to(&b[..n], *remote) {
                        Ok(_) => {
                            totals.packets_sent += 1;
                            totals.bytes_sent += n as u64;
                        }
                        Err(_) => totals.send_errors += 1,
                    },
                    Err(_) => totals.send_errors += 1,
                },
            );
            totals.keyframes_sent += s.keyframes_sent - kf_before;
        }
    }
}

fn receive_ready(st: &mut State, ready: &[u64], buf: &mut [u8], keyframe_for: &mut Vec<u32>) {
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
        for _ in 0..RECV_BURST {
            let (n, from) = match peer.sock.recv_from(buf) {
                Ok(r) => r,
                Err(_) => break, // WouldBlock, or an error the next poll reports again
            };
            let arrival = now_us();
            match buf.first().copied().unwrap_or(0) {
                0..=3 | 20..=63 => {
                    totals.control_received += 1;
                    if peer.control.len() >= CONTROL_QUEUE {
                        peer.control.remove(0);
                        totals.control_dropped += 1;
                    }
                    peer.control.push((buf[..n].to_vec(), from));
                }
                128..=191 if n >= 2 && (64..=95).contains(&(buf[1] & 0x7f)) => {
                    match peer.srtp.unprotect_rtcp(&mut buf[..n]) {
                        Ok(len) => {
                            totals.rtcp_received += 1;
                            keyframe_for.clear();
                            tally(&buf[..len], &mut totals.rtcp, keyframe_for);
                            for s in peer.streams.iter_mut() {
                                if keyframe_for.contains(&s.ssrc) {
                                    s.force_keyframe = true;
                                }
                            }
                        }
                        Err(_) => totals.srtp_errors += 1,
                    }
                }
                128..=191 => match peer.srtp.unprotect_rtp(&mut buf[..n]) {
                    Ok(len) => {
                        let p = &buf[..len];
                        let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
                        let seq = u16::from_be_bytes([p[2], p[3]]);
                        let sent = rtp_payload(p).and_then(read_stamp);
                        let transit = sent.map(|s| arrival as i64 - s as i64);
                        if let Some(t) = transit {
                            let us = t.max(0) as u64;
                            latency.record(us);
                            interval_latency.record(us);
                        } else {
                            totals.unstamped_received += 1;
                        }
                        peer.rx
                            .entry(ssrc)
                            .or_default()
                            .on_packet(seq, len, transit);
                        totals.packets_received += 1;
                        totals.bytes_received += len as u64;
                    }
                    Err(_) => totals.srtp_errors += 1,
                },
                _ => {}
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
