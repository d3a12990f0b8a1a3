//! One-sided communication (MPI-4.1 chapter 12) on the native runtime.
//!
//! # Design
//!
//! Every RMA operation is carried out by the origin alone, at the call:
//! the target process takes no part. A process reaches a peer's window
//! memory in one of two ways:
//!
//! * windows whose memory the runtime allocates (`Allocate`,
//!   `Allocate_shared`) live in one memfd per window that every member
//!   maps, so a peer's part is plain memory here (copies with `memmove`);
//! * windows over the caller's memory (`Create`, `Create_dynamic`) are
//!   read and written with `process_vm_readv`/`process_vm_writev` (the
//!   cross-memory attach the rendezvous protocol already uses).
//!
//! Either way a store by the origin is a store into the target's only copy
//! of the memory: the memory model is `MPI_WIN_UNIFIED`, and an operation
//! is complete (at origin and target) when its call returns, so `Flush*`
//! have nothing left to do and request-based operations return completed
//! requests.
//!
//! The synchronisation state lives in the same per-window memfd (created
//! by the window's rank 0; the others open it as `/proc/PID/fd/FD`, the
//! trick of `foreign.rs`), laid out as [`Control`] describes:
//!
//! * per target, a **lock word** (bit 31: an exclusive holder; bits 0..31:
//!   shared holders) for `Lock`/`Lock_all`, and an **accumulate mutex**
//!   that makes `Accumulate`, `Get_accumulate`, `Fetch_and_op` and
//!   `Compare_and_swap` on that target atomic with respect to each other;
//! * per process, a **doorbell** rung whenever a post or complete
//!   counter for it moves;
//! * for dynamic windows, per process a table of the regions it has
//!   attached (address, length), which origins check their accesses
//!   against;
//! * `n * n` **post counters** (`post[origin][target]`, raised by the
//!   target's `Post`) and `n * n` **complete counters**
//!   (`complete[target][origin]`, raised by the origin's `Complete`) for
//!   general active-target synchronisation; each process remembers how
//!   many of each it has consumed, so epochs follow each other without
//!   resetting anything.
//!
//! Waiters sleep on futexes (the lock word, the mutex or their doorbell),
//! with a timeout as a guard against lost wake-ups; they never spin, since
//! ranks may outnumber cores. `Fence` is a barrier on the window's private
//! communicator (a duplicate of the creating one): operations before it
//! are already complete.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence as mem_fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{
    CommRef, Communicator, RawBuf, WinCreate, WinFlavor, WinTarget, Window, WindowRef,
    MODE_NOCHECK, PROC_NULL,
};
use crate::datatype::Datatype;
use crate::error::{class, Error, Result};
use crate::op::Op;
use crate::sys;

/// How long a waiter sleeps before it looks again without a wake-up.
const NAP: Duration = Duration::from_millis(50);

/// The exclusive-holder bit of a lock word.
const WRITER: u32 = 1 << 31;

/// How many regions a process may attach to a dynamic window at once.
const ATTACH_SLOTS: usize = 64;

fn rma_error(class: i32, message: impl Into<String>) -> Error {
    Error::Mpi {
        class,
        message: message.into(),
    }
}

