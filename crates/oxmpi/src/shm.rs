//! The job's shared-memory segment: its layout and every invariant that the
//! processes mapping it rely on. This is the only module that knows where
//! anything lives inside the segment.
//!
//! # Layout
//!
//! ```text
//! offset 0            SegmentHeader       magic, version, geometry, layout size
//! ctl_offset          InboxCtl[nranks]    one cache-line-aligned block per rank
//! cells_offset        Cell[nranks][slots] each rank's inbox ring
//! coll_offset         CollSlot[chans][nranks]  collective channels (below)
//! ```
//!
//! Everything in the segment is `#[repr(C)]`, holds plain integers and
//! offsets (never pointers: each process maps the segment at its own
//! address), and starts zeroed (`ftruncate` of a fresh segment).
//!
//! # The inbox ring (bounded MPSC, after D. Vyukov's bounded MPMC queue)
//!
//! Every rank owns one ring of `slots` cells (a power of two). Any rank may
//! produce into it; only the owner consumes, holding its process-local
//! progress lock. Each cell carries a sequence number `seq`:
//!
//! * invariant: `seq == pos` means the cell at `pos % slots` is free for the
//!   producer that claims position `pos`;
//!   (the segment stores `seq - pos % slots`, so that a zeroed ring is the
//!   initial state `seq == pos` and nobody has to write every cell before
//!   the first use: untouched inboxes of spare slots cost no memory);
//! * `seq == pos + 1` means it holds the message at position `pos`, ready
//!   for the consumer;
//! * after consuming, the consumer sets `seq = pos + slots`, freeing it for
//!   the producer of the next lap.
//!
//! A producer claims a position by CAS on `enqueue_pos`, so positions (and
//! with them the consumer's order) are totally ordered, and one producer's
//! messages are consumed in the order it produced them: this is what gives
//! MPI's non-overtaking rule between a pair of ranks.
//!
//! # Doorbell
//!
//! A consumer about to sleep increments `sleepers`, issues a SeqCst fence,
//! re-checks its ring, and calls `futex_wait(doorbell, seen)`. A producer,
//! after publishing a cell, issues a SeqCst fence and rings (increments
//! `doorbell`, `futex_wake`) only if `sleepers != 0`. The two fences make it
//! impossible for both sides to miss each other (Dekker's argument).
//!
//! # Collective channels
//!
//! Shared-memory collectives (`coll::shm`) run on a *channel*: a row of
//! `CollSlot`s, one per job rank. A communicator holds at most one channel
//! while it lives, agreed on by its members when it is created; two
//! communicators that share a member never hold the same channel at once,
//! so a slot is used by one communicator at a time. Communicators with
//! disjoint members may hold the same channel (they use different slots).
//!
//! A slot belongs to its rank (the *owner*); it has two halves, each a
//! control block and `COLL_HALF` bytes of data, so that an owner can fill
//! one half while its readers still read the other (pipelining). A half
//! carries one *posting* at a time, named by a token that is unique for
//! the owner over the life of the job: the generation of the channel claim
//! (agreed by the communicator's members when they claim the channel,
//! above any generation any of them used on it before) and a step number
//! that the members advance in lockstep (`CollToken`).
//!
//! * To post, the owner waits until `done == expected` (every reader of
//!   the previous posting in this half has finished with it), writes the
//!   data, sets `expected` to the number of readers of the new posting and
//!   `done` to 0, then stores the token into `posted` (Release).
//! * A reader waits until `posted` equals the token it expects (Acquire),
//!   reads, and when it has finished with the half adds one to `done`
//!   (AcqRel). The reader that completes the count wakes the owner.
//! * Partitioned reductions: each member owns a share of the elements and
//!   is the only reader of that share in every half, so after combining it
//!   may overwrite its own share of its own half with the result, then set
//!   `result` to the token (Release); members that need the result read the
//!   share once `result` equals the token (Acquire), before releasing.
//! * Invariant: a posting is overwritten only after all its `expected`
//!   readers have released it, so a reader that waits for token `t` finds
//!   either an older posting or `t`, never a later one. Communicators
//!   reuse channels safely because the check is per posting, not per
//!   communicator, and tokens are never reused by an owner.
//!
//! # Slots and processes
//!
//! The segment has a fixed number of *slots* (`Layout::nranks`), each an
//! inbox and a row of collective slots. The launcher creates the segment
//! (a memfd it passes to every process it starts) with room for the job
//! plus spare slots for processes spawned later (`MPI_Comm_spawn`); a
//! process's "job rank" is its slot. A slot is reused only after its
//! previous occupant finalized and exited cleanly: that occupant records
//! its inbox position (`retire_inbox`), the launcher discards whatever was
//! left in the ring before it starts the next one (`recycle_inbox`), which
//! resumes there (`resume_inbox`) and starts its collective
//! generations above any its predecessor posted (`adopt_coll_slots`).
//!
//! # Failed processes
//!
//! A process that dies without finalizing normally ends the job. One that
//! set `FATE_SURVIVABLE` in its control block (every spawned process, and
//! the workers of an `oxmpi.futures` pool) is instead marked failed by the
//! launcher, after it has reaped it: `FATE_FAILED` in its control block,
//! then the header's `failures` count is raised (Release) and every slot's
//! doorbell is rung. Everything the dead process put into an inbox was
//! published before it died, so a survivor that loads `failures` (Acquire)
//! *before* draining its inbox has received all of it when it acts on the
//! failure. A failed slot is never given to another process.
//!
//! Waiters sleep on their own inbox doorbell; whoever publishes what a
//! peer may be waiting for calls `notify(peer)` (SeqCst fence, then ring if
//! the peer is asleep: the same Dekker pairing as the inbox).

