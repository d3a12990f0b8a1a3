//! `MPI.Group` (MPI-4.1 §7.3): ordered sets of processes. Groups are local
//! data (`oxmpi::group::Group`); a handle's identity is its `Arc`, so two
//! Python objects made from one handle compare equal, and every operation
//! that yields no process returns the `GROUP_EMPTY` handle (as MPICH does).

use std::sync::{Arc, OnceLock};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyType;

use oxmpi::error::class;
use oxmpi::group::Group;

use crate::engine::engine;
use crate::errors::{mpi_error, IntoPy};

/// The one GROUP_EMPTY handle.
fn empty_handle() -> Arc<Group> {
    static EMPTY: OnceLock<Arc<Group>> = OnceLock::new();
    EMPTY.get_or_init(|| Arc::new(Group::empty())).clone()
}

/// A group handle (GROUP_NULL when `g` is None).
#[pyclass(module = "oxmpi.MPI", name = "Group", subclass)]
pub struct PyGroup {
    pub g: Option<Arc<Group>>,
}

impl PyGroup {
    /// Wraps a group, using the GROUP_EMPTY handle for an empty one.
    pub fn wrap(g: Group) -> PyGroup {
        PyGroup {
            g: Some(if g.size() == 0 {
                empty_handle()
            } else {
                Arc::new(g)
            }),
        }
    }

    pub fn empty() -> PyGroup {
        PyGroup {
            g: Some(empty_handle()),
        }
    }

    pub fn get(&self) -> PyResult<&Arc<Group>> {
        self.g.as_ref().ok_or_else(|| {
            Python::attach(|py| mpi_error(py, class::ERR_GROUP, "invalid group: GROUP_NULL"))
        })
    }
}

/// This process's job rank (its rank in COMM_WORLD).
pub fn my_job_rank(py: Python<'_>) -> PyResult<i32> {
    Ok(engine(py)?.world().rank())
}

fn ranks_arg(obj: &Bound<'_, PyAny>) -> PyResult<Vec<i32>> {
    obj.try_iter()
        .map_err(|_| PyTypeError::new_err("expected a sequence of ranks"))?
        .map(|r| r?.extract::<i32>())
        .collect()
}

/// mpi4py's pickling of handles: a predefined object pickles as its name,
/// a copy of one as a call rebuilding it from the original; anything else
/// cannot be pickled.
pub fn reduce_handle<'py>(
    slf: &Bound<'py, PyAny>,
    predefined: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    if let Some(name) = predefined {
        let m = py.import("oxmpi.MPI")?;
        let orig = m.getattr(name)?;
        if orig.is(slf) {
            return Ok(pyo3::types::PyString::new(py, name).into_any());
        }
        let newobj = py.import("copyreg")?.getattr("__newobj__")?;
        let args = pyo3::types::PyTuple::new(py, [slf.get_type().into_any(), orig])?;
        return Ok(pyo3::types::PyTuple::new(py, [newobj, args.into_any()])?.into_any());
    }
    let t = slf.get_type();
    Err(PyValueError::new_err(format!(
        "cannot serialize '{}.{}' instance",
        t.module()?,
        t.name()?
    )))
}

#[pymethods]
impl PyGroup {
    #[new]
    #[pyo3(signature = (group=None))]
    fn new(group: Option<&Bound<'_, PyGroup>>) -> PyGroup {
        PyGroup {
            g: group.and_then(|g| g.borrow().g.clone()),
        }
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = other.py();
        match other.cast::<PyGroup>() {
            Ok(o) => {
                let eq = match (&self.g, &o.borrow().g) {
                    (None, None) => true,
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    _ => false,
                };
                Ok(eq.into_pyobject(py)?.to_owned().into_any().unbind())
            }
            Err(_) => Ok(py.NotImplemented()),
        }
    }

    fn __ne__(&self, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let eq = self.__eq__(other)?;
        if eq.is(&py.NotImplemented()) {
            return Ok(eq);
        }
        let v: bool = eq.extract(py)?;
        Ok((!v).into_pyobject(py)?.to_owned().into_any().unbind())
    }

    fn __hash__(&self) -> usize {
        self.g.as_ref().map_or(0, |g| Arc::as_ptr(g) as usize)
    }

    fn __bool__(&self) -> bool {
        self.g.is_some()
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let name = {
            let me = slf.borrow();
            match &me.g {
                None => Some("GROUP_NULL"),
                Some(g) if Arc::ptr_eq(g, &empty_handle()) => Some("GROUP_EMPTY"),
                Some(_) => None,
            }
        };
        reduce_handle(slf.as_any(), name)
    }

