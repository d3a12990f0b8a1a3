//! The PMI-1 server: one key-value space per job, reached by each rank
//! through its inherited socket (`PMI_FD`).
//!
//! The protocol is the line-based PMI-1 wire protocol of MPICH's simple PMI
//! (`cmd=NAME key=value ...\n`, one request, one reply), so both oxmpi's own
//! runtime and PMI-1 programs built against MPICH can talk to this launcher.
//! The supported commands are listed in `docs/architecture.md`; on top of
//! PMI-1 the server understands oxmpi's one-way `oxmpi_state` report, which
//! feeds the deadlock monitor (`deadlock.rs`) and gets no reply.
//!
//! The file has three layers: the line codec ([`parse_request`],
//! [`format_reply`]); [`Core`], the protocol state machine with no I/O (it
//! turns a request into [`Effect`]s, so it can be tested without sockets);
//! and [`PmiServer`], which owns the sockets and runs one thread per rank.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::deadlock::{self, Report};
use crate::job::Event;

/// Longest kvsname, key and value we accept, as announced by `get_maxes`.
pub const KVSNAME_MAX: usize = 256;
pub const KEYLEN_MAX: usize = 256;
pub const VALLEN_MAX: usize = 4096;

/// Longest request line: a `put` with maximal name, key and value fits with
/// plenty to spare. A longer line is a protocol violation and ends the
/// connection rather than letting a rank grow the launcher's memory.
const LINE_MAX: usize = 256 * 1024;

/// Key prefix whose values name shared-memory segments to unlink at job end.
pub const SHM_KEY_PREFIX: &str = "oxmpi.shm.";

/// A rank that does not read its replies must not stall the launcher.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// One parsed request line: `cmd=NAME` plus its other `key=value` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The value of the `cmd` field.
    pub cmd: &'a str,
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Request<'a> {
    /// The value of field `key`, if present (the first one wins).
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

/// Why a line is not a PMI-1 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Blank line (ignored; no reply).
    Empty,
    /// No `cmd=` field (`mcmd=` multi-line requests are not supported).
    MissingCmd,
    /// A token without `=`.
    BadToken,
}

impl fmt::Display for ParseError {
    /// The `msg=` text sent back (PMI-1 messages contain no spaces).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Empty => "empty_request",
            ParseError::MissingCmd => "missing_cmd",
            ParseError::BadToken => "malformed_request",
        })
    }
}

/// Parses one request line (with or without its trailing newline).
///
/// Fields are separated by spaces; each is `key=value`, split at the first
/// `=`, so a value may itself contain `=`. PMI-1 values cannot contain
/// spaces, so no quoting exists.
pub fn parse_request(line: &str) -> Result<Request<'_>, ParseError> {
    let mut cmd = None;
    let mut fields = Vec::new();
    for token in line.split_ascii_whitespace() {
        let (k, v) = token.split_once('=').ok_or(ParseError::BadToken)?;
        if k == "cmd" && cmd.is_none() {
            cmd = Some(v);
        } else {
            fields.push((k, v));
        }
    }
    match cmd {
        Some(cmd) => Ok(Request { cmd, fields }),
        None if fields.is_empty() => Err(ParseError::Empty),
        None => Err(ParseError::MissingCmd),
    }
}

/// Formats one reply line, newline included: `cmd=NAME k=v ...\n`.
pub fn format_reply(cmd: &str, fields: &[(&str, &str)]) -> String {
    let mut s = format!("cmd={cmd}");
    for (k, v) in fields {
        s.push(' ');
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s.push('\n');
    s
}

/// What handling a request requires the server to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Write `line` to rank `rank`'s socket.
    Send { rank: usize, line: String },
    /// The rank called `PMI_Abort` (i.e. `MPI_Abort`) with this exit code.
    Abort { code: i64 },
    /// The rank reported its state (`oxmpi_state`), or called `finalize`
    /// ([`Report::Finished`]); for the deadlock monitor.
    State { report: Report },
    /// The rank asked for processes to be spawned (`oxmpi_spawn`); the
    /// controller starts them and replies.
    Spawn { fields: HashMap<String, String> },
}

