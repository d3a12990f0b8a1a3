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
    pub const ERR_ACCESS: i32 = 20;
    pub const ERR_AMODE: i32 = 21;
    pub const ERR_BAD_FILE: i32 = 22;
    pub const ERR_CONVERSION: i32 = 23;
    pub const ERR_DUP_DATAREP: i32 = 24;
    pub const ERR_FILE_EXISTS: i32 = 25;
    pub const ERR_FILE_IN_USE: i32 = 26;
    pub const ERR_FILE: i32 = 27;
    pub const ERR_INFO: i32 = 28;
    pub const ERR_INFO_KEY: i32 = 29;
    pub const ERR_INFO_VALUE: i32 = 30;
    pub const ERR_INFO_NOKEY: i32 = 31;
    pub const ERR_IO: i32 = 32;
    pub const ERR_NAME: i32 = 33;
    pub const ERR_NO_MEM: i32 = 34;
    pub const ERR_NOT_SAME: i32 = 35;
    pub const ERR_NO_SPACE: i32 = 36;
    pub const ERR_NO_SUCH_FILE: i32 = 37;
    pub const ERR_PORT: i32 = 38;
    pub const ERR_QUOTA: i32 = 39;
    pub const ERR_READ_ONLY: i32 = 40;
    pub const ERR_SERVICE: i32 = 41;
    pub const ERR_SPAWN: i32 = 42;
    pub const ERR_UNSUPPORTED_DATAREP: i32 = 43;
    pub const ERR_UNSUPPORTED_OPERATION: i32 = 44;
    pub const ERR_WIN: i32 = 45;
    pub const ERR_BASE: i32 = 46;
    pub const ERR_LOCKTYPE: i32 = 47;
    pub const ERR_KEYVAL: i32 = 48;
    pub const ERR_RMA_CONFLICT: i32 = 49;
    pub const ERR_RMA_SYNC: i32 = 50;
    pub const ERR_SIZE: i32 = 51;
    pub const ERR_DISP: i32 = 52;
    pub const ERR_ASSERT: i32 = 53;
    pub const ERR_RMA_RANGE: i32 = 54;
    pub const ERR_RMA_ATTACH: i32 = 55;
    pub const ERR_RMA_SHARED: i32 = 56;
    pub const ERR_RMA_FLAVOR: i32 = 57;
    pub const ERR_SESSION: i32 = 58;
    pub const ERR_PROC_ABORTED: i32 = 59;
    pub const ERR_VALUE_TOO_LARGE: i32 = 60;
    pub const ERR_ERRHANDLER: i32 = 61;
    pub const ERR_ABI: i32 = 62;
    pub const ERR_PROC_FAILED: i32 = 101;
    pub const ERR_PROC_FAILED_PENDING: i32 = 102;
    pub const ERR_REVOKED: i32 = 103;
    pub const ERR_LASTCODE: i32 = 0x3fffffff;

    /// Every predefined class with its name and standard description.
    pub const ALL: &[(&str, i32, &str)] = &[
        ("SUCCESS", SUCCESS, "no error"),
        ("ERR_BUFFER", ERR_BUFFER, "invalid buffer pointer"),
        ("ERR_COUNT", ERR_COUNT, "invalid count argument"),
        ("ERR_TYPE", ERR_TYPE, "invalid datatype"),
        ("ERR_TAG", ERR_TAG, "invalid tag"),
        ("ERR_COMM", ERR_COMM, "invalid communicator"),
        ("ERR_RANK", ERR_RANK, "invalid rank"),
        ("ERR_ROOT", ERR_ROOT, "invalid root"),
        ("ERR_GROUP", ERR_GROUP, "invalid group"),
        ("ERR_OP", ERR_OP, "invalid operation"),
        ("ERR_TOPOLOGY", ERR_TOPOLOGY, "invalid topology"),
        ("ERR_DIMS", ERR_DIMS, "invalid dimension argument"),
        ("ERR_ARG", ERR_ARG, "invalid argument"),
        ("ERR_UNKNOWN", ERR_UNKNOWN, "unknown error"),
        ("ERR_TRUNCATE", ERR_TRUNCATE, "message truncated"),
        ("ERR_OTHER", ERR_OTHER, "other error"),
        ("ERR_INTERN", ERR_INTERN, "internal error"),
        ("ERR_IN_STATUS", ERR_IN_STATUS, "error code is in status"),
        ("ERR_PENDING", ERR_PENDING, "pending request"),
        ("ERR_REQUEST", ERR_REQUEST, "invalid request"),
        ("ERR_ACCESS", ERR_ACCESS, "permission denied"),
        ("ERR_AMODE", ERR_AMODE, "invalid file access mode"),
        ("ERR_BAD_FILE", ERR_BAD_FILE, "invalid file name"),
        ("ERR_CONVERSION", ERR_CONVERSION, "data conversion failed"),
        (
            "ERR_DUP_DATAREP",
            ERR_DUP_DATAREP,
            "data representation already defined",
        ),
        ("ERR_FILE_EXISTS", ERR_FILE_EXISTS, "file exists"),
        ("ERR_FILE_IN_USE", ERR_FILE_IN_USE, "file in use"),
        ("ERR_FILE", ERR_FILE, "invalid file"),
        ("ERR_INFO", ERR_INFO, "invalid info"),
        ("ERR_INFO_KEY", ERR_INFO_KEY, "invalid info key"),
        ("ERR_INFO_VALUE", ERR_INFO_VALUE, "invalid info value"),
        ("ERR_INFO_NOKEY", ERR_INFO_NOKEY, "info key not defined"),
        ("ERR_IO", ERR_IO, "I/O error"),
        ("ERR_NAME", ERR_NAME, "invalid service name"),
        ("ERR_NO_MEM", ERR_NO_MEM, "out of memory"),
        (
            "ERR_NOT_SAME",
            ERR_NOT_SAME,
            "collective argument not identical",
        ),
        ("ERR_NO_SPACE", ERR_NO_SPACE, "not enough space"),
        ("ERR_NO_SUCH_FILE", ERR_NO_SUCH_FILE, "no such file"),
        ("ERR_PORT", ERR_PORT, "invalid port name"),
        ("ERR_QUOTA", ERR_QUOTA, "quota exceeded"),
        (
            "ERR_READ_ONLY",
            ERR_READ_ONLY,
            "read-only file or file system",
        ),
        ("ERR_SERVICE", ERR_SERVICE, "invalid service"),
        ("ERR_SPAWN", ERR_SPAWN, "cannot spawn processes"),
        (
            "ERR_UNSUPPORTED_DATAREP",
            ERR_UNSUPPORTED_DATAREP,
            "unsupported data representation",
        ),
        (
            "ERR_UNSUPPORTED_OPERATION",
            ERR_UNSUPPORTED_OPERATION,
            "unsupported operation",
        ),
        ("ERR_WIN", ERR_WIN, "invalid window"),
        ("ERR_BASE", ERR_BASE, "invalid base address"),
        ("ERR_LOCKTYPE", ERR_LOCKTYPE, "invalid lock type"),
        ("ERR_KEYVAL", ERR_KEYVAL, "invalid keyval"),
        (
            "ERR_RMA_CONFLICT",
            ERR_RMA_CONFLICT,
            "conflicting RMA accesses",
        ),
        ("ERR_RMA_SYNC", ERR_RMA_SYNC, "wrong RMA synchronization"),
        ("ERR_SIZE", ERR_SIZE, "invalid size"),
        ("ERR_DISP", ERR_DISP, "invalid displacement"),
        ("ERR_ASSERT", ERR_ASSERT, "invalid assert"),
        ("ERR_RMA_RANGE", ERR_RMA_RANGE, "RMA target out of range"),
        (
            "ERR_RMA_ATTACH",
            ERR_RMA_ATTACH,
            "memory cannot be attached",
        ),
        ("ERR_RMA_SHARED", ERR_RMA_SHARED, "memory cannot be shared"),
        ("ERR_RMA_FLAVOR", ERR_RMA_FLAVOR, "wrong window flavor"),
        ("ERR_SESSION", ERR_SESSION, "invalid session"),
        ("ERR_PROC_ABORTED", ERR_PROC_ABORTED, "peer process aborted"),
        (
            "ERR_VALUE_TOO_LARGE",
            ERR_VALUE_TOO_LARGE,
            "value too large",
        ),
        ("ERR_ERRHANDLER", ERR_ERRHANDLER, "invalid error handler"),
        ("ERR_ABI", ERR_ABI, "ABI mismatch"),
        ("ERR_PROC_FAILED", ERR_PROC_FAILED, "process failed"),
        (
            "ERR_PROC_FAILED_PENDING",
            ERR_PROC_FAILED_PENDING,
            "process failed, request pending",
        ),
        ("ERR_REVOKED", ERR_REVOKED, "communicator revoked"),
    ];
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
    /// A receive from any source could match a message of a process that
    /// has failed, and its communicator has not acknowledged that yet.
    #[error("process failure pending: {0}")]
    ProcFailedPending(String),
    /// The communicator was revoked (`Comm.Revoke`, by any member).
    #[error("communicator revoked: {0}")]
    Revoked(String),
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
    #[error("invalid group: {0}")]
    Group(String),
    #[error("invalid topology: {0}")]
    Topology(String),
    #[error("invalid dimensions: {0}")]
    Dims(String),
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
            Error::ProcFailedPending(_) => ERR_PROC_FAILED_PENDING,
            Error::Revoked(_) => ERR_REVOKED,
            Error::Interrupted | Error::Callback(_) => ERR_OTHER,
            Error::Bootstrap(_) | Error::Os { .. } => ERR_OTHER,
            Error::Intern(_) => ERR_INTERN,
            Error::Group(_) => ERR_GROUP,
            Error::Topology(_) => ERR_TOPOLOGY,
            Error::Dims(_) => ERR_DIMS,
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
