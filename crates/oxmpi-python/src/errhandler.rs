//! `MPI.Errhandler` (MPI-4.1 §9.3): what happens when an MPI call on an
//! object fails. A handle's identity is its `Arc`.
//!
//! oxmpi raises `MPI.Exception` from a failing call (mpi4py's default,
//! which sets ERRORS_RETURN on the predefined communicators). The handler
//! attached to a communicator is stored and handed back by
//! Get_errhandler, and `Call_errhandler` runs it: ERRORS_RETURN returns,
//! ERRORS_ARE_FATAL and ERRORS_ABORT abort the job, and a user handler is
//! called with the object and the error code.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use pyo3::prelude::*;

use oxmpi::error::class;

use crate::errors::mpi_error;
use crate::handle;

/// How many user error handlers may exist at once (mpi4py's
/// limit, which its test suite checks).
pub const MAX_USER_ERRHANDLERS: usize = 32;

/// User error handlers alive now.
static LIVE_USER: AtomicUsize = AtomicUsize::new(0);

/// An error handler.
pub enum Errh {
    Return,
    Fatal,
    Abort,
    /// Made by `Comm.Create_errhandler` (the only objects oxmpi has
    /// error handlers for).
    User {
        func: Py<PyAny>,
    },
}

impl Drop for Errh {
    fn drop(&mut self) {
        if let Errh::User { .. } = self {
            LIVE_USER.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn predefined_handles() -> &'static [Arc<Errh>; 3] {
    static P: OnceLock<[Arc<Errh>; 3]> = OnceLock::new();
    P.get_or_init(|| {
        [
            Arc::new(Errh::Return),
            Arc::new(Errh::Fatal),
            Arc::new(Errh::Abort),
        ]
    })
}

/// ERRORS_RETURN.
pub fn errors_return() -> Arc<Errh> {
    predefined_handles()[0].clone()
}

/// An error handler handle (ERRHANDLER_NULL when `h` is None).
#[pyclass(module = "oxmpi.MPI", name = "Errhandler", subclass, weakref)]
pub struct PyErrhandler {
    pub h: Option<Arc<Errh>>,
}

impl PyErrhandler {
    pub fn get(&self) -> PyResult<&Arc<Errh>> {
        self.h.as_ref().ok_or_else(|| {
            Python::attach(|py| {
                mpi_error(py, class::ERR_ARG, "invalid error handler: ERRHANDLER_NULL")
            })
        })
    }

    /// A new user error handler calling `func(obj, errorcode)`.
    pub fn create(func: Py<PyAny>) -> PyResult<PyErrhandler> {
        let live = &LIVE_USER;
        if live.fetch_add(1, Ordering::Relaxed) >= MAX_USER_ERRHANDLERS {
            live.fetch_sub(1, Ordering::Relaxed);
            return Err(Python::attach(|py| {
                mpi_error(
                    py,
                    class::ERR_OTHER,
                    &format!(
                        "at most {MAX_USER_ERRHANDLERS} user error handlers may exist at once"
                    ),
                )
            }));
        }
        Ok(PyErrhandler {
            h: Some(Arc::new(Errh::User { func })),
        })
    }
}

/// Runs `h` for an error `code` on `obj` (MPI_*_call_errhandler).
pub fn call(py: Python<'_>, h: &Errh, obj: &Bound<'_, PyAny>, code: i32) -> PyResult<()> {
    match h {
        Errh::Return => Ok(()),
        Errh::Fatal | Errh::Abort => {
            let msg = py
                .import("oxmpi.MPI")
                .and_then(|m| m.getattr("Get_error_string")?.call1((code,)))
                .and_then(|s| s.extract::<String>())
                .unwrap_or_default();
            let _ = py.run(
                c"import sys; sys.stdout.flush(); sys.stderr.flush()",
                None,
                None,
            );
            let e = crate::engine::engine(py)?;
            e.abort(
                if code == 0 { 1 } else { code },
                &format!("MPI error handler: error {code}: {msg}"),
            )
        }
        Errh::User { func } => {
            func.call1(py, (obj, code))?;
            Ok(())
        }
    }
}

#[pymethods]
impl PyErrhandler {
    #[new]
    #[pyo3(signature = (errhandler=None))]
    fn new(errhandler: Option<&Bound<'_, PyErrhandler>>) -> PyErrhandler {
        PyErrhandler {
            h: errhandler.and_then(|e| e.borrow().h.clone()),
        }
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: pyo3::basic::CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let me = slf.borrow();
        let same = other
            .cast::<PyErrhandler>()
            .ok()
            .map(|o| handle::same(me.h.as_ref(), o.borrow().h.as_ref()));
        handle::richcmp(slf.as_any(), same, op)
    }

    fn __hash__(&self) -> usize {
        self.h.as_ref().map_or(0, |h| Arc::as_ptr(h) as usize)
    }

    fn __bool__(&self) -> bool {
        self.h.is_some()
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let name = match &slf.borrow().h {
            None => Some("ERRHANDLER_NULL"),
            Some(h) => match **h {
                Errh::Return => Some("ERRORS_RETURN"),
                Errh::Fatal => Some("ERRORS_ARE_FATAL"),
                Errh::Abort => Some("ERRORS_ABORT"),
                Errh::User { .. } => None,
            },
        };
        handle::reduce(slf.as_any(), name)
    }

    /// Releases this handle (a user handler lives on while an object uses
    /// it).
    fn Free(&mut self) -> PyResult<()> {
        self.get()?;
        self.h = None;
        Ok(())
    }

    /// Frees unless a module constant (ERRORS_RETURN, ...).
    fn free(slf: &Bound<'_, Self>) {
        if !crate::handle::is_module_constant(slf.as_any()) {
            slf.borrow_mut().h = None;
        }
    }

    // ------------------------------------------------------------ handles

    /// The integer handle (MPI_Errhandler_toint): stable while the object lives,
    /// 0 for the null handle.
    #[getter(handle)]
    fn int_handle(&self) -> i64 {
        errh_ints().toint(self.h.as_ref())
    }

    #[classmethod]
    fn fromhandle<'py>(
        cls: &Bound<'py, pyo3::types::PyType>,
        handle: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = errh_ints().lookup(handle, "error handler")?;
        crate::handle::rebuild(cls, h.map(|h| PyErrhandler { h: Some(h) }))
    }

    fn toint(&self) -> i64 {
        self.int_handle()
    }

    #[classmethod]
    fn fromint<'py>(
        cls: &Bound<'py, pyo3::types::PyType>,
        arg: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::fromhandle(cls, arg)
    }

