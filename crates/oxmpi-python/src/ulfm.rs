//! Process fault tolerance (MPI-5's ULFM interface, as mpi4py exposes it):
//! the failed processes of a communicator, acknowledging them, agreement
//! shrinking and revoking. Failures, agreements and revocation are the
//! engine's (`Communicator::failed`, `iagree`, `revoke`); shrink is composed
//! here from `Create_group` over the surviving processes (which works on a
//! revoked communicator, as MPI requires).

use pyo3::exceptions::{PyNotImplementedError, PyValueError};
use pyo3::prelude::*;

use oxmpi::backend::RawBuf;
use oxmpi::group::Group;

use crate::buffer::BufView;
use crate::request::{Payload, PyRequest};

use crate::comm::{done_request, PyComm};
use crate::engine::blocking;
use crate::errors::IntoPy;
use crate::group::PyGroup;

fn mpi_attr<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("oxmpi.MPI")?.getattr(name)
}

/// The bitwise AND of `flag` over every process of the communicator (both
/// groups of an intercommunicator), on the engine's agreement (independent
/// of the communicator's collectives).
fn agree(slf: &Bound<'_, PyComm>, flag: i32) -> PyResult<i32> {
    let py = slf.py();
    let c = slf.borrow().c()?.clone();
    let mut cell = Box::new(flag.to_le_bytes());
    let raw = RawBuf::from_mut(&mut cell[..]);
    match blocking(py, move || c.iagree(raw)?.wait()) {
        Ok(_) => Ok(i32::from_le_bytes(*cell)),
        Err(e) => {
            // An interrupted wait leaves the agreement running: it may
            // still write its result, so the cell must outlive us.
            Box::leak(cell);
            Err(e)
        }
    }
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

    /// MPI_Comm_is_revoked.
    fn Is_revoked(&self) -> PyResult<bool> {
        Ok(self.c()?.is_revoked())
    }

    /// MPI_Comm_revoke: every member's pending and later operations on
    /// the communicator fail with ERR_REVOKED (but Agree, Shrink, the
    /// failure queries and Free).
    fn Revoke(&self) -> PyResult<()> {
        self.c()?.revoke().py()
    }

    /// MPI_Comm_agree: the bitwise AND of `flag` over the communicator.
    fn Agree(slf: &Bound<'_, Self>, flag: i32) -> PyResult<i32> {
        agree(slf, flag)
    }

    /// MPI_Comm_iagree on a one-int buffer, which receives the result.
    fn Iagree(&self, flag: &Bound<'_, PyAny>) -> PyResult<PyRequest> {
        let view = BufView::get(flag, true, true)?;
        let int = matches!(view.format(), "i" | "=i" | "<i" | "@i")
            || (view.format() == "l" && view.itemsize() == 4);
        if view.len() != 4 || view.itemsize() != 4 || !int {
            return Err(PyValueError::new_err(
                "flag: expecting int buffer of length one",
            ));
        }
        let req = self.c()?.iagree(view.raw()).py()?;
        Ok(PyRequest::new(req, Payload::Keep(Box::new(view))))
    }

    /// MPI_Comm_shrink: a communicator of the processes that have not
    /// failed (collective over those).
    fn Shrink<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let c = slf.borrow().c()?.clone();
        let c2 = c.clone();
        let failed = blocking(py, move || c2.failed())?;
        if c.is_inter() && failed.is_empty() && !c.is_revoked() {
            return slf.call_method0("Dup");
        }
        if c.is_inter() {
            return Err(PyNotImplementedError::new_err(
                "shrinking an intercommunicator with failed processes (or revoked) is not \
                 available in oxmpi",
            ));
        }
        let group = slf.call_method0("Get_group")?;
        let failed_group = PyGroup::wrap(Group::new(failed).py()?);
        let survivors = mpi_attr(py, "Group")?.call_method1("Difference", (group, failed_group))?;
        if !c.is_revoked() {
            return slf.call_method1("Create_group", (survivors,));
        }
        // A revoked communicator runs nothing more: build the new one over
        // the world's contexts (its members must then be of this world).
        mpi_attr(py, "Intracomm")?.call_method1("Create_from_group", (survivors, "oxmpi.shrink"))
    }

    /// MPI_Comm_ishrink; the new communicator is made before it returns
    /// (the request is complete).
    fn Ishrink<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Py<PyRequest>)> {
        let comm = Self::Shrink(slf)?;
        Ok((comm, done_request(slf.py())?))
    }
}
