//! `MPI.buffer` (alias `MPI.memory`), `MPI.BOTTOM`, `Alloc_mem`,
//! `Free_mem` and `Get_address`: raw memory as mpi4py presents it
//! (`asbuffer.pxi`, `constant.pxi`).

use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::exceptions::{PyIndexError, PyNotImplementedError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView, PySlice, PyTuple};

use crate::buffer::{self, BufView};
use crate::interop;

/// Memory allocated for `buffer.allocate` and `Alloc_mem`: zeroed, never
/// moved, freed when the last reference goes.
#[pyclass(module = "oxmpi.MPI", name = "_Allocation", frozen)]
pub struct Allocation {
    data: Box<[u8]>,
}

impl Allocation {
    fn new(py: Python<'_>, nbytes: usize) -> PyResult<Bound<'_, Allocation>> {
        // alloc_zeroed gets fresh pages from the OS for large sizes, so
        // clearing costs nothing up front.
        let data = vec![0u8; nbytes].into_boxed_slice();
        Bound::new(py, Allocation { data })
    }

    fn ptr(&self) -> *mut u8 {
        self.data.as_ptr() as *mut u8
    }
}

#[pymethods]
impl Allocation {
    /// # Safety
    /// Called by Python with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        // SAFETY: `view` is valid per the buffer protocol; the memory never
        // moves while the object lives and the view holds a reference to
        // it. Writes go through the raw pointer only (never a Rust
        // reference), like any C buffer.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                this.ptr().cast(),
                this.data.len() as ffi::Py_ssize_t,
                0,
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}

    fn __len__(&self) -> usize {
        self.data.len()
    }
}

/// What `MPI.BOTTOM`, `MPI.IN_PLACE` and `MPI.BUFFER_AUTOMATIC` share (as
/// mpi4py's constants do): each is an address (0, -1 and -2, MPICH's
/// values), equal to and hashing like that integer, exporting an empty
/// buffer at it, and pickled by name. Each has a type of its own (a
/// subclass), which is how the binding recognises it.
#[pyclass(module = "oxmpi.MPI", name = "_Constant", subclass, frozen)]
pub struct Constant {
    name: &'static str,
    address: isize,
}

impl Constant {
    pub fn new(name: &'static str, address: isize) -> Constant {
        Constant { name, address }
    }
}

#[pymethods]
impl Constant {
    fn __bool__(&self) -> bool {
        self.address != 0
    }
    fn __int__(&self) -> isize {
        self.address
    }
    fn __index__(&self) -> isize {
        self.address
    }
    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        // Exactly the integer's hash (CPython's hash(-1) is -2).
        self.address.into_pyobject(py)?.hash()
    }
    fn __eq__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let me = slf.get();
        let equal = if let Ok(c) = other.cast::<Constant>() {
            c.get().address == me.address
        } else if let Ok(v) = other.extract::<isize>() {
            v == me.address
        } else {
            return Ok(py.NotImplemented());
        };
        Ok(equal.into_pyobject(py)?.to_owned().into_any().unbind())
    }
    fn __repr__(&self) -> &'static str {
        self.name
    }
    fn __reduce__(&self) -> &'static str {
        self.name
    }
    /// # Safety
    /// Called by Python with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        // SAFETY: an empty buffer at the constant's address (never
        // dereferenced: its length is zero), owned by no object, as
        // mpi4py exports it.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                std::ptr::null_mut(),
                slf.get().address as *mut std::ffi::c_void,
                0,
                0,
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}
}

/// `MPI.BOTTOM`: the address zero, the base of absolute-address datatypes.
#[pyclass(module = "oxmpi.MPI", name = "BottomType", extends = Constant, frozen)]
pub struct Bottom;

#[pymethods]
impl Bottom {
    #[new]
    pub fn new() -> (Self, Constant) {
        (Bottom, Constant::new("BOTTOM", 0))
    }
}

