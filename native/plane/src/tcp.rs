//! ICE-TCP on the media plane: one listening TCP port per media address, RFC 6544 passive
//! candidates, RFC 4571 framing (each packet behind a 16-bit length).
//!
//! Thread 0 accepts and reads every connection (through one epoll set that it polls beside the UDP
//! sockets) and hands each whole frame to the same dispatch as a UDP datagram: a frame is a
//! datagram from (listener, remote address). So STUN and DTLS go up to Python, and SRTP from a
//! handed-over connection is routed natively. Writers (workers forwarding media, Python sending
//! STUN/DTLS) frame their packets onto the connection themselves, without blocking: what the
//! kernel does not take at once waits in a bounded per-connection buffer, which thread 0 flushes
//! when the socket becomes writable again; a frame that does not fit is dropped whole and counted
//! (a partly written frame is always finished, or the stream would be corrupt).
//!
//! State is bounded: at most `max_connections` open connections and `max_pending` of them not
//! yet authenticated; a connection must send a Binding request authenticated with a registered ICE
//! session's password as its first frame, within `auth_timeout_ms`, or it is closed; at most
//! `max_per_session` connections per ICE session; a connection silent for `idle_timeout_ms` is
//! closed; a frame longer than a media slot ends its connection.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use mediasrv_core::framing::{frame_lengths, FrameDecoder};
use mediasrv_core::stun;

use crate::worker::lock;

/// Limits of the TCP side (see the module documentation).
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// The TCP port on every media address (0: an ephemeral one per address).
    pub port: u16,
    pub max_connections: usize,
    pub max_pending: usize,
    pub max_per_session: usize,
    pub auth_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    /// Bytes a connection may have waiting to be written before frames are dropped.
    pub write_buffer_bytes: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            port: 0,
            max_connections: 1024,
            max_pending: 128,
            max_per_session: 4,
            auth_timeout_ms: 5_000,
            idle_timeout_ms: 30_000,
            write_buffer_bytes: 256 * 1024,
        }
    }
}

/// Connection-level counters (frames themselves are counted with the datagrams).
#[derive(Default)]
pub struct TcpCounters {
    pub accepted: AtomicU64,
    /// Open connections (a gauge).
    pub open: AtomicU64,
    /// Connections refused or closed because a limit was reached (all connections, pending ones,
    /// or one ICE session's).
    pub connection_limit: AtomicU64,
    /// Connections closed because their first frame was not an authenticated Binding request,
    /// or none arrived within the deadline.
    pub unauthenticated: AtomicU64,
    /// Connections closed after `idle_timeout_ms` without a frame.
    pub idle: AtomicU64,
    /// Connections closed for a frame longer than the plane accepts.
    pub frame_oversize: AtomicU64,
    /// Frames dropped because their connection's write buffer was full (writes from Python; the
    /// workers count theirs in their own stats).
    pub write_overflow: AtomicU64,
    /// Connections the remote end closed or reset.
    pub closed_by_peer: AtomicU64,
}

/// Why a write did not put every frame on the connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Frames accepted (written, or waiting in the buffer).
    pub frames: u64,
    pub bytes: u64,
    /// Frames dropped because the write buffer was full.
    pub overflow: u64,
    /// Frames not written because the connection is closed or failed.
    pub failed: u64,
}

struct OutBuf {
    bytes: Vec<u8>,
    head: usize,
    /// EPOLLOUT is armed (bytes are waiting).
    armed: bool,
}

/// One accepted connection, shared by thread 0 (reads, flushes), the worker its peer is pinned to
/// and Python (writes).
pub struct TcpConn {
    pub id: u64,
    /// The plane's socket index of the listener that accepted it.
    pub socket: usize,
    pub remote: SocketAddr,
    stream: TcpStream,
    epoll: Arc<OwnedFd>,
    out: Mutex<OutBuf>,
    closed: AtomicBool,
    write_cap: usize,
}

const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;

