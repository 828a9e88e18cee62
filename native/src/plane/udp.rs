//! Batched UDP I/O with `recvmmsg` / `sendmmsg` on preallocated buffers.

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

/// Binds a non-blocking UDP socket with large kernel buffers: 16 MiB where the process may exceed
/// the system limit (CAP_NET_ADMIN), else as much as `net.core.[rw]mem_max` allows.
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind(addr)?;
    sock.set_nonblocking(true)?;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if !set_int_opt(&sock, force, 16 << 20) {
            set_int_opt(&sock, plain, 16 << 20);
        }
    }
    Ok(sock)
}

/// `BATCH` receive slots, reused for every `recvmmsg`.
pub struct RecvBatch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
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
            Ok(n as usize)
        }
    }

    pub fn addr(&self, i: usize) -> Option<SocketAddr> {
        from_sockaddr(&self.addrs[i])
    }

    /// Slot `i`: its whole buffer (for in-place work) and the received length.
    pub fn slot_mut(&mut self, i: usize) -> (&mut [u8], usize) {
        (
            &mut self.bufs[i * SLOT_LEN..(i + 1) * SLOT_LEN],
            self.lens[i],
        )
    }
}

/// Outgoing datagrams one socket can queue before a flush.
pub const SEND_SLOTS: usize = 1024;
/// Limits of one UDP GSO message (kernel: UDP_MAX_SEGMENTS, 64 KiB IP datagram).
const MAX_GSO_SEGMENTS: usize = 64;
const MAX_GSO_BYTES: usize = 65_000;
const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;

/// Outgoing datagrams for one socket, flushed with `sendmmsg`. Datagrams to the same destination
/// are grouped (order kept per destination) and runs of equal-size ones go out as one UDP GSO
/// message: the kernel cuts it into datagrams, so a run costs one pass through the stack.
pub struct SendBatch {
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
}

const CMSG_WORDS: usize = 4; // CMSG_SPACE(sizeof(u16)) = 24 bytes on 64-bit Linux, in u64 words

impl SendBatch {
    pub fn new() -> Self {
        Self {
            bufs: vec![0; SEND_SLOTS * SLOT_LEN],
            // SAFETY: all-zero sockaddr_storage / iovec / mmsghdr are valid values.
            addrs: vec![unsafe { zeroed() }; SEND_SLOTS],
            addr_lens: vec![0; SEND_SLOTS],
            lens: vec![0; SEND_SLOTS],
            dests: vec![0; SEND_SLOTS],
            n: 0,
            order: Vec::with_capacity(SEND_SLOTS),
            iov: vec![unsafe { zeroed() }; SEND_SLOTS],
            hdrs: vec![unsafe { zeroed() }; SEND_SLOTS],
            msg_sizes: vec![(0, 0); SEND_SLOTS],
            cmsgs: vec![0; SEND_SLOTS * CMSG_WORDS],
            gso: true,
        }
    }

    /// Turns UDP GSO off (for kernels without it; also for tests of the plain path).
    pub fn set_gso(&mut self, on: bool) {
        self.gso = on;
    }

    pub fn is_full(&self) -> bool {
        self.n == SEND_SLOTS
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The next free slot's buffer; `commit` makes it part of the batch.
    pub fn next_slot(&mut self) -> &mut [u8] {
        debug_assert!(self.n < SEND_SLOTS);
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
    fn grouped_gso_sends_arrive_intact_and_in_order() {
        let messages = round_trip(true);
        assert!(messages < 90, "runs went out as GSO messages ({messages})");
    }

    #[test]
    fn plain_sends_arrive_intact_and_in_order() {
        assert_eq!(round_trip(false), 90);
    }
}
