//! `MPI.Op` (MPI-4.1 §6.9): predefined operations, with their Python
//! meaning when applied to objects, and user operations from Python
//! functions (`Op.Create`).
//!
//! As in mpi4py, at most 32 user operations exist at once (`Op.Create`
//! beyond that raises RuntimeError until some are freed), a user operation
//! called on objects receives `(x, y, None)`, and one used in a buffer
//! reduction receives `(invec, inoutvec, datatype)` with memoryviews over
//! the operands.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyIndexError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PySlice, PyTuple};

use oxmpi::datatype::Datatype;
use oxmpi::op::{Op, Predefined};

use crate::datatype::PyDatatype;
use crate::errors::from_pyerr;

const NAMES: &[(&str, Predefined)] = &[
    ("MAX", Predefined::Max),
    ("MIN", Predefined::Min),
    ("SUM", Predefined::Sum),
    ("PROD", Predefined::Prod),
    ("LAND", Predefined::Land),
    ("BAND", Predefined::Band),
    ("LOR", Predefined::Lor),
    ("BOR", Predefined::Bor),
    ("LXOR", Predefined::Lxor),
    ("BXOR", Predefined::Bxor),
    ("MAXLOC", Predefined::MaxLoc),
    ("MINLOC", Predefined::MinLoc),
    ("REPLACE", Predefined::Replace),
    ("NO_OP", Predefined::NoOp),
];

/// How many user operations may exist at once (mpi4py's limit).
const MAX_USER_OPS: usize = 32;
/// Integer handles (`Op.toint`): 0 is OP_NULL, 1.. the predefined
/// operations in `NAMES` order, `USER_HANDLE + slot` the user operations.
const USER_HANDLE: i64 = 100;

/// A registered user operation.
#[derive(Clone)]
struct UserOp {
    func: Arc<Py<PyAny>>,
    commute: bool,
}

/// The functions of the live user operations, by slot.
static REGISTRY: Mutex<[Option<UserOp>; MAX_USER_OPS]> = Mutex::new([const { None }; MAX_USER_OPS]);

fn registry() -> std::sync::MutexGuard<'static, [Option<UserOp>; MAX_USER_OPS]> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone)]
enum Kind {
    Null,
    Predefined(Predefined),
    /// A user operation in registry slot `slot`; `linked` is false for an
    /// operation rebuilt from its integer handle, which (as in mpi4py)
    /// knows the operation but not its Python registration, so it cannot
    /// be pickled nor free the slot.
    User {
        op: UserOp,
        slot: usize,
        linked: bool,
    },
    /// A plain Python callable `f(x, y)` given as `op` to an object
    /// reduction.
    Callable(Arc<Py<PyAny>>),
}

/// A reduction operation.
#[pyclass(module = "oxmpi.MPI", name = "Op", subclass, weakref)]
pub struct PyOp {
    kind: Kind,
}

/// The operands handed to a user operation's function (mpi4py passes
/// `MPI.buffer` objects): raw bytes with the buffer protocol, byte
/// indexing, and slice assignment from any buffer of the same length.
/// Valid during the call only, as in MPI. Not registered in the module: it
/// is only ever made here.
#[pyclass(module = "oxmpi.MPI", name = "buffer")]
pub struct OpBuffer {
    addr: usize,
    len: usize,
    readonly: bool,
}

impl OpBuffer {
    fn new(ptr: *const u8, len: usize, readonly: bool) -> OpBuffer {
        OpBuffer {
            addr: ptr as usize,
            len,
            readonly,
        }
    }

    /// `(start, len)` of a unit-step slice.
    fn slice(&self, s: &Bound<'_, PySlice>) -> PyResult<(usize, usize)> {
        let ind = s.indices(self.len as isize)?;
        if ind.step != 1 {
            return Err(PyIndexError::new_err("slice with step not supported"));
        }
        Ok((ind.start as usize, ind.slicelength))
    }

    fn index(&self, i: isize) -> PyResult<usize> {
        let j = if i < 0 { i + self.len as isize } else { i };
        if j < 0 || j as usize >= self.len {
            return Err(PyIndexError::new_err("index out of range"));
        }
        Ok(j as usize)
    }
}

