//! Per-worker state and the packet path: unprotect → route → protect → batched send.
//!
//! A worker owns the rooms pinned to it and the peers of those rooms. Everything here runs without
//! the GIL; Python reaches this state only through the short control calls in `lib.rs`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard};

use super::demux::is_rtcp;
use super::tcp::{self, TcpConn};
use super::udp::{SendBatch, SLOT_LEN};
use mediasrv_core::consent::{Consent, ConsentTimers};
use mediasrv_core::fasthash::FastMap;
use mediasrv_core::ids::TransportId;
use mediasrv_core::output::Output;
use mediasrv_core::router::Router;
use mediasrv_core::srtp::{SrtpContext, SrtpCounters, SRTP_MAX_TRAILER_LEN};
use mediasrv_core::stun::{self, IceRole, TransactionId};

pub type SharedRouter = Arc<Mutex<Router>>;

/// A poisoned lock only means another thread panicked mid-update; the counters and maps stay usable.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Packet counters of one handed-over peer.
#[derive(Debug, Default, Clone, Copy)]
pub struct PeerStats {
    pub rtp_in: u64,
    pub rtcp_in: u64,
    pub bytes_in: u64,
    pub rtp_out: u64,
    pub rtcp_out: u64,
    pub bytes_out: u64,
    /// RTP dropped on purpose by the loss-simulation setting.
    pub test_dropped: u64,
    /// Times the peer's address was moved (`Plane::update_peer_address`).
    pub address_changes: u64,
    /// Consent checks (RFC 7675) sent, and authenticated answers to them.
    pub consent_checks: u64,
    pub consent_responses: u64,
    /// The peer's own Binding requests from its address answered here, and those refused (their
    /// MESSAGE-INTEGRITY did not hold our password).
    pub checks_answered: u64,
    pub checks_refused: u64,
}

/// A handed-over peer's ICE credentials and its consent freshness, run here instead of in the
/// Python ICE agent: the plane answers the peer's checks from its address and sends its own.
pub struct PeerIce {
    pub local_ufrag: Box<[u8]>,
    pub local_password: Box<[u8]>,
    pub remote_password: Box<[u8]>,
    /// USERNAME of our checks: "remote ufrag:local ufrag".
    pub username: Box<[u8]>,
    pub role: IceRole,
    /// PRIORITY of our checks (our local candidate's priority).
    pub priority: u32,
    pub consent: Consent,
}

/// What a handed-over peer's ICE state needs at the start (see `Plane::start_consent`).
pub struct IceCredentials<'a> {
    pub local_ufrag: &'a [u8],
    pub local_password: &'a [u8],
    pub remote_ufrag: &'a [u8],
    pub remote_password: &'a [u8],
    pub role: IceRole,
    pub priority: u32,
}

impl PeerIce {
    pub fn new(c: &IceCredentials<'_>, timers: ConsentTimers, now_ms: u64, seed: u64) -> Self {
        Self {
            local_ufrag: c.local_ufrag.into(),
            local_password: c.local_password.into(),
            remote_password: c.remote_password.into(),
            username: [c.remote_ufrag, b":", c.local_ufrag].concat().into(),
            role: c.role,
            priority: c.priority,
            consent: Consent::new(timers, now_ms, seed),
        }
    }
}

/// A random transaction id (RFC 7675 5.1 needs them unpredictable: they are what an off-path
/// attacker would have to guess to fake consent).
fn random_transaction_id(fallback: &mut u64) -> TransactionId {
    let mut t = [0u8; 12];
    // SAFETY: getrandom writes at most t.len() bytes into t.
    let n = unsafe { libc::getrandom(t.as_mut_ptr() as *mut libc::c_void, t.len(), 0) };
    if n != t.len() as isize {
        for chunk in t.chunks_mut(4) {
            *fallback ^= *fallback << 13;
            *fallback ^= *fallback >> 7;
            *fallback ^= *fallback << 17;
            chunk.copy_from_slice(&(*fallback as u32).to_be_bytes());
        }
    }
    t
}

