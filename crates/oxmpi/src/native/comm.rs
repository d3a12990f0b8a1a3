//! Communicators of the native engine (MPI-4.1 chapters 3, 6 and 7).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

use crate::backend::{
    CommRef, Communicator, Message, RawBuf, RequestRef, SendMode, Status, ANY_SOURCE, ANY_TAG,
    PROC_NULL, TAG_UB,
};
use crate::coll::{self, Pt2Pt};
use crate::datatype::Datatype;
use crate::error::{Error, Result};
use crate::op::Op;
use crate::topo::Topology;

use super::request::{CompletedRequest, Kind, NativeRequest};
use super::{abort_job, Core, Target, Unexpected};

/// A communicator: an id (giving its context ids) and its members.
///
/// Communicator id `i` owns four matching contexts: `4i` for point-to-point,
/// `4i+1` for collectives, `4i+2` for the local group of an
/// intercommunicator (or the helper of `create_group`), and `4i+3` for
/// neighbour collectives. Ids are agreed on by the members (`ctxid.rs`).
pub struct NativeComm {
    pub(super) core: Arc<Core>,
    pub(super) id: u32,
    pub(super) rank: i32,
    /// Job rank of each member of the (local) group, by rank.
    pub(super) members: Arc<[i32]>,
    /// An intercommunicator's remote group: job ranks by remote rank.
    pub(super) remote: Option<Arc<[i32]>>,
    /// An intercommunicator's local group as an intracommunicator, for the
    /// local phases of its collectives.
    pub(super) local: Option<Box<NativeComm>>,
    pub(super) ctx_p2p: u32,
    pub(super) ctx_coll: u32,
    pub(super) topo: OnceLock<Arc<Topology>>,
    pub(super) name: Mutex<String>,
    /// Whether this communicator gives its id back when freed (helpers
    /// borrowing a context of another communicator do not).
    pub(super) owns_id: bool,
    pub(super) freed: AtomicBool,
}

/// Context `k` (0..4) of communicator id `id`.
pub(super) fn ctx(id: u32, k: u32) -> u32 {
    id * 4 + k
}

impl NativeComm {
    pub(crate) fn new(core: Arc<Core>, id: u32, rank: i32, members: Vec<i32>, name: &str) -> Self {
        NativeComm {
            core,
            id,
            rank,
            members: members.into(),
            remote: None,
            local: None,
            ctx_p2p: ctx(id, 0),
            ctx_coll: ctx(id, 1),
            topo: OnceLock::new(),
            name: Mutex::new(name.to_owned()),
            owns_id: true,
            freed: AtomicBool::new(false),
        }
    }

    /// A communicator over `members` that only runs collectives, on context
    /// `ctx_coll` borrowed from another communicator (it owns no id).
    pub(super) fn helper(core: Arc<Core>, rank: i32, members: Arc<[i32]>, ctx_coll: u32) -> Self {
        NativeComm {
            core,
            id: ctx_coll / 4,
            rank,
            members,
            remote: None,
            local: None,
            ctx_p2p: ctx_coll,
            ctx_coll,
            topo: OnceLock::new(),
            name: Mutex::new(String::new()),
            owns_id: false,
            freed: AtomicBool::new(false),
        }
    }

    /// An intercommunicator with id `id`.
    pub(super) fn inter(
        core: Arc<Core>,
        id: u32,
        rank: i32,
        members: Arc<[i32]>,
        remote: Arc<[i32]>,
    ) -> Self {
        let local = NativeComm::helper(core.clone(), rank, members.clone(), ctx(id, 2));
        NativeComm {
            core,
            id,
            rank,
            members,
            remote: Some(remote),
            local: Some(Box::new(local)),
            ctx_p2p: ctx(id, 0),
            ctx_coll: ctx(id, 1),
            topo: OnceLock::new(),
            name: Mutex::new(String::new()),
            owns_id: true,
            freed: AtomicBool::new(false),
        }
    }

    #[inline]
    fn ctx_p2p(&self) -> u32 {
        self.ctx_p2p
    }

