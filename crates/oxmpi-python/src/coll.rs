//! Collective calls of `MPI.Comm` / `MPI.Intracomm` (MPI-4.1 chapter 6):
//! pickled objects (lowercase) and buffers (uppercase, blocking and
//! nonblocking).
//!
//! Buffer arguments are parsed exactly as mpi4py's `msgbuffer.pxi` parses
//! them for collectives (`message_simple` with a number of blocks,
//! `message_vector`, `message_vector_w`): counts inferred from the buffer
//! length and split over the blocks, `(counts, displs)` with mpi4py's
//! defaults (None, an integer, or a sequence), `None` or `IN_PLACE` as
//! MPI_IN_PLACE where MPI allows it, and arguments that MPI ignores on a
//! rank (a non-root's receive buffer) not even looked at. The runtime then
//! receives byte blocks: with a contiguous datatype a block of `count`
//! elements is `count * size` bytes of the buffer; any other datatype
//! (holes, extent other than size, absolute addresses at `BOTTOM`) is
//! packed into a copy whose blocks the runtime moves instead, and a
//! receive's copy is unpacked into the buffer when the operation is over
//! (the [`Held`] of the call is dropped).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use oxmpi::backend::{Blocks, Collective, CommRef, RawBuf};
use oxmpi::datatype::{Datatype, Layout};

use crate::buffer::{is_bottom, BufView};
use crate::comm::{is_in_place, PyComm};
use crate::datatype::{packed_elements, Packed, PyDatatype};
use crate::engine::blocking;
use crate::errors::{from_pyerr, IntoPy};
use crate::info::PyInfo;
use crate::op::{self, PyOp};
use crate::pickle;
use crate::request::{
    new_prequest, CollStart, Payload, Persistent, PersistentColl, PyPrequest, PyRequest,
};

// ------------------------------------------------------------ messages

/// What a parsed argument keeps until its operation is over: the packed
/// copy of a non-contiguous message (declared first, so that a receive's
/// copy unpacks into the user's memory while the view still pins it) and
/// the view of the user's buffer.
#[derive(Default)]
pub(crate) struct Held {
    #[allow(dead_code)] // held for its Drop, never read
    packed: Option<Packed>,
    #[allow(dead_code)] // held, never read
    view: Option<BufView>,
}

/// A parsed buffer argument of a collective.
struct Arg {
    /// Start of the message (after any displacement).
    ptr: *mut u8,
    /// Bytes from `ptr` to the end of the buffer.
    avail: usize,
    /// Elements (per block, for a message split into blocks) of `dtype`.
    count: usize,
    /// The datatype of the bytes at `ptr`: the user's, or for a packed
    /// copy its basic elements (`packed_elements`).
    dtype: Datatype,
    /// The user's datatype.
    pytype: PyDatatype,
    held: Held,
}

impl Arg {
    fn size(&self) -> usize {
        self.dtype.size()
    }

    /// The first `len` bytes of the message.
    fn raw(&self, len: usize) -> PyResult<RawBuf> {
        if len > self.avail {
            return Err(PyValueError::new_err(format!(
                "message: {len} bytes needed, the buffer holds {}",
                self.avail
            )));
        }
        Ok(RawBuf { ptr: self.ptr, len })
    }

    /// The message: `count` elements.
    fn msg(&self) -> PyResult<RawBuf> {
        self.raw(self.count * self.size())
    }

    /// The message as `n` consecutive blocks of `count` elements.
    fn blocks(&self, n: usize) -> PyResult<Blocks> {
        let block = self.count * self.size();
        Ok(Blocks::contiguous(self.raw(block * n)?, n, block))
    }
}

/// A parsed vector argument (`message_vector`, `message_vector_w`).
struct VArg {
    blocks: Blocks,
    held: Held,
}

fn is_datatype(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_instance_of::<PyDatatype>() || obj.is_instance_of::<pyo3::types::PyString>()
}

fn has_buffer(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: a plain query on a live object (we hold the GIL).
    unsafe { pyo3::ffi::PyObject_CheckBuffer(obj.as_ptr()) != 0 }
}

fn is_foreign_buffer(obj: &Bound<'_, PyAny>) -> bool {
    obj.hasattr("__dlpack__").unwrap_or(false)
        || obj.hasattr("__cuda_array_interface__").unwrap_or(false)
}

/// Items of a list or tuple.
fn items<'py>(obj: &Bound<'py, PyAny>) -> Option<Vec<Bound<'py, PyAny>>> {
    if let Ok(l) = obj.cast::<PyList>() {
        Some(l.iter().collect())
    } else if let Ok(t) = obj.cast::<PyTuple>() {
        Some(t.iter().collect())
    } else {
        None
    }
}

/// An integer argument (Python's `operator.index`), or None when `obj` is
/// not integral (sequences are not integral, as in mpi4py).
fn integral(obj: &Bound<'_, PyAny>) -> Option<i64> {
    if obj.cast::<PyList>().is_ok() || obj.cast::<PyTuple>().is_ok() {
        return None;
    }
    let idx = obj.py().import("operator").ok()?.getattr("index").ok()?;
    idx.call1((obj,)).ok()?.extract::<i64>().ok()
}

fn index(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    let idx = obj.py().import("operator")?.getattr("index")?;
    idx.call1((obj,))?.extract::<i64>()
}

/// A sequence of `n` integers (mpi4py's `chkarray`).
fn int_array(obj: &Bound<'_, PyAny>, n: usize) -> PyResult<Vec<i64>> {
    let len = obj.len()?;
    let v = (0..len)
        .map(|i| index(&obj.get_item(i)?))
        .collect::<PyResult<Vec<i64>>>()?;
    if len != n {
        return Err(PyValueError::new_err(format!(
            "expecting {n} items, got {len}"
        )));
    }
    Ok(v)
}

fn nonneg(v: i64, what: &str) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| PyValueError::new_err(format!("message: negative {what} {v}")))
}