#[pymethods]
impl OpBuffer {
    /// # Safety
    /// Called by Python with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        let (addr, len, ro) = {
            let b = slf.borrow();
            (b.addr, b.len, b.readonly)
        };
        // SAFETY: `view` is valid per the buffer protocol; the memory is
        // the reduction's operand, valid during the user call.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                addr as *mut _,
                len as ffi::Py_ssize_t,
                ro as std::os::raw::c_int,
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
        self.len
    }

    fn __getitem__(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        if let Ok(s) = item.cast::<PySlice>() {
            let (start, n) = self.slice(s)?;
            let sub = OpBuffer::new((self.addr + start) as *const u8, n, self.readonly);
            return Ok(Py::new(py, sub)?.into_any());
        }
        let i: isize = item
            .extract()
            .map_err(|_| PyTypeError::new_err("index must be integer or slice"))?;
        let j = self.index(i)?;
        // SAFETY: j < len, inside the operand.
        let v = unsafe { *((self.addr + j) as *const u8) };
        Ok(v.into_pyobject(py)?.into_any().unbind())
    }

    fn __setitem__(&self, item: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.readonly {
            return Err(PyTypeError::new_err("buffer is read-only"));
        }
        if let Ok(s) = item.cast::<PySlice>() {
            let (start, n) = self.slice(s)?;
            let dst = (self.addr + start) as *mut u8;
            if let Ok(byte) = value.extract::<u8>() {
                // SAFETY: [start, start + n) lies inside the operand.
                unsafe { std::ptr::write_bytes(dst, byte, n) };
                return Ok(());
            }
            let src = crate::buffer::BufView::get(value, false, true)?;
            if src.len() != n {
                return Err(PyValueError::new_err("slice length does not match buffer"));
            }
            // SAFETY: both ranges are valid for n bytes; `copy` allows
            // overlap.
            unsafe { std::ptr::copy(src.ptr(), dst, n) };
            return Ok(());
        }
        let i: isize = item
            .extract()
            .map_err(|_| PyTypeError::new_err("index must be integer or slice"))?;
        let j = self.index(i)?;
        let v: u8 = value.extract()?;
        // SAFETY: j < len, inside the operand, which is writable.
        unsafe { *((self.addr + j) as *mut u8) = v };
        Ok(())
    }

    fn tobytes<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        // SAFETY: the operand's bytes, valid during the user call.
        let data = unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) };
        pyo3::types::PyBytes::new(py, data)
    }

    #[pyo3(signature = (format, shape=None))]
    fn cast<'py>(
        slf: &Bound<'py, Self>,
        format: &str,
        shape: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mv = pyo3::types::PyMemoryView::from(slf.as_any())?;
        match shape {
            Some(s) => mv.call_method1("cast", (format, s)),
            None => mv.call_method1("cast", (format,)),
        }
    }

    #[getter]
    fn address(&self) -> usize {
        self.addr
    }

    #[getter]
    fn nbytes(&self) -> usize {
        self.len
    }

    #[getter]
    fn readonly(&self) -> bool {
        self.readonly
    }

    #[getter]
    fn format(&self) -> &'static str {
        "B"
    }

    #[getter]
    fn itemsize(&self) -> usize {
        1
    }
}

fn name_of(p: Predefined) -> &'static str {
    NAMES
        .iter()
        .find(|(_, q)| *q == p)
        .map(|(n, _)| *n)
        .expect("every predefined op is named")
}

impl PyOp {
    /// The runtime operation, for buffer reductions on `pytype`.
    pub fn to_runtime(&self, pytype: &PyDatatype) -> PyResult<Op> {
        match &self.kind {
            Kind::Null => Err(PyValueError::new_err("OP_NULL is not a usable operation")),
            Kind::Predefined(p) => Ok(Op::Predefined(*p)),
            Kind::Callable(_) => Err(PyTypeError::new_err(
                "buffer reductions need an MPI.Op; use MPI.Op.Create(function)",
            )),
            Kind::User { op, .. } => {
                let func = op.func.clone();
                let pytype = pytype.clone();
                let f = move |input: &[u8], inout: &mut [u8], _count: usize, _dt: &Datatype| {
                    Python::attach(|py| {
                        let a = Py::new(py, OpBuffer::new(input.as_ptr(), input.len(), true))?;
                        let b = Py::new(py, OpBuffer::new(inout.as_ptr(), inout.len(), false))?;
                        let dt = Py::new(py, pytype.clone())?;
                        func.bind(py).call1((a, b, dt))?;
                        Ok(())
                    })
                    .map_err(from_pyerr)
                };
                Ok(Op::User {
                    f: Arc::new(f),
                    commute: op.commute,
                })
            }
        }
    }

