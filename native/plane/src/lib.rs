//! The native media plane: UDP sockets owned by Rust worker threads.
//!
//! Each worker has a UDP socket of its own per address (`port_per_worker`: ports `port`,
//! `port + 1`, …) and reads it with `recvmmsg`; a room's peers are given the sockets of the worker
//! the room is pinned to, so their SRTP/SRTCP is read, routed and sent by that one thread, with no
//! copy or wake-up between threads. With one port for all (`port_per_worker` off) thread 0 reads
//! every socket and passes media of rooms pinned elsewhere in a pooled buffer to the room's worker
//! (an eventfd wakes it); ICE-TCP frames always arrive on thread 0 and go the same way. Whoever
//! reads a datagram treats it the same: STUN, DTLS and media from addresses not handed over yet
//! are queued for Python (aioice/aiortc), which is woken through an eventfd. Anything else from a
//! source that is neither handed over nor admitted by Python (an address its ICE agent has
//! answered or checked) is dropped here and counted as `unknown_source`: only STUN may start a
//! session, and only a Binding request naming a registered ICE session's ufrag (else
//! `unknown_source`) whose MESSAGE-INTEGRITY holds that session's password (else
//! `stun_integrity`) goes up from such a source. Python reaches the workers only through short,
//! locked control calls; nothing in the packet path takes the GIL.
//!
//! With ICE-TCP on, each address also has a TCP listener (`tcp.rs`): thread 0 reads its
//! connections beside the UDP sockets and treats every RFC 4571 frame as a datagram from
//! (listener socket index, remote address), so the paths above apply unchanged; a handed-over
//! peer reached over TCP gets its media written framed onto its connection.

pub mod clock;
pub mod demux;
pub mod placement;
pub mod tcp;
pub mod udp;
mod worker;

use std::collections::HashMap;

use mediasrv_core::fasthash::FastMap;
use mediasrv_core::ids::TransportId;
use mediasrv_core::stun;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::Duration;

pub use clock::{now_ms, thread_cpu_ns};
use demux::{classify, DatagramKind};
use placement::Placement;
use tcp::{Registry, TcpConn, TcpSide, Verdict};
pub use tcp::{TcpConfig, TcpCounters};
use udp::{RecvBatch, BATCH, SLOT_LEN};
use worker::{add_counters, Peer, PeerIce, StunVerdict, WorkerState};
pub use worker::{lock, IceCredentials, PeerStats, SharedRouter, WorkerStats};

pub use mediasrv_core::consent::ConsentTimers;
pub use mediasrv_core::stun::IceRole;

use mediasrv_core::srtp::{Profile, SrtpContext, SrtpCounters, SrtpError};

/// How often a worker reads its own CPU time (for the per-worker CPU figures).
const CPU_SAMPLE_MS: u64 = 20;

/// Most datagrams waiting for Python; beyond it they are dropped and counted (STUN/DTLS retransmit).
pub const TO_PYTHON_LIMIT: usize = 4096;

#[derive(Debug, Clone)]
pub struct PlaneConfig {
    pub addresses: Vec<std::net::IpAddr>,
    /// The UDP port (0: ephemeral ones): for every peer, or worker w's `port + w` with
    /// `port_per_worker`.
    pub port: u16,
    pub workers: usize,
    /// A UDP socket per worker and address, each read by its worker (see the module comment);
    /// false: one socket per address, read by thread 0 for every worker.
    pub port_per_worker: bool,
    /// Share of publishers' RTP dropped on arrival, parts per million (loss tests only).
    pub drop_ppm: u32,
    pub poll_interval_ms: u64,
    /// After a partial receive batch, wait this long before reading again so the next read takes
    /// a fuller batch (interrupt-coalescing style, far fewer wake-ups per packet under load); up to
    /// 4× as long after a read of few datagrams (`udp::gather_wait_us`). 0 reads as soon as
    /// anything arrives.
    pub rx_coalesce_us: u64,
    /// ICE-TCP listeners beside the UDP sockets (None: UDP only).
    pub tcp: Option<TcpConfig>,
}

/// A datagram for aioice/aiortc.
pub struct Inbound {
    pub socket: usize,
    pub from: SocketAddr,
    pub data: Vec<u8>,
}

#[derive(Default)]
pub struct PlaneCounters {
    pub datagrams_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub to_python: AtomicU64,
    pub to_python_overflow: AtomicU64,
    /// Datagrams from sources neither handed over nor admitted that are not a Binding request
    /// naming a registered ICE session.
    pub unknown_source: AtomicU64,
    /// Binding requests from such sources naming a session, without that session's integrity.
    pub stun_integrity: AtomicU64,
    pub recv_errors: AtomicU64,
    pub handoffs: AtomicU64,
    pub recv_batches: AtomicU64,
    /// ICE-TCP connections (frames are counted with the datagrams above).
    pub tcp: TcpCounters,
}

struct Handoff {
    transport: TransportId,
    buf: Vec<u8>,
    len: usize,
}

struct WorkerSlot {
    state: Mutex<WorkerState>,
    /// Media read by another thread for this worker's rooms (ICE-TCP frames, or everything with
    /// one port for all), and the eventfd that wakes the worker for it.
    inbox: Mutex<Vec<Handoff>>,
    wake: OwnedFd,
    /// Datagrams (and ICE-TCP frames) this thread has read, for anyone.
    received: AtomicU64,
    rooms: AtomicU64,
    /// CPU time the worker thread has used (CLOCK_THREAD_CPUTIME_ID), for per-CPU-second figures.
    cpu_ns: AtomicU64,
    /// Work done so far in packets: media handled and datagrams sent (plus `received`), stored
    /// by the worker after each pass.
    packets: AtomicU64,
    /// System calls of the packet path made by this thread (poll, recvmmsg, sendmmsg, eventfd
    /// reads and writes, the gather sleep, CPU-time reads), stored after each pass.
    syscalls: AtomicU64,
    /// Receive gather waits, and those after which the read found nothing (`udp::GatherGate`).
    gather_waits: AtomicU64,
    gather_empty: AtomicU64,
    /// Set (under the inbox lock) while the worker waits in `poll`: only then does a thread
    /// handing it media pay a write to its eventfd.
    sleeping: AtomicBool,
}

/// One worker's load, as exported in the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerLoad {
    pub packets: u64,
    pub syscalls: u64,
    pub gather_waits: u64,
    pub gather_empty: u64,
    pub rooms: u64,
    pub cpu_s: f64,
}

/// One socket's ICE sessions: local ufrag → ICE password.
type IceSessions = HashMap<Box<[u8]>, Box<[u8]>>;

