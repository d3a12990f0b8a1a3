//! `MPI.Comm` and `MPI.Intracomm`: queries and communicator management
//! (MPI-4.1 chapter 7): duplication, splitting, creation from groups,
//! comparison, freeing, names, info hints, cached attributes and error
//! handlers. Point-to-point calls live in `p2p.rs`, collectives in
//! `coll.rs`, topologies in `topo.rs`, intercommunicators in
//! `intercomm.rs`.
//!
//! A Python communicator object holds a handle (`CommRef`); several Python
//! objects may hold one handle (`MPI.Comm(comm)`). What MPI keeps per
//! handle besides the runtime's communicator (attributes, error handler,
//! info) lives in a table keyed by the handle (see [`HandleState`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyType;
use pyo3::PyClassInitializer;

use oxmpi::backend::{CommRef, Communicator, RawBuf, Request, RequestRef, SendMode, Status};
use oxmpi::error::class;
use oxmpi::group::{Comparison, Group};

use crate::attr::{self, AttrKind, Attrs};
use crate::buffer::{self, Msg};
use crate::engine::{blocking, engine};
use crate::errhandler::{self, Errh, PyErrhandler};
use crate::errors::{mpi_error, IntoPy};
use crate::group::PyGroup;
use crate::handle;
use crate::info::PyInfo;

/// `MPI.IN_PLACE`.
#[pyclass(module = "oxmpi.MPI", name = "InPlaceType", extends = crate::memory::Constant, frozen)]
pub struct InPlace;

#[pymethods]
impl InPlace {
    #[new]
    pub fn new() -> (Self, crate::memory::Constant) {
        (InPlace, crate::memory::Constant::new("IN_PLACE", -1))
    }
}

pub(crate) fn is_in_place(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_instance_of::<InPlace>()
}

/// A communicator (COMM_NULL when `inner` is None).
#[pyclass(module = "oxmpi.MPI", name = "Comm", subclass, weakref)]
pub struct PyComm {
    pub inner: Option<CommRef>,
}

/// An intracommunicator.
#[pyclass(module = "oxmpi.MPI", name = "Intracomm", extends = PyComm, subclass)]
pub struct PyIntracomm;

/// Wraps a runtime communicator as an `Intracomm` (the predefined ones).
pub fn new_intracomm(py: Python<'_>, c: CommRef) -> PyResult<Py<PyIntracomm>> {
    Py::new(
        py,
        PyClassInitializer::from(PyComm { inner: Some(c) }).add_subclass(PyIntracomm),
    )
}

/// Wraps a runtime communicator in the class its kind calls for:
/// Intercomm, Cartcomm, Graphcomm, Distgraphcomm or Intracomm.
pub fn wrap_comm(py: Python<'_>, c: CommRef) -> PyResult<Py<PyAny>> {
    let m = py.import("oxmpi.MPI")?;
    let cls = if c.is_inter() {
        "Intercomm"
    } else {
        match c.topology().map(|t| t.kind()) {
            Some(oxmpi::topo::kind::CART) => "Cartcomm",
            Some(oxmpi::topo::kind::GRAPH) => "Graphcomm",
            Some(oxmpi::topo::kind::DIST_GRAPH) => "Distgraphcomm",
            _ => "Intracomm",
        }
    };
    let cls = m.getattr(cls)?.cast_into::<PyType>()?;
    instance_of(&cls, Some(c))
}

/// A new object of class `cls` (a subclass of Comm) holding `c`.
pub fn instance_of(cls: &Bound<'_, PyType>, c: Option<CommRef>) -> PyResult<Py<PyAny>> {
    let obj = cls.call0()?;
    obj.cast::<PyComm>()?.borrow_mut().inner = c;
    Ok(obj.unbind())
}

impl PyComm {
    pub(crate) fn c(&self) -> PyResult<&CommRef> {
        self.inner.as_ref().ok_or_else(|| {
            Python::attach(|py| {
                mpi_error(
                    py,
                    oxmpi::error::class::ERR_COMM,
                    "invalid communicator: COMM_NULL",
                )
            })
        })
    }
}

