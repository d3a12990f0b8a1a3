//! Running one job: start the ranks, watch them, end them.
//!
//! Threads and what they tell the controller (the thread that called
//! [`run`], through one channel of [`Event`]s):
//!
//! * one waiter per rank: the rank has ended ([`Event::Exited`]);
//! * one PMI thread per rank (`pmi.rs`): the rank called abort, or
//!   reported its state to the deadlock monitor (`deadlock.rs`), or called
//!   `finalize`;
//! * the signal thread (`signals.rs`): the launcher received a signal;
//! * the output thread (`io.rs`) reports nothing; the controller only waits
//!   for a dead rank's pipes to drain before saying that it died, so that the
//!   rank's last words come before the launcher's verdict.
//!
//! The controller owns the deadlock monitor and wakes up when its alarm is
//! due. It decides the exit status and ends the job: SIGTERM to every
//! rank still running, SIGKILL to survivors after a grace period. It never
//! signals a pid it has reaped (see [`RankProc`]), and it returns only after
//! every rank has been reaped, so no process is left behind. Ranks are also
//! started with `PR_SET_PDEATHSIG(SIGKILL)` in case the launcher itself is
//! killed outright. When the job is over, the shared-memory segments the
//! ranks published under `oxmpi.shm.*`, and any segment whose name contains
//! the job id, are unlinked.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::args::{AppSpec, EnvSetting, JobSpec};
use crate::bind;
use crate::deadlock::{self, Monitor, Report};
use crate::io::{Forwarder, Target};
use crate::pmi::{self, PmiServer};
use crate::signals::SignalForwarder;
use crate::sys;
use oxmpi::process_manager as pm;

/// Something the controller must react to.
#[derive(Debug)]
pub enum Event {
    /// The process `pid` in slot `rank` has ended and has been reaped.
    Exited {
        rank: usize,
        pid: libc::pid_t,
        status: ExitStatus,
    },
    /// The process in slot `rank` closed its PMI channel.
    Disconnected { rank: usize },
    /// The process in slot `rank` asked for processes to be spawned.
    Spawn {
        rank: usize,
        fields: HashMap<String, String>,
    },
    /// Rank `rank` sent `cmd=abort exitcode=code`.
    Abort { rank: usize, code: i64 },
    /// Rank `rank` reported its state, or called `finalize`.
    State { rank: usize, report: Report },
    /// The launcher received this signal.
    Signal(i32),
}

/// Exit status of a job ended by `--timeout` (as with coreutils `timeout`).
pub const STATUS_TIMEOUT: i32 = 124;
/// Exit status of a job ended by the deadlock monitor.
pub const STATUS_DEADLOCK: i32 = 125;
/// Exit status when the program cannot be found (as with a shell).
pub const STATUS_NOT_FOUND: i32 = 127;
/// Exit status when the program exists but cannot be executed.
pub const STATUS_CANNOT_EXEC: i32 = 126;
/// Exit status when the job could not be set up at all.
pub const STATUS_SETUP_FAILED: i32 = 1;
/// Exit status for a working directory that does not exist.
pub const STATUS_USAGE: i32 = 2;

/// After a rank fails (or aborts, or the timeout hits) the others get
/// SIGTERM, then SIGKILL this much later.
const FAULT_GRACE: Duration = Duration::from_secs(1);
/// Grace after forwarding SIGINT/SIGTERM/SIGHUP before SIGKILL.
const SIGNAL_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for a dead rank's output before reporting its death.
const DRAIN_WAIT: Duration = Duration::from_millis(250);
/// How long a waiter lets a dead rank's PMI channel close, so that an abort
/// it sent is handled before its exit status.
const PMI_CLOSE_WAIT: Duration = Duration::from_millis(200);

/// One job at a time per process: signal handlers and the open-file limit
/// are process-wide, and the Python binding could call in from two threads.
static JOB_LOCK: Mutex<()> = Mutex::new(());

/// A started rank. The pid is only signalled while `reaped` is false, and
/// it is reaped under the same lock, so a signal can never reach a process
/// that reused the number.
pub struct RankProc {
    pid: libc::pid_t,
    reaped: Mutex<bool>,
}

impl RankProc {
    fn signal(&self, sig: libc::c_int) {
        let reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
        if !*reaped {
            // ESRCH cannot happen for an unreaped child; nothing to do on error.
            let _ = sys::kill(self.pid, sig);
        }
    }
}

/// SIGKILLs every rank not yet reaped when dropped; armed for the whole
/// job so that even a panic in the controller leaves no rank behind.
struct KillOnDrop(Vec<Arc<RankProc>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            p.signal(libc::SIGKILL);
        }
    }
}

/// Runs the job described by `spec` and returns the launcher's exit status.
pub fn run(spec: &JobSpec) -> i32 {
    let _serial = JOB_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    for app in &spec.apps {
        if let Some(dir) = app.wdir.as_ref().or(spec.global_wdir.as_ref()) {
            if !dir.is_dir() {
                eprintln!(
                    "mpiexec: working directory '{}' does not exist or is not a directory",
                    dir.display()
                );
                return STATUS_USAGE;
            }
        }
    }
    let Some(size) = spec
        .apps
        .iter()
        .try_fold(0usize, |acc, a| acc.checked_add(a.nprocs))
    else {
        eprintln!("mpiexec: too many processes");
        return STATUS_USAGE;
    };
    let nofile = sys::raise_nofile_limit((size as u64).saturating_mul(4).saturating_add(64));
    let status = run_job(spec, size, nofile);
    if let Some(old) = nofile {
        sys::restore_nofile_limit(old);
    }
    status
}

