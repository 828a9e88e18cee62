//! Python binding of the router: `mediasrv_native.Router`. Only argument conversion lives here; the
//! core's router (`mediasrv_core::router`) knows nothing of Python.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use mediasrv_core::ids::{SubscriptionId, TrackId, TransportId};
use mediasrv_core::jitter::JitterConfig;
use mediasrv_core::output::Output;
use mediasrv_core::router::{
    Codec, DropReason, ExtensionIds, KeyframeReason, MediaKind, Router as Core, RouterConfig,
    RouterError, RouterEvent, RTT_BUCKETS_MS,
};
use mediasrv_plane::{lock, SharedRouter};

use crate::counters::counters_dict;
use crate::jitter_buffer::{capacity_arg, codec_arg, flush_frames_py, pop_frames_py, stats_to_py};

type CodecTuple = (u64, String, u64, Option<u64>, Option<String>);
type Datagrams<'py> = Vec<(u64, Bound<'py, PyBytes>)>;

fn value_error(e: RouterError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn payload_type(v: u64) -> PyResult<u8> {
    u8::try_from(v)
        .ok()
        .filter(|pt| *pt < 128)
        .ok_or_else(|| PyValueError::new_err(format!("payload type {v} is not in 0..=127")))
}

/// A codec as (payload_type, name, clock_rate, apt) or (payload_type, name, clock_rate, apt, fmtp).
fn codec_tuple(item: &Bound<'_, PyAny>) -> PyResult<CodecTuple> {
    if let Ok((pt, name, clock, apt)) = item.extract::<(u64, String, u64, Option<u64>)>() {
        return Ok((pt, name, clock, apt, None));
    }
    item.extract::<CodecTuple>().map_err(|_| {
        PyValueError::new_err(format!(
            "codec must be (payload_type, name, clock_rate, apt[, fmtp]), not {}",
            item.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    })
}

fn codecs(list: Vec<Bound<'_, PyAny>>) -> PyResult<Vec<Codec>> {
    list.iter()
        .map(|item| {
            let (pt, name, clock_rate, apt, fmtp) = codec_tuple(item)?;
            let clock_rate = u32::try_from(clock_rate)
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(|| {
                    PyValueError::new_err(format!("clock rate {clock_rate} is invalid"))
                })?;
            Ok(Codec {
                payload_type: payload_type(pt)?,
                name,
                clock_rate,
                apt: apt.map(payload_type).transpose()?,
                fmtp,
            })
        })
        .collect()
}

fn extensions(map: HashMap<String, u64>) -> PyResult<ExtensionIds> {
    let mut pairs = Vec::with_capacity(map.len());
    for (name, id) in &map {
        let id = u8::try_from(*id).map_err(|_| {
            PyValueError::new_err(format!("extension id {id} for {name:?} is not in 1..=255"))
        })?;
        pairs.push((name.as_str(), id));
    }
    ExtensionIds::from_pairs(pairs).map_err(value_error)
}

fn ssrc(v: u64) -> PyResult<u32> {
    u32::try_from(v).map_err(|_| PyValueError::new_err(format!("SSRC {v} does not fit in 32 bits")))
}

fn no_sink(sub: u64) -> PyErr {
    PyKeyError::new_err(format!("no recording sink {sub}"))
}

fn to_py<'py>(py: Python<'py>, out: &Output) -> Datagrams<'py> {
    out.iter()
        .map(|(t, b)| (t.0, PyBytes::new(py, b)))
        .collect()
}

/// Selective forwarding core for one room. Sans-IO: feed it decrypted RTP/RTCP and the time in
/// milliseconds; it returns (transport, datagram) pairs to protect and send.
#[pyclass(name = "Router", module = "mediasrv_native")]
pub struct Router {
    /// Shared with the media plane worker the room is pinned to (a short lock per packet).
    core: SharedRouter,
    out: Output,
    out_rtcp: Output,
}

impl Router {
    pub(crate) fn shared(&self) -> SharedRouter {
        Arc::clone(&self.core)
    }
}

#[pymethods]
impl Router {
    #[new]
    #[pyo3(signature = (max_bitrate_bps=2_500_000, nack_cache_packets=1024, *, min_bitrate_bps=50_000,
                        group_floor_bps=150_000, pli_min_interval_ms=200,
                        remb_interval_ms=1000, keyframe_retry_ms=1000, sender_reports=false,
                        sr_interval_ms=1000, track_timeout_ms=3000, bwe_start_bps=1_000_000,
                        video_pause_bps=150_000, video_resume_bps=200_000,
                        video_resume_hold_ms=2000, nack_history_ms=500, pacing=true, seed=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        max_bitrate_bps: u64,
        nack_cache_packets: usize,
        min_bitrate_bps: u64,
        group_floor_bps: u64,
        pli_min_interval_ms: u64,
        remb_interval_ms: u64,
        keyframe_retry_ms: u64,
        sender_reports: bool,
        sr_interval_ms: u64,
        track_timeout_ms: u64,
        bwe_start_bps: u64,
        video_pause_bps: u64,
        video_resume_bps: u64,
        video_resume_hold_ms: u64,
        nack_history_ms: u64,
        pacing: bool,
        seed: Option<u64>,
    ) -> PyResult<Self> {
        if video_resume_bps < video_pause_bps {
            return Err(PyValueError::new_err(
                "video_resume_bps must not be below video_pause_bps",
            ));
        }
        if nack_cache_packets == 0 || nack_cache_packets > 1 << 16 {
            return Err(PyValueError::new_err(
                "nack_cache_packets must be in 1..=65536",
            ));
        }
        if min_bitrate_bps > max_bitrate_bps || group_floor_bps > max_bitrate_bps {
            return Err(PyValueError::new_err(
                "min_bitrate_bps and group_floor_bps must not exceed max_bitrate_bps",
            ));
        }
        let cfg = RouterConfig {
            max_bitrate_bps,
            min_bitrate_bps,
            group_floor_bps,
            nack_cache_packets,
            pli_min_interval_ms,
            remb_interval_ms,
            keyframe_retry_ms,
            sender_reports,
            sr_interval_ms,
            track_timeout_ms,
            bwe_start_bps,
            video_pause_bps,
            video_resume_bps,
            video_resume_hold_ms,
            nack_history_ms,
            pacing,
        };
        // Each router gets its own random start sequence numbers/timestamps unless a test pins them.
        let seed = seed.unwrap_or_else(|| RandomState::new().hash_one(0x6d65_6469_6173_7276u64));
        Ok(Self {
            core: Arc::new(Mutex::new(Core::new(cfg, seed))),
            out: Output::new(),
            out_rtcp: Output::new(),
        })
    }

    /// Declares a publishing transport (idempotent: a second call updates it).
    fn add_publisher(
        &mut self,
        transport: u64,
        rtcp_ssrc: u64,
        extensions: HashMap<String, u64>,
    ) -> PyResult<()> {
        let ext = self::extensions(extensions)?;
        lock(&self.core).add_publisher(TransportId(transport), ssrc(rtcp_ssrc)?, ext);
        Ok(())
    }

    #[pyo3(signature = (track, transport, kind, mid, codecs, ssrcs))]
    fn add_track(
        &mut self,
        track: u64,
        transport: u64,
        kind: &str,
        mid: Option<String>,
        codecs: Vec<Bound<'_, PyAny>>,
        ssrcs: Vec<u64>,
    ) -> PyResult<()> {
        let kind = MediaKind::parse(kind).map_err(value_error)?;
        let codecs = self::codecs(codecs)?;
        let ssrcs = ssrcs.into_iter().map(ssrc).collect::<PyResult<Vec<_>>>()?;
        lock(&self.core)
            .add_track(
                TrackId(track),
                TransportId(transport),
                kind,
                mid,
                codecs,
                &ssrcs,
            )
            .map_err(value_error)
    }

    /// Removes a track and its subscriptions; returns whether it existed.
    fn remove_track(&mut self, track: u64) -> bool {
        lock(&self.core).remove_track(TrackId(track))
    }

    /// `rtx_ssrc`: the RTX SSRC the subscriber was offered for this stream (its FID group), where
    /// bandwidth probes go as padding while video flows.
    #[pyo3(signature = (sub, track, transport, ssrc, codecs, extensions, *, rtx_ssrc=None))]
    #[allow(clippy::too_many_arguments)]
    fn add_subscription(
        &mut self,
        sub: u64,
        track: u64,
        transport: u64,
        ssrc: u64,
        codecs: Vec<Bound<'_, PyAny>>,
        extensions: HashMap<String, u64>,
        rtx_ssrc: Option<u64>,
    ) -> PyResult<()> {
        let codecs = self::codecs(codecs)?;
        let ext = self::extensions(extensions)?;
        let rtx_ssrc = rtx_ssrc.map(self::ssrc).transpose()?;
        let ssrc = self::ssrc(ssrc)?;
        if rtx_ssrc == Some(ssrc) {
            return Err(PyValueError::new_err(format!(
                "RTX SSRC {ssrc} is the media SSRC"
            )));
        }
        let mut core = lock(&self.core);
        core.add_subscription(
            SubscriptionId(sub),
            TrackId(track),
            TransportId(transport),
            ssrc,
            &codecs,
            ext,
        )
        .map_err(value_error)?;
        if let Some(rtx) = rtx_ssrc {
            core.set_subscription_rtx(SubscriptionId(sub), rtx)
                .map_err(value_error)?;
        }
        Ok(())
    }

    /// A recording sink on `track`: the publisher's `payload_type` packets (which must be `codec`:
    /// VP8, H264 or opus) go into a jitter buffer inside the router; `sink_frames` takes the frames.
    #[pyo3(signature = (sub, track, codec, payload_type, *, target_delay_ms=300,
                        keyframe_interval_ms=500, capacity=2048))]
    #[allow(clippy::too_many_arguments)]
    fn add_sink(
        &mut self,
        sub: u64,
        track: u64,
        codec: &str,
        payload_type: u64,
        target_delay_ms: u64,
        keyframe_interval_ms: u64,
        capacity: usize,
    ) -> PyResult<()> {
        let fc = codec_arg(codec)?;
        let cfg = JitterConfig {
            target_delay_ms,
            keyframe_interval_ms,
            capacity: capacity_arg(capacity)?,
            ..JitterConfig::new(fc)
        };
        lock(&self.core)
            .add_sink(
                SubscriptionId(sub),
                TrackId(track),
                fc,
                self::payload_type(payload_type)?,
                cfg,
            )
            .map_err(value_error)
    }

    /// The sink's complete frames, in order: [(timestamp, keyframe, data, arrival_ms)]; frames that
    /// cannot complete within the target delay of `now_ms` are given up (and counted).
    fn sink_frames<'py>(
        &mut self,
        py: Python<'py>,
        sub: u64,
        now_ms: u64,
    ) -> PyResult<Bound<'py, PyList>> {
        // Under the room's lock only the frames' `bytes` are made (no GC-tracked object, so no
        // collection can run while the media plane worker waits for the lock); the list after.
        let mut frames = Vec::new();
        {
            let mut core = lock(&self.core);
            let sink = core
                .sink_mut(SubscriptionId(sub))
                .ok_or_else(|| no_sink(sub))?;
            pop_frames_py(py, sink.buffer(), now_ms, &mut frames)?;
        }
        PyList::new(py, frames)
    }

    /// End of the sink's stream: its remaining complete frames; then the sink is removed.
    fn finish_sink<'py>(&mut self, py: Python<'py>, sub: u64) -> PyResult<Bound<'py, PyList>> {
        let mut frames = Vec::new();
        {
            let mut core = lock(&self.core);
            let sink = core
                .sink_mut(SubscriptionId(sub))
                .ok_or_else(|| no_sink(sub))?;
            flush_frames_py(py, sink.buffer(), &mut frames)?;
            core.remove_subscription(SubscriptionId(sub));
        }
        PyList::new(py, frames)
    }

    /// (NTP seconds, timestamp): the publisher's last sender report in the sink's timestamp space
    /// (extended like frame timestamps), or None before the first one.
    fn sink_sync(&self, sub: u64) -> PyResult<Option<(f64, u64)>> {
        let core = lock(&self.core);
        if !core.is_sink(SubscriptionId(sub)) {
            return Err(no_sink(sub));
        }
        Ok(core
            .sink_sync(SubscriptionId(sub))
            .map(|(ntp, ts)| (ntp as f64 / 4_294_967_296.0, ts)))
    }

    /// The sink's jitter-buffer counters (packets, lost, frames, keyframe_requests, ...).
    fn sink_stats<'py>(&self, py: Python<'py>, sub: u64) -> PyResult<Bound<'py, PyDict>> {
        // A copy of the counters, so the dict is built with the room's lock let go.
        let stats = lock(&self.core)
            .sink_stats(SubscriptionId(sub))
            .ok_or_else(|| no_sink(sub))?;
        stats_to_py(py, &stats)
    }

    fn remove_subscription(&mut self, sub: u64) -> bool {
        lock(&self.core).remove_subscription(SubscriptionId(sub))
    }

    /// Removes everything published or subscribed on the transport; returns whether anything was.
    fn remove_transport(&mut self, transport: u64) -> bool {
        lock(&self.core).remove_transport(TransportId(transport))
    }

    /// One RTP packet from a publisher → [(subscriber transport, rewritten RTP), ...].
    fn route_rtp<'py>(
        &mut self,
        py: Python<'py>,
        transport: u64,
        packet: &[u8],
        now_ms: u64,
    ) -> Datagrams<'py> {
        self.out.clear();
        lock(&self.core).route_rtp(TransportId(transport), packet, now_ms, &mut self.out);
        to_py(py, &self.out)
    }

    /// One (compound) RTCP packet → (retransmitted RTP, RTCP to send), each [(transport, bytes), ...].
    fn handle_rtcp<'py>(
        &mut self,
        py: Python<'py>,
        transport: u64,
        packet: &[u8],
        now_ms: u64,
    ) -> (Datagrams<'py>, Datagrams<'py>) {
        self.out.clear();
        self.out_rtcp.clear();
        lock(&self.core).handle_rtcp(
            TransportId(transport),
            packet,
            now_ms,
            &mut self.out,
            &mut self.out_rtcp,
        );
        (to_py(py, &self.out), to_py(py, &self.out_rtcp))
    }

    /// Periodic work (call every 100-250 ms) → datagrams to send: RTCP (REMB, keyframe requests,
    /// transport-cc feedback), then RTP padding probes toward paused subscribers.
    fn poll<'py>(&mut self, py: Python<'py>, now_ms: u64) -> Datagrams<'py> {
        self.out_rtcp.clear();
        self.out.clear();
        {
            let mut core = lock(&self.core);
            core.poll(now_ms, &mut self.out_rtcp);
            core.probe(now_ms, &mut self.out);
        }
        let mut all = to_py(py, &self.out_rtcp);
        all.extend(to_py(py, &self.out));
        all
    }

    /// PLI toward the track's publisher, unless one was sent less than the throttle interval ago.
    fn request_keyframe<'py>(
        &mut self,
        py: Python<'py>,
        track: u64,
        now_ms: u64,
    ) -> Datagrams<'py> {
        self.out_rtcp.clear();
        lock(&self.core).request_keyframe(TrackId(track), now_ms, &mut self.out_rtcp);
        to_py(py, &self.out_rtcp)
    }

    /// Makes a video track simulcast: `rids` (lowest resolution first) name its layers through
    /// header extension `rid_ext`; or, with no rids, `ssrcs` are its layers (a=ssrc-group:SIM).
    /// The layers' RTX streams (repairs of packets lost on the way in) are named by the
    /// repaired-RID extension `repaired_rid_ext` (0: none) or, for SIM layers, `rtx_ssrcs[i]` is
    /// layer i's (its FID group; 0: none).
    #[pyo3(signature = (track, rid_ext, rids, ssrcs, repaired_rid_ext=0, rtx_ssrcs=Vec::new()))]
    fn set_track_layers(
        &mut self,
        track: u64,
        rid_ext: u64,
        rids: Vec<String>,
        ssrcs: Vec<u64>,
        repaired_rid_ext: u64,
        rtx_ssrcs: Vec<u64>,
    ) -> PyResult<()> {
        let ext_id = |id: u64| {
            u8::try_from(id).map_err(|_| PyValueError::new_err(format!("extension id {id} > 255")))
        };
        let rid_ext = ext_id(rid_ext)?;
        let repaired_rid_ext = ext_id(repaired_rid_ext)?;
        let ssrcs = ssrcs.into_iter().map(ssrc).collect::<PyResult<Vec<_>>>()?;
        let rtx_ssrcs = rtx_ssrcs
            .into_iter()
            .map(ssrc)
            .collect::<PyResult<Vec<_>>>()?;
        let rids: Vec<&str> = rids.iter().map(String::as_str).collect();
        let mut core = lock(&self.core);
        core.set_track_layers(TrackId(track), rid_ext, &rids, &ssrcs)
            .map_err(value_error)?;
        core.set_track_layer_rtx(TrackId(track), repaired_rid_ext, &rtx_ssrcs)
            .map_err(value_error)
    }

    /// The most of a simulcast track's height the subscriber wants (None: no cap).
    #[pyo3(signature = (sub, max_height))]
    fn set_subscription_max_height(&mut self, sub: u64, max_height: Option<u64>) -> PyResult<()> {
        let h = max_height.map(|h| h.min(u16::MAX as u64) as u16);
        lock(&self.core)
            .set_subscription_max_height(SubscriptionId(sub), h)
            .map_err(value_error)
    }

    /// A simulcast track's layers: [{ssrc, bitrate_bps, height, rtx_ssrc, repaired,
    /// cache_packets, lost, jitter}], lowest first; None otherwise.
    fn track_layers<'py>(
        &self,
        py: Python<'py>,
        track: u64,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let Some(layers) = lock(&self.core).track_layers(TrackId(track)) else {
            return Ok(None);
        };
        let list = PyList::empty(py);
        for l in layers {
            let d = PyDict::new(py);
            d.set_item("ssrc", l.ssrc)?;
            d.set_item("bitrate_bps", l.bitrate_bps)?;
            d.set_item("height", l.height)?;
            d.set_item("rtx_ssrc", l.rtx_ssrc)?;
            d.set_item("repaired", l.repaired)?;
            d.set_item("cache_packets", l.cache_packets)?;
            d.set_item("lost", l.lost)?;
            d.set_item("jitter", l.jitter)?;
            list.append(d)?;
        }
        Ok(Some(list))
    }

    /// A simulcast subscription's layers: current (spatial, temporal) or None while it waits for a
    /// keyframe, target, cap and switch counters; None for other subscriptions.
    fn subscription_layers<'py>(
        &self,
        py: Python<'py>,
        sub: u64,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(l) = lock(&self.core).subscription_layers(SubscriptionId(sub)) else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("current", l.current)?;
        d.set_item("target", l.target)?;
        d.set_item("max_height", l.max_height)?;
        d.set_item("spatial_switches", l.spatial_switches)?;
        d.set_item("temporal_switches", l.temporal_switches)?;
        d.set_item("dropped_temporal", l.dropped_temporal)?;
        d.set_item("vp8_malformed", l.vp8_malformed)?;
        Ok(Some(d))
    }

    /// Events since the last call, oldest first, as tuples: ("track_started", track, None),
    /// ("track_stopped", track, None), ("keyframe_requested", track, reason), or
    /// ("video_paused" | "video_resumed", subscriber transport, "bandwidth").
    fn take_events(&mut self) -> Vec<(&'static str, u64, Option<&'static str>)> {
        let events = lock(&self.core).take_events();
        events
            .into_iter()
            .map(|e| match e {
                RouterEvent::TrackStarted { track } => ("track_started", track.0, None),
                RouterEvent::TrackStopped { track } => ("track_stopped", track.0, None),
                RouterEvent::KeyframeRequested { track, reason } => {
                    ("keyframe_requested", track.0, Some(reason.name()))
                }
                RouterEvent::VideoPaused { transport, .. } => {
                    ("video_paused", transport.0, Some("bandwidth"))
                }
                RouterEvent::VideoResumed { transport, .. } => {
                    ("video_resumed", transport.0, Some("bandwidth"))
                }
            })
            .collect()
    }

    /// Room-wide counters. Everything but `dropped` is a flat integer (so sums over rooms are
    /// plain additions): keyframe requests appear as `keyframe_requests_<reason>`, the RTT
    /// histogram as `rtt_bucket_<le>ms` (non-cumulative counts; `rtt_bucket_inf` above the last),
    /// `rtt_samples` and `rtt_sum_us`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // Copied out so the dict (GC-tracked objects) is built after the room's lock is let go.
        let s = lock(&self.core).stats().clone();
        let d = counters_dict(
            py,
            &[
                ("rtp_packets_in", s.rtp_packets_in),
                ("rtp_bytes_in", s.rtp_bytes_in),
                ("payload_bytes_in", s.payload_bytes_in),
                ("rtp_packets_out", s.rtp_packets_out),
                ("rtp_bytes_out", s.rtp_bytes_out),
                ("payload_bytes_out", s.payload_bytes_out),
                ("retransmissions_out", s.retransmissions_out),
                ("retransmission_bytes_out", s.retransmission_bytes_out),
                ("keyframes_in", s.keyframes_in),
                ("rtx_in", s.rtx_in),
                ("nacks_in", s.nacks_in),
                ("plis_in", s.plis_in),
                ("firs_in", s.firs_in),
                ("remb_in", s.remb_in),
                ("plis_out", s.plis_out),
                ("plis_throttled", s.plis_throttled),
                ("nacks_out", s.nacks_out),
                ("remb_out", s.remb_out),
                ("rr_out", s.rr_out),
                ("sr_out", s.sr_out),
                ("rtcp_packets_in", s.rtcp_packets_in),
                ("rtcp_packets_out", s.rtcp_packets_out),
                ("tracks_started", s.tracks_started),
                ("tracks_stopped", s.tracks_stopped),
                ("events_dropped", s.events_dropped),
                ("rtt_samples", s.rtt_samples),
                ("rtt_sum_us", s.rtt_sum_us),
                ("twcc_in", s.twcc_in),
                ("twcc_out", s.twcc_out),
                ("video_pauses", s.video_pauses),
                ("video_resumes", s.video_resumes),
                ("padding_out", s.padding_out),
                ("red_recovered", s.red_recovered),
            ],
        )?;
        for r in KeyframeReason::ALL {
            d.set_item(
                format!("keyframe_requests_{}", r.name()),
                s.keyframe_requests(r),
            )?;
        }
        for (i, count) in s.rtt_buckets.iter().enumerate() {
            match RTT_BUCKETS_MS.get(i) {
                Some(le) => d.set_item(format!("rtt_bucket_{le}ms"), count)?,
                None => d.set_item("rtt_bucket_inf", count)?,
            }
        }
        let dropped = PyDict::new(py);
        for r in DropReason::ALL {
            dropped.set_item(r.name(), s.dropped(r))?;
        }
        d.set_item("dropped", dropped)?;
        Ok(d)
    }

    fn track_stats<'py>(&self, py: Python<'py>, track: u64) -> PyResult<Bound<'py, PyDict>> {
        let s = lock(&self.core)
            .track_stats(TrackId(track))
            .ok_or_else(|| PyKeyError::new_err(track))?;
        let d = counters_dict(
            py,
            &[
                ("packets", s.packets),
                ("bytes", s.bytes),
                ("payload_bytes", s.payload_bytes),
                ("keyframes", s.keyframes),
                ("rtx_packets", s.rtx_packets),
                ("duplicates", s.duplicates),
                ("padding_only", s.padding_only),
                ("red_recovered", s.red_recovered),
                ("plis", s.plis_out),
                ("nacks", s.nacks_in),
                ("retransmissions", s.retransmissions),
                ("nacks_out", s.nacks_out),
                ("nack_seqs_out", s.nack_seqs_out),
                ("subscriptions", s.subscriptions as u64),
                ("bitrate_bps", s.bitrate_bps),
            ],
        )?;
        d.set_item("ssrc", s.media_ssrc)?;
        d.set_item("rtx_ssrc", s.rtx_ssrc)?;
        d.set_item("last_seq", s.last_seq)?;
        d.set_item("last_sr", s.last_sr)?;
        d.set_item("lost", s.lost)?;
        d.set_item("jitter", s.jitter)?;
        d.set_item("active", s.active)?;
        d.set_item("target_bitrate_bps", s.target_bitrate_bps)?;
        d.set_item("rtt", s.rtt_us.map(|us| us as f64 / 1e6))?;
        Ok(d)
    }

    fn subscription_stats<'py>(&self, py: Python<'py>, sub: u64) -> PyResult<Bound<'py, PyDict>> {
        let s = lock(&self.core)
            .subscription_stats(SubscriptionId(sub))
            .ok_or_else(|| PyKeyError::new_err(sub))?;
        let d = counters_dict(
            py,
            &[
                ("packets", s.packets),
                ("bytes", s.bytes),
                ("payload_bytes", s.payload_bytes),
                ("keyframes", s.keyframes),
                ("retransmissions", s.retransmissions),
                (
                    "retransmission_payload_bytes",
                    s.retransmission_payload_bytes,
                ),
                ("sender_reports", s.sender_reports),
                ("nacks", s.nacks),
                ("nack_misses", s.nack_misses),
                ("nack_too_soon", s.nack_too_soon),
                ("nack_over_budget", s.nack_over_budget),
                ("plis", s.plis),
                ("firs", s.firs),
                ("dropped_waiting_keyframe", s.dropped_waiting_keyframe),
                ("bitrate_bps", s.bitrate_bps),
                ("dropped_paused", s.dropped_paused),
            ],
        )?;
        d.set_item("estimate_bps", s.estimate_bps)?;
        d.set_item("paused", s.paused)?;
        d.set_item("ssrc", s.ssrc)?;
        d.set_item("waiting_keyframe", s.waiting_keyframe)?;
        d.set_item("last_seq", s.last_seq)?;
        d.set_item("last_timestamp", s.last_timestamp)?;
        d.set_item("remb_bps", s.remb_bps)?;
        d.set_item("fraction_lost", s.fraction_lost)?;
        d.set_item("cumulative_lost", s.cumulative_lost)?;
        d.set_item("jitter", s.jitter)?;
        d.set_item("rtt", s.rtt_us.map(|us| us as f64 / 1e6))?;
        Ok(d)
    }

    /// A subscriber transport's downlink: transport_cc, estimate_bps (None until its link reported
    /// anything), audio_bps, video_streams, video_paused, pauses, padding_packets, padding_bytes,
    /// pacing (its video is paced now), paced and paced_dropped (video packets the pacer held, and
    /// dropped past its queue), red_lean (RED audio sent to it as the primary alone: its link is
    /// too tight for the redundancy); None if it subscribes to nothing.
    fn downlink_stats<'py>(
        &self,
        py: Python<'py>,
        transport: u64,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(s) = lock(&self.core).downlink_stats(TransportId(transport)) else {
            return Ok(None);
        };
        let d = counters_dict(
            py,
            &[
                ("audio_bps", s.audio_bps),
                ("video_streams", s.video_streams),
                ("pauses", s.pauses),
                ("padding_packets", s.padding_packets),
                ("padding_bytes", s.padding_bytes),
                ("paced", s.paced),
                ("paced_dropped", s.paced_dropped),
            ],
        )?;
        d.set_item("pacing", s.pacing)?;
        d.set_item("transport_cc", s.transport_cc)?;
        d.set_item("estimate_bps", s.estimate_bps)?;
        d.set_item("video_paused", s.video_paused)?;
        d.set_item("red_lean", s.red_lean)?;
        Ok(Some(d))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Router>()
}
