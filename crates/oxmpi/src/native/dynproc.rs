//! Process creation and management (MPI-4.1 chapter 11) on the native
//! runtime: spawn, ports (accept/connect), the name service and join.
//!
//! Every process of a universe (the launched job and whatever it spawns)
//! shares the launcher's segment, so groups created apart can talk
//! directly: spawned groups find each other through the *universe
//! communicator* (every slot, rank = slot), which serves as the peer
//! communicator of an ordinary `MPI_Intercomm_create` between the two
//! groups' leaders. Ports and `Join` connect two leaders that may belong
//! to two launches (`foreign.rs`): a port names where its process's
//! segment can be opened, the connecting leader announces itself (as an
//! (origin, slot) pair), and a two-process *bridge* communicator on the
//! universe context serves as the peer communicator. The launcher starts
//! processes, hands out slots and unique tags, and keeps the launch's name
//! service (names are also published machine-wide, per user, for other
//! launches); it takes no part in the messages.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crate::backend::{CommRef, Communicator, SpawnCommand};
use crate::bootstrap::{Launcher, Pmi};
use crate::error::{class, Error, Result};

use super::comm::NativeComm;
use super::commgmt::{decode_i32s, encode_i32s, TAG_MGMT};
use super::{foreign, Core, Target, UNIVERSE_ID};
use crate::backend::{RawBuf, SendMode, ANY_SOURCE};

/// `oxmpi-port:UNIVERSE:ORIGIN:SLOT:TAG`: a port opened by the process in
/// SLOT of the segment that ORIGIN (hex) opens.
const PORT_PREFIX: &str = "oxmpi-port:";
/// Tag of the leaders' exchange after `MPI_Comm_join` (the launcher's tags
/// are odd numbers below this).
const JOIN_TAG: i32 = 1 << 29;

/// A port name, parsed.
struct Port {
    universe: String,
    origin: u64,
    slot: i32,
    tag: i32,
}

impl Port {
    fn parse(name: &str) -> Result<Port> {
        let bad = || Error::Mpi {
            class: class::ERR_PORT,
            message: format!("{name:?} is not a port name opened by MPI.Open_port"),
        };
        let rest = name.trim().strip_prefix(PORT_PREFIX).ok_or_else(bad)?;
        let mut it = rest.rsplitn(4, ':');
        let tag = it.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
        let slot = it.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
        let origin = it
            .next()
            .and_then(|t| u64::from_str_radix(t, 16).ok())
            .ok_or_else(bad)?;
        let universe = it.next().ok_or_else(bad)?.to_owned();
        Ok(Port {
            universe,
            origin,
            slot,
            tag,
        })
    }
}

impl Core {
    /// The PMI connection; a singleton starts a launcher to serve it first
    /// (its first spawn, port or name call).
    pub(super) fn ensure_pmi(&self) -> Result<&Pmi> {
        if let Some(p) = self.pmi() {
            return Ok(p);
        }
        let fd = self.singleton_fd.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = self.pmi() {
            return Ok(p);
        }
        let seg = fd.as_ref().ok_or_else(|| {
            Error::NotImplemented("dynamic processes need oxmpi's own launcher".into())
        })?;
        let pmi = start_singleton_server(seg)?;
        let _ = self.pmi.set(pmi);
        Ok(self.pmi().expect("just set"))
    }

    /// The universe communicator (see the module doc). Cheap to build; it
    /// owns no id, so dropping it gives nothing back.
    pub(super) fn universe_comm(self: &Arc<Core>) -> NativeComm {
        NativeComm::new(
            self.clone(),
            UNIVERSE_ID,
            self.me as i32,
            (0..self.nranks as i32).collect(),
            "oxmpi universe",
        )
        .without_id()
    }

    /// This universe's name in port names.
    fn universe_name(&self) -> Result<String> {
        Ok(self
            .ensure_pmi()?
            .kvsname
            .split("-s")
            .next()
            .unwrap_or("")
            .to_owned())
    }
}

