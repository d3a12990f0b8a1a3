//! Requests on the system MPI library, and the receive queue that keeps
//! MPI's matching order for receives of unknown size.
//!
//! A receive into a runtime-owned buffer (a pickled object of any size)
//! cannot be posted to MPI before its message is known: its size decides
//! the buffer. Such a receive waits in the engine's [`RecvQueue`] and is
//! matched with `MPI_Improbe` + `MPI_Imrecv`. To keep MPI's rule that a
//! message goes to the earliest-posted receive that matches it:
//!
//! * a buffer receive posted while a queued receive on the same
//!   communicator could match the same messages waits in the queue behind
//!   it (others go straight to MPI);
//! * a message found by any queued receive's matched probe goes to the
//!   earliest queued receive it matches;
//! * a user's probe never reports a message a queued receive would take.
//!
//! The queue is driven by every wait, test and probe, and, while it is not
//! empty, by a background thread (with `MPI_THREAD_MULTIPLE`), so that a
//! queued receive is matched even while every user thread is blocked in a
//! library call (e.g. a barrier its sender reaches only after the send).

use std::collections::VecDeque;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::backend::{Message, RawBuf, Request, RequestRef, Status};
use crate::error::{Error, Result};

use super::abi::{lib_buf, Abi, MpiAint, RawStatus};
use super::comm::CommHandles;
use super::engine::Core;

/// Largest block of one derived-datatype element (fits a C int).
pub(crate) const BLOCK: usize = 1 << 30;

/// A message buffer in the form MPI takes it: `count` bytes from `ptr`,
/// or, past INT_MAX bytes or in several pieces, one element of an
/// `hindexed` datatype over absolute addresses (the buffer is then
/// `MPI_BOTTOM`). The datatype is freed on drop; MPI keeps it alive for
/// operations already posted with it.
pub(crate) struct Wire<'a, A: Abi> {
    core: &'a Core<A>,
    pub ptr: *mut c_void,
    pub count: c_int,
    pub dtype: A::H,
    /// Whether `dtype` is a derived datatype (freed on drop).
    pub derived: bool,
}

impl<'a, A: Abi> Wire<'a, A> {
    /// One contiguous buffer.
    pub fn contiguous(core: &'a Core<A>, ptr: *mut u8, len: usize) -> Result<Self> {
        if len <= c_int::MAX as usize {
            return Ok(Wire {
                core,
                ptr: lib_buf::<A, _>(ptr),
                count: len as c_int,
                dtype: core.h.byte,
                derived: false,
            });
        }
        Self::hindexed(core, &[RawBuf { ptr, len }])
    }

    /// The concatenation of `parts`.
    pub fn parts(core: &'a Core<A>, parts: &[RawBuf]) -> Result<Self> {
        let mut nonempty = parts.iter().filter(|p| p.len > 0);
        match (nonempty.next(), nonempty.next()) {
            (None, _) => Self::contiguous(core, RawBuf::EMPTY.ptr, 0),
            (Some(p), None) => Self::contiguous(core, p.ptr, p.len),
            _ => Self::hindexed(core, parts),
        }
    }

    fn hindexed(core: &'a Core<A>, parts: &[RawBuf]) -> Result<Self> {
        let mut lens: Vec<c_int> = Vec::new();
        let mut displs: Vec<MpiAint> = Vec::new();
        for p in parts {
            let mut off = 0;
            while off < p.len {
                let n = (p.len - off).min(BLOCK);
                lens.push(n as c_int);
                displs.push(p.ptr.wrapping_add(off) as MpiAint);
                off += n;
            }
        }
        let nblocks = c_int::try_from(lens.len())
            .map_err(|_| Error::Buffer("message has too many pieces".into()))?;
        let mut t = core.h.byte;
        // SAFETY: `lens` and `displs` hold `nblocks` entries; `t` is an
        // out-pointer for the new datatype.
        let rc = unsafe {
            (core.api.MPI_Type_create_hindexed)(
                nblocks,
                lens.as_ptr(),
                displs.as_ptr(),
                core.h.byte,
                &mut t,
            )
        };
        core.check(rc, "MPI_Type_create_hindexed")?;
        // SAFETY: a datatype just created.
        let rc = unsafe { (core.api.MPI_Type_commit)(&mut t) };
        if rc != 0 {
            // SAFETY: as above.
            unsafe { (core.api.MPI_Type_free)(&mut t) };
            return Err(core.error(rc, "MPI_Type_commit"));
        }
        Ok(Wire {
            core,
            ptr: std::ptr::null_mut(), // MPI_BOTTOM in every ABI
            count: 1,
            dtype: t,
            derived: true,
        })
    }
}

