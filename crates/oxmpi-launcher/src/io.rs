//! Forwarding the ranks' stdout and stderr to the launcher's.
//!
//! One thread polls every rank's two pipes. Output is passed on in whole
//! lines only, and each batch of lines is written with one `write_all`
//! under the std stream lock, so two ranks' bytes never mix within a line
//! (the launcher's own messages take the same lock). With `-l` each line
//! gets a `[rank] ` prefix, as with hydra.
//!
//! Nothing a rank wrote is lost when it dies: its pipes are read until end of
//! file, and a last line without a newline is passed on with one added. A
//! descendant of a rank may keep a pipe open after the rank itself has gone;
//! once every rank has been reaped, a pipe that stays quiet for
//! [`QUIET_AFTER_DONE`] is abandoned so that the launcher can exit.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which of the launcher's streams a pipe is forwarded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Stdout,
    Stderr,
}

/// A line longer than this (without newline) is passed on in pieces, each
/// ended with a newline, rather than buffered without bound.
const MAX_LINE: usize = 64 * 1024;

/// Poll interval; also how long a pipe must be silent, once all ranks have
/// been reaped, before it is abandoned.
const QUIET_AFTER_DONE: Duration = Duration::from_millis(100);

/// Upper bound on draining after all ranks have been reaped, in case a
/// descendant keeps writing.
const MAX_DRAIN_AFTER_DONE: Duration = Duration::from_secs(5);

/// Splits a byte stream into complete lines, optionally prefixed.
#[derive(Debug)]
pub struct LineBuffer {
    prefix: Vec<u8>,
    partial: Vec<u8>,
}

impl LineBuffer {
    /// A buffer whose lines get `prefix` (may be empty).
    pub fn new(prefix: &str) -> Self {
        LineBuffer {
            prefix: prefix.as_bytes().to_vec(),
            partial: Vec::new(),
        }
    }

    /// Adds `data` and appends every line it completes to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.partial.extend_from_slice(data);
        let complete = match self.partial.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if self.partial.len() >= MAX_LINE => {
                // A giant line: pass it on in pieces rather than buffering.
                self.partial.push(b'\n');
                self.partial.len()
            }
            None => return,
        };
        let rest = self.partial.split_off(complete);
        let lines = std::mem::replace(&mut self.partial, rest);
        self.emit(&lines, out);
    }

    /// Ends the stream: a pending partial line is emitted with a newline.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            let mut last = std::mem::take(&mut self.partial);
            last.push(b'\n');
            self.emit(&last, out);
        }
    }

    fn emit(&self, lines: &[u8], out: &mut Vec<u8>) {
        if self.prefix.is_empty() {
            out.extend_from_slice(lines);
            return;
        }
        for line in lines.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(&self.prefix);
            out.extend_from_slice(line);
        }
    }
}

struct Pipe {
    rank: usize,
    target: Target,
    file: File,
    lines: LineBuffer,
}

/// Per-rank count of pipes still open, to let the job wait until a dead
/// rank's last words are out before it reports the death.
struct Shared {
    open: Mutex<Vec<u8>>,
    changed: Condvar,
    done: AtomicBool,
}

/// The running forwarder; [`Forwarder::finish`] drains and stops it.
pub struct Forwarder {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Starts forwarding `pipes` (`(rank, target, read end)`) for a job of
    /// `nranks` ranks; with `tag` every line gets `[rank] `.
    pub fn start(
        nranks: usize,
        pipes: Vec<(usize, Target, OwnedFd)>,
        tag: bool,
    ) -> io::Result<Self> {
        let mut open = vec![0u8; nranks];
        for (rank, _, _) in &pipes {
            open[*rank] += 1;
        }
        let shared = Arc::new(Shared {
            open: Mutex::new(open),
            changed: Condvar::new(),
            done: AtomicBool::new(false),
        });
        let pipes: Vec<Pipe> = pipes
            .into_iter()
            .map(|(rank, target, fd)| Pipe {
                rank,
                target,
                file: File::from(fd),
                lines: LineBuffer::new(&if tag {
                    format!("[{rank}] ")
                } else {
                    String::new()
                }),
            })
            .collect();
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("mpiexec-io".into())
            .spawn(move || forward(pipes, &s))?;
        Ok(Forwarder {
            shared,
            thread: Some(thread),
        })
    }

