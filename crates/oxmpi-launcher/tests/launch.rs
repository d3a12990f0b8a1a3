//! End-to-end tests of the `mpiexec` binary: real processes, real signals.
//!
//! Every wait has a deadline: a test that would hang kills the launcher
//! (whose ranks then die of their parent-death signal) and fails.
//!
//! The PMI tests re-run this test binary under `mpiexec`: with
//! `OXMPI_LAUNCHER_TEST_ROLE` set, the `pmi_rank` test becomes a rank that
//! speaks PMI-1 through `PMI_FD` (a tiny client below) and exits.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const ROLE: &str = "OXMPI_LAUNCHER_TEST_ROLE";
/// Generous bound for jobs that should take milliseconds.
const LIMIT: Duration = Duration::from_secs(30);

fn mpiexec(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpiexec"));
    // The developer's own settings must not change what the tests see.
    c.args(args)
        .env_remove("OXMPI_COMPAT_PATH")
        .env_remove("OXMPI_DEADLOCK_TIMEOUT")
        .env_remove(ROLE);
    c
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Output {
    fn lines(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.stdout.lines().collect();
        v.sort_unstable();
        v
    }
}

fn drain<R: Read + Send + 'static>(r: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = Vec::new();
        let _ = BufReader::new(r).read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// Waits for `child` until `limit`; on expiry kills it and panics.
fn wait_deadline(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mpiexec did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Runs a command with stdin from `input`, collecting its output.
fn run_with_input(mut cmd: Command, input: Option<&str>, limit: Duration) -> Output {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn mpiexec");
    if let Some(text) = input {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let status = wait_deadline(&mut child, limit);
    let elapsed = start.elapsed();
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed,
    }
}

fn run(args: &[&str]) -> Output {
    run_with_input(mpiexec(args), None, LIMIT)
}

#[test]
fn three_ranks_say_who_they_are() {
    let o = run(&["-n", "3", "sh", "-c", "echo rank $PMI_RANK of $PMI_SIZE"]);
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    assert_eq!(o.lines(), ["rank 0 of 3", "rank 1 of 3", "rank 2 of 3"]);
}

#[test]
fn contract_environment() {
    let o = run(&[
        "-n",
        "2",
        "sh",
        "-c",
        "echo $PMI_RANK $OXMPI_LAUNCHER $MPI_LOCALRANKID/$MPI_LOCALNRANKS ${OXMPI_JOBID%-*}; \
         [ -S /proc/self/fd/$PMI_FD ] || [ -e /proc/self/fd/$PMI_FD ] && echo fd-ok",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    let v = env!("CARGO_PKG_VERSION");
    let lines = o.lines();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("0 {v} 0/2 oxmpi-")),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with(&format!("1 {v} 1/2 oxmpi-")),
        "{lines:?}"
    );
    assert_eq!(&lines[2..], ["fd-ok", "fd-ok"]);
}

#[test]
fn tagged_output() {
    let o = run(&["-l", "-n", "2", "sh", "-c", "echo hi; echo oops >&2"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(o.lines(), ["[0] hi", "[1] hi"]);
    let mut err: Vec<&str> = o.stderr.lines().collect();
    err.sort_unstable();
    assert_eq!(err, ["[0] oops", "[1] oops"]);
}

#[test]
fn partial_lines_are_kept_whole() {
    let o = run(&[
        "-l",
        "-n",
        "3",
        "sh",
        "-c",
        "printf part-$PMI_RANK-; sleep 0.2; echo end; printf last",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        o.lines(),
        [
            "[0] last",
            "[0] part-0-end",
            "[1] last",
            "[1] part-1-end",
            "[2] last",
            "[2] part-2-end"
        ]
    );
}

#[test]
fn heavy_output_never_mixes_within_a_line() {
    let script = "i=0; while [ $i -lt 3000 ]; do \
                  echo \"r$PMI_RANK $i ................................................................................................................\"; \
                  i=$((i+1)); done";
    let o = run(&["-n", "4", "sh", "-c", script]);
    assert_eq!(o.status.code(), Some(0));
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 4 * 3000);
    let mut seen = [0usize; 4];
    for line in lines {
        let mut parts = line.split(' ');
        let rank: usize = parts.next().unwrap()[1..].parse().unwrap();
        let i: usize = parts.next().unwrap().parse().unwrap();
        assert_eq!(parts.next().map(str::len), Some(112), "{line:?}");
        assert_eq!(parts.next(), None, "{line:?}");
        // Each rank's lines arrive in order.
        assert_eq!(i, seen[rank], "{line:?}");
        seen[rank] += 1;
    }
}

#[test]
fn stdin_goes_to_rank_zero_only() {
    let o = run_with_input(
        mpiexec(&["-l", "-n", "3", "cat"]),
        Some("hello\nworld\n"),
        LIMIT,
    );
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    assert_eq!(o.lines(), ["[0] hello", "[0] world"]);
}

#[test]
fn mpmd_groups_number_ranks_consecutively() {
    let o = run(&[
        "-n",
        "1",
        "-env",
        "G",
        "a",
        "sh",
        "-c",
        "echo A $PMI_RANK $PMI_SIZE $G",
        ":",
        "-n",
        "2",
        "-env",
        "G",
        "b",
        "sh",
        "-c",
        "echo B $PMI_RANK $PMI_SIZE $G",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    assert_eq!(o.lines(), ["A 0 3 a", "B 1 3 b", "B 2 3 b"]);
}

#[test]
fn environment_options() {
    let mut cmd = mpiexec(&[
        "-genv",
        "GA",
        "1",
        "-x",
        "GB=2",
        "-x",
        "FROM_LAUNCHER",
        "-genvnone",
        "/bin/sh",
        "-c",
        "echo ${GA:-x}${GB:-x}${FROM_LAUNCHER:-x}${OTHER:-x} $PYTHONPATH",
    ]);
    cmd.env("FROM_LAUNCHER", "3").env("OTHER", "4");
    let o = run_with_input(cmd, None, LIMIT);
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    assert_eq!(o.lines(), ["123x"]);

    let mut cmd = mpiexec(&["sh", "-c", "echo $PYTHONPATH"]);
    cmd.env("OXMPI_COMPAT_PATH", "/compat")
        .env("PYTHONPATH", "/user");
    let o = run_with_input(cmd, None, LIMIT);
    assert_eq!(o.lines(), ["/compat:/user"]);

    let mut cmd = mpiexec(&["--no-mpi4py-compat", "sh", "-c", "echo $PYTHONPATH"]);
    cmd.env("OXMPI_COMPAT_PATH", "/compat")
        .env("PYTHONPATH", "/user");
    let o = run_with_input(cmd, None, LIMIT);
    assert_eq!(o.lines(), ["/user"]);
}

#[test]
fn working_directory() {
    let o = run(&["-wdir", "/", "pwd"]);
    assert_eq!(o.lines(), ["/"]);
    let o = run(&["-wdir", "/nonexistent/dir", "pwd"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stderr.contains("working directory"), "{}", o.stderr);
}

#[test]
fn failing_rank_ends_the_job() {
    let o = run(&[
        "-n",
        "3",
        "sh",
        "-c",
        "if [ $PMI_RANK = 1 ]; then echo last words >&2; exit 3; fi; exec sleep 30",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", o.stderr);
    assert!(o.elapsed < Duration::from_secs(2), "took {:?}", o.elapsed);
    let last = o.stderr.find("last words").expect("rank output lost");
    let verdict = o
        .stderr
        .find("mpiexec: rank 1 exited with code 3")
        .expect("no verdict");
    assert!(last < verdict, "{}", o.stderr);
    // Only the first failure is reported.
    assert_eq!(o.stderr.matches("mpiexec: rank").count(), 1, "{}", o.stderr);
}

#[test]
fn rank_ignoring_sigterm_is_killed() {
    let o = run(&[
        "-n",
        "2",
        "sh",
        "-c",
        "if [ $PMI_RANK = 0 ]; then sleep 0.2; exit 5; fi; trap '' TERM; exec sleep 30",
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", o.stderr);
    assert!(o.elapsed < Duration::from_secs(3), "took {:?}", o.elapsed);
}

#[test]
fn segfault_gives_128_plus_signal() {
    let o = run(&[
        "-n",
        "2",
        "sh",
        "-c",
        "echo before-$PMI_RANK; if [ $PMI_RANK = 0 ]; then kill -SEGV $$; fi; exec sleep 30",
    ]);
    assert_eq!(o.status.code(), Some(139), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("mpiexec: rank 0 killed by signal 11 (SIGSEGV)"),
        "{}",
        o.stderr
    );
    assert!(o.elapsed < Duration::from_secs(2), "took {:?}", o.elapsed);
    // The dead rank's output is not lost (rank 1 may not have got as far).
    assert!(o.lines().contains(&"before-0"), "{}", o.stdout);
}

#[test]
fn timeout() {
    let o = run(&["--timeout", "0.5", "-n", "2", "sleep", "30"]);
    assert_eq!(o.status.code(), Some(124), "{}", o.stderr);
    assert!(o.stderr.contains("timed out"), "{}", o.stderr);
    assert!(o.elapsed < Duration::from_secs(3), "took {:?}", o.elapsed);
}

#[test]
fn program_not_found() {
    let o = run(&["-n", "2", "oxmpi-no-such-program"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(
        o.stderr
            .contains("mpiexec: cannot start 'oxmpi-no-such-program': No such file or directory"),
        "{}",
        o.stderr
    );
}

#[test]
fn second_group_not_found_kills_the_first() {
    let o = run(&["-n", "2", "sleep", "30", ":", "oxmpi-no-such-program"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(o.elapsed < Duration::from_secs(2), "took {:?}", o.elapsed);
}

#[test]
fn bad_command_lines() {
    let o = run(&["-foo", "prog"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        o.stderr.trim(),
        "mpiexec: unknown option '-foo'; see mpiexec --help"
    );
    let o = run(&["-n", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stderr.contains("no program"), "{}", o.stderr);
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout.contains("--timeout"));
    let o = run(&["--version"]);
    assert!(o.stdout.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_lists_every_option() {
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    for opt in [
        "-n N",
        "-np N",
        "--np N",
        "-l,",
        "--tag-output",
        "-prepend-rank",
        "--timeout S",
        "--deadlock-timeout S",
        "-genv NAME VALUE",
        "-env NAME VALUE",
        "-x NAME",
        "-genvlist",
        "-genvall",
        "-genvnone",
        "-wdir DIR",
        "-gwdir DIR",
        "-host LIST",
        "-hosts LIST",
        "--host LIST",
        "-f FILE",
        "-hostfile FILE",
        "-machinefile FILE",
        "--bind-to core|hwthread|none",
        "--map-by",
        "[:pe=N]",
        "ppr:N:node",
        "--oversubscribe",
        "--no-mpi4py-compat",
        "-h, --help",
        "--version",
        "OXMPI_DEADLOCK_TIMEOUT",
        "  124 ",
        "  125 ",
    ] {
        assert!(o.stdout.contains(opt), "--help lacks {opt:?}");
    }
}

#[test]
fn local_hosts_and_hostfiles() {
    let o = run(&[
        "--host",
        "localhost:2,127.0.0.1",
        "sh",
        "-c",
        "echo $PMI_RANK/$PMI_SIZE",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    assert_eq!(o.lines(), ["0/3", "1/3", "2/3"]);

    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let path = std::env::temp_dir().join(format!("oxmpi-launch-hosts-{}", std::process::id()));
    std::fs::write(
        &path,
        format!("# this machine\n{} slots=2\nlocalhost:1\n", host.trim()),
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let o = run(&["-f", file, "sh", "-c", "echo $PMI_SIZE"]);
    let o2 = run(&[
        "-machinefile",
        file,
        "-n",
        "1",
        "sh",
        "-c",
        "echo $PMI_SIZE",
    ]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    assert_eq!(o.lines(), ["3", "3", "3"]);
    assert_eq!(o2.lines(), ["1"], "{}", o2.stderr);

    let o = run(&[
        "--map-by",
        "ppr:2:node",
        "--oversubscribe",
        "sh",
        "-c",
        "echo $PMI_SIZE",
    ]);
    assert_eq!(o.lines(), ["2", "2"], "{}", o.stderr);
}

#[test]
fn remote_hosts_are_refused() {
    let o = run(&["-hosts", "localhost,node-elsewhere.example:4", "true"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        o.stderr
            .starts_with("mpiexec: host 'node-elsewhere.example' is not this machine"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("system-MPI backend"), "{}", o.stderr);
    let o = run(&["-f", "/nonexistent/oxmpi-hosts", "true"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stderr.contains("cannot read host file"), "{}", o.stderr);
    let o = run(&["--bind-to", "socket", "true"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        o.stderr.contains("'socket' is not supported"),
        "{}",
        o.stderr
    );
}

/// Parses a kernel CPU list such as `0-3,6`.
fn cpu_list(s: &str) -> Vec<usize> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => v.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => v.push(part.parse().unwrap()),
        }
    }
    v
}

/// Each rank's allowed CPUs under `args`, by rank.
fn rank_cpus(args: &[&str], n: usize) -> Vec<Vec<usize>> {
    let mut full = vec!["-l", "-n"];
    let n_s = n.to_string();
    full.push(&n_s);
    full.extend_from_slice(args);
    full.extend_from_slice(&["sh", "-c", "grep Cpus_allowed_list: /proc/self/status"]);
    let o = run(&full);
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    let mut by_rank = vec![Vec::new(); n];
    for line in o.stdout.lines() {
        let (tag, rest) = line.split_once(' ').unwrap();
        let rank: usize = tag.trim_matches(|c| c == '[' || c == ']').parse().unwrap();
        by_rank[rank] = cpu_list(rest.trim_start_matches("Cpus_allowed_list:"));
    }
    by_rank
}

#[test]
fn bind_to_pins_each_rank() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let mine = cpu_list(
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap(),
    );
    let n = mine.len().min(4) + 1; // at least one rank wraps around
    let got = rank_cpus(&["--bind-to", "hwthread"], n);
    for (r, cpus) in got.iter().enumerate() {
        assert_eq!(cpus, &[mine[r % mine.len()]], "rank {r}: {got:?}");
    }
    let got = rank_cpus(&["--bind-to", "core"], 2);
    for cpus in &got {
        assert!(
            !cpus.is_empty() && cpus.iter().all(|c| mine.contains(c)),
            "{got:?}"
        );
    }
    assert!(got[0].contains(&mine[0]), "{got:?}");
    if mine.len() >= 2 {
        let got = rank_cpus(&["--map-by", "slot:pe=2", "--bind-to", "hwthread"], 1);
        assert_eq!(got[0], mine[..2], "{got:?}");
    }
    let got = rank_cpus(&["--bind-to", "none", "--map-by", "core"], 2);
    assert_eq!(got, [mine.clone(), mine.clone()]);
}

/// Starts mpiexec and waits until every rank printed "ready"; also returns
/// the other lines printed until then.
fn start_ready(args: &[&str], ranks: usize) -> (Child, mpsc::Receiver<String>, Vec<String>) {
    let mut child = mpiexec(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut ready = 0;
    let mut before = Vec::new();
    while ready < ranks {
        match rx.recv_timeout(LIMIT) {
            Ok(l) if l == "ready" => ready += 1,
            Ok(l) => before.push(l),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ranks did not become ready");
            }
        }
    }
    (child, rx, before)
}

fn send_signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; the child has not
    // been waited for, so the pid is still its own.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

#[test]
fn sigterm_is_forwarded_and_ends_the_job() {
    let (mut child, _rx, _) = start_ready(&["-n", "2", "sh", "-c", "echo ready; exec sleep 30"], 2);
    let start = Instant::now();
    send_signal(&child, libc::SIGTERM);
    let st = wait_deadline(&mut child, LIMIT);
    assert_eq!(st.code(), Some(143));
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn sigusr1_is_forwarded_and_the_job_continues() {
    let script = "trap 'echo got-usr1; exit 0' USR1; echo ready; \
                  while :; do sleep 0.05; done";
    let (mut child, rx, _) = start_ready(&["-n", "2", "sh", "-c", script], 2);
    send_signal(&child, libc::SIGUSR1);
    let st = wait_deadline(&mut child, LIMIT);
    assert_eq!(st.code(), Some(0));
    let got: Vec<String> = rx.try_iter().collect();
    assert_eq!(got, ["got-usr1", "got-usr1"]);
}

#[test]
fn killing_the_launcher_kills_the_ranks() {
    let (mut child, _rx, before) = start_ready(
        &["-n", "2", "sh", "-c", "echo $$; echo ready; exec sleep 30"],
        2,
    );
    let pids: Vec<i32> = before.iter().filter_map(|l| l.parse().ok()).collect();
    assert_eq!(pids.len(), 2);
    send_signal(&child, libc::SIGKILL);
    let _ = wait_deadline(&mut child, LIMIT);
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in pids {
        loop {
            // Gone, or a zombie waiting for whoever adopted it.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .chars()
                .next();
            if stat.is_empty() || state == Some('Z') {
                break;
            }
            assert!(Instant::now() < deadline, "rank {pid} outlived mpiexec");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn oxmpi_subcommands() {
    // These run inside the test process, so bound them with a thread.
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        use oxmpi_launcher::main_with_args;
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got = [
            main_with_args("oxmpi", args(&["--version"])),
            main_with_args("oxmpi", args(&["info"])),
            main_with_args("oxmpi", args(&["frobnicate"])),
            main_with_args("oxmpi", args(&[])),
            main_with_args("oxmpi", args(&["run", "--bogus", "x"])),
            // Two jobs in a row inside one process: handlers and state reset.
            main_with_args("oxmpi", args(&["run", "-n", "2", "true"])),
            main_with_args("mpirun", args(&["-n", "2", "sh", "-c", "exit 4"])),
        ];
        let _ = tx.send(got);
    });
    let got = rx.recv_timeout(LIMIT).expect("in-process jobs hung");
    assert_eq!(got, [0, 0, 2, 2, 2, 0, 4]);
}

// ---------------------------------------------------------------------------
// PMI: this test binary, re-run as ranks under mpiexec.

/// mpiexec `args` then `-n n` ranks of this test binary playing `role`.
fn pmi_command(role: &str, n: &str, args: &[&str]) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = mpiexec(args);
    cmd.args(["-n", n, "-genv", ROLE, role]);
    cmd.arg(exe).args([
        "pmi_rank",
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ]);
    cmd
}

fn pmi_job(role: &str, n: &str, limit: Duration) -> Output {
    run_with_input(pmi_command(role, n, &[]), None, limit)
}

fn results(o: &Output) -> Vec<&str> {
    let mut v: Vec<&str> = o
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn pmi_exchange_between_ranks() {
    let o = pmi_job("exchange", "3", LIMIT);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", o.stdout, o.stderr);
    assert_eq!(
        results(&o),
        [
            "rank 0 of 3 got v1 v2",
            "rank 1 of 3 got v2 v0",
            "rank 2 of 3 got v0 v1"
        ]
    );
}

#[test]
fn pmi_abort_ends_the_job_and_shm_is_unlinked() {
    let o = pmi_job("abort", "2", LIMIT);
    assert_eq!(o.status.code(), Some(7), "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stderr
            .contains("mpiexec: rank 1 called MPI_Abort with error code 7"),
        "{}",
        o.stderr
    );
    assert!(o.elapsed < Duration::from_secs(3), "took {:?}", o.elapsed);
    let shm: Vec<&str> = results(&o)
        .into_iter()
        .filter_map(|r| r.strip_prefix("shm "))
        .collect();
    assert_eq!(shm.len(), 1, "{}", o.stdout);
    assert!(
        !std::path::Path::new(&format!("/dev/shm{}", shm[0])).exists(),
        "{} left behind",
        shm[0]
    );
}

// ---------------------------------------------------------------------------
// Deadlock monitor.

#[test]
fn deadlock_is_reported_and_ends_the_job() {
    let cmd = pmi_command("deadlock", "4", &["--deadlock-timeout", "1"]);
    let o = run_with_input(cmd, None, LIMIT);
    assert_eq!(o.status.code(), Some(125), "{}\n{}", o.stdout, o.stderr);
    // Not before the threshold, and within threshold + 2 s.
    assert!(o.elapsed >= Duration::from_secs(1), "took {:?}", o.elapsed);
    assert!(o.elapsed < Duration::from_secs(3), "took {:?}", o.elapsed);
    let expected = "\
mpiexec: deadlock: every rank has been waiting for 1 s with no message in flight
  rank 0: blocked in Recv(comm=MPI_COMM_WORLD, source=1, tag=5, count=8 B) (waiting for rank 1)
  rank 1: blocked in Send(comm=MPI_COMM_WORLD, dest=0, tag=7, count=100 %) (waiting for rank 0)
  rank 2: finished
  rank 3: finished
  cycle: 0 -> 1 -> 0
";
    assert!(o.stderr.contains(expected), "{}", o.stderr);
    // The ranks died of our SIGTERM, which is no news.
    assert_eq!(o.stderr.matches("mpiexec:").count(), 1, "{}", o.stderr);
}

#[test]
fn running_reports_prevent_a_false_alarm() {
    let cmd = pmi_command("busy", "3", &["--deadlock-timeout", "1"]);
    let o = run_with_input(cmd, None, LIMIT);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", o.stdout, o.stderr);
    assert!(!o.stderr.contains("deadlock"), "{}", o.stderr);
    assert_eq!(
        results(&o),
        ["rank 0 toggled", "rank 1 woke", "rank 2 woke"],
        "{}",
        o.stderr
    );
}

#[test]
fn deadlock_timeout_from_the_environment() {
    let mut cmd = mpiexec(&["true"]);
    cmd.env("OXMPI_DEADLOCK_TIMEOUT", "soon");
    let o = run_with_input(cmd, None, LIMIT);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        o.stderr.trim(),
        "mpiexec: OXMPI_DEADLOCK_TIMEOUT: 'soon' is not a number of seconds"
    );
    // 0 disables the monitor: the ranks below would trip it within 0.1 s.
    let mut cmd = pmi_command("deadlock-short", "2", &[]);
    cmd.env("OXMPI_DEADLOCK_TIMEOUT", "0");
    let o = run_with_input(cmd, None, LIMIT);
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    // The command line wins over the environment.
    let mut cmd = pmi_command("deadlock-short", "2", &["--deadlock-timeout", "0.2"]);
    cmd.env("OXMPI_DEADLOCK_TIMEOUT", "0");
    let o = run_with_input(cmd, None, LIMIT);
    assert_eq!(o.status.code(), Some(125), "{}", o.stderr);
    assert!(o.stderr.contains("  rank 1: blocked in Wait(request=3)\n"));
}

// ---------------------------------------------------------------------------
// Nothing is left behind, whatever way the job ends.

/// Runs the `leftover` role in `mode` on 3 ranks and checks, once mpiexec
/// has exited, that no rank process and no shared-memory segment remains.
/// With `signal`, mpiexec gets it once every rank is ready.
fn assert_no_leftovers(
    mode: &str,
    args: &[&str],
    env: &[(&str, &str)],
    signal: Option<i32>,
) -> (i32, String) {
    let mut cmd = pmi_command("leftover", "3", args);
    cmd.env("OXMPI_TEST_MODE", mode).envs(env.iter().copied());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let err = drain(child.stderr.take().unwrap());
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    if let Some(sig) = signal {
        let mut ready = 0;
        while ready < 3 {
            match rx.recv_timeout(LIMIT) {
                Ok(l) => {
                    ready += usize::from(l == "ready");
                    lines.push(l);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("ranks did not become ready: {lines:?}");
                }
            }
        }
        send_signal(&child, sig);
    }
    let status = wait_deadline(&mut child, LIMIT);
    let stderr = err.join().unwrap();
    lines.extend(rx.iter());
    let pids: Vec<i32> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("RESULT pid "))
        .map(|p| p.parse().unwrap())
        .collect();
    let shm: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("RESULT shm "))
        .collect();
    assert_eq!(pids.len(), 3, "{mode}: {lines:?}\n{stderr}");
    assert_eq!(shm.len(), 4, "{mode}: {lines:?}\n{stderr}");
    for pid in pids {
        // Gone for good: mpiexec reaped every rank before exiting. (A live
        // process with this number would have to be one of ours to count.)
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).contains("pmi_rank");
        assert!(!ours, "{mode}: rank process {pid} outlived mpiexec");
    }
    for name in shm {
        assert!(
            !std::path::Path::new(&format!("/dev/shm{name}")).exists(),
            "{mode}: shared memory {name} left behind"
        );
    }
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn no_leftovers_after_a_nonzero_exit() {
    let (code, err) = assert_no_leftovers("exit", &[], &[], None);
    assert_eq!(code, 3, "{err}");
}

#[test]
fn no_leftovers_after_a_rank_is_killed() {
    let (code, err) = assert_no_leftovers("sigkill", &[], &[], None);
    assert_eq!(code, 137, "{err}");
    assert!(err.contains("rank 1 killed by signal 9 (SIGKILL)"), "{err}");
}

#[test]
fn no_leftovers_after_a_segfault() {
    let (code, err) = assert_no_leftovers("segv", &[], &[], None);
    assert_eq!(code, 139, "{err}");
}

#[test]
fn no_leftovers_after_an_abort() {
    let (code, err) = assert_no_leftovers("abort", &[], &[], None);
    assert_eq!(code, 7, "{err}");
}

#[test]
fn no_leftovers_after_a_timeout() {
    let (code, err) = assert_no_leftovers("sleep", &["--timeout", "1"], &[], None);
    assert_eq!(code, 124, "{err}");
}

#[test]
fn no_leftovers_after_a_deadlock() {
    let (code, err) =
        assert_no_leftovers("deadlock", &[], &[("OXMPI_DEADLOCK_TIMEOUT", "0.5")], None);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("  cycle: 0 -> 1 -> 2 -> 0\n"), "{err}");
}

#[test]
fn no_leftovers_after_sigint() {
    let (code, err) = assert_no_leftovers("sleep", &[], &[], Some(libc::SIGINT));
    assert_eq!(code, 130, "{err}");
}

#[test]
fn no_leftovers_after_sigterm() {
    let (code, err) = assert_no_leftovers("sleep", &[], &[], Some(libc::SIGTERM));
    assert_eq!(code, 143, "{err}");
}

/// A minimal PMI-1 client over the inherited socket.
struct Pmi {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Pmi {
    fn connect() -> Pmi {
        let fd: i32 = std::env::var("PMI_FD").unwrap().parse().unwrap();
        // SAFETY: mpiexec passed this descriptor to us for our exclusive
        // use; nothing else in this process owns it.
        let s = unsafe { UnixStream::from_raw_fd(fd) };
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Pmi {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    /// Sends a one-way request (no reply expected).
    fn send(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).unwrap();
        self.writer.write_all(b"\n").unwrap();
    }

    fn call(&mut self, line: &str) -> HashMap<String, String> {
        self.send(line);
        let mut reply = String::new();
        self.reader.read_line(&mut reply).unwrap();
        reply
            .split_whitespace()
            .filter_map(|t| t.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

fn env_usize(name: &str) -> usize {
    std::env::var(name).unwrap().parse().unwrap()
}

fn rank_exchange() {
    let rank = env_usize("PMI_RANK");
    let size = env_usize("PMI_SIZE");
    let mut pmi = Pmi::connect();
    let r = pmi.call("cmd=init pmi_version=1 pmi_subversion=1");
    assert_eq!(
        (r["cmd"].as_str(), r["rc"].as_str()),
        ("response_to_init", "0")
    );
    let kvs = pmi.call("cmd=get_my_kvsname")["kvsname"].clone();
    assert_eq!(kvs, std::env::var("OXMPI_JOBID").unwrap());
    assert_eq!(pmi.call("cmd=get_universe_size")["size"], size.to_string());
    assert_eq!(pmi.call("cmd=get_appnum")["appnum"], "0");
    assert_eq!(pmi.call("cmd=get_maxes")["vallen_max"], "4096");
    let r = pmi.call(&format!("cmd=put kvsname={kvs} key=k{rank} value=v{rank}"));
    assert_eq!(r["rc"], "0");
    assert_eq!(pmi.call("cmd=barrier_in")["cmd"], "barrier_out");
    let mut got = Vec::new();
    for i in 1..size {
        let peer = (rank + i) % size;
        let r = pmi.call(&format!("cmd=get kvsname={kvs} key=k{peer}"));
        assert_eq!(r["rc"], "0");
        got.push(r["value"].clone());
    }
    let r = pmi.call(&format!("cmd=get kvsname={kvs} key=missing"));
    assert_eq!(
        (r["rc"].as_str(), r["msg"].as_str()),
        ("-1", "key_missing_not_found")
    );
    let r = pmi.call("cmd=frobnicate");
    assert_eq!(r["cmd"], "frobnicate_result");
    assert_eq!(r["msg"], "unknown_command");
    assert_eq!(pmi.call("cmd=barrier_in")["cmd"], "barrier_out");
    assert_eq!(pmi.call("cmd=finalize")["cmd"], "finalize_ack");
    println!("RESULT rank {rank} of {size} got {}", got.join(" "));
}

fn rank_abort() {
    let rank = env_usize("PMI_RANK");
    let mut pmi = Pmi::connect();
    pmi.call("cmd=init pmi_version=1 pmi_subversion=1");
    let kvs = pmi.call("cmd=get_my_kvsname")["kvsname"].clone();
    if rank == 1 {
        // A segment that the rank "forgets" to unlink: mpiexec must.
        let name = format!("/{kvs}-test");
        let c = std::ffi::CString::new(name.clone()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated name; the returned fd is
        // closed right away.
        let fd = unsafe {
            libc::shm_open(
                c.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                0o600,
            )
        };
        assert!(fd >= 0, "shm_open failed");
        // SAFETY: `fd` is the descriptor shm_open just returned.
        unsafe { libc::close(fd) };
        let r = pmi.call(&format!(
            "cmd=put kvsname={kvs} key=oxmpi.shm.test value={name}"
        ));
        assert_eq!(r["rc"], "0");
        println!("RESULT shm {name}");
        std::io::stdout().flush().unwrap();
        pmi.writer.write_all(b"cmd=abort exitcode=7\n").unwrap();
    }
    thread::sleep(Duration::from_secs(30));
}

/// A state report, then proof that no reply came for it: the next reply
/// read must be the one for `get_maxes`.
fn report(pmi: &mut Pmi, line: &str) {
    pmi.send(line);
    assert_eq!(pmi.call("cmd=get_maxes")["cmd"], "maxes");
}

fn rank_deadlock() {
    let rank = env_usize("PMI_RANK");
    let mut pmi = Pmi::connect();
    pmi.call("cmd=init pmi_version=1 pmi_subversion=1");
    match rank {
        0 => report(
            &mut pmi,
            "cmd=oxmpi_state state=blocked \
             call=Recv(comm%3DMPI_COMM_WORLD,%20source%3D1,%20tag%3D5,%20count%3D8%20B) peer=1",
        ),
        1 => report(
            &mut pmi,
            "cmd=oxmpi_state state=blocked \
             call=Send(comm%3DMPI_COMM_WORLD,%20dest%3D0,%20tag%3D7,%20count%3D100%20%25) peer=0",
        ),
        2 => assert_eq!(pmi.call("cmd=finalize")["cmd"], "finalize_ack"),
        // Rank 3 exits with status 0 without finalizing.
        _ => return,
    }
    thread::sleep(Duration::from_secs(30));
}

/// Blocked briefly, then done: trips a 0.2 s monitor, not a disabled one.
fn rank_deadlock_short() {
    let rank = env_usize("PMI_RANK");
    let mut pmi = Pmi::connect();
    pmi.call("cmd=init pmi_version=1 pmi_subversion=1");
    report(
        &mut pmi,
        "cmd=oxmpi_state state=blocked call=Wait(request%3D3) peer=-1",
    );
    thread::sleep(Duration::from_millis(if rank == 0 { 1500 } else { 1200 }));
    report(&mut pmi, "cmd=oxmpi_state state=running");
}

/// Rank 0 keeps waking up (as a rank that polls or computes between short
/// waits); the others sit blocked for longer than the threshold.
fn rank_busy() {
    let rank = env_usize("PMI_RANK");
    let mut pmi = Pmi::connect();
    pmi.call("cmd=init pmi_version=1 pmi_subversion=1");
    let start = Instant::now();
    if rank == 0 {
        while start.elapsed() < Duration::from_millis(2200) {
            report(
                &mut pmi,
                "cmd=oxmpi_state state=blocked call=Probe(source%3DANY) peer=-1",
            );
            thread::sleep(Duration::from_millis(100));
            report(&mut pmi, "cmd=oxmpi_state state=running");
        }
        println!("RESULT rank 0 toggled");
    } else {
        report(
            &mut pmi,
            "cmd=oxmpi_state state=blocked call=Recv(source%3D0) peer=0",
        );
        thread::sleep(Duration::from_millis(1800));
        report(&mut pmi, "cmd=oxmpi_state state=running");
        println!("RESULT rank {rank} woke");
    }
    assert_eq!(pmi.call("cmd=finalize")["cmd"], "finalize_ack");
}

/// Creates shared memory (published, and one segment not published), tells
/// the test its pid and segment names, waits for every rank, then fails
/// in the way `OXMPI_TEST_MODE` asks.
fn rank_leftover() {
    let rank = env_usize("PMI_RANK");
    let size = env_usize("PMI_SIZE");
    let mode = std::env::var("OXMPI_TEST_MODE").unwrap();
    let mut pmi = Pmi::connect();
    pmi.call("cmd=init pmi_version=1 pmi_subversion=1");
    let kvs = pmi.call("cmd=get_my_kvsname")["kvsname"].clone();
    println!("RESULT pid {}", std::process::id());
    let mut names = vec![format!("/{kvs}-r{rank}")];
    if rank == 0 {
        // Created by a rank that dies before publishing it.
        names.push(format!("/oxmpi-{kvs}-unpublished"));
    }
    for (i, name) in names.iter().enumerate() {
        let c = std::ffi::CString::new(name.clone()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated name; the returned fd is
        // closed right away.
        let fd = unsafe {
            libc::shm_open(
                c.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                0o600,
            )
        };
        assert!(fd >= 0, "shm_open {name} failed");
        // SAFETY: `fd` is the descriptor shm_open just returned.
        unsafe { libc::close(fd) };
        if i == 0 {
            let r = pmi.call(&format!(
                "cmd=put kvsname={kvs} key=oxmpi.shm.r{rank} value={name}"
            ));
            assert_eq!(r["rc"], "0");
        }
        println!("RESULT shm {name}");
    }
    assert_eq!(pmi.call("cmd=barrier_in")["cmd"], "barrier_out");
    println!("ready");
    std::io::stdout().flush().unwrap();
    if rank == 1 {
        match mode.as_str() {
            "exit" => std::process::exit(3),
            // SAFETY: raise(3) and signal(3) with valid signal numbers; the
            // default SIGSEGV action is restored first because the Rust
            // runtime's handler would otherwise return from a raised signal.
            "sigkill" => unsafe {
                libc::raise(libc::SIGKILL);
            },
            // SAFETY: as above.
            "segv" => unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            },
            "abort" => pmi.send("cmd=abort exitcode=7"),
            _ => {}
        }
    }
    if mode == "deadlock" {
        let peer = (rank + 1) % size;
        pmi.send(&format!(
            "cmd=oxmpi_state state=blocked call=Recv(source%3D{peer}) peer={peer}"
        ));
    }
    thread::sleep(Duration::from_secs(30));
}

/// Not a test by itself: does nothing unless started by `pmi_job`.
#[test]
fn pmi_rank() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let result = std::panic::catch_unwind(|| match role.as_str() {
        "exchange" => rank_exchange(),
        "abort" => rank_abort(),
        "deadlock" => rank_deadlock(),
        "deadlock-short" => rank_deadlock_short(),
        "busy" => rank_busy(),
        "leftover" => rank_leftover(),
        other => panic!("unknown role {other}"),
    });
    std::io::stdout().flush().unwrap();
    std::process::exit(if result.is_ok() { 0 } else { 1 });
}