fn run_job(spec: &JobSpec, size: usize, nofile: Option<libc::rlimit>) -> i32 {
    let cap = size + pm::spare_slots();
    let shm = match pm::create_segment(cap) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("mpiexec: cannot create the shared-memory segment: {e}");
            return STATUS_SETUP_FAILED;
        }
    };
    let universe = Universe {
        jobid: new_jobid(),
        spec,
        size,
        cap,
        shm,
        adopted: None,
    };
    universe.run(nofile)
}

/// `mpiexec --singleton-server`: the process manager of a program started
/// without a launcher that called `MPI_Comm_spawn` (or another call that
/// needs one). It adopts that process as slot 0 of a universe over the
/// descriptors the runtime passed (`process_manager` and
/// `native/dynproc.rs`) and serves it and whatever it spawns until all
/// are gone.
pub fn serve_singleton() -> i32 {
    let fd = |name: &str| -> Option<OwnedFd> {
        let n: i32 = std::env::var(name).ok()?.trim().parse().ok()?;
        sys::take_inherited_fd(n)
    };
    let (Some(pmi), Some(shm)) = (fd("OXMPI_SERVER_PMI_FD"), fd("OXMPI_SERVER_SHM_FD")) else {
        eprintln!("mpiexec: --singleton-server is started by the oxmpi runtime, not by hand");
        return STATUS_USAGE;
    };
    let cap = match pm::UniverseSegment::open(&shm) {
        Ok(seg) => seg.capacity(),
        Err(e) => {
            eprintln!("mpiexec: {e}");
            return STATUS_SETUP_FAILED;
        }
    };
    // Spawned processes start from our environment (the singleton's) with
    // the mpi4py compatibility path in front, as under mpiexec.
    let spec = JobSpec {
        inherit_env: true,
        mpi4py_compat: true,
        ..JobSpec::default()
    };
    let universe = Universe {
        jobid: new_jobid(),
        spec: &spec,
        size: 1,
        cap,
        shm,
        adopted: Some(UnixStream::from(pmi)),
    };
    universe.run(None)
}

/// One launch: the job started from the command line (or an adopted
/// singleton) and the processes spawned from it, sharing one segment.
struct Universe<'a> {
    jobid: String,
    spec: &'a JobSpec,
    /// Processes of the launched job (slots `0..size`).
    size: usize,
    /// Slots in the segment.
    cap: usize,
    shm: OwnedFd,
    /// The singleton we serve, already running as slot 0.
    adopted: Option<UnixStream>,
}

/// What starting processes needs, shared by the first job and spawns.
struct Starter<'a> {
    spec: &'a JobSpec,
    shm: &'a OwnedFd,
    /// The segment, mapped to recycle slots.
    seg: pm::UniverseSegment,
    server: Arc<PmiServer>,
    events: Sender<Event>,
    launcher_env: Vec<(OsString, OsString)>,
    compat: Option<OsString>,
    nofile: Option<libc::rlimit>,
    units: Vec<Vec<usize>>,
}

/// A started process, for the controller.
struct Started {
    proc: Arc<RankProc>,
    waiter: JoinHandle<()>,
    pipes: Vec<(usize, Target, OwnedFd)>,
}

/// Where a process stands in its universe.
struct Placement<'a> {
    slot: usize,
    rank: usize,
    size: usize,
    jobid: &'a str,
    /// The slots of its COMM_WORLD (spawned jobs only).
    world: Option<&'a str>,
    parent: Option<pm::ParentInfo>,
    reused: bool,
}