struct Shared {
    cfg: PlaneConfig,
    sockets: Vec<UdpSocket>,
    /// The worker that reads each UDP socket.
    socket_worker: Vec<usize>,
    /// ICE-TCP listeners: (socket index, bound address). Their socket indices follow the UDP ones.
    tcp_listeners: Vec<(usize, SocketAddr)>,
    /// Open ICE-TCP connections by (listener socket index, remote address).
    tcp_conns: RwLock<FastMap<(usize, SocketAddr), Arc<TcpConn>>>,
    /// (socket, remote address) → (worker, transport), for handed-over peers.
    routes: RwLock<FastMap<(usize, SocketAddr), (usize, TransportId)>>,
    /// (socket, remote address) pairs Python's ICE agents talk to before handover: their DTLS and
    /// early media go up to Python. Python bounds it per session and removes a session's on close.
    admitted: RwLock<FastMap<(usize, SocketAddr), ()>>,
    /// Per socket: local ICE ufrag → password of each session Python's agents run (SipHash: the
    /// lookups use ufrags that anyone can send).
    ice_sessions: RwLock<Vec<IceSessions>>,
    /// transport → worker, and room → worker.
    transports: RwLock<HashMap<TransportId, usize>>,
    rooms: RwLock<HashMap<u64, usize>>,
    workers: Vec<WorkerSlot>,
    to_python: Mutex<Vec<Inbound>>,
    /// Handed-over peers whose consent expired, for Python to close.
    consent_lost: Mutex<Vec<TransportId>>,
    wake: OwnedFd,
    stop: AtomicBool,
    /// Cleared to leave datagrams queued in the kernel (benchmarks measure saturated batches).
    receiving: AtomicBool,
    counters: PlaneCounters,
    pool: Mutex<Vec<Vec<u8>>>,
    placement: Mutex<Placement>,
}

impl Shared {
    /// Each worker's packet counter: media handled, datagrams sent and datagrams read.
    fn packet_counters(&self) -> Vec<u64> {
        self.workers
            .iter()
            .map(|w| w.packets.load(Relaxed) + w.received.load(Relaxed))
            .collect()
    }

    /// What room placement balances: each worker thread's CPU time so far, in µs. Packets are the
    /// obvious proxy, but what a packet costs differs by thread and by load (thread 0's batched
    /// read of a datagram for another worker cost 0.3× to 1× of routing and sending it, as the
    /// batches grew or shrank), while CPU time is the load itself. No part of it is set apart as
    /// receiving (placement estimates thread 0's when it reads for everyone).
    fn placement_load(&self) -> Vec<u64> {
        self.workers
            .iter()
            .map(|w| w.cpu_ns.load(Relaxed) / 1000)
            .collect()
    }

    /// Wakes worker `w` for handed-on media, with a system call only if it is waiting.
    fn notify(&self, w: usize) -> u64 {
        let slot = &self.workers[w];
        if slot.sleeping.load(Relaxed) {
            signal(&slot.wake);
            1
        } else {
            0
        }
    }

    /// The UDP sockets worker `w` reads.
    fn sockets_of(&self, w: usize) -> Vec<usize> {
        (0..self.sockets.len())
            .filter(|&s| self.socket_worker[s] == w)
            .collect()
    }
}

#[derive(Debug)]
pub enum PlaneError {
    Io(io::Error),
    UnknownRoom(u64),
    UnknownSocket(usize),
    Srtp(SrtpError),
    /// No ICE-TCP connection from that address on that listener.
    NoConnection(SocketAddr),
    Closed,
}

impl std::fmt::Display for PlaneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlaneError::Io(e) => write!(f, "socket error: {e}"),
            PlaneError::UnknownRoom(r) => write!(f, "room {r} is not attached to the media plane"),
            PlaneError::UnknownSocket(s) => write!(f, "no media socket {s}"),
            PlaneError::Srtp(e) => write!(f, "SRTP: {e}"),
            PlaneError::NoConnection(a) => write!(f, "no ICE-TCP connection from {a}"),
            PlaneError::Closed => f.write_str("the media plane is closed"),
        }
    }
}

impl std::error::Error for PlaneError {}

/// Keys of one peer as exported from DTLS (already split into our tx half and its rx half).
pub struct PeerKeys<'a> {
    pub profile: &'a str,
    pub tx_key: &'a [u8],
    pub tx_salt: &'a [u8],
    pub rx_key: &'a [u8],
    pub rx_salt: &'a [u8],
}

