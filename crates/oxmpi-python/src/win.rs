//! `MPI.Win`: one-sided communication (MPI-4.1 chapter 12).
//!
//! Buffers follow mpi4py's `_p_msg_rma`: the origin (and result, compare)
//! are ordinary buffer specifications (`buffer.rs`; a non-contiguous
//! origin is packed into a copy, and a `Get`'s copy unpacks when the call
//! is over); the target is None, a displacement, or `(disp[, count[,
//! datatype]])`, defaulting to the origin's count and datatype. The
//! runtime completes every operation within its call (see
//! `oxmpi::backend::Window`), so the request-based forms return completed
//! requests.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyNotImplementedError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple, PyType};

use oxmpi::backend::{RawBuf, WinCreate, WinFlavor, WinTarget, WindowRef, PROC_NULL};
use oxmpi::datatype::Datatype;
use oxmpi::error::class;
use oxmpi::group::Group;

use crate::attr::predefined as keyval;
use crate::buffer::{self, BufView, Msg};
use crate::comm::{class_named, PyComm};
use crate::engine::blocking;
use crate::errhandler::{self, Errh, PyErrhandler};
use crate::errors::{mpi_error, IntoPy};
use crate::group::PyGroup;
use crate::info::PyInfo;
use crate::memory::PyMemBuffer;

/// mpi4py's (MPICH's) values of the window constants.
pub mod constants {
    pub const WIN_FLAVOR_CREATE: i32 = 1;
    pub const WIN_FLAVOR_ALLOCATE: i32 = 2;
    pub const WIN_FLAVOR_DYNAMIC: i32 = 3;
    pub const WIN_FLAVOR_SHARED: i32 = 4;
    pub const WIN_SEPARATE: i32 = 1;
    pub const WIN_UNIFIED: i32 = 2;
    pub const LOCK_EXCLUSIVE: i32 = 234;
    pub const LOCK_SHARED: i32 = 235;
}

/// What MPI keeps per window besides the runtime's window; shared by every
/// Python object naming the window.
struct WinState {
    name: String,
    errhandler: Arc<Errh>,
    info: Vec<(String, String)>,
    /// The memory of a `Create` window, pinned until `Free`.
    memory: Option<BufView>,
    /// Memory attached to a dynamic window, pinned until detached.
    attached: Vec<BufView>,
}

/// Keeps a window's runtime object (and so its shared mapping) alive while
/// a buffer views its memory.
#[pyclass(module = "oxmpi.MPI", name = "_WinMemory", frozen)]
struct WinMemory {
    #[allow(dead_code)] // held, never read
    win: WindowRef,
    /// An export of the memory object a `Create` window was made over: it
    /// keeps the memory where it is (a bytearray cannot be resized under
    /// an export) for as long as a view of it lives, `Free` or not.
    #[allow(dead_code)] // held, never read
    pin: Option<BufView>,
}

/// A window handle: the runtime's window and what MPI keeps with it.
struct WinHandle {
    win: WindowRef,
    state: Mutex<WinState>,
}

/// A window (WIN_NULL when `h` is None).
#[pyclass(module = "oxmpi.MPI", name = "Win", subclass, weakref)]
pub struct PyWin {
    h: Option<Arc<WinHandle>>,
}

/// Integer handles of windows.
fn win_ints() -> &'static crate::handle::IntHandles<WinHandle> {
    static INTS: std::sync::OnceLock<crate::handle::IntHandles<WinHandle>> =
        std::sync::OnceLock::new();
    INTS.get_or_init(Default::default)
}

fn win_error(py: Python<'_>) -> PyErr {
    mpi_error(py, class::ERR_WIN, "invalid window: WIN_NULL")
}

impl PyWin {
    fn w(&self, py: Python<'_>) -> PyResult<&WindowRef> {
        self.h.as_ref().map(|h| &h.win).ok_or_else(|| win_error(py))
    }