/// A shared mapping of a memfd, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; every access to it goes
// through atomics (control words) or is the RMA contract's concern
// (window memory: the caller guarantees no conflicting accesses).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn map(fd: &OwnedFd, len: usize) -> Result<Mapping> {
        // SAFETY: mapping a file we hold open, shared, at an address the
        // kernel chooses; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::os(
                "mmap of a window's shared memory",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    fn word64(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset + 8 <= self.len && offset.is_multiple_of(8));
        // SAFETY: as for `word`, with 8-byte alignment (the attach table
        // starts 8-aligned and its entries are 16 bytes).
        unsafe { &*(self.ptr.add(offset) as *const AtomicU64) }
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= self.len && offset.is_multiple_of(4));
        // SAFETY: `offset` is inside the mapping and 4-aligned (the layout
        // of `Control` guarantees both); the page is shared and only ever
        // accessed atomically at this offset.
        unsafe { &*(self.ptr.add(offset) as *const AtomicU32) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped, once.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// Offsets of the control words in a window's memfd, for `n` members:
/// a 64-byte line per member (lock word, accumulate mutex, doorbell), then
/// the post and complete counters, then (page-aligned) the window memory
/// of runtime-allocated windows.
#[derive(Clone, Copy)]
struct Control {
    n: usize,
    /// Entries per member in the table of attached regions (dynamic
    /// windows only; 0 otherwise).
    slots: usize,
}

impl Control {
    fn lock(self, t: usize) -> usize {
        64 * t
    }
    fn mutex(self, t: usize) -> usize {
        64 * t + 4
    }
    fn bell(self, t: usize) -> usize {
        64 * t + 8
    }
    fn post(self, origin: usize, target: usize) -> usize {
        64 * self.n + 4 * (origin * self.n + target)
    }
    fn complete(self, target: usize, origin: usize) -> usize {
        64 * self.n + 4 * self.n * self.n + 4 * (target * self.n + origin)
    }
    /// Entry `i` of member `t`'s table of attached regions: two 64-bit
    /// words, address and length (0: a free entry).
    fn attached(self, t: usize, i: usize) -> usize {
        64 * self.n + 8 * self.n * self.n + 16 * (t * self.slots + i)
    }
    /// Where window memory starts.
    fn memory(self) -> usize {
        (64 * self.n + 8 * self.n * self.n + 16 * self.n * self.slots).next_multiple_of(4096)
    }
}

/// What each member tells the others at creation.
#[derive(Clone, Copy, Debug)]
struct Peer {
    pid: u32,
    /// Address of its memory in its own address space (0 for dynamic).
    base: u64,
    size: u64,
    disp_unit: u64,
    /// Offset of its memory in the shared mapping (runtime-allocated
    /// windows only).
    offset: Option<usize>,
}

/// This process's synchronisation state.
#[derive(Default)]
struct Epochs {
    /// Targets locked by `Lock`: exclusive?, and whether the lock word was
    /// taken (not under MODE_NOCHECK).
    locks: HashMap<usize, (bool, bool)>,
    /// `Lock_all` in force; whether the words were taken.
    lock_all: Option<bool>,
    /// Targets of the access epoch opened by `Start`.
    started: Option<Vec<usize>>,
    /// Origins of the exposure epoch opened by `Post`.
    posted: Option<Vec<usize>>,
    /// Posts consumed, per target; completes consumed, per origin.
    posts_seen: Vec<u32>,
    completes_seen: Vec<u32>,
}

struct NativeWindow {
    comm: CommRef,
    flavor: WinFlavor,
    me: usize,
    n: usize,
    peers: Vec<Peer>,
    map: Mapping,
    ctl: Control,
    local: RawBuf,
    disp_unit: usize,
    epochs: Mutex<Epochs>,
    /// Regions attached to a dynamic window: (address, length).
    attached: Mutex<Vec<(usize, usize)>>,
    freed: AtomicBool,
}

/// Creates a window over `parent` (collective).
pub(crate) fn create(parent: &dyn Communicator, how: WinCreate) -> Result<WindowRef> {
    if parent.is_inter() {
        return Err(Error::Comm(
            "windows are created over intracommunicators".into(),
        ));
    }
    let unit = match how {
        WinCreate::Memory { disp_unit, .. } | WinCreate::Allocate { disp_unit, .. } => disp_unit,
        WinCreate::Dynamic => 1,
    };
    if unit == 0 {
        // Refused before any communication (MPI calls it erroneous, so
        // every member is expected to pass the same kind of value).
        return Err(rma_error(class::ERR_DISP, "disp_unit must be positive"));
    }
    let comm = parent.dup()?;
    let me = comm.rank() as usize;
    let n = comm.size() as usize;
    let (flavor, base, size, disp_unit) = match how {
        WinCreate::Memory { mem, disp_unit } => {
            let base = if mem.len == 0 { 0 } else { mem.ptr as u64 };
            (WinFlavor::Create, base, mem.len as u64, disp_unit)
        }
        WinCreate::Allocate {
            size,
            disp_unit,
            shared,
            ..
        } => {
            let f = if shared {
                WinFlavor::Shared
            } else {
                WinFlavor::Allocate
            };
            (f, 0, size as u64, disp_unit)
        }
        WinCreate::Dynamic => (WinFlavor::Dynamic, 0, 0, 1),
    };
    let mut mine = Vec::with_capacity(28);
    mine.extend_from_slice(&std::process::id().to_le_bytes());
    mine.extend_from_slice(&base.to_le_bytes());
    mine.extend_from_slice(&size.to_le_bytes());
    mine.extend_from_slice(&(disp_unit as u64).to_le_bytes());
    let all = comm.allgather_bytes(&mine)?;
    let mut peers: Vec<Peer> = all
        .iter()
        .map(|b| {
            let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
            Peer {
                pid: u32::from_le_bytes(b[..4].try_into().expect("4 bytes")),
                base: u64_at(4),
                size: u64_at(12),
                disp_unit: u64_at(20),
                offset: None,
            }
        })
        .collect();
    let ctl = Control {
        n,
        slots: if flavor == WinFlavor::Dynamic {
            ATTACH_SLOTS
        } else {
            0
        },
    };
    let mut total = ctl.memory();
    if matches!(flavor, WinFlavor::Allocate | WinFlavor::Shared) {
        // Shared windows are contiguous across ranks (MPI's default);
        // other parts start on cache lines (pages when asked to be
        // non-contiguous).
        let align = match how {
            WinCreate::Allocate {
                shared: true,
                noncontig: false,
                ..
            } => 1,
            WinCreate::Allocate {
                shared: true,
                noncontig: true,
                ..
            } => 4096,
            _ => 64,
        };
        for p in peers.iter_mut() {
            total = total.next_multiple_of(align);
            p.offset = Some(total);
            total += p.size as usize;
        }
    }
    let map = match share_memfd(&comm, me, total.max(1)) {
        Ok(m) => m,
        Err(e) => {
            // Every member failed alike (`share_memfd` agrees on it), so
            // every member frees the duplicate.
            let _ = comm.free();
            return Err(e);
        }
    };
    let disp_unit_local = disp_unit;
    let local = match (flavor, how) {
        (WinFlavor::Create, WinCreate::Memory { mem, .. }) => mem,
        (WinFlavor::Dynamic, _) => RawBuf::EMPTY,
        _ => {
            let off = peers[me].offset.expect("allocated windows have offsets");
            let ptr = map.ptr.wrapping_add(off);
            for p in peers.iter_mut() {
                // Shared memory is addressed through the mapping, but the
                // window's base (WIN_BASE) is this process's address.
                p.base = 0;
            }
            peers[me].base = ptr as u64;
            RawBuf {
                ptr: if size == 0 { RawBuf::EMPTY.ptr } else { ptr },
                len: size as usize,
            }
        }
    };
    Ok(Arc::new(NativeWindow {
        comm,
        flavor,
        me,
        n,
        peers,
        map,
        ctl,
        local,
        disp_unit: disp_unit_local,
        epochs: Mutex::new(Epochs {
            posts_seen: vec![0; n],
            completes_seen: vec![0; n],
            ..Epochs::default()
        }),
        attached: Mutex::new(Vec::new()),
        freed: AtomicBool::new(false),
    }))
}

/// Rank 0 creates a zeroed memfd of `len` bytes; every member maps it.
/// Fails at every member if it fails at any.
fn share_memfd(comm: &CommRef, me: usize, len: usize) -> Result<Mapping> {
    let mut created: Option<OwnedFd> = None;
    let mut origin = Vec::new();
    let mut failure: Option<Error> = None;
    if me == 0 {
        match make_memfd(len) {
            Ok(fd) => {
                let o = (u64::from(std::process::id()) << 32) | fd.as_raw_fd() as u32 as u64;
                origin = o.to_le_bytes().to_vec();
                created = Some(fd);
            }
            Err(e) => failure = Some(e),
        }
    }
    let origin = comm.bcast_bytes((me == 0).then_some(origin), 0)?;
    let mapped = if origin.len() != 8 {
        Err(rma_error(
            class::ERR_NO_MEM,
            "rank 0 of the window could not create its shared memory",
        ))
    } else if let Some(fd) = &created {
        Mapping::map(fd, len)
    } else {
        let o = u64::from_le_bytes(origin[..8].try_into().expect("8 bytes"));
        let path = format!("/proc/{}/fd/{}", o >> 32, o & 0xffff_ffff);
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::os(format!("opening a window's shared memory ({path})"), e))
            .and_then(|f| Mapping::map(&OwnedFd::from(f), len))
    };
    let mapped = match (failure, mapped) {
        (Some(e), _) => Err(e),
        (None, m) => m,
    };
    // Everyone must have mapped it before rank 0 closes its descriptor,
    // and everyone must learn whether anyone failed.
    let ok = [u8::from(mapped.is_ok())];
    let oks = comm.allgather_bytes(&ok)?;
    drop(created);
    let m = mapped?;
    if oks.iter().any(|b| b.first() != Some(&1)) {
        return Err(rma_error(
            class::ERR_NO_MEM,
            "another member could not map the window's shared memory",
        ));
    }
    Ok(m)
}

