//! Turning signals sent to the launcher into [`Event::Signal`]s.
//!
//! The handler does the only thing that is safe in a signal handler: it
//! writes the signal number as one byte to a socket (the self-pipe trick). A
//! thread reads that socket and passes each signal to the job's event
//! channel, where `job.rs` decides what to do (forward, terminate).
//!
//! The launcher may run inside a Python process (`oxmpi.mpiexec`), so the
//! previous handlers are saved and restored when the job ends, and the
//! wake-up socket is created once per process and never closed: a handler
//! still running in another thread can never write into a recycled
//! descriptor.

#![allow(unsafe_code)]

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::OnceLock;
use std::thread::JoinHandle;

use crate::job::Event;

/// Signals the launcher handles while a job runs.
pub const HANDLED: [libc::c_int; 5] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Byte that tells the reader thread to stop (no signal has number 0).
const STOP: u8 = 0;

/// Write end of the wake-up socket, read by the handler. Relaxed is enough:
/// it is stored before any handler is installed (sigaction is a full
/// barrier as far as the handler's view is concerned) and never changes.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// The wake-up socket pair, created on first use and kept for the life of
/// the process (see the module documentation).
static WAKE: OnceLock<(UnixStream, UnixStream)> = OnceLock::new();

fn wake_pair() -> io::Result<&'static (UnixStream, UnixStream)> {
    if let Some(p) = WAKE.get() {
        return Ok(p);
    }
    let (rx, tx) = UnixStream::pair()?;
    // The handler must never block, even if the reader fell behind.
    tx.set_nonblocking(true)?;
    let pair = WAKE.get_or_init(|| (rx, tx));
    WAKE_FD.store(pair.1.as_raw_fd(), Ordering::Relaxed);
    Ok(pair)
}

extern "C" fn on_signal(sig: libc::c_int) {
    // SAFETY: __errno_location returns this thread's errno slot, valid for
    // the thread's lifetime; saving and restoring it keeps the interrupted
    // code's errno intact.
    let saved = unsafe { *libc::__errno_location() };
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = sig as u8;
        // SAFETY: write(2) is async-signal-safe; `byte` is a valid 1-byte
        // buffer; `fd` is the never-closed wake-up socket. A full buffer
        // (EAGAIN) just drops this signal, which is fine: many are queued.
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
    // SAFETY: as above.
    unsafe {
        *libc::__errno_location() = saved;
    }
}

/// While alive, [`HANDLED`] signals become events on the job's channel.
/// Dropping it restores the previous dispositions.
pub struct SignalForwarder {
    old: Vec<(libc::c_int, libc::sigaction)>,
    thread: Option<JoinHandle<()>>,
}

impl SignalForwarder {
    /// Installs the handlers and starts the reader thread.
    pub fn install(events: Sender<Event>) -> io::Result<Self> {
        let (rx, _) = wake_pair()?;
        let mut reader = rx.try_clone()?;
        // Discard anything a previous job left behind (a STOP byte its
        // reader never saw), so no stale signal reaches this job.
        reader.set_nonblocking(true)?;
        let mut scratch = [0u8; 64];
        while matches!(reader.read(&mut scratch), Ok(n) if n > 0) {}
        reader.set_nonblocking(false)?;
        let thread = std::thread::Builder::new()
            .name("mpiexec-signals".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut buf = [0u8; 64];
                loop {
                    let n = match reader.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return,
                    };
                    for &b in &buf[..n] {
                        if b == STOP {
                            return;
                        }
                        if events.send(Event::Signal(i32::from(b))).is_err() {
                            return;
                        }
                    }
                }
            })?;
        let mut this = SignalForwarder {
            old: Vec::new(),
            thread: Some(thread),
        };
        for sig in HANDLED {
            // SAFETY: all-zero is a valid sigaction (SIG_DFL, empty mask).
            let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
            new.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            new.sa_flags = libc::SA_RESTART;
            // SAFETY: `new.sa_mask` is a valid sigset_t to initialise.
            unsafe {
                libc::sigemptyset(&mut new.sa_mask);
            }
            // SAFETY: as above, a zeroed sigaction is valid storage.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers refer to valid sigaction structs; the
            // handler is an `extern "C" fn(c_int)` that is async-signal-safe.
            if unsafe { libc::sigaction(sig, &new, &mut old) } != 0 {
                return Err(io::Error::last_os_error()); // Drop restores the others.
            }
            this.old.push((sig, old));
        }
        Ok(this)
    }
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        for (sig, old) in self.old.drain(..) {
            // SAFETY: `old` is the disposition sigaction(2) gave us earlier.
            unsafe {
                libc::sigaction(sig, &old, std::ptr::null_mut());
            }
        }
        if let Some(t) = self.thread.take() {
            if let Ok((_, tx)) = wake_pair() {
                // The socket is nonblocking; if it is somehow full, the
                // reader is busy and will soon drain up to our STOP byte.
                let mut w = tx;
                loop {
                    match w.write(&[STOP]) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(std::time::Duration::from_millis(1));
                        }
                        _ => break,
                    }
                }
                let _ = t.join();
            }
        }
    }
}
