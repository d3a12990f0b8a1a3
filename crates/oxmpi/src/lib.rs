//! oxmpi: an MPI runtime in Rust.
//!
//! The runtime that serves the `oxmpi` Python package, usable directly from
//! Rust. Start a job with the launcher (`mpiexec -n 4 ./my_program`), or run
//! the program alone for a world of one:
//!
//! ```no_run
//! let universe = oxmpi::init().expect("MPI init");
//! let world = universe.world();
//! let mut total = [0u64];
//! world.all_reduce(&[world.rank() as u64], &mut total, oxmpi::op::Predefined::Sum).unwrap();
//! println!("rank {} of {}: sum of ranks = {}", world.rank(), world.size(), total[0]);
//! ```
//!
//! Modules follow the chapters of the MPI standard. The [`backend`] traits
//! are the line between users of the runtime and its implementations.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod backend;
mod bootstrap;
mod coll;
pub mod comm;
pub mod datatype;
pub mod env;
pub mod error;
pub mod group;
mod native;
pub mod op;
pub mod process_manager;
mod shm;
mod sys;
pub mod system_mpi;
pub mod topo;

pub use comm::{Comm, Equivalence};
pub use env::{init, Universe};
pub use error::{Error, Result};