impl<A: Abi> Drop for Wire<'_, A> {
    fn drop(&mut self) {
        if self.derived && !self.core.is_finalized() {
            // SAFETY: a datatype we created; MPI defers freeing it until
            // the operations using it complete.
            unsafe { (self.core.api.MPI_Type_free)(&mut self.dtype) };
        }
    }
}

/// Where a receive puts its message.
#[derive(Clone, Copy)]
pub(crate) enum Target {
    Buf(RawBuf),
    /// A buffer of the message's size, handed out by `take_data`.
    Owned,
}

enum State<A: Abi> {
    /// In the receive queue, waiting for a message.
    Queued(Target),
    /// Posted to the library.
    Active {
        handle: A::H,
        recv: bool,
        /// Received through a derived datatype (which is freed by now):
        /// the count is then read as bytes of any length.
        derived: bool,
        data: Option<Vec<u8>>,
        /// A message longer than the receive buffer is received whole into
        /// `data`; on completion its head is copied here and the receive
        /// fails with ERR_TRUNCATE (see `start_matched`).
        truncate_into: Option<RawBuf>,
        cancel_requested: bool,
    },
    Done {
        status: Status,
        error: Option<Error>,
        data: Option<Vec<u8>>,
    },
}

/// A nonblocking operation on the library.
pub(crate) struct SysRequest<A: Abi> {
    core: Arc<Core<A>>,
    state: Mutex<State<A>>,
    done: AtomicBool,
}

impl<A: Abi> SysRequest<A> {
    fn with_state(core: &Arc<Core<A>>, state: State<A>) -> Arc<Self> {
        let done = matches!(state, State::Done { .. });
        Arc::new(SysRequest {
            core: core.clone(),
            state: Mutex::new(state),
            done: AtomicBool::new(done),
        })
    }

    /// A request that completed when it was made.
    pub fn completed(core: &Arc<Core<A>>, status: Status) -> Arc<Self> {
        Self::with_state(
            core,
            State::Done {
                status,
                error: None,
                data: None,
            },
        )
    }

    /// A request the library is working on.
    pub fn active(core: &Arc<Core<A>>, handle: A::H, recv: bool, derived: bool) -> Arc<Self> {
        Self::with_state(
            core,
            State::Active {
                handle,
                recv,
                derived,
                data: None,
                truncate_into: None,
                cancel_requested: false,
            },
        )
    }

    fn lock(&self) -> MutexGuard<'_, State<A>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The engine state this request belongs to.
    pub fn core(&self) -> &Arc<Core<A>> {
        &self.core
    }

    fn finish(&self, st: &mut State<A>, status: Status, error: Option<Error>) {
        let data = match st {
            State::Active { data, .. } => data.take(),
            _ => None,
        };
        *st = State::Done {
            status,
            error,
            data,
        };
        self.done.store(true, Ordering::Release);
    }

    /// Completes it with `error` (a queued receive whose probe failed).
    fn fail(&self, error: Error) {
        let mut st = self.lock();
        let status = Status {
            error: error.class(),
            ..Status::default()
        };
        self.finish(&mut st, status, Some(error));
    }