    #[inline]
    fn ctx_coll(&self) -> u32 {
        self.ctx_coll
    }

    fn nmembers(&self) -> i32 {
        self.members.len() as i32
    }

    /// The group that point-to-point ranks name: the remote group of an
    /// intercommunicator, else the members.
    pub(super) fn peers(&self) -> &[i32] {
        self.remote.as_deref().unwrap_or(&self.members)
    }

    /// Job rank of peer `r` (checked by the caller).
    #[inline]
    pub(super) fn peer_world(&self, r: i32) -> usize {
        self.peers()[r as usize] as usize
    }

    fn check_dest(&self, dest: i32) -> Result<()> {
        let n = self.peers().len() as i32;
        if dest < 0 || dest >= n {
            return Err(Error::Rank {
                rank: dest,
                size: n,
            });
        }
        Ok(())
    }

    fn check_source(&self, src: i32) -> Result<()> {
        if src == ANY_SOURCE {
            return Ok(());
        }
        self.check_dest(src)
    }

    fn check_root(&self, root: i32) -> Result<()> {
        if root < 0 || root >= self.nmembers() {
            return Err(Error::Root {
                root,
                size: self.nmembers(),
            });
        }
        Ok(())
    }

    fn request(&self, state: Arc<super::request::ReqState>, kind: Kind) -> RequestRef {
        Arc::new(NativeRequest {
            core: self.core.clone(),
            state,
            kind,
        })
    }

    fn send_on(
        &self,
        ctx: u32,
        parts: &[RawBuf],
        dest: i32,
        tag: i32,
        mode: SendMode,
    ) -> Result<()> {
        let world = self.peer_world(dest);
        if let Some(req) = self
            .core
            .start_send(ctx, self.rank, world, tag, parts, mode)?
        {
            self.core.wait_until(|| req.is_done())?;
            req.take()?;
        }
        Ok(())
    }

    fn recv_on(&self, ctx: u32, buf: RawBuf, src: i32, tag: i32) -> Result<Status> {
        let req = self.core.post_recv(ctx, src, tag, Target::Buf(buf));
        self.core.wait_until(|| req.is_done())?;
        req.take()
    }

    fn mprobe_on(&self, ctx: u32, src: i32, tag: i32) -> Result<Unexpected> {
        let mut found = None;
        self.core.wait_until(|| {
            if found.is_none() {
                found = self.core.take_matching(ctx, src, tag);
            }
            found.is_some()
        })?;
        Ok(found.expect("wait_until returned with a message"))
    }
}

impl Drop for NativeComm {
    fn drop(&mut self) {
        self.release_id();
    }
}

fn check_send_tag(tag: i32) -> Result<()> {
    if !(0..=TAG_UB).contains(&tag) {
        return Err(Error::Tag(tag));
    }
    Ok(())
}

fn check_recv_tag(tag: i32) -> Result<()> {
    if tag == ANY_TAG {
        return Ok(());
    }
    check_send_tag(tag)
}

impl Pt2Pt for NativeComm {
    fn rank(&self) -> i32 {
        self.rank
    }

    fn size(&self) -> i32 {
        self.nmembers()
    }

    fn csend(&self, data: &[u8], dest: i32, tag: i32) -> Result<()> {
        self.send_on(
            self.ctx_coll(),
            &[RawBuf::from_slice(data)],
            dest,
            tag,
            SendMode::Standard,
        )
    }

    fn crecv(&self, buf: &mut [u8], src: i32, tag: i32) -> Result<Status> {
        self.recv_on(self.ctx_coll(), RawBuf::from_mut(buf), src, tag)
    }

    fn crecv_vec(&self, src: i32, tag: i32) -> Result<Vec<u8>> {
        let u = self.mprobe_on(self.ctx_coll(), src, tag)?;
        let mut v = vec![0u8; u.payload.len()];
        let req = self.core.recv_taken(u, RawBuf::from_mut(&mut v));
        self.core.wait_until(|| req.is_done())?;
        req.take()?;
        Ok(v)
    }

