//! Communicators of the native engine (MPI-4.1 chapters 3, 6 and 7).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

use crate::backend::{
    Collective, Combine, CommRef, Communicator, Message, RawBuf, RequestRef, SendMode, Status,
    ANY_SOURCE, ANY_TAG, PROC_NULL, TAG_UB,
};
use crate::coll::{self, Pt2Pt};
use crate::datatype::Datatype;
use crate::error::{Error, Result};
use crate::op::Op;
use crate::topo::Topology;

use super::coll::{ChannelClaim, CollEngine};
use super::request::{CompletedRequest, Kind, NativeRequest};
use super::{abort_job, Blocked, Core, Target, Unexpected, Watch};

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
    /// Collective sequencing, worker and shared-memory channel of an
    /// intracommunicator. An intercommunicator never runs collectives
    /// through it: the binding composes those from `iexchange` rounds.
    pub(super) coll: CollEngine,
}

/// Context `k` (0..4) of communicator id `id`.
pub(super) fn ctx(id: u32, k: u32) -> u32 {
    id * 4 + k
}

impl NativeComm {
    pub(crate) fn new(core: Arc<Core>, id: u32, rank: i32, members: Vec<i32>, name: &str) -> Self {
        let members: Arc<[i32]> = members.into();
        NativeComm {
            coll: CollEngine::new(
                core.clone(),
                Self::ctx_coll_of(id),
                id,
                rank,
                members.clone(),
            ),
            core,
            id,
            rank,
            members,
            remote: None,
            local: None,
            ctx_p2p: ctx(id, 0),
            ctx_coll: Self::ctx_coll_of(id),
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
            coll: CollEngine::new(core.clone(), ctx_coll, ctx_coll / 4, rank, members.clone()),
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
            // Never run (see the field's doc); built so that every
            // communicator has one.
            coll: CollEngine::new(
                core.clone(),
                Self::ctx_coll_of(id),
                id,
                rank,
                members.clone(),
            ),
            core,
            id,
            rank,
            members,
            remote: Some(remote),
            local: Some(Box::new(local)),
            ctx_p2p: ctx(id, 0),
            ctx_coll: Self::ctx_coll_of(id),
            topo: OnceLock::new(),
            name: Mutex::new(String::new()),
            owns_id: true,
            freed: AtomicBool::new(false),
        }
    }

    /// The same communicator, but its id is not its to give back (a
    /// reserved id such as the universe's).
    pub(super) fn without_id(mut self) -> Self {
        self.owns_id = false;
        self
    }

    /// Gives a new communicator the shared-memory channel its members
    /// agreed on (see `agree_on_channel`).
    pub(crate) fn with_coll_channel(mut self, channel: Option<ChannelClaim>) -> Self {
        self.coll.set_channel(channel);
        self
    }

