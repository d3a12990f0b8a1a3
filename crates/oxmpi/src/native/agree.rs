//! MPI_Comm_agree / MPI_Comm_iagree (MPI-5 fault tolerance): the bitwise
//! AND of an integer over every process of a communicator (both groups of
//! an intercommunicator).
//!
//! Fault-tolerant programs call agreements in orders that differ from
//! their other collectives on the same communicator (a process may start
//! an `Iagree` before a `Barrier` that its peers run first), so agreements
//! must neither match nor be sequenced with the communicator's collectives:
//! they run on the helper context (`ctx(id, 2)`) with tags of their own
//! sequence, as point-to-point messages from every process to every other.
//! A helper thread waits for the answers (an agreement is rare and small),
//! writes the result and completes the request.

use std::sync::Arc;

use crate::backend::{RawBuf, RequestRef, SendMode, Status};
use crate::error::{Error, Result};

use super::comm::{ctx, NativeComm};
use super::request::{Kind, NativeRequest, ReqState};
use super::{Blocked, Target, Watch};

/// Tags of agreements: above every tag the collectives use
/// (`COLL_TAG_LIMIT`), two per agreement (the local and the remote group).
pub(super) const AGREE_TAG_BASE: i32 = 0x5000_0000;
const AGREE_SEQUENCES: u32 = 1 << 24;

impl NativeComm {
    pub(super) fn iagree_comm(&self, flag: RawBuf) -> Result<RequestRef> {
        if flag.len != 4 {
            return Err(Error::Arg(
                "an agreement's flag is one 4-byte integer".into(),
            ));
        }
        // SAFETY: the caller keeps `flag` valid until the request completes;
        // 4 bytes, checked above; it may be unaligned.
        let mine = unsafe { flag.ptr.cast::<i32>().read_unaligned() };
        let seq = self.core.next_agreement(self.id) % AGREE_SEQUENCES;
        let tag = AGREE_TAG_BASE + 2 * seq as i32;
        let context = ctx(self.id, 2);
        let core = &self.core;
        let remote: &[i32] = self.remote.as_deref().unwrap_or(&[]);
        // Receives first: from every other member, then every remote one.
        let mut recvs = Vec::new();
        for (r, &w) in self.members.iter().enumerate() {
            if r as i32 != self.rank {
                recvs.push(core.post_recv(context, r as i32, w, tag, Target::Owned));
            }
        }
        for (r, &w) in remote.iter().enumerate() {
            recvs.push(core.post_recv(context, r as i32, w, tag + 1, Target::Owned));
        }
        // What we send lives with the helper thread until every send is out.
        let value: Arc<[u8; 4]> = Arc::new(mine.to_le_bytes());
        let mut sends = Vec::new();
        let others = self
            .members
            .iter()
            .enumerate()
            .filter(|&(r, _)| r as i32 != self.rank)
            .map(|(_, &w)| (w, tag))
            .chain(remote.iter().map(|&w| (w, tag + 1)));
        for (w, t) in others {
            let part = [RawBuf::from_slice(&value[..])];
            match core.start_send(context, self.rank, w as usize, t, &part, SendMode::Standard) {
                Ok(Some(req)) => sends.push(req),
                Ok(None) => {}
                Err(e) => {
                    // Withdraw the receives posted above, or they would
                    // stay posted for good.
                    for r in &recvs {
                        core.cancel_recv(r);
                    }
                    return Err(e);
                }
            }
        }
        let state = ReqState::new();
        let done = state.clone();
        let core2 = core.clone();
        let watched: Vec<i32> = self.members.iter().chain(remote).copied().collect();
        let flag_addr = flag.ptr as usize;
        std::thread::Builder::new()
            .name("oxmpi-agree".into())
            .spawn(move || {
                let _keep = value;
                let all = || recvs.iter().chain(&sends).all(|r| r.is_done());
                // Not the launcher's to call a deadlock: this thread waits
                // while the caller's threads do whatever they like.
                let describe = || Blocked {
                    call: "Iagree".into(),
                    peer: -1,
                    external: true,
                };
                let outcome = core2
                    .wait_described(
                        all,
                        &describe,
                        // Agreement goes on on a revoked communicator.
                        Watch::AllOf {
                            comm: u32::MAX,
                            members: &watched,
                            remote: &[],
                        },
                    )
                    .and_then(|()| {
                        sends.iter().try_for_each(|r| r.take().map(|_| ()))?;
                        recvs.iter().try_fold(mine, |acc, r| {
                            r.take()?;
                            let d = r.take_data().unwrap_or_default();
                            let v: [u8; 4] = d
                                .as_slice()
                                .try_into()
                                .map_err(|_| Error::Intern("malformed agreement message".into()))?;
                            Ok(acc & i32::from_le_bytes(v))
                        })
                    });
                match outcome {
                    Ok(result) => {
                        // SAFETY: the flag stays valid until the request
                        // completes, which happens only below.
                        unsafe { (flag_addr as *mut i32).write_unaligned(result) };
                        done.complete(Status::default(), None);
                    }
                    Err(e) => {
                        let st = Status {
                            error: e.class(),
                            ..Status::default()
                        };
                        done.complete(st, Some(e));
                    }
                }
                // The caller may be asleep waiting for this request.
                core2.seg.notify(core2.me);
            })
            .map_err(|e| Error::os("starting an agreement", e))?;
        Ok(Arc::new(NativeRequest {
            core: core.clone(),
            state,
            kind: Kind::Recv {
                source: crate::backend::ANY_SOURCE,
                tag: crate::backend::ANY_TAG,
                bytes: Some(4),
            },
            comm_id: self.id,
            peer_world: -1,
            any_of: None,
        }))
    }
}
