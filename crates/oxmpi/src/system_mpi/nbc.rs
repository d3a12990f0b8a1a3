//! Nonblocking collectives, virtual topologies, neighbourhood collectives
//! and the point-to-point rounds of intercommunicator collectives, on the
//! system MPI library.
//!
//! Nonblocking collectives are the library's (`MPI_Ibcast`, `MPI_Igatherv`,
//! ...). MPI lets the library read the count, displacement and datatype
//! arrays of such a call until it completes, so the request keeps them,
//! and keeps the user operation of a reduction (see `op.rs`) until then.
//!
//! A topology is attached by making the library's own topology
//! communicator from the wrapped one, without reordering (same ranks), so
//! that neighbourhood collectives are `MPI_(I)neighbor_alltoallw` on it.
//! Every block travels as its own (count, datatype) at an absolute address
//! (relative to `MPI_BOTTOM`), which also carries blocks past INT_MAX bytes.

use std::any::Any;
use std::ffi::{c_int, c_void};
use std::mem::ManuallyDrop;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::{Blocks, Collective, RawBuf, Request, RequestRef, Status, PROC_NULL};
use crate::coll::Transport;
use crate::error::{Error, Result};
use crate::topo::Topology;

use super::abi::{in_place, lib_buf, Abi, MpiAint, MpiCount};
use super::comm::{not_implemented, SystemComm};
use super::engine::Core;
use super::op::{self as sysop, LibOp};
use super::request::{SysRequest, Wire};

const INT_MAX: usize = c_int::MAX as usize;

/// What a nonblocking call's library request may still read or write.
type Keep = Vec<Box<dyn Any + Send + Sync>>;

/// A nonblocking collective on the library, with what it uses.
struct CollRequest<A: Abi> {
    inner: Arc<SysRequest<A>>,
    keep: Mutex<Option<Keep>>,
    /// The user operation of a reduction: its slot must stay claimed, and
    /// its error is the request's.
    op: Mutex<Option<LibOp<A>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<A: Abi> CollRequest<A> {
    /// Releases what the completed operation used; an error the user
    /// operation raised is the outcome.
    fn settle(&self, outcome: Result<Status>) -> Result<Status> {
        drop(lock(&self.keep).take());
        let op = lock(&self.op).take();
        if let Some(LibOp::User(_)) = &op {
            let core = &self.inner.core();
            core.user_op_collectives.fetch_sub(1, Ordering::AcqRel);
        }
        match op.and_then(|op| op.take_error()) {
            Some(e) => Err(e),
            None => outcome,
        }
    }
}

impl<A: Abi> Request for CollRequest<A> {
    fn test(&self) -> Result<Option<Status>> {
        match self.inner.test() {
            Ok(None) => Ok(None),
            Ok(Some(s)) => self.settle(Ok(s)).map(Some),
            Err(e) => self.settle(Err(e)).map(Some),
        }
    }

    fn wait(&self) -> Result<Status> {
        let outcome = self.inner.wait();
        self.settle(outcome)
    }

    fn is_complete(&self) -> bool {
        self.inner.is_complete()
    }

    fn cancel(&self) -> Result<()> {
        // Collective operations cannot be cancelled (MPI-4.1 §3.8.4).
        Ok(())
    }

    fn get_status(&self) -> Option<Status> {
        self.inner.get_status()
    }
}

impl<A: Abi> Drop for CollRequest<A> {
    fn drop(&mut self) {
        if !self.inner.is_complete() {
            // Dropped while the library may still use them: the arrays
            // and the operation's slot are leaked rather than reused.
            if let Some(k) = lock(&self.keep).take() {
                std::mem::forget(k);
            }
            if let Some(op) = lock(&self.op).take() {
                std::mem::forget(op);
            }
        }
    }
}

/// Several point-to-point requests completing together.
struct MultiRequest<A: Abi> {
    core: Arc<Core<A>>,
    parts: Vec<Arc<SysRequest<A>>>,
}

impl<A: Abi> MultiRequest<A> {
    fn all_done(&self) -> bool {
        // Every part is tested, so that each makes progress.
        let mut all = true;
        for p in &self.parts {
            all &= p.is_complete();
        }
        all
    }

