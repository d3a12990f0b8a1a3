//! `MPI.Message` (MPI-4.1 §3.8.2): a message taken off the matching queue
//! by a matched probe, received only through it. `MESSAGE_NULL` names no
//! message; `MESSAGE_NO_PROC` is the message of a probe on PROC_NULL,
//! which receives nothing, any number of times.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::PyType;

use oxmpi::backend::{CommRef, Message, Status, ANY_SOURCE, ANY_TAG, PROC_NULL};
use oxmpi::error::class;

use crate::buffer;
use crate::comm::PyComm;
use crate::engine::blocking;
use crate::errors::{mpi_error, IntoPy};
use crate::request::{unpickle_owned, Payload, PyRequest};
use crate::status::PyStatus;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A matched message not yet received, shared by the Python objects that
/// name it.
pub struct Matched {
    id: u64,
    msg: Mutex<Option<Box<dyn Message>>>,
}

static MATCHED: Mutex<Option<HashMap<u64, Weak<Matched>>>> = Mutex::new(None);
/// Handle values: 0 is MESSAGE_NULL, 1 MESSAGE_NO_PROC, then matched
/// messages.
static NEXT_ID: AtomicU64 = AtomicU64::new(2);
const HANDLE_NULL: u64 = 0;
const HANDLE_NO_PROC: u64 = 1;

impl Matched {
    fn new(msg: Box<dyn Message>) -> Arc<Matched> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let m = Arc::new(Matched {
            id,
            msg: Mutex::new(Some(msg)),
        });
        lock(&MATCHED)
            .get_or_insert_with(HashMap::new)
            .insert(id, Arc::downgrade(&m));
        m
    }
}

impl Drop for Matched {
    fn drop(&mut self) {
        if let Some(map) = lock(&MATCHED).as_mut() {
            map.remove(&self.id);
        }
    }
}

#[derive(Clone)]
enum Handle {
    Null,
    NoProc,
    Matched(Arc<Matched>),
}

impl Handle {
    fn id(&self) -> u64 {
        match self {
            Handle::Null => HANDLE_NULL,
            Handle::NoProc => HANDLE_NO_PROC,
            Handle::Matched(m) => m.id,
        }
    }
}

/// A matched message (`MPI.Message`).
#[pyclass(module = "oxmpi.MPI", name = "Message", subclass, weakref, frozen)]
pub struct PyMessage {
    handle: Mutex<Handle>,
    /// MESSAGE_NULL or MESSAGE_NO_PROC itself: never changed by a receive.
    constant: bool,
}

/// What a receive takes from a message object.
enum Taken {
    NoProc,
    Msg(Box<dyn Message>),
}

impl PyMessage {
    fn new(handle: Handle) -> PyMessage {
        PyMessage {
            handle: Mutex::new(handle),
            constant: false,
        }
    }

    pub fn null_constant() -> PyMessage {
        PyMessage {
            handle: Mutex::new(Handle::Null),
            constant: true,
        }
    }

    pub fn no_proc_constant() -> PyMessage {
        PyMessage {
            handle: Mutex::new(Handle::NoProc),
            constant: true,
        }
    }

    fn of(msg: Box<dyn Message>, st: &Status) -> PyMessage {
        if st.source == PROC_NULL {
            return PyMessage::new(Handle::NoProc);
        }
        PyMessage::new(Handle::Matched(Matched::new(msg)))
    }

    fn shared(&self) -> Handle {
        lock(&self.handle).clone()
    }

    /// Takes the message for a receive; this object becomes MESSAGE_NULL
    /// (the constants stay what they are).
    fn take(&self, py: Python<'_>) -> PyResult<Taken> {
        let h = self.shared();
        let taken = match &h {
            Handle::Null => {
                return Err(mpi_error(
                    py,
                    class::ERR_REQUEST,
                    "invalid message: cannot receive MESSAGE_NULL",
                ))
            }
            Handle::NoProc => Taken::NoProc,
            Handle::Matched(m) => match lock(&m.msg).take() {
                Some(msg) => Taken::Msg(msg),
                None => {
                    return Err(mpi_error(
                        py,
                        class::ERR_REQUEST,
                        "invalid message: it was already received",
                    ))
                }
            },
        };
        if !self.constant {
            *lock(&self.handle) = Handle::Null;
        }
        Ok(taken)
    }
}

/// MPI_Mprobe on `comm` (GIL released while waiting).
pub fn mprobe(
    py: Python<'_>,
    comm: &CommRef,
    source: i32,
    tag: i32,
    status: Option<&Bound<'_, PyStatus>>,
) -> PyResult<PyMessage> {
    let c = comm.clone();
    let (msg, st) = match c.improbe(source, tag).py()? {
        Some(found) => found,
        None => blocking(py, move || c.mprobe(source, tag))?,
    };
    PyStatus::fill(status, st);
    Ok(PyMessage::of(msg, &st))
}