use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use rustix::fd::OwnedFd;
use rustix::fs::Mode;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::shm;

use crate::error::{Error, Result};
use crate::sys;

const MAGIC: u64 = u64::from_le_bytes(*b"oxmpiSHM");
const VERSION: u32 = 4;
/// Bytes of a cell's header; the payload follows it.
pub const CELL_HEADER: usize = 64;
/// Default cell size (header + payload). Messages whose payload fits travel
/// eagerly inside one cell.
pub const DEFAULT_CELL_SIZE: usize = 16 * 1024;
/// Default number of cells in each rank's inbox.
pub const DEFAULT_SLOTS: usize = 64;

/// What a cell carries.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellKind {
    /// A whole message inline.
    Eager = 1,
    /// Request to send: the payload holds the sender's iovecs.
    Rts = 2,
    /// The receiver has finished reading a rendezvous message (`aux0` = the
    /// sender's request id).
    Done = 3,
    /// Clear to send by streaming (`aux0` = sender's id, `aux1` = receiver's id).
    Cts = 4,
    /// A chunk of a streamed message (`aux0` = receiver's id, `aux1` = offset).
    Data = 5,
    /// The communicator with id `aux0` is revoked (MPI-5 fault tolerance).
    Revoke = 6,
}

impl CellKind {
    fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Eager,
            2 => Self::Rts,
            3 => Self::Done,
            4 => Self::Cts,
            5 => Self::Data,
            6 => Self::Revoke,
            _ => return None,
        })
    }
}

/// The envelope and protocol fields of a cell, copied out by the consumer.
#[derive(Clone, Copy, Debug)]
pub struct CellInfo {
    pub kind: CellKind,
    /// Context id of the communicator (point-to-point or collective).
    pub ctx: u32,
    /// Sender's rank in the communicator.
    pub src: i32,
    pub tag: i32,
    /// Sender's rank in the job (where to answer).
    pub src_world: u32,
    /// Whole message length.
    pub total_len: u64,
    pub aux0: u64,
    pub aux1: u64,
    /// 0 when the sender maps this segment as its own; else where the
    /// sender's segment can be opened (`crate::native` "foreign
    /// segments": its pid and a descriptor number it keeps open), so that
    /// `src_world` (a slot of *that* segment) can be told apart.
    pub origin: u64,
}

#[repr(C)]
struct CellHead {
    seq: AtomicU64,
    kind: u32,
    ctx: u32,
    src: i32,
    tag: i32,
    src_world: u32,
    cell_len: u32,
    total_len: u64,
    aux0: u64,
    aux1: u64,
    origin: u64,
}
const _: () = assert!(std::mem::size_of::<CellHead>() == CELL_HEADER);

#[repr(C)]
struct SegmentHeader {
    magic: u64,
    version: u32,
    nranks: u32,
    slots: u32,
    cell_size: u32,
    layout_size: u64,
    /// How many slots the launcher has marked failed (`mark_failed`): a
    /// word every waiter can load cheaply to learn that something died.
    failures: AtomicU64,
}
const _: () = assert!(std::mem::size_of::<SegmentHeader>() <= 128);

/// Per-rank control block; one cache line for producers, one for the
/// consumer and its doorbell, so they do not false-share.
#[repr(C, align(64))]
struct InboxCtl {
    enqueue_pos: AtomicU64,
    _pad0: [u64; 7],
    doorbell: AtomicU32,
    sleepers: AtomicU32,
    pid: AtomicU32,
    /// `FATE_*` bits: how the slot's death is handled, and whether it died.
    fate: AtomicU32,
    /// The consumer position a finalizing occupant left the ring at
    /// (`retire_inbox`), for the next occupant of the slot.
    final_head: AtomicU64,
    _pad2: [u64; 5],
}
const _: () = assert!(std::mem::size_of::<InboxCtl>() == 128);

