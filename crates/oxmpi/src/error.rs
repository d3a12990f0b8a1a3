//! One error type for the whole runtime. Every variant maps to an MPI error
//! class (MPI-4.1 §9.4), which the Python layer turns into `MPI.Exception`.

/// MPI error classes, numbered as MPICH numbers them (mpi4py programs compare
/// against the `MPI.ERR_*` constants, never against literals, so any fixed
/// numbering works; MPICH's keeps `oxmpi` familiar to its users).
#[allow(missing_docs)]
pub mod class {
    pub const SUCCESS: i32 = 0;
    pub const ERR_BUFFER: i32 = 1;
    pub const ERR_COUNT: i32 = 2;
    pub const ERR_TYPE: i32 = 3;
    pub const ERR_TAG: i32 = 4;
    pub const ERR_COMM: i32 = 5;
    pub const ERR_RANK: i32 = 6;
    pub const ERR_ROOT: i32 = 7;
    pub const ERR_GROUP: i32 = 8;
    pub const ERR_OP: i32 = 9;
    pub const ERR_TOPOLOGY: i32 = 10;
    pub const ERR_DIMS: i32 = 11;
    pub const ERR_ARG: i32 = 12;
    pub const ERR_UNKNOWN: i32 = 13;
    pub const ERR_TRUNCATE: i32 = 14;
    pub const ERR_OTHER: i32 = 15;
    pub const ERR_INTERN: i32 = 16;
    pub const ERR_IN_STATUS: i32 = 17;
    pub const ERR_PENDING: i32 = 18;
    pub const ERR_REQUEST: i32 = 19;
    pub const ERR_PROC_FAILED: i32 = 101;
    pub const ERR_LASTCODE: i32 = 0x3fffffff;
}

/// Errors raised by the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A received message was longer than the receive buffer.
    #[error("message truncated: a {received}-byte message does not fit the {capacity}-byte receive buffer")]
    Truncate { received: usize, capacity: usize },
    #[error("invalid rank {rank} (communicator size {size})")]
    Rank { rank: i32, size: i32 },
    #[error("invalid root {root} (communicator size {size})")]
    Root { root: i32, size: i32 },
    #[error("invalid tag {0}: tags must be in 0..=TAG_UB (or ANY_TAG for receives)")]
    Tag(i32),
    #[error("invalid count: {0}")]
    Count(String),
    #[error("invalid buffer: {0}")]
    Buffer(String),
    #[error("invalid datatype: {0}")]
    Type(String),
    #[error("invalid operation: {0}")]
    Op(String),
    #[error("invalid argument: {0}")]
    Arg(String),
    #[error("invalid communicator: {0}")]
    Comm(String),
    #[error("invalid request: {0}")]
    Request(String),
    #[error("not implemented by oxmpi: {0}")]
    NotImplemented(String),
    /// A peer process died or the job is being torn down.
    #[error("process failure: {0}")]
    ProcFailed(String),
    /// The wait was interrupted by the caller's check (e.g. Ctrl-C in Python).
    #[error("interrupted")]
    Interrupted,
    /// An error raised by a user callback (e.g. a Python reduction function);
    /// the payload travels back unchanged to the layer that raised it.
    #[error("error in user callback")]
    Callback(Box<dyn std::any::Any + Send>),
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
    #[error("{context}: {source}")]
    Os {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Intern(String),
    /// An error reported by the system MPI library, already translated to
    /// oxmpi's error class; `message` is the library's own error string.
    #[error("{message}")]
    Mpi { class: i32, message: String },
}

impl Error {
    /// The MPI error class of this error.
    pub fn class(&self) -> i32 {
        use class::*;
        match self {
            Error::Truncate { .. } => ERR_TRUNCATE,
            Error::Rank { .. } => ERR_RANK,
            Error::Root { .. } => ERR_ROOT,
            Error::Tag(_) => ERR_TAG,
            Error::Count(_) => ERR_COUNT,
            Error::Buffer(_) => ERR_BUFFER,
            Error::Type(_) => ERR_TYPE,
            Error::Op(_) => ERR_OP,
            Error::Arg(_) => ERR_ARG,
            Error::Comm(_) => ERR_COMM,
            Error::Request(_) => ERR_REQUEST,
            Error::NotImplemented(_) => ERR_OTHER,
            Error::ProcFailed(_) => ERR_PROC_FAILED,
            Error::Interrupted | Error::Callback(_) => ERR_OTHER,
            Error::Bootstrap(_) | Error::Os { .. } => ERR_OTHER,
            Error::Intern(_) => ERR_INTERN,
            Error::Mpi { class, .. } => *class,
        }
    }

    pub(crate) fn os(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        Error::Os {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
