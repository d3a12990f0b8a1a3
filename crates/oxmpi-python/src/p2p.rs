//! Point-to-point calls of `MPI.Comm` (MPI-4.1 chapter 3), objects and
//! buffers: every send mode, receives, send-receives, probes, persistent
//! requests and the per-communicator buffers of buffered mode. Matched
//! probes are in `message.rs`.
//!
//! As in mpi4py, nothing about a buffer is parsed for a peer that is
//! PROC_NULL, and object sends to PROC_NULL pickle nothing.

use std::sync::Arc;

use pyo3::exceptions::{PyNotImplementedError, PyUserWarning};
use pyo3::prelude::*;

use oxmpi::backend::{CommRef, RawBuf, SendMode, ANY_SOURCE, ANY_TAG, PROC_NULL};

use crate::bsend;
use crate::buffer::{self, Msg};
use crate::comm::{send_parts, wait_req, PyComm};
use crate::engine::blocking;
use crate::errors::IntoPy;
use crate::pickle::{self, Pickled};
use crate::request::{
    new_prequest, recv_object, AllOf, Payload, Persistent, PyPrequest, PyRequest,
};
use crate::status::PyStatus;

/// Pickles `obj` for a send to `dest` (nothing for PROC_NULL).
fn pickle_for(py: Python<'_>, obj: &Bound<'_, PyAny>, dest: i32) -> PyResult<Option<Pickled>> {
    if dest == PROC_NULL {
        return Ok(None);
    }
    pickle::dumps(py, obj).map(Some)
}

fn parts_of(p: &Option<Pickled>) -> &[RawBuf] {
    p.as_ref().map_or(&[], |p| &p.parts)
}

