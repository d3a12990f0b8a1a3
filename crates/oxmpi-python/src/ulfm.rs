//! Process fault tolerance (MPI-5's ULFM interface, as mpi4py exposes it):
//! the failed processes of a communicator, acknowledging them, agreement
//! and shrinking. Failures are the engine's to detect (`Communicator::failed`);
//! agreement and shrink are composed here from collectives over the
//! surviving processes. Revoke is not available: it needs every member to
//! interrupt its pending operations on the communicator.

use pyo3::exceptions::{PyNotImplementedError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;

use oxmpi::group::Group;

use crate::comm::PyComm;
use crate::engine::blocking;
use crate::errors::IntoPy;
use crate::group::PyGroup;

fn mpi_attr<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("oxmpi.MPI")?.getattr(name)
}

/// A request that is complete already, for the nonblocking forms that run
/// at once (a send to PROC_NULL completes when it starts).
fn completed_request<'py>(slf: &Bound<'py, PyComm>) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let empty = PyList::new(
        py,
        [
            py.None(),
            0i32.into_pyobject(py)?.into_any().unbind(),
            mpi_attr(py, "BYTE")?.unbind(),
        ],
    )?;
    slf.call_method1("Isend", (empty, mpi_attr(py, "PROC_NULL")?))
}

/// The bitwise AND of `flag` over every process of the communicator (both
/// groups of an intercommunicator).
fn agree(slf: &Bound<'_, PyComm>, flag: i32) -> PyResult<i32> {
    let py = slf.py();
    let band = mpi_attr(py, "BAND")?;
    let reduce = |v: i32| -> PyResult<i32> { slf.call_method1("allreduce", (v, &band))?.extract() };
    let first = reduce(flag)?;
    if !slf.borrow().c()?.is_inter() {
        return Ok(first);
    }
    // On an intercommunicator each group receives the other's AND; a
    // second round hands each group its own.
    let own = reduce(first)?;
    Ok(first & own)
}

#[pymethods]
impl PyComm {
    /// MPI_Comm_get_failed: the processes of the communicator known here to
    /// have failed.
    fn Get_failed(&self, py: Python<'_>) -> PyResult<PyGroup> {
        let c = self.c()?.clone();
        let failed = blocking(py, move || c.failed())?;
        Ok(PyGroup::wrap(Group::new(failed).py()?))
    }

    /// MPI_Comm_ack_failed: acknowledges the first `num_to_ack` failed
    /// processes (all when None); returns how many are acknowledged.
    #[pyo3(signature = (num_to_ack=None))]
    fn Ack_failed(&self, py: Python<'_>, num_to_ack: Option<i32>) -> PyResult<usize> {
        let n = match num_to_ack {
            None => usize::MAX,
            Some(n) if n < 0 => {
                return Err(PyValueError::new_err("num_to_ack must not be negative"))
            }
            Some(n) => n as usize,
        };
        let c = self.c()?.clone();
        blocking(py, move || c.ack_failed(n))
    }

    /// MPI_Comm_is_revoked: never, since oxmpi does not revoke.
    fn Is_revoked(&self) -> PyResult<bool> {
        self.c()?;
        Ok(false)
    }

    fn Revoke(&self) -> PyResult<()> {
        self.c()?;
        Err(PyNotImplementedError::new_err(
            "MPI_Comm_revoke is not available in oxmpi",
        ))
    }

    /// MPI_Comm_agree: the bitwise AND of `flag` over the communicator.
    fn Agree(slf: &Bound<'_, Self>, flag: i32) -> PyResult<i32> {
        agree(slf, flag)
    }

    /// MPI_Comm_iagree on a one-int buffer. Intracommunicators run it as a
    /// nonblocking reduction; an intercommunicator's runs before returning.
    fn Iagree<'py>(
        slf: &Bound<'py, Self>,
        flag: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let view = py
            .import("builtins")?
            .getattr("memoryview")?
            .call1((flag,))?;
        let itemsize: usize = view.getattr("itemsize")?.extract()?;
        let nbytes: usize = view.getattr("nbytes")?.extract()?;
        let readonly: bool = view.getattr("readonly")?.extract()?;
        if itemsize != 4 || nbytes != 4 || readonly {
            return Err(PyValueError::new_err(
                "flag: expecting int buffer of length one",
            ));
        }
        if !slf.borrow().c()?.is_inter() {
            let msg = PyList::new(py, [flag.clone(), mpi_attr(py, "INT")?])?;
            return slf.call_method1(
                "Iallreduce",
                (mpi_attr(py, "IN_PLACE")?, msg, mpi_attr(py, "BAND")?),
            );
        }
        let ints = view
            .call_method1("cast", ("B",))?
            .call_method1("cast", ("i",))?;
        let value: i32 = ints.get_item(0)?.extract()?;
        ints.set_item(0, agree(slf, value)?)?;
        completed_request(slf)
    }

    /// MPI_Comm_shrink: a communicator of the processes that have not
    /// failed (collective over those).
    fn Shrink<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let c = slf.borrow().c()?.clone();
        let c2 = c.clone();
        let failed = blocking(py, move || c2.failed())?;
        if failed.is_empty() {
            return slf.call_method0("Dup");
        }
        if c.is_inter() {
            return Err(PyNotImplementedError::new_err(
                "shrinking an intercommunicator with failed processes is not available in oxmpi",
            ));
        }
        let group = slf.call_method0("Get_group")?;
        let failed_group = PyGroup::wrap(Group::new(failed).py()?);
        let survivors = mpi_attr(py, "Group")?.call_method1("Difference", (group, failed_group))?;
        slf.call_method1("Create_group", (survivors,))
    }

    /// MPI_Comm_ishrink; runs before returning.
    fn Ishrink<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let comm = Self::Shrink(slf)?;
        Ok((comm, completed_request(slf)?))
    }
}
