//! The deadlock monitor: notices when every rank of a job is stuck in MPI.
//!
//! Ranks of oxmpi's native runtime tell the launcher, over their PMI
//! channel, when they have slept in a blocking call for a while with nothing
//! to do (`cmd=oxmpi_state state=blocked call=<text> peer=<rank>`) and when
//! they wake up and make progress again (`cmd=oxmpi_state state=running`).
//! A rank that called `finalize`, or exited with status 0, is *finished*:
//! blocked for good, waiting for nothing.
//!
//! [`Monitor`] is the state machine, free of I/O and of clocks (callers pass
//! the time in), so it can be tested deterministically. The alarm condition:
//! every rank is blocked or finished, at least one is blocked, and every one
//! of them has been so, without interruption, for longer than the threshold.
//! A rank that never reports anything counts as running, so programs that do
//! not speak this protocol never raise an alarm.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Threshold used when neither `--deadlock-timeout` nor
/// `OXMPI_DEADLOCK_TIMEOUT` is given.
pub const DEFAULT_THRESHOLD: Duration = Duration::from_secs(5);

/// Longest call description kept (after decoding); longer ones are cut.
const CALL_MAX: usize = 512;

/// What a rank said about itself (or what its exit implies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Asleep in `call` (already decoded), waiting for rank `peer`
    /// (`None`: any rank, or a collective).
    Blocked { call: String, peer: Option<usize> },
    /// Awake and making progress.
    Running,
    /// Sent `finalize`, or exited with status 0. Permanent.
    Finished,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Running,
    Blocked {
        call: String,
        peer: Option<usize>,
        since: Instant,
    },
    Finished {
        since: Instant,
    },
    /// A spare slot with no process (see `MPI_Comm_spawn`).
    Vacant,
}

/// The per-job state machine.
#[derive(Debug)]
pub struct Monitor {
    threshold: Duration,
    ranks: Vec<State>,
}

impl Monitor {
    /// A monitor for `size` ranks, all running, that alarms after
    /// `threshold` (must be non-zero; zero means "no monitor" and is
    /// handled by the caller).
    pub fn new(size: usize, threshold: Duration) -> Self {
        Monitor {
            threshold,
            ranks: vec![State::Running; size],
        }
    }

    /// A new process took `slot` (spawned); it counts as running.
    pub fn occupy(&mut self, slot: usize) {
        if self.ranks.len() <= slot {
            self.ranks.resize(slot + 1, State::Vacant);
        }
        self.ranks[slot] = State::Running;
    }

    /// `slot` has no process any more, or never had one.
    pub fn vacate(&mut self, slot: usize) {
        if let Some(s) = self.ranks.get_mut(slot) {
            *s = State::Vacant;
        }
    }

    /// Records `report` from `rank`, received at `now`.
    ///
    /// A repeated `blocked` report with the same call and peer keeps the
    /// original time (the rank never stopped waiting); a different one
    /// starts a new wait. Reports after `Finished` are ignored.
    pub fn update(&mut self, rank: usize, report: Report, now: Instant) {
        let Some(slot) = self.ranks.get_mut(rank) else {
            return;
        };
        if matches!(slot, State::Finished { .. } | State::Vacant) {
            return;
        }
        let new = match report {
            Report::Running => State::Running,
            Report::Finished => State::Finished { since: now },
            Report::Blocked { call, peer } => match slot {
                State::Blocked {
                    call: c,
                    peer: p,
                    since,
                } if *c == call && *p == peer => State::Blocked {
                    call,
                    peer,
                    since: *since,
                },
                _ => State::Blocked {
                    call,
                    peer,
                    since: now,
                },
            },
        };
        *slot = new;
    }

    /// Since when every rank has been blocked or finished, with at least
    /// one blocked; `None` when that is not the case now.
    fn all_waiting_since(&self) -> Option<Instant> {
        let mut latest: Option<Instant> = None;
        let mut any_blocked = false;
        for s in &self.ranks {
            let since = match s {
                State::Running => return None,
                State::Blocked { since, .. } => {
                    any_blocked = true;
                    *since
                }
                State::Finished { since } => *since,
                State::Vacant => continue,
            };
            latest = Some(latest.map_or(since, |l| l.max(since)));
        }
        latest.filter(|_| any_blocked)
    }