/// Key-value space and barrier of one job of the universe.
#[derive(Debug)]
struct JobKvs {
    name: String,
    kvs: HashMap<String, String>,
}

/// What the server knows of one slot's current occupant.
#[derive(Debug, Clone, Copy, Default)]
struct SlotState {
    job: usize,
    appnum: usize,
    connected: bool,
    in_barrier: bool,
}

/// The PMI-1 state machine of a universe (the launched job and the jobs
/// spawned from it), free of I/O. Ranks are addressed by slot.
#[derive(Debug)]
pub struct Core {
    jobs: Vec<JobKvs>,
    slots: Vec<SlotState>,
    shm_names: BTreeSet<String>,
    /// The name service of `MPI_Publish_name` (percent-encoded values).
    names: HashMap<String, String>,
    /// Next connection tag (odd; a port uses it and the next number).
    next_tag: i32,
    universe_size: usize,
}

/// Tags handed out stay below the runtime's join tag.
const TAG_LIMIT: i32 = 1 << 29;

impl Core {
    /// A job with one rank per entry of `appnums` (each rank's MPMD group).
    /// Every rank starts out connected: the barrier must wait for a rank
    /// that has not said anything yet.
    pub fn new(jobid: String, appnums: Vec<usize>) -> Self {
        let n = appnums.len();
        Core {
            jobs: vec![JobKvs {
                name: jobid,
                kvs: HashMap::new(),
            }],
            slots: appnums
                .into_iter()
                .map(|appnum| SlotState {
                    job: 0,
                    appnum,
                    connected: true,
                    in_barrier: false,
                })
                .collect(),
            shm_names: BTreeSet::new(),
            names: HashMap::new(),
            next_tag: 1,
            universe_size: n,
        }
    }

    /// The `MPI_UNIVERSE_SIZE` reported to ranks.
    pub fn set_universe_size(&mut self, n: usize) {
        self.universe_size = n;
    }

    /// Registers a spawned job: `slots[i]` holds its rank i, of MPMD group
    /// `appnums[i]`; returns its kvsname.
    pub fn add_job(&mut self, slots: &[usize], appnums: &[usize]) -> String {
        let name = format!("{}-s{}", self.jobs[0].name, self.jobs.len());
        let job = self.jobs.len();
        self.jobs.push(JobKvs {
            name: name.clone(),
            kvs: HashMap::new(),
        });
        for (&slot, &appnum) in slots.iter().zip(appnums) {
            if self.slots.len() <= slot {
                self.slots.resize(slot + 1, SlotState::default());
            }
            self.slots[slot] = SlotState {
                job,
                appnum,
                connected: true,
                in_barrier: false,
            };
        }
        name
    }

    /// A tag unique in the universe (connections between groups).
    pub fn new_tag(&mut self) -> Option<i32> {
        let t = self.next_tag;
        if t + 1 >= TAG_LIMIT {
            return None;
        }
        self.next_tag += 2;
        Some(t)
    }

    /// Whether rank `rank` still holds its end of the channel.
    pub fn is_connected(&self, rank: usize) -> bool {
        self.slots.get(rank).is_some_and(|s| s.connected)
    }

    /// Shared-memory segment names published under [`SHM_KEY_PREFIX`].
    pub fn shm_names(&self) -> impl Iterator<Item = &str> {
        self.shm_names.iter().map(String::as_str)
    }

    fn job_of(&self, rank: usize) -> usize {
        self.slots.get(rank).map_or(0, |s| s.job)
    }

