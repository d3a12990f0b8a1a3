//! Neighbour collectives of the native engine (MPI-4.1 §8.6): one round of
//! point-to-point on the communicator's neighbourhood context (`4id+3`),
//! so they never match user messages or other collectives, and several
//! can be in flight at once (they match in the order they were started).

use std::sync::Arc;

use crate::backend::{RawBuf, Request, RequestRef, SendMode, Status, PROC_NULL};
use crate::error::{Error, Result};
use crate::topo::Topology;

use super::comm::{ctx, NativeComm};
use super::request::ReqState;
use super::{Core, Target};

/// Tag of a neighbour message: general graphs match in order (one tag);
/// on a Cartesian grid the direction is part of the tag, so that with a
/// periodic dimension of extent 1 or 2 (both neighbours the same process)
/// each block still reaches the right slot: the block a process sends
/// towards -1 along `d` is what its -1 neighbour receives from +1.
fn send_tag(topo: &Topology, i: usize) -> i32 {
    match topo {
        Topology::Cart { .. } => i as i32,
        _ => 0,
    }
}

fn recv_tag(topo: &Topology, j: usize) -> i32 {
    match topo {
        // Source 2d is the neighbour at -1: it sent towards +1 (tag 2d+1).
        Topology::Cart { .. } => (j ^ 1) as i32,
        _ => 0,
    }
}

/// Several sends and receives completing together.
struct MultiRequest {
    core: Arc<Core>,
    parts: Vec<Arc<ReqState>>,
}

impl MultiRequest {
    fn all_done(&self) -> bool {
        self.parts.iter().all(|p| p.is_done())
    }

    fn outcome(&self) -> Result<Status> {
        let mut first_err = None;
        for p in &self.parts {
            if let Err(e) = p.take() {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(Status::default()),
        }
    }
}

impl Request for MultiRequest {
    fn test(&self) -> Result<Option<Status>> {
        if !self.all_done() {
            self.core.progress();
            if !self.all_done() {
                return Ok(None);
            }
        }
        self.outcome().map(Some)
    }

    fn wait(&self) -> Result<Status> {
        self.core.wait_until(|| self.all_done())?;
        self.outcome()
    }

    fn is_complete(&self) -> bool {
        self.all_done()
    }

    fn get_status(&self) -> Option<Status> {
        if !self.all_done() {
            self.core.progress();
            if !self.all_done() {
                return None;
            }
        }
        // The first failed part's class, as `wait` would report it; the
        // parts keep their errors for a later `wait`.
        let error = self
            .parts
            .iter()
            .map(|p| p.status().error)
            .find(|&e| e != 0)
            .unwrap_or(0);
        Some(Status {
            error,
            ..Status::default()
        })
    }

    fn cancel(&self) -> Result<()> {
        // Collective operations cannot be cancelled (MPI-4.1 §3.8.4).
        Ok(())
    }
}

/// Tag of the rounds of `iexchange` (distinct from the neighbour tags,
/// which are below 2 * (number of dimensions)).
const TAG_EXCHANGE: i32 = 0x4f58_4558;

impl NativeComm {
    /// Starts one round of sends and receives on the neighbourhood context:
    /// (peer, tag, buffer) each. On error nothing stays posted.
    fn start_round(
        &self,
        sends: &[(i32, i32, RawBuf)],
        recvs: &[(i32, i32, RawBuf)],
    ) -> Result<RequestRef> {
        let n = self.peers().len() as i32;
        for &(r, _, _) in sends.iter().chain(recvs) {
            if r != PROC_NULL && (r < 0 || r >= n) {
                return Err(Error::Rank { rank: r, size: n });
            }
        }
        let context = ctx(self.id, 3);
        let mut parts = Vec::with_capacity(sends.len() + recvs.len());
        // Receives first, so that messages find them posted.
        for &(src, tag, buf) in recvs {
            if src != PROC_NULL {
                parts.push(self.post(context, src, tag, Target::Buf(buf)));
            }
        }
        for &(dst, tag, buf) in sends {
            if dst == PROC_NULL {
                continue;
            }
            let sent = self.core.start_send(
                context,
                self.rank,
                self.peer_world(dst),
                tag,
                &[buf],
                SendMode::Standard,
            );
            match sent {
                Ok(Some(s)) => parts.push(s),
                Ok(None) => {}
                Err(e) => {
                    // Nothing may keep writing into the caller's buffers
                    // once we return.
                    for p in &parts {
                        self.core.cancel_recv(p);
                    }
                    return Err(e);
                }
            }
        }
        Ok(Arc::new(MultiRequest {
            core: self.core.clone(),
            parts,
        }))
    }

