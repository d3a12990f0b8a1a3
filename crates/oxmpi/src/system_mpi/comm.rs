//! Communicators of the system-MPI backend: each wraps a library
//! communicator, plus a private duplicate ("shadow") on which oxmpi's own
//! point-to-point algorithms (object reductions, and byte-blob
//! collectives past the library's int counts) run without ever matching a
//! user's message.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::backend::{
    Collective, Combine, CommRef, Communicator, Message, RawBuf, RequestRef, SendMode,
    SpawnCommand, Status, ANY_SOURCE, ANY_TAG, PROC_NULL, UNDEFINED,
};
use crate::coll::{self, Transport};
use crate::datatype::Datatype;
use crate::error::{Error, Result};
use crate::op::Op;
use crate::topo::Topology;

use super::abi::{in_place, lib_buf, Abi, MpiAint, MpiCount};
use super::engine::Core;
use super::op::{self as sysop, LibOp};
use super::request::{SysMessage, SysRequest, Wire, BLOCK};

const INT_MAX: usize = c_int::MAX as usize;

/// A communicator of the system MPI library.
pub(crate) struct SystemComm<A: Abi> {
    pub(super) core: Arc<Core<A>>,
    pub(super) h: A::H,
    pub(super) shadow: A::H,
    /// Owns `h` and `shadow`; receives queued on them hold it too.
    pub(super) handles: Arc<CommHandles<A>>,
    pub(super) rank: i32,
    pub(super) size: i32,
    world_ranks: Vec<i32>,
    /// An intercommunicator's remote group (MPI_COMM_WORLD ranks); empty
    /// for an intracommunicator.
    remote_world_ranks: Vec<i32>,
    pub(super) inter: bool,
    name: Mutex<String>,
}

/// The library communicators a `SystemComm` wraps, freed once nothing
/// uses them: neither the communicator object nor a receive still queued
/// on it (MPI lets a communicator be freed with receives pending; those
/// complete normally).
pub(crate) struct CommHandles<A: Abi> {
    core: Arc<Core<A>>,
    h: A::H,
    shadow: A::H,
    /// MPI_COMM_WORLD and MPI_COMM_SELF are not freed.
    owned: bool,
    /// The virtual topology, and the library communicator that carries it
    /// (made from `h` without reordering: same ranks), on which neighbour
    /// collectives run.
    pub(super) topo: OnceLock<(Arc<Topology>, A::H)>,
    /// Reaches processes of another MPI_COMM_WORLD (spawned, connected,
    /// joined): Free disconnects it at once (see `disconnect`).
    dynamic: bool,
    /// Disconnected: nothing is left to free.
    released: AtomicBool,
}

impl<A: Abi> Drop for CommHandles<A> {
    fn drop(&mut self) {
        if self.core.is_finalized() || self.released.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: communicators only this object owns; operations pending
        // on them in the library complete normally after the free.
        unsafe {
            (self.core.api.MPI_Comm_free)(&mut self.shadow);
            if let Some((_, mut t)) = self.topo.take() {
                (self.core.api.MPI_Comm_free)(&mut t);
            }
            if self.owned {
                (self.core.api.MPI_Comm_free)(&mut self.h);
            }
        }
    }
}

impl<A: Abi> CommHandles<A> {
    /// MPI_Comm_disconnect of every library communicator this one made.
    /// Processes still connected when they finalise wait for each other in
    /// MPI_Finalize (Open MPI's does, in ompi_dpm_dyn_finalize), so a
    /// communicator reaching another world is disconnected when Python
    /// frees it (Free or Disconnect, both collective), not whenever its
    /// last holder lets go.
    fn disconnect(&self) -> Result<()> {
        if !self.dynamic || self.core.is_finalized() || self.released.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let api = &self.core.api;
        let disconnect = api
            .MPI_Comm_disconnect
            .ok_or_else(|| not_implemented("MPI_Comm_disconnect (the MPI library lacks it)"))?;
        let (mut h, mut shadow) = (self.h, self.shadow);
        // SAFETY: communicators only this object owns, released above so
        // that Drop leaves them alone; every member calls this in the same
        // order (shadow, topology, `h`).
        unsafe {
            self.core
                .check(disconnect(&mut shadow), "MPI_Comm_disconnect")?;
            if let Some((_, t)) = self.topo.get() {
                let mut t = *t;
                self.core.check(disconnect(&mut t), "MPI_Comm_disconnect")?;
            }
            if self.owned {
                self.core.check(disconnect(&mut h), "MPI_Comm_disconnect")?;
            }
        }
        Ok(())
    }
}

impl<A: Abi> SystemComm<A> {
    /// MPI_COMM_WORLD or MPI_COMM_SELF.
    pub fn predefined(core: Arc<Core<A>>, h: A::H, name: &str) -> Result<Self> {
        Self::wrap(core, h, name, false)
    }

    /// Wraps library communicator `h` (errors returned, a shadow made);
    /// `owned`: freed when no longer used.
    pub(super) fn wrap(core: Arc<Core<A>>, h: A::H, name: &str, owned: bool) -> Result<Self> {
        let api = &core.api;
        let (mut rank, mut size): (c_int, c_int) = (0, 0);
        // SAFETY: a valid communicator of this library; int out-pointers.
        unsafe {
            core.check(
                (api.MPI_Comm_set_errhandler)(h, core.h.errors_return),
                "MPI_Comm_set_errhandler",
            )?;
            core.check((api.MPI_Comm_rank)(h, &mut rank), "MPI_Comm_rank")?;
            core.check((api.MPI_Comm_size)(h, &mut size), "MPI_Comm_size")?;
        }
        let mut shadow = core.h.comm_null;
        // SAFETY: as above; `shadow` is an out-pointer.
        let rc = unsafe { (api.MPI_Comm_dup)(h, &mut shadow) };
        core.check(rc, "MPI_Comm_dup")?;
        let mut inter: c_int = 0;
        // SAFETY: a valid communicator; one int out.
        let rc = unsafe { (api.MPI_Comm_test_inter)(h, &mut inter) };
        core.check(rc, "MPI_Comm_test_inter")?;
        let world_ranks = if h == core.h.comm_world {
            (0..size).collect()
        } else {
            world_ranks_of(&core, h, false)?
        };
        let remote_world_ranks = if inter != 0 {
            world_ranks_of(&core, h, true)?
        } else {
            Vec::new()
        };
        // Only intercommunicators: Open MPI 5.0's MPI_Comm_disconnect of an
        // intracommunicator spanning two worlds (Intercomm_merge of a
        // spawned one) never returns; freeing one leaves nothing connected.
        let dynamic = remote_world_ranks.contains(&UNDEFINED);
        Ok(SystemComm {
            handles: Arc::new(CommHandles {
                core: core.clone(),
                h,
                shadow,
                owned,
                topo: OnceLock::new(),
                dynamic,
                released: AtomicBool::new(false),
            }),
            core,
            h,
            shadow,
            rank,
            size,
            world_ranks,
            remote_world_ranks,
            inter: inter != 0,
            name: Mutex::new(name.to_owned()),
        })
    }