    fn st(&self, py: Python<'_>) -> PyResult<std::sync::MutexGuard<'_, WinState>> {
        let h = self.h.as_ref().ok_or_else(|| win_error(py))?;
        Ok(h.state.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A new object of class `cls` (Win or a subclass) holding `w`.
fn new_win(
    cls: &Bound<'_, PyType>,
    w: WindowRef,
    info: Vec<(String, String)>,
    memory: Option<BufView>,
) -> PyResult<Py<PyAny>> {
    let obj = cls.call0()?;
    {
        let cell = obj.cast::<PyWin>()?;
        cell.borrow_mut().h = Some(Arc::new(WinHandle {
            win: w,
            state: Mutex::new(WinState {
                name: String::new(),
                errhandler: errhandler::errors_return(),
                info,
                memory,
                attached: Vec::new(),
            }),
        }));
    }
    Ok(obj.unbind())
}

fn comm_of<'a>(comm: Option<&'a Bound<'a, PyComm>>) -> PyResult<oxmpi::backend::CommRef> {
    match comm {
        Some(c) => Ok(c.borrow().c()?.clone()),
        None => Python::attach(|py| Ok(crate::engine::engine(py)?.self_comm())),
    }
}

fn info_items(info: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(String, String)>> {
    match info {
        None => Ok(Vec::new()),
        Some(i) if i.is_none() => Ok(Vec::new()),
        Some(i) => PyInfo::items_of(Some(i)),
    }
}

fn check_disp_unit(py: Python<'_>, disp_unit: isize) -> PyResult<usize> {
    if disp_unit <= 0 {
        return Err(mpi_error(py, class::ERR_DISP, "disp_unit must be positive"));
    }
    Ok(disp_unit as usize)
}

fn check_size(py: Python<'_>, size: isize) -> PyResult<usize> {
    if size < 0 {
        return Err(mpi_error(
            py,
            class::ERR_SIZE,
            "a window size cannot be negative",
        ));
    }
    Ok(size as usize)
}

/// A buffer viewing `len` bytes at `ptr`, kept alive by `owner`.
fn memory_view(py: Python<'_>, ptr: *mut u8, len: usize, owner: Py<PyAny>) -> PyResult<Py<PyAny>> {
    let m = if len == 0 {
        PyMemBuffer::new_empty()
    } else {
        PyMemBuffer::from_view(BufView::foreign(owner, ptr, len, false, "B", 1, 0), false)
    };
    Ok(Py::new(py, m)?.into_any())
}

/// The target of an RMA call (mpi4py's `for_rma` target rules).
fn parse_target(target: Option<&Bound<'_, PyAny>>, origin: &Msg) -> PyResult<WinTarget> {
    let mut t = WinTarget {
        disp: 0,
        count: origin.count,
        dtype: origin.dtype.clone(),
    };
    let Some(target) = target else {
        return Ok(t);
    };
    if target.is_none() {
        return Ok(t);
    }
    if target.is_instance_of::<PyList>() || target.is_instance_of::<PyTuple>() {
        let items: Vec<Bound<'_, PyAny>> = target.try_iter()?.collect::<PyResult<_>>()?;
        if items.len() >= 4 {
            return Err(PyValueError::new_err("target: expecting 3 items at most"));
        }
        if let Some(d) = items.first() {
            t.disp = index(d)?;
        }
        if let Some(c) = items.get(1) {
            let c = index(c)?;
            if c < 0 {
                return Err(PyValueError::new_err("target: negative count"));
            }
            t.count = c as usize;
        }
        if let Some(d) = items.get(2) {
            t.dtype = buffer::as_datatype(d)?.get()?.clone();
        }
        return Ok(t);
    }
    match index(target) {
        Ok(d) => {
            t.disp = d;
            Ok(t)
        }
        Err(_) => Err(PyValueError::new_err(
            "target: expecting integral or list/tuple",
        )),
    }
}

fn index(obj: &Bound<'_, PyAny>) -> PyResult<isize> {
    let py = obj.py();
    py.import("operator")?
        .getattr("index")?
        .call1((obj,))?
        .extract()
}

/// The element count of a message that must hold exactly one element.
fn check_single(m: &Msg, what: &str) -> PyResult<()> {
    if m.count != 1 {
        return Err(PyValueError::new_err(format!(
            "{what}: expecting a single element, got {}",
            m.count
        )));
    }
    Ok(())
}

/// Checks the origin's packed size against the target's (MPI requires
/// matching type signatures; a mismatch is refused, never truncated).
fn origin_matches(origin: &Msg, target: &WinTarget) -> PyResult<()> {
    let want = target.count * target.dtype.size();
    if origin.raw.len != want {
        return Python::attach(|py| {
            Err(mpi_error(
                py,
                class::ERR_COUNT,
                &format!(
                    "origin holds {} bytes, the target {} elements of {} bytes",
                    origin.raw.len,
                    target.count,
                    target.dtype.size()
                ),
            ))
        });
    }
    Ok(())
}

fn lock_type(py: Python<'_>, lock_type: i32) -> PyResult<bool> {
    match lock_type {
        constants::LOCK_EXCLUSIVE => Ok(true),
        constants::LOCK_SHARED => Ok(false),
        _ => Err(mpi_error(py, class::ERR_LOCKTYPE, "invalid lock type")),
    }
}

/// Window ranks of a group's members (ERR_GROUP for a non-member).
fn group_ranks(py: Python<'_>, w: &WindowRef, group: &Bound<'_, PyGroup>) -> PyResult<Vec<i32>> {
    let world = w.world_ranks();
    let g = group.borrow();
    g.get()?
        .members()
        .iter()
        .map(|m| {
            world
                .iter()
                .position(|x| x == m)
                .map(|p| p as i32)
                .ok_or_else(|| {
                    mpi_error(
                        py,
                        class::ERR_GROUP,
                        "the group holds a process outside the window",
                    )
                })
        })
        .collect()
}

fn done(py: Python<'_>) -> PyResult<Py<crate::request::PyRequest>> {
    crate::comm::done_request(py)
}

#[pymethods]
impl PyWin {
    #[new]
    #[pyo3(signature = (win=None))]
    fn py_new(win: Option<&Bound<'_, PyAny>>) -> PyResult<PyWin> {
        match win {
            None => Ok(PyWin { h: None }),
            Some(o) => match o.cast::<PyWin>() {
                Ok(w) => Ok(PyWin {
                    h: w.borrow().h.clone(),
                }),
                Err(_) => Err(PyTypeError::new_err(format!(
                    "expecting an MPI.Win, got {}",
                    o.get_type().name()?
                ))),
            },
        }
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: pyo3::basic::CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let me = slf.borrow();
        let same = other
            .cast::<PyWin>()
            .ok()
            .map(|o| crate::handle::same(me.h.as_ref(), o.borrow().h.as_ref()));
        crate::handle::richcmp(slf.as_any(), same, op)
    }

    fn __bool__(&self) -> bool {
        self.h.is_some()
    }

    /// A window exports its local memory (as mpi4py's does): the export
    /// is made by an `MPI.buffer` over the memory, which the view holds.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        let py = slf.py();
        let mem = slf.borrow().tomemory(py)?;
        // SAFETY: `view` is the caller's Py_buffer (buffer protocol); the
        // buffer object fills it and the view keeps a reference to it.
        let rc = unsafe { pyo3::ffi::PyObject_GetBuffer(mem.as_ptr(), view, flags) };
        if rc != 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(())
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let null = slf.borrow().h.is_none();
        crate::handle::reduce(slf.as_any(), null.then_some("WIN_NULL"))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(slf: &Bound<'_, Self>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        if slf.borrow().h.is_some() {
            Self::Free(slf)?;
        }
        Ok(())
    }

    #[getter]
    fn handle(&self) -> i64 {
        win_ints().toint(self.h.as_ref())
    }

    #[classmethod]
    fn fromhandle<'py>(cls: &Bound<'py, PyType>, handle: i64) -> PyResult<Bound<'py, PyAny>> {
        let h = win_ints().lookup(handle, "window")?;
        crate::handle::rebuild(cls, h.map(|h| PyWin { h: Some(h) }))
    }

    fn toint(&self) -> i64 {
        self.handle()
    }

    #[classmethod]
    fn fromint<'py>(cls: &Bound<'py, PyType>, arg: i64) -> PyResult<Bound<'py, PyAny>> {
        Self::fromhandle(cls, arg)
    }

    fn py2f(&self) -> i64 {
        self.handle()
    }

    #[classmethod]
    fn f2py<'py>(cls: &Bound<'py, PyType>, arg: i64) -> PyResult<Bound<'py, PyAny>> {
        Self::fromhandle(cls, arg)
    }

    // ------------------------------------------------------- creation

    #[classmethod]
    #[pyo3(signature = (memory, disp_unit=1, info=None, comm=None))]
    fn Create(
        cls: &Bound<'_, PyType>,
        memory: &Bound<'_, PyAny>,
        disp_unit: isize,
        info: Option<&Bound<'_, PyAny>>,
        comm: Option<&Bound<'_, PyComm>>,
    ) -> PyResult<Py<PyAny>> {
        let py = cls.py();
        let c = comm_of(comm)?;
        let disp_unit = check_disp_unit(py, disp_unit)?;
        let info = info_items(info)?;
        let (mem, view) = if buffer::is_bottom(memory) || memory.is_none() {
            (RawBuf::EMPTY, None)
        } else {
            let v = BufView::get(memory, true, false)?;
            (v.raw(), Some(v))
        };
        let w = blocking(py, || c.win_create(WinCreate::Memory { mem, disp_unit }))?;
        new_win(cls, w, info, view)
    }

    #[classmethod]
    #[pyo3(signature = (size, disp_unit=1, info=None, comm=None))]
    fn Allocate(
        cls: &Bound<'_, PyType>,
        size: isize,
        disp_unit: isize,
        info: Option<&Bound<'_, PyAny>>,
        comm: Option<&Bound<'_, PyComm>>,
    ) -> PyResult<Py<PyAny>> {
        Self::allocate(cls, size, disp_unit, info, comm, false)
    }

    #[classmethod]
    #[pyo3(signature = (size, disp_unit=1, info=None, comm=None))]
    fn Allocate_shared(
        cls: &Bound<'_, PyType>,
        size: isize,
        disp_unit: isize,
        info: Option<&Bound<'_, PyAny>>,
        comm: Option<&Bound<'_, PyComm>>,
    ) -> PyResult<Py<PyAny>> {
        Self::allocate(cls, size, disp_unit, info, comm, true)
    }

    #[classmethod]
    #[pyo3(signature = (info=None, comm=None))]
    fn Create_dynamic(
        cls: &Bound<'_, PyType>,
        info: Option<&Bound<'_, PyAny>>,
        comm: Option<&Bound<'_, PyComm>>,
    ) -> PyResult<Py<PyAny>> {
        let py = cls.py();
        let c = comm_of(comm)?;
        let info = info_items(info)?;
        let w = blocking(py, || c.win_create(WinCreate::Dynamic))?;
        new_win(cls, w, info, None)
    }

    fn Free(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let w = slf.borrow().w(py)?.clone();
        blocking(py, || w.free())?;
        let mut me = slf.borrow_mut();
        if let Some(h) = &me.h {
            let mut s = h.state.lock().unwrap_or_else(|e| e.into_inner());
            s.memory = None;
            s.attached.clear();
        }
        me.h = None;
        Ok(())
    }

    /// Frees unless null.
    fn free(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.borrow().h.is_some() {
            Self::Free(slf)?;
        }
        Ok(())
    }

    fn Attach(&self, py: Python<'_>, memory: &Bound<'_, PyAny>) -> PyResult<()> {
        let w = self.w(py)?.clone();
        let v = BufView::get(memory, true, false)?;
        let raw = v.raw();
        w.attach(raw).py()?;
        self.st(py)?.attached.push(v);
        Ok(())
    }

    fn Detach(&self, py: Python<'_>, memory: &Bound<'_, PyAny>) -> PyResult<()> {
        let w = self.w(py)?.clone();
        // Addresses of user memory are non-negative (Get_address is signed
        // only for the constants).
        let addr = crate::memory::get_address(memory)? as usize;
        w.detach(addr).py()?;
        let mut s = self.st(py)?;
        if let Some(i) = s.attached.iter().rposition(|v| v.ptr() as usize == addr) {
            s.attached.remove(i);
        }
        Ok(())
    }

    // ------------------------------------------------------- queries

    fn Get_group(&self, py: Python<'_>) -> PyResult<PyGroup> {
        Ok(PyGroup::wrap(Group::new(self.w(py)?.world_ranks()).py()?))
    }

    #[getter]
    fn group(&self, py: Python<'_>) -> PyResult<PyGroup> {
        self.Get_group(py)
    }

    #[getter]
    fn group_size(&self, py: Python<'_>) -> PyResult<i32> {
        Ok(self.w(py)?.world_ranks().len() as i32)
    }

    #[getter]
    fn group_rank(&self, py: Python<'_>) -> PyResult<i32> {
        Ok(self.w(py)?.rank())
    }

    fn Get_attr(&self, py: Python<'_>, keyval: i32) -> PyResult<Option<Py<PyAny>>> {
        let w = self.w(py)?;
        let local = w.local();
        let base = if local.len == 0 {
            0
        } else {
            local.ptr as usize
        };
        let v: Py<PyAny> = match keyval {
            keyval::WIN_BASE => base.into_pyobject(py)?.into_any().unbind(),
            keyval::WIN_SIZE => local.len.into_pyobject(py)?.into_any().unbind(),
            keyval::WIN_DISP_UNIT => w.disp_unit().into_pyobject(py)?.into_any().unbind(),
            keyval::WIN_CREATE_FLAVOR => flavor_code(w.flavor())
                .into_pyobject(py)?
                .into_any()
                .unbind(),
            keyval::WIN_MODEL => model_code(w.unified())
                .into_pyobject(py)?
                .into_any()
                .unbind(),
            // No keyval for windows can be created (Create_keyval raises
            // NotImplementedError), so any other keyval is invalid here.
            _ => {
                return Err(mpi_error(
                    py,
                    class::ERR_KEYVAL,
                    &format!("invalid keyval {keyval} for a window"),
                ))
            }
        };
        Ok(Some(v))
    }

    fn Set_attr(&self, _keyval: i32, _attrval: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(PyNotImplementedError::new_err(
            "window attributes (Win.Set_attr) are not supported by oxmpi",
        ))
    }

    fn Delete_attr(&self, _keyval: i32) -> PyResult<()> {
        Err(PyNotImplementedError::new_err(
            "window attributes (Win.Delete_attr) are not supported by oxmpi",
        ))
    }

    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn Create_keyval(
        _cls: &Bound<'_, PyType>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<i32> {
        Err(PyNotImplementedError::new_err(
            "window keyvals (Win.Create_keyval) are not supported by oxmpi",
        ))
    }

    #[classmethod]
    fn Free_keyval(_cls: &Bound<'_, PyType>, _keyval: i32) -> PyResult<i32> {
        Err(PyNotImplementedError::new_err(
            "window keyvals (Win.Free_keyval) are not supported by oxmpi",
        ))
    }

    /// (base address, size, displacement unit).
    #[getter]
    fn attrs(&self, py: Python<'_>) -> PyResult<(usize, usize, usize)> {
        let w = self.w(py)?;
        let l = w.local();
        let base = if l.len == 0 { 0 } else { l.ptr as usize };
        Ok((base, l.len, w.disp_unit()))
    }

    #[getter]
    fn flavor(&self, py: Python<'_>) -> PyResult<i32> {
        Ok(flavor_code(self.w(py)?.flavor()))
    }

    #[getter]
    fn model(&self, py: Python<'_>) -> PyResult<i32> {
        Ok(model_code(self.w(py)?.unified()))
    }

    /// This process's window memory as an `MPI.buffer`.
    fn tomemory(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let w = self.w(py)?.clone();
        let l = w.local();
        let user = self.st(py)?.memory.as_ref().and_then(|v| v.obj(py));
        let pin = user.map(|o| BufView::get(&o, false, false)).transpose()?;
        let owner = Py::new(py, WinMemory { win: w, pin })?.into_any();
        memory_view(py, l.ptr, l.len, owner)
    }

    /// MPI_Win_shared_query: (memory, disp_unit) of `rank`.
    fn Shared_query(&self, py: Python<'_>, rank: i32) -> PyResult<(Py<PyAny>, usize)> {
        let w = self.w(py)?.clone();
        let (mem, unit) = w.shared_query(rank).py()?;
        let owner = Py::new(py, WinMemory { win: w, pin: None })?.into_any();
        Ok((memory_view(py, mem.ptr, mem.len, owner)?, unit))
    }

    fn Get_info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let items = self.st(py)?.info.clone();
        let cls = class_named(py, "Info")?;
        let obj = cls.call0()?;
        obj.cast::<PyInfo>()?.borrow_mut().h = PyInfo::new_with(items).h;
        Ok(obj.unbind())
    }

    fn Set_info(&self, py: Python<'_>, info: &Bound<'_, PyAny>) -> PyResult<()> {
        let items = info_items(Some(info))?;
        let mut s = self.st(py)?;
        for (k, v) in items {
            match s.info.iter_mut().find(|(kk, _)| *kk == k) {
                Some(slot) => slot.1 = v,
                None => s.info.push((k, v)),
            }
        }
        Ok(())
    }

    #[getter]
    fn get_info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.Get_info(py)
    }

    #[setter]
    fn set_info(&self, py: Python<'_>, info: &Bound<'_, PyAny>) -> PyResult<()> {
        self.Set_info(py, info)
    }

    fn Get_name(&self, py: Python<'_>) -> PyResult<String> {
        if self.h.is_none() {
            return Ok("MPI_WIN_NULL".into());
        }
        Ok(self.st(py)?.name.clone())
    }

    fn Set_name(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.st(py)?.name = name.to_string();
        Ok(())
    }

    #[getter]
    fn get_name(&self, py: Python<'_>) -> PyResult<String> {
        self.Get_name(py)
    }

    #[setter]
    fn set_name(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.Set_name(py, name)
    }

    fn Get_errhandler(&self, py: Python<'_>) -> PyResult<PyErrhandler> {
        Ok(PyErrhandler {
            h: Some(self.st(py)?.errhandler.clone()),
        })
    }

    fn Set_errhandler(&self, py: Python<'_>, errhandler: &Bound<'_, PyErrhandler>) -> PyResult<()> {
        let h = errhandler.borrow().get()?.clone();
        self.st(py)?.errhandler = h;
        Ok(())
    }

    fn Call_errhandler(slf: &Bound<'_, Self>, errorcode: i32) -> PyResult<()> {
        let py = slf.py();
        let h = slf.borrow().st(py)?.errhandler.clone();
        errhandler::call(py, &h, slf.as_any(), errorcode)
    }

    #[classmethod]
    fn Create_errhandler(
        _cls: &Bound<'_, PyType>,
        errhandler_fn: Py<PyAny>,
    ) -> PyResult<PyErrhandler> {
        PyErrhandler::create(errhandler_fn)
    }

    // ------------------------------------------------ communication

    #[pyo3(signature = (origin, target_rank, target=None))]
    fn Put(
        &self,
        py: Python<'_>,
        origin: &Bound<'_, PyAny>,
        target_rank: i32,
        target: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.put(py, origin, target_rank, target)
    }

    #[pyo3(signature = (origin, target_rank, target=None))]
    fn Get(
        &self,
        py: Python<'_>,
        origin: &Bound<'_, PyAny>,
        target_rank: i32,
        target: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.get(py, origin, target_rank, target)
    }

    #[pyo3(signature = (origin, target_rank, target=None, op=None))]
    fn Accumulate(
        &self,
        py: Python<'_>,
        origin: &Bound<'_, PyAny>,
        target_rank: i32,
        target: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.acc(py, origin, None, target_rank, target, op)
    }

    #[pyo3(signature = (origin, result, target_rank, target=None, op=None))]
    fn Get_accumulate(
        &self,
        py: Python<'_>,
        origin: &Bound<'_, PyAny>,
        result: &Bound<'_, PyAny>,
        target_rank: i32,
        target: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.acc(py, origin, Some(result), target_rank, target, op)
    }

    #[pyo3(signature = (origin, result, target_rank, target_disp=0, op=None))]
    fn Fetch_and_op(
        &self,
        py: Python<'_>,
        origin: &Bound<'_, PyAny>,
        result: &Bound<'_, PyAny>,
        target_rank: i32,
        target_disp: isize,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let w = self.w(py)?.clone();
        let o = buffer::parse_p2p(origin, false, target_rank)?;
        let r = buffer::parse_p2p(result, true, target_rank)?;
        if target_rank == PROC_NULL {
            return Ok(());
        }
        check_single(&o, "origin")?;
        check_single(&r, "result")?;
        if o.dtype != r.dtype {
            return Err(PyValueError::new_err(
                "mismatch in origin and result MPI datatypes",
            ));
        }
        let op = crate::op::from_py_buffer_op(op)?.to_runtime(&o.pytype)?;
        let t = WinTarget {
            disp: target_disp,
            count: 1,
            dtype: o.dtype.clone(),
        };
        let (oraw, rraw, otype) = (o.raw, r.raw, o.dtype.clone());
        blocking(py, || {
            w.accumulate(oraw, &otype, Some(rraw), target_rank, &t, &op)
        })?;
        drop((o, r));
        Ok(())
    }

    #[pyo3(signature = (origin, compare, result, target_rank, target_disp=0))]
    fn Compare_and_swap(
        &self,
        py: Python<'_>,
        origin: &Bound<'_, PyAny>,
        compare: &Bound<'_, PyAny>,
        result: &Bound<'_, PyAny>,
        target_rank: i32,
        target_disp: isize,
    ) -> PyResult<()> {
        let w = self.w(py)?.clone();
        let o = buffer::parse_p2p(origin, false, target_rank)?;
        let c = buffer::parse_p2p(compare, false, target_rank)?;
        let r = buffer::parse_p2p(result, true, target_rank)?;
        if target_rank == PROC_NULL {
            return Ok(());
        }
        check_single(&o, "origin")?;
        check_single(&c, "compare")?;
        check_single(&r, "result")?;
        if o.dtype != c.dtype {
            return Err(PyValueError::new_err(
                "mismatch in origin and compare MPI datatypes",
            ));
        }
        if o.dtype != r.dtype {
            return Err(PyValueError::new_err(
                "mismatch in origin and result MPI datatypes",
            ));
        }
        let (oraw, craw, rraw, dt) = (o.raw, c.raw, r.raw, o.dtype.clone());
        blocking(py, || {
            w.compare_and_swap(oraw, craw, rraw, target_rank, target_disp, &dt)
        })?;
        drop((o, c, r));
        Ok(())
    }

    #[pyo3(signature = (origin, target_rank, target=None))]
    fn Rput(
        &self,
        py: Python<'_>,
        origin: &Bound<'_, PyAny>,
        target_rank: i32,
        target: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<crate::request::PyRequest>> {
        self.put(py, origin, target_rank, target)?;
        done(py)
    }

    #[pyo3(signature = (origin, target_rank, target=None))]
    fn Rget(
        &self,
        py: Python<'_>,
        origin: &Bound<'_, PyAny>,
        target_rank: i32,
        target: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<crate::request::PyRequest>> {
        self.get(py, origin, target_rank, target)?;
        done(py)
    }

    #[pyo3(signature = (origin, target_rank, target=None, op=None))]
    fn Raccumulate(
        &self,
        py: Python<'_>,
        origin: &Bound<'_, PyAny>,
        target_rank: i32,
        target: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<crate::request::PyRequest>> {
        self.acc(py, origin, None, target_rank, target, op)?;
        done(py)
    }

    #[pyo3(signature = (origin, result, target_rank, target=None, op=None))]
    fn Rget_accumulate(
        &self,
        py: Python<'_>,
        origin: &Bound<'_, PyAny>,
        result: &Bound<'_, PyAny>,
        target_rank: i32,
        target: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<crate::request::PyRequest>> {
        self.acc(py, origin, Some(result), target_rank, target, op)?;
        done(py)
    }

    // ------------------------------------------------ synchronization

    #[pyo3(signature = (assertion=0))]
    fn Fence(&self, py: Python<'_>, assertion: i32) -> PyResult<()> {
        let w = self.w(py)?.clone();
        blocking(py, || w.fence(assertion))
    }

    #[pyo3(signature = (group, assertion=0))]
    fn Start(&self, py: Python<'_>, group: &Bound<'_, PyGroup>, assertion: i32) -> PyResult<()> {
        let w = self.w(py)?.clone();
        let ranks = group_ranks(py, &w, group)?;
        blocking(py, || w.start(&ranks, assertion))
    }

    fn Complete(&self, py: Python<'_>) -> PyResult<()> {
        let w = self.w(py)?.clone();
        blocking(py, || w.complete())
    }

    #[pyo3(signature = (group, assertion=0))]
    fn Post(&self, py: Python<'_>, group: &Bound<'_, PyGroup>, assertion: i32) -> PyResult<()> {
        let w = self.w(py)?.clone();
        let ranks = group_ranks(py, &w, group)?;
        blocking(py, || w.post(&ranks, assertion))
    }

    fn Wait(&self, py: Python<'_>) -> PyResult<()> {
        let w = self.w(py)?.clone();
        blocking(py, || w.wait())
    }

    fn Test(&self, py: Python<'_>) -> PyResult<bool> {
        let w = self.w(py)?.clone();
        w.test().py()
    }

    #[pyo3(signature = (rank, lock_type=constants::LOCK_EXCLUSIVE, assertion=0))]
    fn Lock(&self, py: Python<'_>, rank: i32, lock_type: i32, assertion: i32) -> PyResult<()> {
        let w = self.w(py)?.clone();
        let exclusive = self::lock_type(py, lock_type)?;
        blocking(py, || w.lock(rank, exclusive, assertion))
    }

    fn Unlock(&self, py: Python<'_>, rank: i32) -> PyResult<()> {
        let w = self.w(py)?.clone();
        blocking(py, || w.unlock(rank))
    }

    #[pyo3(signature = (assertion=0))]
    fn Lock_all(&self, py: Python<'_>, assertion: i32) -> PyResult<()> {
        let w = self.w(py)?.clone();
        blocking(py, || w.lock_all(assertion))
    }

    fn Unlock_all(&self, py: Python<'_>) -> PyResult<()> {
        let w = self.w(py)?.clone();
        blocking(py, || w.unlock_all())
    }

    fn Flush(&self, py: Python<'_>, rank: i32) -> PyResult<()> {
        self.w(py)?.flush(Some(rank)).py()
    }

    fn Flush_all(&self, py: Python<'_>) -> PyResult<()> {
        self.w(py)?.flush(None).py()
    }

    fn Flush_local(&self, py: Python<'_>, rank: i32) -> PyResult<()> {
        self.w(py)?.flush(Some(rank)).py()
    }

    fn Flush_local_all(&self, py: Python<'_>) -> PyResult<()> {
        self.w(py)?.flush(None).py()
    }

    fn Sync(&self, py: Python<'_>) -> PyResult<()> {
        self.w(py)?.sync().py()
    }
}

impl PyWin {
    fn allocate(
        cls: &Bound<'_, PyType>,
        size: isize,
        disp_unit: isize,
        info: Option<&Bound<'_, PyAny>>,
        comm: Option<&Bound<'_, PyComm>>,
        shared: bool,
    ) -> PyResult<Py<PyAny>> {
        let py = cls.py();
        let c = comm_of(comm)?;
        let size = check_size(py, size)?;
        let disp_unit = check_disp_unit(py, disp_unit)?;
        let info = info_items(info)?;
        let noncontig = info
            .iter()
            .any(|(k, v)| k == "alloc_shared_noncontig" && v == "true");
        let w = blocking(py, || {
            c.win_create(WinCreate::Allocate {
                size,
                disp_unit,
                shared,
                noncontig,
            })
        })?;
        new_win(cls, w, info, None)
    }

    fn put(
        &self,
        py: Python<'_>,
        origin: &Bound<'_, PyAny>,
        rank: i32,
        target: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let w = self.w(py)?.clone();
        let o = rma_origin(origin, true, rank)?;
        let t = parse_target(target, &o)?;
        if rank == PROC_NULL {
            return Ok(());
        }
        origin_matches(&o, &t)?;
        let raw = o.raw;
        blocking(py, || w.put(raw, rank, &t))
    }

    fn get(
        &self,
        py: Python<'_>,
        origin: &Bound<'_, PyAny>,
        rank: i32,
        target: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let w = self.w(py)?.clone();
        let o = rma_origin(origin, false, rank)?;
        let t = parse_target(target, &o)?;
        if rank == PROC_NULL {
            return Ok(());
        }
        origin_matches(&o, &t)?;
        let raw = o.raw;
        blocking(py, || w.get(raw, rank, &t))?;
        // Dropping the message unpacks a packed copy into the user's buffer.
        drop(o);
        Ok(())
    }

    fn acc(
        &self,
        py: Python<'_>,
        origin: &Bound<'_, PyAny>,
        result: Option<&Bound<'_, PyAny>>,
        rank: i32,
        target: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let w = self.w(py)?.clone();
        let o = rma_origin(origin, true, rank)?;
        let r = match result {
            Some(r) => Some(buffer::parse_p2p(r, true, rank)?),
            None => None,
        };
        let t = parse_target(target, &o)?;
        let op = crate::op::from_py_buffer_op(op)?;
        if rank == PROC_NULL {
            return Ok(());
        }
        let op = op.to_runtime(&o.pytype)?;
        let no_op = matches!(op, oxmpi::op::Op::Predefined(oxmpi::op::Predefined::NoOp));
        if !no_op {
            origin_matches(&o, &t)?;
        }
        let (oraw, otype) = (o.raw, o.dtype.clone());
        let rraw = r.as_ref().map(|r| r.raw);
        blocking(py, || w.accumulate(oraw, &otype, rraw, rank, &t, &op))?;
        drop((o, r));
        Ok(())
    }
}

/// An origin buffer; for PROC_NULL mpi4py parses nothing but still takes
/// a trailing datatype (which then names the target's type too).
fn rma_origin(origin: &Bound<'_, PyAny>, readonly: bool, rank: i32) -> PyResult<Msg> {
    if rank == PROC_NULL {
        let mut m = Msg::none();
        if origin.is_instance_of::<PyList>() || origin.is_instance_of::<PyTuple>() {
            if let Ok(last) = origin.get_item(origin.len()? as isize - 1) {
                if let Ok(dt) = buffer::as_datatype(&last) {
                    m.dtype = dt
                        .get()
                        .cloned()
                        .unwrap_or_else(|_| Datatype::new(oxmpi::datatype::Basic::Byte));
                    m.pytype = dt;
                }
            }
        }
        return Ok(m);
    }
    buffer::parse(origin, !readonly)
}

fn flavor_code(f: WinFlavor) -> i32 {
    match f {
        WinFlavor::Create => constants::WIN_FLAVOR_CREATE,
        WinFlavor::Allocate => constants::WIN_FLAVOR_ALLOCATE,
        WinFlavor::Dynamic => constants::WIN_FLAVOR_DYNAMIC,
        WinFlavor::Shared => constants::WIN_FLAVOR_SHARED,
    }
}

fn model_code(unified: bool) -> i32 {
    if unified {
        constants::WIN_UNIFIED
    } else {
        constants::WIN_SEPARATE
    }
}

/// The window constants for `MPI.py`.
pub fn constants_list() -> Vec<(&'static str, i32)> {
    use constants::*;
    vec![
        ("WIN_FLAVOR_CREATE", WIN_FLAVOR_CREATE),
        ("WIN_FLAVOR_ALLOCATE", WIN_FLAVOR_ALLOCATE),
        ("WIN_FLAVOR_DYNAMIC", WIN_FLAVOR_DYNAMIC),
        ("WIN_FLAVOR_SHARED", WIN_FLAVOR_SHARED),
        ("WIN_SEPARATE", WIN_SEPARATE),
        ("WIN_UNIFIED", WIN_UNIFIED),
        ("LOCK_EXCLUSIVE", LOCK_EXCLUSIVE),
        ("LOCK_SHARED", LOCK_SHARED),
        ("MODE_NOCHECK", oxmpi::backend::MODE_NOCHECK),
        ("MODE_NOSTORE", oxmpi::backend::MODE_NOSTORE),
        ("MODE_NOPUT", oxmpi::backend::MODE_NOPUT),
        ("MODE_NOPRECEDE", oxmpi::backend::MODE_NOPRECEDE),
        ("MODE_NOSUCCEED", oxmpi::backend::MODE_NOSUCCEED),
    ]
}

/// Registers the classes and constants.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyWin>()?;
    m.add_class::<WinMemory>()?;
    let d = pyo3::types::PyDict::new(m.py());
    for (k, v) in constants_list() {
        d.set_item(k, v)?;
    }
    m.add("win_constants", d)?;
    Ok(())
}
