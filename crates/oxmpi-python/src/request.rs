//! `MPI.Request`: nonblocking operations, their completion calls, and the
//! buffers they keep alive.

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyList};

use oxmpi::backend::{CommRef, Message, RawBuf, RequestRef, Status};

use crate::buffer::Msg;
use crate::engine::{blocking, engine};
use crate::errors::IntoPy;
use crate::pickle::{self, Pickled};
use crate::status::PyStatus;

/// What a request keeps alive or still has to do.
pub enum Payload {
    None,
    /// A user buffer pinned until completion.
    Buffer(Msg),
    /// A pickled object being sent.
    Pickled(Pickled),
    /// An object receive of any size: matched when completed.
    ObjRecv { comm: CommRef, source: i32, tag: i32 },
}

/// A nonblocking operation.
#[pyclass(module = "oxmpi.MPI", name = "Request", subclass)]
pub struct PyRequest {
    req: Option<RequestRef>,
    payload: Payload,
    status: Status,
    /// The object an object receive produced.
    obj: Option<Py<PyAny>>,
}

impl PyRequest {
    pub fn new(req: RequestRef, payload: Payload) -> PyRequest {
        PyRequest {
            req: Some(req),
            payload,
            status: Status::default(),
            obj: None,
        }
    }

    pub fn obj_recv(comm: CommRef, source: i32, tag: i32) -> PyRequest {
        PyRequest {
            req: None,
            payload: Payload::ObjRecv { comm, source, tag },
            status: Status::default(),
            obj: None,
        }
    }

    fn null() -> PyRequest {
        PyRequest {
            req: None,
            payload: Payload::None,
            status: Status::proc_null(),
            obj: None,
        }
    }

    fn active(&self) -> bool {
        self.req.is_some() || matches!(self.payload, Payload::ObjRecv { .. })
    }

    fn finish(&mut self, st: Status) {
        self.status = st;
        self.req = None;
        if !matches!(self.payload, Payload::None) {
            self.payload = Payload::None;
        }
    }

    /// Completes without blocking if possible; true when complete.
    fn poll(&mut self, py: Python<'_>) -> PyResult<bool> {
        if let Some(r) = &self.req {
            return match r.test().py()? {
                Some(st) => {
                    self.finish(st);
                    Ok(true)
                }
                None => Ok(false),
            };
        }
        if let Payload::ObjRecv { comm, source, tag } = &self.payload {
            return match comm.improbe(*source, *tag).py()? {
                Some((msg, st)) => {
                    let obj = recv_object(py, msg, st)?;
                    self.obj = Some(obj.0.unbind());
                    self.finish(obj.1);
                    Ok(true)
                }
                None => Ok(false),
            };
        }
        Ok(true)
    }

    /// Completes, blocking with the GIL released.
    fn complete(&mut self, py: Python<'_>) -> PyResult<()> {
        if let Some(r) = self.req.clone() {
            let st = blocking(py, move || r.wait())?;
            self.finish(st);
            return Ok(());
        }
        if let Payload::ObjRecv { comm, source, tag } = &self.payload {
            let (comm, source, tag) = (comm.clone(), *source, *tag);
            let (msg, st) = blocking(py, move || comm.mprobe(source, tag))?;
            let (obj, st) = recv_object(py, msg, st)?;
            self.obj = Some(obj.unbind());
            self.finish(st);
        }
        Ok(())
    }

    /// Whether it is complete (or, for object receives, could complete now),
    /// without touching Python.
    fn ready(&self) -> bool {
        match (&self.req, &self.payload) {
            (Some(r), _) => r.is_complete(),
            (None, Payload::ObjRecv { comm, source, tag }) => {
                matches!(comm.iprobe(*source, *tag), Ok(Some(_)))
            }
            _ => true,
        }
    }

    fn take_obj(&mut self, py: Python<'_>) -> Py<PyAny> {
        self.obj.take().unwrap_or_else(|| py.None())
    }
}

/// Receives a matched message and unpickles it.
pub fn recv_object<'py>(
    py: Python<'py>,
    msg: Box<dyn Message>,
    st: Status,
) -> PyResult<(Bound<'py, PyAny>, Status)> {
    if st.source == oxmpi::backend::PROC_NULL {
        msg.recv(RawBuf::EMPTY).py()?;
        return Ok((py.None().into_bound(py), st));
    }
    let n = st.count;
    let ba = PyByteArray::new_with(py, n, |_| Ok(()))?;
    let raw = RawBuf {
        ptr: ba.data(),
        len: n,
    };
    // Large messages may wait on the sender: release the GIL. Nobody else
    // can reach the bytearray yet, so it cannot be resized meanwhile.
    let st = if n > 65536 {
        blocking(py, move || msg.recv(raw))?
    } else {
        msg.recv(raw).py()?
    };
    // SAFETY: GIL held, bytearray not resized while the slice is used.
    let data = unsafe { ba.as_bytes() };
    let obj = pickle::loads(py, ba.as_any(), data)?;
    Ok((obj, st))
}

