//! Collective calls of `MPI.Comm` (MPI-4.1 chapter 6), objects and
//! buffers.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;

use oxmpi::backend::RawBuf;

use crate::buffer;
use crate::comm::{chunk_len, is_in_place, recv_buf_parse, PyComm};
use crate::engine::blocking;
use crate::errors::from_pyerr;
use crate::op::{self, PyOp};
use crate::pickle;

#[pymethods]
impl PyComm {
    // ------------------------------------------------ collectives (objects)

    fn barrier(&self, py: Python<'_>) -> PyResult<()> {
        self.Barrier(py)
    }

    #[pyo3(signature = (obj=None, root=0))]
    fn bcast<'py>(
        &self,
        py: Python<'py>,
        obj: Option<&Bound<'py, PyAny>>,
        root: i32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _serial = crate::p2p::CommLock::acquire(py, self.c()?, "bcast")?;
        let c = self.c()?.clone();
        let data = if c.rank() == root {
            let none = py.None().into_bound(py);
            Some(pickle::dumps_vec(py, obj.unwrap_or(&none))?)
        } else {
            None
        };
        let v = blocking(py, move || c.bcast_bytes(data, root))?;
        pickle::loads_slice(py, &v)
    }

    #[pyo3(signature = (sendobj, op=None, root=0))]
    fn reduce<'py>(
        &self,
        py: Python<'py>,
        sendobj: &Bound<'py, PyAny>,
        op: Option<&Bound<'py, PyAny>>,
        root: i32,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.reduce_objects(py, sendobj, op, Some(root))
    }

    #[pyo3(signature = (sendobj, op=None))]
    fn allreduce<'py>(
        &self,
        py: Python<'py>,
        sendobj: &Bound<'py, PyAny>,
        op: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.reduce_objects(py, sendobj, op, None)
    }

    #[pyo3(signature = (sendobj, root=0))]
    fn gather<'py>(
        &self,
        py: Python<'py>,
        sendobj: &Bound<'py, PyAny>,
        root: i32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c()?.clone();
        let data = pickle::dumps_vec(py, sendobj)?;
        match blocking(py, move || c.gather_bytes(&data, root))? {
            Some(blobs) => {
                let items = blobs
                    .iter()
                    .map(|b| pickle::loads_slice(py, b))
                    .collect::<PyResult<Vec<_>>>()?;
                Ok(PyList::new(py, items)?.into_any())
            }
            None => Ok(py.None().into_bound(py)),
        }
    }

    #[pyo3(signature = (sendobj, root=0))]
    fn scatter<'py>(
        &self,
        py: Python<'py>,
        sendobj: Option<&Bound<'py, PyAny>>,
        root: i32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _serial = crate::p2p::CommLock::acquire(py, self.c()?, "bcast")?;
        let c = self.c()?.clone();
        let data = if c.rank() == root {
            let seq = sendobj
                .ok_or_else(|| PyTypeError::new_err("scatter: the root must pass a sequence"))?;
            let items: Vec<Bound<'py, PyAny>> = seq.try_iter()?.collect::<PyResult<_>>()?;
            if items.len() != c.size() as usize {
                return Err(PyValueError::new_err(format!(
                    "scatter: expected a sequence of {} items, got {}",
                    c.size(),
                    items.len()
                )));
            }
            Some(
                items
                    .iter()
                    .map(|o| pickle::dumps_vec(py, o))
                    .collect::<PyResult<Vec<_>>>()?,
            )
        } else {
            None
        };
        let v = blocking(py, move || c.scatter_bytes(data, root))?;
        pickle::loads_slice(py, &v)
    }

    fn allgather<'py>(
        &self,
        py: Python<'py>,
        sendobj: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let c = self.c()?.clone();
        let data = pickle::dumps_vec(py, sendobj)?;
        let blobs = blocking(py, move || c.allgather_bytes(&data))?;
        let items = blobs
            .iter()
            .map(|b| pickle::loads_slice(py, b))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    fn alltoall<'py>(
        &self,
        py: Python<'py>,
        sendobj: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let c = self.c()?.clone();
        let items: Vec<Bound<'py, PyAny>> = sendobj.try_iter()?.collect::<PyResult<_>>()?;
        if items.len() != c.size() as usize {
            return Err(PyValueError::new_err(format!(
                "alltoall: expected a sequence of {} items, got {}",
                c.size(),
                items.len()
            )));
        }
        let data = items
            .iter()
            .map(|o| pickle::dumps_vec(py, o))
            .collect::<PyResult<Vec<_>>>()?;
        let blobs = blocking(py, move || c.alltoall_bytes(data))?;
        let out = blobs
            .iter()
            .map(|b| pickle::loads_slice(py, b))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, out)
    }

    // ------------------------------------------------ collectives (buffers)

    fn Barrier(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.c()?.clone();
        blocking(py, move || c.barrier())
    }

    #[pyo3(signature = (buf, root=0))]
    fn Bcast(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, root: i32) -> PyResult<()> {
        let c = self.c()?.clone();
        let m = buffer::parse(buf, c.rank() != root)?;
        let raw = m.raw;
        blocking(py, move || c.bcast(raw, root))
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None, root=0))]
    fn Reduce(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<()> {
        let c = self.c()?.clone();
        let is_root = c.rank() == root;
        let recv = match recvbuf {
            Some(b) if is_root => Some(recv_buf_parse(b)?),
            _ => None,
        };
        let send = if is_in_place(sendbuf) {
            if !is_root {
                return Err(PyValueError::new_err(
                    "Reduce: IN_PLACE is only valid at the root",
                ));
            }
            None
        } else {
            Some(buffer::parse(sendbuf, false)?)
        };
        let proto = send
            .as_ref()
            .or(recv.as_ref())
            .ok_or_else(|| PyValueError::new_err("Reduce: the root needs a receive buffer"))?;
        if is_root && recv.is_none() {
            return Err(PyValueError::new_err(
                "Reduce: the root needs a receive buffer",
            ));
        }
        let (count, dtype, pytype) = (proto.count, proto.dtype.clone(), proto.pytype.clone());
        if let (Some(r), Some(s)) = (&recv, &send) {
            if r.raw.len < s.raw.len {
                return Err(PyValueError::new_err(format!(
                    "Reduce: receive buffer of {} bytes is smaller than the {}-byte send buffer",
                    r.raw.len, s.raw.len
                )));
            }
        }
        let rop = op_or_sum(op)?.to_runtime(&pytype)?;
        let sraw = send.as_ref().map(|m| m.raw);
        let rraw = recv.as_ref().map(|m| m.raw).unwrap_or(RawBuf::EMPTY);
        blocking(py, move || c.reduce(sraw, rraw, count, &dtype, &rop, root))
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None))]
    fn Allreduce(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let c = self.c()?.clone();
        let recv = recv_buf_parse(recvbuf)?;
        let send = if is_in_place(sendbuf) {
            None
        } else {
            Some(buffer::parse(sendbuf, false)?)
        };
        let proto = send.as_ref().unwrap_or(&recv);
        let (count, dtype, pytype) = (proto.count, proto.dtype.clone(), proto.pytype.clone());
        if recv.raw.len < count * dtype.size() {
            return Err(PyValueError::new_err(format!(
                "Allreduce: receive buffer of {} bytes is smaller than the {}-byte send buffer",
                recv.raw.len,
                count * dtype.size()
            )));
        }
        let rop = op_or_sum(op)?.to_runtime(&pytype)?;
        let sraw = send.as_ref().map(|m| m.raw);
        let rraw = recv.raw;
        blocking(py, move || c.allreduce(sraw, rraw, count, &dtype, &rop))
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Gather(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<()> {
        let c = self.c()?.clone();
        let (rank, size) = (c.rank(), c.size() as usize);
        let recv = match recvbuf {
            Some(b) if rank == root => Some(recv_buf_parse(b)?),
            _ => None,
        };
        let in_place = is_in_place(sendbuf);
        let send = if in_place {
            None
        } else {
            Some(buffer::parse(sendbuf, false)?)
        };
        let block = match (&recv, &send) {
            (Some(r), _) => chunk_len(r.raw.len, size, "Gather")?,
            (None, Some(s)) => s.raw.len,
            (None, None) => return Err(PyValueError::new_err("Gather: no buffers")),
        };
        // SAFETY: the views pin the buffers for this call.
        let mine = match &send {
            Some(s) => unsafe { s.raw.as_slice() }.to_vec(),
            None => {
                let all = unsafe { recv.as_ref().expect("root has recvbuf").raw.as_slice() };
                all[rank as usize * block..(rank as usize + 1) * block].to_vec()
            }
        };
        let rraw = recv.as_ref().map(|m| m.raw);
        blocking(py, move || {
            if let Some(blobs) = c.gather_bytes(&mine, root)? {
                let out = rraw.expect("root has a receive buffer");
                // SAFETY: pinned for the call; written by this thread only.
                let out = unsafe { out.as_mut_slice() };
                for (i, b) in blobs.iter().enumerate() {
                    let n = b.len().min(block);
                    out[i * block..i * block + n].copy_from_slice(&b[..n]);
                }
            }
            Ok(())
        })
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Scatter(
        &self,
        py: Python<'_>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
        root: i32,
    ) -> PyResult<()> {
        let c = self.c()?.clone();
        let (rank, size) = (c.rank(), c.size() as usize);
        let in_place = is_in_place(recvbuf);
        let recv = if in_place {
            None
        } else {
            Some(recv_buf_parse(recvbuf)?)
        };
        let data = if rank == root {
            let s = buffer::parse(
                sendbuf.ok_or_else(|| {
                    PyValueError::new_err("Scatter: the root needs a send buffer")
                })?,
                false,
            )?;
            let block = chunk_len(s.raw.len, size, "Scatter")?;
            // SAFETY: pinned by `s` for this call.
            let all = unsafe { s.raw.as_slice() };
            Some(
                (0..size)
                    .map(|i| all[i * block..(i + 1) * block].to_vec())
                    .collect::<Vec<_>>(),
            )
        } else {
            None
        };
        let rraw = recv.as_ref().map(|m| m.raw);
        blocking(py, move || {
            let mine = c.scatter_bytes(data, root)?;
            if let Some(out) = rraw {
                // SAFETY: pinned for the call; written by this thread only.
                let out = unsafe { out.as_mut_slice() };
                let n = mine.len().min(out.len());
                out[..n].copy_from_slice(&mine[..n]);
            }
            Ok(())
        })
    }

    #[pyo3(signature = (sendbuf, recvbuf))]
    fn Allgather(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let c = self.c()?.clone();
        let (rank, size) = (c.rank() as usize, c.size() as usize);
        let recv = recv_buf_parse(recvbuf)?;
        let block = chunk_len(recv.raw.len, size, "Allgather")?;
        let mine = if is_in_place(sendbuf) {
            // SAFETY: pinned for this call.
            (unsafe { recv.raw.as_slice() })[rank * block..(rank + 1) * block].to_vec()
        } else {
            let s = buffer::parse(sendbuf, false)?;
            // SAFETY: pinned for this call.
            unsafe { s.raw.as_slice() }.to_vec()
        };
        let rraw = recv.raw;
        blocking(py, move || {
            let blobs = c.allgather_bytes(&mine)?;
            // SAFETY: pinned for the call; written by this thread only.
            let out = unsafe { rraw.as_mut_slice() };
            for (i, b) in blobs.iter().enumerate() {
                let n = b.len().min(block);
                out[i * block..i * block + n].copy_from_slice(&b[..n]);
            }
            Ok(())
        })
    }

    #[pyo3(signature = (sendbuf, recvbuf))]
    fn Alltoall(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let c = self.c()?.clone();
        let size = c.size() as usize;
        let recv = recv_buf_parse(recvbuf)?;
        let rblock = chunk_len(recv.raw.len, size, "Alltoall")?;
        let send_copy: Vec<u8> = if is_in_place(sendbuf) {
            // SAFETY: pinned for this call.
            unsafe { recv.raw.as_slice() }.to_vec()
        } else {
            let s = buffer::parse(sendbuf, false)?;
            // SAFETY: pinned for this call.
            unsafe { s.raw.as_slice() }.to_vec()
        };
        let sblock = chunk_len(send_copy.len(), size, "Alltoall")?;
        let data: Vec<Vec<u8>> = (0..size)
            .map(|i| send_copy[i * sblock..(i + 1) * sblock].to_vec())
            .collect();
        let rraw = recv.raw;
        blocking(py, move || {
            let blobs = c.alltoall_bytes(data)?;
            // SAFETY: pinned for the call; written by this thread only.
            let out = unsafe { rraw.as_mut_slice() };
            for (i, b) in blobs.iter().enumerate() {
                let n = b.len().min(rblock);
                out[i * rblock..i * rblock + n].copy_from_slice(&b[..n]);
            }
            Ok(())
        })
    }
}

fn op_or_sum(op: Option<&Bound<'_, PyAny>>) -> PyResult<PyOp> {
    match op {
        Some(o) => op::from_py(o),
        None => Python::attach(|py| {
            let sum = py.import("oxmpi.MPI")?.getattr("SUM")?;
            op::from_py(&sum)
        }),
    }
}

impl PyComm {
    fn reduce_objects<'py>(
        &self,
        py: Python<'py>,
        sendobj: &Bound<'py, PyAny>,
        op: Option<&Bound<'py, PyAny>>,
        root: Option<i32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c()?.clone();
        let op = op_or_sum(op)?;
        let data = pickle::dumps_vec(py, sendobj)?;
        let res = blocking(py, || {
            c.reduce_bytes(data, root, &mut |left: &[u8], right: &[u8]| {
                Python::attach(|py| {
                    let a = pickle::loads_slice(py, left)?;
                    let b = pickle::loads_slice(py, right)?;
                    let r = op.call_objects(&a, &b)?;
                    pickle::dumps_vec(py, &r)
                })
                .map_err(from_pyerr)
            })
        })?;
        match res {
            Some(v) => pickle::loads_slice(py, &v),
            None => Ok(py.None().into_bound(py)),
        }
    }
}