/// Sends one STUN message to a peer at once (rare: a few a second per worker, no batching).
fn send_stun(sockets: &[UdpSocket], p: &Peer, message: &[u8], stats: &mut WorkerStats) {
    let ok = match &p.tcp {
        Some(conn) => {
            let mut framed = Vec::with_capacity(message.len() + 2);
            tcp::push_frame(&mut framed, message) && {
                let r = conn.write_frames(&framed);
                stats.tcp_write_overflow += r.overflow;
                r.failed == 0 && r.overflow == 0
            }
        }
        None => sockets[p.socket].send_to(message, p.addr).is_ok(),
    };
    if ok {
        stats.datagrams_out += 1;
        stats.bytes_out += message.len() as u64;
    } else {
        stats.send_errors += 1;
    }
}

pub struct Peer {
    pub room: u64,
    pub socket: usize,
    pub addr: SocketAddr,
    /// Set when the peer is reached over ICE-TCP: what we send goes framed onto this connection.
    pub tcp: Option<Arc<TcpConn>>,
    pub srtp: SrtpContext,
    pub stats: PeerStats,
    /// Set once the plane runs the peer's consent freshness (`Plane::start_consent`).
    pub ice: Option<PeerIce>,
}

/// Counters of one worker (read under its lock at scrape time).
#[derive(Debug, Default, Clone)]
pub struct WorkerStats {
    /// SRTP/SRTCP datagrams from handed-over peers handled here.
    pub media_in: u64,
    pub datagrams_out: u64,
    /// `sendmmsg` calls (each sends a whole batch).
    pub send_calls: u64,
    pub bytes_out: u64,
    pub send_errors: u64,
    /// Router output for a transport that has no handed-over peer (not connected yet, or gone).
    pub no_destination: u64,
    /// Media from a peer whose room is no longer attached.
    pub no_room: u64,
    pub oversize: u64,
    pub test_dropped: u64,
    /// Frames for ICE-TCP peers dropped because their connection's write buffer was full.
    pub tcp_write_overflow: u64,
    /// SRTP counters of peers already unregistered, so totals never go backwards.
    pub retired_srtp: SrtpCounters,
    /// Handed-over peers whose consent expired (reported to Python once each).
    pub consent_lost: u64,
}

/// What became of a STUN datagram from a handed-over peer's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunVerdict {
    /// Answered (a check of the peer's) or taken (an answer to our consent check).
    Handled,
    /// Dropped: a check or answer naming this peer's session without its integrity.
    Refused,
    /// Not for the plane (no consent run here, another session, another method): to Python.
    ToPython,
}

pub struct WorkerState {
    pub rooms: FastMap<u64, SharedRouter>,
    pub peers: FastMap<TransportId, Peer>,
    out: Output,
    out_rtcp: Output,
    sends: Vec<SendBatch>,
    tcp: TcpStaging,
    rng: u64,
    pub drop_ppm: u32,
    poll_interval_ms: u64,
    next_poll_ms: u64,
    pub stats: WorkerStats,
    /// Peers whose consent expired since Python last asked.
    pub lost: Vec<TransportId>,
}