fn make_memfd(len: usize) -> Result<OwnedFd> {
    // SAFETY: memfd_create with a NUL-terminated name; the result is
    // checked and owned at once.
    let fd = unsafe { libc::memfd_create(c"oxmpi-win".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::os(
            "memfd_create for a window",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `fd` is a descriptor we just created and own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate on our own descriptor.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
        return Err(Error::os(
            "sizing a window's shared memory",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(fd)
}

impl NativeWindow {
    fn word(&self, offset: usize) -> &AtomicU32 {
        self.map.word(offset)
    }

    /// Whether `len` bytes at address `at` lie in one region `t` has
    /// attached (read from `t`'s published table).
    fn is_attached(&self, t: usize, at: i128, len: usize) -> bool {
        (0..ATTACH_SLOTS).any(|i| {
            let e = self.ctl.attached(t, i);
            let rlen = self.map.word64(e + 8).load(Ordering::Acquire) as i128;
            let addr = self.map.word64(e).load(Ordering::Relaxed) as i128;
            rlen > 0 && addr <= at && at + len as i128 <= addr + rlen
        })
    }

    fn check_live(&self) -> Result<()> {
        if self.freed.load(Ordering::Acquire) {
            return Err(rma_error(class::ERR_WIN, "the window has been freed"));
        }
        Ok(())
    }

    fn target_index(&self, rank: i32) -> Result<usize> {
        if !(0..self.n as i32).contains(&rank) {
            return Err(Error::Rank {
                rank,
                size: self.n as i32,
            });
        }
        Ok(rank as usize)
    }

    /// The byte runs `target` names in `t`'s memory, as addresses in `t`'s
    /// address space (or offsets in the shared mapping for runtime-
    /// allocated windows), checked against the window's bounds.
    fn runs(&self, t: usize, target: &WinTarget) -> Result<Vec<(u64, usize)>> {
        let p = &self.peers[t];
        let start = (target.disp as i128) * (p.disp_unit as i128);
        let layout = target.dtype.layout();
        let extent = layout.extent() as i128;
        let mut runs: Vec<(i128, usize)> = Vec::new();
        for i in 0..target.count {
            layout.for_each_run(0, &mut |off, len| {
                let at = start + i as i128 * extent + off as i128;
                match runs.last_mut() {
                    Some((a, l)) if *a + *l as i128 == at => *l += len,
                    _ => runs.push((at, len)),
                }
            });
        }
        if self.flavor == WinFlavor::Dynamic {
            return runs
                .into_iter()
                .map(|(at, len)| {
                    if len > 0 && !self.is_attached(t, at, len) {
                        return Err(rma_error(
                            class::ERR_RMA_RANGE,
                            format!(
                                "RMA access to {len} bytes at address {at:#x}, outside the memory rank {t} has attached"
                            ),
                        ));
                    }
                    Ok((at as u64, len))
                })
                .collect();
        }
        let (origin, limit) = match (self.flavor, p.offset) {
            (WinFlavor::Dynamic, _) => (0i128, None),
            (_, Some(off)) => (off as i128, Some(p.size as i128)),
            (_, None) => (p.base as i128, Some(p.size as i128)),
        };
        runs.into_iter()
            .map(|(at, len)| {
                if let Some(size) = limit {
                    if at < 0 || at + len as i128 > size {
                        return Err(rma_error(
                            class::ERR_RMA_RANGE,
                            format!(
                                "RMA access to bytes {at}..{} of rank {t}'s window of {size} bytes",
                                at + len as i128
                            ),
                        ));
                    }
                }
                let addr = origin + at;
                if addr < 0 || addr > u64::MAX as i128 {
                    return Err(rma_error(
                        class::ERR_RMA_RANGE,
                        "RMA target address out of range",
                    ));
                }
                Ok((addr as u64, len))
            })
            .collect()
    }

    /// Copies between `local` and target `t`'s `runs` (see `runs`).
    fn transfer(&self, t: usize, local: RawBuf, runs: &[(u64, usize)], write: bool) -> Result<()> {
        let total: usize = runs.iter().map(|r| r.1).sum();
        if total != local.len {
            return Err(Error::Count(format!(
                "the origin buffer holds {} bytes, the target datatype {total}",
                local.len
            )));
        }
        if total == 0 {
            return Ok(());
        }
        let p = &self.peers[t];
        if p.offset.is_some() {
            let mut at = 0;
            for &(off, len) in runs {
                let remote = self.map.ptr.wrapping_add(off as usize);
                // SAFETY: `runs` checked the run lies inside `t`'s part of
                // the mapping; `local` is valid for `total` bytes by the
                // backend contract; ptr::copy allows overlap.
                unsafe {
                    if write {
                        std::ptr::copy(local.ptr.add(at), remote, len);
                    } else {
                        std::ptr::copy(remote, local.ptr.add(at), len);
                    }
                }
                at += len;
            }
            return Ok(());
        }
        // SAFETY: `local` is valid for `total` bytes (backend contract);
        // the kernel checks the remote runs.
        unsafe { crate::sys::cross_copy(p.pid, local.ptr, total, runs, write) }.map_err(|e| {
            match e.raw_os_error() {
                Some(libc::EFAULT) => rma_error(
                    class::ERR_RMA_RANGE,
                    format!("RMA access outside rank {t}'s window memory: {e}"),
                ),
                Some(libc::ESRCH) => Error::ProcFailed(format!("rank {t} of the window is gone")),
                Some(libc::EPERM) | Some(libc::ENOSYS) => Error::NotImplemented(format!(
                    "one-sided communication needs cross-memory attach (process_vm_writev), which this system refuses: {e}"
                )),
                _ => Error::os("RMA transfer", e),
            }
        })
    }

    /// Sleeps on `word` while it holds `seen` (at most a nap). Every
    /// second of waiting, checks that the window's processes live: a
    /// process that died holding a lock would otherwise be waited for
    /// forever.
    fn nap(&self, word: &AtomicU32, seen: u32, naps: &mut u32) -> Result<()> {
        sys::futex_wait(word, seen, NAP);
        *naps += 1;
        if (*naps).is_multiple_of(20) {
            if let Some(t) = self.peers.iter().position(|p| !sys::process_alive(p.pid)) {
                return Err(Error::ProcFailed(format!(
                    "rank {t} of the window died while this process waited for it"
                )));
            }
        }
        Ok(())
    }

    fn acquire_mutex(&self, t: usize) -> Result<MutexGuard<'_>> {
        let w = self.word(self.ctl.mutex(t));
        let mut naps = 0;
        while w
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.nap(w, 1, &mut naps)?;
        }
        Ok(MutexGuard(w))
    }

    fn lock_word(&self, t: usize, exclusive: bool) -> Result<()> {
        let w = self.word(self.ctl.lock(t));
        let mut naps = 0;
        loop {
            let cur = w.load(Ordering::Acquire);
            let free = if exclusive {
                cur == 0
            } else {
                cur & WRITER == 0
            };
            if free {
                let new = if exclusive { WRITER } else { cur + 1 };
                if w.compare_exchange(cur, new, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(());
                }
                continue;
            }
            self.nap(w, cur, &mut naps)?;
        }
    }

    fn unlock_word(&self, t: usize, exclusive: bool) {
        let w = self.word(self.ctl.lock(t));
        if exclusive {
            w.fetch_and(!WRITER, Ordering::Release);
        } else {
            w.fetch_sub(1, Ordering::Release);
        }
        sys::futex_wake_all(w);
    }

    fn ring(&self, t: usize) {
        let b = self.word(self.ctl.bell(t));
        b.fetch_add(1, Ordering::Release);
        sys::futex_wake_all(b);
    }

    /// Sleeps on this process's doorbell until `ready()`.
    fn wait_bell(&self, mut ready: impl FnMut() -> bool) -> Result<()> {
        let b = self.word(self.ctl.bell(self.me));
        let mut naps = 0;
        loop {
            let seen = b.load(Ordering::Acquire);
            if ready() {
                return Ok(());
            }
            self.nap(b, seen, &mut naps)?;
        }
    }

    fn epochs(&self) -> std::sync::MutexGuard<'_, Epochs> {
        self.epochs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ranks_of(&self, group: &[i32]) -> Result<Vec<usize>> {
        group.iter().map(|&r| self.target_index(r)).collect()
    }
}

struct MutexGuard<'a>(&'a AtomicU32);

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
        sys::futex_wake_all(self.0);
    }
}