    /// Has the members of a new intracommunicator agree on a shared-memory
    /// channel, over the new communicator itself: only its members take
    /// part, on its own collective context, so creations that are not
    /// collective over the parent (`create_group`) or whose parent is an
    /// intercommunicator (`merge`) work alike. The new communicator must
    /// not have been shared yet. A communicator of one process needs no
    /// channel (its collectives move nothing between processes) and keeps
    /// the channels for others.
    pub(super) fn with_agreed_channel(self) -> Result<Self> {
        // Members of other launches share no collective channel with us
        // (`foreign.rs`); every member sees some and skips alike.
        let foreign = self
            .members
            .iter()
            .any(|&m| m as usize >= super::foreign::FOREIGN_STRIDE);
        if self.members.len() < 2 || foreign {
            return Ok(self);
        }
        let channel = match self.agree_on_channel(true) {
            Ok(channel) => channel,
            // Members that finished creating it may revoke the new
            // communicator while we still agree on its channel: it is
            // created all the same (revoked, it will run no collective).
            Err(Error::Revoked(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(self.with_coll_channel(channel))
    }

    #[inline]
    fn ctx_p2p(&self) -> u32 {
        self.ctx_p2p
    }

    #[inline]
    fn ctx_coll(&self) -> u32 {
        self.ctx_coll
    }

    /// The collective context of communicator `id` (its algorithms'
    /// messages never match point-to-point ones).
    #[inline]
    fn ctx_coll_of(id: u32) -> u32 {
        ctx(id, 1)
    }

    /// Collectives on buffers and blobs run on intracommunicators only; an
    /// intercommunicator's are composed in the binding from `iexchange`.
    pub(super) fn check_intra(&self) -> Result<()> {
        if self.remote.is_some() {
            return Err(Error::Comm(
                "this collective is not available on an intercommunicator".into(),
            ));
        }
        Ok(())
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

    /// The error of a non-local operation on a revoked communicator.
    #[inline]
    fn live(&self) -> Result<()> {
        if self.core.is_revoked(self.id) {
            return Err(Error::Revoked(format!(
                "{} was revoked",
                comm_label(self.id, &self.name())
            )));
        }
        Ok(())
    }

    /// Job ranks of both groups of an intercommunicator, else the members.
    fn all_job_ranks(&self) -> Vec<i32> {
        let mut all = self.members.to_vec();
        all.extend(self.remote.as_deref().unwrap_or(&[]));
        all
    }

    /// Posts a receive from peer `src` (or ANY_SOURCE) on context `ctx`.
    pub(super) fn post(
        &self,
        ctx: u32,
        src: i32,
        tag: i32,
        target: Target,
    ) -> Arc<super::request::ReqState> {
        let world = if src >= 0 {
            self.peers()[src as usize]
        } else {
            -1
        };
        self.core.post_recv(ctx, src, world, tag, target)
    }

    /// The processes a call on context `ctx` waiting for `peer` depends on.
    fn watch(&self, ctx: u32, peer: i32) -> Watch<'_> {
        if !self.owns_id || ctx != self.ctx_p2p() {
            // A step of a collective or of communicator management.
            Watch::AllOf {
                comm: self.id,
                members: &self.members,
                remote: self.remote.as_deref().unwrap_or(&[]),
            }
        } else if peer >= 0 {
            Watch::Peer {
                comm: self.id,
                rank: self.peers()[peer as usize],
            }
        } else {
            Watch::AnyOf {
                comm: self.id,
                slots: self.peers(),
            }
        }
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
        let (peer, any_source) = match kind {
            Kind::Send { dest, .. } => (dest, false),
            Kind::Recv { source, .. } => (source, source == ANY_SOURCE),
        };
        Arc::new(NativeRequest {
            core: self.core.clone(),
            state,
            kind,
            comm_id: self.id,
            peer_world: self.peer_job_rank(peer),
            any_of: any_source.then(|| {
                self.remote
                    .clone()
                    .unwrap_or_else(|| Arc::clone(&self.members))
            }),
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
            let bytes: usize = parts.iter().map(|p| p.len).sum();
            self.core.wait_described(
                || req.is_done(),
                &|| self.blocked(ctx, "Send", "dest", dest, tag, Some(bytes)),
                self.watch(ctx, dest),
            )?;
            req.take()?;
        }
        Ok(())
    }

    fn recv_on(&self, ctx: u32, buf: RawBuf, src: i32, tag: i32) -> Result<Status> {
        let req = self.post(ctx, src, tag, Target::Buf(buf));
        if !req.is_done() {
            let waited = self.core.wait_described(
                || req.is_done(),
                &|| self.blocked(ctx, "Recv", "source", src, tag, Some(buf.len)),
                self.watch(ctx, src),
            );
            if let Err(e) = waited {
                // A receive from any source with a failed peer: withdraw
                // it, so that no later message lands in a buffer its
                // caller has given up on; if one matched meanwhile, it is
                // the answer.
                if self.core.cancel_recv(&req) {
                    return Err(e);
                }
                self.core.wait_until(|| req.is_done())?;
            }
        }
        req.take()
    }

    fn mprobe_on(&self, ctx: u32, src: i32, tag: i32) -> Result<Unexpected> {
        let mut found = None;
        self.core.wait_described(
            || {
                if found.is_none() {
                    found = self.core.take_matching(ctx, src, tag);
                }
                found.is_some()
            },
            &|| self.blocked(ctx, "Recv", "source", src, tag, None),
            self.watch(ctx, src),
        )?;
        Ok(found.expect("wait_until returned with a message"))
    }

    /// Describes a blocked call for the launcher's deadlock report.
    fn blocked(
        &self,
        ctx: u32,
        op: &str,
        role: &str,
        peer: i32,
        tag: i32,
        bytes: Option<usize>,
    ) -> Blocked {
        let name = comm_label(self.id, &self.name());
        let who = if peer == ANY_SOURCE {
            "ANY_SOURCE".to_string()
        } else {
            peer.to_string()
        };
        if !self.owns_id || ctx != self.ctx_p2p() {
            // A step of a collective or of communicator management: every
            // member takes part, so no single peer is to blame.
            return Blocked {
                call: format!("a collective on {name} ({op} step, {role}={who})"),
                peer: -1,
                external: false,
            };
        }
        describe_call(&name, op, role, peer, self.peer_job_rank(peer), tag, bytes)
    }

    /// Job rank of peer `peer` for reports; -1 for ANY_SOURCE.
    fn peer_job_rank(&self, peer: i32) -> i32 {
        if peer >= 0 {
            self.peers()[peer as usize]
        } else {
            -1
        }
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
        let req = self
            .core
            .recv_taken(u, Target::Buf(RawBuf::from_mut(&mut v)));
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
            // released while a peer may still read it (a failed peer's
            // send completes with an error).
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
    /// For deadlock reports: the communicator and the sender's job rank.
    comm_id: u32,
    source_world: i32,
}

impl NativeMessage {
    /// Starts receiving the message; None for MESSAGE_NO_PROC (the message
    /// of a probe on PROC_NULL), which receives nothing.
    fn start(&mut self, target: Target) -> Option<Arc<super::request::ReqState>> {
        let u = self.msg.take()?;
        Some(self.core.recv_taken(u, target))
    }

    fn request(&self, state: Option<Arc<super::request::ReqState>>) -> RequestRef {
        match state {
            Some(state) => Arc::new(NativeRequest {
                core: self.core.clone(),
                state,
                kind: Kind::Recv {
                    source: ANY_SOURCE,
                    tag: ANY_TAG,
                    bytes: None,
                },
                comm_id: self.comm_id,
                peer_world: self.source_world,
                any_of: None,
            }),
            None => Arc::new(CompletedRequest(Status::proc_null())),
        }
    }
}

impl Message for NativeMessage {
    fn recv(mut self: Box<Self>, buf: RawBuf) -> Result<Status> {
        let Some(req) = self.start(Target::Buf(buf)) else {
            return Ok(Status::proc_null());
        };
        self.core.wait_until(|| req.is_done())?;
        req.take()
    }

    fn irecv(mut self: Box<Self>, buf: RawBuf) -> Result<RequestRef> {
        let state = self.start(Target::Buf(buf));
        Ok(self.request(state))
    }

    fn irecv_owned(mut self: Box<Self>) -> Result<RequestRef> {
        let state = self.start(Target::Owned);
        Ok(self.request(state))
    }
}

impl Drop for NativeMessage {
    /// A matched message nobody received is discarded, so that a
    /// rendezvous sender waiting for its receiver is released.
    fn drop(&mut self) {
        let _ = self.start(Target::Buf(RawBuf::EMPTY));
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
        let source_world = self.peer_job_rank(u.src);
        (
            Box::new(NativeMessage {
                core: self.core.clone(),
                msg: Some(u),
                comm_id: self.id,
                source_world,
            }),
            status,
        )
    }

    fn proc_null_message(&self) -> (Box<dyn Message>, Status) {
        (
            Box::new(NativeMessage {
                core: self.core.clone(),
                msg: None,
                comm_id: self.id,
                source_world: -1,
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
        self.live()?;
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
            Some(state) => Ok(self.request(
                state,
                Kind::Send {
                    dest,
                    tag,
                    bytes: parts.iter().map(|p| p.len).sum(),
                },
            )),
            None => Ok(sent_request()),
        }
    }

    fn send(&self, parts: &[RawBuf], dest: i32, tag: i32, mode: SendMode) -> Result<()> {
        self.live()?;
        check_send_tag(tag)?;
        if dest == PROC_NULL {
            return Ok(());
        }
        self.check_dest(dest)?;
        self.send_on(self.ctx_p2p(), parts, dest, tag, mode)
    }

    fn irecv(&self, buf: RawBuf, source: i32, tag: i32) -> Result<RequestRef> {
        self.live()?;
        check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(Arc::new(CompletedRequest(Status::proc_null())));
        }
        self.check_source(source)?;
        let state = self.post(self.ctx_p2p(), source, tag, Target::Buf(buf));
        Ok(self.request(
            state,
            Kind::Recv {
                source,
                tag,
                bytes: Some(buf.len),
            },
        ))
    }

    fn irecv_owned(&self, source: i32, tag: i32) -> Result<RequestRef> {
        self.live()?;
        check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(Arc::new(CompletedRequest(Status::proc_null())));
        }
        self.check_source(source)?;
        let state = self.post(self.ctx_p2p(), source, tag, Target::Owned);
        Ok(self.request(
            state,
            Kind::Recv {
                source,
                tag,
                bytes: None,
            },
        ))
    }

    fn recv(&self, buf: RawBuf, source: i32, tag: i32) -> Result<Status> {
        self.live()?;
        check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(Status::proc_null());
        }
        self.check_source(source)?;
        self.recv_on(self.ctx_p2p(), buf, source, tag)
    }

    fn iprobe(&self, source: i32, tag: i32) -> Result<Option<Status>> {
        self.live()?;
        check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(Some(Status::proc_null()));
        }
        self.check_source(source)?;
        Ok(self.core.peek_matching(self.ctx_p2p(), source, tag))
    }

    fn probe(&self, source: i32, tag: i32) -> Result<Status> {
        self.live()?;
        check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(Status::proc_null());
        }
        self.check_source(source)?;
        let mut found = None;
        self.core.wait_watching(
            || {
                found = self.core.peek_matching(self.ctx_p2p(), source, tag);
                found.is_some()
            },
            self.watch(self.ctx_p2p(), source),
        )?;
        Ok(found.expect("probe returned with a status"))
    }

    fn improbe(&self, source: i32, tag: i32) -> Result<Option<(Box<dyn Message>, Status)>> {
        self.live()?;
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
        self.live()?;
        check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(self.proc_null_message());
        }
        self.check_source(source)?;
        let u = self.mprobe_on(self.ctx_p2p(), source, tag)?;
        Ok(self.message(u))
    }

    fn barrier(&self) -> Result<()> {
        self.live()?;
        self.run_collective(Collective::Barrier)
    }

    fn bcast(&self, buf: RawBuf, root: i32) -> Result<()> {
        self.live()?;
        self.run_collective(Collective::Bcast { buf, root })
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
        self.live()?;
        self.run_collective(Collective::Reduce {
            send,
            recv,
            count,
            dtype: dtype.clone(),
            op: op.clone(),
            root,
        })
    }

    fn allreduce(
        &self,
        send: Option<RawBuf>,
        recv: RawBuf,
        count: usize,
        dtype: &Datatype,
        op: &Op,
    ) -> Result<()> {
        self.live()?;
        self.run_collective(Collective::Allreduce {
            send,
            recv,
            count,
            dtype: dtype.clone(),
            op: op.clone(),
        })
    }

    fn bcast_bytes(&self, data: Option<Vec<u8>>, root: i32) -> Result<Vec<u8>> {
        self.live()?;
        self.check_intra()?;
        self.check_root(root)?;
        self.coll.run(|c| coll::bcast_bytes(c, data, root))
    }

    fn gather_bytes(&self, data: &[u8], root: i32) -> Result<Option<Vec<Vec<u8>>>> {
        self.live()?;
        self.check_intra()?;
        self.check_root(root)?;
        self.coll.run(|c| coll::gather_bytes(c, data, root))
    }

    fn allgather_bytes(&self, data: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.live()?;
        self.check_intra()?;
        self.coll.run(|c| coll::allgather_bytes(c, data))
    }

    fn scatter_bytes(&self, data: Option<Vec<Vec<u8>>>, root: i32) -> Result<Vec<u8>> {
        self.live()?;
        self.check_intra()?;
        self.check_root(root)?;
        self.coll.run(|c| coll::scatter_bytes(c, data, root))
    }

    fn alltoall_bytes(&self, data: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        self.live()?;
        self.check_intra()?;
        self.coll.run(|c| coll::alltoall_bytes(c, data))
    }

    fn reduce_bytes(
        &self,
        data: Vec<u8>,
        root: Option<i32>,
        combine: &mut Combine<'_>,
    ) -> Result<Option<Vec<u8>>> {
        self.live()?;
        self.check_intra()?;
        if let Some(r) = root {
            self.check_root(r)?;
        }
        self.coll
            .run(|c| coll::reduce_bytes(c, data, root, combine))
    }

    fn dup(&self) -> Result<CommRef> {
        self.live()?;
        self.dup_comm()
    }

    fn split(&self, color: i32, key: i32) -> Result<Option<CommRef>> {
        self.live()?;
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

    fn failed(&self) -> Result<Vec<i32>> {
        Ok(self.core.failed_among(&self.all_job_ranks()))
    }

    fn ack_failed(&self, n: usize) -> Result<usize> {
        Ok(self.core.ack_failed(self.id, &self.all_job_ranks(), n))
    }

    fn iagree(&self, flag: RawBuf) -> Result<RequestRef> {
        self.iagree_comm(flag)
    }

    fn revoke(&self) -> Result<()> {
        self.core.revoke(self.id, &self.all_job_ranks());
        Ok(())
    }

    fn is_revoked(&self) -> bool {
        self.core.is_revoked(self.id)
    }

    fn create(&self, group: &[i32]) -> Result<Option<CommRef>> {
        self.live()?;
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
        self.live()?;
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
        self.live()?;
        self.create_from_groups_comm(local, local_leader, remote, remote_leader, tag)
    }

    fn merge(&self, high: bool) -> Result<CommRef> {
        self.live()?;
        self.merge_comm(high)
    }

    fn spawn(
        &self,
        root: i32,
        commands: Option<&[crate::backend::SpawnCommand]>,
    ) -> Result<CommRef> {
        self.live()?;
        self.spawn_comm(root, commands)
    }

    fn accept(&self, port: Option<&str>, root: i32) -> Result<CommRef> {
        self.live()?;
        self.accept_comm(port, root)
    }

    fn connect(&self, port: Option<&str>, root: i32) -> Result<CommRef> {
        self.live()?;
        self.connect_comm(port, root)
    }

    fn topology(&self) -> Option<Arc<Topology>> {
        self.topo.get().cloned()
    }

    fn set_topology(&self, topo: Topology) -> Result<()> {
        self.set_topology_comm(topo)
    }

    fn ineighbor_exchange(&self, sends: &[RawBuf], recvs: &[RawBuf]) -> Result<RequestRef> {
        self.live()?;
        self.ineighbor_exchange_comm(sends, recvs)
    }

    fn neighbor_exchange_bytes(&self, sends: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        self.live()?;
        self.neighbor_exchange_bytes_comm(sends)
    }

    fn iexchange(&self, sends: &[(i32, RawBuf)], recvs: &[(i32, RawBuf)]) -> Result<RequestRef> {
        self.live()?;
        self.iexchange_comm(sends, recvs)
    }

    fn exchange_bytes(
        &self,
        sends: Vec<(i32, Vec<u8>)>,
        recv_from: &[i32],
    ) -> Result<Vec<Vec<u8>>> {
        self.live()?;
        self.exchange_bytes_comm(sends, recv_from)
    }

    fn collective(&self, op: Collective) -> Result<()> {
        self.live()?;
        self.run_collective(op)
    }

    fn icollective(&self, op: Collective) -> Result<RequestRef> {
        self.live()?;
        self.start_collective(op)
    }

    fn scan_bytes(
        &self,
        data: Vec<u8>,
        exclusive: bool,
        combine: &mut Combine<'_>,
    ) -> Result<Option<Vec<u8>>> {
        self.live()?;
        self.check_intra()?;
        self.coll
            .run(|c| coll::scan_bytes(c, data, exclusive, combine))
    }

    fn win_create(&self, how: crate::backend::WinCreate) -> Result<crate::backend::WindowRef> {
        super::win::create(self, how)
    }
}

/// How a deadlock report names a communicator.
pub(crate) fn comm_label(id: u32, name: &str) -> String {
    match (id, name) {
        (_, n) if !n.is_empty() => n.to_string(),
        (0, _) => "MPI_COMM_WORLD".into(),
        (1, _) => "MPI_COMM_SELF".into(),
        (id, _) => format!("communicator #{id}"),
    }
}

/// "Recv(comm=MPI_COMM_WORLD, source=1, tag=5, 8 bytes)", waiting on
/// `peer_world`.
pub(crate) fn describe_call(
    comm: &str,
    op: &str,
    role: &str,
    peer: i32,
    peer_world: i32,
    tag: i32,
    bytes: Option<usize>,
) -> Blocked {
    let who = if peer == ANY_SOURCE {
        "ANY_SOURCE".to_string()
    } else {
        peer.to_string()
    };
    let tag = if tag == ANY_TAG {
        "ANY_TAG".to_string()
    } else {
        tag.to_string()
    };
    let size = bytes.map(|b| format!(", {b} bytes")).unwrap_or_default();
    Blocked {
        call: format!("{op}(comm={comm}, {role}={who}, tag={tag}{size})"),
        peer: peer_world,
        external: false,
    }
}

/// The request of a send that completed when it started (every eager
/// send): one shared, stateless value, so that such sends allocate none.
fn sent_request() -> RequestRef {
    static SENT: std::sync::OnceLock<RequestRef> = std::sync::OnceLock::new();
    SENT.get_or_init(|| Arc::new(CompletedRequest(Status::default())))
        .clone()
}
