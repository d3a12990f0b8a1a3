//! Virtual topologies (MPI-4.1 chapter 8): `Intracomm.Create_cart/graph/
//! dist_graph(_adjacent)`, the `Topocomm`, `Cartcomm`, `Graphcomm` and
//! `Distgraphcomm` classes with their queries, and neighbour collectives
//! (buffers, nonblocking, and pickled objects).
//!
//! Reordering is never done (`reorder` is accepted and ignored, which MPI
//! allows): a topology's rank i is the old communicator's rank i.

use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use oxmpi::backend::{CommRef, RawBuf, UNDEFINED};
use oxmpi::error::class;
use oxmpi::topo::{self, Topology};

use crate::buffer::is_bottom;
use crate::buffer::BufView;
use crate::comm::{adopt, class_named, null_of, PyComm, PyIntracomm};
use crate::datatype::{self, Packed, PyDatatype};
use crate::engine::blocking;
use crate::errors::{mpi_error, IntoPy};
use crate::info::PyInfo;
use crate::pickle;
use crate::request::{
    new_prequest, CollStart, Payload, Persistent, PersistentColl, PyPrequest, PyRequest,
};

/// MPI_UNWEIGHTED and MPI_WEIGHTS_EMPTY (sentinel integers, as in mpi4py).
pub const UNWEIGHTED: i64 = 2;
pub const WEIGHTS_EMPTY: i64 = 3;

fn int_list(obj: &Bound<'_, PyAny>) -> PyResult<Vec<i32>> {
    obj.try_iter()
        .map_err(|_| PyTypeError::new_err("expected a sequence of integers"))?
        .map(|x| x?.extract::<i32>())
        .collect()
}

/// A periods argument: None (all false), a bool (for every dimension), or
/// a sequence of exactly `n` flags.
fn periods_arg(obj: Option<&Bound<'_, PyAny>>, n: usize) -> PyResult<Vec<bool>> {
    match obj {
        None => Ok(vec![false; n]),
        Some(o) if o.is_none() => Ok(vec![false; n]),
        Some(o) if o.is_instance_of::<pyo3::types::PyBool>() => Ok(vec![o.extract()?; n]),
        Some(o) => {
            let v: Vec<bool> = o
                .try_iter()?
                .map(|x| x?.is_truthy())
                .collect::<PyResult<_>>()?;
            if v.len() != n {
                return Err(PyValueError::new_err(format!(
                    "expecting {n} items, got {}",
                    v.len()
                )));
            }
            Ok(v)
        }
    }
}

/// A graph's index and edges; a leading 0 with `nnodes + 1` entries (the
/// "standard" adjacency form) is accepted, as mpi4py does.
fn graph_args(
    index: &Bound<'_, PyAny>,
    edges: &Bound<'_, PyAny>,
) -> PyResult<(Vec<i32>, Vec<i32>)> {
    let mut index = int_list(index)?;
    let edges = int_list(edges)?;
    if index.len() > 1 && index[0] == 0 && *index.last().expect("nonempty") as usize == edges.len()
    {
        index.remove(0);
    }
    Ok((index, edges))
}

/// A weights argument: None/UNWEIGHTED give None; WEIGHTS_EMPTY an empty
/// list (only for no edges); otherwise exactly `n` weights.
fn weights_arg(obj: Option<&Bound<'_, PyAny>>, n: usize) -> PyResult<Option<Vec<i32>>> {
    let Some(o) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    if let Ok(v) = o.extract::<i64>() {
        if v == UNWEIGHTED {
            return Ok(None);
        }
        if v == WEIGHTS_EMPTY {
            if n > 0 {
                return Err(PyValueError::new_err("empty weights but nonzero degree"));
            }
            return Ok(Some(Vec::new()));
        }
    }
    let w = int_list(o)?;
    if w.len() != n {
        return Err(PyValueError::new_err(format!(
            "expecting {n} items, got {}",
            w.len()
        )));
    }
    Ok(Some(w))
}

fn topo_of(c: &CommRef) -> PyResult<Arc<Topology>> {
    c.topology().ok_or_else(|| {
        Python::attach(|py| mpi_error(py, class::ERR_TOPOLOGY, "the communicator has no topology"))
    })
}

/// Creates a communicator of the first `n` ranks of `c` carrying `t`
/// (COMM_NULL, as an object of class `cls`, at the others).
fn create_topo(slf: &Bound<'_, PyComm>, n: i32, t: Topology, cls: &str) -> PyResult<Py<PyAny>> {
    let py = slf.py();
    let c = slf.borrow().c()?.clone();
    let cls = class_named(py, cls)?;
    if n > c.size() {
        return Err(mpi_error(
            py,
            class::ERR_DIMS,
            &format!(
                "a topology of {n} processes on a communicator of {}",
                c.size()
            ),
        ));
    }
    let members: Vec<i32> = c.world_ranks()[..n as usize].to_vec();
    let c2 = c.clone();
    match blocking(py, move || c2.create(&members))? {
        Some(new) => {
            new.set_topology(t).py()?;
            adopt(py, new, Some(&c), Vec::new(), Some(&cls))
        }
        None => null_of(&cls),
    }
}

#[pymethods]
impl PyIntracomm {
    #[pyo3(signature = (dims, periods=None, reorder=false))]
    fn Create_cart(
        slf: &Bound<'_, Self>,
        dims: &Bound<'_, PyAny>,
        periods: Option<&Bound<'_, PyAny>>,
        reorder: bool,
    ) -> PyResult<Py<PyAny>> {
        let _ = reorder;
        let dims = int_list(dims)?;
        let periods = periods_arg(periods, dims.len())?;
        let n: i32 = dims.iter().product();
        let t = Topology::cart(dims, periods).py()?;
        create_topo(slf.as_super(), n, t, "Cartcomm")
    }