    /// Completed? Tests the library's request once if not.
    fn poll(&self) -> bool {
        if self.done.load(Ordering::Acquire) {
            return true;
        }
        let core = &*self.core;
        if core.recvq.pending() {
            core.recvq.drive(core);
        }
        let mut st = self.lock();
        let (handle, recv, derived, cancel_requested) = match &mut *st {
            State::Done { .. } => return true,
            State::Queued(_) => return false,
            State::Active {
                handle,
                recv,
                derived,
                cancel_requested,
                ..
            } => (handle, *recv, *derived, *cancel_requested),
        };
        let mut flag: c_int = 0;
        let mut raw = A::Status::default();
        // SAFETY: an active request of this library; flag and status out.
        let rc = unsafe { (core.api.MPI_Test)(handle, &mut flag, &mut raw) };
        if rc != 0 {
            let e = core.error(rc, if recv { "receive" } else { "send" });
            let status = Status {
                error: e.class(),
                ..core.status(&raw, 0)
            };
            self.finish(&mut st, status, Some(e));
            return true;
        }
        if flag == 0 {
            return false;
        }
        let (mut status, mut error) = (Status::default(), None);
        if recv {
            match core.recv_status(&raw, derived) {
                Ok(s) => status = s,
                Err(e) => error = Some(e),
            }
            if let State::Active {
                data: Some(d),
                truncate_into,
                ..
            } = &mut *st
            {
                status.count = d.len();
                if let Some(dst) = truncate_into.take() {
                    let n = dst.len.min(d.len());
                    // SAFETY: the receive buffer stays valid until this
                    // request completes (now); `d` is ours.
                    unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), dst.ptr, n) };
                    error = Some(Error::Truncate {
                        received: d.len(),
                        capacity: dst.len,
                    });
                    status.error = crate::error::class::ERR_TRUNCATE;
                    status.count = n;
                    *d = Vec::new();
                }
            }
            if cancel_requested {
                let mut c: c_int = 0;
                // SAFETY: a status filled by MPI_Test.
                unsafe { (core.api.MPI_Test_cancelled)(&raw, &mut c) };
                status.cancelled = c != 0;
            }
        }
        self.finish(&mut st, status, error);
        true
    }

    /// The outcome of a completed request; an error is handed out once.
    fn outcome(&self) -> Result<Status> {
        let mut st = self.lock();
        match &mut *st {
            State::Done { status, error, .. } => match error.take() {
                Some(e) => Err(e),
                None => Ok(*status),
            },
            _ => Err(Error::Intern(
                "request outcome read before completion".into(),
            )),
        }
    }

    /// Starts receiving the matched message `msg` (found by a queued
    /// receive's probe) into this queued receive's target.
    fn start_matched(&self, core: &Core<A>, mut msg: A::H, probed: &A::Status) {
        let mut st = self.lock();
        let target = match &*st {
            State::Queued(t) => *t,
            _ => return,
        };
        let size = match core.message_bytes(probed) {
            Ok(n) => n,
            Err(e) => {
                drop(st);
                // The message is matched: receive it somewhere, or the
                // library keeps it forever.
                discard_message(core, msg, probed);
                return self.fail(e);
            }
        };
        // A message that does not fit is received whole and truncated by
        // oxmpi: the size is known here, and Open MPI 5.0 crashes when it
        // truncates a large message itself.
        let (buf, data, truncate_into) = match target {
            Target::Buf(b) if size <= b.len => (b, None, None),
            Target::Buf(b) => {
                let mut v = vec![0u8; size];
                (RawBuf::from_mut(&mut v), Some(v), Some(b))
            }
            Target::Owned => {
                let mut v = vec![0u8; size];
                (RawBuf::from_mut(&mut v), Some(v), None)
            }
        };
        let wire = match Wire::contiguous(core, buf.ptr, buf.len) {
            Ok(w) => w,
            Err(e) => {
                drop(st);
                discard_message(core, msg, probed);
                return self.fail(e);
            }
        };
        let mut handle = core.h.request_null;
        // SAFETY: the target buffer stays valid until the request
        // completes (caller's contract, or owned by `data` below, whose
        // heap block does not move); `msg` is a matched message.
        let rc = unsafe {
            (core.api.MPI_Imrecv)(wire.ptr, wire.count, wire.dtype, &mut msg, &mut handle)
        };
        if rc != 0 {
            let e = core.error(rc, "MPI_Imrecv");
            let status = Status {
                error: e.class(),
                ..Status::default()
            };
            self.finish(&mut st, status, Some(e));
            return;
        }
        *st = State::Active {
            handle,
            recv: true,
            derived: wire.derived,
            data,
            truncate_into,
            cancel_requested: false,
        };
    }
}