/// The buffer and datatype of a message (`message_basic`): `None` and
/// `BOTTOM` are MPI_BOTTOM and need a datatype.
fn basic(
    buf: &Bound<'_, PyAny>,
    ty: Option<&Bound<'_, PyAny>>,
    writable: bool,
) -> PyResult<(Option<BufView>, *mut u8, usize, PyDatatype)> {
    // A datatype of None is no datatype, as in mpi4py.
    let ty = ty.filter(|t| !t.is_none());
    if is_bottom(buf) {
        let ty = ty.ok_or_else(|| {
            PyValueError::new_err("message: a None (BOTTOM) buffer needs an explicit datatype")
        })?;
        return Ok((
            None,
            std::ptr::null_mut(),
            0,
            crate::buffer::as_datatype(ty)?,
        ));
    }
    let view = BufView::get(buf, writable, true)?;
    let pytype = match ty {
        Some(t) => crate::buffer::as_datatype(t)?,
        None => crate::buffer::from_format(view.format())?,
    };
    let (ptr, len) = (view.ptr(), view.len());
    Ok((Some(view), ptr, len, pytype))
}

/// mpi4py's `message_simple`: a message split into `blocks` equal blocks
/// when its count is inferred (0 or 1: one message).
fn simple(obj: &Bound<'_, PyAny>, writable: bool, blocks: usize) -> PyResult<Arg> {
    let (buf, count, displ, ty);
    if has_buffer(obj) {
        (buf, count, displ, ty) = (obj.clone(), None, None, None);
    } else if let Some(it) = items(obj) {
        match it.as_slice() {
            [b, c] => {
                if is_datatype(c) {
                    (buf, count, displ, ty) = (b.clone(), None, None, Some(c.clone()));
                } else if let Some(cd) = items(c) {
                    let [c, d] = pair(cd)?;
                    (buf, count, displ, ty) = (b.clone(), Some(c), Some(d), None);
                } else {
                    (buf, count, displ, ty) = (b.clone(), Some(c.clone()), None, None);
                }
            }
            [b, c, t] => {
                if let Some(cd) = items(c) {
                    let [c, d] = pair(cd)?;
                    (buf, count, displ, ty) = (b.clone(), Some(c), Some(d), Some(t.clone()));
                } else {
                    (buf, count, displ, ty) = (b.clone(), Some(c.clone()), None, Some(t.clone()));
                }
            }
            [b, c, d, t] => {
                (buf, count, displ, ty) =
                    (b.clone(), Some(c.clone()), Some(d.clone()), Some(t.clone()))
            }
            _ => return Err(PyValueError::new_err("message: expecting 2 to 4 items")),
        }
    } else if is_foreign_buffer(obj) {
        (buf, count, displ, ty) = (obj.clone(), None, None, None);
    } else {
        return Err(PyTypeError::new_err(
            "message: expecting buffer or list/tuple",
        ));
    }
    let (view, base, bsize, pytype) = basic(&buf, ty.as_ref(), writable)?;
    let mut length = bsize;
    let mut offset = 0;
    if let Some(d) = displ.filter(|d| !d.is_none()) {
        let d = nonneg(index(&d)?, "displacement")?;
        if d > 0 {
            let extent = extent_for(&pytype, "handle displacement")?;
            if d * extent > length {
                return Err(PyValueError::new_err(format!(
                    "message: displacement {d} out of bounds, number of datatype entries {}",
                    length / extent
                )));
            }
            offset = d * extent;
            length -= offset;
        }
    }
    let count = match count.filter(|c| !c.is_none()) {
        Some(c) => {
            let c = nonneg(index(&c)?, "count")?;
            if c > 0 && buf.is_none() {
                return Err(PyValueError::new_err(format!(
                    "message: buffer is None but count is {c}"
                )));
            }
            c
        }
        None if length > 0 => {
            let extent = extent_for(&pytype, "infer count")?;
            if length % extent != 0 {
                return Err(PyValueError::new_err(format!(
                    "message: cannot infer count, buffer length {length} is not a multiple of \
                     datatype extent {extent}"
                )));
            }
            let entries = length / extent;
            if blocks < 2 {
                entries
            } else {
                if entries % blocks != 0 {
                    return Err(PyValueError::new_err(format!(
                        "message: cannot infer count, number of entries {entries} is not a \
                         multiple of required number of blocks {blocks}"
                    )));
                }
                entries / blocks
            }
        }
        None => 0,
    };
    let dtype = datatype_of(&pytype, count == 0)?;
    // `wrapping_add`: safe to compute; offset <= buffer length.
    let start = base.wrapping_add(offset);
    if needs_packing(&dtype, &view) {
        let l = dtype.layout();
        let total = count.saturating_mul(blocks.max(1));
        if view.is_some() {
            check_span(&l, total, 0, length)?;
        }
        // SAFETY: the elements lie in the pinned view (checked above) or
        // at BOTTOM addresses the caller answers for.
        let packed = unsafe { Packed::new(vec![(l.clone(), total, start)], writable) };
        let (dtype, count) = packed_elements(&l, count);
        let raw = packed.raw();
        return Ok(Arg {
            ptr: raw.ptr,
            avail: raw.len,
            count,
            dtype,
            pytype,
            held: Held {
                packed: Some(packed),
                view,
            },
        });
    }
    Ok(Arg {
        ptr: start,
        avail: length,
        count,
        dtype,
        pytype,
        held: Held { packed: None, view },
    })
}

/// The extent of a message's datatype where it must divide the buffer or
/// scale a displacement (`what`): positive, or mpi4py's ValueError.
fn extent_for(pytype: &PyDatatype, what: &str) -> PyResult<usize> {
    let Ok(dtype) = pytype.get() else {
        return Err(PyValueError::new_err(format!(
            "message: cannot {what}, datatype is null"
        )));
    };
    let (lb, extent) = dtype.extent();
    if extent <= 0 {
        return Err(PyValueError::new_err(format!(
            "message: cannot {what}, datatype extent {extent} (lb:{lb}, ub:{})",
            lb + extent
        )));
    }
    Ok(extent as usize)
}

/// The runtime datatype of a message: an empty one may name
/// DATATYPE_NULL (it then moves bytes, none of them); otherwise that is
/// MPI_ERR_TYPE.
fn datatype_of(pytype: &PyDatatype, empty: bool) -> PyResult<Datatype> {
    match pytype.get() {
        Ok(d) => Ok(d.clone()),
        Err(_) if empty => Ok(Datatype::new(oxmpi::datatype::Basic::Byte)),
        Err(e) => Err(e),
    }
}

/// Whether a message must move as a packed copy: its datatype is not one
/// dense run, or it is at MPI_BOTTOM with absolute addresses.
fn needs_packing(dtype: &Datatype, view: &Option<BufView>) -> bool {
    !dtype.is_contiguous() || (view.is_none() && dtype.layout.is_some())
}

