//! Python binding: `mediasrv_native.MediaPlane`. Control calls only; media never enters Python.

use std::net::{IpAddr, SocketAddr};

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use mediasrv_core::ids::TransportId;
use mediasrv_core::srtp::SrtpCounters;
use mediasrv_plane::{
    ConsentTimers, IceCredentials, IceRole, PeerKeys, Plane, PlaneConfig, PlaneError, TcpConfig,
    WorkerLoad,
};

use crate::counters::counters_dict;
use crate::router::Router;

/// One per-worker figure of `WorkerLoad`, for `stats()`.
type LoadField = fn(&WorkerLoad) -> u64;

fn to_py_err(e: PlaneError) -> PyErr {
    match e {
        PlaneError::Io(io) => PyOSError::new_err(io.to_string()),
        other => PyValueError::new_err(other.to_string()),
    }
}

fn socket_addr(host: &str, port: u16) -> PyResult<SocketAddr> {
    let ip: IpAddr = host
        .parse()
        .map_err(|_| PyValueError::new_err(format!("{host:?} is not an IP address")))?;
    Ok(SocketAddr::new(ip, port))
}

fn put_srtp(d: &Bound<'_, PyDict>, prefix: &str, c: &SrtpCounters) -> PyResult<()> {
    for (name, value) in c.pairs() {
        d.set_item(format!("{prefix}{name}"), value)?;
    }
    Ok(())
}

/// (socket index, host, port, datagram) handed to Python.
type Datagram<'py> = (usize, String, u16, Bound<'py, PyBytes>);

#[pyclass(name = "MediaPlane", module = "mediasrv_native")]
pub struct MediaPlane {
    inner: Option<Plane>,
}

impl MediaPlane {
    fn plane(&self) -> PyResult<&Plane> {
        self.inner
            .as_ref()
            .ok_or_else(|| to_py_err(PlaneError::Closed))
    }
}

