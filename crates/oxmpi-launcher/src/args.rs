//! Command-line parsing for `mpiexec` / `mpirun` / `oxmpi run`.
//!
//! The accepted syntax follows MPICH's hydra (single-dash long options, MPMD
//! groups separated by `:`), with the Open MPI spellings people type by habit
//! (`--np`, `-x`, `--host`, `--map-by`, `--bind-to`, `--oversubscribe`).
//! Every long option may be written with one or two dashes. Parsing is a pure
//! function of the argument list so that it can be unit tested; host files,
//! the host name and the environment are consulted later (`hosts.rs`,
//! `lib.rs`, `job.rs`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Start a job.
    Run(JobSpec),
    /// Print usage and exit successfully.
    Help,
    /// Print the version and exit successfully.
    Version,
}

/// A whole job: one or more program groups plus options that apply to all.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobSpec {
    /// The colon-separated groups, in order; ranks are numbered
    /// consecutively across them.
    pub apps: Vec<AppSpec>,
    /// Prefix every forwarded output line with `[rank] ` (`-l`).
    pub tag_output: bool,
    /// Kill the job after this long (`--timeout`); `None` means no limit.
    pub timeout: Option<Duration>,
    /// Whether ranks start from the launcher's environment (`-genvall`,
    /// the default) or from an empty one (`-genvnone`).
    pub inherit_env: bool,
    /// `-genv`, `-x` and `-genvlist` settings, in command-line order.
    pub global_env: Vec<EnvSetting>,
    /// Default working directory for groups without their own `-wdir`.
    pub global_wdir: Option<PathBuf>,
    /// Prepend `$OXMPI_COMPAT_PATH` to the ranks' `PYTHONPATH` (cleared by
    /// `--no-mpi4py-compat`).
    pub mpi4py_compat: bool,
    /// `--deadlock-timeout`: `Some(ZERO)` disables the monitor; `None`
    /// means not given (then `OXMPI_DEADLOCK_TIMEOUT`, then the default).
    pub deadlock_timeout: Option<Duration>,
    /// `-host`/`-hosts` lists and `-f`/`-hostfile` files, in order; checked
    /// and turned into a slot count by `hosts::apply`.
    pub hosts: Vec<HostArg>,
    /// `--bind-to`.
    pub bind: Binding,
    /// Processing elements (cores or hardware threads) per rank for
    /// binding: `N` of `--map-by slot:pe=N`; 1 otherwise.
    pub cpus_per_rank: usize,
    /// `N` of `--map-by ppr:N:node`: ranks per node, so the default number
    /// of ranks of a group without `-n` (one node).
    pub ranks_per_node: Option<usize>,
}

/// Where host entries come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostArg {
    /// `-host a,b:2` / `--host` / `-hosts`: a comma-separated list.
    List(String),
    /// `-f FILE` / `-hostfile` / `-machinefile`: a host file.
    File(PathBuf),
}

/// What each rank is pinned to (`--bind-to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Binding {
    /// No pinning: the OS places the ranks (the default).
    #[default]
    None,
    /// Each rank gets `cpus_per_rank` whole cores (all their hardware
    /// threads), round robin over the cores the launcher may use.
    Core,
    /// Each rank gets `cpus_per_rank` hardware threads (logical CPUs).
    HwThread,
}

/// One program group of an MPMD job (the whole job when there is no `:`).
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpec {
    /// Number of ranks running this program (`-n`, default 1).
    pub nprocs: usize,
    /// Whether `-n` was given; if not, a host list's slot count or
    /// `--map-by ppr:N:node` may set `nprocs`.
    pub nprocs_given: bool,
    /// The program, looked up in `PATH` like a shell does.
    pub program: String,
    /// Its arguments, verbatim.
    pub args: Vec<String>,
    /// `-env NAME VALUE` settings local to this group.
    pub env: Vec<(String, String)>,
    /// `-wdir DIR` local to this group.
    pub wdir: Option<PathBuf>,
}

/// One environment setting that applies to every rank.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvSetting {
    /// `-genv NAME VALUE` or `-x NAME=VALUE`.
    Set(String, String),
    /// `-x NAME` or `-genvlist NAME,...`: pass the launcher's own value
    /// (matters with `-genvnone`; ignored when the variable is unset).
    Export(String),
}

/// A command line that cannot be run; the message is shown after
/// `mpiexec: ` and the launcher exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Options that take a value and so may also be written `-opt=value`.
const VALUED: &[&str] = &[
    "n",
    "np",
    "timeout",
    "x",
    "wdir",
    "gwdir",
    "genvlist",
    "deadlock-timeout",
    "host",
    "hosts",
    "f",
    "hostfile",
    "machinefile",
    "bind-to",
    "map-by",
];

