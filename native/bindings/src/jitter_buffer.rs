//! Python binding: `mediasrv_native.JitterBuffer`, used by the recorder (`mediasrv/recording/`).

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use mediasrv_core::jitter::{
    FrameCodec, JitterBuffer, JitterConfig, JitterEvent, JitterStats, PacketBuf, RtpFields,
};
use mediasrv_core::rtp::RtpView;

use crate::counters::counters_dict;

/// A received packet kept by reference instead of copied: a `bytes` object is immutable, so its
/// buffer stays valid, unchanged, for as long as we hold the reference. The packet's bytes are then
/// copied once, into the frame.
struct PyPacket {
    _owner: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

impl PyPacket {
    fn new(b: &Bound<'_, PyBytes>) -> Self {
        let data = b.as_bytes();
        Self {
            _owner: b.clone().unbind(),
            ptr: data.as_ptr(),
            len: data.len(),
        }
    }
}

impl PacketBuf for PyPacket {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr`/`len` describe the buffer of the `bytes` object `_owner` keeps alive, and a
        // `bytes` object's contents never change.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    const REUSABLE: bool = false;
}

type Core = JitterBuffer<PyPacket>;

/// Per-stream jitter buffer: `push` RTP packets, `pop_frames` complete frames, `poll` for NACK and
/// keyframe requests. Times are milliseconds on any monotonic clock.
#[pyclass(name = "JitterBuffer", module = "mediasrv_native", unsendable)]
pub struct PyJitterBuffer {
    inner: Core,
}

/// A codec name argument: VP8, H264 or opus (any case).
pub(crate) fn codec_arg(name: &str) -> PyResult<FrameCodec> {
    FrameCodec::from_name(name).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unsupported codec {name:?}: expected VP8, H264 or opus (recorded without transcoding)"
        ))
    })
}

/// A buffer capacity argument, in packets.
pub(crate) fn capacity_arg(capacity: usize) -> PyResult<usize> {
    if !(16..=65536).contains(&capacity) {
        return Err(PyValueError::new_err("capacity must be 16..65536 packets"));
    }
    Ok(capacity)
}

/// A released frame as Python values: (timestamp, keyframe, data, arrival_ms).
pub(crate) type PyFrame<'py> = (u64, bool, Bound<'py, PyBytes>, u64);

/// Releases the complete frames into `out`; each frame's bytes are assembled straight into its
/// `bytes` object (no intermediate buffer). Nothing but `bytes` objects is created here: they are
/// not tracked by Python's cyclic GC, so creating them never starts a collection (nor runs a
/// finalizer), which matters because the router binding calls this holding the room's lock, the
/// one its media plane worker needs for every packet. The tuples are made after the lock is let go.
pub(crate) fn pop_frames_py<'py, P: PacketBuf>(
    py: Python<'py>,
    jb: &mut JitterBuffer<P>,
    now_ms: u64,
    out: &mut Vec<PyFrame<'py>>,
) -> PyResult<()> {
    let mut err = None;
    jb.pop_frames_with(now_ms, |info, parts| {
        if err.is_some() {
            return;
        }
        match new_frame_bytes(py, info.len, |buf| parts.write_to_uninit(buf)) {
            Ok(data) => out.push((info.timestamp, info.keyframe, data, info.arrival_ms)),
            Err(e) => err = Some(e),
        }
    });
    err.map_or(Ok(()), Err)
}

/// Releases the complete frames as a list of (timestamp, keyframe, data, arrival_ms).
pub(crate) fn pop_to_py<'py, P: PacketBuf>(
    py: Python<'py>,
    jb: &mut JitterBuffer<P>,
    now_ms: u64,
) -> PyResult<Bound<'py, PyList>> {
    let mut frames = Vec::new();
    pop_frames_py(py, jb, now_ms, &mut frames)?;
    PyList::new(py, frames)
}

/// A `bytes` of `len` bytes filled by `fill`, which must write every byte. Unlike
/// `PyBytes::new_with`, the buffer is not zeroed first: frames are several KB and written in full.
fn new_frame_bytes<'py>(
    py: Python<'py>,
    len: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<u8>]),
) -> PyResult<Bound<'py, PyBytes>> {
    let size = pyo3::ffi::Py_ssize_t::try_from(len)
        .map_err(|_| PyValueError::new_err("frame too large"))?;
    // SAFETY: with a null source, PyBytes_FromStringAndSize returns a new bytes object of `len`
    // uninitialised bytes (or null with an exception set); nothing else sees it until `fill` has
    // written all of them (`write_to` writes exactly `FrameInfo::len` bytes).
    unsafe {
        let obj = pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size);
        let bytes = Bound::from_owned_ptr_or_err(py, obj)?.cast_into_unchecked::<PyBytes>();
        let data = pyo3::ffi::PyBytes_AsString(obj).cast::<std::mem::MaybeUninit<u8>>();
        fill(std::slice::from_raw_parts_mut(data, len));
        Ok(bytes)
    }
}

/// End of stream through the sink: what `Core::flush` does, without owned frames, into `out`
/// (only `bytes` objects are created, as in `pop_frames_py`).
pub(crate) fn flush_frames_py<'py, P: PacketBuf>(
    py: Python<'py>,
    jb: &mut JitterBuffer<P>,
    out: &mut Vec<PyFrame<'py>>,
) -> PyResult<()> {
    pop_frames_py(py, jb, u64::MAX, out)?;
    while jb.has_pending() {
        jb.give_up_head();
        pop_frames_py(py, jb, u64::MAX, out)?;
    }
    Ok(())
}

/// End of stream: the remaining frames as a list (see `flush_frames_py`).
pub(crate) fn flush_to_py<'py, P: PacketBuf>(
    py: Python<'py>,
    jb: &mut JitterBuffer<P>,
) -> PyResult<Bound<'py, PyList>> {
    let mut frames = Vec::new();
    flush_frames_py(py, jb, &mut frames)?;
    PyList::new(py, frames)
}

fn push_list(jb: &mut Core, packets: &Bound<'_, PyList>, now_ms: u64) -> PyResult<usize> {
    let mut kept = 0;
    for p in packets.iter() {
        let b = p.cast::<PyBytes>()?;
        kept += jb.push_packet(PyPacket::new(b), now_ms) as usize;
    }
    Ok(kept)
}

#[pymethods]
impl PyJitterBuffer {
    #[new]
    #[pyo3(signature = (codec, *, target_delay_ms = 200, nack_interval_ms = 40, max_nack_retries = 4,
                        keyframe_interval_ms = 500, capacity = 1024))]
    fn new(
        codec: &str,
        target_delay_ms: u64,
        nack_interval_ms: u64,
        max_nack_retries: u32,
        keyframe_interval_ms: u64,
        capacity: usize,
    ) -> PyResult<Self> {
        let codec = codec_arg(codec)?;
        let cfg = JitterConfig {
            codec,
            target_delay_ms,
            nack_interval_ms,
            max_nack_retries,
            keyframe_interval_ms,
            capacity: capacity_arg(capacity)?,
        };
        Ok(Self {
            inner: Core::with_packet_buf(cfg),
        })
    }

    /// Stores one decrypted RTP packet; False when it was dropped (malformed, late, duplicate).
    fn push(&mut self, packet: &Bound<'_, PyBytes>, now_ms: u64) -> bool {
        self.inner.push_packet(PyPacket::new(packet), now_ms)
    }

    /// Stores a batch of packets that arrived at the same time; returns how many were kept.
    fn push_many(&mut self, packets: &Bound<'_, PyList>, now_ms: u64) -> PyResult<usize> {
        push_list(&mut self.inner, packets, now_ms)
    }

    /// One call per batch: stores the packets (a list of bytes that arrived by `now_ms`), then returns
    /// the frames now complete, as `pop_frames(now_ms)` would.
    fn push_and_pop<'py>(
        &mut self,
        py: Python<'py>,
        packets: &Bound<'py, PyList>,
        now_ms: u64,
    ) -> PyResult<Bound<'py, PyList>> {
        push_list(&mut self.inner, packets, now_ms)?;
        pop_to_py(py, &mut self.inner, now_ms)
    }

    /// Complete frames in order: (timestamp extended to 64 bits, keyframe, data, arrival_ms).
    fn pop_frames<'py>(&mut self, py: Python<'py>, now_ms: u64) -> PyResult<Bound<'py, PyList>> {
        pop_to_py(py, &mut self.inner, now_ms)
    }

    /// End of stream: the remaining complete frames; incomplete ones are dropped and counted.
    fn flush<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        flush_to_py(py, &mut self.inner)
    }

    /// Requests for the sender: ("nack", [seq, ...]) and ("keyframe", []).
    fn poll(&mut self, now_ms: u64) -> Vec<(&'static str, Vec<u16>)> {
        self.inner
            .poll(now_ms)
            .into_iter()
            .map(|e| match e {
                JitterEvent::Nack(seqs) => ("nack", seqs),
                JitterEvent::KeyframeRequest => ("keyframe", Vec::new()),
            })
            .collect()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_to_py(py, self.inner.stats())
    }
}

/// The buffer's counters as a dict.
pub(crate) fn stats_to_py<'py>(py: Python<'py>, s: &JitterStats) -> PyResult<Bound<'py, PyDict>> {
    let d = counters_dict(
        py,
        &[
            ("packets", s.packets),
            ("bytes", s.bytes),
            ("duplicates", s.duplicates),
            ("late", s.late),
            ("malformed", s.malformed),
            ("padding", s.padding),
            ("recovered", s.recovered),
            ("lost", s.lost),
            ("nacks", s.nacks),
            ("keyframe_requests", s.keyframe_requests),
            ("frames", s.frames),
            ("keyframes", s.keyframes),
            ("frames_incomplete", s.frames_incomplete),
            ("frames_undecodable", s.frames_undecodable),
            ("resets", s.resets),
        ],
    )?;
    Ok(d)
}

/// A recording sink's buffer fed as the router feeds it: each packet's header fields and a shared
/// reference to its payload (in the server, the NACK cache's copy; here, copies made once at
/// construction), so nothing is parsed or copied on the way in and a frame is copied once, out.
/// For benchmarks and tests of that path without a router in front.
#[pyclass(name = "SinkReplay", module = "mediasrv_native", unsendable)]
pub struct PySinkReplay {
    packets: Vec<(RtpFields, Arc<Vec<u8>>)>,
    inner: JitterBuffer<Arc<Vec<u8>>>,
}

#[pymethods]
impl PySinkReplay {
    #[new]
    #[pyo3(signature = (codec, packets, *, target_delay_ms = 300))]
    fn new(codec: &str, packets: &Bound<'_, PyList>, target_delay_ms: u64) -> PyResult<Self> {
        let codec = codec_arg(codec)?;
        let packets = packets
            .iter()
            .map(|p| {
                let b = p.cast::<PyBytes>()?;
                let rtp = RtpView::parse(b.as_bytes())
                    .map_err(|_| PyValueError::new_err("not an RTP packet"))?;
                Ok((RtpFields::of(&rtp), Arc::new(rtp.payload().to_vec())))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let cfg = JitterConfig {
            target_delay_ms,
            max_nack_retries: 0,
            capacity: 2048,
            ..JitterConfig::new(codec)
        };
        Ok(Self {
            packets,
            inner: JitterBuffer::with_packet_buf(cfg),
        })
    }

    fn __len__(&self) -> usize {
        self.packets.len()
    }

    /// Reads the payloads of packets `start..start+count` (brings them into cache, as a packet
    /// just routed is).
    fn touch(&self, start: usize, count: usize) -> u64 {
        self.packets[span(start, count, self.packets.len())]
            .iter()
            .map(|(_, p)| p.iter().map(|b| *b as u64).sum::<u64>())
            .sum()
    }

    /// Pushes packets `start..start+count` as the router does for a sink, then returns the frames
    /// now complete, as `Router.sink_frames` does.
    fn push_and_pop<'py>(
        &mut self,
        py: Python<'py>,
        start: usize,
        count: usize,
        now_ms: u64,
    ) -> PyResult<Bound<'py, PyList>> {
        let Self { packets, inner } = self;
        for (header, payload) in &packets[span(start, count, packets.len())] {
            inner.push_payload(*header, Arc::clone(payload), now_ms);
        }
        pop_to_py(py, inner, now_ms)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_to_py(py, self.inner.stats())
    }
}

/// Packets `start..start+count` of `len`, cut to what exists (any two Python ints: no overflow).
fn span(start: usize, count: usize, len: usize) -> std::ops::Range<usize> {
    let end = start.saturating_add(count).min(len);
    start.min(end)..end
}

#[cfg(test)]
#[test]
fn span_is_cut_to_the_packets_that_exist() {
    assert_eq!(span(2, 3, 10), 2..5);
    assert_eq!(span(8, 5, 10), 8..10);
    assert_eq!(span(12, 5, 10), 10..10);
    assert_eq!(
        span(5, usize::MAX, 10),
        5..10,
        "a huge count means to the end"
    );
    assert_eq!(span(usize::MAX, usize::MAX, 10), 10..10);
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyJitterBuffer>()?;
    m.add_class::<PySinkReplay>()
}