impl Window for NativeWindow {
    fn flavor(&self) -> WinFlavor {
        self.flavor
    }

    fn unified(&self) -> bool {
        true
    }

    fn local(&self) -> RawBuf {
        self.local
    }

    fn disp_unit(&self) -> usize {
        self.disp_unit
    }

    fn world_ranks(&self) -> Vec<i32> {
        self.comm.world_ranks()
    }

    fn rank(&self) -> i32 {
        self.me as i32
    }

    fn shared_query(&self, rank: i32) -> Result<(RawBuf, usize)> {
        self.check_live()?;
        let t = if rank == PROC_NULL {
            // MPI: the lowest rank with memory (or rank 0 if none has).
            self.peers.iter().position(|p| p.size > 0).unwrap_or(0)
        } else {
            self.target_index(rank)?
        };
        let p = &self.peers[t];
        match p.offset {
            Some(off) if p.size > 0 => Ok((
                RawBuf {
                    ptr: self.map.ptr.wrapping_add(off),
                    len: p.size as usize,
                },
                p.disp_unit as usize,
            )),
            _ => Ok((RawBuf::EMPTY, p.disp_unit as usize)),
        }
    }

    fn attach(&self, mem: RawBuf) -> Result<()> {
        self.check_live()?;
        if self.flavor != WinFlavor::Dynamic {
            return Err(rma_error(
                class::ERR_RMA_FLAVOR,
                "Attach needs a window made by Create_dynamic",
            ));
        }
        if mem.len == 0 {
            return Ok(());
        }
        let mut a = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        // Publish the region where origins check their accesses: address
        // first, then the length that makes the entry live.
        let free = (0..ATTACH_SLOTS).find(|&i| {
            self.map
                .word64(self.ctl.attached(self.me, i) + 8)
                .load(Ordering::Acquire)
                == 0
        });
        let Some(i) = free else {
            return Err(rma_error(
                class::ERR_RMA_ATTACH,
                format!("at most {ATTACH_SLOTS} regions can be attached to a window at once"),
            ));
        };
        let entry = self.ctl.attached(self.me, i);
        self.map
            .word64(entry)
            .store(mem.ptr as u64, Ordering::Relaxed);
        self.map
            .word64(entry + 8)
            .store(mem.len as u64, Ordering::Release);
        a.push((mem.ptr as usize, mem.len));
        Ok(())
    }