    /// How many processes point-to-point ranks name: the remote group's
    /// on an intercommunicator.
    pub(super) fn peers(&self) -> i32 {
        if self.inter {
            self.remote_world_ranks.len() as i32
        } else {
            self.size
        }
    }

    fn check_dest(&self, dest: i32) -> Result<()> {
        let size = self.peers();
        if dest < 0 || dest >= size {
            return Err(Error::Rank { rank: dest, size });
        }
        Ok(())
    }

    fn check_source(&self, src: i32) -> Result<()> {
        if src == ANY_SOURCE {
            return Ok(());
        }
        self.check_dest(src)
    }

    pub(super) fn check_root(&self, root: i32) -> Result<()> {
        if root < 0 || root >= self.size {
            return Err(Error::Root {
                root,
                size: self.size,
            });
        }
        Ok(())
    }

    fn check_send_tag(&self, tag: i32) -> Result<()> {
        if !(0..=self.core.tag_ub()).contains(&tag) {
            return Err(Error::Tag(tag));
        }
        Ok(())
    }

    fn check_recv_tag(&self, tag: i32) -> Result<()> {
        if tag == ANY_TAG {
            return Ok(());
        }
        self.check_send_tag(tag)
    }

    fn request(&self, req: Arc<SysRequest<A>>) -> RequestRef {
        req
    }

    /// Broadcasts `len` bytes at `ptr` (in pieces where the library has no
    /// large-count broadcast).
    fn bcast_raw(&self, comm: A::H, ptr: *mut u8, len: usize, root: i32) -> Result<()> {
        let api = &self.core.api;
        let byte = self.core.h.byte;
        if len <= INT_MAX {
            // SAFETY: the caller's buffer of `len` bytes stays valid for the
            // call.
            let rc =
                unsafe { (api.MPI_Bcast)(lib_buf::<A, _>(ptr), len as c_int, byte, root, comm) };
            return self.core.check(rc, "MPI_Bcast");
        }
        if let Some(f) = api.MPI_Bcast_c {
            // SAFETY: as above, with a large count.
            let rc = unsafe { f(lib_buf::<A, _>(ptr), len as MpiCount, byte, root, comm) };
            return self.core.check(rc, "MPI_Bcast_c");
        }
        let mut off = 0;
        while off < len {
            let n = (len - off).min(BLOCK);
            // SAFETY: [off, off + n) lies inside the caller's buffer.
            let rc = unsafe { (api.MPI_Bcast)(ptr.add(off).cast(), n as c_int, byte, root, comm) };
            self.core.check(rc, "MPI_Bcast")?;
            off += n;
        }
        Ok(())
    }

    /// Runs a reduction of `count` elements; `root` None for allreduce.
    /// `send` may be MPI_IN_PLACE; `recv` is null where it is not used.
    #[allow(clippy::too_many_arguments)]
    fn reduce_raw(
        &self,
        send: *const c_void,
        recv: *mut c_void,
        count: usize,
        elem: usize,
        ty: A::H,
        op: &LibOp<A>,
        root: Option<i32>,
    ) -> Result<()> {
        let api = &self.core.api;
        let oph = op.handle();
        let call = |s: *const c_void, r: *mut c_void, n: usize| -> c_int {
            // SAFETY: buffers of `n` elements (or IN_PLACE / unused null)
            // valid for the call; a datatype and op of this library.
            unsafe {
                match root {
                    Some(root) => (api.MPI_Reduce)(s, r, n as c_int, ty, oph, root, self.h),
                    None => (api.MPI_Allreduce)(s, r, n as c_int, ty, oph, self.h),
                }
            }
        };
        let rc = if count <= INT_MAX {
            call(send, recv, count)
        } else {
            let large = match root {
                Some(_) => api.MPI_Reduce_c.is_some(),
                None => api.MPI_Allreduce_c.is_some(),
            };
            if large && op.is_builtin() {
                // SAFETY: as in `call`, with a large count.
                unsafe {
                    match root {
                        Some(root) => (api.MPI_Reduce_c.expect("checked"))(
                            send,
                            recv,
                            count as MpiCount,
                            ty,
                            oph,
                            root,
                            self.h,
                        ),
                        None => (api.MPI_Allreduce_c.expect("checked"))(
                            send,
                            recv,
                            count as MpiCount,
                            ty,
                            oph,
                            self.h,
                        ),
                    }
                }
            } else {
                // Reductions are element-wise: pieces give the same result.
                let piece = BLOCK / elem.max(1);
                let place = in_place::<A>() as *const c_void;
                let mut off = 0;
                let mut rc = 0;
                while off < count && rc == 0 {
                    let n = (count - off).min(piece);
                    let s = if send == place {
                        send
                    } else {
                        send.cast::<u8>().wrapping_add(off * elem).cast()
                    };
                    let r = if recv.is_null() {
                        recv
                    } else {
                        recv.cast::<u8>().wrapping_add(off * elem).cast()
                    };
                    rc = call(s, r, n);
                    off += n;
                }
                rc
            }
        };
        // An exception raised by a user operation is the error to report.
        if let Some(e) = op.take_error() {
            return Err(e);
        }
        self.core.check(
            rc,
            if root.is_some() {
                "MPI_Reduce"
            } else {
                "MPI_Allreduce"
            },
        )
    }

    /// Whether any member passes `flag` (one small allreduce).
    fn any(&self, flag: bool) -> Result<bool> {
        let mine: c_int = flag as c_int;
        let mut out: c_int = 0;
        // SAFETY: one int in and out; predefined type and op.
        let rc = unsafe {
            (self.core.api.MPI_Allreduce)(
                (&mine as *const c_int).cast(),
                (&mut out as *mut c_int).cast(),
                1,
                self.core.h.int,
                self.core.h.ops.max,
                self.h,
            )
        };
        self.core.check(rc, "MPI_Allreduce")?;
        Ok(out != 0)
    }

    pub(super) fn shadow(&self) -> Shadow<'_, A> {
        Shadow(self)
    }
}