fn none(py: Python<'_>) -> Bound<'_, PyAny> {
    py.None().into_bound(py)
}

/// mpi4py deprecates the receive buffer of the object receives: messages
/// of any size arrive into memory the runtime allocates.
fn warn_buf_deprecated(py: Python<'_>) -> PyResult<()> {
    PyErr::warn(
        py,
        &py.get_type::<PyUserWarning>(),
        c"the 'buf' argument is deprecated",
        1,
    )
}

fn isend_obj(
    py: Python<'_>,
    c: &CommRef,
    obj: &Bound<'_, PyAny>,
    dest: i32,
    tag: i32,
    mode: SendMode,
) -> PyResult<PyRequest> {
    let p = pickle_for(py, obj, dest)?;
    let req = c.isend(parts_of(&p), dest, tag, mode).py()?;
    Ok(PyRequest::new(
        req,
        p.map_or(Payload::None, Payload::Pickled),
    ))
}

fn isend_buf(
    c: &CommRef,
    buf: &Bound<'_, PyAny>,
    dest: i32,
    tag: i32,
    mode: SendMode,
) -> PyResult<PyRequest> {
    let m = buffer::parse_p2p(buf, false, dest)?;
    let req = c.isend(&[m.raw], dest, tag, mode).py()?;
    Ok(PyRequest::new(req, Payload::Buffer(m)))
}

fn send_buf(
    py: Python<'_>,
    c: &CommRef,
    buf: &Bound<'_, PyAny>,
    dest: i32,
    tag: i32,
    mode: SendMode,
) -> PyResult<()> {
    let m = buffer::parse_p2p(buf, false, dest)?;
    send_parts(py, c, &[m.raw], dest, tag, mode)
}

/// The rank a replace-in-place send-receive parses its buffer for.
fn replace_peer(dest: i32, source: i32) -> i32 {
    if source != PROC_NULL {
        source
    } else {
        dest
    }
}

/// Starts the two halves of a Sendrecv_replace: a send of a copy of the
/// buffer, and the receive into it. Returns (receive, send, copy).
fn start_replace(
    c: &CommRef,
    m: &Msg,
    dest: i32,
    sendtag: i32,
    source: i32,
    recvtag: i32,
) -> PyResult<(
    oxmpi::backend::RequestRef,
    oxmpi::backend::RequestRef,
    Vec<u8>,
)> {
    // SAFETY: the parsed message pins the buffer for this call.
    let copy = unsafe { m.raw.as_slice() }.to_vec();
    let sreq = c
        .isend(
            &[RawBuf::from_slice(&copy)],
            dest,
            sendtag,
            SendMode::Standard,
        )
        .py()?;
    let rreq = c.irecv(m.raw, source, recvtag).py()?;
    Ok((rreq, sreq, copy))
}

#[pymethods]
impl PyComm {
    // --------------------------------------------- point-to-point (objects)

    #[pyo3(signature = (obj, dest, tag=0))]
    fn send(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<()> {
        let p = pickle_for(py, obj, dest)?;
        send_parts(py, self.c()?, parts_of(&p), dest, tag, SendMode::Standard)
    }

    #[pyo3(signature = (obj, dest, tag=0))]
    fn bsend(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<()> {
        let p = pickle_for(py, obj, dest)?;
        bsend::bsend(py, self.c()?, parts_of(&p), dest, tag)?;
        Ok(())
    }

    #[pyo3(signature = (obj, dest, tag=0))]
    fn ssend(&self, py: Python<'_>, obj: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<()> {
        let p = pickle_for(py, obj, dest)?;
        send_parts(
            py,
            self.c()?,
            parts_of(&p),
            dest,
            tag,
            SendMode::Synchronous,
        )
    }

    /// Receives an object of any size. `buf` is deprecated (as in mpi4py)
    /// and not needed: it is ignored, with a warning.
    #[pyo3(signature = (buf=None, source=ANY_SOURCE, tag=ANY_TAG, status=None))]
    fn recv<'py>(
        &self,
        py: Python<'py>,
        buf: Option<&Bound<'py, PyAny>>,
        source: i32,
        tag: i32,
        status: Option<&Bound<'py, PyStatus>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if buf.is_some_and(|b| !b.is_none()) {
            warn_buf_deprecated(py)?;
        }
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
        if recvbuf.is_some_and(|b| !b.is_none()) {
            warn_buf_deprecated(py)?;
        }
        let c = self.c()?;
        let p = pickle_for(py, sendobj, dest)?;
        c.check_recv_args(source, recvtag).py()?;
        let sreq = c
            .isend(parts_of(&p), dest, sendtag, SendMode::Standard)
            .py()?;
        let got = recv_object(py, c, source, recvtag);
        // Whatever the receive did, the send's buffer must outlive the send.
        wait_req(py, sreq)?;
        let (obj, st) = got?;
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
        isend_obj(py, self.c()?, obj, dest, tag, SendMode::Standard)
    }

    #[pyo3(signature = (obj, dest, tag=0))]
    fn ibsend(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        dest: i32,
        tag: i32,
    ) -> PyResult<PyRequest> {
        let p = pickle_for(py, obj, dest)?;
        bsend::bsend(py, self.c()?, parts_of(&p), dest, tag)?;
        Ok(bsend::completed_request())
    }

    #[pyo3(signature = (obj, dest, tag=0))]
    fn issend(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        dest: i32,
        tag: i32,
    ) -> PyResult<PyRequest> {
        isend_obj(py, self.c()?, obj, dest, tag, SendMode::Synchronous)
    }

    /// Starts receiving an object of any size. `buf` (a buffer or a size in
    /// mpi4py) is not needed and is ignored.
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
        send_buf(py, self.c()?, buf, dest, tag, SendMode::Standard)
    }

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Ssend(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<()> {
        send_buf(py, self.c()?, buf, dest, tag, SendMode::Synchronous)
    }

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Rsend(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<()> {
        send_buf(py, self.c()?, buf, dest, tag, SendMode::Ready)
    }

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Bsend(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<()> {
        let m = buffer::parse_p2p(buf, false, dest)?;
        bsend::bsend(py, self.c()?, &[m.raw], dest, tag)?;
        Ok(())
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
        let m = buffer::parse_p2p(buf, true, source)?;
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
        let s = buffer::parse_p2p(sendbuf, false, dest)?;
        let none = none(py);
        let r = buffer::parse_p2p(recvbuf.unwrap_or(&none), true, source)?;
        // Refuse bad arguments before the first step has an effect (the
        // receive could otherwise match a message meant for a later call).
        c.check_send_args(dest, sendtag).py()?;
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
        let m = buffer::parse_p2p(buf, true, replace_peer(dest, source))?;
        c.check_send_args(dest, sendtag).py()?;
        c.check_recv_args(source, recvtag).py()?;
        let (rreq, sreq, copy) = start_replace(c, &m, dest, sendtag, source, recvtag)?;
        let st = wait_req(py, rreq);
        wait_req(py, sreq)?;
        drop(copy);
        PyStatus::fill(status, st?);
        Ok(())
    }

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Isend(&self, buf: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<PyRequest> {
        isend_buf(self.c()?, buf, dest, tag, SendMode::Standard)
    }

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Issend(&self, buf: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<PyRequest> {
        isend_buf(self.c()?, buf, dest, tag, SendMode::Synchronous)
    }

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Irsend(&self, buf: &Bound<'_, PyAny>, dest: i32, tag: i32) -> PyResult<PyRequest> {
        isend_buf(self.c()?, buf, dest, tag, SendMode::Ready)
    }

    /// Buffered: the request is complete once the message is copied into
    /// the attached buffer.
    #[pyo3(signature = (buf, dest, tag=0))]
    fn Ibsend(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        dest: i32,
        tag: i32,
    ) -> PyResult<PyRequest> {
        let m = buffer::parse_p2p(buf, false, dest)?;
        bsend::bsend(py, self.c()?, &[m.raw], dest, tag)?;
        Ok(bsend::completed_request())
    }

    #[pyo3(signature = (buf, source=ANY_SOURCE, tag=ANY_TAG))]
    fn Irecv(&self, buf: &Bound<'_, PyAny>, source: i32, tag: i32) -> PyResult<PyRequest> {
        let m = buffer::parse_p2p(buf, true, source)?;
        let req = self.c()?.irecv(m.raw, source, tag).py()?;
        Ok(PyRequest::new(req, Payload::Buffer(m)))
    }

    #[pyo3(signature = (sendbuf, dest, sendtag=0, recvbuf=None, source=ANY_SOURCE, recvtag=ANY_TAG))]
    #[allow(clippy::too_many_arguments)]
    fn Isendrecv(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        dest: i32,
        sendtag: i32,
        recvbuf: Option<&Bound<'_, PyAny>>,
        source: i32,
        recvtag: i32,
    ) -> PyResult<PyRequest> {
        let c = self.c()?;
        let s = buffer::parse_p2p(sendbuf, false, dest)?;
        let none = none(py);
        let r = buffer::parse_p2p(recvbuf.unwrap_or(&none), true, source)?;
        // Refuse bad arguments before the first step has an effect (the
        // receive could otherwise match a message meant for a later call).
        c.check_send_args(dest, sendtag).py()?;
        let rreq = c.irecv(r.raw, source, recvtag).py()?;
        let sreq = c.isend(&[s.raw], dest, sendtag, SendMode::Standard).py()?;
        Ok(PyRequest::new(
            Arc::new(AllOf::new(vec![rreq, sreq], Some(0))),
            Payload::Many(vec![Payload::Buffer(s), Payload::Buffer(r)]),
        ))
    }

    #[pyo3(signature = (buf, dest, sendtag=0, source=ANY_SOURCE, recvtag=ANY_TAG))]
    fn Isendrecv_replace(
        &self,
        buf: &Bound<'_, PyAny>,
        dest: i32,
        sendtag: i32,
        source: i32,
        recvtag: i32,
    ) -> PyResult<PyRequest> {
        let c = self.c()?;
        let m = buffer::parse_p2p(buf, true, replace_peer(dest, source))?;
        c.check_send_args(dest, sendtag).py()?;
        c.check_recv_args(source, recvtag).py()?;
        let (rreq, sreq, copy) = start_replace(c, &m, dest, sendtag, source, recvtag)?;
        Ok(PyRequest::new(
            Arc::new(AllOf::new(vec![rreq, sreq], Some(0))),
            Payload::Many(vec![Payload::Bytes(copy), Payload::Buffer(m)]),
        ))
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

    // ------------------------------------------------ persistent requests

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Send_init(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        dest: i32,
        tag: i32,
    ) -> PyResult<Py<PyPrequest>> {
        self.send_init(py, buf, dest, tag, SendMode::Standard)
    }

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Ssend_init(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        dest: i32,
        tag: i32,
    ) -> PyResult<Py<PyPrequest>> {
        self.send_init(py, buf, dest, tag, SendMode::Synchronous)
    }

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Rsend_init(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        dest: i32,
        tag: i32,
    ) -> PyResult<Py<PyPrequest>> {
        self.send_init(py, buf, dest, tag, SendMode::Ready)
    }

    #[pyo3(signature = (buf, dest, tag=0))]
    fn Bsend_init(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        dest: i32,
        tag: i32,
    ) -> PyResult<Py<PyPrequest>> {
        let msg = buffer::parse_p2p(buf, false, dest)?;
        let comm = self.c()?.clone();
        new_prequest(
            py,
            Persistent::Bsend {
                comm,
                msg,
                dest,
                tag,
            },
        )
    }

    #[pyo3(signature = (buf, source=ANY_SOURCE, tag=ANY_TAG))]
    fn Recv_init(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        source: i32,
        tag: i32,
    ) -> PyResult<Py<PyPrequest>> {
        let msg = buffer::parse_p2p(buf, true, source)?;
        let comm = self.c()?.clone();
        new_prequest(
            py,
            Persistent::Recv {
                comm,
                msg,
                source,
                tag,
            },
        )
    }

    #[pyo3(signature = (buf, partitions, dest, tag=0, info=None))]
    fn Psend_init(
        &self,
        buf: &Bound<'_, PyAny>,
        partitions: i32,
        dest: i32,
        tag: i32,
        info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = (buf, partitions, dest, tag, info);
        Err(PyNotImplementedError::new_err(
            "partitioned communication (MPI_Psend_init) is not implemented by oxmpi",
        ))
    }

    #[pyo3(signature = (buf, partitions, source=ANY_SOURCE, tag=ANY_TAG, info=None))]
    fn Precv_init(
        &self,
        buf: &Bound<'_, PyAny>,
        partitions: i32,
        source: i32,
        tag: i32,
        info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = (buf, partitions, source, tag, info);
        Err(PyNotImplementedError::new_err(
            "partitioned communication (MPI_Precv_init) is not implemented by oxmpi",
        ))
    }

    // ------------------------------------------------------ buffered mode

    fn Attach_buffer(&self, py: Python<'_>, buf: &Bound<'_, PyAny>) -> PyResult<()> {
        bsend::comm_attach(py, self.c()?, buf)
    }

    fn Detach_buffer(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        bsend::comm_detach(py, self.c()?)
    }

    fn Flush_buffer(&self, py: Python<'_>) -> PyResult<()> {
        bsend::comm_flush(py, self.c()?)
    }

    fn Iflush_buffer(&self, py: Python<'_>) -> PyResult<PyRequest> {
        bsend::comm_iflush(py, self.c()?)
    }
}

impl PyComm {
    fn send_init(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        dest: i32,
        tag: i32,
        mode: SendMode,
    ) -> PyResult<Py<PyPrequest>> {
        let msg = buffer::parse_p2p(buf, false, dest)?;
        let comm = self.c()?.clone();
        new_prequest(
            py,
            Persistent::Send {
                comm,
                msg,
                dest,
                tag,
                mode,
            },
        )
    }
}

// ------------------------------------------------- per-communicator locks

/// Per-communicator tables of locks (mpi4py's `_comm_lock_table`): the
/// object collectives of one communicator take one, so that threads of a
/// process calling them concurrently run them one after the other instead
/// of mixing their messages.
/// A communicator (weakly: the table dies with it) and its lock table.
type LockTable = (
    std::sync::Weak<dyn oxmpi::backend::Communicator>,
    Py<pyo3::types::PyDict>,
);

static LOCK_TABLES: std::sync::Mutex<Vec<LockTable>> = std::sync::Mutex::new(Vec::new());

fn lock_table<'py>(py: Python<'py>, comm: &CommRef) -> Bound<'py, pyo3::types::PyDict> {
    let mut tables = LOCK_TABLES.lock().unwrap_or_else(|e| e.into_inner());
    tables.retain(|(w, _)| w.strong_count() > 0);
    if let Some((_, t)) = tables
        .iter()
        .find(|(w, _)| std::ptr::addr_eq(w.as_ptr(), Arc::as_ptr(comm)))
    {
        return t.bind(py).clone();
    }
    let t = pyo3::types::PyDict::new(py);
    tables.push((Arc::downgrade(comm), t.clone().unbind()));
    t
}

/// The lock named `key` of `comm`'s table, created on first use.
fn comm_lock_object<'py>(
    py: Python<'py>,
    comm: &CommRef,
    key: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let table = lock_table(py, comm);
    if let Some(l) = table.get_item(key)? {
        return Ok(l);
    }
    let l = py.import("threading")?.call_method0("Lock")?;
    table.set_item(key, &l)?;
    Ok(l)
}

/// A held communicator lock, released when dropped.
pub struct CommLock<'py>(Bound<'py, PyAny>);

impl<'py> CommLock<'py> {
    /// Takes `comm`'s lock `key` (waiting with the GIL released, as
    /// `threading.Lock.acquire` does).
    pub fn acquire(py: Python<'py>, comm: &CommRef, key: &str) -> PyResult<CommLock<'py>> {
        let key = pyo3::types::PyString::new(py, key);
        let l = comm_lock_object(py, comm, key.as_any())?;
        l.call_method0("acquire")?;
        Ok(CommLock(l))
    }
}

impl Drop for CommLock<'_> {
    fn drop(&mut self) {
        let _ = self.0.call_method0("release");
    }
}

#[pyfunction]
#[pyo3(name = "_comm_lock_table")]
pub fn comm_lock_table<'py>(
    py: Python<'py>,
    comm: &Bound<'py, PyComm>,
) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    Ok(lock_table(py, comm.borrow().c()?))
}

#[pyfunction]
#[pyo3(name = "_comm_lock", signature = (comm, key=None))]
pub fn comm_lock<'py>(
    py: Python<'py>,
    comm: &Bound<'py, PyComm>,
    key: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let none = py.None().into_bound(py);
    comm_lock_object(py, comm.borrow().c()?, key.unwrap_or(&none))
}
