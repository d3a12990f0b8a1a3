//! The system-MPI backend: oxmpi on the site's MPI library, for jobs
//! started by that MPI's launcher (hydra's mpiexec, Open MPI's mpirun,
//! Slurm's srun) and jobs that outgrow one machine.
//!
//! The library is loaded at run time with `dlopen`; building oxmpi needs no
//! MPI headers and links no MPI. Three binary interfaces are understood
//! (see [`abi`]): the MPI-5 standard ABI, MPICH's (MPICH, Intel MPI, Cray
//! MPICH, MVAPICH) and Open MPI's. The code is generic over the ABI, so
//! each call passes the library exactly the C types it expects.
//!
//! One file per concern: `library` finds and loads the library and tells
//! its ABI; `abi` holds each ABI's handles, constants and status layout;
//! `api` the function table; `engine` initialisation, error translation
//! and waiting; `comm` communicators and collectives; `request` requests,
//! matched probes and the posting-order receive queue; `op` reductions and
//! user-operation trampolines; `dynproc` spawning, ports, names and Join.

mod abi;
mod api;
mod comm;
mod dynproc;
mod engine;
pub mod library;
mod nbc;
mod op;
mod request;

use std::sync::Arc;

use crate::backend::Engine;
use crate::error::Result;

pub use library::{AbiKind, Loaded, Preference};

/// Starts the backend on `lib` (`MPI_Init_thread`). `reason` says why it
/// was chosen; `expected_size` is the world size the launcher announced.
pub(crate) fn init(
    lib: &'static Loaded,
    reason: &str,
    expected_size: Option<usize>,
) -> Result<Arc<dyn Engine>> {
    match lib.abi {
        AbiKind::Mpich => engine::init::<abi::Mpich>(lib, reason, expected_size),
        AbiKind::OpenMpi => engine::init::<abi::OpenMpi>(lib, reason, expected_size),
        AbiKind::Standard => engine::init::<abi::Standard>(lib, reason, expected_size),
    }
}