/// The library communicator's members (or, with `remote`, its remote
/// group's) as ranks of MPI_COMM_WORLD.
fn world_ranks_of<A: Abi>(core: &Core<A>, h: A::H, remote: bool) -> Result<Vec<i32>> {
    let api = &core.api;
    let (mut g, mut wg) = (core.h.comm_null, core.h.comm_null);
    let mut size: c_int = 0;
    // SAFETY: a valid communicator; one int out.
    let rc = unsafe {
        if remote {
            (api.MPI_Comm_remote_size)(h, &mut size)
        } else {
            (api.MPI_Comm_size)(h, &mut size)
        }
    };
    core.check(rc, "MPI_Comm_size")?;
    let ranks: Vec<c_int> = (0..size).collect();
    let mut out = vec![0 as c_int; size as usize];
    // SAFETY: valid communicators; groups freed below; arrays of `size`.
    unsafe {
        let rc = if remote {
            (api.MPI_Comm_remote_group)(h, &mut g)
        } else {
            (api.MPI_Comm_group)(h, &mut g)
        };
        core.check(rc, "MPI_Comm_group")?;
        let rc = (api.MPI_Comm_group)(core.h.comm_world, &mut wg);
        if rc != 0 {
            (api.MPI_Group_free)(&mut g);
            return Err(core.error(rc, "MPI_Comm_group"));
        }
        let rc = (api.MPI_Group_translate_ranks)(g, size, ranks.as_ptr(), wg, out.as_mut_ptr());
        (api.MPI_Group_free)(&mut g);
        (api.MPI_Group_free)(&mut wg);
        core.check(rc, "MPI_Group_translate_ranks")?;
    }
    // Processes of another MPI_COMM_WORLD (spawned, connected) have none.
    for r in &mut out {
        if *r == A::UNDEFINED {
            *r = UNDEFINED;
        }
    }
    Ok(out)
}

/// Do two `n`-byte ranges overlap?
fn overlap(a: *const u8, b: *const u8, n: usize) -> bool {
    n > 0 && (a as usize) < (b as usize) + n && (b as usize) < (a as usize) + n
}

/// Counts and displacements of blobs laid end to end.
fn layout(lens: &[u64]) -> (Vec<MpiCount>, Vec<MpiAint>, usize) {
    let mut displs = Vec::with_capacity(lens.len());
    let mut total = 0usize;
    for &l in lens {
        displs.push(total as MpiAint);
        total += l as usize;
    }
    (lens.iter().map(|&l| l as MpiCount).collect(), displs, total)
}

fn to_ints(v: &[MpiCount]) -> Vec<c_int> {
    v.iter().map(|&x| x as c_int).collect()
}

fn aints_to_ints(v: &[MpiAint]) -> Vec<c_int> {
    v.iter().map(|&x| x as c_int).collect()
}

/// Cuts a buffer laid out by `lens` into blobs.
fn split_blobs(all: &[u8], lens: &[u64]) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(lens.len());
    let mut off = 0;
    for &l in lens {
        let l = l as usize;
        out.push(all[off..off + l].to_vec());
        off += l;
    }
    out
}

impl<A: Abi> Communicator for SystemComm<A> {
    fn rank(&self) -> i32 {
        self.rank
    }

    fn size(&self) -> i32 {
        self.size
    }

    fn name(&self) -> String {
        self.name.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_name(&self, name: &str) {
        *self.name.lock().unwrap_or_else(|e| e.into_inner()) = name.to_owned();
    }

    fn isend(&self, parts: &[RawBuf], dest: i32, tag: i32, mode: SendMode) -> Result<RequestRef> {
        self.check_send_tag(tag)?;
        if dest == PROC_NULL {
            return Ok(SysRequest::completed(&self.core, Status::proc_null()));
        }
        self.check_dest(dest)?;
        let core = &*self.core;
        let wire = Wire::parts(core, parts)?;
        let f = match mode {
            SendMode::Synchronous => core.api.MPI_Issend,
            // A ready send is a standard send (MPI allows it; the native
            // runtime does the same).
            SendMode::Standard | SendMode::Ready => core.api.MPI_Isend,
        };
        let mut req = core.h.request_null;
        // SAFETY: the caller keeps the parts valid until the request
        // completes; `req` is an out-pointer.
        let rc = unsafe {
            f(
                wire.ptr, wire.count, wire.dtype, dest, tag, self.h, &mut req,
            )
        };
        core.check(rc, "MPI_Isend")?;
        Ok(self.request(SysRequest::active(&self.core, req, false, false)))
    }

    fn send(&self, parts: &[RawBuf], dest: i32, tag: i32, mode: SendMode) -> Result<()> {
        self.check_send_tag(tag)?;
        if dest == PROC_NULL {
            return Ok(());
        }
        self.check_dest(dest)?;
        let core = &*self.core;
        let wire = Wire::parts(core, parts)?;
        let f = match mode {
            SendMode::Synchronous => core.api.MPI_Ssend,
            SendMode::Standard | SendMode::Ready => core.api.MPI_Send,
        };
        // SAFETY: the caller keeps the parts valid for the call.
        let rc = unsafe { f(wire.ptr, wire.count, wire.dtype, dest, tag, self.h) };
        core.check(rc, "MPI_Send")
    }

    fn irecv(&self, buf: RawBuf, source: i32, tag: i32) -> Result<RequestRef> {
        self.check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(SysRequest::completed(&self.core, Status::proc_null()));
        }
        self.check_source(source)?;
        let req = self.core.recvq.post_buffer(
            &self.core,
            &self.handles,
            buf,
            Core::<A>::lib_source(source),
            Core::<A>::lib_tag(tag),
        )?;
        Ok(self.request(req))
    }