    #[pyo3(signature = (index, edges, reorder=false))]
    fn Create_graph(
        slf: &Bound<'_, Self>,
        index: &Bound<'_, PyAny>,
        edges: &Bound<'_, PyAny>,
        reorder: bool,
    ) -> PyResult<Py<PyAny>> {
        let _ = reorder;
        let (index, edges) = graph_args(index, edges)?;
        let n = index.len() as i32;
        let t = Topology::graph(index, edges).py()?;
        create_topo(slf.as_super(), n, t, "Graphcomm")
    }

    #[pyo3(signature = (sources, destinations, sourceweights=None, destweights=None, info=None, reorder=false))]
    fn Create_dist_graph_adjacent(
        slf: &Bound<'_, Self>,
        sources: Option<&Bound<'_, PyAny>>,
        destinations: Option<&Bound<'_, PyAny>>,
        sourceweights: Option<&Bound<'_, PyAny>>,
        destweights: Option<&Bound<'_, PyAny>>,
        info: Option<&Bound<'_, PyAny>>,
        reorder: bool,
    ) -> PyResult<Py<PyAny>> {
        let _ = reorder;
        let py = slf.py();
        let list = |o: Option<&Bound<'_, PyAny>>| -> PyResult<Vec<i32>> {
            match o {
                Some(o) if !o.is_none() => int_list(o),
                _ => Ok(Vec::new()),
            }
        };
        let sources = list(sources)?;
        let destinations = list(destinations)?;
        let sw = weights_arg(sourceweights, sources.len())?;
        let dw = weights_arg(destweights, destinations.len())?;
        let weights = match (sw, dw) {
            (None, None) => None,
            (s, d) => Some((
                s.unwrap_or_else(|| vec![1; sources.len()]),
                d.unwrap_or_else(|| vec![1; destinations.len()]),
            )),
        };
        let c = slf.as_super().borrow().c()?.clone();
        check_ranks(py, &sources, c.size())?;
        check_ranks(py, &destinations, c.size())?;
        let t = Topology::DistGraph {
            sources,
            destinations,
            weights,
        };
        dist_graph(py, &c, t, info)
    }

    #[pyo3(signature = (sources, degrees, destinations, weights=None, info=None, reorder=false))]
    #[allow(clippy::too_many_arguments)]
    fn Create_dist_graph(
        slf: &Bound<'_, Self>,
        sources: &Bound<'_, PyAny>,
        degrees: &Bound<'_, PyAny>,
        destinations: &Bound<'_, PyAny>,
        weights: Option<&Bound<'_, PyAny>>,
        info: Option<&Bound<'_, PyAny>>,
        reorder: bool,
    ) -> PyResult<Py<PyAny>> {
        let _ = reorder;
        let py = slf.py();
        let sources = int_list(sources)?;
        let degrees = int_list(degrees)?;
        if degrees.len() != sources.len() {
            return Err(PyValueError::new_err(format!(
                "expecting {} items, got {}",
                sources.len(),
                degrees.len()
            )));
        }
        let nedges: usize = degrees.iter().map(|&d| d.max(0) as usize).sum();
        let dests = int_list(destinations)?;
        if dests.len() != nedges {
            return Err(PyValueError::new_err(format!(
                "expecting {nedges} items, got {}",
                dests.len()
            )));
        }
        let w = weights_arg(weights, nedges)?;
        let c = slf.as_super().borrow().c()?.clone();
        check_ranks(py, &sources, c.size())?;
        check_ranks(py, &dests, c.size())?;
        // Every edge (s -> d, w) this process names goes to s (an out-edge)
        // and to d (an in-edge); each process then knows its neighbours.
        let size = c.size() as usize;
        let mut to: Vec<Vec<i32>> = vec![Vec::new(); size];
        let mut k = 0;
        for (s, &deg) in sources.iter().zip(&degrees) {
            for _ in 0..deg.max(0) {
                let d = dests[k];
                let wt = w.as_ref().map_or(1, |w| w[k]);
                to[*s as usize].extend([0, *s, d, wt]);
                to[d as usize].extend([1, *s, d, wt]);
                k += 1;
            }
        }
        let blobs: Vec<Vec<u8>> = to
            .iter()
            .map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let c2 = c.clone();
        let got = blocking(py, move || c2.alltoall_bytes(blobs))?;
        let mut srcs = Vec::new();
        let mut sws = Vec::new();
        let mut dsts = Vec::new();
        let mut dws = Vec::new();
        for b in got {
            let v: Vec<i32> = b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            for e in v.chunks_exact(4) {
                if e[0] == 0 {
                    dsts.push(e[2]);
                    dws.push(e[3]);
                } else {
                    srcs.push(e[1]);
                    sws.push(e[3]);
                }
            }
        }
        let t = Topology::DistGraph {
            sources: srcs,
            destinations: dsts,
            weights: w.map(|_| (sws, dws)),
        };
        dist_graph(py, &c, t, info)
    }

    #[pyo3(signature = (dims, periods=None))]
    fn Cart_map(
        slf: &Bound<'_, Self>,
        dims: &Bound<'_, PyAny>,
        periods: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i32> {
        let c = slf.as_super().borrow().c()?.clone();
        let dims = int_list(dims)?;
        periods_arg(periods, dims.len())?;
        let n: i32 = dims.iter().product();
        if n > c.size() {
            return Err(mpi_error(
                slf.py(),
                class::ERR_DIMS,
                "grid larger than the communicator",
            ));
        }
        Ok(if c.rank() < n { c.rank() } else { UNDEFINED })
    }

    fn Graph_map(
        slf: &Bound<'_, Self>,
        index: &Bound<'_, PyAny>,
        edges: &Bound<'_, PyAny>,
    ) -> PyResult<i32> {
        let c = slf.as_super().borrow().c()?.clone();
        let (index, _) = graph_args(index, edges)?;
        let n = index.len() as i32;
        Ok(if c.rank() < n { c.rank() } else { UNDEFINED })
    }
}