/// Sends parts, waiting (GIL released) only if the send cannot complete at
/// once.
pub(crate) fn send_parts(
    py: Python<'_>,
    c: &CommRef,
    parts: &[RawBuf],
    dest: i32,
    tag: i32,
    mode: SendMode,
) -> PyResult<()> {
    let req = c.isend(parts, dest, tag, mode).py()?;
    if !req.is_complete() {
        blocking(py, move || req.wait())?;
    }
    Ok(())
}

/// Waits for a request (GIL released unless already complete).
pub(crate) fn wait_req(py: Python<'_>, req: RequestRef) -> PyResult<Status> {
    if req.is_complete() {
        return req.wait().py();
    }
    blocking(py, move || req.wait())
}

pub(crate) fn recv_buf_parse<'py>(buf: &Bound<'py, PyAny>) -> PyResult<Msg> {
    buffer::parse(buf, true)
}

// ------------------------------------------------------------ handle state

/// What MPI keeps per communicator handle besides the runtime object.
pub struct HandleState {
    pub attrs: Attrs,
    pub errhandler: Arc<Errh>,
    pub info: Vec<(String, String)>,
}

impl HandleState {
    fn new(errhandler: Arc<Errh>) -> HandleState {
        HandleState {
            attrs: Attrs::default(),
            errhandler,
            info: Vec::new(),
        }
    }
}

type StateTable = HashMap<usize, (Weak<dyn Communicator>, HandleState)>;

/// Handle states by address of the runtime communicator. Each entry keeps
/// a `Weak` to its communicator, which keeps the address from being reused
/// by another communicator while the entry exists; entries of dropped
/// communicators are swept out from time to time.
fn states() -> &'static Mutex<StateTable> {
    static S: OnceLock<Mutex<StateTable>> = OnceLock::new();
    S.get_or_init(Default::default)
}

fn key(c: &CommRef) -> usize {
    Arc::as_ptr(c) as *const () as usize
}

/// Runs `f` on the state of `c` (created with ERRORS_RETURN if new). `f`
/// must not call back into Python code that could reach this table.
pub fn with_state<R>(c: &CommRef, f: impl FnOnce(&mut HandleState) -> R) -> R {
    let mut t = states().lock().unwrap_or_else(|e| e.into_inner());
    let entry = t.entry(key(c)).or_insert_with(|| {
        (
            Arc::downgrade(c),
            HandleState::new(errhandler::errors_return()),
        )
    });
    f(&mut entry.1)
}

/// Gives a new communicator its initial state: the error handler of the
/// communicator it was made from (MPI-4.1 §9.3), and info hints.
fn init_state(new: &CommRef, parent: Option<&CommRef>, info: Vec<(String, String)>) {
    let errh = parent
        .map(|p| with_state(p, |s| s.errhandler.clone()))
        .unwrap_or_else(errhandler::errors_return);
    let mut t = states().lock().unwrap_or_else(|e| e.into_inner());
    if t.len() > 256 && t.len().is_power_of_two() {
        t.retain(|_, (w, _)| w.strong_count() > 0);
    }
    let mut st = HandleState::new(errh);
    st.info = info;
    t.insert(key(new), (Arc::downgrade(new), st));
}

fn drop_state(c: &CommRef) -> Option<HandleState> {
    states()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&key(c))
        .map(|(_, s)| s)
}

// ---------------------------------------------------------------- helpers

/// A request that is complete when made (the nonblocking forms that run
/// to completion at once).
pub struct DoneRequest;

impl Request for DoneRequest {
    fn test(&self) -> oxmpi::Result<Option<Status>> {
        Ok(Some(Status::default()))
    }
    fn wait(&self) -> oxmpi::Result<Status> {
        Ok(Status::default())
    }
    fn is_complete(&self) -> bool {
        true
    }
    fn cancel(&self) -> oxmpi::Result<()> {
        Ok(())
    }
    fn get_status(&self) -> Option<Status> {
        Some(Status::default())
    }
}