/// Per-group settings collected while scanning one `:`-separated section.
#[derive(Default)]
struct GroupOptions {
    nprocs: Option<usize>,
    env: Vec<(String, String)>,
    wdir: Option<PathBuf>,
}

/// Parses the arguments that follow the program name.
///
/// Options come first; the first token that does not start with `-` (or the
/// token after `--`) is the program, and everything after it up to a lone
/// `:` is passed to the program unchanged.
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    let mut spec = JobSpec {
        inherit_env: true,
        mpi4py_compat: true,
        cpus_per_rank: 1,
        ..JobSpec::default()
    };
    let mut i = 0;
    loop {
        let mut group = GroupOptions::default();
        let mut program = None;
        while i < args.len() {
            let token = &args[i];
            i += 1;
            if token == "--" {
                match args.get(i) {
                    Some(p) => {
                        program = Some(p.clone());
                        i += 1;
                    }
                    None => return Err(UsageError("'--' must be followed by a program".into())),
                }
                break;
            }
            if token == ":" {
                return Err(UsageError(
                    "':' must separate two programs (empty program group)".into(),
                ));
            }
            if !token.starts_with('-') || token == "-" {
                program = Some(token.clone());
                break;
            }
            if let Some(cmd) = parse_option(token, args, &mut i, &mut spec, &mut group)? {
                return Ok(cmd);
            }
        }
        let Some(program) = program else {
            return Err(UsageError(if spec.apps.is_empty() {
                "no program given".into()
            } else {
                "':' must be followed by a program".into()
            }));
        };
        let mut prog_args = Vec::new();
        while i < args.len() && args[i] != ":" {
            prog_args.push(args[i].clone());
            i += 1;
        }
        spec.apps.push(AppSpec {
            nprocs: group.nprocs.unwrap_or(1),
            nprocs_given: group.nprocs.is_some(),
            program,
            args: prog_args,
            env: group.env,
            wdir: group.wdir,
        });
        if i >= args.len() {
            return Ok(Command::Run(spec));
        }
        // Skip the ':' and parse the next group.
        i += 1;
        if i >= args.len() {
            return Err(UsageError("':' must be followed by a program".into()));
        }
    }
}

/// Handles one option token (and the values it consumes from `args[*i..]`).
/// Returns `Some` for options that end parsing (`--help`, `--version`).
fn parse_option(
    token: &str,
    args: &[String],
    i: &mut usize,
    spec: &mut JobSpec,
    group: &mut GroupOptions,
) -> Result<Option<Command>, UsageError> {
    let bare = token
        .strip_prefix("--")
        .or_else(|| token.strip_prefix('-'))
        .unwrap_or(token);
    // `-n=4`: split only for options that take one value, so that
    // `-x NAME=VALUE` and unknown options keep their spelling.
    let (name, mut inline) = match bare.split_once('=') {
        Some((n, v)) if VALUED.contains(&n) => (n, Some(v.to_string())),
        _ => (bare, None),
    };
    let mut value = |what: &str| -> Result<String, UsageError> {
        if let Some(v) = inline.take() {
            return Ok(v);
        }
        match args.get(*i) {
            Some(v) => {
                *i += 1;
                Ok(v.clone())
            }
            None => Err(UsageError(format!("option '{token}' needs {what}"))),
        }
    };
    match name {
        "h" | "help" => return Ok(Some(Command::Help)),
        "version" => return Ok(Some(Command::Version)),
        "n" | "np" => {
            let v = value("a number of processes")?;
            group.nprocs = Some(parse_nprocs(token, &v)?);
        }
        "l" | "tag-output" | "prepend-rank" => spec.tag_output = true,
        "timeout" => {
            let v = value("a number of seconds")?;
            spec.timeout = parse_timeout(&v).map_err(|m| UsageError(format!("{token}: {m}")))?;
        }
        "oversubscribe" => {}
        // Open MPI refuses to run as root without it; oxmpi never refuses,
        // and CI containers (dask-mpi's tests with ALLOW_RUN_AS_ROOT) pass it.
        "allow-run-as-root" => {}
        "genv" => {
            let n = value("a name and a value")?;
            let v = value("a name and a value")?;
            check_env_name(token, &n)?;
            spec.global_env.push(EnvSetting::Set(n, v));
        }
        "env" => {
            let n = value("a name and a value")?;
            let v = value("a name and a value")?;
            check_env_name(token, &n)?;
            group.env.push((n, v));
        }
        "x" => {
            let v = value("NAME or NAME=VALUE")?;
            match v.split_once('=') {
                Some((n, val)) => {
                    check_env_name(token, n)?;
                    spec.global_env.push(EnvSetting::Set(n.into(), val.into()));
                }
                None => {
                    check_env_name(token, &v)?;
                    spec.global_env.push(EnvSetting::Export(v));
                }
            }
        }
        "genvlist" => {
            let v = value("a comma-separated list of names")?;
            for n in v.split(',').filter(|n| !n.is_empty()) {
                check_env_name(token, n)?;
                spec.global_env.push(EnvSetting::Export(n.into()));
            }
        }
        "genvall" => spec.inherit_env = true,
        "genvnone" => spec.inherit_env = false,
        "wdir" => group.wdir = Some(PathBuf::from(value("a directory")?)),
        "gwdir" => spec.global_wdir = Some(PathBuf::from(value("a directory")?)),
        "no-mpi4py-compat" => spec.mpi4py_compat = false,
        "deadlock-timeout" => {
            let v = value("a number of seconds")?;
            let t = parse_timeout(&v).map_err(|m| UsageError(format!("{token}: {m}")))?;
            spec.deadlock_timeout = Some(t.unwrap_or(Duration::ZERO));
        }
        "host" | "hosts" => spec.hosts.push(HostArg::List(value("a list of hosts")?)),
        "f" | "hostfile" | "machinefile" => {
            spec.hosts
                .push(HostArg::File(PathBuf::from(value("a host file")?)));
        }
        "bind-to" => {
            spec.bind = match value("core, hwthread or none")?.as_str() {
                "core" | "cores" => Binding::Core,
                "hwthread" | "hwthreads" => Binding::HwThread,
                "none" => Binding::None,
                other => {
                    return Err(UsageError(format!(
                        "{token}: '{other}' is not supported; use core, hwthread or none"
                    )))
                }
            };
        }
        "map-by" => {
            let v = value("a mapping policy")?;
            let (pe, ppr) = parse_map_by(&v).map_err(|m| UsageError(format!("{token}: {m}")))?;
            spec.cpus_per_rank = pe;
            spec.ranks_per_node = ppr;
        }
        _ => return Err(UsageError(format!("unknown option '{token}'"))),
    }
    Ok(None)
}