    /// Handles one request line from `rank`.
    pub fn handle(&mut self, rank: usize, line: &str) -> Vec<Effect> {
        let reply = |cmd: &str, fields: &[(&str, &str)]| {
            vec![Effect::Send {
                rank,
                line: format_reply(cmd, fields),
            }]
        };
        let req = match parse_request(line) {
            Ok(r) => r,
            Err(ParseError::Empty) => return Vec::new(),
            Err(e) => return reply("error", &[("rc", "-1"), ("msg", &e.to_string())]),
        };
        let job = self.job_of(rank);
        match req.cmd {
            "init" => {
                let v = req.get("pmi_version").unwrap_or("1");
                let (rc, msg) = if v == "1" {
                    ("0", None)
                } else {
                    ("-1", Some("unsupported_pmi_version"))
                };
                let mut f = vec![("pmi_version", "1"), ("pmi_subversion", "1"), ("rc", rc)];
                if let Some(m) = msg {
                    f.push(("msg", m));
                }
                reply("response_to_init", &f)
            }
            "get_maxes" => reply(
                "maxes",
                &[
                    ("kvsname_max", &KVSNAME_MAX.to_string()),
                    ("keylen_max", &KEYLEN_MAX.to_string()),
                    ("vallen_max", &VALLEN_MAX.to_string()),
                    ("rc", "0"),
                ],
            ),
            "get_appnum" => {
                let appnum = self.slots.get(rank).map_or(0, |s| s.appnum);
                reply("appnum", &[("appnum", &appnum.to_string()), ("rc", "0")])
            }
            "get_my_kvsname" => reply(
                "my_kvsname",
                &[("kvsname", &self.jobs[job].name.clone()), ("rc", "0")],
            ),
            "get_universe_size" => reply(
                "universe_size",
                &[("size", &self.universe_size.to_string()), ("rc", "0")],
            ),
            "put" => {
                let result = self.put(job, &req);
                match result {
                    Ok(()) => reply("put_result", &[("rc", "0"), ("msg", "success")]),
                    Err(msg) => reply("put_result", &[("rc", "-1"), ("msg", &msg)]),
                }
            }
            "get" => match self.get(job, &req) {
                Ok(value) => reply(
                    "get_result",
                    &[("rc", "0"), ("msg", "success"), ("value", value)],
                ),
                Err(msg) => reply("get_result", &[("rc", "-1"), ("msg", &msg)]),
            },
            "barrier_in" => {
                if let Some(s) = self.slots.get_mut(rank) {
                    s.in_barrier = true;
                }
                self.release_barrier(job)
            }
            "finalize" => {
                // The controller must learn of the finalize before the
                // rank, acknowledged, can exit: an exit without finalize
                // means something else (a survivable process has failed).
                let mut out = vec![Effect::State {
                    report: Report::Finished,
                }];
                out.extend(reply("finalize_ack", &[]));
                out
            }
            // One-way: the rank does not read a reply, so none is sent, not
            // even for a malformed report (which is ignored).
            "oxmpi_state" => {
                deadlock::parse_report(req.get("state"), req.get("call"), req.get("peer"))
                    .map(|report| Effect::State { report })
                    .into_iter()
                    .collect()
            }
            "abort" => {
                let code = req
                    .get("exitcode")
                    .and_then(|c| c.parse::<i64>().ok())
                    .unwrap_or(1);
                vec![Effect::Abort { code }]
            }
            // The controller starts the processes and replies.
            "oxmpi_spawn" => vec![Effect::Spawn {
                fields: req
                    .fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            }],
            "oxmpi_open_port" => match self.new_tag() {
                Some(tag) => reply(
                    "oxmpi_open_port_result",
                    &[
                        ("rc", "0"),
                        ("tag", &tag.to_string()),
                        ("universe", &self.jobs[0].name.clone()),
                    ],
                ),
                None => reply(
                    "oxmpi_open_port_result",
                    &[("rc", "-1"), ("msg", "no_more_ports")],
                ),
            },
            "oxmpi_publish" => {
                let (Some(service), Some(port)) = (req.get("service"), req.get("port")) else {
                    return reply(
                        "oxmpi_publish_result",
                        &[("rc", "-1"), ("msg", "missing_field")],
                    );
                };
                if self.names.contains_key(service) {
                    return reply(
                        "oxmpi_publish_result",
                        &[("rc", "-1"), ("msg", "service%20already%20published")],
                    );
                }
                self.names.insert(service.to_owned(), port.to_owned());
                reply("oxmpi_publish_result", &[("rc", "0")])
            }
            "oxmpi_unpublish" => match req.get("service").and_then(|s| self.names.remove(s)) {
                Some(_) => reply("oxmpi_unpublish_result", &[("rc", "0")]),
                None => reply(
                    "oxmpi_unpublish_result",
                    &[("rc", "-1"), ("msg", "service%20not%20published")],
                ),
            },
            "oxmpi_lookup" => match req.get("service").and_then(|s| self.names.get(s)) {
                Some(port) => reply(
                    "oxmpi_lookup_result",
                    &[("rc", "0"), ("port", &port.clone())],
                ),
                None => reply(
                    "oxmpi_lookup_result",
                    &[("rc", "-1"), ("msg", "service%20name%20not%20published")],
                ),
            },
            other => reply(
                &format!("{other}_result"),
                &[("rc", "-1"), ("msg", "unknown_command")],
            ),
        }
    }