/// `MPI.buffer`: a view of raw memory, usable wherever a buffer is.
///
/// It exports its memory through the buffer protocol; `release()` while an
/// export is alive keeps the memory until the export goes, so no view of
/// it ever dangles.
#[pyclass(module = "oxmpi.MPI", name = "buffer")]
pub struct PyMemBuffer {
    /// The memory and who keeps it alive (None: the empty buffer).
    view: Option<BufView>,
    /// Memory owned by this buffer (`Alloc_mem`), with no Python owner.
    owned: Option<Py<Allocation>>,
    readonly: bool,
    exports: AtomicUsize,
    /// Memory released by `release()` while exported: kept until the
    /// last export made before the release goes away.
    retired: std::sync::Mutex<Vec<(BufView, Option<Py<Allocation>>)>>,
}

impl PyMemBuffer {
    /// `buffer()`: no memory.
    pub fn new_empty() -> PyMemBuffer {
        PyMemBuffer::empty()
    }

    fn empty() -> PyMemBuffer {
        PyMemBuffer {
            view: None,
            owned: None,
            readonly: false,
            exports: AtomicUsize::new(0),
            retired: Default::default(),
        }
    }

    /// A buffer over `view` (window memory, for `Win.tomemory`).
    pub(crate) fn from_view(view: BufView, readonly: bool) -> PyMemBuffer {
        PyMemBuffer::with_view(view, readonly)
    }

    fn with_view(view: BufView, readonly: bool) -> PyMemBuffer {
        PyMemBuffer {
            view: Some(view),
            owned: None,
            readonly,
            exports: AtomicUsize::new(0),
            retired: Default::default(),
        }
    }

    pub fn ptr(&self) -> *mut u8 {
        self.view
            .as_ref()
            .map_or(std::ptr::null_mut(), BufView::ptr)
    }

    pub fn len(&self) -> usize {
        self.view.as_ref().map_or(0, BufView::len)
    }

    fn device(&self) -> i32 {
        self.view.as_ref().map_or(0, |v| v.device)
    }

    /// The `Alloc_mem` result: `nbytes` of zeroed memory owned by the buffer.
    pub fn alloc_mem(py: Python<'_>, nbytes: usize) -> PyResult<PyMemBuffer> {
        let a = Allocation::new(py, nbytes)?;
        let view = BufView::unowned(a.get().ptr(), nbytes, false);
        Ok(PyMemBuffer {
            view: Some(view),
            owned: Some(a.unbind()),
            readonly: false,
            exports: AtomicUsize::new(0),
            retired: Default::default(),
        })
    }

    /// A sub-buffer of `parent`: holds an export of it, so the parent's
    /// memory cannot be released underneath.
    fn slice(parent: &Bound<'_, PyMemBuffer>, start: usize, len: usize) -> PyResult<PyMemBuffer> {
        let readonly = parent.borrow().readonly;
        let whole = BufView::get_flags(parent.as_any(), ffi::PyBUF_SIMPLE)?;
        Ok(PyMemBuffer::with_view(whole.narrow(start, len), readonly))
    }

    fn check_index(&self, item: &Bound<'_, PyAny>) -> PyResult<usize> {
        let len = self.len() as isize;
        let mut i: isize = item
            .call_method0("__index__")
            .and_then(|v| v.extract())
            .map_err(|_| PyIndexError::new_err("cannot fit index into an index-sized integer"))?;
        if i < 0 {
            i += len;
        }
        if i < 0 || i >= len {
            return Err(PyIndexError::new_err("index out of range"));
        }
        Ok(i as usize)
    }

    fn check_slice(&self, s: &Bound<'_, PySlice>) -> PyResult<(usize, usize)> {
        let ind = s.indices(self.len() as isize)?;
        if ind.step != 1 {
            return Err(PyIndexError::new_err("slice with step not supported"));
        }
        Ok((ind.start as usize, ind.slicelength))
    }
}

fn is_index(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: `obj` is a live object.
    unsafe { ffi::PyIndex_Check(obj.as_ptr()) != 0 }
}

#[pymethods]
impl PyMemBuffer {
    /// `buffer()` is empty; `buffer(obj)` views `obj`'s memory.
    #[new]
    #[pyo3(signature = (*args))]
    fn new(args: &Bound<'_, PyTuple>) -> PyResult<PyMemBuffer> {
        if args.is_empty() {
            return Ok(PyMemBuffer::empty());
        }
        let obj = args.get_item(0)?;
        let view = buffer_simple(&obj, false)?;
        let readonly = view.readonly();
        Ok(PyMemBuffer::with_view(view, readonly))
    }

