//! Python binding: `mediasrv_native.JitterBuffer`, used by the recorder (`mediasrv/recording/`).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use super::{FrameCodec, JitterBuffer as Core, JitterConfig, JitterEvent};

/// (timestamp, keyframe, data, arrival_ms) of one released frame.
type PyFrame<'py> = (u64, bool, Bound<'py, PyBytes>, u64);

/// Per-stream jitter buffer: `push` RTP packets, `pop_frames` complete frames, `poll` for NACK and
/// keyframe requests. Times are milliseconds on any monotonic clock.
#[pyclass(name = "JitterBuffer", module = "mediasrv_native", unsendable)]
pub struct PyJitterBuffer {
    inner: Core,
}

fn frames_to_py<'py>(py: Python<'py>, frames: Vec<super::Frame>) -> Vec<PyFrame<'py>> {
    frames
        .into_iter()
        .map(|f| {
            (
                f.timestamp,
                f.keyframe,
                PyBytes::new(py, &f.data),
                f.arrival_ms,
            )
        })
        .collect()
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
        let codec = FrameCodec::from_name(codec).ok_or_else(|| {
            PyValueError::new_err(format!(
                "unsupported codec {codec:?}: expected VP8, H264 or opus"
            ))
        })?;
        if !(16..=65536).contains(&capacity) {
            return Err(PyValueError::new_err("capacity must be 16..65536 packets"));
        }
        let cfg = JitterConfig {
            codec,
            target_delay_ms,
            nack_interval_ms,
            max_nack_retries,
            keyframe_interval_ms,
            capacity,
        };
        Ok(Self {
            inner: Core::new(cfg),
        })
    }

    /// Stores one decrypted RTP packet; False when it was dropped (malformed, late, duplicate).
    fn push(&mut self, packet: &[u8], now_ms: u64) -> bool {
        self.inner.push(packet, now_ms)
    }

    /// Stores a batch of packets that arrived at the same time; returns how many were kept.
    fn push_many(&mut self, packets: &Bound<'_, PyList>, now_ms: u64) -> PyResult<usize> {
        let mut kept = 0;
        for p in packets.iter() {
            let b = p.cast::<PyBytes>()?;
            kept += self.inner.push(b.as_bytes(), now_ms) as usize;
        }
        Ok(kept)
    }

    /// Complete frames in order: (timestamp extended to 64 bits, keyframe, data, arrival_ms).
    fn pop_frames<'py>(&mut self, py: Python<'py>, now_ms: u64) -> Vec<PyFrame<'py>> {
        frames_to_py(py, self.inner.pop_frames(now_ms))
    }

    /// End of stream: the remaining complete frames; incomplete ones are dropped and counted.
    fn flush<'py>(&mut self, py: Python<'py>) -> Vec<PyFrame<'py>> {
        frames_to_py(py, self.inner.flush())
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
        let s = self.inner.stats();
        let d = PyDict::new(py);
        for (k, v) in [
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
        ] {
            d.set_item(k, v)?;
        }
        Ok(d)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyJitterBuffer>()
}
