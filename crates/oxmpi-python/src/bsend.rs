//! Buffered mode (MPI-4.1 §3.6): `Attach_buffer` / `Detach_buffer` /
//! `Flush_buffer` / `Iflush_buffer` for the process and per communicator,
//! and the buffered sends that copy into the attached buffer.
//!
//! A buffered send copies its message into the attached buffer and sends
//! from there, so it completes at once whatever the receiver does. Each
//! message occupies its length plus `BSEND_OVERHEAD` bytes of the buffer
//! (first fit) until its send completes; a message that does not fit is an
//! `ERR_BUFFER` error. With `BUFFER_AUTOMATIC` the runtime allocates the
//! copy and there is no limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::prelude::*;

use oxmpi::backend::{CommRef, RawBuf, RequestRef, SendMode, PROC_NULL};
use oxmpi::error::class;

use crate::buffer::BufView;
use crate::engine::{blocking, engine};
use crate::errors::{mpi_error, IntoPy};
use crate::memory::PyMemBuffer;
use crate::request::{Payload, PyRequest};

/// Bytes of the attached buffer a buffered message uses beyond its data
/// (`MPI.BSEND_OVERHEAD`). oxmpi keeps its bookkeeping elsewhere; the
/// overhead is what lets programs size buffers the portable way.
pub const BSEND_OVERHEAD: usize = 96;

/// `MPI.BUFFER_AUTOMATIC`.
#[pyclass(module = "oxmpi.MPI", name = "BufferAutomaticType", extends = crate::memory::Constant, frozen)]
pub struct BufferAutomatic;

#[pymethods]
impl BufferAutomatic {
    #[new]
    pub fn new() -> (Self, crate::memory::Constant) {
        (
            BufferAutomatic,
            crate::memory::Constant::new("BUFFER_AUTOMATIC", -2),
        )
    }
}

/// A buffered message in flight and the bytes it occupies.
struct Block {
    offset: usize,
    len: usize,
    req: RequestRef,
}

/// A user buffer attached for buffered sends.
struct UserBuffer {
    /// What was attached, returned by detach.
    obj: Py<PyAny>,
    /// Pins the memory while attached.
    view: BufView,
    /// In flight, by offset.
    blocks: Vec<Block>,
}

// SAFETY: the view only describes memory pinned by its exporter; blocks
// hold runtime requests (Send + Sync). Access is serialised by the
// mutexes below.
unsafe impl Send for UserBuffer {}

enum Attached {
    User(UserBuffer),
    /// BUFFER_AUTOMATIC: copies owned here until their sends complete.
    Automatic(Vec<(RequestRef, Vec<u8>)>),
}

impl Attached {
    /// Forgets the messages whose sends have completed.
    fn reap(&mut self) {
        match self {
            Attached::User(u) => u.blocks.retain(|b| !b.req.is_complete()),
            Attached::Automatic(v) => v.retain(|(r, _)| !r.is_complete()),
        }
    }

    fn pending(&self) -> Vec<RequestRef> {
        match self {
            Attached::User(u) => u.blocks.iter().map(|b| b.req.clone()).collect(),
            Attached::Automatic(v) => v.iter().map(|(r, _)| r.clone()).collect(),
        }
    }
}

/// Where a buffer is attached: the process, or one communicator.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Scope {
    Process,
    Comm(usize),
}

fn scope_of(comm: &CommRef) -> Scope {
    Scope::Comm(Arc::as_ptr(comm) as *const () as usize)
}

static ATTACHED: Mutex<Option<HashMap<Scope, Attached>>> = Mutex::new(None);

fn attached() -> MutexGuard<'static, Option<HashMap<Scope, Attached>>> {
    ATTACHED.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_automatic(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_none() || obj.is_instance_of::<BufferAutomatic>()
}