/// MPI_Improbe on `comm`: None if no message matches now.
pub fn improbe(
    comm: &CommRef,
    source: i32,
    tag: i32,
    status: Option<&Bound<'_, PyStatus>>,
) -> PyResult<Option<PyMessage>> {
    Ok(comm.improbe(source, tag).py()?.map(|(msg, st)| {
        PyStatus::fill(status, st);
        PyMessage::of(msg, &st)
    }))
}

#[pymethods]
impl PyMessage {
    #[new]
    #[pyo3(signature = (message=None))]
    fn py_new(message: Option<&Bound<'_, PyMessage>>) -> PyMessage {
        PyMessage::new(message.map_or(Handle::Null, |m| m.get().shared()))
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(o) = other.cast::<PyMessage>() else {
            return Ok(py.NotImplemented());
        };
        let eq = self.shared().id() == o.get().shared().id();
        let r = match op {
            CompareOp::Eq => eq,
            CompareOp::Ne => !eq,
            _ => return Err(PyTypeError::new_err("unorderable type 'oxmpi.MPI.Message'")),
        };
        Ok(r.into_pyobject(py)?.to_owned().into_any().unbind())
    }

    fn __bool__(&self) -> bool {
        !matches!(self.shared(), Handle::Null)
    }

    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let name = match slf.get().shared() {
            Handle::Null => "MESSAGE_NULL",
            Handle::NoProc => "MESSAGE_NO_PROC",
            Handle::Matched(_) => {
                return Err(PyValueError::new_err(format!(
                    "cannot serialize '{}' instance",
                    slf.get_type().name()?
                )))
            }
        };
        if slf.get().constant {
            return Ok(name.into_pyobject(py)?.into_any().unbind());
        }
        let newobj = py.import("copyreg")?.getattr("__newobj__")?;
        let constant = py.import("oxmpi.MPI")?.getattr(name)?;
        Ok((newobj, (slf.get_type(), constant))
            .into_pyobject(py)?
            .into_any()
            .unbind())
    }

    #[getter(handle)]
    fn handle_id(&self) -> u64 {
        self.shared().id()
    }

    #[classmethod]
    fn fromhandle(_cls: &Bound<'_, PyType>, handle: u64) -> PyResult<PyMessage> {
        let h = match handle {
            HANDLE_NULL => Handle::Null,
            HANDLE_NO_PROC => Handle::NoProc,
            id => Handle::Matched(
                lock(&MATCHED)
                    .as_ref()
                    .and_then(|m| m.get(&id))
                    .and_then(Weak::upgrade)
                    .ok_or_else(|| {
                        PyValueError::new_err(format!("no message has handle {id} in this process"))
                    })?,
            ),
        };
        Ok(PyMessage::new(h))
    }

    fn toint(&self) -> u64 {
        self.shared().id()
    }

    #[classmethod]
    fn fromint(cls: &Bound<'_, PyType>, arg: u64) -> PyResult<PyMessage> {
        Self::fromhandle(cls, arg)
    }

    fn py2f(&self) -> u64 {
        self.shared().id()
    }

    #[classmethod]
    fn f2py(cls: &Bound<'_, PyType>, arg: u64) -> PyResult<PyMessage> {
        Self::fromhandle(cls, arg)
    }

    /// A matched message is freed by receiving it: this does nothing to
    /// one, nor to the constants; another object naming MESSAGE_NO_PROC
    /// becomes MESSAGE_NULL.
    fn free(&self) {
        let mut h = lock(&self.handle);
        if !self.constant && matches!(*h, Handle::NoProc) {
            *h = Handle::Null;
        }
    }

    // ------------------------------------------------- matching probes

    #[classmethod]
    #[pyo3(signature = (comm, source=ANY_SOURCE, tag=ANY_TAG, status=None))]
    fn Probe(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        comm: &Bound<'_, PyComm>,
        source: i32,
        tag: i32,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<PyMessage> {
        mprobe(py, comm.borrow().c()?, source, tag, status)
    }

    #[classmethod]
    #[pyo3(signature = (comm, source=ANY_SOURCE, tag=ANY_TAG, status=None))]
    fn Iprobe(
        _cls: &Bound<'_, PyType>,
        comm: &Bound<'_, PyComm>,
        source: i32,
        tag: i32,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<Option<PyMessage>> {
        improbe(comm.borrow().c()?, source, tag, status)
    }

    #[classmethod]
    #[pyo3(signature = (comm, source=ANY_SOURCE, tag=ANY_TAG, status=None))]
    fn probe(
        cls: &Bound<'_, PyType>,
        py: Python<'_>,
        comm: &Bound<'_, PyComm>,
        source: i32,
        tag: i32,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<PyMessage> {
        Self::Probe(cls, py, comm, source, tag, status)
    }

    #[classmethod]
    #[pyo3(signature = (comm, source=ANY_SOURCE, tag=ANY_TAG, status=None))]
    fn iprobe(
        cls: &Bound<'_, PyType>,
        comm: &Bound<'_, PyComm>,
        source: i32,
        tag: i32,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<Option<PyMessage>> {
        Self::Iprobe(cls, comm, source, tag, status)
    }

    // ------------------------------------------------ matched receives

    /// MPI_Mrecv into a buffer.
    #[pyo3(signature = (buf, status=None))]
    fn Recv(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<()> {
        let source = match self.shared() {
            Handle::NoProc => PROC_NULL,
            _ => ANY_SOURCE,
        };
        let m = buffer::parse_p2p(buf, true, source)?;
        let st = match self.take(py)? {
            Taken::NoProc => Status::proc_null(),
            Taken::Msg(msg) => {
                let raw = m.raw;
                blocking(py, move || msg.recv(raw))?
            }
        };
        PyStatus::fill(status, st);
        Ok(())
    }

    /// MPI_Imrecv into a buffer.
    fn Irecv(&self, py: Python<'_>, buf: &Bound<'_, PyAny>) -> PyResult<PyRequest> {
        let source = match self.shared() {
            Handle::NoProc => PROC_NULL,
            _ => ANY_SOURCE,
        };
        let m = buffer::parse_p2p(buf, true, source)?;
        let req = match self.take(py)? {
            Taken::NoProc => {
                return Ok(PyRequest::new(
                    Arc::new(crate::request::AllOf::proc_null()),
                    Payload::None,
                ))
            }
            Taken::Msg(msg) => msg.irecv(m.raw).py()?,
        };
        Ok(PyRequest::new(req, Payload::Buffer(m)))
    }

    /// Receives the (pickled) object.
    #[pyo3(signature = (status=None))]
    fn recv(&self, py: Python<'_>, status: Option<&Bound<'_, PyStatus>>) -> PyResult<Py<PyAny>> {
        match self.take(py)? {
            Taken::NoProc => {
                PyStatus::fill(status, Status::proc_null());
                Ok(py.None())
            }
            Taken::Msg(msg) => {
                let req = msg.irecv_owned().py()?;
                let r = req.clone();
                let st = blocking(py, move || r.wait())?;
                PyStatus::fill(status, st);
                Ok(unpickle_owned(py, req.take_data(), &st)?.unbind())
            }
        }
    }

    /// Starts receiving the (pickled) object; the request's `wait` returns it.
    fn irecv(&self, py: Python<'_>) -> PyResult<PyRequest> {
        match self.take(py)? {
            Taken::NoProc => Ok(PyRequest::obj_recv(Arc::new(
                crate::request::AllOf::proc_null(),
            ))),
            Taken::Msg(msg) => Ok(PyRequest::obj_recv(msg.irecv_owned().py()?)),
        }
    }

    fn __repr__(&self) -> String {
        match self.shared() {
            Handle::Null => "<oxmpi.MPI.Message MESSAGE_NULL>".into(),
            Handle::NoProc => "<oxmpi.MPI.Message MESSAGE_NO_PROC>".into(),
            Handle::Matched(m) => format!("<oxmpi.MPI.Message handle={}>", m.id),
        }
    }
}

// ----------------------------------------------- Comm matching probes

#[pymethods]
impl PyComm {
    #[pyo3(signature = (source=ANY_SOURCE, tag=ANY_TAG, status=None))]
    fn Mprobe(
        &self,
        py: Python<'_>,
        source: i32,
        tag: i32,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<PyMessage> {
        mprobe(py, self.c()?, source, tag, status)
    }

    #[pyo3(signature = (source=ANY_SOURCE, tag=ANY_TAG, status=None))]
    fn Improbe(
        &self,
        source: i32,
        tag: i32,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<Option<PyMessage>> {
        improbe(self.c()?, source, tag, status)
    }

    #[pyo3(signature = (source=ANY_SOURCE, tag=ANY_TAG, status=None))]
    fn mprobe(
        &self,
        py: Python<'_>,
        source: i32,
        tag: i32,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<PyMessage> {
        mprobe(py, self.c()?, source, tag, status)
    }

    #[pyo3(signature = (source=ANY_SOURCE, tag=ANY_TAG, status=None))]
    fn improbe(
        &self,
        source: i32,
        tag: i32,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<Option<PyMessage>> {
        improbe(self.c()?, source, tag, status)
    }
}
