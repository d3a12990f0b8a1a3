//! Shared-memory collectives within a node: flags and buffers in the job's
//! segment instead of messages.
//!
//! A communicator that holds a collective channel (see `crate::shm`, whose
//! module doc states the posting protocol these algorithms follow) runs
//! barrier, broadcast, reductions and scans here. Every rank owns one slot
//! of the channel with two halves of `COLL_HALF` bytes; its members advance
//! a common step counter, one step per posting round, so that each round
//! names its postings with the same token on every rank and alternates
//! between the halves: a rank fills one half while its peers still read
//! the other, which pipelines messages larger than a half.
//!
//! * Barrier: every rank posts an empty message and waits for all others'.
//! * Allgather: every rank posts its block and copies the others' out.
//! * Broadcast: the root posts the message half by half; the others copy
//!   each half out and release it.
//! * Reductions post every rank's input. Small ones (at most
//!   [`REPLICATE_MAX`] bytes) are then combined by whoever needs the result
//!   (every rank for allreduce, the root for reduce: non-roots post and
//!   go). Large ones are partitioned: each rank combines its share of the
//!   elements of a chunk, writes the result over its own share of its own
//!   half (no one else reads that range), publishes it, and those that need
//!   the result copy the shares out. Reduce-scatter combines each rank's
//!   own block straight into its receive buffer.
//! * Scans post every input; rank r folds the inputs of ranks 0..=r.
//!
//! All combining goes through `tree_reduce` / `fold_reduce`, so results are
//! the bits the point-to-point algorithms give (see `coll`).
//!
//! Waiting never spins beyond the runtime's short spin: it goes through the
//! engine's `wait_until`, which sleeps on the rank's doorbell; whoever
//! publishes something rings the doorbells of the peers that may wait for
//! it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{fold_reduce, tree_reduce, FirstError};
use crate::backend::Blocks;
use crate::datatype::Datatype;
use crate::error::{Error, Result};
use crate::op::Op;
use crate::shm::{CollToken, Segment, COLL_HALF};

/// Reductions of at most this many bytes are combined by every rank that
/// needs the result (one round of synchronisation, n-fold arithmetic);
/// larger ones are partitioned (two rounds per chunk, arithmetic shared).
pub(crate) const REPLICATE_MAX: usize = 64 * 1024;

/// Flag in a broadcast's length word: the message follows point-to-point.
const HANDOFF: u64 = 1 << 63;

/// Where a broadcast's receiver puts the message.
enum Sink<'a> {
    /// The caller's buffer: a longer message is truncated.
    Fixed(&'a mut [u8]),
    /// Resized to the message.
    Grow(&'a mut Vec<u8>),
}

/// How a broadcast on the channel ended.
pub(crate) enum Bcast {
    Done,
    /// The root handed the message over to the point-to-point algorithm;
    /// every member runs it next.
    PointToPoint,
}

/// How a rank blocks until a condition holds: the engine's `wait_until`,
/// which drives progress and sleeps on the rank's doorbell.
pub(crate) trait Waiter {
    fn wait(&self, cond: &mut dyn FnMut() -> bool) -> Result<()>;
}

/// A communicator's view of its collective channel.
pub(crate) struct Node<'a> {
    pub(crate) seg: &'a Segment,
    pub(crate) chan: usize,
    /// The generation of the communicator's claim on the channel (see
    /// `crate::shm::CollToken`).
    pub(crate) generation: u64,
    /// Job rank of each member.
    pub(crate) members: &'a [i32],
    pub(crate) rank: usize,
    /// The next step of this communicator's posting rounds; the same on
    /// every member between collectives.
    pub(crate) step: &'a AtomicU64,
    pub(crate) waiter: &'a dyn Waiter,
}