    fn recv(&self, buf: RawBuf, source: i32, tag: i32) -> Result<Status> {
        self.check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(Status::proc_null());
        }
        self.check_source(source)?;
        let core = &*self.core;
        if core.recvq.pending() || !core.prepost_receives {
            // Keep the posting order with queued receives.
            return self.irecv(buf, source, tag)?.wait();
        }
        let wire = Wire::contiguous(core, buf.ptr, buf.len)?;
        let mut raw = A::Status::default();
        // SAFETY: the caller keeps `buf` valid for the call.
        let rc = unsafe {
            (core.api.MPI_Recv)(
                wire.ptr,
                wire.count,
                wire.dtype,
                Core::<A>::lib_source(source),
                Core::<A>::lib_tag(tag),
                self.h,
                &mut raw,
            )
        };
        core.check(rc, "MPI_Recv")?;
        core.recv_status(&raw, wire.derived)
    }

    fn irecv_owned(&self, source: i32, tag: i32) -> Result<RequestRef> {
        self.check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(SysRequest::completed(&self.core, Status::proc_null()));
        }
        self.check_source(source)?;
        let req = self.core.recvq.post_owned(
            &self.core,
            &self.handles,
            Core::<A>::lib_source(source),
            Core::<A>::lib_tag(tag),
        );
        Ok(self.request(req))
    }

    fn iprobe(&self, source: i32, tag: i32) -> Result<Option<Status>> {
        self.check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(Some(Status::proc_null()));
        }
        self.check_source(source)?;
        let core = &*self.core;
        match core.recvq.iprobe(
            core,
            self.h,
            Core::<A>::lib_source(source),
            Core::<A>::lib_tag(tag),
        )? {
            Some(raw) => Ok(Some(core.status(&raw, core.message_bytes(&raw)?))),
            None => Ok(None),
        }
    }

    fn probe(&self, source: i32, tag: i32) -> Result<Status> {
        if let Some(st) = self.iprobe(source, tag)? {
            return Ok(st);
        }
        let mut found = Ok(None);
        self.core.wait_until(|| {
            found = self.iprobe(source, tag);
            !matches!(found, Ok(None))
        })?;
        found.map(|s| s.expect("wait_until returned with a status"))
    }

    fn improbe(&self, source: i32, tag: i32) -> Result<Option<(Box<dyn Message>, Status)>> {
        self.check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(Some((
                Box::new(SysMessage::new(&self.core, None)),
                Status::proc_null(),
            )));
        }
        self.check_source(source)?;
        let core = &*self.core;
        match core.recvq.improbe(
            core,
            self.h,
            Core::<A>::lib_source(source),
            Core::<A>::lib_tag(tag),
        )? {
            Some((msg, raw)) => {
                // The message is ours now: if its length cannot be read,
                // dropping it receives and discards it.
                let m = SysMessage::new(&self.core, Some((msg, raw)));
                let status = core.status(&raw, core.message_bytes(&raw)?);
                Ok(Some((Box::new(m), status)))
            }
            None => Ok(None),
        }
    }

    fn mprobe(&self, source: i32, tag: i32) -> Result<(Box<dyn Message>, Status)> {
        if let Some(m) = self.improbe(source, tag)? {
            return Ok(m);
        }
        let mut found = Ok(None);
        self.core.wait_until(|| {
            found = self.improbe(source, tag);
            !matches!(found, Ok(None))
        })?;
        found.map(|m| m.expect("wait_until returned with a message"))
    }

    fn barrier(&self) -> Result<()> {
        // SAFETY: a valid communicator.
        let rc = unsafe { (self.core.api.MPI_Barrier)(self.h) };
        self.core.check(rc, "MPI_Barrier")
    }

    fn bcast(&self, buf: RawBuf, root: i32) -> Result<()> {
        self.check_root(root)?;
        self.bcast_raw(self.h, buf.ptr, buf.len, root)
    }

    fn reduce(
        &self,
        send: Option<RawBuf>,
        recv: RawBuf,
        count: usize,
        dtype: &Datatype,
        op: &Op,
        root: i32,
    ) -> Result<()> {
        self.check_root(root)?;
        let elem = dtype.size();
        let nbytes = count * elem;
        let is_root = self.rank == root;
        match send {
            Some(s) if s.len < nbytes => {
                return Err(Error::Buffer(format!(
                    "send buffer smaller than {nbytes} bytes"
                )))
            }
            None if recv.len < nbytes => {
                return Err(Error::Buffer(format!(
                    "send buffer smaller than {nbytes} bytes"
                )))
            }
            _ => {}
        }
        if is_root && recv.len < nbytes {
            return Err(Error::Buffer(format!(
                "receive buffer holds {} bytes, need {nbytes}",
                recv.len
            )));
        }
        let (ty, lop) = sysop::resolve(&self.core, op, dtype)?;
        let mut copy: Vec<u8> = Vec::new();
        let sendp: *const c_void = match send {
            None if is_root => in_place::<A>(),
            // A non-root contributes what its receive buffer holds.
            None => lib_buf::<A, _>(recv.ptr),
            Some(s) if is_root && overlap(s.ptr, recv.ptr, nbytes) => {
                if s.ptr == recv.ptr {
                    in_place::<A>()
                } else {
                    // SAFETY: the caller keeps `s` valid for the call.
                    copy.extend_from_slice(unsafe { &s.as_slice()[..nbytes] });
                    copy.as_ptr().cast()
                }
            }
            Some(s) => lib_buf::<A, _>(s.ptr),
        };
        let recvp: *mut c_void = if is_root {
            lib_buf::<A, _>(recv.ptr)
        } else {
            std::ptr::null_mut()
        };
        self.reduce_raw(sendp, recvp, count, elem, ty, &lop, Some(root))
    }

    fn allreduce(
        &self,
        send: Option<RawBuf>,
        recv: RawBuf,
        count: usize,
        dtype: &Datatype,
        op: &Op,
    ) -> Result<()> {
        let elem = dtype.size();
        let nbytes = count * elem;
        if recv.len < nbytes {
            return Err(Error::Buffer(format!(
                "receive buffer holds {} bytes, need {nbytes}",
                recv.len
            )));
        }
        if let Some(s) = send {
            if s.len < nbytes {
                return Err(Error::Buffer(format!(
                    "send buffer smaller than {nbytes} bytes"
                )));
            }
        }
        let (ty, lop) = sysop::resolve(&self.core, op, dtype)?;
        let mut copy: Vec<u8> = Vec::new();
        let sendp: *const c_void = match send {
            None => in_place::<A>(),
            Some(s) if s.ptr == recv.ptr && nbytes > 0 => in_place::<A>(),
            Some(s) if overlap(s.ptr, recv.ptr, nbytes) => {
                // SAFETY: the caller keeps `s` valid for the call.
                copy.extend_from_slice(unsafe { &s.as_slice()[..nbytes] });
                copy.as_ptr().cast()
            }
            Some(s) => lib_buf::<A, _>(s.ptr),
        };
        self.reduce_raw(
            sendp,
            lib_buf::<A, _>(recv.ptr),
            count,
            elem,
            ty,
            &lop,
            None,
        )
    }

    fn bcast_bytes(&self, data: Option<Vec<u8>>, root: i32) -> Result<Vec<u8>> {
        self.check_root(root)?;
        let is_root = self.rank == root;
        let mut len = if is_root {
            data.as_ref().map_or(0, Vec::len) as u64
        } else {
            0
        };
        self.bcast_raw(self.h, (&mut len as *mut u64).cast(), 8, root)?;
        let mut v = match data {
            Some(v) if is_root => v,
            _ => vec![0u8; len as usize],
        };
        self.bcast_raw(self.h, v.as_mut_ptr(), v.len(), root)?;
        Ok(v)
    }

    fn gather_bytes(&self, data: &[u8], root: i32) -> Result<Option<Vec<Vec<u8>>>> {
        self.check_root(root)?;
        let core = &*self.core;
        let api = &core.api;
        let byte = core.h.byte;
        let is_root = self.rank == root;
        let n = self.size as usize;
        let mine = data.len() as u64;
        let mut lens = vec![0u64; if is_root { n } else { 0 }];
        // SAFETY: one u64 out of every rank into `lens` (n entries at the
        // root, unused elsewhere).
        let rc = unsafe {
            (api.MPI_Gather)(
                (&mine as *const u64).cast(),
                8,
                byte,
                lib_buf::<A, _>(lens.as_mut_ptr()),
                8,
                byte,
                root,
                self.h,
            )
        };
        core.check(rc, "MPI_Gather")?;
        let (counts, displs, total) = layout(&lens);
        let mut all = vec![0u8; total];
        let rc = if let Some(f) = api.MPI_Gatherv_c {
            // SAFETY: `data` is valid; at the root `all` holds `total` bytes
            // laid out by counts/displs.
            unsafe {
                f(
                    lib_buf::<A, _>(data.as_ptr()),
                    mine as MpiCount,
                    byte,
                    lib_buf::<A, _>(all.as_mut_ptr()),
                    counts.as_ptr(),
                    displs.as_ptr(),
                    byte,
                    root,
                    self.h,
                )
            }
        } else {
            let big = data.len() > INT_MAX || (is_root && total > INT_MAX);
            if self.any(big)? {
                return coll::gather_bytes(&self.shadow(), data, root);
            }
            let (c, d) = (to_ints(&counts), aints_to_ints(&displs));
            // SAFETY: as above, every count and offset fitting an int.
            unsafe {
                (api.MPI_Gatherv)(
                    lib_buf::<A, _>(data.as_ptr()),
                    mine as c_int,
                    byte,
                    lib_buf::<A, _>(all.as_mut_ptr()),
                    c.as_ptr(),
                    d.as_ptr(),
                    byte,
                    root,
                    self.h,
                )
            }
        };
        core.check(rc, "MPI_Gatherv")?;
        Ok(is_root.then(|| split_blobs(&all, &lens)))
    }

    fn allgather_bytes(&self, data: &[u8]) -> Result<Vec<Vec<u8>>> {
        let core = &*self.core;
        let api = &core.api;
        let byte = core.h.byte;
        let n = self.size as usize;
        let mine = data.len() as u64;
        let mut lens = vec![0u64; n];
        // SAFETY: one u64 in, n out.
        let rc = unsafe {
            (api.MPI_Allgather)(
                (&mine as *const u64).cast(),
                8,
                byte,
                lib_buf::<A, _>(lens.as_mut_ptr()),
                8,
                byte,
                self.h,
            )
        };
        core.check(rc, "MPI_Allgather")?;
        let (counts, displs, total) = layout(&lens);
        let mut all = vec![0u8; total];
        let rc = if let Some(f) = api.MPI_Allgatherv_c {
            // SAFETY: `all` holds `total` bytes laid out by counts/displs.
            unsafe {
                f(
                    lib_buf::<A, _>(data.as_ptr()),
                    mine as MpiCount,
                    byte,
                    lib_buf::<A, _>(all.as_mut_ptr()),
                    counts.as_ptr(),
                    displs.as_ptr(),
                    byte,
                    self.h,
                )
            }
        } else if total > INT_MAX {
            // Every rank knows every length: all take this path together.
            return coll::allgather_bytes(&self.shadow(), data);
        } else {
            let (c, d) = (to_ints(&counts), aints_to_ints(&displs));
            // SAFETY: as above, with int counts.
            unsafe {
                (api.MPI_Allgatherv)(
                    lib_buf::<A, _>(data.as_ptr()),
                    mine as c_int,
                    byte,
                    lib_buf::<A, _>(all.as_mut_ptr()),
                    c.as_ptr(),
                    d.as_ptr(),
                    byte,
                    self.h,
                )
            }
        };
        core.check(rc, "MPI_Allgatherv")?;
        Ok(split_blobs(&all, &lens))
    }

    fn scatter_bytes(&self, data: Option<Vec<Vec<u8>>>, root: i32) -> Result<Vec<u8>> {
        self.check_root(root)?;
        let core = &*self.core;
        let api = &core.api;
        let byte = core.h.byte;
        let is_root = self.rank == root;
        let n = self.size as usize;
        let mut lens = vec![0u64; n];
        let mut packed = Vec::new();
        if is_root {
            let data = data
                .as_ref()
                .ok_or_else(|| Error::Arg("the root must provide the data to scatter".into()))?;
            if data.len() != n {
                return Err(Error::Arg(format!(
                    "scatter needs {n} items at the root, got {}",
                    data.len()
                )));
            }
            for (l, blob) in lens.iter_mut().zip(data) {
                *l = blob.len() as u64;
            }
        }
        // Every rank learns every length, so all choose the same path.
        self.bcast_raw(self.h, lens.as_mut_ptr().cast(), 8 * n, root)?;
        let (counts, displs, total) = layout(&lens);
        let mine = lens[self.rank as usize] as usize;
        if api.MPI_Scatterv_c.is_none() && total > INT_MAX {
            return coll::scatter_bytes(&self.shadow(), data, root);
        }
        if is_root {
            packed.reserve_exact(total);
            for blob in data.as_deref().unwrap_or_default() {
                packed.extend_from_slice(blob);
            }
        }
        let mut out = vec![0u8; mine];
        let rc = if let Some(f) = api.MPI_Scatterv_c {
            // SAFETY: at the root `packed` holds `total` bytes laid out by
            // counts/displs; `out` holds this rank's share.
            unsafe {
                f(
                    lib_buf::<A, _>(packed.as_ptr()),
                    counts.as_ptr(),
                    displs.as_ptr(),
                    byte,
                    lib_buf::<A, _>(out.as_mut_ptr()),
                    mine as MpiCount,
                    byte,
                    root,
                    self.h,
                )
            }
        } else {
            let (c, d) = (to_ints(&counts), aints_to_ints(&displs));
            // SAFETY: as above, every count and offset fitting an int.
            unsafe {
                (api.MPI_Scatterv)(
                    lib_buf::<A, _>(packed.as_ptr()),
                    c.as_ptr(),
                    d.as_ptr(),
                    byte,
                    lib_buf::<A, _>(out.as_mut_ptr()),
                    mine as c_int,
                    byte,
                    root,
                    self.h,
                )
            }
        };
        core.check(rc, "MPI_Scatterv")?;
        Ok(out)
    }

    fn alltoall_bytes(&self, data: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        let core = &*self.core;
        let api = &core.api;
        let byte = core.h.byte;
        let n = self.size as usize;
        if data.len() != n {
            return Err(Error::Arg(format!(
                "alltoall needs {n} items, got {}",
                data.len()
            )));
        }
        let slens: Vec<u64> = data.iter().map(|b| b.len() as u64).collect();
        let mut rlens = vec![0u64; n];
        // SAFETY: n u64 in and out.
        let rc = unsafe {
            (api.MPI_Alltoall)(
                lib_buf::<A, _>(slens.as_ptr()),
                8,
                byte,
                lib_buf::<A, _>(rlens.as_mut_ptr()),
                8,
                byte,
                self.h,
            )
        };
        core.check(rc, "MPI_Alltoall")?;
        let (sc, sd, stotal) = layout(&slens);
        let (rc_, rd, rtotal) = layout(&rlens);
        if api.MPI_Alltoallv_c.is_none() && self.any(stotal > INT_MAX || rtotal > INT_MAX)? {
            return coll::alltoall_bytes(&self.shadow(), data);
        }
        let mut packed = Vec::with_capacity(stotal);
        for blob in &data {
            packed.extend_from_slice(blob);
        }
        drop(data);
        let mut all = vec![0u8; rtotal];
        let rc = if let Some(f) = api.MPI_Alltoallv_c {
            // SAFETY: both buffers laid out by their counts/displs.
            unsafe {
                f(
                    lib_buf::<A, _>(packed.as_ptr()),
                    sc.as_ptr(),
                    sd.as_ptr(),
                    byte,
                    lib_buf::<A, _>(all.as_mut_ptr()),
                    rc_.as_ptr(),
                    rd.as_ptr(),
                    byte,
                    self.h,
                )
            }
        } else {
            let (sc, sd) = (to_ints(&sc), aints_to_ints(&sd));
            let (rc_, rd) = (to_ints(&rc_), aints_to_ints(&rd));
            // SAFETY: as above, every count and offset fitting an int.
            unsafe {
                (api.MPI_Alltoallv)(
                    lib_buf::<A, _>(packed.as_ptr()),
                    sc.as_ptr(),
                    sd.as_ptr(),
                    byte,
                    lib_buf::<A, _>(all.as_mut_ptr()),
                    rc_.as_ptr(),
                    rd.as_ptr(),
                    byte,
                    self.h,
                )
            }
        };
        core.check(rc, "MPI_Alltoallv")?;
        Ok(split_blobs(&all, &rlens))
    }

    fn reduce_bytes(
        &self,
        data: Vec<u8>,
        root: Option<i32>,
        combine: &mut Combine<'_>,
    ) -> Result<Option<Vec<u8>>> {
        if let Some(r) = root {
            self.check_root(r)?;
        }
        // Blobs of different lengths and a combiner that is not an MPI
        // function: oxmpi's own rank-ordered tree on the shadow.
        coll::reduce_bytes(&self.shadow(), data, root, combine)
    }

    fn dup(&self) -> Result<CommRef> {
        let mut h = self.core.h.comm_null;
        // SAFETY: a valid communicator; `h` is an out-pointer.
        let rc = unsafe { (self.core.api.MPI_Comm_dup)(self.h, &mut h) };
        self.core.check(rc, "MPI_Comm_dup")?;
        let new = SystemComm::wrap(self.core.clone(), h, &self.name(), true)?;
        // A duplicate has the same topology (every member dups together,
        // so the library's topology communicator is made collectively).
        if let Some(t) = self.topology() {
            new.attach_topology((*t).clone())?;
        }
        Ok(Arc::new(new))
    }

    fn split(&self, color: i32, key: i32) -> Result<Option<CommRef>> {
        if color < 0 && color != UNDEFINED {
            return Err(Error::Arg(format!(
                "split colour must be non-negative or UNDEFINED, got {color}"
            )));
        }
        let lib_color = if color == UNDEFINED {
            A::UNDEFINED
        } else {
            color
        };
        let mut h = self.core.h.comm_null;
        // SAFETY: a valid communicator; `h` is an out-pointer.
        let rc = unsafe { (self.core.api.MPI_Comm_split)(self.h, lib_color, key, &mut h) };
        self.core.check(rc, "MPI_Comm_split")?;
        if h == self.core.h.comm_null {
            return Ok(None);
        }
        Ok(Some(Arc::new(SystemComm::wrap(
            self.core.clone(),
            h,
            "",
            true,
        )?)))
    }

    fn world_ranks(&self) -> Vec<i32> {
        self.world_ranks.clone()
    }

    fn abort(&self, code: i32) -> ! {
        self.core.abort(self.h, code)
    }

    fn collective(&self, op: Collective) -> Result<()> {
        match op {
            Collective::Barrier => self.barrier(),
            Collective::Bcast { buf, root } => self.bcast(buf, root),
            Collective::Reduce {
                send,
                recv,
                count,
                dtype,
                op,
                root,
            } => self.reduce(send, recv, count, &dtype, &op, root),
            Collective::Allreduce {
                send,
                recv,
                count,
                dtype,
                op,
            } => self.allreduce(send, recv, count, &dtype, &op),
            // The rest run as oxmpi's point-to-point algorithms on the
            // shadow communicator (with oxmpi's reduction kernels), where
            // they cannot match a user's message.
            other => {
                if let Some(root) = match &other {
                    Collective::Gather { root, .. } | Collective::Scatter { root, .. } => {
                        Some(*root)
                    }
                    _ => None,
                } {
                    self.check_root(root)?;
                }
                // SAFETY: the caller keeps the collective's buffers valid
                // for this blocking call (the backend line's contract).
                unsafe { coll::execute(&self.shadow(), &other) }
            }
        }
    }

    fn icollective(&self, op: Collective) -> Result<RequestRef> {
        self.start_collective(op)
    }

    fn scan_bytes(
        &self,
        data: Vec<u8>,
        exclusive: bool,
        combine: &mut Combine<'_>,
    ) -> Result<Option<Vec<u8>>> {
        // Rank-ordered left fold on the shadow, as for object reductions.
        coll::scan_bytes(&self.shadow(), data, exclusive, combine)
    }

    fn free(&self) -> Result<()> {
        // The library communicators are freed (MPI_Comm_free) when the last
        // holder lets go: this object, or a receive still queued on it,
        // which MPI lets complete after a free. One that reaches another
        // MPI_COMM_WORLD is disconnected now.
        self.handles.disconnect()
    }

    fn is_inter(&self) -> bool {
        self.inter
    }

    fn remote_world_ranks(&self) -> Vec<i32> {
        self.remote_world_ranks.clone()
    }

    fn create(&self, group: &[i32]) -> Result<Option<CommRef>> {
        let g = LibGroup::of_world_ranks(&self.core, group)?;
        let mut h = self.core.h.comm_null;
        // SAFETY: a valid communicator and group; `h` is an out-pointer.
        let rc = unsafe { (self.core.api.MPI_Comm_create)(self.h, g.0, &mut h) };
        self.core.check(rc, "MPI_Comm_create")?;
        self.adopt_new(h).map(|c| c.map(|c| c as CommRef))
    }

    fn create_group(&self, group: &[i32], tag: i32) -> Result<CommRef> {
        if tag < 0 {
            return Err(Error::Tag(tag));
        }
        // Only a disambiguator of concurrent creations: a tag past the
        // library's MPI_TAG_UB (oxmpi allows up to INT_MAX, and
        // Create_from_group's string tags hash anywhere in that range) is
        // folded into the library's range the same way by every member.
        let tag = fold_tag(tag, self.core.tag_ub());
        let g = LibGroup::of_world_ranks(&self.core, group)?;
        let mut h = self.core.h.comm_null;
        // SAFETY: a valid communicator and group; `h` is an out-pointer.
        let rc = unsafe { (self.core.api.MPI_Comm_create_group)(self.h, g.0, tag, &mut h) };
        self.core.check(rc, "MPI_Comm_create_group")?;
        self.adopt_new(h)?.map(|c| c as CommRef).ok_or_else(|| {
            Error::Intern("MPI_Comm_create_group gave a member no communicator".into())
        })
    }

    fn create_intercomm(
        &self,
        local_leader: i32,
        peer: Option<&dyn Communicator>,
        remote_leader: i32,
        tag: i32,
    ) -> Result<CommRef> {
        if self.inter {
            return Err(Error::Comm(
                "the local communicator of Create_intercomm must be an intracommunicator".into(),
            ));
        }
        if !(0..self.size).contains(&local_leader) {
            return Err(Error::Rank {
                rank: local_leader,
                size: self.size,
            });
        }
        self.check_send_tag(tag)?;
        // The leaders talk through the bridge (a private duplicate of
        // MPI_COMM_WORLD), which names the remote leader by its world rank.
        let remote_world = if self.rank == local_leader {
            let peer = peer.ok_or_else(|| {
                Error::Comm("the local leader of Create_intercomm needs a peer communicator".into())
            })?;
            let ranks = if peer.is_inter() {
                peer.remote_world_ranks()
            } else {
                peer.world_ranks()
            };
            usize::try_from(remote_leader)
                .ok()
                .and_then(|r| ranks.get(r).copied())
                .ok_or(Error::Rank {
                    rank: remote_leader,
                    size: ranks.len() as i32,
                })?
        } else {
            0
        };
        self.intercomm_with(self.h, local_leader, remote_world, tag)
    }

    fn create_from_groups(
        &self,
        local: &[i32],
        local_leader: i32,
        remote: &[i32],
        remote_leader: i32,
        tag: i32,
    ) -> Result<CommRef> {
        // `tag` stands for the caller's string tag (any int): folded into
        // the library's tag range the same way by every process.
        let tag = fold_tag(tag, self.core.tag_ub());
        if !(0..local.len() as i32).contains(&local_leader) {
            return Err(Error::Rank {
                rank: local_leader,
                size: local.len() as i32,
            });
        }
        let remote_world = usize::try_from(remote_leader)
            .ok()
            .and_then(|r| remote.get(r).copied())
            .ok_or(Error::Rank {
                rank: remote_leader,
                size: remote.len() as i32,
            })?;
        // The local group as a communicator of its own (collective over
        // its members only), then the intercommunicator over the bridge.
        let g = LibGroup::of_world_ranks(&self.core, local)?;
        let mut lc = self.core.h.comm_null;
        // SAFETY: a valid communicator and group; `lc` is an out-pointer.
        let rc = unsafe { (self.core.api.MPI_Comm_create_group)(self.h, g.0, tag, &mut lc) };
        self.core.check(rc, "MPI_Comm_create_group")?;
        let made = self.intercomm_with(lc, local_leader, remote_world, tag);
        // SAFETY: the communicator made above, used by no one else.
        unsafe { (self.core.api.MPI_Comm_free)(&mut lc) };
        made
    }

    fn spawn(&self, root: i32, commands: Option<&[SpawnCommand]>) -> Result<CommRef> {
        self.spawn_procs(root, commands)
    }

    fn accept(&self, port: Option<&str>, root: i32) -> Result<CommRef> {
        self.port_connection(port, root, true)
    }

    fn connect(&self, port: Option<&str>, root: i32) -> Result<CommRef> {
        self.port_connection(port, root, false)
    }

    fn merge(&self, high: bool) -> Result<CommRef> {
        if !self.inter {
            return Err(Error::Comm("Merge needs an intercommunicator".into()));
        }
        let mut h = self.core.h.comm_null;
        // SAFETY: a valid intercommunicator; `h` is an out-pointer.
        let rc = unsafe { (self.core.api.MPI_Intercomm_merge)(self.h, high as c_int, &mut h) };
        self.core.check(rc, "MPI_Intercomm_merge")?;
        Ok(Arc::new(SystemComm::wrap(self.core.clone(), h, "", true)?))
    }

    fn topology(&self) -> Option<Arc<Topology>> {
        self.handles.topo.get().map(|(t, _)| t.clone())
    }

    fn set_topology(&self, topo: Topology) -> Result<()> {
        self.attach_topology(topo)
    }

    fn ineighbor_exchange(&self, sends: &[RawBuf], recvs: &[RawBuf]) -> Result<RequestRef> {
        self.start_neighbor_exchange(sends, recvs)
    }

    fn neighbor_exchange_bytes(&self, sends: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        self.neighbor_blobs(sends)
    }

    fn iexchange(&self, sends: &[(i32, RawBuf)], recvs: &[(i32, RawBuf)]) -> Result<RequestRef> {
        self.start_exchange(sends, recvs)
    }

    fn exchange_bytes(
        &self,
        sends: Vec<(i32, Vec<u8>)>,
        recv_from: &[i32],
    ) -> Result<Vec<Vec<u8>>> {
        self.exchange_blobs(sends, recv_from)
    }
}

