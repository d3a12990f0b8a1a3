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

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::args::{AppSpec, EnvSetting, JobSpec};
use crate::bind;
use crate::deadlock::{self, Monitor, Report};
use crate::io::{Forwarder, Target};
use crate::pmi::PmiServer;
use crate::signals::SignalForwarder;
use crate::sys;

/// Something the controller must react to.
#[derive(Debug)]
pub enum Event {
    /// Rank `rank` has ended and has been reaped.
    Exited { rank: usize, status: ExitStatus },
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
    let jobid = new_jobid();
    let (tx, rx) = mpsc::channel();

    // All channels exist before the first rank starts, so the PMI barrier
    // counts every rank from the beginning.
    let mut ours = Vec::with_capacity(size);
    let mut theirs = Vec::with_capacity(size);
    for _ in 0..size {
        match UnixStream::pair().and_then(|(a, b)| Ok((a, above_stdio(b.into())?))) {
            Ok((a, b)) => {
                ours.push(a);
                theirs.push(b);
            }
            Err(e) => {
                eprintln!("mpiexec: cannot create the PMI channels: {e}");
                return STATUS_SETUP_FAILED;
            }
        }
    }
    let appnums: Vec<usize> = spec
        .apps
        .iter()
        .enumerate()
        .flat_map(|(i, a)| std::iter::repeat(i).take(a.nprocs))
        .collect();
    let (server, pmi_threads) = match PmiServer::start(jobid.clone(), appnums, ours, tx.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mpiexec: cannot start the PMI server: {e}");
            return STATUS_SETUP_FAILED;
        }
    };
    let signals = match SignalForwarder::install(tx.clone()) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("mpiexec: warning: signals will not be forwarded: {e}");
            None
        }
    };

    let launcher_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let compat = std::env::var_os("OXMPI_COMPAT_PATH");
    let mut procs: Vec<Arc<RankProc>> = Vec::with_capacity(size);
    let mut waiters: Vec<JoinHandle<()>> = Vec::with_capacity(size);
    let mut pipes: Vec<(usize, Target, OwnedFd)> = Vec::with_capacity(2 * size);
    let mut guard = KillOnDrop(Vec::new());
    let mut failure: Option<(i32, String)> = None;
    let units = bind::units(spec.bind).unwrap_or_else(|e| {
        eprintln!("mpiexec: warning: ranks will not be bound to CPUs: {e}");
        Vec::new()
    });
    let mut rank = 0;
    'spawn: for app in &spec.apps {
        let env = base_env(spec, app, &launcher_env, compat.as_deref());
        let wdir = app.wdir.as_ref().or(spec.global_wdir.as_ref());
        for _ in 0..app.nprocs {
            let ids = RankIds {
                rank,
                size,
                jobid: &jobid,
            };
            let cpus = (!units.is_empty())
                .then(|| sys::CpuSet::new(&bind::cpus_for_rank(&units, rank, spec.cpus_per_rank)));
            let child = spawn_rank(app, &env, wdir, &ids, &theirs[rank], nofile, cpus);
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    let status = if e.kind() == io::ErrorKind::NotFound {
                        STATUS_NOT_FOUND
                    } else {
                        STATUS_CANNOT_EXEC
                    };
                    let msg = format!("cannot start '{}': {}", app.program, describe(&e));
                    failure = Some((status, msg));
                    break 'spawn;
                }
            };
            let proc = Arc::new(RankProc {
                pid: child.id() as libc::pid_t,
                reaped: Mutex::new(false),
            });
            guard.0.push(Arc::clone(&proc));
            if let Some(out) = child.stdout.take() {
                pipes.push((rank, Target::Stdout, out.into()));
            }
            if let Some(err) = child.stderr.take() {
                pipes.push((rank, Target::Stderr, err.into()));
            }
            // The Child handle is dropped without waiting: the waiter below
            // reaps the process itself.
            drop(child);
            match spawn_waiter(rank, Arc::clone(&proc), Arc::clone(&server), tx.clone()) {
                Ok(w) => {
                    waiters.push(w);
                    procs.push(proc);
                }
                Err(e) => {
                    proc.signal(libc::SIGKILL);
                    let mut reaped = proc.reaped.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = sys::reap(proc.pid);
                    *reaped = true;
                    failure = Some((
                        STATUS_SETUP_FAILED,
                        format!("cannot watch rank {rank}: {e}"),
                    ));
                    break 'spawn;
                }
            }
            rank += 1;
        }
    }
    // The ranks hold their ends now; ours must go so that a rank's exit
    // shows up as end-of-file on its channel.
    drop(theirs);

    let forwarder = match Forwarder::start(size, pipes, spec.tag_output) {
        Ok(f) => Some(f),
        Err(e) => {
            if failure.is_none() {
                failure = Some((STATUS_SETUP_FAILED, format!("cannot forward output: {e}")));
            }
            None
        }
    };

    let threshold = spec.deadlock_timeout.unwrap_or(deadlock::DEFAULT_THRESHOLD);
    let mut ctl = Controller {
        procs: &procs,
        monitor: (!threshold.is_zero()).then(|| Monitor::new(size, threshold)),
        forwarder: forwarder.as_ref(),
        remaining: procs.len(),
        status: None,
        kill_at: None,
        killed: false,
        timeout_at: spec.timeout.map(|t| Instant::now() + t),
        timeout: spec.timeout,
    };
    if let Some((status, msg)) = failure {
        eprintln!("mpiexec: {msg}");
        ctl.status = Some(status);
        ctl.broadcast(libc::SIGKILL);
        ctl.killed = true;
    }
    let status = ctl.run(&rx);

    // Every rank has been reaped. Pass on the rest of their output, close
    // the channels (a descendant may still hold one), clean up.
    if let Some(f) = forwarder {
        f.finish();
    }
    server.shutdown();
    for t in pmi_threads {
        let _ = t.join();
    }
    for w in waiters {
        let _ = w.join();
    }
    server.unlink_shm();
    remove_job_segments(&jobid);
    drop(signals);
    drop(guard);
    status
}

