//! Python binding: `mediasrv_native.ClientPump`, used by the load generator
//! (`mediasrv/loadtest/`).

use std::net::{IpAddr, SocketAddr};

use pyo3::exceptions::{PyKeyError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use mediasrv_core::srtp::{Profile, SrtpContext};
use mediasrv_loadgen::impair::ImpairConfig;
use mediasrv_loadgen::pump::{dup_fd, now_us, Pump};
use mediasrv_loadgen::receiver::{Receiver, ReceiverConfig};
use mediasrv_loadgen::synth::SendStream;

use crate::counters::counters_dict;

/// A datagram and its source address, as Python sees them.
type Datagram<'py> = (Bound<'py, PyBytes>, (String, u16));

/// Sends and receives the media of simulated clients on one native worker thread.
#[pyclass(name = "ClientPump", module = "mediasrv_native")]
pub struct ClientPump {
    pump: Pump,
    seed: u64,
}

fn mid_ext(id: Option<u8>, mid: Option<&str>) -> PyResult<Option<(u8, Vec<u8>)>> {
    match (id, mid) {
        (Some(id), Some(mid)) => {
            if !(1..=14).contains(&id) || mid.is_empty() || mid.len() > 16 {
                return Err(PyValueError::new_err(
                    "mid extension id must be 1..14 and mid 1..16 bytes",
                ));
            }
            Ok(Some((id, mid.as_bytes().to_vec())))
        }
        _ => Ok(None),
    }
}

impl ClientPump {
    fn add_stream(&mut self, peer: u64, stream: SendStream) -> PyResult<()> {
        let mut st = self.pump.state.lock().unwrap();
        let p = st
            .peers
            .get_mut(&peer)
            .ok_or_else(|| PyKeyError::new_err(peer))?;
        p.streams.push(stream);
        Ok(())
    }

    fn next_seed(&mut self) -> u64 {
        self.seed = self.seed.wrapping_add(0x9E37_79B9);
        self.seed
    }
}

#[pymethods]
impl ClientPump {
    #[new]
    #[pyo3(signature = (seed = 1))]
    fn new(seed: u64) -> PyResult<Self> {
        let pump = Pump::start().map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(Self { pump, seed })
    }

    /// Serve a peer whose DTLS handshake is done: `fd` is its UDP socket (duplicated here; the
    /// caller keeps its own descriptor), `profile` the OpenSSL SRTP profile name, `tx_*` the
    /// keys this side protects with and `rx_*` the peer's. Returns the peer id.
    #[allow(clippy::too_many_arguments)]
    fn add_peer(
        &mut self,
        fd: i32,
        remote_host: &str,
        remote_port: u16,
        profile: &str,
        tx_key: &[u8],
        tx_salt: &[u8],
        rx_key: &[u8],
        rx_salt: &[u8],
    ) -> PyResult<u64> {
        let ip: IpAddr = remote_host
            .parse()
            .map_err(|_| PyValueError::new_err(format!("not an IP address: {remote_host:?}")))?;
        let profile = Profile::from_openssl_name(profile)
            .map_err(|_| PyValueError::new_err(format!("unknown SRTP profile {profile:?}")))?;
        let srtp = SrtpContext::new(profile, tx_key, tx_salt, rx_key, rx_salt)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let fd = dup_fd(fd).map_err(|e| PyOSError::new_err(e.to_string()))?;
        self.pump
            .add_peer(fd, SocketAddr::new(ip, remote_port), srtp)
            .map_err(|e| PyOSError::new_err(e.to_string()))
    }

    /// Send VP8 on `ssrc` at about `kbps`, starting now; with `follow_remb` at what the server's
    /// REMB for `ssrc` says (at most `kbps`), as a browser's encoder does.
    #[pyo3(signature = (peer, ssrc, payload_type, kbps, fps = 30, keyframe_interval_s = 3.0, mid_ext_id = None, mid = None, follow_remb = false))]
    #[allow(clippy::too_many_arguments)]
    fn add_video(
        &mut self,
        peer: u64,
        ssrc: u32,
        payload_type: u8,
        kbps: u32,
        fps: u32,
        keyframe_interval_s: f64,
        mid_ext_id: Option<u8>,
        mid: Option<&str>,
        follow_remb: bool,
    ) -> PyResult<()> {
        if kbps == 0 || fps == 0 || payload_type > 127 {
            return Err(PyValueError::new_err(
                "kbps and fps must be positive, payload type 0..127",
            ));
        }
        let seed = self.next_seed();
        let mut s = SendStream::video(
            ssrc,
            payload_type,
            kbps,
            fps,
            keyframe_interval_s,
            now_us(),
            seed,
        );
        s.mid_ext = mid_ext(mid_ext_id, mid)?;
        s.follow_remb = follow_remb;
        self.add_stream(peer, s)
    }

