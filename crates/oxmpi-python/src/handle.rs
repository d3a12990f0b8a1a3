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

/// Integer handles of one kind of object (MPI_*_toint / MPI_*_c2f and
/// mpi4py's `handle`): a small positive number per object, the same for
/// every Python object naming it and stable while it lives; 0 is the null
/// handle. Numbers are given on first use and never reused, so a stale
/// number is refused rather than naming another object.
pub struct IntHandles<T: ?Sized> {
    table: std::sync::Mutex<IntTable<T>>,
}

struct IntTable<T: ?Sized> {
    /// Address of a live object -> its number.
    by_addr: std::collections::HashMap<usize, i64>,
    /// Number -> the object, while it lives.
    by_int: std::collections::HashMap<i64, std::sync::Weak<T>>,
    next: i64,
}

impl<T: ?Sized> Default for IntHandles<T> {
    fn default() -> Self {
        IntHandles {
            table: std::sync::Mutex::new(IntTable {
                by_addr: Default::default(),
                by_int: Default::default(),
                next: 1,
            }),
        }
    }
}

impl<T: ?Sized> IntHandles<T> {
    /// The number of `obj` (0 for the null handle).
    pub fn toint(&self, obj: Option<&Arc<T>>) -> i64 {
        let Some(obj) = obj else { return 0 };
        let addr = Arc::as_ptr(obj) as *const () as usize;
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&n) = t.by_addr.get(&addr) {
            // The address may belong to a dead object with a number.
            if t.by_int
                .get(&n)
                .and_then(|w| w.upgrade())
                .is_some_and(|o| Arc::ptr_eq(&o, obj))
            {
                return n;
            }
        }
        if t.by_int.len() >= 64 && t.by_int.len().is_power_of_two() {
            // Forget the dead now and then, so the tables stay small.
            t.by_int.retain(|_, w| w.strong_count() > 0);
            let live: std::collections::HashSet<i64> = t.by_int.keys().copied().collect();
            t.by_addr.retain(|_, n| live.contains(n));
        }
        let n = t.next;
        t.next += 1;
        t.by_addr.insert(addr, n);
        t.by_int.insert(n, Arc::downgrade(obj));
        n
    }

    /// The object numbered `n`: None for 0 (the null handle); ValueError
    /// for a number that names no live object of this kind.
    pub fn lookup(&self, n: i64, kind: &str) -> PyResult<Option<Arc<T>>> {
        if n == 0 {
            return Ok(None);
        }
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match t.by_int.get(&n).and_then(|w| w.upgrade()) {
            Some(o) => Ok(Some(o)),
            None => Err(PyValueError::new_err(format!("no {kind} has handle {n}"))),
        }
    }
}

/// A handle class's object for an integer handle: `cls()` for the null
/// handle, else `cls(base)` where `base` is a Python object of the base
/// class holding the handle (so subclasses check their kind as their
/// constructor does).
pub fn rebuild<'py, B: pyo3::PyClass + Into<pyo3::PyClassInitializer<B>>>(
    cls: &Bound<'py, pyo3::types::PyType>,
    base: Option<B>,
) -> PyResult<Bound<'py, PyAny>> {
    match base {
        None => cls.call0(),
        Some(b) => cls.call1((Bound::new(cls.py(), b)?,)),
    }
}

/// Whether `obj` is one of `oxmpi.MPI`'s module constants (MPI.INT,
/// MPI.COMM_WORLD, ...): mpi4py's `free()` leaves those alone, while it
/// turns any other object naming a predefined handle into the null one.
pub fn is_module_constant(obj: &Bound<'_, PyAny>) -> bool {
    let Ok(m) = obj.py().import("oxmpi.MPI") else {
        return false;
    };
    m.dict().values().iter().any(|v| v.is(obj))
}