/// A completed `MPI.Request`.
pub fn done_request(py: Python<'_>) -> PyResult<Py<crate::request::PyRequest>> {
    Py::new(
        py,
        crate::request::PyRequest::new(Arc::new(DoneRequest), crate::request::Payload::None),
    )
}

/// The job ranks of a group argument.
fn group_members(group: &Bound<'_, PyGroup>) -> PyResult<Vec<i32>> {
    Ok(group.borrow().get()?.members().to_vec())
}

/// MPI_Comm_compare.
fn compare(a: &CommRef, b: &CommRef) -> i32 {
    if Arc::ptr_eq(a, b) {
        return Comparison::Ident as i32;
    }
    if a.is_inter() != b.is_inter() {
        return Comparison::Unequal as i32;
    }
    let cmp = |x: Vec<i32>, y: Vec<i32>| match (Group::new(x), Group::new(y)) {
        (Ok(x), Ok(y)) => x.compare(&y),
        _ => Comparison::Unequal,
    };
    let local = cmp(a.world_ranks(), b.world_ranks());
    let remote = if a.is_inter() {
        cmp(a.remote_world_ranks(), b.remote_world_ranks())
    } else {
        Comparison::Ident
    };
    match (local, remote) {
        (Comparison::Ident, Comparison::Ident) => Comparison::Congruent as i32,
        (Comparison::Unequal, _) | (_, Comparison::Unequal) => Comparison::Unequal as i32,
        _ => Comparison::Similar as i32,
    }
}

/// Split types (MPI_COMM_TYPE_*).
pub mod split_type {
    pub const SHARED: i32 = 1;
    pub const HW_UNGUIDED: i32 = 2;
    pub const HW_GUIDED: i32 = 3;
    pub const RESOURCE_GUIDED: i32 = 4;
}

/// Gives `new` its state and wraps it in `cls` (or the class its kind
/// calls for when `cls` is None).
pub fn adopt(
    py: Python<'_>,
    new: CommRef,
    parent: Option<&CommRef>,
    info: Vec<(String, String)>,
    cls: Option<&Bound<'_, PyType>>,
) -> PyResult<Py<PyAny>> {
    init_state(&new, parent, info);
    match cls {
        Some(cls) => instance_of(cls, Some(new)),
        None => wrap_comm(py, new),
    }
}

/// COMM_NULL as an object of class `cls`.
pub fn null_of(cls: &Bound<'_, PyType>) -> PyResult<Py<PyAny>> {
    instance_of(cls, None)
}

pub(crate) fn class_named<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    Ok(py
        .import("oxmpi.MPI")?
        .getattr(name)?
        .cast_into::<PyType>()?)
}

/// The class mpi4py gives results of Create/Split: Intracomm or Intercomm.
fn base_class<'py>(py: Python<'py>, c: &CommRef) -> PyResult<Bound<'py, PyType>> {
    class_named(
        py,
        if c.is_inter() {
            "Intercomm"
        } else {
            "Intracomm"
        },
    )
}

#[pymethods]
impl PyIntracomm {
    #[new]
    #[pyo3(signature = (comm=None))]
    fn new(comm: Option<&Bound<'_, PyComm>>) -> PyResult<(PyIntracomm, PyComm)> {
        let inner = comm.and_then(|c| c.borrow().inner.clone());
        if inner.as_ref().is_some_and(|c| c.is_inter()) {
            return Err(PyTypeError::new_err("expecting an intracommunicator"));
        }
        Ok((PyIntracomm, PyComm { inner }))
    }

    #[pyo3(signature = (group, tag=0))]
    fn Create_group(
        slf: &Bound<'_, Self>,
        group: &Bound<'_, PyGroup>,
        tag: i32,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let c = slf.as_super().borrow().c()?.clone();
        let members = group_members(group)?;
        let c2 = c.clone();
        let new = blocking(py, move || c2.create_group(&members, tag))?;
        adopt(
            py,
            new,
            Some(&c),
            Vec::new(),
            Some(&class_named(py, "Intracomm")?),
        )
    }