    fn detach(&self, addr: usize) -> Result<()> {
        self.check_live()?;
        if self.flavor != WinFlavor::Dynamic {
            return Err(rma_error(
                class::ERR_RMA_FLAVOR,
                "Detach needs a window made by Create_dynamic",
            ));
        }
        let mut a = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        match a.iter().rposition(|&(p, _)| p == addr) {
            Some(i) => {
                let (_, len) = a.remove(i);
                let entry = (0..ATTACH_SLOTS)
                    .map(|k| self.ctl.attached(self.me, k))
                    .find(|&e| {
                        self.map.word64(e).load(Ordering::Relaxed) == addr as u64
                            && self.map.word64(e + 8).load(Ordering::Acquire) == len as u64
                    });
                if let Some(e) = entry {
                    self.map.word64(e + 8).store(0, Ordering::Release);
                }
                Ok(())
            }
            None => Err(rma_error(
                class::ERR_RMA_ATTACH,
                "Detach of memory not attached to the window",
            )),
        }
    }

    fn put(&self, origin: RawBuf, rank: i32, target: &WinTarget) -> Result<()> {
        self.check_live()?;
        if rank == PROC_NULL {
            return Ok(());
        }
        let t = self.target_index(rank)?;
        let runs = self.runs(t, target)?;
        self.transfer(t, origin, &runs, true)
    }

