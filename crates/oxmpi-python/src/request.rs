//! `MPI.Request`, `MPI.Prequest` and `MPI.Grequest` (MPI-4.1 §3.7, §3.9,
//! §13.2): nonblocking operations, their completion calls, and the buffers
//! they keep alive.
//!
//! A Python request object holds a *handle*: shared by its copies
//! (`MPI.Request(req)`), compared by identity, null for `REQUEST_NULL`.
//! Completing a nonblocking request makes the object that completed it
//! null; a persistent request goes back to inactive and stays usable.
//! A request dropped or freed while its operation is in flight keeps the
//! operation's buffers alive until it completes (an "orphan").

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyList, PyTuple, PyType};
use pyo3::PyClassInitializer;

use oxmpi::backend::{CommRef, Request, RequestRef, SendMode, Status, PROC_NULL, UNDEFINED};
use oxmpi::error::class;

use crate::buffer::Msg;
use crate::engine::{blocking, engine};
use crate::errors::{mpi_error, IntoPy};
use crate::pickle::{self, Pickled};
use crate::status::{PyStatus, RawStatus};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What an operation in flight keeps alive, or does on completion.
#[allow(dead_code)] // the held values are never read, only kept alive
pub enum Payload {
    None,
    /// A user buffer pinned until completion.
    Buffer(Msg),
    /// A pickled object being sent.
    Pickled(Pickled),
    /// A copy of the data being sent (Sendrecv_replace).
    Bytes(Vec<u8>),
    /// Several of the above (Isendrecv).
    Many(Vec<Payload>),
    /// An object receive: the message is unpickled on completion.
    ObjRecv,
    /// A generalized request: its callbacks run on completion.
    Greq(Arc<Greq>),
    /// Anything else an operation needs alive until it completes (the
    /// blocks of a neighbour collective; packed blocks unpack on drop).
    Keep(Box<dyn std::any::Any + Send + Sync>),
}

/// An operation in flight.
pub struct Active {
    pub req: RequestRef,
    pub payload: Payload,
}

/// The operation a persistent request starts each time (MPI-4.1 §3.9).
pub enum Persistent {
    Send {
        comm: CommRef,
        msg: Msg,
        dest: i32,
        tag: i32,
        mode: SendMode,
    },
    Bsend {
        comm: CommRef,
        msg: Msg,
        dest: i32,
        tag: i32,
    },
    Recv {
        comm: CommRef,
        msg: Msg,
        source: i32,
        tag: i32,
    },
    /// A persistent collective (MPI-4.1 §6.13).
    Collective(PersistentColl),
}

impl Persistent {
    fn msg(&self) -> Option<&Msg> {
        match self {
            Persistent::Send { msg, .. }
            | Persistent::Bsend { msg, .. }
            | Persistent::Recv { msg, .. } => Some(msg),
            Persistent::Collective(_) => None,
        }
    }

    fn msg_mut(&mut self) -> Option<&mut Msg> {
        match self {
            Persistent::Send { msg, .. }
            | Persistent::Bsend { msg, .. }
            | Persistent::Recv { msg, .. } => Some(msg),
            Persistent::Collective(_) => None,
        }
    }
}

/// Starts one instance of a persistent collective: the nonblocking
/// collective of the arguments parsed at initialization.
pub type CollStart = Box<dyn Fn() -> oxmpi::Result<RequestRef> + Send + Sync>;

/// A persistent collective: the operation parsed once at `*_init`, started
/// again at each `Start`, and the buffers it pins until it is freed.
pub struct PersistentColl {
    start: CollStart,
    /// Packed copies of the messages of non-contiguous datatypes: packed
    /// afresh at each start, receives unpacked at each completion.
    packs: Vec<crate::datatype::Packed>,
    /// The views of the user's buffers (held, never read).
    _pinned: Box<dyn std::any::Any + Send + Sync>,
}

impl PersistentColl {
    /// `start` starts the operation on the raw buffers that `packs` and
    /// `pinned` keep valid.
    pub fn new(
        start: CollStart,
        mut packs: Vec<crate::datatype::Packed>,
        pinned: Box<dyn std::any::Any + Send + Sync>,
    ) -> PersistentColl {
        for p in &mut packs {
            p.make_persistent();
        }
        PersistentColl {
            start,
            packs,
            _pinned: pinned,
        }
    }

    /// Unpacks the receive copies into the user's buffers.
    ///
    /// # Safety
    /// The instance started last has completed.
    unsafe fn unpack(&self) {
        for p in self.packs.iter().filter(|p| p.is_receive()) {
            // SAFETY: by this function's contract nobody writes the copy.
            unsafe { p.unpack() };
        }
    }
}

/// What a handle is, beyond the operation in flight.
enum Kind {
    Plain,
    /// Shared with each operation it starts (its payload), so that a
    /// request freed while active keeps its buffers until the operation
    /// completes.
    Persistent(Arc<Persistent>),
    Generalized(Arc<Greq>),
}

/// A request handle shared by the Python objects that name it.
pub struct Handle {
    id: u64,
    kind: Kind,
    active: Mutex<Option<Active>>,
}

/// Handles by id, for `fromhandle`/`fromint`/`f2py`.
static HANDLES: Mutex<Option<HashMap<u64, Weak<Handle>>>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Operations whose request was freed or dropped while in flight.
static ORPHANS: Mutex<Vec<Active>> = Mutex::new(Vec::new());

/// Drops the orphans whose operation has completed (their buffers with
/// them).
fn reap_orphans() {
    let done: Vec<Active> = {
        let mut o = lock(&ORPHANS);
        if o.is_empty() {
            return;
        }
        let (done, pending): (Vec<Active>, Vec<Active>) =
            o.drain(..).partition(|a| a.req.is_complete());
        *o = pending;
        done
    };
    drop(done);
}

fn orphan(a: Active) {
    if !a.req.is_complete() {
        lock(&ORPHANS).push(a);
    }
}

