//! Batched UDP syscalls for the client pump: `recvmmsg` with kernel receive timestamps
//! (`SO_TIMESTAMPNS`) and `sendmmsg` to one destination. One syscall moves many datagrams, so the
//! generator's cost per packet stays well below the server's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;

use super::synth::PACKET_BUF;

/// Datagrams per `recvmmsg` / `sendmmsg` call.
pub const BATCH: usize = 64;
/// Room for one `SCM_TIMESTAMPNS` control message (a timespec) with its header.
const CMSG_BUF: usize = 64;
/// Room for one `UDP_SEGMENT` control message (a u16) with its header, rounded up.
const GSO_CMSG_SPACE: usize = 24;
/// Most datagrams the kernel accepts in one GSO send (UDP_MAX_SEGMENTS).
const MAX_GSO_SEGMENTS: usize = 64;
/// A GSO send is one UDP datagram before splitting: stay under its 64 KiB limit.
const MAX_GSO_BYTES: usize = 60_000;

/// Ask the kernel to stamp each datagram on arrival, so latency does not include how long the
/// pump waited before reading (it reads in coalesced batches).
pub fn enable_rx_timestamps(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: fd is a socket the caller owns; the option value outlives the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// `CLOCK_REALTIME` in microseconds (the clock of `SO_TIMESTAMPNS`).
pub fn realtime_us() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1_000_000 + ts.tv_nsec / 1000
}

/// CPU seconds the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn from_sockaddr(ss: &libc::sockaddr_storage) -> SocketAddr {
    match ss.ss_family as libc::c_int {
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)),
                u16::from_be(a.sin6_port),
            )
        }
        _ => {
            // SAFETY: AF_INET (the only other family a UDP/IPv4 socket reports).
            let a = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes())),
                u16::from_be(a.sin_port),
            )
        }
    }
}

/// One received datagram: bytes, source, and kernel arrival time (realtime µs) when stamped.
pub struct Received<'a> {
    pub data: &'a mut [u8],
    pub from: SocketAddr,
    pub kernel_rx_us: Option<i64>,
}

/// Buffers for one `recvmmsg` call, reused across calls. The headers point into the other
/// vectors' heap storage, which never moves after construction.
pub struct RecvBatch {
    hdrs: Vec<libc::mmsghdr>,
    _iovs: Vec<libc::iovec>,
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    _cmsgs: Vec<[u64; CMSG_BUF / 8]>,
    lens: Vec<usize>,
    stamps: Vec<Option<i64>>,
    n: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        let mut bufs = vec![0u8; BATCH * PACKET_BUF];
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut cmsgs = vec![[0u64; CMSG_BUF / 8]; BATCH];
        let mut iovs: Vec<libc::iovec> = bufs
            .chunks_mut(PACKET_BUF)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr() as *mut libc::c_void,
                iov_len: PACKET_BUF,
            })
            .collect();
        // SAFETY: an all-zero mmsghdr is valid; the pointers are filled in below.
        let mut hdrs: Vec<libc::mmsghdr> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (i, h) in hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = &mut names[i] as *mut _ as *mut libc::c_void;
            h.msg_hdr.msg_iov = &mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = cmsgs[i].as_mut_ptr() as *mut libc::c_void;
        }
        Self {
            hdrs,
            _iovs: iovs,
            bufs,
            names,
            _cmsgs: cmsgs,
            lens: vec![0; BATCH],
            stamps: vec![None; BATCH],
            n: 0,
        }
    }
}

impl RecvBatch {
    /// Read up to [`BATCH`] datagrams from `fd` without blocking; returns how many.
    pub fn recv(&mut self, fd: RawFd) -> usize {
        // The kernel shrinks these to what it wrote: restore the capacities.
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_controllen = CMSG_BUF as _;
        }
        // SAFETY: every header points at buffers owned by self that live as long as it.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        self.n = r.max(0) as usize;
        for (i, h) in self.hdrs.iter().enumerate().take(self.n) {
            self.lens[i] = h.msg_len as usize;
            self.stamps[i] = timestamp(&h.msg_hdr);
        }
        self.n
    }

    /// The `i`-th datagram of the last `recv`.
    pub fn get(&mut self, i: usize) -> Received<'_> {
        let from = from_sockaddr(&self.names[i]);
        let start = i * PACKET_BUF;
        Received {
            data: &mut self.bufs[start..start + self.lens[i]],
            from,
            kernel_rx_us: self.stamps[i],
        }
    }
}

fn timestamp(msg: &libc::msghdr) -> Option<i64> {
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

/// Packets queued for one destination, sent with `sendmmsg`.
pub struct SendBatch {
    bufs: Vec<u8>,
    lens: Vec<usize>,
    // Rebuilt on each flush; kept to reuse their allocations.
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Packets in each message of the last flush.
    runs: Vec<usize>,
    /// One UDP_SEGMENT control message per possible run (fixed length: headers point into it).
    gso_cmsgs: Vec<[u64; GSO_CMSG_SPACE / 8]>,
    gso: bool,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self {
            bufs: vec![0; BATCH * PACKET_BUF],
            lens: Vec::with_capacity(BATCH),
            iovs: Vec::with_capacity(BATCH),
            hdrs: Vec::with_capacity(BATCH),
            runs: Vec::with_capacity(BATCH),
            gso_cmsgs: vec![[0; GSO_CMSG_SPACE / 8]; BATCH],
            gso: true,
        }
    }
}