impl<A: Abi> SystemComm<A> {
    /// Wraps a communicator the library just made; None for MPI_COMM_NULL.
    fn adopt_new(&self, h: A::H) -> Result<Option<Arc<SystemComm<A>>>> {
        if h == self.core.h.comm_null {
            return Ok(None);
        }
        Ok(Some(Arc::new(SystemComm::wrap(
            self.core.clone(),
            h,
            "",
            true,
        )?)))
    }

    /// MPI_Intercomm_create of `local` with the group whose leader has
    /// world rank `remote_world` (significant at the local leader).
    fn intercomm_with(
        &self,
        local: A::H,
        local_leader: i32,
        remote_world: i32,
        tag: i32,
    ) -> Result<CommRef> {
        let bridge = *self
            .core
            .bridge
            .get()
            .ok_or_else(|| Error::Intern("no bridge communicator".into()))?;
        let mut h = self.core.h.comm_null;
        // SAFETY: valid communicators; `h` is an out-pointer.
        let rc = unsafe {
            (self.core.api.MPI_Intercomm_create)(
                local,
                local_leader,
                bridge,
                remote_world,
                tag,
                &mut h,
            )
        };
        self.core.check(rc, "MPI_Intercomm_create")?;
        Ok(Arc::new(SystemComm::wrap(self.core.clone(), h, "", true)?))
    }
}