impl Starter<'_> {
    /// Starts one process; its PMI channel is registered with the server.
    fn start(
        &self,
        app: &AppSpec,
        env: &BTreeMap<OsString, OsString>,
        at: &Placement<'_>,
        bind: bool,
    ) -> Result<Started, (i32, String)> {
        let (ours, theirs) = UnixStream::pair()
            .and_then(|(a, b)| Ok((a, above_stdio(b.into())?)))
            .map_err(|e| {
                (
                    STATUS_SETUP_FAILED,
                    format!("cannot create a PMI channel: {e}"),
                )
            })?;
        let cpus = (bind && !self.units.is_empty()).then(|| {
            sys::CpuSet::new(&bind::cpus_for_rank(
                &self.units,
                at.rank,
                self.spec.cpus_per_rank,
            ))
        });
        let wdir = app.wdir.as_ref().or(self.spec.global_wdir.as_ref());
        let mut cmd = Command::new(&app.program);
        cmd.args(&app.args)
            .env_clear()
            .envs(env)
            .envs(rank_env(at, theirs.as_raw_fd(), self.shm.as_raw_fd()))
            .stdin(if at.slot == 0 {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(d) = wdir {
            cmd.current_dir(d);
        }
        sys::prepare_rank_exec(
            &mut cmd,
            theirs.as_raw_fd(),
            self.shm.as_raw_fd(),
            self.nofile,
            cpus,
        );
        let mut child = cmd.spawn().map_err(|e| {
            let status = if e.kind() == io::ErrorKind::NotFound {
                STATUS_NOT_FOUND
            } else {
                STATUS_CANNOT_EXEC
            };
            (
                status,
                format!("cannot start '{}': {}", app.program, describe(&e)),
            )
        })?;
        drop(theirs);
        let proc = Arc::new(RankProc {
            pid: child.id() as libc::pid_t,
            reaped: Mutex::new(false),
        });
        let mut pipes = Vec::with_capacity(2);
        if let Some(out) = child.stdout.take() {
            pipes.push((at.slot, Target::Stdout, out.into()));
        }
        if let Some(err) = child.stderr.take() {
            pipes.push((at.slot, Target::Stderr, err.into()));
        }
        // The Child handle is dropped without waiting: the waiter reaps the
        // process itself.
        drop(child);
        let fail = |proc: &Arc<RankProc>, what: String| {
            proc.signal(libc::SIGKILL);
            let mut reaped = proc.reaped.lock().unwrap_or_else(|p| p.into_inner());
            let _ = sys::reap(proc.pid);
            *reaped = true;
            (STATUS_SETUP_FAILED, what)
        };
        if let Err(e) = self.server.attach(at.slot, ours) {
            return Err(fail(&proc, format!("cannot serve rank {}: {e}", at.rank)));
        }
        match spawn_waiter(
            at.slot,
            Arc::clone(&proc),
            Arc::clone(&self.server),
            self.events.clone(),
        ) {
            Ok(waiter) => Ok(Started {
                proc,
                waiter,
                pipes,
            }),
            Err(e) => Err(fail(&proc, format!("cannot watch rank {}: {e}", at.rank))),
        }
    }
}

impl Universe<'_> {
    fn run(self, nofile: Option<libc::rlimit>) -> i32 {
        let spec = self.spec;
        let size = self.size;
        let (tx, rx) = mpsc::channel();
        let appnums: Vec<usize> = if self.adopted.is_some() {
            vec![0]
        } else {
            spec.apps
                .iter()
                .enumerate()
                .flat_map(|(i, a)| std::iter::repeat(i).take(a.nprocs))
                .collect()
        };
        let (server, pmi_threads) =
            match PmiServer::start(self.jobid.clone(), appnums, Vec::new(), tx.clone()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("mpiexec: cannot start the PMI server: {e}");
                    return STATUS_SETUP_FAILED;
                }
            };
        server.with_core(|c| c.set_universe_size(pm::default_universe_size(size)));
        let signals = match SignalForwarder::install(tx.clone()) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("mpiexec: warning: signals will not be forwarded: {e}");
                None
            }
        };
        let seg = match pm::UniverseSegment::open(&self.shm) {
            Ok(seg) => seg,
            Err(e) => {
                eprintln!("mpiexec: cannot map the shared-memory segment: {e}");
                return STATUS_SETUP_FAILED;
            }
        };
        let starter = Starter {
            spec,
            shm: &self.shm,
            seg,
            server: Arc::clone(&server),
            events: tx.clone(),
            launcher_env: std::env::vars_os().collect(),
            compat: std::env::var_os("OXMPI_COMPAT_PATH"),
            nofile,
            units: bind::units(spec.bind).unwrap_or_else(|e| {
                eprintln!("mpiexec: warning: ranks will not be bound to CPUs: {e}");
                Vec::new()
            }),
        };
        let threshold = spec.deadlock_timeout.unwrap_or(deadlock::DEFAULT_THRESHOLD);
        let mut ctl = Controller {
            starter: &starter,
            procs: vec![None; self.cap],
            all: KillOnDrop(Vec::new()),
            waiters: Vec::new(),
            forwarders: Vec::new(),
            slots: (0..self.cap)
                .map(|s| {
                    if s < size {
                        SlotUse::Busy
                    } else {
                        SlotUse::Free { reused: false }
                    }
                })
                .collect(),
            finalized: vec![false; self.cap],
            doomed: Vec::new(),
            monitor: (!threshold.is_zero()).then(|| {
                let mut m = Monitor::new(self.cap, threshold);
                for s in size..self.cap {
                    m.vacate(s);
                }
                m
            }),
            remaining: 0,
            status: None,
            kill_at: None,
            killed: false,
            timeout_at: spec.timeout.map(|t| Instant::now() + t),
            timeout: spec.timeout,
            world_size: size,
            survived: None,
        };

        let mut failure: Option<(i32, String)> = None;
        let mut pipes = Vec::new();
        if let Some(stream) = self.adopted {
            // The singleton is running already: serve it, and count it as a
            // process until its channel closes.
            if let Err(e) = server.attach(0, stream) {
                eprintln!("mpiexec: cannot serve the program: {e}");
                return STATUS_SETUP_FAILED;
            }
            ctl.remaining = 1;
        } else {
            let mut rank = 0;
            'spawn: for app in &spec.apps {
                let env = base_env(spec, app, &starter.launcher_env, starter.compat.as_deref());
                for _ in 0..app.nprocs {
                    let at = Placement {
                        slot: rank,
                        rank,
                        size,
                        jobid: &self.jobid,
                        world: None,
                        parent: None,
                        reused: false,
                    };
                    match starter.start(app, &env, &at, true) {
                        Ok(started) => {
                            pipes.extend(started.pipes);
                            ctl.adopt(rank, started.proc, started.waiter);
                        }
                        Err(f) => {
                            failure = Some(f);
                            break 'spawn;
                        }
                    }
                    rank += 1;
                }
            }
        }
        match Forwarder::start(self.cap, pipes, spec.tag_output) {
            Ok(f) => ctl.forwarders.push(f),
            Err(e) => {
                if failure.is_none() {
                    failure = Some((STATUS_SETUP_FAILED, format!("cannot forward output: {e}")));
                }
            }
        }
        if let Some((status, msg)) = failure {
            eprintln!("mpiexec: {msg}");
            ctl.status = Some(status);
            ctl.broadcast(libc::SIGKILL);
            ctl.killed = true;
        }
        let status = ctl.run(&rx);

        // Every process has been reaped. Pass on the rest of their output,
        // close the channels (a descendant may still hold one), clean up.
        for f in std::mem::take(&mut ctl.forwarders) {
            f.finish();
        }
        server.shutdown();
        for t in pmi_threads {
            let _ = t.join();
        }
        server.join_added();
        for w in std::mem::take(&mut ctl.waiters) {
            let _ = w.join();
        }
        server.unlink_shm();
        remove_job_segments(&self.jobid);
        drop(signals);
        status
    }
}