    /// Records that `rank` closed its channel (exit, or finished with PMI).
    /// It no longer counts for barriers, which may complete as a result.
    pub fn disconnect(&mut self, rank: usize) -> Vec<Effect> {
        let job = self.job_of(rank);
        if let Some(s) = self.slots.get_mut(rank) {
            s.connected = false;
            s.in_barrier = false;
        }
        self.release_barrier(job)
    }

    fn check_kvsname(&self, job: usize, req: &Request<'_>) -> Result<(), String> {
        match req.get("kvsname") {
            Some(k) if k != self.jobs[job].name => Err("unknown_kvsname".into()),
            _ => Ok(()),
        }
    }

    fn put(&mut self, job: usize, req: &Request<'_>) -> Result<(), String> {
        self.check_kvsname(job, req)?;
        let key = req.get("key").ok_or("missing_key")?;
        let value = req.get("value").ok_or("missing_value")?;
        if key.is_empty() {
            return Err("missing_key".into());
        }
        if key.len() > KEYLEN_MAX {
            return Err("key_too_long".into());
        }
        if value.len() > VALLEN_MAX {
            return Err("value_too_long".into());
        }
        if key.starts_with(SHM_KEY_PREFIX) && !value.is_empty() {
            self.shm_names.insert(value.to_string());
        }
        // Overwriting is allowed: the newest value wins.
        self.jobs[job]
            .kvs
            .insert(key.to_string(), value.to_string());
        Ok(())
    }

    fn get(&self, job: usize, req: &Request<'_>) -> Result<&str, String> {
        self.check_kvsname(job, req)?;
        let key = req.get("key").ok_or("missing_key")?;
        self.jobs[job]
            .kvs
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("key_{key}_not_found"))
    }

    /// Completes job `job`'s barrier when every still-connected rank of it
    /// has entered: sends `barrier_out` to each rank waiting in it.
    fn release_barrier(&mut self, job: usize) -> Vec<Effect> {
        let members = || self.slots.iter().filter(|s| s.job == job);
        let any_waiting = members().any(|s| s.in_barrier);
        let all_in = members().all(|s| !s.connected || s.in_barrier);
        if !(any_waiting && all_in) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (rank, s) in self.slots.iter_mut().enumerate() {
            if s.job == job && std::mem::take(&mut s.in_barrier) {
                out.push(Effect::Send {
                    rank,
                    line: format_reply("barrier_out", &[]),
                });
            }
        }
        out
    }
}

/// One rank's connection.
struct Conn {
    stream: UnixStream,
    /// Keeps lines written to the rank from interleaving.
    write_lock: Mutex<()>,
}

