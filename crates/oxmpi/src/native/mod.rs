//! The native runtime: ranks on one node talking through the job's
//! shared-memory segment.
//!
//! One [`Core`] per process holds the mapped segment and the progress state
//! (posted receives, unexpected messages, sends waiting for room or for an
//! answer) behind one mutex. Any thread that waits drives progress: it
//! drains the process's inbox, matches, copies, and answers rendezvous
//! requests, then sleeps on its doorbell (see `shm.rs`).

mod agree;
mod coll;
pub(crate) mod comm;
mod commgmt;
mod ctxid;
mod dynproc;
mod foreign;
mod nbr;
mod request;
mod win;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::backend::{CommRef, Engine, RawBuf, SendMode, Status, ANY_SOURCE, ANY_TAG};
use crate::bootstrap::Pmi;
use crate::error::{class, Error, Result};
use crate::shm::{self, CellInfo, CellKind, Push, Segment};
use crate::sys;

pub use comm::NativeComm;
use request::ReqState;

/// The check `Engine::set_interrupt_check` installs (Python's Ctrl-C).
type InterruptCheck = Box<dyn Fn() -> Result<()> + Send + Sync>;

/// How long a sleeping waiter naps before looking around (interrupt check,
/// launcher gone) when nothing rings its doorbell.
const IDLE_NAP: Duration = Duration::from_millis(50);
/// How long a rank sleeps in a blocking call, with nothing arriving, before
/// it tells the launcher it is blocked (the launcher's deadlock monitor
/// waits several seconds more before it calls anything a deadlock).
const REPORT_BLOCKED_AFTER: Duration = Duration::from_secs(1);

/// What a blocked call waits for, for the launcher's deadlock report.
pub(crate) struct Blocked {
    /// e.g. "Recv(comm=MPI_COMM_WORLD, source=1, tag=5, 8 bytes)".
    pub call: String,
    /// The job rank it waits on; -1 for any rank or a collective.
    pub peer: i32,
    /// Waiting for something outside the job (a connection to a port):
    /// not a deadlock however long it takes.
    pub external: bool,
}

/// Which processes a blocked call depends on, so that it fails instead of
/// waiting forever once one of them has failed (see `shm.rs`, "Failed
/// processes"). Receives and sends from and to one named process need no
/// watch: the progress engine completes them with ERR_PROC_FAILED itself.
#[derive(Clone, Copy)]
pub(crate) enum Watch<'a> {
    /// Nothing this call can name (the launcher's deadlock monitor is the
    /// net under those).
    Nothing,
    /// One process (a probe for a message from it) on communicator
    /// `comm`: ERR_PROC_FAILED (ERR_REVOKED once `comm` is revoked).
    Peer { comm: u32, rank: i32 },
    /// A receive or probe from any of `slots` (the peers of communicator
    /// `comm`): ERR_PROC_FAILED_PENDING while one of them has failed and
    /// the communicator has not acknowledged it (`Comm.Ack_failed`).
    AnyOf { comm: u32, slots: &'a [i32] },
    /// A step of a collective on `comm`: every one of these takes part.
    AllOf {
        comm: u32,
        members: &'a [i32],
        remote: &'a [i32],
    },
}

/// How long a waiter naps while it has output waiting for room in a peer's
/// inbox (peers do not ring producers when they free cells).
const BUSY_NAP: Duration = Duration::from_micros(200);

/// A receive waiting for its message.
struct Posted {
    ctx: u32,
    src: i32,
    /// The sender's job rank, or -1 for ANY_SOURCE.
    src_world: i32,
    tag: i32,
    target: Target,
    req: Arc<ReqState>,
}

/// Where a posted receive puts its message.
#[derive(Clone, Copy)]
pub(crate) enum Target {
    /// The caller's buffer.
    Buf(RawBuf),
    /// A buffer of the message's size, allocated when it matches and handed
    /// out by the request (receives of unknown size, e.g. pickled objects).
    Owned,
}

impl Target {
    /// The buffer to receive a `total`-byte message into.
    fn resolve(self, total: usize, req: &ReqState) -> RawBuf {
        match self {
            Target::Buf(b) => b,
            Target::Owned => req.alloc_data(total),
        }
    }
}

/// A message that arrived before its receive was posted.
pub(crate) struct Unexpected {
    ctx: u32,
    src: i32,
    tag: i32,
    payload: Payload,
    /// For synchronous sends to self: completes once matched.
    sync_req: Option<Arc<ReqState>>,
}

pub(crate) enum Payload {
    /// The whole message, copied out of its cell.
    Eager(Vec<u8>),
    /// A rendezvous announcement: the data is still in the sender's memory.
    Rndv {
        total: u64,
        src_world: u32,
        sreq: u64,
        iov: Vec<(u64, u64)>,
    },
}

impl Payload {
    fn len(&self) -> usize {
        match self {
            Payload::Eager(v) => v.len(),
            Payload::Rndv { total, .. } => *total as usize,
        }
    }
}

/// A cell waiting for room in a peer's inbox.
struct Outgoing {
    info: CellInfo,
    data: OutData,
    /// Completed once the cell is in the peer's inbox (eager sends).
    req: Option<Arc<ReqState>>,
}

enum OutData {
    /// User memory, copied into the cell when it goes out.
    Parts(Vec<RawBuf>),
    Owned(Vec<u8>),
    Empty,
}

/// A rendezvous send waiting for its receiver.
struct PendingSend {
    dest: usize,
    req: Arc<ReqState>,
    parts: Vec<RawBuf>,
    total: u64,
}

/// A rendezvous send being streamed through cells (no cross-memory attach).
struct StreamOut {
    dest: usize,
    rid: u64,
    parts: Vec<RawBuf>,
    total: u64,
    offset: u64,
    req: Arc<ReqState>,
}

/// A rendezvous receive being filled by streamed cells.
struct StreamIn {
    src_world: usize,
    buf: RawBuf,
    total: u64,
    received: u64,
    src: i32,
    tag: i32,
    req: Arc<ReqState>,
}

/// Progress state, behind the core's mutex.
#[derive(Default)]
struct State {
    posted: VecDeque<Posted>,
    unexpected: VecDeque<Unexpected>,
    /// Per destination job rank; FIFO keeps the non-overtaking order.
    outbox: Vec<VecDeque<Outgoing>>,
    /// The same for processes of other launches (`foreign.rs`).
    outbox_foreign: HashMap<usize, VecDeque<Outgoing>>,
    outbox_len: usize,
    pending_sends: HashMap<u64, PendingSend>,
    streams_out: VecDeque<StreamOut>,
    streams_in: HashMap<u64, StreamIn>,
    /// Whether a completion happened that another thread may be waiting for.
    completed: bool,
    /// The segment's failure count (`Segment::failures`) acted on so far.
    failures_seen: u64,
    /// Failed job ranks, in the order this process learned of them.
    failed: Vec<usize>,
    /// Per communicator id: the failed job ranks it has acknowledged.
    acked: HashMap<u32, Vec<usize>>,
    /// Per communicator id: agreements started (`agree.rs`).
    agreements: HashMap<u32, u32>,
    /// Ids of the communicators revoked (`Comm.Revoke`, here or by a peer).
    revoked: std::collections::HashSet<u32>,
}