    fn get(&self, origin: RawBuf, rank: i32, target: &WinTarget) -> Result<()> {
        self.check_live()?;
        if rank == PROC_NULL {
            return Ok(());
        }
        let t = self.target_index(rank)?;
        let runs = self.runs(t, target)?;
        self.transfer(t, origin, &runs, false)
    }

    fn accumulate(
        &self,
        origin: RawBuf,
        origin_type: &Datatype,
        result: Option<RawBuf>,
        rank: i32,
        target: &WinTarget,
        op: &Op,
    ) -> Result<()> {
        self.check_live()?;
        if rank == PROC_NULL {
            return Ok(());
        }
        let t = self.target_index(rank)?;
        if let Op::User { .. } = op {
            return Err(Error::Op(
                "RMA accumulate operations take predefined operations only".into(),
            ));
        }
        let no_op = matches!(op, Op::Predefined(crate::op::Predefined::NoOp));
        let basic = Datatype::new(target.dtype.basic);
        let bytes = target.count * target.dtype.size();
        if bytes > 0 {
            // Nothing is combined when nothing moves (MPI libraries accept
            // empty accumulates of any type).
            op.check(&basic)?;
        }
        if !no_op {
            if origin_type.basic != target.dtype.basic && origin.len > 0 {
                return Err(Error::Type(format!(
                    "accumulate of {:?} elements into {:?} elements",
                    origin_type.basic, target.dtype.basic
                )));
            }
            if origin.len != bytes {
                return Err(Error::Count(format!(
                    "the origin buffer holds {} bytes, the target datatype {bytes}",
                    origin.len
                )));
            }
        }
        if let Some(r) = result {
            if r.len != bytes {
                return Err(Error::Count(format!(
                    "the result buffer holds {} bytes, the target datatype {bytes}",
                    r.len
                )));
            }
        }
        let runs = self.runs(t, target)?;
        if bytes == 0 {
            return Ok(());
        }
        let elems = bytes / basic.size().max(1);
        let _guard = self.acquire_mutex(t)?;
        let mut data = vec![0u8; bytes];
        self.transfer(t, RawBuf::from_mut(&mut data), &runs, false)?;
        if let Some(r) = result {
            // SAFETY: `r` is valid for `bytes` writable bytes (checked
            // above; backend contract).
            unsafe { r.as_mut_slice() }.copy_from_slice(&data);
        }
        if no_op {
            return Ok(());
        }
        // SAFETY: `origin` is valid for `bytes` bytes (checked above).
        let input = unsafe { origin.as_slice() };
        op.apply(input, &mut data, elems, &basic)?;
        self.transfer(t, RawBuf::from_mut(&mut data), &runs, true)
    }