/// `tag` folded into 0..=ub (the same on every process).
fn fold_tag(tag: i32, ub: i32) -> i32 {
    (tag as i64).rem_euclid(ub as i64 + 1) as i32
}

/// A library group, freed on drop.
struct LibGroup<'a, A: Abi>(A::H, &'a Core<A>);

impl<'a, A: Abi> LibGroup<'a, A> {
    /// The group of these MPI_COMM_WORLD ranks, in this order.
    fn of_world_ranks(core: &'a Core<A>, ranks: &[i32]) -> Result<Self> {
        let n = c_int::try_from(ranks.len()).map_err(|_| Error::Arg("group too large".into()))?;
        let mut wg = core.h.comm_null;
        let mut g = core.h.comm_null;
        // SAFETY: a predefined communicator; out-pointers; `ranks` holds
        // `n` ints; the world group is freed here.
        unsafe {
            core.check(
                (core.api.MPI_Comm_group)(core.h.comm_world, &mut wg),
                "MPI_Comm_group",
            )?;
            let rc = (core.api.MPI_Group_incl)(wg, n, ranks.as_ptr(), &mut g);
            (core.api.MPI_Group_free)(&mut wg);
            core.check(rc, "MPI_Group_incl")?;
        }
        Ok(LibGroup(g, core))
    }
}

