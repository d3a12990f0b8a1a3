//! `MPI.Status` (MPI-4.1 §3.2.5): source, tag, error, byte count and the
//! cancelled flag of a completed operation, settable as in mpi4py.

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyDict, PyMemoryView};

use oxmpi::backend::{Status, ANY_SOURCE, ANY_TAG, UNDEFINED};

use crate::datatype::PyDatatype;

/// The status as it sits in memory (`Status.tomemory()` exposes it as C
/// ints, the way mpi4py exposes `MPI_Status`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawStatus {
    pub source: i32,
    pub tag: i32,
    pub error: i32,
    pub cancelled: i32,
    /// Bytes received.
    pub count: i64,
}

/// Number of C ints in a status (`MPI.F_STATUS_SIZE`).
pub const STATUS_INTS: usize = std::mem::size_of::<RawStatus>() / 4;

impl RawStatus {
    /// The empty status (MPI-4.1 §3.7.3): ANY_SOURCE, ANY_TAG, success.
    pub const EMPTY: RawStatus = RawStatus {
        source: ANY_SOURCE,
        tag: ANY_TAG,
        error: 0,
        cancelled: 0,
        count: 0,
    };
}

impl From<Status> for RawStatus {
    fn from(st: Status) -> RawStatus {
        RawStatus {
            source: st.source,
            tag: st.tag,
            error: st.error,
            cancelled: st.cancelled as i32,
            count: st.count as i64,
        }
    }
}

/// What a receive or probe found.
#[pyclass(module = "oxmpi.MPI", name = "Status", subclass, weakref)]
#[derive(Clone)]
pub struct PyStatus {
    pub raw: RawStatus,
}

impl PyStatus {
    /// Stores `st` into an optional user-supplied Status object.
    pub fn fill(target: Option<&Bound<'_, PyStatus>>, st: Status) {
        Self::fill_raw(target, st.into());
    }

    pub fn fill_raw(target: Option<&Bound<'_, PyStatus>>, raw: RawStatus) {
        if let Some(t) = target {
            t.borrow_mut().raw = raw;
        }
    }
}

fn elem_size(dt: Option<&Bound<'_, PyDatatype>>) -> PyResult<usize> {
    match dt {
        Some(d) => Ok(d.get().get()?.size()),
        None => Ok(1),
    }
}

fn count_of(bytes: i64, dt: Option<&Bound<'_, PyDatatype>>) -> PyResult<i64> {
    let size = elem_size(dt)? as i64;
    if size == 0 {
        return Ok(if bytes == 0 { 0 } else { UNDEFINED as i64 });
    }
    if bytes % size != 0 {
        return Ok(UNDEFINED as i64);
    }
    Ok(bytes / size)
}

#[pymethods]
impl PyStatus {
    #[new]
    #[pyo3(signature = (status=None))]
    fn new(status: Option<&Bound<'_, PyStatus>>) -> PyStatus {
        PyStatus {
            raw: status.map_or(RawStatus::EMPTY, |s| s.borrow().raw),
        }
    }

    fn Get_source(&self) -> i32 {
        self.raw.source
    }
    fn Set_source(&mut self, source: i32) {
        self.raw.source = source;
    }
    fn Get_tag(&self) -> i32 {
        self.raw.tag
    }
    fn Set_tag(&mut self, tag: i32) {
        self.raw.tag = tag;
    }
    fn Get_error(&self) -> i32 {
        self.raw.error
    }
    fn Set_error(&mut self, error: i32) {
        self.raw.error = error;
    }

    #[getter]
    fn get_source(&self) -> i32 {
        self.raw.source
    }
    #[setter]
    fn set_source(&mut self, v: i32) {
        self.raw.source = v;
    }
    #[getter]
    fn get_tag(&self) -> i32 {
        self.raw.tag
    }
    #[setter]
    fn set_tag(&mut self, v: i32) {
        self.raw.tag = v;
    }
    #[getter]
    fn get_error(&self) -> i32 {
        self.raw.error
    }
    #[setter]
    fn set_error(&mut self, v: i32) {
        self.raw.error = v;
    }

    /// Number of top-level elements of `datatype` received (UNDEFINED if
    /// the byte count is not a multiple of its size).
    #[pyo3(signature = (datatype=None))]
    fn Get_count(&self, datatype: Option<&Bound<'_, PyDatatype>>) -> PyResult<i64> {
        count_of(self.raw.count, datatype)
    }

    /// Number of basic elements received; with predefined datatypes the
    /// same as `Get_count`.
    fn Get_elements(&self, datatype: &Bound<'_, PyDatatype>) -> PyResult<i64> {
        count_of(self.raw.count, Some(datatype))
    }

    fn Set_elements(&mut self, datatype: &Bound<'_, PyDatatype>, count: i64) -> PyResult<()> {
        self.raw.count = count.max(0) * elem_size(Some(datatype))? as i64;
        Ok(())
    }

