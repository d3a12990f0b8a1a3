//! How a native communicator runs its collectives (MPI-4.1 chapter 6).
//!
//! # Ordering, and nonblocking collectives (MPI-4.1 §6.12)
//!
//! Every collective call on a communicator, blocking or not, takes the next
//! number of the communicator's *sequence*; MPI has all members call a
//! communicator's collectives in the same order, so the same call gets the
//! same number on every rank. Point-to-point algorithms put that number in
//! their tags, so no message of one collective can match another's.
//!
//! The collectives of a communicator then *execute* one at a time, in
//! sequence order:
//!
//! * A nonblocking collective is a job queued to the communicator's worker
//!   thread (started on demand, ended after a while without work). The worker runs the ordinary blocking
//!   algorithm, completes the request and wakes the process's waiters. It
//!   waits like any other thread: it drives the progress engine and sleeps
//!   on the rank's doorbell, so the operation advances while the caller
//!   computes, polls with `Test`, or waits on unrelated requests, and it
//!   never needs the caller to enter MPI.
//! * A blocking collective first waits until the worker has drained the
//!   communicator's queue, then runs on the calling thread.
//!
//! Why this cannot deadlock: a collective's completion depends only on the
//! other members reaching the same collective. Members issue a
//! communicator's collectives in the same order and each executes them in
//! that order, on a thread that needs nothing from the application, so by
//! induction over the sequence every collective that all members issue
//! completes. In particular a rank may start an `Ibarrier` and then do
//! point-to-point work before waiting on it: the barrier proceeds on the
//! worker, and the point-to-point calls proceed on the caller's thread
//! (both drive the same progress engine). Communicators are independent of
//! each other: each has its own worker and its own shared-memory channel.
//!
//! Executing one collective at a time per communicator is also what lets a
//! communicator's shared-memory algorithms own its channel without locks.
//!
//! # Shared-memory channels
//!
//! The world holds channel 0. A new communicator gets a channel that is
//! free at every member ([`NativeComm::agree_on_channel`], called by the
//! communicator constructors); when none is, it runs the point-to-point
//! algorithms, which give the same results.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use crate::backend::{Blocks, Collective, RawBuf, Request, RequestRef, SendMode, Status};
use crate::coll::{self, shm::Node, shm::Waiter, Transport};

use super::Watch;
use crate::error::{Error, Result};
use crate::shm::CollToken;

use super::comm::NativeComm;
use super::request::ReqState;
use super::{Core, Target};

// ------------------------------------------------------------ channels

/// The collective channels of the segment this process uses.
pub(crate) struct ChannelPool {
    /// Bit c: channel c is held by one of our communicators, or reserved
    /// by a communicator creation in progress.
    taken: AtomicU64,
    /// Per channel, the highest claim generation this process has used
    /// (see `shm::CollToken`).
    generations: [AtomicU64; 64],
    /// Whether the job is configured for single-copy rendezvous
    /// (`OXMPI_CMA`, on by default). The configuration, not whether it
    /// worked so far: every rank must make the same algorithm choices.
    single_copy: bool,
}

impl ChannelPool {
    /// `OXMPI_COLL_SHM=0` keeps every channel taken, so all communicators
    /// run the point-to-point algorithms (same results; for testing and
    /// diagnosis). Every rank of a job sees the same environment.
    pub(crate) fn new() -> ChannelPool {
        let off = super::env_flag("OXMPI_COLL_SHM") == Some(false);
        ChannelPool {
            taken: AtomicU64::new(if off { u64::MAX } else { 0 }),
            generations: [const { AtomicU64::new(0) }; 64],
            single_copy: super::env_flag("OXMPI_CMA").unwrap_or(true),
        }
    }

    /// Starts every channel's generations at least at `floor` (a reused
    /// slot: above those its predecessor posted under).
    pub(crate) fn raise_generations(&self, floor: &[u64]) {
        for (g, &f) in self.generations.iter().zip(floor) {
            g.fetch_max(f, Ordering::Relaxed);
        }
    }