/// Place of a process in the environment (see the bootstrap contract in
/// `docs/architecture.md` and `oxmpi::process_manager`).
fn rank_env(at: &Placement<'_>, pmi_fd: i32, shm_fd: i32) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("PMI_FD", pmi_fd.to_string()),
        ("PMI_RANK", at.rank.to_string()),
        ("PMI_SIZE", at.size.to_string()),
        ("OXMPI_LAUNCHER", crate::VERSION.to_string()),
        ("OXMPI_JOBID", at.jobid.to_string()),
        // Hydra sets these; single machine, so local == world.
        ("MPI_LOCALNRANKS", at.size.to_string()),
        ("MPI_LOCALRANKID", at.rank.to_string()),
        (pm::SHM_FD, shm_fd.to_string()),
        (pm::SLOT, at.slot.to_string()),
    ];
    if let Some(w) = at.world {
        v.push((pm::WORLD_SLOTS, w.to_string()));
    }
    if let Some(p) = at.parent {
        v.push((pm::PARENT, p.encode()));
    }
    if at.reused {
        v.push((pm::SLOT_REUSED, "1".into()));
    }
    v
}

fn spawn_waiter(
    rank: usize,
    proc: Arc<RankProc>,
    server: Arc<PmiServer>,
    events: Sender<Event>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("mpiexec-wait-{rank}"))
        .stack_size(64 * 1024)
        .spawn(move || {
            // Wait without reaping, so the pid stays ours while we look.
            let gone = sys::wait_exited_nowait(proc.pid).is_ok();
            if gone {
                server.wait_disconnected(rank, PMI_CLOSE_WAIT);
            }
            let status = {
                let mut reaped = proc.reaped.lock().unwrap_or_else(|p| p.into_inner());
                // If someone else in this process reaped our child (ECHILD),
                // its status is lost; report a plain exit.
                let raw = if gone {
                    sys::reap(proc.pid).unwrap_or(0)
                } else {
                    0
                };
                *reaped = true;
                ExitStatus::from_raw(raw)
            };
            let _ = events.send(Event::Exited {
                rank,
                pid: proc.pid,
                status,
            });
        })
}

/// Whether a slot of the segment can take a spawned process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotUse {
    Busy,
    /// Free; `reused` once an earlier occupant has left it.
    Free {
        reused: bool,
    },
    /// Its occupant left without finalizing: what it left in the segment
    /// is not known to be clean, so the slot is not used again.
    Retired,
}

/// Decides the exit status and ends the universe; starts spawned jobs.
struct Controller<'a> {
    starter: &'a Starter<'a>,
    /// The process in each slot now.
    procs: Vec<Option<Arc<RankProc>>>,
    /// Every process ever started (killed if the controller unwinds).
    all: KillOnDrop,
    waiters: Vec<JoinHandle<()>>,
    forwarders: Vec<Forwarder>,
    slots: Vec<SlotUse>,
    /// Whether the slot's current process called finalize.
    finalized: Vec<bool>,
    /// Processes of a spawn that failed half-way, killed by us.
    doomed: Vec<libc::pid_t>,
    /// `None` when disabled (`--deadlock-timeout 0`).
    monitor: Option<Monitor>,
    /// Processes not reaped yet (the adopted singleton: until its channel
    /// closes).
    remaining: usize,
    /// Set by the first thing that goes wrong; later ones do not change it
    /// (ranks we terminate then die of our SIGTERM, which is no news).
    status: Option<i32>,
    /// When to SIGKILL the survivors of a termination.
    kill_at: Option<Instant>,
    killed: bool,
    timeout_at: Option<Instant>,
    timeout: Option<Duration>,
    /// The ranks of the first world (the exit status speaks for them).
    world_size: usize,
    /// The exit status of the first rank of the first world that died
    /// survivably: the job's status if nothing else goes wrong.
    survived: Option<i32>,
}

