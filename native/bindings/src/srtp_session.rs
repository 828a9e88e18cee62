//! Python binding: `mediasrv_native.SrtpSession` and `srtp_key_lengths`.
//!
//! The native I/O path uses [`SrtpContext`] directly; this binding exists for tests,
//! benchmarks and any Python-side packet that still needs protecting.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use mediasrv_core::srtp::{Profile, SrtpContext, SrtpError, SRTP_MAX_TRAILER_LEN};

fn value_error(error: SrtpError) -> PyErr {
    PyValueError::new_err(error.to_string())
}

fn parse_profile(name: &str) -> PyResult<Profile> {
    Profile::from_openssl_name(name)
        .map_err(|_| PyValueError::new_err(format!("unknown SRTP protection profile: {name:?}")))
}

/// An SRTP/SRTCP context for one peer: `tx_*` keys protect, `rx_*` keys unprotect.
#[pyclass(name = "SrtpSession", module = "mediasrv_native")]
pub struct SrtpSession {
    ctx: SrtpContext,
    /// Reused for unprotect, whose output is shorter than its input.
    scratch: Vec<u8>,
}

impl SrtpSession {
    fn unprotect<'py>(
        &mut self,
        py: Python<'py>,
        packet: &[u8],
        op: fn(&mut SrtpContext, &mut [u8]) -> Result<usize, SrtpError>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.scratch.clear();
        self.scratch.extend_from_slice(packet);
        let len = op(&mut self.ctx, &mut self.scratch).map_err(value_error)?;
        Ok(PyBytes::new(py, &self.scratch[..len]))
    }

    fn protect<'py>(
        &mut self,
        py: Python<'py>,
        packet: &[u8],
        op: fn(&mut SrtpContext, &mut [u8], usize) -> Result<usize, SrtpError>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.scratch.clear();
        self.scratch.extend_from_slice(packet);
        self.scratch.resize(packet.len() + SRTP_MAX_TRAILER_LEN, 0);
        let len = op(&mut self.ctx, &mut self.scratch, packet.len()).map_err(value_error)?;
        Ok(PyBytes::new(py, &self.scratch[..len]))
    }
}

#[pymethods]
impl SrtpSession {
    #[new]
    fn new(
        profile: &str,
        tx_key: &[u8],
        tx_salt: &[u8],
        rx_key: &[u8],
        rx_salt: &[u8],
    ) -> PyResult<Self> {
        let profile = parse_profile(profile)?;
        let ctx = SrtpContext::new(profile, tx_key, tx_salt, rx_key, rx_salt).map_err(|_| {
            PyValueError::new_err(format!(
                "{} needs {}-byte keys and {}-byte salts",
                profile.openssl_name(),
                profile.key_len(),
                profile.salt_len()
            ))
        })?;
        Ok(Self {
            ctx,
            scratch: Vec::with_capacity(2048),
        })
    }

    /// The profile name, as given.
    #[getter]
    fn profile(&self) -> &'static str {
        self.ctx.profile().openssl_name()
    }

    fn protect_rtp<'py>(
        &mut self,
        py: Python<'py>,
        packet: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.protect(py, packet, SrtpContext::protect_rtp)
    }

    fn unprotect_rtp<'py>(
        &mut self,
        py: Python<'py>,
        packet: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.unprotect(py, packet, SrtpContext::unprotect_rtp)
    }

    fn protect_rtcp<'py>(
        &mut self,
        py: Python<'py>,
        packet: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.protect(py, packet, SrtpContext::protect_rtcp)
    }

    fn unprotect_rtcp<'py>(
        &mut self,
        py: Python<'py>,
        packet: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.unprotect(py, packet, SrtpContext::unprotect_rtcp)
    }

    /// Packet counters, drops by reason and the number of SSRCs tracked.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        let counters = self.ctx.counters();
        for (name, value) in counters.pairs() {
            dict.set_item(name, value)?;
        }
        dict.set_item("dropped", counters.dropped())?;
        let (tx_streams, rx_streams) = self.ctx.stream_counts();
        dict.set_item("tx_streams", tx_streams)?;
        dict.set_item("rx_streams", rx_streams)?;
        Ok(dict)
    }

    /// Rollover counter of a received RTP stream, or None for an unknown SSRC.
    fn rx_roc(&self, ssrc: u32) -> Option<u32> {
        self.ctx.rx_roc(ssrc)
    }

    /// Rollover counter of a sent RTP stream, or None for an unknown SSRC.
    fn tx_roc(&self, ssrc: u32) -> Option<u32> {
        self.ctx.tx_roc(ssrc)
    }
}

/// `(key_len, salt_len)` of a profile, in bytes, for splitting DTLS-exported keying material.
#[pyfunction]
fn srtp_key_lengths(profile: &str) -> PyResult<(usize, usize)> {
    let profile = parse_profile(profile)?;
    Ok((profile.key_len(), profile.salt_len()))
}

/// Add the SRTP classes and functions to the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SrtpSession>()?;
    m.add_function(wrap_pyfunction!(srtp_key_lengths, m)?)?;
    Ok(())
}