impl TcpConn {
    fn new(
        id: u64,
        socket: usize,
        remote: SocketAddr,
        stream: TcpStream,
        epoll: Arc<OwnedFd>,
        write_cap: usize,
    ) -> Self {
        Self {
            id,
            socket,
            remote,
            stream,
            epoll,
            out: Mutex::new(OutBuf {
                bytes: Vec::new(),
                head: 0,
                armed: false,
            }),
            closed: AtomicBool::new(false),
            write_cap,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        let out = lock(&self.out);
        out.bytes.len() - out.head
    }

    /// Writes whole frames (as `framed` holds them, each behind its length) without blocking:
    /// what the socket does not take waits in the bounded buffer; frames that do not fit are
    /// dropped whole.
    pub fn write_frames(&self, framed: &[u8]) -> WriteOutcome {
        let mut result = WriteOutcome::default();
        if framed.is_empty() {
            return result;
        }
        if self.is_closed() {
            result.failed = frame_lengths(framed).count() as u64;
            return result;
        }
        let mut out = lock(&self.out);
        let mut rest = framed;
        if out.bytes.len() == out.head {
            out.bytes.clear();
            out.head = 0;
            let n = match send(self.stream.as_raw_fd(), framed) {
                Ok(n) => n,
                Err(_) => {
                    // Reset or broken: thread 0 sees the error and closes the connection.
                    self.closed.store(true, Relaxed);
                    result.failed = frame_lengths(framed).count() as u64;
                    return result;
                }
            };
            if n == framed.len() {
                result.frames = frame_lengths(framed).count() as u64;
                result.bytes = n as u64;
                return result;
            }
            // Frames wholly sent, then the one the kernel cut: its tail must follow, always.
            let mut at = 0;
            for len in frame_lengths(framed) {
                at += len;
                result.frames += 1;
                if at > n {
                    break;
                }
            }
            out.bytes.extend_from_slice(&framed[n..at]);
            result.bytes = at as u64;
            rest = &framed[at..];
        }
        let mut at = 0;
        for len in frame_lengths(rest) {
            if out.bytes.len() - out.head + len <= self.write_cap {
                out.bytes.extend_from_slice(&rest[at..at + len]);
                result.frames += 1;
                result.bytes += len as u64;
            } else {
                result.overflow += 1;
            }
            at += len;
        }
        if out.bytes.len() > out.head && !out.armed {
            out.armed = true;
            self.watch(libc::EPOLLIN | libc::EPOLLOUT);
        }
        result
    }

    /// Writes what waits in the buffer (the socket became writable). Err if the connection failed.
    fn flush(&self) -> io::Result<()> {
        let mut out = lock(&self.out);
        while out.head < out.bytes.len() {
            let n = send(self.stream.as_raw_fd(), &out.bytes[out.head..])?;
            if n == 0 {
                break;
            }
            out.head += n;
        }
        if out.head == out.bytes.len() {
            out.bytes.clear();
            out.head = 0;
            if out.armed {
                out.armed = false;
                self.watch(libc::EPOLLIN);
            }
        } else if out.head * 2 >= out.bytes.len() {
            let head = out.head;
            out.bytes.drain(..head);
            out.head = 0;
        }
        Ok(())
    }

    fn watch(&self, events: libc::c_int) {
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: self.id,
        };
        // SAFETY: both descriptors are owned and open while `self` lives.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_MOD,
                self.stream.as_raw_fd(),
                &mut ev,
            )
        };
    }

    fn close(&self) {
        self.closed.store(true, Relaxed);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// `send(2)` without blocking or SIGPIPE; Ok(0) when the socket buffer is full.
fn send(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: data is a valid slice for the duration of the call.
    let r = unsafe {
        libc::send(
            fd,
            data.as_ptr() as *const libc::c_void,
            data.len(),
            SEND_FLAGS,
        )
    };
    if r >= 0 {
        return Ok(r as usize);
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
        _ => Err(e),
    }
}

/// Whether a connection has proven it belongs to an ICE session.
enum Auth {
    /// Not yet: closed at this time (ms) unless authenticated before.
    Pending(u64),
    /// Authenticated for this ICE session (socket, ufrag), or known to Python (no session).
    Session(Option<Box<[u8]>>),
}

struct ConnRx {
    conn: Arc<TcpConn>,
    decoder: FrameDecoder,
    auth: Auth,
    last_rx_ms: u64,
}

/// Why thread 0 closes a connection (each counted under its reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    Limit,
    Unauthenticated,
    Idle,
    Oversize,
    Peer,
}