    /// One blocking round with blobs of any length: returns one blob per
    /// receive (empty for PROC_NULL).
    fn round_bytes(
        &self,
        sends: &[(i32, i32, Vec<u8>)],
        recvs: &[(i32, i32)],
    ) -> Result<Vec<Vec<u8>>> {
        let n = self.peers().len() as i32;
        for &(r, _) in recvs {
            if r != PROC_NULL && (r < 0 || r >= n) {
                return Err(Error::Rank { rank: r, size: n });
            }
        }
        let context = ctx(self.id, 3);
        let posted: Vec<Option<Arc<ReqState>>> = recvs
            .iter()
            .map(|&(src, tag)| {
                (src != PROC_NULL).then(|| self.post(context, src, tag, Target::Owned))
            })
            .collect();
        let raw: Vec<(i32, i32, RawBuf)> = sends
            .iter()
            .map(|(d, t, b)| (*d, *t, RawBuf::from_slice(b)))
            .collect();
        let sent = self.start_round(&raw, &[]);
        let sent = match sent {
            Ok(s) => s,
            Err(e) => {
                for p in posted.iter().flatten() {
                    self.core.cancel_recv(p);
                }
                return Err(e);
            }
        };
        self.core
            .wait_until(|| sent.is_complete() && posted.iter().flatten().all(|r| r.is_done()))?;
        sent.wait()?;
        posted
            .into_iter()
            .map(|r| match r {
                None => Ok(Vec::new()),
                Some(r) => {
                    r.take()?;
                    Ok(r.take_data().unwrap_or_default())
                }
            })
            .collect()
    }

    /// Starts a neighbour exchange: `sends[i]` to the i-th destination,
    /// `recvs[j]` from the j-th source of this process's neighbourhood.
    pub(super) fn ineighbor_exchange_comm(
        &self,
        sends: &[RawBuf],
        recvs: &[RawBuf],
    ) -> Result<RequestRef> {
        let topo = self.topology_or_err()?;
        let (sources, destinations) = topo.neighbors(self.rank)?;
        if sends.len() != destinations.len() || recvs.len() != sources.len() {
            return Err(Error::Arg(format!(
                "neighbour exchange with {} send and {} receive blocks for {} destinations \
                 and {} sources",
                sends.len(),
                recvs.len(),
                destinations.len(),
                sources.len()
            )));
        }
        let s: Vec<(i32, i32, RawBuf)> = destinations
            .iter()
            .zip(sends)
            .enumerate()
            .map(|(i, (&d, &b))| (d, send_tag(&topo, i), b))
            .collect();
        let r: Vec<(i32, i32, RawBuf)> = sources
            .iter()
            .zip(recvs)
            .enumerate()
            .map(|(j, (&src, &b))| (src, recv_tag(&topo, j), b))
            .collect();
        self.start_round(&s, &r)
    }

    /// Blocking neighbour exchange of blobs of any length (for pickled
    /// objects): one blob per destination in, one per source out (empty
    /// for a PROC_NULL source).
    pub(super) fn neighbor_exchange_bytes_comm(&self, sends: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        let topo = self.topology_or_err()?;
        let (sources, destinations) = topo.neighbors(self.rank)?;
        if sends.len() != destinations.len() {
            return Err(Error::Arg(format!(
                "neighbour exchange with {} blocks for {} destinations",
                sends.len(),
                destinations.len()
            )));
        }
        let s: Vec<(i32, i32, Vec<u8>)> = destinations
            .iter()
            .zip(sends)
            .enumerate()
            .map(|(i, (&d, b))| (d, send_tag(&topo, i), b))
            .collect();
        let r: Vec<(i32, i32)> = sources
            .iter()
            .enumerate()
            .map(|(j, &src)| (src, recv_tag(&topo, j)))
            .collect();
        self.round_bytes(&s, &r)
    }

    fn topology_or_err(&self) -> Result<Arc<Topology>> {
        self.topo
            .get()
            .cloned()
            .ok_or_else(|| Error::Topology("the communicator has no topology".into()))
    }

    /// One round of point-to-point for collectives composed above the
    /// runtime (intercommunicator collectives): peers are ranks of the
    /// remote group on an intercommunicator.
    pub(super) fn iexchange_comm(
        &self,
        sends: &[(i32, RawBuf)],
        recvs: &[(i32, RawBuf)],
    ) -> Result<RequestRef> {
        let s: Vec<_> = sends.iter().map(|&(p, b)| (p, TAG_EXCHANGE, b)).collect();
        let r: Vec<_> = recvs.iter().map(|&(p, b)| (p, TAG_EXCHANGE, b)).collect();
        self.start_round(&s, &r)
    }

    /// `iexchange` with blobs of any length, blocking.
    pub(super) fn exchange_bytes_comm(
        &self,
        sends: Vec<(i32, Vec<u8>)>,
        recv_from: &[i32],
    ) -> Result<Vec<Vec<u8>>> {
        let s: Vec<_> = sends
            .into_iter()
            .map(|(p, b)| (p, TAG_EXCHANGE, b))
            .collect();
        let r: Vec<_> = recv_from.iter().map(|&p| (p, TAG_EXCHANGE)).collect();
        self.round_bytes(&s, &r)
    }
}
