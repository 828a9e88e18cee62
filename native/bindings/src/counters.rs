//! Counters handed to Python: every `stats()` method returns a dict of named integers.

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Named counters as a dict (the stats methods of the native classes).
pub(crate) fn counters_dict<'py>(
    py: Python<'py>,
    items: &[(&str, u64)],
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in items {
        d.set_item(*k, *v)?;
    }
    Ok(d)
}