fn fill_statuses(statuses: Option<&Bound<'_, PyList>>, sts: &[Status]) -> PyResult<()> {
    if let Some(l) = statuses {
        for (i, st) in sts.iter().enumerate() {
            if i < l.len() {
                let item = l.get_item(i)?;
                if let Ok(s) = item.cast::<PyStatus>() {
                    s.borrow_mut().st = *st;
                    continue;
                }
                l.set_item(i, Py::new(l.py(), PyStatus { st: *st })?)?;
            } else {
                l.append(Py::new(l.py(), PyStatus { st: *st })?)?;
            }
        }
    }
    Ok(())
}

fn borrow_all<'py>(reqs: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyRequest>>> {
    reqs.try_iter()?
        .map(|r| Ok(r?.cast_into::<PyRequest>()?))
        .collect()
}

/// Blocks until one of `reqs` is complete; returns its index or None if
/// none is active.
fn wait_any(py: Python<'_>, reqs: &[Bound<'_, PyRequest>]) -> PyResult<Option<usize>> {
    loop {
        let mut any_active = false;
        for (i, r) in reqs.iter().enumerate() {
            let mut r = r.borrow_mut();
            if !r.active() {
                continue;
            }
            any_active = true;
            if r.poll(py)? {
                return Ok(Some(i));
            }
        }
        if !any_active {
            return Ok(None);
        }
        // Sleep until one could complete, with the GIL released.
        let probes: Vec<_> = reqs
            .iter()
            .map(|r| {
                let r = r.borrow();
                (
                    r.req.clone(),
                    match &r.payload {
                        Payload::ObjRecv { comm, source, tag } => Some((comm.clone(), *source, *tag)),
                        _ => None,
                    },
                )
            })
            .collect();
        let eng = engine(py)?;
        blocking(py, || {
            eng.progress_until(&mut || {
                probes.iter().any(|(req, probe)| match (req, probe) {
                    (Some(r), _) => r.is_complete(),
                    (None, Some((c, s, t))) => matches!(c.iprobe(*s, *t), Ok(Some(_))),
                    _ => false,
                })
            })
        })?;
    }
}

#[pymethods]
impl PyRequest {
    #[new]
    #[pyo3(signature = (request=None))]
    fn py_new(request: Option<&Bound<'_, PyRequest>>) -> PyRequest {
        match request {
            Some(r) => {
                let r = r.borrow();
                PyRequest {
                    req: r.req.clone(),
                    payload: Payload::None,
                    status: r.status,
                    obj: None,
                }
            }
            None => PyRequest::null(),
        }
    }

    #[pyo3(signature = (status=None))]
    fn Wait(&mut self, py: Python<'_>, status: Option<&Bound<'_, PyStatus>>) -> PyResult<bool> {
        self.complete(py)?;
        PyStatus::fill(status, self.status);
        Ok(true)
    }

    #[pyo3(signature = (status=None))]
    fn Test(&mut self, py: Python<'_>, status: Option<&Bound<'_, PyStatus>>) -> PyResult<bool> {
        let done = self.poll(py)?;
        if done {
            PyStatus::fill(status, self.status);
        }
        Ok(done)
    }

    #[pyo3(signature = (status=None))]
    fn wait(&mut self, py: Python<'_>, status: Option<&Bound<'_, PyStatus>>) -> PyResult<Py<PyAny>> {
        self.complete(py)?;
        PyStatus::fill(status, self.status);
        Ok(self.take_obj(py))
    }

    #[pyo3(signature = (status=None))]
    fn test(&mut self, py: Python<'_>, status: Option<&Bound<'_, PyStatus>>) -> PyResult<(bool, Py<PyAny>)> {
        let done = self.poll(py)?;
        if done {
            PyStatus::fill(status, self.status);
            return Ok((true, self.take_obj(py)));
        }
        Ok((false, py.None()))
    }

    #[pyo3(signature = (status=None))]
    fn Get_status(&self, status: Option<&Bound<'_, PyStatus>>) -> bool {
        let done = !self.active() || self.ready();
        if done && !self.active() {
            PyStatus::fill(status, self.status);
        }
        done
    }

    fn Cancel(&self) -> PyResult<()> {
        if let Some(r) = &self.req {
            r.cancel().py()?;
        }
        Ok(())
    }

    fn cancel(&self) -> PyResult<()> {
        self.Cancel()
    }