#[pymethods]
impl MediaPlane {
    /// Binds one UDP socket per address (all on `port`; 0 = ephemeral) and starts `workers` threads.
    /// With `port_per_worker`, one per address and worker instead (worker w on `port + w`), each
    /// read by its worker: a room's peers belong on its worker's sockets (`socket_workers`).
    /// With `tcp_port` (0 = ephemeral), each address also gets an ICE-TCP listener on it, with its
    /// connection limits.
    #[new]
    #[pyo3(signature = (addresses, port=0, workers=0, *, port_per_worker=false, drop_ppm=0,
                        poll_interval_ms=20,
                        rx_coalesce_us=500, tcp_port=None, tcp_max_connections=1024,
                        tcp_max_pending=128, tcp_max_per_session=4, tcp_auth_timeout_ms=5000,
                        tcp_idle_timeout_ms=30000, tcp_write_buffer_bytes=262144))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        addresses: Vec<String>,
        port: u16,
        workers: usize,
        port_per_worker: bool,
        drop_ppm: u32,
        poll_interval_ms: u64,
        rx_coalesce_us: u64,
        tcp_port: Option<u16>,
        tcp_max_connections: usize,
        tcp_max_pending: usize,
        tcp_max_per_session: usize,
        tcp_auth_timeout_ms: u64,
        tcp_idle_timeout_ms: u64,
        tcp_write_buffer_bytes: usize,
    ) -> PyResult<Self> {
        if addresses.is_empty() {
            return Err(PyValueError::new_err(
                "the media plane needs at least one address",
            ));
        }
        if drop_ppm > 1_000_000 {
            return Err(PyValueError::new_err("drop_ppm must be in 0..=1000000"));
        }
        let addresses = addresses
            .iter()
            .map(|a| {
                a.parse::<IpAddr>()
                    .map_err(|_| PyValueError::new_err(format!("{a:?} is not an IP address")))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let workers = if workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            workers
        };
        let tcp = tcp_port.map(|port| TcpConfig {
            port,
            max_connections: tcp_max_connections,
            max_pending: tcp_max_pending,
            max_per_session: tcp_max_per_session,
            auth_timeout_ms: tcp_auth_timeout_ms,
            idle_timeout_ms: tcp_idle_timeout_ms,
            // At least one largest frame, so a frame cut by a short write can always be finished.
            write_buffer_bytes: tcp_write_buffer_bytes.max(4096),
        });
        let cfg = PlaneConfig {
            addresses,
            port,
            workers,
            port_per_worker,
            drop_ppm,
            poll_interval_ms,
            rx_coalesce_us: rx_coalesce_us.min(10_000),
            tcp,
        };
        Ok(Self {
            inner: Some(Plane::start(cfg).map_err(to_py_err)?),
        })
    }

    /// (host, port) of each bound socket, in the order of the addresses given.
    fn sockets(&self) -> PyResult<Vec<(String, u16)>> {
        Ok(self
            .plane()?
            .local_addrs()
            .iter()
            .map(|a| (a.ip().to_string(), a.port()))
            .collect())
    }

    /// The worker that reads each UDP socket, by socket index (all 0 with one port for all).
    fn socket_workers(&self) -> PyResult<Vec<usize>> {
        Ok(self.plane()?.socket_workers())
    }

    /// (socket index, host, port) of each ICE-TCP listener, in the order of the addresses given
    /// (empty without ICE-TCP). The index is what `sendto`, `register_peer` and the datagrams
    /// from `take_datagrams` use for that listener's connections.
    fn tcp_sockets(&self) -> PyResult<Vec<(usize, String, u16)>> {
        Ok(self
            .plane()?
            .tcp_addrs()
            .iter()
            .map(|(i, a)| (*i, a.ip().to_string(), a.port()))
            .collect())
    }

    #[getter]
    fn workers(&self) -> PyResult<usize> {
        Ok(self.plane()?.worker_count())
    }

    /// An eventfd that becomes readable when datagrams wait for Python.
    #[getter]
    fn wake_fd(&self) -> PyResult<i32> {
        Ok(self.plane()?.wake_fd())
    }

    /// [(socket, host, port, datagram), ...]: STUN, DTLS and not-yet-handed-over media.
    fn take_datagrams<'py>(&self, py: Python<'py>) -> PyResult<Vec<Datagram<'py>>> {
        let items = self.plane()?.take_inbound();
        Ok(items
            .into_iter()
            .map(|i| {
                (
                    i.socket,
                    i.from.ip().to_string(),
                    i.from.port(),
                    PyBytes::new(py, &i.data),
                )
            })
            .collect())
    }

    fn sendto(&self, socket: usize, data: &[u8], host: &str, port: u16) -> PyResult<usize> {
        self.plane()?
            .send_raw(socket, data, socket_addr(host, port)?)
            .map_err(to_py_err)
    }

    /// Lets DTLS and early media from this address reach Python (an address an ICE agent answered
    /// or checks); True if it was not admitted yet.
    fn admit_source(&self, socket: usize, host: &str, port: u16) -> PyResult<bool> {
        Ok(self.plane()?.admit_source(socket, socket_addr(host, port)?))
    }

    /// Undoes `admit_source`; True if it was admitted.
    fn forget_source(&self, socket: usize, host: &str, port: u16) -> PyResult<bool> {
        Ok(self
            .plane()?
            .forget_source(socket, socket_addr(host, port)?))
    }

    /// Lets Binding requests from unknown sources naming `ufrag` (our local ICE ufrag) reach
    /// Python when their MESSAGE-INTEGRITY holds `password`; False if `socket` does not exist.
    fn register_ice_session(&self, socket: usize, ufrag: &str, password: &str) -> PyResult<bool> {
        Ok(self
            .plane()?
            .register_ice_session(socket, ufrag.as_bytes(), password.as_bytes()))
    }

    /// Undoes `register_ice_session`; True if it was registered.
    fn forget_ice_session(&self, socket: usize, ufrag: &str) -> PyResult<bool> {
        Ok(self.plane()?.forget_ice_session(socket, ufrag.as_bytes()))
    }

    /// Pins the room's router to a worker (which now polls it); returns the worker index.
    fn attach_room(&self, py: Python<'_>, room: u64, router: PyRef<'_, Router>) -> PyResult<usize> {
        let shared = router.shared();
        let plane = self.plane()?;
        Ok(py.detach(|| plane.attach_room(room, shared)))
    }

    fn detach_room(&self, py: Python<'_>, room: u64) -> PyResult<bool> {
        let plane = self.plane()?;
        Ok(py.detach(|| plane.detach_room(room)))
    }

    #[pyo3(signature = (transport, room, socket, host, port, profile, tx_key, tx_salt, rx_key, rx_salt))]
    #[allow(clippy::too_many_arguments)]
    fn register_peer(
        &self,
        py: Python<'_>,
        transport: u64,
        room: u64,
        socket: usize,
        host: &str,
        port: u16,
        profile: &str,
        tx_key: &[u8],
        tx_salt: &[u8],
        rx_key: &[u8],
        rx_salt: &[u8],
    ) -> PyResult<()> {
        let addr = socket_addr(host, port)?;
        let plane = self.plane()?;
        let keys = PeerKeys {
            profile,
            tx_key,
            tx_salt,
            rx_key,
            rx_salt,
        };
        py.detach(|| plane.register_peer(TransportId(transport), room, socket, addr, keys))
            .map_err(to_py_err)
    }

    /// A handed-over peer's media now comes from (host, port) on `socket`: route and send there.
    /// Only after authenticating the peer at that address (an ICE check with its credentials).
    fn update_peer_address(
        &self,
        py: Python<'_>,
        transport: u64,
        socket: usize,
        host: &str,
        port: u16,
    ) -> PyResult<bool> {
        let plane = self.plane()?;
        let addr = socket_addr(host, port)?;
        py.detach(|| plane.update_peer_address(TransportId(transport), socket, addr))
            .map_err(to_py_err)
    }

    /// Runs a handed-over peer's ICE consent freshness (RFC 7675) in the plane: its Binding
    /// requests from its address are answered there, checks are sent every 0.8-1.2 ×
    /// `interval_ms`, and a peer none of whose checks was answered for `timeout_ms` is reported
    /// once by `take_consent_lost`. False if the transport is not handed over.
    #[pyo3(signature = (transport, local_ufrag, local_password, remote_ufrag, remote_password,
                        controlling, tie_breaker, priority, interval_ms=5000, timeout_ms=30000))]
    #[allow(clippy::too_many_arguments)]
    fn start_consent(
        &self,
        py: Python<'_>,
        transport: u64,
        local_ufrag: &str,
        local_password: &str,
        remote_ufrag: &str,
        remote_password: &str,
        controlling: bool,
        tie_breaker: u64,
        priority: u32,
        interval_ms: u64,
        timeout_ms: u64,
    ) -> PyResult<bool> {
        if interval_ms == 0 || timeout_ms <= interval_ms {
            return Err(PyValueError::new_err(
                "consent needs interval_ms > 0 and timeout_ms > interval_ms",
            ));
        }
        let plane = self.plane()?;
        let credentials = IceCredentials {
            local_ufrag: local_ufrag.as_bytes(),
            local_password: local_password.as_bytes(),
            remote_ufrag: remote_ufrag.as_bytes(),
            remote_password: remote_password.as_bytes(),
            role: IceRole {
                controlling,
                tie_breaker,
            },
            priority,
        };
        let timers = ConsentTimers {
            interval_ms,
            timeout_ms,
        };
        Ok(py.detach(|| plane.start_consent(TransportId(transport), &credentials, timers)))
    }

    /// Transports whose consent expired since the last call (each once): close them.
    fn take_consent_lost(&self) -> PyResult<Vec<u64>> {
        Ok(self
            .plane()?
            .take_consent_lost()
            .into_iter()
            .map(|t| t.0)
            .collect())
    }

    fn unregister_peer(&self, py: Python<'_>, transport: u64) -> PyResult<bool> {
        let plane = self.plane()?;
        Ok(py.detach(|| plane.unregister_peer(TransportId(transport))))
    }

    /// Protects and sends an RTP or RTCP packet to a handed-over peer; False if it is not one.
    fn send_media(&self, py: Python<'_>, transport: u64, packet: &[u8]) -> PyResult<bool> {
        let plane = self.plane()?;
        Ok(py.detach(|| plane.send_media(TransportId(transport), packet)))
    }

    fn peer_stats<'py>(
        &self,
        py: Python<'py>,
        transport: u64,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let plane = self.plane()?;
        let Some((s, srtp)) = py.detach(|| plane.peer_stats(TransportId(transport))) else {
            return Ok(None);
        };
        let d = counters_dict(
            py,
            &[
                ("rtp_in", s.rtp_in),
                ("rtcp_in", s.rtcp_in),
                ("bytes_in", s.bytes_in),
                ("rtp_out", s.rtp_out),
                ("rtcp_out", s.rtcp_out),
                ("bytes_out", s.bytes_out),
                ("test_dropped", s.test_dropped),
                ("address_changes", s.address_changes),
                ("consent_checks", s.consent_checks),
                ("consent_responses", s.consent_responses),
                ("checks_answered", s.checks_answered),
                ("checks_refused", s.checks_refused),
            ],
        )?;
        put_srtp(&d, "srtp_", &srtp)?;
        d.set_item("srtp_dropped", srtp.dropped())?;
        Ok(Some(d))
    }

    /// Stops (False) or resumes (True) reading the sockets; datagrams wait in the kernel meanwhile.
    fn set_receiving(&self, on: bool) -> PyResult<()> {
        self.plane()?.set_receiving(on);
        Ok(())
    }

    /// Plane-wide counters (datagrams, bytes, hand-offs, drops by reason, SRTP totals).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        use std::sync::atomic::Ordering::Relaxed;
        let plane = self.plane()?;
        let (w, srtp) = py.detach(|| plane.worker_totals());
        let c = plane.counters();
        let d = counters_dict(
            py,
            &[
                ("datagrams_in", c.datagrams_in.load(Relaxed)),
                ("bytes_in", c.bytes_in.load(Relaxed)),
                ("recv_batches", c.recv_batches.load(Relaxed)),
                ("to_python", c.to_python.load(Relaxed)),
                ("handoffs", c.handoffs.load(Relaxed)),
                ("datagrams_out", w.datagrams_out),
                ("bytes_out", w.bytes_out),
                ("consent_lost", w.consent_lost),
            ],
        )?;
        let dropped = counters_dict(
            py,
            &[
                ("to_python_overflow", c.to_python_overflow.load(Relaxed)),
                ("unknown_source", c.unknown_source.load(Relaxed)),
                ("stun_integrity", c.stun_integrity.load(Relaxed)),
                ("recv_errors", c.recv_errors.load(Relaxed)),
                ("send_errors", w.send_errors),
                ("no_destination", w.no_destination),
                ("no_room", w.no_room),
                ("oversize", w.oversize),
                ("test_loss", w.test_dropped),
                (
                    "tcp_write_overflow",
                    w.tcp_write_overflow + c.tcp.write_overflow.load(Relaxed),
                ),
                ("tcp_connection_limit", c.tcp.connection_limit.load(Relaxed)),
                ("tcp_unauthenticated", c.tcp.unauthenticated.load(Relaxed)),
                ("tcp_idle", c.tcp.idle.load(Relaxed)),
                ("tcp_frame_oversize", c.tcp.frame_oversize.load(Relaxed)),
                ("srtp_too_short", srtp.too_short),
                ("srtp_bad_version", srtp.bad_version),
                ("srtp_auth_failed", srtp.auth_failed),
                ("srtp_replayed", srtp.replayed),
                ("srtp_too_old", srtp.too_old),
                ("srtp_too_many_streams", srtp.too_many_streams),
                ("srtp_index_exhausted", srtp.index_exhausted),
            ],
        )?;
        d.set_item("dropped", dropped)?;
        let tcp = counters_dict(
            py,
            &[
                ("accepted", c.tcp.accepted.load(Relaxed)),
                ("open", c.tcp.open.load(Relaxed)),
                ("closed_by_peer", c.tcp.closed_by_peer.load(Relaxed)),
            ],
        )?;
        d.set_item("tcp", tcp)?;
        d.set_item("admitted_sources", plane.admitted_sources())?;
        d.set_item("ice_sessions", plane.ice_sessions())?;
        d.set_item("worker_cpu_seconds", plane.worker_cpu_seconds())?;
        // Per worker: packets handled (media in, datagrams out, datagrams read), packet-path
        // system calls, receive gather waits and those that found nothing (the gate then stops
        // waiting), rooms placed there.
        let loads = plane.worker_loads();
        let series: [(&str, LoadField); 5] = [
            ("worker_packets", |l| l.packets),
            ("worker_syscalls", |l| l.syscalls),
            ("worker_gather_waits", |l| l.gather_waits),
            ("worker_gather_empty", |l| l.gather_empty),
            ("worker_rooms", |l| l.rooms),
        ];
        for (key, of) in series {
            d.set_item(key, loads.iter().map(of).collect::<Vec<_>>())?;
        }
        d.set_item("syscalls", loads.iter().map(|l| l.syscalls).sum::<u64>())?;
        put_srtp(&d, "srtp_", &srtp)?;
        Ok(d)
    }

    /// Stops the workers and closes the sockets (also done when the object is collected).
    fn close(&mut self, py: Python<'_>) {
        if let Some(mut p) = self.inner.take() {
            py.detach(|| p.close());
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<MediaPlane>()
}