    /// Applies the operation to two Python objects: `x op y`, where `x`
    /// comes from the lower ranks (mpi4py's semantics: `op_MAX` returns `y`
    /// only if `y > x`, MAXLOC/MINLOC take `(value, index)` pairs and break
    /// ties by the smaller index, REPLACE gives `y`, NO_OP `x`).
    pub fn call_objects<'py>(
        &self,
        x: &Bound<'py, PyAny>,
        y: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        use Predefined::*;
        let py = x.py();
        let p = match &self.kind {
            Kind::Null => return Err(PyValueError::new_err("cannot call user-defined operation")),
            Kind::User { op, .. } => return op.func.bind(py).call1((x, y, py.None())),
            Kind::Callable(f) => return f.bind(py).call1((x, y)),
            Kind::Predefined(p) => *p,
        };
        let boolean = |b: bool| -> PyResult<Bound<'py, PyAny>> {
            Ok(pyo3::types::PyBool::new(py, b).to_owned().into_any())
        };
        match p {
            Sum => x.add(y),
            Prod => x.mul(y),
            Max => Ok(if y.gt(x)? { y.clone() } else { x.clone() }),
            Min => Ok(if y.lt(x)? { y.clone() } else { x.clone() }),
            Land => boolean(x.is_truthy()? & y.is_truthy()?),
            Lor => boolean(x.is_truthy()? | y.is_truthy()?),
            Lxor => boolean(x.is_truthy()? ^ y.is_truthy()?),
            Band => x.bitand(y),
            Bor => x.bitor(y),
            Bxor => x.bitxor(y),
            MaxLoc | MinLoc => {
                let (u, i) = unpack_pair(x)?;
                let (v, j) = unpack_pair(y)?;
                let (better_u, better_v) = if p == MaxLoc {
                    (u.gt(&v)?, v.gt(&u)?)
                } else {
                    (u.lt(&v)?, v.lt(&u)?)
                };
                let pick_v = !better_u && (better_v || j.lt(&i)?);
                let (w, k) = if pick_v { (v, j) } else { (u, i) };
                Ok(PyTuple::new(py, [w, k])?.into_any())
            }
            Replace => Ok(y.clone()),
            NoOp => Ok(x.clone()),
        }
    }

    fn handle(&self) -> i64 {
        match &self.kind {
            Kind::Null | Kind::Callable(_) => 0,
            Kind::Predefined(p) => {
                1 + NAMES.iter().position(|(_, q)| q == p).expect("named") as i64
            }
            Kind::User { slot, .. } => USER_HANDLE + *slot as i64,
        }
    }
}

/// `(value, index)` of a MAXLOC/MINLOC operand.
fn unpack_pair<'py>(t: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let mut it = t.try_iter()?;
    let (Some(a), Some(b), None) = (it.next(), it.next(), it.next()) else {
        return Err(PyValueError::new_err(
            "MAXLOC/MINLOC operands must be (value, index) pairs",
        ));
    };
    Ok((a?, b?))
}

/// An `op` argument of an object reduction: an `MPI.Op`, or any callable
/// `f(x, y)`; None means SUM.
pub fn from_py_object_op(obj: Option<&Bound<'_, PyAny>>) -> PyResult<PyOp> {
    match obj {
        None => Ok(sum()),
        Some(o) if o.is_none() => Ok(sum()),
        Some(o) => {
            if let Ok(op) = o.cast::<PyOp>() {
                return Ok(PyOp {
                    kind: op.borrow().kind.clone(),
                });
            }
            if o.is_callable() {
                return Ok(PyOp {
                    kind: Kind::Callable(Arc::new(o.clone().unbind())),
                });
            }
            Err(PyTypeError::new_err("op must be an MPI.Op or a callable"))
        }
    }
}

/// An `op` argument of a buffer reduction: an `MPI.Op` (None means SUM).
pub fn from_py_buffer_op(obj: Option<&Bound<'_, PyAny>>) -> PyResult<PyOp> {
    match obj {
        None => Ok(sum()),
        Some(o) if o.is_none() => Ok(sum()),
        Some(o) => match o.cast::<PyOp>() {
            Ok(op) => Ok(PyOp {
                kind: op.borrow().kind.clone(),
            }),
            Err(_) => Err(PyTypeError::new_err(format!(
                "Argument 'op' has incorrect type (expected oxmpi.MPI.Op, got {})",
                o.get_type().name()?
            ))),
        },
    }
}