impl Controller<'_> {
    /// Takes charge of a process started in `slot`.
    fn adopt(&mut self, slot: usize, proc: Arc<RankProc>, waiter: JoinHandle<()>) {
        self.all.0.push(Arc::clone(&proc));
        self.procs[slot] = Some(proc);
        self.slots[slot] = SlotUse::Busy;
        self.finalized[slot] = false;
        self.waiters.push(waiter);
        self.remaining += 1;
        if let Some(m) = &mut self.monitor {
            m.occupy(slot);
        }
    }

    fn run(&mut self, rx: &Receiver<Event>) -> i32 {
        while self.remaining > 0 {
            let timeout_at = self.timeout_at.filter(|_| self.status.is_none());
            let kill_at = self.kill_at.filter(|_| !self.killed);
            let alarm_at = self
                .monitor
                .as_ref()
                .filter(|_| self.status.is_none())
                .and_then(Monitor::alarm_at);
            let wake = timeout_at.into_iter().chain(kill_at).chain(alarm_at).min();
            let event = match wake {
                Some(t) => match rx.recv_timeout(t.saturating_duration_since(Instant::now())) {
                    Ok(e) => Some(e),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(e) => Some(e),
                    Err(_) => break,
                },
            };
            match event {
                Some(e) => self.on_event(e),
                None => {
                    // Whatever arrived while we were waking up comes first:
                    // a rank's `running` report must beat the alarm.
                    while let Ok(e) = rx.try_recv() {
                        self.on_event(e);
                    }
                    self.on_deadline();
                }
            }
        }
        self.status.or(self.survived).unwrap_or(0)
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Exited { rank, pid, status } => {
                self.remaining = self.remaining.saturating_sub(1);
                if let Some(i) = self.doomed.iter().position(|&d| d == pid) {
                    self.doomed.swap_remove(i);
                    return;
                }
                let current = self.procs[rank].as_ref().is_some_and(|p| p.pid == pid);
                if current {
                    self.procs[rank] = None;
                    self.slots[rank] = if status.success() && self.finalized[rank] {
                        SlotUse::Free { reused: true }
                    } else {
                        SlotUse::Retired
                    };
                }
                let finalized = self.finalized.get(rank).copied().unwrap_or(false);
                // A survivable process that ends without finalizing has
                // failed, whatever its exit status: its peers must learn it.
                let failed_survivably =
                    current && !finalized && self.starter.seg.is_survivable(rank);
                if status.success() && !failed_survivably {
                    if let Some(m) = &mut self.monitor {
                        m.update(rank, Report::Finished, Instant::now());
                        if current && matches!(self.slots[rank], SlotUse::Free { .. }) {
                            m.vacate(rank);
                        }
                    }
                }
                if (status.success() && !failed_survivably) || self.status.is_some() {
                    return;
                }
                for f in &self.forwarders {
                    f.wait_drained(rank, DRAIN_WAIT);
                }
                let (how, code) = if let Some(code) = status.code() {
                    (format!("exited with code {code}"), code)
                } else if let Some(sig) = status.signal() {
                    (
                        format!("killed by signal {sig} ({})", sys::signal_name(sig)),
                        128 + sig,
                    )
                } else {
                    ("ended abnormally".to_string(), 1)
                };
                if failed_survivably {
                    // A spawned process or a pool worker: its peers learn
                    // of it through their calls (ERR_PROC_FAILED), and
                    // the job goes on (see `shm.rs`, "Failed processes").
                    eprintln!(
                        "mpiexec: rank {rank} {how}; the job goes on, its peers see it as failed"
                    );
                    self.starter.seg.mark_failed(rank);
                    if let Some(m) = &mut self.monitor {
                        m.vacate(rank);
                    }
                    if rank < self.world_size {
                        self.survived.get_or_insert(code);
                    }
                    return;
                }
                eprintln!("mpiexec: rank {rank} {how}");
                self.fail(code);
            }
            Event::Disconnected { rank } => {
                // Only the adopted singleton is not our child: its channel
                // closing is its exit.
                if rank == 0 && self.procs[0].is_none() && self.slots[0] == SlotUse::Busy {
                    self.slots[0] = SlotUse::Retired;
                    self.remaining = self.remaining.saturating_sub(1);
                    if let Some(m) = &mut self.monitor {
                        m.update(0, Report::Finished, Instant::now());
                    }
                }
            }
            Event::Abort { rank, code } => {
                if self.status.is_none() {
                    eprintln!("mpiexec: rank {rank} called MPI_Abort with error code {code}");
                    // An exit status of 0 would claim success.
                    self.fail(code.clamp(1, 255) as i32);
                }
            }
            Event::State { rank, report } => {
                if report == Report::Finished {
                    if let Some(f) = self.finalized.get_mut(rank) {
                        *f = true;
                    }
                }
                if let Some(m) = &mut self.monitor {
                    m.update(rank, report, Instant::now());
                }
            }
            Event::Spawn { rank, fields } => {
                let line = match self.spawn(rank, &fields) {
                    Ok((tag, slots)) => pmi::format_reply(
                        "oxmpi_spawn_result",
                        &[
                            ("rc", "0"),
                            ("tag", &tag.to_string()),
                            ("slots", &pm::slot_list(&slots)),
                        ],
                    ),
                    Err(msg) => pmi::format_reply(
                        "oxmpi_spawn_result",
                        &[("rc", "-1"), ("msg", &oxmpi_percent_encode(&msg))],
                    ),
                };
                self.starter.server.send(rank, &line);
            }
            Event::Signal(sig) if sig == libc::SIGUSR1 || sig == libc::SIGUSR2 => {
                self.broadcast(sig);
            }
            Event::Signal(sig) => {
                if self.status.is_none() {
                    eprintln!(
                        "mpiexec: received {}, ending the job",
                        sys::signal_name(sig)
                    );
                    self.status = Some(128 + sig);
                    self.broadcast(sig);
                    self.kill_at = Some(Instant::now() + SIGNAL_GRACE);
                } else if !self.killed {
                    // Asked again while ending the job: stop waiting.
                    self.broadcast(libc::SIGKILL);
                    self.killed = true;
                }
            }
        }
    }

    /// Starts the processes of an `oxmpi_spawn` request from `from`; on
    /// success the connection tag and the new processes' slots.
    fn spawn(
        &mut self,
        from: usize,
        fields: &HashMap<String, String>,
    ) -> Result<(i32, Vec<usize>), String> {
        if self.status.is_some() {
            return Err("the job is ending".into());
        }
        let req = SpawnRequest::parse(fields)?;
        let free: Vec<usize> = (0..self.slots.len())
            .filter(|&s| matches!(self.slots[s], SlotUse::Free { .. }))
            .collect();
        let wanted: usize = req.commands.iter().map(|c| c.maxprocs).sum();
        let minimum: usize = req.commands.iter().map(|c| c.soft_min).sum();
        let n = wanted.min(free.len());
        if n < minimum || n == 0 {
            return Err(format!(
                "cannot start {wanted} more processes: {} of the universe's {} slots are \
                 free (set OXMPI_SPAWN_SLOTS before starting the job for more)",
                free.len(),
                self.slots.len()
            ));
        }
        // With `soft`, each command gets what is left, in order.
        let mut counts = Vec::with_capacity(req.commands.len());
        let mut left = n;
        for c in &req.commands {
            let k = c.maxprocs.min(left);
            counts.push(k);
            left -= k;
        }
        let slots: Vec<usize> = free[..n].to_vec();
        let appnums: Vec<usize> = counts
            .iter()
            .enumerate()
            .flat_map(|(i, &k)| std::iter::repeat(i).take(k))
            .collect();
        let tag = self
            .starter
            .server
            .with_core(|c| c.new_tag())
            .ok_or("no more connection tags")?;
        let jobname = self
            .starter
            .server
            .with_core(|c| c.add_job(&slots, &appnums));
        let world = pm::slot_list(&slots);
        let parent = pm::ParentInfo {
            tag,
            root_slot: from as i32,
        };
        let mut pipes = Vec::new();
        let mut started: Vec<(usize, Started)> = Vec::new();
        let mut error = None;
        let mut rank = 0;
        'start: for (c, &count) in req.commands.iter().zip(&counts) {
            let app = c.app_spec();
            let mut env = base_env(
                self.starter.spec,
                &app,
                &self.starter.launcher_env,
                self.starter.compat.as_deref(),
            );
            for (k, v) in &c.env {
                env.insert(k.into(), v.into());
            }
            for _ in 0..count {
                let slot = slots[rank];
                let reused = self.slots[slot] == (SlotUse::Free { reused: true });
                if reused {
                    self.starter.seg.recycle_slot(slot);
                }
                let at = Placement {
                    slot,
                    rank,
                    size: n,
                    jobid: &jobname,
                    world: Some(&world),
                    parent: Some(parent),
                    reused,
                };
                match self.starter.start(&app, &env, &at, false) {
                    Ok(s) => started.push((slot, s)),
                    Err((_, msg)) => {
                        error = Some(msg);
                        break 'start;
                    }
                }
                rank += 1;
            }
        }
        for (slot, s) in started {
            pipes.extend(s.pipes);
            self.adopt(slot, s.proc, s.waiter);
        }
        if let Some(msg) = error {
            // Those that did start cannot connect to anyone: end them, and
            // do not count their deaths as the job's failure.
            for &slot in &slots {
                if let Some(p) = self.procs[slot].take() {
                    p.signal(libc::SIGKILL);
                    self.doomed.push(p.pid);
                    self.slots[slot] = SlotUse::Retired;
                }
            }
            return Err(msg);
        }
        match Forwarder::start(self.slots.len(), pipes, self.starter.spec.tag_output) {
            Ok(f) => self.forwarders.push(f),
            Err(e) => eprintln!("mpiexec: warning: cannot forward spawned output: {e}"),
        }
        Ok((tag, slots))
    }

    fn on_deadline(&mut self) {
        let now = Instant::now();
        if let Some(k) = self.kill_at {
            if !self.killed && now >= k {
                self.broadcast(libc::SIGKILL);
                self.killed = true;
            }
        }
        if let (Some(t), Some(limit)) = (self.timeout_at, self.timeout) {
            if self.status.is_none() && now >= t {
                eprintln!(
                    "mpiexec: job timed out after {} s; ending it",
                    limit.as_secs_f64()
                );
                self.fail(STATUS_TIMEOUT);
            }
        }
        if self.status.is_none() {
            if let Some(report) = self.monitor.as_ref().and_then(|m| m.check(now)) {
                // One write, so that no rank's output lands inside it.
                eprint!("{report}");
                self.fail(STATUS_DEADLOCK);
            }
        }
    }

    /// Records the job's status and starts ending it: SIGTERM now, SIGKILL
    /// after [`FAULT_GRACE`].
    fn fail(&mut self, status: i32) {
        self.status = Some(status);
        self.broadcast(libc::SIGTERM);
        self.kill_at = Some(Instant::now() + FAULT_GRACE);
    }

    fn broadcast(&self, sig: libc::c_int) {
        for p in self.procs.iter().flatten() {
            p.signal(sig);
        }
    }
}