pub struct Plane {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Plane {
    pub fn start(cfg: PlaneConfig) -> Result<Self, PlaneError> {
        let workers = cfg.workers.max(1);
        let readers = if cfg.port_per_worker { workers } else { 1 };
        let mut sockets = Vec::new();
        let mut socket_worker = Vec::new();
        for ip in &cfg.addresses {
            for w in 0..readers {
                let port = match cfg.port {
                    0 => 0,
                    p => p.checked_add(w as u16).ok_or_else(|| {
                        PlaneError::Io(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("UDP ports {p}..{p}+{readers} go past 65535"),
                        ))
                    })?,
                };
                sockets.push(udp::bind(SocketAddr::new(*ip, port)).map_err(PlaneError::Io)?);
                socket_worker.push(w);
            }
        }
        let mut tcp_side = match &cfg.tcp {
            Some(t) => Some(
                TcpSide::bind(t.clone(), &cfg.addresses, sockets.len(), SLOT_LEN)
                    .map_err(PlaneError::Io)?,
            ),
            None => None,
        };
        let tcp_listeners = tcp_side
            .as_ref()
            .map_or_else(Vec::new, TcpSide::local_addrs);
        let wake = eventfd().map_err(PlaneError::Io)?;
        let slots = (0..workers)
            .map(|i| -> io::Result<WorkerSlot> {
                Ok(WorkerSlot {
                    state: Mutex::new(WorkerState::new(
                        sockets.len(),
                        cfg.drop_ppm,
                        cfg.poll_interval_ms,
                        0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1) ^ now_ms(),
                    )),
                    inbox: Mutex::new(Vec::with_capacity(BATCH * 4)),
                    wake: eventfd()?,
                    received: AtomicU64::new(0),
                    rooms: AtomicU64::new(0),
                    cpu_ns: AtomicU64::new(0),
                    packets: AtomicU64::new(0),
                    syscalls: AtomicU64::new(0),
                    gather_waits: AtomicU64::new(0),
                    gather_empty: AtomicU64::new(0),
                    sleeping: AtomicBool::new(false),
                })
            })
            .collect::<io::Result<Vec<_>>>()
            .map_err(PlaneError::Io)?;
        let socket_count = sockets.len() + tcp_listeners.len();
        let shared_receiver = !cfg.port_per_worker;
        let shared = Arc::new(Shared {
            cfg,
            sockets,
            socket_worker,
            tcp_listeners,
            tcp_conns: RwLock::new(FastMap::default()),
            routes: RwLock::new(FastMap::default()),
            admitted: RwLock::new(FastMap::default()),
            ice_sessions: RwLock::new(vec![HashMap::new(); socket_count]),
            transports: RwLock::new(HashMap::new()),
            rooms: RwLock::new(HashMap::new()),
            workers: slots,
            to_python: Mutex::new(Vec::new()),
            consent_lost: Mutex::new(Vec::new()),
            wake,
            stop: AtomicBool::new(false),
            receiving: AtomicBool::new(true),
            counters: PlaneCounters::default(),
            pool: Mutex::new(Vec::new()),
            placement: Mutex::new(Placement::with_receiver(workers, shared_receiver)),
        });
        let mut threads = Vec::new();
        for i in 0..workers {
            let s = Arc::clone(&shared);
            let tcp = if i == 0 { tcp_side.take() } else { None };
            let t = std::thread::Builder::new()
                .name(format!("media-worker-{i}"))
                .spawn(move || worker_loop(&s, i, tcp))
                .map_err(PlaneError::Io)?;
            threads.push(t);
        }
        Ok(Self { shared, threads })
    }

    /// The worker that reads each UDP socket (by socket index): a room's peers belong on the
    /// sockets of the worker `attach_room` pinned it to.
    pub fn socket_workers(&self) -> Vec<usize> {
        self.shared.socket_worker.clone()
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.shared
            .sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// (socket index, bound address) of each ICE-TCP listener (empty when ICE-TCP is off).
    pub fn tcp_addrs(&self) -> Vec<(usize, SocketAddr)> {
        self.shared.tcp_listeners.clone()
    }

    /// Open ICE-TCP connections.
    pub fn tcp_connections(&self) -> usize {
        self.shared
            .tcp_conns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn is_tcp(&self, socket: usize) -> bool {
        socket >= self.shared.sockets.len()
            && socket < self.shared.sockets.len() + self.shared.tcp_listeners.len()
    }

    /// The worker a handed-over transport's peer lives on.
    fn worker_of(&self, transport: TransportId) -> Option<usize> {
        self.shared
            .transports
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&transport)
            .copied()
    }

    fn check_socket(&self, socket: usize) -> Result<(), PlaneError> {
        if socket < self.shared.sockets.len() || self.is_tcp(socket) {
            Ok(())
        } else {
            Err(PlaneError::UnknownSocket(socket))
        }
    }

    /// The open ICE-TCP connection from `addr` on listener `socket`.
    fn tcp_conn(&self, socket: usize, addr: SocketAddr) -> Result<Arc<TcpConn>, PlaneError> {
        self.shared
            .tcp_conns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(socket, addr))
            .cloned()
            .ok_or(PlaneError::NoConnection(addr))
    }

    pub fn worker_count(&self) -> usize {
        self.shared.workers.len()
    }

    pub fn wake_fd(&self) -> RawFd {
        self.shared.wake.as_raw_fd()
    }

    /// Everything queued for Python since the last call (clears the eventfd first, so nothing
    /// queued after this call goes unnoticed).
    pub fn take_inbound(&self) -> Vec<Inbound> {
        clear(&self.shared.wake);
        std::mem::take(&mut *lock(&self.shared.to_python))
    }

    /// Handed-over peers whose consent (RFC 7675) expired since the last call, each reported once
    /// (read after `take_inbound`: the same eventfd wakes Python for both).
    pub fn take_consent_lost(&self) -> Vec<TransportId> {
        std::mem::take(&mut *lock(&self.shared.consent_lost))
    }

    /// STUN/DTLS from aioice/aiortc, sent as is (framed onto the connection from `to` when
    /// `socket` is an ICE-TCP listener).
    pub fn send_raw(
        &self,
        socket: usize,
        data: &[u8],
        to: SocketAddr,
    ) -> Result<usize, PlaneError> {
        if self.is_tcp(socket) {
            let conn = self.tcp_conn(socket, to)?;
            let mut framed = Vec::with_capacity(data.len() + 2);
            if !tcp::push_frame(&mut framed, data) {
                return Err(PlaneError::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "longer than an RFC 4571 frame",
                )));
            }
            let r = conn.write_frames(&framed);
            let c = &self.shared.counters.tcp;
            c.write_overflow.fetch_add(r.overflow, Relaxed);
            if r.failed > 0 {
                return Err(PlaneError::Io(io::ErrorKind::BrokenPipe.into()));
            }
            return Ok(data.len());
        }
        let sock = self
            .shared
            .sockets
            .get(socket)
            .ok_or(PlaneError::UnknownSocket(socket))?;
        sock.send_to(data, to).map_err(PlaneError::Io)
    }

    /// Lets non-STUN datagrams from `addr` on `socket` reach Python (an address an ICE agent has
    /// authenticated or is checking). True if it was not admitted yet.
    pub fn admit_source(&self, socket: usize, addr: SocketAddr) -> bool {
        self.shared
            .admitted
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((socket, addr), ())
            .is_none()
    }

    /// Undoes `admit_source`; true if it was admitted.
    pub fn forget_source(&self, socket: usize, addr: SocketAddr) -> bool {
        self.shared
            .admitted
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(socket, addr))
            .is_some()
    }

    /// Registers an ICE session on `socket`: Binding requests from unknown sources naming `ufrag`
    /// and authenticated with `password` go up to Python. False if `socket` does not exist.
    pub fn register_ice_session(&self, socket: usize, ufrag: &[u8], password: &[u8]) -> bool {
        let mut sessions = self
            .shared
            .ice_sessions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        match sessions.get_mut(socket) {
            Some(m) => {
                m.insert(ufrag.into(), password.into());
                true
            }
            None => false,
        }
    }

    /// Undoes `register_ice_session`; true if it was registered.
    pub fn forget_ice_session(&self, socket: usize, ufrag: &[u8]) -> bool {
        let mut sessions = self
            .shared
            .ice_sessions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        sessions
            .get_mut(socket)
            .is_some_and(|m| m.remove(ufrag).is_some())
    }

    /// How many ICE sessions are registered (over all sockets).
    pub fn ice_sessions(&self) -> usize {
        let sessions = self
            .shared
            .ice_sessions
            .read()
            .unwrap_or_else(|e| e.into_inner());
        sessions.iter().map(HashMap::len).sum()
    }

    /// How many sources are admitted (the per-source state Python asked for).
    pub fn admitted_sources(&self) -> usize {
        self.shared
            .admitted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Pins a room's router to the worker with the least load: CPU time a second of each worker
    /// thread (see `placement.rs`); returns the worker index. The room stays there until detached.
    pub fn attach_room(&self, room: u64, router: SharedRouter) -> usize {
        let w = {
            let load = self.shared.placement_load();
            let rooms: Vec<u64> = self
                .shared
                .workers
                .iter()
                .map(|s| s.rooms.load(Relaxed))
                .collect();
            lock(&self.shared.placement).choose(now_ms(), &load, 0, &rooms)
        };
        let slot = &self.shared.workers[w];
        slot.rooms.fetch_add(1, Relaxed);
        lock(&slot.state).rooms.insert(room, router);
        self.shared
            .rooms
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(room, w);
        w
    }

    pub fn detach_room(&self, room: u64) -> bool {
        let Some(w) = self
            .shared
            .rooms
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&room)
        else {
            return false;
        };
        let slot = &self.shared.workers[w];
        slot.rooms.fetch_sub(1, Relaxed);
        lock(&slot.state).rooms.remove(&room);
        true
    }

    /// Hands a peer over: from now on its SRTP from `addr` on `socket` is handled natively.
    pub fn register_peer(
        &self,
        transport: TransportId,
        room: u64,
        socket: usize,
        addr: SocketAddr,
        keys: PeerKeys<'_>,
    ) -> Result<(), PlaneError> {
        self.check_socket(socket)?;
        let tcp = if self.is_tcp(socket) {
            Some(self.tcp_conn(socket, addr)?)
        } else {
            None
        };
        let w = *self
            .shared
            .rooms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&room)
            .ok_or(PlaneError::UnknownRoom(room))?;
        let profile = Profile::from_openssl_name(keys.profile).map_err(PlaneError::Srtp)?;
        let srtp = SrtpContext::new(
            profile,
            keys.tx_key,
            keys.tx_salt,
            keys.rx_key,
            keys.rx_salt,
        )
        .map_err(PlaneError::Srtp)?;
        self.unregister_peer(transport);
        let peer = Peer {
            room,
            socket,
            addr,
            tcp,
            srtp,
            stats: PeerStats::default(),
            ice: None,
        };
        lock(&self.shared.workers[w].state)
            .peers
            .insert(transport, peer);
        self.shared
            .transports
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(transport, w);
        self.shared
            .routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((socket, addr), (w, transport));
        Ok(())
    }

    /// From now on the plane runs a handed-over peer's ICE consent freshness (RFC 7675): it
    /// answers the peer's Binding requests from its address (authenticated with our password),
    /// sends checks of its own every 0.8-1.2 × `timers.interval_ms`, and when none has been
    /// answered for `timers.timeout_ms` reports the peer once through `take_consent_lost` (and
    /// wakes Python). False if the transport is not handed over.
    pub fn start_consent(
        &self,
        transport: TransportId,
        credentials: &IceCredentials<'_>,
        timers: ConsentTimers,
    ) -> bool {
        let Some(w) = self.worker_of(transport) else {
            return false;
        };
        let mut st = lock(&self.shared.workers[w].state);
        let Some(p) = st.peers.get_mut(&transport) else {
            return false;
        };
        let seed = 0x9E37_79B9_7F4A_7C15 ^ transport.0.wrapping_mul(0xff51_afd7_ed55_8ccd);
        p.ice = Some(PeerIce::new(credentials, timers, now_ms(), seed));
        true
    }

    pub fn unregister_peer(&self, transport: TransportId) -> bool {
        let Some(w) = self
            .shared
            .transports
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&transport)
        else {
            return false;
        };
        self.shared
            .routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, v| v.1 != transport);
        let mut st = lock(&self.shared.workers[w].state);
        if let Some(p) = st.peers.remove(&transport) {
            let c = p.srtp.counters().clone();
            add_counters(&mut st.stats.retired_srtp, &c);
        }
        true
    }

    /// A handed-over peer's media now comes from `addr` on `socket` (its NAT rebound, or it moved):
    /// its SRTP from there is handled natively again and everything we send goes there. The caller
    /// has authenticated the peer at that address (an ICE check with its credentials). False if
    /// the transport is not handed over.
    pub fn update_peer_address(
        &self,
        transport: TransportId,
        socket: usize,
        addr: SocketAddr,
    ) -> Result<bool, PlaneError> {
        self.check_socket(socket)?;
        let tcp = if self.is_tcp(socket) {
            Some(self.tcp_conn(socket, addr)?)
        } else {
            None
        };
        let Some(w) = self.worker_of(transport) else {
            return Ok(false);
        };
        {
            let mut routes = self
                .shared
                .routes
                .write()
                .unwrap_or_else(|e| e.into_inner());
            routes.retain(|_, v| v.1 != transport);
            routes.insert((socket, addr), (w, transport));
        }
        let mut st = lock(&self.shared.workers[w].state);
        match st.peers.get_mut(&transport) {
            Some(p) => {
                p.socket = socket;
                p.addr = addr;
                p.tcp = tcp;
                p.stats.address_changes += 1;
                // Confirm consent at the new address soon, not only at the next scheduled check.
                if let Some(ice) = p.ice.as_mut() {
                    ice.consent.check_soon(now_ms());
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Protects and sends an RTP/RTCP packet produced on the Python side (e.g. a keyframe
    /// request); false if the transport is not handed over.
    pub fn send_media(&self, transport: TransportId, packet: &[u8]) -> bool {
        match self.worker_of(transport) {
            Some(w) => lock(&self.shared.workers[w].state).send_from_python(
                &self.shared.sockets,
                transport,
                packet,
            ),
            None => false,
        }
    }

    pub fn peer_stats(&self, transport: TransportId) -> Option<(PeerStats, SrtpCounters)> {
        let w = self.worker_of(transport)?;
        let st = lock(&self.shared.workers[w].state);
        st.peers
            .get(&transport)
            .map(|p| (p.stats, p.srtp.counters().clone()))
    }

    /// Per worker: packets handled, packet-path system calls, rooms placed there, CPU seconds.
    pub fn worker_loads(&self) -> Vec<WorkerLoad> {
        let packets = self.shared.packet_counters();
        self.shared
            .workers
            .iter()
            .zip(packets)
            .map(|(w, packets)| WorkerLoad {
                packets,
                syscalls: w.syscalls.load(Relaxed),
                gather_waits: w.gather_waits.load(Relaxed),
                gather_empty: w.gather_empty.load(Relaxed),
                rooms: w.rooms.load(Relaxed),
                cpu_s: w.cpu_ns.load(Relaxed) as f64 / 1e9,
            })
            .collect()
    }

    /// CPU seconds used so far by each worker thread.
    pub fn worker_cpu_seconds(&self) -> Vec<f64> {
        self.shared
            .workers
            .iter()
            .map(|w| w.cpu_ns.load(Relaxed) as f64 / 1e9)
            .collect()
    }

    /// Stops or resumes reading the sockets (datagrams wait in the kernel meanwhile).
    pub fn set_receiving(&self, on: bool) {
        self.shared.receiving.store(on, Relaxed);
    }

    pub fn counters(&self) -> &PlaneCounters {
        &self.shared.counters
    }

    /// Worker counters summed, and SRTP counters over all peers ever registered.
    pub fn worker_totals(&self) -> (WorkerStats, SrtpCounters) {
        let mut total = WorkerStats::default();
        let mut srtp = SrtpCounters::default();
        for slot in &self.shared.workers {
            let st = lock(&slot.state);
            let s = &st.stats;
            total.datagrams_out += s.datagrams_out;
            total.bytes_out += s.bytes_out;
            total.send_errors += s.send_errors;
            total.no_destination += s.no_destination;
            total.no_room += s.no_room;
            total.oversize += s.oversize;
            total.test_dropped += s.test_dropped;
            total.tcp_write_overflow += s.tcp_write_overflow;
            total.consent_lost += s.consent_lost;
            add_counters(&mut srtp, &st.srtp_totals());
        }
        (total, srtp)
    }

    pub fn close(&mut self) {
        self.shared.stop.store(true, Relaxed);
        for slot in &self.shared.workers {
            signal(&slot.wake);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.close();
    }
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd returns a new fd we own, or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes an eventfd readable.
fn signal(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes to our eventfd.
    unsafe { libc::write(fd.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
}

/// Clears an eventfd.
fn clear(fd: &OwnedFd) {
    let mut v = 0u64;
    // SAFETY: reading 8 bytes from our eventfd into a u64.
    unsafe { libc::read(fd.as_raw_fd(), &mut v as *mut u64 as *mut libc::c_void, 8) };
}

fn wake_python(shared: &Shared) {
    signal(&shared.wake);
}

/// Hands the peers whose consent expired on this worker to Python, and wakes it.
fn report_lost(shared: &Shared, st: &mut WorkerState) {
    if st.lost.is_empty() {
        return;
    }
    lock(&shared.consent_lost).append(&mut st.lost);
    wake_python(shared);
}

/// A worker's view of the plane while it dispatches one batch of datagrams (or TCP frames): the
/// route tables read-locked once for the batch, its own worker state locked when first needed.
struct Dispatch<'a> {
    shared: &'a Shared,
    /// The worker reading the batch.
    index: usize,
    routes: RwLockReadGuard<'a, FastMap<(usize, SocketAddr), (usize, TransportId)>>,
    admitted: RwLockReadGuard<'a, FastMap<(usize, SocketAddr), ()>>,
    ice: Option<RwLockReadGuard<'a, Vec<IceSessions>>>,
    own: Option<MutexGuard<'a, WorkerState>>,
    spare: &'a mut Vec<Vec<u8>>,
    notify: &'a mut [bool],
    woke_python: bool,
    now: u64,
}

impl<'a> Dispatch<'a> {
    fn new(
        shared: &'a Shared,
        index: usize,
        spare: &'a mut Vec<Vec<u8>>,
        notify: &'a mut [bool],
        now: u64,
    ) -> Self {
        Self {
            shared,
            index,
            routes: shared.routes.read().unwrap_or_else(|e| e.into_inner()),
            admitted: shared.admitted.read().unwrap_or_else(|e| e.into_inner()),
            ice: None,
            own: None,
            spare,
            notify,
            woke_python: false,
            now,
        }
    }

    /// One datagram from `from` on `socket`: SRTP/SRTCP of a handed-over peer is routed here (or
    /// on its room's worker); STUN, DTLS and early media from sources Python knows, and Binding
    /// requests authenticated for one of the socket's ICE sessions, go up to Python; anything
    /// else is dropped and counted.
    #[inline]
    fn datagram(&mut self, s: usize, from: SocketAddr, buf: &mut [u8], len: usize) -> Verdict {
        let shared = self.shared;
        shared.counters.bytes_in.fetch_add(len as u64, Relaxed);
        let kind = classify(&buf[..len]);
        let route = self.routes.get(&(s, from)).copied();
        let mut verdict = Verdict::Known;
        if route.is_none() && !self.admitted.contains_key(&(s, from)) {
            let sessions = self.ice.get_or_insert_with(|| {
                shared
                    .ice_sessions
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
            });
            match check_unknown_source(&sessions[s], &buf[..len]) {
                Ok(()) => verdict = Verdict::Authenticated,
                Err(StunDrop::UnknownSource) => {
                    shared.counters.unknown_source.fetch_add(1, Relaxed);
                    return Verdict::Dropped;
                }
                Err(StunDrop::Integrity) => {
                    shared.counters.stun_integrity.fetch_add(1, Relaxed);
                    return Verdict::Dropped;
                }
            }
        }
        if kind == DatagramKind::Stun {
            if let Some((w, transport)) = route {
                // Consent checks and their answers on a handed-over peer's path stay here.
                let datagram = &buf[..len];
                let v = if w == self.index {
                    self.own
                        .get_or_insert_with(|| lock(&shared.workers[w].state))
                        .handle_stun(&shared.sockets, transport, datagram, self.now)
                } else {
                    lock(&shared.workers[w].state).handle_stun(
                        &shared.sockets,
                        transport,
                        datagram,
                        self.now,
                    )
                };
                match v {
                    StunVerdict::Handled => return verdict,
                    StunVerdict::Refused => {
                        shared.counters.stun_integrity.fetch_add(1, Relaxed);
                        return verdict;
                    }
                    StunVerdict::ToPython => {}
                }
            }
        }
        if kind == DatagramKind::Media {
            if let Some((w, transport)) = route {
                if w == self.index {
                    let st = self
                        .own
                        .get_or_insert_with(|| lock(&shared.workers[w].state));
                    st.handle_media(&shared.sockets, transport, buf, len, self.now);
                } else {
                    if self.spare.is_empty() {
                        self.spare.append(&mut lock(&shared.pool));
                    }
                    let mut b = self.spare.pop().unwrap_or_else(|| vec![0; SLOT_LEN]);
                    b[..len].copy_from_slice(&buf[..len]);
                    lock(&shared.workers[w].inbox).push(Handoff {
                        transport,
                        buf: b,
                        len,
                    });
                    shared.counters.handoffs.fetch_add(1, Relaxed);
                    self.notify[w] = true;
                }
                return verdict;
            }
        }
        let mut q = lock(&shared.to_python);
        if q.len() >= TO_PYTHON_LIMIT {
            shared.counters.to_python_overflow.fetch_add(1, Relaxed);
            return verdict;
        }
        q.push(Inbound {
            socket: s,
            from,
            data: buf[..len].to_vec(),
        });
        shared.counters.to_python.fetch_add(1, Relaxed);
        self.woke_python = true;
        verdict
    }

    /// Releases the tables, sends what this worker's own rooms produced, wakes the workers given
    /// media; true if anything was queued for Python, and the wakes it made.
    fn finish(self) -> (bool, u64) {
        let Dispatch {
            shared,
            routes,
            admitted,
            ice,
            own,
            notify,
            woke_python,
            ..
        } = self;
        drop(ice);
        drop(admitted);
        drop(routes);
        if let Some(mut st) = own {
            st.flush(&shared.sockets);
        }
        let mut wakes = 0;
        for (w, flag) in notify.iter_mut().enumerate() {
            if std::mem::take(flag) {
                wakes += shared.notify(w);
            }
        }
        (woke_python, wakes)
    }
}

/// Waits in `poll` for the worker's eventfd, and its sockets while `receiving`: up to `interval`
/// ms when nothing was handed on to it, else not at all.
fn poll_once(
    slot: &WorkerSlot,
    fds: &mut [libc::pollfd],
    receiving: bool,
    interval: i32,
    syscalls: &mut u64,
) {
    let timeout = {
        // Decided under the inbox lock: media handed on after this sees `sleeping` and
        // signals the eventfd, media handed on before it is taken without waiting.
        let inbox = lock(&slot.inbox);
        if inbox.is_empty() {
            slot.sleeping.store(true, Relaxed);
            interval
        } else {
            0
        }
    };
    let polled = if receiving { fds.len() } else { 1 };
    // SAFETY: fds is a valid array of pollfd for the duration of the call.
    unsafe { libc::poll(fds.as_mut_ptr(), polled as libc::nfds_t, timeout) };
    slot.sleeping.store(false, Relaxed);
    *syscalls += 1;
    if fds[0].revents & libc::POLLIN != 0 {
        clear(&slot.wake);
        *syscalls += 1;
    }
}

/// Worker `index`: reads its sockets (thread 0 also the ICE-TCP connections, and every socket
/// with one port for all), handles the media of its rooms and what other threads handed it, runs
/// its rooms' timers and sends.
fn worker_loop(shared: &Shared, index: usize, mut tcp: Option<TcpSide>) {
    let slot = &shared.workers[index];
    let own = shared.sockets_of(index);
    let mut recv = RecvBatch::new();
    // The worker's eventfd first (all that is polled while not receiving), its sockets, the
    // ICE-TCP epoll set last.
    let mut fds: Vec<libc::pollfd> = std::iter::once(slot.wake.as_raw_fd())
        .chain(own.iter().map(|&s| shared.sockets[s].as_raw_fd()))
        .chain(tcp.as_ref().map(TcpSide::epoll_fd))
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let interval = shared.cfg.poll_interval_ms.clamp(1, 1000) as i32;
    let mut notify = vec![false; shared.workers.len()];
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut handed: Vec<Handoff> = Vec::with_capacity(BATCH * 4);
    let registry = |r: Registry<'_>| {
        let mut conns = shared.tcp_conns.write().unwrap_or_else(|e| e.into_inner());
        match r {
            Registry::Add(c) => {
                conns.insert((c.socket, c.remote), Arc::clone(c));
            }
            Registry::Remove(c) => {
                if conns
                    .get(&(c.socket, c.remote))
                    .is_some_and(|x| Arc::ptr_eq(x, c))
                {
                    conns.remove(&(c.socket, c.remote));
                }
            }
        }
    };
    let mut syscalls: u64 = 0;
    let mut read_total: u64 = 0;
    let mut last_sample = 0;
    let mut last_cpu = 0;
    // After a pass that read datagrams the gather sleep is the wait: the next pass reads
    // straight away, without a `poll` that would only say the sockets are readable (a system
    // call per pass). A pass that reads nothing polls (blocks) next, and so does one after which
    // the gate says waiting does not pay (`udp::GatherGate`). Handed-on media is taken
    // from the inbox every pass; the eventfd is only written to a worker waiting in `poll`.
    // ICE-TCP is readable only through `poll`: with connections open every pass polls, with the
    // listener alone at least every `interval`.
    let mut read_last_pass = false;
    let mut waited_last_pass = false;
    let mut gate = udp::GatherGate::default();
    let mut last_poll_ms = 0;
    while !shared.stop.load(Relaxed) {
        let receiving = shared.receiving.load(Relaxed);
        let mut now = now_ms();
        let tcp_waits = tcp
            .as_ref()
            .is_some_and(|t| t.open() > 0 || now >= last_poll_ms + interval as u64);
        if receiving && read_last_pass && !tcp_waits {
            for f in fds.iter_mut() {
                f.revents = 0;
            }
        } else {
            poll_once(slot, &mut fds, receiving, interval, &mut syscalls);
            now = now_ms();
            last_poll_ms = now;
        }
        let mut woke_python = false;
        let mut received = 0;
        for &s in own.iter().filter(|_| receiving) {
            // Bounded rounds so router timers and the other sockets get their turn under load.
            for _ in 0..16 {
                syscalls += 1;
                let n = match recv.recv(&shared.sockets[s]) {
                    Ok(n) => n,
                    Err(_) => {
                        shared.counters.recv_errors.fetch_add(1, Relaxed);
                        0
                    }
                };
                if n == 0 {
                    break;
                }
                received += n;
                shared.counters.recv_batches.fetch_add(1, Relaxed);
                shared.counters.datagrams_in.fetch_add(n as u64, Relaxed);
                let mut d = Dispatch::new(shared, index, &mut spare, &mut notify, now);
                for i in 0..n {
                    let Some(from) = recv.addr(i) else { continue };
                    let (buf, len) = recv.slot_mut(i);
                    d.datagram(s, from, buf, len);
                }
                let (woke, wakes) = d.finish();
                woke_python |= woke;
                syscalls += wakes;
                if n < BATCH {
                    break;
                }
            }
        }
        read_total += received as u64;
        if waited_last_pass {
            gate.record(received);
            let (waits, empty) = gate.counts();
            slot.gather_waits.store(waits, Relaxed);
            slot.gather_empty.store(empty, Relaxed);
        }
        // The epoll set is the last descriptor polled: read it only when it has something (or the
        // connection deadlines are due), so ICE-TCP costs no syscall on a loop with none.
        let tcp_ready = receiving && fds.last().is_some_and(|f| f.revents & libc::POLLIN != 0);
        if let Some(side) = tcp.as_mut().filter(|t| tcp_ready || t.sweep_due(now)) {
            let mut d = Dispatch::new(shared, index, &mut spare, &mut notify, now);
            let mut frames = 0;
            side.service(now, &shared.counters.tcp, &registry, |s, from, frame| {
                shared.counters.datagrams_in.fetch_add(1, Relaxed);
                frames += 1;
                let len = frame.len();
                d.datagram(s, from, frame, len)
            });
            let (woke, wakes) = d.finish();
            woke_python |= woke;
            syscalls += wakes;
            read_total += frames;
        }
        if woke_python {
            wake_python(shared);
        }
        std::mem::swap(&mut *lock(&slot.inbox), &mut handed);
        let mut st = lock(&slot.state);
        for mut h in handed.drain(..) {
            st.handle_media(&shared.sockets, h.transport, &mut h.buf, h.len, now);
            spare.push(h.buf);
        }
        st.poll(&shared.sockets, now_ms());
        st.flush(&shared.sockets);
        report_lost(shared, &mut st);
        let (packets, send_calls) = (
            st.stats.media_in + st.stats.datagrams_out,
            st.stats.send_calls,
        );
        drop(st);
        if !spare.is_empty() {
            // Buffers of handed-on media go back to the pool the readers take from.
            lock(&shared.pool).append(&mut spare);
        }
        let partial = received > 0 && received < BATCH;
        let gather = if partial && gate.open() {
            udp::gather_wait_us(received, shared.cfg.rx_coalesce_us)
        } else {
            0
        };
        syscalls += u64::from(gather > 0);
        // Straight to the next read after a wait or a full batch; else block in `poll`.
        read_last_pass = received > 0 && (gather > 0 || !partial);
        waited_last_pass = gather > 0;
        slot.packets.store(packets, Relaxed);
        slot.received.store(read_total, Relaxed);
        if now >= last_cpu + CPU_SAMPLE_MS {
            // CLOCK_THREAD_CPUTIME_ID is a real system call (no vDSO): not on every pass.
            slot.cpu_ns.store(thread_cpu_ns(), Relaxed);
            syscalls += 1;
            last_cpu = now;
        }
        slot.syscalls.store(syscalls + send_calls, Relaxed);
        // Rates for room placement stay fresh without a control call (try: never wait for it).
        if index == 0 && now >= last_sample + 1000 {
            if let Ok(mut p) = shared.placement.try_lock() {
                p.sample(now, &shared.placement_load(), 0);
                last_sample = now;
            }
        }
        if gather > 0 {
            std::thread::sleep(Duration::from_micros(gather));
        }
    }
}

enum StunDrop {
    UnknownSource,
    Integrity,
}

/// What may go up to Python from a source that is neither handed over nor admitted: a Binding
/// request naming one of this socket's ICE sessions and authenticated with its password.
fn check_unknown_source(sessions: &IceSessions, datagram: &[u8]) -> Result<(), StunDrop> {
    if classify(datagram) != DatagramKind::Stun {
        return Err(StunDrop::UnknownSource);
    }
    let request = stun::parse_binding_request(datagram).map_err(|_| StunDrop::UnknownSource)?;
    let password = sessions
        .get(request.local_ufrag)
        .ok_or(StunDrop::UnknownSource)?;
    if request.integrity_holds(datagram, password) {
        Ok(())
    } else {
        Err(StunDrop::Integrity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plane on an ephemeral loopback port for all workers, polling every 5 ms.
    fn loopback_plane(workers: usize) -> Plane {
        plane_with(workers, false)
    }

    fn plane_with(workers: usize, port_per_worker: bool) -> Plane {
        Plane::start(PlaneConfig {
            addresses: vec!["127.0.0.1".parse().unwrap()],
            port: 0,
            workers,
            port_per_worker,
            drop_ppm: 0,
            poll_interval_ms: 5,
            rx_coalesce_us: 0,
            tcp: None,
        })
        .unwrap()
    }

    fn wait_until(cond: impl Fn() -> bool) {
        for _ in 0..250 {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn only_authenticated_checks_and_admitted_sources_reach_python() {
        let plane = loopback_plane(1);
        let target = plane.local_addrs()[0];
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = peer.local_addr().unwrap();
        let c = plane.counters();
        for _ in 0..10 {
            peer.send_to(&[0x80, 96, 0, 1, 0, 0, 0, 0], target).unwrap();
        }
        peer.send_to(&[22, 0xfe, 0xfd], target).unwrap();
        wait_until(|| c.unknown_source.load(Relaxed) == 11);
        assert_eq!(c.unknown_source.load(Relaxed), 11);
        // STUN that names no session, or a session without its password, stays here.
        peer.send_to(&[0, 1, 0, 0], target).unwrap();
        let check = |password: &[u8]| stun::binding_request(b"ufrA:them", password, [3; 12]);
        peer.send_to(&check(b"our-password"), target).unwrap();
        wait_until(|| c.unknown_source.load(Relaxed) == 13);
        assert!(plane.register_ice_session(0, b"ufrA", b"our-password"));
        assert!(!plane.register_ice_session(1, b"ufrA", b"our-password"));
        assert_eq!(plane.ice_sessions(), 1);
        peer.send_to(&check(b"guessed"), target).unwrap();
        wait_until(|| c.stun_integrity.load(Relaxed) == 1);
        assert_eq!(c.to_python.load(Relaxed), 0);
        peer.send_to(&check(b"our-password"), target).unwrap(); // an authenticated check goes up
        wait_until(|| c.to_python.load(Relaxed) == 1);
        assert!(plane.admit_source(0, from));
        assert_eq!(plane.admitted_sources(), 1);
        peer.send_to(&[22, 0xfe, 0xfd], target).unwrap(); // DTLS from an admitted source too
        wait_until(|| c.to_python.load(Relaxed) == 2);
        assert_eq!(c.to_python.load(Relaxed), 2);
        assert_eq!(plane.take_inbound().len(), 2);
        assert!(plane.forget_source(0, from));
        assert_eq!(plane.admitted_sources(), 0);
        peer.send_to(&[22, 0xfe, 0xfd], target).unwrap();
        wait_until(|| c.unknown_source.load(Relaxed) == 14);
        assert_eq!(c.unknown_source.load(Relaxed), 14);
        assert_eq!(c.to_python.load(Relaxed), 2);
        assert!(plane.forget_ice_session(0, b"ufrA"));
        assert_eq!(plane.ice_sessions(), 0);
        peer.send_to(&check(b"our-password"), target).unwrap(); // its session is gone
        wait_until(|| c.unknown_source.load(Relaxed) == 15);
        assert_eq!(c.to_python.load(Relaxed), 2);
    }

    const KEYS: PeerKeys<'static> = PeerKeys {
        profile: "SRTP_AEAD_AES_128_GCM",
        tx_key: &[1; 16],
        tx_salt: &[2; 12],
        rx_key: &[3; 16],
        rx_salt: &[4; 12],
    };

    const CREDENTIALS: IceCredentials<'static> = IceCredentials {
        local_ufrag: b"ours",
        local_password: b"our-password-22-chars!",
        remote_ufrag: b"them",
        remote_password: b"their-password-22-chr!",
        role: IceRole {
            controlling: false,
            tie_breaker: 77,
        },
        priority: 0x7e00_00ff,
    };

    /// Sends a handed-over peer's consent check to `target` and waits for its answer.
    fn answered_check(peer: &UdpSocket, target: SocketAddr, id: u8) -> bool {
        let check = stun::binding_request(b"ours:them", CREDENTIALS.local_password, [id; 12]);
        peer.send_to(&check, target).unwrap();
        let mut buf = [0u8; 2048];
        while let Ok((n, src)) = peer.recv_from(&mut buf) {
            if let Ok(r) = stun::parse_binding_success(&buf[..n]) {
                if r.transaction_id == [id; 12] {
                    return src == target;
                }
            }
        }
        false
    }

    #[test]
    fn with_a_port_per_worker_each_worker_reads_its_own_rooms_peers() {
        use mediasrv_core::router::{Router, RouterConfig};
        let plane = plane_with(2, true);
        assert_eq!(plane.socket_workers(), vec![0, 1]);
        let addrs = plane.local_addrs();
        assert_eq!(addrs.len(), 2);
        assert_ne!(addrs[0].port(), addrs[1].port());
        let timers = ConsentTimers {
            interval_ms: 60_000,
            timeout_ms: 120_000,
        };
        for (room, t) in [(1u64, TransportId(1)), (2, TransportId(2))] {
            let router = Arc::new(Mutex::new(Router::new(RouterConfig::default(), 1)));
            let w = plane.attach_room(room, router);
            // The room's peer is reached on its worker's socket.
            let socket = plane.socket_workers().iter().position(|&x| x == w).unwrap();
            let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let from = peer.local_addr().unwrap();
            plane.register_peer(t, room, socket, from, KEYS).unwrap();
            assert!(plane.start_consent(t, &CREDENTIALS, timers));
            assert!(answered_check(&peer, addrs[socket], room as u8));
            // On the other worker's socket the same peer is a stranger.
            let other = addrs[1 - socket];
            let before = plane.counters().unknown_source.load(Relaxed);
            let check = stun::binding_request(b"ours:them", CREDENTIALS.local_password, [9; 12]);
            peer.send_to(&check, other).unwrap();
            wait_until(|| plane.counters().unknown_source.load(Relaxed) > before);
            assert_eq!(plane.counters().unknown_source.load(Relaxed), before + 1);
        }
        let rooms: Vec<u64> = plane.worker_loads().iter().map(|l| l.rooms).collect();
        assert_eq!(rooms, vec![1, 1]);
        // Each worker read its own datagrams: nothing was handed between threads.
        assert_eq!(plane.counters().handoffs.load(Relaxed), 0);
        wait_until(|| plane.worker_loads().iter().all(|l| l.packets >= 2));
        assert!(plane.worker_loads().iter().all(|l| l.packets >= 2));
    }

    #[test]
    fn ports_per_worker_follow_the_configured_port() {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        let Ok(plane) = Plane::start(PlaneConfig {
            port: base,
            ..plane_with(1, false).shared.cfg.clone()
        }) else {
            return; // the port was taken meanwhile
        };
        assert_eq!(plane.local_addrs()[0].port(), base);
        drop(plane);
        let three = PlaneConfig {
            port: 65_534,
            workers: 3,
            port_per_worker: true,
            ..plane_with(1, false).shared.cfg.clone()
        };
        assert!(matches!(Plane::start(three), Err(PlaneError::Io(_))));
    }

    #[test]
    fn consent_runs_in_the_plane_after_the_handover() {
        use mediasrv_core::router::{Router, RouterConfig};
        let plane = loopback_plane(2);
        let target = plane.local_addrs()[0];
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let from = peer.local_addr().unwrap();
        let router = Arc::new(Mutex::new(Router::new(RouterConfig::default(), 1)));
        plane.attach_room(1, router);
        let t = TransportId(9);
        plane.register_peer(t, 1, 0, from, KEYS).unwrap();
        let creds = CREDENTIALS;
        let timers = ConsentTimers {
            interval_ms: 50,
            timeout_ms: 600,
        };
        assert!(!plane.start_consent(TransportId(10), &creds, timers));
        assert!(plane.start_consent(t, &creds, timers));
        let mut buf = [0u8; 2048];
        // Our checks arrive, authenticated with the peer's password; answering them holds consent.
        for _ in 0..5 {
            let (n, src) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(src, target);
            let check = &buf[..n];
            let r = stun::parse_binding_request(check).unwrap();
            assert_eq!(r.local_ufrag, b"them");
            assert!(r.integrity_holds(check, b"their-password-22-chr!"));
            let tid = stun::transaction_id(check);
            let answer = stun::binding_success(tid, target, b"their-password-22-chr!");
            peer.send_to(&answer, target).unwrap();
        }
        let stats = || plane.peer_stats(t).unwrap().0;
        wait_until(|| stats().consent_responses >= 5);
        assert!(stats().consent_responses >= 5);
        // An answer signed with another key, or to a check never sent, counts for nothing.
        let forged = stun::binding_success([5; 12], target, b"their-password-22-chr!");
        peer.send_to(&forged, target).unwrap();
        // The peer's own check is answered here, not by Python.
        let theirs = stun::binding_request(b"ours:them", b"our-password-22-chars!", [8; 12]);
        peer.send_to(&theirs, target).unwrap();
        let answer = loop {
            let (n, _) = peer.recv_from(&mut buf).unwrap();
            if stun::parse_binding_success(&buf[..n]).is_ok() {
                break buf[..n].to_vec();
            }
        };
        let r = stun::parse_binding_success(&answer).unwrap();
        assert_eq!(r.transaction_id, [8; 12]);
        assert!(r.integrity_holds(&answer, b"our-password-22-chars!"));
        assert_eq!(
            answer,
            stun::binding_success([8; 12], from, b"our-password-22-chars!")
        );
        let bad = stun::binding_request(b"ours:them", b"a-guess", [9; 12]);
        peer.send_to(&bad, target).unwrap();
        wait_until(|| stats().checks_refused == 1);
        assert_eq!((stats().checks_answered, stats().checks_refused), (1, 1));
        // Only the answer to no check of ours went up to Python (its ICE agent may have asked).
        let up = plane.take_inbound();
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].data, forged);
        assert!(plane.take_consent_lost().is_empty());
        // Silence: consent is lost once, and reported.
        let mut lost = Vec::new();
        for _ in 0..300 {
            lost.extend(plane.take_consent_lost());
            if !lost.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(lost, vec![t]);
        std::thread::sleep(Duration::from_millis(100));
        assert!(plane.take_consent_lost().is_empty());
        assert_eq!(plane.worker_totals().0.consent_lost, 1);
    }
}
