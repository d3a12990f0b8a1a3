//! Communicator ids: which ids a process has free, and the agreement that
//! gives a new communicator an id free at every one of its members.
//!
//! A communicator with id `i` owns the matching contexts `4i..4i+4` (see
//! `NativeComm`). Two communicators may share an id as long as no process
//! belongs to both: matching happens at the receiver, which then tells
//! them apart by id. So a new communicator needs an id that is free at each
//! of its members, and nowhere else does it matter.
//!
//! Like MPICH, each process keeps a bit mask of its free ids; the members
//! combine their masks with AND and take an id whose bit survived. Ids come
//! back when a communicator is freed, so any number of Dup/Free cycles
//! works with a bounded id space (the earlier scheme, agreeing on one more
//! than the largest id any member had seen, never reused an id and ran out
//! after 2^30 creations). Unlike MPICH, the pick is not the lowest free id
//! but the first free one at or after a cursor that only moves forward
//! (the members agree on the largest cursor): a freed id is handed out
//! again only after every other id has been, which keeps a straggling
//! message of a freed communicator (an erroneous program, but a real one)
//! away from its successor for as long as possible.
//!
//! Threads: while one agreement of this process is in flight, its mask is
//! lent to that agreement; a concurrent agreement contributes an all-zero
//! mask, which makes its round fail at every member, and retries. Priority
//! goes to the agreement over the parent with the lowest id, so the one that
//! every process considers first always completes (MPICH's rule): no
//! deadlock, and no livelock.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// How many communicator ids a process can hold at once.
pub(crate) const MAX_IDS: usize = 8192;
const WORDS: usize = MAX_IDS / 64;

/// The proposal every member contributes to an agreement, and its result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Proposal {
    /// Ids free at every contributor (AND).
    free: Vec<u64>,
    /// The largest cursor (MAX): how far allocation has gone round the
    /// id space, counted without wrapping so that MAX is meaningful.
    cursor: u64,
    /// Whether every contributor offered its real mask (AND); if not, an
    /// empty result means "retry", not "exhausted".
    complete: bool,
}

impl Proposal {
    pub(crate) const BYTES: usize = WORDS * 8 + 12;

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::BYTES);
        for w in &self.free {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v.extend_from_slice(&self.cursor.to_le_bytes());
        v.extend_from_slice(&u32::from(self.complete).to_le_bytes());
        v
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Proposal> {
        if b.len() != Self::BYTES {
            return Err(Error::Intern(format!(
                "context id proposal of {} bytes, expected {}",
                b.len(),
                Self::BYTES
            )));
        }
        let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Ok(Proposal {
            free: (0..WORDS).map(word).collect(),
            cursor: word(WORDS),
            complete: u32::from_le_bytes(b[WORDS * 8 + 8..].try_into().expect("4 bytes")) != 0,
        })
    }

    /// Combines two proposals (commutative and associative).
    pub(crate) fn combine(&mut self, other: &Proposal) {
        for (a, b) in self.free.iter_mut().zip(&other.free) {
            *a &= b;
        }
        self.cursor = self.cursor.max(other.cursor);
        self.complete &= other.complete;
    }

    /// Combines two encoded proposals.
    pub(crate) fn combine_bytes(a: &[u8], b: &[u8]) -> Result<Vec<u8>> {
        let mut x = Proposal::decode(a)?;
        x.combine(&Proposal::decode(b)?);
        Ok(x.encode())
    }

    /// The id to take, the first free one at or after the cursor's place
    /// in the id space (wrapping), and the cursor that follows it.
    fn pick(&self) -> Option<(u32, u64)> {
        let start = (self.cursor % MAX_IDS as u64) as usize;
        (0..MAX_IDS)
            .map(|step| (step, (start + step) % MAX_IDS))
            .find(|&(_, i)| self.free[i / 64] & (1 << (i % 64)) != 0)
            .map(|(step, i)| (i as u32, self.cursor + step as u64 + 1))
    }
}

struct State {
    free: Vec<u64>,
    cursor: u64,
    /// The mask is lent to an agreement in flight.
    lent: bool,
    /// Agreements in flight in this process, by parent id (with counts).
    waiting: BTreeMap<u32, usize>,
}

/// The free ids of one process.
pub(crate) struct ContextIds {
    state: Mutex<State>,
}