impl<A: Abi> Drop for LibGroup<'_, A> {
    fn drop(&mut self) {
        // SAFETY: a group we made. (MPI_GROUP_EMPTY, which an empty
        // MPI_Group_incl may return, refuses the free harmlessly.)
        unsafe { (self.1.api.MPI_Group_free)(&mut self.0) };
    }
}

/// What this backend does not do yet: Python raises NotImplementedError.
pub(super) fn not_implemented(what: &str) -> Error {
    Error::NotImplemented(format!("{what} on the system-MPI backend"))
}

/// Point-to-point on the shadow communicator, for oxmpi's collective
/// algorithms in `coll.rs`. Waits drive the receive queue.
pub(super) struct Shadow<'a, A: Abi>(&'a SystemComm<A>);

impl<A: Abi> Shadow<'_, A> {
    pub(super) fn isend(&self, data: &[u8], dest: i32, tag: i32) -> Result<Arc<SysRequest<A>>> {
        let c = self.0;
        let core = &*c.core;
        let wire = Wire::contiguous(core, data.as_ptr() as *mut u8, data.len())?;
        let mut req = core.h.request_null;
        // SAFETY: the caller keeps `data` valid until the request completes.
        let rc = unsafe {
            (core.api.MPI_Isend)(
                wire.ptr, wire.count, wire.dtype, dest, tag, c.shadow, &mut req,
            )
        };
        core.check(rc, "MPI_Isend")?;
        Ok(SysRequest::active(&c.core, req, false, false))
    }
}