    #[classmethod]
    #[pyo3(signature = (group, stringtag="org.mpi4py", info=None, errhandler=None))]
    fn Create_from_group(
        cls: &Bound<'_, PyType>,
        group: &Bound<'_, PyGroup>,
        stringtag: &str,
        info: Option<&Bound<'_, PyAny>>,
        errhandler: Option<&Bound<'_, PyErrhandler>>,
    ) -> PyResult<Py<PyAny>> {
        let py = cls.py();
        let world = engine(py)?.world();
        let members = group_members(group)?;
        let tag = string_tag(stringtag);
        let new = blocking(py, move || world.create_group(&members, tag))?;
        let items = PyInfo::items_of(info)?;
        let obj = adopt(
            py,
            new.clone(),
            None,
            items,
            Some(&class_named(py, "Intracomm")?),
        )?;
        if let Some(e) = errhandler {
            let h = e.borrow().get()?.clone();
            with_state(&new, |s| s.errhandler = h);
        }
        Ok(obj)
    }

    #[pyo3(signature = (local_leader, peer_comm, remote_leader, tag=0))]
    fn Create_intercomm(
        slf: &Bound<'_, Self>,
        local_leader: i32,
        peer_comm: &Bound<'_, PyComm>,
        remote_leader: i32,
        tag: i32,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let c = slf.as_super().borrow().c()?.clone();
        let peer = peer_comm.borrow().inner.clone();
        let c2 = c.clone();
        let new = blocking(py, move || {
            c2.create_intercomm(local_leader, peer.as_deref(), remote_leader, tag)
        })?;
        adopt(
            py,
            new,
            Some(&c),
            Vec::new(),
            Some(&class_named(py, "Intercomm")?),
        )
    }
}

/// A tag from MPI-4's string tags (Create_from_group): a stable hash.
pub(crate) fn string_tag(s: &str) -> i32 {
    // FNV-1a, folded into the non-negative tag range.
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    (h & 0x7fff_ffff) as i32
}

#[pymethods]
impl PyComm {
    #[new]
    #[pyo3(signature = (comm=None))]
    fn new(comm: Option<&Bound<'_, PyAny>>) -> PyResult<PyComm> {
        match comm {
            None => Ok(PyComm { inner: None }),
            Some(c) => {
                let c = c
                    .cast::<PyComm>()
                    .map_err(|_| PyTypeError::new_err("expected a Comm"))?;
                Ok(PyComm {
                    inner: c.borrow().inner.clone(),
                })
            }
        }
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: pyo3::basic::CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let me = slf.borrow();
        let same = other
            .cast::<PyComm>()
            .ok()
            .map(|o| handle::same(me.inner.as_ref(), o.borrow().inner.as_ref()));
        handle::richcmp(slf.as_any(), same, op)
    }

    fn __hash__(&self) -> usize {
        self.inner.as_ref().map_or(0, key)
    }

    fn __bool__(&self) -> bool {
        self.inner.is_some()
    }