/// Frames for ICE-TCP peers, gathered per connection during a batch and written with one call
/// each at the flush (as the UDP datagrams go out with one `sendmmsg`).
#[derive(Default)]
struct TcpStaging {
    stages: Vec<(Arc<TcpConn>, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
}

/// A connection's staged bytes are written early past this, so a burst never waits long.
const TCP_STAGE_BYTES: usize = 64 * 1024;

impl TcpStaging {
    /// Protects `bytes` for `p` and appends it as one frame to its connection's stage.
    fn push(&mut self, p: &mut Peer, bytes: &[u8], rtcp: bool, stats: &mut WorkerStats) {
        let Some(conn) = &p.tcp else { return };
        let i = match self.stages.iter().position(|(c, _)| Arc::ptr_eq(c, conn)) {
            Some(i) => i,
            None => {
                let buf = self.spare.pop().unwrap_or_default();
                self.stages.push((Arc::clone(conn), buf));
                self.stages.len() - 1
            }
        };
        let buf = &mut self.stages[i].1;
        let start = buf.len();
        buf.resize(start + 2 + bytes.len() + SRTP_MAX_TRAILER_LEN, 0);
        let slot = &mut buf[start + 2..];
        slot[..bytes.len()].copy_from_slice(bytes);
        let protected = if rtcp {
            p.srtp.protect_rtcp(slot, bytes.len())
        } else {
            p.srtp.protect_rtp(slot, bytes.len())
        };
        match protected {
            Ok(n) if n <= usize::from(u16::MAX) => {
                buf[start..start + 2].copy_from_slice(&(n as u16).to_be_bytes());
                buf.truncate(start + 2 + n);
                if rtcp {
                    p.stats.rtcp_out += 1;
                } else {
                    p.stats.rtp_out += 1;
                }
                p.stats.bytes_out += n as u64;
            }
            _ => buf.truncate(start),
        }
        if buf.len() >= TCP_STAGE_BYTES {
            let (conn, buf) = &mut self.stages[i];
            write_stage(conn, buf, stats);
        }
    }

    fn flush(&mut self, stats: &mut WorkerStats) {
        for (conn, mut buf) in self.stages.drain(..) {
            write_stage(&conn, &mut buf, stats);
            self.spare.push(buf);
        }
    }
}

fn write_stage(conn: &TcpConn, buf: &mut Vec<u8>, stats: &mut WorkerStats) {
    let r = conn.write_frames(buf);
    stats.datagrams_out += r.frames;
    stats.bytes_out += r.bytes;
    stats.tcp_write_overflow += r.overflow;
    stats.send_errors += r.failed;
    buf.clear();
}

fn emit(
    peers: &mut FastMap<TransportId, Peer>,
    sends: &mut [SendBatch],
    tcp: &mut TcpStaging,
    sockets: &[UdpSocket],
    stats: &mut WorkerStats,
    out: &Output,
    rtcp: bool,
) {
    for (dest, bytes) in out.iter() {
        let Some(p) = peers.get_mut(&dest) else {
            stats.no_destination += 1;
            continue;
        };
        if bytes.len() + SRTP_MAX_TRAILER_LEN > SLOT_LEN {
            stats.oversize += 1;
            continue;
        }
        if p.tcp.is_some() {
            tcp.push(p, bytes, rtcp, stats);
            continue;
        }
        let batch = &mut sends[p.socket];
        if batch.is_full() {
            record(stats, batch.flush(&sockets[p.socket]));
        }
        let slot = batch.next_slot();
        slot[..bytes.len()].copy_from_slice(bytes);
        let protected = if rtcp {
            p.srtp.protect_rtcp(slot, bytes.len())
        } else {
            p.srtp.protect_rtp(slot, bytes.len())
        };
        // A refusal (e.g. too many SSRCs) is counted by the SRTP context itself.
        if let Ok(n) = protected {
            batch.commit(n, &p.addr, dest.0);
            if rtcp {
                p.stats.rtcp_out += 1;
            } else {
                p.stats.rtp_out += 1;
            }
            p.stats.bytes_out += n as u64;
        }
    }
}

fn record(stats: &mut WorkerStats, sent: super::udp::Sent) {
    stats.datagrams_out += sent.datagrams;
    stats.send_calls += sent.calls;
    stats.bytes_out += sent.bytes;
    stats.send_errors += sent.errors;
}

impl WorkerState {
    pub fn new(sockets: usize, drop_ppm: u32, poll_interval_ms: u64, seed: u64) -> Self {
        Self {
            rooms: FastMap::default(),
            peers: FastMap::default(),
            out: Output::new(),
            out_rtcp: Output::new(),
            sends: (0..sockets).map(|_| SendBatch::new()).collect(),
            tcp: TcpStaging::default(),
            rng: seed | 1,
            drop_ppm,
            poll_interval_ms: poll_interval_ms.max(1),
            next_poll_ms: 0,
            stats: WorkerStats::default(),
            lost: Vec::new(),
        }
    }