    /// Reserves every free channel for a creation in progress (concurrent
    /// creations thus never pick the same one); returns them.
    fn reserve_free(&self, nchans: usize) -> u64 {
        let all = if nchans >= 64 {
            u64::MAX
        } else {
            (1u64 << nchans) - 1
        };
        let before = self.taken.fetch_or(all, Ordering::AcqRel);
        all & !before
    }

    /// Gives back reserved channels.
    fn give_back(&self, mask: u64) {
        self.taken.fetch_and(!mask, Ordering::AcqRel);
    }
}

/// A channel held by a communicator; released when dropped.
pub(crate) struct ChannelClaim {
    core: Arc<Core>,
    chan: usize,
    /// Names this claim's postings (`shm::CollToken`).
    generation: u64,
}

impl ChannelClaim {
    /// Claims channel `chan` outright: the world's channel 0, at start,
    /// when every process claims it at generation 1.
    pub(crate) fn claim(core: &Arc<Core>, chan: usize) -> Option<ChannelClaim> {
        if chan >= core.seg.layout().coll_chans {
            return None;
        }
        let bit = 1u64 << chan;
        let pool = &core.coll_channels;
        let before = pool.taken.fetch_or(bit, Ordering::AcqRel);
        if before & bit != 0 {
            return None;
        }
        let generation = pool.generations[chan].fetch_add(1, Ordering::Relaxed) + 1;
        Some(ChannelClaim {
            core: core.clone(),
            chan,
            generation,
        })
    }
}

impl Drop for ChannelClaim {
    fn drop(&mut self) {
        // The channel's slots need no cleaning: the posting protocol makes
        // reuse by a later communicator safe (see `shm.rs`).
        self.core.coll_channels.give_back(1 << self.chan);
    }
}

impl NativeComm {
    /// A collective on `self`, the parent of a communicator being created:
    /// agrees on a shared-memory channel free at every member of `self`
    /// (bitwise AND of their free channels, lowest one). Members that
    /// `join` the new communicator claim it (drop the claim to give it
    /// back); the others just take part. None when no channel is free
    /// everywhere: the new communicator then runs the point-to-point
    /// algorithms.
    pub(crate) fn agree_on_channel(&self, join: bool) -> Result<Option<ChannelClaim>> {
        let core = &self.coll.ep.core;
        let pool = &core.coll_channels;
        let nchans = core.seg.layout().coll_chans;
        let reserved = pool.reserve_free(nchans);
        // Each member offers its free channels and, per channel, the last
        // generation it used there.
        let mut mine = Vec::with_capacity(8 * (1 + nchans));
        mine.extend_from_slice(&reserved.to_ne_bytes());
        for g in &pool.generations[..nchans] {
            mine.extend_from_slice(&g.load(Ordering::Relaxed).to_ne_bytes());
        }
        let n = self.coll.ep.members.len();
        let mut all = vec![0u8; mine.len() * n];
        let gather = Collective::Allgather {
            send: Some(RawBuf::from_slice(&mine)),
            recv: Blocks::contiguous(RawBuf::from_mut(&mut all), n, mine.len()),
        };
        if let Err(e) = self.run_collective(gather) {
            pool.give_back(reserved);
            return Err(e);
        }
        let word = |b: &[u8], i: usize| {
            u64::from_ne_bytes(b[8 * i..8 * i + 8].try_into().expect("8 bytes"))
        };
        let offers: Vec<&[u8]> = all.chunks_exact(mine.len()).collect();
        let common = offers.iter().fold(u64::MAX, |acc, o| acc & word(o, 0));
        // The lowest channel free everywhere, at a generation above any a
        // member used there; a channel whose generations ran out is not
        // used again (every member computes the same from the same data).
        let pick = (common != 0).then(|| common.trailing_zeros() as usize);
        let pick = pick
            .map(|c| {
                (
                    c,
                    offers.iter().map(|o| word(o, 1 + c)).max().unwrap_or(0) + 1,
                )
            })
            .filter(|&(_, g)| g < CollToken::GENERATIONS);
        let keep = pick.filter(|_| join);
        // Keep the agreed channel (in everyone's reserved set, so in ours),
        // give back the rest.
        pool.give_back(reserved & !keep.map_or(0, |(c, _)| 1u64 << c));
        Ok(keep.map(|(chan, generation)| {
            pool.generations[chan].fetch_max(generation, Ordering::Relaxed);
            ChannelClaim {
                core: core.clone(),
                chan,
                generation,
            }
        }))
    }
}

