//! Reduction operations on the system MPI library.
//!
//! Predefined operations on predefined types are the library's own. Every
//! other operation (a Python function from `Op.Create`, REPLACE and NO_OP,
//! which MPI defines only for one-sided accumulates) runs through
//! `MPI_Op_create` with a trampoline into oxmpi's `Op::apply`.
//!
//! An MPI user function gets no context pointer: only `(invec, inoutvec,
//! len, datatype)`. oxmpi therefore keeps a fixed pool of slots, each with
//! its own trampoline function (`trampoline::<A, K>` for slot K), so that
//! the function pointer the library calls says which slot, and hence which
//! oxmpi operation, it belongs to. A reduction claims a free slot, creates
//! an MPI op from that slot's trampoline, runs the (blocking) collective,
//! then frees the op and the slot. This works whichever thread the library
//! calls the function from (a thread-local "current op" would not), and
//! lets concurrent reductions on different threads use different user
//! operations. A thread that finds every slot busy waits for one.

use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::datatype::{Basic, Datatype};
use crate::error::{Error, Result};
use crate::op::{Op, Predefined};

use super::abi::Abi;
use super::api::UserFunction;
use super::engine::Core;

/// How many user-operation reductions may run at once in one process.
const SLOTS: usize = 32;

/// What a slot's trampoline computes.
struct Active {
    op: Op,
    dtype: Datatype,
    /// The first error the operation raised; later calls do nothing.
    error: Option<Error>,
}

struct Slot {
    busy: AtomicBool,
    active: Mutex<Option<Active>>,
}

static POOL: [Slot; SLOTS] = [const {
    Slot {
        busy: AtomicBool::new(false),
        active: Mutex::new(None),
    }
}; SLOTS];
/// Wakes a thread waiting for a free slot.
static FREED: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());

/// Runs slot `k`'s operation: `inout = in op inout` over `len` elements.
fn run_slot(k: usize, input: *mut c_void, inout: *mut c_void, len: c_int) {
    // A panic must not unwind into the MPI library.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let (op, dtype) = {
            let g = POOL[k].active.lock().unwrap_or_else(|e| e.into_inner());
            match g.as_ref() {
                Some(a) if a.error.is_none() => (a.op.clone(), a.dtype.clone()),
                _ => return,
            }
        };
        let count = usize::try_from(len).unwrap_or(0);
        let n = count * dtype.size();
        if n == 0 {
            return;
        }
        // SAFETY: the library passes two buffers of `len` elements of the
        // datatype the reduction was called with, whose size is
        // `dtype.size()`; `inout` is writable and does not overlap `input`.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(input as *const u8, n),
                std::slice::from_raw_parts_mut(inout as *mut u8, n),
            )
        };
        if let Err(e) = op.apply(a, b, count, &dtype) {
            let mut g = POOL[k].active.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(a) = g.as_mut() {
                a.error.get_or_insert(e);
            }
        }
    }));
}

/// The user function of slot `K` for ABI `A`.
unsafe extern "C" fn trampoline<A: Abi, const K: usize>(
    input: *mut c_void,
    inout: *mut c_void,
    len: *mut c_int,
    _datatype: *mut A::H,
) {
    // SAFETY: MPI passes a valid pointer to the element count.
    let len = if len.is_null() { 0 } else { unsafe { *len } };
    run_slot(K, input, inout, len);
}

macro_rules! trampolines {
    ($a:ty; $($k:literal)*) => { [$(trampoline::<$a, $k> as UserFunction<$a>),*] };
}

fn trampoline_for<A: Abi>(k: usize) -> UserFunction<A> {
    let all: [UserFunction<A>; SLOTS] = trampolines!(A; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15
        16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
    all[k]
}

/// An MPI operation created for one reduction; freed on drop. A
/// nonblocking reduction keeps it (and its slot) until it completes.
pub(crate) struct UserOp<A: Abi> {
    core: Arc<Core<A>>,
    slot: usize,
    pub handle: A::H,
}

impl<A: Abi> UserOp<A> {
    fn create(
        core: &Arc<Core<A>>,
        op: Op,
        dtype: Datatype,
        commute: bool,
        wait: Wait,
    ) -> Result<Self> {
        let slot = match wait {
            Wait::ForSlot => claim_slot(),
            // A nonblocking reduction must not wait: the slots it waits
            // for are freed only when this thread completes other requests.
            Wait::No => try_claim_slot().ok_or_else(|| Error::Mpi {
                class: crate::error::class::ERR_OTHER,
                message: format!(
                    "more than {SLOTS} reductions with user-defined operations in flight \
                         at once on the system-MPI backend"
                ),
            })?,
        };
        *POOL[slot].active.lock().unwrap_or_else(|e| e.into_inner()) = Some(Active {
            op,
            dtype,
            error: None,
        });
        let mut handle = core.h.ops.sum; // overwritten by MPI_Op_create
                                         // SAFETY: a valid MPI_User_function and an out-pointer for the op.
        let rc = unsafe {
            (core.api.MPI_Op_create)(trampoline_for::<A>(slot), commute as c_int, &mut handle)
        };
        if rc != 0 {
            release_slot(slot);
            return Err(core.error(rc, "MPI_Op_create"));
        }
        Ok(UserOp {
            core: core.clone(),
            slot,
            handle,
        })
    }

    /// The error the operation raised during the reduction, if any.
    pub fn take_error(&self) -> Option<Error> {
        POOL[self.slot]
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .and_then(|a| a.error.take())
    }
}

impl<A: Abi> Drop for UserOp<A> {
    fn drop(&mut self) {
        if !self.core.is_finalized() {
            // SAFETY: an op we created and no pending operation uses (the
            // blocking collectives that use it have returned; a nonblocking
            // one drops it once complete).
            unsafe { (self.core.api.MPI_Op_free)(&mut self.handle) };
        }
        release_slot(self.slot);
    }
}

/// Whether a reduction that finds every slot busy waits for one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    ForSlot,
    No,
}

