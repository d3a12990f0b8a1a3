//! The safe, typed communicator API for Rust programs (MPI-4.1 chapters 3
//! and 6). Lifetimes keep every buffer borrowed for as long as the runtime
//! uses it.

use crate::backend::{CommRef, RawBuf, SendMode, Status};
use crate::datatype::{Basic, Datatype};
use crate::error::Result;
use crate::op::{Op, Predefined};

/// Types whose values can travel as a predefined MPI datatype.
///
/// # Safety
/// Implementors must be plain old data whose in-memory layout is `BASIC`.
pub unsafe trait Equivalence: Copy + 'static {
    const BASIC: Basic;
}

macro_rules! equivalence {
    ($($t:ty => $b:ident),* $(,)?) => {$(
        // SAFETY: a primitive whose layout is exactly the basic type.
        unsafe impl Equivalence for $t { const BASIC: Basic = Basic::$b; }
    )*};
}
equivalence!(i8 => I8, u8 => U8, i16 => I16, u16 => U16, i32 => I32, u32 => U32,
             i64 => I64, u64 => U64, f32 => F32, f64 => F64, bool => Bool);

fn bytes<T: Equivalence>(v: &[T]) -> RawBuf {
    RawBuf {
        ptr: v.as_ptr() as *mut u8,
        len: std::mem::size_of_val(v),
    }
}

fn bytes_mut<T: Equivalence>(v: &mut [T]) -> RawBuf {
    RawBuf {
        ptr: v.as_mut_ptr().cast(),
        len: std::mem::size_of_val(v),
    }
}

/// A communicator.
#[derive(Clone)]
pub struct Comm {
    inner: CommRef,
}

/// The backend handle, for layers built on top (`comm.as_ref()`).
impl AsRef<CommRef> for Comm {
    fn as_ref(&self) -> &CommRef {
        &self.inner
    }
}

impl Comm {
    pub(crate) fn from_ref(inner: CommRef) -> Comm {
        Comm { inner }
    }

    pub fn rank(&self) -> i32 {
        self.inner.rank()
    }

    pub fn size(&self) -> i32 {
        self.inner.size()
    }

    /// MPI_Send.
    pub fn send<T: Equivalence>(&self, data: &[T], dest: i32, tag: i32) -> Result<()> {
        self.inner
            .send(&[bytes(data)], dest, tag, SendMode::Standard)
    }

    /// MPI_Recv; `Status::count` is in bytes.
    pub fn recv<T: Equivalence>(&self, buf: &mut [T], source: i32, tag: i32) -> Result<Status> {
        self.inner.recv(bytes_mut(buf), source, tag)
    }

    /// MPI_Barrier.
    pub fn barrier(&self) -> Result<()> {
        self.inner.barrier()
    }

    /// MPI_Bcast.
    pub fn broadcast<T: Equivalence>(&self, buf: &mut [T], root: i32) -> Result<()> {
        self.inner.bcast(bytes_mut(buf), root)
    }

    /// MPI_Allreduce with a predefined operation.
    pub fn all_reduce<T: Equivalence>(
        &self,
        data: &[T],
        out: &mut [T],
        op: Predefined,
    ) -> Result<()> {
        assert_eq!(
            data.len(),
            out.len(),
            "all_reduce: buffers differ in length"
        );
        self.inner.allreduce(
            Some(bytes(data)),
            bytes_mut(out),
            data.len(),
            &Datatype::new(T::BASIC),
            &Op::Predefined(op),
        )
    }

    /// MPI_Reduce with a predefined operation; `out` is used on `root` only.
    pub fn reduce<T: Equivalence>(
        &self,
        data: &[T],
        out: &mut [T],
        op: Predefined,
        root: i32,
    ) -> Result<()> {
        self.inner.reduce(
            Some(bytes(data)),
            bytes_mut(out),
            data.len(),
            &Datatype::new(T::BASIC),
            &Op::Predefined(op),
            root,
        )
    }

    /// MPI_Comm_dup.
    pub fn dup(&self) -> Result<Comm> {
        Ok(Comm::from_ref(self.inner.dup()?))
    }
}
