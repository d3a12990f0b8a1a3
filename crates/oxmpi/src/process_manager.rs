//! The contract between oxmpi's launcher and the processes it starts:
//! what the launcher sets up for the native runtime, and the variables
//! that tell a process where it stands. Both sides use this module, so the
//! contract is written down once.
//!
//! A launcher creates one shared-memory segment per *universe* (the job it
//! started plus every process spawned from it) with [`create_segment`], and
//! passes its descriptor to every process it starts. Each process owns one
//! slot of the segment; its `COMM_WORLD` is a list of slots.

use std::os::fd::{FromRawFd, OwnedFd};

pub use crate::bootstrap::{percent_decode, percent_encode};
use crate::error::{Error, Result};
use crate::shm::{self, Layout, Segment};

/// Descriptor of the universe's shared-memory segment (inherited).
pub const SHM_FD: &str = "OXMPI_SHM_FD";
/// This process's slot in the segment.
pub const SLOT: &str = "OXMPI_SLOT";
/// The slots of this process's `COMM_WORLD`, in rank order (`slot_list`).
pub const WORLD_SLOTS: &str = "OXMPI_WORLD_SLOTS";
/// Set to 1 when the slot had an earlier occupant (see `shm.rs`).
pub const SLOT_REUSED: &str = "OXMPI_SLOT_REUSED";
/// For a spawned process: how to reach its parents (`ParentInfo`).
pub const PARENT: &str = "OXMPI_PARENT";

/// Spare slots a universe has for spawned processes, beyond the job's own
/// (`OXMPI_SPAWN_SLOTS`); each costs address space only until used.
pub const DEFAULT_SPARE_SLOTS: usize = 64;

/// The number of spare slots asked for by the environment, or the default.
pub fn spare_slots() -> usize {
    std::env::var("OXMPI_SPAWN_SLOTS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_SPARE_SLOTS)
}

/// Creates a universe's segment with `capacity` slots; returns its
/// descriptor (close-on-exec: pass it on explicitly).
pub fn create_segment(capacity: usize) -> Result<OwnedFd> {
    let (_, fd) = Segment::create_memfd(layout_for(capacity))?;
    Ok(fd)
}

/// A universe's segment as its launcher sees it.
pub struct UniverseSegment(Segment);

impl UniverseSegment {
    /// Maps the segment behind `fd` (from `create_segment`).
    pub fn open(fd: &OwnedFd) -> Result<UniverseSegment> {
        Segment::from_fd(fd).map(UniverseSegment)
    }

    /// Its number of slots.
    pub fn capacity(&self) -> usize {
        self.0.layout().nranks
    }

    /// Readies a slot whose occupant finalized and exited for the next
    /// one; call before starting that process (see `shm.rs`).
    pub fn recycle_slot(&self, slot: usize) {
        self.0.recycle_inbox(slot);
    }

    /// Whether the process in `slot` asked that its death not end the job
    /// (spawned processes, pool workers: see `shm.rs`, "Failed processes").
    pub fn is_survivable(&self, slot: usize) -> bool {
        self.0.is_survivable(slot)
    }

    /// Tells every process that the one in `slot` died; call after reaping
    /// it. The slot is never used again.
    pub fn mark_failed(&self, slot: usize) {
        self.0.mark_failed(slot);
    }
}

/// The segment geometry for `capacity` slots (`OXMPI_SHM_CELLS` cells per
/// inbox, a power of two).
pub(crate) fn layout_for(capacity: usize) -> Layout {
    let cells = std::env::var("OXMPI_SHM_CELLS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| n.is_power_of_two() && *n >= 2)
        .unwrap_or(shm::DEFAULT_SLOTS);
    Layout::new(capacity, cells, shm::DEFAULT_CELL_SIZE)
}

/// `5,6,9`: a list of slots.
pub fn slot_list(slots: &[usize]) -> String {
    slots
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn parse_slot_list(s: &str) -> Result<Vec<i32>> {
    s.split(',')
        .map(|t| {
            t.trim()
                .parse::<i32>()
                .ok()
                .filter(|&v| v >= 0)
                .ok_or_else(|| Error::Bootstrap(format!("bad slot list {s:?}")))
        })
        .collect()
}

/// What a spawned process needs to connect to the processes that spawned
/// it: the slot of their root and the tag of the connection (unique in the
/// universe), as `TAG:ROOT_SLOT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParentInfo {
    pub tag: i32,
    pub root_slot: i32,
}

impl ParentInfo {
    pub fn encode(&self) -> String {
        format!("{}:{}", self.tag, self.root_slot)
    }

    pub(crate) fn decode(s: &str) -> Result<ParentInfo> {
        let bad = || Error::Bootstrap(format!("bad {PARENT} value {s:?}"));
        let (t, r) = s.split_once(':').ok_or_else(bad)?;
        Ok(ParentInfo {
            tag: t.parse().map_err(|_| bad())?,
            root_slot: r.parse().map_err(|_| bad())?,
        })
    }
}

/// Takes the segment descriptor a launcher passed, if any.
pub(crate) fn inherited_segment() -> Result<Option<OwnedFd>> {
    let Ok(v) = std::env::var(SHM_FD) else {
        return Ok(None);
    };
    let fd: i32 = v
        .trim()
        .parse()
        .map_err(|_| Error::Bootstrap(format!("{SHM_FD}={v:?} is not a descriptor")))?;
    // SAFETY: borrowing a descriptor number for the duration of fstat;
    // fstat fails cleanly (EBADF) if it is not open.
    rustix::fs::fstat(unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) })
        .map_err(|e| Error::os(format!("{SHM_FD}={fd}"), e))?;
    // SAFETY: the launcher passed this open descriptor for exactly this
    // purpose; nothing else in the process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Keep it out of processes we start.
    let _ = rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC);
    Ok(Some(owned))
}

/// `MPI_UNIVERSE_SIZE` for a job of `job` processes: `OXMPI_UNIVERSE_SIZE`,
/// else the processors available to us (or the job's size if larger), the
/// number of processes the machine runs without oversubscribing it.
pub fn default_universe_size(job: usize) -> usize {
    std::env::var("OXMPI_UNIVERSE_SIZE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| crate::sys::available_cpus().max(job))
}