/// Identity of one rank, for its environment.
struct RankIds<'a> {
    rank: usize,
    size: usize,
    jobid: &'a str,
}

fn spawn_rank(
    app: &AppSpec,
    env: &BTreeMap<OsString, OsString>,
    wdir: Option<&std::path::PathBuf>,
    ids: &RankIds<'_>,
    pmi: &OwnedFd,
    nofile: Option<libc::rlimit>,
    cpus: Option<sys::CpuSet>,
) -> io::Result<Child> {
    let fd = pmi.as_raw_fd();
    let mut cmd = Command::new(&app.program);
    cmd.args(&app.args)
        .env_clear()
        .envs(env)
        .envs(rank_env(ids, fd))
        .stdin(if ids.rank == 0 {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = wdir {
        cmd.current_dir(d);
    }
    sys::prepare_rank_exec(&mut cmd, fd, nofile, cpus);
    cmd.spawn()
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
            let _ = events.send(Event::Exited { rank, status });
        })
}

/// Decides the exit status and ends the job.
struct Controller<'a> {
    procs: &'a [Arc<RankProc>],
    /// `None` when disabled (`--deadlock-timeout 0`).
    monitor: Option<Monitor>,
    forwarder: Option<&'a Forwarder>,
    /// Ranks not reaped yet.
    remaining: usize,
    /// Set by the first thing that goes wrong; later ones do not change it
    /// (ranks we terminate then die of our SIGTERM, which is no news).
    status: Option<i32>,
    /// When to SIGKILL the survivors of a termination.
    kill_at: Option<Instant>,
    killed: bool,
    timeout_at: Option<Instant>,
    timeout: Option<Duration>,
}

impl Controller<'_> {
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
        self.status.unwrap_or(0)
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Exited { rank, status } => {
                self.remaining = self.remaining.saturating_sub(1);
                if status.success() {
                    if let Some(m) = &mut self.monitor {
                        m.update(rank, Report::Finished, Instant::now());
                    }
                }
                if status.success() || self.status.is_some() {
                    return;
                }
                if let Some(f) = self.forwarder {
                    f.wait_drained(rank, DRAIN_WAIT);
                }
                if let Some(code) = status.code() {
                    eprintln!("mpiexec: rank {rank} exited with code {code}");
                    self.fail(code);
                } else if let Some(sig) = status.signal() {
                    eprintln!(
                        "mpiexec: rank {rank} killed by signal {sig} ({})",
                        sys::signal_name(sig)
                    );
                    self.fail(128 + sig);
                } else {
                    eprintln!("mpiexec: rank {rank} ended abnormally");
                    self.fail(1);
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
                if let Some(m) = &mut self.monitor {
                    m.update(rank, report, Instant::now());
                }
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
        for p in self.procs {
            p.signal(sig);
        }
    }
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

/// The variables that tell a rank who it is (see the bootstrap contract in
/// `docs/architecture.md`).
fn rank_env(ids: &RankIds<'_>, pmi_fd: i32) -> [(&'static str, String); 7] {
    [
        ("PMI_FD", pmi_fd.to_string()),
        ("PMI_RANK", ids.rank.to_string()),
        ("PMI_SIZE", ids.size.to_string()),
        ("OXMPI_LAUNCHER", crate::VERSION.to_string()),
        ("OXMPI_JOBID", ids.jobid.to_string()),
        // Hydra sets these; single machine, so local == world.
        ("MPI_LOCALNRANKS", ids.size.to_string()),
        ("MPI_LOCALRANKID", ids.rank.to_string()),
    ]
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
