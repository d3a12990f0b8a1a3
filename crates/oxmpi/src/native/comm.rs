//! Communicators of the native engine (MPI-4.1 chapters 3, 6 and 7).

use std::sync::{Arc, Mutex};

use crate::backend::{
    Collective, Combine, CommRef, Communicator, Message, RawBuf, RequestRef, SendMode, Status,
    ANY_SOURCE, ANY_TAG, PROC_NULL, TAG_UB, UNDEFINED,
};
use crate::coll::{self, Pt2Pt};
use crate::datatype::{Basic, Datatype};
use crate::error::{Error, Result};
use crate::op::{Op, Predefined};

use super::coll::{ChannelClaim, CollEngine};
use super::request::{CompletedRequest, Kind, NativeRequest};
use super::{abort_job, Blocked, Core, Target, Unexpected};

/// A communicator: an id (giving its two context ids) and its members.
pub struct NativeComm {
    core: Arc<Core>,
    id: u32,
    rank: i32,
    /// Job rank of each member, by communicator rank.
    members: Arc<[i32]>,
    name: Mutex<String>,
    /// Collective sequencing, worker and shared-memory channel.
    pub(super) coll: CollEngine,
}

impl NativeComm {
    pub(crate) fn new(core: Arc<Core>, id: u32, rank: i32, members: Vec<i32>, name: &str) -> Self {
        core.note_comm_id(id);
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
            name: Mutex::new(name.to_owned()),
        }
    }

    /// Gives a new communicator the shared-memory channel its members
    /// agreed on (see `agree_on_channel`).
    pub(crate) fn with_coll_channel(mut self, channel: Option<ChannelClaim>) -> Self {
        self.coll.set_channel(channel);
        self
    }

    #[inline]
    fn ctx_p2p(&self) -> u32 {
        self.id * 2
    }

    #[inline]
    #[allow(dead_code)] // used through `Pt2Pt` by communicator management
    fn ctx_coll(&self) -> u32 {
        Self::ctx_coll_of(self.id)
    }

    /// The collective context of communicator `id` (its algorithms'
    /// messages never match point-to-point ones).
    #[inline]
    fn ctx_coll_of(id: u32) -> u32 {
        id * 2 + 1
    }

    fn nmembers(&self) -> i32 {
        self.members.len() as i32
    }

    fn check_dest(&self, dest: i32) -> Result<()> {
        if dest < 0 || dest >= self.nmembers() {
            return Err(Error::Rank {
                rank: dest,
                size: self.nmembers(),
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
        let peer = match kind {
            Kind::Send { dest, .. } => dest,
            Kind::Recv { source, .. } => source,
        };
        Arc::new(NativeRequest {
            core: self.core.clone(),
            state,
            kind,
            comm_id: self.id,
            peer_world: self.peer_world(peer),
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
        let world = self.members[dest as usize] as usize;
        if let Some(req) = self
            .core
            .start_send(ctx, self.rank, world, tag, parts, mode)?
        {
            let bytes: usize = parts.iter().map(|p| p.len).sum();
            self.core.wait_described(|| req.is_done(), &|| {
                self.blocked(ctx, "Send", "dest", dest, tag, Some(bytes))
            })?;
            req.take()?;
        }
        Ok(())
    }

    fn recv_on(&self, ctx: u32, buf: RawBuf, src: i32, tag: i32) -> Result<Status> {
        let req = self.core.post_recv(ctx, src, tag, Target::Buf(buf));
        if !req.is_done() {
            self.core.wait_described(|| req.is_done(), &|| {
                self.blocked(ctx, "Recv", "source", src, tag, Some(buf.len))
            })?;
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
        if ctx == self.ctx_coll() {
            // A step of a collective: every member takes part, so no single
            // peer is to blame.
            return Blocked {
                call: format!("a collective on {name} ({op} step, {role}={who})"),
                peer: -1,
            };
        }
        describe_call(&name, op, role, peer, self.peer_world(peer), tag, bytes)
    }

    fn peer_world(&self, peer: i32) -> i32 {
        if peer >= 0 {
            self.members[peer as usize]
        } else {
            -1
        }
    }

    /// A new communicator id agreed on by every member: the largest id any
    /// member has not used yet. A process shares a context id with no other
    /// communicator it belongs to, which is all that matching needs.
    fn agree_on_id(&self) -> Result<u32> {
        let mine = self.core.local_next_comm_id().to_ne_bytes();
        let mut out = [0u8; 4];
        self.run_collective(Collective::Allreduce {
            send: Some(RawBuf::from_slice(&mine)),
            recv: RawBuf::from_mut(&mut out),
            count: 1,
            dtype: Datatype::new(Basic::U32),
            op: Op::Predefined(Predefined::Max),
        })?;
        let id = u32::from_ne_bytes(out);
        self.core.note_comm_id(id);
        Ok(id)
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
        let world = self.members[dest as usize] as usize;
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
        let source_world = self.peer_world(u.src);
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
        check_send_tag(tag)?;
        if dest == PROC_NULL {
            return Ok(Arc::new(CompletedRequest(Status::proc_null())));
        }
        self.check_dest(dest)?;
        let world = self.members[dest as usize] as usize;
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
        check_recv_tag(tag)?;
        if source == PROC_NULL {
            return Ok(Arc::new(CompletedRequest(Status::proc_null())));
        }
        self.check_source(source)?;
        let state = self
            .core
            .post_recv(self.ctx_p2p(), source, tag, Target::Owned);
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
        self.run_collective(Collective::Barrier)
    }

    fn bcast(&self, buf: RawBuf, root: i32) -> Result<()> {
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
        self.run_collective(Collective::Allreduce {
            send,
            recv,
            count,
            dtype: dtype.clone(),
            op: op.clone(),
        })
    }

    fn bcast_bytes(&self, data: Option<Vec<u8>>, root: i32) -> Result<Vec<u8>> {
        self.check_root(root)?;
        self.coll.run(|c| coll::bcast_bytes(c, data, root))
    }

    fn gather_bytes(&self, data: &[u8], root: i32) -> Result<Option<Vec<Vec<u8>>>> {
        self.check_root(root)?;
        self.coll.run(|c| coll::gather_bytes(c, data, root))
    }

    fn allgather_bytes(&self, data: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.coll.run(|c| coll::allgather_bytes(c, data))
    }

    fn scatter_bytes(&self, data: Option<Vec<Vec<u8>>>, root: i32) -> Result<Vec<u8>> {
        self.check_root(root)?;
        self.coll.run(|c| coll::scatter_bytes(c, data, root))
    }

    fn alltoall_bytes(&self, data: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        self.coll.run(|c| coll::alltoall_bytes(c, data))
    }

    fn reduce_bytes(
        &self,
        data: Vec<u8>,
        root: Option<i32>,
        combine: &mut Combine<'_>,
    ) -> Result<Option<Vec<u8>>> {
        if let Some(r) = root {
            self.check_root(r)?;
        }
        self.coll
            .run(|c| coll::reduce_bytes(c, data, root, combine))
    }

    fn dup(&self) -> Result<CommRef> {
        let id = self.agree_on_id()?;
        let channel = self.agree_on_channel(true)?;
        Ok(Arc::new(
            NativeComm::new(
                self.core.clone(),
                id,
                self.rank,
                self.members.to_vec(),
                &self.name(),
            )
            .with_coll_channel(channel),
        ))
    }

    fn split(&self, color: i32, key: i32) -> Result<Option<CommRef>> {
        if color < 0 && color != UNDEFINED {
            return Err(Error::Arg(format!(
                "split colour must be non-negative or UNDEFINED, got {color}"
            )));
        }
        let mut mine = [0u8; 8];
        mine[..4].copy_from_slice(&color.to_ne_bytes());
        mine[4..].copy_from_slice(&key.to_ne_bytes());
        let all = self.allgather_bytes(&mine)?;
        let id = self.agree_on_id()?;
        let channel = self.agree_on_channel(color != UNDEFINED)?;
        if color == UNDEFINED {
            return Ok(None);
        }
        let mut group: Vec<(i32, i32)> = all
            .iter()
            .enumerate()
            .filter_map(|(r, b)| {
                let c = i32::from_ne_bytes(b[..4].try_into().ok()?);
                let k = i32::from_ne_bytes(b[4..8].try_into().ok()?);
                (c == color).then_some((k, r as i32))
            })
            .collect();
        group.sort_unstable();
        let members: Vec<i32> = group
            .iter()
            .map(|&(_, r)| self.members[r as usize])
            .collect();
        let rank = group
            .iter()
            .position(|&(_, r)| r == self.rank)
            .expect("this rank is in its own colour") as i32;
        Ok(Some(Arc::new(
            NativeComm::new(self.core.clone(), id, rank, members, "").with_coll_channel(channel),
        )))
    }

    fn world_ranks(&self) -> Vec<i32> {
        self.members.to_vec()
    }

    fn abort(&self, code: i32) -> ! {
        abort_job(&self.core, code, "MPI_Abort")
    }

    fn collective(&self, op: Collective) -> Result<()> {
        self.run_collective(op)
    }

    fn icollective(&self, op: Collective) -> Result<RequestRef> {
        self.start_collective(op)
    }

    fn scan_bytes(
        &self,
        data: Vec<u8>,
        exclusive: bool,
        combine: &mut Combine<'_>,
    ) -> Result<Option<Vec<u8>>> {
        self.coll
            .run(|c| coll::scan_bytes(c, data, exclusive, combine))
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
    }
}
