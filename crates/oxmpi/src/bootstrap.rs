//! How a rank learns who it is and finds its peers: a PMI-1 client over the
//! descriptor the launcher passes in `PMI_FD`, or a world of one.
//!
//! The wire format is PMI-1's: one request line `cmd=NAME key=value ...`
//! answered by one line. See `docs/architecture.md` for the command table.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Which process manager started this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launcher {
    /// oxmpi's own launcher.
    Oxmpi,
    /// A foreign PMI-1 server (e.g. MPICH's hydra) that passed `PMI_FD`.
    ForeignPmi(String),
}

/// A connection to the process manager's key-value service.
pub struct Pmi {
    conn: Mutex<Conn>,
    pub rank: usize,
    pub size: usize,
    pub kvsname: String,
    /// Who started us: only oxmpi's launcher understands oxmpi_state.
    pub launcher: Launcher,
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// A launcher we cannot talk to yet, detected from its environment, so that
/// we can refuse to run as one of N silent singletons.
pub fn foreign_launcher_without_pmi() -> Option<String> {
    let with_size = |size_var: &str| env_usize(size_var).is_some_and(|n| n > 1);
    if std::env::var_os("PMI_FD").is_some() {
        return None;
    }
    if with_size("OMPI_COMM_WORLD_SIZE") {
        return Some("Open MPI's mpirun/prterun (OMPI_COMM_WORLD_SIZE is set)".into());
    }
    if std::env::var_os("PMIX_RANK").is_some() && with_size("PMIX_SIZE") {
        return Some("a PMIx launcher (PMIX_RANK is set)".into());
    }
    if with_size("SLURM_NTASKS") && std::env::var_os("SLURM_PROCID").is_some() {
        return Some("Slurm's srun (SLURM_PROCID is set)".into());
    }
    if with_size("PMI_SIZE") && std::env::var_os("PMI_PORT").is_some() {
        return Some("a PMI launcher using PMI_PORT (e.g. hydra with -pmi-port)".into());
    }
    if with_size("PALS_RANKID") || std::env::var_os("PALS_RANKID").is_some() {
        return Some("HPE's PALS launcher".into());
    }
    None
}

/// A process manager other than oxmpi's that started this process.
#[derive(Clone, Debug)]
pub struct ForeignLauncher {
    /// Who, in words, with the variable that told.
    pub who: String,
    /// Which MPI library goes with it.
    pub preference: crate::system_mpi::Preference,
    /// The number of ranks it started, where it says.
    pub size: Option<usize>,
    /// It passed a PMI-1 descriptor (`PMI_FD`) that the native runtime
    /// could join.
    pub pmi_fd: bool,
}

/// The foreign launcher that started this process, from the variables it
/// sets (whatever the job size). oxmpi's own launcher sets
/// `OXMPI_LAUNCHER`, which overrides every other sign.
pub fn foreign_launcher() -> Option<ForeignLauncher> {
    use crate::system_mpi::Preference;
    let set = |name: &str| std::env::var_os(name).is_some();
    if set("OXMPI_LAUNCHER") {
        return None;
    }
    let pmi_fd = set("PMI_FD");
    let found = |who: &str, preference, size| {
        Some(ForeignLauncher {
            who: who.to_owned(),
            preference,
            size,
            pmi_fd,
        })
    };
    if set("OMPI_COMM_WORLD_SIZE") || set("OMPI_COMM_WORLD_RANK") {
        return found(
            "Open MPI's mpirun/prterun (OMPI_COMM_WORLD_SIZE is set)",
            Preference::OpenMpi,
            env_usize("OMPI_COMM_WORLD_SIZE"),
        );
    }
    let pmi = set("PMI_RANK") && (pmi_fd || set("PMI_PORT"));
    if set("SLURM_PROCID") && (pmi || set("PMIX_RANK")) {
        return found(
            "Slurm's srun (SLURM_PROCID with PMI/PMIx variables)",
            Preference::Any,
            env_usize("SLURM_STEP_NUM_TASKS").or_else(|| env_usize("SLURM_NTASKS")),
        );
    }
    if pmi {
        let who = if pmi_fd {
            "MPICH's hydra mpiexec or another PMI launcher (PMI_RANK and PMI_FD are set)"
        } else {
            "MPICH's hydra mpiexec or another PMI launcher (PMI_RANK and PMI_PORT are set)"
        };
        return found(who, Preference::Mpich, env_usize("PMI_SIZE"));
    }
    if set("PMIX_RANK") {
        return found(
            "a PMIx launcher such as prterun (PMIX_RANK is set)",
            Preference::OpenMpi,
            env_usize("PMIX_SIZE"),
        );
    }
    if set("PALS_RANKID") {
        return found(
            "HPE's PALS launcher (PALS_RANKID is set)",
            Preference::Mpich,
            None,
        );
    }
    None
}

impl Pmi {
    /// Connects to the launcher if there is one; `Ok(None)` for a singleton.
    pub fn from_env() -> Result<Option<Pmi>> {
        let Some(fd) = env_usize("PMI_FD") else {
            if let Some(who) = foreign_launcher_without_pmi() {
                return Err(Error::Bootstrap(format!(
                    "this process was started by {who}, which oxmpi's native runtime \
                     cannot join; run the program with oxmpi's own launcher \
                     (`mpiexec -n N python script.py` from the oxmpi package) so it does \
                     not run as one of N independent copies of rank 0"
                )));
            }
            return Ok(None);
        };
        let rank = env_usize("PMI_RANK")
            .ok_or_else(|| Error::Bootstrap("PMI_FD is set but PMI_RANK is not".into()))?;
        let size = env_usize("PMI_SIZE")
            .ok_or_else(|| Error::Bootstrap("PMI_FD is set but PMI_SIZE is not".into()))?;
        let launcher = if std::env::var_os("OXMPI_LAUNCHER").is_some() {
            Launcher::Oxmpi
        } else {
            Launcher::ForeignPmi("a PMI-1 launcher (PMI_FD)".into())
        };
        // The descriptor must be ours to own: the launcher passed it for
        // exactly this purpose. Check it is a socket before taking it.
        let stat = rustix::fs::fstat(
            // SAFETY: borrowing a descriptor number for the duration of fstat;
            // fstat fails cleanly (EBADF) if it is not open.
            unsafe { rustix::fd::BorrowedFd::borrow_raw(fd as i32) },
        )
        .map_err(|e| Error::os(format!("PMI_FD={fd}"), e))?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
            return Err(Error::Bootstrap(format!("PMI_FD={fd} is not a socket")));
        }
        // SAFETY: fd is an open socket handed to this process by the launcher
        // for the PMI connection; nothing else in the process owns it.
        let stream = unsafe { UnixStream::from_raw_fd(fd as i32) };
        Pmi::connect(stream, rank, size, launcher).map(Some)
    }