    fn outcome(&self) -> Result<Status> {
        let mut first = Ok(Status::default());
        for p in &self.parts {
            if let Err(e) = p.test() {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

impl<A: Abi> Request for MultiRequest<A> {
    fn test(&self) -> Result<Option<Status>> {
        if self.all_done() {
            self.outcome().map(Some)
        } else {
            Ok(None)
        }
    }

    fn wait(&self) -> Result<Status> {
        if !self.all_done() {
            self.core.wait_until(|| self.all_done())?;
        }
        self.outcome()
    }

    fn is_complete(&self) -> bool {
        self.all_done()
    }

    fn cancel(&self) -> Result<()> {
        Ok(())
    }

    fn get_status(&self) -> Option<Status> {
        if !self.all_done() {
            return None;
        }
        let error = self
            .parts
            .iter()
            .filter_map(|p| p.get_status())
            .map(|s| s.error)
            .find(|&e| e != 0)
            .unwrap_or(0);
        Some(Status {
            error,
            ..Status::default()
        })
    }
}

/// A count for a call without large-count support.
fn int_count(n: usize) -> Result<c_int> {
    if n > INT_MAX {
        return Err(Error::NotImplemented(
            "nonblocking collectives past INT_MAX elements need a library with the MPI-4 \
             large-count functions (MPI_I*_c)"
                .into(),
        ));
    }
    Ok(n as c_int)
}

/// Counts and displacements of a vector collective, as the library takes
/// them: large-count arrays where the call has them.
enum Vecs {
    Large(Vec<MpiCount>, Vec<MpiAint>),
    Int(Vec<c_int>, Vec<c_int>),
}

impl Vecs {
    fn of(b: &Blocks, large: bool) -> Result<Vecs> {
        if large {
            return Ok(Vecs::Large(
                b.counts.iter().map(|&c| c as MpiCount).collect(),
                b.displs.iter().map(|&d| d as MpiAint).collect(),
            ));
        }
        let counts = b
            .counts
            .iter()
            .map(|&c| int_count(c))
            .collect::<Result<_>>()?;
        let displs = b
            .displs
            .iter()
            .map(|&d| int_count(d))
            .collect::<Result<_>>()?;
        Ok(Vecs::Int(counts, displs))
    }

    fn large(&self) -> (*const MpiCount, *const MpiAint) {
        match self {
            Vecs::Large(c, d) => (c.as_ptr(), d.as_ptr()),
            Vecs::Int(..) => unreachable!("large-count arrays asked of int arrays"),
        }
    }

    fn int(&self) -> (*const c_int, *const c_int) {
        match self {
            Vecs::Int(c, d) => (c.as_ptr(), d.as_ptr()),
            Vecs::Large(..) => unreachable!("int arrays asked of large-count arrays"),
        }
    }
}

/// Blocks as `MPI_(I)neighbor_alltoallw` takes them: each its own
/// (count, displacement from MPI_BOTTOM, datatype).
struct WBlocks<'a, A: Abi> {
    counts: Vec<c_int>,
    displs: Vec<MpiAint>,
    types: Vec<A::H>,
    /// Derived datatypes of blocks past INT_MAX bytes; freed on drop (MPI
    /// keeps them alive for operations already started).
    _wires: Vec<Wire<'a, A>>,
}

impl<'a, A: Abi> WBlocks<'a, A> {
    fn of(core: &'a Core<A>, bufs: &[RawBuf]) -> Result<Self> {
        let mut w = WBlocks {
            counts: Vec::with_capacity(bufs.len()),
            displs: Vec::with_capacity(bufs.len()),
            types: Vec::with_capacity(bufs.len()),
            _wires: Vec::new(),
        };
        for b in bufs {
            let wire = Wire::contiguous(core, b.ptr, b.len)?;
            w.counts.push(wire.count);
            // A derived datatype holds absolute addresses already.
            w.displs
                .push(if wire.derived { 0 } else { b.ptr as MpiAint });
            w.types.push(wire.dtype);
            w._wires.push(wire);
        }
        Ok(w)
    }

    /// The arrays, to keep until a nonblocking call completes.
    fn arrays(self) -> Keep {
        let WBlocks {
            counts,
            displs,
            types,
            _wires,
        } = self;
        drop(_wires);
        vec![Box::new(counts), Box::new(displs), Box::new(types)]
    }
}

/// Do two `n`-byte ranges overlap?
fn overlap(a: *const u8, b: *const u8, n: usize) -> bool {
    n > 0 && (a as usize) < (b as usize) + n && (b as usize) < (a as usize) + n
}

impl<A: Abi> SystemComm<A> {
    fn started(&self, req: A::H, keep: Keep, op: Option<LibOp<A>>) -> RequestRef {
        if let Some(LibOp::User(_)) = &op {
            // Undone when the request settles (never, if it is dropped
            // incomplete: the operation may still run).
            self.core.user_op_collectives.fetch_add(1, Ordering::AcqRel);
        }
        Arc::new(CollRequest {
            inner: SysRequest::active(&self.core, req, false, false),
            keep: Mutex::new(Some(keep)),
            op: Mutex::new(op),
        })
    }

    /// The send buffer of a reduction: MPI_IN_PLACE, the buffer, or (where
    /// it overlaps the receive buffer without being it) a copy kept in
    /// `keep`.
    fn reduction_send(
        send: Option<RawBuf>,
        recv: RawBuf,
        nbytes: usize,
        keep: &mut Keep,
    ) -> *const c_void {
        match send {
            None => in_place::<A>(),
            Some(s) if s.ptr == recv.ptr && nbytes > 0 => in_place::<A>(),
            Some(s) if overlap(s.ptr, recv.ptr, nbytes) => {
                // SAFETY: the caller keeps `s` valid for the call.
                let copy = unsafe { s.as_slice()[..nbytes].to_vec() };
                let p = copy.as_ptr().cast();
                keep.push(Box::new(copy));
                p
            }
            Some(s) => lib_buf::<A, _>(s.ptr),
        }
    }

    /// MPI-4.1 §6.12: starts a collective on the library.
    pub(super) fn start_collective(&self, op: Collective) -> Result<RequestRef> {
        if self.inter {
            return Err(not_implemented(
                "nonblocking collectives through the library on intercommunicators",
            ));
        }
        let core = &*self.core;
        let api = &core.api;
        let byte = core.h.byte;
        let h = self.h;
        let mut keep: Keep = Vec::new();
        let mut req = core.h.request_null;
        let is_root = |root: i32| self.rank == root;
        match op {
            Collective::Barrier => {
                // SAFETY: a valid communicator; `req` is an out-pointer.
                let rc = unsafe { (api.MPI_Ibarrier)(h, &mut req) };
                core.check(rc, "MPI_Ibarrier")?;
                Ok(self.started(req, keep, None))
            }
            Collective::Bcast { buf, root } => {
                self.check_root(root)?;
                // SAFETY: the caller keeps `buf` valid until completion.
                let rc = unsafe {
                    match api.MPI_Ibcast_c {
                        Some(f) if buf.len > INT_MAX => f(
                            lib_buf::<A, _>(buf.ptr),
                            buf.len as MpiCount,
                            byte,
                            root,
                            h,
                            &mut req,
                        ),
                        _ => (api.MPI_Ibcast)(
                            lib_buf::<A, _>(buf.ptr),
                            int_count(buf.len)?,
                            byte,
                            root,
                            h,
                            &mut req,
                        ),
                    }
                };
                core.check(rc, "MPI_Ibcast")?;
                Ok(self.started(req, keep, None))
            }
            Collective::Gather { send, recv, root } => {
                self.check_root(root)?;
                let sendp: *const c_void = match send {
                    Some(s) => lib_buf::<A, _>(s.ptr),
                    None if is_root(root) => in_place::<A>(),
                    None => return Err(Error::Arg("IN_PLACE is for the root only".into())),
                };
                let scount = send.map_or(0, |s| s.len);
                let large = api.MPI_Igatherv_c.is_some();
                let v = if is_root(root) {
                    Vecs::of(&recv, large)?
                } else {
                    Vecs::of(&Blocks::contiguous(RawBuf::EMPTY, 0, 0), large)?
                };
                // SAFETY: the caller keeps the buffers valid until
                // completion; the arrays are kept with the request.
                let rc = unsafe {
                    match api.MPI_Igatherv_c {
                        Some(f) => {
                            let (c, d) = v.large();
                            f(
                                sendp,
                                scount as MpiCount,
                                byte,
                                lib_buf::<A, _>(recv.buf.ptr),
                                c,
                                d,
                                byte,
                                root,
                                h,
                                &mut req,
                            )
                        }
                        None => {
                            let (c, d) = v.int();
                            (api.MPI_Igatherv)(
                                sendp,
                                int_count(scount)?,
                                byte,
                                lib_buf::<A, _>(recv.buf.ptr),
                                c,
                                d,
                                byte,
                                root,
                                h,
                                &mut req,
                            )
                        }
                    }
                };
                core.check(rc, "MPI_Igatherv")?;
                keep.push(Box::new(v));
                Ok(self.started(req, keep, None))
            }
            Collective::Scatter { send, recv, root } => {
                self.check_root(root)?;
                let recvp: *mut c_void = match recv {
                    Some(r) => lib_buf::<A, _>(r.ptr),
                    None if is_root(root) => in_place::<A>(),
                    None => return Err(Error::Arg("IN_PLACE is for the root only".into())),
                };
                let rcount = recv.map_or(0, |r| r.len);
                let large = api.MPI_Iscatterv_c.is_some();
                let v = if is_root(root) {
                    Vecs::of(&send, large)?
                } else {
                    Vecs::of(&Blocks::contiguous(RawBuf::EMPTY, 0, 0), large)?
                };
                // SAFETY: as for Gather.
                let rc = unsafe {
                    match api.MPI_Iscatterv_c {
                        Some(f) => {
                            let (c, d) = v.large();
                            f(
                                lib_buf::<A, _>(send.buf.ptr),
                                c,
                                d,
                                byte,
                                recvp,
                                rcount as MpiCount,
                                byte,
                                root,
                                h,
                                &mut req,
                            )
                        }
                        None => {
                            let (c, d) = v.int();
                            (api.MPI_Iscatterv)(
                                lib_buf::<A, _>(send.buf.ptr),
                                c,
                                d,
                                byte,
                                recvp,
                                int_count(rcount)?,
                                byte,
                                root,
                                h,
                                &mut req,
                            )
                        }
                    }
                };
                core.check(rc, "MPI_Iscatterv")?;
                keep.push(Box::new(v));
                Ok(self.started(req, keep, None))
            }
            Collective::Allgather { send, recv } => {
                let sendp: *const c_void = send.map_or(in_place::<A>(), |s| lib_buf::<A, _>(s.ptr));
                let scount = send.map_or(0, |s| s.len);
                let v = Vecs::of(&recv, api.MPI_Iallgatherv_c.is_some())?;
                // SAFETY: as for Gather.
                let rc = unsafe {
                    match api.MPI_Iallgatherv_c {
                        Some(f) => {
                            let (c, d) = v.large();
                            f(
                                sendp,
                                scount as MpiCount,
                                byte,
                                lib_buf::<A, _>(recv.buf.ptr),
                                c,
                                d,
                                byte,
                                h,
                                &mut req,
                            )
                        }
                        None => {
                            let (c, d) = v.int();
                            (api.MPI_Iallgatherv)(
                                sendp,
                                int_count(scount)?,
                                byte,
                                lib_buf::<A, _>(recv.buf.ptr),
                                c,
                                d,
                                byte,
                                h,
                                &mut req,
                            )
                        }
                    }
                };
                core.check(rc, "MPI_Iallgatherv")?;
                keep.push(Box::new(v));
                Ok(self.started(req, keep, None))
            }
            Collective::Alltoall { send, recv } => {
                let large = api.MPI_Ialltoallv_c.is_some();
                let rv = Vecs::of(&recv, large)?;
                // In place, the send arrays are ignored: pass the receive
                // ones.
                let sv = match &send {
                    Some(s) => Vecs::of(s, large)?,
                    None => Vecs::of(&recv, large)?,
                };
                let sendp: *const c_void = send
                    .as_ref()
                    .map_or(in_place::<A>(), |s| lib_buf::<A, _>(s.buf.ptr));
                // SAFETY: as for Gather.
                let rc = unsafe {
                    match api.MPI_Ialltoallv_c {
                        Some(f) => {
                            let ((sc, sd), (rc_, rd)) = (sv.large(), rv.large());
                            f(
                                sendp,
                                sc,
                                sd,
                                byte,
                                lib_buf::<A, _>(recv.buf.ptr),
                                rc_,
                                rd,
                                byte,
                                h,
                                &mut req,
                            )
                        }
                        None => {
                            let ((sc, sd), (rc_, rd)) = (sv.int(), rv.int());
                            (api.MPI_Ialltoallv)(
                                sendp,
                                sc,
                                sd,
                                byte,
                                lib_buf::<A, _>(recv.buf.ptr),
                                rc_,
                                rd,
                                byte,
                                h,
                                &mut req,
                            )
                        }
                    }
                };
                core.check(rc, "MPI_Ialltoallv")?;
                keep.push(Box::new(sv));
                keep.push(Box::new(rv));
                Ok(self.started(req, keep, None))
            }
            Collective::Reduce {
                send,
                recv,
                count,
                dtype,
                op,
                root,
            } => {
                self.check_root(root)?;
                let nbytes = count * dtype.size();
                let root_here = is_root(root);
                check_len(send, nbytes, "send")?;
                if send.is_none() || root_here {
                    check_len(Some(recv), nbytes, "receive")?;
                }
                let (ty, lop) = sysop::resolve_with(&self.core, &op, &dtype, sysop::Wait::No)?;
                let sendp = if root_here {
                    Self::reduction_send(send, recv, nbytes, &mut keep)
                } else {
                    // A non-root contributes what its receive buffer holds
                    // when it passes no send buffer.
                    lib_buf::<A, _>(send.unwrap_or(recv).ptr)
                };
                let recvp: *mut c_void = if root_here {
                    lib_buf::<A, _>(recv.ptr)
                } else {
                    std::ptr::null_mut()
                };
                let (oph, large) = (lop.handle(), count > INT_MAX && lop.is_builtin());
                // SAFETY: buffers of `count` elements valid until completion.
                let rc = unsafe {
                    match api.MPI_Ireduce_c {
                        Some(f) if large => {
                            f(sendp, recvp, count as MpiCount, ty, oph, root, h, &mut req)
                        }
                        _ => (api.MPI_Ireduce)(
                            sendp,
                            recvp,
                            int_count(count)?,
                            ty,
                            oph,
                            root,
                            h,
                            &mut req,
                        ),
                    }
                };
                core.check(rc, "MPI_Ireduce")?;
                Ok(self.started(req, keep, Some(lop)))
            }
            Collective::Allreduce {
                send,
                recv,
                count,
                dtype,
                op,
            } => {
                let nbytes = count * dtype.size();
                check_len(send, nbytes, "send")?;
                check_len(Some(recv), nbytes, "receive")?;
                let (ty, lop) = sysop::resolve_with(&self.core, &op, &dtype, sysop::Wait::No)?;
                let sendp = Self::reduction_send(send, recv, nbytes, &mut keep);
                let (oph, large) = (lop.handle(), count > INT_MAX && lop.is_builtin());
                // SAFETY: buffers of `count` elements valid until completion.
                let rc = unsafe {
                    match api.MPI_Iallreduce_c {
                        Some(f) if large => f(
                            sendp,
                            lib_buf::<A, _>(recv.ptr),
                            count as MpiCount,
                            ty,
                            oph,
                            h,
                            &mut req,
                        ),
                        _ => (api.MPI_Iallreduce)(
                            sendp,
                            lib_buf::<A, _>(recv.ptr),
                            int_count(count)?,
                            ty,
                            oph,
                            h,
                            &mut req,
                        ),
                    }
                };
                core.check(rc, "MPI_Iallreduce")?;
                Ok(self.started(req, keep, Some(lop)))
            }
            Collective::ReduceScatter {
                send,
                recv,
                counts,
                dtype,
                op,
            } => {
                if counts.len() != self.size as usize {
                    return Err(Error::Arg(format!(
                        "reduce_scatter needs {} counts, got {}",
                        self.size,
                        counts.len()
                    )));
                }
                let elem = dtype.size();
                let total: usize = counts.iter().sum();
                let mine = counts[self.rank as usize];
                check_len(send, total * elem, "send")?;
                check_len(
                    Some(recv),
                    if send.is_some() { mine } else { total } * elem,
                    "receive",
                )?;
                let (ty, lop) = sysop::resolve_with(&self.core, &op, &dtype, sysop::Wait::No)?;
                let sendp = Self::reduction_send(send, recv, total * elem, &mut keep);
                let oph = lop.handle();
                let large =
                    total > INT_MAX && lop.is_builtin() && api.MPI_Ireduce_scatter_c.is_some();
                // SAFETY: buffers valid until completion; the counts are
                // kept with the request.
                let rc = unsafe {
                    match api.MPI_Ireduce_scatter_c {
                        Some(f) if large => {
                            let c: Vec<MpiCount> = counts.iter().map(|&c| c as MpiCount).collect();
                            let rc = f(
                                sendp,
                                lib_buf::<A, _>(recv.ptr),
                                c.as_ptr(),
                                ty,
                                oph,
                                h,
                                &mut req,
                            );
                            keep.push(Box::new(c));
                            rc
                        }
                        _ => {
                            let c: Vec<c_int> = counts
                                .iter()
                                .map(|&c| int_count(c))
                                .collect::<Result<_>>()?;
                            int_count(total)?;
                            let rc = (api.MPI_Ireduce_scatter)(
                                sendp,
                                lib_buf::<A, _>(recv.ptr),
                                c.as_ptr(),
                                ty,
                                oph,
                                h,
                                &mut req,
                            );
                            keep.push(Box::new(c));
                            rc
                        }
                    }
                };
                core.check(rc, "MPI_Ireduce_scatter")?;
                Ok(self.started(req, keep, Some(lop)))
            }
            Collective::Scan {
                send,
                recv,
                count,
                dtype,
                op,
                exclusive,
            } => {
                let nbytes = count * dtype.size();
                check_len(send, nbytes, "send")?;
                check_len(Some(recv), nbytes, "receive")?;
                let (ty, lop) = sysop::resolve_with(&self.core, &op, &dtype, sysop::Wait::No)?;
                let sendp = Self::reduction_send(send, recv, nbytes, &mut keep);
                let (oph, large) = (lop.handle(), count > INT_MAX && lop.is_builtin());
                let (f, f_c, what) = if exclusive {
                    (api.MPI_Iexscan, api.MPI_Iexscan_c, "MPI_Iexscan")
                } else {
                    (api.MPI_Iscan, api.MPI_Iscan_c, "MPI_Iscan")
                };
                // SAFETY: buffers of `count` elements valid until completion.
                let rc = unsafe {
                    match f_c {
                        Some(fc) if large => fc(
                            sendp,
                            lib_buf::<A, _>(recv.ptr),
                            count as MpiCount,
                            ty,
                            oph,
                            h,
                            &mut req,
                        ),
                        _ => f(
                            sendp,
                            lib_buf::<A, _>(recv.ptr),
                            int_count(count)?,
                            ty,
                            oph,
                            h,
                            &mut req,
                        ),
                    }
                };
                core.check(rc, what)?;
                Ok(self.started(req, keep, Some(lop)))
            }
        }
    }

    // ------------------------------------------------------- topologies

    /// Attaches `topo`: the library's topology communicator is made from
    /// this one (collective over its members, which all attach it).
    pub(super) fn attach_topology(&self, topo: Topology) -> Result<()> {
        if self.inter {
            return Err(Error::Comm(
                "an intercommunicator cannot have a topology".into(),
            ));
        }
        if self.handles.topo.get().is_some() {
            return Err(Error::Topology(
                "the communicator has a topology already".into(),
            ));
        }
        if let Some(n) = topo.nnodes() {
            if n != self.size {
                return Err(Error::Topology(format!(
                    "a topology of {n} processes on a communicator of {}",
                    self.size
                )));
            }
        }
        let core = &*self.core;
        let api = &core.api;
        let mut t = core.h.comm_null;
        let len = |v: &[i32]| {
            c_int::try_from(v.len()).map_err(|_| Error::Arg("topology too large".into()))
        };
        // SAFETY: a valid communicator; each array holds the number of
        // entries passed with it; `t` is an out-pointer. No reordering, so
        // every process keeps its rank.
        let rc = unsafe {
            match &topo {
                Topology::Cart { dims, periods } => {
                    let p: Vec<c_int> = periods.iter().map(|&b| b as c_int).collect();
                    (api.MPI_Cart_create)(self.h, len(dims)?, dims.as_ptr(), p.as_ptr(), 0, &mut t)
                }
                Topology::Graph { index, edges } => (api.MPI_Graph_create)(
                    self.h,
                    len(index)?,
                    index.as_ptr(),
                    edges.as_ptr(),
                    0,
                    &mut t,
                ),
                Topology::DistGraph {
                    sources,
                    destinations,
                    weights,
                } => {
                    // Weights only guide the library's placement, which
                    // oxmpi does not ask for; every process passes them the
                    // same way (real arrays, never MPI_UNWEIGHTED), as MPI
                    // requires. `reserve` makes even empty ones real memory.
                    let (mut sw, mut dw) = match weights {
                        Some((s, d)) => (s.clone(), d.clone()),
                        None => (vec![1; sources.len()], vec![1; destinations.len()]),
                    };
                    sw.reserve(1);
                    dw.reserve(1);
                    (api.MPI_Dist_graph_create_adjacent)(
                        self.h,
                        len(sources)?,
                        sources.as_ptr(),
                        sw.as_ptr(),
                        len(destinations)?,
                        destinations.as_ptr(),
                        dw.as_ptr(),
                        core.h.info_null,
                        0,
                        &mut t,
                    )
                }
            }
        };
        core.check(rc, "creating the topology communicator")?;
        // SAFETY: the communicator just made.
        let rc = unsafe { (api.MPI_Comm_set_errhandler)(t, core.h.errors_return) };
        if rc != 0 || self.handles.topo.set((Arc::new(topo), t)).is_err() {
            // SAFETY: as above; nobody else has it.
            unsafe { (api.MPI_Comm_free)(&mut t) };
            return Err(core.error(rc, "MPI_Comm_set_errhandler"));
        }
        Ok(())
    }

    /// The topology, its library communicator, and this process's
    /// (sources, destinations).
    #[allow(clippy::type_complexity)]
    fn neighborhood(&self) -> Result<(A::H, Vec<i32>, Vec<i32>)> {
        let (topo, t) = self
            .handles
            .topo
            .get()
            .ok_or_else(|| Error::Topology("the communicator has no topology".into()))?;
        let (srcs, dsts) = topo.neighbors(self.rank)?;
        Ok((*t, srcs, dsts))
    }

    fn check_degrees(sends: usize, recvs: usize, srcs: &[i32], dsts: &[i32]) -> Result<()> {
        if sends != dsts.len() || recvs != srcs.len() {
            return Err(Error::Arg(format!(
                "the neighbourhood has {} destinations and {} sources; got {sends} blocks to \
                 send and {recvs} to receive",
                dsts.len(),
                srcs.len()
            )));
        }
        Ok(())
    }

    /// MPI_Ineighbor_alltoallw on the topology communicator.
    pub(super) fn start_neighbor_exchange(
        &self,
        sends: &[RawBuf],
        recvs: &[RawBuf],
    ) -> Result<RequestRef> {
        let (t, srcs, dsts) = self.neighborhood()?;
        Self::check_degrees(sends.len(), recvs.len(), &srcs, &dsts)?;
        if self.nonblocking_cart_is_broken() {
            return self.start_cart_exchange(sends, recvs, &srcs, &dsts);
        }
        let core = &*self.core;
        let (s, r) = (WBlocks::of(core, sends)?, WBlocks::of(core, recvs)?);
        let mut req = core.h.request_null;
        // SAFETY: every block lies at its absolute address (MPI_BOTTOM is
        // the null pointer in every ABI) and stays valid until completion;
        // the arrays are kept with the request.
        let rc = unsafe {
            (core.api.MPI_Ineighbor_alltoallw)(
                std::ptr::null(),
                s.counts.as_ptr(),
                s.displs.as_ptr(),
                s.types.as_ptr(),
                std::ptr::null_mut(),
                r.counts.as_ptr(),
                r.displs.as_ptr(),
                r.types.as_ptr(),
                t,
                &mut req,
            )
        };
        core.check(rc, "MPI_Ineighbor_alltoallw")?;
        let mut keep = s.arrays();
        keep.extend(r.arrays());
        Ok(self.started(req, keep, None))
    }

    /// Open MPI 5.0's nonblocking neighbour collectives (libnbc) swap the
    /// two blocks of a periodic Cartesian dimension of extent 1 or 2, whose
    /// -1 and +1 neighbours are the same process (mpi4py on Open MPI 5.0.11
    /// gets the same wrong result; its blocking ones are right).
    fn nonblocking_cart_is_broken(&self) -> bool {
        let Some((topo, _)) = self.handles.topo.get() else {
            return false;
        };
        let Topology::Cart { dims, periods } = &**topo else {
            return false;
        };
        self.core.lib.version.contains("Open MPI")
            && dims.iter().zip(periods).any(|(&d, &p)| p && d <= 2)
    }

    /// A Cartesian neighbour exchange as point-to-point on the shadow (for
    /// `nonblocking_cart_is_broken`): the direction is part of the tag, so
    /// the block a process sends towards -1 along a dimension lands in its
    /// -1 neighbour's slot for +1 even when both neighbours are one process.
    fn start_cart_exchange(
        &self,
        sends: &[RawBuf],
        recvs: &[RawBuf],
        srcs: &[i32],
        dsts: &[i32],
    ) -> Result<RequestRef> {
        // Below the two tags of `exchange_tags`.
        let base = self.core.tag_ub() - 2 - dsts.len() as i32;
        let core = &*self.core;
        let mut parts = Vec::with_capacity(sends.len() + recvs.len());
        for (j, (&peer, buf)) in srcs.iter().zip(recvs).enumerate() {
            if peer == PROC_NULL {
                continue;
            }
            // Source 2d is the neighbour at -1: it sent towards +1 (2d+1).
            let tag = base + (j ^ 1) as i32;
            parts.push(self.shadow_irecv(core, *buf, peer, tag)?);
        }
        for (i, (&peer, buf)) in dsts.iter().zip(sends).enumerate() {
            if peer == PROC_NULL {
                continue;
            }
            // SAFETY: the caller keeps `buf` valid until completion.
            parts.push(
                self.shadow()
                    .isend(unsafe { buf.as_slice() }, peer, base + i as i32)?,
            );
        }
        Ok(Arc::new(MultiRequest {
            core: self.core.clone(),
            parts,
        }))
    }

    /// MPI_Irecv on the shadow.
    fn shadow_irecv(
        &self,
        core: &Core<A>,
        buf: RawBuf,
        peer: i32,
        tag: i32,
    ) -> Result<Arc<SysRequest<A>>> {
        let wire = Wire::contiguous(core, buf.ptr, buf.len)?;
        let mut req = core.h.request_null;
        // SAFETY: the caller keeps `buf` valid until the request completes.
        let rc = unsafe {
            (core.api.MPI_Irecv)(
                wire.ptr,
                wire.count,
                wire.dtype,
                peer,
                tag,
                self.shadow,
                &mut req,
            )
        };
        core.check(rc, "MPI_Irecv")?;
        Ok(SysRequest::active(&self.core, req, true, wire.derived))
    }

    /// Blocking MPI_Neighbor_alltoallw of `sends` into `recvs`.
    fn neighbor_alltoallw(&self, t: A::H, sends: &[RawBuf], recvs: &[RawBuf]) -> Result<()> {
        let core = &*self.core;
        let (s, r) = (WBlocks::of(core, sends)?, WBlocks::of(core, recvs)?);
        // SAFETY: as in `start_neighbor_exchange`, for a blocking call.
        let rc = unsafe {
            (core.api.MPI_Neighbor_alltoallw)(
                std::ptr::null(),
                s.counts.as_ptr(),
                s.displs.as_ptr(),
                s.types.as_ptr(),
                std::ptr::null_mut(),
                r.counts.as_ptr(),
                r.displs.as_ptr(),
                r.types.as_ptr(),
                t,
            )
        };
        core.check(rc, "MPI_Neighbor_alltoallw")
    }

    /// Neighbour exchange of blobs of any length: the lengths first, then
    /// the blobs (PROC_NULL neighbours send and receive nothing).
    pub(super) fn neighbor_blobs(&self, sends: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        let (t, srcs, dsts) = self.neighborhood()?;
        Self::check_degrees(sends.len(), srcs.len(), &srcs, &dsts)?;
        let slens: Vec<u64> = sends.iter().map(|b| b.len() as u64).collect();
        let mut rlens = vec![0u64; srcs.len()];
        let lens_out: Vec<RawBuf> = slens
            .iter()
            .map(|l| RawBuf {
                ptr: (l as *const u64).cast_mut().cast(),
                len: 8,
            })
            .collect();
        let lens_in: Vec<RawBuf> = rlens
            .iter_mut()
            .map(|l| RawBuf {
                ptr: (l as *mut u64).cast(),
                len: 8,
            })
            .collect();
        self.neighbor_alltoallw(t, &lens_out, &lens_in)?;
        let mut got: Vec<Vec<u8>> = rlens.iter().map(|&l| vec![0u8; l as usize]).collect();
        let out: Vec<RawBuf> = sends.iter().map(|b| RawBuf::from_slice(b)).collect();
        let into: Vec<RawBuf> = got.iter_mut().map(|b| RawBuf::from_mut(b)).collect();
        self.neighbor_alltoallw(t, &out, &into)?;
        Ok(got)
    }

    // ---------------------------- rounds of intercommunicator collectives

    /// Tags of `iexchange` and `exchange_bytes` rounds on the shadow: the
    /// two largest, which oxmpi's collective algorithms (tags below
    /// `coll::COLL_TAG_LIMIT`) do not use.
    fn exchange_tags(&self) -> (i32, i32) {
        let ub = self.core.tag_ub();
        (ub, ub - 1)
    }

    fn check_peers<'p>(&self, peers: impl IntoIterator<Item = &'p i32>) -> Result<()> {
        let size = self.peers();
        for &p in peers {
            if p != PROC_NULL && !(0..size).contains(&p) {
                return Err(Error::Rank { rank: p, size });
            }
        }
        Ok(())
    }

    /// One round of point-to-point on the shadow. Rounds match in the
    /// order they start: MPI keeps the order of messages between two
    /// processes on one communicator and tag.
    pub(super) fn start_exchange(
        &self,
        sends: &[(i32, RawBuf)],
        recvs: &[(i32, RawBuf)],
    ) -> Result<RequestRef> {
        self.check_peers(sends.iter().map(|(p, _)| p))?;
        self.check_peers(recvs.iter().map(|(p, _)| p))?;
        let (tag, _) = self.exchange_tags();
        let core = &*self.core;
        let mut parts = Vec::with_capacity(sends.len() + recvs.len());
        for &(peer, buf) in recvs.iter().filter(|(p, _)| *p != PROC_NULL) {
            parts.push(self.shadow_irecv(core, buf, peer, tag)?);
        }
        for &(peer, buf) in sends.iter().filter(|(p, _)| *p != PROC_NULL) {
            // SAFETY: the caller keeps `buf` valid until completion.
            parts.push(self.shadow().isend(unsafe { buf.as_slice() }, peer, tag)?);
        }
        Ok(Arc::new(MultiRequest {
            core: self.core.clone(),
            parts,
        }))
    }

    /// A blocking round of blobs of any length.
    pub(super) fn exchange_blobs(
        &self,
        sends: Vec<(i32, Vec<u8>)>,
        recv_from: &[i32],
    ) -> Result<Vec<Vec<u8>>> {
        self.check_peers(sends.iter().map(|(p, _)| p))?;
        self.check_peers(recv_from)?;
        let (_, tag) = self.exchange_tags();
        let shadow = self.shadow();
        // The blobs outlive every send started from them, even one left
        // pending by an error.
        let sends = ManuallyDrop::new(sends);
        let mut started = Vec::with_capacity(sends.len());
        for (peer, blob) in sends.iter().filter(|(p, _)| *p != PROC_NULL) {
            match shadow.isend(blob, *peer, tag) {
                Ok(r) => started.push(r),
                Err(e) => return Err(e),
            }
        }
        let mut got = Vec::with_capacity(recv_from.len());
        let mut outcome = Ok(());
        for &p in recv_from {
            if p == PROC_NULL {
                got.push(Vec::new());
                continue;
            }
            match shadow.recv_vec(p, tag) {
                Ok(v) => got.push(v),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        let finished = shadow.finish(started);
        // Every send has completed (or failed): the blobs may go.
        drop(ManuallyDrop::into_inner(sends));
        outcome?;
        finished?;
        Ok(got)
    }
}

/// Checks that a buffer holds `n` bytes (None: nothing to check).
fn check_len(buf: Option<RawBuf>, n: usize, what: &str) -> Result<()> {
    match buf {
        Some(b) if b.len < n => Err(Error::Buffer(format!(
            "{what} buffer holds {} bytes, need {n}",
            b.len
        ))),
        _ => Ok(()),
    }
}
