//! `MPI.Intercomm` (MPI-4.1 §7.6): communication between two disjoint
//! groups. Point-to-point ranks name the remote group; collectives follow
//! the intercommunicator rules (roots given as `MPI.ROOT` / `PROC_NULL`).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyType};
use pyo3::PyClassInitializer;

use oxmpi::backend::{CommRef, RawBuf, PROC_NULL, ROOT};
use oxmpi::group::Group;

use crate::buffer::{self, Msg};
use crate::comm::{adopt, is_in_place, recv_buf_parse, PyComm};
use crate::engine::{blocking, engine};
use crate::errors::{mpi_error, IntoPy};
use crate::group::PyGroup;
use crate::op::{self, PyOp};
use crate::pickle;
use crate::topo::{parse_blocks, parse_blocks_w, Blocks};

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

/// Runs one round of raw exchanges to completion.
fn exchange(
    py: Python<'_>,
    c: &CommRef,
    sends: &[(i32, RawBuf)],
    recvs: &[(i32, RawBuf)],
) -> PyResult<()> {
    let req = c.iexchange(sends, recvs).py()?;
    if req.is_complete() {
        req.wait().py()?;
    } else {
        blocking(py, move || req.wait())?;
    }
    Ok(())
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

fn op_or_sum(op: Option<&Bound<'_, PyAny>>) -> PyResult<PyOp> {
    match op {
        Some(o) => op::from_py(o),
        None => Python::attach(|py| op::from_py(&py.import("oxmpi.MPI")?.getattr("SUM")?)),
    }
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

/// Reduces `n` blocks of `len` bytes (remote-rank order) into `out`.
fn fold_buffers(m: &Msg, op: &PyOp, blocks: &[Vec<u8>], out: &mut [u8]) -> PyResult<()> {
    let rop = op.to_runtime(&m.pytype)?;
    let Some((first, rest)) = blocks.split_first() else {
        return Ok(());
    };
    let mut acc = first.clone();
    for b in rest {
        // apply(input, inout) computes inout = input op inout: keep the
        // lower ranks on the left.
        let mut next = b.clone();
        rop.apply(&acc, &mut next, m.count, &m.dtype).py()?;
        acc = next;
    }
    out[..acc.len()].copy_from_slice(&acc);
    Ok(())
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
                let seq = sendobj.ok_or_else(|| {
                    PyTypeError::new_err("scatter: the root must pass a sequence")
                })?;
                let items: Vec<Bound<'py, PyAny>> = seq.try_iter()?.collect::<PyResult<_>>()?;
                if items.len() != remote_size(&c) as usize {
                    return Err(pyo3::exceptions::PyValueError::new_err(format!(
                        "scatter: expected a sequence of {} items, got {}",
                        remote_size(&c),
                        items.len()
                    )));
                }
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
        sendobj: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let py = slf.py();
        let c = inter(slf)?;
        let items: Vec<Bound<'py, PyAny>> = sendobj.try_iter()?.collect::<PyResult<_>>()?;
        if items.len() != remote_size(&c) as usize {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "alltoall: expected a sequence of {} items, got {}",
                remote_size(&c),
                items.len()
            )));
        }
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
        let op = op_or_sum(op)?;
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
        let op = op_or_sum(op)?;
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
        let py = slf.py();
        let c = inter(slf)?;
        let peers = all_remote(&c);
        let sends: Vec<_> = peers.iter().map(|&r| (r, RawBuf::EMPTY)).collect();
        exchange(py, &c, &sends, &sends)
    }

    #[pyo3(signature = (buf, root=0))]
    fn Bcast(slf: &Bound<'_, Self>, buf: Option<&Bound<'_, PyAny>>, root: i32) -> PyResult<()> {
        let py = slf.py();
        let c = inter(slf)?;
        match role(py, &c, root)? {
            Role::Root => {
                let m = send_or_none(buf)?;
                let sends: Vec<_> = all_remote(&c).into_iter().map(|r| (r, m.raw)).collect();
                exchange(py, &c, &sends, &[])
            }
            Role::Bystander => Ok(()),
            Role::Remote(r) => {
                let m = recv_or_none(buf)?;
                exchange(py, &c, &[], &[(r, m.raw)])
            }
        }
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Gather(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<()> {
        gather_impl(slf, sendbuf, recvbuf, root, false)
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Gatherv(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<()> {
        gather_impl(slf, sendbuf, recvbuf, root, true)
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Scatter(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<()> {
        scatter_impl(slf, sendbuf, recvbuf, root, false)
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Scatterv(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<()> {
        scatter_impl(slf, sendbuf, recvbuf, root, true)
    }

    fn Allgather(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        allgather_impl(slf, sendbuf, recvbuf, false)
    }

    fn Allgatherv(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        allgather_impl(slf, sendbuf, recvbuf, true)
    }

    fn Alltoall(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        alltoall_impl(slf, sendbuf, recvbuf, Some(false))
    }

    fn Alltoallv(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        alltoall_impl(slf, sendbuf, recvbuf, Some(true))
    }

    fn Alltoallw(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        alltoall_impl(slf, sendbuf, recvbuf, None)
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None, root=0))]
    fn Reduce(
        slf: &Bound<'_, Self>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<()> {
        let py = slf.py();
        let c = inter(slf)?;
        match role(py, &c, root)? {
            Role::Root => {
                let m = recv_or_none(recvbuf)?;
                let blocks = receive_all(py, &c, m.raw.len)?;
                // SAFETY: the view pins the receive buffer for this call.
                let out = unsafe { m.raw.as_mut_slice() };
                fold_buffers(&m, &op_or_sum(op)?, &blocks, out)
            }
            Role::Bystander => Ok(()),
            Role::Remote(r) => {
                if sendbuf.is_some_and(is_in_place) {
                    return Err(pyo3::exceptions::PyValueError::new_err(
                        "IN_PLACE is not valid on an intercommunicator",
                    ));
                }
                let m = send_or_none(sendbuf)?;
                exchange(py, &c, &[(r, m.raw)], &[])
            }
        }
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None))]
    fn Allreduce(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let c = inter(slf)?;
        if is_in_place(sendbuf) {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "IN_PLACE is not valid on an intercommunicator",
            ));
        }
        let s = buffer::parse(sendbuf, false)?;
        let m = recv_buf_parse(recvbuf)?;
        let n = remote_size(&c) as usize;
        let mut blocks = vec![vec![0u8; m.raw.len]; n];
        let sends: Vec<_> = all_remote(&c).into_iter().map(|r| (r, s.raw)).collect();
        let recvs: Vec<_> = blocks
            .iter_mut()
            .enumerate()
            .map(|(i, b)| (i as i32, RawBuf::from_mut(b)))
            .collect();
        exchange(py, &c, &sends, &recvs)?;
        // SAFETY: the view pins the receive buffer for this call.
        let out = unsafe { m.raw.as_mut_slice() };
        fold_buffers(&m, &op_or_sum(op)?, &blocks, out)
    }

    // ------------------------------------------------- not (yet) supported

    #[pyo3(signature = (*args, **kwargs))]
    fn Reduce_scatter(
        &self,
        args: &Bound<'_, pyo3::types::PyTuple>,
        kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<()> {
        let _ = (args, kwargs);
        Err(not_on_intercomm("Reduce_scatter"))
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn Reduce_scatter_block(
        &self,
        args: &Bound<'_, pyo3::types::PyTuple>,
        kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
    ) -> PyResult<()> {
        let _ = (args, kwargs);
        Err(not_on_intercomm("Reduce_scatter_block"))
    }
}

/// Receives one block of `len` bytes from every remote process.
fn receive_all(py: Python<'_>, c: &CommRef, len: usize) -> PyResult<Vec<Vec<u8>>> {
    let n = remote_size(c) as usize;
    let mut blocks = vec![vec![0u8; len]; n];
    let recvs: Vec<_> = blocks
        .iter_mut()
        .enumerate()
        .map(|(i, b)| (i as i32, RawBuf::from_mut(b)))
        .collect();
    exchange(py, c, &[], &recvs)?;
    Ok(blocks)
}

fn gather_impl(
    slf: &Bound<'_, PyIntercomm>,
    sendbuf: Option<&Bound<'_, PyAny>>,
    recvbuf: Option<&Bound<'_, PyAny>>,
    root: i32,
    vector: bool,
) -> PyResult<()> {
    let py = slf.py();
    let c = inter(slf)?;
    match role(py, &c, root)? {
        Role::Root => {
            let n = remote_size(&c) as usize;
            let b = blocks_or_empty(recvbuf, true, n, vector)?;
            let recvs: Vec<_> = b
                .raws
                .iter()
                .enumerate()
                .map(|(i, &r)| (i as i32, r))
                .collect();
            exchange(py, &c, &[], &recvs)
        }
        Role::Bystander => Ok(()),
        Role::Remote(r) => {
            let m = send_or_none(sendbuf)?;
            exchange(py, &c, &[(r, m.raw)], &[])
        }
    }
}

fn scatter_impl(
    slf: &Bound<'_, PyIntercomm>,
    sendbuf: Option<&Bound<'_, PyAny>>,
    recvbuf: Option<&Bound<'_, PyAny>>,
    root: i32,
    vector: bool,
) -> PyResult<()> {
    let py = slf.py();
    let c = inter(slf)?;
    match role(py, &c, root)? {
        Role::Root => {
            let n = remote_size(&c) as usize;
            let b = blocks_or_empty(sendbuf, false, n, vector)?;
            let sends: Vec<_> = b
                .raws
                .iter()
                .enumerate()
                .map(|(i, &r)| (i as i32, r))
                .collect();
            exchange(py, &c, &sends, &[])
        }
        Role::Bystander => Ok(()),
        Role::Remote(r) => {
            let m = recv_or_none(recvbuf)?;
            exchange(py, &c, &[], &[(r, m.raw)])
        }
    }
}

fn allgather_impl(
    slf: &Bound<'_, PyIntercomm>,
    sendbuf: &Bound<'_, PyAny>,
    recvbuf: &Bound<'_, PyAny>,
    vector: bool,
) -> PyResult<()> {
    let py = slf.py();
    let c = inter(slf)?;
    if is_in_place(sendbuf) {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "IN_PLACE is not valid on an intercommunicator",
        ));
    }
    let n = remote_size(&c) as usize;
    let s = buffer::parse(sendbuf, false)?;
    let r = parse_blocks(recvbuf, true, n, vector)?;
    let sends: Vec<_> = (0..n as i32).map(|i| (i, s.raw)).collect();
    let recvs: Vec<_> = r
        .raws
        .iter()
        .enumerate()
        .map(|(i, &b)| (i as i32, b))
        .collect();
    exchange(py, &c, &sends, &recvs)
}

/// Alltoall (Some(false)), Alltoallv (Some(true)) or Alltoallw (None).
fn alltoall_impl(
    slf: &Bound<'_, PyIntercomm>,
    sendbuf: &Bound<'_, PyAny>,
    recvbuf: &Bound<'_, PyAny>,
    vector: Option<bool>,
) -> PyResult<()> {
    let py = slf.py();
    let c = inter(slf)?;
    if is_in_place(sendbuf) {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "IN_PLACE is not valid on an intercommunicator",
        ));
    }
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
    let sends: Vec<_> = s
        .raws
        .iter()
        .enumerate()
        .map(|(i, &b)| (i as i32, b))
        .collect();
    let recvs: Vec<_> = r
        .raws
        .iter()
        .enumerate()
        .map(|(i, &b)| (i as i32, b))
        .collect();
    exchange(py, &c, &sends, &recvs)
}
