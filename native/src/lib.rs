//! mediasrv media plane. Sans-IO cores (router, RTCP, SRTP, jitter buffer) plus thin Python bindings.

use pyo3::prelude::*;

pub mod srtp;

#[pymodule]
fn mediasrv_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    srtp::py::register(m)?;
    Ok(())
}
