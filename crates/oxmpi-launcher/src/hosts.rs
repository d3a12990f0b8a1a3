//! Host lists (`-host`, `--host`, `-hosts`) and host files (`-f`,
//! `-hostfile`, `-machinefile`).
//!
//! This launcher starts every rank on this machine, so the only hosts it
//! accepts are names of this machine: `localhost`, loopback addresses and
//! its host name. A host list is still useful to scripts written for hydra
//! or Open MPI: a group without `-n` gets as many ranks as the list has
//! slots, as with both of them. Slot counts never limit the job (every
//! oversubscription is allowed). Any other host is refused with a message
//! that points to the system-MPI backend, which runs across machines under
//! the site's own launcher.
//!
//! Accepted syntax, per entry: `host`, `host:N` (hydra), and in host files
//! also `host slots=N [max_slots=M]` (Open MPI); `#` starts a comment.
//! Each entry adds its slots (default 1), also when a host repeats.

use std::io;
use std::path::Path;

use crate::args::{HostArg, JobSpec, UsageError};

/// One host with its slot count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub name: String,
    pub slots: usize,
}

/// Parses a comma-separated `-host` list.
pub fn parse_host_list(list: &str) -> Result<Vec<HostEntry>, String> {
    let mut out = Vec::new();
    for item in list.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        out.push(parse_name_and_count(item)?);
    }
    if out.is_empty() {
        return Err(format!("'{list}' names no host"));
    }
    Ok(out)
}

/// Parses the text of a host file. Errors name the line.
pub fn parse_hostfile(text: &str) -> Result<Vec<HostEntry>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = |m: String| format!("line {}: {m}", i + 1);
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        let mut entry = parse_name_and_count(first).map_err(at)?;
        let had_count = first != entry.name;
        for w in words {
            let (key, value) = w
                .split_once('=')
                .ok_or_else(|| at(format!("unexpected '{w}' (expected slots=N)")))?;
            let n = parse_count(value).map_err(at)?;
            match key {
                "slots" if had_count => {
                    return Err(at(format!("'{first}' already gives a slot count")));
                }
                "slots" => entry.slots = n,
                // Open MPI's upper limit; this launcher never refuses to
                // oversubscribe, so it has no effect.
                "max_slots" | "max-slots" => {}
                _ => return Err(at(format!("unknown attribute '{key}'"))),
            }
        }
        out.push(entry);
    }
    Ok(out)
}

/// `name`, `name:N`, a bare IPv6 address, or `[address]:N`.
fn parse_name_and_count(item: &str) -> Result<HostEntry, String> {
    let (name, count) = if let Some(rest) = item.strip_prefix('[') {
        match rest.split_once(']') {
            Some((addr, "")) => (addr, None),
            Some((addr, tail)) => match tail.strip_prefix(':') {
                Some(n) => (addr, Some(n)),
                None => return Err(format!("'{item}' is not a host name")),
            },
            None => return Err(format!("'{item}' is not a host name")),
        }
    } else if item.matches(':').count() > 1 {
        (item, None) // an IPv6 address without a count
    } else {
        match item.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (item, None),
        }
    };
    if name.is_empty() {
        return Err(format!("'{item}' is not a host name"));
    }
    let slots = match count {
        Some(c) => parse_count(c)?,
        None => 1,
    };
    Ok(HostEntry {
        name: name.to_string(),
        slots,
    })
}

fn parse_count(c: &str) -> Result<usize, String> {
    match c.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "'{c}' is not a slot count (a number of at least 1)"
        )),
    }
}

/// Whether `name` designates this machine, whose host name is `hostname`.
///
/// Names are compared without case. A qualified and an unqualified form of
/// the same first label match (`node1` and `node1.cluster`), as host files
/// often use the other form than the machine's own host name.
pub fn is_local(name: &str, hostname: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let hostname = hostname.to_ascii_lowercase();
    if matches!(
        name.as_str(),
        "localhost" | "localhost.localdomain" | "localhost6" | "ip6-localhost" | "::1"
    ) {
        return true;
    }
    if let Ok(std::net::IpAddr::V4(a)) = name.parse::<std::net::IpAddr>() {
        if a.is_loopback() {
            return true;
        }
    }
    if hostname.is_empty() {
        return false;
    }
    if name == hostname {
        return true;
    }
    let first = |s: &str| s.split('.').next().unwrap_or("").to_string();
    (!name.contains('.') || !hostname.contains('.')) && first(&name) == first(&hostname)
}

