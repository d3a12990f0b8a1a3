//! Thin wrappers over the operating-system calls the runtime needs beyond
//! `std`: futexes on shared memory, cross-memory attach, and process
//! attributes.
//!
//! # References
//! futex(2), process_vm_readv(2), prctl(2) (`PR_SET_PTRACER`).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::thread::futex;

/// Sleeps while `*word == seen`, at most `timeout`. Spurious wake-ups are
/// allowed; callers re-check their condition. Uses the shared (not
/// process-private) futex, since the word lives in a segment mapped by
/// several processes.
pub fn futex_wait(word: &AtomicU32, seen: u32, timeout: Duration) {
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    // EAGAIN (value changed), ETIMEDOUT and EINTR all mean: look again.
    let _ = futex::wait(word, futex::Flags::empty(), seen, Some(&ts));
}

/// Wakes every waiter on `word`.
pub fn futex_wake_all(word: &AtomicU32) {
    let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
}

/// Allows any process of this user to read our memory with
/// `process_vm_readv` even where the Yama LSM restricts ptrace to
/// descendants (`kernel.yama.ptrace_scope = 1`); sibling ranks are not
/// descendants of each other.
pub fn allow_cross_memory_attach() {
    // SAFETY: prctl with PR_SET_PTRACER takes plain integers.
    unsafe {
        libc::prctl(libc::PR_SET_PTRACER, libc::PR_SET_PTRACER_ANY, 0, 0, 0);
    }
}

/// Copies `local.len()` bytes from `remote` addresses of process `pid` into
/// `local` (`cross_copy`). Returns the OS error on failure (EPERM or ENOSYS
/// mean cross-memory attach is unavailable).
///
/// # Safety
/// `remote` must describe memory of `pid` that stays valid and unmodified for
/// the duration of the call (the rendezvous protocol guarantees it: the
/// sender keeps its buffer until the receiver answers `Done`).
pub unsafe fn read_remote(
    pid: u32,
    local: &mut [u8],
    remote: &[(u64, u64)],
) -> std::io::Result<()> {
    let runs: Vec<(u64, usize)> = remote.iter().map(|&(a, l)| (a, l as usize)).collect();
    // SAFETY: `local` is our own live, writable slice; the caller vouches
    // for the remote runs.
    unsafe { cross_copy(pid, local.as_mut_ptr(), local.len(), &runs, false) }
}

/// Cross-memory copy between `local` (`len` bytes) and the runs
/// `(address, length)` of process `pid`, in order; `write` copies local to
/// remote.
///
/// # Safety
/// `local` must be valid for `len` bytes (for writes into it when `write`
/// is false). The remote runs are checked by the kernel (EFAULT).
pub unsafe fn cross_copy(
    pid: u32,
    local: *mut u8,
    len: usize,
    runs: &[(u64, usize)],
    write: bool,
) -> std::io::Result<()> {
    let (mut ri, mut roff) = (0usize, 0usize);
    let mut done = 0usize;
    while done < len {
        let mut riov = Vec::with_capacity(64);
        let (mut i, mut off) = (ri, roff);
        let mut want = 0usize;
        while riov.len() < 512 && i < runs.len() {
            let (addr, rlen) = runs[i];
            if rlen > off {
                riov.push(libc::iovec {
                    iov_base: (addr as usize + off) as *mut libc::c_void,
                    iov_len: rlen - off,
                });
                want += rlen - off;
            }
            i += 1;
            off = 0;
        }
        if riov.is_empty() {
            break;
        }
        let liov = libc::iovec {
            iov_base: local.wrapping_add(done).cast(),
            iov_len: want.min(len - done),
        };
        // SAFETY: `liov` lies in `local` (this function's contract); the
        // remote iovecs are checked by the kernel.
        let got = unsafe {
            if write {
                libc::process_vm_writev(
                    pid as libc::pid_t,
                    &liov,
                    1,
                    riov.as_ptr(),
                    riov.len() as _,
                    0,
                )
            } else {
                libc::process_vm_readv(
                    pid as libc::pid_t,
                    &liov,
                    1,
                    riov.as_ptr(),
                    riov.len() as _,
                    0,
                )
            }
        };
        if got < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if got == 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EFAULT));
        }
        let mut adv = got as usize;
        done += adv;
        while adv > 0 {
            let take = (runs[ri].1 - roff).min(adv);
            roff += take;
            adv -= take;
            if roff == runs[ri].1 {
                ri += 1;
                roff = 0;
            }
        }
    }
    Ok(())
}

/// Number of processors this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The host name (MPI_Get_processor_name).
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Whether process `pid` exists (kill(pid, 0)); a process we may not signal
/// exists too.
pub fn process_alive(pid: u32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}