/// Receives and drops a matched message nobody will receive.
fn discard_message<A: Abi>(core: &Core<A>, mut msg: A::H, probed: &A::Status) {
    let n = core.message_bytes(probed).unwrap_or(0);
    let mut scratch = vec![0u8; n];
    if let Ok(wire) = Wire::contiguous(core, scratch.as_mut_ptr(), n) {
        let mut raw = A::Status::default();
        // SAFETY: `scratch` holds the whole message; `msg` is matched.
        unsafe { (core.api.MPI_Mrecv)(wire.ptr, wire.count, wire.dtype, &mut msg, &mut raw) };
    }
}

impl<A: Abi> Request for SysRequest<A> {
    fn test(&self) -> Result<Option<Status>> {
        if self.poll() {
            self.outcome().map(Some)
        } else {
            Ok(None)
        }
    }

    fn wait(&self) -> Result<Status> {
        if !self.poll() {
            self.core.wait_until(|| self.poll())?;
        }
        self.outcome()
    }

    fn is_complete(&self) -> bool {
        self.poll()
    }

    fn cancel(&self) -> Result<()> {
        let core = &*self.core;
        // Lock order: queue, then request.
        let mut q = core.recvq.lock();
        let mut st = self.lock();
        match &mut *st {
            State::Queued(_) => {
                q.retain(|e| !std::ptr::eq(Arc::as_ptr(&e.req), self));
                core.recvq.len.store(q.len(), Ordering::Release);
                let status = Status {
                    cancelled: true,
                    ..Status::default()
                };
                self.finish(&mut st, status, None);
                Ok(())
            }
            State::Active {
                handle,
                recv: true,
                cancel_requested,
                ..
            } => {
                *cancel_requested = true;
                // SAFETY: an active receive request of this library.
                let rc = unsafe { (core.api.MPI_Cancel)(handle) };
                core.check(rc, "MPI_Cancel")
            }
            // Sends are not recalled (as in the native runtime): MPI
            // allows a cancel to fail; the status then says so.
            _ => Ok(()),
        }
    }

    fn take_data(&self) -> Option<Vec<u8>> {
        match &mut *self.lock() {
            State::Done { data, .. } => data.take(),
            _ => None,
        }
    }