/// One command of an `oxmpi_spawn` request (see `bootstrap.rs`).
struct SpawnCmd {
    command: String,
    args: Vec<String>,
    maxprocs: usize,
    /// The fewest processes `soft` accepts (`maxprocs` without it).
    soft_min: usize,
    wdir: Option<std::path::PathBuf>,
    /// Extra directories to find the command in (`path`).
    path: Vec<String>,
    env: Vec<(String, String)>,
}

struct SpawnRequest {
    commands: Vec<SpawnCmd>,
}

impl SpawnRequest {
    fn parse(f: &HashMap<String, String>) -> Result<SpawnRequest, String> {
        let get = |k: &str| f.get(k).map(|v| oxmpi_percent_decode(v));
        let num = |k: &str| -> Result<usize, String> {
            get(k)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("malformed spawn request ({k})"))
        };
        let ncmds = num("ncmds")?;
        let mut commands = Vec::with_capacity(ncmds);
        for i in 0..ncmds {
            let command = get(&format!("cmd{i}")).ok_or("spawn request without a command")?;
            let maxprocs = num(&format!("maxprocs{i}"))?;
            let argc = num(&format!("argc{i}"))?;
            let args = (0..argc)
                .map(|j| get(&format!("arg{i}_{j}")).unwrap_or_default())
                .collect();
            let ninfo = num(&format!("ninfo{i}"))?;
            let mut c = SpawnCmd {
                command,
                args,
                maxprocs,
                soft_min: maxprocs,
                wdir: None,
                path: Vec::new(),
                env: Vec::new(),
            };
            for j in 0..ninfo {
                let key = get(&format!("infokey{i}_{j}")).unwrap_or_default();
                let val = get(&format!("infoval{i}_{j}")).unwrap_or_default();
                match key.as_str() {
                    "wdir" => c.wdir = Some(val.into()),
                    "path" => c.path = val.split(':').map(String::from).collect(),
                    "soft" => c.soft_min = soft_minimum(&val, maxprocs)?,
                    "env" => {
                        for line in val.lines() {
                            if let Some((k, v)) = line.split_once('=') {
                                c.env.push((k.trim().to_owned(), v.to_owned()));
                            }
                        }
                    }
                    // One machine: every host is this one.
                    "host" | "hostfile" | "arch" | "file" => {}
                    _ => {}
                }
            }
            commands.push(c);
        }
        Ok(SpawnRequest { commands })
    }
}