// ------------------------------------------------------------ endpoint

/// What the algorithms need of a communicator.
pub(crate) struct Endpoint {
    core: Arc<Core>,
    /// The communicator's collective context.
    ctx: u32,
    /// The communicator's id: unique for this process over the job, so it
    /// names the channel postings of its collectives (`shm::CollToken`).
    id: u32,
    rank: i32,
    members: Arc<[i32]>,
    channel: Option<ChannelClaim>,
    /// Posting rounds of the shared-memory algorithms (`coll::shm`).
    step: AtomicU64,
}

impl Endpoint {
    fn ctx(&self) -> u32 {
        self.ctx
    }

    /// A collective's waits depend on every member.
    fn watch(&self) -> Watch<'_> {
        Watch::AllOf {
            comm: self.id,
            members: &self.members,
            remote: &[],
        }
    }
}

impl Waiter for Endpoint {
    fn wait(&self, cond: &mut dyn FnMut() -> bool) -> Result<()> {
        self.core.wait_watching(cond, self.watch())
    }
}

/// The communicator during one collective call: point-to-point on the
/// collective context with tags scoped to the call.
pub(crate) struct Chan<'a> {
    ep: &'a Endpoint,
    tag_base: i32,
}

/// Tags of call `seq`: its low 24 bits above 6 bits of step tag, so all
/// below `coll::COLL_TAG_LIMIT`. Calls 2^24 apart could only be confused
/// if that many were in flight on one communicator at once.
fn tag_base(seq: u32) -> i32 {
    const _: () = assert!((0x00ff_ffff << 6) + 63 < coll::COLL_TAG_LIMIT);
    ((seq & 0x00ff_ffff) << 6) as i32
}

impl Transport for Chan<'_> {
    type Pending = Option<Arc<ReqState>>;

    fn rank(&self) -> i32 {
        self.ep.rank
    }

    fn size(&self) -> i32 {
        self.ep.members.len() as i32
    }

    unsafe fn start_send(&self, data: RawBuf, dest: i32, tag: i32) -> Result<Self::Pending> {
        let world = self.ep.members[dest as usize] as usize;
        self.ep.core.start_send(
            self.ep.ctx(),
            self.ep.rank,
            world,
            self.tag_base | tag,
            &[data],
            SendMode::Standard,
        )
    }

    unsafe fn start_recv(&self, buf: RawBuf, src: i32, tag: i32) -> Result<Self::Pending> {
        Ok(Some(self.ep.core.post_recv(
            self.ep.ctx(),
            src,
            self.ep.members[src as usize],
            self.tag_base | tag,
            Target::Buf(buf),
        )))
    }

    fn finish(&self, reqs: Vec<Self::Pending>) -> Result<()> {
        let reqs: Vec<Arc<ReqState>> = reqs.into_iter().flatten().collect();
        if reqs.is_empty() {
            return Ok(());
        }
        self.ep
            .core
            .wait_watching(|| reqs.iter().all(|r| r.is_done()), self.ep.watch())?;
        let mut first = Ok(());
        for r in &reqs {
            if let (Err(e), Ok(())) = (r.take(), &first) {
                first = Err(e);
            }
        }
        first.map(|_| ())
    }

    fn recv_vec(&self, src: i32, tag: i32) -> Result<Vec<u8>> {
        let (core, ctx, tag) = (&self.ep.core, self.ep.ctx(), self.tag_base | tag);
        let mut found = None;
        core.wait_watching(
            || {
                if found.is_none() {
                    found = core.take_matching(ctx, src, tag);
                }
                found.is_some()
            },
            self.ep.watch(),
        )?;
        let u = found.expect("wait_until returned with a message");
        let mut v = vec![0u8; u.payload.len()];
        let req = core.recv_taken(u, super::Target::Buf(RawBuf::from_mut(&mut v)));
        core.wait_until(|| req.is_done())?;
        req.take()?;
        Ok(v)
    }
}