/// Checks that `count` elements of `l` from byte `at` of a `len`-byte
/// buffer lie inside it.
fn check_span(l: &Layout, count: usize, at: usize, len: usize) -> PyResult<()> {
    if let Some((lo, hi)) = l.span(count) {
        let at = at as isize;
        if at + lo < 0 || at + hi > len as isize {
            return Err(PyValueError::new_err(format!(
                "message: {count} entries of the datatype (bytes {lo}..{hi} from byte offset \
                 {at}) do not fit a {len}-byte buffer"
            )));
        }
    }
    Ok(())
}

/// Packs the blocks of a vector message, (layout, count, byte offset from
/// `base`) each, one after the other; the blocks then describe the copy.
fn pack_blocks(
    base: *mut u8,
    len: Option<usize>,
    blocks: Vec<(std::sync::Arc<Layout>, usize, usize)>,
    writable: bool,
) -> PyResult<(Blocks, Packed)> {
    let mut counts = Vec::with_capacity(blocks.len());
    let mut displs = Vec::with_capacity(blocks.len());
    let mut regions = Vec::with_capacity(blocks.len());
    let mut at = 0;
    for (l, count, offset) in blocks {
        if let Some(len) = len {
            check_span(&l, count, offset, len)?;
        }
        let bytes = count.checked_mul(l.size).ok_or_else(|| {
            PyValueError::new_err(format!(
                "message: {count} entries overflow the address space"
            ))
        })?;
        counts.push(bytes);
        displs.push(at);
        at += bytes;
        // `wrapping_add`: inside the buffer (checked above), or an
        // absolute address from BOTTOM.
        regions.push((l, count, base.wrapping_add(offset)));
    }
    // SAFETY: the blocks lie in the pinned view (checked above) or at
    // BOTTOM addresses the caller answers for.
    let packed = unsafe { Packed::new(regions, writable) };
    Ok((
        Blocks {
            buf: packed.raw(),
            counts,
            displs,
        },
        packed,
    ))
}