    fn get_status(&self) -> Option<Status> {
        if !self.poll() {
            return None;
        }
        match &*self.lock() {
            State::Done { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A receive waiting in the queue, with its envelope in the library's
/// numbering.
pub(crate) struct Queued<A: Abi> {
    comm: A::H,
    source: c_int,
    tag: c_int,
    req: Arc<SysRequest<A>>,
    /// Keeps `comm` from being freed while the receive waits.
    _keep: Arc<CommHandles<A>>,
}

impl<A: Abi> Queued<A> {
    /// Would this receive take a message with this envelope?
    fn matches(&self, comm: A::H, source: c_int, tag: c_int) -> bool {
        self.comm == comm
            && (self.source == A::ANY_SOURCE || self.source == source)
            && (self.tag == A::ANY_TAG || self.tag == tag)
    }

    /// Could this receive and one with this pattern match the same message?
    fn overlaps(&self, comm: A::H, source: c_int, tag: c_int) -> bool {
        self.comm == comm
            && (self.source == A::ANY_SOURCE || source == A::ANY_SOURCE || self.source == source)
            && (self.tag == A::ANY_TAG || tag == A::ANY_TAG || self.tag == tag)
    }
}

/// The receives waiting for their message, in posting order.
pub(crate) struct RecvQueue<A: Abi> {
    entries: Mutex<VecDeque<Queued<A>>>,
    /// `entries.len()`, readable without the lock.
    len: AtomicUsize,
    wake: Condvar,
    stop: AtomicBool,
    driver: Mutex<Option<JoinHandle<()>>>,
}

impl<A: Abi> RecvQueue<A> {
    pub fn new() -> Self {
        RecvQueue {
            entries: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            driver: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Queued<A>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[inline]
    pub fn pending(&self) -> bool {
        self.len.load(Ordering::Acquire) > 0
    }

    /// Posts a receive into `buf`: to MPI at once, unless a queued receive
    /// could take the same messages (or the library cannot have receives
    /// posted early: `Core::prepost_receives`).
    pub fn post_buffer(
        &self,
        core: &Arc<Core<A>>,
        keep: &Arc<CommHandles<A>>,
        buf: RawBuf,
        source: c_int,
        tag: c_int,
    ) -> Result<Arc<SysRequest<A>>> {
        let comm = keep.handle();
        let mut guard = None;
        if self.pending() || !core.prepost_receives {
            let q = self.lock();
            if !core.prepost_receives || q.iter().any(|e| e.overlaps(comm, source, tag)) {
                let req = SysRequest::with_state(core, State::Queued(Target::Buf(buf)));
                self.push(q, keep, source, tag, req.clone());
                return Ok(req);
            }
            // Keep the queue locked while posting, so that no queued
            // receive is matched in between.
            guard = Some(q);
        }
        let wire = Wire::contiguous(core, buf.ptr, buf.len)?;
        let mut handle = core.h.request_null;
        // SAFETY: the caller keeps `buf` valid until the request completes.
        let rc = unsafe {
            (core.api.MPI_Irecv)(
                wire.ptr,
                wire.count,
                wire.dtype,
                source,
                tag,
                comm,
                &mut handle,
            )
        };
        drop(guard);
        core.check(rc, "MPI_Irecv")?;
        Ok(SysRequest::active(core, handle, true, wire.derived))
    }

    /// Posts a receive of a message of any size into a buffer of its size.
    pub fn post_owned(
        &self,
        core: &Arc<Core<A>>,
        keep: &Arc<CommHandles<A>>,
        source: c_int,
        tag: c_int,
    ) -> Arc<SysRequest<A>> {
        let req = SysRequest::with_state(core, State::Queued(Target::Owned));
        let q = self.lock();
        self.push(q, keep, source, tag, req.clone());
        // A message already here is matched now, as a posted receive's
        // would be.
        self.drive(core);
        req
    }

    fn push(
        &self,
        mut q: MutexGuard<'_, VecDeque<Queued<A>>>,
        keep: &Arc<CommHandles<A>>,
        source: c_int,
        tag: c_int,
        req: Arc<SysRequest<A>>,
    ) {
        q.push_back(Queued {
            comm: keep.handle(),
            source,
            tag,
            req,
            _keep: keep.clone(),
        });
        self.len.store(q.len(), Ordering::Release);
        drop(q);
        self.wake.notify_one();
    }

    /// Matches every queued receive whose message has arrived.
    pub fn drive(&self, core: &Core<A>) {
        let mut q = self.lock();
        self.drive_locked(core, &mut q);
    }

    fn drive_locked(&self, core: &Core<A>, q: &mut VecDeque<Queued<A>>) {
        let mut i = 0;
        while i < q.len() {
            let (comm, source, tag) = (q[i].comm, q[i].source, q[i].tag);
            let mut flag: c_int = 0;
            let mut msg = core.h.message_null;
            let mut raw = A::Status::default();
            // SAFETY: valid communicator; out-pointers for flag, message
            // and status.
            let rc =
                unsafe { (core.api.MPI_Improbe)(source, tag, comm, &mut flag, &mut msg, &mut raw) };
            if rc != 0 {
                let e = q.remove(i).expect("index in range");
                e.req.fail(core.error(rc, "MPI_Improbe"));
                continue;
            }
            if flag == 0 {
                i += 1;
                continue;
            }
            // The earliest queued receive this message matches takes it
            // (entry i matches it, so one exists at or before i).
            let j = q
                .iter()
                .position(|e| e.matches(comm, raw.source(), raw.tag()))
                .unwrap_or(i);
            let e = q.remove(j).expect("index in range");
            e.req.start_matched(core, msg, &raw);
            i = j;
        }
        self.len.store(q.len(), Ordering::Release);
    }

    /// Does a queued receive claim a message with this envelope?
    fn claims(&self, comm: A::H, source: c_int, tag: c_int) -> bool {
        self.pending() && self.lock().iter().any(|e| e.matches(comm, source, tag))
    }

    /// MPI_Iprobe that never reports a message a queued receive takes.
    pub fn iprobe(
        &self,
        core: &Core<A>,
        comm: A::H,
        source: c_int,
        tag: c_int,
    ) -> Result<Option<A::Status>> {
        loop {
            if self.pending() {
                self.drive(core);
            }
            let mut flag: c_int = 0;
            let mut raw = A::Status::default();
            // SAFETY: valid communicator; out-pointers.
            let rc = unsafe { (core.api.MPI_Iprobe)(source, tag, comm, &mut flag, &mut raw) };
            core.check(rc, "MPI_Iprobe")?;
            if flag == 0 {
                return Ok(None);
            }
            if !self.claims(comm, raw.source(), raw.tag()) {
                return Ok(Some(raw));
            }
            // A queued receive takes that message: let it, and look again.
        }
    }

    /// MPI_Improbe that hands a message a queued receive claims to it.
    pub fn improbe(
        &self,
        core: &Core<A>,
        comm: A::H,
        source: c_int,
        tag: c_int,
    ) -> Result<Option<(A::H, A::Status)>> {
        loop {
            let mut guard = if self.pending() {
                let mut q = self.lock();
                self.drive_locked(core, &mut q);
                Some(q)
            } else {
                None
            };
            let mut flag: c_int = 0;
            let mut msg = core.h.message_null;
            let mut raw = A::Status::default();
            // SAFETY: valid communicator; out-pointers.
            let rc =
                unsafe { (core.api.MPI_Improbe)(source, tag, comm, &mut flag, &mut msg, &mut raw) };
            core.check(rc, "MPI_Improbe")?;
            if flag == 0 {
                return Ok(None);
            }
            if let Some(q) = guard.as_mut() {
                if let Some(j) = q
                    .iter()
                    .position(|e| e.matches(comm, raw.source(), raw.tag()))
                {
                    let e = q.remove(j).expect("index in range");
                    self.len.store(q.len(), Ordering::Release);
                    e.req.start_matched(core, msg, &raw);
                    continue;
                }
            }
            return Ok(Some((msg, raw)));
        }
    }

    /// Starts the thread that drives the queue while it is not empty.
    pub fn start_driver(&self, core: Arc<Core<A>>) {
        let mut slot = self.driver.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("oxmpi-recv-queue".into())
            .spawn(move || driver_loop(&core));
        // Without the thread, waits and probes still drive the queue.
        *slot = spawned.ok();
    }

    /// Stops the driver thread (before MPI_Finalize).
    pub fn stop_driver(&self) {
        self.stop.store(true, Ordering::Release);
        {
            let _q = self.lock();
            self.wake.notify_all();
        }
        let handle = self.driver.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn driver_loop<A: Abi>(core: &Core<A>) {
    const MIN_NAP: Duration = Duration::from_micros(50);
    const MAX_NAP: Duration = Duration::from_millis(2);
    let rq = &core.recvq;
    let mut nap = MIN_NAP;
    loop {
        {
            let mut q = rq.lock();
            while q.is_empty() && !rq.stop.load(Ordering::Acquire) {
                q = rq.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                nap = MIN_NAP;
            }
            if rq.stop.load(Ordering::Acquire) {
                return;
            }
            // See `Core::user_op_collectives`: user threads' waits and
            // tests still drive the queue.
            if core.user_op_collectives.load(Ordering::Acquire) == 0 {
                let before = q.len();
                rq.drive_locked(core, &mut q);
                if q.len() < before {
                    nap = MIN_NAP;
                }
            }
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(MAX_NAP);
    }
}

/// A message taken by a matched probe.
pub(crate) struct SysMessage<A: Abi> {
    core: Arc<Core<A>>,
    /// None for the message of a probe on PROC_NULL.
    msg: Option<(A::H, A::Status)>,
}

impl<A: Abi> SysMessage<A> {
    pub fn new(core: &Arc<Core<A>>, msg: Option<(A::H, A::Status)>) -> Self {
        SysMessage {
            core: core.clone(),
            msg,
        }
    }
}

impl<A: Abi> Message for SysMessage<A> {
    fn recv(mut self: Box<Self>, buf: RawBuf) -> Result<Status> {
        let Some((_, probed)) = self.msg else {
            return Ok(Status::proc_null());
        };
        // On an error before the receive, dropping `self` discards the
        // message.
        let size = self.core.message_bytes(&probed)?;
        if size <= buf.len {
            return self.recv_fitting(buf);
        }
        // Received whole, then truncated by oxmpi (see start_matched).
        let mut whole = vec![0u8; size];
        self.recv_fitting(RawBuf::from_mut(&mut whole))?;
        // SAFETY: the caller keeps `buf` valid for the call.
        unsafe { std::ptr::copy_nonoverlapping(whole.as_ptr(), buf.ptr, buf.len) };
        Err(Error::Truncate {
            received: size,
            capacity: buf.len,
        })
    }

    fn irecv(mut self: Box<Self>, buf: RawBuf) -> Result<RequestRef> {
        Ok(self.start(Target::Buf(buf)))
    }

    fn irecv_owned(mut self: Box<Self>) -> Result<RequestRef> {
        Ok(self.start(Target::Owned))
    }
}

impl<A: Abi> SysMessage<A> {
    /// MPI_Imrecv into `target` (a message that does not fit a buffer is
    /// received whole and truncated by oxmpi, as for queued receives).
    fn start(&mut self, target: Target) -> RequestRef {
        let Some((msg, probed)) = self.msg.take() else {
            return SysRequest::completed(&self.core, Status::proc_null());
        };
        let req = SysRequest::with_state(&self.core, State::Queued(target));
        req.start_matched(&self.core, msg, &probed);
        req
    }

    /// Receives the message into a buffer it fits.
    fn recv_fitting(&mut self, buf: RawBuf) -> Result<Status> {
        let Some((mut msg, probed)) = self.msg.take() else {
            return Ok(Status::proc_null());
        };
        let core = &*self.core;
        let wire = match Wire::contiguous(core, buf.ptr, buf.len) {
            Ok(w) => w,
            Err(e) => {
                discard_message(core, msg, &probed);
                return Err(e);
            }
        };
        let mut raw = A::Status::default();
        // SAFETY: the caller keeps `buf` valid for the call; `msg` is a
        // matched message of this library.
        let rc =
            unsafe { (core.api.MPI_Mrecv)(wire.ptr, wire.count, wire.dtype, &mut msg, &mut raw) };
        core.check(rc, "MPI_Mrecv")?;
        core.recv_status(&raw, wire.derived)
    }
}

impl<A: Abi> Drop for SysMessage<A> {
    fn drop(&mut self) {
        // A matched message that is never received would stay in the
        // library forever.
        if let Some((msg, probed)) = self.msg.take() {
            if !self.core.is_finalized() {
                discard_message(&self.core, msg, &probed);
            }
        }
    }
}