fn mpi_error_now(class: i32, msg: &str) -> PyErr {
    Python::attach(|py| crate::errors::mpi_error(py, class, msg))
}

fn sum() -> PyOp {
    PyOp {
        kind: Kind::Predefined(Predefined::Sum),
    }
}

#[pymethods]
impl PyOp {
    #[new]
    #[pyo3(signature = (op=None))]
    fn new(op: Option<&Bound<'_, PyOp>>) -> PyOp {
        PyOp {
            kind: op.map(|o| o.borrow().kind.clone()).unwrap_or(Kind::Null),
        }
    }

    /// Op.Create(function, commute=False): `function(invec, inoutvec,
    /// datatype)` computes `inoutvec = invec op inoutvec`.
    #[classmethod]
    #[pyo3(signature = (function, commute=false))]
    fn Create(
        _cls: &Bound<'_, pyo3::types::PyType>,
        function: &Bound<'_, PyAny>,
        commute: bool,
    ) -> PyResult<PyOp> {
        if !function.is_callable() {
            return Err(PyTypeError::new_err("Op.Create needs a callable"));
        }
        let op = UserOp {
            func: Arc::new(function.clone().unbind()),
            commute,
        };
        let mut reg = registry();
        let slot = reg.iter().position(Option::is_none).ok_or_else(|| {
            PyRuntimeError::new_err("cannot create too many user-defined reduction operations")
        })?;
        reg[slot] = Some(op.clone());
        Ok(PyOp {
            kind: Kind::User {
                op,
                slot,
                linked: true,
            },
        })
    }

    /// Frees a user operation (and its registry slot); the object becomes
    /// OP_NULL.
    fn Free(&mut self) -> PyResult<()> {
        match &self.kind {
            Kind::User { slot, linked, op } => {
                if *linked {
                    let mut reg = registry();
                    if reg[*slot]
                        .as_ref()
                        .is_some_and(|r| Arc::ptr_eq(&r.func, &op.func))
                    {
                        reg[*slot] = None;
                    }
                }
                self.kind = Kind::Null;
                Ok(())
            }
            Kind::Null => Err(mpi_error_now(
                oxmpi::error::class::ERR_OP,
                "cannot free OP_NULL",
            )),
            _ => Err(mpi_error_now(
                oxmpi::error::class::ERR_OP,
                "cannot free a predefined operation",
            )),
        }
    }

    /// Calls `Free` for a user operation; another object naming a
    /// predefined operation becomes OP_NULL; module constants (MPI.SUM)
    /// stay as they are.
    fn free(slf: &Bound<'_, Self>) -> PyResult<()> {
        if crate::handle::is_module_constant(slf.as_any()) {
            return Ok(());
        }
        let mut me = slf.borrow_mut();
        match me.kind {
            Kind::User { .. } => me.Free()?,
            _ => me.kind = Kind::Null,
        }
        Ok(())
    }

    fn Is_commutative(&self) -> PyResult<bool> {
        match &self.kind {
            Kind::User { op, .. } => Ok(op.commute),
            Kind::Predefined(_) => Ok(true),
            Kind::Callable(_) => Ok(false),
            Kind::Null => Err(mpi_error_now(
                oxmpi::error::class::ERR_OP,
                "OP_NULL has no commutativity",
            )),
        }
    }

    #[getter]
    fn is_commutative(&self) -> PyResult<bool> {
        self.Is_commutative()
    }

    #[getter]
    fn is_predefined(&self) -> bool {
        matches!(self.kind, Kind::Null | Kind::Predefined(_))
    }

    /// Op.Reduce_local(inbuf, inoutbuf): inoutbuf = inbuf op inoutbuf.
    fn Reduce_local(
        &self,
        py: Python<'_>,
        inbuf: &Bound<'_, PyAny>,
        inoutbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        crate::coll::reduce_local(py, self, inbuf, inoutbuf)
    }

    fn toint(&self) -> i64 {
        self.handle()
    }

    #[classmethod]
    fn fromint(_cls: &Bound<'_, pyo3::types::PyType>, handle: i64) -> PyResult<PyOp> {
        let kind = match handle {
            0 => Kind::Null,
            h if (1..=NAMES.len() as i64).contains(&h) => Kind::Predefined(NAMES[h as usize - 1].1),
            h if (USER_HANDLE..USER_HANDLE + MAX_USER_OPS as i64).contains(&h) => {
                let slot = (h - USER_HANDLE) as usize;
                let op = registry()[slot].clone().ok_or_else(|| {
                    PyValueError::new_err(format!("no user operation has handle {h}"))
                })?;
                Kind::User {
                    op,
                    slot,
                    linked: false,
                }
            }
            h => return Err(PyValueError::new_err(format!("invalid Op handle {h}"))),
        };
        Ok(PyOp { kind })
    }