    fn Get_size(&self) -> PyResult<i32> {
        Ok(self.get()?.size())
    }

    #[getter]
    fn size(&self) -> PyResult<i32> {
        self.Get_size()
    }

    fn Get_rank(&self, py: Python<'_>) -> PyResult<i32> {
        let me = my_job_rank(py)?;
        Ok(self.get()?.rank_of(me).unwrap_or(oxmpi::backend::UNDEFINED))
    }

    #[getter]
    fn rank(&self, py: Python<'_>) -> PyResult<i32> {
        self.Get_rank(py)
    }

    #[pyo3(signature = (ranks=None, group=None))]
    fn Translate_ranks(
        &self,
        py: Python<'_>,
        ranks: Option<&Bound<'_, PyAny>>,
        group: Option<&Bound<'_, PyGroup>>,
    ) -> PyResult<Vec<i32>> {
        let g = self.get()?;
        let ranks = match ranks {
            Some(r) => ranks_arg(r)?,
            None => (0..g.size()).collect(),
        };
        let other = match group {
            Some(o) => o.borrow().get()?.clone(),
            None => Arc::new(Group::new(engine(py)?.world().world_ranks()).py()?),
        };
        g.translate_ranks(&ranks, &other).py()
    }

    fn Compare(&self, group: &Bound<'_, PyGroup>) -> PyResult<i32> {
        let a = self.get()?;
        let b = group.borrow();
        Ok(a.compare(b.get()?) as i32)
    }

    fn Dup(&self) -> PyResult<PyGroup> {
        Ok(PyGroup::wrap((**self.get()?).clone()))
    }

    #[classmethod]
    fn Union(
        _cls: &Bound<'_, PyType>,
        group1: &Bound<'_, PyGroup>,
        group2: &Bound<'_, PyGroup>,
    ) -> PyResult<PyGroup> {
        let (a, b) = (group1.borrow(), group2.borrow());
        Ok(PyGroup::wrap(a.get()?.union(b.get()?)))
    }

    #[classmethod]
    fn Intersection(
        _cls: &Bound<'_, PyType>,
        group1: &Bound<'_, PyGroup>,
        group2: &Bound<'_, PyGroup>,
    ) -> PyResult<PyGroup> {
        let (a, b) = (group1.borrow(), group2.borrow());
        Ok(PyGroup::wrap(a.get()?.intersection(b.get()?)))
    }

    #[classmethod]
    fn Difference(
        _cls: &Bound<'_, PyType>,
        group1: &Bound<'_, PyGroup>,
        group2: &Bound<'_, PyGroup>,
    ) -> PyResult<PyGroup> {
        let (a, b) = (group1.borrow(), group2.borrow());
        Ok(PyGroup::wrap(a.get()?.difference(b.get()?)))
    }

    fn Incl(&self, ranks: &Bound<'_, PyAny>) -> PyResult<PyGroup> {
        Ok(PyGroup::wrap(self.get()?.incl(&ranks_arg(ranks)?).py()?))
    }

    fn Excl(&self, ranks: &Bound<'_, PyAny>) -> PyResult<PyGroup> {
        Ok(PyGroup::wrap(self.get()?.excl(&ranks_arg(ranks)?).py()?))
    }

    fn Range_incl(&self, ranks: Vec<(i32, i32, i32)>) -> PyResult<PyGroup> {
        Ok(PyGroup::wrap(self.get()?.range_incl(&ranks).py()?))
    }

    fn Range_excl(&self, ranks: Vec<(i32, i32, i32)>) -> PyResult<PyGroup> {
        Ok(PyGroup::wrap(self.get()?.range_excl(&ranks).py()?))
    }

    #[classmethod]
    #[pyo3(signature = (session, pset_name))]
    fn Create_from_session_pset(
        _cls: &Bound<'_, PyType>,
        session: &Bound<'_, PyAny>,
        pset_name: &str,
    ) -> PyResult<PyGroup> {
        let _ = (session, pset_name);
        Err(pyo3::exceptions::PyNotImplementedError::new_err(
            "MPI sessions are not supported by oxmpi",
        ))
    }

    fn Free(&mut self) -> PyResult<()> {
        self.get()?;
        self.g = None;
        Ok(())
    }

    /// Frees unless null.
    fn free(&mut self) {
        self.g = None;
    }

    /// Integer handles are not available: -1 (mpi4py's answer when the MPI
    /// library has no integer handles).
    fn toint(&self) -> i64 {
        -1
    }

    fn py2f(&self) -> i64 {
        -1
    }
}