impl Handle {
    fn new(kind: Kind, active: Option<Active>) -> Arc<Handle> {
        reap_orphans();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let h = Arc::new(Handle {
            id,
            kind,
            active: Mutex::new(active),
        });
        lock(&HANDLES)
            .get_or_insert_with(HashMap::new)
            .insert(id, Arc::downgrade(&h));
        h
    }

    fn lookup(id: u64) -> Option<Arc<Handle>> {
        lock(&HANDLES).as_ref()?.get(&id)?.upgrade()
    }

    fn is_persistent(&self) -> bool {
        matches!(self.kind, Kind::Persistent(_))
    }

    /// The runtime request of the operation in flight.
    fn current(&self) -> Option<RequestRef> {
        lock(&self.active).as_ref().map(|a| a.req.clone())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(map) = lock(&HANDLES).as_mut() {
            map.remove(&self.id);
        }
        if let Some(a) = lock(&self.active).take() {
            orphan(a);
        }
    }
}

/// A completed operation: its status and, for an object receive, the
/// object.
pub struct Completion {
    pub status: RawStatus,
    pub obj: Option<Py<PyAny>>,
}

impl Completion {
    fn empty() -> Completion {
        Completion {
            status: RawStatus::EMPTY,
            obj: None,
        }
    }
}

/// A nonblocking operation (`MPI.Request`).
#[pyclass(module = "oxmpi.MPI", name = "Request", subclass, weakref, frozen)]
pub struct PyRequest {
    handle: Mutex<Option<Arc<Handle>>>,
    /// `REQUEST_NULL` itself: never changed by `Free`.
    constant: bool,
}

impl PyRequest {
    /// A request for an operation just started.
    pub fn new(req: RequestRef, payload: Payload) -> PyRequest {
        PyRequest::from_handle(Some(Handle::new(
            Kind::Plain,
            Some(Active { req, payload }),
        )))
    }

    /// A request for an object receive (unpickled on completion).
    pub fn obj_recv(req: RequestRef) -> PyRequest {
        PyRequest::new(req, Payload::ObjRecv)
    }

    fn from_handle(handle: Option<Arc<Handle>>) -> PyRequest {
        PyRequest {
            handle: Mutex::new(handle),
            constant: false,
        }
    }

    /// `MPI.REQUEST_NULL`.
    pub fn null_constant() -> PyRequest {
        PyRequest {
            handle: Mutex::new(None),
            constant: true,
        }
    }

    fn shared(&self) -> Option<Arc<Handle>> {
        lock(&self.handle).clone()
    }

    /// Non-null and, if persistent, started.
    fn is_active(&self) -> bool {
        self.shared().is_some_and(|h| lock(&h.active).is_some())
    }

    /// The runtime request, when active.
    fn current(&self) -> Option<RequestRef> {
        self.shared().and_then(|h| h.current())
    }

    /// Finishes the operation in flight, whose runtime request `req` has
    /// completed with `outcome`: takes it out of the handle, makes this
    /// object null unless persistent, and runs the completion work.
    fn finish(
        &self,
        py: Python<'_>,
        h: &Arc<Handle>,
        outcome: oxmpi::Result<Status>,
    ) -> PyResult<Completion> {
        let taken = lock(&h.active).take();
        if !h.is_persistent() {
            *lock(&self.handle) = None;
        }
        let Some(active) = taken else {
            // Another thread completed it first.
            return Ok(Completion::empty());
        };
        if let Kind::Persistent(op) = &h.kind {
            match &**op {
                Persistent::Recv { msg, .. } => {
                    if let Some(p) = &msg.packed {
                        // SAFETY: the receive has completed (it was packed
                        // afresh at its start, so whatever it did not deliver
                        // unpacks unchanged).
                        unsafe { p.unpack() };
                    }
                }
                // SAFETY: the collective has completed (its copies were
                // packed afresh at its start, as for a receive).
                Persistent::Collective(pc) => unsafe { pc.unpack() },
                _ => {}
            }
        }
        let st = match outcome {
            Ok(st) => st,
            Err(e) => return Err(crate::errors::to_pyerr(e)),
        };
        let mut done = Completion {
            status: st.into(),
            obj: None,
        };
        match &active.payload {
            Payload::ObjRecv if !st.cancelled => {
                done.obj = Some(unpickle_owned(py, active.req.take_data(), &st)?.unbind());
            }
            Payload::Greq(g) => {
                done.status = g.query(py)?;
                g.free(py)?;
                done.obj = lock(&g.result).take();
            }
            _ => {}
        }
        Ok(done)
    }

    /// Completes without blocking if possible (`Test`); None if not yet.
    fn poll(&self, py: Python<'_>) -> PyResult<Option<Completion>> {
        let Some(h) = self.shared() else {
            return Ok(Some(Completion::empty()));
        };
        let Some(r) = h.current() else {
            return Ok(Some(Completion::empty()));
        };
        match r.test() {
            Ok(None) => Ok(None),
            Ok(Some(st)) => self.finish(py, &h, Ok(st)).map(Some),
            Err(e) => self.finish(py, &h, Err(e)).map(Some),
        }
    }

    /// Completes if the runtime says it is complete, without progress.
    fn poll_ready(&self, py: Python<'_>) -> PyResult<Option<Completion>> {
        match self.current() {
            Some(r) if !r.is_complete() => Ok(None),
            _ => self.poll(py),
        }
    }

    /// Completes, blocking with the GIL released (`Wait`).
    pub fn complete(&self, py: Python<'_>) -> PyResult<Completion> {
        let Some(h) = self.shared() else {
            return Ok(Completion::empty());
        };
        let Some(r) = h.current() else {
            return Ok(Completion::empty());
        };
        let outcome = if r.is_complete() {
            r.wait()
        } else {
            py.detach(|| r.wait())
        };
        self.finish(py, &h, outcome)
    }

