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
                Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
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
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
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
        Self { bufs: vec![0; BATCH * SLOT_LEN], addrs: vec![unsafe { zeroed() }; BATCH], lens: vec![0; BATCH] }
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
                hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
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
                return if err.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(err) };
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
        (&mut self.bufs[i * SLOT_LEN..(i + 1) * SLOT_LEN], self.lens[i])
    }
}

/// Up to `BATCH` outgoing datagrams for one socket, flushed with one `sendmmsg`.
pub struct SendBatch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    lens: Vec<usize>,
    n: usize,
}

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
}

impl SendBatch {
    pub fn new() -> Self {
        Self {
            bufs: vec![0; BATCH * SLOT_LEN],
            // SAFETY: all-zero sockaddr_storage is valid.
            addrs: vec![unsafe { zeroed() }; BATCH],
            addr_lens: vec![0; BATCH],
            lens: vec![0; BATCH],
            n: 0,
        }
    }

    pub fn is_full(&self) -> bool {
        self.n == BATCH
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The next free slot's buffer; `commit` makes it part of the batch.
    pub fn next_slot(&mut self) -> &mut [u8] {
        debug_assert!(self.n < BATCH);
        let i = self.n;
        &mut self.bufs[i * SLOT_LEN..(i + 1) * SLOT_LEN]
    }

    pub fn commit(&mut self, len: usize, addr: &SocketAddr) {
        let i = self.n;
        self.lens[i] = len;
        self.addr_lens[i] = to_sockaddr(addr, &mut self.addrs[i]);
        self.n += 1;
    }

    /// Sends everything queued; datagrams the kernel refuses are counted as errors and dropped.
    pub fn flush(&mut self, sock: &UdpSocket) -> Sent {
        let mut sent = Sent::default();
        let mut start = 0;
        // SAFETY: the iovecs and headers point into self's buffers, alive and unaliased here.
        unsafe {
            let mut iov: [libc::iovec; BATCH] = zeroed();
            let mut hdrs: [libc::mmsghdr; BATCH] = zeroed();
            let base = self.bufs.as_mut_ptr();
            for i in 0..self.n {
                iov[i].iov_base = base.add(i * SLOT_LEN) as *mut libc::c_void;
                iov[i].iov_len = self.lens[i];
                hdrs[i].msg_hdr.msg_iov = &mut iov[i];
                hdrs[i].msg_hdr.msg_iovlen = 1;
                hdrs[i].msg_hdr.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
                hdrs[i].msg_hdr.msg_namelen = self.addr_lens[i];
            }
            while start < self.n {
                let r = libc::sendmmsg(
                    sock.as_raw_fd(),
                    hdrs.as_mut_ptr().add(start),
                    (self.n - start) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                );
                if r <= 0 {
                    // Skip the datagram that failed (full buffer, unreachable...) and go on.
                    sent.errors += 1;
                    start += 1;
                    continue;
                }
                for i in start..start + r as usize {
                    sent.datagrams += 1;
                    sent.bytes += self.lens[i] as u64;
                }
                start += r as usize;
            }
        }
        self.n = 0;
        sent
    }
}