    /// Waits up to `timeout` until rank `rank`'s pipes have reached end of
    /// file, i.e. everything it wrote has been passed on.
    pub fn wait_drained(&self, rank: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut open = self.shared.open.lock().unwrap_or_else(|p| p.into_inner());
        while open.get(rank).copied().unwrap_or(0) > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            open = match self.shared.changed.wait_timeout(open, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Call once every rank has been reaped: forwards what is left and
    /// returns when all pipes are closed or quiet.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes `buf` to the launcher's stream; after the first failure (say, the
/// reader of our stdout went away) that stream's output is discarded, but
/// the pipes keep being drained so ranks never block on a full pipe.
fn write_out(target: Target, buf: &[u8], broken: &mut [bool; 2]) {
    let idx = target as usize;
    if buf.is_empty() || broken[idx] {
        return;
    }
    let result = match target {
        Target::Stdout => {
            let mut out = io::stdout().lock();
            out.write_all(buf).and_then(|()| out.flush())
        }
        Target::Stderr => {
            let mut err = io::stderr().lock();
            err.write_all(buf).and_then(|()| err.flush())
        }
    };
    if result.is_err() {
        broken[idx] = true;
    }
}

fn forward(mut pipes: Vec<Pipe>, shared: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(64 * 1024);
    let mut broken = [false; 2];
    let mut done_since: Option<Instant> = None;
    while !pipes.is_empty() {
        if done_since.is_none() && shared.done.load(Ordering::Acquire) {
            done_since = Some(Instant::now());
        }
        if done_since.is_some_and(|t| t.elapsed() > MAX_DRAIN_AFTER_DONE) {
            break;
        }
        let mut fds: Vec<libc::pollfd> = pipes
            .iter()
            .map(|p| libc::pollfd {
                fd: p.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ready = match crate::sys::poll(&mut fds, QUIET_AFTER_DONE.as_millis() as i32) {
            Ok(n) => n,
            Err(_) => break,
        };
        if ready == 0 {
            if done_since.is_some() {
                break; // every rank is gone and nobody is writing
            }
            continue;
        }
        let mut closed = Vec::new();
        for (i, pfd) in fds.iter().enumerate() {
            if pfd.revents == 0 {
                continue;
            }
            let p = &mut pipes[i];
            out.clear();
            let eof = match p.file.read(&mut buf) {
                Ok(0) => true,
                Ok(n) => {
                    p.lines.push(&buf[..n], &mut out);
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(_) => true,
            };
            if eof {
                p.lines.finish(&mut out);
                closed.push(i);
            }
            write_out(p.target, &out, &mut broken);
        }
        for i in closed.into_iter().rev() {
            let p = pipes.swap_remove(i);
            mark_closed(shared, p.rank);
        }
    }
    // Abandoned pipes: pass on what they hold and report them closed.
    for mut p in pipes {
        out.clear();
        p.lines.finish(&mut out);
        write_out(p.target, &out, &mut broken);
        mark_closed(shared, p.rank);
    }
}

fn mark_closed(shared: &Shared, rank: usize) {
    let mut open = shared.open.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = open.get_mut(rank) {
        *n = n.saturating_sub(1);
    }
    shared.changed.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(prefix: &str, chunks: &[&str]) -> (String, String) {
        let mut lb = LineBuffer::new(prefix);
        let mut out = Vec::new();
        for c in chunks {
            lb.push(c.as_bytes(), &mut out);
        }
        let before_finish = String::from_utf8(out.clone()).unwrap();
        lb.finish(&mut out);
        (before_finish, String::from_utf8(out).unwrap())
    }

    #[test]
    fn whole_lines_only() {
        let (early, all) = feed("", &["ab", "c\nde", "f\ng"]);
        assert_eq!(early, "abc\ndef\n");
        assert_eq!(all, "abc\ndef\ng\n");
    }

    #[test]
    fn prefix_on_every_line() {
        let (_, all) = feed("[3] ", &["x\ny\n", "\nz"]);
        assert_eq!(all, "[3] x\n[3] y\n[3] \n[3] z\n");
    }

    #[test]
    fn complete_output_gets_no_extra_newline() {
        let (_, all) = feed("[0] ", &["done", "\n"]);
        assert_eq!(all, "[0] done\n");
        let (_, empty) = feed("[0] ", &[]);
        assert_eq!(empty, "");
    }

    #[test]
    fn giant_line_is_split() {
        let big = "x".repeat(MAX_LINE + 10);
        let (early, all) = feed("", &[&big]);
        assert_eq!(early.len(), MAX_LINE + 11);
        assert_eq!(all.len(), MAX_LINE + 11);
        assert!(early.ends_with('\n'));
    }

    #[test]
    fn forwarder_reports_drained_ranks() {
        let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        let fwd = Forwarder::start(1, vec![(0, Target::Stderr, OwnedFd::from(r))], true).unwrap();
        drop(w);
        fwd.wait_drained(0, Duration::from_secs(10));
        assert_eq!(fwd.shared.open.lock().unwrap()[0], 0);
        fwd.finish();
    }
}
