//! Foreign segments: talking to processes of *other launches* on this
//! machine (ports, names and `Comm.Join` between jobs).
//!
//! Every process consumes only its own inbox, in its own launch's segment;
//! to reach a process of another launch it maps that launch's segment too
//! and produces into the peer's inbox there. A segment is a memfd that
//! every process of its launch keeps open, so it can be opened from outside
//! as `/proc/PID/fd/FD` (the same permission check as the cross-memory
//! reads oxmpi already makes). A process's *origin* is `PID << 32 | FD`:
//! where its segment can be opened. Cells put into a foreign segment carry
//! the sender's origin (`CellInfo::origin`; 0 within a segment), so that
//! the receiver can tell which segment the sender's slot belongs to.
//!
//! Job ranks of foreign processes are `k * FOREIGN_STRIDE + slot` for the
//! k-th foreign segment this process has mapped (k >= 1); a segment is
//! mapped once, recognised by its inode, however many origins name it. The
//! numbering is local to each process: ranks travel between processes as
//! (origin, slot) pairs (`encode_ranks`/`decode_ranks`). Communicators with
//! foreign members use the point-to-point collective algorithms (no shared
//! channel spans two segments).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::shm::Segment;

/// Job ranks at and above this belong to foreign segments.
pub(crate) const FOREIGN_STRIDE: usize = 1 << 20;

/// A segment of another launch, mapped by this process.
pub(crate) struct ForeignSeg {
    pub(crate) seg: Segment,
    ino: u64,
    fd: OwnedFd,
}

/// The foreign segments this process has mapped.
#[derive(Default)]
pub(crate) struct Foreign {
    segs: RwLock<Vec<Arc<ForeignSeg>>>,
    /// Origins seen, and the rank base they resolved to (0: our own).
    bases: Mutex<HashMap<u64, usize>>,
    any: AtomicBool,
}

/// What this process needs to know about its own segment.
pub(crate) struct Own {
    /// `PID << 32 | FD`, or 0 when the segment cannot be opened from
    /// outside (a named segment under a foreign PMI launcher).
    pub(crate) origin: u64,
    pub(crate) ino: u64,
    /// Slots of our own segment.
    pub(crate) slots: usize,
}

impl Own {
    pub(crate) fn of(fd: Option<&OwnedFd>, seg: &Segment) -> Own {
        let slots = seg.layout().nranks;
        let Some(fd) = fd else {
            return Own {
                origin: 0,
                ino: 0,
                slots,
            };
        };
        let ino = rustix::fs::fstat(fd).map(|st| st.st_ino).unwrap_or(0);
        Own {
            origin: (u64::from(std::process::id()) << 32) | fd.as_raw_fd() as u32 as u64,
            ino,
            slots,
        }
    }
}

impl Foreign {
    /// Whether any foreign segment is mapped (cheap: checked in progress).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// The segment of foreign rank `rank` and the slot in it.
    pub(crate) fn locate(&self, rank: usize) -> Option<(Arc<ForeignSeg>, usize)> {
        let (k, slot) = (rank / FOREIGN_STRIDE, rank % FOREIGN_STRIDE);
        let segs = self.segs.read().unwrap_or_else(|e| e.into_inner());
        // A slot the segment does not have names nobody (a malformed rank
        // list from another job): never index past its layout.
        segs.get(k.checked_sub(1)?)
            .filter(|s| slot < s.seg.layout().nranks)
            .map(|s| (Arc::clone(s), slot))
    }

    /// The failure counts of every mapped segment, summed (no allocation:
    /// read on every progress round once another launch is mapped).
    pub(crate) fn failures(&self) -> u64 {
        let segs = self.segs.read().unwrap_or_else(|e| e.into_inner());
        segs.iter().map(|s| s.seg.failures()).sum()
    }

    /// Every mapped segment with its rank base.
    pub(crate) fn all(&self) -> Vec<(usize, Arc<ForeignSeg>)> {
        let segs = self.segs.read().unwrap_or_else(|e| e.into_inner());
        segs.iter()
            .enumerate()
            .map(|(i, s)| ((i + 1) * FOREIGN_STRIDE, Arc::clone(s)))
            .collect()
    }

