//! `MPI.Comm` and `MPI.Intracomm`: point-to-point and collective calls in
//! both flavours (lowercase: pickled objects; uppercase: buffers).
//!
//! Each method: parse the arguments, make one runtime call (with the GIL
//! released if it can block), convert the result.

use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3::PyClassInitializer;

use oxmpi::backend::{CommRef, RawBuf, RequestRef, SendMode, Status, ANY_SOURCE, ANY_TAG};

use crate::buffer::{self, Msg};
use crate::engine::blocking;
use crate::errors::{from_pyerr, mpi_error, IntoPy};
use crate::op::{self, PyOp};
use crate::pickle;
use crate::request::{recv_object, Payload, PyRequest};
use crate::status::PyStatus;

/// `MPI.IN_PLACE`.
#[pyclass(module = "oxmpi.MPI", name = "InPlaceType", frozen)]
pub struct InPlace;

#[pymethods]
impl InPlace {
    fn __repr__(&self) -> &'static str {
        "IN_PLACE"
    }
}

fn is_in_place(obj: &Bound<'_, PyAny>) -> bool {
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
    fn c(&self) -> PyResult<&CommRef> {
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
fn send_parts(py: Python<'_>, c: &CommRef, parts: &[RawBuf], dest: i32, tag: i32, mode: SendMode) -> PyResult<()> {
    let req = c.isend(parts, dest, tag, mode).py()?;
    if !req.is_complete() {
        blocking(py, move || req.wait())?;
    }
    Ok(())
}

/// Waits for a request (GIL released unless already complete).
fn wait_req(py: Python<'_>, req: RequestRef) -> PyResult<Status> {
    if req.is_complete() {
        return req.wait().py();
    }
    blocking(py, move || req.wait())
}

fn recv_buf_parse<'py>(buf: &Bound<'py, PyAny>) -> PyResult<Msg> {
    buffer::parse(buf, true)
}

/// Splits `n` bytes into `parts` equal chunks.
fn chunk_len(total: usize, parts: usize, what: &str) -> PyResult<usize> {
    if parts == 0 || total % parts != 0 {
        return Err(PyValueError::new_err(format!(
            "{what}: buffer of {total} bytes does not split into {parts} equal blocks"
        )));
    }
    Ok(total / parts)
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
        let _ = py.run(c"import sys; sys.stdout.flush(); sys.stderr.flush()", None, None);
        py.detach(move || c.abort(errorcode))
    }

    // --------------------------------------------- point-to-point (objects)

    #[pyo3(signature = (obj, dest, tag=0))]
    fn send(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<()> {
        let c = self.c()?;
        let p = pickle::dumps(py, obj)?;
        send_parts(py, c, &p.parts, dest, tag, SendMode::Standard)
    }

    #[pyo3(signature = (obj, dest, tag=0))]
    fn ssend(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<()> {
        let c = self.c()?;
        let p = pickle::dumps(py, obj)?;
        send_parts(py, c, &p.parts, dest, tag, SendMode::Synchronous)
    }

    #[pyo3(signature = (buf=None, source=ANY_SOURCE, tag=ANY_TAG, status=None))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        buf: Option<&Bound<'py, PyAny>>,
        source: i32,
        tag: i32,
        status: Option<&Bound<'py, PyStatus>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = buf; // Messages of any size arrive; no preallocated buffer is needed.
        let (obj, st) = recv_object(py, self.c()?, source, tag)?;
        PyStatus::fill(status, st);
        Ok(obj)
    }

    #[pyo3(signature = (sendobj, dest, sendtag=0, recvbuf=None, source=ANY_SOURCE, recvtag=ANY_TAG, status=None))]
    #[allow(clippy::too_many_arguments)]
    fn sendrecv<'py>(
        &self,
        py: Python<'py>,
        sendobj: &Bound<'py, PyAny>,
        dest: i32,
        sendtag: i32,
        recvbuf: Option<&Bound<'py, PyAny>>,
        source: i32,
        recvtag: i32,
        status: Option<&Bound<'py, PyStatus>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = recvbuf;
        let c = self.c()?;
        let p = pickle::dumps(py, sendobj)?;
        let sreq = c.isend(&p.parts, dest, sendtag, SendMode::Standard).py()?;
        let got = recv_object(py, c, source, recvtag);
        wait_req(py, sreq)?;
        let (obj, st) = got?;
        PyStatus::fill(status, st);
        Ok(obj)
    }

    #[pyo3(signature = (obj, dest, tag=0))]
    fn isend(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<PyRequest> {
        let c = self.c()?;
        let p = pickle::dumps(py, obj)?;
        let req = c.isend(&p.parts, dest, tag, SendMode::Standard).py()?;
        Ok(PyRequest::new(req, Payload::Pickled(p)))
    }

    #[pyo3(signature = (obj, dest, tag=0))]
    fn issend(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<PyRequest> {
        let c = self.c()?;
        let p = pickle::dumps(py, obj)?;
        let req = c.isend(&p.parts, dest, tag, SendMode::Synchronous).py()?;
        Ok(PyRequest::new(req, Payload::Pickled(p)))
    }

    #[pyo3(signature = (buf=None, source=ANY_SOURCE, tag=ANY_TAG))]
    fn irecv(&self, buf: Option<&Bound<'_, PyAny>>, source: i32, tag: i32) -> PyResult<PyRequest> {
        let _ = buf;
        let req = self.c()?.irecv_owned(source, tag).py()?;
        Ok(PyRequest::obj_recv(req))
    }

    #[pyo3(signature = (source=ANY_SOURCE, tag=ANY_TAG, status=None))]
    fn probe(&self, py: Python<'_>, source: i32, tag: i32, status: Option<&Bound<'_, PyStatus>>) -> PyResult<bool> {
        self.Probe(py, source, tag, status)
    }

    #[pyo3(signature = (source=ANY_SOURCE, tag=ANY_TAG, status=None))]
    fn iprobe(&self, source: i32, tag: i32, status: Option<&Bound<'_, PyStatus>>) -> PyResult<bool> {
        self.Iprobe(source, tag, status)
    }

    // --------------------------------------------- point-to-point (buffers)

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Send(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<()> {
        let m = buffer::parse(buf, false)?;
        send_parts(py, self.c()?, &[m.raw], dest, tag, SendMode::Standard)
    }

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Ssend(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<()> {
        let m = buffer::parse(buf, false)?;
        send_parts(py, self.c()?, &[m.raw], dest, tag, SendMode::Synchronous)
    }

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Rsend(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<()> {
        let m = buffer::parse(buf, false)?;
        send_parts(py, self.c()?, &[m.raw], dest, tag, SendMode::Ready)
    }

    #[pyo3(signature = (buf, source=ANY_SOURCE, tag=ANY_TAG, status=None))]
    fn Recv(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, source: i32, tag: i32, status: Option<&Bound<'_, PyStatus>>) -> PyResult<()> {
        let m = recv_buf_parse(buf)?;
        let req = self.c()?.irecv(m.raw, source, tag).py()?;
        let st = wait_req(py, req)?;
        PyStatus::fill(status, st);
        Ok(())
    }

    #[pyo3(signature = (sendbuf, dest, sendtag=0, recvbuf=None, source=ANY_SOURCE, recvtag=ANY_TAG, status=None))]
    #[allow(clippy::too_many_arguments)]
    fn Sendrecv(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        dest: i32,
        sendtag: i32,
        recvbuf: Option<&Bound<'_, PyAny>>,
        source: i32,
        recvtag: i32,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<()> {
        let c = self.c()?;
        let s = buffer::parse(sendbuf, false)?;
        let r = match recvbuf {
            Some(b) => recv_buf_parse(b)?,
            None => buffer::parse(&py.None().into_bound(py), true)?,
        };
        let rreq = c.irecv(r.raw, source, recvtag).py()?;
        let sreq = c.isend(&[s.raw], dest, sendtag, SendMode::Standard).py()?;
        let st = wait_req(py, rreq);
        wait_req(py, sreq)?;
        PyStatus::fill(status, st?);
        Ok(())
    }

    #[pyo3(signature = (buf, dest, sendtag=0, source=ANY_SOURCE, recvtag=ANY_TAG, status=None))]
    #[allow(clippy::too_many_arguments)]
    fn Sendrecv_replace(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        dest: i32,
        sendtag: i32,
        source: i32,
        recvtag: i32,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<()> {
        let c = self.c()?;
        let m = recv_buf_parse(buf)?;
        // SAFETY: the view pins the buffer for this call.
        let copy = unsafe { m.raw.as_slice() }.to_vec();
        let sreq = c.isend(&[RawBuf::from_slice(&copy)], dest, sendtag, SendMode::Standard).py()?;
        let rreq = c.irecv(m.raw, source, recvtag).py()?;
        let st = wait_req(py, rreq);
        wait_req(py, sreq)?;
        PyStatus::fill(status, st?);
        Ok(())
    }

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Isend(&self, buf: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<PyRequest> {
        let m = buffer::parse(buf, false)?;
        let req = self.c()?.isend(&[m.raw], dest, tag, SendMode::Standard).py()?;
        Ok(PyRequest::new(req, Payload::Buffer(m)))
    }

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Issend(&self, buf: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<PyRequest> {
        let m = buffer::parse(buf, false)?;
        let req = self.c()?.isend(&[m.raw], dest, tag, SendMode::Synchronous).py()?;
        Ok(PyRequest::new(req, Payload::Buffer(m)))
    }

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Irsend(&self, buf: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<PyRequest> {
        self.Isend(buf, dest, tag)
    }

    #[pyo3(signature = (buf, source=ANY_SOURCE, tag=ANY_TAG))]
    fn Irecv(&self, buf: &Bound<'_, PyAny>, source: i32, tag: i32) -> PyResult<PyRequest> {
        let m = recv_buf_parse(buf)?;
        let req = self.c()?.irecv(m.raw, source, tag).py()?;
        Ok(PyRequest::new(req, Payload::Buffer(m)))
    }

    #[pyo3(signature = (source=ANY_SOURCE, tag=ANY_TAG, status=None))]
    fn Probe(&self, py: Python<'_>, source: i32, tag: i32, status: Option<&Bound<'_, PyStatus>>) -> PyResult<bool> {
        let c = self.c()?.clone();
        let st = match c.iprobe(source, tag).py()? {
            Some(st) => st,
            None => blocking(py, move || c.probe(source, tag))?,
        };
        PyStatus::fill(status, st);
        Ok(true)
    }

    #[pyo3(signature = (source=ANY_SOURCE, tag=ANY_TAG, status=None))]
    fn Iprobe(&self, source: i32, tag: i32, status: Option<&Bound<'_, PyStatus>>) -> PyResult<bool> {
        match self.c()?.iprobe(source, tag).py()? {
            Some(st) => {
                PyStatus::fill(status, st);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    // ------------------------------------------------ collectives (objects)

    fn barrier(&self, py: Python<'_>) -> PyResult<()> {
        self.Barrier(py)
    }

    #[pyo3(signature = (obj=None, root=0))]
    fn bcast<'py>(&self, py: Python<'py>, obj: Option<&Bound<'py, PyAny>>, root: i32) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c()?.clone();
        let data = if c.rank() == root {
            let none = py.None().into_bound(py);
            Some(pickle::dumps_vec(py, obj.unwrap_or(&none))?)
        } else {
            None
        };
        let v = blocking(py, move || c.bcast_bytes(data, root))?;
        pickle::loads_slice(py, &v)
    }

    #[pyo3(signature = (sendobj, op=None, root=0))]
    fn reduce<'py>(&self, py: Python<'py>, sendobj: &Bound<'py, PyAny>, op: Option<&Bound<'py, PyAny>>, root: i32) -> PyResult<Bound<'py, PyAny>> {
        self.reduce_objects(py, sendobj, op, Some(root))
    }

    #[pyo3(signature = (sendobj, op=None))]
    fn allreduce<'py>(&self, py: Python<'py>, sendobj: &Bound<'py, PyAny>, op: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
        self.reduce_objects(py, sendobj, op, None)
    }

    #[pyo3(signature = (sendobj, root=0))]
    fn gather<'py>(&self, py: Python<'py>, sendobj: &Bound<'py, PyAny>, root: i32) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c()?.clone();
        let data = pickle::dumps_vec(py, sendobj)?;
        match blocking(py, move || c.gather_bytes(&data, root))? {
            Some(blobs) => {
                let items = blobs
                    .iter()
                    .map(|b| pickle::loads_slice(py, b))
                    .collect::<PyResult<Vec<_>>>()?;
                Ok(PyList::new(py, items)?.into_any())
            }
            None => Ok(py.None().into_bound(py)),
        }
    }

    #[pyo3(signature = (sendobj, root=0))]
    fn scatter<'py>(&self, py: Python<'py>, sendobj: Option<&Bound<'py, PyAny>>, root: i32) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c()?.clone();
        let data = if c.rank() == root {
            let seq = sendobj.ok_or_else(|| PyTypeError::new_err("scatter: the root must pass a sequence"))?;
            let items: Vec<Bound<'py, PyAny>> = seq.try_iter()?.collect::<PyResult<_>>()?;
            if items.len() != c.size() as usize {
                return Err(PyValueError::new_err(format!(
                    "scatter: expected a sequence of {} items, got {}",
                    c.size(),
                    items.len()
                )));
            }
            Some(items.iter().map(|o| pickle::dumps_vec(py, o)).collect::<PyResult<Vec<_>>>()?)
        } else {
            None
        };
        let v = blocking(py, move || c.scatter_bytes(data, root))?;
        pickle::loads_slice(py, &v)
    }

    fn allgather<'py>(&self, py: Python<'py>, sendobj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let c = self.c()?.clone();
        let data = pickle::dumps_vec(py, sendobj)?;
        let blobs = blocking(py, move || c.allgather_bytes(&data))?;
        let items = blobs
            .iter()
            .map(|b| pickle::loads_slice(py, b))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    fn alltoall<'py>(&self, py: Python<'py>, sendobj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let c = self.c()?.clone();
        let items: Vec<Bound<'py, PyAny>> = sendobj.try_iter()?.collect::<PyResult<_>>()?;
        if items.len() != c.size() as usize {
            return Err(PyValueError::new_err(format!(
                "alltoall: expected a sequence of {} items, got {}",
                c.size(),
                items.len()
            )));
        }
        let data = items.iter().map(|o| pickle::dumps_vec(py, o)).collect::<PyResult<Vec<_>>>()?;
        let blobs = blocking(py, move || c.alltoall_bytes(data))?;
        let out = blobs
            .iter()
            .map(|b| pickle::loads_slice(py, b))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, out)
    }

    // ------------------------------------------------ collectives (buffers)

    fn Barrier(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.c()?.clone();
        blocking(py, move || c.barrier())
    }

    #[pyo3(signature = (buf, root=0))]
    fn Bcast(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, root: i32) -> PyResult<()> {
        let c = self.c()?.clone();
        let m = buffer::parse(buf, c.rank() != root)?;
        let raw = m.raw;
        blocking(py, move || c.bcast(raw, root))
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None, root=0))]
    fn Reduce(&self, py: Python<'_>, sendbuf: &Bound<'_, PyAny>, recvbuf: Option<&Bound<'_, PyAny>>, op: Option<&Bound<'_, PyAny>>, root: i32) -> PyResult<()> {
        let c = self.c()?.clone();
        let is_root = c.rank() == root;
        let recv = match recvbuf {
            Some(b) if is_root => Some(recv_buf_parse(b)?),
            _ => None,
        };
        let send = if is_in_place(sendbuf) {
            if !is_root {
                return Err(PyValueError::new_err("Reduce: IN_PLACE is only valid at the root"));
            }
            None
        } else {
            Some(buffer::parse(sendbuf, false)?)
        };
        let proto = send.as_ref().or(recv.as_ref()).ok_or_else(|| {
            PyValueError::new_err("Reduce: the root needs a receive buffer")
        })?;
        if is_root && recv.is_none() {
            return Err(PyValueError::new_err("Reduce: the root needs a receive buffer"));
        }
        let (count, dtype, pytype) = (proto.count, proto.dtype.clone(), proto.pytype.clone());
        if let (Some(r), Some(s)) = (&recv, &send) {
            if r.raw.len < s.raw.len {
                return Err(PyValueError::new_err(format!(
                    "Reduce: receive buffer of {} bytes is smaller than the {}-byte send buffer",
                    r.raw.len, s.raw.len
                )));
            }
        }
        let rop = op_or_sum(op)?.to_runtime(&pytype)?;
        let sraw = send.as_ref().map(|m| m.raw);
        let rraw = recv.as_ref().map(|m| m.raw).unwrap_or(RawBuf::EMPTY);
        blocking(py, move || c.reduce(sraw, rraw, count, &dtype, &rop, root))
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None))]
    fn Allreduce(&self, py: Python<'_>, sendbuf: &Bound<'_, PyAny>, recvbuf: &Bound<'_, PyAny>, op: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let c = self.c()?.clone();
        let recv = recv_buf_parse(recvbuf)?;
        let send = if is_in_place(sendbuf) {
            None
        } else {
            Some(buffer::parse(sendbuf, false)?)
        };
        let proto = send.as_ref().unwrap_or(&recv);
        let (count, dtype, pytype) = (proto.count, proto.dtype.clone(), proto.pytype.clone());
        if recv.raw.len < count * dtype.size() {
            return Err(PyValueError::new_err(format!(
                "Allreduce: receive buffer of {} bytes is smaller than the {}-byte send buffer",
                recv.raw.len,
                count * dtype.size()
            )));
        }
        let rop = op_or_sum(op)?.to_runtime(&pytype)?;
        let sraw = send.as_ref().map(|m| m.raw);
        let rraw = recv.raw;
        blocking(py, move || c.allreduce(sraw, rraw, count, &dtype, &rop))
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Gather(&self, py: Python<'_>, sendbuf: &Bound<'_, PyAny>, recvbuf: Option<&Bound<'_, PyAny>>, root: i32) -> PyResult<()> {
        let c = self.c()?.clone();
        let (rank, size) = (c.rank(), c.size() as usize);
        let recv = match recvbuf {
            Some(b) if rank == root => Some(recv_buf_parse(b)?),
            _ => None,
        };
        let in_place = is_in_place(sendbuf);
        let send = if in_place { None } else { Some(buffer::parse(sendbuf, false)?) };
        let block = match (&recv, &send) {
            (Some(r), _) => chunk_len(r.raw.len, size, "Gather")?,
            (None, Some(s)) => s.raw.len,
            (None, None) => return Err(PyValueError::new_err("Gather: no buffers")),
        };
        // SAFETY: the views pin the buffers for this call.
        let mine = match &send {
            Some(s) => unsafe { s.raw.as_slice() }.to_vec(),
            None => {
                let all = unsafe { recv.as_ref().expect("root has recvbuf").raw.as_slice() };
                all[rank as usize * block..(rank as usize + 1) * block].to_vec()
            }
        };
        let rraw = recv.as_ref().map(|m| m.raw);
        blocking(py, move || {
            if let Some(blobs) = c.gather_bytes(&mine, root)? {
                let out = rraw.expect("root has a receive buffer");
                // SAFETY: pinned for the call; written by this thread only.
                let out = unsafe { out.as_mut_slice() };
                for (i, b) in blobs.iter().enumerate() {
                    let n = b.len().min(block);
                    out[i * block..i * block + n].copy_from_slice(&b[..n]);
                }
            }
            Ok(())
        })
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Scatter(&self, py: Python<'_>, sendbuf: Option<&Bound<'_, PyAny>>, recvbuf: &Bound<'_, PyAny>, root: i32) -> PyResult<()> {
        let c = self.c()?.clone();
        let (rank, size) = (c.rank(), c.size() as usize);
        let in_place = is_in_place(recvbuf);
        let recv = if in_place { None } else { Some(recv_buf_parse(recvbuf)?) };
        let data = if rank == root {
            let s = buffer::parse(
                sendbuf.ok_or_else(|| PyValueError::new_err("Scatter: the root needs a send buffer"))?,
                false,
            )?;
            let block = chunk_len(s.raw.len, size, "Scatter")?;
            // SAFETY: pinned by `s` for this call.
            let all = unsafe { s.raw.as_slice() };
            Some((0..size).map(|i| all[i * block..(i + 1) * block].to_vec()).collect::<Vec<_>>())
        } else {
            None
        };
        let rraw = recv.as_ref().map(|m| m.raw);
        blocking(py, move || {
            let mine = c.scatter_bytes(data, root)?;
            if let Some(out) = rraw {
                // SAFETY: pinned for the call; written by this thread only.
                let out = unsafe { out.as_mut_slice() };
                let n = mine.len().min(out.len());
                out[..n].copy_from_slice(&mine[..n]);
            }
            Ok(())
        })
    }

    #[pyo3(signature = (sendbuf, recvbuf))]
    fn Allgather(&self, py: Python<'_>, sendbuf: &Bound<'_, PyAny>, recvbuf: &Bound<'_, PyAny>) -> PyResult<()> {
        let c = self.c()?.clone();
        let (rank, size) = (c.rank() as usize, c.size() as usize);
        let recv = recv_buf_parse(recvbuf)?;
        let block = chunk_len(recv.raw.len, size, "Allgather")?;
        let mine = if is_in_place(sendbuf) {
            // SAFETY: pinned for this call.
            (unsafe { recv.raw.as_slice() })[rank * block..(rank + 1) * block].to_vec()
        } else {
            let s = buffer::parse(sendbuf, false)?;
            // SAFETY: pinned for this call.
            unsafe { s.raw.as_slice() }.to_vec()
        };
        let rraw = recv.raw;
        blocking(py, move || {
            let blobs = c.allgather_bytes(&mine)?;
            // SAFETY: pinned for the call; written by this thread only.
            let out = unsafe { rraw.as_mut_slice() };
            for (i, b) in blobs.iter().enumerate() {
                let n = b.len().min(block);
                out[i * block..i * block + n].copy_from_slice(&b[..n]);
            }
            Ok(())
        })
    }

    #[pyo3(signature = (sendbuf, recvbuf))]
    fn Alltoall(&self, py: Python<'_>, sendbuf: &Bound<'_, PyAny>, recvbuf: &Bound<'_, PyAny>) -> PyResult<()> {
        let c = self.c()?.clone();
        let size = c.size() as usize;
        let recv = recv_buf_parse(recvbuf)?;
        let rblock = chunk_len(recv.raw.len, size, "Alltoall")?;
        let send_copy: Vec<u8> = if is_in_place(sendbuf) {
            // SAFETY: pinned for this call.
            unsafe { recv.raw.as_slice() }.to_vec()
        } else {
            let s = buffer::parse(sendbuf, false)?;
            // SAFETY: pinned for this call.
            unsafe { s.raw.as_slice() }.to_vec()
        };
        let sblock = chunk_len(send_copy.len(), size, "Alltoall")?;
        let data: Vec<Vec<u8>> = (0..size).map(|i| send_copy[i * sblock..(i + 1) * sblock].to_vec()).collect();
        let rraw = recv.raw;
        blocking(py, move || {
            let blobs = c.alltoall_bytes(data)?;
            // SAFETY: pinned for the call; written by this thread only.
            let out = unsafe { rraw.as_mut_slice() };
            for (i, b) in blobs.iter().enumerate() {
                let n = b.len().min(rblock);
                out[i * rblock..i * rblock + n].copy_from_slice(&b[..n]);
            }
            Ok(())
        })
    }
}

fn op_or_sum(op: Option<&Bound<'_, PyAny>>) -> PyResult<PyOp> {
    match op {
        Some(o) => op::from_py(o),
        None => Python::attach(|py| {
            let sum = py.import("oxmpi.MPI")?.getattr("SUM")?;
            op::from_py(&sum)
        }),
    }
}

impl PyComm {
    fn reduce_objects<'py>(
        &self,
        py: Python<'py>,
        sendobj: &Bound<'py, PyAny>,
        op: Option<&Bound<'py, PyAny>>,
        root: Option<i32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c()?.clone();
        let op = op_or_sum(op)?;
        let data = pickle::dumps_vec(py, sendobj)?;
        let res = blocking(py, || {
            c.reduce_bytes(data, root, &mut |left: &[u8], right: &[u8]| {
                Python::attach(|py| {
                    let a = pickle::loads_slice(py, left)?;
                    let b = pickle::loads_slice(py, right)?;
                    let r = op.call_objects(&a, &b)?;
                    pickle::dumps_vec(py, &r)
                })
                .map_err(from_pyerr)
            })
        })?;
        match res {
            Some(v) => pickle::loads_slice(py, &v),
            None => Ok(py.None().into_bound(py)),
        }
    }
}