impl ContextIds {
    /// All ids free except `reserved` (the predefined communicators).
    pub(crate) fn new(reserved: &[u32]) -> ContextIds {
        let mut free = vec![u64::MAX; WORDS];
        for &id in reserved {
            free[id as usize / 64] &= !(1 << (id % 64));
        }
        ContextIds {
            state: Mutex::new(State {
                free,
                cursor: reserved.iter().max().map_or(0, |&m| m as u64 + 1),
                lent: false,
                waiting: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives an id back (its communicator was freed).
    pub(crate) fn release(&self, id: u32) {
        let mut st = self.lock();
        st.free[id as usize / 64] |= 1 << (id % 64);
    }

    /// Whether `id` names a communicator of this process now (claimed and
    /// not given back).
    pub(crate) fn in_use(&self, id: u32) -> bool {
        let st = self.lock();
        st.free
            .get(id as usize / 64)
            .is_some_and(|w| w & (1 << (id % 64)) == 0)
    }

    /// Agrees with the other members on a new id. `parent` orders concurrent
    /// agreements (the id of the communicator the agreement runs over);
    /// `claim` is false for a process that takes part without joining the
    /// new communicator; `all_combine` combines every participant's encoded
    /// proposal and returns the combined one to each (an allreduce), and is
    /// called once per round.
    pub(crate) fn agree(
        &self,
        parent: u32,
        claim: bool,
        all_combine: &mut dyn FnMut(Vec<u8>) -> Result<Vec<u8>>,
    ) -> Result<Option<u32>> {
        *self.lock().waiting.entry(parent).or_insert(0) += 1;
        let result = self.agree_rounds(parent, claim, all_combine);
        let mut st = self.lock();
        if let Some(n) = st.waiting.get_mut(&parent) {
            *n -= 1;
            if *n == 0 {
                st.waiting.remove(&parent);
            }
        }
        drop(st);
        result
    }

    fn agree_rounds(
        &self,
        parent: u32,
        claim: bool,
        all_combine: &mut dyn FnMut(Vec<u8>) -> Result<Vec<u8>>,
    ) -> Result<Option<u32>> {
        loop {
            let mine = {
                let mut st = self.lock();
                let first = st.waiting.keys().next().copied();
                if !st.lent && first == Some(parent) {
                    st.lent = true;
                    Proposal {
                        free: st.free.clone(),
                        cursor: st.cursor,
                        complete: true,
                    }
                } else {
                    Proposal {
                        free: vec![0; WORDS],
                        cursor: st.cursor,
                        complete: false,
                    }
                }
            };
            let lent = mine.complete;
            let combined = all_combine(mine.encode()).and_then(|b| Proposal::decode(&b));
            let mut st = self.lock();
            if lent {
                st.lent = false;
            }
            let combined = combined?;
            match combined.pick() {
                Some((id, cursor)) => {
                    if claim {
                        st.free[id as usize / 64] &= !(1 << (id % 64));
                    }
                    st.cursor = st.cursor.max(cursor);
                    return Ok(claim.then_some(id));
                }
                None if combined.complete => {
                    return Err(Error::Intern(format!(
                        "no communicator id is free at every member (each process may \
                         hold at most {MAX_IDS} communicators at once); free unused ones"
                    )));
                }
                None => {
                    // Another agreement of some member held its mask: give
                    // the others a chance before the next round.
                    drop(st);
                    std::thread::yield_now();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_free_ids_round_robin_and_reuses_released_ones() {
        let ids = ContextIds::new(&[0, 1]);
        let mut solo = |p: Vec<u8>| Ok(p);
        let a = ids.agree(0, true, &mut solo).unwrap().unwrap();
        let b = ids.agree(0, true, &mut solo).unwrap().unwrap();
        assert_eq!((a, b), (2, 3));
        ids.release(a);
        // The cursor moves on: a freed id waits for the others.
        assert_eq!(ids.agree(0, true, &mut solo).unwrap(), Some(4));
        // Round and round: ids keep coming in order, each freed one only
        // after the whole space went by, wrapping included.
        let mut last = 4;
        for _ in 0..MAX_IDS * 3 {
            let id = ids.agree(0, true, &mut solo).unwrap().unwrap();
            // 0 and 1 are reserved, 3 and 4 still held.
            let mut want = (last + 1) % MAX_IDS as u32;
            while [0, 1, 3, 4].contains(&want) {
                want = (want + 1) % MAX_IDS as u32;
            }
            assert_eq!(id, want);
            ids.release(id);
            last = id;
        }
    }

    #[test]
    fn two_members_agree_on_an_id_free_at_both() {
        let x = ContextIds::new(&[0, 1, 2, 3]);
        let y = ContextIds::new(&[0, 1]);
        let px = Proposal::decode(&{
            let mut v = None;
            x.agree(0, false, &mut |p| {
                v = Some(p.clone());
                Ok(p)
            })
            .unwrap();
            v.unwrap()
        })
        .unwrap();
        let mut got = None;
        y.agree(0, true, &mut |p| {
            let mut q = Proposal::decode(&p)?;
            q.combine(&px);
            got = q.pick().map(|p| p.0);
            Ok(q.encode())
        })
        .unwrap();
        assert_eq!(got, Some(4));
    }

    #[test]
    fn exhaustion_is_an_error() {
        let ids = ContextIds::new(&[]);
        let mut solo = |p: Vec<u8>| Ok(p);
        for _ in 0..MAX_IDS {
            ids.agree(0, true, &mut solo).unwrap();
        }
        assert!(ids.agree(0, true, &mut solo).is_err());
    }
}