/// Parses a `--map-by` value into (processing elements per rank, ranks
/// per node). Accepted: `slot`, `core`, `node`, `hwthread`, each optionally
/// with `:pe=N` (any case) and `:oversubscribe`/`:nooversubscribe` (no
/// effect: oversubscription is always allowed), and `ppr:N:node`. On one
/// machine every mapping puts all ranks here in rank order, so only `pe`
/// (used by `--bind-to`) and `ppr` (default rank count) matter.
fn parse_map_by(v: &str) -> Result<(usize, Option<usize>), String> {
    let unsupported = || {
        format!(
            "'{v}' is not supported; use slot, core, node, hwthread (each \
             optionally with :pe=N) or ppr:N:node"
        )
    };
    let mut parts = v.split(':');
    let policy = parts.next().unwrap_or("").to_ascii_lowercase();
    match policy.as_str() {
        "ppr" => {
            let n = parts.next().ok_or_else(unsupported)?;
            let n = match n.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("'{n}' in '{v}' is not a number of ranks")),
            };
            match (
                parts.next().map(str::to_ascii_lowercase).as_deref(),
                parts.next(),
            ) {
                (Some("node"), None) => Ok((1, Some(n))),
                _ => Err(unsupported()),
            }
        }
        "slot" | "core" | "node" | "hwthread" | "" => {
            let mut pe = 1;
            for m in parts {
                let lower = m.to_ascii_lowercase();
                if let Some(n) = lower.strip_prefix("pe=") {
                    pe = match n.parse::<usize>() {
                        Ok(n) if n > 0 => n,
                        _ => return Err(format!("'{m}' in '{v}' needs a number of at least 1")),
                    };
                } else if lower != "oversubscribe" && lower != "nooversubscribe" {
                    return Err(unsupported());
                }
            }
            if policy.is_empty() && pe == 1 {
                // A bare ":pe=N" is Open MPI 5 syntax; an empty policy
                // without it is a typo.
                return Err(unsupported());
            }
            Ok((pe, None))
        }
        _ => Err(unsupported()),
    }
}

fn parse_nprocs(token: &str, v: &str) -> Result<usize, UsageError> {
    match v.parse::<usize>() {
        Ok(0) => Err(UsageError(format!(
            "{token}: the number of processes must be at least 1"
        ))),
        Ok(n) => Ok(n),
        Err(_) => Err(UsageError(format!(
            "{token}: '{v}' is not a number of processes"
        ))),
    }
}