/// Reads the host lists and files of `spec`, refuses hosts other than this
/// machine, and gives each group without `-n` its default rank count: the
/// `ppr:N:node` count if given, else the total number of slots.
pub fn apply(
    spec: &mut JobSpec,
    hostname: &str,
    read: impl Fn(&Path) -> io::Result<String>,
) -> Result<(), UsageError> {
    let mut slots = 0usize;
    for arg in &spec.hosts {
        let entries = match arg {
            HostArg::List(list) => {
                parse_host_list(list).map_err(|m| UsageError(format!("host list: {m}")))?
            }
            HostArg::File(path) => {
                let text = read(path).map_err(|e| {
                    UsageError(format!(
                        "cannot read host file '{}': {}",
                        path.display(),
                        crate::job::describe(&e)
                    ))
                })?;
                parse_hostfile(&text)
                    .map_err(|m| UsageError(format!("host file '{}': {m}", path.display())))?
            }
        };
        for e in entries {
            if !is_local(&e.name, hostname) {
                return Err(UsageError(format!(
                    "host '{}' is not this machine ({}): this launcher starts every \
                     rank here. Multi-host runs need oxmpi's system-MPI backend, started \
                     with your site's launcher (srun, or the system MPI's mpiexec)",
                    e.name,
                    if hostname.is_empty() { "?" } else { hostname }
                )));
            }
            slots = slots.saturating_add(e.slots);
        }
    }
    let default = spec.ranks_per_node.or((slots > 0).then_some(slots));
    if let Some(n) = default {
        for app in spec.apps.iter_mut().filter(|a| !a.nprocs_given) {
            app.nprocs = n;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{parse, Command};

    fn e(name: &str, slots: usize) -> HostEntry {
        HostEntry {
            name: name.into(),
            slots,
        }
    }

    #[test]
    fn host_lists() {
        assert_eq!(
            parse_host_list("localhost:2,myhost, 127.0.0.1:3").unwrap(),
            [e("localhost", 2), e("myhost", 1), e("127.0.0.1", 3)]
        );
        assert_eq!(
            parse_host_list("::1,[::1]:4").unwrap(),
            [e("::1", 1), e("::1", 4)]
        );
        assert!(parse_host_list("a:0").unwrap_err().contains("slot count"));
        assert!(parse_host_list("a:x").is_err());
        assert!(parse_host_list(":2").is_err());
        assert!(parse_host_list(",").unwrap_err().contains("names no host"));
    }

    #[test]
    fn hostfiles() {
        let text = "# a comment\n\
                    localhost:2   # hydra style\n\
                    \n\
                    myhost slots=4 max_slots=8\n\
                    127.0.0.1\n";
        assert_eq!(
            parse_hostfile(text).unwrap(),
            [e("localhost", 2), e("myhost", 4), e("127.0.0.1", 1)]
        );
        assert_eq!(
            parse_hostfile("a\nb junk\n").unwrap_err(),
            "line 2: unexpected 'junk' (expected slots=N)"
        );
        assert_eq!(
            parse_hostfile("a cpus=3").unwrap_err(),
            "line 1: unknown attribute 'cpus'"
        );
        assert!(parse_hostfile("a:2 slots=3")
            .unwrap_err()
            .contains("already gives"));
        assert!(parse_hostfile("a slots=0")
            .unwrap_err()
            .contains("slot count"));
        assert!(parse_hostfile("").unwrap().is_empty());
    }

    #[test]
    fn local_names() {
        for n in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "node7",
            "Node7.Cluster.Example",
        ] {
            assert!(is_local(n, "node7.cluster.example"), "{n}");
            assert!(is_local(n, "node7"), "{n}");
        }
        for n in ["node8", "node7x", "10.0.0.1", "node7.other.example", ""] {
            assert!(!is_local(n, "node7.cluster.example"), "{n}");
        }
        assert!(!is_local("node7", ""));
    }

    fn spec(args: &str) -> JobSpec {
        let v: Vec<String> = args.split_whitespace().map(String::from).collect();
        match parse(&v).unwrap() {
            Command::Run(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn files(path: &Path) -> io::Result<String> {
        match path.to_str() {
            Some("/hosts") => Ok("localhost slots=3\nme:2\n".into()),
            Some("/remote") => Ok("localhost\nfaraway slots=8\n".into()),
            _ => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    #[test]
    fn slots_set_the_default_rank_count() {
        let mut s = spec("-f /hosts a : -n 2 b : c");
        apply(&mut s, "me", files).unwrap();
        let n: Vec<usize> = s.apps.iter().map(|a| a.nprocs).collect();
        assert_eq!(n, [5, 2, 5]);

        let mut s = spec("--host localhost:2,me a");
        apply(&mut s, "me", files).unwrap();
        assert_eq!(s.apps[0].nprocs, 3);

        let mut s = spec("--map-by ppr:4:node --host localhost:2 a");
        apply(&mut s, "me", files).unwrap();
        assert_eq!(s.apps[0].nprocs, 4);

        let mut s = spec("a");
        apply(&mut s, "me", files).unwrap();
        assert_eq!(s.apps[0].nprocs, 1);
    }

    #[test]
    fn remote_hosts_are_refused() {
        let mut s = spec("-f /remote a");
        let err = apply(&mut s, "me", files).unwrap_err().0;
        assert!(
            err.starts_with("host 'faraway' is not this machine (me): "),
            "{err}"
        );
        assert!(err.contains("system-MPI backend"), "{err}");
        let mut s = spec("-hosts other a");
        assert!(apply(&mut s, "me", files).is_err());
        let mut s = spec("-f /missing a");
        assert_eq!(
            apply(&mut s, "me", files).unwrap_err().0,
            "cannot read host file '/missing': No such file or directory"
        );
        let mut s = spec("-host a:0 a");
        assert!(apply(&mut s, "me", files)
            .unwrap_err()
            .0
            .starts_with("host list: "));
    }
}
