//! `MPI.Intercomm` (MPI-4.1 §7.6): communication between two disjoint
//! groups. Point-to-point ranks name the remote group; collectives follow
//! the intercommunicator rules (roots given as `MPI.ROOT` / `PROC_NULL`).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use std::any::Any;
use std::sync::{Arc, Mutex};

use pyo3::types::{PyDict, PyList, PyTuple, PyType};
use pyo3::PyClassInitializer;

use oxmpi::backend::{CommRef, RawBuf, Request, RequestRef, Status, PROC_NULL, ROOT};
use oxmpi::datatype::Datatype;
use oxmpi::group::Group;
use oxmpi::op::Op;

use crate::buffer::BufView;
use crate::buffer::{self, Msg};
use crate::comm::{adopt, class_named, is_in_place, recv_buf_parse, PyComm};
use crate::datatype::Packed;
use crate::engine::{blocking, engine};
use crate::errors::{mpi_error, IntoPy};
use crate::group::PyGroup;
use crate::info::PyInfo;
use crate::op::{self, PyOp};
use crate::pickle;
use crate::request::{
    new_prequest, CollStart, Payload, Persistent, PersistentColl, PyPrequest, PyRequest,
};
use crate::topo::{parse_blocks, parse_blocks_w, Blocks};

/// An intercommunicator.
#[pyclass(module = "oxmpi.MPI", name = "Intercomm", extends = PyComm, subclass)]
pub struct PyIntercomm;

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

// ------------------------------------------------------------ collectives
//
// Intercommunicator collectives (MPI-4.1 §6.2.2): every process of one
// group exchanges directly with the processes of the other group in one
// round of point-to-point (`Communicator::iexchange`). Reductions are
// combined, in remote-rank order, by the process that needs the result.
// The exchanges are all-to-all between the groups: simple and correct,
// at a cost of one message per pair for the allgather/allreduce forms.

fn inter(slf: &Bound<'_, PyIntercomm>) -> PyResult<CommRef> {
    Ok(slf.as_super().borrow().c()?.clone())
}

fn remote_size(c: &CommRef) -> i32 {
    c.remote_world_ranks().len() as i32
}

/// What `root` means at this process: the root itself (ROOT), a bystander
/// of the root's group (PROC_NULL), or a member of the other group
/// (`Some(rank of the root)`).
enum Role {
    Root,
    Bystander,
    Remote(i32),
}

fn role(py: Python<'_>, c: &CommRef, root: i32) -> PyResult<Role> {
    match root {
        ROOT => Ok(Role::Root),
        PROC_NULL => Ok(Role::Bystander),
        r if r >= 0 && r < remote_size(c) => Ok(Role::Remote(r)),
        r => Err(mpi_error(
            py,
            oxmpi::error::class::ERR_ROOT,
            &format!("invalid root {r} for an intercommunicator"),
        )),
    }
}

fn exchange_objs(
    py: Python<'_>,
    c: &CommRef,
    sends: Vec<(i32, Vec<u8>)>,
    recv_from: Vec<i32>,
) -> PyResult<Vec<Vec<u8>>> {
    let c = c.clone();
    blocking(py, move || c.exchange_bytes(sends, &recv_from))
}

fn all_remote(c: &CommRef) -> Vec<i32> {
    (0..remote_size(c)).collect()
}

fn unpickle_list<'py>(py: Python<'py>, blobs: &[Vec<u8>]) -> PyResult<Bound<'py, PyList>> {
    let items = blobs
        .iter()
        .map(|b| pickle::loads_slice(py, b))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

/// Combines objects in rank order with a reduction operation.
fn fold_objects<'py>(py: Python<'py>, op: &PyOp, blobs: &[Vec<u8>]) -> PyResult<Bound<'py, PyAny>> {
    let mut it = blobs.iter();
    let mut acc = match it.next() {
        Some(b) => pickle::loads_slice(py, b)?,
        None => return Ok(py.None().into_bound(py)),
    };
    for b in it {
        let x = pickle::loads_slice(py, b)?;
        acc = op.call_objects(&acc, &x)?;
    }
    Ok(acc)
}

fn not_on_intercomm(what: &str) -> PyErr {
    pyo3::exceptions::PyNotImplementedError::new_err(format!(
        "{what} on an intercommunicator is not implemented by oxmpi"
    ))
}