impl SendBatch {
    pub fn is_full(&self) -> bool {
        self.lens.len() == BATCH
    }

    pub fn push(&mut self, packet: &[u8]) {
        let start = self.lens.len() * PACKET_BUF;
        self.bufs[start..start + packet.len()].copy_from_slice(packet);
        self.lens.push(packet.len());
    }

    /// Send everything queued to `to`; returns (packets sent, bytes sent, packets failed).
    pub fn flush(&mut self, fd: RawFd, to: &SocketAddr) -> (u64, u64, u64) {
        let n = self.lens.len();
        if n == 0 {
            return (0, 0, 0);
        }
        let (mut name, namelen) = to_sockaddr(to);
        self.iovs.clear();
        for (i, &len) in self.lens.iter().enumerate() {
            self.iovs.push(libc::iovec {
                iov_base: self.bufs[i * PACKET_BUF..].as_mut_ptr() as *mut libc::c_void,
                iov_len: len,
            });
        }
        // UDP GSO: a run of equal-size packets (the last may be shorter) goes as one message
        // with a UDP_SEGMENT control message; the kernel splits it, once per run not per packet.
        self.hdrs.clear();
        self.runs.clear();
        let mut i = 0;
        while i < n {
            let seg = self.lens[i];
            let mut k = 1;
            while i + k < n
                && k < MAX_GSO_SEGMENTS
                && (k + 1) * seg <= MAX_GSO_BYTES
                && self.lens[i + k] <= seg
                && self.lens[i + k - 1] == seg
            {
                k += 1;
            }
            // SAFETY: an all-zero mmsghdr is valid; the pointers are filled in below.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = &mut name as *mut _ as *mut libc::c_void;
            h.msg_hdr.msg_namelen = namelen;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = k as _;
            if k > 1 && self.gso {
                let c = &mut self.gso_cmsgs[self.runs.len()];
                h.msg_hdr.msg_control = c.as_mut_ptr() as *mut libc::c_void;
                h.msg_hdr.msg_controllen = GSO_CMSG_SPACE as _;
                // SAFETY: the control buffer holds one cmsg with a u16 payload (GSO_CMSG_SPACE).
                unsafe {
                    let cm = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                    (*cm).cmsg_level = libc::SOL_UDP;
                    (*cm).cmsg_type = libc::UDP_SEGMENT;
                    (*cm).cmsg_len = libc::CMSG_LEN(2) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cm) as *mut u16, seg as u16);
                }
            } else {
                k = 1;
                h.msg_hdr.msg_iovlen = 1;
            }
            self.hdrs.push(h);
            self.runs.push(k);
            i += k;
        }
        let msgs = self.hdrs.len();
        let mut done_msgs = 0usize;
        while done_msgs < msgs {
            // SAFETY: headers from `done_msgs` on point at live buffers, the name, iovecs and
            // control buffers above.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[done_msgs..].as_mut_ptr(),
                    (msgs - done_msgs) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r <= 0 {
                // A kernel without UDP GSO on this socket: fall back to one datagram a message.
                if self.gso
                    && done_msgs == 0
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::EIO)
                {
                    self.gso = false;
                }
                break;
            }
            done_msgs += r as usize;
        }
        let done: usize = self.runs[..done_msgs].iter().sum();
        let bytes = self.lens[..done].iter().map(|&l| l as u64).sum();
        self.lens.clear();
        (done as u64, bytes, (n - done) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_round_trip_with_kernel_timestamps() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_rx_timestamps(rx.as_raw_fd());
        let mut out = SendBatch::default();
        for i in 0..10u8 {
            out.push(&[i; 100]);
        }
        let before = realtime_us();
        let (sent, bytes, failed) = out.flush(tx.as_raw_fd(), &rx.local_addr().unwrap());
        assert_eq!((sent, bytes, failed), (10, 1000, 0));
        let mut inb = RecvBatch::default();
        assert_eq!(inb.recv(rx.as_raw_fd()), 10);
        for i in 0..10 {
            let d = inb.get(i);
            assert_eq!(d.data, &[i as u8; 100][..]);
            assert_eq!(d.from, tx.local_addr().unwrap());
            let ts = d.kernel_rx_us.expect("kernel timestamp");
            assert!(ts >= before - 1000 && ts <= realtime_us() + 1000);
        }
        assert_eq!(inb.recv(rx.as_raw_fd()), 0);
    }

    #[test]
    fn gso_runs_arrive_as_separate_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut out = SendBatch::default();
        // a frame of three full packets and a short last one, then an audio packet, then more
        let sizes = [1200usize, 1200, 1200, 300, 150, 900, 900];
        for (i, &n) in sizes.iter().enumerate() {
            out.push(&vec![i as u8; n]);
        }
        let total: usize = sizes.iter().sum();
        let (sent, bytes, failed) = out.flush(tx.as_raw_fd(), &rx.local_addr().unwrap());
        assert_eq!((sent, bytes, failed), (7, total as u64, 0));
        let mut inb = RecvBatch::default();
        assert_eq!(inb.recv(rx.as_raw_fd()), 7);
        for (i, &n) in sizes.iter().enumerate() {
            assert_eq!(inb.get(i).data, &vec![i as u8; n][..]);
        }
    }
}