    fn Free(&mut self) {
        self.req = None;
        self.payload = Payload::None;
    }

    fn __bool__(&self) -> bool {
        self.active()
    }

    #[staticmethod]
    #[pyo3(signature = (requests, statuses=None))]
    fn Waitall(py: Python<'_>, requests: &Bound<'_, PyAny>, statuses: Option<&Bound<'_, PyList>>) -> PyResult<bool> {
        let reqs = borrow_all(requests)?;
        let mut sts = Vec::with_capacity(reqs.len());
        for r in &reqs {
            let mut r = r.borrow_mut();
            r.complete(py)?;
            sts.push(r.status);
        }
        fill_statuses(statuses, &sts)?;
        Ok(true)
    }

    #[staticmethod]
    #[pyo3(signature = (requests, statuses=None))]
    fn waitall(py: Python<'_>, requests: &Bound<'_, PyAny>, statuses: Option<&Bound<'_, PyList>>) -> PyResult<Vec<Py<PyAny>>> {
        let reqs = borrow_all(requests)?;
        let mut sts = Vec::with_capacity(reqs.len());
        let mut objs = Vec::with_capacity(reqs.len());
        for r in &reqs {
            let mut r = r.borrow_mut();
            r.complete(py)?;
            sts.push(r.status);
            objs.push(r.take_obj(py));
        }
        fill_statuses(statuses, &sts)?;
        Ok(objs)
    }

    #[staticmethod]
    #[pyo3(signature = (requests, statuses=None))]
    fn Testall(py: Python<'_>, requests: &Bound<'_, PyAny>, statuses: Option<&Bound<'_, PyList>>) -> PyResult<bool> {
        let reqs = borrow_all(requests)?;
        if !reqs.iter().all(|r| {
            let r = r.borrow();
            !r.active() || r.ready()
        }) {
            engine(py)?.progress();
            if !reqs.iter().all(|r| {
                let r = r.borrow();
                !r.active() || r.ready()
            }) {
                return Ok(false);
            }
        }
        Self::Waitall(py, requests, statuses)
    }

    #[staticmethod]
    #[pyo3(signature = (requests, statuses=None))]
    fn testall(py: Python<'_>, requests: &Bound<'_, PyAny>, statuses: Option<&Bound<'_, PyList>>) -> PyResult<(bool, Option<Vec<Py<PyAny>>>)> {
        if Self::Testall_ready(py, requests)? {
            Ok((true, Some(Self::waitall(py, requests, statuses)?)))
        } else {
            Ok((false, None))
        }
    }

    #[staticmethod]
    #[pyo3(signature = (requests, status=None))]
    fn Waitany(py: Python<'_>, requests: &Bound<'_, PyAny>, status: Option<&Bound<'_, PyStatus>>) -> PyResult<i32> {
        let reqs = borrow_all(requests)?;
        match wait_any(py, &reqs)? {
            Some(i) => {
                PyStatus::fill(status, reqs[i].borrow().status);
                Ok(i as i32)
            }
            None => Ok(oxmpi::backend::UNDEFINED),
        }
    }

    #[staticmethod]
    #[pyo3(signature = (requests, status=None))]
    fn waitany(py: Python<'_>, requests: &Bound<'_, PyAny>, status: Option<&Bound<'_, PyStatus>>) -> PyResult<(i32, Py<PyAny>)> {
        let reqs = borrow_all(requests)?;
        match wait_any(py, &reqs)? {
            Some(i) => {
                let mut r = reqs[i].borrow_mut();
                PyStatus::fill(status, r.status);
                Ok((i as i32, r.take_obj(py)))
            }
            None => Ok((oxmpi::backend::UNDEFINED, py.None())),
        }
    }

    #[staticmethod]
    #[pyo3(signature = (requests, status=None))]
    fn Testany(py: Python<'_>, requests: &Bound<'_, PyAny>, status: Option<&Bound<'_, PyStatus>>) -> PyResult<(i32, bool)> {
        let reqs = borrow_all(requests)?;
        let mut any_active = false;
        for (i, r) in reqs.iter().enumerate() {
            let mut r = r.borrow_mut();
            if r.active() {
                any_active = true;
                if r.poll(py)? {
                    PyStatus::fill(status, r.status);
                    return Ok((i as i32, true));
                }
            }
        }
        Ok((oxmpi::backend::UNDEFINED, !any_active))
    }
}

impl PyRequest {
    #[allow(non_snake_case)]
    fn Testall_ready(py: Python<'_>, requests: &Bound<'_, PyAny>) -> PyResult<bool> {
        let reqs = borrow_all(requests)?;
        engine(py)?.progress();
        Ok(reqs.iter().all(|r| {
            let r = r.borrow();
            !r.active() || r.ready()
        }))
    }
}