/// Serves [`Core`] over the launcher's ends of the ranks' socket pairs.
pub struct PmiServer {
    core: Mutex<Core>,
    /// Signalled (with `core`) when a rank disconnects.
    disconnected: Condvar,
    /// By slot; a slot's connection is replaced when a new process takes
    /// the slot.
    conns: Mutex<Vec<Option<Arc<Conn>>>>,
    /// Serving threads of processes added after the start.
    threads: Mutex<Vec<JoinHandle<()>>>,
    events: Sender<Event>,
}

impl PmiServer {
    /// Starts one serving thread per stream; `streams[r]` belongs to rank r.
    pub fn start(
        jobid: String,
        appnums: Vec<usize>,
        streams: Vec<UnixStream>,
        events: Sender<Event>,
    ) -> io::Result<(Arc<Self>, Vec<JoinHandle<()>>)> {
        let server = Arc::new(PmiServer {
            core: Mutex::new(Core::new(jobid, appnums)),
            disconnected: Condvar::new(),
            conns: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            events,
        });
        let mut threads = Vec::with_capacity(streams.len());
        for (rank, stream) in streams.into_iter().enumerate() {
            match server.serve_thread(rank, stream) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    server.shutdown();
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok((server, threads))
    }

    /// Serves a process that took slot `slot` after the start (its job was
    /// registered with [`PmiServer::with_core`]).
    pub fn attach(self: &Arc<Self>, slot: usize, stream: UnixStream) -> io::Result<()> {
        let t = self.serve_thread(slot, stream)?;
        self.threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(t);
        Ok(())
    }

    fn serve_thread(
        self: &Arc<Self>,
        slot: usize,
        stream: UnixStream,
    ) -> io::Result<JoinHandle<()>> {
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let conn = Arc::new(Conn {
            stream,
            write_lock: Mutex::new(()),
        });
        {
            let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            if conns.len() <= slot {
                conns.resize(slot + 1, None);
            }
            conns[slot] = Some(Arc::clone(&conn));
        }
        let s = Arc::clone(self);
        std::thread::Builder::new()
            .name(format!("mpiexec-pmi-{slot}"))
            .stack_size(128 * 1024)
            .spawn(move || s.serve(slot, &conn))
    }

    /// Runs `f` on the protocol state (e.g. to register a spawned job).
    pub fn with_core<T>(&self, f: impl FnOnce(&mut Core) -> T) -> T {
        f(&mut self.lock())
    }

    /// Joins the serving threads of processes added after the start.
    pub fn join_added(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock cannot leave Core inconsistent in a
        // way that matters more than losing the job, so keep going.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn serve(&self, rank: usize, conn: &Conn) {
        let mut reader = BufReader::new(&conn.stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut reader)
                .take(LINE_MAX as u64 + 1)
                .read_until(b'\n', &mut line)
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if line.len() > LINE_MAX {
                self.send(
                    rank,
                    &format_reply("error", &[("rc", "-1"), ("msg", "line_too_long")]),
                );
                break;
            }
            let text = String::from_utf8_lossy(&line);
            let effects = self.lock().handle(rank, &text);
            self.apply(rank, effects);
        }
        let effects = {
            let mut core = self.lock();
            let effects = core.disconnect(rank);
            self.disconnected.notify_all();
            effects
        };
        self.apply(rank, effects);
        let _ = self.events.send(Event::Disconnected { rank });
    }

