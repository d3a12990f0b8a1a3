//! Environment management (MPI-4.1 chapter 11): initialisation, the choice
//! of backend, timers.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::backend::Engine;
use crate::comm::Comm;
use crate::error::Result;
use crate::native::NativeEngine;

/// The initialised runtime (what `MPI_Init` returns, in Rust terms).
#[derive(Clone)]
pub struct Universe {
    engine: Arc<dyn Engine>,
}

impl Universe {
    /// MPI_COMM_WORLD.
    pub fn world(&self) -> Comm {
        Comm::from_ref(self.engine.world())
    }

    /// MPI_COMM_SELF.
    pub fn self_comm(&self) -> Comm {
        Comm::from_ref(self.engine.self_comm())
    }

    /// The engine behind this universe.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }
}

/// Starts the runtime: the native shared-memory engine, bootstrapped from
/// the launcher's environment (or a world of one without a launcher).
pub fn init() -> Result<Universe> {
    Ok(Universe {
        engine: init_engine()?,
    })
}

/// Starts the runtime and returns its engine.
pub fn init_engine() -> Result<Arc<dyn Engine>> {
    let _ = epoch();
    Ok(Arc::new(NativeEngine::init()?))
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// MPI_Wtime: seconds since an arbitrary point fixed at start-up.
pub fn wtime() -> f64 {
    epoch().elapsed().as_secs_f64()
}

/// MPI_Wtick: the timer's resolution in seconds.
pub fn wtick() -> f64 {
    1e-9
}

/// The MPI standard version this runtime follows (MPI_Get_version).
pub const MPI_VERSION: (i32, i32) = (4, 1);
