//! The Python extension module `mediasrv_native`: thin pyo3 bindings over the media core
//! (`mediasrv-core`), the media plane (`mediasrv-plane`) and the load generator's pump
//! (`mediasrv-loadgen`). Only argument conversion lives here; ids arrive from Python as ints and
//! become the core's typed ids at this boundary.

use pyo3::prelude::*;

mod client_pump;
mod counters;
mod jitter_buffer;
mod media_plane;
mod router;
mod srtp_session;

#[pymodule]
fn mediasrv_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    router::register(m)?;
    srtp_session::register(m)?;
    media_plane::register(m)?;
    client_pump::register(m)?;
    jitter_buffer::register(m)?;
    Ok(())
}