    /// Performs effects outside the state lock, so a slow socket write never
    /// holds up other ranks' requests.
    fn apply(&self, from: usize, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Send { rank, line } => self.send(rank, &line),
                Effect::Abort { code } => {
                    let _ = self.events.send(Event::Abort { rank: from, code });
                }
                Effect::State { report } => {
                    let _ = self.events.send(Event::State { rank: from, report });
                }
                Effect::Spawn { fields } => {
                    let _ = self.events.send(Event::Spawn { rank: from, fields });
                }
            }
        }
    }

    /// Writes one reply line to the process in slot `rank`.
    pub fn send(&self, rank: usize, line: &str) {
        let conn = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(rank)
            .cloned()
            .flatten();
        let Some(conn) = conn else { return };
        let _guard = conn.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        // A failed write means the rank is gone; its exit status tells the
        // rest of the story.
        let _ = (&conn.stream).write_all(line.as_bytes());
    }

    /// Waits up to `timeout` for rank `rank` to close its channel. Used when
    /// a rank has died, so that an `abort` it sent just before is seen
    /// before its exit status.
    pub fn wait_disconnected(&self, rank: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut core = self.lock();
        while core.is_connected(rank) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            core = match self.disconnected.wait_timeout(core, left) {
                Ok((c, _)) => c,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Closes every channel so the serving threads return, even when a
    /// rank's descendant still holds the other end.
    pub fn shutdown(&self) {
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flatten()
        {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }

    /// Unlinks every published shared-memory segment (already-removed ones
    /// are fine), so a job that died early leaves nothing in `/dev/shm`.
    pub fn unlink_shm(&self) {
        let names: Vec<String> = self.lock().shm_names().map(String::from).collect();
        for name in names {
            if let Err(e) = crate::sys::shm_unlink(&name) {
                eprintln!("mpiexec: warning: cannot remove shared memory '{name}': {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sends(effects: &[Effect]) -> Vec<(usize, &str)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send { rank, line } => Some((*rank, line.as_str())),
                Effect::Abort { .. } | Effect::State { .. } | Effect::Spawn { .. } => None,
            })
            .collect()
    }

    fn one(effects: Vec<Effect>) -> String {
        match effects.as_slice() {
            [Effect::Send { line, .. }] => line.clone(),
            other => panic!("expected one reply, got {other:?}"),
        }
    }

    #[test]
    fn codec_parses_fields() {
        let r = parse_request("cmd=put kvsname=j key=a value=b=c\n").unwrap();
        assert_eq!(r.cmd, "put");
        assert_eq!(r.get("kvsname"), Some("j"));
        assert_eq!(r.get("key"), Some("a"));
        assert_eq!(r.get("value"), Some("b=c"));
        assert_eq!(r.get("nope"), None);
        let r = parse_request("  key=x   cmd=get \r\n").unwrap();
        assert_eq!((r.cmd, r.get("key")), ("get", Some("x")));
        assert_eq!(
            parse_request("cmd=put value=").unwrap().get("value"),
            Some("")
        );
    }

    #[test]
    fn codec_errors() {
        assert_eq!(parse_request("\n"), Err(ParseError::Empty));
        assert_eq!(parse_request("key=1"), Err(ParseError::MissingCmd));
        assert_eq!(
            parse_request("mcmd=spawn nprocs=1"),
            Err(ParseError::MissingCmd)
        );
        assert_eq!(parse_request("cmd=put junk"), Err(ParseError::BadToken));
    }

    #[test]
    fn codec_formats() {
        assert_eq!(format_reply("barrier_out", &[]), "cmd=barrier_out\n");
        assert_eq!(
            format_reply("put_result", &[("rc", "0"), ("msg", "success")]),
            "cmd=put_result rc=0 msg=success\n"
        );
    }

    #[test]
    fn fixed_replies() {
        let mut c = Core::new("job1".into(), vec![0, 1, 1]);
        assert_eq!(
            one(c.handle(0, "cmd=init pmi_version=1 pmi_subversion=1\n")),
            "cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0\n"
        );
        assert!(one(c.handle(0, "cmd=init pmi_version=2 pmi_subversion=0\n")).contains("rc=-1"));
        assert_eq!(
            one(c.handle(0, "cmd=get_maxes\n")),
            "cmd=maxes kvsname_max=256 keylen_max=256 vallen_max=4096 rc=0\n"
        );
        assert_eq!(
            one(c.handle(0, "cmd=get_appnum\n")),
            "cmd=appnum appnum=0 rc=0\n"
        );
        assert_eq!(
            one(c.handle(2, "cmd=get_appnum\n")),
            "cmd=appnum appnum=1 rc=0\n"
        );
        assert_eq!(
            one(c.handle(1, "cmd=get_my_kvsname\n")),
            "cmd=my_kvsname kvsname=job1 rc=0\n"
        );
        assert_eq!(
            one(c.handle(1, "cmd=get_universe_size\n")),
            "cmd=universe_size size=3 rc=0\n"
        );
        assert_eq!(
            c.handle(1, "cmd=finalize\n"),
            [
                Effect::State {
                    report: Report::Finished
                },
                Effect::Send {
                    rank: 1,
                    line: "cmd=finalize_ack\n".into()
                }
            ]
        );
        assert_eq!(
            one(c.handle(1, "cmd=publish_name service=x port=y\n")),
            "cmd=publish_name_result rc=-1 msg=unknown_command\n"
        );
        assert_eq!(
            one(c.handle(1, "garbage\n")),
            "cmd=error rc=-1 msg=malformed_request\n"
        );
        assert!(c.handle(1, "\n").is_empty());
    }

    #[test]
    fn put_and_get() {
        let mut c = Core::new("j".into(), vec![0, 0]);
        assert_eq!(
            one(c.handle(0, "cmd=put kvsname=j key=k value=v1\n")),
            "cmd=put_result rc=0 msg=success\n"
        );
        assert_eq!(
            one(c.handle(1, "cmd=get kvsname=j key=k\n")),
            "cmd=get_result rc=0 msg=success value=v1\n"
        );
        assert_eq!(
            one(c.handle(1, "cmd=get kvsname=j key=zz\n")),
            "cmd=get_result rc=-1 msg=key_zz_not_found\n"
        );
        assert!(one(c.handle(1, "cmd=get kvsname=other key=k\n")).contains("unknown_kvsname"));
        assert!(one(c.handle(1, "cmd=put kvsname=j value=x\n")).contains("missing_key"));
        let long = "x".repeat(VALLEN_MAX + 1);
        assert!(
            one(c.handle(1, &format!("cmd=put kvsname=j key=a value={long}")))
                .contains("value_too_long")
        );
        let longkey = "k".repeat(KEYLEN_MAX + 1);
        assert!(
            one(c.handle(1, &format!("cmd=put kvsname=j key={longkey} value=1")))
                .contains("key_too_long")
        );
        // Overwrite: the newest value wins.
        one(c.handle(1, "cmd=put kvsname=j key=k value=v2\n"));
        assert!(one(c.handle(0, "cmd=get kvsname=j key=k\n")).ends_with("value=v2\n"));
    }

    #[test]
    fn shm_keys_are_remembered() {
        let mut c = Core::new("j".into(), vec![0]);
        one(c.handle(0, "cmd=put kvsname=j key=oxmpi.shm.seg value=/oxmpi-j-0\n"));
        one(c.handle(0, "cmd=put kvsname=j key=other value=/not-shm\n"));
        assert_eq!(c.shm_names().collect::<Vec<_>>(), ["/oxmpi-j-0"]);
    }

    #[test]
    fn barrier_waits_for_all_connected_ranks() {
        let mut c = Core::new("j".into(), vec![0; 3]);
        assert!(c.handle(0, "cmd=barrier_in\n").is_empty());
        assert!(c.handle(2, "cmd=barrier_in\n").is_empty());
        // Entering twice changes nothing.
        assert!(c.handle(2, "cmd=barrier_in\n").is_empty());
        let out = c.handle(1, "cmd=barrier_in\n");
        assert_eq!(
            sends(&out),
            [
                (0, "cmd=barrier_out\n"),
                (1, "cmd=barrier_out\n"),
                (2, "cmd=barrier_out\n")
            ]
        );
        // A second barrier starts from scratch.
        assert!(c.handle(1, "cmd=barrier_in\n").is_empty());
    }

    #[test]
    fn barrier_completes_when_the_missing_rank_disconnects() {
        let mut c = Core::new("j".into(), vec![0; 3]);
        c.handle(0, "cmd=barrier_in\n");
        c.handle(1, "cmd=barrier_in\n");
        let out = c.disconnect(2);
        assert_eq!(
            sends(&out),
            [(0, "cmd=barrier_out\n"), (1, "cmd=barrier_out\n")]
        );
        // A rank that leaves while inside the barrier does not hold it up.
        c.handle(0, "cmd=barrier_in\n");
        assert!(c.disconnect(0).is_empty());
        assert_eq!(
            sends(&c.handle(1, "cmd=barrier_in\n")),
            [(1, "cmd=barrier_out\n")]
        );
    }

    #[test]
    fn abort() {
        let mut c = Core::new("j".into(), vec![0]);
        assert_eq!(
            c.handle(0, "cmd=abort exitcode=7\n"),
            [Effect::Abort { code: 7 }]
        );
        assert_eq!(c.handle(0, "cmd=abort\n"), [Effect::Abort { code: 1 }]);
        assert_eq!(
            c.handle(0, "cmd=abort exitcode=x\n"),
            [Effect::Abort { code: 1 }]
        );
    }

    #[test]
    fn state_reports_get_no_reply() {
        let mut c = Core::new("j".into(), vec![0, 0]);
        assert_eq!(
            c.handle(
                1,
                "cmd=oxmpi_state state=blocked call=Recv(source%3D0,%20tag%3D5) peer=0\n"
            ),
            [Effect::State {
                report: Report::Blocked {
                    call: "Recv(source=0, tag=5)".into(),
                    peer: Some(0)
                }
            }]
        );
        assert_eq!(
            c.handle(1, "cmd=oxmpi_state state=running\n"),
            [Effect::State {
                report: Report::Running
            }]
        );
        // Malformed reports are dropped silently: still no reply.
        assert!(c.handle(1, "cmd=oxmpi_state state=dozing\n").is_empty());
        assert!(c.handle(1, "cmd=oxmpi_state\n").is_empty());
    }

    #[test]
    fn server_over_sockets() {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel();
        let (a0, b0) = UnixStream::pair().unwrap();
        let (a1, b1) = UnixStream::pair().unwrap();
        let (server, threads) =
            PmiServer::start("job".into(), vec![0, 0], vec![a0, a1], tx).unwrap();
        for s in [&b0, &b1] {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
        let mut r0 = BufReader::new(&b0);
        let mut r1 = BufReader::new(&b1);
        let mut line = String::new();
        (&b0)
            .write_all(b"cmd=put kvsname=job key=a value=1\n")
            .unwrap();
        r0.read_line(&mut line).unwrap();
        assert_eq!(line, "cmd=put_result rc=0 msg=success\n");
        (&b0).write_all(b"cmd=barrier_in\n").unwrap();
        (&b1).write_all(b"cmd=barrier_in\n").unwrap();
        line.clear();
        r0.read_line(&mut line).unwrap();
        assert_eq!(line, "cmd=barrier_out\n");
        line.clear();
        r1.read_line(&mut line).unwrap();
        assert_eq!(line, "cmd=barrier_out\n");
        // A state report gets no reply: the next line read answers the get.
        (&b1)
            .write_all(b"cmd=oxmpi_state state=blocked call=Wait peer=-1\n")
            .unwrap();
        (&b1).write_all(b"cmd=get kvsname=job key=a\n").unwrap();
        line.clear();
        r1.read_line(&mut line).unwrap();
        assert_eq!(line, "cmd=get_result rc=0 msg=success value=1\n");
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Event::State {
                rank: 1,
                report: Report::Blocked { call, peer: None },
            }) if call == "Wait" => {}
            other => panic!("unexpected {other:?}"),
        }
        (&b1).write_all(b"cmd=abort exitcode=5\n").unwrap();
        drop(r1);
        drop(b1);
        server.wait_disconnected(1, Duration::from_secs(10));
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Event::Abort { rank: 1, code: 5 }) => {}
            other => panic!("unexpected {other:?}"),
        }
        server.shutdown();
        for t in threads {
            t.join().unwrap();
        }
    }
}