    /// COMM_NULL, COMM_SELF and COMM_WORLD pickle by name; other
    /// communicators cannot be pickled.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let name = {
            let me = slf.borrow();
            match &me.inner {
                None => Some("COMM_NULL"),
                Some(c) => {
                    let e = engine(py)?;
                    if Arc::ptr_eq(c, &e.world()) {
                        Some("COMM_WORLD")
                    } else if Arc::ptr_eq(c, &e.self_comm()) {
                        Some("COMM_SELF")
                    } else {
                        None
                    }
                }
            }
        };
        handle::reduce(slf.as_any(), name)
    }

    // ------------------------------------------------------------ queries

    fn Get_rank(&self) -> PyResult<i32> {
        Ok(self.c()?.rank())
    }

    fn Get_size(&self) -> PyResult<i32> {
        Ok(self.c()?.size())
    }

    #[getter]
    fn rank(&self) -> PyResult<i32> {
        self.Get_rank()
    }

    #[getter]
    fn size(&self) -> PyResult<i32> {
        self.Get_size()
    }

    fn Get_group(&self) -> PyResult<PyGroup> {
        Ok(PyGroup::wrap(Group::new(self.c()?.world_ranks()).py()?))
    }

    #[getter]
    fn group(&self) -> PyResult<PyGroup> {
        self.Get_group()
    }

    fn Compare(&self, comm: &Bound<'_, PyComm>) -> PyResult<i32> {
        let a = self.c()?;
        let o = comm.borrow();
        Ok(compare(a, o.c()?))
    }

    fn Get_name(&self) -> PyResult<String> {
        Ok(self
            .inner
            .as_ref()
            .map(|c| c.name())
            .unwrap_or_else(|| "MPI_COMM_NULL".into()))
    }

    fn Set_name(&self, name: &str) -> PyResult<()> {
        self.c()?.set_name(name);
        Ok(())
    }

    #[getter(name)]
    fn name_prop(&self) -> PyResult<String> {
        self.Get_name()
    }

    #[setter(name)]
    fn set_name_prop(&self, name: &str) -> PyResult<()> {
        self.Set_name(name)
    }

    fn Is_inter(&self) -> PyResult<bool> {
        Ok(self.c()?.is_inter())
    }

    fn Is_intra(&self) -> PyResult<bool> {
        Ok(!self.c()?.is_inter())
    }

    #[getter]
    fn is_inter(&self) -> PyResult<bool> {
        self.Is_inter()
    }

    #[getter]
    fn is_intra(&self) -> PyResult<bool> {
        self.Is_intra()
    }

    fn Get_topology(&self) -> PyResult<i32> {
        Ok(self
            .c()?
            .topology()
            .map_or(oxmpi::backend::UNDEFINED, |t| t.kind()))
    }

    #[getter]
    fn topology(&self) -> PyResult<i32> {
        self.Get_topology()
    }

    #[getter]
    fn is_topo(&self) -> PyResult<bool> {
        Ok(self.c()?.topology().is_some())
    }

    // ------------------------------------------------- communicator mgmt

    #[pyo3(signature = (info=None))]
    fn Dup(slf: &Bound<'_, Self>, info: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let items = match info {
            Some(_) => Some(PyInfo::items_of(info)?),
            None => None,
        };
        dup_impl(slf, items)
    }

    fn Dup_with_info(slf: &Bound<'_, Self>, info: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        dup_impl(slf, Some(PyInfo::items_of(Some(info))?))
    }

    /// MPI_Comm_idup. The agreement on the new communicator's context runs
    /// when called (like a blocking Dup), and the request is complete when
    /// returned: a program that relies on Idup returning before the other
    /// members call it would block here.
    #[pyo3(signature = (info=None))]
    fn Idup(
        slf: &Bound<'_, Self>,
        info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let py = slf.py();
        let comm = PyComm::Dup(slf, info)?;
        Ok((comm, done_request(py)?.into_any()))
    }

    fn Idup_with_info(
        slf: &Bound<'_, Self>,
        info: &Bound<'_, PyAny>,
    ) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        PyComm::Idup(slf, Some(info))
    }

    fn Clone(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        dup_impl(slf, None)
    }

    fn Create(slf: &Bound<'_, Self>, group: &Bound<'_, PyGroup>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let c = slf.borrow().c()?.clone();
        let members = group_members(group)?;
        let cls = base_class(py, &c)?;
        let c2 = c.clone();
        match blocking(py, move || c2.create(&members))? {
            Some(new) => adopt(py, new, Some(&c), Vec::new(), Some(&cls)),
            None => null_of(&cls),
        }
    }

    #[pyo3(signature = (color=0, key=0))]
    fn Split(slf: &Bound<'_, Self>, color: i32, key: i32) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let c = slf.borrow().c()?.clone();
        let cls = base_class(py, &c)?;
        let c2 = c.clone();
        match blocking(py, move || c2.split(color, key))? {
            Some(new) => adopt(py, new, Some(&c), Vec::new(), Some(&cls)),
            None => null_of(&cls),
        }
    }

    /// MPI_Comm_split_type. All ranks of the native runtime share one node
    /// and its memory: COMM_TYPE_SHARED, and the guided types asked for
    /// "mpi_shared_memory", give one communicator of everyone; there is no
    /// finer hardware level, so COMM_TYPE_HW_UNGUIDED gives COMM_NULL.
    #[pyo3(signature = (split_type, key=0, info=None))]
    fn Split_type(
        slf: &Bound<'_, Self>,
        split_type: i32,
        key: i32,
        info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let items = PyInfo::items_of(info)?;
        let guided_shared = items
            .iter()
            .any(|(k, v)| k == "mpi_hw_resource_type" && v == "mpi_shared_memory");
        let color = match split_type {
            split_type::SHARED => 0,
            split_type::HW_GUIDED | split_type::RESOURCE_GUIDED if guided_shared => 0,
            split_type::HW_GUIDED | split_type::RESOURCE_GUIDED | split_type::HW_UNGUIDED => {
                oxmpi::backend::UNDEFINED
            }
            oxmpi::backend::UNDEFINED => oxmpi::backend::UNDEFINED,
            other => {
                return Err(Python::attach(|py| {
                    mpi_error(py, class::ERR_ARG, &format!("invalid split type {other}"))
                }))
            }
        };
        PyComm::Split(slf, color, key)
    }

    fn Free(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let c = slf.borrow().c()?.clone();
        // Attribute delete callbacks run first, while the communicator is
        // still valid (MPI-4.1 §7.7.2).
        let attrs = with_state(&c, |s| s.attrs.take_all());
        let deleted = attr::run_deletes(py, slf.as_any(), attrs);
        c.free().py()?;
        crate::dynproc::forget_if_parent(py, &c);
        drop_state(&c);
        slf.borrow_mut().inner = None;
        deleted
    }

    /// Frees unless null or predefined.
    fn free(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let predefined = match &slf.borrow().inner {
            None => return Ok(()),
            Some(c) => {
                let e = engine(py)?;
                Arc::ptr_eq(c, &e.world()) || Arc::ptr_eq(c, &e.self_comm())
            }
        };
        if predefined {
            // COMM_WORLD/COMM_SELF themselves stay; another object naming
            // them becomes COMM_NULL (the communicator is not freed).
            if !crate::handle::is_module_constant(slf.as_any()) {
                slf.borrow_mut().inner = None;
            }
            return Ok(());
        }
        PyComm::Free(slf)
    }

    fn Disconnect(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let c = slf.borrow().c()?.clone();
        let c2 = c.clone();
        if c.is_inter() {
            // Everyone of the other group has reached Disconnect too (but
            // those known to have failed, who never will).
            let failed = c.failed().unwrap_or_default();
            let peers: Vec<_> = (c.remote_world_ranks().iter().enumerate())
                .filter(|(_, w)| !failed.contains(w))
                .map(|(r, _)| (r as i32, RawBuf::EMPTY))
                .collect();
            blocking(py, move || c2.iexchange(&peers, &peers)?.wait())?;
        } else {
            blocking(py, move || c2.barrier())?;
        }
        PyComm::Free(slf)
    }

    // ------------------------------------------------------------- info

    fn Set_info(&self, info: &Bound<'_, PyAny>) -> PyResult<()> {
        let c = self.c()?;
        let items = PyInfo::items_of(Some(info))?;
        with_state(c, |s| {
            for (k, v) in items {
                match s.info.iter_mut().find(|(kk, _)| *kk == k) {
                    Some(slot) => slot.1 = v,
                    None => s.info.push((k, v)),
                }
            }
        });
        Ok(())
    }

    fn Get_info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let c = self.c()?;
        let items = with_state(c, |s| s.info.clone());
        let cls = class_named(py, "Info")?;
        let obj = cls.call0()?;
        obj.cast::<PyInfo>()?.borrow_mut().h = PyInfo::new_with(items).h;
        Ok(obj.unbind())
    }

    #[getter]
    fn info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.Get_info(py)
    }

    #[setter(info)]
    fn set_info_prop(&self, info: &Bound<'_, PyAny>) -> PyResult<()> {
        self.Set_info(info)
    }

    // -------------------------------------------------------- attributes

    fn Get_attr(&self, py: Python<'_>, keyval: i32) -> PyResult<Py<PyAny>> {
        use attr::predefined as k;
        let c = self.c()?;
        let int = |v: i64| -> PyResult<Py<PyAny>> { Ok(v.into_pyobject(py)?.into_any().unbind()) };
        match keyval {
            // The running engine's bound (a system MPI library may allow less).
            k::TAG_UB => return int(engine(py)?.tag_ub() as i64),
            // Every process can do I/O and is its own host.
            k::HOST => return int(oxmpi::backend::PROC_NULL as i64),
            k::IO => return int(oxmpi::backend::ANY_SOURCE as i64),
            // One clock for all: every rank runs on this node.
            k::WTIME_IS_GLOBAL => return int(1),
            k::UNIVERSE_SIZE => return int(engine(py)?.universe_size() as i64),
            k::APPNUM => return int(0),
            k::LASTUSEDCODE => {
                let v = py
                    .import("oxmpi.MPI")?
                    .getattr("_last_used_code")?
                    .call0()?
                    .extract::<i64>()?;
                return int(v);
            }
            _ => {}
        }
        attr::lookup(py, AttrKind::Comm, keyval)?;
        Ok(
            with_state(c, |s| s.attrs.get(keyval).map(|v| v.clone_ref(py)))
                .unwrap_or_else(|| py.None()),
        )
    }

    fn Set_attr(slf: &Bound<'_, Self>, keyval: i32, attrval: Py<PyAny>) -> PyResult<()> {
        let py = slf.py();
        let c = slf.borrow().c()?.clone();
        let k = attr::lookup(py, AttrKind::Comm, keyval)?;
        let old = with_state(&c, |s| s.attrs.set(k, attrval));
        match old {
            Some(old) => attr::run_delete(py, slf.as_any(), old),
            None => Ok(()),
        }
    }

    fn Delete_attr(slf: &Bound<'_, Self>, keyval: i32) -> PyResult<()> {
        let py = slf.py();
        let c = slf.borrow().c()?.clone();
        attr::lookup(py, AttrKind::Comm, keyval)?;
        match with_state(&c, |s| s.attrs.remove(keyval)) {
            Some(old) => attr::run_delete(py, slf.as_any(), old),
            None => Err(mpi_error(
                py,
                class::ERR_KEYVAL,
                &format!("no attribute for keyval {keyval}"),
            )),
        }
    }

    #[classmethod]
    #[pyo3(signature = (copy_fn=None, delete_fn=None, nopython=false))]
    fn Create_keyval(
        _cls: &Bound<'_, PyType>,
        copy_fn: Option<&Bound<'_, PyAny>>,
        delete_fn: Option<&Bound<'_, PyAny>>,
        nopython: bool,
    ) -> PyResult<i32> {
        let _ = nopython; // Values are Python objects either way.
        attr::create_keyval(AttrKind::Comm, copy_fn, delete_fn)
    }

    #[classmethod]
    fn Free_keyval(cls: &Bound<'_, PyType>, keyval: i32) -> PyResult<i32> {
        attr::free_keyval(cls.py(), AttrKind::Comm, keyval)
    }

    // ----------------------------------------------------- error handling

    #[classmethod]
    fn Create_errhandler(
        _cls: &Bound<'_, PyType>,
        errhandler_fn: Py<PyAny>,
    ) -> PyResult<PyErrhandler> {
        PyErrhandler::create(errhandler_fn)
    }

    fn Get_errhandler(&self) -> PyResult<PyErrhandler> {
        let c = self.c()?;
        Ok(PyErrhandler {
            h: Some(with_state(c, |s| s.errhandler.clone())),
        })
    }

    fn Set_errhandler(&self, errhandler: &Bound<'_, PyErrhandler>) -> PyResult<()> {
        let c = self.c()?;
        let h = errhandler.borrow().get()?.clone();
        with_state(c, |s| s.errhandler = h);
        Ok(())
    }

    fn Call_errhandler(slf: &Bound<'_, Self>, errorcode: i32) -> PyResult<()> {
        let py = slf.py();
        let c = slf.borrow().c()?.clone();
        let h = with_state(&c, |s| s.errhandler.clone());
        errhandler::call(py, &h, slf.as_any(), errorcode)
    }

    #[pyo3(signature = (errorcode=0))]
    fn Abort(&self, py: Python<'_>, errorcode: i32) -> PyResult<()> {
        let c = self.c()?.clone();
        // Flush Python's buffered output so the user's last words survive.
        let _ = py.run(
            c"import sys; sys.stdout.flush(); sys.stderr.flush()",
            None,
            None,
        );
        py.detach(move || c.abort(errorcode))
    }

    // ------------------------------------------------------------ handles

    /// The integer handle (MPI_Comm_toint): stable while the object lives,
    /// 0 for the null handle.
    #[getter(handle)]
    fn int_handle(&self) -> i64 {
        comm_ints().toint(self.inner.as_ref())
    }

    #[classmethod]
    fn fromhandle<'py>(
        cls: &Bound<'py, pyo3::types::PyType>,
        handle: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = comm_ints().lookup(handle, "communicator")?;
        match h {
            // Comm itself gives the class the communicator's kind calls
            // for (Intercomm, Cartcomm, ...), as mpi4py does.
            Some(c) if cls.is(cls.py().get_type::<PyComm>()) => {
                Ok(wrap_comm(cls.py(), c)?.into_bound(cls.py()))
            }
            h => crate::handle::rebuild(cls, h.map(|c| PyComm { inner: Some(c) })),
        }
    }

    fn toint(&self) -> i64 {
        self.int_handle()
    }

    #[classmethod]
    fn fromint<'py>(
        cls: &Bound<'py, pyo3::types::PyType>,
        arg: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::fromhandle(cls, arg)
    }

    fn py2f(&self) -> i64 {
        self.int_handle()
    }

    #[classmethod]
    fn f2py<'py>(cls: &Bound<'py, pyo3::types::PyType>, arg: i64) -> PyResult<Bound<'py, PyAny>> {
        Self::fromhandle(cls, arg)
    }
}