    fn csendrecv_vec(&self, data: &[u8], dest: i32, src: i32, tag: i32) -> Result<Vec<u8>> {
        let world = self.peer_world(dest);
        let parts = [RawBuf::from_slice(data)];
        let sreq = self.core.start_send(
            self.ctx_coll(),
            self.rank,
            world,
            tag,
            &parts,
            SendMode::Standard,
        )?;
        let got = self.crecv_vec(src, tag);
        if let Some(req) = sreq {
            // Even if the receive failed, the send's buffer must not be
            // released while a peer may still read it.
            self.core.wait_until(|| req.is_done())?;
            req.take()?;
        }
        got
    }
}

/// A message taken by a matched probe.
struct NativeMessage {
    core: Arc<Core>,
    msg: Option<Unexpected>,
}

impl Message for NativeMessage {
    fn recv(mut self: Box<Self>, buf: RawBuf) -> Result<Status> {
        let Some(u) = self.msg.take() else {
            // MESSAGE_NO_PROC: the message of a probe on PROC_NULL.
            return Ok(Status::proc_null());
        };
        let req = self.core.recv_taken(u, buf);
        self.core.wait_until(|| req.is_done())?;
        req.take()
    }
}

impl NativeComm {
    fn message(&self, u: Unexpected) -> (Box<dyn Message>, Status) {
        let status = Status {
            source: u.src,
            tag: u.tag,
            count: u.payload.len(),
            ..Status::default()
        };
        (
            Box::new(NativeMessage {
                core: self.core.clone(),
                msg: Some(u),
            }),
            status,
        )
    }

    fn proc_null_message(&self) -> (Box<dyn Message>, Status) {
        (
            Box::new(NativeMessage {
                core: self.core.clone(),
                msg: None,
            }),
            Status::proc_null(),
        )
    }
}

impl Communicator for NativeComm {
    fn rank(&self) -> i32 {
        self.rank
    }

    fn size(&self) -> i32 {
        self.nmembers()
    }

    fn name(&self) -> String {
        self.name.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_name(&self, name: &str) {
        *self.name.lock().unwrap_or_else(|e| e.into_inner()) = name.to_owned();
    }

    fn isend(&self, parts: &[RawBuf], dest: i32, tag: i32, mode: SendMode) -> Result<RequestRef> {
        check_send_tag(tag)?;
        if dest == PROC_NULL {
            return Ok(Arc::new(CompletedRequest(Status::proc_null())));
        }
        self.check_dest(dest)?;
        let world = self.peer_world(dest);
        match self
            .core
            .start_send(self.ctx_p2p(), self.rank, world, tag, parts, mode)?
        {
            Some(state) => Ok(self.request(state, Kind::Send)),
            None => Ok(Arc::new(CompletedRequest(Status::default()))),
        }
    }

    fn send(&self, parts: &[RawBuf], dest: i32, tag: i32, mode: SendMode) -> Result<()> {
        check_send_tag(tag)?;
        if dest == PROC_NULL {
            return Ok(());
        }
        self.check_dest(dest)?;
        self.send_on(self.ctx_p2p(), parts, dest, tag, mode)
    }

    fn irecv(&self, buf: RawBuf, source: i32, tag: i32) -> Result<RequestRef> {
        check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(Arc::new(CompletedRequest(Status::proc_null())));
        }
        self.check_source(source)?;
        let state = self
            .core
            .post_recv(self.ctx_p2p(), source, tag, Target::Buf(buf));
        Ok(self.request(state, Kind::Recv))
    }

