//! `MPI.Comm` and `MPI.Intracomm`: point-to-point and collective calls in
//! both flavours (lowercase: pickled objects; uppercase: buffers).
//!
//! Each method: parse the arguments, make one runtime call (with the GIL
//! released if it can block), convert the result.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::PyClassInitializer;

use oxmpi::backend::{CommRef, RawBuf, RequestRef, SendMode, Status};

use crate::engine::blocking;
use crate::errors::{mpi_error, IntoPy};

/// `MPI.IN_PLACE`.
#[pyclass(module = "oxmpi.MPI", name = "InPlaceType", frozen)]
pub struct InPlace;

#[pymethods]
impl InPlace {
    fn __repr__(&self) -> &'static str {
        "IN_PLACE"
    }
}

pub(crate) fn is_in_place(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_instance_of::<InPlace>()
}

/// A communicator (COMM_NULL when `inner` is None).
#[pyclass(module = "oxmpi.MPI", name = "Comm", subclass)]
pub struct PyComm {
    pub inner: Option<CommRef>,
}

/// An intracommunicator.
#[pyclass(module = "oxmpi.MPI", name = "Intracomm", extends = PyComm, subclass)]
pub struct PyIntracomm;

/// Wraps a runtime communicator as an `Intracomm`.
pub fn new_intracomm(py: Python<'_>, c: CommRef) -> PyResult<Py<PyIntracomm>> {
    Py::new(
        py,
        PyClassInitializer::from(PyComm { inner: Some(c) }).add_subclass(PyIntracomm),
    )
}

#[pymethods]
impl PyIntracomm {
    #[new]
    #[pyo3(signature = (comm=None))]
    fn new(comm: Option<&Bound<'_, PyComm>>) -> (PyIntracomm, PyComm) {
        let inner = comm.and_then(|c| c.borrow().inner.clone());
        (PyIntracomm, PyComm { inner })
    }
}

impl PyComm {
    pub(crate) fn c(&self) -> PyResult<&CommRef> {
        self.inner.as_ref().ok_or_else(|| {
            Python::attach(|py| {
                mpi_error(
                    py,
                    oxmpi::error::class::ERR_COMM,
                    "invalid communicator: COMM_NULL",
                )
            })
        })
    }
}

/// Sends parts, waiting (GIL released) only if the send cannot complete at
/// once.
pub(crate) fn send_parts(
    py: Python<'_>,
    c: &CommRef,
    parts: &[RawBuf],
    dest: i32,
    tag: i32,
    mode: SendMode,
) -> PyResult<()> {
    let req = c.isend(parts, dest, tag, mode).py()?;
    if !req.is_complete() {
        blocking(py, move || req.wait())?;
    }
    Ok(())
}

/// Waits for a request (GIL released unless already complete).
pub(crate) fn wait_req(py: Python<'_>, req: RequestRef) -> PyResult<Status> {
    if req.is_complete() {
        return req.wait().py();
    }
    blocking(py, move || req.wait())
}

#[pymethods]
impl PyComm {
    #[new]
    #[pyo3(signature = (comm=None))]
    fn new(comm: Option<&Bound<'_, PyComm>>) -> PyComm {
        PyComm {
            inner: comm.and_then(|c| c.borrow().inner.clone()),
        }
    }

    // ------------------------------------------------------------ queries

    fn Get_rank(&self) -> PyResult<i32> {
        Ok(self.c()?.rank())
    }

    fn Get_size(&self) -> PyResult<i32> {
        Ok(self.c()?.size())
    }

    #[getter]
    fn rank(&self) -> PyResult<i32> {
        self.Get_rank()
    }

    #[getter]
    fn size(&self) -> PyResult<i32> {
        self.Get_size()
    }

    fn Get_name(&self) -> PyResult<String> {
        Ok(self
            .inner
            .as_ref()
            .map(|c| c.name())
            .unwrap_or_else(|| "MPI_COMM_NULL".into()))
    }

    fn Set_name(&self, name: &str) -> PyResult<()> {
        self.c()?.set_name(name);
        Ok(())
    }

    #[getter(name)]
    fn name_prop(&self) -> PyResult<String> {
        self.Get_name()
    }

    #[setter(name)]
    fn set_name_prop(&self, name: &str) -> PyResult<()> {
        self.Set_name(name)
    }

    fn Is_inter(&self) -> PyResult<bool> {
        self.c()?;
        Ok(false)
    }

    fn Is_intra(&self) -> PyResult<bool> {
        self.c()?;
        Ok(true)
    }

    #[getter]
    fn is_inter(&self) -> PyResult<bool> {
        self.Is_inter()
    }

    #[getter]
    fn is_intra(&self) -> PyResult<bool> {
        self.Is_intra()
    }

    fn __bool__(&self) -> bool {
        self.inner.is_some()
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<PyComm>() {
            Ok(o) => match (&self.inner, &o.borrow().inner) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            },
            Err(_) => false,
        }
    }

    fn __hash__(&self) -> usize {
        self.inner
            .as_ref()
            .map_or(0, |c| Arc::as_ptr(c) as *const () as usize)
    }

    // ------------------------------------------------- communicator mgmt

    fn Dup(&self, py: Python<'_>) -> PyResult<Py<PyIntracomm>> {
        let c = self.c()?.clone();
        let d = blocking(py, move || c.dup())?;
        new_intracomm(py, d)
    }

    fn Clone(&self, py: Python<'_>) -> PyResult<Py<PyIntracomm>> {
        self.Dup(py)
    }

    #[pyo3(signature = (color=0, key=0))]
    fn Split(&self, py: Python<'_>, color: i32, key: i32) -> PyResult<Py<PyAny>> {
        let c = self.c()?.clone();
        match blocking(py, move || c.split(color, key))? {
            Some(s) => Ok(new_intracomm(py, s)?.into_any()),
            None => Ok(Py::new(py, PyComm { inner: None })?.into_any()),
        }
    }

    fn Free(&mut self) -> PyResult<()> {
        self.c()?;
        self.inner = None;
        Ok(())
    }

    #[pyo3(signature = (errorcode=0))]
    fn Abort(&self, py: Python<'_>, errorcode: i32) -> PyResult<()> {
        let c = self.c()?.clone();
        // Flush Python's buffered output so the user's last words survive.
        let _ = py.run(
            c"import sys; sys.stdout.flush(); sys.stderr.flush()",
            None,
            None,
        );
        py.detach(move || c.abort(errorcode))
    }
}
