//! The system-MPI engine: `MPI_Init_thread`, error translation, waiting,
//! and the `Engine` trait.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::backend::{
    CommRef, Communicator, Engine, Status, ANY_SOURCE, ANY_TAG, PROC_NULL, TAG_UB,
};
use crate::error::{Error, Result};

use super::abi::{Abi, Handles, MpiCount, RawStatus};
use super::api::Api;
use super::comm::SystemComm;
use super::dynproc::{self, DynProc};
use super::library::Loaded;
use super::request::RecvQueue;

/// A check a blocked wait runs now and then (Python's Ctrl-C).
type InterruptCheck = Box<dyn Fn() -> Result<()> + Send + Sync>;

/// How often a blocked wait runs the interrupt check (Ctrl-C in Python).
const INTERRUPT_EVERY: Duration = Duration::from_millis(50);

/// The loaded library and the process-wide state of the backend.
pub(crate) struct Core<A: Abi> {
    pub api: Api<A>,
    pub h: Handles<A::H>,
    pub lib: &'static Loaded,
    /// Receives waiting for their message in posting order (request.rs).
    pub recvq: RecvQueue<A>,
    finalized: AtomicBool,
    interrupt: RwLock<Option<InterruptCheck>>,
    /// The library's MPI_TAG_UB (read once MPI is initialised).
    tag_ub: AtomicI32,
    /// Whether receives into user buffers are posted to the library before
    /// their message is known. Not with Open MPI: Open MPI 5.0 crashes
    /// (SIGSEGV in ob1's rget) when a large message arrives for a posted
    /// receive that is too small; there every receive is matched with a
    /// probe first, and a message that does not fit is truncated by oxmpi.
    pub prepost_receives: bool,
    /// A private duplicate of MPI_COMM_WORLD through which the leaders of
    /// MPI_Intercomm_create talk (the peer communicator in the library's
    /// terms), so that their messages never meet a user's.
    pub bridge: OnceLock<A::H>,
    /// Nonblocking reductions with a user operation in flight. The library
    /// runs the operation (a Python function, which needs the GIL) on
    /// whichever thread drives its progress; the receive queue's driver
    /// thread stays out of the library meanwhile, lest it wait for the GIL
    /// while the thread holding it waits for the library.
    pub user_op_collectives: AtomicUsize,
}

impl<A: Abi> Core<A> {
    pub fn is_finalized(&self) -> bool {
        self.finalized.load(Ordering::Acquire)
    }

    /// The largest valid tag.
    #[inline]
    pub fn tag_ub(&self) -> i32 {
        self.tag_ub.load(Ordering::Relaxed)
    }

    /// An integer attribute of MPI_COMM_WORLD (a predefined keyval).
    fn world_attr(&self, keyval: c_int) -> Option<i32> {
        let mut value: *mut c_int = std::ptr::null_mut();
        let mut flag: c_int = 0;
        // SAFETY: for a predefined keyval MPI stores a pointer to the int
        // attribute in `value`.
        let rc = unsafe {
            (self.api.MPI_Comm_get_attr)(
                self.h.comm_world,
                keyval,
                (&mut value as *mut *mut c_int).cast::<c_void>(),
                &mut flag,
            )
        };
        if rc == 0 && flag != 0 && !value.is_null() {
            // SAFETY: the library's own attribute value, valid while MPI is.
            Some(unsafe { *value })
        } else {
            None
        }
    }

    /// `Ok` for MPI_SUCCESS, else the library's error in oxmpi's terms.
    #[inline]
    pub fn check(&self, rc: c_int, what: &str) -> Result<()> {
        if rc == 0 {
            Ok(())
        } else {
            Err(self.error(rc, what))
        }
    }