impl SpawnCmd {
    /// The command as a group of the launcher's job (a `path` hint is
    /// searched before `PATH`).
    fn app_spec(&self) -> AppSpec {
        let program = if self.command.contains('/') {
            self.command.clone()
        } else {
            self.path
                .iter()
                .map(|d| std::path::Path::new(d).join(&self.command))
                .find(|p| p.is_file())
                .map_or_else(|| self.command.clone(), |p| p.display().to_string())
        };
        AppSpec {
            nprocs: self.maxprocs,
            nprocs_given: true,
            program,
            args: self.args.clone(),
            env: Vec::new(),
            wdir: self.wdir.clone(),
        }
    }
}

/// The smallest count of MPI's `soft` info value (`1:4`, `2,4`, `1:8:2`,
/// `3`) that is at most `maxprocs`.
fn soft_minimum(v: &str, maxprocs: usize) -> Result<usize, String> {
    let mut best: Option<usize> = None;
    for part in v.split(',') {
        let nums: Vec<usize> = part
            .split(':')
            .map(|t| t.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("malformed soft value {v:?}"))?;
        let (lo, hi, step) = match nums[..] {
            [a] => (a, a, 1),
            [a, b] => (a, b, 1),
            [a, b, c] if c > 0 => (a, b, c),
            _ => return Err(format!("malformed soft value {v:?}")),
        };
        let mut k = lo;
        while k <= hi && k <= maxprocs {
            best = Some(best.map_or(k, |b| b.min(k)));
            k += step;
        }
    }
    best.ok_or_else(|| format!("soft value {v:?} allows no count up to {maxprocs}"))
}

fn oxmpi_percent_encode(s: &str) -> String {
    oxmpi::process_manager::percent_encode(s)
}

fn oxmpi_percent_decode(s: &str) -> String {
    oxmpi::process_manager::percent_decode(s)
}

/// Environment variables inherited from the launcher that would make a rank
/// believe it belongs to some other launcher's job (we set our own `PMI_*`).
fn is_foreign_launch_var(name: &OsStr) -> bool {
    let n = name.as_bytes();
    n.starts_with(b"PMI_")
        || n.starts_with(b"PMIX_")
        || n.starts_with(b"OMPI_COMM_WORLD_")
        || n == b"OXMPI_LAUNCHER"
        || n == b"OXMPI_JOBID"
}