    /// The rank base of the segment named by `origin`, mapping it if need
    /// be; 0 for our own segment.
    pub(crate) fn base_of(&self, own: &Own, origin: u64) -> Result<usize> {
        if origin == 0 || origin == own.origin {
            return Ok(0);
        }
        let mut bases = self.bases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&b) = bases.get(&origin) {
            return Ok(b);
        }
        let (pid, fd) = (origin >> 32, origin & 0xffff_ffff);
        let path = format!("/proc/{pid}/fd/{fd}");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| {
                Error::ProcFailed(format!(
                    "cannot open the shared memory of another oxmpi job ({path}): {e}"
                ))
            })?;
        let fd = OwnedFd::from(file);
        let ino = rustix::fs::fstat(&fd)
            .map_err(|e| Error::os(format!("fstat({path})"), e))?
            .st_ino;
        let base = if ino == own.ino {
            0
        } else {
            let mut segs = self.segs.write().unwrap_or_else(|e| e.into_inner());
            match segs.iter().position(|s| s.ino == ino) {
                Some(i) => (i + 1) * FOREIGN_STRIDE,
                None => {
                    // Ranks travel as i32.
                    if segs.len() + 2 > i32::MAX as usize / FOREIGN_STRIDE {
                        return Err(Error::Intern("too many foreign segments".into()));
                    }
                    let seg = Segment::from_fd(&fd)?;
                    segs.push(Arc::new(ForeignSeg { seg, ino, fd }));
                    self.any.store(true, Ordering::Release);
                    segs.len() * FOREIGN_STRIDE
                }
            }
        };
        bases.insert(origin, base);
        Ok(base)
    }

    /// Our job rank of `slot` in the segment `origin` names, checked: the
    /// pair comes from another process (a cell, a rank list, a port name,
    /// a join handshake).
    pub(crate) fn resolve(&self, own: &Own, origin: u64, slot: u64) -> Result<usize> {
        let base = self.base_of(own, origin)?;
        let slot = usize::try_from(slot).unwrap_or(usize::MAX);
        let known = if base == 0 {
            slot < own.slots
        } else {
            slot < FOREIGN_STRIDE && self.locate(base + slot).is_some()
        };
        if !known {
            return Err(Error::Mpi {
                class: crate::error::class::ERR_PORT,
                message: format!("no process {slot} in the job that origin {origin:x} names"),
            });
        }
        Ok(base + slot)
    }

    /// (origin, slot) naming job rank `rank` for another process.
    pub(crate) fn wire(&self, own: &Own, rank: usize) -> Result<(u64, u32)> {
        if rank < FOREIGN_STRIDE {
            return Ok((own.origin, rank as u32));
        }
        let (seg, slot) = self
            .locate(rank)
            .ok_or_else(|| Error::Intern(format!("unknown foreign rank {rank}")))?;
        // Our own descriptor of that segment: valid as long as we live,
        // whoever we opened it through.
        let origin = (u64::from(std::process::id()) << 32) | seg.fd.as_raw_fd() as u32 as u64;
        Ok((origin, slot as u32))
    }
}

/// Job ranks as (origin, slot) pairs, 12 bytes each.
pub(crate) fn encode_ranks(foreign: &Foreign, own: &Own, ranks: &[i32]) -> Result<Vec<u8>> {
    let mut v = Vec::with_capacity(12 * ranks.len());
    for &r in ranks {
        let (origin, slot) = foreign.wire(own, r as usize)?;
        v.extend_from_slice(&origin.to_le_bytes());
        v.extend_from_slice(&slot.to_le_bytes());
    }
    Ok(v)
}

/// The inverse of `encode_ranks`, in this process's numbering.
pub(crate) fn decode_ranks(foreign: &Foreign, own: &Own, bytes: &[u8]) -> Result<Vec<i32>> {
    if !bytes.len().is_multiple_of(12) {
        return Err(Error::Intern("malformed rank list".into()));
    }
    bytes
        .chunks_exact(12)
        .map(|c| {
            let origin = u64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
            let slot = u32::from_le_bytes(c[8..].try_into().expect("4 bytes"));
            Ok(foreign.resolve(own, origin, u64::from(slot))? as i32)
        })
        .collect()
}