    /// Speaks PMI over `stream` as rank `rank` of `size`.
    pub(crate) fn connect(
        stream: UnixStream,
        rank: usize,
        size: usize,
        launcher: Launcher,
    ) -> Result<Pmi> {
        // Keep it out of processes we spawn.
        let _ = rustix::io::fcntl_setfd(&stream, rustix::io::FdFlags::CLOEXEC);
        let writer = stream.try_clone().map_err(|e| Error::os("PMI socket", e))?;
        let mut pmi = Pmi {
            conn: Mutex::new(Conn {
                reader: BufReader::new(stream),
                writer,
            }),
            rank,
            size,
            kvsname: String::new(),
            launcher,
        };
        let r = pmi.call("init", &[("pmi_version", "1"), ("pmi_subversion", "1")])?;
        if r.get("rc").map(String::as_str).unwrap_or("0") != "0" {
            return Err(Error::Bootstrap(format!("PMI init refused: {r:?}")));
        }
        let r = pmi.call("get_my_kvsname", &[])?;
        pmi.kvsname = r
            .get("kvsname")
            .cloned()
            .ok_or_else(|| Error::Bootstrap("PMI: no kvsname in reply".into()))?;
        Ok(pmi)
    }

    fn call(&self, cmd: &str, args: &[(&str, &str)]) -> Result<HashMap<String, String>> {
        let mut line = format!("cmd={cmd}");
        for (k, v) in args {
            line.push(' ');
            line.push_str(k);
            line.push('=');
            line.push_str(v);
        }
        line.push('\n');
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.writer
            .write_all(line.as_bytes())
            .map_err(|e| Error::Bootstrap(format!("PMI {cmd}: launcher gone ({e})")))?;
        let mut reply = String::new();
        let n = conn
            .reader
            .read_line(&mut reply)
            .map_err(|e| Error::Bootstrap(format!("PMI {cmd}: {e}")))?;
        if n == 0 {
            return Err(Error::ProcFailed(format!(
                "the launcher closed the PMI connection during {cmd}"
            )));
        }
        Ok(parse_line(&reply))
    }