    /// Allocates `nbytes` of memory (always zeroed, so `clear` is moot).
    #[staticmethod]
    #[pyo3(signature = (nbytes, clear=false))]
    fn allocate(py: Python<'_>, nbytes: isize, clear: bool) -> PyResult<PyMemBuffer> {
        let _ = clear;
        if nbytes < 0 {
            return Err(PyValueError::new_err("expecting non-negative size"));
        }
        let a = Allocation::new(py, nbytes as usize)?;
        let view = BufView::get_flags(a.as_any(), ffi::PyBUF_SIMPLE)?;
        Ok(PyMemBuffer::with_view(view, false))
    }

    #[staticmethod]
    #[pyo3(signature = (obj, readonly=false))]
    fn frombuffer(obj: &Bound<'_, PyAny>, readonly: bool) -> PyResult<PyMemBuffer> {
        let view = buffer_simple(obj, !readonly)?;
        Ok(PyMemBuffer::with_view(view, readonly))
    }

    #[staticmethod]
    #[pyo3(signature = (address, nbytes, readonly=false))]
    fn fromaddress(address: usize, nbytes: isize, readonly: bool) -> PyResult<PyMemBuffer> {
        if nbytes < 0 {
            return Err(PyValueError::new_err(
                "expecting non-negative buffer length",
            ));
        }
        if nbytes > 0 && address == 0 {
            return Err(PyValueError::new_err("expecting non-NULL address"));
        }
        let view = BufView::unowned(address as *mut u8, nbytes as usize, readonly);
        Ok(PyMemBuffer::with_view(view, readonly))
    }

    #[getter]
    fn address(&self) -> usize {
        self.ptr() as usize
    }

    #[getter]
    fn obj(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        if self.owned.is_some() {
            return None;
        }
        self.view
            .as_ref()
            .and_then(|v| v.obj(py))
            .map(Bound::unbind)
    }

    #[getter]
    fn nbytes(&self) -> usize {
        self.len()
    }

    #[getter]
    fn readonly(&self) -> bool {
        self.readonly
    }

    #[getter]
    fn format(&self) -> String {
        self.view.as_ref().map_or("B", |v| v.format()).to_owned()
    }

    #[getter]
    fn itemsize(&self) -> usize {
        self.view.as_ref().map_or(1, |v| v.itemsize().max(1))
    }

