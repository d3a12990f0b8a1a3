//! `MPI.Op`: predefined operations with their Python meaning for objects,
//! and user operations from Python functions.

use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use oxmpi::datatype::Datatype;
use oxmpi::op::{Op, Predefined};

use crate::datatype::PyDatatype;
use crate::errors::{from_pyerr, IntoPy};

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

#[derive(Clone)]
enum Kind {
    Null,
    Predefined(Predefined),
    User { func: Arc<Py<PyAny>>, commute: bool },
}

/// A reduction operation.
#[pyclass(module = "oxmpi.MPI", name = "Op", subclass, frozen)]
pub struct PyOp {
    kind: Kind,
}

/// A read-only or writable memoryview over raw memory.
fn memview<'py>(
    py: Python<'py>,
    ptr: *const u8,
    len: usize,
    writable: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let flags = if writable {
        ffi::PyBUF_WRITE
    } else {
        ffi::PyBUF_READ
    };
    // SAFETY: the memory is valid for the duration of the user callback
    // (the reduction owns it); the memoryview does not outlive the call
    // unless the user stores it, which MPI forbids as well.
    unsafe {
        let p = ffi::PyMemoryView_FromMemory(ptr as *mut _, len as ffi::Py_ssize_t, flags);
        Bound::from_owned_ptr_or_err(py, p)
    }
}

impl PyOp {
    /// The runtime operation for buffer reductions.
    pub fn to_runtime(&self, pytype: &PyDatatype) -> PyResult<Op> {
        match &self.kind {
            Kind::Null => Err(PyValueError::new_err("OP_NULL is not a usable operation")),
            Kind::Predefined(p) => Ok(Op::Predefined(*p)),
            Kind::User { func, commute } => {
                let func = func.clone();
                let pytype = pytype.clone();
                let f = move |input: &[u8], inout: &mut [u8], _count: usize, _dt: &Datatype| {
                    Python::attach(|py| {
                        let a = memview(py, input.as_ptr(), input.len(), false)?;
                        let b = memview(py, inout.as_mut_ptr(), inout.len(), true)?;
                        func.bind(py).call1((a, b, pytype.clone()))?;
                        Ok(())
                    })
                    .map_err(from_pyerr)
                };
                Ok(Op::User {
                    f: Arc::new(f),
                    commute: *commute,
                })
            }
        }
    }

    /// Applies the operation to two Python objects: `x op y`, where `x`
    /// comes from the lower ranks.
    pub fn call_objects<'py>(
        &self,
        x: &Bound<'py, PyAny>,
        y: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        use Predefined::*;
        let p = match &self.kind {
            Kind::Null => return Err(PyValueError::new_err("OP_NULL is not a usable operation")),
            Kind::User { func, .. } => return func.bind(x.py()).call1((x, y)),
            Kind::Predefined(p) => *p,
        };
        let py = x.py();
        match p {
            Sum => x.add(y),
            Prod => x.mul(y),
            Max => Ok(if y.gt(x)? { y.clone() } else { x.clone() }),
            Min => Ok(if y.lt(x)? { y.clone() } else { x.clone() }),
            Land => Ok((x.is_truthy()? && y.is_truthy()?)
                .into_pyobject(py)?
                .to_owned()
                .into_any()),
            Lor => Ok((x.is_truthy()? || y.is_truthy()?)
                .into_pyobject(py)?
                .to_owned()
                .into_any()),
            Lxor => Ok((x.is_truthy()? != y.is_truthy()?)
                .into_pyobject(py)?
                .to_owned()
                .into_any()),
            Band => x.bitand(y),
            Bor => x.bitor(y),
            Bxor => x.bitxor(y),
            MaxLoc | MinLoc => {
                let (u, i) = (x.get_item(0)?, x.get_item(1)?);
                let (v, j) = (y.get_item(0)?, y.get_item(1)?);
                let better_x = if p == MaxLoc { u.gt(&v)? } else { u.lt(&v)? };
                let better_y = if p == MaxLoc { v.gt(&u)? } else { v.lt(&u)? };
                if better_x {
                    Ok(pyo3::types::PyTuple::new(py, [u, i])?.into_any())
                } else if better_y || j.lt(&i)? {
                    Ok(pyo3::types::PyTuple::new(py, [v, j])?.into_any())
                } else {
                    Ok(pyo3::types::PyTuple::new(py, [u, i])?.into_any())
                }
            }
            Replace => Ok(y.clone()),
            NoOp => Ok(x.clone()),
        }
    }
}

/// An `op` argument: an `MPI.Op`, or any Python callable f(x, y) for
/// object reductions.
pub fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<PyOp> {
    if let Ok(op) = obj.cast::<PyOp>() {
        return Ok(PyOp {
            kind: op.get().kind.clone(),
        });
    }
    if obj.is_callable() {
        return Ok(PyOp {
            kind: Kind::User {
                func: Arc::new(obj.clone().unbind()),
                commute: false,
            },
        });
    }
    Err(PyTypeError::new_err("op must be an MPI.Op or a callable"))
}

#[pymethods]
impl PyOp {
    #[new]
    #[pyo3(signature = (op=None))]
    fn new(op: Option<&Bound<'_, PyOp>>) -> PyOp {
        PyOp {
            kind: op.map(|o| o.get().kind.clone()).unwrap_or(Kind::Null),
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
        Ok(PyOp {
            kind: Kind::User {
                func: Arc::new(function.clone().unbind()),
                commute,
            },
        })
    }

    fn Free(&self) {}

    fn Is_commutative(&self) -> bool {
        match &self.kind {
            Kind::User { commute, .. } => *commute,
            _ => true,
        }
    }

    #[getter]
    fn is_commutative(&self) -> bool {
        self.Is_commutative()
    }

    #[getter]
    fn is_predefined(&self) -> bool {
        !matches!(self.kind, Kind::User { .. })
    }

    /// Op.Reduce_local(inbuf, inoutbuf): inoutbuf = inbuf op inoutbuf.
    fn Reduce_local(
        &self,
        py: Python<'_>,
        inbuf: &Bound<'_, PyAny>,
        inoutbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let a = crate::buffer::parse(inbuf, false)?;
        let b = crate::buffer::parse(inoutbuf, true)?;
        if a.count != b.count {
            return Err(PyValueError::new_err(format!(
                "mismatch in send count {} and receive count {}",
                a.count, b.count
            )));
        }
        let op = self.to_runtime(&b.pytype)?;
        let input = a.raw;
        let inout = b.raw;
        let (count, dtype) = (b.count, b.dtype.clone());
        let _ = py;
        // SAFETY: both views are held alive by `a` and `b` for this call.
        op.apply(
            unsafe { input.as_slice() },
            unsafe { inout.as_mut_slice() },
            count,
            &dtype,
        )
        .py()
    }

    fn __call__<'py>(
        &self,
        x: &Bound<'py, PyAny>,
        y: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.call_objects(x, y)
    }

    fn __bool__(&self) -> bool {
        !matches!(self.kind, Kind::Null)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<PyOp>() {
            Ok(o) => match (&self.kind, &o.get().kind) {
                (Kind::Null, Kind::Null) => true,
                (Kind::Predefined(a), Kind::Predefined(b)) => a == b,
                (Kind::User { func: a, .. }, Kind::User { func: b, .. }) => Arc::ptr_eq(a, b),
                _ => false,
            },
            Err(_) => false,
        }
    }

    fn __hash__(&self) -> u64 {
        match &self.kind {
            Kind::Null => 0,
            Kind::Predefined(p) => *p as u64 + 1,
            Kind::User { func, .. } => Arc::as_ptr(func) as u64,
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