    /// A STUN datagram from a handed-over peer's address: its consent checks are answered here
    /// (XOR-MAPPED-ADDRESS, our password) and the answers to ours taken, when the plane runs its
    /// consent; anything else goes up to the ICE agent.
    pub fn handle_stun(
        &mut self,
        sockets: &[UdpSocket],
        transport: TransportId,
        datagram: &[u8],
        now_ms: u64,
    ) -> StunVerdict {
        let WorkerState { peers, stats, .. } = self;
        let Some(p) = peers.get_mut(&transport) else {
            return StunVerdict::ToPython;
        };
        let Some(ice) = p.ice.as_mut() else {
            return StunVerdict::ToPython;
        };
        if let Ok(request) = stun::parse_binding_request(datagram) {
            if *request.local_ufrag != *ice.local_ufrag {
                return StunVerdict::ToPython;
            }
            if !request.integrity_holds(datagram, &ice.local_password) {
                p.stats.checks_refused += 1;
                return StunVerdict::Refused;
            }
            let answer =
                stun::binding_success(stun::transaction_id(datagram), p.addr, &ice.local_password);
            p.stats.checks_answered += 1;
            send_stun(sockets, p, &answer, stats);
            return StunVerdict::Handled;
        }
        let Ok(response) = stun::parse_binding_success(datagram) else {
            return StunVerdict::ToPython;
        };
        if !ice.consent.is_pending(&response.transaction_id) {
            return StunVerdict::ToPython;
        }
        if !response.integrity_holds(datagram, &ice.remote_password) {
            return StunVerdict::Refused;
        }
        if ice.consent.on_response(&response.transaction_id, now_ms) {
            p.stats.consent_responses += 1;
        }
        StunVerdict::Handled
    }

    /// Consent checks that are due, and expiries (into `lost`).
    fn poll_consent(&mut self, sockets: &[UdpSocket], now_ms: u64) {
        let WorkerState {
            peers,
            stats,
            rng,
            lost,
            ..
        } = self;
        for (id, p) in peers.iter_mut() {
            let Some(ice) = p.ice.as_mut() else { continue };
            if ice.consent.poll_expired(now_ms) {
                stats.consent_lost += 1;
                lost.push(*id);
                continue;
            }
            if !ice.consent.check_due(now_ms) {
                continue;
            }
            let tid = random_transaction_id(rng);
            let check = stun::consent_request(
                &ice.username,
                &ice.remote_password,
                tid,
                ice.priority,
                ice.role,
            );
            ice.consent.sent(tid, now_ms);
            p.stats.consent_checks += 1;
            send_stun(sockets, p, &check, stats);
        }
    }

    fn chance_drop(&mut self) -> bool {
        if self.drop_ppm == 0 {
            return false;
        }
        // xorshift64: cheap and deterministic per worker.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % 1_000_000) < u64::from(self.drop_ppm)
    }

