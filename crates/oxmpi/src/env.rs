//! Environment management (MPI-4.1 chapter 11): initialisation, the choice
//! of backend, timers.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::backend::Engine;
use crate::comm::Comm;
use crate::error::{Error, Result};
use crate::native::NativeEngine;
use crate::system_mpi;

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
/// oxmpi's launcher (or a world of one without a launcher), or the site's
/// MPI library under another MPI's launcher (see [`choose_backend`]).
pub fn init() -> Result<Universe> {
    Ok(Universe {
        engine: init_engine()?,
    })
}

/// Starts the runtime and returns its engine: the backend
/// [`choose_backend`] picks.
pub fn init_engine() -> Result<Arc<dyn Engine>> {
    let _ = epoch();
    let choice = choose_backend()?;
    let _ = CHOICE_REASON.set(choice.reason.clone());
    match choice.backend {
        Backend::Native => Ok(Arc::new(NativeEngine::init()?)),
        Backend::System { library, size } => system_mpi::init(library, &choice.reason, size),
    }
}

/// The runtime that serves a process.
pub enum Backend {
    /// oxmpi's own shared-memory runtime.
    Native,
    /// The site's MPI library; `size` is the world size its launcher
    /// announced, checked after initialisation.
    System {
        library: &'static system_mpi::Loaded,
        size: Option<usize>,
    },
}

/// Which backend serves this process, and why.
pub struct BackendChoice {
    pub backend: Backend,
    pub reason: String,
}

static CHOICE_REASON: OnceLock<String> = OnceLock::new();

/// Why the running engine was chosen (for `Get_library_version`).
pub fn backend_reason() -> Option<&'static str> {
    CHOICE_REASON.get().map(String::as_str)
}

fn tried_list(tried: &[String]) -> String {
    if tried.is_empty() {
        format!(
            "{}, {} and {} on the dynamic loader's search path",
            system_mpi::library::SONAME_STANDARD,
            system_mpi::library::SONAME_MPICH,
            system_mpi::library::SONAME_OPENMPI
        )
    } else {
        tried.join("; ")
    }
}

/// Picks the backend, without starting it:
///
/// * `OXMPI_BACKEND=native` or `system` decides;
/// * otherwise, a process started by another MPI's launcher (hydra's
///   mpiexec, Open MPI's mpirun, Slurm's srun, ...) runs on that MPI's
///   library, found through `OXMPI_LIBMPI`, the dynamic loader's search
///   path or the launcher's installation; where none is found, a launcher
///   that passed a PMI-1 descriptor (hydra) is joined by the native
///   runtime (one node), and any other is an error that says what to do;
/// * a process started by oxmpi's launcher, or by none, runs natively.
pub fn choose_backend() -> Result<BackendChoice> {
    use crate::bootstrap::foreign_launcher;
    use system_mpi::Preference;
    let requested = std::env::var("OXMPI_BACKEND")
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let launcher = foreign_launcher();
    let native = |reason: String| BackendChoice {
        backend: Backend::Native,
        reason,
    };
    match requested.as_str() {
        "native" => Ok(native("OXMPI_BACKEND=native".into())),
        "system" => {
            let pref = launcher.as_ref().map_or(Preference::Any, |l| l.preference);
            match system_mpi::library::locate(pref) {
                Ok(library) => Ok(BackendChoice {
                    backend: Backend::System {
                        library,
                        size: launcher.as_ref().and_then(|l| l.size),
                    },
                    reason: match &launcher {
                        Some(l) => format!("OXMPI_BACKEND=system; started by {}", l.who),
                        None => "OXMPI_BACKEND=system".into(),
                    },
                }),
                Err(nf) => Err(Error::Bootstrap(format!(
                    "OXMPI_BACKEND=system, but no MPI library was found (tried: {}); set \
                     OXMPI_LIBMPI to the path of the MPI library (libmpi.so)",
                    tried_list(&nf.tried)
                ))),
            }
        }
        "" | "auto" => {
            let Some(l) = launcher else {
                return Ok(native(if std::env::var_os("OXMPI_LAUNCHER").is_some() {
                    "started by oxmpi's launcher".into()
                } else {
                    "no MPI launcher: a world of one".into()
                }));
            };
            match system_mpi::library::locate(l.preference) {
                Ok(library) => Ok(BackendChoice {
                    backend: Backend::System {
                        library,
                        size: l.size,
                    },
                    reason: format!("started by {}", l.who),
                }),
                Err(nf) if nf.explicit => Err(Error::Bootstrap(format!(
                    "this process was started by {}, and OXMPI_LIBMPI names an MPI library \
                     that cannot be used: {}",
                    l.who,
                    tried_list(&nf.tried)
                ))),
                Err(nf) if l.pmi_fd => Ok(native(format!(
                    "started by {}, but no MPI library was found (tried: {}): the native \
                     runtime joins the launcher's PMI-1 service (one node only)",
                    l.who,
                    tried_list(&nf.tried)
                ))),
                Err(nf) => Err(Error::Bootstrap(format!(
                    "this process was started by {}; oxmpi runs such jobs on the site's MPI \
                     library, but none was found (tried: {}). Set OXMPI_LIBMPI to the \
                     libmpi.so of the MPI installation whose launcher you use (or add its lib \
                     directory to LD_LIBRARY_PATH), or start the program with oxmpi's own \
                     launcher (`mpiexec -n N python script.py` from the oxmpi package) so \
                     that it does not run as N independent copies of rank 0",
                    l.who,
                    tried_list(&nf.tried)
                ))),
            }
        }
        other => Err(Error::Arg(format!(
            "OXMPI_BACKEND={other:?}: expected native, system or auto"
        ))),
    }
}

/// Lines for `oxmpi info`: the backend this process would use, and the
/// system MPI library found for runs under another MPI's launcher.
pub fn backend_report() -> Vec<String> {
    let mut lines = Vec::new();
    match choose_backend() {
        Ok(BackendChoice {
            backend: Backend::Native,
            reason,
        }) => lines.push(format!("backend: native (shared memory): {reason}")),
        Ok(BackendChoice {
            backend: Backend::System { library, .. },
            reason,
        }) => lines.push(format!(
            "backend: system MPI ({}, {}): {reason}",
            library.abi.describe(),
            library.path
        )),
        Err(e) => lines.push(format!("backend: none: {e}")),
    }
    let pref =
        crate::bootstrap::foreign_launcher().map_or(system_mpi::Preference::Any, |l| l.preference);
    match system_mpi::library::locate(pref) {
        Ok(lib) => lines.push(format!(
            "system MPI library: {} ({}: {}), found through {}; used when another MPI's \
             launcher starts the ranks (OXMPI_BACKEND=native|system overrides)",
            lib.path,
            lib.abi.describe(),
            lib.version_line(),
            lib.found_by
        )),
        Err(nf) => lines.push(format!(
            "system MPI library: none found (tried: {}); set OXMPI_LIBMPI to use one",
            tried_list(&nf.tried)
        )),
    }
    lines
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
