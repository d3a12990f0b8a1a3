//! Completion state shared by a request handle and the progress engine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::{RawBuf, Request, Status};
use crate::error::{Error, Result};

use super::{Core, Watch};

/// Written once by whoever completes the operation, read by its waiter.
pub(crate) struct ReqState {
    done: AtomicBool,
    outcome: Mutex<(Status, Option<Error>)>,
    /// The message of an owned-buffer receive.
    data: Mutex<Option<Vec<u8>>>,
}

impl ReqState {
    pub(crate) fn new() -> Arc<ReqState> {
        Arc::new(ReqState {
            done: AtomicBool::new(false),
            outcome: Mutex::new((Status::default(), None)),
            data: Mutex::new(None),
        })
    }

    /// Allocates the buffer of an owned-buffer receive and returns where to
    /// write. The heap block does not move when the Vec is stored, so the
    /// pointer stays valid until `take_data`, which happens only after
    /// completion.
    pub(crate) fn alloc_data(&self, len: usize) -> RawBuf {
        let mut v = vec![0u8; len];
        let raw = RawBuf::from_mut(&mut v);
        *self.data.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
        raw
    }

    pub(crate) fn take_data(&self) -> Option<Vec<u8>> {
        self.data.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub(crate) fn complete(&self, status: Status, err: Option<Error>) {
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = (status, err);
        // Release pairs with the Acquire in `is_done`: the outcome is
        // visible to whoever sees `done`.
        self.done.store(true, Ordering::Release);
    }

    #[inline]
    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// The status, leaving a pending error in place.
    pub(crate) fn status(&self) -> Status {
        self.outcome.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// The outcome; an error is handed out once, later calls see only the
    /// status (whose `error` field still carries the class).
    pub(crate) fn take(&self) -> Result<Status> {
        let mut g = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        match g.1.take() {
            Some(e) => Err(e),
            None => Ok(g.0),
        }
    }
}

/// What a native request is waiting for (also what a deadlock report says).
pub(crate) enum Kind {
    Send {
        dest: i32,
        tag: i32,
        bytes: usize,
    },
    Recv {
        source: i32,
        tag: i32,
        bytes: Option<usize>,
    },
}

/// A request handle of the native engine.
pub(crate) struct NativeRequest {
    pub(crate) core: Arc<Core>,
    pub(crate) state: Arc<ReqState>,
    pub(crate) kind: Kind,
    /// Communicator id, and the job rank of the peer (-1 if any).
    pub(crate) comm_id: u32,
    pub(crate) peer_world: i32,
    /// A receive from ANY_SOURCE: the possible senders' job ranks, so that
    /// a wait fails (ERR_PROC_FAILED_PENDING, the request staying posted,
    /// as ULFM has it) while one of them has failed unacknowledged.
    pub(crate) any_of: Option<Arc<[i32]>>,
}

impl Request for NativeRequest {
    fn test(&self) -> Result<Option<Status>> {
        if !self.state.is_done() {
            self.core.progress();
            if !self.state.is_done() {
                return Ok(None);
            }
        }
        self.state.take().map(Some)
    }

    fn wait(&self) -> Result<Status> {
        let st = &self.state;
        let watch = match &self.any_of {
            Some(slots) => Watch::AnyOf {
                comm: self.comm_id,
                slots,
            },
            None => Watch::Peer {
                comm: self.comm_id,
                rank: self.peer_world,
            },
        };
        self.core.wait_described(
            || st.is_done(),
            &|| {
                let comm = super::comm::comm_label(self.comm_id, "");
                let (op, role, peer, tag, bytes) = match self.kind {
                    Kind::Send { dest, tag, bytes } => {
                        ("Wait(Isend", "dest", dest, tag, Some(bytes))
                    }
                    Kind::Recv { source, tag, bytes } => {
                        ("Wait(Irecv", "source", source, tag, bytes)
                    }
                };
                let mut b =
                    super::comm::describe_call(&comm, op, role, peer, self.peer_world, tag, bytes);
                b.call.push(')');
                b
            },
            watch,
        )?;
        st.take()
    }

    fn is_complete(&self) -> bool {
        self.state.is_done()
    }

    fn take_data(&self) -> Option<Vec<u8>> {
        if !self.state.is_done() {
            return None;
        }
        self.state.take_data()
    }

    fn get_status(&self) -> Option<Status> {
        if !self.state.is_done() {
            self.core.progress();
        }
        self.state.is_done().then(|| self.state.status())
    }

    fn cancel(&self) -> Result<()> {
        if let Kind::Recv { .. } = self.kind {
            self.core.cancel_recv(&self.state);
        }
        // Sends that left this process cannot be recalled; MPI allows a
        // cancel to fail, and the status then says "not cancelled".
        Ok(())
    }
}

/// A request that completed when it was made (e.g. a send to PROC_NULL).
pub(crate) struct CompletedRequest(pub(crate) Status);

impl Request for CompletedRequest {
    fn test(&self) -> Result<Option<Status>> {
        Ok(Some(self.0))
    }
    fn wait(&self) -> Result<Status> {
        Ok(self.0)
    }
    fn is_complete(&self) -> bool {
        true
    }
    fn cancel(&self) -> Result<()> {
        Ok(())
    }
    fn get_status(&self) -> Option<Status> {
        Some(self.0)
    }
}