impl Node<'_> {
    fn n(&self) -> usize {
        self.members.len()
    }

    fn world(&self, r: usize) -> usize {
        self.members[r] as usize
    }

    fn others(&self) -> impl Iterator<Item = usize> + Clone + '_ {
        (0..self.n()).filter(move |&r| r != self.rank)
    }

    /// The token and half of the next posting round.
    fn next_round(&self) -> (CollToken, usize) {
        // Relaxed: a communicator's collectives run one at a time, and the
        // runtime orders them (see `native::coll`).
        let s = self.step.fetch_add(1, Ordering::Relaxed);
        (CollToken::new(self.generation, s), (s & 1) as usize)
    }

    fn wait_for(&self, mut cond: impl FnMut() -> bool) -> Result<()> {
        if cond() {
            return Ok(());
        }
        self.waiter.wait(&mut cond)
    }

    /// Posts this rank's data for round `t` in half `h`, for `readers`
    /// peers: waits until the half is free, lets `fill` write it, publishes
    /// it and wakes the peers.
    fn post(
        &self,
        h: usize,
        t: CollToken,
        readers: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        self.post_meta(h, t, readers, 0, fill)
    }

    /// `post`, publishing `meta` with the data.
    fn post_meta(
        &self,
        h: usize,
        t: CollToken,
        readers: usize,
        meta: u64,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        let me = self.world(self.rank);
        self.wait_for(|| self.seg.coll_free(self.chan, me, h))?;
        // SAFETY: the half is free (every reader of its previous posting
        // has released it) and only its owner writes a free half, so this
        // is the only access to these bytes until the post below.
        let data = unsafe {
            std::slice::from_raw_parts_mut(self.seg.coll_data(self.chan, me, h), COLL_HALF)
        };
        fill(data);
        self.seg
            .coll_post(self.chan, me, h, t, readers as u32, meta);
        self.notify_others();
        Ok(())
    }

    fn notify_others(&self) {
        for r in self.others() {
            self.seg.notify(self.world(r));
        }
    }

    fn posted(&self, r: usize, h: usize, t: CollToken) -> bool {
        self.seg.coll_posted(self.chan, self.world(r), h, t)
    }

    /// Waits until every rank in `ranks` has posted round `t`.
    fn wait_posted(
        &self,
        ranks: impl Iterator<Item = usize> + Clone,
        h: usize,
        t: CollToken,
    ) -> Result<()> {
        self.wait_for(|| ranks.clone().all(|r| self.posted(r, h, t)))
    }

    /// Bytes `[off, off + len)` of rank `r`'s half `h`.
    ///
    /// # Safety
    /// The caller has seen `r`'s posting (or, in the result area, its
    /// result) of the current round and has not released the half yet, so
    /// its owner does not write these bytes while the slice lives.
    unsafe fn peer(&self, r: usize, h: usize, off: usize, len: usize) -> &[u8] {
        assert!(off + len <= COLL_HALF);
        // SAFETY: inside the half (checked above); by the caller's
        // contract nobody writes it meanwhile.
        unsafe {
            std::slice::from_raw_parts(
                self.seg.coll_data(self.chan, self.world(r), h).add(off),
                len,
            )
        }
    }

    /// Writes `data` at `off` in this rank's half `h`: its share of a
    /// partitioned reduction's result.
    ///
    /// # Safety
    /// This rank has posted the current round in `h`, and `[off, off +
    /// data.len())` is its own share, which only this rank reads (and has
    /// finished reading) until it publishes the result.
    unsafe fn write_own_share(&self, h: usize, off: usize, data: &[u8]) {
        assert!(off + data.len() <= COLL_HALF);
        let me = self.world(self.rank);
        // SAFETY: inside the half (checked above); nobody else accesses
        // these bytes now, by the caller's contract.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.seg.coll_data(self.chan, me, h).add(off),
                data.len(),
            )
        };
    }

    /// This rank has finished with rank `r`'s posting in half `h`.
    fn release(&self, r: usize, h: usize) {
        let owner = self.world(r);
        if self.seg.coll_release(self.chan, owner, h) {
            self.seg.notify(owner);
        }
    }

    fn release_all(&self, ranks: impl Iterator<Item = usize>, h: usize) {
        for r in ranks {
            if r != self.rank {
                self.release(r, h);
            }
        }
    }

    // ------------------------------------------------------------ algorithms

    pub(crate) fn barrier(&self) -> Result<()> {
        let (t, h) = self.next_round();
        self.post(h, t, self.n() - 1, |_| {})?;
        self.wait_posted(self.others(), h, t)?;
        self.release_all(0..self.n(), h);
        Ok(())
    }

    /// The root posts the message half by half, with its total length, in
    /// at least one round; receivers follow the root's length, so a receive
    /// buffer of another size neither hangs nor overruns: a shorter one is
    /// a truncation error (as for point-to-point), a longer one keeps its
    /// tail.
    ///
    /// With `handoff_from`, a root whose message is at least that long only
    /// announces (in one round) that the broadcast goes point-to-point;
    /// every receiver learns it from the root, so all agree even when their
    /// buffers' lengths differ from the root's.
    pub(crate) fn bcast(
        &self,
        buf: &mut [u8],
        root: usize,
        handoff_from: Option<usize>,
    ) -> Result<Bcast> {
        if self.rank == root {
            self.bcast_send(buf, handoff_from)
        } else {
            self.bcast_recv(Sink::Fixed(buf), root)
        }
    }

    /// A broadcast of a message whose length only the root knows (pickled
    /// objects): receivers size `buf` from the root's first posting, so it
    /// takes one round. After `Bcast::PointToPoint`, `buf` has the
    /// message's length.
    pub(crate) fn bcast_vec(
        &self,
        buf: &mut Vec<u8>,
        root: usize,
        handoff_from: Option<usize>,
    ) -> Result<Bcast> {
        if self.rank == root {
            self.bcast_send(buf, handoff_from)
        } else {
            self.bcast_recv(Sink::Grow(buf), root)
        }
    }

    fn bcast_send(&self, buf: &[u8], handoff_from: Option<usize>) -> Result<Bcast> {
        let n = self.n();
        if handoff_from.is_some_and(|min| buf.len() >= min) {
            let (t, h) = self.next_round();
            self.post_meta(h, t, n - 1, HANDOFF | buf.len() as u64, |_| {})?;
            return Ok(Bcast::PointToPoint);
        }
        let mut off = 0;
        loop {
            let len = (buf.len() - off).min(COLL_HALF);
            let (t, h) = self.next_round();
            let part = &buf[off..off + len];
            self.post_meta(h, t, n - 1, buf.len() as u64, |d| {
                d[..len].copy_from_slice(part)
            })?;
            off += len;
            if off >= buf.len() {
                return Ok(Bcast::Done);
            }
        }
    }

    fn bcast_recv(&self, mut sink: Sink<'_>, root: usize) -> Result<Bcast> {
        let owner = self.world(root);
        let mut total = None;
        let mut off = 0;
        loop {
            let (t, h) = self.next_round();
            self.wait_for(|| self.posted(root, h, t))?;
            let total = match total {
                Some(total) => total,
                None => {
                    let meta = self.seg.coll_meta(self.chan, owner, h);
                    let len = (meta & !HANDOFF) as usize;
                    if let Sink::Grow(v) = &mut sink {
                        v.resize(len, 0);
                    }
                    if meta & HANDOFF != 0 {
                        self.release(root, h);
                        return Ok(Bcast::PointToPoint);
                    }
                    *total.insert(len)
                }
            };
            let buf: &mut [u8] = match &mut sink {
                Sink::Fixed(b) => b,
                Sink::Grow(v) => v,
            };
            let len = (total - off).min(COLL_HALF);
            let fit = len.min(buf.len().saturating_sub(off));
            // SAFETY: the root's posting of this round, not released.
            buf[off..off + fit].copy_from_slice(unsafe { self.peer(root, h, 0, fit) });
            self.release(root, h);
            off += len;
            if off >= total {
                break;
            }
        }
        let capacity = match &sink {
            Sink::Fixed(b) => b.len(),
            Sink::Grow(v) => v.len(),
        };
        if off > capacity {
            return Err(Error::Truncate {
                received: off,
                capacity,
            });
        }
        Ok(Bcast::Done)
    }

    /// MPI_Allgather(v): every rank posts (the next half of) its block,
    /// every rank copies every other's out, for as many rounds as the
    /// largest block needs (every member knows every count, so all agree).
    /// `send` None: this rank's block of `recv` already holds its data.
    ///
    /// # Safety
    /// `recv`'s blocks are valid, and do not overlap, for the call; `send`
    /// does not overlap them.
    pub(crate) unsafe fn allgather(&self, send: Option<&[u8]>, recv: &Blocks) -> Result<()> {
        let (n, me) = (self.n(), self.rank);
        if let Some(s) = send {
            // SAFETY: our block of the receive buffer (caller's contract).
            let dst = unsafe { recv.block(me).as_mut_slice() };
            let k = s.len().min(dst.len());
            dst[..k].copy_from_slice(&s[..k]);
        }
        // SAFETY: as above; only read from now on.
        let own = unsafe { recv.block(me).as_slice() };
        let rounds = recv
            .counts
            .iter()
            .map(|c| c.div_ceil(COLL_HALF))
            .max()
            .unwrap_or(0)
            .max(1);
        for k in 0..rounds {
            let lo = k * COLL_HALF;
            let piece = |len: usize| lo.min(len)..(lo + COLL_HALF).min(len);
            let (t, h) = self.next_round();
            let mine = &own[piece(own.len())];
            self.post(h, t, n - 1, |d| d[..mine.len()].copy_from_slice(mine))?;
            self.wait_posted(self.others(), h, t)?;
            for r in self.others() {
                let range = piece(recv.counts[r]);
                // SAFETY: rank r's posting of this round, not released; its
                // block of the receive buffer, distinct from the others.
                unsafe {
                    let src = self.peer(r, h, 0, range.len());
                    recv.block(r).as_mut_slice()[range].copy_from_slice(src);
                }
            }
            self.release_all(0..n, h);
        }
        Ok(())
    }

    /// MPI_Allreduce: `out` may not alias `input`.
    pub(crate) fn allreduce(
        &self,
        input: &[u8],
        out: &mut [u8],
        count: usize,
        dtype: &Datatype,
        op: &Op,
    ) -> Result<()> {
        if input.len() <= REPLICATE_MAX {
            self.reduce_small(input, Some(out), count, dtype, op, None)
        } else {
            self.reduce_partitioned(input, Some(out), count, dtype, op, None)
        }
    }

    /// MPI_Reduce to `root` (`out` given there only), or to everyone for
    /// None.
    pub(crate) fn reduce(
        &self,
        input: &[u8],
        out: Option<&mut [u8]>,
        count: usize,
        dtype: &Datatype,
        op: &Op,
        root: Option<usize>,
    ) -> Result<()> {
        if input.len() <= REPLICATE_MAX {
            self.reduce_small(input, out, count, dtype, op, root)
        } else {
            self.reduce_partitioned(input, out, count, dtype, op, root)
        }
    }

    /// One round: everyone posts (non-roots only, for a rooted reduce);
    /// those that need the result combine all inputs.
    fn reduce_small(
        &self,
        input: &[u8],
        out: Option<&mut [u8]>,
        count: usize,
        dtype: &Datatype,
        op: &Op,
        root: Option<usize>,
    ) -> Result<()> {
        let n = self.n();
        let len = input.len();
        let (t, h) = self.next_round();
        match root {
            Some(root) if root != self.rank => {
                return self.post(h, t, 1, |d| d[..len].copy_from_slice(input));
            }
            Some(_) => {}
            None => self.post(h, t, n - 1, |d| d[..len].copy_from_slice(input))?,
        }
        self.wait_posted(self.others(), h, t)?;
        let res = {
            // Ours is either posted (read back from the channel, so `out`
            // may alias the caller's input) or `input` itself.
            let inputs: Vec<&[u8]> = (0..n)
                .map(|r| {
                    if r == self.rank && root.is_some() {
                        input
                    } else {
                        // SAFETY: rank r's posting of this round, not
                        // released.
                        unsafe { self.peer(r, h, 0, len) }
                    }
                })
                .collect();
            let mut tmp;
            let out: &mut [u8] = match out {
                Some(o) => o,
                None => {
                    tmp = vec![0u8; len];
                    &mut tmp
                }
            };
            tree_reduce(&inputs, out, count, dtype, op)
        };
        self.release_all(0..n, h);
        res
    }

    /// Chunk by chunk: everyone posts its input, combines its share of the
    /// elements and writes it over its own share of its half, and those
    /// that need the result (all, or the root) copy every share out.
    fn reduce_partitioned(
        &self,
        input: &[u8],
        mut out: Option<&mut [u8]>,
        count: usize,
        dtype: &Datatype,
        op: &Op,
        root: Option<usize>,
    ) -> Result<()> {
        let (n, w) = (self.n(), dtype.size());
        let consumer = root.is_none_or(|r| r == self.rank);
        let per_chunk = (COLL_HALF / w).max(1);
        let mut err = FirstError::default();
        let mut share_buf = Vec::new();
        let mut e0 = 0;
        while e0 < count {
            let e1 = (e0 + per_chunk).min(count);
            let chunk = &input[e0 * w..e1 * w];
            let (t, h) = self.next_round();
            self.post(h, t, n - 1, |d| d[..chunk.len()].copy_from_slice(chunk))?;
            self.wait_posted(self.others(), h, t)?;
            let (p0, p1) = share(e1 - e0, n, self.rank);
            let (off, len) = (p0 * w, (p1 - p0) * w);
            if len > 0 {
                share_buf.resize(len, 0);
                {
                    // SAFETY: every rank's posting of this round (ours
                    // included), not released; our share of each half is
                    // read by us alone.
                    let inputs: Vec<&[u8]> = (0..n)
                        .map(|r| unsafe { self.peer(r, h, off, len) })
                        .collect();
                    err.note(tree_reduce(&inputs, &mut share_buf, p1 - p0, dtype, op));
                }
                // SAFETY: our own share of our posted half; the slices
                // above are gone.
                unsafe { self.write_own_share(h, off, &share_buf) };
            }
            let me = self.world(self.rank);
            self.seg.coll_post_result(self.chan, me, h, t);
            self.notify_others();
            if consumer {
                let out = out.as_deref_mut().expect("a consumer has a receive buffer");
                self.wait_for(|| {
                    self.others()
                        .all(|r| self.seg.coll_result(self.chan, self.world(r), h, t))
                })?;
                for r in 0..n {
                    let (q0, q1) = share(e1 - e0, n, r);
                    // SAFETY: rank r's result of this round is published
                    // and its half not released by us.
                    let part = unsafe { self.peer(r, h, q0 * w, (q1 - q0) * w) };
                    out[(e0 + q0) * w..(e0 + q1) * w].copy_from_slice(part);
                }
            }
            self.release_all(0..n, h);
            e0 = e1;
        }
        err.result()
    }

    /// MPI_Reduce_scatter: `input` holds `sum(counts)` elements; this
    /// rank's block goes to `out`.
    pub(crate) fn reduce_scatter(
        &self,
        input: &[u8],
        out: &mut [u8],
        counts: &[usize],
        dtype: &Datatype,
        op: &Op,
    ) -> Result<()> {
        let (n, w) = (self.n(), dtype.size());
        let total: usize = counts.iter().sum();
        let b0: usize = counts[..self.rank].iter().sum();
        let b1 = b0 + counts[self.rank];
        let per_chunk = (COLL_HALF / w).max(1);
        let mut err = FirstError::default();
        let mut e0 = 0;
        while e0 < total {
            let e1 = (e0 + per_chunk).min(total);
            let chunk = &input[e0 * w..e1 * w];
            let (t, h) = self.next_round();
            self.post(h, t, n - 1, |d| d[..chunk.len()].copy_from_slice(chunk))?;
            // Even a rank whose block misses this chunk waits for every
            // posting: a release counts against the posting in the half,
            // which must be this round's.
            self.wait_posted(self.others(), h, t)?;
            let (m0, m1) = (b0.max(e0), b1.min(e1));
            if m1 > m0 {
                // SAFETY: every rank's posting of this round, not released.
                let inputs: Vec<&[u8]> = (0..n)
                    .map(|r| unsafe { self.peer(r, h, (m0 - e0) * w, (m1 - m0) * w) })
                    .collect();
                let dst = &mut out[(m0 - b0) * w..(m1 - b0) * w];
                err.note(tree_reduce(&inputs, dst, m1 - m0, dtype, op));
            }
            self.release_all(0..n, h);
            e0 = e1;
        }
        err.result()
    }

    /// MPI_Scan (or MPI_Exscan): rank r folds the inputs of ranks 0..=r
    /// (0..r); rank 0 of an exclusive scan leaves `out` alone.
    pub(crate) fn scan(
        &self,
        input: &[u8],
        out: &mut [u8],
        count: usize,
        dtype: &Datatype,
        op: &Op,
        exclusive: bool,
    ) -> Result<()> {
        let (n, w) = (self.n(), dtype.size());
        let per_chunk = (COLL_HALF / w).max(1);
        let last = if exclusive {
            self.rank.checked_sub(1)
        } else {
            Some(self.rank)
        };
        let mut err = FirstError::default();
        let mut e0 = 0;
        while e0 < count {
            let e1 = (e0 + per_chunk).min(count);
            let chunk = &input[e0 * w..e1 * w];
            let (t, h) = self.next_round();
            // Read by the higher ranks only.
            self.post(h, t, n - 1 - self.rank, |d| {
                d[..chunk.len()].copy_from_slice(chunk)
            })?;
            if let Some(last) = last {
                self.wait_posted(0..last + 1, h, t)?;
                // SAFETY: the postings of ranks 0..=last of this round (ours
                // included), not released.
                let inputs: Vec<&[u8]> = (0..=last)
                    .map(|r| unsafe { self.peer(r, h, 0, chunk.len()) })
                    .collect();
                err.note(fold_reduce(
                    &inputs,
                    &mut out[e0 * w..e1 * w],
                    e1 - e0,
                    dtype,
                    op,
                ));
            }
            self.release_all(0..self.rank, h);
            e0 = e1;
        }
        err.result()
    }
}

/// The share of `len` elements that rank `r` of `n` combines: contiguous,
/// sizes differing by at most one.
fn share(len: usize, n: usize, r: usize) -> (usize, usize) {
    let (q, rem) = (len / n, len % n);
    let start = r * q + r.min(rem);
    (start, start + q + usize::from(r < rem))
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_tile_the_range() {
        for len in 0..40 {
            for n in 1..9 {
                let mut next = 0;
                for r in 0..n {
                    let (a, b) = share(len, n, r);
                    assert_eq!(a, next);
                    assert!(b - a <= len / n + 1);
                    next = b;
                }
                assert_eq!(next, len);
            }
        }
    }
}
