//! The one bridge from runtime errors to Python exceptions.
//!
//! MPI failures become `oxmpi.MPI.Exception` carrying their error class;
//! features oxmpi lacks become `NotImplementedError` (as in mpi4py when the
//! MPI library lacks a call); an exception raised by user code inside a
//! callback travels back unchanged.

use pyo3::exceptions::{PyNotImplementedError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use oxmpi::Error;

static MPI_EXCEPTION: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `oxmpi.MPI.Exception`, defined in Python so that it can subclass
/// `RuntimeError` with mpi4py's methods.
fn mpi_exception(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    MPI_EXCEPTION
        .get_or_try_init(py, || {
            let t = py.import("oxmpi.MPI")?.getattr("Exception")?;
            Ok::<_, PyErr>(t.cast_into::<PyType>()?.unbind())
        })
        .map(|t| t.bind(py))
}

/// Builds `MPI.Exception(error_class, message)`.
pub fn mpi_error(py: Python<'_>, class: i32, msg: &str) -> PyErr {
    match mpi_exception(py).and_then(|t| t.call1((class, msg))) {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

/// Converts a runtime error into the Python exception users should see.
pub fn to_pyerr(e: Error) -> PyErr {
    match e {
        Error::Callback(payload) => match payload.downcast::<PyErr>() {
            Ok(err) => *err,
            Err(_) => PyRuntimeError::new_err("error in a callback"),
        },
        Error::NotImplemented(what) => PyNotImplementedError::new_err(what),
        other => Python::attach(|py| mpi_error(py, other.class(), &other.to_string())),
    }
}

/// Wraps a Python error so that it can cross the runtime and come back out
/// unchanged through `to_pyerr`.
pub fn from_pyerr(e: PyErr) -> Error {
    Error::Callback(Box::new(e))
}

/// Extension for `oxmpi::Result` → `PyResult`.
pub trait IntoPy<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for oxmpi::Result<T> {
    #[inline]
    fn py(self) -> PyResult<T> {
        self.map_err(to_pyerr)
    }
}
