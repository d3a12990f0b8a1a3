//! Collective algorithms (MPI-4.1 chapter 6).
//!
//! Two families, behind one entry point ([`execute`]):
//!
//! * point-to-point algorithms (this module), written against [`Transport`]:
//!   messages on the communicator's collective context whose tags carry
//!   the collective's sequence number, so they never match user messages
//!   nor those of another collective in flight on the same communicator;
//! * shared-memory algorithms ([`shm`]) for barrier, broadcast, allgather,
//!   the reductions and scans, used when the communicator holds a channel
//!   of the job's segment (every communicator of the native engine lives
//!   on one node). Rooted gathers and scatters and all-to-all stay
//!   point-to-point: they only move data, which single-copy rendezvous
//!   does well, and (for the vector forms) not every member knows every
//!   count, which a channel's lockstep rounds would need. Broadcasts of
//!   [`BCAST_SINGLE_COPY_MIN`] bytes or more are handed to the
//!   point-to-point tree too, when messages move with a single copy.
//!
//! # Reproducible reductions
//!
//! Floating-point reductions give the same bits on every rank and in every
//! run for the same inputs and world size, whatever the algorithm, because
//! every algorithm combines the operands in one canonical order:
//!
//! * reductions (reduce, allreduce, reduce-scatter): the binomial tree over
//!   ranks, `acc[r] = acc[r] op acc[r + mask]` for `mask = 1, 2, 4, ...`
//!   and `r` a multiple of `2 * mask` ([`tree_reduce`]; the point-to-point
//!   algorithm [`reduce_to_zero`] performs exactly these steps);
//! * scans: the left fold `(((x0 op x1) op x2) ...)`.
//!
//! The result is computed once per element (or identically by every rank
//! that computes it) and copied to those that need it. Both orders keep
//! lower ranks on the left, which non-commutative operations need.
//!
//! # Errors during a collective
//!
//! A failing user operation does not abandon the protocol (peers would
//! wait forever): the algorithm finishes its messages with whatever it
//! holds and returns the first error at the end.

pub(crate) mod shm;

use crate::backend::{Blocks, Collective, Combine, RawBuf, Status};
use crate::datatype::Datatype;
use crate::error::{Error, Result};
use crate::op::Op;

/// Point-to-point on a communicator's collective context, scoped to one
/// collective call (tags are small step numbers the implementation combines
/// with the call's sequence number, all below [`COLL_TAG_LIMIT`]).
pub(crate) trait Transport {
    type Pending;
    fn rank(&self) -> i32;
    fn size(&self) -> i32;
    /// Starts sending `data`.
    ///
    /// # Safety
    /// `data` must stay valid, and unmodified, until `finish` returns for
    /// the handle.
    unsafe fn start_send(&self, data: RawBuf, dest: i32, tag: i32) -> Result<Self::Pending>;
    /// Starts receiving into `buf` (a longer message is a truncation
    /// error).
    ///
    /// # Safety
    /// `buf` must stay valid, and otherwise untouched, until `finish`
    /// returns for the handle.
    unsafe fn start_recv(&self, buf: RawBuf, src: i32, tag: i32) -> Result<Self::Pending>;
    /// Waits for every handle; returns the first error once all are done.
    fn finish(&self, reqs: Vec<Self::Pending>) -> Result<()>;
    /// Receives a message of unknown length.
    fn recv_vec(&self, src: i32, tag: i32) -> Result<Vec<u8>>;
}

/// A communicator as the algorithms see it.
pub(crate) trait Comm: Transport {
    /// The shared-memory channel, if the communicator holds one.
    fn node(&self) -> Option<shm::Node<'_>>;
    /// Do large point-to-point messages move with a single copy? The same
    /// answer on every member (a job-wide setting), since members must
    /// pick the same algorithm.
    fn single_copy(&self) -> bool;
}

/// Broadcasts from this size on use the point-to-point tree when messages
/// move with a single copy (one copy per receiver beats the channel's two).
const BCAST_SINGLE_COPY_MIN: usize = 512 * 1024;

/// Point-to-point on the collective context, for runtime code outside the
/// collective algorithms (communicator management) with tags from
/// [`COLL_TAG_LIMIT`] up. Nothing in this module uses it any more.
#[allow(dead_code)] // kept for communicator management (another branch)
pub(crate) trait Pt2Pt {
    fn rank(&self) -> i32;
    fn size(&self) -> i32;
    fn csend(&self, data: &[u8], dest: i32, tag: i32) -> Result<()>;
    fn crecv(&self, buf: &mut [u8], src: i32, tag: i32) -> Result<Status>;
    /// Receives a message of unknown length.
    fn crecv_vec(&self, src: i32, tag: i32) -> Result<Vec<u8>>;
    /// Sends to `dest` while receiving from `src` (no deadlock if both are
    /// large).
    fn csendrecv_vec(&self, data: &[u8], dest: i32, src: i32, tag: i32) -> Result<Vec<u8>>;
}

