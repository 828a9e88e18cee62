//! mediasrv media plane. Sans-IO cores (router, RTCP, SRTP, jitter buffer) plus thin Python bindings.

use pyo3::prelude::*;

pub mod client;
pub mod codec_match;
pub mod fasthash;
pub mod jitter;
pub mod keyframe;
pub mod nack_cache;
pub mod output;
pub mod plane;
mod py;
pub mod reception;
pub mod router;
pub mod rtcp;
pub mod rtp;
pub mod seq;
pub mod srtp;

#[pymodule]
fn mediasrv_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    py::register(m)?;
    srtp::py::register(m)?;
    plane::py::register(m)?;
    client::py::register(m)?;
    jitter::py::register(m)?;
    Ok(())
}