/// Starts oxmpi's launcher as the process manager of this singleton: it
/// adopts us as slot 0 of its universe, over a socket pair, and maps our
/// segment. The launcher is `OXMPI_SERVER_PYTHON -m oxmpi._launcher`
/// (set by the Python package) or else `OXMPI_MPIEXEC` (default
/// `mpiexec`, which must be oxmpi's).
fn start_singleton_server(seg: &OwnedFd) -> Result<Pmi> {
    use std::os::unix::process::CommandExt;
    let (ours, theirs) = UnixStream::pair().map_err(|e| Error::os("socketpair", e))?;
    let mut cmd = match std::env::var_os("OXMPI_SERVER_PYTHON") {
        Some(py) => {
            let mut c = std::process::Command::new(py);
            c.args(["-m", "oxmpi._launcher"]);
            c
        }
        None => std::process::Command::new(
            std::env::var_os("OXMPI_MPIEXEC").unwrap_or_else(|| "mpiexec".into()),
        ),
    };
    let (pmi_fd, shm_fd) = (theirs.as_raw_fd(), seg.as_raw_fd());
    cmd.arg("--singleton-server")
        .env("OXMPI_SERVER_PMI_FD", pmi_fd.to_string())
        .env("OXMPI_SERVER_SHM_FD", shm_fd.to_string())
        .env("OXMPI_SERVER_CLIENT_PID", std::process::id().to_string())
        .stdin(std::process::Stdio::null());
    // SAFETY: the hook runs in the forked child before exec and only calls
    // fcntl(2), which is async-signal-safe, on two descriptor numbers.
    unsafe {
        cmd.pre_exec(move || {
            for fd in [pmi_fd, shm_fd] {
                let flags = libc_fcntl_getfd(fd)?;
                libc_fcntl_setfd(fd, flags & !1)?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| Error::Mpi {
        class: class::ERR_SPAWN,
        message: format!(
            "cannot start oxmpi's launcher to manage spawned processes ({e}); \
             run the program under `mpiexec -n 1`, or set OXMPI_MPIEXEC"
        ),
    })?;
    drop(theirs);
    // The launcher lives as long as we and our children need it; a thread
    // reaps it if it ends first, so it never lingers as a zombie.
    let mut child = child;
    let _ = std::thread::Builder::new()
        .name("oxmpi-launcher-reaper".into())
        .spawn(move || {
            let _ = child.wait();
        });
    Pmi::connect(ours, 0, 1, Launcher::Oxmpi)
}

fn libc_fcntl_getfd(fd: i32) -> std::io::Result<i32> {
    // SAFETY: borrowing a descriptor number that stays open for the call.
    let b = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(b)
        .map(|f| f.bits() as i32)
        .map_err(std::io::Error::from)
}

fn libc_fcntl_setfd(fd: i32, bits: i32) -> std::io::Result<()> {
    // SAFETY: as above.
    let b = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_setfd(b, rustix::io::FdFlags::from_bits_retain(bits as u32))
        .map_err(std::io::Error::from)
}

/// What the root learned from the launcher, broadcast to the group:
/// `Ok((tag, slots))` or the error, as class and message.
fn encode_outcome(r: &Result<(i32, Vec<i32>)>) -> Vec<u8> {
    match r {
        Ok((tag, slots)) => {
            let mut v = vec![0u8];
            v.extend(encode_i32s(&[*tag]));
            v.extend(encode_i32s(slots));
            v
        }
        Err(e) => {
            // NotImplemented must stay NotImplemented at every member (it
            // becomes Python's NotImplementedError, not MPI.Exception).
            let kind = if matches!(e, Error::NotImplemented(_)) {
                2u8
            } else {
                1
            };
            let mut v = vec![kind];
            v.extend(encode_i32s(&[e.class()]));
            v.extend(e.to_string().into_bytes());
            v
        }
    }
}

fn decode_outcome(b: &[u8]) -> Result<(i32, Vec<i32>)> {
    match b.split_first() {
        Some((0, rest)) if rest.len() >= 4 => {
            let v = decode_i32s(rest)?;
            Ok((v[0], v[1..].to_vec()))
        }
        Some((&kind @ (1 | 2), rest)) if rest.len() >= 4 => {
            let class = i32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
            let message = String::from_utf8_lossy(&rest[4..]).into_owned();
            Err(if kind == 2 {
                Error::NotImplemented(message)
            } else {
                Error::Mpi { class, message }
            })
        }
        _ => Err(Error::Intern("malformed spawn outcome".into())),
    }
}

impl NativeComm {
    /// Runs `at_root` at `root` (its errors included) and gives every
    /// member its outcome.
    fn root_decides(
        &self,
        root: i32,
        at_root: impl FnOnce() -> Result<(i32, Vec<i32>)>,
    ) -> Result<(i32, Vec<i32>)> {
        if root < 0 || root >= self.members.len() as i32 {
            return Err(Error::Root {
                root,
                size: self.members.len() as i32,
            });
        }
        let mine = (self.rank == root).then(|| encode_outcome(&at_root()));
        decode_outcome(&self.bcast_from(mine, root, TAG_MGMT)?)
    }

    /// The intercommunicator between this group and another whose leader
    /// is in `remote_slot`, both sides using `tag`.
    fn connect_groups(&self, root: i32, remote_slot: i32, tag: i32) -> Result<CommRef> {
        let universe = self.core.universe_comm();
        let peer = (self.rank == root).then_some(&universe as &dyn Communicator);
        self.create_intercomm_comm(root, peer, remote_slot, tag)
    }

    pub(super) fn spawn_comm(
        &self,
        root: i32,
        commands: Option<&[SpawnCommand]>,
    ) -> Result<CommRef> {
        if self.remote.is_some() {
            return Err(Error::Comm(
                "MPI_Comm_spawn needs an intracommunicator".into(),
            ));
        }
        let (tag, slots) = self.root_decides(root, || {
            let commands = commands.unwrap_or_default();
            if commands.is_empty() || commands.iter().any(|c| c.maxprocs == 0) {
                return Err(Error::Arg(
                    "spawn needs at least one process per command".into(),
                ));
            }
            self.core.ensure_pmi()?.spawn(commands, &self.members)
        })?;
        let leader = *slots
            .first()
            .ok_or_else(|| Error::Intern("spawn started no process".into()))?;
        self.connect_groups(root, leader, tag)
    }

    pub(super) fn accept_comm(&self, port: Option<&str>, root: i32) -> Result<CommRef> {
        let mut bridge = None;
        let (tag, _) = self.root_decides(root, || {
            let port = Port::parse(port.unwrap_or(""))?;
            if port.slot != self.core.me as i32 || port.origin != self.core.own.origin {
                return Err(Error::Mpi {
                    class: class::ERR_PORT,
                    message: "MPI_Comm_accept must be called by the process that opened the port"
                        .into(),
                });
            }
            // The connecting leader announces itself on the port's tag;
            // this wait is for the outside world, never a deadlock.
            let ctx = super::comm::ctx(UNIVERSE_ID, 0);
            let req = self
                .core
                .post_recv(ctx, ANY_SOURCE, -1, port.tag, Target::Owned);
            self.core.wait_described(
                || req.is_done(),
                &|| super::Blocked {
                    call: format!("Accept(port tag {})", port.tag),
                    peer: -1,
                    external: true,
                },
                super::Watch::Nothing,
            )?;
            req.take()?;
            let them = foreign::decode_ranks(
                &self.core.foreign,
                &self.core.own,
                &req.take_data().unwrap_or_default(),
            )?;
            let &[them] = them.as_slice() else {
                return Err(Error::Intern("malformed connection request".into()));
            };
            bridge = Some(self.core.bridge_comm(them, false));
            Ok((port.tag + 1, vec![1]))
        })?;
        let peer = bridge.as_ref().map(|b| b as &dyn Communicator);
        self.create_intercomm_comm(root, peer, 1, tag)
    }

    pub(super) fn connect_comm(&self, port: Option<&str>, root: i32) -> Result<CommRef> {
        let mut bridge = None;
        let (tag, _) = self.root_decides(root, || {
            let port = Port::parse(port.unwrap_or(""))?;
            if port.origin == 0 && port.universe != self.core.universe_name()? {
                return Err(Error::Mpi {
                    class: class::ERR_PORT,
                    message: "the port belongs to a job started by another MPI's launcher, \
                              which oxmpi cannot reach"
                        .into(),
                });
            }
            let acceptor = self.core.foreign.resolve(
                &self.core.own,
                port.origin,
                u64::try_from(port.slot).unwrap_or(u64::MAX),
            )?;
            let b = self.core.bridge_comm(acceptor as i32, true);
            let me =
                foreign::encode_ranks(&self.core.foreign, &self.core.own, &[self.core.me as i32])?;
            b.send(&[RawBuf::from_slice(&me)], 0, port.tag, SendMode::Standard)?;
            bridge = Some(b);
            Ok((port.tag + 1, vec![0]))
        })?;
        let peer = bridge.as_ref().map(|b| b as &dyn Communicator);
        self.create_intercomm_comm(root, peer, 0, tag)
    }
}

impl Core {
    /// The two-process communicator on the universe context between us and
    /// job rank `other`: the acceptor (or the lower end of a join) is rank
    /// 0.
    fn bridge_comm(self: &Arc<Core>, other: i32, we_are_second: bool) -> NativeComm {
        let me = self.me as i32;
        let members = if we_are_second {
            vec![other, me]
        } else {
            vec![me, other]
        };
        NativeComm::new(
            self.clone(),
            UNIVERSE_ID,
            we_are_second as i32,
            members,
            "oxmpi bridge",
        )
        .without_id()
    }
}

/// Engine-level calls of chapter 11.
impl Core {
    pub(super) fn open_port(&self) -> Result<String> {
        let (universe, tag) = self.ensure_pmi()?.open_port()?;
        let universe = universe.split("-s").next().unwrap_or("").to_owned();
        Ok(format!(
            "{PORT_PREFIX}{universe}:{:x}:{}:{tag}",
            self.own.origin, self.me
        ))
    }

    pub(super) fn close_port(&self, port: &str) -> Result<()> {
        Port::parse(port).map(|_| ())
    }

    /// Publishes in the launch's name service and, for other launches of
    /// this user, in the machine-wide directory (`machine_names`).
    pub(super) fn publish_name(&self, service: &str, port: Option<&str>) -> Result<()> {
        self.ensure_pmi()?.publish(service, port)?;
        match port {
            Some(p) => machine_names::publish(service, p),
            None => machine_names::unpublish(service),
        }
        Ok(())
    }

    /// The launch's name service first, then names other launches published.
    pub(super) fn lookup_name(&self, service: &str) -> Result<String> {
        match self.ensure_pmi()?.lookup(service) {
            Ok(port) => Ok(port),
            Err(e) => machine_names::lookup(service).ok_or(e),
        }
    }

    /// MPI_Comm_join: the two processes swap where they are (origin and
    /// slot) over the socket, then connect as two groups of one over a
    /// bridge communicator; they may belong to two launches.
    pub(super) fn join(self: &Arc<Core>, fd: i32, self_comm: &NativeComm) -> Result<CommRef> {
        if fd < 0 {
            return Err(Error::Arg(format!("invalid socket descriptor {fd}")));
        }
        let universe = self.universe_name()?;
        // SAFETY: we borrow the caller's open socket for the handshake; the
        // duplicate we make is closed before returning, the caller's stays.
        let dup = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .map_err(|e| Error::os("MPI_Comm_join: dup(fd)", e))?;
        let mut sock = std::fs::File::from(dup);
        let mine = (self.own.origin, self.me as u32);
        let line = format!("oxmpi-join {universe} {:x} {}\n", mine.0, mine.1);
        sock.write_all(line.as_bytes())
            .map_err(|e| Error::os("MPI_Comm_join: write", e))?;
        let theirs = read_line(&sock).map_err(|e| Error::os("MPI_Comm_join: read", e))?;
        let words: Vec<&str> = theirs.split_whitespace().collect();
        let (their_universe, origin, slot) = match words.as_slice() {
            ["oxmpi-join", u, o, s] => match (u64::from_str_radix(o, 16), s.parse::<u32>()) {
                (Ok(o), Ok(s)) => (*u, o, s),
                _ => return Err(Error::Intern("malformed join handshake".into())),
            },
            _ => {
                return Err(Error::Mpi {
                    class: class::ERR_OTHER,
                    message: "MPI_Comm_join: the other end is not an oxmpi process".into(),
                })
            }
        };
        if (origin == 0 || mine.0 == 0) && their_universe != universe {
            return Err(Error::NotImplemented(
                "MPI_Comm_join with a job started by another MPI's launcher".into(),
            ));
        }
        let other = self.foreign.resolve(&self.own, origin, u64::from(slot))?;
        // Both ends order the two (origin, slot) pairs alike.
        let second = mine > (origin, slot);
        let bridge = self.bridge_comm(other as i32, second);
        self_comm.create_intercomm_comm(0, Some(&bridge), 1 - second as i32, JOIN_TAG)
    }
}

/// Reads one line byte by byte, never past its newline: whatever follows
/// on the socket belongs to the caller.
fn read_line(mut r: impl std::io::Read) -> std::io::Result<String> {
    let mut b = [0u8; 1];
    let mut bytes = Vec::new();
    while bytes.len() < 4096 && r.read(&mut b)? == 1 && b[0] != b'\n' {
        bytes.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Names published for other launches of the same user on this machine: a
/// file per service in a private directory (mode 0700) under the temporary
/// directory, holding the port. A name whose port's process is gone is
/// stale and removed when looked up. Best effort: the launch's own name
/// service (the launcher's) is the authority within a launch.
mod machine_names {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    use std::path::PathBuf;

    fn dir() -> Option<PathBuf> {
        let uid = rustix::process::getuid().as_raw();
        let d = std::env::temp_dir().join(format!("oxmpi-names-{uid}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&d);
        let md = std::fs::symlink_metadata(&d).ok()?;
        // Only a real directory of ours, private to us.
        use std::os::unix::fs::MetadataExt;
        (md.is_dir() && md.uid() == uid && md.permissions().mode() & 0o077 == 0).then_some(d)
    }

    fn file(service: &str) -> Option<PathBuf> {
        let hex: String = service.bytes().map(|b| format!("{b:02x}")).collect();
        dir().map(|d| d.join(hex))
    }

    pub(super) fn publish(service: &str, port: &str) {
        if let Some(f) = file(service) {
            let tmp = f.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, port).is_ok() {
                let _ = std::fs::rename(&tmp, &f);
            }
        }
    }

    pub(super) fn unpublish(service: &str) {
        if let Some(f) = file(service) {
            let _ = std::fs::remove_file(f);
        }
    }

    pub(super) fn lookup(service: &str) -> Option<String> {
        let f = file(service)?;
        let port = std::fs::read_to_string(&f).ok()?;
        let alive = super::Port::parse(&port)
            .map(|p| p.origin >> 32)
            .is_ok_and(|pid| pid != 0 && crate::sys::process_alive(pid as u32));
        if !alive {
            let _ = std::fs::remove_file(&f);
            return None;
        }
        Some(port)
    }
}