impl State {
    #[inline]
    fn queue_is_empty(&self, dest: usize) -> bool {
        match self.outbox.get(dest) {
            Some(q) => q.is_empty(),
            None => self
                .outbox_foreign
                .get(&dest)
                .is_none_or(VecDeque::is_empty),
        }
    }

    fn queue_mut(&mut self, dest: usize) -> &mut VecDeque<Outgoing> {
        if dest < self.outbox.len() {
            &mut self.outbox[dest]
        } else {
            self.outbox_foreign.entry(dest).or_default()
        }
    }
}

/// The per-process native runtime.
pub struct Core {
    seg: Segment,
    _seg_fd: Option<std::os::fd::OwnedFd>,
    /// Where other launches can open our segment (`foreign.rs`).
    own: foreign::Own,
    /// Segments of other launches we talk to.
    foreign: foreign::Foreign,
    me: usize,
    /// Slots in the segment (the universe's capacity).
    nranks: usize,
    /// The slots of COMM_WORLD, in rank order.
    world: Vec<i32>,
    /// How to reach the processes that spawned us, if they did.
    parent: Option<crate::process_manager::ParentInfo>,
    /// A singleton's segment, kept to hand to a launcher if it spawns.
    singleton_fd: Mutex<Option<std::os::fd::OwnedFd>>,
    /// Inbox consumer position; written only under the state lock, read
    /// without it by the sleep check.
    head: AtomicU64,
    state: Mutex<State>,
    pmi: OnceLock<Pmi>,
    /// Most polls a waiter makes before it sleeps (OXMPI_SPIN, or 0 when
    /// ranks outnumber cores).
    spin_limit: u32,
    /// Yields a waiter makes after polling, before it sleeps
    /// (`OXMPI_YIELDS`; 16 when ranks outnumber cores, else 1): with more
    /// ranks than cores the peer it waits for is often runnable on its own
    /// core, and a yield hands it the core for a fraction of a futex
    /// wake-up's cost.
    yield_limit: u32,
    /// The polls a waiter makes now: doubled when polling found what it
    /// waited for, halved when it had to sleep anyway, so waits for a slow
    /// or descheduled peer stop costing a core.
    spin_budget: AtomicU32,
    cma: AtomicBool,
    next_id: AtomicU64,
    /// Communicator ids free at this process (see `ctxid.rs`).
    ctx_ids: ctxid::ContextIds,
    interrupt: RwLock<Option<InterruptCheck>>,
    finalized: AtomicBool,
    /// Whether any communicator is revoked (a cheap check before the set).
    any_revoked: AtomicBool,
    /// Which collective channels of the segment our communicators hold.
    coll_channels: coll::ChannelPool,
}

fn env_flag(name: &str) -> Option<bool> {
    std::env::var(name)
        .ok()
        .map(|v| !matches!(v.trim(), "0" | "false" | "no" | "off" | ""))
}

/// Where a process stands when it starts: its segment, slot and world.
struct Start {
    seg: Segment,
    /// Our descriptor of the segment, kept open so that processes of other
    /// launches can map it (`foreign.rs`); None for a named segment.
    seg_fd: Option<std::os::fd::OwnedFd>,
    own: foreign::Own,
    me: usize,
    world: Vec<i32>,
    pmi: Option<Pmi>,
    reused: bool,
    parent: Option<crate::process_manager::ParentInfo>,
    singleton_fd: Option<std::os::fd::OwnedFd>,
}

impl Start {
    fn from_env() -> Result<Start> {
        use crate::process_manager as pm;
        let pmi = Pmi::from_env()?;
        if let Some(fd) = pm::inherited_segment()? {
            // Started by oxmpi's launcher: the universe's segment.
            let p = pmi.ok_or_else(|| {
                Error::Bootstrap(format!("{} is set but PMI_FD is not", pm::SHM_FD))
            })?;
            let seg = Segment::from_fd(&fd)?;
            let var = |name: &str| std::env::var(name).ok();
            let me = match var(pm::SLOT) {
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| Error::Bootstrap(format!("bad {}={v:?}", pm::SLOT)))?,
                None => p.rank,
            };
            let world = match var(pm::WORLD_SLOTS) {
                Some(v) => pm::parse_slot_list(&v)?,
                None => (0..p.size as i32).collect(),
            };
            let cap = seg.layout().nranks;
            if world.len() != p.size
                || world.get(p.rank) != Some(&(me as i32))
                || world.iter().any(|&w| w as usize >= cap)
            {
                return Err(Error::Bootstrap(format!(
                    "inconsistent slots from the launcher: slot {me}, world {world:?}, \
                     rank {} of {}, {cap} slots",
                    p.rank, p.size
                )));
            }
            let parent = var(pm::PARENT)
                .map(|v| pm::ParentInfo::decode(&v))
                .transpose()?;
            seg.set_pid(me, std::process::id());
            let own = foreign::Own::of(Some(&fd), &seg);
            return Ok(Start {
                seg,
                seg_fd: Some(fd),
                own,
                me,
                world,
                pmi: Some(p),
                reused: var(pm::SLOT_REUSED).as_deref() == Some("1"),
                parent,
                singleton_fd: None,
            });
        }
        let Some(p) = pmi else {
            // A singleton: a segment of its own, with spare slots for the
            // processes it may spawn (handed to a launcher then).
            let (seg, fd) = Segment::create_memfd(pm::layout_for(1 + pm::spare_slots()))?;
            seg.set_pid(0, std::process::id());
            let own = foreign::Own::of(Some(&fd), &seg);
            return Ok(Start {
                seg,
                seg_fd: None,
                own,
                me: 0,
                world: vec![0],
                pmi: None,
                reused: false,
                parent: None,
                singleton_fd: Some(fd),
            });
        };
        // A foreign PMI-1 launcher (hydra): rank 0 creates a named segment
        // for the job, the others find it through PMI.
        let (me, nranks) = (p.rank, p.size);
        let layout = pm::layout_for(nranks);
        let name = shm::segment_name(&p.kvsname);
        let seg = if me == 0 {
            let seg = Segment::create(&name, layout)?;
            p.put("oxmpi.shm.0", &name)?;
            seg
        } else {
            p.fence()?;
            let name = p.get("oxmpi.shm.0")?;
            Segment::attach(&name, layout)?
        };
        if me == 0 {
            p.fence()?;
        }
        seg.set_pid(me, std::process::id());
        // Everyone has mapped the segment after this fence: unlink it so
        // that nothing is left behind whatever happens next.
        p.fence()?;
        if me == 0 {
            Segment::unlink(&name);
        }
        let own = foreign::Own::of(None, &seg);
        Ok(Start {
            seg,
            seg_fd: None,
            own,
            me,
            world: (0..nranks as i32).collect(),
            pmi: Some(p),
            reused: false,
            parent: None,
            singleton_fd: None,
        })
    }
}