impl coll::Comm for Chan<'_> {
    fn node(&self) -> Option<Node<'_>> {
        let claim = self.ep.channel.as_ref()?;
        Some(Node {
            seg: &self.ep.core.seg,
            chan: claim.chan,
            generation: claim.generation,
            members: &self.ep.members,
            rank: self.ep.rank as usize,
            step: &self.ep.step,
            waiter: self.ep,
        })
    }

    fn single_copy(&self) -> bool {
        self.ep.core.coll_channels.single_copy
    }
}

// ------------------------------------------------------------ engine

/// What a nonblocking collective does, given the communicator.
pub(crate) type Work = Box<dyn FnOnce(&Chan<'_>) -> Result<()> + Send>;

/// A nonblocking collective waiting for (or running on) the worker.
struct Job {
    seq: u32,
    work: Work,
    state: Arc<ReqState>,
}

/// A communicator's collective machinery (see the module doc).
pub(crate) struct CollEngine {
    pub(crate) ep: Arc<Endpoint>,
    next_seq: AtomicU32,
    /// Nonblocking collectives queued or running.
    inflight: Arc<AtomicUsize>,
    /// The queue to the worker; None while no worker runs. Shared with
    /// the worker, which empties it when it retires.
    worker: Arc<Mutex<Option<mpsc::Sender<Job>>>>,
}

impl CollEngine {
    pub(crate) fn new(
        core: Arc<Core>,
        ctx: u32,
        id: u32,
        rank: i32,
        members: Arc<[i32]>,
    ) -> CollEngine {
        CollEngine {
            ep: Arc::new(Endpoint {
                core,
                ctx,
                id,
                rank,
                members,
                channel: None,
                step: AtomicU64::new(0),
            }),
            next_seq: AtomicU32::new(0),
            inflight: Arc::new(AtomicUsize::new(0)),
            worker: Arc::new(Mutex::new(None)),
        }
    }

    /// Gives the (new, not yet used) communicator its channel.
    pub(crate) fn set_channel(&mut self, channel: Option<ChannelClaim>) {
        let ep = Arc::get_mut(&mut self.ep).expect("a new communicator's endpoint is unshared");
        ep.channel = channel;
    }

    /// Runs a blocking collective, after the communicator's nonblocking
    /// ones.
    pub(crate) fn run<T>(&self, f: impl FnOnce(&Chan<'_>) -> Result<T>) -> Result<T> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        // Acquire pairs with the worker's Release decrement: the worker's
        // effects (step counter, buffers) are visible to us.
        if self.inflight.load(Ordering::Acquire) > 0 {
            let inflight = &self.inflight;
            self.ep
                .core
                .wait_until(|| inflight.load(Ordering::Acquire) == 0)?;
        }
        f(&Chan {
            ep: &self.ep,
            tag_base: tag_base(seq),
        })
    }

    /// Queues a nonblocking collective.
    pub(crate) fn start(&self, work: Work) -> Result<RequestRef> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let state = ReqState::new();
        let mut worker = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        if worker.is_none() {
            *worker = Some(self.spawn_worker()?);
        }
        self.inflight.fetch_add(1, Ordering::AcqRel);
        let job = Job {
            seq,
            work,
            state: state.clone(),
        };
        if worker.as_ref().expect("started above").send(job).is_err() {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Intern("the collective worker has stopped".into()));
        }
        Ok(Arc::new(CollRequest {
            core: self.ep.core.clone(),
            state,
        }))
    }

    fn spawn_worker(&self) -> Result<mpsc::Sender<Job>> {
        let (tx, rx) = mpsc::channel::<Job>();
        let ep = self.ep.clone();
        let inflight = self.inflight.clone();
        let queue = Arc::downgrade(&self.worker);
        std::thread::Builder::new()
            .name(format!("oxmpi-coll-{}", ep.id))
            .spawn(move || loop {
                let job = match rx.recv_timeout(WORKER_IDLE) {
                    Ok(job) => job,
                    // The communicator is gone and the queue drained.
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        // Retire, unless a job came in meanwhile: `start`
                        // queues under this lock, so after we drop the
                        // sender nothing can be queued to us unseen.
                        let Some(queue) = queue.upgrade() else { return };
                        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                        match rx.try_recv() {
                            Ok(job) => job,
                            Err(_) => {
                                *q = None;
                                return;
                            }
                        }
                    }
                };
                run_job(&ep, &inflight, job);
            })
            .map_err(|e| Error::os("starting the collective worker thread", e))?;
        Ok(tx)
    }
}