/// Tags of the collective algorithms stay below this; other runtime code
/// that talks on a communicator's collective context through [`Pt2Pt`]
/// uses tags from here up, so it never matches a collective's messages.
pub(crate) const COLL_TAG_LIMIT: i32 = 1 << 30;

// Step tags of the point-to-point algorithms (at most 63).
const TAG_BARRIER: i32 = 1;
const TAG_BCAST: i32 = 2;
const TAG_REDUCE: i32 = 3;
const TAG_GATHER: i32 = 4;
const TAG_SCATTER: i32 = 5;
const TAG_ALLGATHER: i32 = 6;
const TAG_ALLTOALL: i32 = 7;
const TAG_SCAN: i32 = 8;
const TAG_TO_ROOT: i32 = 9;

fn send(c: &impl Transport, data: &[u8], dest: i32, tag: i32) -> Result<()> {
    // SAFETY: `data` is borrowed until `finish` returns.
    let r = unsafe { c.start_send(RawBuf::from_slice(data), dest, tag)? };
    c.finish(vec![r])
}

fn recv(c: &impl Transport, buf: &mut [u8], src: i32, tag: i32) -> Result<()> {
    // SAFETY: `buf` is borrowed mutably until `finish` returns.
    let r = unsafe { c.start_recv(RawBuf::from_mut(buf), src, tag)? };
    c.finish(vec![r])
}

/// Sends `out` to `dest` while receiving `into` from `src`.
fn sendrecv(
    c: &impl Transport,
    out: &[u8],
    dest: i32,
    into: &mut [u8],
    src: i32,
    tag: i32,
) -> Result<()> {
    // SAFETY: both buffers are borrowed until `finish` returns; a shared
    // and a mutable borrow cannot overlap.
    let reqs = unsafe {
        vec![
            c.start_recv(RawBuf::from_mut(into), src, tag)?,
            c.start_send(RawBuf::from_slice(out), dest, tag)?,
        ]
    };
    c.finish(reqs)
}

/// Remembers the first error of a protocol that must run to its end.
#[derive(Default)]
struct FirstError(Option<Error>);

impl FirstError {
    fn note(&mut self, r: Result<()>) {
        if let (Err(e), None) = (r, &self.0) {
            self.0 = Some(e);
        }
    }