/// MPI_Comm_dup(_with_info): the new communicator has the same class, the
/// same topology, a copy of the attributes (by their copy callbacks), the
/// same error handler and, with `info`, those hints (else a copy of the
/// old ones).
fn dup_impl(slf: &Bound<'_, PyComm>, info: Option<Vec<(String, String)>>) -> PyResult<Py<PyAny>> {
    let py = slf.py();
    let c = slf.borrow().c()?.clone();
    let c2 = c.clone();
    let new = blocking(py, move || c2.dup())?;
    // Copy callbacks run Python code: never under the table lock.
    let snapshot = with_state(&c, |s| s.attrs.snapshot(py));
    let copied = snapshot.copied(py, slf.as_any());
    let old_info = with_state(&c, |s| s.info.clone());
    let copied = match copied {
        Ok(a) => a,
        Err(e) => {
            let _ = new.free();
            return Err(e);
        }
    };
    let obj = adopt(
        py,
        new.clone(),
        Some(&c),
        info.unwrap_or(old_info),
        Some(&slf.get_type()),
    )?;
    with_state(&new, |s| s.attrs = copied);
    Ok(obj)
}

/// Integer handles of communicators.
fn comm_ints() -> &'static crate::handle::IntHandles<dyn Communicator> {
    static INTS: std::sync::OnceLock<crate::handle::IntHandles<dyn Communicator>> =
        std::sync::OnceLock::new();
    INTS.get_or_init(Default::default)
}