    fn compare_and_swap(
        &self,
        origin: RawBuf,
        compare: RawBuf,
        result: RawBuf,
        rank: i32,
        disp: isize,
        dtype: &Datatype,
    ) -> Result<()> {
        self.check_live()?;
        if rank == PROC_NULL {
            return Ok(());
        }
        let t = self.target_index(rank)?;
        let size = dtype.size();
        if dtype.layout.is_some() {
            return Err(Error::Type(
                "Compare_and_swap takes a predefined datatype".into(),
            ));
        }
        if origin.len != size || compare.len != size || result.len != size {
            return Err(Error::Count(
                "Compare_and_swap moves exactly one element".into(),
            ));
        }
        let target = WinTarget {
            disp,
            count: 1,
            dtype: dtype.clone(),
        };
        let runs = self.runs(t, &target)?;
        let _guard = self.acquire_mutex(t)?;
        let mut old = vec![0u8; size];
        self.transfer(t, RawBuf::from_mut(&mut old), &runs, false)?;
        // SAFETY: the three buffers hold `size` bytes (checked above).
        let (o, c, r) = unsafe { (origin.as_slice(), compare.as_slice(), result.as_mut_slice()) };
        if old == c {
            self.transfer(t, RawBuf::from_slice(o), &runs, true)?;
        }
        r.copy_from_slice(&old);
        Ok(())
    }

    fn fence(&self, _assert: i32) -> Result<()> {
        self.check_live()?;
        // Every operation of this process is complete already; the barrier
        // orders them before everyone's next epoch.
        mem_fence(Ordering::SeqCst);
        self.comm.barrier()
    }

    fn lock(&self, rank: i32, exclusive: bool, assert: i32) -> Result<()> {
        self.check_live()?;
        if rank == PROC_NULL {
            return Ok(());
        }
        let t = self.target_index(rank)?;
        {
            let ep = self.epochs();
            if ep.locks.contains_key(&t) || ep.lock_all.is_some() {
                return Err(rma_error(
                    class::ERR_RMA_SYNC,
                    format!("rank {t} of the window is already locked by this process"),
                ));
            }
        }
        // The wait happens without holding `epochs`, so that other
        // threads of this process can unlock other targets meanwhile.
        let take = assert & MODE_NOCHECK == 0;
        if take {
            self.lock_word(t, exclusive)?;
        }
        self.epochs().locks.insert(t, (exclusive, take));
        Ok(())
    }

    fn unlock(&self, rank: i32) -> Result<()> {
        self.check_live()?;
        if rank == PROC_NULL {
            return Ok(());
        }
        let t = self.target_index(rank)?;
        let mut ep = self.epochs();
        let Some((exclusive, taken)) = ep.locks.remove(&t) else {
            return Err(rma_error(
                class::ERR_RMA_SYNC,
                format!("Unlock of rank {t}, which this process has not locked"),
            ));
        };
        mem_fence(Ordering::SeqCst);
        if taken {
            self.unlock_word(t, exclusive);
        }
        Ok(())
    }

    fn lock_all(&self, assert: i32) -> Result<()> {
        self.check_live()?;
        let mut ep = self.epochs();
        if ep.lock_all.is_some() || !ep.locks.is_empty() {
            return Err(rma_error(
                class::ERR_RMA_SYNC,
                "Lock_all while this process holds window locks",
            ));
        }
        let take = assert & MODE_NOCHECK == 0;
        if take {
            for t in 0..self.n {
                if let Err(e) = self.lock_word(t, false) {
                    for u in 0..t {
                        self.unlock_word(u, false);
                    }
                    return Err(e);
                }
            }
        }
        ep.lock_all = Some(take);
        Ok(())
    }

    fn unlock_all(&self) -> Result<()> {
        self.check_live()?;
        let mut ep = self.epochs();
        let Some(taken) = ep.lock_all.take() else {
            return Err(rma_error(
                class::ERR_RMA_SYNC,
                "Unlock_all without Lock_all",
            ));
        };
        mem_fence(Ordering::SeqCst);
        if taken {
            for t in 0..self.n {
                self.unlock_word(t, false);
            }
        }
        Ok(())
    }

    fn flush(&self, rank: Option<i32>) -> Result<()> {
        self.check_live()?;
        if let Some(r) = rank {
            if r != PROC_NULL {
                self.target_index(r)?;
            }
        }
        // Operations complete when issued.
        mem_fence(Ordering::SeqCst);
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.check_live()?;
        mem_fence(Ordering::SeqCst);
        Ok(())
    }