/// `InboxCtl::fate`, set by the occupant: if it dies without finalizing,
/// the launcher marks it failed and the job goes on (its peers' calls that
/// depend on it fail with ERR_PROC_FAILED), instead of ending the job.
pub const FATE_SURVIVABLE: u32 = 1;
/// `InboxCtl::fate`, set by the launcher: the occupant died without
/// finalizing. The slot is never used again.
pub const FATE_FAILED: u32 = 2;

/// Bytes of data in each half of a collective slot: a pipeline stage of the
/// shared-memory collectives. Large, because every stage costs a round of
/// wake-ups, which on an oversubscribed node cost far more than copying
/// the stage (pages of unused channels are never touched, so the size
/// costs address space, not memory).
pub const COLL_HALF: usize = 256 * 1024;
/// Most collective channels a segment has.
const COLL_MAX_CHANS: usize = 16;
/// Budget for the collective region; fewer channels on big nodes.
const COLL_BUDGET: usize = 1 << 30;

/// Control of one half of a collective slot: what is posted there and who
/// has finished reading it (see the module doc). `done` has its own cache
/// line, since readers write it while others poll `posted`.
#[repr(C, align(64))]
struct CollHalfCtl {
    posted: AtomicU64,
    result: AtomicU64,
    /// A word the owner publishes with its posting (a broadcast's total
    /// length, so that receivers follow the root's rounds).
    meta: AtomicU64,
    expected: AtomicU32,
    _pad0: [u32; 9],
    done: AtomicU32,
    _pad1: [u32; 15],
}
const _: () = assert!(std::mem::size_of::<CollHalfCtl>() == 128);

/// A rank's slot in a collective channel: two halves' control blocks, then
/// their data.
#[repr(C)]
struct CollSlotHead {
    halves: [CollHalfCtl; 2],
}
const COLL_SLOT: usize = std::mem::size_of::<CollSlotHead>() + 2 * COLL_HALF;

/// Geometry of a segment, computed identically by every rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub nranks: usize,
    pub slots: usize,
    pub cell_size: usize,
    ctl_offset: usize,
    cells_offset: usize,
    /// Number of collective channels.
    pub coll_chans: usize,
    coll_offset: usize,
    pub size: usize,
}

impl Layout {
    pub fn new(nranks: usize, slots: usize, cell_size: usize) -> Layout {
        assert!(slots.is_power_of_two() && cell_size.is_multiple_of(64) && cell_size > CELL_HEADER);
        let ctl_offset = 128;
        let cells_offset = ctl_offset + nranks * std::mem::size_of::<InboxCtl>();
        let coll_offset = cells_offset + nranks * slots * cell_size;
        let coll_chans = (COLL_BUDGET / (nranks.max(1) * COLL_SLOT)).clamp(1, COLL_MAX_CHANS);
        let size = coll_offset + coll_chans * nranks * COLL_SLOT;
        Layout {
            nranks,
            slots,
            cell_size,
            ctl_offset,
            cells_offset,
            coll_chans,
            coll_offset,
            size,
        }
    }

    /// This geometry, mapped only over its first `size` bytes (to read a
    /// header).
    fn with_size(mut self, size: usize) -> Layout {
        self.size = size;
        self
    }

    /// Largest payload that fits in one cell.
    pub fn cell_payload(&self) -> usize {
        self.cell_size - CELL_HEADER
    }
}

/// A mapped segment. Unmapped on drop.
pub struct Segment {
    base: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the segment is plain shared memory; all concurrent access to it
// goes through atomics or through cells owned (by the ring protocol) by one
// party at a time.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

/// Result of trying to put a cell into a ring.
pub enum Push {
    Done,
    Full,
}

impl Segment {
    /// Creates and initialises a named segment (rank 0's job), mode 0600.
    pub fn create(name: &str, layout: Layout) -> Result<Segment> {
        let fd = shm::open(
            name,
            shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
            Mode::RUSR | Mode::WUSR,
        )
        .map_err(|e| Error::os(format!("shm_open({name})"), e))?;
        rustix::fs::ftruncate(&fd, layout.size as u64)
            .map_err(|e| Error::os("ftruncate(shared memory segment)", e))?;
        let seg = Self::map(&fd, layout)?;
        seg.init();
        Ok(seg)
    }