    fn send_only(&self, cmd: &str, args: &[(&str, &str)]) -> Result<()> {
        let mut line = format!("cmd={cmd}");
        for (k, v) in args {
            line.push_str(&format!(" {k}={v}"));
        }
        line.push('\n');
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.writer
            .write_all(line.as_bytes())
            .map_err(|e| Error::Bootstrap(format!("PMI {cmd}: {e}")))
    }

    /// Publishes `key = value` in the job's key-value space.
    pub fn put(&self, key: &str, value: &str) -> Result<()> {
        check_token(key)?;
        check_token(value)?;
        let r = self.call(
            "put",
            &[("kvsname", &self.kvsname), ("key", key), ("value", value)],
        )?;
        rc_ok(&r, "put")
    }

    /// Reads a key published before the last fence.
    pub fn get(&self, key: &str) -> Result<String> {
        let r = self.call("get", &[("kvsname", &self.kvsname), ("key", key)])?;
        rc_ok(&r, "get")?;
        r.get("value")
            .cloned()
            .ok_or_else(|| Error::Bootstrap(format!("PMI get {key}: no value")))
    }

    /// Waits until every rank has reached the fence; makes earlier puts
    /// visible to every rank's gets.
    pub fn fence(&self) -> Result<()> {
        let r = self.call("barrier_in", &[])?;
        match r.get("cmd").map(String::as_str) {
            Some("barrier_out") => Ok(()),
            other => Err(Error::Bootstrap(format!(
                "PMI barrier: unexpected reply {other:?}"
            ))),
        }
    }

    /// Universe size as the launcher reports it (falls back to the job size).
    pub fn universe_size(&self) -> usize {
        self.call("get_universe_size", &[])
            .ok()
            .and_then(|r| r.get("size").and_then(|s| s.parse().ok()))
            .unwrap_or(self.size)
    }

    /// Tells the launcher this rank is done with it.
    pub fn finalize(&self) -> Result<()> {
        let r = self.call("finalize", &[])?;
        match r.get("cmd").map(String::as_str) {
            Some("finalize_ack") => Ok(()),
            _ => Ok(()),
        }
    }

    /// Reports to oxmpi's launcher that this rank is blocked in `call`
    /// waiting on job rank `peer` (-1: any or a collective), or running
    /// again (None). Fire and forget: the launcher sends no reply. Foreign
    /// PMI servers do not know the command, so nothing is sent to them.
    pub fn report_state(&self, blocked: Option<(&str, i32)>) {
        if self.launcher != Launcher::Oxmpi {
            return;
        }
        let _ = match blocked {
            Some((call, peer)) => self.send_only(
                "oxmpi_state",
                &[
                    ("state", "blocked"),
                    ("call", &percent_encode(call)),
                    ("peer", &peer.to_string()),
                ],
            ),
            None => self.send_only("oxmpi_state", &[("state", "running")]),
        };
    }

    /// Sends an oxmpi request that only oxmpi's launcher understands and
    /// checks its `rc`; a failure carries the launcher's message.
    fn oxmpi_call(&self, cmd: &str, args: &[(&str, &str)]) -> Result<HashMap<String, String>> {
        if self.launcher != Launcher::Oxmpi {
            return Err(Error::NotImplemented(format!(
                "{cmd}: dynamic processes need oxmpi's own launcher"
            )));
        }
        let r = self.call(cmd, args)?;
        match r.get("rc").map(String::as_str) {
            Some("0") => Ok(r),
            _ => Err(Error::Mpi {
                class: match cmd {
                    "oxmpi_spawn" => crate::error::class::ERR_SPAWN,
                    "oxmpi_lookup" => crate::error::class::ERR_NAME,
                    "oxmpi_publish" | "oxmpi_unpublish" => crate::error::class::ERR_SERVICE,
                    _ => crate::error::class::ERR_OTHER,
                },
                message: percent_decode(r.get("msg").map(String::as_str).unwrap_or("failed")),
            }),
        }
    }