    #[getter(handle)]
    fn handle_prop(&self) -> i64 {
        self.handle()
    }

    #[classmethod]
    fn fromhandle(cls: &Bound<'_, pyo3::types::PyType>, handle: i64) -> PyResult<PyOp> {
        Self::fromint(cls, handle)
    }

    fn py2f(&self) -> i64 {
        self.handle()
    }

    #[classmethod]
    fn f2py(cls: &Bound<'_, pyo3::types::PyType>, handle: i64) -> PyResult<PyOp> {
        Self::fromint(cls, handle)
    }

    fn __call__<'py>(
        &self,
        x: &Bound<'py, PyAny>,
        y: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.call_objects(x, y)
    }

    /// Predefined operations pickle by name (to the very constant);
    /// copies of them rebuild a copy; user operations pickle as
    /// `Op.Create(function, commute)`.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.borrow();
        match &this.kind {
            Kind::Null | Kind::Predefined(_) => {
                let name = match &this.kind {
                    Kind::Predefined(p) => name_of(*p),
                    _ => "OP_NULL",
                };
                let mpi = py.import("oxmpi.MPI")?;
                let constant = mpi.getattr(name)?;
                if constant.is(slf) {
                    return Ok(pyo3::types::PyString::new(py, name).into_any());
                }
                let newobj = py.import("copyreg")?.getattr("__newobj__")?;
                let args = PyTuple::new(py, [slf.get_type().into_any(), constant])?;
                Ok(PyTuple::new(py, [newobj, args.into_any()])?.into_any())
            }
            Kind::User { op, linked, .. } => {
                if !linked {
                    return Err(PyValueError::new_err(
                        "cannot pickle user-defined reduction operation",
                    ));
                }
                let create = slf.get_type().getattr("Create")?;
                let args = PyTuple::new(
                    py,
                    [
                        op.func.clone_ref(py).into_bound(py),
                        pyo3::types::PyBool::new(py, op.commute)
                            .to_owned()
                            .into_any(),
                    ],
                )?;
                Ok(PyTuple::new(py, [create, args.into_any()])?.into_any())
            }
            Kind::Callable(_) => Err(PyValueError::new_err("cannot pickle this operation")),
        }
    }

    fn __bool__(&self) -> bool {
        !matches!(self.kind, Kind::Null)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(o) = other.cast::<PyOp>() else {
            return Ok(py.NotImplemented());
        };
        let same = match (&self.kind, &o.borrow().kind) {
            (Kind::Null, Kind::Null) => true,
            (Kind::Predefined(a), Kind::Predefined(b)) => a == b,
            (Kind::User { op: a, slot: s, .. }, Kind::User { op: b, slot: t, .. }) => {
                s == t && Arc::ptr_eq(&a.func, &b.func)
            }
            _ => false,
        };
        Ok(pyo3::types::PyBool::new(py, same)
            .to_owned()
            .into_any()
            .unbind())
    }

    fn __ne__(&self, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let eq = self.__eq__(other)?;
        if eq.is(py.NotImplemented()) {
            return Ok(eq);
        }
        let b: bool = eq.extract(py)?;
        Ok(pyo3::types::PyBool::new(py, !b)
            .to_owned()
            .into_any()
            .unbind())
    }

    fn __hash__(&self) -> u64 {
        self.handle() as u64
    }

    fn __repr__(&self) -> String {
        match &self.kind {
            Kind::Null => "<oxmpi.MPI.Op OP_NULL>".into(),
            Kind::Predefined(p) => format!("<oxmpi.MPI.Op {}>", name_of(*p)),
            _ => "<oxmpi.MPI.Op user-defined>".into(),
        }
    }
}

/// The predefined operations as a dict name -> Op.
pub fn predefined_dict<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, p) in NAMES {
        d.set_item(
            *name,
            Py::new(
                py,
                PyOp {
                    kind: Kind::Predefined(*p),
                },
            )?,
        )?;
    }
    d.set_item("OP_NULL", Py::new(py, PyOp { kind: Kind::Null })?)?;
    Ok(d)
}