/// How long a worker with nothing to do waits for work before its thread
/// ends (a program with many communicators keeps threads only for those
/// in use).
const WORKER_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a nonblocking collective on the worker and completes its request.
fn run_job(ep: &Endpoint, inflight: &AtomicUsize, job: Job) {
    let chan = Chan {
        ep,
        tag_base: tag_base(job.seq),
    };
    let work = job.work;
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&chan)))
        .unwrap_or_else(|_| Err(Error::Intern("a nonblocking collective panicked".into())));
    let status = Status {
        error: res.as_ref().err().map_or(0, Error::class),
        ..Status::default()
    };
    job.state.complete(status, res.err());
    // Release pairs with the Acquire loads in `run`.
    inflight.fetch_sub(1, Ordering::Release);
    // Wake whoever waits for this request or for the queue to drain.
    ep.core.seg.notify(ep.core.me);
}

/// The request of a nonblocking collective.
struct CollRequest {
    core: Arc<Core>,
    state: Arc<ReqState>,
}

impl Request for CollRequest {
    fn test(&self) -> Result<Option<Status>> {
        if !self.state.is_done() {
            self.core.progress();
            if !self.state.is_done() {
                return Ok(None);
            }
        }
        self.state.take().map(Some)
    }

    fn wait(&self) -> Result<Status> {
        let st = &self.state;
        self.core.wait_until(|| st.is_done())?;
        st.take()
    }

    fn is_complete(&self) -> bool {
        self.state.is_done()
    }

    fn get_status(&self) -> Option<Status> {
        if !self.state.is_done() {
            self.core.progress();
        }
        self.state.is_done().then(|| self.state.status())
    }

    fn cancel(&self) -> Result<()> {
        // A collective cannot be cancelled (MPI-4.1 §6.12); the request
        // completes normally.
        Ok(())
    }
}

// ------------------------------------------------------------ checks

fn check_root(root: i32, n: i32) -> Result<()> {
    if root < 0 || root >= n {
        return Err(Error::Root { root, size: n });
    }
    Ok(())
}

fn check_blocks(b: &Blocks, n: usize, what: &str) -> Result<()> {
    if b.counts.len() != n || b.displs.len() != n {
        return Err(Error::Arg(format!(
            "{what}: {} counts and {} displacements for {n} processes",
            b.counts.len(),
            b.displs.len()
        )));
    }
    for i in 0..n {
        let end = b.displs[i].checked_add(b.counts[i]);
        if end.is_none_or(|e| e > b.buf.len) {
            return Err(Error::Buffer(format!(
                "{what}: block {i} ({} bytes at offset {}) lies outside the {}-byte buffer",
                b.counts[i], b.displs[i], b.buf.len
            )));
        }
    }
    Ok(())
}

