//! `MPI.Intercomm` (MPI-4.1 §7.6): communication between two disjoint
//! groups. Point-to-point ranks name the remote group; collectives follow
//! the intercommunicator rules (roots given as `MPI.ROOT` / `PROC_NULL`).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyType;
use pyo3::PyClassInitializer;

use oxmpi::group::Group;

use crate::comm::{adopt, PyComm};
use crate::engine::{blocking, engine};
use crate::errors::IntoPy;
use crate::group::PyGroup;

/// An intercommunicator.
#[pyclass(module = "oxmpi.MPI", name = "Intercomm", extends = PyComm, subclass)]
pub struct PyIntercomm;

fn class_named<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    Ok(py
        .import("oxmpi.MPI")?
        .getattr(name)?
        .cast_into::<PyType>()?)
}

#[pymethods]
impl PyIntercomm {
    #[new]
    #[pyo3(signature = (comm=None))]
    fn new(comm: Option<&Bound<'_, PyComm>>) -> PyResult<PyClassInitializer<PyIntercomm>> {
        let inner = comm.and_then(|c| c.borrow().inner.clone());
        if inner.as_ref().is_some_and(|c| !c.is_inter()) {
            return Err(PyTypeError::new_err("expecting an intercommunicator"));
        }
        Ok(PyClassInitializer::from(PyComm { inner }).add_subclass(PyIntercomm))
    }

    fn Get_remote_group(slf: &Bound<'_, Self>) -> PyResult<PyGroup> {
        let c = slf.as_super().borrow().c()?.clone();
        Ok(PyGroup::wrap(Group::new(c.remote_world_ranks()).py()?))
    }

    #[getter]
    fn remote_group(slf: &Bound<'_, Self>) -> PyResult<PyGroup> {
        Self::Get_remote_group(slf)
    }

    fn Get_remote_size(slf: &Bound<'_, Self>) -> PyResult<usize> {
        Ok(slf.as_super().borrow().c()?.remote_world_ranks().len())
    }

    #[getter]
    fn remote_size(slf: &Bound<'_, Self>) -> PyResult<usize> {
        Self::Get_remote_size(slf)
    }

    #[pyo3(signature = (high=false))]
    fn Merge(slf: &Bound<'_, Self>, high: bool) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let c = slf.as_super().borrow().c()?.clone();
        let c2 = c.clone();
        let new = blocking(py, move || c2.merge(high))?;
        adopt(
            py,
            new,
            Some(&c),
            Vec::new(),
            Some(&class_named(py, "Intracomm")?),
        )
    }

    #[classmethod]
    #[pyo3(signature = (local_group, local_leader=0, remote_group=None, remote_leader=0, stringtag="org.mpi4py", info=None, errhandler=None))]
    #[allow(clippy::too_many_arguments)]
    fn Create_from_groups(
        cls: &Bound<'_, PyType>,
        local_group: &Bound<'_, PyGroup>,
        local_leader: i32,
        remote_group: Option<&Bound<'_, PyGroup>>,
        remote_leader: i32,
        stringtag: &str,
        info: Option<&Bound<'_, PyAny>>,
        errhandler: Option<&Bound<'_, crate::errhandler::PyErrhandler>>,
    ) -> PyResult<Py<PyAny>> {
        let py = cls.py();
        let local = local_group.borrow().get()?.members().to_vec();
        let remote = match remote_group {
            Some(g) => g.borrow().get()?.members().to_vec(),
            None => Vec::new(),
        };
        let tag = crate::comm::string_tag(stringtag);
        let world = engine(py)?.world();
        let new = blocking(py, move || {
            world.create_from_groups(&local, local_leader, &remote, remote_leader, tag)
        })?;
        let items = crate::info::PyInfo::items_of(info)?;
        let obj = adopt(
            py,
            new.clone(),
            None,
            items,
            Some(&class_named(py, "Intercomm")?),
        )?;
        if let Some(e) = errhandler {
            let h = e.borrow().get()?.clone();
            crate::comm::with_state(&new, |s| s.errhandler = h);
        }
        Ok(obj)
    }
}