    /// Starts an inactive persistent request.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        let Some(h) = self.shared() else {
            return Err(mpi_error(
                py,
                class::ERR_REQUEST,
                "invalid request: cannot start REQUEST_NULL",
            ));
        };
        let Kind::Persistent(op) = &h.kind else {
            return Err(mpi_error(
                py,
                class::ERR_REQUEST,
                "invalid request: only persistent requests can be started",
            ));
        };
        let mut active = lock(&h.active);
        if active.is_some() {
            return Err(mpi_error(
                py,
                class::ERR_REQUEST,
                "invalid request: the persistent request is already active",
            ));
        }
        if let Some(p) = op.msg().and_then(|m| m.packed.as_ref()) {
            // SAFETY: the request is inactive (checked above), so no
            // operation uses its packed copy.
            unsafe { p.repack() };
        }
        let req = match &**op {
            Persistent::Send {
                comm,
                msg,
                dest,
                tag,
                mode,
            } => comm.isend(&[msg.raw], *dest, *tag, *mode).py()?,
            Persistent::Recv {
                comm,
                msg,
                source,
                tag,
            } => comm.irecv(msg.raw, *source, *tag).py()?,
            Persistent::Bsend {
                comm,
                msg,
                dest,
                tag,
            } => {
                // Complete once the message is in the attached buffer.
                crate::bsend::bsend(py, comm, &[msg.raw], *dest, *tag)?;
                Arc::new(AllOf::new(Vec::new(), None))
            }
            Persistent::Collective(pc) => {
                for p in &pc.packs {
                    // SAFETY: the request is inactive (checked above), so no
                    // operation uses its packed copies.
                    unsafe { p.repack() };
                }
                (pc.start)().py()?
            }
        };
        *active = Some(Active {
            req,
            payload: Payload::Keep(Box::new(op.clone())),
        });
        Ok(())
    }
}

/// Several runtime requests completing as one (Isendrecv, Iflush_buffer):
/// complete when all are; the status is that of part `status_of` (the
/// receive), else the empty status.
pub struct AllOf {
    parts: Vec<RequestRef>,
    status_of: Option<usize>,
    /// The status when no part gives it.
    otherwise: Status,
}

impl AllOf {
    pub fn new(parts: Vec<RequestRef>, status_of: Option<usize>) -> AllOf {
        AllOf {
            parts,
            status_of,
            otherwise: Status {
                source: oxmpi::backend::ANY_SOURCE,
                tag: oxmpi::backend::ANY_TAG,
                ..Status::default()
            },
        }
    }

    /// A receive from PROC_NULL: complete, with the PROC_NULL status.
    pub fn proc_null() -> AllOf {
        AllOf {
            parts: Vec::new(),
            status_of: None,
            otherwise: Status::proc_null(),
        }
    }

    fn status(&self, each: &[Status]) -> Status {
        match self.status_of {
            Some(i) => each[i],
            None => self.otherwise,
        }
    }
}

impl Request for AllOf {
    fn test(&self) -> oxmpi::Result<Option<Status>> {
        for p in &self.parts {
            if !p.is_complete() && p.get_status().is_none() {
                return Ok(None);
            }
        }
        self.wait().map(Some)
    }

    /// Waits for every part, even after one fails; the first error wins.
    fn wait(&self) -> oxmpi::Result<Status> {
        let mut each = Vec::with_capacity(self.parts.len());
        let mut first_err = None;
        for p in &self.parts {
            match p.wait() {
                Ok(st) => each.push(st),
                Err(e) => {
                    each.push(Status::default());
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(self.status(&each)),
        }
    }

    fn is_complete(&self) -> bool {
        self.parts.iter().all(|p| p.is_complete())
    }

    fn cancel(&self) -> oxmpi::Result<()> {
        for p in &self.parts {
            p.cancel()?;
        }
        Ok(())
    }

    fn get_status(&self) -> Option<Status> {
        let each: Option<Vec<Status>> = self.parts.iter().map(|p| p.get_status()).collect();
        each.map(|e| self.status(&e))
    }

    fn take_data(&self) -> Option<Vec<u8>> {
        self.parts.get(self.status_of?)?.take_data()
    }
}

/// Creates a persistent request (`Send_init`, `Recv_init`, ...).
pub fn new_prequest(py: Python<'_>, mut op: Persistent) -> PyResult<Py<PyPrequest>> {
    if let Some(p) = op.msg_mut().and_then(|m| m.packed.as_mut()) {
        p.make_persistent();
    }
    let base = PyRequest::from_handle(Some(Handle::new(Kind::Persistent(Arc::new(op)), None)));
    Py::new(py, PyClassInitializer::from(base).add_subclass(PyPrequest))
}

/// The object of a received pickle (None for an empty message).
pub fn unpickle_owned<'py>(
    py: Python<'py>,
    data: Option<Vec<u8>>,
    st: &Status,
) -> PyResult<Bound<'py, PyAny>> {
    // As mpi4py: no message (PROC_NULL, a cancelled receive) or an empty
    // one unpickles to None.
    if st.source == PROC_NULL || st.cancelled {
        return Ok(py.None().into_bound(py));
    }
    match data {
        Some(d) if !d.is_empty() => pickle::loads_owned(py, d),
        _ => Ok(py.None().into_bound(py)),
    }
}

/// Receives an object from (source, tag) on `comm`.
pub fn recv_object<'py>(
    py: Python<'py>,
    comm: &CommRef,
    source: i32,
    tag: i32,
) -> PyResult<(Bound<'py, PyAny>, Status)> {
    let req = comm.irecv_owned(source, tag).py()?;
    let r = req.clone();
    let wait = move || match r.wait() {
        Ok(st) => Ok(st),
        Err(e) => {
            // A receive whose wait failed (a peer failed, or Ctrl-C) stays
            // posted: withdraw it, so that no later message vanishes into
            // it. If one matched meanwhile after a process failure, that is
            // the answer; an interrupt is never swallowed.
            let _ = r.cancel();
            let failure =
                e.class() == class::ERR_PROC_FAILED || e.class() == class::ERR_PROC_FAILED_PENDING;
            match r.wait() {
                Ok(st) if failure && !st.cancelled && st.error == 0 => Ok(st),
                _ => Err(e),
            }
        }
    };
    let st = if req.is_complete() {
        wait().py()?
    } else {
        blocking(py, wait)?
    };
    Ok((unpickle_owned(py, req.take_data(), &st)?, st))
}

// ------------------------------------------------------ request arrays