    /// Send Opus (20 ms frames) on `ssrc`, starting now.
    #[pyo3(signature = (peer, ssrc, payload_type, mid_ext_id = None, mid = None))]
    fn add_audio(
        &mut self,
        peer: u64,
        ssrc: u32,
        payload_type: u8,
        mid_ext_id: Option<u8>,
        mid: Option<&str>,
    ) -> PyResult<()> {
        if payload_type > 127 {
            return Err(PyValueError::new_err("payload type must be 0..127"));
        }
        let seed = self.next_seed();
        let mut s = SendStream::audio(ssrc, payload_type, now_us(), seed);
        s.mid_ext = mid_ext(mid_ext_id, mid)?;
        self.add_stream(peer, s)
    }

    /// Make `peer` a subscriber that receives like a browser toward congestion control: packets
    /// of `video_payload_types` are its video; with `transport_cc_ext_id` it sends transport-cc
    /// feedback every 50 ms; with `impair_rate_bps` (> 0) or `impair_loss_pct` its packets first
    /// pass a simulated link of that rate with a queue of `impair_queue_ms` (tail drop) and that
    /// random loss, and are counted (and acknowledged) only once out of it.
    #[pyo3(signature = (peer, video_payload_types, transport_cc_ext_id = None, impair_rate_bps = 0, impair_queue_ms = 250, impair_loss_pct = 0.0))]
    fn set_receiver(
        &mut self,
        peer: u64,
        video_payload_types: Vec<u8>,
        transport_cc_ext_id: Option<u8>,
        impair_rate_bps: u64,
        impair_queue_ms: u64,
        impair_loss_pct: f64,
    ) -> PyResult<()> {
        if transport_cc_ext_id.is_some_and(|id| !(1..=14).contains(&id)) {
            return Err(PyValueError::new_err(
                "transport-cc extension id must be 1..14",
            ));
        }
        if !(0.0..=100.0).contains(&impair_loss_pct) || !(1..=10_000).contains(&impair_queue_ms) {
            return Err(PyValueError::new_err(
                "loss must be 0..100 % and the queue 1..10000 ms",
            ));
        }
        let impair = (impair_rate_bps > 0 || impair_loss_pct > 0.0).then_some(ImpairConfig {
            rate_bps: impair_rate_bps,
            queue_us: impair_queue_ms * 1000,
            loss: impair_loss_pct / 100.0,
        });
        let seed = self.next_seed();
        let receiver = Receiver::new(
            ReceiverConfig {
                video_payload_types,
                transport_cc_ext: transport_cc_ext_id,
                impair,
            },
            seed,
            (seed >> 16) as u32 | 1,
        );
        let mut st = self.pump.state.lock().unwrap();
        let p = st
            .peers
            .get_mut(&peer)
            .ok_or_else(|| PyKeyError::new_err(peer))?;
        p.receiver = Some(receiver);
        Ok(())
    }