    fn py2f(&self) -> i64 {
        self.int_handle()
    }

    #[classmethod]
    fn f2py<'py>(cls: &Bound<'py, pyo3::types::PyType>, arg: i64) -> PyResult<Bound<'py, PyAny>> {
        Self::fromhandle(cls, arg)
    }
}

/// ERRHANDLER_NULL, ERRORS_RETURN, ERRORS_ARE_FATAL, ERRORS_ABORT.
pub fn predefined(py: Python<'_>) -> PyResult<Vec<(&'static str, Py<PyErrhandler>)>> {
    let [ret, fatal, abort] = predefined_handles().clone();
    Ok(vec![
        ("ERRHANDLER_NULL", Py::new(py, PyErrhandler { h: None })?),
        ("ERRORS_RETURN", Py::new(py, PyErrhandler { h: Some(ret) })?),
        (
            "ERRORS_ARE_FATAL",
            Py::new(py, PyErrhandler { h: Some(fatal) })?,
        ),
        (
            "ERRORS_ABORT",
            Py::new(py, PyErrhandler { h: Some(abort) })?,
        ),
    ])
}

/// Integer handles of error handlers.
fn errh_ints() -> &'static crate::handle::IntHandles<Errh> {
    static INTS: OnceLock<crate::handle::IntHandles<Errh>> = OnceLock::new();
    INTS.get_or_init(Default::default)
}