/// What the dispatch made of one frame from a connection not yet authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// From a source Python knows or a handed-over peer.
    Known,
    /// A Binding request that passed its session's MESSAGE-INTEGRITY (gone up to Python).
    Authenticated,
    /// Dropped (and counted) by the dispatch.
    Dropped,
}

/// Thread 0's side of ICE-TCP: the listeners, the epoll set and every connection's reader.
pub(crate) struct TcpSide {
    cfg: TcpConfig,
    epoll: Arc<OwnedFd>,
    listeners: Vec<(usize, TcpListener)>,
    conns: HashMap<u64, ConnRx>,
    next_id: u64,
    pending: usize,
    per_session: HashMap<(usize, Box<[u8]>), usize>,
    events: Vec<libc::epoll_event>,
    next_sweep_ms: u64,
    max_frame: usize,
}

/// epoll tokens at or above this are listeners (index = token - LISTENER_TOKEN).
const LISTENER_TOKEN: u64 = 1 << 62;
const SWEEP_MS: u64 = 250;
/// Reads of one connection per wake-up, so one busy stream cannot starve the rest.
const READS_PER_WAKE: usize = 8;

impl TcpSide {
    /// Binds one listener per address; `first_socket` is the plane socket index of the first.
    pub(crate) fn bind(
        cfg: TcpConfig,
        addresses: &[std::net::IpAddr],
        first_socket: usize,
        max_frame: usize,
    ) -> io::Result<Self> {
        // SAFETY: epoll_create1 returns a new descriptor we own, or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is valid and owned from here on.
        let epoll = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut listeners = Vec::new();
        for (i, ip) in addresses.iter().enumerate() {
            let l = TcpListener::bind(SocketAddr::new(*ip, cfg.port))?;
            l.set_nonblocking(true)?;
            add_fd(
                &epoll,
                l.as_raw_fd(),
                libc::EPOLLIN,
                LISTENER_TOKEN + i as u64,
            )?;
            listeners.push((first_socket + i, l));
        }
        Ok(Self {
            cfg,
            epoll,
            listeners,
            conns: HashMap::new(),
            next_id: 1,
            pending: 0,
            per_session: HashMap::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 64],
            next_sweep_ms: 0,
            max_frame,
        })
    }

    /// Whether the connection deadlines are due a look (even with nothing to read).
    pub(crate) fn sweep_due(&self, now_ms: u64) -> bool {
        now_ms >= self.next_sweep_ms
    }

    pub(crate) fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// (socket index, bound address) of each listener.
    pub(crate) fn local_addrs(&self) -> Vec<(usize, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(s, l)| l.local_addr().ok().map(|a| (*s, a)))
            .collect()
    }

    /// Accepts, reads and flushes whatever is ready, handing each frame to
    /// `dispatch(socket, remote, frame)`, and closes connections past their deadlines. Publishes
    /// and withdraws connections through `registry`.
    pub(crate) fn service<D>(
        &mut self,
        now_ms: u64,
        counters: &TcpCounters,
        registry: &dyn Fn(Registry<'_>),
        mut dispatch: D,
    ) where
        D: FnMut(usize, SocketAddr, &mut [u8]) -> Verdict,
    {
        // SAFETY: events has room for its length of entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                0,
            )
        };
        for i in 0..n.max(0) as usize {
            let (token, bits) = (self.events[i].u64, self.events[i].events);
            if token >= LISTENER_TOKEN {
                self.accept(
                    (token - LISTENER_TOKEN) as usize,
                    now_ms,
                    counters,
                    registry,
                );
                continue;
            }
            if bits & libc::EPOLLOUT as u32 != 0 {
                let failed = self
                    .conns
                    .get(&token)
                    .is_some_and(|c| c.conn.flush().is_err());
                if failed {
                    self.close(token, CloseReason::Peer, counters, registry);
                    continue;
                }
            }
            if bits & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                if let Some(reason) = self.read(token, now_ms, &mut dispatch) {
                    self.close(token, reason, counters, registry);
                }
            }
        }
        if now_ms >= self.next_sweep_ms {
            self.next_sweep_ms = now_ms + SWEEP_MS;
            self.sweep(now_ms, counters, registry);
        }
    }

    fn accept(
        &mut self,
        listener: usize,
        now_ms: u64,
        counters: &TcpCounters,
        registry: &dyn Fn(Registry<'_>),
    ) {
        let Some((socket, l)) = self.listeners.get(listener) else {
            return;
        };
        let socket = *socket;
        for _ in 0..64 {
            let (stream, remote) = match l.accept() {
                Ok(x) => x,
                Err(_) => return, // WouldBlock, or a connection reset before we took it
            };
            if self.conns.len() >= self.cfg.max_connections || self.pending >= self.cfg.max_pending
            {
                counters.connection_limit.fetch_add(1, Relaxed);
                continue; // dropping the stream closes it
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true); // media: no Nagle delay
            let id = self.next_id;
            self.next_id += 1;
            if add_fd(&self.epoll, stream.as_raw_fd(), libc::EPOLLIN, id).is_err() {
                continue;
            }
            let conn = Arc::new(TcpConn::new(
                id,
                socket,
                remote,
                stream,
                Arc::clone(&self.epoll),
                self.cfg.write_buffer_bytes,
            ));
            registry(Registry::Add(&conn));
            self.conns.insert(
                id,
                ConnRx {
                    conn,
                    decoder: FrameDecoder::new(self.max_frame, 4 * (self.max_frame + 2)),
                    auth: Auth::Pending(now_ms + self.cfg.auth_timeout_ms),
                    last_rx_ms: now_ms,
                },
            );
            self.pending += 1;
            counters.accepted.fetch_add(1, Relaxed);
            counters.open.fetch_add(1, Relaxed);
        }
    }

    /// Reads what one connection has and dispatches its frames; Some(reason) to close it.
    fn read<D>(&mut self, token: u64, now_ms: u64, dispatch: &mut D) -> Option<CloseReason>
    where
        D: FnMut(usize, SocketAddr, &mut [u8]) -> Verdict,
    {
        let max_per_session = self.cfg.max_per_session;
        let Self {
            conns,
            per_session,
            pending,
            ..
        } = self;
        let rx = conns.get_mut(&token)?;
        let fd = rx.conn.stream.as_raw_fd();
        let (socket, remote) = (rx.conn.socket, rx.conn.remote);
        for _ in 0..READS_PER_WAKE {
            let room = rx.decoder.spare();
            let want = room.len();
            // SAFETY: room is a valid writable slice for the duration of the call.
            let r = unsafe {
                libc::recv(
                    fd,
                    room.as_mut_ptr() as *mut libc::c_void,
                    want,
                    libc::MSG_DONTWAIT,
                )
            };
            if r == 0 {
                return Some(CloseReason::Peer);
            }
            if r < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => None,
                    _ => Some(CloseReason::Peer),
                };
            }
            rx.decoder.filled(r as usize);
            rx.last_rx_ms = now_ms;
            loop {
                let frame = match rx.decoder.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(_) => return Some(CloseReason::Oversize),
                };
                match &rx.auth {
                    Auth::Session(_) => {
                        dispatch(socket, remote, frame);
                    }
                    Auth::Pending(_) => {
                        // The first frame must be a check for a session that has room left.
                        let session = stun::parse_binding_request(frame)
                            .ok()
                            .map(|r| (socket, Box::<[u8]>::from(r.local_ufrag)));
                        if let Some(key) = &session {
                            if per_session.get(key).copied().unwrap_or(0) >= max_per_session {
                                return Some(CloseReason::Limit);
                            }
                        }
                        match dispatch(socket, remote, frame) {
                            Verdict::Dropped => return Some(CloseReason::Unauthenticated),
                            Verdict::Known => rx.auth = Auth::Session(None),
                            Verdict::Authenticated => {
                                if let Some(key) = &session {
                                    *per_session.entry(key.clone()).or_insert(0) += 1;
                                }
                                rx.auth = Auth::Session(session.map(|(_, ufrag)| ufrag));
                            }
                        }
                        *pending -= 1;
                    }
                }
            }
            if (r as usize) < want {
                break;
            }
        }
        None
    }

    fn sweep(&mut self, now_ms: u64, counters: &TcpCounters, registry: &dyn Fn(Registry<'_>)) {
        let idle = self.cfg.idle_timeout_ms;
        let expired: Vec<(u64, CloseReason)> = self
            .conns
            .iter()
            .filter_map(|(id, rx)| match rx.auth {
                _ if rx.conn.is_closed() => Some((*id, CloseReason::Peer)),
                Auth::Pending(deadline) if now_ms >= deadline => {
                    Some((*id, CloseReason::Unauthenticated))
                }
                _ if now_ms.saturating_sub(rx.last_rx_ms) >= idle => Some((*id, CloseReason::Idle)),
                _ => None,
            })
            .collect();
        for (id, reason) in expired {
            self.close(id, reason, counters, registry);
        }
    }

    fn close(
        &mut self,
        id: u64,
        reason: CloseReason,
        counters: &TcpCounters,
        registry: &dyn Fn(Registry<'_>),
    ) {
        let Some(rx) = self.conns.remove(&id) else {
            return;
        };
        match &rx.auth {
            Auth::Pending(_) => self.pending -= 1,
            Auth::Session(Some(key)) => {
                let k = (rx.conn.socket, key.clone());
                if let Some(n) = self.per_session.get_mut(&k) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_session.remove(&k);
                    }
                }
            }
            Auth::Session(None) => {}
        }
        // SAFETY: both descriptors are open; a null event is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                rx.conn.stream.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
        // Counted before the remote end can see the close.
        counters.open.fetch_sub(1, Relaxed);
        let c = match reason {
            CloseReason::Limit => &counters.connection_limit,
            CloseReason::Unauthenticated => &counters.unauthenticated,
            CloseReason::Idle => &counters.idle,
            CloseReason::Oversize => &counters.frame_oversize,
            CloseReason::Peer => &counters.closed_by_peer,
        };
        c.fetch_add(1, Relaxed);
        registry(Registry::Remove(&rx.conn));
        rx.conn.close();
    }

    /// Open connections.
    pub(crate) fn open(&self) -> usize {
        self.conns.len()
    }
}

