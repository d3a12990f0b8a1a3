//! `mpiexec` for oxmpi: starts the ranks of an MPI job on this machine,
//! serves them the PMI-1 key-value service they bootstrap from, forwards
//! their output, and ends the whole job when one rank fails.
//!
//! The launcher <-> rank contract (environment variables, wire protocol) is
//! specified in `docs/architecture.md`, "Bootstrap: launcher <-> rank
//! contract". Modules:
//!
//! * `args`: command-line parsing (hydra syntax plus common Open MPI
//!   spellings, MPMD groups);
//! * `job`: spawning, watching and ending the ranks; the exit status;
//! * `pmi`: the PMI-1 codec, state machine and per-rank server threads;
//! * `deadlock`: the deadlock monitor fed by the ranks' state reports;
//! * `hosts`: host lists and files (this machine only);
//! * `bind`: CPU binding (`--bind-to`, `--map-by ...:pe=N`);
//! * `io`: line-by-line forwarding of the ranks' stdout and stderr;
//! * `signals`: signals to the launcher, forwarded to the ranks;
//! * `sys`: the raw OS calls (the only other module with `unsafe`).
//!
//! The entry point is [`main_with_args`], used by the `mpiexec` binary and
//! by the Python package (`mpiexec`, `mpirun` and `oxmpi` console scripts).

#![deny(unsafe_code)]

mod args;
mod bind;
mod deadlock;
mod hosts;
mod io;
mod job;
mod pmi;
mod signals;
mod sys;

use std::io::Write;

/// The launcher's version, also passed to ranks as `OXMPI_LAUNCHER`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit status for a command line that cannot be run.
const STATUS_USAGE: i32 = 2;

/// Runs the launcher as program `prog_name` with `args` (the arguments after
/// the program name) and returns the exit status to use. Errors are printed
/// to stderr.
///
/// `prog_name` is `"mpiexec"` or `"mpirun"` (identical), or `"oxmpi"`, whose
/// first argument is a subcommand: `run` (then as `mpiexec`), `info`,
/// `--version`, `help`.
pub fn main_with_args(prog_name: &str, args: Vec<String>) -> i32 {
    let status = if prog_name == "oxmpi" {
        oxmpi_main(&args)
    } else {
        mpiexec_main(prog_name, &args)
    };
    let _ = std::io::stdout().flush();
    status
}

/// [`main_with_args`] with the process's own arguments; the program name is
/// taken from `argv[0]` (`mpirun`, `oxmpi`), defaulting to `mpiexec`.
pub fn main_from_env() -> i32 {
    let mut argv = std::env::args_os();
    let argv0 = argv.next();
    let prog = argv0
        .as_deref()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .filter(|n| matches!(*n, "mpiexec" | "mpirun" | "oxmpi"))
        .unwrap_or("mpiexec")
        .to_string();
    let mut args = Vec::new();
    for a in argv {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(a) => {
                eprintln!("{prog}: argument {a:?} is not valid UTF-8");
                return STATUS_USAGE;
            }
        }
    }
    main_with_args(&prog, args)
}

fn mpiexec_main(prog: &str, args: &[String]) -> i32 {
    if args.first().map(String::as_str) == Some("--singleton-server") {
        return job::serve_singleton();
    }
    match args::parse(args) {
        Ok(args::Command::Help) => {
            print!("{}", usage(prog));
            0
        }
        Ok(args::Command::Version) => {
            if prog.starts_with("oxmpi") {
                println!("oxmpi {VERSION}");
            } else {
                println!("{prog} (oxmpi) {VERSION}");
            }
            0
        }
        Ok(args::Command::Run(mut spec)) => match prepare(&mut spec) {
            Ok(()) => job::run(&spec),
            Err(e) => {
                eprintln!("{prog}: {e}");
                STATUS_USAGE
            }
        },
        Err(e) => {
            eprintln!("{prog}: {e}; see {prog} --help");
            STATUS_USAGE
        }
    }
}

/// Completes a parsed job from the outside world: the deadlock threshold
/// from `OXMPI_DEADLOCK_TIMEOUT` (the command line wins), the host lists
/// and files (read and checked against this machine's name).
fn prepare(spec: &mut args::JobSpec) -> Result<(), args::UsageError> {
    if spec.deadlock_timeout.is_none() {
        let var = std::env::var_os(DEADLOCK_ENV).unwrap_or_default();
        let v = var.to_string_lossy();
        if !v.trim().is_empty() {
            let t = args::parse_timeout(&v)
                .map_err(|m| args::UsageError(format!("{DEADLOCK_ENV}: {m}")))?;
            spec.deadlock_timeout = Some(t.unwrap_or(std::time::Duration::ZERO));
        }
    }
    hosts::apply(spec, &sys::hostname(), |p| std::fs::read_to_string(p))
}

/// Environment variable with the deadlock threshold in seconds.
const DEADLOCK_ENV: &str = "OXMPI_DEADLOCK_TIMEOUT";