fn check_ranks(py: Python<'_>, v: &[i32], size: i32) -> PyResult<()> {
    if let Some(&r) = v.iter().find(|&&r| r < 0 || r >= size) {
        return Err(mpi_error(
            py,
            class::ERR_RANK,
            &format!("invalid rank {r} (communicator size {size})"),
        ));
    }
    Ok(())
}

fn dist_graph(
    py: Python<'_>,
    c: &CommRef,
    t: Topology,
    info: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let items = PyInfo::items_of(info)?;
    let c2 = c.clone();
    let new = blocking(py, move || c2.dup())?;
    new.set_topology(t).py()?;
    adopt(
        py,
        new,
        Some(c),
        items,
        Some(&class_named(py, "Distgraphcomm")?),
    )
}

// ------------------------------------------------------------- classes

/// A communicator with a topology.
#[pyclass(module = "oxmpi.MPI", name = "Topocomm", extends = PyIntracomm, subclass)]
pub struct PyTopocomm;

/// A Cartesian communicator.
#[pyclass(module = "oxmpi.MPI", name = "Cartcomm", extends = PyTopocomm, subclass)]
pub struct PyCartcomm;

/// A graph communicator.
#[pyclass(module = "oxmpi.MPI", name = "Graphcomm", extends = PyTopocomm, subclass)]
pub struct PyGraphcomm;

/// A distributed graph communicator.
#[pyclass(module = "oxmpi.MPI", name = "Distgraphcomm", extends = PyTopocomm, subclass)]
pub struct PyDistgraphcomm;

/// The handle of a constructor argument, checked to have topology `want`
/// (any topology when None).
fn checked(
    comm: Option<&Bound<'_, PyComm>>,
    want: Option<i32>,
    what: &str,
) -> PyResult<Option<CommRef>> {
    let inner = comm.and_then(|c| c.borrow().inner.clone());
    if let Some(c) = &inner {
        let kind = c.topology().map(|t| t.kind());
        let ok = match want {
            None => kind.is_some(),
            Some(k) => kind == Some(k),
        };
        if c.is_inter() || !ok {
            return Err(PyTypeError::new_err(format!("expecting {what}")));
        }
    }
    Ok(inner)
}

fn chain<T: pyo3::PyClass<BaseType = PyTopocomm>>(
    inner: Option<CommRef>,
    sub: T,
) -> pyo3::PyClassInitializer<T> {
    pyo3::PyClassInitializer::from(PyComm { inner })
        .add_subclass(PyIntracomm)
        .add_subclass(PyTopocomm)
        .add_subclass(sub)
}

#[pymethods]
impl PyTopocomm {
    #[new]
    #[pyo3(signature = (comm=None))]
    fn new(comm: Option<&Bound<'_, PyComm>>) -> PyResult<pyo3::PyClassInitializer<PyTopocomm>> {
        let inner = checked(comm, None, "a topology communicator")?;
        Ok(pyo3::PyClassInitializer::from(PyComm { inner })
            .add_subclass(PyIntracomm)
            .add_subclass(PyTopocomm))
    }

    #[getter]
    fn degrees(slf: &Bound<'_, Self>) -> PyResult<(usize, usize)> {
        let (i, o) = neighbors(slf)?;
        Ok((i.len(), o.len()))
    }

    #[getter]
    fn indegree(slf: &Bound<'_, Self>) -> PyResult<usize> {
        Ok(neighbors(slf)?.0.len())
    }

    #[getter]
    fn outdegree(slf: &Bound<'_, Self>) -> PyResult<usize> {
        Ok(neighbors(slf)?.1.len())
    }

    #[getter]
    fn inoutedges(slf: &Bound<'_, Self>) -> PyResult<(Vec<i32>, Vec<i32>)> {
        neighbors(slf)
    }

    #[getter]
    fn inedges(slf: &Bound<'_, Self>) -> PyResult<Vec<i32>> {
        Ok(neighbors(slf)?.0)
    }

    #[getter]
    fn outedges(slf: &Bound<'_, Self>) -> PyResult<Vec<i32>> {
        Ok(neighbors(slf)?.1)
    }

    // ------------------------------------------------- neighbour (buffers)

    fn Neighbor_allgather(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let r = start_nbr(slf, sendbuf, recvbuf, NbrKind::Allgather)?;
        finish_blocking(slf.py(), r)
    }

    fn Neighbor_allgatherv(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let r = start_nbr(slf, sendbuf, recvbuf, NbrKind::Allgatherv)?;
        finish_blocking(slf.py(), r)
    }

    fn Neighbor_alltoall(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let r = start_nbr(slf, sendbuf, recvbuf, NbrKind::Alltoall)?;
        finish_blocking(slf.py(), r)
    }

