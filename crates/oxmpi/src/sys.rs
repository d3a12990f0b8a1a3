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
/// `local`, looping over partial transfers. Returns the OS error on failure
/// (EPERM or ENOSYS mean cross-memory attach is unavailable).
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
    let mut done = 0usize;
    let want = local.len();
    let mut ri = 0usize;
    let mut roff = 0u64;
    while done < want {
        // Build at most 64 remote iovecs starting at (ri, roff).
        let mut riov: [libc::iovec; 64] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 64];
        let mut n = 0;
        let mut budget = want - done;
        let (mut i, mut off) = (ri, roff);
        while n < 64 && i < remote.len() && budget > 0 {
            let (addr, len) = remote[i];
            let take = ((len - off) as usize).min(budget);
            riov[n] = libc::iovec {
                iov_base: (addr + off) as *mut libc::c_void,
                iov_len: take,
            };
            n += 1;
            budget -= take;
            off += take as u64;
            if off == len {
                i += 1;
                off = 0;
            }
        }
        if n == 0 {
            break;
        }
        let liov = libc::iovec {
            iov_base: local[done..].as_mut_ptr().cast(),
            iov_len: want - done,
        };
        // SAFETY: `liov` covers our own live, writable slice; the remote
        // ranges are valid in `pid` by this function's contract.
        let got = unsafe {
            libc::process_vm_readv(pid as libc::pid_t, &liov, 1, riov.as_ptr(), n as _, 0)
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
        // Advance the remote cursor by `got` bytes.
        let mut adv = got as u64;
        while adv > 0 {
            let (_, len) = remote[ri];
            let take = (len - roff).min(adv);
            roff += take;
            adv -= take;
            if roff == len {
                ri += 1;
                roff = 0;
            }
        }
        done += got as usize;
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