    /// Maps a segment that rank 0 created, checking its header.
    pub fn attach(name: &str, layout: Layout) -> Result<Segment> {
        let fd = shm::open(name, shm::OFlags::RDWR, Mode::empty())
            .map_err(|e| Error::os(format!("shm_open({name})"), e))?;
        let seg = Self::map(&fd, layout)?;
        let h = seg.header();
        if h.magic != MAGIC || h.version != VERSION || h.layout_size != layout.size as u64 {
            return Err(Error::Bootstrap(format!(
                "shared-memory segment {name} has an unexpected header \
                 (another oxmpi version in the same job?)"
            )));
        }
        Ok(seg)
    }

    /// Creates and initialises an unnamed segment (a memfd, closed on
    /// exec unless the caller says otherwise): the launcher's way, which
    /// hands the descriptor to every process it starts, so there is no
    /// name to find or to clean up.
    pub fn create_memfd(layout: Layout) -> Result<(Segment, OwnedFd)> {
        let fd = rustix::fs::memfd_create("oxmpi-segment", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| Error::os("memfd_create(shared memory segment)", e))?;
        rustix::fs::ftruncate(&fd, layout.size as u64)
            .map_err(|e| Error::os("ftruncate(shared memory segment)", e))?;
        let seg = Self::map(&fd, layout)?;
        seg.init();
        Ok((seg, fd))
    }

    /// Maps the segment behind `fd` (from `create_memfd`), its geometry
    /// read from its header.
    pub fn from_fd(fd: &OwnedFd) -> Result<Segment> {
        let st = rustix::fs::fstat(fd).map_err(|e| Error::os("fstat(shared memory segment)", e))?;
        let bad = |why: &str| {
            Error::Bootstrap(format!(
                "the shared-memory segment passed by the launcher is unusable: {why} \
                 (another oxmpi version in the same job?)"
            ))
        };
        if (st.st_size as usize) < std::mem::size_of::<SegmentHeader>() {
            return Err(bad("too small"));
        }
        let probe = Self::map(
            fd,
            Layout::new(1, 2, 128).with_size(std::mem::size_of::<SegmentHeader>()),
        )?;
        let h = probe.header();
        if h.magic != MAGIC || h.version != VERSION {
            return Err(bad("wrong magic or version"));
        }
        let layout = Layout::new(h.nranks as usize, h.slots as usize, h.cell_size as usize);
        if h.layout_size != layout.size as u64 || (st.st_size as u64) < h.layout_size {
            return Err(bad("its size does not match its header"));
        }
        drop(probe);
        Self::map(fd, layout)
    }