    fn result(self) -> Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// The bytes a `RawBuf` describes.
///
/// # Safety
/// As `RawBuf::as_slice`: valid for reads while the result is used.
unsafe fn bytes<'a>(b: RawBuf) -> &'a [u8] {
    // SAFETY: by this function's contract.
    unsafe { b.as_slice() }
}

/// # Safety
/// As `RawBuf::as_mut_slice`: valid for writes, and not otherwise
/// accessed, while the result is used.
unsafe fn bytes_mut<'a>(b: RawBuf) -> &'a mut [u8] {
    // SAFETY: by this function's contract.
    unsafe { b.as_mut_slice() }
}

// ------------------------------------------------------------ dispatcher

/// Runs one collective on `c`.
///
/// # Safety
/// The buffers `op` describes must be valid as the `Collective` contract
/// says (backend module doc) for the whole call, and checked against the
/// operation's counts by the caller.
pub(crate) unsafe fn execute(c: &impl Comm, op: &Collective) -> Result<()> {
    let node = if c.size() > 1 { c.node() } else { None };
    // SAFETY: every buffer below is valid as the caller's contract says;
    // in-place variants pass no second view of the same memory.
    unsafe {
        match op {
            Collective::Barrier => match node {
                Some(n) => n.barrier(),
                None => barrier(c),
            },
            Collective::Bcast { buf, root } => bcast_any(c, node.as_ref(), bytes_mut(*buf), *root),
            Collective::Gather { send, recv, root } => {
                gather(c, send.map(|s| bytes(s)), recv, *root)
            }
            Collective::Scatter { send, recv, root } => {
                scatter(c, send, recv.map(|r| bytes_mut(r)), *root)
            }
            Collective::Allgather { send, recv } => match node {
                Some(n) => n.allgather(send.map(|s| bytes(s)), recv),
                None => allgather(c, send.map(|s| bytes(s)), recv),
            },
            Collective::Alltoall { send, recv } => alltoall(c, send.as_ref(), recv),
            Collective::Reduce {
                send,
                recv,
                count,
                dtype,
                op,
                root,
            } => {
                let is_root = c.rank() == *root;
                let n = count * dtype.size();
                let own = |s: &Option<RawBuf>| match s {
                    Some(s) => bytes(*s)[..n].to_vec(),
                    None => bytes(*recv)[..n].to_vec(),
                };
                let out = is_root.then(|| &mut bytes_mut(*recv)[..n]);
                match node {
                    Some(nd) => {
                        let input = own(send);
                        nd.reduce(&input, out, *count, dtype, op, Some(*root as usize))
                    }
                    None => reduce(c, &own(send), out, *count, dtype, op, *root),
                }
            }
            Collective::Allreduce {
                send,
                recv,
                count,
                dtype,
                op,
            } => {
                let n = count * dtype.size();
                match node {
                    Some(nd) => {
                        let out = bytes_mut(*recv);
                        let input: Vec<u8>;
                        let input: &[u8] = match send {
                            Some(s) => &bytes(*s)[..n],
                            None => {
                                input = out[..n].to_vec();
                                &input
                            }
                        };
                        nd.allreduce(input, &mut out[..n], *count, dtype, op)
                    }
                    None => {
                        let input = match send {
                            Some(s) => bytes(*s)[..n].to_vec(),
                            None => bytes(*recv)[..n].to_vec(),
                        };
                        allreduce(c, &input, &mut bytes_mut(*recv)[..n], *count, dtype, op)
                    }
                }
            }
            Collective::ReduceScatter {
                send,
                recv,
                counts,
                dtype,
                op,
            } => {
                let total: usize = counts.iter().sum::<usize>() * dtype.size();
                let input = match send {
                    Some(s) => bytes(*s)[..total].to_vec(),
                    None => bytes(*recv)[..total].to_vec(),
                };
                let mine = counts[c.rank() as usize] * dtype.size();
                let out = &mut bytes_mut(*recv)[..mine];
                match node {
                    Some(nd) => nd.reduce_scatter(&input, out, counts, dtype, op),
                    None => reduce_scatter(c, &input, out, counts, dtype, op),
                }
            }
            Collective::Scan {
                send,
                recv,
                count,
                dtype,
                op,
                exclusive,
            } => {
                let n = count * dtype.size();
                let input = match send {
                    Some(s) => bytes(*s)[..n].to_vec(),
                    None => bytes(*recv)[..n].to_vec(),
                };
                let out = &mut bytes_mut(*recv)[..n];
                match node {
                    Some(nd) => nd.scan(&input, out, *count, dtype, op, *exclusive),
                    None => scan(c, &input, out, *count, dtype, op, *exclusive),
                }
            }
        }
    }
}

/// Broadcast on the channel when there is one (which may hand large
/// messages over to the point-to-point tree), else point-to-point.
fn bcast_any(c: &impl Comm, node: Option<&shm::Node<'_>>, buf: &mut [u8], root: i32) -> Result<()> {
    let Some(n) = node else {
        return bcast(c, buf, root);
    };
    let handoff = c.single_copy().then_some(BCAST_SINGLE_COPY_MIN);
    match n.bcast(buf, root as usize, handoff)? {
        shm::Bcast::Done => Ok(()),
        shm::Bcast::PointToPoint => bcast(c, buf, root),
    }
}

// ------------------------------------------------- point-to-point algorithms

/// Dissemination barrier: ceil(log2 n) rounds.
pub(crate) fn barrier(c: &impl Transport) -> Result<()> {
    let (r, n) = (c.rank(), c.size());
    let mut k = 1;
    while k < n {
        sendrecv(c, &[], (r + k) % n, &mut [], (r - k + n) % n, TAG_BARRIER)?;
        k <<= 1;
    }
    Ok(())
}

/// Binomial-tree broadcast from `root`; a rank forwards to its children
/// concurrently.
pub(crate) fn bcast(c: &impl Transport, buf: &mut [u8], root: i32) -> Result<()> {
    let (r, n) = (c.rank(), c.size());
    if n == 1 {
        return Ok(());
    }
    let rel = (r - root + n) % n;
    let mut err = FirstError::default();
    let mut mask = 1;
    while mask < n {
        if rel & mask != 0 {
            // A truncated message is still forwarded: the subtree must
            // finish too.
            err.note(recv(c, buf, (r - mask + n) % n, TAG_BCAST));
            break;
        }
        mask <<= 1;
    }
    mask >>= 1;
    let mut sends = Vec::new();
    while mask > 0 {
        if rel + mask < n {
            // SAFETY: `buf` is not touched until `finish` below.
            match unsafe { c.start_send(RawBuf::from_slice(buf), (r + mask) % n, TAG_BCAST) } {
                Ok(s) => sends.push(s),
                Err(e) => err.note(Err(e)),
            }
        }
        mask >>= 1;
    }
    err.note(c.finish(sends));
    err.result()
}

/// MPI_Gather(v): the root receives every block at once.
fn gather(c: &impl Transport, send: Option<&[u8]>, recv: &Blocks, root: i32) -> Result<()> {
    let (r, n) = (c.rank(), c.size());
    if r != root {
        return send_checked(c, send, root, TAG_GATHER);
    }
    let mut reqs = Vec::with_capacity(n as usize);
    let mut err = FirstError::default();
    for src in 0..n {
        let block = recv.block(src as usize);
        if src == root {
            if let Some(s) = send {
                // SAFETY: the block is inside the receive buffer (Blocks
                // contract) and is written only here.
                let dst = unsafe { bytes_mut(block) };
                let k = s.len().min(dst.len());
                dst[..k].copy_from_slice(&s[..k]);
            }
            continue;
        }
        // SAFETY: blocks of a receive buffer do not overlap (MPI forbids
        // it) and stay valid until `finish`.
        match unsafe { c.start_recv(block, src, TAG_GATHER) } {
            Ok(q) => reqs.push(q),
            Err(e) => err.note(Err(e)),
        }
    }
    err.note(c.finish(reqs));
    err.result()
}

fn send_checked(c: &impl Transport, data: Option<&[u8]>, dest: i32, tag: i32) -> Result<()> {
    let data = data.ok_or_else(|| Error::Buffer("only the root may send in place".to_string()))?;
    send(c, data, dest, tag)
}

/// MPI_Scatter(v): the root sends every block at once.
fn scatter(c: &impl Transport, send: &Blocks, recv: Option<&mut [u8]>, root: i32) -> Result<()> {
    let (r, n) = (c.rank(), c.size());
    if r != root {
        let recv =
            recv.ok_or_else(|| Error::Buffer("only the root may receive in place".into()))?;
        return self::recv(c, recv, root, TAG_SCATTER);
    }
    let mut reqs = Vec::with_capacity(n as usize);
    let mut err = FirstError::default();
    for dst in 0..n {
        let block = send.block(dst as usize);
        if dst == root {
            continue;
        }
        // SAFETY: the send buffer stays valid and unmodified until
        // `finish`.
        match unsafe { c.start_send(block, dst, TAG_SCATTER) } {
            Ok(q) => reqs.push(q),
            Err(e) => err.note(Err(e)),
        }
    }
    if let Some(out) = recv {
        // SAFETY: the root's block, read while the receive buffer is
        // written: distinct memory (MPI forbids overlapping them).
        let mine = unsafe { bytes(send.block(root as usize)) };
        let k = mine.len().min(out.len());
        out[..k].copy_from_slice(&mine[..k]);
    }
    err.note(c.finish(reqs));
    err.result()
}

/// MPI_Allgather(v): a ring, block `j` travelling from rank `j` to the
/// right for n-1 steps.
fn allgather(c: &impl Transport, send: Option<&[u8]>, recv: &Blocks) -> Result<()> {
    let (r, n) = (c.rank(), c.size());
    if let Some(s) = send {
        // SAFETY: this rank's block of the receive buffer, written only
        // here.
        let dst = unsafe { bytes_mut(recv.block(r as usize)) };
        let k = s.len().min(dst.len());
        dst[..k].copy_from_slice(&s[..k]);
    }
    let (right, left) = ((r + 1) % n, (r - 1 + n) % n);
    let mut err = FirstError::default();
    for k in 0..n - 1 {
        let out = ((r - k) % n + n) % n;
        let inc = ((r - k - 1) % n + n) % n;
        // SAFETY: two distinct blocks of the receive buffer (`out != inc`
        // for n > 1), borrowed until `finish`.
        let reqs = unsafe {
            vec![
                c.start_recv(recv.block(inc as usize), left, TAG_ALLGATHER)?,
                c.start_send(recv.block(out as usize), right, TAG_ALLGATHER)?,
            ]
        };
        // Keep the ring going whatever arrived: the others need the
        // remaining steps.
        err.note(c.finish(reqs));
    }
    err.result()
}

/// MPI_Alltoall(v/w): pairwise exchange, in step k with ranks r+k and r-k.
fn alltoall(c: &impl Transport, send: Option<&Blocks>, recv: &Blocks) -> Result<()> {
    let (r, n) = (c.rank(), c.size());
    // In place, the outgoing blocks are copied first: the incoming ones
    // overwrite them.
    let saved: Vec<Vec<u8>> = match send {
        // SAFETY: the receive buffer's blocks are valid for reads.
        None => (0..n as usize)
            .map(|i| unsafe { bytes(recv.block(i)) }.to_vec())
            .collect(),
        Some(_) => Vec::new(),
    };
    let outgoing = |i: usize| -> RawBuf {
        match send {
            Some(s) => s.block(i),
            None => RawBuf::from_slice(&saved[i]),
        }
    };
    if send.is_some() {
        // SAFETY: this rank's own blocks: distinct send and receive memory.
        unsafe {
            let src = bytes(outgoing(r as usize));
            let dst = bytes_mut(recv.block(r as usize));
            let k = src.len().min(dst.len());
            dst[..k].copy_from_slice(&src[..k]);
        }
    }
    let mut err = FirstError::default();
    for k in 1..n {
        let dst = (r + k) % n;
        let src = (r - k + n) % n;
        // SAFETY: the outgoing block is unmodified (send buffer or our
        // copy) and the incoming one is written only by this receive, both
        // until `finish`.
        let reqs = unsafe {
            vec![
                c.start_recv(recv.block(src as usize), src, TAG_ALLTOALL)?,
                c.start_send(outgoing(dst as usize), dst, TAG_ALLTOALL)?,
            ]
        };
        err.note(c.finish(reqs));
    }
    err.result()
}

/// Reduces to rank 0 along the canonical binomial tree (module doc):
/// returns the result on rank 0.
pub(crate) fn reduce_to_zero(
    c: &impl Transport,
    data: &[u8],
    count: usize,
    dtype: &Datatype,
    op: &Op,
) -> Result<Option<Vec<u8>>> {
    let (r, n) = (c.rank(), c.size());
    let mut acc = data.to_vec();
    let mut tmp = vec![0u8; data.len()];
    let mut err = FirstError::default();
    let mut mask = 1;
    while mask < n {
        if r & mask == 0 {
            let src = r | mask;
            if src < n {
                err.note(recv(c, &mut tmp, src, TAG_REDUCE));
                // tmp = acc op tmp  (acc covers the lower ranks)
                err.note(op.apply(&acc, &mut tmp, count, dtype));
                std::mem::swap(&mut acc, &mut tmp);
            }
        } else {
            send(c, &acc, r & !mask, TAG_REDUCE)?;
            err.result()?;
            return Ok(None);
        }
        mask <<= 1;
    }
    err.result()?;
    Ok(Some(acc))
}

/// MPI_Reduce: the canonical tree to rank 0, then to the root.
fn reduce(
    c: &impl Transport,
    data: &[u8],
    out: Option<&mut [u8]>,
    count: usize,
    dtype: &Datatype,
    op: &Op,
    root: i32,
) -> Result<()> {
    let r = c.rank();
    let res = reduce_to_zero(c, data, count, dtype, op);
    if root == 0 {
        if let (Ok(Some(res)), Some(out)) = (&res, out) {
            out.copy_from_slice(res);
        }
        return res.map(|_| ());
    }
    let mut err = FirstError::default();
    if r == 0 {
        let acc = match res {
            Ok(v) => v.expect("rank 0 holds the result"),
            Err(e) => {
                err.note(Err(e));
                vec![0u8; data.len()]
            }
        };
        send(c, &acc, root, TAG_TO_ROOT)?;
    } else {
        err.note(res.map(|_| ()));
    }
    if r == root {
        let out = out.expect("the root has a receive buffer");
        err.note(recv(c, out, 0, TAG_TO_ROOT));
    }
    err.result()
}

/// MPI_Allreduce: the canonical tree to rank 0, then a broadcast, so every
/// rank holds the same bits.
fn allreduce(
    c: &impl Transport,
    data: &[u8],
    out: &mut [u8],
    count: usize,
    dtype: &Datatype,
    op: &Op,
) -> Result<()> {
    let mut err = FirstError::default();
    match reduce_to_zero(c, data, count, dtype, op) {
        Ok(Some(res)) => out.copy_from_slice(&res),
        Ok(None) => {}
        Err(e) => err.note(Err(e)),
    }
    bcast(c, out, 0)?;
    err.result()
}

/// MPI_Reduce_scatter: the canonical tree to rank 0, which sends each rank
/// its part.
fn reduce_scatter(
    c: &impl Transport,
    data: &[u8],
    out: &mut [u8],
    counts: &[usize],
    dtype: &Datatype,
    op: &Op,
) -> Result<()> {
    let w = dtype.size();
    let total: usize = counts.iter().sum();
    let mut err = FirstError::default();
    let res = match reduce_to_zero(c, data, total, dtype, op) {
        Ok(v) => v,
        Err(e) => {
            err.note(Err(e));
            (c.rank() == 0).then(|| vec![0u8; data.len()])
        }
    };
    let blocks = Blocks::contiguous(RawBuf::EMPTY, 0, 0);
    let mut displs = Vec::with_capacity(counts.len());
    let mut off = 0;
    for &k in counts {
        displs.push(off * w);
        off += k;
    }
    let send = res.as_ref().map(|v| Blocks {
        buf: RawBuf::from_slice(v),
        counts: counts.iter().map(|k| k * w).collect(),
        displs,
    });
    err.note(scatter(c, send.as_ref().unwrap_or(&blocks), Some(out), 0));
    err.result()
}

/// MPI_Scan / MPI_Exscan: a chain, rank r receiving the prefix of ranks
/// 0..r from rank r-1 (the left fold of the module doc).
fn scan(
    c: &impl Transport,
    data: &[u8],
    out: &mut [u8],
    count: usize,
    dtype: &Datatype,
    op: &Op,
    exclusive: bool,
) -> Result<()> {
    let (r, n) = (c.rank(), c.size());
    let mut err = FirstError::default();
    let mut acc = data.to_vec();
    if r > 0 {
        let mut prefix = vec![0u8; data.len()];
        err.note(recv(c, &mut prefix, r - 1, TAG_SCAN));
        if exclusive {
            out.copy_from_slice(&prefix);
        }
        // acc = prefix op data
        err.note(op.apply(&prefix, &mut acc, count, dtype));
    }
    if !exclusive {
        out.copy_from_slice(&acc);
    }
    if r + 1 < n {
        send(c, &acc, r + 1, TAG_SCAN)?;
    }
    err.result()
}

// ------------------------------------------------- the canonical tree

/// Combines `inputs` (one per rank, `count` elements each) in the canonical
/// tree order (module doc) into `out`.
pub(crate) fn tree_reduce(
    inputs: &[&[u8]],
    out: &mut [u8],
    count: usize,
    dtype: &Datatype,
    op: &Op,
) -> Result<()> {
    let n = inputs.len();
    let mut err = FirstError::default();
    // acc[r]: rank r's subtree so far (None: still just its input).
    let mut acc: Vec<Option<Vec<u8>>> = vec![None; n];
    let mut mask = 1;
    while mask < n {
        let mut r = 0;
        while r + mask < n {
            let s = r + mask;
            let mut right = acc[s].take().unwrap_or_else(|| inputs[s].to_vec());
            let left: &[u8] = acc[r].as_deref().unwrap_or(inputs[r]);
            err.note(op.apply(left, &mut right, count, dtype));
            acc[r] = Some(right);
            r += 2 * mask;
        }
        mask <<= 1;
    }
    out.copy_from_slice(acc[0].as_deref().unwrap_or(inputs[0]));
    err.result()
}

/// Combines `inputs` by the left fold `(((x0 op x1) op x2) ...)` into
/// `out` (scans).
pub(crate) fn fold_reduce(
    inputs: &[&[u8]],
    out: &mut [u8],
    count: usize,
    dtype: &Datatype,
    op: &Op,
) -> Result<()> {
    let mut err = FirstError::default();
    let mut acc = inputs[0].to_vec();
    for x in &inputs[1..] {
        let mut next = x.to_vec();
        err.note(op.apply(&acc, &mut next, count, dtype));
        acc = next;
    }
    out.copy_from_slice(&acc);
    err.result()
}

// ------------------------------------------------- blobs (pickled objects)

/// Broadcast of a blob whose length only the root knows: on the channel,
/// one round (receivers learn the length with the first posting); else
/// the length, then the blob.
pub(crate) fn bcast_bytes(c: &impl Comm, data: Option<Vec<u8>>, root: i32) -> Result<Vec<u8>> {
    let is_root = c.rank() == root;
    let mut v = match data {
        Some(v) if is_root => v,
        _ => Vec::new(),
    };
    if let Some(node) = if c.size() > 1 { c.node() } else { None } {
        let handoff = c.single_copy().then_some(BCAST_SINGLE_COPY_MIN);
        if let shm::Bcast::PointToPoint = node.bcast_vec(&mut v, root as usize, handoff)? {
            bcast(c, &mut v, root)?;
        }
        return Ok(v);
    }
    let mut len = (v.len() as u64).to_ne_bytes();
    bcast(c, &mut len, root)?;
    if !is_root {
        v = vec![0u8; u64::from_ne_bytes(len) as usize];
    }
    bcast(c, &mut v, root)?;
    Ok(v)
}

/// Gathers blobs of any length to `root`, in rank order.
pub(crate) fn gather_bytes(
    c: &impl Transport,
    data: &[u8],
    root: i32,
) -> Result<Option<Vec<Vec<u8>>>> {
    let (r, n) = (c.rank(), c.size());
    if r != root {
        send(c, data, root, TAG_GATHER)?;
        return Ok(None);
    }
    let mut out = Vec::with_capacity(n as usize);
    for src in 0..n {
        out.push(if src == root {
            data.to_vec()
        } else {
            c.recv_vec(src, TAG_GATHER)?
        });
    }
    Ok(Some(out))
}

/// Every rank gets every rank's blob: on the channel, the lengths then the
/// blobs (two rounds); else gathered to rank 0 and broadcast.
pub(crate) fn allgather_bytes(c: &impl Comm, data: &[u8]) -> Result<Vec<Vec<u8>>> {
    let n = c.size() as usize;
    if let Some(node) = if n > 1 { c.node() } else { None } {
        let mut lens = vec![0u8; 8 * n];
        let blocks = Blocks::contiguous(RawBuf::from_mut(&mut lens), n, 8);
        // SAFETY: blocks of our own vector, distinct from the send bytes.
        unsafe { node.allgather(Some(&(data.len() as u64).to_ne_bytes()), &blocks)? };
        let lens: Vec<usize> = lens
            .chunks_exact(8)
            .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")) as usize)
            .collect();
        let displs: Vec<usize> = lens
            .iter()
            .scan(0, |acc, &l| {
                let d = *acc;
                *acc += l;
                Some(d)
            })
            .collect();
        let mut all = vec![0u8; lens.iter().sum()];
        let blocks = Blocks {
            buf: RawBuf::from_mut(&mut all),
            counts: lens.clone(),
            displs: displs.clone(),
        };
        // SAFETY: as above.
        unsafe { node.allgather(Some(data), &blocks)? };
        return Ok(displs
            .iter()
            .zip(&lens)
            .map(|(&d, &l)| all[d..d + l].to_vec())
            .collect());
    }
    let gathered = gather_bytes(c, data, 0)?;
    let packed = gathered.map(|parts| encode_blobs(&parts));
    let packed = bcast_bytes(c, packed, 0)?;
    decode_blobs(&packed, c.size() as usize)
}

/// Root sends blob i to rank i.
pub(crate) fn scatter_bytes(
    c: &impl Transport,
    data: Option<Vec<Vec<u8>>>,
    root: i32,
) -> Result<Vec<u8>> {
    let (r, n) = (c.rank(), c.size());
    if r != root {
        return c.recv_vec(root, TAG_SCATTER);
    }
    let data =
        data.ok_or_else(|| Error::Arg("the root must provide the data to scatter".into()))?;
    if data.len() != n as usize {
        return Err(Error::Arg(format!(
            "scatter needs {n} items at the root, got {}",
            data.len()
        )));
    }
    let mut reqs = Vec::new();
    let mut err = FirstError::default();
    for (dst, blob) in data.iter().enumerate() {
        if dst as i32 != root {
            // SAFETY: `data` outlives `finish` below.
            match unsafe { c.start_send(RawBuf::from_slice(blob), dst as i32, TAG_SCATTER) } {
                Ok(q) => reqs.push(q),
                Err(e) => err.note(Err(e)),
            }
        }
    }
    err.note(c.finish(reqs));
    err.result()?;
    Ok(data.into_iter().nth(root as usize).expect("root < n"))
}

/// Pairwise exchange: in step k, send to r+k and receive from r-k.
pub(crate) fn alltoall_bytes(c: &impl Transport, mut data: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
    let (r, n) = (c.rank(), c.size());
    if data.len() != n as usize {
        return Err(Error::Arg(format!(
            "alltoall needs {n} items, got {}",
            data.len()
        )));
    }
    let mut out = vec![Vec::new(); n as usize];
    out[r as usize] = std::mem::take(&mut data[r as usize]);
    for k in 1..n {
        let dst = (r + k) % n;
        let src = (r - k + n) % n;
        // SAFETY: `data` outlives `finish` below.
        let s =
            unsafe { c.start_send(RawBuf::from_slice(&data[dst as usize]), dst, TAG_ALLTOALL)? };
        let got = c.recv_vec(src, TAG_ALLTOALL);
        // The send's buffer must not go away while a peer may read it,
        // whatever the receive did.
        c.finish(vec![s])?;
        out[src as usize] = got?;
    }
    Ok(out)
}

/// Reduction of blobs with a caller-supplied combiner along the canonical
/// tree; the result lands on `root`, or everywhere for None.
pub(crate) fn reduce_bytes(
    c: &impl Comm,
    data: Vec<u8>,
    root: Option<i32>,
    combine: &mut Combine<'_>,
) -> Result<Option<Vec<u8>>> {
    let (r, n) = (c.rank(), c.size());
    let mut acc = data;
    let mut mask = 1;
    let mut holder = true;
    let mut err = FirstError::default();
    while mask < n {
        if r & mask == 0 {
            let src = r | mask;
            if src < n {
                let right = c.recv_vec(src, TAG_REDUCE)?;
                match combine(&acc, &right) {
                    Ok(v) => acc = v,
                    Err(e) => err.note(Err(e)),
                }
            }
        } else {
            send(c, &acc, r & !mask, TAG_REDUCE)?;
            holder = false;
            break;
        }
        mask <<= 1;
    }
    let res = match root {
        None => Some(bcast_bytes(c, holder.then_some(acc), 0)?),
        Some(0) => holder.then_some(acc),
        Some(root) => {
            if r == 0 {
                send(c, &acc, root, TAG_TO_ROOT)?;
            }
            if r == root {
                Some(c.recv_vec(0, TAG_TO_ROOT)?)
            } else {
                None
            }
        }
    };
    err.result()?;
    Ok(res)
}

/// Prefix reduction of blobs along the chain (the left fold); None on rank
/// 0 of an exclusive scan.
pub(crate) fn scan_bytes(
    c: &impl Transport,
    data: Vec<u8>,
    exclusive: bool,
    combine: &mut Combine<'_>,
) -> Result<Option<Vec<u8>>> {
    let (r, n) = (c.rank(), c.size());
    let mut err = FirstError::default();
    let (prefix, acc) = if r > 0 {
        let prefix = c.recv_vec(r - 1, TAG_SCAN)?;
        let acc = match combine(&prefix, &data) {
            Ok(v) => v,
            Err(e) => {
                err.note(Err(e));
                data
            }
        };
        (Some(prefix), acc)
    } else {
        (None, data)
    };
    if r + 1 < n {
        send(c, &acc, r + 1, TAG_SCAN)?;
    }
    err.result()?;
    Ok(if exclusive { prefix } else { Some(acc) })
}

/// Length-prefixed concatenation of blobs.
pub(crate) fn encode_blobs(parts: &[Vec<u8>]) -> Vec<u8> {
    let total: usize = parts.iter().map(|p| p.len() + 8).sum();
    let mut v = Vec::with_capacity(total);
    for p in parts {
        v.extend_from_slice(&(p.len() as u64).to_ne_bytes());
        v.extend_from_slice(p);
    }
    v
}

pub(crate) fn decode_blobs(mut b: &[u8], n: usize) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if b.len() < 8 {
            return Err(Error::Intern("short blob list".into()));
        }
        let len = u64::from_ne_bytes(b[..8].try_into().expect("8 bytes")) as usize;
        let body = b
            .get(8..8 + len)
            .ok_or_else(|| Error::Intern("short blob".into()))?;
        out.push(body.to_vec());
        b = &b[8 + len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datatype::Basic;
    use crate::op::Predefined;

    #[test]
    fn tree_order_matches_the_binomial_reduction() {
        // Non-commutative "op": concatenation of digit strings, as
        // u64 = 10*a + b with a shift large enough to keep every digit.
        // Expressed as a user op on u64: in op inout = in * 10^len(inout)
        // + inout. With single digits 0..n-1 the canonical order yields the
        // digits in rank order for any n.
        let op = Op::User {
            f: std::sync::Arc::new(|a: &[u8], b: &mut [u8], _n: usize, _d: &Datatype| {
                let x = u64::from_ne_bytes(a.try_into().unwrap());
                let y = u64::from_ne_bytes((&*b).try_into().unwrap());
                let digits = if y == 0 { 1 } else { y.ilog10() + 1 };
                b.copy_from_slice(&(x * 10u64.pow(digits) + y).to_ne_bytes());
                Ok(())
            }),
            commute: false,
        };
        let dt = Datatype::new(Basic::U64);
        for n in 1..=9u64 {
            let vals: Vec<[u8; 8]> = (1..=n).map(|i| i.to_ne_bytes()).collect();
            let inputs: Vec<&[u8]> = vals.iter().map(|v| &v[..]).collect();
            let mut out = [0u8; 8];
            tree_reduce(&inputs, &mut out, 1, &dt, &op).unwrap();
            let want: u64 = (1..=n).fold(0, |acc, d| acc * 10 + d);
            assert_eq!(u64::from_ne_bytes(out), want, "n = {n}");
            fold_reduce(&inputs, &mut out, 1, &dt, &op).unwrap();
            assert_eq!(u64::from_ne_bytes(out), want, "n = {n}");
        }
        let sum = Op::Predefined(Predefined::Sum);
        let vals: Vec<[u8; 8]> = [0.1f64, 0.2, 0.3].iter().map(|v| v.to_ne_bytes()).collect();
        let inputs: Vec<&[u8]> = vals.iter().map(|v| &v[..]).collect();
        let mut out = [0u8; 8];
        tree_reduce(&inputs, &mut out, 1, &Datatype::new(Basic::F64), &sum).unwrap();
        assert_eq!(f64::from_ne_bytes(out), (0.1 + 0.2) + 0.3);
    }
}