/// What thread 0 tells the plane's shared map of connections (by socket and remote address).
pub(crate) enum Registry<'a> {
    Add(&'a Arc<TcpConn>),
    Remove(&'a Arc<TcpConn>),
}

fn add_fd(epoll: &OwnedFd, fd: RawFd, events: libc::c_int, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: events as u32,
        u64: token,
    };
    // SAFETY: both descriptors are open.
    let r = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Frames `payload` into `out` (false, nothing written, if it is longer than a frame can be).
pub fn push_frame(out: &mut Vec<u8>, payload: &[u8]) -> bool {
    mediasrv_core::framing::encode_frame(out, payload).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn pair(cap: usize) -> (Arc<TcpConn>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, remote) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        // SAFETY: a fresh epoll descriptor.
        let ep = Arc::new(unsafe { OwnedFd::from_raw_fd(libc::epoll_create1(0)) });
        add_fd(&ep, server.as_raw_fd(), libc::EPOLLIN, 7).unwrap();
        (
            Arc::new(TcpConn::new(7, 1, remote, server, ep, cap)),
            client,
        )
    }

    fn framed(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            assert!(push_frame(&mut out, p));
        }
        out
    }

    #[test]
    fn a_full_socket_buffers_whole_frames_up_to_the_cap_then_drops_whole_frames() {
        let (conn, mut client) = pair(64 * 1024);
        // A small kernel send buffer, so the socket fills quickly.
        let small: libc::c_int = 4096;
        // SAFETY: setsockopt on an open socket with a c_int value.
        unsafe {
            libc::setsockopt(
                conn.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                &small as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let frames: Vec<Vec<u8>> = (0..2000u32).map(|i| vec![(i % 251) as u8; 1000]).collect();
        let mut accepted = Vec::new();
        let mut dropped = 0;
        for f in &frames {
            let r = conn.write_frames(&framed(std::slice::from_ref(f)));
            assert_eq!(r.failed, 0);
            if r.frames == 1 {
                accepted.push(f.clone());
            }
            dropped += r.overflow;
        }
        assert!(
            dropped > 0,
            "the reader is not reading: frames must overflow"
        );
        assert!(conn.pending() <= 64 * 1024 + 1002);
        // The reader now reads everything; flushing as the socket drains completes the stream.
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            conn.flush().unwrap();
            match client.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) if conn.pending() == 0 => break,
                Err(_) => {}
            }
        }
        let mut d = FrameDecoder::new(2048, 8192);
        let mut decoded = Vec::new();
        let mut rest = &got[..];
        while !rest.is_empty() {
            let n = d.push(rest);
            rest = &rest[n..];
            while let Some(f) = d.next_frame().unwrap() {
                decoded.push(f.to_vec());
            }
        }
        assert_eq!(d.buffered(), 0, "the stream ends on a frame boundary");
        assert_eq!(
            decoded, accepted,
            "every accepted frame arrives whole, in order"
        );
        assert_eq!(decoded.len() as u64 + dropped, 2000);
    }

    #[test]
    fn writes_to_a_closed_connection_fail_without_blocking() {
        let (conn, client) = pair(1024);
        drop(client);
        conn.close();
        let r = conn.write_frames(&framed(&[vec![1; 10], vec![2; 10]]));
        assert_eq!(
            r,
            WriteOutcome {
                failed: 2,
                ..Default::default()
            }
        );
    }

    #[test]
    fn frames_longer_than_16_bits_are_refused() {
        let mut out = Vec::new();
        assert!(!push_frame(&mut out, &vec![0; 65_536]));
        assert!(out.is_empty());
        assert!(push_frame(&mut out, &vec![0; 65_535]));
    }

    /// Drives a TcpSide with a fake dispatch: what reaches it, what is closed, and why.
    struct Harness {
        side: TcpSide,
        counters: TcpCounters,
        registered: Arc<AtomicUsize>,
    }

    impl Harness {
        fn new(cfg: TcpConfig) -> Self {
            let side = TcpSide::bind(cfg, &["127.0.0.1".parse().unwrap()], 1, 2048).unwrap();
            Self {
                side,
                counters: TcpCounters::default(),
                registered: Arc::new(AtomicUsize::new(0)),
            }
        }

        fn addr(&self) -> SocketAddr {
            self.side.local_addrs()[0].1
        }

        fn run(&mut self, now: u64, verdict: impl Fn(&[u8]) -> Verdict, seen: &mut Vec<Vec<u8>>) {
            let reg = Arc::clone(&self.registered);
            let registry = move |r: Registry<'_>| match r {
                Registry::Add(_) => {
                    reg.fetch_add(1, Relaxed);
                }
                Registry::Remove(_) => {
                    reg.fetch_sub(1, Relaxed);
                }
            };
            for _ in 0..5 {
                self.side
                    .service(now, &self.counters, &registry, |s, _, f| {
                        assert_eq!(s, 1);
                        seen.push(f.to_vec());
                        verdict(f)
                    });
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    fn check(ufrag: &[u8]) -> Vec<u8> {
        stun::binding_request(&[ufrag, b":them"].concat(), b"pw", [1; 12])
    }

    #[test]
    fn connections_must_authenticate_first_and_in_time() {
        let mut h = Harness::new(TcpConfig {
            auth_timeout_ms: 1000,
            idle_timeout_ms: 10_000,
            ..TcpConfig::default()
        });
        let by_content = |f: &[u8]| {
            if f.first() == Some(&0) {
                Verdict::Authenticated
            } else {
                Verdict::Dropped
            }
        };
        let mut seen = Vec::new();
        // garbage first: closed, counted
        let mut garbage = TcpStream::connect(h.addr()).unwrap();
        garbage.write_all(&framed(&[vec![0x80; 100]])).unwrap();
        // a good check, then media
        let mut good = TcpStream::connect(h.addr()).unwrap();
        good.write_all(&framed(&[check(b"ufrA"), vec![0x80; 50]]))
            .unwrap();
        // silent
        let _silent = TcpStream::connect(h.addr()).unwrap();
        h.run(100, by_content, &mut seen);
        assert_eq!(h.counters.accepted.load(Relaxed), 3);
        assert_eq!(h.counters.unauthenticated.load(Relaxed), 1);
        assert_eq!(seen.len(), 3, "garbage frame, check, media");
        assert_eq!(h.side.open(), 2);
        assert_eq!(h.registered.load(Relaxed), 2);
        let mut buf = [0u8; 16];
        garbage
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        assert_eq!(
            garbage.read(&mut buf).unwrap_or(0),
            0,
            "garbage sender closed"
        );
        // past the deadline the silent one goes, the authenticated one stays
        h.run(1200, by_content, &mut seen);
        assert_eq!(h.counters.unauthenticated.load(Relaxed), 2);
        assert_eq!(h.side.open(), 1);
        // idle past the idle timeout
        h.run(100 + 10_000, by_content, &mut seen);
        assert_eq!(h.counters.idle.load(Relaxed), 1);
        assert_eq!(h.side.open(), 0);
        assert_eq!(h.registered.load(Relaxed), 0);
        assert_eq!(h.counters.open.load(Relaxed), 0);
    }

    #[test]
    fn limits_on_connections_pending_and_per_session() {
        let mut h = Harness::new(TcpConfig {
            max_connections: 3,
            max_pending: 2,
            max_per_session: 1,
            ..TcpConfig::default()
        });
        let mut seen = Vec::new();
        let ok = |_: &[u8]| Verdict::Authenticated;
        let _a = TcpStream::connect(h.addr()).unwrap();
        let _b = TcpStream::connect(h.addr()).unwrap();
        let mut c = TcpStream::connect(h.addr()).unwrap(); // a third pending one: refused
        h.run(0, ok, &mut seen);
        assert_eq!(h.counters.connection_limit.load(Relaxed), 1);
        assert_eq!(h.side.open(), 2);
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(c.read(&mut buf).unwrap_or(0), 0);
        drop((_a, _b));
        h.run(0, ok, &mut seen);
        assert_eq!(h.side.open(), 0);
        assert_eq!(h.counters.closed_by_peer.load(Relaxed), 2);
        // one connection per session: a second for the same ufrag is closed before dispatch
        let mut first = TcpStream::connect(h.addr()).unwrap();
        first.write_all(&framed(&[check(b"ufrA")])).unwrap();
        h.run(0, ok, &mut seen);
        let mut second = TcpStream::connect(h.addr()).unwrap();
        second.write_all(&framed(&[check(b"ufrA")])).unwrap();
        let mut other = TcpStream::connect(h.addr()).unwrap();
        other.write_all(&framed(&[check(b"ufrB")])).unwrap();
        seen.clear();
        h.run(0, ok, &mut seen);
        assert_eq!(seen.len(), 1, "only ufrB's check was dispatched");
        assert_eq!(h.counters.connection_limit.load(Relaxed), 2);
        assert_eq!(h.side.open(), 2);
        // closing the first frees the session's slot
        drop(first);
        h.run(0, ok, &mut seen);
        let mut again = TcpStream::connect(h.addr()).unwrap();
        again.write_all(&framed(&[check(b"ufrA")])).unwrap();
        seen.clear();
        h.run(0, ok, &mut seen);
        assert_eq!(seen.len(), 1);
        assert_eq!(h.side.open(), 2);
    }

    #[test]
    fn an_oversize_frame_ends_the_connection() {
        let mut h = Harness::new(TcpConfig::default());
        let mut seen = Vec::new();
        let mut s = TcpStream::connect(h.addr()).unwrap();
        let mut stream = framed(&[check(b"ufrA")]);
        stream.extend_from_slice(&[0x08, 0x01]); // 2049 bytes announced, over a 2048-byte slot
        stream.extend_from_slice(&[0; 100]);
        s.write_all(&stream).unwrap();
        h.run(0, |_| Verdict::Authenticated, &mut seen);
        assert_eq!(seen.len(), 1);
        assert_eq!(h.counters.frame_oversize.load(Relaxed), 1);
        assert_eq!(h.side.open(), 0);
    }

    #[test]
    fn frames_split_across_reads_are_dispatched_whole() {
        let mut h = Harness::new(TcpConfig::default());
        let mut seen = Vec::new();
        let mut s = TcpStream::connect(h.addr()).unwrap();
        let stream = framed(&[check(b"ufrA"), vec![0x80; 1500], vec![0x16; 300]]);
        for piece in stream.chunks(7) {
            s.write_all(piece).unwrap();
            h.side.service(0, &h.counters, &|_| {}, |_, _, f| {
                seen.push(f.to_vec());
                Verdict::Authenticated
            });
        }
        h.run(0, |_| Verdict::Authenticated, &mut seen);
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[1], vec![0x80; 1500]);
        assert_eq!(seen[2], vec![0x16; 300]);
    }
}
