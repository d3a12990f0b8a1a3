//! The backend line: the traits through which every Python-facing (and
//! Rust-API) call reaches a runtime. The native shared-memory runtime
//! implements them today; the system-MPI backend will implement the same.
//!
//! Buffers cross this line as raw (pointer, length) pairs. The caller
//! guarantees that a buffer stays valid, and is not accessed by anyone else
//! in a conflicting way, until the operation that uses it completes; the
//! safe Rust API in [`crate::comm`] ties that to lifetimes, the Python layer
//! to the lifetime of the `Request` object that holds the buffer.

use std::sync::Arc;

use crate::datatype::Datatype;
use crate::error::{Error, Result};
use crate::op::Op;
use crate::topo::Topology;

/// MPI_PROC_NULL: a peer that sends and receives nothing.
pub const PROC_NULL: i32 = -1;
/// MPI_ANY_SOURCE.
pub const ANY_SOURCE: i32 = -2;
/// MPI_ROOT (intercommunicator collectives).
pub const ROOT: i32 = -3;
/// MPI_ANY_TAG.
pub const ANY_TAG: i32 = -1;
/// MPI_UNDEFINED.
pub const UNDEFINED: i32 = -32766;
/// Largest tag value (the MPI_TAG_UB attribute).
pub const TAG_UB: i32 = i32::MAX;

/// A buffer passed across the backend line.
#[derive(Clone, Copy, Debug)]
pub struct RawBuf {
    pub ptr: *mut u8,
    pub len: usize,
}

// SAFETY: a RawBuf is only a description; the contract in the module doc
// makes whoever creates one responsible for the memory's validity.
unsafe impl Send for RawBuf {}
// SAFETY: as above.
unsafe impl Sync for RawBuf {}

impl RawBuf {
    pub const EMPTY: RawBuf = RawBuf {
        ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
        len: 0,
    };

    /// Describes a slice to read from.
    pub fn from_slice(s: &[u8]) -> RawBuf {
        RawBuf {
            ptr: s.as_ptr() as *mut u8,
            len: s.len(),
        }
    }

    /// Describes a slice to write into.
    pub fn from_mut(s: &mut [u8]) -> RawBuf {
        RawBuf {
            ptr: s.as_mut_ptr(),
            len: s.len(),
        }
    }

    /// # Safety
    /// The memory must be valid for reads for the returned lifetime.
    pub unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: by this function's contract.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// # Safety
    /// The memory must be valid for writes, and not otherwise accessed, for
    /// the returned lifetime.
    pub unsafe fn as_mut_slice<'a>(&self) -> &'a mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: by this function's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// What a completed receive (or probe) found (MPI_Status).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub source: i32,
    pub tag: i32,
    /// Error class of the operation (0 on success).
    pub error: i32,
    /// Bytes received (or, for a probe, the message's length).
    pub count: usize,
    pub cancelled: bool,
}

impl Status {
    /// The status of an operation with PROC_NULL.
    pub fn proc_null() -> Status {
        Status {
            source: PROC_NULL,
            tag: ANY_TAG,
            ..Status::default()
        }
    }
}

/// Send modes (MPI-4.1 §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendMode {
    /// Standard: may buffer small messages.
    Standard,
    /// Synchronous: completes only once the receive has matched.
    Synchronous,
    /// Ready: the receive is known to be posted (treated as standard).
    Ready,
}

/// A nonblocking operation in flight.
pub trait Request: Send + Sync {
    /// Completed? Makes progress once if not.
    fn test(&self) -> Result<Option<Status>>;
    /// Blocks until complete.
    fn wait(&self) -> Result<Status>;
    /// Completed, without making progress.
    fn is_complete(&self) -> bool;
    /// Asks to cancel; the status of the completed request tells whether it
    /// was.
    fn cancel(&self) -> Result<()>;
    /// The received message of a completed `irecv_owned` (once).
    fn take_data(&self) -> Option<Vec<u8>> {
        None
    }
    /// MPI_Request_get_status: the status once complete, making progress
    /// once if not. Unlike `test`, it leaves the request as it is: a later
    /// `wait` still reports the operation's error.
    fn get_status(&self) -> Option<Status>;
}

/// A shared handle to a request.
pub type RequestRef = Arc<dyn Request>;