    /// Asks the launcher to start the processes of `commands` as a new
    /// job whose parents are `parents` (slots); returns the connection
    /// tag and the new processes' slots.
    pub fn spawn(
        &self,
        commands: &[crate::backend::SpawnCommand],
        parents: &[i32],
    ) -> Result<(i32, Vec<i32>)> {
        let mut fields: Vec<(String, String)> = vec![
            ("ncmds".into(), commands.len().to_string()),
            (
                "parents".into(),
                crate::process_manager::slot_list(
                    &parents.iter().map(|&p| p as usize).collect::<Vec<_>>(),
                ),
            ),
        ];
        for (i, c) in commands.iter().enumerate() {
            fields.push((format!("cmd{i}"), percent_encode(&c.command)));
            fields.push((format!("maxprocs{i}"), c.maxprocs.to_string()));
            fields.push((format!("argc{i}"), c.args.len().to_string()));
            for (j, a) in c.args.iter().enumerate() {
                fields.push((format!("arg{i}_{j}"), percent_encode(a)));
            }
            fields.push((format!("ninfo{i}"), c.info.len().to_string()));
            for (j, (k, v)) in c.info.iter().enumerate() {
                fields.push((format!("infokey{i}_{j}"), percent_encode(k)));
                fields.push((format!("infoval{i}_{j}"), percent_encode(v)));
            }
        }
        let args: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = self.oxmpi_call("oxmpi_spawn", &args)?;
        let tag = r
            .get("tag")
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| Error::Bootstrap("spawn reply without a tag".into()))?;
        let slots = crate::process_manager::parse_slot_list(
            r.get("slots").map(String::as_str).unwrap_or(""),
        )?;
        Ok((tag, slots))
    }

    /// A tag unique in the universe for a new port: `(universe, tag)`.
    pub fn open_port(&self) -> Result<(String, i32)> {
        let r = self.oxmpi_call("oxmpi_open_port", &[])?;
        let universe = r.get("universe").cloned().unwrap_or_default();
        let tag = r
            .get("tag")
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| Error::Bootstrap("open_port reply without a tag".into()))?;
        Ok((universe, tag))
    }

    /// MPI_Publish_name / MPI_Unpublish_name (`port` None) in the
    /// universe's name service.
    pub fn publish(&self, service: &str, port: Option<&str>) -> Result<()> {
        let service = percent_encode(service);
        match port {
            Some(p) => self.oxmpi_call(
                "oxmpi_publish",
                &[("service", &service), ("port", &percent_encode(p))],
            ),
            None => self.oxmpi_call("oxmpi_unpublish", &[("service", &service)]),
        }
        .map(|_| ())
    }

    /// MPI_Lookup_name.
    pub fn lookup(&self, service: &str) -> Result<String> {
        let r = self.oxmpi_call("oxmpi_lookup", &[("service", &percent_encode(service))])?;
        Ok(percent_decode(
            r.get("port").map(String::as_str).unwrap_or(""),
        ))
    }

    /// Asks the launcher to end the whole job with `code`.
    pub fn abort(&self, code: i32, msg: &str) {
        let msg: String = msg
            .chars()
            .map(|c| {
                if c.is_whitespace() || c == '=' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let _ = self.send_only("abort", &[("exitcode", &code.to_string()), ("msg", &msg)]);
    }
}

/// Percent-encodes everything but printable ASCII other than space, '='
/// and '%', so that a value is one PMI token.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_graphic() && b != b'=' && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undoes `percent_encode`.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn rc_ok(r: &HashMap<String, String>, what: &str) -> Result<()> {
    match r.get("rc").map(String::as_str) {
        Some("0") | None => Ok(()),
        Some(rc) => Err(Error::Bootstrap(format!(
            "PMI {what} failed (rc={rc}, {})",
            r.get("msg").map(String::as_str).unwrap_or("")
        ))),
    }
}

fn check_token(s: &str) -> Result<()> {
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '=') {
        return Err(Error::Bootstrap(format!(
            "PMI keys and values must be non-empty, without spaces or '=': {s:?}"
        )));
    }
    Ok(())
}

/// Parses `cmd=x a=b c=d` into a map.
pub fn parse_line(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pmi_lines() {
        let m = parse_line("cmd=get_result rc=0 msg=success value=/oxmpi-1\n");
        assert_eq!(m["cmd"], "get_result");
        assert_eq!(m["value"], "/oxmpi-1");
    }

    #[test]
    fn percent_encodes_calls() {
        assert_eq!(percent_encode("Recv(tag=5, 8 B)"), "Recv(tag%3D5,%208%20B)");
        assert_eq!(percent_encode("100%"), "100%25");
    }

    #[test]
    fn refuses_bad_tokens() {
        assert!(check_token("a b").is_err());
        assert!(check_token("a=b").is_err());
        assert!(check_token("ok.key-1").is_ok());
    }
}