fn borrow_all<'py>(reqs: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyRequest>>> {
    reqs.try_iter()?
        .map(|r| {
            r?.cast_into::<PyRequest>()
                .map_err(|e| PyTypeError::new_err(e.to_string()))
        })
        .collect()
}

/// mpi4py's `_p_rs.release(statuses)`: a list too short for `outcount`
/// statuses grows; then the first `min(len(requests), len(statuses))`
/// entries receive `sts`.
fn fill_statuses(
    statuses: Option<&Bound<'_, PyAny>>,
    outcount: Option<usize>,
    sts: &[RawStatus],
) -> PyResult<()> {
    let (Some(statuses), Some(outcount)) = (statuses, outcount) else {
        return Ok(());
    };
    if statuses.is_none() {
        return Ok(());
    }
    let py = statuses.py();
    let mut ns = statuses.len()?;
    if outcount > ns {
        if let Ok(l) = statuses.cast::<PyList>() {
            for _ in ns..outcount {
                l.append(Py::new(
                    py,
                    PyStatus {
                        raw: RawStatus::EMPTY,
                    },
                )?)?;
            }
            ns = outcount;
        }
    }
    for (i, st) in sts.iter().enumerate().take(ns) {
        let item = statuses.get_item(i)?;
        let s = item
            .cast::<PyStatus>()
            .map_err(|e| PyTypeError::new_err(e.to_string()))?;
        s.borrow_mut().raw = *st;
    }
    Ok(())
}

/// Blocks (GIL released) until one of the active requests' runtime
/// requests is complete.
fn block_until_any(py: Python<'_>, pending: Vec<RequestRef>) -> PyResult<()> {
    if pending.iter().any(|r| r.is_complete()) {
        return Ok(());
    }
    let eng = engine(py)?;
    blocking(py, || {
        eng.progress_until(&mut || pending.iter().any(|r| r.is_complete()))
    })
}

/// Waitany: index and completion of one active request; None if none is
/// active.
fn wait_any(
    py: Python<'_>,
    reqs: &[Bound<'_, PyRequest>],
) -> PyResult<Option<(usize, Completion)>> {
    loop {
        let mut pending = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            let Some(rr) = r.get().current() else {
                continue;
            };
            if rr.is_complete() {
                if let Some(c) = r.get().poll(py)? {
                    return Ok(Some((i, c)));
                }
            }
            pending.push(rr);
        }
        if pending.is_empty() {
            return Ok(None);
        }
        block_until_any(py, pending)?;
    }
}

