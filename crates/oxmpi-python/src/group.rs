//! `MPI.Group` (MPI-4.1 §7.3): ordered sets of processes. Groups are local
//! data (`oxmpi::group::Group`); a handle's identity is its `Arc`, so two
//! Python objects made from one handle compare equal, and every operation
//! that yields no process returns the `GROUP_EMPTY` handle (as MPICH does).

use std::sync::{Arc, OnceLock};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyType;

use oxmpi::error::class;
use oxmpi::group::Group;

use crate::engine::engine;
use crate::errors::{mpi_error, IntoPy};
use crate::handle;

/// The one GROUP_EMPTY handle.
fn empty_handle() -> Arc<Group> {
    static EMPTY: OnceLock<Arc<Group>> = OnceLock::new();
    EMPTY.get_or_init(|| Arc::new(Group::empty())).clone()
}

/// A group handle (GROUP_NULL when `g` is None).
#[pyclass(module = "oxmpi.MPI", name = "Group", subclass, weakref)]
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

#[pymethods]
impl PyGroup {
    #[new]
    #[pyo3(signature = (group=None))]
    fn new(group: Option<&Bound<'_, PyGroup>>) -> PyGroup {
        PyGroup {
            g: group.and_then(|g| g.borrow().g.clone()),
        }
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: pyo3::basic::CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let me = slf.borrow();
        let same = other
            .cast::<PyGroup>()
            .ok()
            .map(|o| handle::same(me.g.as_ref(), o.borrow().g.as_ref()));
        handle::richcmp(slf.as_any(), same, op)
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
        handle::reduce(slf.as_any(), name)
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

    /// Frees unless a module constant (GROUP_EMPTY keeps its handle).
    fn free(slf: &Bound<'_, Self>) {
        if !handle::is_module_constant(slf.as_any()) {
            slf.borrow_mut().g = None;
        }
    }

    // ------------------------------------------------------------ handles

    /// The integer handle (MPI_Group_toint): stable while the object lives,
    /// 0 for the null handle.
    #[getter(handle)]
    fn int_handle(&self) -> i64 {
        group_ints().toint(self.g.as_ref())
    }

    #[classmethod]
    fn fromhandle<'py>(
        cls: &Bound<'py, pyo3::types::PyType>,
        handle: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = group_ints().lookup(handle, "group")?;
        crate::handle::rebuild(cls, h.map(|g| PyGroup { g: Some(g) }))
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

/// Integer handles of groups.
fn group_ints() -> &'static crate::handle::IntHandles<Group> {
    static INTS: std::sync::OnceLock<crate::handle::IntHandles<Group>> = std::sync::OnceLock::new();
    INTS.get_or_init(Default::default)
}