/// Parses a timeout in seconds (fractions allowed). `0` means no timeout,
/// as with hydra's `MPIEXEC_TIMEOUT`. Shared with the environment variable.
pub fn parse_timeout(v: &str) -> Result<Option<Duration>, String> {
    match v.trim().parse::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
        _ => Err(format!("'{v}' is not a number of seconds")),
    }
}

/// Rejects names that `setenv` would refuse, so the error names the option
/// instead of surfacing later as a failed spawn.
fn check_env_name(token: &str, name: &str) -> Result<(), UsageError> {
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        Err(UsageError(format!(
            "{token}: '{name}' is not an environment variable name"
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, UsageError> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&v)
    }

    fn run(s: &str) -> JobSpec {
        match p(s) {
            Ok(Command::Run(spec)) => spec,
            other => panic!("{s:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn nprocs_spellings() {
        for s in [
            "-n 4 a", "-np 4 a", "--np 4 a", "-n=4 a", "--n=4 a", "-np=4 a",
        ] {
            let spec = run(s);
            assert_eq!(spec.apps.len(), 1, "{s}");
            assert_eq!(spec.apps[0].nprocs, 4, "{s}");
            assert_eq!(spec.apps[0].program, "a", "{s}");
        }
        assert_eq!(run("prog").apps[0].nprocs, 1);
    }

    #[test]
    fn bad_nprocs() {
        assert!(p("-n 0 a").unwrap_err().0.contains("at least 1"));
        assert!(p("-n x a").unwrap_err().0.contains("not a number"));
        assert!(p("-n").unwrap_err().0.contains("needs"));
        assert!(p("-n -3 a").is_err());
    }

    #[test]
    fn program_args_are_verbatim() {
        let spec = run("-n 2 python -n 3 --help -l");
        assert_eq!(spec.apps[0].program, "python");
        assert_eq!(spec.apps[0].args, ["-n", "3", "--help", "-l"]);
        assert!(!spec.tag_output);
    }

    #[test]
    fn double_dash_ends_options() {
        let spec = run("-n 2 -- -weird-prog x");
        assert_eq!(spec.apps[0].program, "-weird-prog");
        assert_eq!(spec.apps[0].args, ["x"]);
        assert!(p("-n 2 --").is_err());
    }

    #[test]
    fn unknown_option_is_an_error() {
        let e = p("-foo prog").unwrap_err();
        assert_eq!(e.0, "unknown option '-foo'");
        assert!(p("--bogus=3 prog").unwrap_err().0.contains("'--bogus=3'"));
    }

    #[test]
    fn missing_program() {
        assert!(p("").unwrap_err().0.contains("no program"));
        assert!(p("-n 3").unwrap_err().0.contains("no program"));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(p("-h").unwrap(), Command::Help);
        assert_eq!(p("-n 2 --help").unwrap(), Command::Help);
        assert_eq!(p("--version").unwrap(), Command::Version);
        assert_eq!(p("-version").unwrap(), Command::Version);
        // After the program, --help belongs to the program.
        assert!(matches!(p("prog --help").unwrap(), Command::Run(_)));
    }

    #[test]
    fn flags() {
        for s in [
            "-l a",
            "--tag-output a",
            "-prepend-rank a",
            "--prepend-rank a",
        ] {
            assert!(run(s).tag_output, "{s}");
        }
        assert_eq!(run("--oversubscribe a").apps[0].program, "a");
        assert_eq!(run("--allow-run-as-root -np 2 a").apps[0].nprocs, 2);
        assert!(!run("--no-mpi4py-compat a").mpi4py_compat);
        assert!(run("a").mpi4py_compat);
    }

    #[test]
    fn timeouts() {
        assert_eq!(run("--timeout 5 a").timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            run("-timeout 0.5 a").timeout,
            Some(Duration::from_millis(500))
        );
        assert_eq!(run("-timeout=2 a").timeout, Some(Duration::from_secs(2)));
        assert_eq!(run("-timeout 0 a").timeout, None);
        assert!(p("-timeout abc a").is_err());
        assert!(p("-timeout -1 a").is_err());
        assert!(p("-timeout inf a").is_err());
    }

    #[test]
    fn environment_options() {
        let spec = run("-genv A 1 -x B=2=3 -x C -genvlist D,E -env F 6 -genvnone a");
        assert_eq!(
            spec.global_env,
            [
                EnvSetting::Set("A".into(), "1".into()),
                EnvSetting::Set("B".into(), "2=3".into()),
                EnvSetting::Export("C".into()),
                EnvSetting::Export("D".into()),
                EnvSetting::Export("E".into()),
            ]
        );
        assert_eq!(spec.apps[0].env, [("F".to_string(), "6".to_string())]);
        assert!(!spec.inherit_env);
        assert!(run("-genvnone -genvall a").inherit_env);
        assert!(p("-genv A").is_err());
        assert!(p("-genv =A 1 a").is_err());
        assert!(p("-x =1 a").is_err());
    }

    #[test]
    fn working_directories() {
        let spec = run("-gwdir /g -wdir /tmp a : -n 2 b");
        assert_eq!(spec.global_wdir, Some(PathBuf::from("/g")));
        assert_eq!(spec.apps[0].wdir, Some(PathBuf::from("/tmp")));
        assert_eq!(spec.apps[1].wdir, None);
        assert_eq!(run("--wdir=/x a").apps[0].wdir, Some(PathBuf::from("/x")));
    }

    #[test]
    fn mpmd_groups() {
        let spec = run("-l -n 1 a x : -n 3 -env K V b y z : c");
        assert!(spec.tag_output);
        let got: Vec<_> = spec
            .apps
            .iter()
            .map(|a| (a.nprocs, a.program.as_str(), a.args.clone(), a.env.len()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "a", vec!["x".to_string()], 0),
                (3, "b", vec!["y".to_string(), "z".to_string()], 1),
                (1, "c", vec![], 0),
            ]
        );
    }

    #[test]
    fn mpmd_errors() {
        assert!(p("a :").is_err());
        assert!(p(": a").is_err());
        assert!(p("a : : b").is_err());
        assert!(p("a : -n 2").is_err());
    }

    #[test]
    fn deadlock_timeouts() {
        assert_eq!(run("a").deadlock_timeout, None);
        assert_eq!(
            run("--deadlock-timeout 2.5 a").deadlock_timeout,
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            run("-deadlock-timeout=0 a").deadlock_timeout,
            Some(Duration::ZERO)
        );
        assert!(p("--deadlock-timeout x a")
            .unwrap_err()
            .0
            .contains("not a number of seconds"));
    }

    #[test]
    fn host_options() {
        let spec = run("-host localhost:2 --hosts=a,b -f /h1 --hostfile /h2 -machinefile /h3 --machinefile=/h4 x");
        assert_eq!(
            spec.hosts,
            [
                HostArg::List("localhost:2".into()),
                HostArg::List("a,b".into()),
                HostArg::File("/h1".into()),
                HostArg::File("/h2".into()),
                HostArg::File("/h3".into()),
                HostArg::File("/h4".into()),
            ]
        );
        assert!(p("--host").unwrap_err().0.contains("needs a list of hosts"));
        assert!(run("-n 3 a").apps[0].nprocs_given);
        assert!(!run("a").apps[0].nprocs_given);
    }

    #[test]
    fn binding_options() {
        assert_eq!(run("a").bind, Binding::None);
        assert_eq!(run("--bind-to core a").bind, Binding::Core);
        assert_eq!(run("-bind-to hwthread a").bind, Binding::HwThread);
        assert_eq!(run("-bind-to=none a").bind, Binding::None);
        let e = p("--bind-to socket a").unwrap_err().0;
        assert_eq!(
            e,
            "--bind-to: 'socket' is not supported; use core, hwthread or none"
        );
    }

    #[test]
    fn map_by_options() {
        for (arg, pe, ppr) in [
            ("slot", 1, None),
            ("core", 1, None),
            ("node", 1, None),
            ("slot:pe=2", 2, None),
            ("slot:PE=3", 3, None),
            ("core:pe=2:oversubscribe", 2, None),
            (":PE=4", 4, None),
            ("ppr:3:node", 1, Some(3)),
        ] {
            let spec = run(&format!("--map-by {arg} a"));
            assert_eq!(
                (spec.cpus_per_rank, spec.ranks_per_node),
                (pe, ppr),
                "{arg}"
            );
        }
        assert_eq!(run("a").cpus_per_rank, 1);
        for bad in [
            "socket",
            "ppr:2:socket",
            "ppr:0:node",
            "ppr:x:node",
            "slot:pe=0",
            "slot:span",
            "",
        ] {
            let e = p(&format!("--map-by={bad} a")).unwrap_err().0;
            assert!(e.starts_with("--map-by="), "{bad}: {e}");
        }
    }

    #[test]
    fn equals_only_for_valued_options() {
        assert!(p("-l=1 a").unwrap_err().0.contains("unknown option '-l=1'"));
    }
}
