//! Communicator management of the native engine (MPI-4.1 chapter 7):
//! duplication, splitting, creation from groups, intercommunicators, and
//! the agreement on a new communicator's id (see `ctxid.rs`).
//!
//! Every creation call is collective; the little collectives it needs are
//! written here against the collective context so that they do not depend
//! on the algorithms in `coll.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::backend::{CommRef, Communicator, RawBuf, SendMode, UNDEFINED};
use crate::coll::Pt2Pt;
use crate::error::{Error, Result};
use crate::topo::Topology;

use super::comm::{ctx, NativeComm};
use super::ctxid::Proposal;
use super::foreign;

/// Tag of the messages of communicator management on a collective context.
pub(super) const TAG_MGMT: i32 = 0x4f58_4d47;

pub(super) fn encode_i32s(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(super) fn decode_i32s(b: &[u8]) -> Result<Vec<i32>> {
    if !b.len().is_multiple_of(4) {
        return Err(Error::Intern("malformed rank list".into()));
    }
    Ok(b.chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect())
}

impl NativeComm {
    // ------------------------------------------------- small collectives

    /// Binomial-tree reduction of blobs to `root` with a commutative,
    /// associative `combine`; the result on `root` only.
    fn combine_to(
        &self,
        data: Vec<u8>,
        root: i32,
        tag: i32,
        combine: fn(&[u8], &[u8]) -> Result<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>> {
        let n = self.members.len() as i32;
        let rel = (self.rank - root + n) % n;
        let mut acc = data;
        let mut mask = 1;
        while mask < n {
            if rel & mask != 0 {
                self.csend(&acc, (rel - mask + root) % n, tag)?;
                return Ok(None);
            }
            if rel + mask < n {
                let right = self.crecv_vec((rel + mask + root) % n, tag)?;
                acc = combine(&acc, &right)?;
            }
            mask <<= 1;
        }
        Ok(Some(acc))
    }

    /// Binomial-tree broadcast of a blob whose length only `root` knows.
    pub(super) fn bcast_from(&self, data: Option<Vec<u8>>, root: i32, tag: i32) -> Result<Vec<u8>> {
        let n = self.members.len() as i32;
        let rel = (self.rank - root + n) % n;
        let mut mask = 1;
        let mut v = data.unwrap_or_default();
        while mask < n {
            if rel & mask != 0 {
                v = self.crecv_vec((rel - mask + root) % n, tag)?;
                break;
            }
            mask <<= 1;
        }
        mask >>= 1;
        while mask > 0 {
            if rel + mask < n {
                self.csend(&v, (rel + mask + root) % n, tag)?;
            }
            mask >>= 1;
        }
        Ok(v)
    }

    /// Every member's blob, in rank order, at every member.
    fn gather_all(&self, data: &[u8], tag: i32) -> Result<Vec<Vec<u8>>> {
        let n = self.members.len();
        let gathered = if self.rank == 0 {
            let mut all = Vec::with_capacity(n);
            all.push(data.to_vec());
            for src in 1..n as i32 {
                all.push(self.crecv_vec(src, tag)?);
            }
            Some(crate::coll::encode_blobs(&all))
        } else {
            self.csend(data, 0, tag)?;
            None
        };
        let packed = self.bcast_from(gathered, 0, tag)?;
        crate::coll::decode_blobs(&packed, n)
    }

    /// Combines a blob over all members; every member gets the result.
    fn combine_all(
        &self,
        data: Vec<u8>,
        tag: i32,
        combine: fn(&[u8], &[u8]) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let r = self.combine_to(data, 0, tag, combine)?;
        self.bcast_from(r, 0, tag)
    }

    // ----------------------------------------------------- intercomms

    fn local_comm(&self) -> Result<&NativeComm> {
        self.local
            .as_deref()
            .ok_or_else(|| Error::Comm("not an intercommunicator".into()))
    }

    /// The two leaders (local rank 0 of each group) swap blobs over the
    /// intercommunicator; the result is broadcast in each group.
    fn swap_with_remote(&self, data: Vec<u8>, tag: i32) -> Result<Vec<u8>> {
        let local = self.local_comm()?;
        let got = if self.rank == 0 {
            Some(self.csendrecv_vec(&data, 0, 0, tag)?)
        } else {
            None
        };
        local.bcast_from(got, 0, tag)
    }

    /// Combines a blob over both groups of an intercommunicator.
    fn inter_combine_all(
        &self,
        data: Vec<u8>,
        tag: i32,
        combine: fn(&[u8], &[u8]) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let local = self.local_comm()?;
        let mine = local.combine_to(data, 0, tag, combine)?;
        let all = match mine {
            Some(m) => {
                let theirs = self.csendrecv_vec(&m, 0, 0, tag)?;
                Some(combine(&m, &theirs)?)
            }
            None => None,
        };
        local.bcast_from(all, 0, tag)
    }

    // ------------------------------------------------------------- ids

    /// Agrees on a new id with the other members (all of them call this).
    fn agree_id(&self, claim: bool) -> Result<Option<u32>> {
        self.agree_id_tagged(claim, TAG_MGMT)
    }

    fn agree_id_tagged(&self, claim: bool, tag: i32) -> Result<Option<u32>> {
        let inter = self.remote.is_some();
        self.core.ctx_ids.agree(self.id, claim, &mut |p| {
            if inter {
                self.inter_combine_all(p, tag, Proposal::combine_bytes)
            } else {
                self.combine_all(p, tag, Proposal::combine_bytes)
            }
        })
    }

    fn claimed(id: Option<u32>) -> Result<u32> {
        id.ok_or_else(|| Error::Intern("communicator id not claimed".into()))
    }

    /// Gives this communicator's id back, once.
    pub(super) fn release_id(&self) {
        // A revoked communicator's id is never used again: a revocation
        // from a slower peer may still be on its way, and must not hit a
        // later communicator that reused the id.
        if self.owns_id
            && !self.freed.swap(true, Ordering::AcqRel)
            && !self.core.is_revoked(self.id)
        {
            self.core.ctx_ids.release(self.id);
        }
    }

    fn my_job_rank(&self) -> i32 {
        self.core.rank() as i32
    }

    // ------------------------------------------------------- creation

    /// MPI_Comm_dup (intra and inter); keeps the topology.
    pub(super) fn dup_comm(&self) -> Result<CommRef> {
        let id = Self::claimed(self.agree_id(true)?)?;
        let c = match &self.remote {
            Some(remote) => NativeComm::inter(
                self.core.clone(),
                id,
                self.rank,
                self.members.clone(),
                remote.clone(),
            ),
            None => NativeComm::new(self.core.clone(), id, self.rank, self.members.to_vec(), "")
                .with_agreed_channel()?,
        };
        if let Some(t) = self.topo.get() {
            let _ = c.topo.set(t.clone());
        }
        Ok(Arc::new(c))
    }

    /// MPI_Comm_split (intra and inter).
    pub(super) fn split_comm(&self, color: i32, key: i32) -> Result<Option<CommRef>> {
        if color < 0 && color != UNDEFINED {
            return Err(Error::Arg(format!(
                "split colour must be non-negative or UNDEFINED, got {color}"
            )));
        }
        let mine = encode_i32s(&[color, key]);
        let (local, tag) = (self.local.as_deref().unwrap_or(self), TAG_MGMT);
        let all = local.gather_all(&mine, tag)?;
        let pick = |blobs: &[Vec<u8>], group: &[i32]| -> Result<Vec<i32>> {
            let mut chosen = Vec::new();
            for (r, b) in blobs.iter().enumerate() {
                let ck = decode_i32s(b)?;
                if ck.len() == 2 && ck[0] == color && color != UNDEFINED {
                    chosen.push((ck[1], r));
                }
            }
            // Ties of key keep the old rank order.
            chosen.sort_unstable();
            Ok(chosen.iter().map(|&(_, r)| group[r]).collect())
        };
        let new_local = pick(&all, &self.members)?;
        let new_remote = match &self.remote {
            Some(remote) => {
                let theirs = self.swap_with_remote(crate::coll::encode_blobs(&all), tag)?;
                let theirs = crate::coll::decode_blobs(&theirs, remote.len())?;
                Some(pick(&theirs, remote)?)
            }
            None => None,
        };
        let joins = color != UNDEFINED && new_remote.as_ref().is_none_or(|r| !r.is_empty());
        let id = self.agree_id(joins)?;
        if !joins {
            return Ok(None);
        }
        let id = Self::claimed(id)?;
        let me = self.my_job_rank();
        let rank = new_local
            .iter()
            .position(|&m| m == me)
            .expect("this process has its own colour") as i32;
        Ok(Some(Arc::new(match new_remote {
            Some(remote) => {
                NativeComm::inter(self.core.clone(), id, rank, new_local.into(), remote.into())
            }
            None => {
                NativeComm::new(self.core.clone(), id, rank, new_local, "").with_agreed_channel()?
            }
        })))
    }

    /// Checks that `group` (job ranks) holds only members of this
    /// communicator's local group.
    fn check_subgroup(&self, group: &[i32]) -> Result<()> {
        if let Some(g) = group.iter().find(|g| !self.members.contains(g)) {
            return Err(Error::Group(format!(
                "process {g} of the group is not in the communicator"
            )));
        }
        Ok(())
    }

    /// MPI_Comm_create on an intracommunicator (collective over it).
    pub(super) fn create_comm(&self, group: &[i32]) -> Result<Option<CommRef>> {
        if self.remote.is_some() {
            return Err(Error::NotImplemented(
                "MPI_Comm_create on an intercommunicator".into(),
            ));
        }
        self.check_subgroup(group)?;
        let me = self.my_job_rank();
        let rank = group.iter().position(|&m| m == me);
        let id = self.agree_id(rank.is_some())?;
        match rank {
            Some(r) => Ok(Some(Arc::new(
                NativeComm::new(
                    self.core.clone(),
                    Self::claimed(id)?,
                    r as i32,
                    group.to_vec(),
                    "",
                )
                .with_agreed_channel()?,
            ))),
            None => Ok(None),
        }
    }

    /// MPI_Comm_create_group: collective over the group's members only,
    /// which agree on the new id on context 2 of this communicator.
    pub(super) fn create_group_comm(&self, group: &[i32], tag: i32) -> Result<CommRef> {
        if self.remote.is_some() {
            return Err(Error::Comm(
                "MPI_Comm_create_group needs an intracommunicator".into(),
            ));
        }
        if !(0..=crate::backend::TAG_UB).contains(&tag) {
            return Err(Error::Tag(tag));
        }
        self.check_subgroup(group)?;
        let me = self.my_job_rank();
        let rank = group
            .iter()
            .position(|&m| m == me)
            .ok_or_else(|| Error::Group("the calling process is not in the group".into()))?
            as i32;
        let helper = NativeComm::helper(self.core.clone(), rank, group.into(), ctx(self.id, 2));
        let id = Self::claimed(helper.agree_id_tagged(true, tag)?)?;
        Ok(Arc::new(
            NativeComm::new(self.core.clone(), id, rank, group.to_vec(), "")
                .with_agreed_channel()?,
        ))
    }

    /// MPI_Intercomm_create with this communicator as the local one. The
    /// leaders talk over `peer` (significant at the local leader only)
    /// with `tag`.
    pub(super) fn create_intercomm_comm(
        &self,
        local_leader: i32,
        peer: Option<&dyn Communicator>,
        remote_leader: i32,
        tag: i32,
    ) -> Result<CommRef> {
        if self.remote.is_some() {
            return Err(Error::Comm(
                "the local communicator of MPI_Intercomm_create must be an intracommunicator"
                    .into(),
            ));
        }
        if local_leader < 0 || local_leader >= self.members.len() as i32 {
            return Err(Error::Rank {
                rank: local_leader,
                size: self.members.len() as i32,
            });
        }
        let leader = self.rank == local_leader;
        let peer = if leader {
            let p = peer
                .ok_or_else(|| Error::Comm("the local leader needs a peer communicator".into()))?;
            if remote_leader < 0 || remote_leader >= p.size() {
                return Err(Error::Rank {
                    rank: remote_leader,
                    size: p.size(),
                });
            }
            Some(p)
        } else {
            None
        };
        // The leaders swap blobs over the peer communicator.
        let swap = |data: &[u8]| -> Result<Vec<u8>> {
            let p = peer.expect("leader has a peer");
            let rreq = p.irecv_owned(remote_leader, tag)?;
            let sreq = p.isend(
                &[RawBuf::from_slice(data)],
                remote_leader,
                tag,
                SendMode::Standard,
            )?;
            rreq.wait()?;
            sreq.wait()?;
            rreq.take_data()
                .ok_or_else(|| Error::Intern("leader exchange lost its message".into()))
        };
        // Members travel as (origin, slot): the groups may belong to two
        // launches, which number their processes apart (`foreign.rs`).
        let core = &self.core;
        let theirs = if leader {
            Some(swap(&foreign::encode_ranks(
                &core.foreign,
                &core.own,
                &self.members,
            )?)?)
        } else {
            None
        };
        let remote = foreign::decode_ranks(
            &core.foreign,
            &core.own,
            &self.bcast_from(theirs, local_leader, TAG_MGMT)?,
        )?;
        if remote.is_empty() || remote.iter().any(|r| self.members.contains(r)) {
            return Err(Error::Arg(format!(
                "the groups of an intercommunicator must be disjoint and not empty \
                 (local {:?}, remote {remote:?})",
                self.members
            )));
        }
        let id = self.core.ctx_ids.agree(self.id, true, &mut |p| {
            let mine = self.combine_to(p, local_leader, TAG_MGMT, Proposal::combine_bytes)?;
            let all = match mine {
                Some(m) => {
                    let t = swap(&m)?;
                    Some(Proposal::combine_bytes(&m, &t)?)
                }
                None => None,
            };
            self.bcast_from(all, local_leader, TAG_MGMT)
        })?;
        Ok(Arc::new(NativeComm::inter(
            self.core.clone(),
            Self::claimed(id)?,
            self.rank,
            self.members.clone(),
            remote.into(),
        )))
    }

    /// MPI_Intercomm_create_from_groups, run on COMM_WORLD: the local group
    /// agrees over COMM_WORLD's context 2, the leaders over its context 3.
    pub(super) fn create_from_groups_comm(
        &self,
        local: &[i32],
        local_leader: i32,
        remote: &[i32],
        remote_leader: i32,
        tag: i32,
    ) -> Result<CommRef> {
        let me = self.my_job_rank();
        let rank =
            local.iter().position(|&m| m == me).ok_or_else(|| {
                Error::Group("the calling process is not in the local group".into())
            })? as i32;
        if remote_leader < 0 || remote_leader >= remote.len() as i32 {
            return Err(Error::Rank {
                rank: remote_leader,
                size: remote.len() as i32,
            });
        }
        let helper = NativeComm::helper(self.core.clone(), rank, local.into(), ctx(self.id, 2));
        let world_peer = NativeComm::helper(
            self.core.clone(),
            self.rank,
            self.members.clone(),
            ctx(self.id, 3),
        );
        let remote_leader_world = remote[remote_leader as usize];
        helper.create_intercomm_comm(local_leader, Some(&world_peer), remote_leader_world, tag)
    }

    /// MPI_Intercomm_merge.
    pub(super) fn merge_comm(&self, high: bool) -> Result<CommRef> {
        let remote = self
            .remote
            .clone()
            .ok_or_else(|| Error::Comm("MPI_Intercomm_merge needs an intercommunicator".into()))?;
        let local = self.local_comm()?;
        // Each group uses its leader's `high`.
        let my_high = local.bcast_from(Some(vec![u8::from(high)]), 0, TAG_MGMT)?;
        let their_high = self.swap_with_remote(my_high.clone(), TAG_MGMT)?;
        let local_first = match (my_high.first(), their_high.first()) {
            (Some(a), Some(b)) if a != b => *a == 0,
            // Same flag on both sides: the group with the lower job rank
            // leads (both sides see the same two lists).
            _ => self.members[0] < remote[0],
        };
        let id = Self::claimed(self.agree_id(true)?)?;
        let members: Vec<i32> = if local_first {
            self.members.iter().chain(remote.iter()).copied().collect()
        } else {
            remote.iter().chain(self.members.iter()).copied().collect()
        };
        let me = self.my_job_rank();
        let rank = members.iter().position(|&m| m == me).expect("member") as i32;
        Ok(Arc::new(
            NativeComm::new(self.core.clone(), id, rank, members, "").with_agreed_channel()?,
        ))
    }

    /// Attaches a topology to a communicator that has none.
    pub(super) fn set_topology_comm(&self, t: Topology) -> Result<()> {
        if self.remote.is_some() {
            return Err(Error::Comm(
                "an intercommunicator cannot have a topology".into(),
            ));
        }
        if let Some(n) = t.nnodes() {
            if n != self.members.len() as i32 {
                return Err(Error::Topology(format!(
                    "a topology of {n} processes on a communicator of {}",
                    self.members.len()
                )));
            }
        }
        self.topo
            .set(Arc::new(t))
            .map_err(|_| Error::Topology("the communicator already has a topology".into()))
    }

    /// MPI_Comm_free.
    pub(super) fn free_comm(&self) -> Result<()> {
        if !self.owns_id || self.id < 2 {
            return Err(Error::Comm(
                "predefined communicators cannot be freed".into(),
            ));
        }
        if self.freed.load(Ordering::Acquire) {
            return Err(Error::Comm("communicator already freed".into()));
        }
        self.core.forget_comm(self.id);
        self.release_id();
        Ok(())
    }
}