    /// An anonymous segment for a job of one process (no name, nothing to
    /// clean up).
    #[cfg(test)]
    pub fn anonymous(layout: Layout) -> Result<Segment> {
        // SAFETY: a fresh anonymous mapping aliases nothing.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                layout.size,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
            )
        }
        .map_err(|e| Error::os("mmap(anonymous segment)", e))?;
        let seg = Segment {
            base: NonNull::new(ptr.cast()).expect("mmap returned null"),
            layout,
        };
        seg.init();
        Ok(seg)
    }

    pub fn unlink(name: &str) {
        let _ = shm::unlink(name);
    }

    fn map(fd: &OwnedFd, layout: Layout) -> Result<Segment> {
        // SAFETY: we map a shared-memory object of at least `layout.size`
        // bytes (created with ftruncate to that size, or checked through the
        // header by `attach`); the mapping aliases no Rust object.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                layout.size,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .map_err(|e| Error::os("mmap(shared memory segment)", e))?;
        Ok(Segment {
            base: NonNull::new(ptr.cast()).expect("mmap returned null"),
            layout,
        })
    }

    fn init(&self) {
        // SAFETY: called only by the creator, before the segment's name is
        // published, so no other process can see it yet.
        unsafe {
            let h = self.base.as_ptr().cast::<SegmentHeader>();
            (*h).magic = MAGIC;
            (*h).version = VERSION;
            (*h).nranks = self.layout.nranks as u32;
            (*h).slots = self.layout.slots as u32;
            (*h).cell_size = self.layout.cell_size as u32;
            (*h).layout_size = self.layout.size as u64;
        }
        // The rings need no initialisation: zero is `seq == pos` (see
        // `seq`), so pages of unused slots are never touched.
        fence(Ordering::Release);
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn header(&self) -> &SegmentHeader {
        // SAFETY: the header is at offset 0 and was written before the
        // segment's name was published (PMI put/fence orders it).
        unsafe { &*self.base.as_ptr().cast::<SegmentHeader>() }
    }

    fn ctl(&self, rank: usize) -> &InboxCtl {
        assert!(rank < self.layout.nranks);
        // SAFETY: in bounds by the layout; InboxCtl holds only atomics and
        // padding, valid for any bit pattern including zero.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(self.layout.ctl_offset + rank * std::mem::size_of::<InboxCtl>())
                .cast::<InboxCtl>()
        }
    }

    fn cell_ptr(&self, rank: usize, pos: usize) -> *mut u8 {
        let idx = rank * self.layout.slots + (pos & (self.layout.slots - 1));
        // SAFETY: `rank < nranks` is checked by `ctl` on every path that
        // reaches here, and the index is masked to the ring.
        unsafe {
            self.base
                .as_ptr()
                .add(self.layout.cells_offset + idx * self.layout.cell_size)
        }
    }

    fn cell(&self, rank: usize, pos: usize) -> &CellHead {
        // SAFETY: see `cell_ptr`; only `seq` is read through this shared
        // reference concurrently, and it is atomic.
        unsafe { &*self.cell_ptr(rank, pos).cast::<CellHead>() }
    }

    /// The sequence number of the cell for position `pos` of `rank`'s ring
    /// (stored as `seq - pos % slots`, so that zero means free for the
    /// first lap).
    fn seq(&self, rank: usize, pos: u64, order: Ordering) -> u64 {
        let idx = pos & (self.layout.slots as u64 - 1);
        self.cell(rank, pos as usize)
            .seq
            .load(order)
            .wrapping_add(idx)
    }

    fn set_seq(&self, rank: usize, pos: u64, seq: u64, order: Ordering) {
        let idx = pos & (self.layout.slots as u64 - 1);
        self.cell(rank, pos as usize)
            .seq
            .store(seq.wrapping_sub(idx), order);
    }

    /// A finalizing occupant of `rank`'s slot records where it stopped
    /// consuming, for the next occupant (`recycle_inbox`).
    pub fn retire_inbox(&self, rank: usize, head: u64) {
        self.ctl(rank).final_head.store(head, Ordering::Release);
    }

    /// Prepares a retired slot for its next occupant, before that one
    /// starts (the launcher's job, so that nothing sent to the newcomer
    /// can be mistaken for a leftover): frees every cell still published
    /// in the ring (messages to a process that is gone) and records where
    /// the newcomer starts consuming (`resume_inbox`).
    pub fn recycle_inbox(&self, rank: usize) {
        let ctl = self.ctl(rank);
        let mut head = ctl.final_head.load(Ordering::Acquire);
        let end = ctl.enqueue_pos.load(Ordering::Acquire);
        while head < end && self.has_pending(rank, head) {
            head = self.pop_release(rank, head);
        }
        ctl.final_head.store(head, Ordering::Release);
    }

    /// Where the occupant of a recycled slot starts consuming.
    pub fn resume_inbox(&self, rank: usize) -> u64 {
        self.ctl(rank).final_head.load(Ordering::Acquire)
    }

    /// Asks that this slot's death be survivable (see `FATE_SURVIVABLE`).
    pub fn set_survivable(&self, rank: usize) {
        self.ctl(rank)
            .fate
            .fetch_or(FATE_SURVIVABLE, Ordering::Release);
    }

    pub fn is_survivable(&self, rank: usize) -> bool {
        self.ctl(rank).fate.load(Ordering::Acquire) & FATE_SURVIVABLE != 0
    }

    /// The launcher's part once it has reaped a survivable process: mark
    /// the slot failed, count it, and wake everyone so that waits that
    /// depend on it notice (module doc, "Failed processes").
    pub fn mark_failed(&self, rank: usize) {
        self.ctl(rank).fate.fetch_or(FATE_FAILED, Ordering::Release);
        self.header().failures.fetch_add(1, Ordering::Release);
        for r in 0..self.layout.nranks {
            if r != rank {
                self.ring(r);
            }
        }
    }

    /// How many slots have been marked failed so far (Acquire: the marks
    /// themselves are visible once the count is).
    #[inline]
    pub fn failures(&self) -> u64 {
        self.header().failures.load(Ordering::Acquire)
    }

    pub fn is_failed(&self, rank: usize) -> bool {
        self.ctl(rank).fate.load(Ordering::Acquire) & FATE_FAILED != 0
    }

    pub fn set_pid(&self, rank: usize, pid: u32) {
        self.ctl(rank).pid.store(pid, Ordering::Release);
    }

    /// Pid of a rank, as it published it at start (paired with `set_pid`'s
    /// Release store; a PMI fence separates the two).
    pub fn pid(&self, rank: usize) -> u32 {
        self.ctl(rank).pid.load(Ordering::Acquire)
    }

    /// Produces one cell into `dest`'s ring. `fill` writes the payload (at
    /// most `cell_payload()` bytes) and returns the number written.
    pub fn push(
        &self,
        dest: usize,
        info: &CellInfo,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Push {
        let ctl = self.ctl(dest);
        let mut pos = ctl.enqueue_pos.load(Ordering::Relaxed);
        loop {
            // Acquire pairs with the consumer's Release in `pop_release`,
            // so our writes to the cell cannot precede its reads.
            let seq = self.seq(dest, pos, Ordering::Acquire);
            let diff = seq as i64 - pos as i64;
            if diff == 0 {
                match ctl.enqueue_pos.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(cur) => pos = cur,
                }
            } else if diff < 0 {
                return Push::Full;
            } else {
                pos = ctl.enqueue_pos.load(Ordering::Relaxed);
            }
        }
        let p = self.cell_ptr(dest, pos as usize);
        // SAFETY: winning the CAS for `pos` while `seq == pos` gives this
        // producer exclusive ownership of the cell until it publishes it.
        unsafe {
            let payload =
                std::slice::from_raw_parts_mut(p.add(CELL_HEADER), self.layout.cell_payload());
            let n = fill(payload);
            debug_assert!(n <= payload.len());
            let h = p.cast::<CellHead>();
            (*h).kind = info.kind as u32;
            (*h).ctx = info.ctx;
            (*h).src = info.src;
            (*h).tag = info.tag;
            (*h).src_world = info.src_world;
            (*h).cell_len = n as u32;
            (*h).total_len = info.total_len;
            (*h).aux0 = info.aux0;
            (*h).aux1 = info.aux1;
            (*h).origin = info.origin;
        }
        // Release publishes the cell; pairs with the consumer's Acquire in
        // `peek`.
        self.set_seq(dest, pos, pos + 1, Ordering::Release);
        // SeqCst fence: pairs with the one in `prepare_sleep` (see module doc).
        fence(Ordering::SeqCst);
        if ctl.sleepers.load(Ordering::Relaxed) != 0 {
            self.ring(dest);
        }
        Push::Done
    }

    /// Looks at the next cell of `rank`'s own ring without consuming it.
    /// Only the owner of the ring, holding its progress lock, may call this
    /// and `pop_release`; `head` is the consumer's position.
    pub fn peek(&self, rank: usize, head: u64) -> Option<(CellInfo, &[u8])> {
        // Acquire pairs with the producer's Release in `push`.
        if self.seq(rank, head, Ordering::Acquire) != head + 1 {
            return None;
        }
        let p = self.cell_ptr(rank, head as usize);
        // SAFETY: `seq == head + 1` means the producer has published the
        // cell and will not touch it until we release it.
        unsafe {
            let h = &*p.cast::<CellHead>();
            let kind = CellKind::from_u32(h.kind)?;
            let info = CellInfo {
                kind,
                ctx: h.ctx,
                src: h.src,
                tag: h.tag,
                src_world: h.src_world,
                total_len: h.total_len,
                aux0: h.aux0,
                aux1: h.aux1,
                origin: h.origin,
            };
            let len = (h.cell_len as usize).min(self.layout.cell_payload());
            let payload = std::slice::from_raw_parts(p.add(CELL_HEADER), len);
            Some((info, payload))
        }
    }

    /// Frees the cell at `head` for producers; returns the next head.
    pub fn pop_release(&self, rank: usize, head: u64) -> u64 {
        // Release pairs with the producer's Acquire in `push`: our reads of
        // the cell happen before its next writes.
        self.set_seq(
            rank,
            head,
            head + self.layout.slots as u64,
            Ordering::Release,
        );
        head + 1
    }

    /// Is there a cell waiting in `rank`'s ring at `head`?
    pub fn has_pending(&self, rank: usize, head: u64) -> bool {
        self.seq(rank, head, Ordering::Acquire) == head + 1
    }

    /// Announces that a thread of `rank` is going to sleep; returns the
    /// doorbell value to wait on. The caller must re-check for work after
    /// this and before `sleep`.
    pub fn prepare_sleep(&self, rank: usize) -> u32 {
        let ctl = self.ctl(rank);
        let seen = ctl.doorbell.load(Ordering::Relaxed);
        ctl.sleepers.fetch_add(1, Ordering::Relaxed);
        // SeqCst fence: pairs with the producer's fence in `push`.
        fence(Ordering::SeqCst);
        seen
    }

    /// Sleeps until the doorbell changes from `seen` or the timeout passes,
    /// then withdraws the sleeper announced by `prepare_sleep`.
    pub fn sleep(&self, rank: usize, seen: u32, timeout: std::time::Duration) {
        let ctl = self.ctl(rank);
        sys::futex_wait(&ctl.doorbell, seen, timeout);
        ctl.sleepers.fetch_sub(1, Ordering::Relaxed);
    }

    /// Withdraws a sleeper announced by `prepare_sleep` without sleeping.
    pub fn cancel_sleep(&self, rank: usize) {
        self.ctl(rank).sleepers.fetch_sub(1, Ordering::Relaxed);
    }

    /// Wakes every thread sleeping on `rank`'s doorbell.
    pub fn ring(&self, rank: usize) {
        let ctl = self.ctl(rank);
        ctl.doorbell.fetch_add(1, Ordering::Release);
        sys::futex_wake_all(&ctl.doorbell);
    }

    /// Wakes other threads of `rank` only if some are asleep.
    pub fn ring_if_sleeping(&self, rank: usize) {
        if self.ctl(rank).sleepers.load(Ordering::Relaxed) != 0 {
            self.ring(rank);
        }
    }
}