    #[pyo3(signature = (format, shape=None))]
    fn cast<'py>(
        slf: &Bound<'py, Self>,
        format: &Bound<'py, PyAny>,
        shape: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        interop::check_cpu_device(slf.borrow().device())?;
        let mv = PyMemoryView::from(slf.as_any())?;
        match shape {
            Some(s) => mv.call_method1("cast", (format, s)),
            None => mv.call_method1("cast", (format,)),
        }
    }

    #[pyo3(signature = (order=None))]
    fn tobytes<'py>(
        &self,
        py: Python<'py>,
        order: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let _ = order;
        interop::check_cpu_device(self.device())?;
        if self.len() == 0 {
            return Ok(PyBytes::new(py, b""));
        }
        // SAFETY: the view keeps `len` bytes at `ptr` alive.
        let data = unsafe { std::slice::from_raw_parts(self.ptr(), self.len()) };
        Ok(PyBytes::new(py, data))
    }

    fn toreadonly(slf: &Bound<'_, Self>) -> PyResult<PyMemBuffer> {
        let py = slf.py();
        let source = match slf.borrow().obj(py) {
            Some(o) => o.into_bound(py),
            None => slf.clone().into_any(),
        };
        let view = buffer_simple(&source, false)?;
        Ok(PyMemBuffer::with_view(view, true))
    }

    /// Releases the memory: the buffer becomes empty. Memoryviews made of
    /// it before stay valid (the memory is kept until they go).
    fn release(&mut self) -> PyResult<()> {
        let view = self.view.take();
        let owned = self.owned.take();
        self.readonly = false;
        if self.exports.load(Ordering::Acquire) > 0 {
            if let Some(v) = view {
                self.retired
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((v, owned));
            }
        }
        Ok(())
    }

    /// # Safety
    /// Called by Python with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        let this = slf.borrow();
        // SAFETY: `view` is valid per the buffer protocol; the memory stays
        // alive and in place while exports exist (release refuses).
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                this.ptr().cast(),
                this.len() as ffi::Py_ssize_t,
                this.readonly as i32,
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        this.exports.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        if self.exports.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        }
    }

    fn __len__(&self) -> usize {
        self.len()
    }

    fn __getitem__(slf: &Bound<'_, Self>, item: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.borrow();
        interop::check_cpu_device(this.device())?;
        if is_index(item) {
            let i = this.check_index(item)?;
            // SAFETY: i < len, inside the viewed memory.
            let b = unsafe { *this.ptr().add(i) };
            return Ok(b.into_pyobject(py)?.into_any().unbind());
        }
        if let Ok(s) = item.cast::<PySlice>() {
            let (start, len) = this.check_slice(s)?;
            drop(this);
            let sub = PyMemBuffer::slice(slf, start, len)?;
            return Ok(Py::new(py, sub)?.into_any());
        }
        Err(PyTypeError::new_err("index must be integer or slice"))
    }

    fn __setitem__(&self, item: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        interop::check_cpu_device(self.device())?;
        if self.readonly {
            return Err(PyTypeError::new_err("buffer is read-only"));
        }
        if is_index(item) {
            let i = self.check_index(item)?;
            let b: u8 = value.extract()?;
            // SAFETY: i < len, inside the viewed (writable) memory.
            unsafe { *self.ptr().add(i) = b };
            return Ok(());
        }
        if let Ok(s) = item.cast::<PySlice>() {
            let (start, len) = self.check_slice(s)?;
            if is_index(value) {
                let b: u8 = value.extract()?;
                // SAFETY: [start, start+len) is inside the viewed memory.
                unsafe { std::ptr::write_bytes(self.ptr().add(start), b, len) };
                return Ok(());
            }
            let src = BufView::get(value, false, false)?;
            if src.len() != len {
                return Err(PyValueError::new_err("slice length does not match buffer"));
            }
            // SAFETY: both ranges are `len` bytes of live memory; they may
            // overlap (a slice of this buffer), hence copy (memmove).
            unsafe { std::ptr::copy(src.ptr(), self.ptr().add(start), len) };
            return Ok(());
        }
        Err(PyTypeError::new_err("index must be integer or slice"))
    }

    fn __delitem__(&self, _item: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(PyNotImplementedError::new_err(
            "buffer does not support item deletion",
        ))
    }
}

/// `PyMPI_GetBuffer(obj, PyBUF_SIMPLE [| PyBUF_WRITABLE])`.
fn buffer_simple(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<BufView> {
    BufView::get(obj, writable, false)
}

/// `MPI.Alloc_mem(size, info=INFO_NULL)`: memory for message passing.
#[pyfunction]
#[pyo3(name = "Alloc_mem", signature = (size, info=None))]
pub fn alloc_mem(
    py: Python<'_>,
    size: isize,
    info: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyMemBuffer> {
    let _ = info;
    if size < 0 {
        return Err(crate::errors::mpi_error(
            py,
            oxmpi::error::class::ERR_ARG,
            &format!("invalid argument: negative size {size}"),
        ));
    }
    PyMemBuffer::alloc_mem(py, size as usize)
}

/// `MPI.Free_mem(mem)`: frees what `Alloc_mem` returned (and empties the
/// buffer object).
#[pyfunction]
#[pyo3(name = "Free_mem")]
pub fn free_mem(mem: &Bound<'_, PyMemBuffer>) -> PyResult<()> {
    mem.borrow_mut().release()
}

/// `MPI.Get_address(location)`: the address of a buffer's memory (0 for
/// BOTTOM).
#[pyfunction]
#[pyo3(name = "Get_address")]
pub fn get_address(location: &Bound<'_, PyAny>) -> PyResult<isize> {
    if let Ok(c) = location.cast::<Constant>() {
        return Ok(c.get().address);
    }
    if buffer::is_bottom(location) {
        return Ok(0);
    }
    // MPI_Aint is signed; user-space addresses fit.
    Ok(BufView::get(location, false, false)?.ptr() as isize)
}