    /// When the alarm will go off if nothing changes; `None` when the job
    /// is not (yet) stuck.
    pub fn alarm_at(&self) -> Option<Instant> {
        self.all_waiting_since().map(|t| t + self.threshold)
    }

    /// The report to print if the job has been stuck for longer than the
    /// threshold at `now`; `None` otherwise.
    pub fn check(&self, now: Instant) -> Option<String> {
        let since = self.all_waiting_since()?;
        let waited = now.saturating_duration_since(since);
        if waited < self.threshold {
            return None;
        }
        Some(self.render(waited))
    }

    /// The report text: header, one line per rank, the wait-for cycles.
    fn render(&self, waited: Duration) -> String {
        let mut s = format!(
            "mpiexec: deadlock: every rank has been waiting for {} s with no message in flight\n",
            seconds(waited)
        );
        for (rank, state) in self.ranks.iter().enumerate() {
            match state {
                State::Blocked { call, peer, .. } => {
                    let _ = write!(s, "  rank {rank}: blocked in {call}");
                    if let Some(p) = peer {
                        let _ = write!(s, " (waiting for rank {p})");
                    }
                    s.push('\n');
                }
                State::Finished { .. } => {
                    let _ = writeln!(s, "  rank {rank}: finished");
                }
                State::Running => {
                    let _ = writeln!(s, "  rank {rank}: running");
                }
                State::Vacant => {}
            }
        }
        for cycle in self.cycles() {
            let path: Vec<String> = cycle
                .iter()
                .chain(cycle.first())
                .map(|r| r.to_string())
                .collect();
            let _ = writeln!(s, "  cycle: {}", path.join(" -> "));
        }
        s
    }

    /// The cycles of the wait-for graph (edges: blocked rank -> its peer),
    /// each starting at its smallest rank, ordered by that rank. Every rank
    /// has at most one outgoing edge, so the cycles are disjoint.
    fn cycles(&self) -> Vec<Vec<usize>> {
        let n = self.ranks.len();
        let next = |r: usize| match &self.ranks[r] {
            State::Blocked { peer: Some(p), .. } if *p < n => Some(*p),
            _ => None,
        };
        // 0 = unvisited, 1 = on the current walk, 2 = done.
        let mut mark = vec![0u8; n];
        let mut cycles = Vec::new();
        for start in 0..n {
            let mut walk = Vec::new();
            let mut cur = Some(start);
            while let Some(r) = cur {
                match mark[r] {
                    0 => {
                        mark[r] = 1;
                        walk.push(r);
                        cur = next(r);
                    }
                    1 => {
                        // Closed a new cycle: the walk from r onwards.
                        let pos = walk.iter().position(|&w| w == r).unwrap_or(0);
                        let mut cycle = walk[pos..].to_vec();
                        let min = cycle.iter().enumerate().min_by_key(|(_, &v)| v);
                        let at = min.map_or(0, |(i, _)| i);
                        cycle.rotate_left(at);
                        cycles.push(cycle);
                        break;
                    }
                    _ => break,
                }
            }
            for r in walk {
                mark[r] = 2;
            }
        }
        cycles.sort_unstable_by_key(|c| c[0]);
        cycles
    }
}