    fn post(&self, group: &[i32], _assert: i32) -> Result<()> {
        self.check_live()?;
        let origins = self.ranks_of(group)?;
        let mut ep = self.epochs();
        if ep.posted.is_some() {
            return Err(rma_error(
                class::ERR_RMA_SYNC,
                "Post while an exposure epoch is open",
            ));
        }
        mem_fence(Ordering::SeqCst);
        for &o in &origins {
            self.word(self.ctl.post(o, self.me))
                .fetch_add(1, Ordering::Release);
            self.ring(o);
        }
        ep.posted = Some(origins);
        Ok(())
    }

    fn start(&self, group: &[i32], _assert: i32) -> Result<()> {
        self.check_live()?;
        let targets = self.ranks_of(group)?;
        let mut ep = self.epochs();
        if ep.started.is_some() {
            return Err(rma_error(
                class::ERR_RMA_SYNC,
                "Start while an access epoch is open",
            ));
        }
        for &t in &targets {
            let want = ep.posts_seen[t].wrapping_add(1);
            let w = self.word(self.ctl.post(self.me, t));
            self.wait_bell(|| w.load(Ordering::Acquire).wrapping_sub(want) as i32 >= 0)?;
            ep.posts_seen[t] = want;
        }
        ep.started = Some(targets);
        Ok(())
    }

    fn complete(&self) -> Result<()> {
        self.check_live()?;
        let mut ep = self.epochs();
        let Some(targets) = ep.started.take() else {
            return Err(rma_error(class::ERR_RMA_SYNC, "Complete without Start"));
        };
        mem_fence(Ordering::SeqCst);
        for t in targets {
            self.word(self.ctl.complete(t, self.me))
                .fetch_add(1, Ordering::Release);
            self.ring(t);
        }
        Ok(())
    }

    fn wait(&self) -> Result<()> {
        self.check_live()?;
        let mut ep = self.epochs();
        let Some(origins) = ep.posted.take() else {
            return Err(rma_error(class::ERR_RMA_SYNC, "Wait without Post"));
        };
        for o in origins {
            let want = ep.completes_seen[o].wrapping_add(1);
            let w = self.word(self.ctl.complete(self.me, o));
            self.wait_bell(|| w.load(Ordering::Acquire).wrapping_sub(want) as i32 >= 0)?;
            ep.completes_seen[o] = want;
        }
        mem_fence(Ordering::SeqCst);
        Ok(())
    }

    fn test(&self) -> Result<bool> {
        self.check_live()?;
        let mut ep = self.epochs();
        let Some(origins) = ep.posted.clone() else {
            return Err(rma_error(class::ERR_RMA_SYNC, "Test without Post"));
        };
        let all = origins.iter().all(|&o| {
            let want = ep.completes_seen[o].wrapping_add(1);
            self.word(self.ctl.complete(self.me, o))
                .load(Ordering::Acquire)
                .wrapping_sub(want) as i32
                >= 0
        });
        if all {
            for o in origins {
                ep.completes_seen[o] = ep.completes_seen[o].wrapping_add(1);
            }
            ep.posted = None;
            mem_fence(Ordering::SeqCst);
        }
        Ok(all)
    }

    fn free(&self) -> Result<()> {
        self.check_live()?;
        {
            let ep = self.epochs();
            if !ep.locks.is_empty()
                || ep.lock_all.is_some()
                || ep.started.is_some()
                || ep.posted.is_some()
            {
                return Err(rma_error(
                    class::ERR_RMA_SYNC,
                    "Free of a window with an epoch still open",
                ));
            }
        }
        // Nobody may still be accessing anyone's memory once Free returns.
        self.comm.barrier()?;
        self.freed.store(true, Ordering::Release);
        self.comm.free()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every control word has its own bytes, all before window memory.
    #[test]
    fn control_words_do_not_overlap() {
        for n in 1..=6 {
            for slots in [0, ATTACH_SLOTS] {
                let c = Control { n, slots };
                let mut spans = Vec::new();
                for t in 0..n {
                    spans.push((c.lock(t), 4));
                    spans.push((c.mutex(t), 4));
                    spans.push((c.bell(t), 4));
                    for o in 0..n {
                        spans.push((c.post(o, t), 4));
                        spans.push((c.complete(t, o), 4));
                    }
                    for i in 0..slots {
                        spans.push((c.attached(t, i), 16));
                    }
                }
                spans.sort();
                for w in spans.windows(2) {
                    assert!(w[0].0 + w[0].1 <= w[1].0, "{n} {slots}: {w:?}");
                }
                let (last, len) = *spans.last().unwrap();
                assert!(last + len <= c.memory());
                assert!(c.memory().is_multiple_of(4096));
                assert!(spans.iter().all(|&(o, l)| o % l.min(8) == 0));
            }
        }
    }
}