/// The name of a posting in a collective slot: the *generation* of the
/// channel claim under which it was posted and the step of that claim's
/// collective protocol. Members agree on a generation above any they used
/// on that channel before, so an owner never posts the same token twice.
/// Never 0, so a fresh (zeroed) slot matches no token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CollToken(u64);

impl CollToken {
    /// Generations are below this (24 bits; steps have the other 40).
    pub const GENERATIONS: u64 = (1 << 24) - 1;

    pub fn new(generation: u64, step: u64) -> CollToken {
        assert!(generation < Self::GENERATIONS);
        CollToken(((generation + 1) << 40) | (step & ((1 << 40) - 1)))
    }

    /// The generation this token was posted under (0 for no posting).
    fn generation(self) -> u64 {
        (self.0 >> 40).saturating_sub(1)
    }
}

/// Collective channels (see the module doc for the protocol).
impl Segment {
    fn coll_slot(&self, chan: usize, rank: usize) -> *mut u8 {
        assert!(chan < self.layout.coll_chans && rank < self.layout.nranks);
        let idx = chan * self.layout.nranks + rank;
        // SAFETY: in bounds of the mapping by the layout (checked above).
        unsafe {
            self.base
                .as_ptr()
                .add(self.layout.coll_offset + idx * COLL_SLOT)
        }
    }

