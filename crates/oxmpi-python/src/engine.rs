//! The process's engine, and the one helper every blocking call goes through.

use std::sync::{Arc, OnceLock};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use oxmpi::backend::Engine;

use crate::errors::{from_pyerr, to_pyerr};

static ENGINE: OnceLock<Arc<dyn Engine>> = OnceLock::new();
static FINALIZED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The engine, initialising the runtime on first use (mpi4py initialises
/// MPI when `mpi4py.MPI` is imported; so does `oxmpi.MPI`).
pub fn engine(py: Python<'_>) -> PyResult<&'static Arc<dyn Engine>> {
    if let Some(e) = ENGINE.get() {
        return Ok(e);
    }
    let e = py
        .detach(oxmpi::env::init_engine)
        .map_err(|e| PyRuntimeError::new_err(format!("oxmpi: cannot initialise MPI: {e}")))?;
    // Ctrl-C while blocked: look at Python's pending signals now and then.
    e.set_interrupt_check(Box::new(|| {
        Python::attach(|py| py.check_signals()).map_err(from_pyerr)
    }));
    let _ = ENGINE.set(e);
    Ok(ENGINE.get().expect("just set"))
}

pub fn is_initialized() -> bool {
    ENGINE.get().is_some()
}

pub fn is_finalized() -> bool {
    FINALIZED.load(std::sync::atomic::Ordering::SeqCst)
}

pub fn finalize_waits_for_peers() -> bool {
    ENGINE.get().is_some_and(|e| e.finalize_waits_for_peers())
}

pub fn finalize(py: Python<'_>) -> PyResult<()> {
    if let Some(e) = ENGINE.get() {
        if !FINALIZED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            py.detach(|| e.finalize()).map_err(to_pyerr)?;
        }
    }
    Ok(())
}

/// Runs a call that may block with the GIL released, converting its error.
#[inline]
pub fn blocking<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce() -> oxmpi::Result<T> + Send,
    T: Send,
{
    py.detach(f).map_err(to_pyerr)
}