    /// Translates an error code: its class (in oxmpi's numbering) and the
    /// library's message.
    #[cold]
    pub fn error(&self, rc: c_int, what: &str) -> Error {
        let mut lib_class: c_int = rc;
        // SAFETY: MPI_Error_class writes one int.
        if unsafe { (self.api.MPI_Error_class)(rc, &mut lib_class) } != 0 {
            lib_class = rc;
        }
        // MPI_MAX_ERROR_STRING: 512 (MPICH, standard ABI), 256 (Open MPI).
        let mut buf = [0 as c_char; 1024];
        let mut len: c_int = 0;
        // SAFETY: `buf` holds MPI_MAX_ERROR_STRING characters of any ABI.
        let msg = if unsafe { (self.api.MPI_Error_string)(rc, buf.as_mut_ptr(), &mut len) } == 0 {
            let len = (len.max(0) as usize).min(buf.len());
            let bytes: Vec<u8> = buf[..len].iter().map(|&c| c as u8).collect();
            String::from_utf8_lossy(&bytes).trim().to_owned()
        } else {
            format!("MPI error code {rc}")
        };
        Error::Mpi {
            class: A::class_to_oxmpi(lib_class),
            message: format!("{what}: {msg}"),
        }
    }

    /// A rank argument in the library's numbering.
    #[inline]
    pub fn lib_source(source: i32) -> c_int {
        if source == ANY_SOURCE {
            A::ANY_SOURCE
        } else {
            source
        }
    }

    /// A tag argument in the library's numbering.
    #[inline]
    pub fn lib_tag(tag: i32) -> c_int {
        if tag == ANY_TAG {
            A::ANY_TAG
        } else {
            tag
        }
    }

    /// The length in bytes of the message a status describes (a probe's,
    /// or one received through a derived datatype).
    pub fn message_bytes(&self, st: &A::Status) -> Result<usize> {
        let mut n: MpiCount = 0;
        // SAFETY: a status filled by the library; one MPI_Count out.
        let rc = unsafe {
            match self.api.MPI_Get_count_c {
                Some(f) => f(st, self.h.byte, &mut n),
                None => (self.api.MPI_Get_elements_x)(st, self.h.byte, &mut n),
            }
        };
        self.check(rc, "MPI_Get_count")?;
        Ok(n.max(0) as usize)
    }

    /// oxmpi's status for a completed receive or probe.
    pub fn status(&self, st: &A::Status, count: usize) -> Status {
        let source = st.source();
        let tag = st.tag();
        Status {
            source: if source == A::PROC_NULL {
                PROC_NULL
            } else {
                source
            },
            tag: if tag == A::ANY_TAG { ANY_TAG } else { tag },
            error: 0,
            count,
            cancelled: false,
        }
    }

    /// The status of a completed receive, made as MPI_BYTEs (whose count
    /// is an int) or through a derived datatype (messages past INT_MAX
    /// bytes, counted with the large-count calls).
    pub fn recv_status(&self, st: &A::Status, derived: bool) -> Result<Status> {
        let count = if !derived {
            let mut n: c_int = 0;
            // SAFETY: a status filled by the library; one int out.
            let rc = unsafe { (self.api.MPI_Get_count)(st, self.h.byte, &mut n) };
            self.check(rc, "MPI_Get_count")?;
            n.max(0) as usize
        } else {
            self.message_bytes(st)?
        };
        Ok(self.status(st, count))
    }

    /// Blocks until `done()` holds, driving the receive queue and testing
    /// (`done` calls MPI_Test: the only way to learn that an MPI request
    /// completed). Runs the interrupt check now and then.
    pub fn wait_until(&self, mut done: impl FnMut() -> bool) -> Result<()> {
        let mut spins: u32 = 0;
        let mut last_check = Instant::now();
        loop {
            if self.recvq.pending() {
                self.recvq.drive(self);
            }
            if done() {
                return Ok(());
            }
            spins = spins.wrapping_add(1);
            if spins & 127 == 0 {
                // Let a rank that shares our core run.
                std::thread::yield_now();
                if last_check.elapsed() >= INTERRUPT_EVERY {
                    last_check = Instant::now();
                    self.check_interrupt()?;
                }
            } else {
                std::hint::spin_loop();
            }
        }
    }

    fn check_interrupt(&self) -> Result<()> {
        let guard = self.interrupt.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(check) => check(),
            None => Ok(()),
        }
    }

    /// MPI_Abort on `comm`; never returns.
    pub fn abort(&self, comm: A::H, code: i32) -> ! {
        // SAFETY: a valid communicator; MPI_Abort ends the job.
        unsafe { (self.api.MPI_Abort)(comm, code) };
        std::process::exit(if code == 0 { 1 } else { code & 0xff })
    }
}