    /// Per subscriber set up with `set_receiver`: what came out of its link (packets, bytes,
    /// video_bytes, padding_packets), what the link dropped (dropped_loss, dropped_queue,
    /// max_queue_ms), feedback_packets sent, and what it observed of the server's adaptation
    /// (pauses, resumes, paused, first_pause_after_ms since its first packet,
    /// last_resume_after_ms since that pause, video_ssrc, video_ssrc_changes). Keyed by peer id.
    fn receiver_stats<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let all: Vec<_> = {
            let st = self.pump.state.lock().unwrap();
            st.peers
                .iter()
                .filter_map(|(id, p)| p.receiver.as_ref().map(|r| (*id, r.snapshot())))
                .collect()
        };
        let out = PyDict::new(py);
        for (id, s) in all {
            let d = counters_dict(
                py,
                &[
                    ("packets", s.packets),
                    ("bytes", s.bytes),
                    ("video_bytes", s.video_bytes),
                    ("padding_packets", s.padding_packets),
                    ("feedback_packets", s.feedback_packets),
                    ("pauses", s.pauses),
                    ("resumes", s.resumes),
                    ("video_ssrc_changes", s.video_ssrc_changes),
                    ("dropped_loss", s.link.dropped_loss),
                    ("dropped_queue", s.link.dropped_queue),
                ],
            )?;
            d.set_item("paused", s.paused)?;
            d.set_item("video_ssrc", s.video_ssrc)?;
            let ms = |us: Option<u64>| us.map(|u| u as f64 / 1000.0);
            d.set_item("first_pause_after_ms", ms(s.first_pause_after_us))?;
            d.set_item("last_resume_after_ms", ms(s.last_resume_after_us))?;
            d.set_item("max_queue_ms", s.link.max_queue_us as f64 / 1000.0)?;
            out.set_item(id, d)?;
        }
        Ok(out)
    }

    /// Stop serving a peer and close the pump's descriptor of its socket.
    fn remove_peer(&mut self, peer: u64) -> bool {
        self.pump.remove_peer(peer)
    }

    /// STUN and DTLS datagrams received for `peer` since the last call, with their source.
    fn take_control<'py>(&mut self, py: Python<'py>, peer: u64) -> PyResult<Vec<Datagram<'py>>> {
        let items = {
            let mut st = self.pump.state.lock().unwrap();
            let p = st
                .peers
                .get_mut(&peer)
                .ok_or_else(|| PyKeyError::new_err(peer))?;
            std::mem::take(&mut p.control)
        };
        Ok(items
            .into_iter()
            .map(|(d, a)| (PyBytes::new(py, &d), (a.ip().to_string(), a.port())))
            .collect())
    }

    /// Counters since the start; latency quantiles both cumulative and for the interval since
    /// the previous `snapshot(interval=True)` call.
    #[pyo3(signature = (interval = true))]
    fn snapshot<'py>(&mut self, py: Python<'py>, interval: bool) -> PyResult<Bound<'py, PyDict>> {
        // Copy under the lock, build Python objects after releasing it: allocating (and a GC
        // pass it may trigger) must never stall the worker thread.
        let (t, reception, peers, streams_sending, quantiles, interval_q, pump) = {
            let mut st = self.pump.state.lock().unwrap();
            let pump = st.pump;
            let h = &st.latency;
            let quantiles = [
                ("latency_samples", h.count as f64),
                ("latency_mean_ms", h.mean_us() / 1000.0),
                ("latency_max_ms", h.max_us as f64 / 1000.0),
                ("latency_p50_ms", h.quantile_us(0.5) / 1000.0),
                ("latency_p95_ms", h.quantile_us(0.95) / 1000.0),
                ("latency_p99_ms", h.quantile_us(0.99) / 1000.0),
            ];
            let interval_q = interval.then(|| {
                let h = &st.interval_latency;
                [
                    ("interval_latency_samples", h.count as f64),
                    ("interval_latency_p50_ms", h.quantile_us(0.5) / 1000.0),
                    ("interval_latency_p99_ms", h.quantile_us(0.99) / 1000.0),
                    ("interval_latency_max_ms", h.max_us as f64 / 1000.0),
                    (
                        "interval_pump_max_gap_ms",
                        pump.interval_max_gap_us as f64 / 1000.0,
                    ),
                ]
            });
            if interval {
                st.interval_latency.clear();
                st.pump.interval_max_gap_us = 0;
            }
            let streams: usize = st.peers.values().map(|p| p.streams.len()).sum();
            (
                st.totals,
                st.reception(),
                st.peers.len(),
                streams,
                quantiles,
                interval_q,
                pump,
            )
        };
        let (expected, received, streams, jitter) = reception;
        let d = counters_dict(
            py,
            &[
                ("packets_sent", t.packets_sent),
                ("bytes_sent", t.bytes_sent),
                ("send_errors", t.send_errors),
                ("keyframes_sent", t.keyframes_sent),
                ("packets_received", t.packets_received),
                ("bytes_received", t.bytes_received),
                ("unstamped_received", t.unstamped_received),
                ("srtp_errors", t.srtp_errors),
                ("rtcp_received", t.rtcp_received),
                ("control_received", t.control_received),
                ("control_dropped", t.control_dropped),
                ("feedback_sent", t.feedback_sent),
                ("nacks", t.rtcp.nacks),
                ("plis", t.rtcp.plis),
                ("firs", t.rtcp.firs),
                ("rembs", t.rtcp.rembs),
                ("sender_reports", t.rtcp.sender_reports),
                ("receiver_reports", t.rtcp.receiver_reports),
                ("expected", expected),
                ("received_in_streams", received),
            ],
        )?;
        d.set_item("lost", expected.saturating_sub(received))?;
        d.set_item("streams_receiving", streams)?;
        d.set_item("jitter_ms", jitter / 1000.0)?;
        d.set_item("peers", peers)?;
        d.set_item("streams_sending", streams_sending)?;
        // The pump thread's own CPU (CLOCK_THREAD_CPUTIME_ID), passes, and longest pass gap.
        d.set_item("pump_cpu_s", pump.cpu_s)?;
        d.set_item("pump_passes", pump.passes)?;
        d.set_item("pump_max_gap_ms", pump.max_gap_us as f64 / 1000.0)?;
        for (k, v) in quantiles
            .into_iter()
            .chain(interval_q.into_iter().flatten())
        {
            if k.ends_with("_samples") {
                d.set_item(k, v as u64)?;
            } else {
                d.set_item(k, v)?;
            }
        }
        Ok(d)
    }

    /// Stop or resume sending (receiving goes on), e.g. to let in-flight packets arrive before
    /// comparing counters with the server's.
    fn set_paused(&mut self, paused: bool) {
        self.pump.state.lock().unwrap().paused = paused;
    }

    /// Stop the worker thread and close every socket it holds.
    fn close(&mut self) {
        self.pump.shutdown();
        self.pump.state.lock().unwrap().peers.clear();
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ClientPump>()
}