impl Core {
    /// MPI_Init for the native runtime.
    pub fn init() -> Result<Arc<Core>> {
        let start = Start::from_env()?;
        let nslots = start.seg.layout().nranks;
        sys::allow_cross_memory_attach();
        let oversubscribed = start.world.len() > sys::available_cpus();
        let spin_limit = std::env::var("OXMPI_SPIN")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if oversubscribed { 0 } else { 4000 });
        let yield_limit = std::env::var("OXMPI_YIELDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if oversubscribed { 16 } else { 1 });
        let cma = env_flag("OXMPI_CMA").unwrap_or(true);
        let (head, coll_channels) = if start.reused {
            // An earlier occupant of our slot retired: skip what it left
            // and post above its generations (see `shm.rs`).
            let head = start.seg.resume_inbox(start.me);
            let pool = coll::ChannelPool::new();
            pool.raise_generations(&start.seg.adopt_coll_slots(start.me));
            (head, pool)
        } else {
            (0, coll::ChannelPool::new())
        };
        if start.parent.is_some() {
            // A spawned process that dies is reported to its parents as
            // failed rather than ending their job (see `shm.rs`).
            start.seg.set_survivable(start.me);
        }
        let pmi = OnceLock::new();
        if let Some(p) = start.pmi {
            let _ = pmi.set(p);
        }
        Ok(Arc::new(Core {
            seg: start.seg,
            _seg_fd: start.seg_fd,
            own: start.own,
            foreign: foreign::Foreign::default(),
            me: start.me,
            nranks: nslots,
            world: start.world,
            parent: start.parent,
            singleton_fd: Mutex::new(start.singleton_fd),
            head: AtomicU64::new(head),
            state: Mutex::new(State {
                outbox: (0..nslots).map(|_| VecDeque::new()).collect(),
                ..State::default()
            }),
            pmi,
            spin_limit,
            yield_limit,
            spin_budget: AtomicU32::new(spin_limit),
            cma: AtomicBool::new(cma),
            next_id: AtomicU64::new(1),
            ctx_ids: ctxid::ContextIds::new(&[WORLD_ID, SELF_ID, UNIVERSE_ID]),
            interrupt: RwLock::new(None),
            finalized: AtomicBool::new(false),
            any_revoked: AtomicBool::new(false),
            coll_channels,
        }))
    }

    /// This process's slot in the segment (its "job rank").
    pub fn rank(&self) -> usize {
        self.me
    }