/// Testany after one round of progress.
fn test_any(
    py: Python<'_>,
    reqs: &[Bound<'_, PyRequest>],
) -> PyResult<(Option<(usize, Completion)>, bool)> {
    engine(py)?.progress();
    let mut any_active = false;
    for (i, r) in reqs.iter().enumerate() {
        if !r.get().is_active() {
            continue;
        }
        any_active = true;
        if let Some(c) = r.get().poll_ready(py)? {
            return Ok((Some((i, c)), true));
        }
    }
    Ok((None, !any_active))
}

/// Completes every active request that is complete; None if none is
/// active.
fn collect_some(
    py: Python<'_>,
    reqs: &[Bound<'_, PyRequest>],
) -> PyResult<Option<Vec<(usize, Completion)>>> {
    let mut any_active = false;
    let mut done = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        if !r.get().is_active() {
            continue;
        }
        any_active = true;
        if let Some(c) = r.get().poll_ready(py)? {
            done.push((i, c));
        }
    }
    Ok(any_active.then_some(done))
}

fn wait_some(
    py: Python<'_>,
    reqs: &[Bound<'_, PyRequest>],
) -> PyResult<Option<Vec<(usize, Completion)>>> {
    loop {
        match collect_some(py, reqs)? {
            None => return Ok(None),
            Some(d) if !d.is_empty() => return Ok(Some(d)),
            Some(_) => {}
        }
        let pending: Vec<RequestRef> = reqs.iter().filter_map(|r| r.get().current()).collect();
        block_until_any(py, pending)?;
    }
}

/// Completes all, in order, even if one fails; the first error is
/// raised after all are complete.
fn wait_all(py: Python<'_>, reqs: &[Bound<'_, PyRequest>]) -> PyResult<Vec<Completion>> {
    let mut out = Vec::with_capacity(reqs.len());
    let mut first_err = None;
    for r in reqs {
        match r.get().complete(py) {
            Ok(c) => out.push(c),
            Err(e) => {
                out.push(Completion::empty());
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Whether every active request is complete (after one round of
/// progress).
fn all_ready(py: Python<'_>, reqs: &[Bound<'_, PyRequest>]) -> PyResult<bool> {
    let ready = || {
        reqs.iter()
            .all(|r| r.get().current().is_none_or(|q| q.is_complete()))
    };
    if ready() {
        return Ok(true);
    }
    engine(py)?.progress();
    Ok(ready())
}

fn statuses_of(done: &[Completion]) -> Vec<RawStatus> {
    done.iter().map(|c| c.status).collect()
}

fn objs_of(py: Python<'_>, done: Vec<Completion>) -> Vec<Py<PyAny>> {
    done.into_iter()
        .map(|c| c.obj.unwrap_or_else(|| py.None()))
        .collect()
}

/// Waitsome/Testsome results: (indices, statuses padded to the number of
/// requests, objects).
fn split_some(
    py: Python<'_>,
    n: usize,
    done: Vec<(usize, Completion)>,
) -> (Vec<usize>, Vec<RawStatus>, Vec<Py<PyAny>>) {
    let idx = done.iter().map(|(i, _)| *i).collect();
    let mut sts: Vec<RawStatus> = done.iter().map(|(_, c)| c.status).collect();
    sts.resize(n.max(sts.len()), RawStatus::EMPTY);
    let objs = done
        .into_iter()
        .map(|(_, c)| c.obj.unwrap_or_else(|| py.None()))
        .collect();
    (idx, sts, objs)
}

fn get_status_of(r: &PyRequest) -> Option<RawStatus> {
    match r.current() {
        None => Some(RawStatus::EMPTY),
        Some(q) => q.get_status().map(RawStatus::from),
    }
}

#[pymethods]
impl PyRequest {
    #[new]
    #[pyo3(signature = (request=None))]
    fn py_new(request: Option<&Bound<'_, PyRequest>>) -> PyRequest {
        PyRequest::from_handle(request.and_then(|r| r.get().shared()))
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(o) = other.cast::<PyRequest>() else {
            return Ok(py.NotImplemented());
        };
        let eq = match (self.shared(), o.get().shared()) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(&a, &b),
            _ => false,
        };
        let r = match op {
            CompareOp::Eq => eq,
            CompareOp::Ne => !eq,
            _ => return Err(PyTypeError::new_err("unorderable type 'oxmpi.MPI.Request'")),
        };
        Ok(r.into_pyobject(py)?.to_owned().into_any().unbind())
    }

    fn __bool__(&self) -> bool {
        self.shared().is_some()
    }

    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if slf.get().shared().is_some() {
            return Err(PyValueError::new_err(format!(
                "cannot serialize '{}' instance",
                slf.get_type().name()?
            )));
        }
        if slf.get().constant {
            return Ok("REQUEST_NULL".into_pyobject(py)?.into_any().unbind());
        }
        let newobj = py.import("copyreg")?.getattr("__newobj__")?;
        let null = py.import("oxmpi.MPI")?.getattr("REQUEST_NULL")?;
        Ok((newobj, (slf.get_type(), null))
            .into_pyobject(py)?
            .into_any()
            .unbind())
    }

    /// The MPI handle (an integer naming this request in this process).
    #[getter(handle)]
    fn handle_id(&self) -> u64 {
        self.shared().map_or(0, |h| h.id)
    }

    #[classmethod]
    fn fromhandle(cls: &Bound<'_, PyType>, handle: u64) -> PyResult<Py<PyAny>> {
        from_id(cls, handle)
    }

    fn toint(&self) -> u64 {
        self.shared().map_or(0, |h| h.id)
    }

    #[classmethod]
    fn fromint(cls: &Bound<'_, PyType>, arg: u64) -> PyResult<Py<PyAny>> {
        from_id(cls, arg)
    }

    fn py2f(&self) -> u64 {
        self.shared().map_or(0, |h| h.id)
    }

    #[classmethod]
    fn f2py(cls: &Bound<'_, PyType>, arg: u64) -> PyResult<Py<PyAny>> {
        from_id(cls, arg)
    }

    /// Frees the request if it is not null (never REQUEST_NULL itself).
    fn free(&self, py: Python<'_>) -> PyResult<()> {
        if self.constant || self.shared().is_none() {
            return Ok(());
        }
        self.Free(py)
    }

    // ----------------------------------------------------- completion

    #[pyo3(signature = (status=None))]
    fn Wait(&self, py: Python<'_>, status: Option<&Bound<'_, PyStatus>>) -> PyResult<bool> {
        let c = self.complete(py)?;
        PyStatus::fill_raw(status, c.status);
        Ok(true)
    }

    #[pyo3(signature = (status=None))]
    fn Test(&self, py: Python<'_>, status: Option<&Bound<'_, PyStatus>>) -> PyResult<bool> {
        match self.poll(py)? {
            Some(c) => {
                PyStatus::fill_raw(status, c.status);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// MPI_Request_get_status: complete? (fills `status`), without freeing.
    #[pyo3(signature = (status=None))]
    fn Get_status(&self, status: Option<&Bound<'_, PyStatus>>) -> bool {
        match get_status_of(self) {
            Some(st) => {
                PyStatus::fill_raw(status, st);
                true
            }
            None => false,
        }
    }

    #[pyo3(signature = (status=None))]
    fn get_status(&self, status: Option<&Bound<'_, PyStatus>>) -> bool {
        self.Get_status(status)
    }

    #[pyo3(signature = (status=None))]
    fn wait(&self, py: Python<'_>, status: Option<&Bound<'_, PyStatus>>) -> PyResult<Py<PyAny>> {
        let c = self.complete(py)?;
        PyStatus::fill_raw(status, c.status);
        Ok(c.obj.unwrap_or_else(|| py.None()))
    }

    #[pyo3(signature = (status=None))]
    fn test(
        &self,
        py: Python<'_>,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<(bool, Py<PyAny>)> {
        match self.poll(py)? {
            Some(c) => {
                PyStatus::fill_raw(status, c.status);
                Ok((true, c.obj.unwrap_or_else(|| py.None())))
            }
            None => Ok((false, py.None())),
        }
    }

    fn Cancel(&self, py: Python<'_>) -> PyResult<()> {
        let Some(h) = self.shared() else {
            return Err(mpi_error(
                py,
                class::ERR_REQUEST,
                "invalid request: cannot cancel REQUEST_NULL",
            ));
        };
        if let Kind::Generalized(g) = &h.kind {
            return g.cancel(py);
        }
        if let Some(r) = h.current() {
            r.cancel().py()?;
        }
        Ok(())
    }

    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        self.Cancel(py)
    }

    /// MPI_Request_free: the request becomes null; an operation in flight
    /// still completes (its buffers stay alive until then).
    fn Free(&self, py: Python<'_>) -> PyResult<()> {
        let Some(h) = lock(&self.handle).take() else {
            return Err(mpi_error(
                py,
                class::ERR_REQUEST,
                "invalid request: cannot free REQUEST_NULL",
            ));
        };
        if let Kind::Generalized(g) = &h.kind {
            if g.completed() {
                lock(&h.active).take();
                g.free(py)?;
            }
        }
        if let Some(a) = lock(&h.active).take() {
            orphan(a);
        }
        Ok(())
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let name = slf.get_type().name()?;
        Ok(match slf.get().shared() {
            None => format!("<oxmpi.MPI.{name} REQUEST_NULL>"),
            Some(h) => format!("<oxmpi.MPI.{name} handle={}>", h.id),
        })
    }

    // ---------------------------------------------- multiple completion

    #[classmethod]
    #[pyo3(signature = (requests, status=None))]
    fn Waitany(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<i32> {
        let reqs = borrow_all(requests)?;
        Ok(match wait_any(py, &reqs)? {
            Some((i, c)) => {
                PyStatus::fill_raw(status, c.status);
                i as i32
            }
            None => {
                PyStatus::fill_raw(status, RawStatus::EMPTY);
                UNDEFINED
            }
        })
    }

    #[classmethod]
    #[pyo3(signature = (requests, status=None))]
    fn waitany(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<(i32, Py<PyAny>)> {
        let reqs = borrow_all(requests)?;
        Ok(match wait_any(py, &reqs)? {
            Some((i, c)) => {
                PyStatus::fill_raw(status, c.status);
                (i as i32, c.obj.unwrap_or_else(|| py.None()))
            }
            None => {
                PyStatus::fill_raw(status, RawStatus::EMPTY);
                (UNDEFINED, py.None())
            }
        })
    }

    #[classmethod]
    #[pyo3(signature = (requests, status=None))]
    fn Testany(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<(i32, bool)> {
        let reqs = borrow_all(requests)?;
        Ok(match test_any(py, &reqs)? {
            (Some((i, c)), _) => {
                PyStatus::fill_raw(status, c.status);
                (i as i32, true)
            }
            (None, flag) => {
                if flag {
                    PyStatus::fill_raw(status, RawStatus::EMPTY);
                }
                (UNDEFINED, flag)
            }
        })
    }

    #[classmethod]
    #[pyo3(signature = (requests, status=None))]
    fn testany(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<(i32, bool, Py<PyAny>)> {
        let reqs = borrow_all(requests)?;
        Ok(match test_any(py, &reqs)? {
            (Some((i, c)), _) => {
                PyStatus::fill_raw(status, c.status);
                (i as i32, true, c.obj.unwrap_or_else(|| py.None()))
            }
            (None, flag) => {
                if flag {
                    PyStatus::fill_raw(status, RawStatus::EMPTY);
                }
                (UNDEFINED, flag, py.None())
            }
        })
    }

    #[classmethod]
    #[pyo3(signature = (requests, status=None))]
    fn Get_status_any(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<(i32, bool)> {
        let reqs = borrow_all(requests)?;
        engine(py)?.progress();
        let mut any_active = false;
        for (i, r) in reqs.iter().enumerate() {
            let Some(q) = r.get().current() else { continue };
            any_active = true;
            if let Some(st) = q.get_status() {
                PyStatus::fill(status, st);
                return Ok((i as i32, true));
            }
        }
        if !any_active {
            PyStatus::fill_raw(status, RawStatus::EMPTY);
        }
        Ok((UNDEFINED, !any_active))
    }

    #[classmethod]
    #[pyo3(signature = (requests, status=None))]
    fn get_status_any(
        cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        status: Option<&Bound<'_, PyStatus>>,
    ) -> PyResult<(i32, bool)> {
        Self::Get_status_any(cls, py, requests, status)
    }

    #[classmethod]
    #[pyo3(signature = (requests, statuses=None))]
    fn Waitall(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        statuses: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let reqs = borrow_all(requests)?;
        let done = wait_all(py, &reqs)?;
        fill_statuses(statuses, Some(reqs.len()), &statuses_of(&done))?;
        Ok(true)
    }

    #[classmethod]
    #[pyo3(signature = (requests, statuses=None))]
    fn waitall(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        statuses: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let reqs = borrow_all(requests)?;
        let done = wait_all(py, &reqs)?;
        fill_statuses(statuses, Some(reqs.len()), &statuses_of(&done))?;
        Ok(objs_of(py, done))
    }

    #[classmethod]
    #[pyo3(signature = (requests, statuses=None))]
    fn Testall(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        statuses: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let reqs = borrow_all(requests)?;
        if !all_ready(py, &reqs)? {
            return Ok(false);
        }
        let done = wait_all(py, &reqs)?;
        fill_statuses(statuses, Some(reqs.len()), &statuses_of(&done))?;
        Ok(true)
    }

    #[classmethod]
    #[pyo3(signature = (requests, statuses=None))]
    fn testall(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        statuses: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(bool, Option<Vec<Py<PyAny>>>)> {
        let reqs = borrow_all(requests)?;
        if !all_ready(py, &reqs)? {
            return Ok((false, None));
        }
        let done = wait_all(py, &reqs)?;
        fill_statuses(statuses, Some(reqs.len()), &statuses_of(&done))?;
        Ok((true, Some(objs_of(py, done))))
    }

    #[classmethod]
    #[pyo3(signature = (requests, statuses=None))]
    fn Get_status_all(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        statuses: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let reqs = borrow_all(requests)?;
        engine(py)?.progress();
        let mut sts = Vec::with_capacity(reqs.len());
        for r in &reqs {
            match get_status_of(r.get()) {
                Some(st) => sts.push(st),
                None => return Ok(false),
            }
        }
        fill_statuses(statuses, Some(reqs.len()), &sts)?;
        Ok(true)
    }

    #[classmethod]
    #[pyo3(signature = (requests, statuses=None))]
    fn get_status_all(
        cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        statuses: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        Self::Get_status_all(cls, py, requests, statuses)
    }

    #[classmethod]
    #[pyo3(signature = (requests, statuses=None))]
    fn Waitsome(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        statuses: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Vec<usize>>> {
        let reqs = borrow_all(requests)?;
        let Some(done) = wait_some(py, &reqs)? else {
            return Ok(None);
        };
        let (idx, sts, _) = split_some(py, reqs.len(), done);
        fill_statuses(statuses, Some(idx.len()), &sts)?;
        Ok(Some(idx))
    }

    #[classmethod]
    #[pyo3(signature = (requests, statuses=None))]
    #[allow(clippy::type_complexity)]
    fn waitsome(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        statuses: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(Option<Vec<usize>>, Option<Vec<Py<PyAny>>>)> {
        let reqs = borrow_all(requests)?;
        let Some(done) = wait_some(py, &reqs)? else {
            return Ok((None, None));
        };
        let (idx, sts, objs) = split_some(py, reqs.len(), done);
        fill_statuses(statuses, Some(idx.len()), &sts)?;
        Ok((Some(idx), Some(objs)))
    }

    #[classmethod]
    #[pyo3(signature = (requests, statuses=None))]
    fn Testsome(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        statuses: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Vec<usize>>> {
        let reqs = borrow_all(requests)?;
        engine(py)?.progress();
        let Some(done) = collect_some(py, &reqs)? else {
            return Ok(None);
        };
        let (idx, sts, _) = split_some(py, reqs.len(), done);
        fill_statuses(statuses, Some(idx.len()), &sts)?;
        Ok(Some(idx))
    }

    #[classmethod]
    #[pyo3(signature = (requests, statuses=None))]
    #[allow(clippy::type_complexity)]
    fn testsome(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        statuses: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(Option<Vec<usize>>, Option<Vec<Py<PyAny>>>)> {
        let reqs = borrow_all(requests)?;
        engine(py)?.progress();
        let Some(done) = collect_some(py, &reqs)? else {
            return Ok((None, None));
        };
        let (idx, sts, objs) = split_some(py, reqs.len(), done);
        fill_statuses(statuses, Some(idx.len()), &sts)?;
        Ok((Some(idx), Some(objs)))
    }

    #[classmethod]
    #[pyo3(signature = (requests, statuses=None))]
    fn Get_status_some(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        statuses: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Vec<usize>>> {
        let reqs = borrow_all(requests)?;
        engine(py)?.progress();
        let mut any_active = false;
        let mut idx = Vec::new();
        let mut sts = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            let Some(q) = r.get().current() else { continue };
            any_active = true;
            if let Some(st) = q.get_status() {
                idx.push(i);
                sts.push(RawStatus::from(st));
            }
        }
        if !any_active {
            return Ok(None);
        }
        sts.resize(reqs.len().max(sts.len()), RawStatus::EMPTY);
        fill_statuses(statuses, Some(idx.len()), &sts)?;
        Ok(Some(idx))
    }

    #[classmethod]
    #[pyo3(signature = (requests, statuses=None))]
    fn get_status_some(
        cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
        statuses: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Vec<usize>>> {
        Self::Get_status_some(cls, py, requests, statuses)
    }
}

/// A request object of class `cls` naming handle `id` (0: null).
fn from_id(cls: &Bound<'_, PyType>, id: u64) -> PyResult<Py<PyAny>> {
    let py = cls.py();
    let handle = if id == 0 {
        None
    } else {
        Some(Handle::lookup(id).ok_or_else(|| {
            PyValueError::new_err(format!("no request has handle {id} in this process"))
        })?)
    };
    let base = PyRequest::from_handle(handle);
    if cls.is_subclass_of::<PyPrequest>()? {
        return Ok(
            Py::new(py, PyClassInitializer::from(base).add_subclass(PyPrequest))?.into_any(),
        );
    }
    if cls.is_subclass_of::<PyGrequest>()? {
        return Ok(
            Py::new(py, PyClassInitializer::from(base).add_subclass(PyGrequest))?.into_any(),
        );
    }
    Ok(Py::new(py, base)?.into_any())
}

/// Checks `MPI.Prequest(request)` / `MPI.Grequest(request)`: a non-null
/// argument must be of the class being made.
fn check_copy<T: pyo3::type_object::PyTypeInfo>(
    request: Option<&Bound<'_, PyRequest>>,
    what: &str,
) -> PyResult<PyRequest> {
    let handle = request.and_then(|r| r.get().shared());
    if let (Some(r), Some(_)) = (request, &handle) {
        if !r.is_instance_of::<T>() {
            return Err(PyTypeError::new_err(format!(
                "Argument 'request' has incorrect type (expected {what}, got {})",
                r.get_type().name()?
            )));
        }
    }
    Ok(PyRequest::from_handle(handle))
}

// ------------------------------------------------------------ Prequest

/// A persistent request (`MPI.Prequest`, MPI-4.1 §3.9).
#[pyclass(module = "oxmpi.MPI", name = "Prequest", extends = PyRequest, subclass, frozen)]
pub struct PyPrequest;

#[pymethods]
impl PyPrequest {
    #[new]
    #[pyo3(signature = (request=None))]
    fn py_new(request: Option<&Bound<'_, PyRequest>>) -> PyResult<(PyPrequest, PyRequest)> {
        Ok((PyPrequest, check_copy::<PyPrequest>(request, "Prequest")?))
    }

    fn Start(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.as_super().get().start(slf.py())
    }

    #[classmethod]
    fn Startall(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        requests: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        for r in borrow_all(requests)? {
            r.get().start(py)?;
        }
        Ok(())
    }

    #[pyo3(signature = (partition))]
    fn Pready(&self, partition: i32) -> PyResult<()> {
        let _ = partition;
        Err(pyo3::exceptions::PyNotImplementedError::new_err(
            "partitioned communication (MPI_Pready) is not implemented by oxmpi",
        ))
    }

    fn Pready_range(&self, partition_low: i32, partition_high: i32) -> PyResult<()> {
        let _ = (partition_low, partition_high);
        self.Pready(0)
    }

    fn Pready_list(&self, partitions: &Bound<'_, PyAny>) -> PyResult<()> {
        let _ = partitions;
        self.Pready(0)
    }

    fn Parrived(&self, partition: i32) -> PyResult<bool> {
        let _ = partition;
        Err(pyo3::exceptions::PyNotImplementedError::new_err(
            "partitioned communication (MPI_Parrived) is not implemented by oxmpi",
        ))
    }
}

// ------------------------------------------------------------ Grequest

/// The state of a generalized request (MPI-4.1 §13.2): user callbacks and
/// the completion flag that `Complete` sets.
pub struct Greq {
    query_fn: Option<Py<PyAny>>,
    free_fn: Option<Py<PyAny>>,
    cancel_fn: Option<Py<PyAny>>,
    args: Py<PyTuple>,
    kwargs: Option<Py<pyo3::types::PyDict>>,
    done: Mutex<bool>,
    wake: Condvar,
    freed: AtomicBool,
    /// What `complete(obj)` handed over, returned by `wait()`.
    result: Mutex<Option<Py<PyAny>>>,
}

impl Greq {
    fn completed(&self) -> bool {
        *lock(&self.done)
    }

    fn call(
        &self,
        py: Python<'_>,
        f: &Option<Py<PyAny>>,
        lead: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let Some(f) = f else { return Ok(()) };
        let mut args: Vec<Bound<'_, PyAny>> = lead.into_iter().collect();
        args.extend(self.args.bind(py).iter());
        let kwargs = self.kwargs.as_ref().map(|k| k.bind(py).clone());
        f.bind(py)
            .call(PyTuple::new(py, args)?, kwargs.as_ref())
            .map(|_| ())
            .map_err(|e| callback_error(py, e))
    }

    /// The status the query callback reports.
    fn query(&self, py: Python<'_>) -> PyResult<RawStatus> {
        let st = Bound::new(
            py,
            PyStatus {
                raw: RawStatus {
                    error: 0,
                    ..RawStatus::EMPTY
                },
            },
        )?;
        self.call(py, &self.query_fn, Some(st.clone().into_any()))?;
        let mut raw = st.borrow().raw;
        if self.cancel_fn.is_none() {
            raw.cancelled = 0;
        }
        Ok(raw)
    }

    fn free(&self, py: Python<'_>) -> PyResult<()> {
        if self.freed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.call(py, &self.free_fn, None)
    }

    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        let completed = self.completed();
        self.call(
            py,
            &self.cancel_fn,
            Some(completed.into_pyobject(py)?.to_owned().into_any()),
        )
    }
}

/// An exception raised by a generalized request's callback becomes an
/// MPI error, as in mpi4py: its traceback is printed, an `MPI.Exception`
/// keeps its class and anything else is ERR_OTHER.
fn callback_error(py: Python<'_>, e: PyErr) -> PyErr {
    e.print(py);
    let class = e
        .value(py)
        .call_method0("Get_error_class")
        .and_then(|c| c.extract::<i32>())
        .ok()
        .filter(|_| {
            py.import("oxmpi.MPI")
                .and_then(|m| m.getattr("Exception"))
                .is_ok_and(|t| e.is_instance(py, &t))
        })
        .unwrap_or(class::ERR_OTHER);
    mpi_error(py, class, "error in a generalized request callback")
}

/// The runtime side of a generalized request: complete once `Complete`
/// was called.
struct GreqRequest(Arc<Greq>);

impl Request for GreqRequest {
    fn test(&self) -> oxmpi::Result<Option<Status>> {
        Ok(self.0.completed().then(Status::default))
    }
    fn wait(&self) -> oxmpi::Result<Status> {
        let mut done = lock(&self.0.done);
        while !*done {
            done = self
                .0
                .wake
                .wait_timeout(done, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(Status::default())
    }
    fn is_complete(&self) -> bool {
        self.0.completed()
    }
    fn cancel(&self) -> oxmpi::Result<()> {
        Ok(())
    }
    fn get_status(&self) -> Option<Status> {
        self.0.completed().then(Status::default)
    }
}

/// A generalized request (`MPI.Grequest`).
#[pyclass(module = "oxmpi.MPI", name = "Grequest", extends = PyRequest, subclass, frozen)]
pub struct PyGrequest;

#[pymethods]
impl PyGrequest {
    #[new]
    #[pyo3(signature = (request=None))]
    fn py_new(request: Option<&Bound<'_, PyRequest>>) -> PyResult<(PyGrequest, PyRequest)> {
        Ok((PyGrequest, check_copy::<PyGrequest>(request, "Grequest")?))
    }

    #[classmethod]
    #[pyo3(signature = (query_fn=None, free_fn=None, cancel_fn=None, args=None, kwargs=None))]
    fn Start(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        query_fn: Option<Py<PyAny>>,
        free_fn: Option<Py<PyAny>>,
        cancel_fn: Option<Py<PyAny>>,
        args: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyGrequest>> {
        let none_if = |f: Option<Py<PyAny>>| f.filter(|f| !f.is_none(py));
        let args = match args {
            Some(a) if !a.is_none() => {
                PyTuple::new(py, a.try_iter()?.collect::<PyResult<Vec<_>>>()?)?
            }
            _ => PyTuple::empty(py),
        };
        let kwargs = match kwargs {
            Some(k) if !k.is_none() => Some(pyo3::types::PyDict::from_sequence(
                &k.call_method0("items")?,
            )?),
            _ => None,
        };
        let g = Arc::new(Greq {
            query_fn: none_if(query_fn),
            free_fn: none_if(free_fn),
            cancel_fn: none_if(cancel_fn),
            args: args.unbind(),
            kwargs: kwargs.map(Bound::unbind),
            done: Mutex::new(false),
            wake: Condvar::new(),
            freed: AtomicBool::new(false),
            result: Mutex::new(None),
        });
        let active = Active {
            req: Arc::new(GreqRequest(g.clone())),
            payload: Payload::Greq(g.clone()),
        };
        let base = PyRequest::from_handle(Some(Handle::new(Kind::Generalized(g), Some(active))));
        Py::new(py, PyClassInitializer::from(base).add_subclass(PyGrequest))
    }

    /// Notifies that the operation is complete.
    fn Complete(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let Some(h) = slf.as_super().get().shared() else {
            return Err(mpi_error(
                py,
                class::ERR_REQUEST,
                "invalid request: REQUEST_NULL",
            ));
        };
        let Kind::Generalized(g) = &h.kind else {
            return Err(mpi_error(
                py,
                class::ERR_REQUEST,
                "invalid request: not generalized",
            ));
        };
        *lock(&g.done) = true;
        g.wake.notify_all();
        Ok(())
    }

    #[pyo3(signature = (obj=None))]
    fn complete(slf: &Bound<'_, Self>, obj: Option<Py<PyAny>>) -> PyResult<()> {
        if let Some(h) = slf.as_super().get().shared() {
            if let Kind::Generalized(g) = &h.kind {
                *lock(&g.result) = obj;
            }
        }
        Self::Complete(slf)
    }
}