fn oxmpi_main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("run") => mpiexec_main("oxmpi run", &args[1..]),
        Some("--version" | "-V" | "version") => {
            println!("oxmpi {VERSION}");
            0
        }
        Some("info") => {
            let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
            println!("oxmpi {VERSION}");
            for line in oxmpi::env::backend_report() {
                println!("{line}");
            }
            println!("nproc: {nproc}");
            0
        }
        Some("-h" | "--help" | "help") => {
            print!("{}", OXMPI_USAGE);
            0
        }
        None => {
            eprint!("{}", OXMPI_USAGE);
            STATUS_USAGE
        }
        Some(other) => {
            eprintln!(
                "oxmpi: unknown command '{other}'; expected 'run', 'info' or '--version' (see oxmpi --help)"
            );
            STATUS_USAGE
        }
    }
}

const OXMPI_USAGE: &str = "\
Usage: oxmpi <command> [arguments]

Commands:
  run [mpiexec options] program [args...]
                 start an MPI job (the same as mpiexec; see oxmpi run --help)
  info           show the version, the backend and the number of processors
  --version      show the version
  help           show this help
";

fn usage(prog: &str) -> String {
    format!(
        "\
Usage: {prog} [options] program [args...] [: [options] program [args...]]...

Start an MPI job on this machine: N processes (ranks) of the program.

Options:
  -n N, -np N, --np N    number of ranks of this program (default 1, or the
                         number of slots of -host/-f, or N of ppr:N:node)
  -l, --tag-output, -prepend-rank
                         prefix each output line with \"[rank] \"
  --timeout S            end the job after S seconds (exit status 124)
  --deadlock-timeout S   end the job when every rank has been blocked in MPI
                         (or finished) for S seconds (default 5; 0 disables;
                         also OXMPI_DEADLOCK_TIMEOUT; exit status 125)
  -genv NAME VALUE       set NAME=VALUE for every rank
  -env NAME VALUE        set NAME=VALUE for the ranks of this program only
  -x NAME[=VALUE]        pass NAME to every rank (mpiexec's value, or VALUE)
  -genvlist NAME,...     pass these variables with mpiexec's values
  -genvall               ranks start with mpiexec's environment (default)
  -genvnone              ranks start with an empty environment
  -wdir DIR              working directory of the ranks of this program
  -gwdir DIR             working directory of ranks without -wdir
  -host LIST, -hosts LIST, --host LIST
                         hosts as host[:slots],...; only this machine
                         (localhost, 127.0.0.1, its host name) is accepted
  -f FILE, -hostfile FILE, -machinefile FILE
                         the same from a file: one host per line, as host,
                         host:N or host slots=N; '#' starts a comment
  --bind-to core|hwthread|none
                         pin each rank to its own core / hardware thread,
                         round robin over the CPUs mpiexec may use
                         (default none: the OS places the ranks)
  --map-by slot|core|node|hwthread[:pe=N], --map-by ppr:N:node
                         all ranks run here in rank order; pe=N gives each
                         rank N cores (or hardware threads) with --bind-to;
                         ppr:N:node sets the default number of ranks to N
  --oversubscribe        accepted for Open MPI compatibility; no effect
                         (more ranks than CPUs is always allowed)
  --allow-run-as-root    accepted for Open MPI compatibility; no effect
  --no-mpi4py-compat     do not put oxmpi's mpi4py package first on PYTHONPATH
  -h, --help             show this help
  --version              show the version
  --                     end of options: the next word is the program

Every long option may be written with one or two dashes. Everything after
the program is passed to it unchanged, up to a lone ':' which starts the next
program (MPMD); ranks are numbered consecutively across programs:
  {prog} -n 1 python manager.py : -n 4 python worker.py

Each rank gets PMI_RANK, PMI_SIZE, PMI_FD, OXMPI_JOBID, OXMPI_LAUNCHER,
MPI_LOCALRANKID and MPI_LOCALNRANKS; rank 0 reads mpiexec's stdin, the
others read /dev/null.

When a rank fails (non-zero exit, signal, MPI_Abort) the others get SIGTERM,
then SIGKILL 1 s later. SIGINT, SIGTERM and SIGHUP are passed on to the ranks
(SIGKILL follows after 2 s); SIGUSR1 and SIGUSR2 are passed on. The job's
shared memory is removed when it ends, unless mpiexec itself is SIGKILLed.

Exit status:
  0        every rank exited with status 0
  C        the first rank to fail exited with code C, or called MPI_Abort(C)
  128+S    the first rank to fail was killed by signal S, or mpiexec itself
           received signal S (SIGINT 130, SIGTERM 143, SIGHUP 129)
  124      the --timeout expired
  125      deadlock: every rank was blocked (or finished) for --deadlock-timeout
  127, 126 the program was not found / could not be executed
  2        bad command line
"
    )
}