/// The environment shared by every rank of `app`, before the per-rank
/// variables: the launcher's (unless `-genvnone`), then `-genv`/`-x`, then
/// the group's `-env`, then the mpi4py compatibility path in front of
/// `PYTHONPATH`.
pub fn base_env(
    spec: &JobSpec,
    app: &AppSpec,
    launcher: &[(OsString, OsString)],
    compat_path: Option<&OsStr>,
) -> BTreeMap<OsString, OsString> {
    let mut env = BTreeMap::new();
    if spec.inherit_env {
        for (k, v) in launcher {
            if !is_foreign_launch_var(k) {
                env.insert(k.clone(), v.clone());
            }
        }
    }
    for setting in &spec.global_env {
        match setting {
            EnvSetting::Set(n, v) => {
                env.insert(n.into(), v.into());
            }
            EnvSetting::Export(n) => {
                if let Some((_, v)) = launcher.iter().find(|(k, _)| k == OsStr::new(n)) {
                    env.insert(n.into(), v.clone());
                }
            }
        }
    }
    for (n, v) in &app.env {
        env.insert(n.into(), v.into());
    }
    if spec.mpi4py_compat {
        if let Some(compat) = compat_path.filter(|c| !c.is_empty()) {
            let mut path = compat.to_os_string();
            if let Some(old) = env.get(OsStr::new("PYTHONPATH")).filter(|o| !o.is_empty()) {
                path.push(":");
                path.push(old);
            }
            env.insert("PYTHONPATH".into(), path);
        }
    }
    env
}

/// `oxmpi-<launcher pid>-<8 random hex digits>`: unique across concurrent
/// jobs, and also the PMI kvsname.
fn new_jobid() -> String {
    let mut b = [0u8; 4];
    let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    let r = match random {
        Ok(()) => u32::from_le_bytes(b),
        Err(_) => {
            // No /dev/urandom (odd container): time is unique enough.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
                .unwrap_or(0);
            t.rotate_left(7)
        }
    };
    format!("oxmpi-{}-{r:08x}", std::process::id())
}

/// Moves a descriptor that landed on 0, 1 or 2 (the launcher was started
/// with a closed standard stream) above them, where the child's stdio setup
/// cannot overwrite it.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        Ok(fd)
    } else {
        // try_clone uses F_DUPFD_CLOEXEC with a minimum of 3.
        fd.try_clone()
    }
}

/// Unlinks every POSIX shared-memory object whose name contains `jobid`.
///
/// The runtime names its segments after the job id and publishes them
/// under `oxmpi.shm.*`, which [`PmiServer::unlink_shm`] handles; this
/// sweep also catches a segment created by a rank killed before it could
/// publish the name. The job id holds the launcher's pid and 32 random
/// bits, so no other job's segment matches.
fn remove_job_segments(jobid: &str) {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.contains(jobid) {
            if let Err(e) = sys::shm_unlink(&format!("/{name}")) {
                eprintln!("mpiexec: warning: cannot remove shared memory '/{name}': {e}");
            }
        }
    }
}

/// An OS error without std's " (os error N)" suffix, for messages.
pub(crate) fn describe(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{parse, Command as Cmd};

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    fn spec(args: &str) -> JobSpec {
        let v: Vec<String> = args.split_whitespace().map(String::from).collect();
        match parse(&v).unwrap() {
            Cmd::Run(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn env_of(
        args: &str,
        launcher: &[(&str, &str)],
        compat: Option<&str>,
    ) -> Vec<(String, String)> {
        let s = spec(args);
        let l: Vec<(OsString, OsString)> = launcher.iter().map(|(k, v)| (os(k), os(v))).collect();
        base_env(&s, &s.apps[0], &l, compat.map(OsStr::new))
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn inherits_and_overrides() {
        let got = env_of(
            "-genv A g -x B=x -env A local prog",
            &[
                ("A", "launcher"),
                ("HOME", "/h"),
                ("PMI_RANK", "9"),
                ("PMIX_RANK", "1"),
            ],
            None,
        );
        assert_eq!(got, pairs(&[("A", "local"), ("B", "x"), ("HOME", "/h")]));
    }

    #[test]
    fn genvnone_keeps_only_explicit_settings() {
        let got = env_of(
            "-genvnone -x HOME -x MISSING -genvlist USER -genv Z 1 prog",
            &[("HOME", "/h"), ("USER", "u"), ("PATH", "/bin")],
            None,
        );
        assert_eq!(got, pairs(&[("HOME", "/h"), ("USER", "u"), ("Z", "1")]));
    }

    #[test]
    fn compat_path_goes_first() {
        let got = env_of("prog", &[("PYTHONPATH", "/a:/b")], Some("/compat"));
        assert_eq!(got, pairs(&[("PYTHONPATH", "/compat:/a:/b")]));
        let got = env_of("prog", &[], Some("/compat"));
        assert_eq!(got, pairs(&[("PYTHONPATH", "/compat")]));
        let got = env_of("prog", &[("PYTHONPATH", "/a")], Some(""));
        assert_eq!(got, pairs(&[("PYTHONPATH", "/a")]));
        let got = env_of(
            "--no-mpi4py-compat prog",
            &[("PYTHONPATH", "/a")],
            Some("/c"),
        );
        assert_eq!(got, pairs(&[("PYTHONPATH", "/a")]));
    }

    #[test]
    fn jobid_shape() {
        let a = new_jobid();
        let b = new_jobid();
        let prefix = format!("oxmpi-{}-", std::process::id());
        assert!(a.starts_with(&prefix), "{a}");
        assert_eq!(a.len(), prefix.len() + 8);
        assert_ne!(a, b);
    }

    #[test]
    fn describe_strips_os_error() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(describe(&e), "No such file or directory");
    }
}