    fn Neighbor_alltoallv(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let r = start_nbr(slf, sendbuf, recvbuf, NbrKind::Alltoallv)?;
        finish_blocking(slf.py(), r)
    }

    fn Neighbor_alltoallw(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let r = start_nbr(slf, sendbuf, recvbuf, NbrKind::Alltoallw)?;
        finish_blocking(slf.py(), r)
    }

    fn Ineighbor_allgather(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<PyRequest> {
        start_nbr(slf, sendbuf, recvbuf, NbrKind::Allgather).map(into_request)
    }

    fn Ineighbor_allgatherv(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<PyRequest> {
        start_nbr(slf, sendbuf, recvbuf, NbrKind::Allgatherv).map(into_request)
    }

    fn Ineighbor_alltoall(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<PyRequest> {
        start_nbr(slf, sendbuf, recvbuf, NbrKind::Alltoall).map(into_request)
    }

    fn Ineighbor_alltoallv(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<PyRequest> {
        start_nbr(slf, sendbuf, recvbuf, NbrKind::Alltoallv).map(into_request)
    }

    fn Ineighbor_alltoallw(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<PyRequest> {
        start_nbr(slf, sendbuf, recvbuf, NbrKind::Alltoallw).map(into_request)
    }

    #[pyo3(signature = (sendbuf, recvbuf, info=None))]
    fn Neighbor_allgather_init(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        persist_nbr(slf, sendbuf, recvbuf, NbrKind::Allgather)
    }

    #[pyo3(signature = (sendbuf, recvbuf, info=None))]
    fn Neighbor_allgatherv_init(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        persist_nbr(slf, sendbuf, recvbuf, NbrKind::Allgatherv)
    }

    #[pyo3(signature = (sendbuf, recvbuf, info=None))]
    fn Neighbor_alltoall_init(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        persist_nbr(slf, sendbuf, recvbuf, NbrKind::Alltoall)
    }

    #[pyo3(signature = (sendbuf, recvbuf, info=None))]
    fn Neighbor_alltoallv_init(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        persist_nbr(slf, sendbuf, recvbuf, NbrKind::Alltoallv)
    }

    #[pyo3(signature = (sendbuf, recvbuf, info=None))]
    fn Neighbor_alltoallw_init(
        slf: &Bound<'_, Self>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        persist_nbr(slf, sendbuf, recvbuf, NbrKind::Alltoallw)
    }

    // ------------------------------------------------- neighbour (objects)

    fn neighbor_allgather<'py>(
        slf: &Bound<'py, Self>,
        sendobj: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let py = slf.py();
        let c = comm_of(slf)?;
        let (_, dests) = topo_of(&c)?.neighbors(c.rank()).py()?;
        let blob = pickle::dumps_vec(py, sendobj)?;
        let sends = vec![blob; dests.len()];
        let got = blocking(py, move || c.neighbor_exchange_bytes(sends))?;
        unpickle_all(py, got)
    }

    fn neighbor_alltoall<'py>(
        slf: &Bound<'py, Self>,
        sendobj: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let py = slf.py();
        let c = comm_of(slf)?;
        let (_, dests) = topo_of(&c)?.neighbors(c.rank()).py()?;
        let items: Vec<Bound<'py, PyAny>> = sendobj.try_iter()?.collect::<PyResult<_>>()?;
        if items.len() != dests.len() {
            return Err(PyValueError::new_err(format!(
                "neighbor_alltoall: expected a sequence of {} items, got {}",
                dests.len(),
                items.len()
            )));
        }
        let sends = items
            .iter()
            .map(|o| pickle::dumps_vec(py, o))
            .collect::<PyResult<Vec<_>>>()?;
        let got = blocking(py, move || c.neighbor_exchange_bytes(sends))?;
        unpickle_all(py, got)
    }
}

fn unpickle_all(py: Python<'_>, blobs: Vec<Vec<u8>>) -> PyResult<Bound<'_, PyList>> {
    let items = blobs
        .iter()
        .map(|b| {
            if b.is_empty() {
                // A PROC_NULL neighbour sends nothing.
                Ok(py.None().into_bound(py))
            } else {
                pickle::loads_slice(py, b)
            }
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

fn comm_of(slf: &Bound<'_, PyTopocomm>) -> PyResult<CommRef> {
    Ok(slf.as_super().as_super().borrow().c()?.clone())
}

fn neighbors(slf: &Bound<'_, PyTopocomm>) -> PyResult<(Vec<i32>, Vec<i32>)> {
    let c = comm_of(slf)?;
    topo_of(&c)?.neighbors(c.rank()).py()
}

#[pymethods]
impl PyCartcomm {
    #[new]
    #[pyo3(signature = (comm=None))]
    fn new(comm: Option<&Bound<'_, PyComm>>) -> PyResult<pyo3::PyClassInitializer<PyCartcomm>> {
        let inner = checked(comm, Some(topo::kind::CART), "a Cartesian communicator")?;
        Ok(chain(inner, PyCartcomm))
    }

    fn Get_dim(slf: &Bound<'_, Self>) -> PyResult<usize> {
        Ok(cart(slf)?.0.len())
    }

    #[getter]
    fn dim(slf: &Bound<'_, Self>) -> PyResult<usize> {
        Self::Get_dim(slf)
    }

    #[getter]
    fn ndim(slf: &Bound<'_, Self>) -> PyResult<usize> {
        Self::Get_dim(slf)
    }

    fn Get_topo(slf: &Bound<'_, Self>) -> PyResult<(Vec<i32>, Vec<bool>, Vec<i32>)> {
        let (dims, periods, c) = cart(slf)?;
        let coords = topo_of(&c)?.cart_coords(c.rank()).py()?;
        Ok((dims, periods, coords))
    }

    #[getter]
    fn topo(slf: &Bound<'_, Self>) -> PyResult<(Vec<i32>, Vec<bool>, Vec<i32>)> {
        Self::Get_topo(slf)
    }

    #[getter]
    fn dims(slf: &Bound<'_, Self>) -> PyResult<Vec<i32>> {
        Ok(cart(slf)?.0)
    }

    #[getter]
    fn periods(slf: &Bound<'_, Self>) -> PyResult<Vec<bool>> {
        Ok(cart(slf)?.1)
    }

    #[getter]
    fn coords(slf: &Bound<'_, Self>) -> PyResult<Vec<i32>> {
        Ok(Self::Get_topo(slf)?.2)
    }

    fn Get_cart_rank(slf: &Bound<'_, Self>, coords: &Bound<'_, PyAny>) -> PyResult<i32> {
        let c = cart(slf)?.2;
        topo_of(&c)?.cart_rank(&int_list(coords)?).py()
    }

    fn Get_coords(slf: &Bound<'_, Self>, rank: i32) -> PyResult<Vec<i32>> {
        let c = cart(slf)?.2;
        topo_of(&c)?.cart_coords(rank).py()
    }

    fn Shift(slf: &Bound<'_, Self>, direction: i32, disp: i32) -> PyResult<(i32, i32)> {
        let c = cart(slf)?.2;
        if direction < 0 {
            return Err(mpi_error(slf.py(), class::ERR_DIMS, "negative direction"));
        }
        topo_of(&c)?
            .cart_shift(c.rank(), direction as usize, disp)
            .py()
    }

    fn Sub(slf: &Bound<'_, Self>, remain_dims: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let (dims, _, c) = cart(slf)?;
        let remain = periods_arg(Some(remain_dims), dims.len())?;
        let t = topo_of(&c)?;
        let sub = t.cart_sub(&remain).py()?;
        let coords = t.cart_coords(c.rank()).py()?;
        // Processes that agree on the dropped coordinates share a sub-grid;
        // the kept coordinates order them (row-major, as the old ranks).
        let mut color = 0i64;
        for i in 0..dims.len() {
            if !remain[i] {
                color = color * dims[i] as i64 + coords[i] as i64;
            }
        }
        let c2 = c.clone();
        let key = c.rank();
        let new = blocking(py, move || c2.split(color as i32, key))?
            .ok_or_else(|| mpi_error(py, class::ERR_INTERN, "Cart_sub lost this process"))?;
        new.set_topology(sub).py()?;
        adopt(
            py,
            new,
            Some(&c),
            Vec::new(),
            Some(&class_named(py, "Cartcomm")?),
        )
    }
}

/// (dims, periods, communicator) of a Cartesian communicator.
fn cart(slf: &Bound<'_, PyCartcomm>) -> PyResult<(Vec<i32>, Vec<bool>, CommRef)> {
    let c = slf.as_super().as_super().as_super().borrow().c()?.clone();
    match &*topo_of(&c)? {
        Topology::Cart { dims, periods } => Ok((dims.clone(), periods.clone(), c)),
        _ => Err(mpi_error(
            slf.py(),
            class::ERR_TOPOLOGY,
            "not a Cartesian communicator",
        )),
    }
}

#[pymethods]
impl PyGraphcomm {
    #[new]
    #[pyo3(signature = (comm=None))]
    fn new(comm: Option<&Bound<'_, PyComm>>) -> PyResult<pyo3::PyClassInitializer<PyGraphcomm>> {
        let inner = checked(comm, Some(topo::kind::GRAPH), "a graph communicator")?;
        Ok(chain(inner, PyGraphcomm))
    }

    fn Get_dims(slf: &Bound<'_, Self>) -> PyResult<(usize, usize)> {
        let (index, edges, _) = graph(slf)?;
        Ok((index.len(), edges.len()))
    }

    #[getter]
    fn dims(slf: &Bound<'_, Self>) -> PyResult<(usize, usize)> {
        Self::Get_dims(slf)
    }

    #[getter]
    fn nnodes(slf: &Bound<'_, Self>) -> PyResult<usize> {
        Ok(graph(slf)?.0.len())
    }

    #[getter]
    fn nedges(slf: &Bound<'_, Self>) -> PyResult<usize> {
        Ok(graph(slf)?.1.len())
    }

    fn Get_topo(slf: &Bound<'_, Self>) -> PyResult<(Vec<i32>, Vec<i32>)> {
        let (index, edges, _) = graph(slf)?;
        Ok((index, edges))
    }

    #[getter]
    fn topo(slf: &Bound<'_, Self>) -> PyResult<(Vec<i32>, Vec<i32>)> {
        Self::Get_topo(slf)
    }

    #[getter]
    fn index(slf: &Bound<'_, Self>) -> PyResult<Vec<i32>> {
        Ok(graph(slf)?.0)
    }

    #[getter]
    fn edges(slf: &Bound<'_, Self>) -> PyResult<Vec<i32>> {
        Ok(graph(slf)?.1)
    }

    fn Get_neighbors_count(slf: &Bound<'_, Self>, rank: i32) -> PyResult<usize> {
        Ok(Self::Get_neighbors(slf, rank)?.len())
    }

    #[getter]
    fn nneighbors(slf: &Bound<'_, Self>) -> PyResult<usize> {
        let r = graph(slf)?.2.rank();
        Self::Get_neighbors_count(slf, r)
    }

    fn Get_neighbors(slf: &Bound<'_, Self>, rank: i32) -> PyResult<Vec<i32>> {
        let c = graph(slf)?.2;
        topo_of(&c)?.graph_neighbors(rank).py()
    }

    #[getter(neighbors)]
    fn neighbors_prop(slf: &Bound<'_, Self>) -> PyResult<Vec<i32>> {
        let r = graph(slf)?.2.rank();
        Self::Get_neighbors(slf, r)
    }
}

fn graph(slf: &Bound<'_, PyGraphcomm>) -> PyResult<(Vec<i32>, Vec<i32>, CommRef)> {
    let c = slf.as_super().as_super().as_super().borrow().c()?.clone();
    match &*topo_of(&c)? {
        Topology::Graph { index, edges } => Ok((index.clone(), edges.clone(), c)),
        _ => Err(mpi_error(
            slf.py(),
            class::ERR_TOPOLOGY,
            "not a graph communicator",
        )),
    }
}

#[pymethods]
impl PyDistgraphcomm {
    #[new]
    #[pyo3(signature = (comm=None))]
    fn new(
        comm: Option<&Bound<'_, PyComm>>,
    ) -> PyResult<pyo3::PyClassInitializer<PyDistgraphcomm>> {
        let inner = checked(
            comm,
            Some(topo::kind::DIST_GRAPH),
            "a distributed graph communicator",
        )?;
        Ok(chain(inner, PyDistgraphcomm))
    }

    fn Get_dist_neighbors_count(slf: &Bound<'_, Self>) -> PyResult<(usize, usize, bool)> {
        let (s, d, w) = Self::Get_dist_neighbors(slf)?;
        Ok((s.len(), d.len(), w.is_some()))
    }

    #[allow(clippy::type_complexity)]
    fn Get_dist_neighbors(
        slf: &Bound<'_, Self>,
    ) -> PyResult<(Vec<i32>, Vec<i32>, Option<(Vec<i32>, Vec<i32>)>)> {
        let c = slf.as_super().as_super().as_super().borrow().c()?.clone();
        match &*topo_of(&c)? {
            Topology::DistGraph {
                sources,
                destinations,
                weights,
            } => Ok((sources.clone(), destinations.clone(), weights.clone())),
            _ => Err(mpi_error(
                slf.py(),
                class::ERR_TOPOLOGY,
                "not a distributed graph communicator",
            )),
        }
    }
}

// ---------------------------------------------------- neighbour buffers

/// The blocks of a neighbour collective on one side: a buffer per
/// neighbour, with what keeps their memory valid (packed copies unpack
/// into the user's buffer when dropped, before the view is released).
#[derive(Default)]
pub(crate) struct Blocks {
    pub(crate) raws: Vec<RawBuf>,
    packs: Vec<Packed>,
    #[allow(dead_code)]
    views: Vec<BufView>,
}

impl Blocks {
    /// The packed copies and the views, for a persistent request.
    pub(crate) fn into_parts(self) -> (Vec<Packed>, Vec<BufView>) {
        (self.packs, self.views)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum NbrKind {
    Allgather,
    Allgatherv,
    Alltoall,
    Alltoallv,
    Alltoallw,
}

/// Carves blocks (count, byte offset) of datatype `ty` out of the memory
/// at `base` (`len` bytes, checked; None for MPI_BOTTOM, whose offsets are
/// absolute addresses).
fn carve(
    base: *mut u8,
    len: Option<usize>,
    ty: &PyDatatype,
    blocks: &[(usize, isize)],
    writable: bool,
    out: &mut Blocks,
) -> PyResult<()> {
    let dt = ty.get()?;
    for &(count, off) in blocks {
        if let (Some(len), Some((lo, hi))) = (len, dt.layout().span(count)) {
            if off + lo < 0 || off + hi > len as isize {
                return Err(PyValueError::new_err(format!(
                    "message: block of {count} elements at byte {off} does not fit \
                     a buffer of {len} bytes"
                )));
            }
        }
        let at = if len.is_none() {
            std::ptr::with_exposed_provenance_mut::<u8>(off as usize)
        } else {
            base.wrapping_offset(off)
        };
        if dt.is_contiguous() && len.is_some() {
            out.raws.push(RawBuf {
                ptr: at,
                len: count * dt.size(),
            });
        } else {
            let (raw, packed) = datatype::block_message(ty, count, at, writable)?;
            out.raws.push(raw);
            out.packs.push(packed);
        }
    }
    Ok(())
}

fn is_datatype(o: &Bound<'_, PyAny>) -> bool {
    o.is_instance_of::<PyDatatype>() || o.is_instance_of::<pyo3::types::PyString>()
}

/// Parses a buffer specification into `nblocks` blocks: `vector` allows
/// per-block counts and displacements (mpi4py's message_vector), else one
/// count for every block (message_simple with blocks).
pub(crate) fn parse_blocks(
    obj: &Bound<'_, PyAny>,
    writable: bool,
    nblocks: usize,
    vector: bool,
) -> PyResult<Blocks> {
    let items: Option<Vec<Bound<'_, PyAny>>> = if let Ok(l) = obj.cast::<PyList>() {
        Some(l.iter().collect())
    } else if let Ok(t) = obj.cast::<PyTuple>() {
        Some(t.iter().collect())
    } else {
        None
    };
    let (buf, mut counts, mut displs, ty) = match items {
        None => (obj.clone(), None, None, None),
        Some(items) => match items.as_slice() {
            [b, t] if is_datatype(t) => (b.clone(), None, None, Some(t.clone())),
            [b, c] => {
                if let Ok(t) = c.cast::<PyTuple>() {
                    (b.clone(), Some(t.get_item(0)?), Some(t.get_item(1)?), None)
                } else if !vector && c.cast::<PyList>().is_ok() {
                    let l = c.cast::<PyList>()?;
                    (b.clone(), Some(l.get_item(0)?), Some(l.get_item(1)?), None)
                } else {
                    (b.clone(), Some(c.clone()), None, None)
                }
            }
            [b, c, t] => {
                if let Ok(tt) = c.cast::<PyTuple>() {
                    (
                        b.clone(),
                        Some(tt.get_item(0)?),
                        Some(tt.get_item(1)?),
                        Some(t.clone()),
                    )
                } else if !vector && c.cast::<PyList>().is_ok() {
                    let l = c.cast::<PyList>()?;
                    (
                        b.clone(),
                        Some(l.get_item(0)?),
                        Some(l.get_item(1)?),
                        Some(t.clone()),
                    )
                } else {
                    (b.clone(), Some(c.clone()), None, Some(t.clone()))
                }
            }
            [b, c, d, t] => (b.clone(), Some(c.clone()), Some(d.clone()), Some(t.clone())),
            _ => {
                return Err(PyValueError::new_err("message: expecting 2 to 4 items"));
            }
        },
    };
    if counts.as_ref().is_some_and(|c| c.is_none()) {
        counts = None;
    }
    if displs.as_ref().is_some_and(|d| d.is_none()) {
        displs = None;
    }
    let view = if is_bottom(&buf) {
        None
    } else {
        Some(BufView::get(&buf, writable, ty.is_none())?)
    };
    let ty = match (&ty, &view) {
        (Some(t), _) => crate::buffer::as_datatype(t)?,
        (None, Some(v)) => crate::buffer::from_format(v.format())?,
        (None, None) => crate::buffer::from_format("B")?,
    };
    let (_, ext) = ty.get()?.extent();
    let len = view.as_ref().map_or(0, |v| v.len());
    let per: Vec<usize> = match &counts {
        None => {
            if len > 0 && (ext <= 0 || len % ext as usize != 0) {
                return Err(PyValueError::new_err(format!(
                    "message: cannot infer count, buffer length {len} is not a multiple \
                     of datatype extent {ext}"
                )));
            }
            let total = if ext > 0 { len / ext as usize } else { 0 };
            if vector {
                (0..nblocks)
                    .map(|i| total / nblocks.max(1) + usize::from(total % nblocks.max(1) > i))
                    .collect()
            } else {
                if nblocks > 0 && total % nblocks != 0 {
                    return Err(PyValueError::new_err(format!(
                        "message: cannot infer count, number of entries {total} is not a \
                         multiple of required number of blocks {nblocks}"
                    )));
                }
                vec![total / nblocks.max(1); nblocks]
            }
        }
        Some(c) => {
            if let Ok(n) = c.extract::<i64>() {
                vec![
                    usize::try_from(n).map_err(|_| PyValueError::new_err("negative count"))?;
                    nblocks
                ]
            } else {
                let v: Vec<usize> = c.extract()?;
                if v.len() != nblocks {
                    return Err(PyValueError::new_err(format!(
                        "expecting {nblocks} items, got {}",
                        v.len()
                    )));
                }
                v
            }
        }
    };
    // Displacements in units of the extent.
    let disp_units: Vec<isize> = match &displs {
        None => {
            let mut acc = 0isize;
            per.iter()
                .map(|&c| {
                    let d = acc;
                    acc += c as isize;
                    d
                })
                .collect()
        }
        Some(d) => {
            if let Ok(n) = d.extract::<isize>() {
                if vector {
                    (0..nblocks).map(|i| n * i as isize).collect()
                } else {
                    // A simple message's displacement moves its start.
                    let mut acc = n;
                    per.iter()
                        .map(|&c| {
                            let x = acc;
                            acc += c as isize;
                            x
                        })
                        .collect()
                }
            } else {
                let v: Vec<isize> = d.extract()?;
                if v.len() != nblocks {
                    return Err(PyValueError::new_err(format!(
                        "expecting {nblocks} items, got {}",
                        v.len()
                    )));
                }
                v
            }
        }
    };
    let blocks: Vec<(usize, isize)> = per
        .iter()
        .zip(&disp_units)
        .map(|(&c, &d)| (c, d * ext))
        .collect();
    let mut out = Blocks::default();
    match view {
        Some(v) => {
            carve(v.ptr(), Some(v.len()), &ty, &blocks, writable, &mut out)?;
            out.views.push(v);
        }
        None if blocks.iter().all(|b| b.0 == 0) => {}
        None => carve(std::ptr::null_mut(), None, &ty, &blocks, writable, &mut out)?,
    }
    Ok(out)
}

/// mpi4py's message_vector_w: (buf, (counts, displs), types),
/// (buf, counts, displs, types) or (buf, types); displacements in bytes.
pub(crate) fn parse_blocks_w(
    obj: &Bound<'_, PyAny>,
    writable: bool,
    nblocks: usize,
) -> PyResult<Blocks> {
    let items: Vec<Bound<'_, PyAny>> = obj.try_iter()?.collect::<PyResult<_>>()?;
    let (buf, counts, displs, types) = match items.as_slice() {
        [b, t] => (b.clone(), None, None, t.clone()),
        [b, cd, t] => {
            let cd: Vec<Bound<'_, PyAny>> = cd.try_iter()?.collect::<PyResult<_>>()?;
            if cd.len() != 2 {
                return Err(PyValueError::new_err("message: expecting (counts, displs)"));
            }
            (
                b.clone(),
                Some(cd[0].clone()),
                Some(cd[1].clone()),
                t.clone(),
            )
        }
        [b, c, d, t] => (b.clone(), Some(c.clone()), Some(d.clone()), t.clone()),
        _ => return Err(PyValueError::new_err("message: expecting 2 to 4 items")),
    };
    let bottom = is_bottom(&buf);
    if bottom && (counts.is_none() || displs.is_none()) {
        return Err(PyValueError::new_err(
            "message: BOTTOM requires counts and displs",
        ));
    }
    let view = if bottom {
        None
    } else {
        Some(BufView::get(&buf, writable, false)?)
    };
    let (per, offs): (Vec<usize>, Vec<isize>) = match (counts, displs) {
        (Some(c), Some(d)) => (c.extract()?, d.extract()?),
        _ => (vec![1; nblocks], vec![0; nblocks]),
    };
    if per.len() != nblocks || offs.len() != nblocks {
        return Err(PyValueError::new_err(format!(
            "expecting {nblocks} counts and displacements"
        )));
    }
    let types: Vec<PyDatatype> = types
        .try_iter()?
        .map(|t| crate::buffer::as_datatype(&t?))
        .collect::<PyResult<_>>()?;
    if types.len() != nblocks {
        return Err(PyValueError::new_err(format!(
            "expecting {nblocks} datatypes, got {}",
            types.len()
        )));
    }
    let mut out = Blocks::default();
    let (base, len) = match &view {
        Some(v) => (v.ptr(), Some(v.len())),
        None => (std::ptr::null_mut(), None),
    };
    for i in 0..nblocks {
        carve(
            base,
            len,
            &types[i],
            &[(per[i], offs[i])],
            writable,
            &mut out,
        )?;
    }
    out.views.extend(view);
    Ok(out)
}

/// A started neighbour collective: its request and what it keeps alive.
struct Started {
    req: oxmpi::backend::RequestRef,
    keep: (Blocks, Blocks),
}

fn start_nbr(
    slf: &Bound<'_, PyTopocomm>,
    sendbuf: &Bound<'_, PyAny>,
    recvbuf: &Bound<'_, PyAny>,
    kind: NbrKind,
) -> PyResult<Started> {
    let (c, send, recv) = parse_nbr(slf, sendbuf, recvbuf, kind)?;
    let req = c.ineighbor_exchange(&send.raws, &recv.raws).py()?;
    Ok(Started {
        req,
        keep: (send, recv),
    })
}

/// The communicator and the send and receive blocks of a neighbour
/// collective.
fn parse_nbr(
    slf: &Bound<'_, PyTopocomm>,
    sendbuf: &Bound<'_, PyAny>,
    recvbuf: &Bound<'_, PyAny>,
    kind: NbrKind,
) -> PyResult<(CommRef, Blocks, Blocks)> {
    let c = comm_of(slf)?;
    let (sources, dests) = topo_of(&c)?.neighbors(c.rank()).py()?;
    let (nin, nout) = (sources.len(), dests.len());
    let (send, recv) = match kind {
        NbrKind::Allgather | NbrKind::Allgatherv => {
            // One send buffer, sent to every destination.
            let one = parse_blocks(sendbuf, false, 1, false)?;
            let recv = parse_blocks(recvbuf, true, nin, kind == NbrKind::Allgatherv)?;
            let send = Blocks {
                raws: vec![one.raws[0]; nout],
                packs: one.packs,
                views: one.views,
            };
            (send, recv)
        }
        NbrKind::Alltoall | NbrKind::Alltoallv => {
            let v = kind == NbrKind::Alltoallv;
            (
                parse_blocks(sendbuf, false, nout, v)?,
                parse_blocks(recvbuf, true, nin, v)?,
            )
        }
        NbrKind::Alltoallw => (
            parse_blocks_w(sendbuf, false, nout)?,
            parse_blocks_w(recvbuf, true, nin)?,
        ),
    };
    Ok((c, send, recv))
}

/// A persistent neighbour collective (MPI-4.1 §7.8): parsed once, the
/// same exchange started at each `Start`.
fn persist_nbr(
    slf: &Bound<'_, PyTopocomm>,
    sendbuf: &Bound<'_, PyAny>,
    recvbuf: &Bound<'_, PyAny>,
    kind: NbrKind,
) -> PyResult<Py<PyPrequest>> {
    let (c, send, recv) = parse_nbr(slf, sendbuf, recvbuf, kind)?;
    let (sends, recvs) = (send.raws, recv.raws);
    let start: CollStart = Box::new(move || c.ineighbor_exchange(&sends, &recvs));
    let mut packs = send.packs;
    packs.extend(recv.packs);
    let views: Vec<BufView> = send.views.into_iter().chain(recv.views).collect();
    let pc = PersistentColl::new(start, packs, Box::new(views));
    new_prequest(slf.py(), Persistent::Collective(pc))
}

fn finish_blocking(py: Python<'_>, s: Started) -> PyResult<()> {
    let req = s.req.clone();
    let res = if req.is_complete() {
        req.wait().py()
    } else {
        blocking(py, move || req.wait())
    };
    // The receive blocks unpack as `keep` drops, after completion.
    drop(s);
    res.map(|_| ())
}

fn into_request(s: Started) -> PyRequest {
    PyRequest::new(s.req, Payload::Keep(Box::new(s.keep)))
}