/// A message taken off the matching queue by a matched probe (MPI_Mprobe):
/// no other receive can match it.
pub trait Message: Send + Sync {
    /// Receives it into `buf`.
    fn recv(self: Box<Self>, buf: RawBuf) -> Result<Status>;
    /// MPI_Imrecv: starts receiving it into `buf`.
    fn irecv(self: Box<Self>, buf: RawBuf) -> Result<RequestRef>;
    /// Starts receiving it into a buffer of its size that the runtime
    /// allocates; `Request::take_data` hands it out on completion.
    fn irecv_owned(self: Box<Self>) -> Result<RequestRef>;
}

/// A communicator.
pub trait Communicator: Send + Sync {
    fn rank(&self) -> i32;
    fn size(&self) -> i32;
    /// A short name for reports ("COMM_WORLD", "COMM_SELF", ...).
    fn name(&self) -> String;
    fn set_name(&self, name: &str);

    /// Checks a send's destination and tag without doing anything, so that
    /// a call made of several steps (Sendrecv) can refuse bad arguments
    /// before its first step has an effect.
    fn check_send_args(&self, dest: i32, tag: i32) -> Result<()> {
        if !(0..=TAG_UB).contains(&tag) {
            return Err(Error::Tag(tag));
        }
        let size = self.peer_count();
        if dest != PROC_NULL && !(0..size).contains(&dest) {
            return Err(Error::Rank { rank: dest, size });
        }
        Ok(())
    }

    /// Checks a receive's source and tag without doing anything.
    fn check_recv_args(&self, source: i32, tag: i32) -> Result<()> {
        if tag != ANY_TAG && !(0..=TAG_UB).contains(&tag) {
            return Err(Error::Tag(tag));
        }
        let size = self.peer_count();
        if source != PROC_NULL && source != ANY_SOURCE && !(0..size).contains(&source) {
            return Err(Error::Rank { rank: source, size });
        }
        Ok(())
    }

    /// How many processes point-to-point ranks can name: the remote
    /// group's size on an intercommunicator, else the size.
    fn peer_count(&self) -> i32 {
        if self.is_inter() {
            self.remote_world_ranks().len() as i32
        } else {
            self.size()
        }
    }

    /// Starts a send of the concatenation of `parts`.
    fn isend(&self, parts: &[RawBuf], dest: i32, tag: i32, mode: SendMode) -> Result<RequestRef>;
    /// Blocking send; faster than `isend` + `wait`.
    fn send(&self, parts: &[RawBuf], dest: i32, tag: i32, mode: SendMode) -> Result<()>;
    /// Starts a receive into `buf`.
    fn irecv(&self, buf: RawBuf, source: i32, tag: i32) -> Result<RequestRef>;
    /// Blocking receive.
    fn recv(&self, buf: RawBuf, source: i32, tag: i32) -> Result<Status>;
    /// Starts a receive of a message of any length into a buffer the
    /// runtime allocates; `Request::take_data` hands it out on completion.
    fn irecv_owned(&self, source: i32, tag: i32) -> Result<RequestRef>;
    fn iprobe(&self, source: i32, tag: i32) -> Result<Option<Status>>;
    fn probe(&self, source: i32, tag: i32) -> Result<Status>;
    fn improbe(&self, source: i32, tag: i32) -> Result<Option<(Box<dyn Message>, Status)>>;
    fn mprobe(&self, source: i32, tag: i32) -> Result<(Box<dyn Message>, Status)>;

    fn barrier(&self) -> Result<()>;
    fn bcast(&self, buf: RawBuf, root: i32) -> Result<()>;
    /// `send` None means MPI_IN_PLACE (the root's data is in `recv`).
    fn reduce(
        &self,
        send: Option<RawBuf>,
        recv: RawBuf,
        count: usize,
        dtype: &Datatype,
        op: &Op,
        root: i32,
    ) -> Result<()>;
    fn allreduce(
        &self,
        send: Option<RawBuf>,
        recv: RawBuf,
        count: usize,
        dtype: &Datatype,
        op: &Op,
    ) -> Result<()>;