impl<A: Abi> Transport for Shadow<'_, A> {
    type Pending = Arc<SysRequest<A>>;

    fn rank(&self) -> i32 {
        self.0.rank
    }

    fn size(&self) -> i32 {
        self.0.size
    }

    unsafe fn start_send(&self, data: RawBuf, dest: i32, tag: i32) -> Result<Self::Pending> {
        // SAFETY: the caller keeps `data` valid until `finish` (this
        // function's contract).
        self.isend(unsafe { data.as_slice() }, dest, tag)
    }

    unsafe fn start_recv(&self, buf: RawBuf, src: i32, tag: i32) -> Result<Self::Pending> {
        let c = self.0;
        let core = &*c.core;
        let wire = Wire::contiguous(core, buf.ptr, buf.len)?;
        let mut req = core.h.request_null;
        // SAFETY: the caller keeps `buf` valid until `finish`.
        let rc = unsafe {
            (core.api.MPI_Irecv)(
                wire.ptr, wire.count, wire.dtype, src, tag, c.shadow, &mut req,
            )
        };
        core.check(rc, "MPI_Irecv")?;
        Ok(SysRequest::active(&c.core, req, true, wire.derived))
    }

    fn finish(&self, reqs: Vec<Self::Pending>) -> Result<()> {
        use crate::backend::Request;
        // Every request is waited for, even after an error: their buffers
        // are the caller's until then.
        let mut first = Ok(());
        for r in reqs {
            let st = r.wait();
            if first.is_ok() {
                first = st.map(|_| ());
            }
        }
        first
    }

    fn recv_vec(&self, src: i32, tag: i32) -> Result<Vec<u8>> {
        let c = self.0;
        let core = &*c.core;
        let mut found = Ok(None);
        core.wait_until(|| {
            // Nothing is ever queued on the shadow: probe it directly.
            found = core.recvq.improbe(core, c.shadow, src, tag);
            !matches!(found, Ok(None))
        })?;
        let (msg, raw) = found?.expect("wait_until returned with a message");
        let m = Box::new(SysMessage::new(&c.core, Some((msg, raw))));
        let mut v = vec![0u8; core.message_bytes(&raw)?];
        m.recv(RawBuf::from_mut(&mut v))?;
        Ok(v)
    }
}

impl<A: Abi> coll::Comm for Shadow<'_, A> {
    fn node(&self) -> Option<coll::shm::Node<'_>> {
        // Members may be on several machines: no shared-memory channel.
        None
    }

    fn single_copy(&self) -> bool {
        false
    }
}

impl<A: Abi> CommHandles<A> {
    /// The user communicator.
    pub fn handle(&self) -> A::H {
        self.h
    }
}