fn try_claim_slot() -> Option<usize> {
    POOL.iter().position(|s| {
        s.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    })
}

fn claim_slot() -> usize {
    loop {
        if let Some(k) = try_claim_slot() {
            return k;
        }
        let g = FREED.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = FREED.1.wait_timeout(g, std::time::Duration::from_millis(1));
    }
}

fn release_slot(k: usize) {
    *POOL[k].active.lock().unwrap_or_else(|e| e.into_inner()) = None;
    POOL[k].busy.store(false, Ordering::Release);
    FREED.1.notify_one();
}

/// A reduction operation as the library sees it.
pub(crate) enum LibOp<A: Abi> {
    Builtin(A::H),
    User(UserOp<A>),
}

impl<A: Abi> LibOp<A> {
    pub fn handle(&self) -> A::H {
        match self {
            LibOp::Builtin(h) => *h,
            LibOp::User(u) => u.handle,
        }
    }

    pub fn is_builtin(&self) -> bool {
        matches!(self, LibOp::Builtin(_))
    }

    /// The operation's own error, which takes precedence over whatever the
    /// library made of the reduction.
    pub fn take_error(&self) -> Option<Error> {
        match self {
            LibOp::Builtin(_) => None,
            LibOp::User(u) => u.take_error(),
        }
    }
}

/// oxmpi's logical meaning of each operation on C `bool` (as its native
/// kernels define it), expressed with the operations MPI defines on
/// `MPI_C_BOOL`.
fn bool_op(p: Predefined) -> Result<Predefined> {
    use Predefined::*;
    Ok(match p {
        Land | Band | Min | Prod => Land,
        Lor | Bor | Max | Sum => Lor,
        Lxor | Bxor => Lxor,
        Replace | NoOp => p,
        MaxLoc | MinLoc => return Err(Error::Op(format!("{p:?} is not defined for bool"))),
    })
}

/// The library datatype and operation for a reduction of `dtype` by `op`.
pub(crate) fn resolve<A: Abi>(
    core: &Arc<Core<A>>,
    op: &Op,
    dtype: &Datatype,
) -> Result<(A::H, LibOp<A>)> {
    resolve_with(core, op, dtype, Wait::ForSlot)
}

/// `resolve`, saying whether to wait for a free user-operation slot.
pub(crate) fn resolve_with<A: Abi>(
    core: &Arc<Core<A>>,
    op: &Op,
    dtype: &Datatype,
    wait: Wait,
) -> Result<(A::H, LibOp<A>)> {
    let t = &core.h.types;
    match op {
        Op::Predefined(p) => {
            let p = if dtype.basic == Basic::Bool {
                bool_op(*p)?
            } else {
                *p
            };
            let ty = t.for_basic(dtype.basic).ok_or_else(|| {
                Error::NotImplemented(format!(
                    "reductions on {:?} are not implemented",
                    dtype.basic
                ))
            })?;
            match core.h.ops.get(p) {
                Some(h) => Ok((ty, LibOp::Builtin(h))),
                None => Ok((
                    ty,
                    LibOp::User(UserOp::create(
                        core,
                        Op::Predefined(p),
                        dtype.clone(),
                        false,
                        wait,
                    )?),
                )),
            }
        }
        Op::User { commute, .. } => {
            // A user function may reduce any type: half precision travels
            // as 16-bit integers, which the library only moves.
            let ty = match t.for_basic(dtype.basic) {
                Some(ty) => ty,
                None if dtype.size() == 2 => t.uint16,
                None => {
                    return Err(Error::NotImplemented(format!(
                        "reductions on {:?} are not implemented",
                        dtype.basic
                    )))
                }
            };
            Ok((
                ty,
                LibOp::User(UserOp::create(
                    core,
                    op.clone(),
                    dtype.clone(),
                    *commute,
                    wait,
                )?),
            ))
        }
    }
}