    /// Byte count.
    #[getter]
    fn get_count(&self) -> i64 {
        self.raw.count
    }
    #[setter]
    fn set_count(&mut self, v: i64) {
        self.raw.count = v.max(0);
    }

    fn Is_cancelled(&self) -> bool {
        self.raw.cancelled != 0
    }

    fn Set_cancelled(&mut self, flag: bool) {
        self.raw.cancelled = flag as i32;
    }

    #[getter]
    fn get_cancelled(&self) -> bool {
        self.raw.cancelled != 0
    }
    #[setter]
    fn set_cancelled(&mut self, flag: bool) {
        self.raw.cancelled = flag as i32;
    }

    /// The status's memory as a writable memoryview of C ints.
    fn tomemory<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let ptr = &slf.borrow().raw as *const RawStatus as *mut std::ffi::c_void;
        let holder = Bound::new(
            py,
            StatusMemory {
                owner: slf.clone().unbind(),
                ptr: ptr as usize,
            },
        )?;
        PyMemoryView::from(holder.as_any())?.call_method1("cast", ("i",))
    }

    /// The status as a list of integers (mpi4py's Fortran view).
    fn py2f(&self) -> Vec<i64> {
        vec![
            self.raw.source as i64,
            self.raw.tag as i64,
            self.raw.error as i64,
            self.raw.cancelled as i64,
            self.raw.count & 0xffff_ffff,
            self.raw.count >> 32,
        ]
    }

    #[classmethod]
    fn f2py(_cls: &Bound<'_, pyo3::types::PyType>, arg: Vec<i64>) -> PyResult<PyStatus> {
        if arg.len() < STATUS_INTS {
            return Err(PyTypeError::new_err(format!(
                "expecting a list of {STATUS_INTS} integers"
            )));
        }
        Ok(PyStatus {
            raw: RawStatus {
                source: arg[0] as i32,
                tag: arg[1] as i32,
                error: arg[2] as i32,
                cancelled: arg[3] as i32,
                count: (arg[4] & 0xffff_ffff) | (arg[5] << 32),
            },
        })
    }

    fn __getstate__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("source", self.raw.source)?;
        d.set_item("tag", self.raw.tag)?;
        d.set_item("error", self.raw.error)?;
        d.set_item("count", self.raw.count)?;
        d.set_item("cancelled", self.raw.cancelled != 0)?;
        Ok(d)
    }

    fn __setstate__(&mut self, state: &Bound<'_, PyDict>) -> PyResult<()> {
        let get = |k: &str| -> PyResult<Option<Bound<'_, PyAny>>> { state.get_item(k) };
        if let Some(v) = get("source")? {
            self.raw.source = v.extract()?;
        }
        if let Some(v) = get("tag")? {
            self.raw.tag = v.extract()?;
        }
        if let Some(v) = get("error")? {
            self.raw.error = v.extract()?;
        }
        if let Some(v) = get("count")? {
            self.raw.count = v.extract()?;
        }
        if let Some(v) = get("cancelled")? {
            self.raw.cancelled = v.is_truthy()? as i32;
        }
        Ok(())
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (), Bound<'py, PyDict>)> {
        let state = slf.borrow().__getstate__(slf.py())?;
        Ok((slf.get_type().into_any(), (), state))
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(o) = other.cast::<PyStatus>() else {
            return Ok(py.NotImplemented());
        };
        let eq = o.borrow().raw == self.raw;
        let r = match op {
            CompareOp::Eq => eq,
            CompareOp::Ne => !eq,
            _ => return Err(PyTypeError::new_err("unorderable type 'oxmpi.MPI.Status'")),
        };
        Ok(r.into_pyobject(py)?.to_owned().into_any().unbind())
    }

    fn __repr__(&self) -> String {
        format!(
            "<oxmpi.MPI.Status source={} tag={} error={} count={}>",
            self.raw.source, self.raw.tag, self.raw.error, self.raw.count
        )
    }
}

/// Exports a Status's memory to `tomemory`'s memoryview, keeping the
/// Status alive.
#[pyclass(module = "oxmpi.MPI", name = "_StatusMemory", frozen)]
struct StatusMemory {
    owner: Py<PyStatus>,
    /// Address of the owner's `RawStatus` (stable: PyO3 keeps a class's
    /// value in place inside its Python object).
    ptr: usize,
}

#[pymethods]
impl StatusMemory {
    /// # Safety
    /// Called by Python with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        let _ = &this.owner;
        // SAFETY: `ptr` addresses the owner's RawStatus, which lives (and
        // stays in place) as long as the owner, which this object and the
        // view keep alive. Python writes through the memoryview only while
        // it holds the GIL, when no Rust reference to the status is alive.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                this.ptr as *mut std::ffi::c_void,
                std::mem::size_of::<RawStatus>() as ffi::Py_ssize_t,
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