    /// One SRTP/SRTCP datagram from a handed-over peer; `buf` is its slot (room for in-place work).
    pub fn handle_media(
        &mut self,
        sockets: &[UdpSocket],
        transport: TransportId,
        buf: &mut [u8],
        len: usize,
        now_ms: u64,
    ) {
        self.stats.media_in += 1;
        let rtcp = is_rtcp(&buf[..len]);
        if !rtcp && self.peers.contains_key(&transport) && self.chance_drop() {
            self.stats.test_dropped += 1;
            if let Some(p) = self.peers.get_mut(&transport) {
                p.stats.test_dropped += 1;
            }
            return;
        }
        let WorkerState {
            rooms,
            peers,
            out,
            out_rtcp,
            sends,
            tcp,
            stats,
            ..
        } = self;
        let Some(peer) = peers.get_mut(&transport) else {
            return;
        };
        let Some(router) = rooms.get(&peer.room) else {
            stats.no_room += 1;
            return;
        };
        out.clear();
        out_rtcp.clear();
        let packet = &mut buf[..len];
        peer.stats.bytes_in += len as u64;
        if rtcp {
            peer.stats.rtcp_in += 1;
            let Ok(n) = peer.srtp.unprotect_rtcp(packet) else {
                return;
            };
            lock(router).handle_rtcp(transport, &packet[..n], now_ms, out, out_rtcp);
        } else {
            peer.stats.rtp_in += 1;
            let Ok(n) = peer.srtp.unprotect_rtp(packet) else {
                return;
            };
            lock(router).route_rtp(transport, &packet[..n], now_ms, out);
        }
        emit(peers, sends, tcp, sockets, stats, out, false);
        emit(peers, sends, tcp, sockets, stats, out_rtcp, true);
    }

    /// Protects and sends one RTP or RTCP packet the control plane produced; false if the
    /// transport has no handed-over peer here.
    pub fn send_from_python(
        &mut self,
        sockets: &[UdpSocket],
        transport: TransportId,
        packet: &[u8],
    ) -> bool {
        if !self.peers.contains_key(&transport) {
            self.stats.no_destination += 1;
            return false;
        }
        let WorkerState {
            peers,
            out,
            sends,
            tcp,
            stats,
            ..
        } = self;
        out.clear();
        out.push_with(transport, |b| b.extend_from_slice(packet));
        emit(peers, sends, tcp, sockets, stats, out, is_rtcp(packet));
        self.flush(sockets);
        true
    }

    /// Router timers (RR/REMB to publishers, SR to subscribers, keyframe retries), when due.
    pub fn poll(&mut self, sockets: &[UdpSocket], now_ms: u64) {
        if now_ms < self.next_poll_ms {
            return;
        }
        self.next_poll_ms = now_ms + self.poll_interval_ms;
        let WorkerState {
            rooms,
            peers,
            out,
            out_rtcp,
            sends,
            tcp,
            stats,
            ..
        } = self;
        for router in rooms.values() {
            out_rtcp.clear();
            out.clear();
            {
                let mut r = lock(router);
                r.poll(now_ms, out_rtcp);
                // Padding probes toward paused subscribers (RTP).
                r.probe(now_ms, out);
            }
            emit(peers, sends, tcp, sockets, stats, out_rtcp, true);
            emit(peers, sends, tcp, sockets, stats, out, false);
        }
        self.poll_consent(sockets, now_ms);
    }

    pub fn flush(&mut self, sockets: &[UdpSocket]) {
        for (i, batch) in self.sends.iter_mut().enumerate() {
            if !batch.is_empty() {
                record(&mut self.stats, batch.flush(&sockets[i]));
            }
        }
        self.tcp.flush(&mut self.stats);
    }

    /// SRTP counters over live and retired peers.
    pub fn srtp_totals(&self) -> SrtpCounters {
        let mut t = self.stats.retired_srtp.clone();
        for p in self.peers.values() {
            add_counters(&mut t, p.srtp.counters());
        }
        t
    }
}

pub fn add_counters(into: &mut SrtpCounters, c: &SrtpCounters) {
    into.rtp_protected += c.rtp_protected;
    into.rtp_unprotected += c.rtp_unprotected;
    into.rtcp_protected += c.rtcp_protected;
    into.rtcp_unprotected += c.rtcp_unprotected;
    into.roc_rollovers += c.roc_rollovers;
    into.too_short += c.too_short;
    into.bad_version += c.bad_version;
    into.auth_failed += c.auth_failed;
    into.replayed += c.replayed;
    into.too_old += c.too_old;
    into.too_many_streams += c.too_many_streams;
    into.index_exhausted += c.index_exhausted;
    into.buffer_too_small += c.buffer_too_small;
}