/// `5`, `1.5`: seconds with at most one decimal.
fn seconds(d: Duration) -> String {
    let s = format!("{:.1}", d.as_secs_f64());
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// Parses the fields of an `oxmpi_state` request. `None` for an unknown
/// `state` (the request is then ignored).
pub fn parse_report(state: Option<&str>, call: Option<&str>, peer: Option<&str>) -> Option<Report> {
    match state? {
        "running" => Some(Report::Running),
        "blocked" => {
            let call = call
                .map(percent_decode)
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "an unnamed call".to_string());
            let peer = peer
                .and_then(|p| p.parse::<i64>().ok())
                .filter(|&p| p >= 0)
                .and_then(|p| usize::try_from(p).ok());
            Some(Report::Blocked { call, peer })
        }
        _ => None,
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as it
/// is. Control characters (which could forge report lines) become `?`, and
/// the result is cut to [`CALL_MAX`] bytes at a character boundary.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    let mut text: String = String::from_utf8_lossy(&out)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.len() > CALL_MAX {
        let mut cut = CALL_MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    fn blocked(call: &str, peer: Option<usize>) -> Report {
        Report::Blocked {
            call: call.to_string(),
            peer,
        }
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn all_blocked_alarms_after_threshold() {
        let t0 = Instant::now();
        let mut m = Monitor::new(2, T);
        assert_eq!(m.alarm_at(), None);
        m.update(0, blocked("Recv(x)", Some(1)), t0);
        assert_eq!(m.alarm_at(), None, "rank 1 still running");
        m.update(1, blocked("Recv(y)", Some(0)), ms(t0, 1000));
        // The clock starts when the last rank got stuck.
        assert_eq!(m.alarm_at(), Some(ms(t0, 6000)));
        assert_eq!(m.check(ms(t0, 5999)), None);
        let report = m.check(ms(t0, 6000)).expect("alarm");
        assert_eq!(
            report,
            "mpiexec: deadlock: every rank has been waiting for 5 s with no message in flight\n\
             \x20 rank 0: blocked in Recv(x) (waiting for rank 1)\n\
             \x20 rank 1: blocked in Recv(y) (waiting for rank 0)\n\
             \x20 cycle: 0 -> 1 -> 0\n"
        );
    }

    #[test]
    fn one_running_rank_prevents_the_alarm() {
        let t0 = Instant::now();
        let mut m = Monitor::new(3, T);
        m.update(0, blocked("Recv", Some(2)), t0);
        m.update(1, blocked("Recv", Some(2)), t0);
        // Rank 2 never reported: running.
        assert_eq!(m.alarm_at(), None);
        assert_eq!(m.check(ms(t0, 60_000)), None);
        // It blocks, then wakes up again: the clock is reset.
        m.update(2, blocked("Send", Some(0)), ms(t0, 1000));
        assert_eq!(m.alarm_at(), Some(ms(t0, 6000)));
        m.update(2, Report::Running, ms(t0, 4000));
        assert_eq!(m.check(ms(t0, 7000)), None);
        m.update(2, blocked("Send", Some(0)), ms(t0, 8000));
        assert_eq!(m.check(ms(t0, 12_999)), None);
        assert!(m.check(ms(t0, 13_000)).is_some());
    }

    #[test]
    fn repeated_report_keeps_its_clock_but_a_new_call_does_not() {
        let t0 = Instant::now();
        let mut m = Monitor::new(1, T);
        m.update(0, blocked("Recv", Some(0)), t0);
        m.update(0, blocked("Recv", Some(0)), ms(t0, 3000));
        assert_eq!(m.alarm_at(), Some(ms(t0, 5000)));
        m.update(0, blocked("Recv", None), ms(t0, 4000));
        assert_eq!(m.alarm_at(), Some(ms(t0, 9000)));
    }

    #[test]
    fn finished_and_blocked_alarm() {
        let t0 = Instant::now();
        let mut m = Monitor::new(3, T);
        m.update(0, Report::Finished, t0);
        m.update(1, blocked("Recv(source=0)", Some(0)), ms(t0, 100));
        m.update(2, Report::Finished, ms(t0, 200));
        // Finished is permanent.
        m.update(0, Report::Running, ms(t0, 300));
        assert_eq!(m.alarm_at(), Some(ms(t0, 5200)));
        let r = m.check(ms(t0, 5200)).unwrap();
        assert_eq!(
            r,
            "mpiexec: deadlock: every rank has been waiting for 5 s with no message in flight\n\
             \x20 rank 0: finished\n\
             \x20 rank 1: blocked in Recv(source=0) (waiting for rank 0)\n\
             \x20 rank 2: finished\n"
        );
    }

    #[test]
    fn all_finished_is_no_deadlock() {
        let t0 = Instant::now();
        let mut m = Monitor::new(2, T);
        m.update(0, Report::Finished, t0);
        m.update(1, Report::Finished, t0);
        assert_eq!(m.alarm_at(), None);
        assert_eq!(m.check(ms(t0, 60_000)), None);
    }

    #[test]
    fn out_of_range_rank_is_ignored() {
        let mut m = Monitor::new(1, T);
        m.update(5, Report::Finished, Instant::now());
        assert_eq!(m.alarm_at(), None);
    }

    #[test]
    fn cycle_rendering() {
        let t0 = Instant::now();
        let mut m = Monitor::new(6, T);
        // 1 -> 2 -> 3 -> 1, 4 -> 4, 0 -> 1 (leads into a cycle), 5 -> any.
        m.update(0, blocked("A", Some(1)), t0);
        m.update(1, blocked("B", Some(2)), t0);
        m.update(2, blocked("C", Some(3)), t0);
        m.update(3, blocked("D", Some(1)), t0);
        m.update(4, blocked("E", Some(4)), t0);
        m.update(5, blocked("Barrier(comm=MPI_COMM_WORLD)", None), t0);
        assert_eq!(m.cycles(), [vec![1, 2, 3], vec![4]]);
        let r = m.check(ms(t0, 7500)).unwrap();
        assert!(r.starts_with("mpiexec: deadlock: every rank has been waiting for 7.5 s"));
        assert!(r.contains("  rank 5: blocked in Barrier(comm=MPI_COMM_WORLD)\n"));
        assert!(
            r.ends_with("  cycle: 1 -> 2 -> 3 -> 1\n  cycle: 4 -> 4\n"),
            "{r}"
        );
    }

    #[test]
    fn cycle_starts_at_smallest_rank() {
        let t0 = Instant::now();
        let mut m = Monitor::new(3, T);
        m.update(0, blocked("x", Some(2)), t0);
        m.update(2, blocked("x", Some(1)), t0);
        m.update(1, blocked("x", Some(0)), t0);
        assert_eq!(m.cycles(), [vec![0, 2, 1]]);
        // A peer outside the job is no edge.
        let mut m = Monitor::new(2, T);
        m.update(0, blocked("x", Some(7)), t0);
        m.update(1, blocked("x", Some(0)), t0);
        assert!(m.cycles().is_empty());
    }

    #[test]
    fn parsing_reports() {
        assert_eq!(
            parse_report(Some("running"), None, None),
            Some(Report::Running)
        );
        assert_eq!(
            parse_report(
                Some("blocked"),
                Some("Recv(comm%3DMPI_COMM_WORLD,%20source%3D1,%20count%3D8%20B)"),
                Some("1")
            ),
            Some(blocked(
                "Recv(comm=MPI_COMM_WORLD, source=1, count=8 B)",
                Some(1)
            ))
        );
        assert_eq!(
            parse_report(Some("blocked"), Some("Barrier"), Some("-1")),
            Some(blocked("Barrier", None))
        );
        assert_eq!(
            parse_report(Some("blocked"), None, Some("x")),
            Some(blocked("an unnamed call", None))
        );
        assert_eq!(parse_report(Some("sleepy"), None, None), None);
        assert_eq!(parse_report(None, None, None), None);
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%20b%3Dc%25d"), "a b=c%d");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%e2%82%ac"), "\u{20ac}");
        assert_eq!(percent_decode("x%0Ampiexec: forged"), "x?mpiexec: forged");
        let long = percent_decode(&"y".repeat(2000));
        assert_eq!(long.len(), CALL_MAX + 3);
    }

    #[test]
    fn seconds_format() {
        assert_eq!(seconds(Duration::from_millis(5003)), "5");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5");
        assert_eq!(seconds(Duration::from_millis(60_000)), "60");
    }
}