/// The engine: the library plus the predefined communicators.
pub(crate) struct SystemEngine<A: Abi> {
    core: Arc<Core<A>>,
    world: CommRef,
    self_comm: CommRef,
    /// Why this backend and library were chosen (for Get_library_version).
    reason: String,
    thread_level_note: &'static str,
    /// MPI_Comm_get_parent's intercommunicator, if spawned.
    parent: Option<CommRef>,
    dynproc: DynProc,
}

/// Starts the system-MPI backend on `lib`, whose ABI is `A`.
/// `expected_size` is the world size the launcher announced, if known.
pub(crate) fn init<A: Abi>(
    lib: &'static Loaded,
    reason: &str,
    expected_size: Option<usize>,
) -> Result<Arc<dyn Engine>> {
    let api = Api::<A>::load(lib)?;
    let h = A::handles(lib)?;
    let core = Arc::new(Core {
        api,
        h,
        lib,
        recvq: RecvQueue::new(),
        finalized: AtomicBool::new(false),
        interrupt: RwLock::new(None),
        tag_ub: AtomicI32::new(TAG_UB),
        prepost_receives: !lib.version.contains("Open MPI"),
        bridge: OnceLock::new(),
        user_op_collectives: AtomicUsize::new(0),
    });
    let api = &core.api;
    let mut initialized: c_int = 0;
    // SAFETY: one int out; allowed before MPI_Init.
    unsafe { (api.MPI_Initialized)(&mut initialized) };
    let mut provided: c_int = A::THREAD_MULTIPLE;
    if initialized == 0 {
        // SAFETY: MPI allows NULL argc/argv; `provided` is one int out.
        let rc = unsafe {
            (api.MPI_Init_thread)(
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                A::THREAD_MULTIPLE,
                &mut provided,
            )
        };
        if rc != 0 {
            return Err(Error::Bootstrap(format!(
                "MPI_Init_thread in {} failed with error code {rc}",
                lib.path
            )));
        }
    }
    // Errors come back as return codes, which oxmpi turns into exceptions,
    // instead of aborting the job. New communicators inherit the handler.
    for comm in [core.h.comm_world, core.h.comm_self] {
        // SAFETY: predefined handles of this library.
        let rc = unsafe { (api.MPI_Comm_set_errhandler)(comm, core.h.errors_return) };
        core.check(rc, "MPI_Comm_set_errhandler")?;
    }
    let mut bridge = core.h.comm_null;
    // SAFETY: a predefined communicator; `bridge` is an out-pointer.
    let rc = unsafe { (api.MPI_Comm_dup)(core.h.comm_world, &mut bridge) };
    core.check(rc, "MPI_Comm_dup")?;
    let _ = core.bridge.set(bridge);
    if let Some(ub) = core.world_attr(A::KEYVAL_TAG_UB).filter(|&ub| ub > 0) {
        core.tag_ub.store(ub, Ordering::Relaxed);
    }
    let world = SystemComm::predefined(core.clone(), core.h.comm_world, "MPI_COMM_WORLD")?;
    if let Some(n) = expected_size {
        if world.size() as usize != n {
            return Err(Error::Bootstrap(format!(
                "the launcher started {n} ranks but {} ({}) sees a world of {}: it is not the \
                 MPI library of this launcher; set OXMPI_LIBMPI to the libmpi of the MPI \
                 installation whose mpiexec/srun you use",
                lib.path,
                lib.version_line(),
                world.size()
            )));
        }
    }
    let self_comm = SystemComm::predefined(core.clone(), core.h.comm_self, "MPI_COMM_SELF")?;
    let multiple = provided >= A::THREAD_MULTIPLE;
    if multiple {
        core.recvq.start_driver(core.clone());
    }
    let parent = dynproc::parent(&core)?;
    Ok(Arc::new(SystemEngine {
        parent,
        dynproc: DynProc::new(),
        world: Arc::new(world),
        self_comm: Arc::new(self_comm),
        reason: reason.to_owned(),
        thread_level_note: if multiple {
            "MPI_THREAD_MULTIPLE"
        } else {
            "thread support below MPI_THREAD_MULTIPLE: call MPI from one thread at a time"
        },
        core,
    }))
}

