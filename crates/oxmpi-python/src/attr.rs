//! Attribute caching (MPI-4.1 §7.7) for communicators and datatypes:
//! keyvals with Python copy/delete callbacks, and the attribute lists that
//! objects carry.
//!
//! Callbacks follow mpi4py: a copy function of `None`/`False` means "not
//! copied", `True` means "the same object is copied", a callable returns
//! the new value or `NotImplemented` for "not copied". An exception raised
//! by a callback is printed to stderr and the MPI call fails with
//! ERR_OTHER; a failing delete callback still removes the attribute.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::prelude::*;

use oxmpi::error::class;

use crate::errors::mpi_error;

/// MPI_KEYVAL_INVALID.
pub const KEYVAL_INVALID: i32 = 0;

/// Predefined keyvals (their values are the predefined attributes).
pub mod predefined {
    pub const TAG_UB: i32 = 1;
    pub const HOST: i32 = 2;
    pub const IO: i32 = 3;
    pub const WTIME_IS_GLOBAL: i32 = 4;
    pub const UNIVERSE_SIZE: i32 = 5;
    pub const LASTUSEDCODE: i32 = 6;
    pub const APPNUM: i32 = 7;
    pub const WIN_BASE: i32 = 8;
    pub const WIN_SIZE: i32 = 9;
    pub const WIN_DISP_UNIT: i32 = 10;
    pub const WIN_CREATE_FLAVOR: i32 = 11;
    pub const WIN_MODEL: i32 = 12;
    /// First user keyval.
    pub const FIRST_USER: i32 = 64;
}

/// The kind of object a keyval is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrKind {
    Comm,
    Datatype,
}

/// What happens to an attribute when its object is duplicated.
pub enum CopyFn {
    Never,
    Share,
    Call(Py<PyAny>),
}

/// A keyval: its callbacks.
pub struct Keyval {
    pub id: i32,
    kind: AttrKind,
    copy: CopyFn,
    delete: Option<Py<PyAny>>,
}

fn registry() -> &'static Mutex<HashMap<i32, Arc<Keyval>>> {
    static R: OnceLock<Mutex<HashMap<i32, Arc<Keyval>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

static NEXT_KEYVAL: AtomicI32 = AtomicI32::new(predefined::FIRST_USER);

/// MPI_*_create_keyval.
pub fn create_keyval(
    kind: AttrKind,
    copy_fn: Option<&Bound<'_, PyAny>>,
    delete_fn: Option<&Bound<'_, PyAny>>,
) -> PyResult<i32> {
    let copy = match copy_fn {
        None => CopyFn::Never,
        Some(f) if f.is_none() => CopyFn::Never,
        Some(f) if f.is_instance_of::<pyo3::types::PyBool>() => {
            if f.extract::<bool>()? {
                CopyFn::Share
            } else {
                CopyFn::Never
            }
        }
        Some(f) => CopyFn::Call(f.clone().unbind()),
    };
    let delete = match delete_fn {
        None => None,
        Some(f) if f.is_none() || f.is_instance_of::<pyo3::types::PyBool>() => None,
        Some(f) => Some(f.clone().unbind()),
    };
    let id = NEXT_KEYVAL.fetch_add(1, Ordering::Relaxed);
    registry().lock().unwrap_or_else(|e| e.into_inner()).insert(
        id,
        Arc::new(Keyval {
            id,
            kind,
            copy,
            delete,
        }),
    );
    Ok(id)
}

fn keyval_error(py: Python<'_>, keyval: i32) -> PyErr {
    mpi_error(py, class::ERR_KEYVAL, &format!("invalid keyval {keyval}"))
}

/// MPI_*_free_keyval: the keyval can no longer be used to set attributes;
/// attributes already set keep their callbacks. Returns KEYVAL_INVALID.
pub fn free_keyval(py: Python<'_>, kind: AttrKind, keyval: i32) -> PyResult<i32> {
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    match r.get(&keyval) {
        Some(k) if k.kind == kind => {
            r.remove(&keyval);
            Ok(KEYVAL_INVALID)
        }
        _ => Err(keyval_error(py, keyval)),
    }
}

/// The keyval `keyval` of kind `kind`.
pub fn lookup(py: Python<'_>, kind: AttrKind, keyval: i32) -> PyResult<Arc<Keyval>> {
    match registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&keyval)
    {
        Some(k) if k.kind == kind => Ok(k.clone()),
        _ => Err(keyval_error(py, keyval)),
    }
}

/// An error raised by a callback: printed, then ERR_OTHER.
fn callback_failed(py: Python<'_>, e: PyErr, what: &str) -> PyErr {
    e.print(py);
    mpi_error(
        py,
        class::ERR_OTHER,
        &format!("an attribute {what} callback raised an exception"),
    )
}

/// The attributes of one object, in the order they were set.
#[derive(Default)]
pub struct Attrs {
    items: Vec<(Arc<Keyval>, Py<PyAny>)>,
}

impl Attrs {
    pub fn get(&self, keyval: i32) -> Option<&Py<PyAny>> {
        self.items
            .iter()
            .find(|(k, _)| k.id == keyval)
            .map(|(_, v)| v)
    }

    /// Stores a value; returns the one it replaces, whose delete callback
    /// the caller must run (outside any lock).
    pub fn set(&mut self, k: Arc<Keyval>, v: Py<PyAny>) -> Option<(Arc<Keyval>, Py<PyAny>)> {
        match self.items.iter_mut().find(|(kk, _)| kk.id == k.id) {
            Some(slot) => Some(std::mem::replace(slot, (k, v))),
            None => {
                self.items.push((k, v));
                None
            }
        }
    }

    pub fn remove(&mut self, keyval: i32) -> Option<(Arc<Keyval>, Py<PyAny>)> {
        let i = self.items.iter().position(|(k, _)| k.id == keyval)?;
        Some(self.items.remove(i))
    }

    /// A copy of the list (the same values).
    pub fn snapshot(&self, py: Python<'_>) -> Attrs {
        Attrs {
            items: self
                .items
                .iter()
                .map(|(k, v)| (k.clone(), v.clone_ref(py)))
                .collect(),
        }
    }

    pub fn take_all(&mut self) -> Vec<(Arc<Keyval>, Py<PyAny>)> {
        std::mem::take(&mut self.items)
    }

    /// The attributes a duplicate of `obj` gets.
    pub fn copied(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Attrs> {
        let mut out = Attrs::default();
        for (k, v) in &self.items {
            let nv = match &k.copy {
                CopyFn::Never => continue,
                CopyFn::Share => v.clone_ref(py),
                CopyFn::Call(f) => {
                    let r = f
                        .call1(py, (obj, k.id, v.clone_ref(py)))
                        .map_err(|e| callback_failed(py, e, "copy"))?;
                    if r.is(py.NotImplemented()) {
                        continue;
                    }
                    r
                }
            };
            out.items.push((k.clone(), nv));
        }
        Ok(out)
    }
}

/// Runs the delete callback of a removed attribute.
pub fn run_delete(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    (k, v): (Arc<Keyval>, Py<PyAny>),
) -> PyResult<()> {
    if let Some(f) = &k.delete {
        f.call1(py, (obj, k.id, v))
            .map_err(|e| callback_failed(py, e, "delete"))?;
    }
    Ok(())
}

/// Runs the delete callbacks of all of `items`, in reverse order of
/// setting; the first failure is reported after all have run.
pub fn run_deletes(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    items: Vec<(Arc<Keyval>, Py<PyAny>)>,
) -> PyResult<()> {
    let mut first = None;
    for item in items.into_iter().rev() {
        if let Err(e) = run_delete(py, obj, item) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}