    /// Byte-blob collectives for pickled objects: each rank's blob may have
    /// its own length.
    fn bcast_bytes(&self, data: Option<Vec<u8>>, root: i32) -> Result<Vec<u8>>;
    fn gather_bytes(&self, data: &[u8], root: i32) -> Result<Option<Vec<Vec<u8>>>>;
    fn allgather_bytes(&self, data: &[u8]) -> Result<Vec<Vec<u8>>>;
    fn scatter_bytes(&self, data: Option<Vec<Vec<u8>>>, root: i32) -> Result<Vec<u8>>;
    fn alltoall_bytes(&self, data: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>>;
    /// Reduces blobs in rank order with `combine(left, right) -> result`;
    /// the result lands on `root` (or everywhere when `root` is None).
    fn reduce_bytes(
        &self,
        data: Vec<u8>,
        root: Option<i32>,
        combine: &mut Combine<'_>,
    ) -> Result<Option<Vec<u8>>>;

    /// MPI_Comm_dup.
    fn dup(&self) -> Result<CommRef>;
    /// MPI_Comm_split; None for MPI_UNDEFINED colour.
    fn split(&self, color: i32, key: i32) -> Result<Option<CommRef>>;
    /// Job ranks of this communicator's members, in rank order.
    fn world_ranks(&self) -> Vec<i32>;
    /// Aborts the job.
    fn abort(&self, code: i32) -> !;

    /// Runs a collective operation (MPI-4.1 chapter 6) to completion.
    fn collective(&self, op: Collective) -> Result<()>;
    /// Starts a nonblocking collective (MPI-4.1 §6.12). The buffers in `op`
    /// must stay valid until the request completes.
    fn icollective(&self, op: Collective) -> Result<RequestRef>;
    /// Inclusive (or, with `exclusive`, exclusive) prefix reduction of
    /// blobs with `combine(left, right)`, in rank order; None on rank 0 of
    /// an exclusive scan.
    fn scan_bytes(
        &self,
        data: Vec<u8>,
        exclusive: bool,
        combine: &mut Combine<'_>,
    ) -> Result<Option<Vec<u8>>>;

    // ------------------------------------ communicator management (ch. 7)

    /// MPI_Comm_free: gives the communicator's context back. Other handles
    /// to it must not be used afterwards.
    fn free(&self) -> Result<()>;
    /// Whether this is an intercommunicator.
    fn is_inter(&self) -> bool;
    /// Job ranks of an intercommunicator's remote group, in remote rank
    /// order (empty for an intracommunicator).
    fn remote_world_ranks(&self) -> Vec<i32>;
    /// MPI_Comm_create: collective over this communicator; `group` holds
    /// job ranks, a subset of the members. None at non-members.
    fn create(&self, group: &[i32]) -> Result<Option<CommRef>>;
    /// MPI_Comm_create_group: collective over the members of `group` only.
    fn create_group(&self, group: &[i32], tag: i32) -> Result<CommRef>;
    /// MPI_Intercomm_create with this communicator as the local one;
    /// `peer` is significant at the local leader only.
    fn create_intercomm(
        &self,
        local_leader: i32,
        peer: Option<&dyn Communicator>,
        remote_leader: i32,
        tag: i32,
    ) -> Result<CommRef>;
    /// MPI_Intercomm_create_from_groups, called on COMM_WORLD (whose
    /// spare contexts carry the agreement); groups hold job ranks.
    fn create_from_groups(
        &self,
        local: &[i32],
        local_leader: i32,
        remote: &[i32],
        remote_leader: i32,
        tag: i32,
    ) -> Result<CommRef>;
    /// MPI_Intercomm_merge.
    fn merge(&self, high: bool) -> Result<CommRef>;

    // ---------------------------------- process management (ch. 11)

    /// MPI_Comm_spawn_multiple, collective over this intracommunicator;
    /// `commands` is significant at `root` only. Returns the
    /// intercommunicator to the new processes.
    fn spawn(&self, root: i32, commands: Option<&[SpawnCommand]>) -> Result<CommRef> {
        let _ = (root, commands);
        Err(Error::NotImplemented(
            "MPI_Comm_spawn is not available on this backend".into(),
        ))
    }

    /// MPI_Comm_accept (`port` significant at `root` only).
    fn accept(&self, port: Option<&str>, root: i32) -> Result<CommRef> {
        let _ = (port, root);
        Err(Error::NotImplemented(
            "MPI_Comm_accept is not available on this backend".into(),
        ))
    }

    /// MPI_Comm_connect (`port` significant at `root` only).
    fn connect(&self, port: Option<&str>, root: i32) -> Result<CommRef> {
        let _ = (port, root);
        Err(Error::NotImplemented(
            "MPI_Comm_connect is not available on this backend".into(),
        ))
    }

    // ------------------------- process failures (MPI-5 fault tolerance)

    /// MPI_Comm_get_failed: job ranks of this communicator's processes
    /// (both groups of an intercommunicator) known here to have failed,
    /// in the order this process learned of them.
    fn failed(&self) -> Result<Vec<i32>> {
        Err(Error::NotImplemented(
            "MPI_Comm_get_failed is not available on this backend".into(),
        ))
    }

    /// MPI_Comm_ack_failed: acknowledges the first `n` processes of
    /// `failed()`, so that receives from any source stop failing because
    /// of them; returns how many are acknowledged in all.
    fn ack_failed(&self, n: usize) -> Result<usize> {
        let _ = n;
        Err(Error::NotImplemented(
            "MPI_Comm_ack_failed is not available on this backend".into(),
        ))
    }

    /// MPI_Comm_revoke: every member's pending and later operations on the
    /// communicator (but agreement, shrink, failure queries and free) fail
    /// with ERR_REVOKED.
    fn revoke(&self) -> Result<()> {
        Err(Error::NotImplemented(
            "MPI_Comm_revoke is not available on this backend".into(),
        ))
    }

    /// MPI_Comm_is_revoked.
    fn is_revoked(&self) -> bool {
        false
    }

    /// MPI_Comm_iagree: starts the bitwise AND of the 4-byte integer at
    /// `flag` over every process of the communicator (both groups of an
    /// intercommunicator); the result replaces it when the request
    /// completes. Independent of the communicator's collectives (it may be
    /// started in another order relative to them). `flag` stays valid
    /// until then.
    fn iagree(&self, flag: RawBuf) -> Result<RequestRef> {
        let _ = flag;
        Err(Error::NotImplemented(
            "MPI_Comm_iagree is not available on this backend".into(),
        ))
    }

    // ----------------------------------------------- topologies (ch. 8)

    /// The virtual topology, if any.
    fn topology(&self) -> Option<Arc<Topology>>;
    /// Attaches a topology to a communicator that has none (right after
    /// creating it, before anyone else sees it).
    fn set_topology(&self, topo: Topology) -> Result<()>;
    /// Starts a neighbour exchange: `sends[i]` goes to the i-th destination
    /// and `recvs[j]` receives from the j-th source of the topology's
    /// neighbourhood (MPI order); blocks of PROC_NULL neighbours are
    /// skipped. The buffers must stay valid until the request completes.
    fn ineighbor_exchange(&self, sends: &[RawBuf], recvs: &[RawBuf]) -> Result<RequestRef>;
    /// Blocking neighbour exchange of blobs of any length, one per
    /// destination; returns one per source (empty for PROC_NULL).
    fn neighbor_exchange_bytes(&self, sends: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>>;

    /// Starts one round of point-to-point on a context of its own, for
    /// collectives composed above the runtime (intercommunicator
    /// collectives): each of `sends` and `recvs` is (peer, buffer), peers
    /// being remote ranks on an intercommunicator; PROC_NULL peers are
    /// skipped. Rounds match in the order every process starts them.
    fn iexchange(&self, sends: &[(i32, RawBuf)], recvs: &[(i32, RawBuf)]) -> Result<RequestRef>;
    /// A blocking `iexchange` of blobs of any length; returns one blob per
    /// peer of `recv_from` (empty for PROC_NULL).
    fn exchange_bytes(&self, sends: Vec<(i32, Vec<u8>)>, recv_from: &[i32])
        -> Result<Vec<Vec<u8>>>;

    // ------------------------------- one-sided communication (ch. 12)

    /// MPI_Win_create, MPI_Win_allocate(_shared), MPI_Win_create_dynamic:
    /// collective over this intracommunicator.
    fn win_create(&self, how: WinCreate) -> Result<WindowRef> {
        let _ = how;
        Err(Error::NotImplemented(
            "one-sided communication (MPI.Win) is not available on this backend".into(),
        ))
    }
}

/// A shared handle to a communicator.
pub type CommRef = Arc<dyn Communicator>;

/// How object reductions combine two pickled operands: `combine(left,
/// right)`, where `left` holds the lower ranks' part.
pub type Combine<'a> = dyn FnMut(&[u8], &[u8]) -> Result<Vec<u8>> + 'a;

/// A runtime: what `MPI_Init` gives.
pub trait Engine: Send + Sync {
    fn world(&self) -> CommRef;
    fn self_comm(&self) -> CommRef;
    fn processor_name(&self) -> String;
    /// e.g. "oxmpi 0.1.0 (native shared-memory runtime)".
    fn library_version(&self) -> String;
    fn universe_size(&self) -> i32;

    /// MPI_Comm_get_parent: the intercommunicator to the processes that
    /// spawned this one, if they did.
    fn parent(&self) -> Option<CommRef> {
        None
    }

    /// MPI_Open_port: a port name for `accept`.
    fn open_port(&self) -> Result<String> {
        Err(Error::NotImplemented(
            "MPI_Open_port is not available on this backend".into(),
        ))
    }

    /// MPI_Close_port.
    fn close_port(&self, port: &str) -> Result<()> {
        let _ = port;
        Err(Error::NotImplemented(
            "MPI_Close_port is not available on this backend".into(),
        ))
    }

    /// MPI_Publish_name, or MPI_Unpublish_name with `port` None.
    fn publish_name(&self, service: &str, port: Option<&str>) -> Result<()> {
        let _ = (service, port);
        Err(Error::NotImplemented(
            "MPI_Publish_name is not available on this backend".into(),
        ))
    }

    /// MPI_Lookup_name.
    fn lookup_name(&self, service: &str) -> Result<String> {
        let _ = service;
        Err(Error::NotImplemented(
            "MPI_Lookup_name is not available on this backend".into(),
        ))
    }

    /// MPI_Comm_join over the connected socket `fd`.
    fn join(&self, fd: i32) -> Result<CommRef> {
        let _ = fd;
        Err(Error::NotImplemented(
            "MPI_Comm_join is not available on this backend".into(),
        ))
    }

    /// Asks that this process's death, should it die, be reported to its
    /// peers as a process failure (their calls that depend on it raise
    /// ERR_PROC_FAILED) instead of ending the job: pool workers ask this.
    fn set_failure_survivable(&self) -> Result<()> {
        Err(Error::NotImplemented(
            "surviving a process failure is not available on this backend".into(),
        ))
    }

    /// Makes progress until `done()` returns true (Waitany, Waitsome, ...).
    fn progress_until(&self, done: &mut dyn FnMut() -> bool) -> Result<()>;
    /// Makes progress once without blocking.
    fn progress(&self);
    /// Installs a check run periodically while blocked; an error it returns
    /// ends the wait with that error (Python uses it for Ctrl-C).
    fn set_interrupt_check(&self, check: Box<dyn Fn() -> Result<()> + Send + Sync>);
    fn abort(&self, code: i32, msg: &str) -> !;
    fn finalize(&self) -> Result<()>;
    /// The largest valid tag (the MPI_TAG_UB attribute): [`TAG_UB`] unless
    /// the engine's transport allows less (a system MPI library).
    fn tag_ub(&self) -> i32 {
        TAG_UB
    }
    /// Does `finalize` wait for every other process (a system library's
    /// MPI_Finalize does)? Then a process that ends on an error must abort
    /// the job instead, or it and the peers waiting for it wait forever.
    fn finalize_waits_for_peers(&self) -> bool {
        false
    }
}

/// One process's blocks in a vector collective: block `i` is `counts[i]`
/// bytes at byte offset `displs[i]` from `buf.ptr`; every block lies inside
/// `buf`. The caller turns element counts and displacements into bytes.
#[derive(Clone, Debug)]
pub struct Blocks {
    pub buf: RawBuf,
    pub counts: Vec<usize>,
    pub displs: Vec<usize>,
}

impl Blocks {
    /// `n` blocks of `block` bytes each, one after the other.
    pub fn contiguous(buf: RawBuf, n: usize, block: usize) -> Blocks {
        Blocks {
            buf,
            counts: vec![block; n],
            displs: (0..n).map(|i| i * block).collect(),
        }
    }

    /// Block `i` as a buffer.
    pub fn block(&self, i: usize) -> RawBuf {
        RawBuf {
            // `wrapping_add` keeps this safe to compute; the contract above
            // keeps it inside `buf`.
            ptr: self.buf.ptr.wrapping_add(self.displs[i]),
            len: self.counts[i],
        }
    }
}

/// One command of MPI_Comm_spawn(_multiple).
#[derive(Clone, Debug, Default)]
pub struct SpawnCommand {
    pub command: String,
    pub args: Vec<String>,
    pub maxprocs: usize,
    /// Info hints (`wdir`, `path`, `env`, `soft`, `host`, ...).
    pub info: Vec<(String, String)>,
}

/// A collective operation on buffers (MPI-4.1 chapter 6), described in
/// bytes. `None` as a send buffer is MPI_IN_PLACE, where MPI allows it.
/// Buffers of the reductions hold `count` elements of `dtype`.
#[derive(Clone, Debug)]
pub enum Collective {
    Barrier,
    Bcast {
        buf: RawBuf,
        root: i32,
    },
    /// MPI_Gather(v): `recv` (significant at the root only) has one block
    /// per rank. In place, the root's block already holds its data.
    Gather {
        send: Option<RawBuf>,
        recv: Blocks,
        root: i32,
    },
    /// MPI_Scatter(v): `send` (significant at the root only) has one block
    /// per rank. In place, the root keeps its block where it is.
    Scatter {
        send: Blocks,
        recv: Option<RawBuf>,
        root: i32,
    },
    /// MPI_Allgather(v). In place, each rank's block of `recv` holds its
    /// data.
    Allgather {
        send: Option<RawBuf>,
        recv: Blocks,
    },
    /// MPI_Alltoall(v/w). In place, `recv` holds the data to send, block
    /// for block.
    Alltoall {
        send: Option<Blocks>,
        recv: Blocks,
    },
    /// MPI_Reduce: `recv` is significant at the root only.
    Reduce {
        send: Option<RawBuf>,
        recv: RawBuf,
        count: usize,
        dtype: Datatype,
        op: Op,
        root: i32,
    },
    Allreduce {
        send: Option<RawBuf>,
        recv: RawBuf,
        count: usize,
        dtype: Datatype,
        op: Op,
    },
    /// MPI_Reduce_scatter(_block): rank `i` gets the `counts[i]` elements
    /// that follow those of the lower ranks. In place, `recv` holds the
    /// whole input and the result lands at its start.
    ReduceScatter {
        send: Option<RawBuf>,
        recv: RawBuf,
        counts: Vec<usize>,
        dtype: Datatype,
        op: Op,
    },
    /// MPI_Scan, or MPI_Exscan with `exclusive` (whose result on rank 0 is
    /// undefined: `recv` is left as it was).
    Scan {
        send: Option<RawBuf>,
        recv: RawBuf,
        count: usize,
        dtype: Datatype,
        op: Op,
        exclusive: bool,
    },
}

// ------------------------------------- one-sided communication (ch. 12)

/// How a window's memory is provided (MPI_WIN_CREATE_FLAVOR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WinFlavor {
    /// MPI_Win_create: memory the caller provides.
    Create,
    /// MPI_Win_allocate: memory the runtime allocates.
    Allocate,
    /// MPI_Win_create_dynamic: memory attached later.
    Dynamic,
    /// MPI_Win_allocate_shared: memory every member can load and store.
    Shared,
}

/// What `Communicator::win_create` makes.
#[derive(Clone, Copy, Debug)]
pub enum WinCreate {
    /// This process's part is `mem` (which stays valid until the window is
    /// freed), addressed in units of `disp_unit` bytes.
    Memory { mem: RawBuf, disp_unit: usize },
    /// The runtime allocates `size` bytes here; `shared` makes a
    /// shared-memory window (MPI_Win_allocate_shared), `noncontig` lets the
    /// parts of a shared window not follow each other (the
    /// `alloc_shared_noncontig` info hint).
    Allocate {
        size: usize,
        disp_unit: usize,
        shared: bool,
        noncontig: bool,
    },
    /// No memory until attached; targets are addressed by absolute address.
    Dynamic,
}

/// Where an RMA operation lands in the target's window: `count` elements
/// of `dtype` (the target's layout) at `disp` target displacement units.
#[derive(Clone, Debug)]
pub struct WinTarget {
    pub disp: isize,
    pub count: usize,
    pub dtype: Datatype,
}

/// A window (MPI_Win). Ranks are ranks of the window's group; PROC_NULL
/// targets do nothing. Origin buffers hold the origin's data packed (the
/// caller packs non-contiguous origin datatypes); their length must equal
/// the target's `count * dtype.size()`.
pub trait Window: Send + Sync {
    fn flavor(&self) -> WinFlavor;
    /// Whether public and private copies are one (MPI_WIN_UNIFIED).
    fn unified(&self) -> bool;
    /// This process's window memory (empty for a dynamic window).
    fn local(&self) -> RawBuf;
    fn disp_unit(&self) -> usize;
    /// Job ranks of the window's group, in rank order.
    fn world_ranks(&self) -> Vec<i32>;
    fn rank(&self) -> i32;
    /// MPI_Win_shared_query: `rank`'s memory as addressable here and its
    /// displacement unit (an empty buffer where it is not shared memory).
    fn shared_query(&self, rank: i32) -> Result<(RawBuf, usize)>;
    /// MPI_Win_attach (dynamic windows).
    fn attach(&self, mem: RawBuf) -> Result<()>;
    /// MPI_Win_detach (dynamic windows).
    fn detach(&self, addr: usize) -> Result<()>;

