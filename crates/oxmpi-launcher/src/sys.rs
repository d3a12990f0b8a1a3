//! Thin wrappers over the OS calls the launcher needs and std does not offer.
//!
//! Together with `signals.rs` this is the only module with `unsafe`; each
//! wrapper retries `EINTR` and turns `-1` into an `io::Error`.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Sends `sig` to process `pid`.
///
/// Callers must make sure `pid` has not been reaped yet (see
/// `job::RankProc`), otherwise the number may name an unrelated process.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Blocks until process `pid` has ended, without reaping it (`WNOWAIT`).
///
/// Leaving the zombie in place keeps the pid reserved, so that the caller can
/// reap it under the same lock that guards `kill` (no pid-reuse race).
pub fn wait_exited_nowait(pid: libc::pid_t) -> io::Result<()> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value (plain C struct).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t for the duration of
        // the call; waitid(2) writes only into it.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Reaps process `pid` and returns its raw wait status.
pub fn reap(pid: libc::pid_t) -> io::Result<libc::c_int> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid, writable c_int for the call.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if rc < 0 && err.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(err);
    }
}

/// poll(2) over `fds`; returns the number of descriptors with events.
/// An interrupted call counts as a timeout (zero ready).
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, writable slice of pollfd of the given length.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if rc >= 0 {
        return Ok(rc as usize);
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::Interrupted {
        Ok(0)
    } else {
        Err(err)
    }
}

/// Removes a POSIX shared-memory object by name. A name that is already gone
/// (`ENOENT`) is not an error: ranks normally unlink their segment themselves.
pub fn shm_unlink(name: &str) -> io::Result<()> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::shm_unlink(c.as_ptr()) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOENT) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Raises the soft limit on open files to at least `needed` (capped by the
/// hard limit). Returns the previous limit when it was changed, so that the
/// ranks can be given the original back.
///
/// The launcher holds about three descriptors per rank (PMI socket, two
/// output pipes) plus a few transient ones while spawning; the common default
/// of 1024 would otherwise cap a job at roughly 300 ranks.
pub fn raise_nofile_limit(needed: u64) -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= needed as libc::rlim_t {
        return None;
    }
    let old = lim;
    let target = if lim.rlim_max == libc::RLIM_INFINITY {
        needed as libc::rlim_t
    } else {
        (needed as libc::rlim_t).min(lim.rlim_max)
    };
    if target <= lim.rlim_cur {
        return None;
    }
    lim.rlim_cur = target;
    // SAFETY: `lim` is a valid rlimit; setrlimit(2) only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
        Some(old)
    } else {
        None
    }
}

/// Puts back a limit returned by [`raise_nofile_limit`].
pub fn restore_nofile_limit(old: libc::rlimit) {
    // SAFETY: `old` is a valid rlimit; setrlimit(2) only reads it.
    unsafe {
        libc::setrlimit(libc::RLIMIT_NOFILE, &old);
    }
}

/// The logical CPUs the calling thread may run on, in increasing order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is the empty set (plain bit array).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET only reads `set`; `c` is below CPU_SETSIZE.
    Ok((0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// A CPU affinity mask for a rank, built in the launcher and applied in
/// the child before exec.
#[derive(Clone, Copy)]
pub struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// The set of `cpus`; numbers beyond `CPU_SETSIZE` are left out.
    pub fn new(cpus: &[usize]) -> Self {
        // SAFETY: an all-zero cpu_set_t is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
        for &c in cpus.iter().filter(|&&c| c < max) {
            // SAFETY: CPU_SET writes one bit of `set`; `c` is in range.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        CpuSet(set)
    }
}

/// This machine's host name (empty if it cannot be read).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid and writable for `buf.len()` bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Arranges what a rank process does between fork and exec:
///
/// * `PR_SET_PDEATHSIG(SIGKILL)`: if the launcher is killed outright (even
///   by SIGKILL) the kernel kills its ranks, so none is left behind. The
///   signal fires when the *thread* that forked exits, which is why all ranks
///   are spawned from the thread that runs the job until its end.
/// * if the launcher already died before that call took effect, give up;
/// * clear `FD_CLOEXEC` on the rank's PMI socket, so exactly that one
///   descriptor survives exec (all others the launcher opened are CLOEXEC);
/// * give back the open-file limit the launcher had before raising it;
/// * pin the process to `cpus` (`--bind-to`). A mask the kernel refuses
///   (the CPUs went offline since the launcher looked) is not fatal: the
///   rank then runs unpinned, as binding only affects speed.
pub fn prepare_rank_exec(
    cmd: &mut Command,
    pmi_fd: RawFd,
    shm_fd: RawFd,
    nofile: Option<libc::rlimit>,
    cpus: Option<CpuSet>,
) {
    let launcher = std::process::id();
    let hook = move || -> io::Result<()> {
        // Only async-signal-safe calls below: we are in a forked child.
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes an integer argument and
        // touches no memory of ours.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: getppid(2) has no preconditions.
        if unsafe { libc::getppid() } as u32 != launcher {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        for fd in [pmi_fd, shm_fd] {
            // SAFETY: fcntl on an fd number with integer arguments; a bad
            // fd only yields EBADF.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            // SAFETY: as above.
            if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(old) = nofile {
            // SAFETY: `old` is a valid rlimit copied into this closure.
            unsafe {
                libc::setrlimit(libc::RLIMIT_NOFILE, &old);
            }
        }
        if let Some(set) = &cpus {
            // SAFETY: `set.0` is a valid cpu_set_t of the size passed;
            // sched_setaffinity(2) only reads it.
            unsafe {
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set.0);
            }
        }
        Ok(())
    };
    // SAFETY: the hook above only makes async-signal-safe system calls and
    // does not allocate or take locks, as `pre_exec` requires.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Takes ownership of descriptor `fd`, inherited from the process that
/// started us for exactly this purpose; None if it is not open.
pub fn take_inherited_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: fcntl(F_GETFD) on a number only reads the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the descriptor is open (checked above) and was passed to us
    // to own; nothing else in this process refers to it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The conventional name of a signal number, for messages.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        libc::SIGPWR => "SIGPWR",
        libc::SIGSYS => "SIGSYS",
        s if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&s) => "SIGRT",
        _ => "unknown signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(0), "unknown signal");
    }

    #[test]
    fn cpus_and_hostname() {
        let cpus = allowed_cpus().unwrap();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
        assert!(!hostname().is_empty());
    }

    #[test]
    fn shm_unlink_ignores_missing() {
        assert!(shm_unlink("/oxmpi-launcher-test-does-not-exist").is_ok());
        assert!(shm_unlink("bad\0name").is_err());
    }
}
