//! `MPI.Request`: nonblocking operations, their completion calls, and the
//! buffers they keep alive.

use pyo3::prelude::*;
use pyo3::types::PyList;

use oxmpi::backend::{CommRef, RequestRef, Status};

use crate::buffer::Msg;
use crate::engine::{blocking, engine};
use crate::errors::IntoPy;
use crate::pickle::{self, Pickled};
use crate::status::PyStatus;

/// What a request keeps alive (held, never read) or still has to do.
#[allow(dead_code)]
pub enum Payload {
    None,
    /// A user buffer pinned until completion.
    Buffer(Msg),
    /// A pickled object being sent.
    Pickled(Pickled),
    /// An object receive: the message is unpickled on completion.
    ObjRecv,
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

    pub fn obj_recv(req: RequestRef) -> PyRequest {
        PyRequest::new(req, Payload::ObjRecv)
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
        self.req.is_some()
    }

    fn finish(&mut self, py: Python<'_>, st: Status) -> PyResult<()> {
        let req = self.req.take();
        self.status = st;
        if let (Payload::ObjRecv, Some(r)) = (&self.payload, req) {
            self.obj = Some(unpickle_owned(py, r.take_data(), &st)?.unbind());
        }
        self.payload = Payload::None;
        Ok(())
    }

    /// Completes without blocking if possible; true when complete.
    fn poll(&mut self, py: Python<'_>) -> PyResult<bool> {
        if let Some(r) = &self.req {
            return match r.test().py()? {
                Some(st) => {
                    self.finish(py, st)?;
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
            let st = if r.is_complete() {
                r.wait().py()?
            } else {
                blocking(py, move || r.wait())?
            };
            self.finish(py, st)?;
        }
        Ok(())
    }

    /// Whether it is complete, without touching Python.
    fn ready(&self) -> bool {
        self.req.as_ref().is_none_or(|r| r.is_complete())
    }

    fn take_obj(&mut self, py: Python<'_>) -> Py<PyAny> {
        self.obj.take().unwrap_or_else(|| py.None())
    }
}

/// A received message owned by Rust, lent to Python through the buffer
/// protocol so that unpickled arrays can view it without a copy.
#[pyclass(module = "oxmpi.MPI", name = "_ReceivedMessage", frozen)]
pub struct ReceivedMessage {
    data: Vec<u8>,
}

#[pymethods]
impl ReceivedMessage {
    /// # Safety
    /// Called by Python with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        let data = &slf.get().data;
        // SAFETY: `view` is valid per the buffer protocol; the data never
        // changes or moves while the object lives, and the view keeps a
        // reference to the object. Writable, as mpi4py's received arrays are.
        let rc = unsafe {
            pyo3::ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                data.as_ptr() as *mut _,
                data.len() as pyo3::ffi::Py_ssize_t,
                0,
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut pyo3::ffi::Py_buffer) {}
}

/// Unpickles the message of a completed owned-buffer receive.
pub fn unpickle_owned<'py>(
    py: Python<'py>,
    data: Option<Vec<u8>>,
    st: &Status,
) -> PyResult<Bound<'py, PyAny>> {
    let data = data.unwrap_or_default();
    // As mpi4py: no message (PROC_NULL, a cancelled receive) or an empty
    // one unpickles to None.
    if st.source == oxmpi::backend::PROC_NULL || st.cancelled || data.is_empty() {
        return Ok(py.None().into_bound(py));
    }
    let holder = Bound::new(py, ReceivedMessage { data })?;
    pickle::loads(py, holder.as_any(), &holder.get().data)
}

/// Receives an object from (source, tag) on `comm`.
pub fn recv_object<'py>(
    py: Python<'py>,
    comm: &CommRef,
    source: i32,
    tag: i32,
) -> PyResult<(Bound<'py, PyAny>, Status)> {
    let req = comm.irecv_owned(source, tag).py()?;
    let st = if req.is_complete() {
        req.wait().py()?
    } else {
        let r = req.clone();
        blocking(py, move || r.wait())?
    };
    Ok((unpickle_owned(py, req.take_data(), &st)?, st))
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
        // Sleep until one completes, with the GIL released.
        let pending: Vec<RequestRef> = reqs.iter().filter_map(|r| r.borrow().req.clone()).collect();
        let eng = engine(py)?;
        blocking(py, || {
            eng.progress_until(&mut || pending.iter().any(|r| r.is_complete()))
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
    fn wait(
        &mut self,
        py: Python<'_>,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<Py<PyAny>> {
        self.complete(py)?;
        PyStatus::fill(status, self.status);
        Ok(self.take_obj(py))
    }

    #[pyo3(signature = (status=None))]
    fn test(
        &mut self,
        py: Python<'_>,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<(bool, Py<PyAny>)> {
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
    fn Waitall(
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        statuses: Option<&Bound<'_, PyList>>,
    ) -> PyResult<bool> {
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
    fn waitall(
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        statuses: Option<&Bound<'_, PyList>>,
    ) -> PyResult<Vec<Py<PyAny>>> {
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
    fn Testall(
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        statuses: Option<&Bound<'_, PyList>>,
    ) -> PyResult<bool> {
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
    fn testall(
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        statuses: Option<&Bound<'_, PyList>>,
    ) -> PyResult<(bool, Option<Vec<Py<PyAny>>>)> {
        if Self::Testall_ready(py, requests)? {
            Ok((true, Some(Self::waitall(py, requests, statuses)?)))
        } else {
            Ok((false, None))
        }
    }

    #[staticmethod]
    #[pyo3(signature = (requests, status=None))]
    fn Waitany(
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<i32> {
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
    fn waitany(
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<(i32, Py<PyAny>)> {
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
    fn Testany(
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<(i32, bool)> {
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