fn recv_or_none(buf: Option<&Bound<'_, PyAny>>) -> PyResult<Msg> {
    match buf {
        Some(b) if !b.is_none() => recv_buf_parse(b),
        _ => Python::attach(|py| recv_buf_parse(&py.None().into_bound(py))),
    }
}

fn send_or_none(buf: Option<&Bound<'_, PyAny>>) -> PyResult<Msg> {
    match buf {
        Some(b) if !b.is_none() => buffer::parse(b, false),
        _ => Python::attach(|py| buffer::parse(&py.None().into_bound(py), false)),
    }
}

fn blocks_or_empty(
    buf: Option<&Bound<'_, PyAny>>,
    writable: bool,
    n: usize,
    vector: bool,
) -> PyResult<Blocks> {
    match buf {
        Some(b) if !b.is_none() => parse_blocks(b, writable, n, vector),
        _ => Err(pyo3::exceptions::PyValueError::new_err(
            "the root of an intercommunicator collective needs a buffer",
        )),
    }
}

#[pymethods]
impl PyIntercomm {
    // ------------------------------------------------------------ objects

    fn barrier(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::Barrier(slf)
    }

    #[pyo3(signature = (obj=None, root=0))]
    fn bcast<'py>(
        slf: &Bound<'py, Self>,
        obj: Option<&Bound<'py, PyAny>>,
        root: i32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let c = inter(slf)?;
        match role(py, &c, root)? {
            Role::Root => {
                let none = py.None().into_bound(py);
                let blob = pickle::dumps_vec(py, obj.unwrap_or(&none))?;
                let sends = all_remote(&c)
                    .into_iter()
                    .map(|r| (r, blob.clone()))
                    .collect();
                exchange_objs(py, &c, sends, vec![])?;
                Ok(py.None().into_bound(py))
            }
            Role::Bystander => Ok(py.None().into_bound(py)),
            Role::Remote(r) => {
                let got = exchange_objs(py, &c, vec![], vec![r])?;
                pickle::loads_slice(py, &got[0])
            }
        }
    }

    #[pyo3(signature = (sendobj, root=0))]
    fn gather<'py>(
        slf: &Bound<'py, Self>,
        sendobj: &Bound<'py, PyAny>,
        root: i32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let c = inter(slf)?;
        match role(py, &c, root)? {
            Role::Root => {
                let got = exchange_objs(py, &c, vec![], all_remote(&c))?;
                Ok(unpickle_list(py, &got)?.into_any())
            }
            Role::Bystander => Ok(py.None().into_bound(py)),
            Role::Remote(r) => {
                exchange_objs(py, &c, vec![(r, pickle::dumps_vec(py, sendobj)?)], vec![])?;
                Ok(py.None().into_bound(py))
            }
        }
    }

    #[pyo3(signature = (sendobj=None, root=0))]
    fn scatter<'py>(
        slf: &Bound<'py, Self>,
        sendobj: Option<&Bound<'py, PyAny>>,
        root: i32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let c = inter(slf)?;
        match role(py, &c, root)? {
            Role::Root => {
                let items = crate::coll::object_items(py, sendobj, remote_size(&c) as usize)?;
                let sends = items
                    .iter()
                    .enumerate()
                    .map(|(i, o)| Ok((i as i32, pickle::dumps_vec(py, o)?)))
                    .collect::<PyResult<Vec<_>>>()?;
                exchange_objs(py, &c, sends, vec![])?;
                Ok(py.None().into_bound(py))
            }
            Role::Bystander => Ok(py.None().into_bound(py)),
            Role::Remote(r) => {
                let got = exchange_objs(py, &c, vec![], vec![r])?;
                pickle::loads_slice(py, &got[0])
            }
        }
    }

    fn allgather<'py>(
        slf: &Bound<'py, Self>,
        sendobj: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let py = slf.py();
        let c = inter(slf)?;
        let blob = pickle::dumps_vec(py, sendobj)?;
        let sends = all_remote(&c)
            .into_iter()
            .map(|r| (r, blob.clone()))
            .collect();
        let got = exchange_objs(py, &c, sends, all_remote(&c))?;
        unpickle_list(py, &got)
    }

    fn alltoall<'py>(
        slf: &Bound<'py, Self>,
        sendobj: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let py = slf.py();
        let c = inter(slf)?;
        let items = crate::coll::object_items(py, sendobj, remote_size(&c) as usize)?;
        let sends = items
            .iter()
            .enumerate()
            .map(|(i, o)| Ok((i as i32, pickle::dumps_vec(py, o)?)))
            .collect::<PyResult<Vec<_>>>()?;
        let got = exchange_objs(py, &c, sends, all_remote(&c))?;
        unpickle_list(py, &got)
    }

    #[pyo3(signature = (sendobj, op=None, root=0))]
    fn reduce<'py>(
        slf: &Bound<'py, Self>,
        sendobj: &Bound<'py, PyAny>,
        op: Option<&Bound<'py, PyAny>>,
        root: i32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let c = inter(slf)?;
        let op = op::from_py_object_op(op)?;
        match role(py, &c, root)? {
            Role::Root => {
                let got = exchange_objs(py, &c, vec![], all_remote(&c))?;
                fold_objects(py, &op, &got)
            }
            Role::Bystander => Ok(py.None().into_bound(py)),
            Role::Remote(r) => {
                exchange_objs(py, &c, vec![(r, pickle::dumps_vec(py, sendobj)?)], vec![])?;
                Ok(py.None().into_bound(py))
            }
        }
    }

    #[pyo3(signature = (sendobj, op=None))]
    fn allreduce<'py>(
        slf: &Bound<'py, Self>,
        sendobj: &Bound<'py, PyAny>,
        op: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let c = inter(slf)?;
        let op = op::from_py_object_op(op)?;
        let blob = pickle::dumps_vec(py, sendobj)?;
        let sends = all_remote(&c)
            .into_iter()
            .map(|r| (r, blob.clone()))
            .collect();
        let got = exchange_objs(py, &c, sends, all_remote(&c))?;
        fold_objects(py, &op, &got)
    }

    // ------------------------------------------------------------ buffers

    fn Barrier(slf: &Bound<'_, Self>) -> PyResult<()> {
        barrier_plan(&inter(slf)?)?.wait(slf.py())
    }

    #[pyo3(signature = (buf, root=0))]
    fn Bcast(slf: &Bound<'_, Self>, buf: Option<&Bound<'_, PyAny>>, root: i32) -> PyResult<()> {
        bcast_plan(slf, buf, root)?.wait(slf.py())
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Gather(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<()> {
        gather_plan(slf, sendbuf, recvbuf, root, false)?.wait(slf.py())
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Gatherv(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<()> {
        gather_plan(slf, sendbuf, recvbuf, root, true)?.wait(slf.py())
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Scatter(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<()> {
        scatter_plan(slf, sendbuf, recvbuf, root, false)?.wait(slf.py())
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Scatterv(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<()> {
        scatter_plan(slf, sendbuf, recvbuf, root, true)?.wait(slf.py())
    }

    fn Allgather(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        allgather_plan(slf, sendbuf, recvbuf, false)?.wait(slf.py())
    }

    fn Allgatherv(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        allgather_plan(slf, sendbuf, recvbuf, true)?.wait(slf.py())
    }

    fn Alltoall(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        alltoall_plan(slf, sendbuf, recvbuf, Some(false))?.wait(slf.py())
    }

    fn Alltoallv(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        alltoall_plan(slf, sendbuf, recvbuf, Some(true))?.wait(slf.py())
    }

    fn Alltoallw(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        alltoall_plan(slf, sendbuf, recvbuf, None)?.wait(slf.py())
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None, root=0))]
    fn Reduce(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<()> {
        reduce_plan(slf, sendbuf, recvbuf, op, root)?.wait(slf.py())
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None))]
    fn Allreduce(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        allreduce_plan(slf, sendbuf, recvbuf, op)?.wait(slf.py())
    }

    // --------------------------------------------------------- nonblocking

    fn Ibarrier(slf: &Bound<'_, Self>) -> PyResult<PyRequest> {
        barrier_plan(&inter(slf)?)?.request()
    }

    #[pyo3(signature = (buf, root=0))]
    fn Ibcast(
        slf: &Bound<'_, Self>,
        buf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<PyRequest> {
        bcast_plan(slf, buf, root)?.request()
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Igather(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<PyRequest> {
        gather_plan(slf, sendbuf, recvbuf, root, false)?.request()
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Igatherv(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<PyRequest> {
        gather_plan(slf, sendbuf, recvbuf, root, true)?.request()
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Iscatter(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<PyRequest> {
        scatter_plan(slf, sendbuf, recvbuf, root, false)?.request()
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Iscatterv(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<PyRequest> {
        scatter_plan(slf, sendbuf, recvbuf, root, true)?.request()
    }

    fn Iallgather(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<PyRequest> {
        allgather_plan(slf, sendbuf, recvbuf, false)?.request()
    }

    fn Iallgatherv(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<PyRequest> {
        allgather_plan(slf, sendbuf, recvbuf, true)?.request()
    }

    fn Ialltoall(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<PyRequest> {
        alltoall_plan(slf, sendbuf, recvbuf, Some(false))?.request()
    }

    fn Ialltoallv(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<PyRequest> {
        alltoall_plan(slf, sendbuf, recvbuf, Some(true))?.request()
    }

    fn Ialltoallw(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<PyRequest> {
        alltoall_plan(slf, sendbuf, recvbuf, None)?.request()
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None, root=0))]
    fn Ireduce(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<PyRequest> {
        reduce_plan(slf, sendbuf, recvbuf, op, root)?.request()
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None))]
    fn Iallreduce(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyRequest> {
        allreduce_plan(slf, sendbuf, recvbuf, op)?.request()
    }

    // ---------------------------------------------------------- persistent

    #[pyo3(signature = (info=None))]
    fn Barrier_init(
        slf: &Bound<'_, Self>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        barrier_plan(&inter(slf)?)?.persist(slf.py())
    }

    #[pyo3(signature = (buf, root=0, info=None))]
    fn Bcast_init(
        slf: &Bound<'_, Self>,
        buf: Option<&Bound<'_, PyAny>>,
        root: i32,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        bcast_plan(slf, buf, root)?.persist(slf.py())
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0, info=None))]
    fn Gather_init(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        gather_plan(slf, sendbuf, recvbuf, root, false)?.persist(slf.py())
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0, info=None))]
    fn Gatherv_init(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        gather_plan(slf, sendbuf, recvbuf, root, true)?.persist(slf.py())
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0, info=None))]
    fn Scatter_init(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        scatter_plan(slf, sendbuf, recvbuf, root, false)?.persist(slf.py())
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0, info=None))]
    fn Scatterv_init(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        scatter_plan(slf, sendbuf, recvbuf, root, true)?.persist(slf.py())
    }

    #[pyo3(signature = (sendbuf, recvbuf, info=None))]
    fn Allgather_init(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        allgather_plan(slf, sendbuf, recvbuf, false)?.persist(slf.py())
    }

    #[pyo3(signature = (sendbuf, recvbuf, info=None))]
    fn Allgatherv_init(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        allgather_plan(slf, sendbuf, recvbuf, true)?.persist(slf.py())
    }

    #[pyo3(signature = (sendbuf, recvbuf, info=None))]
    fn Alltoall_init(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        alltoall_plan(slf, sendbuf, recvbuf, Some(false))?.persist(slf.py())
    }

    #[pyo3(signature = (sendbuf, recvbuf, info=None))]
    fn Alltoallv_init(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        alltoall_plan(slf, sendbuf, recvbuf, Some(true))?.persist(slf.py())
    }

    #[pyo3(signature = (sendbuf, recvbuf, info=None))]
    fn Alltoallw_init(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        alltoall_plan(slf, sendbuf, recvbuf, None)?.persist(slf.py())
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None, root=0, info=None))]
    fn Reduce_init(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
        root: i32,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        reduce_plan(slf, sendbuf, recvbuf, op, root)?.persist(slf.py())
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None, info=None))]
    fn Allreduce_init(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        allreduce_plan(slf, sendbuf, recvbuf, op)?.persist(slf.py())
    }

    // ------------------------------------------------- not (yet) supported

    #[pyo3(signature = (*args, **kwargs))]
    fn Reduce_scatter(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let _ = (args, kwargs);
        Err(not_on_intercomm("Reduce_scatter"))
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn Reduce_scatter_block(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let _ = (args, kwargs);
        Err(not_on_intercomm("Reduce_scatter_block"))
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn Ireduce_scatter(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let _ = (args, kwargs);
        Err(not_on_intercomm("Ireduce_scatter"))
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn Ireduce_scatter_block(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let _ = (args, kwargs);
        Err(not_on_intercomm("Ireduce_scatter_block"))
    }

    // Prefix reductions exist on intracommunicators only (MPI-4.1 §6.11).

    #[pyo3(signature = (*args, **kwargs))]
    fn Scan(&self, args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let _ = (args, kwargs);
        Err(intra_only("Scan"))
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn Exscan(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let _ = (args, kwargs);
        Err(intra_only("Exscan"))
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn Iscan(&self, args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let _ = (args, kwargs);
        Err(intra_only("Iscan"))
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn Iexscan(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let _ = (args, kwargs);
        Err(intra_only("Iexscan"))
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn Reduce_scatter_init(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let _ = (args, kwargs);
        Err(not_on_intercomm("Reduce_scatter_init"))
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn Reduce_scatter_block_init(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let _ = (args, kwargs);
        Err(not_on_intercomm("Reduce_scatter_block_init"))
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn Scan_init(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let _ = (args, kwargs);
        Err(intra_only("Scan_init"))
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn Exscan_init(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let _ = (args, kwargs);
        Err(intra_only("Exscan_init"))
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn scan(&self, args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let _ = (args, kwargs);
        Err(intra_only("scan"))
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn exscan(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let _ = (args, kwargs);
        Err(intra_only("exscan"))
    }
}

fn intra_only(what: &str) -> PyErr {
    Python::attach(|py| {
        mpi_error(
            py,
            oxmpi::error::class::ERR_COMM,
            &format!("{what} needs an intracommunicator"),
        )
    })
}

/// A started collective: its request and what must live until it
/// completes (buffers, packed copies).
struct Started {
    req: RequestRef,
    keep: Box<dyn Any + Send + Sync>,
}

impl Started {
    fn new(req: RequestRef, keep: impl Any + Send + Sync) -> Started {
        Started {
            req,
            keep: Box::new(keep),
        }
    }

    /// Waits (GIL released) and releases the buffers.
    fn wait(self, py: Python<'_>) -> PyResult<()> {
        let req = self.req.clone();
        let res = if req.is_complete() {
            req.wait().py()
        } else {
            blocking(py, move || req.wait())
        };
        drop(self.keep);
        res.map(|_| ())
    }

    fn request(self) -> PyRequest {
        PyRequest::new(self.req, Payload::Keep(self.keep))
    }
}

/// The messages and block sets an intercommunicator collective pins
/// (packed copies unpack into the user's buffers when dropped).
#[derive(Default)]
struct Pinned {
    msgs: Vec<Msg>,
    blocks: Vec<Blocks>,
}

impl Pinned {
    fn msg(m: Msg) -> Pinned {
        Pinned {
            msgs: vec![m],
            blocks: Vec::new(),
        }
    }

    fn blocks(b: Vec<Blocks>, msgs: Vec<Msg>) -> Pinned {
        Pinned { msgs, blocks: b }
    }

    /// The packed copies and the views, for a persistent request.
    fn into_parts(self) -> (Vec<Packed>, Vec<BufView>) {
        let (mut packs, mut views) = (Vec::new(), Vec::new());
        for m in self.msgs {
            packs.extend(m.packed);
            views.extend(m.view);
        }
        for b in self.blocks {
            let (p, v) = b.into_parts();
            packs.extend(p);
            views.extend(v);
        }
        (packs, views)
    }
}

/// An intercommunicator collective parsed at this process, ready to start
/// once (the blocking and nonblocking calls) or at each `Start` of a
/// persistent request.
struct Plan {
    c: CommRef,
    what: PlanKind,
}

enum PlanKind {
    /// Nothing to do here (a bystander of a rooted collective).
    Nothing,
    /// One round of point-to-point with the remote group.
    Exchange {
        sends: Vec<(i32, RawBuf)>,
        recvs: Vec<(i32, RawBuf)>,
        pinned: Pinned,
    },
    /// A reduction over the remote group into `out` ([`FoldRequest`]);
    /// boxed, the messages being large.
    Fold {
        send: Option<Box<Msg>>,
        out: Box<Msg>,
        op: Op,
    },
}

impl Plan {
    fn start(self) -> PyResult<Started> {
        let c = self.c;
        match self.what {
            PlanKind::Nothing => Ok(Started::new(Arc::new(crate::comm::DoneRequest), ())),
            PlanKind::Exchange {
                sends,
                recvs,
                pinned,
            } => Ok(Started::new(c.iexchange(&sends, &recvs).py()?, pinned)),
            PlanKind::Fold { send, out, op } => {
                let (sraw, oraw, count, dtype) = (
                    send.as_ref().map(|s| s.raw),
                    out.raw,
                    out.count,
                    out.dtype.clone(),
                );
                let req = FoldRequest::start(&c, sraw, oraw, count, dtype, op, (send, out)).py()?;
                Ok(Started::new(req, ()))
            }
        }
    }

    fn wait(self, py: Python<'_>) -> PyResult<()> {
        self.start()?.wait(py)
    }

    fn request(self) -> PyResult<PyRequest> {
        Ok(self.start()?.request())
    }

    /// A persistent request starting this collective at each `Start`.
    fn persist(self, py: Python<'_>) -> PyResult<Py<PyPrequest>> {
        let c = self.c;
        let (start, pinned): (CollStart, Pinned) = match self.what {
            PlanKind::Nothing => (
                Box::new(|| Ok(Arc::new(crate::comm::DoneRequest) as RequestRef)),
                Pinned::default(),
            ),
            PlanKind::Exchange {
                sends,
                recvs,
                pinned,
            } => (Box::new(move || c.iexchange(&sends, &recvs)), pinned),
            PlanKind::Fold { send, out, op } => {
                let (sraw, oraw, count, dtype) = (
                    send.as_ref().map(|s| s.raw),
                    out.raw,
                    out.count,
                    out.dtype.clone(),
                );
                let start: CollStart = Box::new(move || {
                    FoldRequest::start(&c, sraw, oraw, count, dtype.clone(), op.clone(), ())
                });
                (
                    start,
                    Pinned::blocks(
                        Vec::new(),
                        send.into_iter().chain([out]).map(|m| *m).collect(),
                    ),
                )
            }
        };
        let (packs, views) = pinned.into_parts();
        let pc = PersistentColl::new(start, packs, Box::new(views));
        new_prequest(py, Persistent::Collective(pc))
    }
}

fn plan(c: &CommRef, sends: Vec<(i32, RawBuf)>, recvs: Vec<(i32, RawBuf)>, pinned: Pinned) -> Plan {
    Plan {
        c: c.clone(),
        what: PlanKind::Exchange {
            sends,
            recvs,
            pinned,
        },
    }
}

fn nothing(c: &CommRef) -> Plan {
    Plan {
        c: c.clone(),
        what: PlanKind::Nothing,
    }
}

fn indexed(b: &Blocks) -> Vec<(i32, RawBuf)> {
    b.raws
        .iter()
        .enumerate()
        .map(|(i, &r)| (i as i32, r))
        .collect()
}

fn barrier_plan(c: &CommRef) -> PyResult<Plan> {
    let peers: Vec<_> = all_remote(c)
        .into_iter()
        .map(|r| (r, RawBuf::EMPTY))
        .collect();
    Ok(plan(c, peers.clone(), peers, Pinned::default()))
}

fn bcast_plan(
    slf: &Bound<'_, PyIntercomm>,
    buf: Option<&Bound<'_, PyAny>>,
    root: i32,
) -> PyResult<Plan> {
    let c = inter(slf)?;
    match role(slf.py(), &c, root)? {
        Role::Root => {
            let m = send_or_none(buf)?;
            let sends: Vec<_> = all_remote(&c).into_iter().map(|r| (r, m.raw)).collect();
            Ok(plan(&c, sends, Vec::new(), Pinned::msg(m)))
        }
        Role::Bystander => Ok(nothing(&c)),
        Role::Remote(r) => {
            let m = recv_or_none(buf)?;
            let raw = m.raw;
            Ok(plan(&c, Vec::new(), vec![(r, raw)], Pinned::msg(m)))
        }
    }
}

fn gather_plan(
    slf: &Bound<'_, PyIntercomm>,
    sendbuf: Option<&Bound<'_, PyAny>>,
    recvbuf: Option<&Bound<'_, PyAny>>,
    root: i32,
    vector: bool,
) -> PyResult<Plan> {
    let c = inter(slf)?;
    match role(slf.py(), &c, root)? {
        Role::Root => {
            let n = remote_size(&c) as usize;
            let b = blocks_or_empty(recvbuf, true, n, vector)?;
            let recvs = indexed(&b);
            Ok(plan(
                &c,
                Vec::new(),
                recvs,
                Pinned::blocks(vec![b], Vec::new()),
            ))
        }
        Role::Bystander => Ok(nothing(&c)),
        Role::Remote(r) => {
            let m = send_or_none(sendbuf)?;
            let raw = m.raw;
            Ok(plan(&c, vec![(r, raw)], Vec::new(), Pinned::msg(m)))
        }
    }
}

fn scatter_plan(
    slf: &Bound<'_, PyIntercomm>,
    sendbuf: Option<&Bound<'_, PyAny>>,
    recvbuf: Option<&Bound<'_, PyAny>>,
    root: i32,
    vector: bool,
) -> PyResult<Plan> {
    let c = inter(slf)?;
    match role(slf.py(), &c, root)? {
        Role::Root => {
            let n = remote_size(&c) as usize;
            let b = blocks_or_empty(sendbuf, false, n, vector)?;
            let sends = indexed(&b);
            Ok(plan(
                &c,
                sends,
                Vec::new(),
                Pinned::blocks(vec![b], Vec::new()),
            ))
        }
        Role::Bystander => Ok(nothing(&c)),
        Role::Remote(r) => {
            let m = recv_or_none(recvbuf)?;
            let raw = m.raw;
            Ok(plan(&c, Vec::new(), vec![(r, raw)], Pinned::msg(m)))
        }
    }
}

fn no_in_place(sendbuf: &Bound<'_, PyAny>) -> PyResult<()> {
    if is_in_place(sendbuf) {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "IN_PLACE is not valid on an intercommunicator",
        ));
    }
    Ok(())
}

fn allgather_plan(
    slf: &Bound<'_, PyIntercomm>,
    sendbuf: &Bound<'_, PyAny>,
    recvbuf: &Bound<'_, PyAny>,
    vector: bool,
) -> PyResult<Plan> {
    let c = inter(slf)?;
    no_in_place(sendbuf)?;
    let n = remote_size(&c) as usize;
    let s = buffer::parse(sendbuf, false)?;
    let r = parse_blocks(recvbuf, true, n, vector)?;
    let sends: Vec<_> = (0..n as i32).map(|i| (i, s.raw)).collect();
    let recvs = indexed(&r);
    Ok(plan(&c, sends, recvs, Pinned::blocks(vec![r], vec![s])))
}

/// Alltoall (Some(false)), Alltoallv (Some(true)) or Alltoallw (None).
fn alltoall_plan(
    slf: &Bound<'_, PyIntercomm>,
    sendbuf: &Bound<'_, PyAny>,
    recvbuf: &Bound<'_, PyAny>,
    vector: Option<bool>,
) -> PyResult<Plan> {
    let c = inter(slf)?;
    no_in_place(sendbuf)?;
    let n = remote_size(&c) as usize;
    let (s, r) = match vector {
        Some(v) => (
            parse_blocks(sendbuf, false, n, v)?,
            parse_blocks(recvbuf, true, n, v)?,
        ),
        None => (
            parse_blocks_w(sendbuf, false, n)?,
            parse_blocks_w(recvbuf, true, n)?,
        ),
    };
    let (sends, recvs) = (indexed(&s), indexed(&r));
    Ok(plan(
        &c,
        sends,
        recvs,
        Pinned::blocks(vec![s, r], Vec::new()),
    ))
}

fn reduce_plan(
    slf: &Bound<'_, PyIntercomm>,
    sendbuf: Option<&Bound<'_, PyAny>>,
    recvbuf: Option<&Bound<'_, PyAny>>,
    op: Option<&Bound<'_, PyAny>>,
    root: i32,
) -> PyResult<Plan> {
    let c = inter(slf)?;
    match role(slf.py(), &c, root)? {
        Role::Root => {
            let out = recv_or_none(recvbuf)?;
            let op = op::from_py_buffer_op(op)?.to_runtime(&out.pytype)?;
            Ok(Plan {
                c,
                what: PlanKind::Fold {
                    send: None,
                    out: Box::new(out),
                    op,
                },
            })
        }
        Role::Bystander => Ok(nothing(&c)),
        Role::Remote(r) => {
            if sendbuf.is_some_and(is_in_place) {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "IN_PLACE is not valid on an intercommunicator",
                ));
            }
            let m = send_or_none(sendbuf)?;
            let raw = m.raw;
            Ok(plan(&c, vec![(r, raw)], Vec::new(), Pinned::msg(m)))
        }
    }
}

fn allreduce_plan(
    slf: &Bound<'_, PyIntercomm>,
    sendbuf: &Bound<'_, PyAny>,
    recvbuf: &Bound<'_, PyAny>,
    op: Option<&Bound<'_, PyAny>>,
) -> PyResult<Plan> {
    let c = inter(slf)?;
    no_in_place(sendbuf)?;
    let s = buffer::parse(sendbuf, false)?;
    let out = recv_buf_parse(recvbuf)?;
    let op = op::from_py_buffer_op(op)?.to_runtime(&out.pytype)?;
    Ok(Plan {
        c,
        what: PlanKind::Fold {
            send: Some(Box::new(s)),
            out: Box::new(out),
            op,
        },
    })
}

/// A reduction over the remote group: receives one block from each
/// remote process (sending `send` to each of them, for Allreduce) and,
/// once they are all in, combines them in remote-rank order into the
/// receive buffer.
struct FoldRequest {
    exchange: RequestRef,
    fold: Mutex<Option<Fold>>,
}

struct Fold {
    /// One block per remote process (their heap buffers do not move).
    blocks: Vec<Vec<u8>>,
    op: Op,
    /// The receive buffer, which gets the result: `count` elements of
    /// `dtype`.
    out: RawBuf,
    count: usize,
    dtype: Datatype,
    /// What keeps the buffers valid until the result is in (the messages
    /// of a nonblocking call, which unpack a packed receive when dropped,
    /// after the result was copied; nothing for a persistent request,
    /// which holds them itself).
    _keep: Box<dyn Any + Send + Sync>,
}

impl FoldRequest {
    /// Starts the exchange: `send` (for Allreduce) to each remote process,
    /// a block from each.
    fn start(
        c: &CommRef,
        send: Option<RawBuf>,
        out: RawBuf,
        count: usize,
        dtype: Datatype,
        op: Op,
        keep: impl Any + Send + Sync,
    ) -> oxmpi::Result<RequestRef> {
        let n = remote_size(c) as usize;
        let mut blocks = vec![vec![0u8; out.len]; n];
        let recvs: Vec<_> = blocks
            .iter_mut()
            .enumerate()
            .map(|(i, b)| (i as i32, RawBuf::from_mut(b)))
            .collect();
        let sends: Vec<_> = match send {
            Some(s) => (0..n as i32).map(|i| (i, s)).collect(),
            None => Vec::new(),
        };
        let exchange = c.iexchange(&sends, &recvs)?;
        Ok(Arc::new(FoldRequest {
            exchange,
            fold: Mutex::new(Some(Fold {
                blocks,
                op,
                out,
                count,
                dtype,
                _keep: Box::new(keep),
            })),
        }))
    }

    /// Combines the blocks once (the first caller after completion).
    fn finish(&self) -> oxmpi::Result<()> {
        let Some(f) = self.fold.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(());
        };
        let Some((first, rest)) = f.blocks.split_first() else {
            return Ok(());
        };
        let mut acc = first.clone();
        for b in rest {
            // apply(input, inout) computes inout = input op inout: the
            // lower ranks stay on the left.
            let mut next = b.clone();
            f.op.apply(&acc, &mut next, f.count, &f.dtype)?;
            acc = next;
        }
        // SAFETY: the receive buffer is pinned until `f` drops (for a
        // nonblocking call) or the persistent request is freed, after
        // this copy; `acc` has the buffer's length.
        let out = unsafe { f.out.as_mut_slice() };
        out[..acc.len()].copy_from_slice(&acc);
        Ok(())
    }
}

impl Request for FoldRequest {
    fn test(&self) -> oxmpi::Result<Option<Status>> {
        match self.exchange.test()? {
            Some(st) => {
                self.finish()?;
                Ok(Some(st))
            }
            None => Ok(None),
        }
    }

    fn wait(&self) -> oxmpi::Result<Status> {
        let st = self.exchange.wait()?;
        self.finish()?;
        Ok(st)
    }

    fn is_complete(&self) -> bool {
        self.exchange.is_complete()
    }

    fn get_status(&self) -> Option<Status> {
        // The fold runs in the `test` or `wait` that completes the request.
        self.exchange.get_status()
    }

    fn cancel(&self) -> oxmpi::Result<()> {
        // Collective operations cannot be cancelled.
        Ok(())
    }
}