    fn put(&self, origin: RawBuf, rank: i32, target: &WinTarget) -> Result<()>;
    fn get(&self, origin: RawBuf, rank: i32, target: &WinTarget) -> Result<()>;
    /// MPI_Accumulate (`result` None), MPI_Get_accumulate and
    /// MPI_Fetch_and_op: atomic per target element with respect to other
    /// accumulate operations. `origin_type` is the origin's datatype (its
    /// basic type must be the target's); `op` must be predefined.
    fn accumulate(
        &self,
        origin: RawBuf,
        origin_type: &Datatype,
        result: Option<RawBuf>,
        rank: i32,
        target: &WinTarget,
        op: &Op,
    ) -> Result<()>;
    /// MPI_Compare_and_swap of one element of the predefined `dtype`.
    fn compare_and_swap(
        &self,
        origin: RawBuf,
        compare: RawBuf,
        result: RawBuf,
        rank: i32,
        disp: isize,
        dtype: &Datatype,
    ) -> Result<()>;

    /// MPI_Win_fence.
    fn fence(&self, assert: i32) -> Result<()>;
    /// MPI_Win_lock.
    fn lock(&self, rank: i32, exclusive: bool, assert: i32) -> Result<()>;
    fn unlock(&self, rank: i32) -> Result<()>;
    fn lock_all(&self, assert: i32) -> Result<()>;
    fn unlock_all(&self) -> Result<()>;
    /// MPI_Win_flush(_local)(rank), or every target with `rank` None.
    fn flush(&self, rank: Option<i32>) -> Result<()>;
    /// MPI_Win_sync.
    fn sync(&self) -> Result<()>;
    /// MPI_Win_post to the origins `group` (window ranks).
    fn post(&self, group: &[i32], assert: i32) -> Result<()>;
    /// MPI_Win_start towards the targets `group` (window ranks).
    fn start(&self, group: &[i32], assert: i32) -> Result<()>;
    fn complete(&self) -> Result<()>;
    fn wait(&self) -> Result<()>;
    /// MPI_Win_test: whether the exposure epoch is over (it then is).
    fn test(&self) -> Result<bool>;
    /// MPI_Win_free (collective).
    fn free(&self) -> Result<()>;
}

/// A shared handle to a window.
pub type WindowRef = Arc<dyn Window>;

/// MPI_MODE_NOCHECK (assertions of the synchronisation calls).
pub const MODE_NOCHECK: i32 = 1024;
/// MPI_MODE_NOSTORE.
pub const MODE_NOSTORE: i32 = 2048;
/// MPI_MODE_NOPUT.
pub const MODE_NOPUT: i32 = 4096;
/// MPI_MODE_NOPRECEDE.
pub const MODE_NOPRECEDE: i32 = 8192;
/// MPI_MODE_NOSUCCEED.
pub const MODE_NOSUCCEED: i32 = 16384;
