//! What the MPI handle classes (Comm, Group, Info, Errhandler, Datatype)
//! share: they compare by handle identity, cannot be ordered, and pickle
//! as mpi4py pickles them.

use std::sync::Arc;

use pyo3::basic::CompareOp;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

/// Whether two handles are the same (both null, or one object).
pub fn same<T: ?Sized>(a: Option<&Arc<T>>, b: Option<&Arc<T>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// `__richcmp__` of a handle: `same` is None when the other object is not
/// of the class (then Python tries the reflected operation).
pub fn richcmp(slf: &Bound<'_, PyAny>, same: Option<bool>, op: CompareOp) -> PyResult<Py<PyAny>> {
    let py = slf.py();
    let Some(same) = same else {
        return Ok(py.NotImplemented());
    };
    let result = match op {
        CompareOp::Eq => same,
        CompareOp::Ne => !same,
        _ => {
            let t = slf.get_type();
            return Err(PyTypeError::new_err(format!(
                "unorderable type '{}.{}'",
                t.module()?,
                t.name()?
            )));
        }
    };
    Ok(result.into_pyobject(py)?.to_owned().into_any().unbind())
}

/// mpi4py's pickling of handles: a predefined object pickles as its name,
/// a copy of one as a call rebuilding it from the original; anything else
/// cannot be pickled.
pub fn reduce<'py>(
    slf: &Bound<'py, PyAny>,
    predefined: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    if let Some(name) = predefined {
        let orig = py.import("oxmpi.MPI")?.getattr(name)?;
        if orig.is(slf) {
            return Ok(PyString::new(py, name).into_any());
        }
        let newobj = py.import("copyreg")?.getattr("__newobj__")?;
        let args = PyTuple::new(py, [slf.get_type().into_any(), orig])?;
        return Ok(PyTuple::new(py, [newobj, args.into_any()])?.into_any());
    }
    let t = slf.get_type();
    Err(PyValueError::new_err(format!(
        "cannot serialize '{}.{}' instance",
        t.module()?,
        t.name()?
    )))
}