fn check_len(b: &RawBuf, need: usize, what: &str) -> Result<()> {
    if b.len < need {
        return Err(Error::Buffer(format!(
            "{what} holds {} bytes, the operation needs {need}",
            b.len
        )));
    }
    Ok(())
}

/// Checks what a rank can check alone, before any data moves.
pub(crate) fn validate(op: &Collective, rank: i32, n: i32) -> Result<()> {
    let nu = n as usize;
    match op {
        Collective::Barrier => Ok(()),
        Collective::Bcast { root, .. } => check_root(*root, n),
        Collective::Gather { send, recv, root } => {
            check_root(*root, n)?;
            if rank == *root {
                check_blocks(recv, nu, "receive buffer")
            } else if send.is_none() {
                Err(Error::Buffer("only the root may gather in place".into()))
            } else {
                Ok(())
            }
        }
        Collective::Scatter { send, recv, root } => {
            check_root(*root, n)?;
            if rank == *root {
                check_blocks(send, nu, "send buffer")
            } else if recv.is_none() {
                Err(Error::Buffer("only the root may scatter in place".into()))
            } else {
                Ok(())
            }
        }
        Collective::Allgather { recv, .. } => check_blocks(recv, nu, "receive buffer"),
        Collective::Alltoall { send, recv } => {
            check_blocks(recv, nu, "receive buffer")?;
            match send {
                Some(s) => check_blocks(s, nu, "send buffer"),
                None => Ok(()),
            }
        }
        Collective::Reduce {
            send,
            recv,
            count,
            dtype,
            op,
            root,
        } => {
            check_root(*root, n)?;
            op.check(dtype)?;
            let need = count * dtype.size();
            match send {
                Some(s) => check_len(s, need, "send buffer")?,
                None if rank != *root => {
                    return Err(Error::Buffer("only the root may reduce in place".into()))
                }
                None => {}
            }
            if rank == *root {
                check_len(recv, need, "receive buffer")?;
            }
            Ok(())
        }
        Collective::Allreduce {
            send,
            recv,
            count,
            dtype,
            op,
        }
        | Collective::Scan {
            send,
            recv,
            count,
            dtype,
            op,
            ..
        } => {
            op.check(dtype)?;
            let need = count * dtype.size();
            if let Some(s) = send {
                check_len(s, need, "send buffer")?;
            }
            check_len(recv, need, "receive buffer")
        }
        Collective::ReduceScatter {
            send,
            recv,
            counts,
            dtype,
            op,
        } => {
            op.check(dtype)?;
            if counts.len() != nu {
                return Err(Error::Arg(format!(
                    "{} receive counts for {n} processes",
                    counts.len()
                )));
            }
            let total = counts.iter().sum::<usize>() * dtype.size();
            match send {
                Some(s) => {
                    check_len(s, total, "send buffer")?;
                    check_len(recv, counts[rank as usize] * dtype.size(), "receive buffer")
                }
                None => check_len(recv, total, "receive buffer"),
            }
        }
    }
}

impl NativeComm {
    /// MPI's collective calls on buffers, blocking.
    pub(crate) fn run_collective(&self, op: Collective) -> Result<()> {
        self.check_intra()?;
        validate(&op, self.coll.ep.rank, self.coll.ep.members.len() as i32)?;
        // SAFETY: the buffers are valid for the call (Communicator
        // contract) and were checked against the counts above.
        self.coll.run(|c| unsafe { coll::execute(c, &op) })
    }

    /// Nonblocking.
    pub(crate) fn start_collective(&self, op: Collective) -> Result<RequestRef> {
        self.check_intra()?;
        validate(&op, self.coll.ep.rank, self.coll.ep.members.len() as i32)?;
        // SAFETY: the buffers stay valid until the request completes
        // (Communicator::icollective contract), checked above.
        self.coll
            .start(Box::new(move |c| unsafe { coll::execute(c, &op) }))
    }
}