fn pair<'py>(v: Vec<Bound<'py, PyAny>>) -> PyResult<[Bound<'py, PyAny>; 2]> {
    <[Bound<'py, PyAny>; 2]>::try_from(v)
        .map_err(|_| PyValueError::new_err("message: expecting (count, displacement)"))
}

/// mpi4py's `message_vector`: one block per process, counts and
/// displacements in datatype entries.
fn vector(obj: &Bound<'_, PyAny>, writable: bool, blocks: usize) -> PyResult<VArg> {
    let (buf, counts, displs, ty);
    if has_buffer(obj) {
        (buf, counts, displs, ty) = (obj.clone(), None, None, None);
    } else if let Some(it) = items(obj) {
        match it.as_slice() {
            [b, c] => {
                if is_datatype(c) {
                    (buf, counts, displs, ty) = (b.clone(), None, None, Some(c.clone()));
                } else if let Ok(t) = c.cast::<PyTuple>() {
                    let [c, d] = pair(t.iter().collect())?;
                    (buf, counts, displs, ty) = (b.clone(), Some(c), Some(d), None);
                } else {
                    (buf, counts, displs, ty) = (b.clone(), Some(c.clone()), None, None);
                }
            }
            [b, c, t] => {
                if let Ok(tc) = c.cast::<PyTuple>() {
                    let [c, d] = pair(tc.iter().collect())?;
                    (buf, counts, displs, ty) = (b.clone(), Some(c), Some(d), Some(t.clone()));
                } else {
                    (buf, counts, displs, ty) = (b.clone(), Some(c.clone()), None, Some(t.clone()));
                }
            }
            [b, c, d, t] => {
                (buf, counts, displs, ty) =
                    (b.clone(), Some(c.clone()), Some(d.clone()), Some(t.clone()))
            }
            _ => return Err(PyValueError::new_err("message: expecting 2 to 4 items")),
        }
    } else if is_foreign_buffer(obj) {
        (buf, counts, displs, ty) = (obj.clone(), None, None, None);
    } else {
        return Err(PyTypeError::new_err(
            "message: expecting buffer or list/tuple",
        ));
    }
    let (view, base, bsize, pytype) = basic(&buf, ty.as_ref(), writable)?;
    let counts: Vec<usize> = match counts.filter(|c| !c.is_none()) {
        None => {
            let mut csize = 0;
            if bsize > 0 {
                let extent = extent_for(&pytype, "infer count")?;
                if bsize % extent != 0 {
                    return Err(PyValueError::new_err(format!(
                        "message: cannot infer count, buffer length {bsize} is not a multiple \
                         of datatype extent {extent}"
                    )));
                }
                csize = bsize / extent;
            }
            (0..blocks)
                .map(|i| csize / blocks + usize::from(csize % blocks > i))
                .collect()
        }
        Some(c) => match integral(&c) {
            Some(v) => vec![nonneg(v, "count")?; blocks],
            None => int_array(&c, blocks)?
                .into_iter()
                .map(|v| nonneg(v, "count"))
                .collect::<PyResult<_>>()?,
        },
    };
    let displs: Vec<usize> = match displs.filter(|d| !d.is_none()) {
        None => counts
            .iter()
            .scan(0, |acc, &c| {
                let d = *acc;
                *acc += c;
                Some(d)
            })
            .collect(),
        Some(d) => match integral(&d) {
            Some(v) => {
                let v = nonneg(v, "displacement")?;
                (0..blocks).map(|i| v * i).collect()
            }
            None => int_array(&d, blocks)?
                .into_iter()
                .map(|v| nonneg(v, "displacement"))
                .collect::<PyResult<_>>()?,
        },
    };
    let dtype = &datatype_of(&pytype, counts.iter().all(|&c| c == 0))?;
    // The stride of the displacements (1 for an empty message of a type
    // without a positive extent, whose displacements then mean nothing).
    let extent = match dtype.extent().1 {
        e if e > 0 => e as usize,
        _ if counts.iter().all(|&c| c == 0) => 1,
        _ => extent_for(&pytype, "handle displacement")?,
    };
    if needs_packing(dtype, &view) {
        let l = dtype.layout();
        let blocks = counts
            .iter()
            .zip(&displs)
            .map(|(&c, &d)| (l.clone(), c, d.saturating_mul(extent)))
            .collect();
        let len = view.as_ref().map(|_| bsize);
        let (blocks, packed) = pack_blocks(base, len, blocks, writable)?;
        return Ok(VArg {
            blocks,
            held: Held {
                packed: Some(packed),
                view,
            },
        });
    }
    Ok(VArg {
        blocks: Blocks {
            buf: RawBuf {
                ptr: base,
                len: bsize,
            },
            counts: counts.iter().map(|c| c * extent).collect(),
            displs: displs.iter().map(|d| d * extent).collect(),
        },
        held: Held { packed: None, view },
    })
}

/// mpi4py's `message_vector_w` (Alltoallw): per-block datatypes, byte
/// displacements.
fn vector_w(obj: &Bound<'_, PyAny>, writable: bool, blocks: usize) -> PyResult<VArg> {
    let it = items(obj)
        .ok_or_else(|| PyTypeError::new_err("message: expecting a list/tuple of 2 to 4 items"))?;
    let (buf, counts, displs, types) = match it.as_slice() {
        [b, t] => (b.clone(), None, None, t.clone()),
        [b, cd, t] => {
            let [c, d] = pair(items(cd).ok_or_else(|| {
                PyValueError::new_err("message: expecting (counts, displacements)")
            })?)?;
            (b.clone(), Some(c), Some(d), t.clone())
        }
        [b, c, d, t] => (b.clone(), Some(c.clone()), Some(d.clone()), t.clone()),
        _ => return Err(PyValueError::new_err("message: expecting 2 to 4 items")),
    };
    let counts = counts.filter(|c| !c.is_none());
    let displs = displs.filter(|d| !d.is_none());
    let (view, base, bsize) = if is_bottom(&buf) {
        if counts.is_none() {
            return Err(PyValueError::new_err("message: BOTTOM requires counts"));
        }
        if displs.is_none() {
            return Err(PyValueError::new_err("message: BOTTOM requires displs"));
        }
        (None, std::ptr::null_mut(), 0)
    } else {
        let v = BufView::get(&buf, writable, true)?;
        let (p, l) = (v.ptr(), v.len());
        (Some(v), p, l)
    };
    let (counts, displs) = match (counts, displs) {
        (None, None) => (vec![1i64; blocks], vec![0i64; blocks]),
        (c, d) => {
            let none = || PyTypeError::new_err("message: counts and displacements go together");
            (
                int_array(&c.ok_or_else(none)?, blocks)?,
                int_array(&d.ok_or_else(none)?, blocks)?,
            )
        }
    };
    let ntypes = types.len()?;
    if ntypes != blocks {
        return Err(PyValueError::new_err(format!(
            "expecting {blocks} items, got {ntypes}"
        )));
    }
    let mut dtypes = Vec::with_capacity(blocks);
    for i in 0..blocks {
        let t = types.get_item(i)?;
        let t = t.cast::<PyDatatype>().map_err(|_| {
            PyTypeError::new_err("message: the datatypes must be MPI.Datatype objects")
        })?;
        dtypes.push(t.get().get()?.clone());
    }
    // At BOTTOM the displacements are absolute addresses, whatever the
    // types: the blocks are packed.
    if view.is_none() || dtypes.iter().any(|d| needs_packing(d, &view)) {
        let blocks = dtypes
            .iter()
            .zip(counts.iter().zip(&displs))
            .map(|(d, (&c, &o))| Ok((d.layout(), nonneg(c, "count")?, nonneg(o, "displacement")?)))
            .collect::<PyResult<_>>()?;
        let len = view.as_ref().map(|_| bsize);
        let (blocks, packed) = pack_blocks(base, len, blocks, writable)?;
        return Ok(VArg {
            blocks,
            held: Held {
                packed: Some(packed),
                view,
            },
        });
    }
    let sizes: Vec<usize> = dtypes.iter().map(Datatype::size).collect();
    Ok(VArg {
        blocks: Blocks {
            buf: RawBuf {
                ptr: base,
                len: bsize,
            },
            counts: counts
                .iter()
                .zip(&sizes)
                .map(|(&c, s)| Ok(nonneg(c, "count")? * s))
                .collect::<PyResult<_>>()?,
            displs: displs
                .iter()
                .map(|&d| nonneg(d, "displacement"))
                .collect::<PyResult<_>>()?,
        },
        held: Held { packed: None, view },
    })
}

/// mpi4py's `chk_cro_args`: send and receive of a reduction agree.
fn check_cro(send: &Arg, recv: &Arg) -> PyResult<()> {
    if !send.pytype.same_handle(&recv.pytype) || send.dtype != recv.dtype {
        return Err(PyValueError::new_err(
            "mismatch in send and receive MPI datatypes",
        ));
    }
    if send.count != recv.count {
        return Err(PyValueError::new_err(format!(
            "mismatch in send count {} and receive count {}",
            send.count, recv.count
        )));
    }
    Ok(())
}

fn in_place(obj: Option<&Bound<'_, PyAny>>) -> bool {
    obj.is_none_or(|o| o.is_none() || is_in_place(o))
}

/// Empty blocks for arguments a rank does not use.
fn no_blocks() -> Blocks {
    Blocks::contiguous(RawBuf::EMPTY, 0, 0)
}

/// A collective ready to run: the operation, and the buffers to pin (and
/// copies to unpack) until it is over.
struct Prepared {
    op: Collective,
    held: Vec<Held>,
}

impl Prepared {
    fn new(op: Collective) -> Prepared {
        Prepared {
            op,
            held: Vec::new(),
        }
    }

    fn hold(mut self, held: Held) -> Prepared {
        self.held.push(held);
        self
    }

    fn run(self, py: Python<'_>, c: CommRef) -> PyResult<()> {
        let Prepared { op, held } = self;
        let r = blocking(py, move || c.collective(op));
        drop(held);
        r
    }

    fn start(self, c: &CommRef) -> PyResult<PyRequest> {
        let req = c.icollective(self.op).py()?;
        Ok(PyRequest::new(req, Payload::Keep(Box::new(self.held))))
    }

    /// A persistent request that starts this collective at each `Start`
    /// (MPI-4.1 §6.13): the buffers stay pinned until it is freed.
    fn persist(self, py: Python<'_>, c: &CommRef) -> PyResult<Py<PyPrequest>> {
        let Prepared { op, held } = self;
        let mut packs = Vec::new();
        let mut views = Vec::new();
        for h in held {
            packs.extend(h.packed);
            views.extend(h.view);
        }
        let comm = c.clone();
        let start: CollStart = Box::new(move || comm.icollective(op.clone()));
        let pc = PersistentColl::new(start, packs, Box::new(views));
        new_prequest(py, Persistent::Collective(pc))
    }
}

// ------------------------------------------------------------ preparation

impl PyComm {
    fn prep_bcast(&self, buf: &Bound<'_, PyAny>, root: i32) -> PyResult<Prepared> {
        let c = self.c()?;
        let m = simple(buf, c.rank() != root, 0)?;
        Ok(Prepared::new(Collective::Bcast {
            buf: m.msg()?,
            root,
        })
        .hold(m.held))
    }

    fn prep_gather(
        &self,
        v: bool,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<Prepared> {
        let c = self.c()?;
        let (rank, size) = (c.rank(), c.size() as usize);
        if rank != root {
            let s = simple(sendbuf, false, 0)?;
            let op = Collective::Gather {
                send: Some(s.msg()?),
                recv: no_blocks(),
                root,
            };
            return Ok(Prepared::new(op).hold(s.held));
        }
        let recvbuf = recvbuf
            .ok_or_else(|| PyTypeError::new_err("message: expecting buffer or list/tuple"))?;
        let (recv, rheld) = if v {
            let r = vector(recvbuf, true, size)?;
            (r.blocks, r.held)
        } else {
            let r = simple(recvbuf, true, size)?;
            (r.blocks(size)?, r.held)
        };
        let (send, sheld) = if in_place(Some(sendbuf)) {
            (None, Held::default())
        } else {
            let s = simple(sendbuf, false, 0)?;
            (Some(s.msg()?), s.held)
        };
        Ok(Prepared::new(Collective::Gather { send, recv, root })
            .hold(rheld)
            .hold(sheld))
    }

    fn prep_scatter(
        &self,
        v: bool,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
        root: i32,
    ) -> PyResult<Prepared> {
        let c = self.c()?;
        let (rank, size) = (c.rank(), c.size() as usize);
        if rank != root {
            let r = simple(recvbuf, true, 0)?;
            let op = Collective::Scatter {
                send: no_blocks(),
                recv: Some(r.msg()?),
                root,
            };
            return Ok(Prepared::new(op).hold(r.held));
        }
        let sendbuf = sendbuf
            .ok_or_else(|| PyTypeError::new_err("message: expecting buffer or list/tuple"))?;
        let (send, sheld) = if v {
            let s = vector(sendbuf, false, size)?;
            (s.blocks, s.held)
        } else {
            let s = simple(sendbuf, false, size)?;
            (s.blocks(size)?, s.held)
        };
        let (recv, rheld) = if in_place(Some(recvbuf)) {
            (None, Held::default())
        } else {
            let r = simple(recvbuf, true, 0)?;
            (Some(r.msg()?), r.held)
        };
        Ok(Prepared::new(Collective::Scatter { send, recv, root })
            .hold(sheld)
            .hold(rheld))
    }

    fn prep_allgather(
        &self,
        v: bool,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<Prepared> {
        let size = self.c()?.size() as usize;
        let (recv, rheld) = if v {
            let r = vector(recvbuf, true, size)?;
            (r.blocks, r.held)
        } else {
            let r = simple(recvbuf, true, size)?;
            (r.blocks(size)?, r.held)
        };
        let (send, sheld) = match sendbuf {
            Some(s) if !in_place(Some(s)) => {
                let s = simple(s, false, 0)?;
                (Some(s.msg()?), s.held)
            }
            _ => (None, Held::default()),
        };
        Ok(Prepared::new(Collective::Allgather { send, recv })
            .hold(rheld)
            .hold(sheld))
    }

    fn prep_alltoall(
        &self,
        kind: char,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<Prepared> {
        let size = self.c()?.size() as usize;
        let parse = |obj: &Bound<'_, PyAny>, writable: bool| -> PyResult<(Blocks, Held)> {
            match kind {
                'v' => vector(obj, writable, size).map(|a| (a.blocks, a.held)),
                'w' => vector_w(obj, writable, size).map(|a| (a.blocks, a.held)),
                _ => {
                    let a = simple(obj, writable, size)?;
                    Ok((a.blocks(size)?, a.held))
                }
            }
        };
        let (recv, rheld) = parse(recvbuf, true)?;
        let (send, sheld) = match sendbuf {
            Some(s) if !in_place(Some(s)) => {
                let (b, v) = parse(s, false)?;
                (Some(b), v)
            }
            _ => (None, Held::default()),
        };
        Ok(Prepared::new(Collective::Alltoall { send, recv })
            .hold(rheld)
            .hold(sheld))
    }

    fn prep_reduce(
        &self,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<Prepared> {
        let c = self.c()?;
        let op = op::from_py_buffer_op(op)?;
        if c.rank() != root {
            let s = simple(sendbuf, false, 0)?;
            let rop = op.to_runtime(&s.pytype)?;
            let red = Collective::Reduce {
                send: Some(s.msg()?),
                recv: RawBuf::EMPTY,
                count: s.count,
                dtype: s.dtype.clone(),
                op: rop,
                root,
            };
            return Ok(Prepared::new(red).hold(s.held));
        }
        let recvbuf = recvbuf
            .ok_or_else(|| PyTypeError::new_err("message: expecting buffer or list/tuple"))?;
        let r = simple(recvbuf, true, 0)?;
        let (send, sheld) = if in_place(Some(sendbuf)) {
            (None, Held::default())
        } else {
            let s = simple(sendbuf, false, 0)?;
            check_cro(&s, &r)?;
            (Some(s.msg()?), s.held)
        };
        let red = Collective::Reduce {
            send,
            recv: r.msg()?,
            count: r.count,
            dtype: r.dtype.clone(),
            op: op.to_runtime(&r.pytype)?,
            root,
        };
        Ok(Prepared::new(red).hold(r.held).hold(sheld))
    }

    /// Allreduce, Scan and Exscan take the same arguments.
    fn prep_allreduce(
        &self,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
        scan: Option<bool>,
    ) -> PyResult<Prepared> {
        self.c()?;
        let op = op::from_py_buffer_op(op)?;
        let r = simple(recvbuf, true, 0)?;
        let (send, sheld) = if in_place(Some(sendbuf)) {
            (None, Held::default())
        } else {
            let s = simple(sendbuf, false, 0)?;
            check_cro(&s, &r)?;
            (Some(s.msg()?), s.held)
        };
        let (recv, count, dtype, rop) = (
            r.msg()?,
            r.count,
            r.dtype.clone(),
            op.to_runtime(&r.pytype)?,
        );
        let coll = match scan {
            None => Collective::Allreduce {
                send,
                recv,
                count,
                dtype,
                op: rop,
            },
            Some(exclusive) => Collective::Scan {
                send,
                recv,
                count,
                dtype,
                op: rop,
                exclusive,
            },
        };
        Ok(Prepared::new(coll).hold(r.held).hold(sheld))
    }

    fn prep_reduce_scatter_block(
        &self,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Prepared> {
        let size = self.c()?.size() as usize;
        let op = op::from_py_buffer_op(op)?;
        if in_place(Some(sendbuf)) {
            let r = simple(recvbuf, true, size)?;
            let red = Collective::ReduceScatter {
                send: None,
                recv: r.raw(r.count * size * r.size())?,
                counts: vec![r.count; size],
                dtype: r.dtype.clone(),
                op: op.to_runtime(&r.pytype)?,
            };
            return Ok(Prepared::new(red).hold(r.held));
        }
        let r = simple(recvbuf, true, 0)?;
        let s = simple(sendbuf, false, size)?;
        check_cro(&s, &r)?;
        let red = Collective::ReduceScatter {
            send: Some(s.raw(s.count * size * s.size())?),
            recv: r.msg()?,
            counts: vec![r.count; size],
            dtype: r.dtype.clone(),
            op: op.to_runtime(&r.pytype)?,
        };
        Ok(Prepared::new(red).hold(r.held).hold(s.held))
    }

    fn prep_reduce_scatter(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        recvcounts: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Prepared> {
        let c = self.c()?.clone();
        let (rank, size) = (c.rank() as usize, c.size() as usize);
        let op = op::from_py_buffer_op(op)?;
        let r = simple(recvbuf, true, 0)?;
        let s = if in_place(Some(sendbuf)) {
            None
        } else {
            Some(simple(sendbuf, false, 0)?)
        };
        let counts: Vec<usize> = match recvcounts.filter(|rc| !rc.is_none()) {
            None if s.is_some() => {
                // Everyone's receive count, as mpi4py gathers it.
                let mine = (r.count as u64).to_ne_bytes();
                let mut all = vec![0u8; 8 * size];
                let gather = Collective::Allgather {
                    send: Some(RawBuf::from_slice(&mine)),
                    recv: Blocks::contiguous(RawBuf::from_mut(&mut all), size, 8),
                };
                blocking(py, || c.collective(gather))?;
                all.chunks_exact(8)
                    .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")) as usize)
                    .collect()
            }
            None => {
                return Err(PyTypeError::new_err(
                    "Reduce_scatter in place needs the receive counts",
                ))
            }
            Some(rc) => int_array(rc, size)?
                .into_iter()
                .map(|v| nonneg(v, "count"))
                .collect::<PyResult<_>>()?,
        };
        let total: usize = counts.iter().sum();
        let (send, sheld) = match s {
            Some(s) => {
                if !s.pytype.same_handle(&r.pytype) || s.dtype != r.dtype {
                    return Err(PyValueError::new_err(
                        "mismatch in send and receive MPI datatypes",
                    ));
                }
                if s.count != total {
                    return Err(PyValueError::new_err(format!(
                        "mismatch in send count {} and sum(counts) {total}",
                        s.count
                    )));
                }
                if r.count != counts[rank] {
                    return Err(PyValueError::new_err(format!(
                        "mismatch in receive count {} and counts[{rank}] {}",
                        r.count, counts[rank]
                    )));
                }
                (Some(s.msg()?), s.held)
            }
            None => {
                if r.count != total {
                    return Err(PyValueError::new_err(format!(
                        "mismatch in receive count {} and sum(counts) {total}",
                        r.count
                    )));
                }
                (None, Held::default())
            }
        };
        let red = Collective::ReduceScatter {
            send,
            recv: r.msg()?,
            counts,
            dtype: r.dtype.clone(),
            op: op.to_runtime(&r.pytype)?,
        };
        Ok(Prepared::new(red).hold(r.held).hold(sheld))
    }
}

/// `Op.Reduce_local(inbuf, inoutbuf)`: `inoutbuf = inbuf op inoutbuf`.
pub fn reduce_local(
    _py: Python<'_>,
    op: &PyOp,
    inbuf: &Bound<'_, PyAny>,
    inoutbuf: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let r = simple(inoutbuf, true, 0)?;
    let s = simple(inbuf, false, 0)?;
    check_cro(&s, &r)?;
    let rop = op.to_runtime(&r.pytype)?;
    rop.check(&r.dtype).py()?;
    let (input, inout) = (s.msg()?, r.msg()?);
    // The input is copied when the two buffers overlap, so that the mutable
    // view below is the only one of its memory.
    let (a, b) = (input.ptr as usize, inout.ptr as usize);
    let overlap = input.len > 0 && inout.len > 0 && a < b + inout.len && b < a + input.len;
    let copy;
    // SAFETY: both views are pinned by `s` and `r` for this call.
    let input: &[u8] = unsafe {
        if overlap {
            copy = input.as_slice().to_vec();
            &copy
        } else {
            input.as_slice()
        }
    };
    // SAFETY: as above.
    let inout = unsafe { inout.as_mut_slice() };
    rop.apply(input, inout, r.count, &r.dtype).py()
}

// ------------------------------------------------------------ methods

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

    #[pyo3(signature = (sendobj, op=None))]
    fn scan<'py>(
        &self,
        py: Python<'py>,
        sendobj: &Bound<'py, PyAny>,
        op: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.scan_objects(py, sendobj, op, false)
    }

    #[pyo3(signature = (sendobj, op=None))]
    fn exscan<'py>(
        &self,
        py: Python<'py>,
        sendobj: &Bound<'py, PyAny>,
        op: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.scan_objects(py, sendobj, op, true)
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
            let items = object_items(py, sendobj, c.size() as usize)?;
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
        sendobj: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let c = self.c()?.clone();
        let items = object_items(py, sendobj, c.size() as usize)?;
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
        Prepared::new(Collective::Barrier).run(py, c)
    }

    #[pyo3(signature = (buf, root=0))]
    fn Bcast(&self, py: Python<'_>, buf: &Bound<'_, PyAny>, root: i32) -> PyResult<()> {
        self.prep_bcast(buf, root)?.run(py, self.c()?.clone())
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Gather(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<()> {
        self.prep_gather(false, sendbuf, recvbuf, root)?
            .run(py, self.c()?.clone())
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Gatherv(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<()> {
        self.prep_gather(true, sendbuf, recvbuf, root)?
            .run(py, self.c()?.clone())
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Scatter(
        &self,
        py: Python<'_>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
        root: i32,
    ) -> PyResult<()> {
        self.prep_scatter(false, sendbuf, recvbuf, root)?
            .run(py, self.c()?.clone())
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Scatterv(
        &self,
        py: Python<'_>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
        root: i32,
    ) -> PyResult<()> {
        self.prep_scatter(true, sendbuf, recvbuf, root)?
            .run(py, self.c()?.clone())
    }

    fn Allgather(
        &self,
        py: Python<'_>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.prep_allgather(false, sendbuf, recvbuf)?
            .run(py, self.c()?.clone())
    }

    fn Allgatherv(
        &self,
        py: Python<'_>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.prep_allgather(true, sendbuf, recvbuf)?
            .run(py, self.c()?.clone())
    }

    fn Alltoall(
        &self,
        py: Python<'_>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.prep_alltoall(' ', sendbuf, recvbuf)?
            .run(py, self.c()?.clone())
    }

    fn Alltoallv(
        &self,
        py: Python<'_>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.prep_alltoall('v', sendbuf, recvbuf)?
            .run(py, self.c()?.clone())
    }

    fn Alltoallw(
        &self,
        py: Python<'_>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.prep_alltoall('w', sendbuf, recvbuf)?
            .run(py, self.c()?.clone())
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
        self.prep_reduce(sendbuf, recvbuf, op, root)?
            .run(py, self.c()?.clone())
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None))]
    fn Allreduce(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.prep_allreduce(sendbuf, recvbuf, op, None)?
            .run(py, self.c()?.clone())
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None))]
    fn Reduce_scatter_block(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.prep_reduce_scatter_block(sendbuf, recvbuf, op)?
            .run(py, self.c()?.clone())
    }

    #[pyo3(signature = (sendbuf, recvbuf, recvcounts=None, op=None))]
    fn Reduce_scatter(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        recvcounts: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.prep_reduce_scatter(py, sendbuf, recvbuf, recvcounts, op)?
            .run(py, self.c()?.clone())
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None))]
    fn Scan(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.prep_allreduce(sendbuf, recvbuf, op, Some(false))?
            .run(py, self.c()?.clone())
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None))]
    fn Exscan(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.prep_allreduce(sendbuf, recvbuf, op, Some(true))?
            .run(py, self.c()?.clone())
    }

    // ------------------------------------------------ nonblocking (buffers)

    fn Ibarrier(&self) -> PyResult<PyRequest> {
        Prepared::new(Collective::Barrier).start(self.c()?)
    }

    #[pyo3(signature = (buf, root=0))]
    fn Ibcast(&self, buf: &Bound<'_, PyAny>, root: i32) -> PyResult<PyRequest> {
        self.prep_bcast(buf, root)?.start(self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Igather(
        &self,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<PyRequest> {
        self.prep_gather(false, sendbuf, recvbuf, root)?
            .start(self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Igatherv(
        &self,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<PyRequest> {
        self.prep_gather(true, sendbuf, recvbuf, root)?
            .start(self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Iscatter(
        &self,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
        root: i32,
    ) -> PyResult<PyRequest> {
        self.prep_scatter(false, sendbuf, recvbuf, root)?
            .start(self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0))]
    fn Iscatterv(
        &self,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
        root: i32,
    ) -> PyResult<PyRequest> {
        self.prep_scatter(true, sendbuf, recvbuf, root)?
            .start(self.c()?)
    }

    fn Iallgather(
        &self,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<PyRequest> {
        self.prep_allgather(false, sendbuf, recvbuf)?
            .start(self.c()?)
    }

    fn Iallgatherv(
        &self,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<PyRequest> {
        self.prep_allgather(true, sendbuf, recvbuf)?
            .start(self.c()?)
    }

    fn Ialltoall(
        &self,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<PyRequest> {
        self.prep_alltoall(' ', sendbuf, recvbuf)?.start(self.c()?)
    }

    fn Ialltoallv(
        &self,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<PyRequest> {
        self.prep_alltoall('v', sendbuf, recvbuf)?.start(self.c()?)
    }

    fn Ialltoallw(
        &self,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
    ) -> PyResult<PyRequest> {
        self.prep_alltoall('w', sendbuf, recvbuf)?.start(self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None, root=0))]
    fn Ireduce(
        &self,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
        root: i32,
    ) -> PyResult<PyRequest> {
        self.prep_reduce(sendbuf, recvbuf, op, root)?
            .start(self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None))]
    fn Iallreduce(
        &self,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyRequest> {
        self.prep_allreduce(sendbuf, recvbuf, op, None)?
            .start(self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None))]
    fn Ireduce_scatter_block(
        &self,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyRequest> {
        self.prep_reduce_scatter_block(sendbuf, recvbuf, op)?
            .start(self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, recvcounts=None, op=None))]
    fn Ireduce_scatter(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        recvcounts: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyRequest> {
        self.prep_reduce_scatter(py, sendbuf, recvbuf, recvcounts, op)?
            .start(self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None))]
    fn Iscan(
        &self,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyRequest> {
        self.prep_allreduce(sendbuf, recvbuf, op, Some(false))?
            .start(self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None))]
    fn Iexscan(
        &self,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyRequest> {
        self.prep_allreduce(sendbuf, recvbuf, op, Some(true))?
            .start(self.c()?)
    }
}

impl PyComm {
    /// Object reductions: pickled blobs combined along the runtime's
    /// canonical tree by the operation's Python meaning.
    fn reduce_objects<'py>(
        &self,
        py: Python<'py>,
        sendobj: &Bound<'py, PyAny>,
        op: Option<&Bound<'py, PyAny>>,
        root: Option<i32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c()?.clone();
        let op = op::from_py_object_op(op)?;
        let data = pickle::dumps_vec(py, sendobj)?;
        let mut combine = combiner(&op);
        let res = blocking(py, || c.reduce_bytes(data, root, &mut combine))?;
        match res {
            Some(v) => pickle::loads_slice(py, &v),
            None => Ok(py.None().into_bound(py)),
        }
    }

    fn scan_objects<'py>(
        &self,
        py: Python<'py>,
        sendobj: &Bound<'py, PyAny>,
        op: Option<&Bound<'py, PyAny>>,
        exclusive: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.c()?.clone();
        let op = op::from_py_object_op(op)?;
        let data = pickle::dumps_vec(py, sendobj)?;
        let mut combine = combiner(&op);
        let res = blocking(py, || c.scan_bytes(data, exclusive, &mut combine))?;
        match res {
            Some(v) => pickle::loads_slice(py, &v),
            None => Ok(py.None().into_bound(py)),
        }
    }
}

/// `combine(left, right)` on pickled objects, run by the runtime with the
/// GIL released (it takes the GIL for each call).
fn combiner(op: &PyOp) -> impl FnMut(&[u8], &[u8]) -> oxmpi::Result<Vec<u8>> + '_ {
    move |left: &[u8], right: &[u8]| {
        Python::attach(|py| {
            let a = pickle::loads_slice(py, left)?;
            let b = pickle::loads_slice(py, right)?;
            let r = op.call_objects(&a, &b)?;
            pickle::dumps_vec(py, &r)
        })
        .map_err(from_pyerr)
    }
}

/// The per-rank objects of scatter/alltoall: `None` stands for `n` Nones,
/// as in mpi4py; any other iterable must yield exactly `n` items.
pub(crate) fn object_items<'py>(
    py: Python<'py>,
    sendobj: Option<&Bound<'py, PyAny>>,
    n: usize,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let items: Vec<Bound<'py, PyAny>> = match sendobj.filter(|o| !o.is_none()) {
        None => vec![py.None().into_bound(py); n],
        Some(seq) => seq.try_iter()?.collect::<PyResult<_>>()?,
    };
    if items.len() != n {
        return Err(PyValueError::new_err(format!(
            "expecting {} items, got {}",
            n,
            items.len()
        )));
    }
    Ok(items)
}

// ------------------------------------------------ persistent (buffers)

/// Persistent collectives (MPI-4.1 §6.13): the arguments are parsed as for
/// the nonblocking collective, once; each `Start` starts that collective
/// again. The `info` hints are accepted and ignored, as MPI allows.
#[pymethods]
impl PyComm {
    #[pyo3(signature = (info=None))]
    fn Barrier_init(
        &self,
        py: Python<'_>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        Prepared::new(Collective::Barrier).persist(py, self.c()?)
    }

    #[pyo3(signature = (buf, root=0, info=None))]
    fn Bcast_init(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        root: i32,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        self.prep_bcast(buf, root)?.persist(py, self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0, info=None))]
    fn Gather_init(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        self.prep_gather(false, sendbuf, recvbuf, root)?
            .persist(py, self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0, info=None))]
    fn Gatherv_init(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        root: i32,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        self.prep_gather(true, sendbuf, recvbuf, root)?
            .persist(py, self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0, info=None))]
    fn Scatter_init(
        &self,
        py: Python<'_>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
        root: i32,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        self.prep_scatter(false, sendbuf, recvbuf, root)?
            .persist(py, self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, root=0, info=None))]
    fn Scatterv_init(
        &self,
        py: Python<'_>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
        root: i32,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        self.prep_scatter(true, sendbuf, recvbuf, root)?
            .persist(py, self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, info=None))]
    fn Allgather_init(
        &self,
        py: Python<'_>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        self.prep_allgather(false, sendbuf, recvbuf)?
            .persist(py, self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, info=None))]
    fn Allgatherv_init(
        &self,
        py: Python<'_>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        self.prep_allgather(true, sendbuf, recvbuf)?
            .persist(py, self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, info=None))]
    fn Alltoall_init(
        &self,
        py: Python<'_>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        self.prep_alltoall(' ', sendbuf, recvbuf)?
            .persist(py, self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, info=None))]
    fn Alltoallv_init(
        &self,
        py: Python<'_>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        self.prep_alltoall('v', sendbuf, recvbuf)?
            .persist(py, self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, info=None))]
    fn Alltoallw_init(
        &self,
        py: Python<'_>,
        sendbuf: Option<&Bound<'_, PyAny>>,
        recvbuf: &Bound<'_, PyAny>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        self.prep_alltoall('w', sendbuf, recvbuf)?
            .persist(py, self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None, root=0, info=None))]
    fn Reduce_init(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
        root: i32,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        self.prep_reduce(sendbuf, recvbuf, op, root)?
            .persist(py, self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None, info=None))]
    fn Allreduce_init(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        self.prep_allreduce(sendbuf, recvbuf, op, None)?
            .persist(py, self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None, info=None))]
    fn Reduce_scatter_block_init(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        self.prep_reduce_scatter_block(sendbuf, recvbuf, op)?
            .persist(py, self.c()?)
    }

    /// Without `recvcounts` the receive counts are gathered here, at
    /// initialization (itself collective), as for `Reduce_scatter`.
    #[pyo3(signature = (sendbuf, recvbuf, recvcounts=None, op=None, info=None))]
    fn Reduce_scatter_init(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        recvcounts: Option<&Bound<'_, PyAny>>,
        op: Option<&Bound<'_, PyAny>>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        self.prep_reduce_scatter(py, sendbuf, recvbuf, recvcounts, op)?
            .persist(py, self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None, info=None))]
    fn Scan_init(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        self.prep_allreduce(sendbuf, recvbuf, op, Some(false))?
            .persist(py, self.c()?)
    }

    #[pyo3(signature = (sendbuf, recvbuf, op=None, info=None))]
    fn Exscan_init(
        &self,
        py: Python<'_>,
        sendbuf: &Bound<'_, PyAny>,
        recvbuf: &Bound<'_, PyAny>,
        op: Option<&Bound<'_, PyAny>>,
        info: Option<&Bound<'_, PyInfo>>,
    ) -> PyResult<Py<PyPrequest>> {
        let _ = info;
        self.prep_allreduce(sendbuf, recvbuf, op, Some(true))?
            .persist(py, self.c()?)
    }
}