    fn irecv_owned(&self, source: i32, tag: i32) -> Result<RequestRef> {
        check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(Arc::new(CompletedRequest(Status::proc_null())));
        }
        self.check_source(source)?;
        let state = self
            .core
            .post_recv(self.ctx_p2p(), source, tag, Target::Owned);
        Ok(self.request(state, Kind::Recv))
    }

    fn recv(&self, buf: RawBuf, source: i32, tag: i32) -> Result<Status> {
        check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(Status::proc_null());
        }
        self.check_source(source)?;
        self.recv_on(self.ctx_p2p(), buf, source, tag)
    }

    fn iprobe(&self, source: i32, tag: i32) -> Result<Option<Status>> {
        check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(Some(Status::proc_null()));
        }
        self.check_source(source)?;
        Ok(self.core.peek_matching(self.ctx_p2p(), source, tag))
    }

    fn probe(&self, source: i32, tag: i32) -> Result<Status> {
        check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(Status::proc_null());
        }
        self.check_source(source)?;
        let mut found = None;
        self.core.wait_until(|| {
            found = self.core.peek_matching(self.ctx_p2p(), source, tag);
            found.is_some()
        })?;
        Ok(found.expect("probe returned with a status"))
    }

    fn improbe(&self, source: i32, tag: i32) -> Result<Option<(Box<dyn Message>, Status)>> {
        check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(Some(self.proc_null_message()));
        }
        self.check_source(source)?;
        Ok(self
            .core
            .take_matching(self.ctx_p2p(), source, tag)
            .map(|u| self.message(u)))
    }

    fn mprobe(&self, source: i32, tag: i32) -> Result<(Box<dyn Message>, Status)> {
        check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(self.proc_null_message());
        }
        self.check_source(source)?;
        let u = self.mprobe_on(self.ctx_p2p(), source, tag)?;
        Ok(self.message(u))
    }

    fn barrier(&self) -> Result<()> {
        coll::barrier(self)
    }

    fn bcast(&self, buf: RawBuf, root: i32) -> Result<()> {
        self.check_root(root)?;
        // SAFETY: the caller keeps `buf` valid and unaliased for the call.
        coll::bcast(self, unsafe { buf.as_mut_slice() }, root)
    }

    fn reduce(
        &self,
        send: Option<RawBuf>,
        recv: RawBuf,
        count: usize,
        dtype: &Datatype,
        op: &Op,
        root: i32,
    ) -> Result<()> {
        self.check_root(root)?;
        let nbytes = count * dtype.size();
        let is_root = self.rank == root;
        // The contribution is copied out first, so that IN_PLACE (send
        // and receive buffer the same) aliases nothing.
        let data: Vec<u8> = match send {
            // SAFETY: the caller keeps the buffers valid for the call.
            Some(s) => unsafe { s.as_slice() }.get(..nbytes).map(<[u8]>::to_vec),
            None => unsafe { recv.as_slice() }.get(..nbytes).map(<[u8]>::to_vec),
        }
        .ok_or_else(|| Error::Buffer(format!("send buffer smaller than {nbytes} bytes")))?;
        let out = if is_root {
            if recv.len < nbytes {
                return Err(Error::Buffer(format!(
                    "receive buffer holds {} bytes, need {nbytes}",
                    recv.len
                )));
            }
            // SAFETY: valid for the call; no other live reference.
            Some(unsafe { recv.as_mut_slice() })
        } else {
            None
        };
        coll::reduce(self, &data, out, count, dtype, op, root)
    }

    fn allreduce(
        &self,
        send: Option<RawBuf>,
        recv: RawBuf,
        count: usize,
        dtype: &Datatype,
        op: &Op,
    ) -> Result<()> {
        let nbytes = count * dtype.size();
        if recv.len < nbytes {
            return Err(Error::Buffer(format!(
                "receive buffer holds {} bytes, need {nbytes}",
                recv.len
            )));
        }
        let data: Vec<u8> = match send {
            // SAFETY: the caller keeps the buffers valid for the call.
            Some(s) => unsafe { s.as_slice() }.get(..nbytes).map(<[u8]>::to_vec),
            None => unsafe { recv.as_slice() }.get(..nbytes).map(<[u8]>::to_vec),
        }
        .ok_or_else(|| Error::Buffer(format!("send buffer smaller than {nbytes} bytes")))?;
        // SAFETY: valid for the call; `data` is a copy, so nothing aliases.
        coll::allreduce(
            self,
            &data,
            unsafe { recv.as_mut_slice() },
            count,
            dtype,
            op,
        )
    }

    fn bcast_bytes(&self, data: Option<Vec<u8>>, root: i32) -> Result<Vec<u8>> {
        self.check_root(root)?;
        coll::bcast_bytes(self, data, root)
    }

    fn gather_bytes(&self, data: &[u8], root: i32) -> Result<Option<Vec<Vec<u8>>>> {
        self.check_root(root)?;
        coll::gather_bytes(self, data, root)
    }

    fn allgather_bytes(&self, data: &[u8]) -> Result<Vec<Vec<u8>>> {
        coll::allgather_bytes(self, data)
    }

    fn scatter_bytes(&self, data: Option<Vec<Vec<u8>>>, root: i32) -> Result<Vec<u8>> {
        self.check_root(root)?;
        coll::scatter_bytes(self, data, root)
    }

    fn alltoall_bytes(&self, data: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        coll::alltoall_bytes(self, data)
    }

    fn reduce_bytes(
        &self,
        data: Vec<u8>,
        root: Option<i32>,
        combine: &mut dyn FnMut(&[u8], &[u8]) -> Result<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>> {
        if let Some(r) = root {
            self.check_root(r)?;
        }
        coll::reduce_bytes(self, data, root, combine)
    }

    fn dup(&self) -> Result<CommRef> {
        self.dup_comm()
    }

    fn split(&self, color: i32, key: i32) -> Result<Option<CommRef>> {
        self.split_comm(color, key)
    }

    fn world_ranks(&self) -> Vec<i32> {
        self.members.to_vec()
    }

    fn abort(&self, code: i32) -> ! {
        abort_job(&self.core, code, "MPI_Abort")
    }

    fn free(&self) -> Result<()> {
        self.free_comm()
    }

    fn is_inter(&self) -> bool {
        self.remote.is_some()
    }

    fn remote_world_ranks(&self) -> Vec<i32> {
        self.remote
            .as_deref()
            .map(<[i32]>::to_vec)
            .unwrap_or_default()
    }

    fn create(&self, group: &[i32]) -> Result<Option<CommRef>> {
        self.create_comm(group)
    }

    fn create_group(&self, group: &[i32], tag: i32) -> Result<CommRef> {
        self.create_group_comm(group, tag)
    }

    fn create_intercomm(
        &self,
        local_leader: i32,
        peer: Option<&dyn Communicator>,
        remote_leader: i32,
        tag: i32,
    ) -> Result<CommRef> {
        self.create_intercomm_comm(local_leader, peer, remote_leader, tag)
    }

    fn create_from_groups(
        &self,
        local: &[i32],
        local_leader: i32,
        remote: &[i32],
        remote_leader: i32,
        tag: i32,
    ) -> Result<CommRef> {
        self.create_from_groups_comm(local, local_leader, remote, remote_leader, tag)
    }

    fn merge(&self, high: bool) -> Result<CommRef> {
        self.merge_comm(high)
    }

    fn topology(&self) -> Option<Arc<Topology>> {
        self.topo.get().cloned()
    }

    fn set_topology(&self, topo: Topology) -> Result<()> {
        self.set_topology_comm(topo)
    }

    fn ineighbor_exchange(&self, sends: &[RawBuf], recvs: &[RawBuf]) -> Result<RequestRef> {
        self.ineighbor_exchange_comm(sends, recvs)
    }

    fn neighbor_exchange_bytes(&self, sends: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        self.neighbor_exchange_bytes_comm(sends)
    }

    fn iexchange(&self, sends: &[(i32, RawBuf)], recvs: &[(i32, RawBuf)]) -> Result<RequestRef> {
        self.iexchange_comm(sends, recvs)
    }

    fn exchange_bytes(
        &self,
        sends: Vec<(i32, Vec<u8>)>,
        recv_from: &[i32],
    ) -> Result<Vec<Vec<u8>>> {
        self.exchange_bytes_comm(sends, recv_from)
    }
}