fn attach(py: Python<'_>, scope: Scope, buf: &Bound<'_, PyAny>) -> PyResult<()> {
    let state = if is_automatic(buf) {
        Attached::Automatic(Vec::new())
    } else {
        let view = BufView::get(buf, true, false)?;
        Attached::User(UserBuffer {
            obj: buf.clone().unbind(),
            view,
            blocks: Vec::new(),
        })
    };
    let mut g = attached();
    let map = g.get_or_insert_with(HashMap::new);
    if map.contains_key(&scope) {
        return Err(mpi_error(
            py,
            class::ERR_BUFFER,
            "invalid buffer: a buffer is already attached",
        ));
    }
    map.insert(scope, state);
    Ok(())
}

/// Waits (GIL released) until every send in `pending` has completed.
fn wait_all(py: Python<'_>, pending: Vec<RequestRef>) -> PyResult<()> {
    if pending.iter().all(|r| r.is_complete()) {
        return Ok(());
    }
    let eng = engine(py)?;
    blocking(py, || {
        eng.progress_until(&mut || pending.iter().all(|r| r.is_complete()))
    })
}

fn detach(py: Python<'_>, scope: Scope) -> PyResult<Py<PyAny>> {
    let state = attached().as_mut().and_then(|m| m.remove(&scope));
    let Some(state) = state else {
        // Nothing attached: an empty buffer, as MPI gives (NULL, 0).
        return Ok(Py::new(py, PyMemBuffer::new_empty())?.into_any());
    };
    // MPI: detaching waits until the buffered messages are delivered.
    wait_all(py, state.pending())?;
    match state {
        Attached::User(u) => Ok(u.obj),
        Attached::Automatic(_) => Ok(py
            .import("oxmpi.MPI")?
            .getattr("BUFFER_AUTOMATIC")?
            .unbind()),
    }
}

fn flush(py: Python<'_>, scope: Scope) -> PyResult<()> {
    let pending = attached()
        .as_ref()
        .and_then(|m| m.get(&scope))
        .map(Attached::pending)
        .unwrap_or_default();
    wait_all(py, pending)
}

fn iflush(py: Python<'_>, scope: Scope) -> PyResult<PyRequest> {
    let pending = attached()
        .as_ref()
        .and_then(|m| m.get(&scope))
        .map(Attached::pending)
        .unwrap_or_default();
    let _ = py;
    Ok(PyRequest::new(
        Arc::new(crate::request::AllOf::new(pending, None)),
        Payload::None,
    ))
}

/// Starts a buffered send of the concatenation of `parts` (MPI_Ibsend):
/// copies it into the buffer attached to `comm` (else the process's) and
/// sends from there. The returned request is that send's; the caller's
/// buffers are free at once.
pub fn bsend(
    py: Python<'_>,
    comm: &CommRef,
    parts: &[RawBuf],
    dest: i32,
    tag: i32,
) -> PyResult<RequestRef> {
    if dest == PROC_NULL {
        return comm.isend(&[], dest, tag, SendMode::Standard).py();
    }
    let mut g = attached();
    let map = g.get_or_insert_with(HashMap::new);
    let scope = if map.contains_key(&scope_of(comm)) {
        scope_of(comm)
    } else {
        Scope::Process
    };
    let Some(state) = map.get_mut(&scope) else {
        return Err(mpi_error(
            py,
            class::ERR_BUFFER,
            "invalid buffer: no buffer is attached for buffered sends",
        ));
    };
    state.reap();
    let total: usize = parts.iter().map(|p| p.len).sum();
    // Copies the parts, back to back, to `dst` (room for `total` bytes).
    let gather = |dst: *mut u8| {
        let mut off = 0;
        for p in parts {
            if p.len > 0 {
                // SAFETY: the caller keeps each part valid for this call;
                // `dst` has room for all of them (see the callers).
                unsafe { std::ptr::copy_nonoverlapping(p.ptr, dst.add(off), p.len) };
            }
            off += p.len;
        }
    };
    match state {
        Attached::Automatic(v) => {
            let mut copy = vec![0u8; total];
            gather(copy.as_mut_ptr());
            let req = comm
                .isend(&[RawBuf::from_slice(&copy)], dest, tag, SendMode::Standard)
                .py()?;
            if !req.is_complete() {
                // The heap block of `copy` does not move with the Vec.
                v.push((req.clone(), copy));
            }
            Ok(req)
        }
        Attached::User(u) => {
            let need = total + BSEND_OVERHEAD;
            let mut offset = match first_fit(&u.blocks, u.view.len(), need) {
                Some(o) => Some(o),
                None => {
                    // Sends may have completed since: progress once.
                    engine(py)?.progress();
                    state_reap(u);
                    first_fit(&u.blocks, u.view.len(), need)
                }
            };
            let Some(off) = offset.take() else {
                return Err(mpi_error(
                    py,
                    class::ERR_BUFFER,
                    &format!(
                        "invalid buffer: a {}-byte buffered send needs {need} bytes, \
                         more than the attached buffer ({} bytes) has free",
                        total,
                        u.view.len()
                    ),
                ));
            };
            // [off, off + need) is free in the attached buffer, which the
            // view keeps alive.
            let dst = u.view.ptr().wrapping_add(off);
            gather(dst);
            let part = RawBuf {
                ptr: dst,
                len: total,
            };
            let req = comm.isend(&[part], dest, tag, SendMode::Standard).py()?;
            let pos = u.blocks.partition_point(|b| b.offset < off);
            u.blocks.insert(
                pos,
                Block {
                    offset: off,
                    len: need,
                    req: req.clone(),
                },
            );
            Ok(req)
        }
    }
}

