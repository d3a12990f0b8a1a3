//! Point-to-point calls of `MPI.Comm` (MPI-4.1 chapter 3), objects and
//! buffers.

use pyo3::prelude::*;

use oxmpi::backend::{RawBuf, RequestRef, SendMode, ANY_SOURCE, ANY_TAG};

use crate::buffer;
use crate::comm::{recv_buf_parse, send_parts, wait_req, PyComm};
use crate::engine::blocking;
use crate::errors::IntoPy;
use crate::pickle;
use crate::request::{recv_object, unpickle_owned, Payload, PyRequest};
use crate::status::PyStatus;

#[pymethods]
impl PyComm {
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
        c.check_send_args(dest, sendtag).py()?;
        let rreq = c.irecv_owned(source, recvtag).py()?;
        let sreq = start_or_withdraw(py, &rreq, || {
            c.isend(&p.parts, dest, sendtag, SendMode::Standard)
        })?;
        let st = wait_req(py, rreq.clone());
        wait_req(py, sreq)?;
        let st = st?;
        let obj = unpickle_owned(py, rreq.take_data(), &st)?;
        PyStatus::fill(status, st);
        Ok(obj)
    }

    #[pyo3(signature = (obj, dest, tag=0))]
    fn isend(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        dest: i32,
        tag: i32,
    ) -> PyResult<PyRequest> {
        let c = self.c()?;
        let p = pickle::dumps(py, obj)?;
        let req = c.isend(&p.parts, dest, tag, SendMode::Standard).py()?;
        Ok(PyRequest::new(req, Payload::Pickled(p)))
    }

    #[pyo3(signature = (obj, dest, tag=0))]
    fn issend(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        dest: i32,
        tag: i32,
    ) -> PyResult<PyRequest> {
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
    fn probe(
        &self,
        py: Python<'_>,
        source: i32,
        tag: i32,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<bool> {
        self.Probe(py, source, tag, status)
    }

    #[pyo3(signature = (source=ANY_SOURCE, tag=ANY_TAG, status=None))]
    fn iprobe(
        &self,
        source: i32,
        tag: i32,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<bool> {
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
    fn Recv(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        source: i32,
        tag: i32,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<()> {
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
        c.check_send_args(dest, sendtag).py()?;
        let rreq = c.irecv(r.raw, source, recvtag).py()?;
        let sreq = start_or_withdraw(py, &rreq, || {
            c.isend(&[s.raw], dest, sendtag, SendMode::Standard)
        })?;
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
        c.check_send_args(dest, sendtag).py()?;
        let rreq = c.irecv(m.raw, source, recvtag).py()?;
        let sreq = start_or_withdraw(py, &rreq, || {
            c.isend(
                &[RawBuf::from_slice(&copy)],
                dest,
                sendtag,
                SendMode::Standard,
            )
        })?;
        let st = wait_req(py, rreq);
        wait_req(py, sreq)?;
        PyStatus::fill(status, st?);
        Ok(())
    }

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Isend(&self, buf: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<PyRequest> {
        let m = buffer::parse(buf, false)?;
        let req = self
            .c()?
            .isend(&[m.raw], dest, tag, SendMode::Standard)
            .py()?;
        Ok(PyRequest::new(req, Payload::Buffer(m)))
    }

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Issend(&self, buf: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<PyRequest> {
        let m = buffer::parse(buf, false)?;
        let req = self
            .c()?
            .isend(&[m.raw], dest, tag, SendMode::Synchronous)
            .py()?;
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
    fn Probe(
        &self,
        py: Python<'_>,
        source: i32,
        tag: i32,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<bool> {
        let c = self.c()?.clone();
        let st = match c.iprobe(source, tag).py()? {
            Some(st) => st,
            None => blocking(py, move || c.probe(source, tag))?,
        };
        PyStatus::fill(status, st);
        Ok(true)
    }

    #[pyo3(signature = (source=ANY_SOURCE, tag=ANY_TAG, status=None))]
    fn Iprobe(
        &self,
        source: i32,
        tag: i32,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<bool> {
        match self.c()?.iprobe(source, tag).py()? {
            Some(st) => {
                PyStatus::fill(status, st);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Starts the send half of a send-receive whose receive is already posted.
/// If the send cannot start (bad destination or tag), the receive is
/// withdrawn and settled before the error is returned, so that nothing is
/// left writing into the caller's buffer after the call.
fn start_or_withdraw(
    py: Python<'_>,
    rreq: &RequestRef,
    start: impl FnOnce() -> oxmpi::Result<RequestRef>,
) -> PyResult<RequestRef> {
    match start() {
        Ok(sreq) => Ok(sreq),
        Err(e) => {
            let _ = rreq.cancel();
            // Cancelled, or already matched and finishing: either way it
            // completes without waiting on anyone.
            let _ = wait_req(py, rreq.clone());
            Err(crate::errors::to_pyerr(e))
        }
    }
}