    fn coll_ctl(&self, chan: usize, rank: usize, half: usize) -> &CollHalfCtl {
        // SAFETY: the slot head holds only atomics and padding (valid for
        // any bit pattern, including the initial zeroes); `half & 1`
        // indexes one of its two blocks.
        unsafe { &(*self.coll_slot(chan, rank).cast::<CollSlotHead>()).halves[half & 1] }
    }

    /// The data of a half: `COLL_HALF` bytes. Who may write or read them,
    /// and when, is the posting protocol's business (module doc).
    pub fn coll_data(&self, chan: usize, rank: usize, half: usize) -> *mut u8 {
        // SAFETY: the data of half 0 then half 1 follow the head inside
        // the slot.
        unsafe {
            self.coll_slot(chan, rank)
                .add(std::mem::size_of::<CollSlotHead>() + (half & 1) * COLL_HALF)
        }
    }

    /// May the owner overwrite this half? (Every reader of the previous
    /// posting has released it.)
    pub fn coll_free(&self, chan: usize, rank: usize, half: usize) -> bool {
        let c = self.coll_ctl(chan, rank, half);
        // Acquire pairs with the readers' AcqRel in `coll_release`: their
        // reads of the half happen before our next writes.
        c.done.load(Ordering::Acquire) >= c.expected.load(Ordering::Relaxed)
    }

    /// Publishes the owner's new posting in a half, to be read by
    /// `readers` peers. The owner has waited for `coll_free` and written
    /// the data.
    pub fn coll_post(
        &self,
        chan: usize,
        rank: usize,
        half: usize,
        t: CollToken,
        readers: u32,
        meta: u64,
    ) {
        let c = self.coll_ctl(chan, rank, half);
        c.meta.store(meta, Ordering::Relaxed);
        c.expected.store(readers, Ordering::Relaxed);
        c.done.store(0, Ordering::Relaxed);
        // Release publishes the data and the counters reset above; pairs
        // with the Acquire in `coll_posted`.
        c.posted.store(t.0, Ordering::Release);
    }

    /// Has the owner posted `t` in this half?
    pub fn coll_posted(&self, chan: usize, rank: usize, half: usize, t: CollToken) -> bool {
        self.coll_ctl(chan, rank, half)
            .posted
            .load(Ordering::Acquire)
            == t.0
    }

    /// The word published with the owner's posting (read after seeing the
    /// posting with `coll_posted`, whose Acquire makes it visible).
    pub fn coll_meta(&self, chan: usize, rank: usize, half: usize) -> u64 {
        self.coll_ctl(chan, rank, half).meta.load(Ordering::Relaxed)
    }