    /// The PMI connection, once there is one (a singleton has none until
    /// it spawns).
    fn pmi(&self) -> Option<&Pmi> {
        self.pmi.get()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn eager_limit(&self) -> usize {
        self.seg.layout().cell_payload()
    }

    fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    // ---------------------------------------------------------------- send

    /// Starts a send; returns None when it completed at once (the common
    /// eager case), else the request to wait on.
    pub(crate) fn start_send(
        &self,
        ctx: u32,
        src: i32,
        dest_world: usize,
        tag: i32,
        parts: &[RawBuf],
        mode: SendMode,
    ) -> Result<Option<Arc<ReqState>>> {
        let total: usize = parts.iter().map(|p| p.len).sum();
        if dest_world == self.me {
            return self.send_to_self(ctx, src, tag, parts, total, mode);
        }
        let mut st = self.lock();
        if st.failed.contains(&dest_world) {
            return Err(proc_failed(dest_world));
        }
        if total <= self.eager_limit() && mode != SendMode::Synchronous {
            let info = CellInfo {
                kind: CellKind::Eager,
                ctx,
                src,
                tag,
                src_world: self.me as u32,
                total_len: total as u64,
                aux0: 0,
                aux1: 0,
                origin: 0,
            };
            if st.queue_is_empty(dest_world) {
                if let Push::Done = self.push_to(dest_world, &info, |cell| copy_parts(parts, cell))
                {
                    return Ok(None);
                }
            }
            let req = ReqState::new();
            self.queue_out(
                &mut st,
                dest_world,
                Outgoing {
                    info,
                    data: OutData::Parts(parts.to_vec()),
                    req: Some(req.clone()),
                },
            );
            return Ok(Some(req));
        }
        // Rendezvous: announce, and keep the buffer until the receiver
        // says it has read it.
        if parts.len() > (self.eager_limit() - 8) / 16 {
            return Err(Error::Buffer(format!(
                "a message may be made of at most {} pieces",
                (self.eager_limit() - 8) / 16
            )));
        }
        let sreq = self.new_id();
        let req = ReqState::new();
        let mut iov = Vec::with_capacity(8 + 16 * parts.len());
        iov.extend_from_slice(&(parts.len() as u64).to_ne_bytes());
        for p in parts {
            iov.extend_from_slice(&(p.ptr as u64).to_ne_bytes());
            iov.extend_from_slice(&(p.len as u64).to_ne_bytes());
        }
        st.pending_sends.insert(
            sreq,
            PendingSend {
                dest: dest_world,
                req: req.clone(),
                parts: parts.to_vec(),
                total: total as u64,
            },
        );
        let info = CellInfo {
            kind: CellKind::Rts,
            ctx,
            src,
            tag,
            src_world: self.me as u32,
            total_len: total as u64,
            aux0: sreq,
            aux1: 0,
            origin: 0,
        };
        self.send_cell(&mut st, dest_world, info, OutData::Owned(iov));
        Ok(Some(req))
    }

    fn send_to_self(
        &self,
        ctx: u32,
        src: i32,
        tag: i32,
        parts: &[RawBuf],
        total: usize,
        mode: SendMode,
    ) -> Result<Option<Arc<ReqState>>> {
        let mut data = Vec::with_capacity(total);
        for p in parts {
            // SAFETY: the caller keeps send buffers valid during the call.
            data.extend_from_slice(unsafe { p.as_slice() });
        }
        let mut st = self.lock();
        if let Some(i) = st
            .posted
            .iter()
            .position(|p| matches(p.ctx, p.src, p.tag, ctx, src, tag))
        {
            let p = st.posted.remove(i).expect("index in range");
            let buf = p.target.resolve(data.len(), &p.req);
            deliver(&buf, &data, src, tag, &p.req);
            st.completed = true;
            return Ok(None);
        }
        let sync_req = (mode == SendMode::Synchronous).then(ReqState::new);
        st.unexpected.push_back(Unexpected {
            ctx,
            src,
            tag,
            payload: Payload::Eager(data),
            sync_req: sync_req.clone(),
        });
        Ok(sync_req)
    }

    /// Sends a cell now if the peer's inbox has room and nothing is queued
    /// before it, else queues it.
    fn send_cell(&self, st: &mut State, dest: usize, info: CellInfo, data: OutData) {
        if st.queue_is_empty(dest) {
            let pushed = self.push_to(dest, &info, |cell| fill_out(&data, cell));
            if let Push::Done = pushed {
                return;
            }
        }
        self.queue_out(
            st,
            dest,
            Outgoing {
                info,
                data,
                req: None,
            },
        );
    }

    /// Produces a cell into the inbox of job rank `dest`, in our segment or
    /// in another launch's (`foreign.rs`).
    #[inline]
    fn push_to(&self, dest: usize, info: &CellInfo, fill: impl FnOnce(&mut [u8]) -> usize) -> Push {
        if dest < foreign::FOREIGN_STRIDE {
            return self.seg.push(dest, info, fill);
        }
        match self.foreign.locate(dest) {
            Some((fs, slot)) => {
                let info = CellInfo {
                    origin: self.own.origin,
                    ..*info
                };
                fs.seg.push(slot, &info, fill)
            }
            // Never mapped: nothing can be waiting for it.
            None => Push::Done,
        }
    }

    /// The pid of job rank `rank` (for cross-memory reads).
    fn pid_of(&self, rank: usize) -> u32 {
        if rank < foreign::FOREIGN_STRIDE {
            return self.seg.pid(rank);
        }
        self.foreign
            .locate(rank)
            .map_or(0, |(fs, slot)| fs.seg.pid(slot))
    }

    fn queue_out(&self, st: &mut State, dest: usize, out: Outgoing) {
        if st.failed.contains(&dest) {
            // A failed process's ring is never drained: a cell queued for
            // it would wait forever (and Finalize with it).
            if let Some(r) = out.req {
                fail_request(&r, 0, 0, proc_failed(dest));
                st.completed = true;
            }
            return;
        }
        st.queue_mut(dest).push_back(out);
        st.outbox_len += 1;
    }

    // ------------------------------------------------------------- receive

    /// Posts a receive; returns the request (possibly already complete).
    /// `src_world` is the sender's job rank (-1 for ANY_SOURCE).
    pub(crate) fn post_recv(
        &self,
        ctx: u32,
        src: i32,
        src_world: i32,
        tag: i32,
        target: Target,
    ) -> Arc<ReqState> {
        let req = ReqState::new();
        let mut st = self.lock();
        if let Some(i) = st
            .unexpected
            .iter()
            .position(|u| matches(ctx, src, tag, u.ctx, u.src, u.tag))
        {
            let u = st.unexpected.remove(i).expect("index in range");
            let buf = target.resolve(u.payload.len(), &req);
            self.consume(&mut st, u, buf, &req);
        } else {
            if src_world >= 0 && st.failed.contains(&(src_world as usize)) {
                fail_request(&req, src, tag, proc_failed(src_world as usize));
                return req;
            }
            st.posted.push_back(Posted {
                ctx,
                src,
                src_world,
                tag,
                target,
                req: req.clone(),
            });
        }
        req
    }

    /// Receives a matched unexpected message into `buf`, completing `req`
    /// (at once for eager data; later for rendezvous).
    fn consume(&self, st: &mut State, u: Unexpected, buf: RawBuf, req: &Arc<ReqState>) {
        if let Some(s) = &u.sync_req {
            s.complete(Status::default(), None);
            st.completed = true;
        }
        match u.payload {
            Payload::Eager(data) => deliver(&buf, &data, u.src, u.tag, req),
            Payload::Rndv {
                total,
                src_world,
                sreq,
                iov,
            } => self.start_rndv_recv(
                st,
                buf,
                req,
                u.src,
                u.tag,
                src_world as usize,
                sreq,
                total,
                &iov,
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_rndv_recv(
        &self,
        st: &mut State,
        buf: RawBuf,
        req: &Arc<ReqState>,
        src: i32,
        tag: i32,
        src_world: usize,
        sreq: u64,
        total: u64,
        iov: &[(u64, u64)],
    ) {
        let n = (total as usize).min(buf.len);
        if self.cma.load(Ordering::Relaxed) {
            // SAFETY: `buf` is the posted receive buffer, valid until its
            // request completes; the sender keeps its iovecs valid until we
            // answer Done, which we do only after this read.
            let res = unsafe { sys::read_remote(self.pid_of(src_world), buf.as_mut_slice(), iov) }
                .map(|_| ())
                .or_else(|e| if n == 0 { Ok(()) } else { Err(e) });
            let res = match res {
                Ok(()) => Ok(()),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EPERM) | Some(libc::ENOSYS) | Some(libc::EACCES) => {
                        // No cross-memory attach here: stream from now on.
                        self.cma.store(false, Ordering::Relaxed);
                        Err(None)
                    }
                    _ => Err(Some(Error::ProcFailed(format!(
                        "reading a message from rank {src_world} failed: {e}"
                    )))),
                },
            };
            match res {
                Ok(()) => {
                    self.answer_done(st, src_world, sreq);
                    complete_recv(req, src, tag, total as usize, buf.len);
                    st.completed = true;
                    return;
                }
                Err(Some(err)) => {
                    self.answer_done(st, src_world, sreq);
                    fail_request(req, src, tag, err);
                    st.completed = true;
                    return;
                }
                Err(None) => {}
            }
        }
        let rid = self.new_id();
        if st.failed.contains(&src_world) {
            fail_request(req, src, tag, proc_failed(src_world));
            st.completed = true;
            return;
        }
        st.streams_in.insert(
            rid,
            StreamIn {
                src_world,
                buf,
                total,
                received: 0,
                src,
                tag,
                req: req.clone(),
            },
        );
        let info = self.ctl_info(CellKind::Cts, sreq, rid);
        self.send_cell(st, src_world, info, OutData::Empty);
        if total == 0 {
            // Nothing will stream; complete now.
            let s = st.streams_in.remove(&rid).expect("just inserted");
            complete_recv(&s.req, src, tag, 0, buf.len);
        }
    }

    fn ctl_info(&self, kind: CellKind, aux0: u64, aux1: u64) -> CellInfo {
        CellInfo {
            kind,
            ctx: 0,
            src: 0,
            tag: 0,
            src_world: self.me as u32,
            total_len: 0,
            aux0,
            aux1,
            origin: 0,
        }
    }

    fn answer_done(&self, st: &mut State, dest: usize, sreq: u64) {
        let info = self.ctl_info(CellKind::Done, sreq, 0);
        self.send_cell(st, dest, info, OutData::Empty);
    }

    /// Takes the first unexpected message matching, for a matched probe.
    pub(crate) fn take_matching(&self, ctx: u32, src: i32, tag: i32) -> Option<Unexpected> {
        let mut st = self.lock();
        self.progress_locked(&mut st);
        let i = st
            .unexpected
            .iter()
            .position(|u| matches(ctx, src, tag, u.ctx, u.src, u.tag))?;
        st.unexpected.remove(i)
    }

    /// Looks for a matching unexpected message (MPI_Iprobe).
    pub(crate) fn peek_matching(&self, ctx: u32, src: i32, tag: i32) -> Option<Status> {
        let mut st = self.lock();
        self.progress_locked(&mut st);
        st.unexpected
            .iter()
            .find(|u| matches(ctx, src, tag, u.ctx, u.src, u.tag))
            .map(|u| Status {
                source: u.src,
                tag: u.tag,
                count: u.payload.len(),
                ..Status::default()
            })
    }

    /// Receives a message taken by `take_matching` (MPI_Mrecv).
    pub(crate) fn recv_taken(&self, u: Unexpected, target: Target) -> Arc<ReqState> {
        let req = ReqState::new();
        let buf = target.resolve(u.payload.len(), &req);
        let mut st = self.lock();
        self.consume(&mut st, u, buf, &req);
        req
    }

    /// Cancels a posted receive; false when it already matched.
    pub(crate) fn cancel_recv(&self, req: &Arc<ReqState>) -> bool {
        let mut st = self.lock();
        if let Some(i) = st.posted.iter().position(|p| Arc::ptr_eq(&p.req, req)) {
            st.posted.remove(i);
            req.complete(
                Status {
                    cancelled: true,
                    ..Status::default()
                },
                None,
            );
            return true;
        }
        false
    }

    // ------------------------------------------------------------ progress

    /// Makes one round of progress.
    pub fn progress(&self) {
        let mut st = self.lock();
        self.progress_locked(&mut st);
    }

    fn progress_locked(&self, st: &mut State) {
        if st.outbox_len > 0 {
            self.flush_outbox(st);
        }
        if !st.streams_out.is_empty() {
            self.flush_streams(st);
        }
        self.drain_inbox(st);
        let mut failures = self.seg.failures();
        if self.foreign.any() {
            failures += self.foreign.failures();
        }
        if failures != st.failures_seen {
            st.failures_seen = failures;
            let mut newly: Vec<usize> = (0..self.nranks)
                .filter(|&r| r != self.me && self.seg.is_failed(r))
                .collect();
            for (base, f) in self.foreign.all() {
                newly.extend(
                    (0..f.seg.layout().nranks)
                        .filter(|&slot| f.seg.is_failed(slot))
                        .map(|slot| base + slot),
                );
            }
            self.learn_failures(st, newly);
        }
        if std::mem::take(&mut st.completed) {
            // Another thread of this process may be asleep waiting for what
            // we just completed. The SeqCst fence orders the completions'
            // stores before the load of the sleeper count; it pairs with the
            // fence in `Segment::prepare_sleep`, after which a sleeper looks
            // at its request again (Dekker: one of the two sees the other).
            std::sync::atomic::fence(Ordering::SeqCst);
            self.seg.ring_if_sleeping(self.me);
        }
    }

    fn drain_inbox(&self, st: &mut State) {
        let mut head = self.head.load(Ordering::Relaxed);
        while let Some((mut info, payload)) = self.seg.peek(self.me, head) {
            if info.origin != 0 {
                // From another launch: its slot, in our numbering.
                let resolved =
                    self.foreign
                        .resolve(&self.own, info.origin, u64::from(info.src_world));
                match resolved {
                    Ok(rank) => info.src_world = rank as u32,
                    Err(e) => {
                        eprintln!("oxmpi: dropping a message from another job: {e}");
                        head = self.seg.pop_release(self.me, head);
                        self.head.store(head, Ordering::Relaxed);
                        continue;
                    }
                }
            }
            self.handle_cell(st, &info, payload);
            head = self.seg.pop_release(self.me, head);
            self.head.store(head, Ordering::Relaxed);
        }
    }

    /// The launcher has marked more processes failed: find which, take in
    /// everything they sent before they died, then fail what waits on them.
    fn learn_failures(&self, st: &mut State, mut newly: Vec<usize>) {
        newly.retain(|r| !st.failed.contains(r));
        if newly.is_empty() {
            return;
        }
        // A mark is set after its process was reaped, so what it put into
        // our inbox is visible now that we have seen the mark.
        self.drain_inbox(st);
        for &dead in &newly {
            st.failed.push(dead);
            let fail = |req: &ReqState, src, tag| fail_request(req, src, tag, proc_failed(dead));
            st.posted.retain(|p| {
                let lost = p.src_world == dead as i32;
                if lost {
                    fail(&p.req, p.src, p.tag);
                }
                !lost
            });
            st.streams_out.retain(|s| {
                let lost = s.dest == dead;
                if lost {
                    fail(&s.req, 0, 0);
                }
                !lost
            });
            for (_, p) in st.pending_sends.extract_if(|_, p| p.dest == dead) {
                fail(&p.req, 0, 0);
            }
            for (_, s) in st.streams_in.extract_if(|_, s| s.src_world == dead) {
                fail(&s.req, s.src, s.tag);
            }
            for out in std::mem::take(st.queue_mut(dead)) {
                st.outbox_len -= 1;
                if let Some(r) = out.req {
                    fail(&r, 0, 0);
                }
            }
        }
        st.completed = true;
    }

    /// The error a wait on `watch` ends with, if what it waits for can no
    /// longer happen because of a failed process.
    fn failure_for(&self, watch: &Watch<'_>) -> Option<Error> {
        let st = self.lock();
        let comm = match *watch {
            Watch::Nothing => None,
            Watch::Peer { comm, .. } | Watch::AnyOf { comm, .. } | Watch::AllOf { comm, .. } => {
                Some(comm)
            }
        };
        if comm.is_some_and(|c| st.revoked.contains(&c)) {
            return Some(revoked());
        }
        if st.failed.is_empty() {
            return None;
        }
        let failed = |slots: &[i32]| {
            st.failed
                .iter()
                .copied()
                .find(|&d| slots.contains(&(d as i32)))
        };
        match *watch {
            Watch::Nothing => None,
            Watch::Peer { rank: p, .. } => {
                (p >= 0 && st.failed.contains(&(p as usize))).then(|| proc_failed(p as usize))
            }
            Watch::AnyOf { comm, slots } => {
                let acked = st.acked.get(&comm);
                st.failed
                    .iter()
                    .find(|&&d| {
                        slots.contains(&(d as i32)) && !acked.is_some_and(|a| a.contains(&d))
                    })
                    .map(|&d| {
                        Error::ProcFailedPending(format!(
                            "process {d} of the job, a possible sender, has failed \
                             (acknowledge it with Comm.Ack_failed to receive from the others)"
                        ))
                    })
            }
            Watch::AllOf {
                members, remote, ..
            } => failed(members).or_else(|| failed(remote)).map(proc_failed),
        }
    }

    /// Processes of other launches die without our launcher marking them
    /// (theirs ends its job): a wait that talks to other jobs looks at the
    /// pids of their processes now and then. One that finalized and exited
    /// counts as failed too: nothing more can come from it, and a wait for
    /// it would otherwise never end (a job that ends with an error after
    /// finalizing, as `raise SystemExit(3)` does, looks just the same).
    fn check_foreign_alive(&self) {
        let mut dead = Vec::new();
        for (base, f) in self.foreign.all() {
            for slot in 0..f.seg.layout().nranks {
                let pid = f.seg.pid(slot);
                if pid != 0 && !sys::process_alive(pid) {
                    dead.push(base + slot);
                }
            }
        }
        if !dead.is_empty() {
            let mut st = self.lock();
            self.learn_failures(&mut st, dead);
        }
    }

    /// The failed job ranks among `slots`, in the order they were learned.
    pub(crate) fn failed_among(&self, slots: &[i32]) -> Vec<i32> {
        let mut st = self.lock();
        self.progress_locked(&mut st);
        st.failed
            .iter()
            .map(|&d| d as i32)
            .filter(|d| slots.contains(d))
            .collect()
    }

    /// Acknowledges on communicator `comm` the first `n` failed processes
    /// among `slots`; returns how many are acknowledged there in all.
    pub(crate) fn ack_failed(&self, comm: u32, slots: &[i32], n: usize) -> usize {
        let failed = self.failed_among(slots);
        let mut st = self.lock();
        let acked = st.acked.entry(comm).or_default();
        for &d in failed.iter().take(n) {
            if !acked.contains(&(d as usize)) {
                acked.push(d as usize);
            }
        }
        acked.len()
    }

    /// Forgets a freed communicator's acknowledgements and agreement count
    /// (its id is reused; a revoked one's never is, so its revocation stays).
    pub(crate) fn forget_comm(&self, comm: u32) {
        let mut st = self.lock();
        st.acked.remove(&comm);
        st.agreements.remove(&comm);
    }

    /// Whether communicator `comm` is revoked.
    #[inline]
    pub(crate) fn is_revoked(&self, comm: u32) -> bool {
        self.any_revoked.load(Ordering::Relaxed) && self.lock().revoked.contains(&comm)
    }

    /// Revokes communicator `comm` here and tells `peers` (job ranks).
    pub(crate) fn revoke(&self, comm: u32, peers: &[i32]) {
        let mut st = self.lock();
        self.revoke_here(&mut st, comm);
        for &p in peers {
            if p as usize != self.me {
                let info = self.ctl_info(CellKind::Revoke, u64::from(comm), 0);
                self.send_cell(&mut st, p as usize, info, OutData::Empty);
            }
        }
    }

    /// Marks `comm` revoked and fails the receives posted on its contexts.
    fn revoke_here(&self, st: &mut State, comm: u32) {
        // A revocation that arrives after we freed the communicator names
        // nothing here any more (and must not hit a later one reusing the
        // id); one for a communicator still being created does count.
        if !self.ctx_ids.in_use(comm) || !st.revoked.insert(comm) {
            return;
        }
        self.any_revoked.store(true, Ordering::Relaxed);
        st.posted.retain(|p| {
            // Agreements go on on a revoked communicator (`agree.rs`).
            let agreement = p.ctx % 4 == 2 && p.tag >= agree::AGREE_TAG_BASE;
            let lost = p.ctx / 4 == comm && !agreement;
            if lost {
                fail_request(&p.req, p.src, p.tag, revoked());
            }
            !lost
        });
        st.completed = true;
    }

    /// The sequence number of communicator `comm`'s next agreement.
    pub(crate) fn next_agreement(&self, comm: u32) -> u32 {
        let mut st = self.lock();
        let n = st.agreements.entry(comm).or_default();
        *n = n.wrapping_add(1);
        *n - 1
    }

    fn handle_cell(&self, st: &mut State, info: &CellInfo, payload: &[u8]) {
        match info.kind {
            CellKind::Eager | CellKind::Rts => {
                let found = st
                    .posted
                    .iter()
                    .position(|p| matches(p.ctx, p.src, p.tag, info.ctx, info.src, info.tag));
                if let Some(i) = found {
                    let p = st.posted.remove(i).expect("index in range");
                    let buf = p.target.resolve(info.total_len as usize, &p.req);
                    if info.kind == CellKind::Eager {
                        deliver(&buf, payload, info.src, info.tag, &p.req);
                    } else {
                        let iov = decode_iov(payload);
                        self.start_rndv_recv(
                            st,
                            buf,
                            &p.req,
                            info.src,
                            info.tag,
                            info.src_world as usize,
                            info.aux0,
                            info.total_len,
                            &iov,
                        );
                    }
                    st.completed = true;
                } else {
                    let payload = if info.kind == CellKind::Eager {
                        Payload::Eager(payload.to_vec())
                    } else {
                        Payload::Rndv {
                            total: info.total_len,
                            src_world: info.src_world,
                            sreq: info.aux0,
                            iov: decode_iov(payload),
                        }
                    };
                    st.unexpected.push_back(Unexpected {
                        ctx: info.ctx,
                        src: info.src,
                        tag: info.tag,
                        payload,
                        sync_req: None,
                    });
                }
            }
            CellKind::Revoke => self.revoke_here(st, info.aux0 as u32),
            CellKind::Done => {
                if let Some(p) = st.pending_sends.remove(&info.aux0) {
                    p.req.complete(Status::default(), None);
                    st.completed = true;
                }
            }
            CellKind::Cts => {
                if let Some(p) = st.pending_sends.remove(&info.aux0) {
                    st.streams_out.push_back(StreamOut {
                        dest: info.src_world as usize,
                        rid: info.aux1,
                        parts: p.parts,
                        total: p.total,
                        offset: 0,
                        req: p.req,
                    });
                    self.flush_streams(st);
                }
            }
            CellKind::Data => {
                let finished = if let Some(s) = st.streams_in.get_mut(&info.aux0) {
                    let off = info.aux1 as usize;
                    if off < s.buf.len {
                        let n = payload.len().min(s.buf.len - off);
                        // SAFETY: the posted buffer is valid until the
                        // request completes; [off, off+n) is inside it.
                        unsafe {
                            std::ptr::copy_nonoverlapping(payload.as_ptr(), s.buf.ptr.add(off), n)
                        };
                    }
                    s.received += payload.len() as u64;
                    s.received >= s.total
                } else {
                    false
                };
                if finished {
                    let s = st.streams_in.remove(&info.aux0).expect("present");
                    complete_recv(&s.req, s.src, s.tag, s.total as usize, s.buf.len);
                    st.completed = true;
                }
            }
        }
    }

    fn flush_outbox(&self, st: &mut State) {
        // Every progress call comes here; the outbox is almost always
        // empty, and it has a queue per slot of the segment (spare slots
        // included), so do not walk them for nothing.
        if st.outbox_len == 0 {
            return;
        }
        let foreign: Vec<usize> = if st.outbox_foreign.is_empty() {
            Vec::new() // no allocation: the common case
        } else {
            st.outbox_foreign.keys().copied().collect()
        };
        for dest in (0..self.nranks).chain(foreign) {
            while let Some(out) = st.queue_mut(dest).front() {
                let pushed = self.push_to(dest, &out.info, |cell| fill_out(&out.data, cell));
                if let Push::Full = pushed {
                    break;
                }
                let out = st.queue_mut(dest).pop_front().expect("front exists");
                st.outbox_len -= 1;
                if let Some(r) = out.req {
                    r.complete(Status::default(), None);
                    st.completed = true;
                }
            }
        }
    }

    fn flush_streams(&self, st: &mut State) {
        let chunk = self.eager_limit() as u64;
        let mut i = 0;
        while i < st.streams_out.len() {
            let s = &mut st.streams_out[i];
            let mut full = false;
            while s.offset < s.total {
                let len = chunk.min(s.total - s.offset);
                let info = CellInfo {
                    kind: CellKind::Data,
                    ctx: 0,
                    src: 0,
                    tag: 0,
                    src_world: self.me as u32,
                    total_len: s.total,
                    aux0: s.rid,
                    aux1: s.offset,
                    origin: 0,
                };
                let (parts, off) = (&s.parts, s.offset as usize);
                let pushed = self.push_to(s.dest, &info, |cell| {
                    copy_parts_range(parts, off, &mut cell[..len as usize])
                });
                if let Push::Full = pushed {
                    full = true;
                    break;
                }
                s.offset += len;
            }
            if !full && s.offset >= s.total {
                let s = st.streams_out.remove(i).expect("index in range");
                s.req.complete(Status::default(), None);
                st.completed = true;
            } else {
                i += 1;
            }
        }
    }

    /// Blocks, driving progress, until `done()` holds. `done` is never
    /// called again once it has returned true, so it may consume what it
    /// waited for (as a matched probe does).
    pub fn wait_until(&self, done: impl FnMut() -> bool) -> Result<()> {
        self.wait_watching(done, Watch::Nothing)
    }

    /// `wait_until` that fails once a process it depends on has failed.
    pub(crate) fn wait_watching(&self, done: impl FnMut() -> bool, watch: Watch<'_>) -> Result<()> {
        self.wait_described(
            done,
            &|| Blocked {
                call: "a blocking call".into(),
                peer: -1,
                external: false,
            },
            watch,
        )
    }

    /// `wait_until` for a call that can say what it waits for: after
    /// [`REPORT_BLOCKED_AFTER`] asleep with nothing arriving, the rank tells
    /// the launcher (`describe` is called only then), which reports a
    /// deadlock when every rank is so blocked.
    pub(crate) fn wait_described(
        &self,
        mut done: impl FnMut() -> bool,
        describe: &dyn Fn() -> Blocked,
        watch: Watch<'_>,
    ) -> Result<()> {
        let mut spins = 0u32;
        let mut budget = self.spin_budget.load(Ordering::Relaxed);
        let mut last_check = Instant::now();
        let mut idle_since: Option<Instant> = None;
        let mut reported = false;
        let mut slept = false;
        let result = loop {
            let (busy, activity) = {
                let mut st = self.lock();
                let head = self.head.load(Ordering::Relaxed);
                let queued = st.outbox_len;
                self.progress_locked(&mut st);
                (
                    st.outbox_len > 0 || !st.streams_out.is_empty(),
                    head != self.head.load(Ordering::Relaxed) || queued != st.outbox_len,
                )
            };
            if activity {
                idle_since = None;
                if std::mem::take(&mut reported) {
                    self.report_state(None);
                }
            }
            if done() {
                if spins > 0 && !slept {
                    // Polling (or the one yield) paid off: allow more of it
                    // next time. A budget that long waits have halved to
                    // zero must be able to grow back, or every short wait
                    // after a phase of long ones would cost a futex wake-up.
                    let more = (budget * 2 + 16).min(self.spin_limit);
                    self.spin_budget.store(more, Ordering::Relaxed);
                }
                break Ok(());
            }
            if spins < budget {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            if spins < budget.saturating_add(self.yield_limit) {
                // Yields before sleeping let a peer on our core run.
                spins += 1;
                std::thread::yield_now();
                continue;
            }
            // Before sleeping (a failure rings every doorbell, so a sleeper
            // comes back here): has a process we wait for failed?
            if (self.seg.failures() != 0 || self.any_revoked.load(Ordering::Relaxed))
                && !matches!(watch, Watch::Nothing)
            {
                if let Some(e) = self.failure_for(&watch) {
                    break Err(e);
                }
            }
            if budget > 0 {
                self.spin_budget.store(budget / 2, Ordering::Relaxed);
                budget /= 2;
            }
            let seen = self.seg.prepare_sleep(self.me);
            let head = self.head.load(Ordering::Relaxed);
            if self.seg.has_pending(self.me, head) {
                self.seg.cancel_sleep(self.me);
            } else if done() {
                // `done` may have consumed what it waited for (a matched
                // probe takes the message): return now, never ask again.
                self.seg.cancel_sleep(self.me);
                break Ok(());
            } else {
                self.seg
                    .sleep(self.me, seen, if busy { BUSY_NAP } else { IDLE_NAP });
                slept = true;
                let since = *idle_since.get_or_insert_with(Instant::now);
                // Waits that may depend on another job (or on a client yet
                // to come, as Accept does) are not the launcher's to judge.
                if !reported && since.elapsed() >= REPORT_BLOCKED_AFTER && !self.foreign.any() {
                    let blocked = describe();
                    if !blocked.external {
                        self.report_state(Some(&blocked));
                        reported = true;
                    }
                }
            }
            spins = 0;
            if last_check.elapsed() >= IDLE_NAP {
                last_check = Instant::now();
                if let Err(e) = self.check_interrupt() {
                    break Err(e);
                }
                if self.foreign.any() {
                    self.check_foreign_alive();
                }
            }
        };
        if reported {
            self.report_state(None);
        }
        result
    }

    /// Tells oxmpi's launcher that this rank is blocked (or running again).
    fn report_state(&self, blocked: Option<&Blocked>) {
        if let Some(p) = self.pmi() {
            p.report_state(blocked.map(|b| (b.call.as_str(), b.peer)));
        }
    }

    fn check_interrupt(&self) -> Result<()> {
        let guard = self.interrupt.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(check) => check(),
            None => Ok(()),
        }
    }
}

/// The error of an operation that needs a process that has failed.
fn proc_failed(job_rank: usize) -> Error {
    Error::ProcFailed(format!("process {job_rank} of the job has failed"))
}

fn revoked() -> Error {
    Error::Revoked("the communicator was revoked".into())
}

/// Completes a request with an error (its status carries the class).
fn fail_request(req: &ReqState, src: i32, tag: i32, err: Error) {
    req.complete(
        Status {
            source: src,
            tag,
            error: err.class(),
            ..Status::default()
        },
        Some(err),
    );
}

/// Does a message (m_*) match a receive's envelope?
#[inline]
fn matches(ctx: u32, src: i32, tag: i32, m_ctx: u32, m_src: i32, m_tag: i32) -> bool {
    ctx == m_ctx && (src == ANY_SOURCE || src == m_src) && (tag == ANY_TAG || tag == m_tag)
}

/// Copies an eager message into a posted buffer and completes the request.
fn deliver(buf: &RawBuf, data: &[u8], src: i32, tag: i32, req: &ReqState) {
    let n = data.len().min(buf.len);
    if n > 0 {
        // SAFETY: the posted buffer is valid for writes until its request
        // completes, which happens just below.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf.ptr, n) };
    }
    complete_recv(req, src, tag, data.len(), buf.len);
}

/// Completes a receive of a `total`-byte message into a `cap`-byte buffer.
fn complete_recv(req: &ReqState, src: i32, tag: i32, total: usize, cap: usize) {
    let (count, err) = if total > cap {
        (
            cap,
            Some(Error::Truncate {
                received: total,
                capacity: cap,
            }),
        )
    } else {
        (total, None)
    };
    let status = Status {
        source: src,
        tag,
        error: if err.is_some() {
            class::ERR_TRUNCATE
        } else {
            0
        },
        count,
        cancelled: false,
    };
    req.complete(status, err);
}

fn copy_parts(parts: &[RawBuf], cell: &mut [u8]) -> usize {
    let mut off = 0;
    for p in parts {
        if p.len > 0 {
            // SAFETY: send buffers are valid while the send is pending;
            // `cell` has room (callers checked the total against the payload).
            unsafe { std::ptr::copy_nonoverlapping(p.ptr, cell[off..].as_mut_ptr(), p.len) };
        }
        off += p.len;
    }
    off
}

/// Copies bytes `[start, start + out.len())` of the concatenated parts.
fn copy_parts_range(parts: &[RawBuf], start: usize, out: &mut [u8]) -> usize {
    let mut skip = start;
    let mut done = 0;
    for p in parts {
        if skip >= p.len {
            skip -= p.len;
            continue;
        }
        let take = (p.len - skip).min(out.len() - done);
        // SAFETY: as in `copy_parts`; the range is inside part `p`.
        unsafe { std::ptr::copy_nonoverlapping(p.ptr.add(skip), out[done..].as_mut_ptr(), take) };
        done += take;
        skip = 0;
        if done == out.len() {
            break;
        }
    }
    done
}

fn fill_out(data: &OutData, cell: &mut [u8]) -> usize {
    match data {
        OutData::Parts(parts) => copy_parts(parts, cell),
        OutData::Owned(v) => {
            cell[..v.len()].copy_from_slice(v);
            v.len()
        }
        OutData::Empty => 0,
    }
}

fn decode_iov(payload: &[u8]) -> Vec<(u64, u64)> {
    let word = |i: usize| -> u64 {
        payload
            .get(i * 8..i * 8 + 8)
            .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
            .unwrap_or(0)
    };
    let n = word(0) as usize;
    (0..n).map(|k| (word(1 + 2 * k), word(2 + 2 * k))).collect()
}

/// Communicator id of COMM_WORLD.
const WORLD_ID: u32 = 0;
/// Communicator id of the universe communicator: every slot of the
/// segment, rank = slot; the peer communicator through which separately
/// created groups (spawn, connect/accept, join) find each other.
const UNIVERSE_ID: u32 = 2;
/// Communicator id of COMM_SELF.
const SELF_ID: u32 = 1;

/// The native engine: a [`Core`] plus the predefined communicators.
pub struct NativeEngine {
    core: Arc<Core>,
    world: CommRef,
    self_comm: CommRef,
    /// The intercommunicator to the processes that spawned us.
    parent: Option<CommRef>,
}

impl NativeEngine {
    pub fn init() -> Result<NativeEngine> {
        let core = Core::init()?;
        let rank = core
            .world
            .iter()
            .position(|&s| s as usize == core.rank())
            .expect("our slot is in our world") as i32;
        let world = NativeComm::new(
            core.clone(),
            WORLD_ID,
            rank,
            core.world.clone(),
            "MPI_COMM_WORLD",
        );
        let world: CommRef = Arc::new(if core.parent.is_none() && core.world[0] == 0 {
            // The launched job in a fresh segment: every rank claims the
            // world's channel 0 at generation 1, with no messages.
            world.with_coll_channel(coll::ChannelClaim::claim(&core, 0))
        } else {
            // Spawned processes may sit in reused slots whose collective
            // postings are not fresh: agree, as any new communicator does.
            let claim = world.agree_on_channel(true)?;
            world.with_coll_channel(claim)
        });
        let self_comm: CommRef = Arc::new(NativeComm::new(
            core.clone(),
            SELF_ID,
            0,
            vec![core.rank() as i32],
            "MPI_COMM_SELF",
        ));
        let universe = core.universe_comm();
        let parent = match core.parent {
            Some(p) => Some(world.create_intercomm(
                0,
                (rank == 0).then_some(&universe as &dyn crate::backend::Communicator),
                p.root_slot,
                p.tag,
            )?),
            None => None,
        };
        Ok(NativeEngine {
            core,
            world,
            self_comm,
            parent,
        })
    }
}

impl Engine for NativeEngine {
    fn world(&self) -> CommRef {
        self.world.clone()
    }

    fn self_comm(&self) -> CommRef {
        self.self_comm.clone()
    }

    fn processor_name(&self) -> String {
        sys::hostname()
    }

    fn library_version(&self) -> String {
        match crate::env::backend_reason() {
            Some(why) => format!(
                "oxmpi {} (native shared-memory runtime: {why})",
                env!("CARGO_PKG_VERSION")
            ),
            None => format!(
                "oxmpi {} (native shared-memory runtime)",
                env!("CARGO_PKG_VERSION")
            ),
        }
    }

    fn universe_size(&self) -> i32 {
        self.core.pmi().map_or_else(
            || crate::process_manager::default_universe_size(1) as i32,
            |p| p.universe_size() as i32,
        )
    }

    fn parent(&self) -> Option<CommRef> {
        self.parent.clone()
    }

    fn open_port(&self) -> Result<String> {
        self.core.open_port()
    }

    fn close_port(&self, port: &str) -> Result<()> {
        self.core.close_port(port)
    }

    fn publish_name(&self, service: &str, port: Option<&str>) -> Result<()> {
        self.core.publish_name(service, port)
    }

    fn lookup_name(&self, service: &str) -> Result<String> {
        self.core.lookup_name(service)
    }

    fn join(&self, fd: i32) -> Result<CommRef> {
        let me = NativeComm::new(
            self.core.clone(),
            SELF_ID,
            0,
            vec![self.core.rank() as i32],
            "MPI_COMM_SELF",
        )
        .without_id();
        self.core.join(fd, &me)
    }

    fn set_failure_survivable(&self) -> Result<()> {
        if self.core.pmi().is_none() {
            // A singleton has no launcher to survive it.
            return Ok(());
        }
        self.core.seg.set_survivable(self.core.me);
        Ok(())
    }

    fn progress_until(&self, done: &mut dyn FnMut() -> bool) -> Result<()> {
        self.core.wait_until(done)
    }

    fn progress(&self) {
        self.core.progress();
    }

    fn set_interrupt_check(&self, check: Box<dyn Fn() -> Result<()> + Send + Sync>) {
        *self
            .core
            .interrupt
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(check);
    }

    fn abort(&self, code: i32, msg: &str) -> ! {
        abort_job(&self.core, code, msg)
    }

    fn finalize(&self) -> Result<()> {
        if self.core.finalized.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // Let queued sends reach their peers' inboxes before we go.
        self.core.wait_until(|| {
            let st = self.core.lock();
            st.outbox_len == 0 && st.streams_out.is_empty()
        })?;
        if let Some(p) = self.core.pmi() {
            // Our slot may be given to a process spawned later: tell it
            // where we stopped reading our inbox.
            let _st = self.core.lock();
            self.core
                .seg
                .retire_inbox(self.core.me, self.core.head.load(Ordering::Relaxed));
            p.finalize()?;
        }
        Ok(())
    }
}

pub(crate) fn abort_job(core: &Core, code: i32, msg: &str) -> ! {
    if let Some(p) = core.pmi() {
        p.abort(code, msg);
        // The launcher ends every rank; wait for it rather than racing it.
        std::thread::sleep(Duration::from_secs(5));
    }
    std::process::exit(if code == 0 { 1 } else { code & 0xff })
}
