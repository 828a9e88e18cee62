//! Batched UDP I/O with `recvmmsg` / `sendmmsg` (and UDP GSO) on preallocated buffers: the one
//! implementation behind the media plane's workers and the load generator's pump.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Largest datagram we accept or send (fits any MTU-sized SRTP packet plus trailer).
pub const SLOT_LEN: usize = 2048;
pub const BATCH: usize = 64;

pub fn to_sockaddr(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    // SAFETY: sockaddr_storage is large enough and suitably aligned for both address families.
    unsafe {
        match addr {
            SocketAddr::V4(a) => {
                let sin = out as *mut _ as *mut libc::sockaddr_in;
                *sin = zeroed();
                (*sin).sin_family = libc::AF_INET as libc::sa_family_t;
                (*sin).sin_port = a.port().to_be();
                (*sin).sin_addr.s_addr = u32::from(*a.ip()).to_be();
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                let sin6 = out as *mut _ as *mut libc::sockaddr_in6;
                *sin6 = zeroed();
                (*sin6).sin6_family = libc::AF_INET6 as libc::sa_family_t;
                (*sin6).sin6_port = a.port().to_be();
                (*sin6).sin6_addr.s6_addr = a.ip().octets();
                (*sin6).sin6_flowinfo = a.flowinfo();
                (*sin6).sin6_scope_id = a.scope_id();
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }
}

pub fn from_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: the family field tells which view of the storage the kernel filled in.
    unsafe {
        match i32::from(s.ss_family) {
            libc::AF_INET => {
                let sin = &*(s as *const _ as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let sin6 = &*(s as *const _ as *const libc::sockaddr_in6);
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

fn set_int_opt(sock: &UdpSocket, opt: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: plain setsockopt on an fd we own.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            &value as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// Asks for a `bytes` kernel receive buffer: beyond the system limit where the process may
/// (CAP_NET_ADMIN), else as much as `net.core.rmem_max` allows.
pub fn grow_rcvbuf(sock: &UdpSocket, bytes: libc::c_int) {
    if !set_int_opt(sock, libc::SO_RCVBUFFORCE, bytes) {
        set_int_opt(sock, libc::SO_RCVBUF, bytes);
    }
}

/// The send-side twin of [`grow_rcvbuf`] (`net.core.wmem_max`).
pub fn grow_sndbuf(sock: &UdpSocket, bytes: libc::c_int) {
    if !set_int_opt(sock, libc::SO_SNDBUFFORCE, bytes) {
        set_int_opt(sock, libc::SO_SNDBUF, bytes);
    }
}

/// Asks the kernel to stamp each datagram on arrival (`SO_TIMESTAMPNS`); a [`RecvBatch`] made
/// with [`RecvBatch::with_kernel_timestamps`] reads the stamps.
pub fn enable_rx_timestamps(sock: &UdpSocket) {
    set_int_opt(sock, libc::SO_TIMESTAMPNS, 1);
}

/// Binds a non-blocking UDP socket with 16 MiB kernel buffers (or as much as the system allows).
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind(addr)?;
    sock.set_nonblocking(true)?;
    grow_rcvbuf(&sock, 16 << 20);
    grow_sndbuf(&sock, 16 << 20);
    Ok(sock)
}

/// Room for one `SCM_TIMESTAMPNS` control message (a timespec with its header), in u64 words.
const RX_CMSG_WORDS: usize = 8;

/// `BATCH` receive slots, reused for every `recvmmsg`.
pub struct RecvBatch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
    /// Control-message space per slot; empty unless kernel receive timestamps are read.
    cmsgs: Vec<[u64; RX_CMSG_WORDS]>,
    /// Kernel arrival time of each slot (CLOCK_REALTIME µs), when stamped.
    stamps: Vec<Option<i64>>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        // SAFETY: an all-zero sockaddr_storage is a valid (AF_UNSPEC) value.
        Self {
            bufs: vec![0; BATCH * SLOT_LEN],
            addrs: vec![unsafe { zeroed() }; BATCH],
            lens: vec![0; BATCH],
            cmsgs: Vec::new(),
            stamps: vec![None; BATCH],
        }
    }

    /// A batch that also reads each datagram's kernel arrival time (the socket needs
    /// [`enable_rx_timestamps`]), so latency excludes how long the reader waited.
    pub fn with_kernel_timestamps() -> Self {
        Self {
            cmsgs: vec![[0; RX_CMSG_WORDS]; BATCH],
            ..Self::new()
        }
    }

    /// Receives up to `BATCH` datagrams without blocking; Ok(0) when none is waiting.
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        // SAFETY: the iovecs and headers point into self.bufs/self.addrs, which outlive the call
        // and are not touched by anything else meanwhile.
        unsafe {
            let mut iov: [libc::iovec; BATCH] = zeroed();
            let mut hdrs: [libc::mmsghdr; BATCH] = zeroed();
            let base = self.bufs.as_mut_ptr();
            for i in 0..BATCH {
                iov[i].iov_base = base.add(i * SLOT_LEN) as *mut libc::c_void;
                iov[i].iov_len = SLOT_LEN;
                hdrs[i].msg_hdr.msg_iov = &mut iov[i];
                hdrs[i].msg_hdr.msg_iovlen = 1;
                hdrs[i].msg_hdr.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
                hdrs[i].msg_hdr.msg_namelen =
                    size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                if let Some(c) = self.cmsgs.get_mut(i) {
                    hdrs[i].msg_hdr.msg_control = c.as_mut_ptr() as *mut libc::c_void;
                    hdrs[i].msg_hdr.msg_controllen = size_of::<[u64; RX_CMSG_WORDS]>() as _;
                }
            }
            let n = libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            );
            if n < 0 {
                let err = io::Error::last_os_error();
                return if err.kind() == io::ErrorKind::WouldBlock {
                    Ok(0)
                } else {
                    Err(err)
                };
            }
            for (len, hdr) in self.lens.iter_mut().zip(&hdrs).take(n as usize) {
                // A truncated datagram (larger than the slot) is counted as its slot length.
                *len = (hdr.msg_len as usize).min(SLOT_LEN);
            }
            if !self.cmsgs.is_empty() {
                for (stamp, hdr) in self.stamps.iter_mut().zip(&hdrs).take(n as usize) {
                    *stamp = kernel_timestamp(&hdr.msg_hdr);
                }
            }
            Ok(n as usize)
        }
    }

    pub fn addr(&self, i: usize) -> Option<SocketAddr> {
        from_sockaddr(&self.addrs[i])
    }

    /// Kernel arrival time of slot `i` (CLOCK_REALTIME µs), if the batch reads timestamps and
    /// the kernel stamped it.
    pub fn kernel_rx_us(&self, i: usize) -> Option<i64> {
        self.stamps[i]
    }

    /// Slot `i`: its whole buffer (for in-place work) and the received length.
    pub fn slot_mut(&mut self, i: usize) -> (&mut [u8], usize) {
        (
            &mut self.bufs[i * SLOT_LEN..(i + 1) * SLOT_LEN],
            self.lens[i],
        )
    }
}

/// The `SCM_TIMESTAMPNS` stamp of a received message, in CLOCK_REALTIME µs.
fn kernel_timestamp(msg: &libc::msghdr) -> Option<i64> {
    // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG macros walk within them.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                return Some(ts.tv_sec * 1_000_000 + ts.tv_nsec / 1000);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

/// Whether the gather wait pays, from what the reads after recent waits found. A wait that ends
/// on an empty socket costs a wake-up for nothing and is followed by a blocking `poll` (a second
/// one): that is what happens when datagrams come in clusters further apart than the window,
/// e.g. from senders clocked on a common tick, where reading each cluster as it lands is
/// cheaper. Independent senders at a few packets a window keep the waits productive and on.
#[derive(Debug, Clone, Default)]
pub struct GatherGate {
    /// Waits that found datagrams minus waits that found none, within ±[`GatherGate::SCORE_LIMIT`].
    score: i8,
    /// Passes since the last wait while the gate is shut.
    shut_passes: u16,
    waits: u64,
    empty_waits: u64,
}

impl GatherGate {
    const SCORE_LIMIT: i8 = 4;
    /// While shut, one pass in this many waits anyway, to notice when waiting pays again.
    pub const PROBE_EVERY: u16 = 32;

    /// The read after a wait found `received` datagrams.
    pub fn record(&mut self, received: usize) {
        self.waits += 1;
        if received == 0 {
            self.empty_waits += 1;
            self.score = (self.score - 1).max(-Self::SCORE_LIMIT);
        } else if self.score < 0 {
            // A probe (or a wait while the score climbs back) found something: open again.
            self.score = 0;
        } else {
            self.score = (self.score + 1).min(Self::SCORE_LIMIT);
        }
    }

    /// Whether to wait before the next read (after a pass that read a partial batch).
    pub fn open(&mut self) -> bool {
        if self.score >= 0 {
            return true;
        }
        self.shut_passes += 1;
        if self.shut_passes >= Self::PROBE_EVERY {
            self.shut_passes = 0;
            return true;
        }
        false
    }

    /// Gather waits so far, and those whose read found nothing.
    pub fn counts(&self) -> (u64, u64) {
        (self.waits, self.empty_waits)
    }
}

/// Outgoing datagrams one socket can queue before a flush.
pub const SEND_SLOTS: usize = 1024;
/// Datagrams a receive pass aims to find waiting: fewer than this and the next read waits longer.
pub const GATHER_TARGET: usize = 16;
/// Longest gather wait, as a multiple of the configured one.
pub const GATHER_MAX_FACTOR: u64 = 4;

/// How long to wait before the next receive after a pass that read `received` datagrams, with
/// `base_us` the configured gather window: none after a full batch (more is waiting) or an empty
/// read (poll blocks anyway); `base_us` from [`GATHER_TARGET`] datagrams up; longer the fewer
/// arrived (proportionally, up to [`GATHER_MAX_FACTOR`] × `base_us`), so that a quiet worker of
/// small visits still reads and sends a few packets per system call instead of one or two.
pub fn gather_wait_us(received: usize, base_us: u64) -> u64 {
    if received == 0 || received >= BATCH || base_us == 0 {
        return 0;
    }
    let scaled = base_us * GATHER_TARGET as u64 / received as u64;
    scaled.clamp(base_us, base_us * GATHER_MAX_FACTOR)
}

/// Limits of one UDP GSO message (kernel: UDP_MAX_SEGMENTS, 64 KiB IP datagram).
const MAX_GSO_SEGMENTS: usize = 64;
const MAX_GSO_BYTES: usize = 65_000;
const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;

/// Outgoing datagrams for one socket, flushed with `sendmmsg`. Datagrams to the same destination
/// are grouped (order kept per destination) and runs of equal-size ones go out as one UDP GSO
/// message: the kernel cuts it into datagrams, so a run costs one pass through the stack.
pub struct SendBatch {
    slots: usize,
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    lens: Vec<usize>,
    dests: Vec<u64>,
    n: usize,
    order: Vec<u16>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// (datagrams, bytes) of each message of the flush in progress.
    msg_sizes: Vec<(u64, u64)>,
    cmsgs: Vec<u64>,
    gso: bool,
}

// SAFETY: the raw pointers inside `iov`/`hdrs` are rebuilt at every flush and only point into this
// struct's own buffers while the flush runs; nothing keeps them across threads.
unsafe impl Send for SendBatch {}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    pub datagrams: u64,
    pub bytes: u64,
    pub errors: u64,
    pub messages: u64,
    /// `sendmmsg` system calls made.
    pub calls: u64,
}

const CMSG_WORDS: usize = 4; // CMSG_SPACE(sizeof(u16)) = 24 bytes on 64-bit Linux, in u64 words

impl SendBatch {
    /// A batch of [`SEND_SLOTS`] datagrams.
    pub fn new() -> Self {
        Self::with_slots(SEND_SLOTS)
    }

    /// A batch that holds `slots` datagrams (at most 65536) before it must be flushed.
    pub fn with_slots(slots: usize) -> Self {
        assert!((1..=1 << 16).contains(&slots), "slot indices are u16");
        Self {
            slots,
            bufs: vec![0; slots * SLOT_LEN],
            // SAFETY: all-zero sockaddr_storage / iovec / mmsghdr are valid values.
            addrs: vec![unsafe { zeroed() }; slots],
            addr_lens: vec![0; slots],
            lens: vec![0; slots],
            dests: vec![0; slots],
            n: 0,
            order: Vec::with_capacity(slots),
            iov: vec![unsafe { zeroed() }; slots],
            hdrs: vec![unsafe { zeroed() }; slots],
            msg_sizes: vec![(0, 0); slots],
            cmsgs: vec![0; slots * CMSG_WORDS],
            gso: true,
        }
    }

    /// Turns UDP GSO off (for kernels without it; also for tests of the plain path).
    pub fn set_gso(&mut self, on: bool) {
        self.gso = on;
    }

    pub fn is_full(&self) -> bool {
        self.n == self.slots
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The next free slot's buffer; `commit` makes it part of the batch.
    pub fn next_slot(&mut self) -> &mut [u8] {
        debug_assert!(self.n < self.slots);
        let i = self.n;
        &mut self.bufs[i * SLOT_LEN..(i + 1) * SLOT_LEN]
    }

    /// Queues the slot filled last: `len` bytes to `addr`; `dest` groups datagrams per peer.
    pub fn commit(&mut self, len: usize, addr: &SocketAddr, dest: u64) {
        let i = self.n;
        self.lens[i] = len;
        self.dests[i] = dest;
        self.addr_lens[i] = to_sockaddr(addr, &mut self.addrs[i]);
        self.n += 1;
    }

    /// Queues a copy of `datagram` to `addr` (see [`SendBatch::commit`]).
    pub fn push(&mut self, datagram: &[u8], addr: &SocketAddr, dest: u64) {
        self.next_slot()[..datagram.len()].copy_from_slice(datagram);
        self.commit(datagram.len(), addr, dest);
    }

    /// Builds the messages: per destination, runs of equal-size datagrams (the last of a run may
    /// be shorter) become one GSO message. Returns the number of messages.
    fn build(&mut self) -> usize {
        self.order.clear();
        self.order.extend(0..self.n as u16);
        let dests = &self.dests;
        self.order.sort_by_key(|&i| dests[i as usize]); // stable: per-destination order kept
        let base = self.bufs.as_mut_ptr();
        let (mut m, mut k, mut i) = (0, 0, 0);
        while i < self.n {
            let first = self.order[i] as usize;
            let seg = self.lens[first];
            let start_iov = k;
            let mut total = 0;
            let mut j = i;
            while j < self.n {
                let s = self.order[j] as usize;
                let len = self.lens[s];
                let joins = j == i
                    || (self.gso
                        && self.dests[s] == self.dests[first]
                        && j - i < MAX_GSO_SEGMENTS
                        && total + len <= MAX_GSO_BYTES
                        && len <= seg);
                if !joins {
                    break;
                }
                // SAFETY: slot s lies inside self.bufs.
                self.iov[k] = libc::iovec {
                    iov_base: unsafe { base.add(s * SLOT_LEN) } as *mut libc::c_void,
                    iov_len: len,
                };
                k += 1;
                total += len;
                j += 1;
                if len < seg {
                    break; // a shorter datagram can only end a GSO run
                }
            }
            let segments = j - i;
            let hdr = &mut self.hdrs[m].msg_hdr;
            hdr.msg_iov = &mut self.iov[start_iov];
            hdr.msg_iovlen = segments as _;
            hdr.msg_name = &mut self.addrs[first] as *mut _ as *mut libc::c_void;
            hdr.msg_namelen = self.addr_lens[first];
            if segments > 1 {
                let c = self.cmsgs[m * CMSG_WORDS..].as_mut_ptr() as *mut libc::cmsghdr;
                // SAFETY: c points to CMSG_WORDS zeroed u64s, enough for one cmsghdr with a u16.
                unsafe {
                    (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                    (*c).cmsg_level = SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    *(libc::CMSG_DATA(c) as *mut u16) = seg as u16;
                    hdr.msg_control = c as *mut libc::c_void;
                    hdr.msg_controllen = libc::CMSG_SPACE(2) as _;
                }
            } else {
                hdr.msg_control = std::ptr::null_mut();
                hdr.msg_controllen = 0;
            }
            self.msg_sizes[m] = (segments as u64, total as u64);
            m += 1;
            i = j;
        }
        m
    }

    /// Sends everything queued; messages the kernel refuses are counted as errors and dropped.
    pub fn flush(&mut self, sock: &UdpSocket) -> Sent {
        let mut sent = Sent::default();
        let messages = self.build();
        let mut start = 0;
        while start < messages {
            // SAFETY: hdrs[start..messages] were built above and point into live buffers.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr().add(start),
                    (messages - start) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            sent.calls += 1;
            if r <= 0 {
                let err = io::Error::last_os_error().raw_os_error();
                if self.gso
                    && self.msg_sizes[start].0 > 1
                    && matches!(err, Some(libc::EIO) | Some(libc::EINVAL))
                {
                    // No UDP GSO here (kernel or device): send the plain way from now on.
                    self.gso = false;
                }
                // Skip the message that failed (full buffer, unreachable...) and go on.
                sent.errors += self.msg_sizes[start].0;
                start += 1;
                continue;
            }
            for &(datagrams, bytes) in &self.msg_sizes[start..start + r as usize] {
                sent.datagrams += datagrams;
                sent.bytes += bytes;
            }
            sent.messages += r as u64;
            start += r as usize;
        }
        self.n = 0;
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        s
    }

    /// Whatever the grouping, every receiver gets exactly its datagrams, in order.
    fn round_trip(gso: bool) -> u64 {
        let tx = socket();
        let rx: Vec<UdpSocket> = (0..3).map(|_| socket()).collect();
        let mut batch = SendBatch::new();
        batch.set_gso(gso);
        let mut expected: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
        for i in 0..90u32 {
            let r = (i % 3) as usize;
            let len = if i % 7 == 0 { 300 } else { 1200 };
            let payload: Vec<u8> = (0..len).map(|b| (b as u32 ^ i) as u8).collect();
            batch.next_slot()[..len].copy_from_slice(&payload);
            batch.commit(len, &rx[r].local_addr().unwrap(), r as u64);
            expected[r].push(payload);
        }
        let sent = batch.flush(&tx);
        assert_eq!((sent.datagrams, sent.errors), (90, 0));
        // Three peers, one system call: the batch spans every destination of the worker.
        assert_eq!(sent.calls, 1);
        let mut buf = [0u8; 2048];
        for (r, sock) in rx.iter().enumerate() {
            for want in &expected[r] {
                let n = sock.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], &want[..]);
            }
        }
        sent.messages
    }

    #[test]
    fn gather_wait_grows_as_fewer_datagrams_arrive() {
        assert_eq!(gather_wait_us(0, 200), 0);
        assert_eq!(gather_wait_us(BATCH, 200), 0);
        assert_eq!(gather_wait_us(5, 0), 0);
        assert_eq!(gather_wait_us(1, 200), 800);
        assert_eq!(gather_wait_us(4, 200), 800);
        assert_eq!(gather_wait_us(5, 200), 640);
        assert_eq!(gather_wait_us(8, 200), 400);
        assert_eq!(gather_wait_us(GATHER_TARGET, 200), 200);
        assert_eq!(gather_wait_us(BATCH - 1, 200), 200);
    }

    #[test]
    fn the_gate_shuts_when_waits_find_nothing_and_probes_to_reopen() {
        let mut g = GatherGate::default();
        assert!(g.open(), "open until a wait comes back empty");
        g.record(3);
        g.record(0);
        assert!(
            g.open(),
            "one empty wait after a productive one is not a pattern"
        );
        g.record(0);
        g.record(0);
        let waited = (0..GatherGate::PROBE_EVERY * 2)
            .filter(|_| g.open())
            .count();
        assert_eq!(waited, 2, "shut: only the probes wait");
        g.record(0); // a probe that found nothing keeps it shut
        assert!(!g.open());
        g.record(2); // one that found datagrams opens it
        assert!(g.open());
        assert_eq!(g.counts(), (6, 4));
    }

    #[test]
    fn the_gate_stays_open_while_most_waits_find_datagrams() {
        let mut g = GatherGate::default();
        for i in 0..1000 {
            assert!(g.open(), "pass {i}");
            g.record(if i % 3 == 1 { 0 } else { 4 });
        }
    }

    #[test]
    fn grouped_gso_sends_arrive_intact_and_in_order() {
        let messages = round_trip(true);
        assert!(messages < 90, "runs went out as GSO messages ({messages})");
    }

    #[test]
    fn plain_sends_arrive_intact_and_in_order() {
        assert_eq!(round_trip(false), 90);
    }

    #[test]
    fn receive_with_kernel_timestamps() {
        let rx = socket();
        let tx = socket();
        enable_rx_timestamps(&rx);
        let mut out = SendBatch::with_slots(64);
        for i in 0..10u8 {
            out.push(&[i; 100], &rx.local_addr().unwrap(), 0);
        }
        let before = crate::clock::realtime_us();
        let sent = out.flush(&tx);
        assert_eq!((sent.datagrams, sent.bytes, sent.errors), (10, 1000, 0));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut inb = RecvBatch::with_kernel_timestamps();
        assert_eq!(inb.recv(&rx).unwrap(), 10);
        for i in 0..10 {
            let (buf, len) = inb.slot_mut(i);
            assert_eq!(&buf[..len], &[i as u8; 100][..]);
            assert_eq!(inb.addr(i), Some(tx.local_addr().unwrap()));
            let ts = inb.kernel_rx_us(i).expect("kernel timestamp");
            assert!(ts >= before - 1000 && ts <= crate::clock::realtime_us() + 1000);
        }
        assert_eq!(inb.recv(&rx).unwrap(), 0);
        // without the option on the batch, no stamps are read
        out.push(&[1; 10], &rx.local_addr().unwrap(), 0);
        out.flush(&tx);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut plain = RecvBatch::new();
        assert_eq!(plain.recv(&rx).unwrap(), 1);
        assert_eq!(plain.kernel_rx_us(0), None);
    }

    #[test]
    fn a_frame_run_arrives_as_separate_datagrams() {
        let rx = socket();
        let tx = socket();
        let mut out = SendBatch::with_slots(64);
        // a frame of three full packets and a short last one, then an audio packet, then more
        let sizes = [1200usize, 1200, 1200, 300, 150, 900, 900];
        for (i, &n) in sizes.iter().enumerate() {
            out.push(&vec![i as u8; n], &rx.local_addr().unwrap(), 0);
        }
        let total: usize = sizes.iter().sum();
        let sent = out.flush(&tx);
        assert_eq!(
            (sent.datagrams, sent.bytes, sent.errors),
            (7, total as u64, 0)
        );
        let mut buf = [0u8; 2048];
        for (i, &n) in sizes.iter().enumerate() {
            let got = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..got], &vec![i as u8; n][..]);
        }
    }
}