    /// Publishes the owner's result area for posting `t` (partitioned
    /// reductions).
    pub fn coll_post_result(&self, chan: usize, rank: usize, half: usize, t: CollToken) {
        // Release publishes the result bytes; pairs with `coll_result`.
        self.coll_ctl(chan, rank, half)
            .result
            .store(t.0, Ordering::Release);
    }

    /// Is the owner's result area for posting `t` ready?
    pub fn coll_result(&self, chan: usize, rank: usize, half: usize, t: CollToken) -> bool {
        self.coll_ctl(chan, rank, half)
            .result
            .load(Ordering::Acquire)
            == t.0
    }

    /// A reader has finished with the owner's current posting in this
    /// half. Returns true for the last expected reader, which must wake the
    /// owner.
    pub fn coll_release(&self, chan: usize, rank: usize, half: usize) -> bool {
        let c = self.coll_ctl(chan, rank, half);
        // AcqRel: our reads of the half happen before the owner's next
        // writes (pairs with the Acquire in `coll_free`).
        let done = c.done.fetch_add(1, Ordering::AcqRel) + 1;
        done == c.expected.load(Ordering::Relaxed)
    }

    /// A new occupant of a slot (see `recycle_inbox`): per channel, the
    /// highest claim generation its predecessor posted under, so that its
    /// own tokens stay above them; and every half marked read, since the
    /// readers of the predecessor's last postings have finished with them
    /// (they completed the collectives) or are gone.
    pub fn adopt_coll_slots(&self, rank: usize) -> Vec<u64> {
        (0..self.layout.coll_chans)
            .map(|chan| {
                (0..2)
                    .map(|half| {
                        let c = self.coll_ctl(chan, rank, half);
                        c.done
                            .store(c.expected.load(Ordering::Relaxed), Ordering::Release);
                        CollToken(c.posted.load(Ordering::Acquire)).generation()
                    })
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Wakes `rank`'s sleeping threads after publishing something they may
    /// wait for in shared memory (not through a cell).
    pub fn notify(&self, rank: usize) {
        // SeqCst fence: pairs with the one in `prepare_sleep` (module doc).
        fence(Ordering::SeqCst);
        self.ring_if_sleeping(rank);
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range and hand out no references
        // that outlive `self`.
        unsafe {
            let _ = rustix::mm::munmap(self.base.as_ptr().cast(), self.layout.size);
        }
    }
}

/// A segment name unique to the job.
pub fn segment_name(jobid: &str) -> String {
    let clean: String = jobid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("/oxmpi-{clean}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(tag: i32) -> CellInfo {
        CellInfo {
            kind: CellKind::Eager,
            ctx: 0,
            src: 0,
            tag,
            src_world: 0,
            total_len: 4,
            aux0: 0,
            aux1: 0,
            origin: 0,
        }
    }

    #[test]
    fn ring_fifo_and_full() {
        let seg = Segment::anonymous(Layout::new(2, 4, 128)).unwrap();
        for t in 0..4 {
            let r = seg.push(1, &info(t), |p| {
                p[..4].copy_from_slice(&t.to_le_bytes());
                4
            });
            assert!(matches!(r, Push::Done));
        }
        assert!(matches!(seg.push(1, &info(9), |_| 0), Push::Full));
        let mut head = 0;
        for t in 0..4 {
            let (i, p) = seg.peek(1, head).unwrap();
            assert_eq!(i.tag, t);
            assert_eq!(p, &t.to_le_bytes());
            head = seg.pop_release(1, head);
        }
        assert!(seg.peek(1, head).is_none());
        assert!(matches!(seg.push(1, &info(5), |_| 0), Push::Done));
        assert_eq!(seg.peek(1, head).unwrap().0.tag, 5);
    }

    #[test]
    fn ring_many_producers_keep_per_producer_order() {
        use std::sync::Arc;
        let seg = Arc::new(Segment::anonymous(Layout::new(1, 8, 128)).unwrap());
        let producers = 4;
        let per = 5000;
        let mut handles = vec![];
        for p in 0..producers {
            let seg = seg.clone();
            handles.push(std::thread::spawn(move || {
                for i in 0..per {
                    let mut inf = info(i);
                    inf.src = p;
                    while let Push::Full = seg.push(0, &inf, |_| 0) {
                        std::thread::yield_now();
                    }
                }
            }));
        }
        let mut next = vec![0; producers as usize];
        let mut head = 0;
        let mut got = 0;
        while got < producers * per {
            if let Some((i, _)) = seg.peek(0, head) {
                assert_eq!(i.tag, next[i.src as usize]);
                next[i.src as usize] += 1;
                head = seg.pop_release(0, head);
                got += 1;
            } else {
                std::thread::yield_now();
            }
        }
        for h in handles {
            h.join().unwrap();
        }
    }
}