fn state_reap(u: &mut UserBuffer) {
    u.blocks.retain(|b| !b.req.is_complete());
}

/// The first offset with `need` free bytes among `blocks` (sorted by
/// offset) in a buffer of `size` bytes.
fn first_fit(blocks: &[Block], size: usize, need: usize) -> Option<usize> {
    let mut start = 0;
    for b in blocks {
        if b.offset - start >= need {
            return Some(start);
        }
        start = b.offset + b.len;
    }
    (size.saturating_sub(start) >= need).then_some(start)
}

/// A buffered send's request as the user sees it: complete, since the
/// message is in the buffer.
pub fn completed_request() -> PyRequest {
    PyRequest::new(
        Arc::new(crate::request::AllOf::new(Vec::new(), None)),
        Payload::None,
    )
}

// ------------------------------------------------------------ Python API

#[pyfunction]
#[pyo3(name = "Attach_buffer")]
pub fn attach_buffer(py: Python<'_>, buf: &Bound<'_, PyAny>) -> PyResult<()> {
    attach(py, Scope::Process, buf)
}

#[pyfunction]
#[pyo3(name = "Detach_buffer")]
pub fn detach_buffer(py: Python<'_>) -> PyResult<Py<PyAny>> {
    detach(py, Scope::Process)
}

#[pyfunction]
#[pyo3(name = "Flush_buffer")]
pub fn flush_buffer(py: Python<'_>) -> PyResult<()> {
    flush(py, Scope::Process)
}

#[pyfunction]
#[pyo3(name = "Iflush_buffer")]
pub fn iflush_buffer(py: Python<'_>) -> PyResult<PyRequest> {
    iflush(py, Scope::Process)
}

/// Per-communicator buffers (MPI-4.1): used by that communicator's
/// buffered sends before the process's.
pub fn comm_attach(py: Python<'_>, comm: &CommRef, buf: &Bound<'_, PyAny>) -> PyResult<()> {
    attach(py, scope_of(comm), buf)
}

pub fn comm_detach(py: Python<'_>, comm: &CommRef) -> PyResult<Py<PyAny>> {
    detach(py, scope_of(comm))
}

pub fn comm_flush(py: Python<'_>, comm: &CommRef) -> PyResult<()> {
    flush(py, scope_of(comm))
}

pub fn comm_iflush(py: Python<'_>, comm: &CommRef) -> PyResult<PyRequest> {
    iflush(py, scope_of(comm))
}