impl<A: Abi> Engine for SystemEngine<A> {
    fn world(&self) -> CommRef {
        self.world.clone()
    }

    fn self_comm(&self) -> CommRef {
        self.self_comm.clone()
    }

    fn processor_name(&self) -> String {
        // MPI_MAX_PROCESSOR_NAME: 128 (MPICH), 256 (Open MPI, standard ABI).
        let mut buf = [0 as c_char; 1024];
        let mut len: c_int = 0;
        // SAFETY: `buf` holds MPI_MAX_PROCESSOR_NAME characters of any ABI.
        let rc = unsafe { (self.core.api.MPI_Get_processor_name)(buf.as_mut_ptr(), &mut len) };
        if rc != 0 {
            return crate::sys::hostname();
        }
        let len = (len.max(0) as usize).min(buf.len());
        let bytes: Vec<u8> = buf[..len].iter().map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn library_version(&self) -> String {
        let lib = self.core.lib;
        format!(
            "oxmpi {} (system-MPI backend: {} at {}, found through {}; {}; {})\n{}",
            env!("CARGO_PKG_VERSION"),
            lib.abi.describe(),
            lib.path,
            lib.found_by,
            self.reason,
            self.thread_level_note,
            lib.version
        )
    }

    fn universe_size(&self) -> i32 {
        match self.core.world_attr(A::KEYVAL_UNIVERSE_SIZE) {
            Some(n) if n > 0 => n,
            _ => self.world.size(),
        }
    }

    fn tag_ub(&self) -> i32 {
        self.core.tag_ub()
    }

    fn parent(&self) -> Option<CommRef> {
        self.parent.clone()
    }

    fn open_port(&self) -> Result<String> {
        self.dynproc.open_port(&self.core)
    }

    fn close_port(&self, port: &str) -> Result<()> {
        self.dynproc.close_port(&self.core, port)
    }

    fn publish_name(&self, service: &str, port: Option<&str>) -> Result<()> {
        self.dynproc.publish(&self.core, service, port)
    }

    fn lookup_name(&self, service: &str) -> Result<String> {
        self.dynproc.lookup(&self.core, service)
    }

    fn join(&self, fd: i32) -> Result<CommRef> {
        self.dynproc.join(&self.core, fd)
    }

    fn finalize_waits_for_peers(&self) -> bool {
        // MPICH's MPI_Finalize ends with a PMI barrier, Open MPI's with a
        // PMIx fence.
        true
    }

    fn progress_until(&self, done: &mut dyn FnMut() -> bool) -> Result<()> {
        self.core.wait_until(done)
    }

    fn progress(&self) {
        if self.core.recvq.pending() {
            self.core.recvq.drive(&self.core);
        }
    }

    fn set_interrupt_check(&self, check: Box<dyn Fn() -> Result<()> + Send + Sync>) {
        *self
            .core
            .interrupt
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(check);
    }

    fn abort(&self, code: i32, msg: &str) -> ! {
        if !msg.is_empty() {
            eprintln!("oxmpi: abort: {msg}");
        }
        self.core.abort(self.core.h.comm_world, code)
    }

    fn finalize(&self) -> Result<()> {
        if self.core.is_finalized() {
            return Ok(());
        }
        self.core.recvq.stop_driver();
        let mut done: c_int = 0;
        // SAFETY: one int out.
        unsafe { (self.core.api.MPI_Finalized)(&mut done) };
        // Communicators and ops still alive are not freed from now on.
        self.core.finalized.store(true, Ordering::Release);
        if done == 0 {
            // SAFETY: every oxmpi call into MPI has returned (the engine is
            // finalised once, at exit or by MPI.Finalize).
            let rc = unsafe { (self.core.api.MPI_Finalize)() };
            self.core.check(rc, "MPI_Finalize")?;
        }
        Ok(())
    }
}
