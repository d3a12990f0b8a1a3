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
use crate::error::Result;
use crate::op::Op;

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
}

/// A shared handle to a request.
pub type RequestRef = Arc<dyn Request>;

/// A message taken off the matching queue by a matched probe (MPI_Mprobe):
/// no other receive can match it.
pub trait Message: Send + Sync {
    /// Receives it into `buf`.
    fn recv(self: Box<Self>, buf: RawBuf) -> Result<Status>;
}

/// A communicator.
pub trait Communicator: Send + Sync {
    fn rank(&self) -> i32;
    fn size(&self) -> i32;
    /// A short name for reports ("COMM_WORLD", "COMM_SELF", ...).
    fn name(&self) -> String;
    fn set_name(&self, name: &str);

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
        combine: &mut dyn FnMut(&[u8], &[u8]) -> Result<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>>;

    /// MPI_Comm_dup.
    fn dup(&self) -> Result<CommRef>;
    /// MPI_Comm_split; None for MPI_UNDEFINED colour.
    fn split(&self, color: i32, key: i32) -> Result<Option<CommRef>>;
    /// Job ranks of this communicator's members, in rank order.
    fn world_ranks(&self) -> Vec<i32>;
    /// Aborts the job.
    fn abort(&self, code: i32) -> !;
}

/// A shared handle to a communicator.
pub type CommRef = Arc<dyn Communicator>;

/// A runtime: what `MPI_Init` gives.
pub trait Engine: Send + Sync {
    fn world(&self) -> CommRef;
    fn self_comm(&self) -> CommRef;
    fn processor_name(&self) -> String;
    /// e.g. "oxmpi 0.1.0 (native shared-memory runtime)".
    fn library_version(&self) -> String;
    fn universe_size(&self) -> i32;
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
}
